//! The Kafka direct source and the exactly-once Kafka sink against the real broker the
//! test kit starts (Apache Kafka in KRaft mode): logged offset ranges replayed exactly
//! after a SIGKILL at each crash point with the output read back `read_committed`; a
//! partition added while running; retention under both policies; a zombie sink fenced;
//! completed offsets mirrored to a consumer group;
//! unknown topics and unreachable brokers.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use sluice::prelude::*;
use sluice::sinks::{BatchOutcome, KafkaSink};
use sluice::{Batch, KafkaRecord, KafkaSource, RetentionPolicy, StartingOffsets};

const TIMEOUT: Duration = Duration::from_secs(60);

/// One StreamingContext per process at a time: the in-process tests take turns.
static CONTEXT: Mutex<()> = Mutex::new(());

fn brokers() -> String {
    sluice_testkit::kafka_brokers()
}

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap()
}

/// A new topic with a name unique to this run.
fn topic(prefix: &str, partitions: i32) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let results = futures::executor::block_on(admin().create_topics(
        &[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
    ))
    .unwrap();
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
    name
}

/// Produces `values` to `partition` of `topic` (non-transactionally) and flushes.
fn produce(topic: &str, partition: i32, values: &[String]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    for v in values {
        p.send(
            BaseRecord::<(), _>::to(topic)
                .partition(partition)
                .payload(v),
        )
        .unwrap();
        p.poll(Duration::ZERO);
    }
    p.flush(TIMEOUT).unwrap();
}

/// Every `(key, value)` of `partition` of `topic` a `read_committed` reader sees.
fn read_committed(topic: &str, partition: i32) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", "sluice-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let (_, high) = c.fetch_watermarks(topic, partition, TIMEOUT).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let pos = c
            .position()
            .unwrap()
            .find_partition(topic, partition)
            .and_then(|p| match p.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(0);
        if pos >= high {
            return out;
        }
        assert!(Instant::now() < deadline, "read stalled at {pos} of {high}");
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            out.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
}

fn partitions_of(topic: &str) -> i32 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let md = c.fetch_metadata(Some(topic), TIMEOUT).unwrap();
    md.topics()[0].partitions().len() as i32
}

type Seen = Arc<Mutex<Vec<(u64, Vec<Vec<KafkaRecord>>, Vec<sluice::OffsetRange>)>>>;

/// A context reading `source` that keeps every batch's partitions and ranges; with a
/// checkpoint location, resumed from it (`get_or_create`).
fn collecting(source: KafkaSource, ckpt: Option<&std::path::Path>) -> (StreamingContext, Seen) {
    let mut conf = StreamingConf::new("kafka-test", Duration::from_millis(100));
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let build = move |ssc: &StreamingContext| {
        let handle = source.clone();
        ssc.kafka_direct_stream(source)?.foreach_batch(move |b| {
            if !b.batch.is_empty() {
                s2.lock().unwrap().push((
                    b.batch_id(),
                    b.batch.partitions().to_vec(),
                    handle.offset_ranges(b.time),
                ));
            }
            Ok(())
        })
    };
    let ssc = match ckpt {
        Some(c) => {
            conf = conf
                .checkpoint(c.display().to_string())
                .checkpoint_interval(Duration::from_millis(100));
            StreamingContext::get_or_create(conf, build).unwrap()
        }
        None => {
            let ssc = StreamingContext::new(conf).unwrap();
            build(&ssc).unwrap();
            ssc
        }
    };
    (ssc, seen)
}

fn records(seen: &Seen) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(_, ps, _)| ps.iter().map(Vec::len).sum::<usize>())
        .sum()
}

/// Waits (generously) until `seen` holds `n` records; fails the test if it never does.
fn wait_for(seen: &Seen, n: usize) {
    let deadline = Instant::now() + TIMEOUT;
    while records(seen) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records read",
            records(seen)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn values(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("{tag}-{i}")).collect()
}

