package dev.sluice.spark;

import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.spark.TaskContext;
import org.apache.spark.streaming.Durations;
import org.apache.spark.streaming.api.java.JavaInputDStream;
import org.apache.spark.streaming.api.java.JavaStreamingContext;
import org.apache.spark.streaming.kafka010.ConsumerStrategies;
import org.apache.spark.streaming.kafka010.HasOffsetRanges;
import org.apache.spark.streaming.kafka010.KafkaUtils;
import org.apache.spark.streaming.kafka010.LocationStrategies;
import org.apache.spark.streaming.kafka010.OffsetRange;
import org.apache.spark.util.LongAccumulator;

/**
 * Kafka to Kafka ETL over the direct stream: each input value is a `<<<!>>>`-separated
 * log line (README.md, "ETL record format"); malformed ones are dropped and counted, the
 * rest become `user\ttime\tclient\tserver\turl` on the output topic, written by one
 * idempotent KafkaProducer (acks=all) per partition per batch, to the output partition
 * of the same number as the input one. At-least-once: Spark has no transactional sink.
 */
public final class KafkaEtl {
    static final String USAGE = "usage: KafkaEtl --brokers B --in T1 --out T2 --records N"
            + " [--batch-ms 1000] [--timeout-s 900] [--max-rate-per-partition R]";

    static final String DELIM = "<<<!>>>";
    static final int FIELDS = 7;

    static final Common.Span SPAN = new Common.Span();
    static final AtomicLong IN = new AtomicLong();
    static final AtomicLong GOOD = new AtomicLong();
    static final AtomicLong BAD = new AtomicLong();

    private KafkaEtl() {}

