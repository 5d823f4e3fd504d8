//! The exactly-once Kafka sink (feature `kafka`): `save_to_kafka`.
//!
//! **Guarantee.** Each batch is written in **one Kafka transaction**. The transactional
//! id is derived from the sink id (`sluice-<sink id>`), so a new driver's producer
//! fences any older one still alive (a zombie's next send or commit fails with
//! "fenced" and it writes nothing more). Inside the same transaction the sink commits
//! an offset for its own consumer group (`sluice-sink-<sink id>`, on partition 0 of the
//! output topic) whose value is the batch id (the batch time in ms) and whose metadata
//! names it: records and batch id commit together or not at all. Before writing batch
//! `t`, the sink reads that offset back (`read_committed`, so a pending transaction is
//! resolved first); a batch id at or above `t` means the batch was committed before a
//! crash and the replay is skipped. Batches of one sink commit in time order, so one
//! offset is all the sink needs to remember. Consumers reading the output with
//! `isolation.level=read_committed` see every batch exactly once.
//!
//! **Limits.**
//! - A non-transactional reader (`read_uncommitted`, Kafka's default) also sees the
//!   records of aborted transactions: those of a batch a crash cut short, which its
//!   replay writes again.
//! - A transaction must commit within the producer's `transaction.timeout.ms` (default
//!   here 60 s, at most the broker's `transaction.max.timeout.ms`, 15 min by default):
//!   a batch that takes longer to write is aborted by the broker and fails; the job
//!   fails and a restart replays it.
//! - The sink id must be stable across restarts and unique per output: two jobs with
//!   the same sink id fence each other.
//! - Records of one batch with the same key go to the same partition (librdkafka's
//!   default partitioner), in the batch's order.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::{check_sink_id, BatchOutcome, SinkName};
use crate::sources::kafka::retry_transient;
use crate::{BatchContext, BatchTime, DStream, Data, Result};

/// A record key for [`DStream::save_to_kafka`]: bytes or text, or no key at all
/// (`None`, `()`), in which case librdkafka spreads the records over the partitions.
pub trait KafkaKey {
    /// The key's bytes; `None` for a record without a key.
    fn key_bytes(&self) -> Option<&[u8]>;
}

impl KafkaKey for () {
    fn key_bytes(&self) -> Option<&[u8]> {
        None
    }
}

impl KafkaKey for str {
    fn key_bytes(&self) -> Option<&[u8]> {
        Some(self.as_bytes())
    }
}

impl KafkaKey for String {
    fn key_bytes(&self) -> Option<&[u8]> {
        Some(self.as_bytes())
    }
}

