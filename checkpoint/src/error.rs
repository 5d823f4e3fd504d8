//! The checkpoint crate's error type.

use std::io;

/// Everything that can go wrong while storing or reading checkpoints and state
/// snapshots. Variants that concern stored bytes name the file or object (`path`, as the
/// backend spells it) and, where it matters, the byte offset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// An I/O error from the local file system or RocksDB.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// An object-store error (after retries, for transient ones).
    #[error("object store error on {path}: {source}")]
    ObjectStore {
        path: String,
        #[source]
        source: object_store::Error,
    },
    /// A RocksDB error.
    #[error("RocksDB error on {path}: {message}")]
    Rocks { path: String, message: String },
    /// The stored CRC does not match the bytes.
    #[error("checksum mismatch in {path} at offset {offset}: stored {stored:#010x}, computed {computed:#010x}; the file is damaged")]
    ChecksumMismatch {
        path: String,
        offset: u64,
        stored: u32,
        computed: u32,
    },
    /// Bytes that cannot be a valid checkpoint, chunk or manifest (bad magic, unknown
    /// version, truncated, wrong length).
    #[error("corrupt data in {path} at offset {offset}: {reason}")]
    Corruption {
        path: String,
        offset: u64,
        reason: String,
    },
    /// A checkpoint, manifest or chunk that should exist does not.
    #[error("{path} not found{hint}", hint = if hint.is_empty() { String::new() } else { format!(": {hint}") })]
    NotFound { path: String, hint: String },
    /// No checkpoint at the location reads back whole, and the caller did not ask to
    /// start fresh.
    #[error("no readable checkpoint at {location}: {detail}; to start without one, open with StartMode::FreshIfNone (this drops all state), or restore the damaged files")]
    NoReadableCheckpoint { location: String, detail: String },
    /// A bad location URL.
    #[error("invalid checkpoint location {url:?}: {reason}")]
    InvalidLocation { url: String, reason: String },
    /// A name that cannot be stored (operator names: ASCII letters, digits, `-`, `_`).
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    /// A value that does not encode or decode with bincode.
    #[error("serialization error: {0}")]
    Serialization(String),
    /// Invalid options or arguments.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The asynchronous writer is shut down or its worker died.
    #[error("the checkpoint writer is closed: {0}")]
    WriterClosed(String),
    /// The asynchronous writer's queue is full; the checkpoint was not queued.
    #[error("the checkpoint writer's queue is full ({capacity} pending); checkpoint {id} was not queued")]
    QueueFull {
        id: crate::CheckpointId,
        capacity: usize,
    },
}

impl CheckpointError {
    pub(crate) fn io(path: impl std::fmt::Display, source: io::Error) -> Self {
        CheckpointError::Io {
            path: path.to_string(),
            source,
        }
    }

    pub(crate) fn corruption(path: &str, offset: u64, reason: impl Into<String>) -> Self {
        CheckpointError::Corruption {
            path: path.to_owned(),
            offset,
            reason: reason.into(),
        }
    }

    /// True for damage to stored bytes (checksum, corruption, a missing file), as
    /// opposed to an I/O or configuration problem.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            CheckpointError::ChecksumMismatch { .. }
                | CheckpointError::Corruption { .. }
                | CheckpointError::NotFound { .. }
        )
    }
}

/// The crate's result type.
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;
