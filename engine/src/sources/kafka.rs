//! The Kafka direct source (feature `kafka`): `ssc.kafka_direct_stream(KafkaSource…)`,
//! Spark's `KafkaUtils.createDirectStream` with the offsets owned by the engine.
//!
//! * No consumer group decides what is read: the source reads *assigned* partitions
//!   (every partition of the subscribed topics, or an explicit assignment). At each
//!   batch time the driver fixes one **offset range** `[from, until)` per partition —
//!   `from` is where the previous batch stopped, `until` the partition's last stable
//!   offset (capped by the partition's rate limit, below) — and that list is the
//!   batch's plan in the driver log (`BatchPlanned`), written before the batch runs.
//!   Each partition's range is one partition of the batch.
//! * A batch's ranges are read when its job runs, not when they are planned.
//!   Element-wise operators (map, filter, flat_map, count, reduce, the map side of
//!   `reduce_by_key`) take each partition in pieces of 65,536 records as the client
//!   hands them out, so a batch of any size needs memory for the pieces in flight
//!   only; what needs whole partitions (`map_partitions`, `foreach_batch`, windows,
//!   `transform`) gets them read whole first. A read error (retention, a broker down
//!   past `broker_timeout`) fails the batch when it runs. The input's record count
//!   (metrics, backpressure) is that of the offsets, as Spark's: transaction markers
//!   and aborted records included.
//! * The ranges reach the job: an output's [`BatchContext::offset_ranges`](crate::BatchContext::offset_ranges)
//!   (Spark's `HasOffsetRanges`) holds those of every Kafka input upstream of it, for
//!   storing offsets in the job's own transaction; [`KafkaSource::offset_ranges`]
//!   gives one input's by batch time.
//! * Rate: without limits a batch takes everything up to the last stable offset.
//!   [`KafkaSource::max_rate_per_partition`] caps each partition's range at that rate
//!   times the batch interval. With [`StreamingConf::backpressure`](crate::StreamingConf::backpressure)
//!   a PID estimator (the receivers' [`PidRateEstimator`], fed by completed batches)
//!   gives the input's rate, split over the partitions by their lag (Spark's
//!   `maxMessagesPerPartition`), each share capped at the
//!   maximum and floored at [`KafkaSource::min_rate_per_partition`].
//! * The next offset of every partition is the input's position in every checkpoint. A
//!   restarted driver re-reads exactly the logged ranges of the batches it replays and
//!   goes on from the last one.
//! * New partitions of a subscribed topic are seen at the next batch and read from
//!   their earliest offset.
//! * Reads use `isolation.level=read_committed`: records of aborted transactions are
//!   skipped, so a range may hold fewer records than `until - from` (transaction
//!   markers, compaction): gaps are normal.
//! * Retention: a range (planned or replayed) that starts before the partition's
//!   earliest offset is decided by [`RetentionPolicy`]: `Fail` (the default) stops the
//!   batch with an error naming the topic, partition, range and earliest offset; `Skip`
//!   reads from the earliest offset on, logs a warning and counts the lost records in
//!   the input's status (`lost_to_retention`). Never silent.
//! * A broker that does not answer: every call is retried with backoff (100 ms doubling
//!   to 5 s) for up to [`KafkaSource::broker_timeout`] (default 60 s), then the batch
//!   fails with an error naming the brokers and what was asked.
//! * Optionally ([`KafkaSource::commit_to_group`]) the offsets of completed batches are
//!   committed to a consumer group after `BatchCompleted`, only so that the usual lag
//!   tools see the job's progress; the engine never reads them back.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::observe::{InputStatus, PartitionStatus};
use crate::runtime::graph::ExecutionEnv;
use crate::runtime::io::Input;
use crate::sources::kafka_queue::{MessageQueue, RawMessage};
pub use crate::sources::offsets::OffsetRange;
use crate::sources::queue::Allocations;
use crate::sources::rate::{PidRateEstimator, RateController, RateLimiter};
use crate::{Batch, BatchTime, DStream, EngineError, Result, StreamingContext};

/// One Kafka record as the direct source hands it to the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaRecord {
    /// The topic it was read from (one allocation shared by the records of a read,
    /// not a copy per record).
    pub topic: Arc<str>,
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its timestamp in ms since the epoch (create or log-append time), if it has one.
    pub timestamp: Option<i64>,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its value (`None` for a tombstone).
    pub value: Option<Vec<u8>>,
    /// Its headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl KafkaRecord {
    /// The record `m` holds, read from `partition` of `topic`.
    fn of(topic: &Arc<str>, partition: i32, m: &RawMessage<'_>) -> Self {
        KafkaRecord {
            topic: topic.clone(),
            partition,
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m.headers(),
        }
    }
}

/// The records of a Kafka batch's partition built at a time when an element-wise job
/// reads it (about 15 MB of 100-byte records).
const PIECE: usize = 65_536;

/// A user function giving the starting offset of a partition (`None`: its earliest).
pub type OffsetFn = Arc<dyn Fn(&str, i32) -> Option<i64> + Send + Sync>;

/// Where a job that starts without a checkpoint begins reading. A job resumed from a
/// checkpoint always goes on from its checkpointed offsets; partitions that appear
/// while the job runs start at their earliest offset.
#[derive(Clone, Default)]
pub enum StartingOffsets {
    /// Each partition's earliest available offset (the default).
    #[default]
    Earliest,
    /// Each partition's last stable offset when the job first sees it.
    Latest,
    /// These offsets; partitions not in the map start at their earliest.
    Offsets(BTreeMap<(String, i32), i64>),
    /// A user function (e.g. reading offsets the job stored in its own database).
    Function(OffsetFn),
}

impl StartingOffsets {
    /// Starting offsets from a user function (`None`: the partition's earliest).
    pub fn from_fn(f: impl Fn(&str, i32) -> Option<i64> + Send + Sync + 'static) -> Self {
        StartingOffsets::Function(Arc::new(f))
    }
}

impl fmt::Debug for StartingOffsets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartingOffsets::Earliest => f.write_str("Earliest"),
            StartingOffsets::Latest => f.write_str("Latest"),
            StartingOffsets::Offsets(m) => f.debug_tuple("Offsets").field(m).finish(),
            StartingOffsets::Function(_) => f.write_str("Function(..)"),
        }
    }
}

