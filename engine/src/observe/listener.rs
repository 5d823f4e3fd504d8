//! Batch events for monitoring.

use std::time::Duration;

use crate::BatchTime;

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
}

/// Receives batch events; every method has an empty default.
pub trait StreamingListener: Send + Sync {
    /// The batch's inputs are fixed and its jobs are queued.
    fn on_batch_submitted(&self, _info: &BatchInfo) {}
    /// The batch's jobs started.
    fn on_batch_started(&self, _info: &BatchInfo) {}
    /// Every output of the batch finished.
    fn on_batch_completed(&self, _info: &BatchInfo) {}
}