#[test]
fn each_record_once_one_batch_partition_per_kafka_partition_and_contiguous_ranges() {
    let _one = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    let t = topic("direct", 3);
    for p in 0..3 {
        produce(&t, p, &values(50, &format!("p{p}")));
    }
    let dir = tempfile::tempdir().unwrap();
    let source = KafkaSource::new(brokers())
        .topics([t.clone()])
        .max_rate_per_partition(200);
    let (ssc, seen) = collecting(source.clone(), Some(dir.path()));
    ssc.start().unwrap();
    wait_for(&seen, 150);
    ssc.stop(true).unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > 1, "max_rate_per_partition split the input");
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut per_partition: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for (_, parts, ranges) in &seen {
        assert_eq!(parts.len(), ranges.len(), "one batch partition per range");
        for (part, r) in parts.iter().zip(ranges) {
            assert!(r.count() <= 20, "200 records/s × 100 ms: {r}");
            let from = next.entry(r.partition).or_insert(0);
            assert_eq!(r.from_offset, *from, "ranges follow each other: {r}");
            *from = r.until_offset;
            for rec in part {
                assert_eq!(
                    (rec.topic.as_str(), rec.partition),
                    (t.as_str(), r.partition)
                );
                assert!(r.from_offset <= rec.offset && rec.offset < r.until_offset);
                per_partition
                    .entry(rec.partition)
                    .or_default()
                    .push(String::from_utf8(rec.value.clone().unwrap()).unwrap());
            }
        }
    }
    for p in 0..3 {
        assert_eq!(
            per_partition[&p],
            values(50, &format!("p{p}")),
            "partition {p}"
        );
    }

    // Resumed from its checkpoint, the job reads only what came after.
    produce(&t, 1, &values(5, "later"));
    let (ssc, seen) = collecting(source, Some(dir.path()));
    ssc.start().unwrap();
    wait_for(&seen, 5);
    ssc.stop(true).unwrap();
    let got: Vec<KafkaRecord> = seen
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, ps, _)| ps.concat())
        .collect();
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got.iter().all(|r| r.partition == 1 && r.offset >= 50));
}

#[test]
fn a_partition_added_while_running_is_read_from_its_start() {
    let _one = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    let t = topic("grow", 1);
    produce(&t, 0, &values(10, "old"));
    let (ssc, seen) = collecting(KafkaSource::new(brokers()).topics([t.clone()]), None);
    ssc.start().unwrap();
    wait_for(&seen, 10);
    let results = futures::executor::block_on(admin().create_partitions(
        &[NewPartitions::new(&t, 2)],
        &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
    ))
    .unwrap();
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("add a partition to {t}: {e}"));
    }
    assert_eq!(partitions_of(&t), 2);
    produce(&t, 1, &values(10, "new"));
    wait_for(&seen, 20);
    ssc.stop(true).unwrap();
    let new: Vec<(i32, i64)> = seen
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, ps, _)| ps.concat())
        .filter(|r| r.partition == 1)
        .map(|r| (r.partition, r.offset))
        .collect();
    assert_eq!(new, (0..10).map(|o| (1, o)).collect::<Vec<_>>());
}

