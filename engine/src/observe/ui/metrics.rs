//! Prometheus `/metrics`: families updated from listener events (batches,
//! checkpoints), and, at each scrape, what the inputs report of themselves and the
//! process's write-ahead-log counters.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::observe::listener::{BatchInfo, BatchKind, CheckpointInfo};
use crate::observe::InputStatus;

type Labels = Vec<(&'static str, String)>;

/// The metrics a context keeps.
pub(crate) struct Metrics {
    registry: Registry,
    batches_completed: Counter,
    batches_failed: Counter,
    batches_replayed: Counter,
    batches_caught_up: Counter,
    processing: Histogram,
    scheduling_delay: Histogram,
    total_delay: Histogram,
    input_records: Family<Labels, Counter>,
    checkpoints_completed: Counter,
    checkpoints_failed: Counter,
    checkpoint_duration: Histogram,
    checkpoint_bytes: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Delays from 1 ms to about 4.4 min.
fn seconds_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 19))
}

/// What the inputs reported at the latest scrape (shared with [`InputsCollector`]).
pub(crate) type InputsSnapshot = Arc<Mutex<Vec<InputStatus>>>;

impl Metrics {
    pub(crate) fn new(app: &str, inputs: InputsSnapshot) -> Metrics {
        let mut registry = Registry::with_labels(
            [(
                std::borrow::Cow::Borrowed("app"),
                std::borrow::Cow::Owned(app.to_owned()),
            )]
            .into_iter(),
        );
        let m = Metrics {
            batches_completed: Counter::default(),
            batches_failed: Counter::default(),
            batches_replayed: Counter::default(),
            batches_caught_up: Counter::default(),
            processing: seconds_buckets(),
            scheduling_delay: seconds_buckets(),
            total_delay: seconds_buckets(),
            input_records: Family::default(),
            checkpoints_completed: Counter::default(),
            checkpoints_failed: Counter::default(),
            checkpoint_duration: seconds_buckets(),
            checkpoint_bytes: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "sluice_batches_completed",
            "Batches whose outputs all finished",
            m.batches_completed.clone(),
        );
        r.register(
            "sluice_batches_failed",
            "Batches an output failed in",
            m.batches_failed.clone(),
        );
        r.register(
            "sluice_batches_replayed",
            "Batches re-run after a restart with their logged inputs",
            m.batches_replayed.clone(),
        );
        r.register(
            "sluice_batches_caught_up",
            "Batch times the clock passed while the driver was down, run after a restart",
            m.batches_caught_up.clone(),
        );
        r.register(
            "sluice_batch_processing_seconds",
            "Time a batch's outputs took",
            m.processing.clone(),
        );
        r.register(
            "sluice_batch_scheduling_delay_seconds",
            "How late a batch started relative to its batch time",
            m.scheduling_delay.clone(),
        );
        r.register(
            "sluice_batch_total_delay_seconds",
            "Scheduling delay plus processing time",
            m.total_delay.clone(),
        );
        r.register(
            "sluice_input_records",
            "Records allocated to batches, per input",
            m.input_records.clone(),
        );
        r.register(
            "sluice_checkpoints_completed",
            "Checkpoints written and published",
            m.checkpoints_completed.clone(),
        );
        r.register(
            "sluice_checkpoints_failed",
            "Checkpoints that failed",
            m.checkpoints_failed.clone(),
        );
        r.register(
            "sluice_checkpoint_duration_seconds",
            "Time to write a checkpoint (snapshots, metadata, cleanup)",
            m.checkpoint_duration.clone(),
        );
        r.register(
            "sluice_checkpoint_written_bytes",
            "Bytes of state snapshots and metadata checkpoints written",
            m.checkpoint_bytes.clone(),
        );
        r.register_collector(Box::new(InputsCollector(inputs)));
        Metrics { registry, ..m }
    }

    pub(crate) fn batch_completed(&self, info: &BatchInfo) {
        self.batch_done(info);
        self.batches_completed.inc();
    }

