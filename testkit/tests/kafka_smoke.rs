//! The real Kafka broker the harness starts: a topic is created, records produced to
//! each partition are consumed back at exactly their offsets, and a transactional
//! producer's committed records are visible to a `read_committed` consumer while its
//! aborted ones are not.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const TIMEOUT: Duration = Duration::from_secs(30);

fn config(brokers: &str) -> ClientConfig {
    sluice_testkit::kafka_client::config(brokers)
}

fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    sluice_testkit::kafka_client::create_topic(brokers, topic, partitions).unwrap();
}

/// Every record of `topic`'s `partition` from offset 0 up to the high watermark, read
/// with `isolation`: `(offset, value)`.
fn read_all(brokers: &str, topic: &str, partition: i32, isolation: &str) -> Vec<(i64, String)> {
    sluice_testkit::kafka_client::read_partition(brokers, topic, partition, isolation)
        .unwrap()
        .into_iter()
        .map(|r| (r.offset, String::from_utf8(r.value).unwrap()))
        .collect()
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