    /**
     * The cleaned line for one input value, or null when it is malformed: not exactly
     * 7 fields (empty fields count, trailing ones too) or an empty user id (field 1).
     */
    static String clean(String v) {
        if (v == null) {
            return null;
        }
        int[] starts = new int[FIELDS + 1];
        int n = 0;
        int from = 0;
        while (true) {
            if (n == FIELDS) {
                return null; // an 8th field
            }
            starts[n++] = from;
            int d = v.indexOf(DELIM, from);
            if (d < 0) {
                break;
            }
            from = d + DELIM.length();
        }
        if (n != FIELDS || v.startsWith(DELIM)) {
            return null; // too few fields, or field 1 (user id) empty
        }
        // Fields 1-5 end where field 6 begins, minus the delimiter: swap the four
        // delimiters between them for tabs.
        StringBuilder s = new StringBuilder(v.length());
        for (int f = 0; f < 5; f++) {
            int end = starts[f + 1] - DELIM.length();
            if (f > 0) {
                s.append('\t');
            }
            s.append(v, starts[f], end);
        }
        return s.toString();
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = Common.args(argv, USAGE);
        String brokers = Common.need(a, "brokers", USAGE);
        String in = Common.need(a, "in", USAGE);
        String out = Common.need(a, "out", USAGE);
        long records = Long.parseLong(Common.need(a, "records", USAGE));
        long batchMs = Long.parseLong(a.getOrDefault("batch-ms", "1000"));
        long timeoutS = Long.parseLong(a.getOrDefault("timeout-s", "900"));

        // The output topic: created with the input's partition count when missing.
        int outPartitions;
        long outBefore;
        Properties ap = new Properties();
        ap.put("bootstrap.servers", brokers);
        try (Admin admin = Admin.create(ap)) {
            int inPartitions = admin.describeTopics(List.of(in)).allTopicNames().get()
                    .get(in).partitions().size();
            Set<String> names = admin.listTopics().names().get();
            if (!names.contains(out)) {
                admin.createTopics(List.of(new NewTopic(out, inPartitions, (short) 1))).all().get();
            }
            outPartitions = admin.describeTopics(List.of(out)).allTopicNames().get()
                    .get(out).partitions().size();
            outBefore = endOffsetsSum(admin, out, outPartitions);
        }

        JavaStreamingContext ssc = new JavaStreamingContext(
                KafkaCount.kafkaConf("sluice-baseline-kafka-etl", a), Durations.milliseconds(batchMs));
        ssc.sparkContext().setLogLevel("WARN");
        ssc.addStreamingListener(SPAN);
        LongAccumulator accIn = ssc.sparkContext().sc().longAccumulator("in");
        LongAccumulator accGood = ssc.sparkContext().sc().longAccumulator("good");
        LongAccumulator accBad = ssc.sparkContext().sc().longAccumulator("malformed");

        Map<String, Object> cp = KafkaCount.consumerParams(brokers, "kafka-etl");
        cp.put("value.deserializer", org.apache.kafka.common.serialization.StringDeserializer.class);
        JavaInputDStream<ConsumerRecord<byte[], String>> stream = KafkaUtils.createDirectStream(ssc,
                LocationStrategies.PreferConsistent(),
                ConsumerStrategies.<byte[], String>Subscribe(List.of(in), cp));

        final int outN = outPartitions;
        stream.foreachRDD((rdd, time) -> {
            OffsetRange[] ranges = ((HasOffsetRanges) rdd.rdd()).offsetRanges();
            rdd.foreachPartition((Iterator<ConsumerRecord<byte[], String>> it) -> {
                // A KafkaRDD's partition i reads offset range i.
                int outPart = ranges[TaskContext.getPartitionId()].partition() % outN;
                Map<String, Object> pp = new HashMap<>();
                pp.put("bootstrap.servers", brokers);
                pp.put("acks", "all");
                pp.put("enable.idempotence", true);
                pp.put("linger.ms", 5);
                pp.put("batch.size", 65536);
                pp.put("key.serializer", ByteArraySerializer.class);
                pp.put("value.serializer", ByteArraySerializer.class);
                long nIn = 0;
                long nGood = 0;
                long nBad = 0;
                AtomicReference<Exception> err = new AtomicReference<>();
                try (KafkaProducer<byte[], byte[]> p = new KafkaProducer<>(pp)) {
                    while (it.hasNext()) {
                        String c = clean(it.next().value());
                        nIn++;
                        if (c == null) {
                            nBad++;
                            continue;
                        }
                        nGood++;
                        p.send(new ProducerRecord<>(out, outPart, null, c.getBytes(StandardCharsets.UTF_8)),
                                (md, e) -> {
                                    if (e != null) {
                                        err.compareAndSet(null, e);
                                    }
                                });
                    }
                    p.flush();
                }
                if (err.get() != null) {
                    throw new RuntimeException("writing to " + out + " failed", err.get());
                }
                accIn.add(nIn);
                accGood.add(nGood);
                accBad.add(nBad);
            });
            IN.set(accIn.value());
            long total = IN.get();
            GOOD.set(accGood.value());
            BAD.set(accBad.value());
            System.err.printf("{\"batch_time_ms\":%d,\"done_ms\":%d,\"in\":%d,\"good\":%d,\"malformed\":%d}%n",
                    time.milliseconds(), System.currentTimeMillis(), total, GOOD.get(), BAD.get());
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

        long outAfter;
        try (Admin admin = Admin.create(ap)) {
            outAfter = endOffsetsSum(admin, out, outPartitions);
        }
        Map<String, Object> r = Common.result("kafka-etl", IN.get(), SPAN, batchMs, version, complete, wall);
        r.put("expected", records);
        r.put("good", GOOD.get());
        r.put("malformed", BAD.get());
        r.put("out_topic_records", outAfter - outBefore);
        r.put("in_topic", in);
        r.put("out_topic", out);
        r.put("kafka_connector", Common.connectorVersion());
        r.put("delivery", "at-least-once");
        System.out.println(Common.json(r));
        System.exit(complete ? 0 : 1);
    }

    static long endOffsetsSum(Admin admin, String topic, int partitions) throws Exception {
        Map<TopicPartition, OffsetSpec> q = new HashMap<>();
        for (int i = 0; i < partitions; i++) {
            q.put(new TopicPartition(topic, i), OffsetSpec.latest());
        }
        long s = 0;
        for (var e : admin.listOffsets(q).all().get().values()) {
            s += e.offset();
        }
        return s;
    }
}