#[test]
fn completed_offsets_are_mirrored_to_a_consumer_group_for_lag_tools() {
    let _one = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    let t = topic("group", 2);
    produce(&t, 0, &values(7, "a"));
    produce(&t, 1, &values(4, "b"));
    let group = format!("{t}-lag");
    let (ssc, seen) = collecting(
        KafkaSource::new(brokers())
            .topics([t.clone()])
            .commit_to_group(group.clone()),
        None,
    );
    ssc.start().unwrap();
    wait_for(&seen, 11);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", &group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&t, 0);
    tpl.add_partition(&t, 1);
    // The commit follows the batch's completion: wait for it (never a timed assertion).
    let deadline = Instant::now() + TIMEOUT;
    let committed = loop {
        let got = c.committed_offsets(tpl.clone(), TIMEOUT).unwrap();
        let offsets: Vec<Offset> = (0..2)
            .map(|p| got.find_partition(&t, p).unwrap().offset())
            .collect();
        if offsets == [Offset::Offset(7), Offset::Offset(4)] || Instant::now() > deadline {
            break offsets;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    ssc.stop(true).unwrap();
    assert_eq!(committed, [Offset::Offset(7), Offset::Offset(4)]);
}

/// Produces 10 records to a one-partition topic and deletes the first 5.
fn topic_with_deleted_head() -> String {
    let t = topic("retention", 1);
    produce(&t, 0, &values(10, "r"));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&t, 0, Offset::Offset(5)).unwrap();
    futures::executor::block_on(
        admin().delete_records(&tpl, &AdminOptions::new().operation_timeout(Some(TIMEOUT))),
    )
    .unwrap();
    t
}

#[test]
fn a_range_lost_to_retention_fails_by_default_and_is_counted_with_skip() {
    let _one = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    let t = topic_with_deleted_head();
    let from_zero = StartingOffsets::Offsets([((t.clone(), 0), 0)].into_iter().collect());

    let (ssc, _) = collecting(
        KafkaSource::new(brokers())
            .topics([t.clone()])
            .starting_offsets(from_zero.clone()),
        None,
    );
    ssc.start().unwrap();
    let err = ssc.await_termination().unwrap_err().to_string();
    for part in [t.as_str(), "[0, 10)", "earliest available offset 5", "Skip"] {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }

    let (ssc, seen) = collecting(
        KafkaSource::new(brokers())
            .topics([t.clone()])
            .starting_offsets(from_zero)
            .on_retention_loss(RetentionPolicy::Skip),
        None,
    );
    ssc.start().unwrap();
    wait_for(&seen, 5);
    let status = ssc.input_statuses();
    ssc.stop(true).unwrap();
    let offsets: Vec<i64> = seen
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, ps, _)| ps.concat())
        .map(|r| r.offset)
        .collect();
    assert_eq!(offsets, vec![5, 6, 7, 8, 9]);
    let kafka = status.iter().find(|s| s.kind == "kafka").unwrap();
    assert_eq!(kafka.lost_to_retention, 5);
    assert_eq!(kafka.partitions.len(), 1);
    assert_eq!(kafka.partitions[0].high_watermark, Some(10));
}

#[test]
fn unknown_topics_and_unreachable_brokers_are_clear_errors() {
    let _one = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    let (ssc, _) = collecting(
        KafkaSource::new(brokers()).topics(["sluice-no-such-topic"]),
        None,
    );
    let err = ssc.start().unwrap_err().to_string();
    assert!(
        err.contains("\"sluice-no-such-topic\" does not exist"),
        "{err}"
    );
    drop(ssc);

    // Nothing listens on port 1 of the loopback.
    let (ssc, _) = collecting(
        KafkaSource::new("127.0.0.1:1")
            .topics(["t"])
            .broker_timeout(Duration::from_secs(2)),
        None,
    );
    let err = ssc.start().unwrap_err().to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(err.contains("up and reachable"), "{err}");

    let err = KafkaSource::new(brokers())
        .topics(Vec::<String>::new())
        .name("x");
    let ssc = StreamingContext::new(StreamingConf::new("k", Duration::from_millis(100))).unwrap();
    let e = ssc.kafka_direct_stream(err).unwrap_err().to_string();
    assert!(e.contains("name at least one topic"), "{e}");
}

#[test]
fn a_zombie_sink_is_fenced_and_a_committed_batch_is_skipped() {
    let out = topic("sink", 1);
    let batch = |t: u64, tag: &str| (BatchTime(t), Batch::from_vec(values(3, tag)));
    let write = |s: &KafkaSink, (t, b): &(BatchTime, Batch<String>)| {
        s.write_batch(&BatchContext::new(*t, b), |v: &String| {
            (v.clone(), v.clone())
        })
    };
    let old = KafkaSink::new(brokers(), out.clone(), "zombie-test");
    assert_eq!(
        write(&old, &batch(1000, "a")).unwrap(),
        BatchOutcome::Committed { elements: 3 }
    );
    // A new driver's sink: its producer fences the old one.
    let new = KafkaSink::new(brokers(), out.clone(), "zombie-test");
    assert!(new.is_committed(BatchTime(1000)).unwrap());
    assert!(!new.is_committed(BatchTime(2000)).unwrap());
    assert_eq!(
        write(&new, &batch(1000, "a")).unwrap(),
        BatchOutcome::AlreadyCommitted
    );
    assert_eq!(
        write(&new, &batch(2000, "b")).unwrap(),
        BatchOutcome::Committed { elements: 3 }
    );
    let err = write(&old, &batch(3000, "zombie")).unwrap_err().to_string();
    assert!(err.contains("kafka sink \"zombie-test\""), "{err}");
    assert!(err.to_lowercase().contains("fenced"), "{err}");
    let got: Vec<String> = read_committed(&out, 0)
        .into_iter()
        .map(|(_, v)| String::from_utf8(v).unwrap())
        .collect();
    let want: Vec<String> = [values(3, "a"), values(3, "b")].concat();
    assert_eq!(got, want);
}