    pub(crate) fn batch_failed(&self, info: &BatchInfo) {
        self.batch_done(info);
        self.batches_failed.inc();
    }

    fn batch_done(&self, info: &BatchInfo) {
        let sched = info.scheduling_delay.as_secs_f64();
        let proc = info.processing_delay.unwrap_or_default().as_secs_f64();
        self.scheduling_delay.observe(sched);
        self.processing.observe(proc);
        self.total_delay.observe(sched + proc);
        match info.kind {
            BatchKind::Live => {}
            BatchKind::Replay => {
                self.batches_replayed.inc();
            }
            BatchKind::CatchUp => {
                self.batches_caught_up.inc();
            }
        }
        for (input, n) in &info.input_records {
            self.input_records
                .get_or_create(&vec![("input", input.clone())])
                .inc_by(*n);
        }
    }

    pub(crate) fn checkpoint(&self, info: &CheckpointInfo) {
        if info.error.is_some() {
            self.checkpoints_failed.inc();
            return;
        }
        self.checkpoints_completed.inc();
        self.checkpoint_duration
            .observe(info.duration.as_secs_f64());
        self.checkpoint_bytes.inc_by(info.bytes);
    }

    /// The Prometheus text format (OpenMetrics 1.0 text, which Prometheus reads).
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Scrape-time figures: what each input reported at this scrape, and the WAL counters.
#[derive(Debug)]
struct InputsCollector(InputsSnapshot);

fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> std::fmt::Result {
    let mut fam = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, m) in samples {
        m.encode(fam.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for InputsCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let inputs = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let by_input = |s: &InputStatus| vec![("input", s.name.clone())];
        family(
            &mut e,
            "sluice_receiver_buffered_bytes",
            "Bytes a receiver holds received and not yet processed",
            MetricType::Gauge,
            inputs
                .iter()
                .filter_map(|s| Some((by_input(s), ConstGauge::new(s.buffered_bytes? as i64)))),
        )?;
        family(
            &mut e,
            "sluice_input_dropped_oversized",
            "Records dropped for being over the maximum record size",
            MetricType::Counter,
            inputs
                .iter()
                .map(|s| (by_input(s), ConstCounter::new(s.dropped_oversized))),
        )?;
        family(
            &mut e,
            "sluice_input_lost_to_retention",
            "Records lost to a source's retention (a range the source no longer had)",
            MetricType::Counter,
            inputs
                .iter()
                .map(|s| (by_input(s), ConstCounter::new(s.lost_to_retention))),
        )?;
        family(
            &mut e,
            "sluice_input_restarts",
            "Times an input (receiver) was restarted after an error",
            MetricType::Counter,
            inputs
                .iter()
                .map(|s| (by_input(s), ConstCounter::new(s.restarts))),
        )?;
        family(
            &mut e,
            "sluice_kafka_lag",
            "High watermark minus the end of the latest batch's range, per partition",
            MetricType::Gauge,
            inputs.iter().flat_map(|s| {
                s.partitions.iter().filter_map(|p| {
                    let labels = vec![
                        ("input", s.name.clone()),
                        ("topic", p.topic.clone()),
                        ("partition", p.partition.to_string()),
                    ];
                    Some((labels, ConstGauge::new(p.lag?)))
                })
            }),
        )?;
        let wal = sluice_wal::stats::stats();
        family(
            &mut e,
            "sluice_wal_written_bytes",
            "Bytes committed to write-ahead logs (driver log, receiver WALs) by this process",
            MetricType::Counter,
            [(Labels::new(), ConstCounter::new(wal.bytes_written))],
        )?;
        family(
            &mut e,
            "sluice_wal_fsyncs",
            "Write-ahead-log commits made durable (fsync) by this process",
            MetricType::Counter,
            [(Labels::new(), ConstCounter::new(wal.syncs))],
        )?;
        Ok(())
    }
}
