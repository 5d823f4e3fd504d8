//! `sluice-wal`: a segmented, checksummed write-ahead log with group commit, on a local
//! directory or an object store.
//!
//! # What it guarantees
//!
//! * An append returns a [`Lsn`] (dense: 0, 1, 2, …, never reused, also across restarts
//!   and cleanup) and a [`RecordHandle`] for random reads.
//! * When an append is acknowledged depends on the [`Durability`] mode; each mode's docs
//!   say what survives a process crash and what survives power loss.
//! * A record is never returned wrong: every frame carries a CRC32 over its length and
//!   payload, checked on every read.
//! * On open, a torn final record (a write cut off by a crash, never acknowledged) is
//!   truncated and reported; any other damage stops with an error that names the file
//!   and byte offset, unless the caller chose a tolerant [`RecoveryMode`].
//! * A failed write or fsync poisons the log: every later append fails with
//!   [`WalError::Poisoned`] until the log is reopened (a failed fsync is never retried,
//!   as the kernel may have dropped the dirty pages).
//!
//! # On-disk format (version 1)
//!
//! A log is a directory (or object prefix) of segments named by their id, zero-padded
//! to 20 digits so names sort: `00000000000000000001.wal`. A segment is:
//!
//! ```text
//! header (40 bytes) = magic "SLUICEWL" | format version u32 = 1 | segment id u64
//!                     | first LSN u64 | created, unix ms u64 | CRC32 of the 36 bytes before
//! frame  (8+n bytes)= payload length n u32 | CRC32 of (length bytes ++ payload) u32 | payload
//! ```
//!
//! All integers little-endian. The LSN of a frame is the segment's first LSN plus the
//! frame's index. A length above [`format::MAX_RECORD_BYTES`] (256 MiB) is impossible
//! and reads as damage; [`WalOptions::max_record_bytes`] (default 16 MiB) bounds what
//! an append accepts.
//!
//! Segments roll when the next frame would take a segment past
//! [`WalOptions::segment_max_bytes`] (default 64 MiB), or at the first append after it
//! is [`WalOptions::segment_max_age`] old, and on every open. Creating or removing a
//! segment fsyncs the directory. On an object store every group commit is one new
//! immutable segment object, written with a conditional put.
//!
//! # Example
//!
//! ```
//! use sluice_wal::{Wal, WalOptions};
//! let dir = tempfile::tempdir().unwrap();
//! let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
//! let a = wal.append(b"hello").unwrap();
//! assert_eq!(wal.read(a.handle).unwrap(), b"hello");
//! let all: Vec<_> = wal.iter_from(a.lsn).unwrap().collect::<Result<_, _>>().unwrap();
//! assert_eq!(all, vec![(a.lsn, b"hello".to_vec())]);
//! ```

pub mod bench;
pub mod codec;
mod error;
pub mod format;
pub mod fs;
pub mod inspect;
mod local;
mod object;
pub mod objio;
pub mod stats;
mod typed;
mod wal;

use std::fmt;

pub use error::{Result, WalError};
pub use local::segment_file_name;
pub use typed::TypedWal;
pub use wal::{Appended, Durability, RecoveryMode, RecoveryReport, Wal, WalIter, WalOptions};

/// A log sequence number: the position of a record in the log, starting at 0.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The id of a segment (file or object); ids increase with time.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct SegmentId(pub u64);

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:020}", self.0)
    }
}

/// Where one record is stored: enough to read it back without a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RecordHandle {
    /// The record's LSN.
    pub lsn: Lsn,
    /// The segment holding it.
    pub segment: SegmentId,
    /// The byte offset of its frame in the segment.
    pub offset: u64,
    /// The payload length.
    pub len: u32,
}