impl KafkaKey for [u8] {
    fn key_bytes(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl KafkaKey for Vec<u8> {
    fn key_bytes(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl<K: KafkaKey + ?Sized> KafkaKey for &K {
    fn key_bytes(&self) -> Option<&[u8]> {
        (**self).key_bytes()
    }
}

impl<K: KafkaKey> KafkaKey for Option<K> {
    fn key_bytes(&self) -> Option<&[u8]> {
        self.as_ref().and_then(KafkaKey::key_bytes)
    }
}

/// The Kafka sink's settings and its transactional producer (see
/// [`crate::sinks::kafka`]).
pub struct KafkaSink {
    name: SinkName,
    brokers: String,
    topic: String,
    client: Vec<(String, String)>,
    timeout: Duration,
    /// The producer (transactions initialised) and the marker reader, created at the
    /// first batch.
    clients: Mutex<Option<Clients>>,
}

struct Clients {
    producer: BaseProducer,
    marker: BaseConsumer,
}

impl fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSink")
            .field("sink_id", &self.name.id)
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// A sink writing to `topic` on `brokers`; `sink_id` is its stable name (the
    /// transactional id and the marker group derive from it).
    pub fn new(
        brokers: impl Into<String>,
        topic: impl Into<String>,
        sink_id: impl Into<String>,
    ) -> Self {
        KafkaSink {
            name: SinkName {
                kind: "kafka",
                id: sink_id.into(),
            },
            brokers: brokers.into(),
            topic: topic.into(),
            client: Vec::new(),
            timeout: Duration::from_secs(60),
            clients: Mutex::new(None),
        }
    }

    /// A librdkafka producer setting (`linger.ms`, `compression.type`,
    /// `transaction.timeout.ms`, …). `transactional.id` is the sink's own.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.client.push((key.into(), value.into()));
        self
    }

    /// How long to wait for the broker on each transaction step (default 60 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// The transactional id of the sink's producer.
    pub fn transactional_id(&self) -> String {
        format!("sluice-{}", self.name.id)
    }

    /// The consumer group whose offset records the last committed batch id.
    pub fn marker_group(&self) -> String {
        format!("sluice-sink-{}", self.name.id)
    }

    fn validate(&self) -> Result<()> {
        check_sink_id("kafka", &self.name.id)?;
        if self.brokers.trim().is_empty() {
            return Err(self.name.config("brokers", "no bootstrap brokers given"));
        }
        if self.topic.is_empty() {
            return Err(self.name.config("topic", "no output topic given"));
        }
        if let Some((k, _)) = self
            .client
            .iter()
            .find(|(k, _)| k == "transactional.id" || k == "enable.idempotence")
        {
            return Err(self.name.config(k, "is set by the sink itself"));
        }
        Ok(())
    }

    fn connect(&self, t: BatchTime) -> Result<Clients> {
        let mut pc = ClientConfig::new();
        pc.set("bootstrap.servers", &self.brokers)
            .set("transactional.id", self.transactional_id())
            .set("enable.idempotence", "true")
            .set("transaction.timeout.ms", "60000")
            .set("linger.ms", "5")
            .set("log_level", "3");
        for (k, v) in &self.client {
            pc.set(k, v);
        }
        let producer: BaseProducer = pc
            .create()
            .map_err(|e| self.name.error(Some(t), "cannot create the producer", &e))?;
        // Rule: init_transactions aborts whatever an earlier producer with this
        // transactional id left open and fences it, before the marker is read.
        producer.init_transactions(self.timeout).map_err(|e| {
            self.name.error(
                Some(t),
                format!(
                    "cannot initialise transactions on {} (transactional id {:?})",
                    self.brokers,
                    self.transactional_id()
                ),
                &e,
            )
        })?;
        let marker: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", self.marker_group())
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("log_level", "3")
            .create()
            .map_err(|e| {
                self.name
                    .error(Some(t), "cannot create the marker reader", &e)
            })?;
        Ok(Clients { producer, marker })
    }

    fn marker_tpl(&self, offset: Offset) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        // Offsets only fail on a negative number; the batch time never is one.
        let _ = tpl.add_partition_offset(&self.topic, 0, offset);
        tpl
    }

    /// The last batch id committed by this sink, if any.
    fn last_committed(&self, c: &Clients, t: BatchTime) -> Result<Option<u64>> {
        let got = retry_transient(
            &self.name.to_string(),
            "reading the committed batch id",
            self.timeout,
            || {
                c.marker
                    .committed_offsets(self.marker_tpl(Offset::Invalid), self.timeout)
            },
        )
        .map_err(|e| {
            self.name
                .error(Some(t), "cannot read the committed batch id", &e)
        })?;
        Ok(got
            .find_partition(&self.topic, 0)
            .and_then(|p| match p.offset() {
                Offset::Offset(o) if o >= 0 => Some(o as u64),
                _ => None,
            }))
    }

    /// Whether batch `t` was committed by this sink (a replay would be skipped).
    pub fn is_committed(&self, t: BatchTime) -> Result<bool> {
        self.with_clients(t, |c| {
            Ok(self.last_committed(c, t)?.is_some_and(|b| b >= t.0))
        })
    }

    fn with_clients<R>(&self, t: BatchTime, f: impl FnOnce(&Clients) -> Result<R>) -> Result<R> {
        let mut guard = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(self.connect(t)?);
        }
        let out = f(guard.as_ref().expect("connected above"));
        if out.is_err() {
            // A fenced or failed producer is not reused: the next batch (or the
            // replay after a restart) starts over with init_transactions.
            *guard = None;
        }
        out
    }

