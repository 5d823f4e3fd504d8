//! The Kafka direct source and the exactly-once Kafka sink against the real broker the
//! test kit starts (Apache Kafka in KRaft mode): every field of a record (key, value,
//! tombstone, empty value, headers, timestamp) read as produced and aborted
//! transactions skipped; logged offset ranges replayed exactly
//! after a SIGKILL at each crash point with the output read back `read_committed`; a
//! partition added while running; retention under both policies; a zombie sink fenced;
//! completed offsets mirrored to a consumer group;
//! unknown topics and unreachable brokers; `BatchContext::offset_ranges` through
//! transformations and on replay; starting offsets from a function; backpressure's
//! split by lag under the per-partition caps; a broker SIGKILLed and restarted under a
//! job, and one down for longer than `broker_timeout`.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
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
    admin_on(&brokers())
}

fn admin_on(brokers: &str) -> AdminClient<DefaultClientContext> {
    sluice_testkit::kafka_client::admin(brokers).unwrap()
}

/// A new topic with a name unique to this run.
fn topic(prefix: &str, partitions: i32) -> String {
    topic_on(&brokers(), prefix, partitions)
}

/// A new topic on `brokers` with a name unique to this run.
fn topic_on(brokers: &str, prefix: &str, partitions: i32) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    sluice_testkit::kafka_client::create_topic(brokers, &name, partitions).unwrap();
    name
}

/// Produces `values` to `partition` of `topic` (non-transactionally) and flushes.
fn produce(topic: &str, partition: i32, values: &[String]) {
    produce_on(&brokers(), topic, partition, values)
}

fn produce_on(brokers: &str, topic: &str, partition: i32, values: &[String]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
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
    read_committed_on(&brokers(), topic, partition)
}

fn read_committed_on(brokers: &str, topic: &str, partition: i32) -> Vec<(Vec<u8>, Vec<u8>)> {
    sluice_testkit::kafka_client::read_partition(brokers, topic, partition, "read_committed")
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value))
        .collect()
}

fn partitions_of(topic: &str) -> i32 {
    sluice_testkit::kafka_client::partitions(&brokers(), topic).unwrap() as i32
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

/// Every record `seen` holds, batch by batch and partition by partition.
fn all_records(seen: &Seen) -> Vec<KafkaRecord> {
    seen.lock()
        .unwrap()
        .iter()
        .flat_map(|(_, ps, _)| ps.concat())
        .collect()
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
                assert_eq!((&*rec.topic, rec.partition), (t.as_str(), r.partition));
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
    let got: Vec<KafkaRecord> = all_records(&seen);
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got.iter().all(|r| r.partition == 1 && r.offset >= 50));
}