/// What to do with a range that starts before the partition's earliest offset (the
/// broker deleted those records: retention, `delete_records`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RetentionPolicy {
    /// Fail the batch with an error naming topic, partition, range and earliest offset.
    #[default]
    Fail,
    /// Read from the earliest offset on; log a warning and count the lost records.
    Skip,
}

#[derive(Debug, Clone)]
enum Subscription {
    Topics(Vec<String>),
    Assign(Vec<(String, i32)>),
}

/// What the source shares with its handle: the ranges of each batch (for
/// [`KafkaSource::offset_ranges`]).
#[derive(Debug, Default)]
struct Shared {
    ranges: Mutex<BTreeMap<BatchTime, Vec<OffsetRange>>>,
}

/// The settings of a Kafka direct stream (see [`crate::sources::kafka`]). Clone it
/// before handing it to [`StreamingContext::kafka_direct_stream`] to keep a handle for
/// [`KafkaSource::offset_ranges`].
#[derive(Debug, Clone)]
pub struct KafkaSource {
    brokers: String,
    subscription: Subscription,
    starting: StartingOffsets,
    max_rate_per_partition: Option<u64>,
    min_rate_per_partition: Option<u64>,
    retention: RetentionPolicy,
    client: Vec<(String, String)>,
    name: Option<String>,
    broker_timeout: Duration,
    commit_group: Option<String>,
    shared: Arc<Shared>,
}

impl KafkaSource {
    /// A source reading from the brokers `brokers` (`host:port[,host:port…]`); name
    /// its topics with [`topics`](Self::topics) or [`assign`](Self::assign).
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaSource {
            brokers: brokers.into(),
            subscription: Subscription::Topics(Vec::new()),
            starting: StartingOffsets::Earliest,
            max_rate_per_partition: None,
            min_rate_per_partition: None,
            retention: RetentionPolicy::Fail,
            client: Vec::new(),
            name: None,
            broker_timeout: Duration::from_secs(60),
            commit_group: None,
            shared: Arc::default(),
        }
    }

    /// Reads every partition of these topics (new partitions from the next batch on).
    pub fn topics<S: Into<String>>(mut self, topics: impl IntoIterator<Item = S>) -> Self {
        self.subscription = Subscription::Topics(topics.into_iter().map(Into::into).collect());
        self
    }

    /// Reads exactly these `(topic, partition)`s.
    pub fn assign<S: Into<String>>(mut self, parts: impl IntoIterator<Item = (S, i32)>) -> Self {
        self.subscription =
            Subscription::Assign(parts.into_iter().map(|(t, p)| (t.into(), p)).collect());
        self
    }

    /// Where a job without a checkpoint starts (default: earliest).
    pub fn starting_offsets(mut self, s: StartingOffsets) -> Self {
        self.starting = s;
        self
    }

    /// At most this many records per partition per second of batch interval (Spark's
    /// `maxRatePerPartition`); default unlimited. With backpressure
    /// ([`StreamingConf::backpressure`](crate::StreamingConf::backpressure)) it caps
    /// each partition's share of the estimated rate.
    pub fn max_rate_per_partition(mut self, records_per_s: u64) -> Self {
        self.max_rate_per_partition = Some(records_per_s);
        self
    }

    /// With a rate limit (backpressure or [`max_rate_per_partition`](Self::max_rate_per_partition)),
    /// each partition with a lag still gets at least this many records per second of
    /// batch interval, however low backpressure's estimate or the partition's share of
    /// it (Spark's `minRatePerPartition`). Default: none (but always at least one
    /// record per partition per batch). Without any rate limit it changes nothing.
    pub fn min_rate_per_partition(mut self, records_per_s: u64) -> Self {
        self.min_rate_per_partition = Some(records_per_s);
        self
    }

    /// What to do with a range the broker no longer has (default [`RetentionPolicy::Fail`]).
    pub fn on_retention_loss(mut self, p: RetentionPolicy) -> Self {
        self.retention = p;
        self
    }

    /// A librdkafka client setting for the reading consumers (`fetch.max.bytes`, …).
    /// `isolation.level`, `enable.auto.commit` and `group.id` are the source's own.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.client.push((key.into(), value.into()));
        self
    }

    /// The input's stable name (its checkpointed offsets and logged ranges are found
    /// again by it). Default: derived from the topics or the assignment, so a job
    /// keeps its offsets when the broker addresses change, and starts over when the
    /// topics do.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How long to retry a broker that does not answer before failing the batch
    /// (default 60 s).
    pub fn broker_timeout(mut self, d: Duration) -> Self {
        self.broker_timeout = d;
        self
    }

    /// Also commits the offsets of every completed batch to consumer group `group`
    /// (after `BatchCompleted`), for lag tools. The engine never reads them back.
    pub fn commit_to_group(mut self, group: impl Into<String>) -> Self {
        self.commit_group = Some(group.into());
        self
    }

    /// The ranges batch `t` reads, in partition order, while the batch is pending or
    /// running; empty for a batch this handle's stream never planned or already forgot.
    /// In an output, [`BatchContext::offset_ranges`](crate::BatchContext::offset_ranges)
    /// gives the same without a handle, for every Kafka input upstream.
    pub fn offset_ranges(&self, t: BatchTime) -> Vec<OffsetRange> {
        self.shared
            .ranges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&t)
            .cloned()
            .unwrap_or_default()
    }

    fn identity(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match &self.subscription {
            Subscription::Topics(t) => t.join(","),
            Subscription::Assign(a) => a
                .iter()
                .map(|(t, p)| format!("{t}:{p}"))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    fn validate(&self) -> Result<()> {
        let config = |setting: &str, reason: &str| EngineError::Config {
            setting: format!("kafka source: {setting}"),
            reason: reason.into(),
        };
        if self.brokers.trim().is_empty() {
            return Err(config("brokers", "no bootstrap brokers given (host:port)"));
        }
        let empty = match &self.subscription {
            Subscription::Topics(t) => t.is_empty() || t.iter().any(String::is_empty),
            Subscription::Assign(a) => {
                a.is_empty() || a.iter().any(|(t, p)| t.is_empty() || *p < 0)
            }
        };
        if empty {
            return Err(config(
                "topics",
                "name at least one topic (.topics([..])) or partition (.assign([(topic, p)..])); no empty names or negative partitions",
            ));
        }
        if self.max_rate_per_partition == Some(0) {
            return Err(config(
                "max_rate_per_partition",
                "must be at least 1 record/s",
            ));
        }
        if self.min_rate_per_partition == Some(0) {
            return Err(config(
                "min_rate_per_partition",
                "must be at least 1 record/s",
            ));
        }
        if let (Some(min), Some(max)) = (self.min_rate_per_partition, self.max_rate_per_partition) {
            if min > max {
                return Err(config(
                    "min_rate_per_partition",
                    &format!("{min} records/s is above max_rate_per_partition ({max} records/s)"),
                ));
            }
        }
        for (k, _) in &self.client {
            if ["isolation.level", "enable.auto.commit", "group.id"].contains(&k.as_str()) {
                return Err(config(k, "is set by the source itself"));
            }
        }
        Ok(())
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            .set("allow.auto.create.topics", "false")
            // A fetch below the earliest offset is an error, never a silent jump.
            .set("auto.offset.reset", "error")
            .set("log_level", "3")
            // A batch reads a whole range at once: fetch in large pieces (librdkafka's
            // defaults, 1 MiB per partition per fetch, suit a consumer that keeps up
            // record by record). The user's settings below override these.
            .set("fetch.message.max.bytes", "8388608")
            .set("fetch.max.bytes", "67108864")
            .set("queued.min.messages", "1000000")
            .set("queued.max.messages.kbytes", "262144");
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }
}

type Tp = (String, i32);

/// A reading consumer of one partition and the offset it will return next.
struct Reader {
    /// The partition's fetched messages, split from the consumer's queue and taken
    /// many per call (declared first: dropped before the consumer it belongs to).
    queue: MessageQueue,
    /// The consumer, polled for its events (errors, logs) only.
    consumer: BaseConsumer,
    /// Assigned once; moved with `seek` after that (a new assignment would stop the
    /// partition's fetcher, which undoes the split).
    assigned: bool,
    next: Option<i64>,
}

#[derive(Default)]
struct State {
    /// The next offset to read of every partition seen so far.
    positions: BTreeMap<Tp, i64>,
    /// The ranges of every planned batch not yet forgotten.
    planned: BTreeMap<BatchTime, Vec<OffsetRange>>,
    /// The high watermarks last fetched.
    high: HashMap<Tp, i64>,
    /// The sum of the partitions' rate limits of the latest plan (records/s), if any.
    rate_limit: Option<f64>,
    last_error: Option<String>,
}

struct KafkaInput {
    /// Itself, for the batches it hands out (they read through it when used).
    me: std::sync::Weak<KafkaInput>,
    source: KafkaSource,
    alloc: Arc<Allocations<KafkaRecord>>,
    state: Mutex<State>,
    /// The driver's metadata client (and group committer, if any).
    meta: Mutex<Option<BaseConsumer>>,
    readers: Mutex<HashMap<Tp, Arc<Mutex<Reader>>>>,
    stopping: AtomicBool,
    planned_after_stop: AtomicBool,
    /// A checkpointed position was restored (the starting offsets do not apply).
    restored: AtomicBool,
    records_total: AtomicU64,
    lost: AtomicU64,
    /// With backpressure: the PID estimator, fed by completed batches (as a listener)
    /// with the records this input gave them; its rate is split over the partitions.
    backpressure: Option<Arc<RateController>>,
}

impl KafkaInput {
    fn new(source: KafkaSource, backpressure: Option<Arc<RateController>>) -> Arc<Self> {
        Arc::new_cyclic(|me| KafkaInput {
            me: me.clone(),
            source,
            alloc: Arc::new(Allocations::default()),
            state: Mutex::new(State::default()),
            meta: Mutex::new(None),
            readers: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            planned_after_stop: AtomicBool::new(false),
            restored: AtomicBool::new(false),
            records_total: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            backpressure,
        })
    }
}

/// What [`KafkaSource::client_read_ceiling`] measured.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct ReadCeiling {
    pub records: u64,
    pub value_bytes: u64,
    pub elapsed: Duration,
}