/// The demo's lines: words from a small vocabulary, deterministic.
fn lines(n: usize, partition: i32) -> Vec<String> {
    const WORDS: [&str; 7] = ["river", "gate", "flow", "log", "state", "sink", "epoch"];
    (0..n)
        .map(|i| {
            let h = i * 7 + partition as usize * 3;
            format!("{} {}", WORDS[h % 7], WORDS[(h / 7 + i) % 7])
        })
        .collect()
}

fn demo(
    input: &str,
    output: &str,
    ckpt: &str,
    extra: &[&str],
    env: &[(&str, String)],
) -> std::process::Output {
    let brokers = brokers();
    let mut args = vec![
        "demo",
        "--quiet",
        "--batch-ms",
        "200",
        "--checkpoint",
        ckpt,
        "--kafka-brokers",
        &brokers,
        "--kafka-topic",
        input,
        "--kafka-output-topic",
        output,
        "--kafka-max-rate-per-partition",
        "100",
    ];
    args.extend(extra);
    sluice_tests::sluice(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run sluice demo")
}

#[test]
fn killed_at_each_crash_point_the_demo_writes_every_count_once() {
    let input = topic("demo-in", 3);
    let output = topic("demo-out", 3);
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for p in 0..3 {
        let ls = lines(400, p);
        for l in &ls {
            for w in l.split_whitespace() {
                *expected.entry(w.to_owned()).or_default() += 1;
            }
        }
        produce(&input, p, &ls);
    }
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt").display().to_string();
    // 100 records/s per partition and 200 ms batches: 20 per partition per batch.
    for (point, n) in [
        ("after-batch-planned", 2),
        ("mid-sink", 2),
        ("after-sink-commit", 2),
        ("after-sink-commit", 1),
        ("driver-log-append", 3),
        ("mid-checkpoint", 1),
    ] {
        assert!(sluice::failpoints::POINTS.contains(&point));
        let out = demo(
            &input,
            &output,
            &ckpt,
            &["--duration", "60"],
            &[("SLUICE_CRASH_AT", format!("{point}:{n}"))],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{point}: no crash: {stderr}");
        assert!(
            stderr.contains(&format!("crash point {point} reached")),
            "{point}: {stderr}"
        );
    }
    let out = demo(&input, &output, &ckpt, &["--exit-when-idle", "2"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    // Every batch writes each word it updated with its new total: read back
    // read_committed, a word's totals rise strictly (a batch written twice would repeat
    // one) and end at the word's count in the input (a record lost or counted twice
    // would change it).
    let mut totals: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for p in 0..3 {
        for (k, v) in read_committed(&output, p) {
            let w = String::from_utf8(k).unwrap();
            let n: u64 = String::from_utf8(v).unwrap().parse().unwrap();
            totals.entry(w).or_default().push(n);
        }
    }
    assert_eq!(
        totals.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (w, ns) in &totals {
        assert!(ns.windows(2).all(|x| x[0] < x[1]), "{w}: {ns:?}");
        assert_eq!(ns.last(), expected.get(w), "{w}: {ns:?}");
    }
}

#[test]
fn a_value_that_is_not_utf8_stops_the_demo_naming_the_record() {
    let input = topic("demo-bad", 1);
    produce(&input, 0, &values(2, "fine"));
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    p.send(
        BaseRecord::<(), _>::to(&input)
            .partition(0)
            .payload(&[0xffu8, 0xfe][..]),
    )
    .unwrap();
    p.flush(TIMEOUT).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let brokers = brokers();
    let out = sluice_tests::sluice([
        "demo",
        "--quiet",
        "--batch-ms",
        "200",
        "--checkpoint",
        &dir.path().join("ckpt").display().to_string(),
        "--kafka-brokers",
        &brokers,
        "--kafka-topic",
        &input,
        "--duration",
        "30",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("kafka record {input}-0 at offset 2")),
        "{stderr}"
    );
    assert!(stderr.contains("not UTF-8"), "{stderr}");
}

#[test]
#[ignore = "the sluice command, run as a child process by this file's tests"]
fn sluice_command() {
    sluice_tests::run_sluice_command()
}
