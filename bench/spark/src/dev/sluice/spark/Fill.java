package dev.sluice.spark;

import java.security.MessageDigest;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Creates a topic (deleting it first if it exists) and fills it with records 0..N-1 of
 * the seeded sequence (Records.java), record i to partition i mod P, in order, with no
 * key. `--print K` prints the first K values instead (no broker); `--digest` adds the
 * SHA-256 of all values (each followed by a newline) to the JSON line.
 */
public final class Fill {
    static final String USAGE = "usage: Fill --brokers B --topic T --records N [--format plain|etl]"
            + " [--seed 1] [--partitions 3] [--malformed 0.05] [--digest]\n"
            + "       Fill --print K [--format plain|etl] [--seed 1] [--malformed 0.05] [--from 0]";

    private Fill() {}

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = Common.args(argv, USAGE);
        String format = a.getOrDefault("format", "plain");
        if (!format.equals("plain") && !format.equals("etl")) {
            Common.die("--format is plain or etl\n" + USAGE);
        }
        long seed = Long.parseLong(a.getOrDefault("seed", "1"));
        long ppm = Math.round(Double.parseDouble(a.getOrDefault("malformed", "0.05")) * 1_000_000);
        boolean etl = format.equals("etl");

        if (a.containsKey("print")) {
            long k = Long.parseLong(a.get("print"));
            long from = Long.parseLong(a.getOrDefault("from", "0"));
            for (long i = from; i < from + k; i++) {
                System.out.println(etl ? Records.etl(seed, i, ppm)
                        : new String(Records.plain(seed, i), java.nio.charset.StandardCharsets.US_ASCII));
            }
            return;
        }

        String brokers = Common.need(a, "brokers", USAGE);
        String topic = Common.need(a, "topic", USAGE);
        long n = Long.parseLong(Common.need(a, "records", USAGE));
        int partitions = Integer.parseInt(a.getOrDefault("partitions", "3"));
        boolean digest = a.containsKey("digest");

        Properties ap = new Properties();
        ap.put("bootstrap.servers", brokers);
        try (Admin admin = Admin.create(ap)) {
            recreate(admin, topic, partitions);
        }

        Map<String, Object> pp = new HashMap<>();
        pp.put("bootstrap.servers", brokers);
        pp.put("acks", "all");
        pp.put("enable.idempotence", true);
        pp.put("linger.ms", 20);
        pp.put("batch.size", 1 << 20);
        pp.put("buffer.memory", 256L << 20);
        pp.put("key.serializer", ByteArraySerializer.class);
        pp.put("value.serializer", ByteArraySerializer.class);
        MessageDigest sha = digest ? MessageDigest.getInstance("SHA-256") : null;
        AtomicReference<Exception> err = new AtomicReference<>();
        long bytes = 0;
        long malformed = 0;
        long t0 = System.nanoTime();
        try (KafkaProducer<byte[], byte[]> p = new KafkaProducer<>(pp)) {
            for (long i = 0; i < n && err.get() == null; i++) {
                byte[] v;
                if (etl) {
                    v = Records.etlBytes(seed, i, ppm);
                    if (Records.malformedKind(new Records.Rng(seed, i).next(), ppm) >= 0) {
                        malformed++;
                    }
                } else {
                    v = Records.plain(seed, i);
                }
                bytes += v.length;
                if (sha != null) {
                    sha.update(v);
                    sha.update((byte) '\n');
                }
                p.send(new ProducerRecord<>(topic, (int) (i % partitions), null, v), (md, e) -> {
                    if (e != null) {
                        err.compareAndSet(null, e);
                    }
                });
            }
            p.flush();
        }
        if (err.get() != null) {
            throw new RuntimeException("producing to " + topic + " failed", err.get());
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("tool", "fill");
        r.put("topic", topic);
        r.put("format", format);
        r.put("seed", seed);
        r.put("records", n);
        r.put("partitions", (long) partitions);
        r.put("bytes", bytes);
        r.put("mean_bytes", n > 0 ? (double) bytes / n : 0.0);
        if (etl) {
            r.put("malformed", malformed);
            r.put("malformed_ppm", ppm);
        }
        r.put("seconds", secs);
        r.put("records_per_s", Math.round(n / Math.max(secs, 1e-9)));
        if (sha != null) {
            r.put("sha256", HexFormat.of().formatHex(sha.digest()));
        }
        System.out.println(Common.json(r));
    }

    /** Deletes the topic if it exists, then creates it (retrying while the deletion
     *  is still going on). */
    static void recreate(Admin admin, String topic, int partitions) throws Exception {
        Set<String> names = admin.listTopics().names().get();
        if (names.contains(topic)) {
            System.err.println("fill: deleting the existing topic " + topic);
            admin.deleteTopics(List.of(topic)).all().get();
        }
        long deadline = System.currentTimeMillis() + 60_000;
        while (true) {
            try {
                admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all().get();
                return;
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)
                        || System.currentTimeMillis() > deadline) {
                    throw e;
                }
                Thread.sleep(200);
            }
        }
    }
}