impl KafkaSource {
    /// How fast this source's Kafka client alone hands out every record of the
    /// source's partitions, from the earliest offset to the high watermark: the
    /// source's own read loop (one consumer per partition, all at once), without
    /// building a record, planning or running a job. The ceiling of any job's read
    /// through this client; `sluice bench kafka` prints it beside the job's rate.
    #[doc(hidden)]
    pub fn client_read_ceiling(&self) -> Result<ReadCeiling> {
        self.validate()?;
        let input = KafkaInput::new(self.clone(), None);
        let mut ranges = Vec::new();
        for tp in input.partitions()? {
            let (low, high) = input.watermarks(&tp)?;
            ranges.push(OffsetRange {
                topic: tp.0,
                partition: tp.1,
                from_offset: low,
                until_offset: high,
            });
        }
        let t = BatchTime(0);
        for r in &ranges {
            input.prefetch(t, r)?;
        }
        let start = Instant::now();
        let counts = std::thread::scope(|s| {
            let scans: Vec<_> = ranges
                .iter()
                .map(|r| {
                    let input = &*input;
                    s.spawn(move || {
                        let (mut n, mut bytes) = (0u64, 0u64);
                        input.scan_range(t, r, |m| {
                            n += 1;
                            bytes += m.payload().map_or(0, <[u8]>::len) as u64;
                        })?;
                        Ok::<_, EngineError>((n, bytes))
                    })
                })
                .collect();
            scans
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(ReadCeiling {
            records: counts.iter().map(|c| c.0).sum(),
            value_bytes: counts.iter().map(|c| c.1).sum(),
            elapsed: start.elapsed(),
        })
    }
}

fn kafka_err(e: &KafkaError) -> String {
    crate::sinks::error_chain(e)
}

/// Whether a Kafka error may go away by waiting (a broker down or restarting).
fn transient(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::OperationTimedOut
                | C::RequestTimedOut
                | C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::NotCoordinator
                | C::CoordinatorNotAvailable
                | C::CoordinatorLoadInProgress
                | C::NetworkException
                | C::UnknownLeaderEpoch
        )
    )
}

/// Runs `f` until it succeeds, retrying transient broker errors (see [`transient`])
/// with backoff (100 ms doubling to 5 s) for up to `limit`; `who` and `what` are for
/// the log. Shared by the source and the sink.
pub(crate) fn retry_transient<R>(
    who: &str,
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Result<R, KafkaError>,
) -> Result<R, KafkaError> {
    let deadline = Instant::now() + limit;
    let mut backoff = Duration::from_millis(100);
    loop {
        match f() {
            Err(e) if transient(&e) && Instant::now() < deadline => {
                tracing::warn!(who, what, error = %kafka_err(&e), retry_in = ?backoff,
                    "kafka broker not answering; retrying");
                std::thread::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())));
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            r => return r,
        }
    }
}