#[test]
fn every_field_of_a_record_arrives_and_aborted_transactions_do_not() {
    use rdkafka::message::{Header, OwnedHeaders};
    let _one = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    let t = topic("fields", 1);
    let plain: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "h1",
            value: Some("x"),
        })
        .insert(Header::<&[u8]> {
            key: "h2",
            value: None,
        })
        .insert(Header {
            key: "h1",
            value: Some(&[0xff_u8, 0][..]),
        });
    plain
        .send(
            BaseRecord::to(&t)
                .partition(0)
                .key("k1")
                .payload("v1")
                .headers(headers)
                .timestamp(1_700_000_000_123),
        )
        .unwrap();
    // A tombstone (no value), then an empty value without a key.
    plain
        .send(BaseRecord::<str, str>::to(&t).partition(0).key("k2"))
        .unwrap();
    plain
        .send(BaseRecord::<str, str>::to(&t).partition(0).payload(""))
        .unwrap();
    plain.flush(TIMEOUT).unwrap();
    // An aborted transaction (its records and marker leave a gap), then a committed one.
    let tx: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("transactional.id", format!("{t}-tx"))
        .create()
        .unwrap();
    tx.init_transactions(TIMEOUT).unwrap();
    tx.begin_transaction().unwrap();
    for v in ["aborted-1", "aborted-2"] {
        tx.send(BaseRecord::<(), _>::to(&t).partition(0).payload(v))
            .unwrap();
    }
    tx.flush(TIMEOUT).unwrap();
    tx.abort_transaction(TIMEOUT).unwrap();
    tx.begin_transaction().unwrap();
    tx.send(
        BaseRecord::<(), _>::to(&t)
            .partition(0)
            .payload("committed"),
    )
    .unwrap();
    tx.commit_transaction(TIMEOUT).unwrap();
    produce(&t, 0, &["last".to_string()]);

    let (ssc, seen) = collecting(KafkaSource::new(brokers()).topics([t.clone()]), None);
    ssc.start().unwrap();
    wait_for(&seen, 5);
    // The job stops at its next batch boundary: anything read past "last" would show.
    std::thread::sleep(Duration::from_millis(300));
    ssc.stop(true).unwrap();
    let got: Vec<KafkaRecord> = all_records(&seen);
    let brief: Vec<(i64, Option<&[u8]>, Option<&[u8]>)> = got
        .iter()
        .map(|r| (r.offset, r.key.as_deref(), r.value.as_deref()))
        .collect();
    // Offsets 3-4 are the aborted records, 5 their abort marker, 7 the commit marker.
    assert_eq!(
        brief,
        vec![
            (0, Some(&b"k1"[..]), Some(&b"v1"[..])),
            (1, Some(&b"k2"[..]), None),
            (2, None, Some(&b""[..])),
            (6, None, Some(&b"committed"[..])),
            (8, None, Some(&b"last"[..])),
        ]
    );
    let first = &got[0];
    assert_eq!((&*first.topic, first.partition), (t.as_str(), 0));
    assert_eq!(first.timestamp, Some(1_700_000_000_123));
    assert_eq!(
        first.headers,
        vec![
            ("h1".to_string(), Some(b"x".to_vec())),
            ("h2".to_string(), None),
            ("h1".to_string(), Some(vec![0xff, 0])),
        ]
    );
    assert!(got[1..].iter().all(|r| r.headers.is_empty()));
    // Create times the producer gave: not missing, not the one set on the first.
    assert!(got[1..]
        .iter()
        .all(|r| r.timestamp.is_some_and(|ts| ts > 1_700_000_000_123)));
}

