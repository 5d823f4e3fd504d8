package dev.sluice.spark;

import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.spark.SparkConf;
import org.apache.spark.streaming.Durations;
import org.apache.spark.streaming.api.java.JavaInputDStream;
import org.apache.spark.streaming.api.java.JavaStreamingContext;
import org.apache.spark.streaming.kafka010.ConsumerStrategies;
import org.apache.spark.streaming.kafka010.KafkaUtils;
import org.apache.spark.streaming.kafka010.LocationStrategies;

/**
 * Counts the records of a topic with the Kafka 0-10 direct stream, batch by batch,
 * from the earliest offsets, until --records have been counted; prints one JSON line.
 */
public final class KafkaCount {
    static final String USAGE = "usage: KafkaCount --brokers B --topic T --records N"
            + " [--batch-ms 1000] [--timeout-s 900] [--max-rate-per-partition R]";

    static final Common.Span SPAN = new Common.Span();
    static final AtomicLong TOTAL = new AtomicLong();
    static final AtomicLong BYTES = new AtomicLong();

    private KafkaCount() {}

    /** The consumer settings both Kafka jobs use: a fresh group, from the earliest
     *  offsets, no offset commits (the direct stream tracks offsets itself). */
    static Map<String, Object> consumerParams(String brokers, String job) {
        Map<String, Object> p = new HashMap<>();
        p.put("bootstrap.servers", brokers);
        p.put("key.deserializer", ByteArrayDeserializer.class);
        p.put("value.deserializer", ByteArrayDeserializer.class);
        p.put("group.id", "sluice-baseline-" + job + "-" + UUID.randomUUID());
        p.put("auto.offset.reset", "earliest");
        p.put("enable.auto.commit", false);
        return p;
    }

    static SparkConf kafkaConf(String app, Map<String, String> a) {
        SparkConf conf = Common.conf(app);
        if (a.containsKey("max-rate-per-partition")) {
            conf.set("spark.streaming.kafka.maxRatePerPartition", a.get("max-rate-per-partition"));
        }
        return conf;
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = Common.args(argv, USAGE);
        String brokers = Common.need(a, "brokers", USAGE);
        String topic = Common.need(a, "topic", USAGE);
        long records = Long.parseLong(Common.need(a, "records", USAGE));
        long batchMs = Long.parseLong(a.getOrDefault("batch-ms", "1000"));
        long timeoutS = Long.parseLong(a.getOrDefault("timeout-s", "900"));

        JavaStreamingContext ssc = new JavaStreamingContext(kafkaConf("sluice-baseline-kafka-count", a),
                Durations.milliseconds(batchMs));
        ssc.sparkContext().setLogLevel("WARN");
        ssc.addStreamingListener(SPAN);

        JavaInputDStream<ConsumerRecord<byte[], byte[]>> stream = KafkaUtils.createDirectStream(ssc,
                LocationStrategies.PreferConsistent(),
                ConsumerStrategies.<byte[], byte[]>Subscribe(List.of(topic),
                        consumerParams(brokers, "kafka-count")));
        stream.foreachRDD((rdd, time) -> {
            // Not rdd.count(): a KafkaRDD answers that from its offset ranges without
            // fetching a record. This reads every record and adds up the value sizes.
            long[] nb = rdd.mapPartitions(it -> {
                long[] c = new long[2];
                while (it.hasNext()) {
                    byte[] v = it.next().value();
                    c[0] += 1;
                    c[1] += v == null ? 0 : v.length;
                }
                return List.of(c).iterator();
            }).fold(new long[2], (x, y) -> new long[] {x[0] + y[0], x[1] + y[1]});
            long total = TOTAL.addAndGet(nb[0]);
            BYTES.addAndGet(nb[1]);
            System.err.printf("{\"batch_time_ms\":%d,\"done_ms\":%d,\"records\":%d,\"total\":%d}%n",
                    time.milliseconds(), System.currentTimeMillis(), nb[0], total);
            if (total >= records) {
                SPAN.reached(time.milliseconds());
            }
        });

        String version = ssc.sparkContext().version();
        long t0 = System.nanoTime();
        ssc.start();
        boolean complete = SPAN.done.await(timeoutS, TimeUnit.SECONDS);
        double wall = (System.nanoTime() - t0) / 1e9;
        ssc.stop(true, false);

        Map<String, Object> r = Common.result("kafka-count", TOTAL.get(), SPAN, batchMs, version,
                complete, wall);
        r.put("expected", records);
        r.put("value_bytes", BYTES.get());
        r.put("topic", topic);
        r.put("kafka_connector", Common.connectorVersion());
        System.out.println(Common.json(r));
        System.exit(complete ? 0 : 1);
    }
}