/// Each partition's rate limit in records/s, as Spark's
/// `DirectKafkaInputDStream.maxMessagesPerPartition` computes it. With a backpressure
/// estimate `rate` (records/s for the whole input), partition `p` gets
/// `rate × lag_p / Σ lag` (the partitions furthest behind get the most), capped at
/// `max`; without one, every partition gets `max`. Either way floored at `min`.
/// `None`: no limit at all (neither an estimate nor a maximum; `min` alone limits
/// nothing). `lags` are the records each partition has to read (negative counts as 0).
pub(crate) fn partition_rates(
    lags: &[i64],
    rate: Option<f64>,
    min: Option<u64>,
    max: Option<u64>,
) -> Option<Vec<f64>> {
    let max = max.map(|m| m as f64);
    let rates: Vec<f64> = match rate.filter(|r| r.is_finite() && *r > 0.0) {
        Some(rate) => {
            let total: f64 = lags.iter().map(|l| (*l).max(0) as f64).sum();
            lags.iter()
                .map(|lag| {
                    let share = if total > 0.0 {
                        rate * (*lag).max(0) as f64 / total
                    } else {
                        0.0
                    };
                    max.map_or(share, |m| share.min(m))
                })
                .collect()
        }
        None => vec![max?; lags.len()],
    };
    let min = min.map_or(0.0, |m| m as f64);
    Some(rates.into_iter().map(|r| r.max(min)).collect())
}

/// The most records each partition may give one batch: its rate (records/s) times
/// the batch interval, rounded down, but at least one record, so that every partition
/// with a lag moves on whatever the rate.
pub(crate) fn records_per_batch(rates: &[f64], batch: Duration) -> Vec<i64> {
    // rate × ms / 1000: exact for whole rates and intervals in whole ms.
    let ms = batch.as_millis() as f64;
    rates
        .iter()
        .map(|r| ((r * ms / 1000.0).floor() as i64).max(1))
        .collect()
}

impl KafkaInput {
    fn describe_source(&self) -> String {
        format!("kafka {} ({})", self.source.identity(), self.source.brokers)
    }

    fn error(&self, reason: impl Into<String>) -> EngineError {
        let reason = reason.into();
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_error = Some(reason.clone());
        EngineError::Source {
            input: self.describe_source(),
            reason,
        }
    }

    /// Runs `f` until it succeeds, retrying transient broker errors with backoff for up
    /// to the broker timeout.
    fn retry<R>(&self, what: &str, f: impl FnMut() -> Result<R, KafkaError>) -> Result<R> {
        let who = self.describe_source();
        retry_transient(&who, what, self.source.broker_timeout, f).map_err(|e| {
            let hint = if transient(&e) {
                format!(
                    " (gave up after {:?}: are the brokers {} up and reachable?)",
                    self.source.broker_timeout, self.source.brokers
                )
            } else {
                String::new()
            };
            self.error(format!("{what}: {}{hint}", kafka_err(&e)))
        })
    }

