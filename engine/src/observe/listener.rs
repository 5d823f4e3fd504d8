//! Batch, checkpoint and restore events for monitoring: the one source of what the web
//! UI, `/api/*` and `/metrics` show.

use std::time::Duration;

use crate::BatchTime;

/// Why a batch runs: on the clock, or re-run after a restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BatchKind {
    /// A batch of the running clock.
    #[default]
    Live,
    /// Planned (or completed after the restored checkpoint) before a restart, re-run
    /// with the same inputs.
    Replay,
    /// A batch time the clock passed while the driver was down.
    CatchUp,
}

impl BatchKind {
    /// `live`, `replay` or `catch-up`.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchKind::Live => "live",
            BatchKind::Replay => "replay",
            BatchKind::CatchUp => "catch-up",
        }
    }
}

/// What is known about a batch when an event fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    /// The batch time.
    pub time: BatchTime,
    /// Records the inputs allocated to the batch.
    pub records: u64,
    /// How late the batch started relative to its time.
    pub scheduling_delay: Duration,
    /// How long its jobs took (set on completion).
    pub processing_delay: Option<Duration>,
    /// Live, replayed or caught up after a restart.
    pub kind: BatchKind,
    /// Records per input (by the input's name), in input order.
    pub input_records: Vec<(String, u64)>,
}

/// A checkpoint written, or one that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// The batch the checkpoint follows (also its id).
    pub time: BatchTime,
    /// When writing it started, in ms since the Unix epoch.
    pub started_at_ms: u64,
    /// How long writing it took (snapshots, metadata, cleanup).
    pub duration: Duration,
    /// Bytes written: state snapshot files and the metadata checkpoint.
    pub bytes: u64,
    /// Whether every state snapshot was written whole (`false`: incremental).
    pub full: bool,
    /// Where it was published (the metadata checkpoint's path or object).
    pub location: String,
    /// Why it failed (`None`: completed).
    pub error: Option<String>,
}

/// What a restart (`get_or_create`) decided, once per process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreInfo {
    /// The checkpoint restored (`None`: none; the driver log alone, or a first start).
    pub checkpoint: Option<BatchTime>,
    /// Where the restored checkpoint was read from (the checkpoint location when none
    /// was restored).
    pub location: String,
    /// Checkpoints set aside, newest first, with the reason.
    pub skipped: Vec<(BatchTime, String)>,
    /// Batches to re-run with their logged inputs.
    pub replayed_batches: u64,
    /// Batch times the clock passed while the driver was down.
    pub caught_up_batches: u64,
    /// The decision in words.
    pub decision: String,
}

/// Receives batch, checkpoint and restore events; every method has an empty default.
/// Methods are called on the scheduler thread and should return quickly.
pub trait StreamingListener: Send + Sync {
    /// The batch's inputs are fixed and its jobs are queued.
    fn on_batch_submitted(&self, _info: &BatchInfo) {}
    /// The batch's jobs started.
    fn on_batch_started(&self, _info: &BatchInfo) {}
    /// Every output of the batch finished.
    fn on_batch_completed(&self, _info: &BatchInfo) {}
    /// An output of the batch failed (the job stops with this error).
    fn on_batch_failed(&self, _info: &BatchInfo, _error: &str) {}
    /// A checkpoint was written, or failed (`info.error`).
    fn on_checkpoint(&self, _info: &CheckpointInfo) {}
    /// `get_or_create` found a checkpoint or a driver log and decided how to resume.
    fn on_restore(&self, _info: &RestoreInfo) {}
}
