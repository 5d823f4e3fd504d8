//! `sluice bench kafka`: the direct source's read throughput (a count over a pre-filled
//! 3-partition topic of 100-byte records) and topic-to-topic exactly-once ETL
//! throughput, on the inputs and with the timing of Spark's `kafka-count` and
//! `kafka-etl` baselines (bench/spark/README.md: same record generator, same seeds,
//! same topics layout, timed from the first batch with input to the completion of the
//! batch that reaches the expected count).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sluice::prelude::*;
use sluice::sinks::kafka::send_waiting;
use sluice::sinks::KafkaSink;
use sluice::KafkaSource;

const TIMEOUT: Duration = Duration::from_secs(60);

/// SplitMix64 as bench/spark/README.md ("Random numbers") defines it for record `i`.
struct SplitMix(u64);

impl SplitMix {
    fn new(seed: u64, i: u64) -> Self {
        SplitMix(seed ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Record `i` of the `plain` format: 100 ASCII bytes.
pub(crate) fn plain_record(seed: u64, i: u64) -> String {
    let mut r = SplitMix::new(seed, i);
    let mut s = format!("{i:012} ");
    let mut x = 0;
    for k in 0..87u64 {
        if k % 8 == 0 {
            x = r.next();
        }
        s.push((b'a' + ((x >> ((k % 8) * 8)) & 0xff) as u8 % 26) as char);
    }
    s
}

const DELIM: &str = "<<<!>>>";

/// Record `i` of the `etl` format with `malformed` per million malformed records.
pub(crate) fn etl_record(seed: u64, i: u64, malformed_ppm: u64) -> String {
    let mut r = SplitMix::new(seed, i);
    let [a, b, c, d, e, f, g, h] = std::array::from_fn(|_| r.next());
    const STATUS: [&str; 10] = [
        "200", "200", "200", "200", "200", "200", "301", "304", "404", "500",
    ];
    let bad = (a % 1_000_000 < malformed_ppm).then_some((a >> 32) % 3);
    let user = if bad == Some(0) {
        String::new()
    } else {
        format!("u{:07}", b % 10_000_000)
    };
    let mut fields = vec![
        user,
        (1_764_115_200_000 + 10 * i + c % 10).to_string(),
        format!(
            "10.{}.{}.{}:{}",
            d & 255,
            (d >> 8) & 255,
            (d >> 16) & 255,
            1024 + ((d >> 32) % 64512)
        ),
        format!(
            "web{:02}:{}",
            e % 16,
            if (e >> 32) & 1 == 0 { "443" } else { "8080" }
        ),
        format!("/p/{}", f % 1_000_000),
        STATUS[(g % 10) as usize].to_owned(),
        if h % 10 < 7 {
            String::new()
        } else {
            "/home".into()
        },
    ];
    match bad {
        Some(1) => {
            fields.pop();
        }
        Some(2) => fields.push("x".into()),
        _ => {}
    }
    fields.join(DELIM)
}

/// The ETL job's transformation: fields 1–5 joined by tabs, or `None` for a malformed
/// record (not exactly 7 fields, or an empty user id).
pub(crate) fn etl_clean(v: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(v).ok()?;
    let fields: Vec<&str> = s.split(DELIM).collect();
    if fields.len() != 7 || fields[0].is_empty() {
        return None;
    }
    Some(fields[..5].join("\t"))
}

fn admin(brokers: &str) -> Result<AdminClient<DefaultClientContext>, String> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| format!("kafka admin client for {brokers}: {e}"))
}

/// Records in `topic` (sum over partitions of high − low); `None` if it does not exist.
fn topic_records(brokers: &str, topic: &str) -> Result<Option<(usize, u64)>, String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| e.to_string())?;
    let md = c
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(|e| format!("metadata of {topic} on {brokers}: {e}"))?;
    let Some(t) = md.topics().first().filter(|t| t.error().is_none()) else {
        return Ok(None);
    };
    let mut n = 0;
    for p in t.partitions() {
        let (lo, hi) = c
            .fetch_watermarks(topic, p.id(), TIMEOUT)
            .map_err(|e| e.to_string())?;
        n += (hi - lo) as u64;
    }
    Ok(Some((t.partitions().len(), n)))
}