    fn with_meta<R>(&self, f: impl FnOnce(&BaseConsumer) -> Result<R>) -> Result<R> {
        let mut guard = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let mut c = self.source.client_config();
            if let Some(g) = &self.source.commit_group {
                c.set("group.id", g);
            }
            let consumer: BaseConsumer = c
                .create()
                .map_err(|e| self.error(format!("cannot create a client: {}", kafka_err(&e))))?;
            *guard = Some(consumer);
        }
        f(guard.as_ref().expect("created above"))
    }

    fn timeout(&self) -> Duration {
        self.source.broker_timeout.min(Duration::from_secs(10))
    }

    /// The partitions to read now.
    fn partitions(&self) -> Result<Vec<Tp>> {
        let topics = match &self.source.subscription {
            Subscription::Assign(a) => return Ok(a.clone()),
            Subscription::Topics(t) => t,
        };
        let mut out = Vec::new();
        for topic in topics {
            let md = self.with_meta(|c| {
                self.retry(&format!("fetching the metadata of topic {topic:?}"), || {
                    let md = c.fetch_metadata(Some(topic), self.timeout())?;
                    // A topic the broker has not answered for yet is a transient error.
                    if let Some(t) = md.topics().first() {
                        if t.error().is_some_and(|e| {
                            RDKafkaErrorCode::from(e) == RDKafkaErrorCode::LeaderNotAvailable
                        }) {
                            return Err(KafkaError::MetadataFetch(
                                RDKafkaErrorCode::LeaderNotAvailable,
                            ));
                        }
                    }
                    Ok(md)
                })
            })?;
            let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
                return Err(self.error(format!("topic {topic:?} is not in the broker's metadata")));
            };
            if let Some(e) = t.error() {
                let code = RDKafkaErrorCode::from(e);
                return Err(self.error(if code == RDKafkaErrorCode::UnknownTopicOrPartition {
                    format!(
                        "topic {topic:?} does not exist on {} (create it first; the source never creates topics)",
                        self.source.brokers
                    )
                } else {
                    format!("topic {topic:?}: {code}")
                }));
            }
            if t.partitions().is_empty() {
                return Err(self.error(format!("topic {topic:?} has no partitions")));
            }
            let mut ps: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
            ps.sort_unstable();
            out.extend(ps.into_iter().map(|p| (topic.clone(), p)));
        }
        Ok(out)
    }

    fn watermarks(&self, (topic, p): &Tp) -> Result<(i64, i64)> {
        self.with_meta(|c| {
            self.retry(&format!("fetching the offsets of {topic}-{p}"), || {
                c.fetch_watermarks(topic, *p, self.timeout())
            })
        })
    }

    /// The offset a partition first seen now starts at (`low`, `high`: its watermarks).
    fn starting_offset(&self, tp: &Tp, low: i64, high: i64) -> i64 {
        if self.restored.load(Ordering::SeqCst) {
            // Resumed from a checkpoint: a partition it did not know is new.
            return low;
        }
        match &self.source.starting {
            StartingOffsets::Earliest => low,
            StartingOffsets::Latest => high,
            StartingOffsets::Offsets(m) => m.get(tp).copied().unwrap_or(low),
            StartingOffsets::Function(f) => f(&tp.0, tp.1).unwrap_or(low),
        }
    }

    /// Applies the retention policy to `r` given the partition's earliest offset.
    fn check_retention(&self, t: BatchTime, r: &mut OffsetRange, low: i64) -> Result<()> {
        if r.from_offset >= low || r.until_offset <= r.from_offset {
            return Ok(());
        }
        match self.source.retention {
            RetentionPolicy::Fail => Err(self.error(format!(
                "batch {}: range {r} starts before the earliest available offset {low} of {}-{} \
                 (deleted by retention); set on_retention_loss(RetentionPolicy::Skip) to read on from {low} and count the loss",
                t.0, r.topic, r.partition
            ))),
            RetentionPolicy::Skip => {
                let lost = low.min(r.until_offset) - r.from_offset;
                self.lost.fetch_add(lost as u64, Ordering::Relaxed);
                tracing::warn!(input = %self.describe_source(), batch = t.0, range = %r, earliest = low,
                    lost, "records deleted by retention before they were read: skipped (RetentionPolicy::Skip)");
                r.from_offset = low.min(r.until_offset);
                Ok(())
            }
        }
    }

    /// Fixes the ranges of a new batch `t`: from each partition's next offset to its
    /// last stable offset, capped by the partition's rate limit (see
    /// [`partition_rates`]) times the batch interval.
    fn plan(&self, t: BatchTime, env: &ExecutionEnv) -> Result<Vec<OffsetRange>> {
        let parts = self.partitions()?;
        // Each partition's watermarks and next offset first: the rate is split over
        // the partitions by their lags.
        let mut found = Vec::with_capacity(parts.len());
        for tp in parts {
            let (low, high) = self.watermarks(&tp)?;
            let known = self
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .positions
                .get(&tp)
                .copied();
            let from = match known {
                Some(f) => f,
                None => {
                    let f = self.starting_offset(&tp, low, high);
                    tracing::info!(input = %self.describe_source(), topic = %tp.0, partition = tp.1,
                        offset = f, "reading a new partition");
                    f
                }
            };
            if from > high {
                return Err(self.error(format!(
                    "{}-{}: the next offset {from} is past the partition's end {high} (was the topic deleted and recreated?)",
                    tp.0, tp.1
                )));
            }
            found.push((tp, low, high, from));
        }
        let lags: Vec<i64> = found
            .iter()
            .map(|(_, low, high, from)| high - from.max(low))
            .collect();
        let estimate = self
            .backpressure
            .as_ref()
            .and_then(|c| c.limiter.rate())
            .map(|r| r as f64);
        let rates = partition_rates(
            &lags,
            estimate,
            self.source.min_rate_per_partition,
            self.source.max_rate_per_partition,
        );
        let caps = rates.as_ref().map(|r| records_per_batch(r, env.batch));
        let mut ranges = Vec::with_capacity(found.len());
        for (i, (tp, low, high, from)) in found.into_iter().enumerate() {
            let cap = caps.as_ref().map(|c| c[i]);
            let until = cap.map_or(high, |c| high.min(from.saturating_add(c)));
            let mut r = OffsetRange {
                topic: tp.0.clone(),
                partition: tp.1,
                from_offset: from,
                until_offset: until.max(from),
            };
            if r.from_offset < low {
                // Keep the range the same length where possible: the plan is what the
                // batch reads, after the policy.
                self.check_retention(t, &mut r, low)?;
                if let Some(c) = cap {
                    r.until_offset = high.min(r.from_offset.saturating_add(c)).max(r.from_offset);
                }
            }
            self.state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .high
                .insert(tp, high);
            ranges.push(r);
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.rate_limit = rates.map(|r| r.iter().sum());
        Ok(ranges)
    }

    fn reader(&self, tp: &Tp) -> Result<Arc<Mutex<Reader>>> {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = readers.get(tp) {
            return Ok(r.clone());
        }
        // A group id only because librdkafka's assign needs one: the readers never
        // join the group nor commit to it.
        let consumer: BaseConsumer = self
            .source
            .client_config()
            .set(
                "group.id",
                format!("sluice-reader-{}", self.source.identity()),
            )
            .create()
            .map_err(|e| self.error(format!("cannot create a consumer: {}", kafka_err(&e))))?;
        // Split before the first assignment, so no message of the partition ever
        // reaches the consumer's own queue, which keeps the client's events.
        let queue = MessageQueue::of_partition(&consumer, &tp.0, tp.1).ok_or_else(|| {
            self.error(format!(
                "librdkafka gave no message queue for partition {} of {:?}",
                tp.1, tp.0
            ))
        })?;
        let r = Arc::new(Mutex::new(Reader {
            queue,
            consumer,
            assigned: false,
            next: None,
        }));
        readers.insert(tp.clone(), r.clone());
        Ok(r)
    }

    /// Starts the client of `r`'s partition fetching from `r`'s start, ahead of the
    /// read, if no read holds it and it is not positioned for one (another batch's
    /// range may still be to read from where it is).
    fn prefetch(&self, t: BatchTime, r: &OffsetRange) -> Result<()> {
        let reader = self.reader(&(r.topic.clone(), r.partition))?;
        let Ok(mut g) = reader.try_lock() else {
            return Ok(());
        };
        if g.next.is_none() {
            self.move_to(&mut g, t, r)?;
        }
        Ok(())
    }

    /// Positions `g` at `r`'s start unless it is there.
    fn move_to(&self, g: &mut Reader, t: BatchTime, r: &OffsetRange) -> Result<()> {
        if g.next == Some(r.from_offset) {
            return Ok(());
        }
        let fail = |e: KafkaError| {
            self.forget_reader(r);
            self.error(format!("batch {}: reading {r}: {}", t.0, kafka_err(&e)))
        };
        let at = Offset::Offset(r.from_offset);
        if g.assigned {
            g.consumer
                .seek(&r.topic, r.partition, at, self.timeout())
                .map_err(fail)?;
        } else {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&r.topic, r.partition, at)
                .map_err(fail)?;
            g.consumer.assign(&tpl).map_err(fail)?;
            g.assigned = true;
        }
        g.queue.clear();
        g.next = Some(r.from_offset);
        Ok(())
    }

    /// Drops the reader of `r`'s partition after an error: the next read makes a new
    /// one, whatever state the old client was left in.
    fn forget_reader(&self, r: &OffsetRange) {
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(r.topic.clone(), r.partition));
    }

    /// Every committed record of `r`.
    fn read_range(&self, t: BatchTime, r: &OffsetRange) -> Result<Vec<KafkaRecord>> {
        // Sized for the whole range at once (its offsets bound its records): no
        // regrowth copying millions of records, no slack a doubling leaves.
        let mut out = Vec::with_capacity(r.count().clamp(0, 1 << 26) as usize);
        let topic: Arc<str> = Arc::from(r.topic.as_str());
        self.scan_range(t, r, |m| out.push(KafkaRecord::of(&topic, r.partition, m)))?;
        Ok(out)
    }

    /// Calls `visit` on every committed record of `r`, in offset order.
    fn scan_range(
        &self,
        t: BatchTime,
        r: &OffsetRange,
        mut visit: impl FnMut(&RawMessage<'_>),
    ) -> Result<()> {
        if r.until_offset <= r.from_offset {
            return Ok(());
        }
        // Positioned under the same lock as the read: another read of the partition
        // (another batch, another operator) cannot move the client in between.
        let reader = self.reader(&(r.topic.clone(), r.partition))?;
        let mut reader = reader.lock().unwrap_or_else(|e| e.into_inner());
        self.move_to(&mut reader, t, r)?;
        let what = || format!("batch {}: reading {r}", t.0);
        let mut last_progress = Instant::now();
        let mut backoff_logged = false;
        let mut progressed = false;
        let position = |c: &BaseConsumer| {
            c.position()
                .ok()
                .and_then(
                    |l| match l.find_partition(&r.topic, r.partition)?.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    },
                )
                .unwrap_or(r.from_offset)
        };
        let mut pos = r.from_offset;
        let Reader {
            queue,
            consumer,
            next,
            ..
        } = &mut *reader;
        // Unset while reading: a read that does not end normally (an error, or a
        // user's function panicking in `visit`) leaves the client somewhere inside
        // the range, and the next read must seek.
        let positioned = next.take().is_some();
        loop {
            // What the client has fetched already comes without waiting; only when it
            // holds nothing are its events served (errors, logs) and the position
            // asked (it moves past transaction markers and aborted records too), and
            // then the broker waited for.
            let mut error = None;
            if !queue.ready() {
                match consumer.poll(Duration::ZERO) {
                    None => {}
                    Some(Err(e)) => error = Some(e),
                    Some(Ok(m)) => {
                        let o = m.offset();
                        drop(m);
                        self.forget_reader(r);
                        return Err(self.error(format!(
                            "{}: the record at offset {o} came on the client's own queue, not its partition's",
                            what()
                        )));
                    }
                }
                if error.is_none() {
                    pos = position(consumer);
                    if pos >= r.until_offset {
                        break;
                    }
                }
            }
            if error.is_none() {
                if let Some(m) = queue.next(Duration::from_millis(100)) {
                    match m.error() {
                        Some(e) => error = Some(e),
                        None => {
                            progressed = true;
                            let o = m.offset();
                            if o >= r.until_offset {
                                // Past the range (a gap reached its end): the client is
                                // now beyond the next batch's start.
                                return Ok(());
                            }
                            if o < r.from_offset {
                                continue;
                            }
                            visit(&m);
                            if o + 1 >= r.until_offset {
                                break;
                            }
                            continue;
                        }
                    }
                }
            }
            if let Some(e) = error {
                let code = e.rdkafka_error_code();
                if matches!(
                    code,
                    Some(RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset)
                ) {
                    self.forget_reader(r);
                    let low = self.watermarks(&(r.topic.clone(), r.partition))?.0;
                    return Err(self.error(format!(
                        "batch {}: range {r} is no longer on the broker (earliest available offset now {low}: deleted by retention while the batch read it)",
                        t.0
                    )));
                }
                if !transient(&e) {
                    self.forget_reader(r);
                    return Err(self.error(format!("{}: {}", what(), kafka_err(&e))));
                }
            }
            // Only here, after a wait, is the clock read: records since the last
            // wait were progress (one clock read per record would cost more than
            // the rest of the loop).
            if std::mem::take(&mut progressed) {
                last_progress = Instant::now();
            }
            if last_progress.elapsed() > self.source.broker_timeout {
                self.forget_reader(r);
                return Err(self.error(format!(
                    "{}: no progress for {:?} at offset {pos} (are the brokers {} up?)",
                    what(),
                    self.source.broker_timeout,
                    self.source.brokers
                )));
            }
            if !backoff_logged && last_progress.elapsed() > Duration::from_secs(5) {
                backoff_logged = true;
                tracing::warn!(input = %self.describe_source(), range = %r, at = pos,
                    "kafka read stalled; waiting for the broker");
            }
        }
        if positioned {
            *next = Some(r.until_offset);
        }
        Ok(())
    }

    /// Records the ranges of batch `t` (one partition each) as its plan and gives the
    /// job a batch that reads them when it runs (see [`Self::batch_of`]). The count
    /// returned (the input's records in metrics and for backpressure) is that of the
    /// offsets, as Spark's: transaction markers and aborted records included.
    fn take(&self, t: BatchTime, ranges: Vec<OffsetRange>) -> Result<u64> {
        // Clients not reading another batch start fetching now, ahead of the job.
        for r in ranges.iter().filter(|r| r.until_offset > r.from_offset) {
            self.prefetch(t, r)?;
        }
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            for r in &ranges {
                st.positions
                    .insert((r.topic.clone(), r.partition), r.until_offset);
            }
            st.planned.insert(t, ranges.clone());
        }
        self.source
            .shared
            .ranges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(t, ranges.clone());
        let n: u64 = ranges.iter().map(|r| r.count().max(0) as u64).sum();
        let batch = self.batch_of(t, ranges);
        self.records_total.fetch_add(n, Ordering::Relaxed);
        if let Some(c) = &self.backpressure {
            c.records
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(t, n);
        }
        self.alloc.set(t, batch);
        Ok(n)
    }

    /// The batch of `ranges`, read when used: whole partitions for what needs them,
    /// else in pieces of [`PIECE`] records as the client hands them out, so an
    /// element-wise job holds a few pieces, not the batch.
    fn batch_of(&self, t: BatchTime, ranges: Vec<OffsetRange>) -> Batch<KafkaRecord> {
        let ranges = Arc::new(ranges);
        let (me, rs) = (self.me.clone(), ranges.clone());
        let parts = ranges.len();
        let input = move || me.upgrade().ok_or(EngineError::Stopped);
        let input2 = input.clone();
        let load = Arc::new(move |i: usize| input()?.read_range(t, &rs[i]));
        let stream = Arc::new(move |i: usize, f: &mut dyn FnMut(&[KafkaRecord])| {
            let r = &ranges[i];
            let topic: Arc<str> = Arc::from(r.topic.as_str());
            let mut piece = Vec::with_capacity(r.count().clamp(0, PIECE as i64) as usize);
            input2()?.scan_range(t, r, |m| {
                piece.push(KafkaRecord::of(&topic, r.partition, m));
                if piece.len() == PIECE {
                    f(&piece);
                    piece.clear();
                }
            })?;
            if !piece.is_empty() {
                f(&piece);
            }
            Ok(())
        });
        Batch::streamed(parts, load, stream)
    }

    fn commit_to_group(&self, ranges: &[OffsetRange]) {
        if self.source.commit_group.is_none() || ranges.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for r in ranges {
            if tpl
                .add_partition_offset(&r.topic, r.partition, Offset::Offset(r.until_offset))
                .is_err()
            {
                return;
            }
        }
        // A mirror for lag tools only: a failure is logged, never fails the job.
        let res = self.with_meta(|c| {
            c.commit(&tpl, CommitMode::Async)
                .map_err(|e| self.error(kafka_err(&e)))
        });
        if let Err(e) = res {
            tracing::warn!(input = %self.describe_source(), error = %e, "committing offsets to the consumer group failed");
        }
    }
}

