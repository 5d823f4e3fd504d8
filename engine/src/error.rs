//! The engine's error type.

use std::time::Duration;

/// Everything that can go wrong defining or running a streaming job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// An operation that must come before `start` came after it.
    #[error("cannot {what} after the context has started: define the whole graph before start()")]
    AfterStart { what: &'static str },
    /// `start` on a running context.
    #[error("the context is already started")]
    AlreadyStarted,
    /// `start` (or anything else) on a stopped context.
    #[error("the context has been stopped; create a new StreamingContext to run again")]
    Stopped,
    /// An operation that needs a running context.
    #[error("the context has not been started")]
    NotStarted,
    /// A second active context in one process.
    #[error("another StreamingContext is active in this process (app {other:?}); stop it first")]
    AnotherContextActive { other: String },
    /// `start` on a graph without outputs.
    #[error("the graph has no output operation (print, foreach_batch, save_as_text_files, …), so nothing would run")]
    NoOutputs,
    /// A duration that is not a positive multiple of the batch interval.
    #[error("{what} of {duration:?} is not a positive multiple of the batch interval {batch:?}")]
    NotMultipleOfBatch {
        what: &'static str,
        duration: Duration,
        batch: Duration,
    },
    /// Invalid configuration, naming the setting.
    #[error("invalid configuration {setting}: {reason}")]
    Config { setting: String, reason: String },
    /// A stateful operator needs a unique, non-empty name.
    #[error("invalid operator name {name:?}: {reason}")]
    OperatorName { name: String, reason: String },
    /// I/O on a named path or address.
    #[error("I/O error on {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The write-ahead log failed.
    #[error(transparent)]
    Wal(#[from] sluice_wal::WalError),
    /// A record that could not be read (a malformed input line, a bad file).
    #[error("malformed input in {source_name}: {reason}")]
    Malformed { source_name: String, reason: String },
    /// The checkpoint store failed (names the location and cause).
    #[error(transparent)]
    Checkpoint(#[from] sluice_checkpoint::CheckpointError),
    /// The rebuilt graph cannot resume from the checkpoint; lists every difference.
    #[error("the job's graph changed incompatibly since its checkpoint:\n  - {}\nRevert the change, point the job at a new checkpoint location, or set drop_incompatible_state (SLUICE_DROP_INCOMPATIBLE_STATE=true) to drop the affected state", differences.join("\n  - "))]
    IncompatibleGraph { differences: Vec<String> },
    /// A restart needs to replay an input that cannot replay.
    #[error("input {input} cannot replay a logged batch (enable the receiver WAL or use a replayable source)")]
    NotReplayable { input: String },
    /// A receiver can no longer store what it receives (its write-ahead log failed):
    /// the job stops so that a restart recovers the log.
    #[error("{0}; stopping the job so a restart recovers it")]
    ReceiverFailed(String),
    /// An input failed (a Kafka broker that does not answer, an unknown topic, a
    /// range lost to retention); names the input and says what happened.
    #[error("input {input}: {reason}")]
    Source { input: String, reason: String },
    /// A user function or sink returned an error.
    #[error("{0}")]
    User(String),
    /// A batch failed; names the batch time and the output.
    #[error("batch {time} failed in {output}: {cause}")]
    Batch {
        time: crate::BatchTime,
        output: String,
        cause: Box<EngineError>,
    },
}

impl EngineError {
    /// An I/O error while doing `what` (a path, a connection, …).
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        EngineError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