/// (Re)creates `topic` with 3 partitions.
fn recreate(brokers: &str, topic: &str) -> Result<(), String> {
    let a = admin(brokers)?;
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    if topic_records(brokers, topic)?.is_some() {
        futures::executor::block_on(a.delete_topics(&[topic], &opts)).map_err(|e| e.to_string())?;
        // Deletion completes in the background: wait until the name is free.
        let deadline = Instant::now() + TIMEOUT;
        while topic_records(brokers, topic)?.is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let res = futures::executor::block_on(a.create_topics(
            &[NewTopic::new(topic, 3, TopicReplication::Fixed(1))],
            &opts,
        ))
        .map_err(|e| e.to_string())?;
        match res.into_iter().next() {
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Some(Err((t, e))) => return Err(format!("create topic {t}: {e}")),
            _ => return Ok(()),
        }
    }
}

/// Fills `topic` with records 0..n of `gen` (record i to partition i mod 3), unless it
/// already holds exactly those.
fn fill(brokers: &str, topic: &str, n: u64, gen: impl Fn(u64) -> String) -> Result<(), String> {
    if topic_records(brokers, topic)? == Some((3, n)) {
        eprintln!("sluice bench kafka: {topic} already holds {n} records");
        return Ok(());
    }
    recreate(brokers, topic)?;
    let t0 = Instant::now();
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.size", "1048576")
        .create()
        .map_err(|e| e.to_string())?;
    for i in 0..n {
        let v = gen(i);
        let rec = BaseRecord::<(), String>::to(topic)
            .partition((i % 3) as i32)
            .payload(&v);
        send_waiting(&p, rec).map_err(|e| format!("filling {topic}: {e}"))?;
    }
    p.flush(Duration::from_secs(600))
        .map_err(|e| format!("filling {topic}: {e}"))?;
    eprintln!(
        "sluice bench kafka: filled {topic} with {n} records in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Times a job: from the batch time of the first batch with input (the tick at which
/// its ranges were fixed and read) to the completion of the batch that reaches
/// `expected` input records.
#[derive(Debug)]
struct Timer {
    expected: u64,
    seen: AtomicU64,
    first_batch_ms: AtomicU64,
    done: Mutex<Option<(Instant, u64, u64)>>,
    batches: AtomicU64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl StreamingListener for Timer {
    fn on_batch_completed(&self, info: &BatchInfo) {
        if info.records == 0 {
            return;
        }
        let _ = self.first_batch_ms.compare_exchange(
            0,
            info.time.0,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        self.batches.fetch_add(1, Ordering::SeqCst);
        let seen = self.seen.fetch_add(info.records, Ordering::SeqCst) + info.records;
        if seen >= self.expected {
            let mut d = self.done.lock().unwrap_or_else(|e| e.into_inner());
            if d.is_none() {
                *d = Some((Instant::now(), now_ms(), seen));
            }
        }
    }
}

/// Runs the job `build` defines until `timer` is done; returns the seconds.
fn timed(
    batch_ms: u64,
    expected: u64,
    build: impl FnOnce(&StreamingContext) -> sluice::Result<()>,
) -> Result<(f64, u64), String> {
    let ssc = StreamingContext::new(StreamingConf::new(
        "sluice-bench-kafka",
        Duration::from_millis(batch_ms),
    ))
    .map_err(|e| e.to_string())?;
    build(&ssc).map_err(|e| e.to_string())?;
    let timer = Arc::new(Timer {
        expected,
        seen: AtomicU64::new(0),
        first_batch_ms: AtomicU64::new(0),
        done: Mutex::new(None),
        batches: AtomicU64::new(0),
    });
    ssc.add_listener(timer.clone());
    ssc.start().map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if ssc
            .await_termination_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?
        {
            return Err("the job stopped before reading everything".into());
        }
        if let Some((_, end_ms, _)) = *timer.done.lock().unwrap_or_else(|e| e.into_inner()) {
            ssc.stop(false).map_err(|e| e.to_string())?;
            let first = timer.first_batch_ms.load(Ordering::SeqCst);
            let secs = end_ms.saturating_sub(first) as f64 / 1000.0;
            return Ok((secs, timer.batches.load(Ordering::SeqCst)));
        }
        if Instant::now() > deadline {
            let _ = ssc.stop(false);
            return Err(format!(
                "timed out with {} of {expected} records",
                timer.seen.load(Ordering::SeqCst)
            ));
        }
    }
}

/// The options of `sluice bench kafka`.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaBenchOptions {
    /// The brokers, HOST:PORT.
    #[arg(long)]
    pub brokers: String,
    /// Records of the count's input topic.
    #[arg(long, default_value_t = 10_000_000)]
    pub records: u64,
    /// Records of the ETL's input topic.
    #[arg(long, default_value_t = 3_000_000)]
    pub etl_records: u64,
    /// Batch interval in ms.
    #[arg(long, default_value_t = 1000)]
    pub batch_ms: u64,
    /// Runs of each job.
    #[arg(long, default_value_t = 2)]
    pub runs: u32,
    /// Cap per partition per second (default none, as Spark's default).
    #[arg(long)]
    pub max_rate_per_partition: Option<u64>,
}

/// Runs the benchmark; one JSON line per run on stdout.
pub fn run(o: &KafkaBenchOptions) -> Result<(), String> {
    let count_topic = format!("sluice-bench-plain-s1-{}", o.records);
    fill(&o.brokers, &count_topic, o.records, |i| plain_record(1, i))?;
    let etl_topic = format!("sluice-bench-etl-s1-{}", o.etl_records);
    fill(&o.brokers, &etl_topic, o.etl_records, |i| {
        etl_record(1, i, 50_000)
    })?;
    let source = |topic: &str| {
        let s = KafkaSource::new(o.brokers.clone()).topics([topic.to_owned()]);
        match o.max_rate_per_partition {
            Some(r) => s.max_rate_per_partition(r),
            None => s,
        }
    };
    // The client's own ceiling first (same topic, same read loop, no job): what the
    // count below could reach at best through librdkafka on this machine.
    for run in 1..=o.runs {
        let c = KafkaSource::new(o.brokers.clone())
            .topics([count_topic.clone()])
            .client_read_ceiling()
            .map_err(|e| format!("reading {count_topic} with the client alone: {e}"))?;
        let secs = c.elapsed.as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "bench": "kafka-client-ceiling", "run": run, "records": c.records,
                "value_bytes": c.value_bytes, "seconds": (secs * 1000.0).round() / 1000.0,
                "records_per_s": (c.records as f64 / secs).round(), "topic": count_topic,
            })
        );
    }
    for run in 1..=o.runs {
        let bytes = Arc::new(AtomicU64::new(0));
        let b2 = bytes.clone();
        let src = source(&count_topic);
        let (secs, batches) = timed(o.batch_ms, o.records, move |ssc| {
            // Element-wise, so each partition streams through in pieces (Spark's
            // mapPartitions over the KafkaRDD's iterator does the same work).
            ssc.kafka_direct_stream(src)?
                .map(|r| (1u64, r.value.as_ref().map_or(0, Vec::len) as u64))?
                .reduce(|a, b| (a.0 + b.0, a.1 + b.1))?
                .foreach_batch(move |b| {
                    b2.fetch_add(b.batch.iter().map(|(_, v)| v).sum(), Ordering::Relaxed);
                    Ok(())
                })
        })?;
        println!(
            "{}",
            serde_json::json!({
                "bench": "kafka-count", "run": run, "records": o.records,
                "value_bytes": bytes.load(Ordering::Relaxed), "seconds": secs,
                "records_per_s": (o.records as f64 / secs).round(), "batches": batches,
                "batch_ms": o.batch_ms, "max_rate_per_partition": o.max_rate_per_partition,
                "peak_rss_mb": crate::bench_wordcount::peak_rss_mb().round(), "topic": count_topic,
            })
        );
    }
    for run in 1..=o.runs {
        let out = format!("sluice-bench-etl-out-{}-{run}", std::process::id());
        recreate(&o.brokers, &out)?;
        let malformed = Arc::new(AtomicU64::new(0));
        let m2 = malformed.clone();
        let src = source(&etl_topic);
        let sink = KafkaSink::new(o.brokers.clone(), out.clone(), out.clone())
            .set("linger.ms", "5")
            .set("batch.size", "65536");
        let (secs, batches) = timed(o.batch_ms, o.etl_records, move |ssc| {
            ssc.kafka_direct_stream(src)?
                .flat_map(move |r| {
                    let good = etl_clean(r.value.as_deref().unwrap_or_default());
                    if good.is_none() {
                        m2.fetch_add(1, Ordering::Relaxed);
                    }
                    good
                })?
                .save_to_kafka(sink, |v: &String| ((), v.clone()))
        })?;
        let written = topic_records(&o.brokers, &out)?.map_or(0, |(_, n)| n);
        println!(
            "{}",
            serde_json::json!({
                "bench": "kafka-etl", "run": run, "records": o.etl_records,
                "malformed": malformed.load(Ordering::Relaxed),
                "good": o.etl_records - malformed.load(Ordering::Relaxed),
                "out_topic_offsets": written, "seconds": secs,
                "records_per_s": (o.etl_records as f64 / secs).round(), "batches": batches,
                "batch_ms": o.batch_ms, "delivery": "exactly-once",
                "peak_rss_mb": crate::bench_wordcount::peak_rss_mb().round(),
                "in": etl_topic, "out": out,
            })
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generators_match_the_spark_readme() {
        assert_eq!(
            plain_record(1, 0),
            "000000000000 lochctkpzcmxflbiqhyregroltoeoeljdzbbigfjycvovlznjichecxqndnspfxdmjwboyxvuztmmopvtbibpmn"
        );
        assert_eq!(plain_record(1, 5).len(), 100);
        let want = [
            (0, "u6428519<<<!>>>1764115200000<<<!>>>10.11.201.66:50832<<<!>>>web09:443<<<!>>>/p/530048<<<!>>>200<<<!>>>"),
            (1, "u7781409<<<!>>>1764115200016<<<!>>>10.84.93.146:51402<<<!>>>web15:8080<<<!>>>/p/630164<<<!>>>500<<<!>>>"),
            (2, "u5798959<<<!>>>1764115200029<<<!>>>10.171.142.199:33466<<<!>>>web00:443<<<!>>>/p/199915<<<!>>>200<<<!>>>/home"),
            (3, "u3718029<<<!>>>1764115200030<<<!>>>10.130.215.169:59341<<<!>>>web14:443<<<!>>>/p/595211<<<!>>>200<<<!>>>"),
            (29, "u6677380<<<!>>>1764115200293<<<!>>>10.78.250.184:35040<<<!>>>web11:8080<<<!>>>/p/608683<<<!>>>200"),
            (61, "<<<!>>>1764115200610<<<!>>>10.184.246.167:21366<<<!>>>web06:443<<<!>>>/p/229372<<<!>>>301<<<!>>>"),
            (113, "u9204874<<<!>>>1764115201137<<<!>>>10.128.173.211:64857<<<!>>>web12:443<<<!>>>/p/214868<<<!>>>200<<<!>>><<<!>>>x"),
        ];
        for (i, line) in want {
            assert_eq!(etl_record(1, i, 50_000), line, "record {i}");
        }
        assert_eq!(
            etl_clean(want[0].1.as_bytes()).as_deref(),
            Some("u6428519\t1764115200000\t10.11.201.66:50832\tweb09:443\t/p/530048")
        );
        for (_, bad) in &want[4..] {
            assert_eq!(etl_clean(bad.as_bytes()), None, "{bad}");
        }
    }
}