impl Input for KafkaInput {
    fn describe(&self) -> String {
        self.describe_source()
    }

    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn start(&self, _env: &ExecutionEnv) -> Result<()> {
        // Fail early on an unknown topic or unreachable brokers.
        self.partitions().map(drop)
    }

    fn allocate(&self, t: BatchTime, env: &ExecutionEnv) -> Result<u64> {
        let stopping = self.stopping.load(Ordering::SeqCst);
        let ranges = self.plan(t, env)?;
        let n = self.take(t, ranges)?;
        if stopping {
            self.planned_after_stop.store(true, Ordering::SeqCst);
        }
        Ok(n)
    }

    fn stop_receiving(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    fn drained(&self) -> bool {
        self.planned_after_stop.load(Ordering::SeqCst)
    }

    fn forget(&self, t: BatchTime) {
        self.alloc.forget(t);
        let done: Vec<OffsetRange> = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let later = st.planned.split_off(&BatchTime(t.0 + 1));
            let done = std::mem::replace(&mut st.planned, later);
            done.into_values().next_back().unwrap_or_default()
        };
        {
            let mut shared = self
                .source
                .shared
                .ranges
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *shared = shared.split_off(&BatchTime(t.0 + 1));
        }
        self.commit_to_group(&done);
    }

    fn offset_ranges(&self, t: BatchTime) -> Option<Vec<OffsetRange>> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Some(st.planned.get(&t).cloned().unwrap_or_default())
    }

    fn plan_of(&self, t: BatchTime) -> Option<Vec<u8>> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        crate::runtime::graph::encode(st.planned.get(&t)?).ok()
    }

    fn replay(&self, t: BatchTime, plan: &[u8], _env: &ExecutionEnv) -> Result<u64> {
        let mut ranges: Vec<OffsetRange> = crate::runtime::graph::decode(plan)?;
        for r in &mut ranges {
            if r.until_offset > r.from_offset {
                let (low, _) = self.watermarks(&(r.topic.clone(), r.partition))?;
                self.check_retention(t, r, low)?;
            }
        }
        tracing::info!(input = %self.describe_source(), batch = t.0,
            ranges = %ranges.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            "replaying the logged offset ranges");
        self.take(t, ranges)
    }

    fn position(&self) -> Option<Vec<u8>> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let pos: Vec<(&String, i32, i64)> =
            st.positions.iter().map(|((t, p), o)| (t, *p, *o)).collect();
        crate::runtime::graph::encode(&pos).ok()
    }

    fn restore_position(&self, pos: &[u8]) -> Result<()> {
        let pos: Vec<(String, i32, i64)> = crate::runtime::graph::decode(pos)?;
        tracing::info!(input = %self.describe_source(), partitions = pos.len(),
            "restored the checkpointed offsets");
        self.restored.store(true, Ordering::SeqCst);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.positions
            .extend(pos.into_iter().map(|(t, p, o)| ((t, p), o)));
        Ok(())
    }

    fn status(&self) -> InputStatus {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let latest = st.planned.values().next_back();
        let partitions = st
            .positions
            .iter()
            .map(|((topic, p), next)| {
                let r = latest
                    .and_then(|rs| rs.iter().find(|r| &r.topic == topic && r.partition == *p));
                let high = st.high.get(&(topic.clone(), *p)).copied();
                PartitionStatus {
                    topic: topic.clone(),
                    partition: *p,
                    from_offset: r.map_or(*next, |r| r.from_offset),
                    until_offset: r.map_or(*next, |r| r.until_offset),
                    high_watermark: high,
                    lag: high.map(|h| (h - *next).max(0)),
                }
            })
            .collect();
        InputStatus {
            name: self.describe_source(),
            kind: "kafka".into(),
            state: if st.last_error.is_some() {
                "failed"
            } else {
                "active"
            }
            .into(),
            rate_limit_per_s: st.rate_limit,
            last_error: st.last_error.clone(),
            records_total: self.records_total.load(Ordering::Relaxed),
            lost_to_retention: self.lost.load(Ordering::Relaxed),
            partitions,
            ..Default::default()
        }
    }
}

