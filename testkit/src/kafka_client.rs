//! Client steps the tests and the chaos harness take on a real broker: create a topic,
//! read a partition back whole. (`sluice bench kafka` keeps its own: the CLI does not
//! depend on the test kit.) Errors are text naming the broker, the
//! topic and the step.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

/// How long one step may wait for the broker.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A client configuration for `brokers`.
pub fn config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// An admin client for `brokers`.
pub fn admin(brokers: &str) -> Result<AdminClient<DefaultClientContext>, String> {
    config(brokers)
        .create()
        .map_err(|e| format!("kafka admin client for {brokers}: {e}"))
}

/// Creates `topic` with `partitions` partitions (replication 1). A topic of that name
/// still being deleted is waited for.
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<(), String> {
    let a = admin(brokers)?;
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let res = futures::executor::block_on(a.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &opts,
        ))
        .map_err(|e| format!("creating topic {topic} on {brokers}: {e}"))?;
        match res.into_iter().next() {
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Some(Err((t, e))) => return Err(format!("creating topic {t} on {brokers}: {e}")),
            _ => return Ok(()),
        }
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    pub offset: i64,
    /// Empty when the record has none.
    pub key: Vec<u8>,
    /// Empty when the record has none.
    pub value: Vec<u8>,
}

/// Every record of `partition` of `topic` from its start up to its high watermark as
/// of the call, read with `isolation.level` = `isolation` (`read_committed` or
/// `read_uncommitted`).
pub fn read_partition(
    brokers: &str,
    topic: &str,
    partition: i32,
    isolation: &str,
) -> Result<Vec<ReadRecord>, String> {
    let what = || format!("reading {topic}/{partition} on {brokers} ({isolation})");
    let c: BaseConsumer = config(brokers)
        .set("group.id", "sluice-testkit-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .map_err(|e| format!("{}: {e}", what()))?;
    let (_, high) = c
        .fetch_watermarks(topic, partition, TIMEOUT)
        .map_err(|e| format!("{}: watermarks: {e}", what()))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .and_then(|()| c.assign(&tpl))
        .map_err(|e| format!("{}: {e}", what()))?;
    let mut out = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        // The position, not the last record's offset: it also moves past transaction
        // markers and aborted records.
        let pos = c
            .position()
            .map_err(|e| format!("{}: {e}", what()))?
            .find_partition(topic, partition)
            .and_then(|p| match p.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(0);
        if pos >= high {
            return Ok(out);
        }
        if Instant::now() > deadline {
            return Err(format!("{}: stalled at offset {pos} of {high}", what()));
        }
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.map_err(|e| format!("{}: {e}", what()))?;
            out.push(ReadRecord {
                offset: m.offset(),
                key: m.key().unwrap_or_default().to_vec(),
                value: m.payload().unwrap_or_default().to_vec(),
            });
        }
    }
}

/// The number of partitions of `topic` (0 if it does not exist).
pub fn partitions(brokers: &str, topic: &str) -> Result<usize, String> {
    let c: BaseConsumer = config(brokers)
        .create()
        .map_err(|e| format!("kafka client for {brokers}: {e}"))?;
    let md = c
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(|e| format!("metadata of {topic} on {brokers}: {e}"))?;
    Ok(md
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map_or(0, |t| t.partitions().len()))
}
