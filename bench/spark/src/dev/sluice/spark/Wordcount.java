package dev.sluice.spark;

import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.spark.SparkConf;
import org.apache.spark.api.java.Optional;
import org.apache.spark.storage.StorageLevel;
import org.apache.spark.streaming.Durations;
import org.apache.spark.streaming.api.java.JavaPairDStream;
import org.apache.spark.streaming.api.java.JavaReceiverInputDStream;
import org.apache.spark.streaming.api.java.JavaStreamingContext;

import scala.Tuple2;

/**
 * Spark Streaming's side of `sluice bench wordcount --socket H:P --stateful --wal
 * --checkpoint DIR`: socketTextStream with the receiver write-ahead log, split on
 * spaces, (w, 1), reduceByKey, updateStateByKey (running totals). Stops once the sum
 * of all states reaches --words (or after --timeout-s) and prints one JSON line.
 */
public final class Wordcount {
    static final String USAGE = "usage: Wordcount --port P --words N --checkpoint DIR"
            + " [--host 127.0.0.1] [--batch-ms 1000] [--timeout-s 900]"
            + " [--stateful true|false] [--wal true|false]";

    // Static, so that the output operation (which DStream checkpointing serializes)
    // captures nothing but the expected count.
    static final Common.Span SPAN = new Common.Span();
    static final AtomicLong TOTAL = new AtomicLong();

    private Wordcount() {}

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = Common.args(argv, USAGE);
        String host = a.getOrDefault("host", "127.0.0.1");
        int port = Integer.parseInt(Common.need(a, "port", USAGE));
        long words = Long.parseLong(Common.need(a, "words", USAGE));
        String checkpoint = Common.need(a, "checkpoint", USAGE);
        long batchMs = Long.parseLong(a.getOrDefault("batch-ms", "1000"));
        long timeoutS = Long.parseLong(a.getOrDefault("timeout-s", "900"));
        boolean stateful = Boolean.parseBoolean(a.getOrDefault("stateful", "true"));
        boolean wal = Boolean.parseBoolean(a.getOrDefault("wal", "true"));

        SparkConf conf = Common.conf("sluice-baseline-wordcount")
                .set("spark.streaming.receiver.writeAheadLog.enable", String.valueOf(wal));
        JavaStreamingContext ssc = new JavaStreamingContext(conf, Durations.milliseconds(batchMs));
        ssc.sparkContext().setLogLevel("WARN");
        ssc.checkpoint(checkpoint);
        ssc.addStreamingListener(SPAN);

        // With the WAL on, Spark stores each block once (replication 1) whatever the
        // level says; MEMORY_AND_DISK_SER is the level the docs give for that case.
        JavaReceiverInputDStream<String> lines = ssc.socketTextStream(host, port,
                wal ? StorageLevel.MEMORY_AND_DISK_SER() : StorageLevel.MEMORY_AND_DISK_SER_2());
        JavaPairDStream<String, Long> pairs = lines
                .flatMap(l -> Arrays.asList(l.split(" ")).iterator())
                .mapToPair(w -> new Tuple2<>(w, 1L))
                .reduceByKey((x, y) -> x + y);
        JavaPairDStream<String, Long> counts = stateful
                ? pairs.updateStateByKey((List<Long> vs, Optional<Long> s) -> {
                    long t = s.orElse(0L);
                    for (Long v : vs) {
                        t += v;
                    }
                    return Optional.of(t);
                })
                : pairs;
        counts.foreachRDD((rdd, time) -> {
            // One job per batch: the number of keys and the sum of their counts.
            long[] kc = rdd.aggregate(new long[2],
                    (acc, t) -> {
                        acc[0] += 1;
                        acc[1] += t._2();
                        return acc;
                    },
                    (x, y) -> {
                        x[0] += y[0];
                        x[1] += y[1];
                        return x;
                    });
            long total = stateful ? kc[1] : TOTAL.get() + kc[1];
            TOTAL.set(total);
            System.err.printf("{\"batch_time_ms\":%d,\"done_ms\":%d,\"keys\":%d,\"total\":%d}%n",
                    time.milliseconds(), System.currentTimeMillis(), kc[0], total);
            if (total >= words) {
                SPAN.reached(time.milliseconds());
            }
        });

        String version = ssc.sparkContext().version();
        long t0 = System.nanoTime();
        ssc.start();
        boolean complete = SPAN.done.await(timeoutS, TimeUnit.SECONDS);
        double wall = (System.nanoTime() - t0) / 1e9;
        ssc.stop(true, false);

        Map<String, Object> r = Common.result("wordcount", TOTAL.get(), SPAN, batchMs,
                version, complete, wall);
        r.put("expected", words);
        r.put("stateful", stateful);
        r.put("wal", wal);
        System.out.println(Common.json(r));
        System.exit(complete ? 0 : 1);
    }
}