impl StreamingContext {
    /// A Kafka direct stream: every partition of `source`'s topics read in offset
    /// ranges the engine fixes and logs per batch, one batch partition per Kafka
    /// partition (see [`crate::sources::kafka`]).
    pub fn kafka_direct_stream(&self, source: KafkaSource) -> Result<DStream<KafkaRecord>> {
        source.validate()?;
        let identity = source.identity();
        let conf = self.conf();
        // Backpressure as for receivers (Spark's RateController on the direct stream):
        // the estimate starts at the initial rate, if any; until there is one, only
        // max_rate_per_partition limits.
        let backpressure = if conf.backpressure {
            Some(Arc::new(RateController {
                estimator: Mutex::new(PidRateEstimator::new(
                    conf.batch_interval,
                    conf.backpressure_pid,
                )?),
                limiter: Arc::new(RateLimiter::new(
                    None,
                    conf.backpressure_initial_rate.map(|r| r as f64),
                )),
                records: Arc::default(),
                name: format!("kafka {identity}"),
            }))
        } else {
            None
        };
        let input = KafkaInput::new(source, backpressure.clone());
        let alloc = input.alloc.clone();
        let stream = self.input_stream("kafka", identity, alloc, input)?;
        if let Some(c) = backpressure {
            self.add_listener(c);
        }
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_name_comes_from_the_topics_or_the_assignment_not_the_brokers() {
        let a = KafkaSource::new("h1:9092").topics(["a", "b"]);
        let b = KafkaSource::new("h2:9092,h3:9092").topics(["a", "b"]);
        assert_eq!(a.identity(), "a,b");
        assert_eq!(a.identity(), b.identity());
        let c = KafkaSource::new("h:1").assign([("a", 0), ("a", 2)]);
        assert_eq!(c.identity(), "a:0,a:2");
        assert_eq!(c.name("orders").identity(), "orders");
    }

    #[test]
    fn settings_are_checked_before_the_job_starts() {
        let err = |s: KafkaSource| s.validate().unwrap_err().to_string();
        assert!(err(KafkaSource::new("h:1")).contains("name at least one topic"));
        assert!(err(KafkaSource::new(" ").topics(["t"])).contains("brokers"));
        assert!(err(KafkaSource::new("h:1").assign([("t", -1)])).contains("negative"));
        assert!(err(KafkaSource::new("h:1")
            .topics(["t"])
            .max_rate_per_partition(0))
        .contains("max_rate_per_partition"));
        let e = err(KafkaSource::new("h:1")
            .topics(["t"])
            .set("isolation.level", "read_uncommitted"));
        assert!(
            e.contains("isolation.level") && e.contains("set by the source"),
            "{e}"
        );
        assert!(KafkaSource::new("h:1")
            .topics(["t"])
            .set("fetch.max.bytes", "1000")
            .validate()
            .is_ok());
    }

    #[test]
    fn min_rate_is_checked_against_max_rate() {
        let err = |s: KafkaSource| s.validate().unwrap_err().to_string();
        assert!(err(KafkaSource::new("h:1")
            .topics(["t"])
            .min_rate_per_partition(0))
        .contains("min_rate_per_partition"));
        let e = err(KafkaSource::new("h:1")
            .topics(["t"])
            .min_rate_per_partition(200)
            .max_rate_per_partition(100));
        assert!(
            e.contains("200 records/s is above max_rate_per_partition (100"),
            "{e}"
        );
        assert!(KafkaSource::new("h:1")
            .topics(["t"])
            .min_rate_per_partition(100)
            .max_rate_per_partition(100)
            .validate()
            .is_ok());
    }

    fn close(got: Option<Vec<f64>>, want: &[f64]) {
        let got = got.expect("a limit");
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "{got:?} != {want:?}");
        }
    }

    #[test]
    fn without_an_estimate_every_partition_gets_the_max_rate() {
        let lags = [600, 300, 0];
        assert_eq!(partition_rates(&lags, None, None, None), None, "no limit");
        assert_eq!(
            partition_rates(&lags, None, Some(50), None),
            None,
            "a minimum alone limits nothing"
        );
        close(
            partition_rates(&lags, None, None, Some(100)),
            &[100.0, 100.0, 100.0],
        );
        // A bad estimate (none yet, NaN, 0) is no estimate.
        close(
            partition_rates(&lags, Some(f64::NAN), None, Some(100)),
            &[100.0, 100.0, 100.0],
        );
        close(
            partition_rates(&lags, Some(0.0), None, Some(100)),
            &[100.0, 100.0, 100.0],
        );
    }

    #[test]
    fn the_estimate_is_split_by_lag_capped_at_max_and_floored_at_min() {
        // 1000 records/s over lags 600/300/100/0: 600, 300, 100, 0.
        let lags = [600, 300, 100, 0];
        close(
            partition_rates(&lags, Some(1000.0), None, None),
            &[600.0, 300.0, 100.0, 0.0],
        );
        // Capped at 500 records/s each: the first loses 100 (Spark does not give it to
        // the others either).
        close(
            partition_rates(&lags, Some(1000.0), None, Some(500)),
            &[500.0, 300.0, 100.0, 0.0],
        );
        // Floored at 150: the small and the idle partition get it.
        close(
            partition_rates(&lags, Some(1000.0), Some(150), Some(500)),
            &[500.0, 300.0, 150.0, 150.0],
        );
        // A low estimate: every partition at the minimum, the split no longer matters.
        close(
            partition_rates(&lags, Some(10.0), Some(150), Some(500)),
            &[150.0, 150.0, 150.0, 150.0],
        );
        // Nothing to read anywhere (no lag, or offsets ahead of the watermark).
        close(
            partition_rates(&[0, -5], Some(1000.0), None, Some(500)),
            &[0.0, 0.0],
        );
        close(
            partition_rates(&[-5, 10], Some(1000.0), None, None),
            &[0.0, 1000.0],
        );
    }

    #[test]
    fn a_batch_takes_the_rate_times_the_interval_and_at_least_one_record() {
        let ms = Duration::from_millis;
        assert_eq!(
            records_per_batch(&[200.0, 300.0, 1.0], ms(100)),
            vec![20, 30, 1]
        );
        assert_eq!(records_per_batch(&[500.0, 0.0], ms(2500)), vec![1250, 1]);
        // Rounded down: 333.3… records/s for 1 s is 333.
        assert_eq!(records_per_batch(&[1000.0 / 3.0], ms(1000)), vec![333]);
        // The example of the README: 500/s split over lags 600/300/100, max 200,
        // min 80, 1 s batches.
        let rates = partition_rates(&[600, 300, 100], Some(500.0), Some(80), Some(200)).unwrap();
        assert_eq!(records_per_batch(&rates, ms(1000)), vec![200, 150, 80]);
    }

    #[test]
    fn ranges_read_as_topic_partition_and_half_open_interval() {
        let r = OffsetRange {
            topic: "t".into(),
            partition: 2,
            from_offset: 5,
            until_offset: 9,
        };
        assert_eq!(r.to_string(), "t-2 [5, 9)");
        assert_eq!(r.count(), 4);
        let plan = crate::runtime::graph::encode(&vec![r.clone()]).unwrap();
        let back: Vec<OffsetRange> = crate::runtime::graph::decode(&plan).unwrap();
        assert_eq!(back, vec![r]);
    }
}