    /// Writes batch `c` once: the `(key, value)` of every element in one transaction
    /// with the batch id; a batch committed before is skipped. This is what
    /// [`DStream::save_to_kafka`] runs for every batch.
    pub fn write_batch<T, K, V>(
        &self,
        c: &BatchContext<'_, T>,
        f: impl Fn(&T) -> (K, V),
    ) -> Result<BatchOutcome>
    where
        K: KafkaKey,
        V: AsRef<[u8]>,
    {
        if c.batch.is_empty() {
            return Ok(BatchOutcome::Empty);
        }
        let t = c.time;
        self.with_clients(t, |cl| {
            if self.last_committed(cl, t)?.is_some_and(|b| b >= t.0) {
                tracing::info!(sink = %self.name, batch = t.0, "batch already committed; replay skipped");
                return Ok(BatchOutcome::AlreadyCommitted);
            }
            let err = |what: &str, e: &KafkaError| self.name.error(Some(t), what, e);
            let p = &cl.producer;
            p.begin_transaction()
                .map_err(|e| err("cannot begin a transaction", &e))?;
            let sent = self.send_all(p, c, &f);
            if let Err(e) = sent {
                let _ = p.abort_transaction(self.timeout);
                return Err(e);
            }
            crate::failpoints::point("mid-sink");
            let offsets = self.marker_tpl(Offset::Offset(t.0 as i64));
            if let Some(mut p0) = offsets.find_partition(&self.topic, 0) {
                p0.set_metadata(format!("sluice batch {}", t.0));
            }
            let meta = cl
                .marker
                .group_metadata()
                .ok_or_else(|| self.name.config("marker group", "no consumer group metadata"))?;
            // Rule: the batch id commits in the same transaction as the records.
            p.send_offsets_to_transaction(&offsets, &meta, self.timeout)
                .map_err(|e| err("cannot add the batch id to the transaction", &e))?;
            p.commit_transaction(self.timeout)
                .map_err(|e| err("cannot commit the transaction", &e))?;
            crate::failpoints::point("after-sink-commit");
            Ok(BatchOutcome::Committed {
                elements: c.batch.len() as u64,
            })
        })
    }

    fn send_all<T, K, V>(
        &self,
        p: &BaseProducer,
        c: &BatchContext<'_, T>,
        f: &impl Fn(&T) -> (K, V),
    ) -> Result<()>
    where
        K: KafkaKey,
        V: AsRef<[u8]>,
    {
        for x in c.batch.iter() {
            let (k, v) = f(x);
            let mut rec = BaseRecord::<[u8], [u8]>::to(&self.topic).payload(v.as_ref());
            if let Some(k) = k.key_bytes() {
                rec = rec.key(k);
            }
            send_waiting(p, rec).map_err(|e| {
                self.name.error(
                    Some(c.time),
                    format!("cannot send a record to topic {:?}", self.topic),
                    &e,
                )
            })?;
        }
        Ok(())
    }
}

/// Sends `rec` with `p`, waiting (serving delivery reports) while the producer's queue
/// is full.
pub fn send_waiting<C, K, P>(
    p: &BaseProducer<C>,
    mut rec: BaseRecord<'_, K, P, C::DeliveryOpaque>,
) -> Result<(), KafkaError>
where
    C: rdkafka::producer::ProducerContext,
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match p.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                p.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

impl<T: Data> DStream<T> {
    /// Writes every batch to Kafka exactly once: `f` maps each element to its
    /// `(key, value)` (a key is text or bytes, or `None`/`()` for none: [`KafkaKey`]); each batch is one transaction that also records its batch id
    /// (see [`crate::sinks::kafka`] for the guarantee and its limits).
    pub fn save_to_kafka<K, V>(
        &self,
        sink: KafkaSink,
        f: impl Fn(&T) -> (K, V) + Send + Sync + 'static,
    ) -> Result<()>
    where
        K: KafkaKey,
        V: AsRef<[u8]>,
    {
        sink.validate()?;
        self.foreach_batch(move |c| sink.write_batch(c, &f).map(drop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_derive_from_the_sink_id_and_settings_are_checked() {
        let s = KafkaSink::new("127.0.0.1:9092", "out", "counts");
        assert_eq!(s.transactional_id(), "sluice-counts");
        assert_eq!(s.marker_group(), "sluice-sink-counts");
        assert!(s.validate().is_ok());
        let e = KafkaSink::new("127.0.0.1:9092", "out", "counts")
            .set("transactional.id", "x")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("transactional.id"), "{e}");
        let e = KafkaSink::new("127.0.0.1:9092", "", "counts")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("topic"), "{e}");
        assert!(KafkaSink::new("127.0.0.1:9092", "out", "")
            .validate()
            .is_err());
    }
}