#[test]
fn element_wise_operators_read_a_large_range_in_pieces_in_order() {
    // More records than a piece (65,536) in one batch: map, filter, count and reduce
    // see the partition in several pieces, and must see all of it, in order.
    let _one = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    const N: usize = 150_000;
    let t = topic("pieces", 2);
    // In pieces the producer's queue (100,000 messages) holds.
    for chunk in values(N, "a").chunks(50_000) {
        produce(&t, 0, chunk);
    }
    produce(&t, 1, &values(10, "b"));
    let ssc = StreamingContext::new(StreamingConf::new(
        "kafka-pieces",
        Duration::from_millis(200),
    ))
    .unwrap();
    let stream = ssc
        .kafka_direct_stream(KafkaSource::new(brokers()).topics([t.clone()]))
        .unwrap();
    let every_10k: Arc<Mutex<Vec<(i32, i64, String)>>> = Arc::default();
    let (counted, offsets) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let e2 = every_10k.clone();
    stream
        .filter(|r| r.offset % 10_000 == 0)
        .unwrap()
        .map(|r| {
            let v = String::from_utf8(r.value.clone().unwrap()).unwrap();
            (r.partition, r.offset, v)
        })
        .unwrap()
        .foreach_batch(move |b| {
            e2.lock().unwrap().extend(b.batch.iter().cloned());
            Ok(())
        })
        .unwrap();
    let c2 = counted.clone();
    stream
        .count()
        .unwrap()
        .foreach_batch(move |b| {
            c2.fetch_add(b.batch.iter().sum::<u64>() as usize, SeqCst);
            Ok(())
        })
        .unwrap();
    // The offsets of partition 0, folded in order: any piece out of order or missing
    // breaks the run.
    let o2 = offsets.clone();
    stream
        .filter(|r| r.partition == 0)
        .unwrap()
        .map(|r| (r.offset, r.offset, true))
        .unwrap()
        .reduce(|a, b| (a.0, b.1, a.2 && b.2 && b.0 == a.1 + 1))
        .unwrap()
        .foreach_batch(move |b| {
            for &(from, to, contiguous) in b.batch.iter() {
                assert!(contiguous, "offsets {from}..={to} not in order");
                o2.fetch_add((to - from + 1) as usize, SeqCst);
            }
            Ok(())
        })
        .unwrap();
    ssc.start().unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while counted.load(SeqCst) < N + 10 {
        assert!(
            Instant::now() < deadline,
            "counted {}",
            counted.load(SeqCst)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ssc.stop(true).unwrap();
    assert_eq!(counted.load(SeqCst), N + 10);
    assert_eq!(offsets.load(SeqCst), N);
    let mut got = every_10k.lock().unwrap().clone();
    got.sort();
    let want: Vec<(i32, i64, String)> = (0..N)
        .step_by(10_000)
        .map(|i| (0, i as i64, format!("a-{i}")))
        .chain([(1, 0, "b-0".to_string())])
        .collect();
    assert_eq!(got, want);
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
    let new: Vec<(i32, i64)> = all_records(&seen)
        .into_iter()
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
    let offsets: Vec<i64> = all_records(&seen).into_iter().map(|r| r.offset).collect();
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

/// What an output saw of one batch: its id, `offset_ranges_by_input()`, the source
/// handle's `offset_ranges(time)` (where there is a handle) and the `(partition,
/// offset)`s of its records.
type RangesSeen = Arc<
    Mutex<
        Vec<(
            u64,
            Vec<sluice::InputOffsetRanges>,
            Vec<sluice::OffsetRange>,
            Vec<(i32, i64)>,
        )>,
    >,
>;

/// Reads topic `a` (capped to 10 records per partition per batch) and topic `b`
/// (named "second"), with three outputs: `a` through `map` and `filter` (failing
/// its `fail_at`-th non-empty batch, if given), `a` and `b` through a union, and a
/// queue stream without any Kafka input.
fn ranges_job(
    dir: &std::path::Path,
    a: &str,
    b: &str,
    fail_at: Option<usize>,
) -> (StreamingContext, [RangesSeen; 3]) {
    let conf = StreamingConf::new("kafka-ranges", Duration::from_millis(100))
        .checkpoint(dir.display().to_string())
        .checkpoint_interval(Duration::from_millis(100));
    let seen: [RangesSeen; 3] = Default::default();
    let s = seen.clone();
    let (a, b) = (a.to_owned(), b.to_owned());
    let ssc = StreamingContext::get_or_create(conf, move |ssc| {
        let source_a = KafkaSource::new(brokers())
            .topics([a.clone()])
            .max_rate_per_partition(100);
        let handle = source_a.clone();
        let sa = ssc.kafka_direct_stream(source_a)?;
        let sb = ssc.kafka_direct_stream(
            KafkaSource::new(brokers())
                .topics([b.clone()])
                .name("second"),
        )?;
        let out = s[0].clone();
        let non_empty = Arc::new(AtomicUsize::new(0));
        sa.map(|r: &KafkaRecord| (r.partition, r.offset))?
            .filter(|(_, o)| *o >= 0)?
            .foreach_batch(move |c| {
                out.lock().unwrap().push((
                    c.batch_id(),
                    c.offset_ranges_by_input().to_vec(),
                    handle.offset_ranges(c.time),
                    c.batch.to_vec(),
                ));
                if !c.batch.is_empty() && Some(non_empty.fetch_add(1, SeqCst) + 1) == fail_at {
                    return Err(EngineError::User("injected failure".into()));
                }
                Ok(())
            })?;
        let key = |r: &KafkaRecord| (r.partition, r.offset);
        let out = s[1].clone();
        sa.map(key)?.union(&sb.map(key)?)?.foreach_batch(move |c| {
            let flat = c.offset_ranges();
            out.lock().unwrap().push((
                c.batch_id(),
                c.offset_ranges_by_input().to_vec(),
                flat,
                c.batch.to_vec(),
            ));
            Ok(())
        })?;
        let out = s[2].clone();
        ssc.queue_stream(vec![vec![(0i32, 0i64)]], true)?
            .foreach_batch(move |c| {
                out.lock().unwrap().push((
                    c.batch_id(),
                    c.offset_ranges_by_input().to_vec(),
                    c.offset_ranges(),
                    c.batch.to_vec(),
                ));
                Ok(())
            })
    })
    .unwrap();
    (ssc, seen)
}

#[test]
fn foreach_batch_gets_the_offset_ranges_of_the_kafka_inputs_upstream_the_same_on_replay() {
    let _one = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    let a = topic("ranges-a", 2);
    let b = topic("ranges-b", 1);
    produce(&a, 0, &values(30, "a0"));
    produce(&a, 1, &values(20, "a1"));
    produce(&b, 0, &values(10, "b"));
    let dir = tempfile::tempdir().unwrap();

    // The third non-empty batch of the derived stream fails: planned, not completed.
    let (ssc, first) = ranges_job(dir.path(), &a, &b, Some(3));
    ssc.start().unwrap();
    let err = ssc.await_termination().unwrap_err().to_string();
    assert!(err.contains("injected failure"), "{err}");
    let first = first.clone().map(|s| s.lock().unwrap().clone());
    let failed = first[0]
        .iter()
        .filter(|(_, _, _, recs)| !recs.is_empty())
        .nth(2)
        .cloned()
        .expect("the failed batch was seen");

    // Resumed: the failed batch is replayed with its logged ranges, then the rest.
    let (ssc, second) = ranges_job(dir.path(), &a, &b, None);
    ssc.start().unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while !second[0]
        .lock()
        .unwrap()
        .iter()
        .any(|(t, ..)| *t == failed.0)
    {
        assert!(
            Instant::now() < deadline,
            "the failed batch was not replayed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Graceful: the replayed batch's other outputs run too.
    ssc.stop(true).unwrap();
    let second = second.clone().map(|s| s.lock().unwrap().clone());

    let replayed = second[0]
        .iter()
        .find(|(t, ..)| *t == failed.0)
        .expect("the failed batch was replayed");
    assert_eq!(replayed.1, failed.1, "the same ranges on replay");
    assert_eq!(replayed.3, failed.3, "the same records on replay");
    assert_eq!(
        failed.1[0].ranges,
        vec![
            sluice::OffsetRange {
                topic: a.clone(),
                partition: 0,
                from_offset: 20,
                until_offset: 30
            },
            sluice::OffsetRange {
                topic: a.clone(),
                partition: 1,
                from_offset: 20,
                until_offset: 20
            },
        ]
    );

    // Through map and filter: topic a's input only, named by its topic; the source's
    // handle agrees; every record inside its partition's range; each record of `a`
    // once per batch time (a batch seen in both runs had the same records).
    let mut by_time: BTreeMap<u64, Vec<(i32, i64)>> = BTreeMap::new();
    for (t, by_input, handle, recs) in first[0].iter().chain(&second[0]) {
        assert_eq!(by_input.len(), 1, "{by_input:?}");
        assert_eq!(by_input[0].input, a);
        assert_eq!(&by_input[0].ranges, handle, "batch {t}");
        for (p, o) in recs {
            let r = &by_input[0].ranges[*p as usize];
            assert!(r.partition == *p && r.from_offset <= *o && *o < r.until_offset);
        }
        if let Some(before) = by_time.insert(*t, recs.clone()) {
            assert_eq!(&before, recs, "batch {t} replayed with other records");
        }
    }
    let mut got: Vec<(i32, i64)> = by_time.into_values().flatten().collect();
    got.sort();
    let want: Vec<(i32, i64)> = (0..30)
        .map(|o| (0, o))
        .chain((0..20).map(|o| (1, o)))
        .collect();
    assert_eq!(got, want);

    // Through the union: both inputs, named, in definition order; the flat list is
    // theirs one after the other.
    let mut b_read = 0;
    for (t, by_input, flat, _) in first[1].iter().chain(&second[1]) {
        let names: Vec<&str> = by_input.iter().map(|i| i.input.as_str()).collect();
        assert_eq!(names, [a.as_str(), "second"], "batch {t}");
        let joined: Vec<sluice::OffsetRange> =
            by_input.iter().flat_map(|i| i.ranges.clone()).collect();
        assert_eq!(flat, &joined);
        assert!(by_input[1].ranges.iter().all(|r| r.topic == b));
        b_read += by_input[1].ranges.iter().map(|r| r.count()).sum::<i64>();
    }
    assert!(b_read >= 10, "topic b's ranges reached the union's output");

    // No Kafka input upstream: nothing.
    assert!(!first[2].is_empty() && !second[2].is_empty());
    for (t, by_input, flat, _) in first[2].iter().chain(&second[2]) {
        assert!(by_input.is_empty() && flat.is_empty(), "batch {t}");
    }
}

#[test]
fn starting_offsets_from_a_user_function_apply_only_without_a_checkpoint() {
    let _one = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    let t = topic("from-fn", 3);
    for p in 0..3 {
        produce(&t, p, &values(10, &format!("p{p}")));
    }
    let dir = tempfile::tempdir().unwrap();
    let asked: Arc<Mutex<Vec<(String, i32)>>> = Arc::default();
    let source = |asked: Arc<Mutex<Vec<(String, i32)>>>| {
        KafkaSource::new(brokers())
            .topics([t.clone()])
            // As a job keeping its offsets in its own database would: partition 0 from
            // 7, partition 1 unknown (its earliest), partition 2 already read (10).
            .starting_offsets(StartingOffsets::from_fn(move |topic, p| {
                asked.lock().unwrap().push((topic.to_owned(), p));
                match p {
                    0 => Some(7),
                    1 => None,
                    _ => Some(10),
                }
            }))
    };
    let (ssc, seen) = collecting(source(asked.clone()), Some(dir.path()));
    ssc.start().unwrap();
    wait_for(&seen, 3 + 10);
    ssc.stop(true).unwrap();
    let got: Vec<(i32, i64)> = all_records(&seen)
        .into_iter()
        .map(|r| (r.partition, r.offset))
        .collect();
    let want: Vec<(i32, i64)> = (7..10)
        .map(|o| (0, o))
        .chain((0..10).map(|o| (1, o)))
        .collect();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted, want, "{got:?}");
    let mut asked_now = asked.lock().unwrap().clone();
    asked_now.sort();
    assert_eq!(
        asked_now,
        (0..3).map(|p| (t.clone(), p)).collect::<Vec<_>>(),
        "once per partition"
    );

    // Resumed from its checkpoint (and driver log): the function is not asked again;
    // only what came after is read (batches replayed from the log aside).
    produce(&t, 2, &values(4, "later"));
    let asked_again: Arc<Mutex<Vec<(String, i32)>>> = Arc::default();
    let (ssc, seen) = collecting(source(asked_again.clone()), Some(dir.path()));
    ssc.start().unwrap();
    let of_p2 = |seen: &Seen| -> Vec<(i32, i64)> {
        all_records(seen)
            .into_iter()
            .map(|r| (r.partition, r.offset))
            .filter(|(p, _)| *p == 2)
            .collect()
    };
    let deadline = Instant::now() + TIMEOUT;
    while of_p2(&seen).len() < 4 {
        assert!(Instant::now() < deadline, "{:?}", of_p2(&seen));
        std::thread::sleep(Duration::from_millis(50));
    }
    ssc.stop(true).unwrap();
    assert_eq!(of_p2(&seen), (10..14).map(|o| (2, o)).collect::<Vec<_>>());
    assert!(
        asked_again.lock().unwrap().is_empty(),
        "{:?}",
        asked_again.lock().unwrap()
    );
}

#[test]
fn backpressure_splits_the_rate_by_lag_and_no_batch_passes_the_per_partition_caps() {
    let _one = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    let t = topic("rate", 3);
    let lag = [600i64, 300, 100];
    for (p, n) in lag.iter().enumerate() {
        produce(&t, p as i32, &values(*n as usize, &format!("p{p}")));
    }
    // 500 ms batches; at most 400 records/s per partition (200 a batch), at least 160
    // (80 a batch); backpressure starting at 1000 records/s for the whole input.
    let conf = StreamingConf::new("kafka-rate", Duration::from_millis(500))
        .backpressure(true)
        .backpressure_initial_rate(1000);
    let ssc = StreamingContext::new(conf).unwrap();
    let seen: RangesSeen = Arc::default();
    let out = seen.clone();
    ssc.kafka_direct_stream(
        KafkaSource::new(brokers())
            .topics([t.clone()])
            .max_rate_per_partition(400)
            .min_rate_per_partition(160),
    )
    .unwrap()
    .foreach_batch(move |c| {
        // Some processing time per record, for the estimator to measure.
        std::thread::sleep(Duration::from_micros(500) * c.batch.len() as u32);
        out.lock().unwrap().push((
            c.batch_id(),
            c.offset_ranges_by_input().to_vec(),
            c.offset_ranges(),
            c.batch.iter().map(|r| (r.partition, r.offset)).collect(),
        ));
        Ok(())
    })
    .unwrap();
    ssc.start().unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let read = |s: &RangesSeen| -> usize { s.lock().unwrap().iter().map(|x| x.3.len()).sum() };
    while read(&seen) < 1000 {
        assert!(
            Instant::now() < deadline,
            "only {} of 1000 read",
            read(&seen)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = ssc.input_statuses();
    ssc.stop(true).unwrap();

    let seen = seen.lock().unwrap().clone();
    let batches: Vec<&Vec<sluice::OffsetRange>> = seen
        .iter()
        .map(|(_, _, flat, _)| flat)
        .filter(|rs| rs.iter().any(|r| r.count() > 0))
        .collect();
    // The first batch: the initial 1000 records/s split by lag 600:300:100, the first
    // share capped at 400, the last floored at 160; times 0.5 s.
    let counts = |rs: &Vec<sluice::OffsetRange>| rs.iter().map(|r| r.count()).collect::<Vec<_>>();
    assert_eq!(counts(batches[0]), vec![200, 150, 80]);
    let mut next = [0i64; 3];
    let mut got = Vec::new();
    for (_, _, flat, recs) in &seen {
        for r in flat {
            let p = r.partition as usize;
            assert_eq!(r.from_offset, next[p], "{r}");
            let left = lag[p] - r.from_offset;
            assert!(r.count() <= 200, "over max_rate_per_partition × 0.5 s: {r}");
            assert!(
                r.count() >= left.min(80),
                "under min_rate_per_partition × 0.5 s: {r}"
            );
            next[p] = r.until_offset;
        }
        got.extend(recs.iter().copied());
    }
    assert_eq!(next, lag, "everything read");
    got.sort();
    let want: Vec<(i32, i64)> = (0..3)
        .flat_map(|p| (0..lag[p]).map(move |o| (p as i32, o)))
        .collect();
    assert_eq!(got, want, "each record once");
    let kafka = status.iter().find(|s| s.kind == "kafka").unwrap();
    assert!(kafka.rate_limit_per_s.is_some(), "{kafka:?}");
}

/// A broker of this test's own, which it may kill and restart.
fn own_broker() -> Arc<Mutex<sluice_testkit::KafkaServer>> {
    Arc::new(Mutex::new(
        sluice_testkit::KafkaServer::start().expect("start a Kafka broker for this test"),
    ))
}

#[test]
fn a_broker_killed_mid_job_and_restarted_loses_and_duplicates_nothing() {
    let _one = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    let server = own_broker();
    let brokers = server.lock().unwrap().brokers();
    let input = topic_on(&brokers, "restart-in", 3);
    let output = topic_on(&brokers, "restart-out", 1);
    let mut want = Vec::new();
    for p in 0..3 {
        let vs = values(300, &format!("p{p}"));
        produce_on(&brokers, &input, p, &vs);
        want.extend(vs);
    }
    let dir = tempfile::tempdir().unwrap();
    // Records whose batch committed to the sink, by batch time (a replayed batch
    // counts once).
    let committed: Arc<Mutex<BTreeMap<u64, usize>>> = Arc::default();
    let killed = Arc::new(AtomicBool::new(false));
    let restarter: Arc<Mutex<Option<std::thread::JoinHandle<std::io::Result<()>>>>> =
        Arc::default();
    let job = || {
        let conf = StreamingConf::new("kafka-restart", Duration::from_millis(100))
            .checkpoint(dir.path().display().to_string())
            .checkpoint_interval(Duration::from_millis(500));
        let (brokers, input, output) = (brokers.clone(), input.clone(), output.clone());
        let (committed, killed, server, restarter) = (
            committed.clone(),
            killed.clone(),
            server.clone(),
            restarter.clone(),
        );
        StreamingContext::get_or_create(conf, move |ssc| {
            let values = ssc
                .kafka_direct_stream(
                    KafkaSource::new(brokers.clone())
                        .topics([input.clone()])
                        .max_rate_per_partition(100)
                        .broker_timeout(Duration::from_secs(180)),
                )?
                .map(|r: &KafkaRecord| String::from_utf8(r.value.clone().unwrap()).unwrap())?;
            let (killed, server, restarter) = (killed.clone(), server.clone(), restarter.clone());
            let non_empty = Arc::new(AtomicUsize::new(0));
            // In the third non-empty batch, read but not yet written: SIGKILL the
            // broker; it comes back on the same port and data 2 s later.
            values.foreach_batch(move |c| {
                if !c.batch.is_empty()
                    && non_empty.fetch_add(1, SeqCst) == 2
                    && !killed.swap(true, SeqCst)
                {
                    server.lock().unwrap().kill();
                    let server = server.clone();
                    *restarter.lock().unwrap() = Some(std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_secs(2));
                        server.lock().unwrap().restart()
                    }));
                }
                Ok(())
            })?;
            values.save_to_kafka(
                KafkaSink::new(brokers.clone(), output.clone(), format!("{output}-sink"))
                    .timeout(Duration::from_secs(180)),
                |v: &String| ((), v.clone()),
            )?;
            let committed = committed.clone();
            values.foreach_batch(move |c| {
                committed
                    .lock()
                    .unwrap()
                    .insert(c.batch_id(), c.batch.len());
                Ok(())
            })
        })
        .unwrap()
    };
    let total = |c: &Mutex<BTreeMap<u64, usize>>| c.lock().unwrap().values().sum::<usize>();
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut errors = Vec::new();
    'runs: loop {
        assert!(errors.len() < 4, "the job kept failing: {errors:#?}");
        let ssc = job();
        if let Err(e) = ssc.start() {
            errors.push(e.to_string());
            // Releases the driver log for the next run.
            ssc.stop(false).unwrap();
            continue;
        }
        loop {
            assert!(
                Instant::now() < deadline,
                "stuck at {} of 900: {errors:#?}",
                total(&committed)
            );
            if total(&committed) >= want.len() {
                ssc.stop(true).unwrap();
                break 'runs;
            }
            match ssc.await_termination_timeout(Some(Duration::from_millis(100))) {
                Ok(false) => {}
                Ok(true) => panic!("the job stopped by itself"),
                Err(e) => {
                    errors.push(e.to_string());
                    continue 'runs;
                }
            }
        }
    }
    assert!(killed.load(SeqCst), "the broker was killed under the job");
    let restarted = restarter.lock().unwrap().take().expect("a restart");
    restarted.join().unwrap().expect("the broker restarted");
    // Riding it out (retries up to broker_timeout) needs no second run; a run that
    // failed must have said what and where.
    for e in &errors {
        assert!(
            e.contains(&brokers) || e.contains("kafka sink"),
            "an unclear error: {e}"
        );
    }
    eprintln!(
        "broker restart: {} failed run(s): {errors:#?}",
        errors.len()
    );

    let mut got: Vec<String> = read_committed_on(&brokers, &output, 0)
        .into_iter()
        .map(|(_, v)| String::from_utf8(v).unwrap())
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len(), "records written: each exactly once");
    assert_eq!(got, want);
}

#[test]
fn a_broker_down_longer_than_broker_timeout_fails_naming_it_and_a_restart_finishes() {
    let _one = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    let server = own_broker();
    let brokers = server.lock().unwrap().brokers();
    let t = topic_on(&brokers, "down", 2);
    for p in 0..2 {
        produce_on(&brokers, &t, p, &values(50, &format!("p{p}")));
    }
    let dir = tempfile::tempdir().unwrap();
    let batches: Arc<Mutex<Vec<(u64, Vec<(i32, i64)>)>>> = Arc::default();
    let job = |timeout: Duration, kill_at: Option<usize>| {
        let conf = StreamingConf::new("kafka-down", Duration::from_millis(100))
            .checkpoint(dir.path().display().to_string())
            .checkpoint_interval(Duration::from_millis(100));
        let (brokers, t, batches, server) =
            (brokers.clone(), t.clone(), batches.clone(), server.clone());
        StreamingContext::get_or_create(conf, move |ssc| {
            let (batches, server) = (batches.clone(), server.clone());
            let non_empty = Arc::new(AtomicUsize::new(0));
            ssc.kafka_direct_stream(
                KafkaSource::new(brokers.clone())
                    .topics([t.clone()])
                    .max_rate_per_partition(100)
                    .broker_timeout(timeout),
            )?
            .foreach_batch(move |c| {
                let recs: Vec<(i32, i64)> =
                    c.batch.iter().map(|r| (r.partition, r.offset)).collect();
                if !recs.is_empty() {
                    batches.lock().unwrap().push((c.batch_id(), recs));
                    // After the second batch with records, the broker dies for good.
                    if Some(non_empty.fetch_add(1, SeqCst) + 1) == kill_at {
                        server.lock().unwrap().kill();
                    }
                }
                Ok(())
            })
        })
        .unwrap()
    };

    let ssc = job(Duration::from_secs(3), Some(2));
    ssc.start().unwrap();
    let err = ssc.await_termination().unwrap_err().to_string();
    eprintln!("broker down: {err}");
    assert!(err.contains(&brokers), "the error names the brokers: {err}");
    assert!(err.contains("are the brokers"), "{err}");
    assert!(
        err.contains(&format!("kafka {t}")),
        "the error names the input: {err}"
    );

    server.lock().unwrap().restart().unwrap();
    let ssc = job(Duration::from_secs(120), None);
    ssc.start().unwrap();
    // Each batch time once (a batch replayed after the restart must hold the same
    // records as the first time).
    let by_time = || {
        let mut m: BTreeMap<u64, Vec<(i32, i64)>> = BTreeMap::new();
        for (t, recs) in batches.lock().unwrap().iter() {
            if let Some(before) = m.insert(*t, recs.clone()) {
                assert_eq!(&before, recs, "batch {t} replayed with other records");
            }
        }
        m
    };
    let read = || by_time().values().map(Vec::len).sum::<usize>();
    let deadline = Instant::now() + TIMEOUT * 3;
    while read() < 100 {
        assert!(
            Instant::now() < deadline,
            "only {} of 100 after the restart",
            read()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ssc.stop(true).unwrap();
    let mut got: Vec<(i32, i64)> = by_time().into_values().flatten().collect();
    got.sort();
    let want: Vec<(i32, i64)> = (0..2).flat_map(|p| (0..50).map(move |o| (p, o))).collect();
    assert_eq!(got, want, "each record once");
}
