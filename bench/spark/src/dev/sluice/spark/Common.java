package dev.sluice.spark;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.spark.SparkConf;
import org.apache.spark.streaming.scheduler.StreamingListener;
import org.apache.spark.streaming.scheduler.StreamingListenerBatchCompleted;
import org.apache.spark.streaming.scheduler.StreamingListenerBatchSubmitted;

/** What the jobs share: arguments, the timing listener, peak RSS, the JSON line. */
final class Common {
    private Common() {}

    /** `--key value` pairs; `--flag` alone maps to "true". */
    static Map<String, String> args(String[] argv, String usage) {
        Map<String, String> m = new HashMap<>();
        for (int i = 0; i < argv.length; i++) {
            String a = argv[i];
            if (a.equals("-h") || a.equals("--help")) {
                System.err.println(usage);
                System.exit(0);
            }
            if (!a.startsWith("--")) {
                die("unexpected argument " + a + "\n" + usage);
            }
            String k = a.substring(2);
            if (i + 1 < argv.length && !argv[i + 1].startsWith("--")) {
                m.put(k, argv[++i]);
            } else {
                m.put(k, "true");
            }
        }
        return m;
    }

    static String need(Map<String, String> a, String k, String usage) {
        String v = a.get(k);
        if (v == null) {
            die("missing --" + k + "\n" + usage);
        }
        return v;
    }

    static void die(String msg) {
        System.err.println("error: " + msg);
        System.exit(2);
    }

    /** The SparkConf every job starts from: local[2], no UI, WARN logging. */
    static SparkConf conf(String app) {
        return new SparkConf()
                .setIfMissing("spark.master", "local[2]")
                .setAppName(app)
                .set("spark.ui.enabled", "false")
                .set("spark.log.level", "WARN");
    }

    /** Peak resident memory of this JVM (VmHWM), in MB. */
    static double peakRssMb() {
        try {
            for (String l : Files.readAllLines(Paths.get("/proc/self/status"))) {
                if (l.startsWith("VmHWM:")) {
                    return Long.parseLong(l.split("\\s+")[1]) / 1024.0;
                }
            }
        } catch (IOException | RuntimeException e) {
            // fall through
        }
        return 0.0;
    }

    /** The version of the Kafka 0-10 connector jar on the classpath, from its file name. */
    static String connectorVersion() {
        try {
            String p = org.apache.spark.streaming.kafka010.KafkaUtils.class
                    .getProtectionDomain().getCodeSource().getLocation().getPath();
            String f = p.substring(p.lastIndexOf('/') + 1);
            java.util.regex.Matcher m = java.util.regex.Pattern
                    .compile("spark-streaming-kafka-0-10_[0-9.]+-(.+)\\.jar").matcher(f);
            return m.matches() ? m.group(1) : f;
        } catch (RuntimeException e) {
            return "unknown";
        }
    }

    /**
     * Times a job as the sluice benches do: from the submission of the first batch that
     * had input to the completion of the batch in which the expected total was reached
     * (the job calls {@link #reached} from that batch's output operation).
     */
    static final class Span implements StreamingListener {
        final AtomicLong firstSubmittedMs = new AtomicLong(-1);
        final AtomicLong lastInputCompletedMs = new AtomicLong(-1);
        final AtomicLong doneBatchMs = new AtomicLong(-1);
        final AtomicLong doneCompletedMs = new AtomicLong(-1);
        final AtomicLong batches = new AtomicLong();
        final AtomicLong maxProcessingMs = new AtomicLong();
        final AtomicLong maxDelayMs = new AtomicLong();
        final CountDownLatch done = new CountDownLatch(1);

        /** Called from the output operation of the batch at `batchTimeMs`. */
        void reached(long batchTimeMs) {
            doneBatchMs.compareAndSet(-1, batchTimeMs);
        }

        @Override
        public void onBatchSubmitted(StreamingListenerBatchSubmitted e) {
            if (e.batchInfo().numRecords() > 0) {
                firstSubmittedMs.compareAndSet(-1, e.batchInfo().submissionTime());
            }
        }

        @Override
        public void onBatchCompleted(StreamingListenerBatchCompleted e) {
            var b = e.batchInfo();
            batches.incrementAndGet();
            long end = b.processingEndTime().isDefined()
                    ? (Long) b.processingEndTime().get() : System.currentTimeMillis();
            if (b.numRecords() > 0) {
                lastInputCompletedMs.set(end);
                if (b.processingDelay().isDefined()) {
                    maxProcessingMs.accumulateAndGet((Long) b.processingDelay().get(), Math::max);
                }
                if (b.totalDelay().isDefined()) {
                    maxDelayMs.accumulateAndGet((Long) b.totalDelay().get(), Math::max);
                }
            }
            if (b.batchTime().milliseconds() == doneBatchMs.get()) {
                doneCompletedMs.set(end);
                done.countDown();
            }
        }

        /** Seconds from the first batch with input to the done batch (or the last batch
         *  with input, on a timeout). */
        double seconds() {
            long f = firstSubmittedMs.get();
            long l = doneCompletedMs.get() >= 0 ? doneCompletedMs.get() : lastInputCompletedMs.get();
            return f < 0 || l < 0 ? 0.0 : (l - f) / 1000.0;
        }
    }

    /** One JSON object on one line; values are numbers, booleans or strings. */
    static String json(Map<String, Object> m) {
        StringBuilder s = new StringBuilder("{");
        for (Map.Entry<String, Object> e : m.entrySet()) {
            if (s.length() > 1) {
                s.append(',');
            }
            s.append('"').append(e.getKey()).append("\":");
            Object v = e.getValue();
            if (v instanceof Double) {
                s.append(String.format(java.util.Locale.ROOT, "%.2f", (Double) v));
            } else if (v instanceof Number || v instanceof Boolean) {
                s.append(v);
            } else {
                s.append('"').append(String.valueOf(v).replace("\\", "\\\\").replace("\"", "\\\""))
                        .append('"');
            }
        }
        return s.append('}').toString();
    }

    /** The fields every job's JSON line starts with. */
    static Map<String, Object> result(String job, long records, Span span, long batchMs,
                                      String sparkVersion, boolean complete, double wallSeconds) {
        double secs = span.seconds();
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("job", job);
        m.put("records", records);
        m.put("seconds", secs);
        m.put("records_per_s", Math.round(secs > 0 ? records / secs : 0.0));
        m.put("peak_rss_mb", peakRssMb());
        m.put("batch_ms", batchMs);
        m.put("spark", sparkVersion);
        m.put("complete", complete);
        m.put("wall_seconds", wallSeconds);
        m.put("batches", span.batches.get());
        m.put("max_processing_ms", span.maxProcessingMs.get());
        m.put("max_total_delay_ms", span.maxDelayMs.get());
        return m;
    }
}
