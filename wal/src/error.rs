//! The WAL's error type.

use std::io;
use std::path::PathBuf;

use crate::Lsn;

/// Everything that can go wrong in the WAL. Variants that concern stored bytes name the
/// file (or object) and the byte offset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// An I/O error from the file system or object store.
    #[error("I/O error on {path}: {source}{hint}", hint = io_hint(source))]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An object-store error.
    #[error("object store error on {path}: {source}")]
    ObjectStore {
        path: String,
        #[source]
        source: object_store::Error,
    },
    /// A frame's CRC does not match its bytes.
    #[error("checksum mismatch in {path} at offset {offset}: stored {stored:#010x}, computed {computed:#010x}; the WAL is damaged there (open with RecoveryMode::PointInTime to drop everything from this record on)")]
    ChecksumMismatch {
        path: PathBuf,
        offset: u64,
        stored: u32,
        computed: u32,
    },
    /// Bytes that cannot be a valid WAL frame or header.
    #[error("corrupt WAL data in {path} at offset {offset}: {reason}")]
    Corruption {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// An earlier write or fsync failed; the log refuses further appends because the
    /// state of the unsynced bytes is unknown (a failed fsync is never retried).
    #[error("the WAL is poisoned by an earlier failure and accepts no more appends; reopen it to recover: {cause}")]
    Poisoned { cause: String },
    /// A record larger than the configured maximum.
    #[error("record of {len} bytes exceeds the maximum record size of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },
    /// The requested LSN is not in the log: already deleted, or not yet written.
    #[error("LSN {lsn} is not in the WAL (it holds {first}..{next})")]
    LsnOutOfRange { lsn: Lsn, first: Lsn, next: Lsn },
    /// A handle that does not point at a record of this WAL.
    #[error("invalid record handle: {0}")]
    BadHandle(String),
    /// A typed record that does not decode.
    #[error("record {lsn} does not decode as the expected type: {reason}")]
    Decode { lsn: Lsn, reason: String },
    /// A typed record that does not encode.
    #[error("record does not encode: {0}")]
    Encode(String),
    /// Invalid options.
    #[error("invalid WAL options: {0}")]
    InvalidOptions(String),
    /// The WAL has been closed.
    #[error("the WAL is closed")]
    Closed,
}

fn io_hint(e: &io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        " (the disk is full: free space, then reopen the WAL; nothing acknowledged was lost)"
    } else {
        ""
    }
}

impl WalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        WalError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The WAL's result type.
pub type Result<T, E = WalError> = std::result::Result<T, E>;
