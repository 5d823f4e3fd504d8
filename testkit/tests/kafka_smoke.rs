//! The real Kafka broker the harness starts: a topic is created, records produced to
//! each partition are consumed back at exactly their offsets, and a transactional
//! producer's committed records are visible to a `read_committed` consumer while its
//! aborted ones are not.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

fn config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = config(brokers).create().unwrap();
    let results = futures::executor::block_on(admin.create_topics(
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
    ))
    .unwrap();
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

/// Every record of `topic`'s `partition` from offset 0 up to the high watermark, read
/// with `isolation`: `(offset, value)`.
fn read_all(brokers: &str, topic: &str, partition: i32, isolation: &str) -> Vec<(i64, String)> {
    let consumer: BaseConsumer = config(brokers)
        .set("group.id", "sluice-smoke")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, partition, TIMEOUT)
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let position = consumer
            .position()
            .unwrap()
            .find_partition(topic, partition)
            .and_then(|p| match p.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(0);
        if position >= high {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "read stalled at {position} of {high}"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            out.push((m.offset(), value));
        }
    }
    out
}

#[test]
fn produce_consume_offset_exact_and_transactions() {
    let brokers = sluice_testkit::kafka_brokers();
    let topic = format!("smoke-{}", std::process::id());
    create_topic(&brokers, &topic, 3);

    // Plain producer: 10 records to each partition, offsets 0..10 exactly.
    let producer: BaseProducer = config(&brokers).set("acks", "all").create().unwrap();
    for p in 0..3 {
        for i in 0..10 {
            let value = format!("p{p}-{i}");
            producer
                .send(BaseRecord::<(), _>::to(&topic).partition(p).payload(&value))
                .unwrap_or_else(|(e, _)| panic!("send: {e}"));
        }
    }
    producer.flush(TIMEOUT).unwrap();
    for p in 0..3 {
        let got = read_all(&brokers, &topic, p, "read_uncommitted");
        let want: Vec<(i64, String)> = (0..10).map(|i| (i, format!("p{p}-{i}"))).collect();
        assert_eq!(got, want, "partition {p}");
    }

    // Transactions: one committed, one aborted, on partition 0.
    let tx: BaseProducer = config(&brokers)
        .set("transactional.id", format!("{topic}-tx"))
        .create()
        .unwrap();
    tx.init_transactions(TIMEOUT).unwrap();
    for (name, commit) in [("committed", true), ("aborted", false)] {
        tx.begin_transaction().unwrap();
        for i in 0..3 {
            let value = format!("{name}-{i}");
            tx.send(BaseRecord::<(), _>::to(&topic).partition(0).payload(&value))
                .unwrap_or_else(|(e, _)| panic!("send: {e}"));
        }
        if commit {
            tx.commit_transaction(TIMEOUT).unwrap();
        } else {
            tx.flush(TIMEOUT).unwrap();
            tx.abort_transaction(TIMEOUT).unwrap();
        }
    }
    let committed = read_all(&brokers, &topic, 0, "read_committed");
    let values: Vec<&str> = committed.iter().map(|(_, v)| v.as_str()).collect();
    let mut want: Vec<String> = (0..10).map(|i| format!("p0-{i}")).collect();
    want.extend((0..3).map(|i| format!("committed-{i}")));
    assert_eq!(
        values, want,
        "read_committed sees the committed transaction only"
    );
    // The transaction's records follow the plain ones at offsets 10, 11, 12; its
    // commit marker takes offset 13, so the aborted records start at 14.
    let offsets: Vec<i64> = committed.iter().map(|(o, _)| *o).collect();
    assert_eq!(&offsets[10..], &[10, 11, 12]);
    let all = read_all(&brokers, &topic, 0, "read_uncommitted");
    assert!(
        all.iter().any(|(o, v)| v == "aborted-0" && *o == 14),
        "aborted records (visible to read_uncommitted) at offset 14: {all:?}"
    );
}
