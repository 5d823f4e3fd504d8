//! What a log promises: its durability mode, its recovery mode, its options, and the
//! report of what recovery did on open.

use std::path::PathBuf;
use std::time::Duration;

/// When an append counts as done, and what survives which crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every append returns only after an `fdatasync` that covers its record.
    /// Survives a process crash and power loss. Appends that arrive while an fsync is in
    /// flight share the next one; no append ever waits on purpose.
    PerAppend,
    /// Group commit: like `PerAppend`, but the appender that leads a commit first waits up
    /// to `max_wait` for more appenders to join, so many records share one fsync.
    /// Survives a process crash and power loss; the price is up to `max_wait` of latency.
    GroupCommit {
        /// How long a commit leader waits for company (zero: only natural batching).
        max_wait: Duration,
    },
    /// Appends return once written to the operating system; a background thread fsyncs
    /// every `interval`. Survives a process crash; power loss may drop the records of the
    /// last `interval` (see [`Wal::durable_lsn`]).
    Interval(Duration),
    /// Never fsync. Survives a process crash (the bytes are in the OS page cache); power
    /// loss may drop or tear anything not yet written back by the OS.
    NoSync,
}

impl Durability {
    pub(super) fn syncs_each_commit(self) -> bool {
        matches!(self, Durability::PerAppend | Durability::GroupCommit { .. })
    }
}

/// What recovery on open does with bytes that are not valid frames (after RocksDB's
/// WAL recovery modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Any bad byte is an error, even a torn tail. For logs that were always fsynced and
    /// where a torn tail would itself mean a broken disk.
    AbsoluteConsistency,
    /// A torn tail of the newest segment (a final frame cut short, or bad bytes that no
    /// valid frame follows) is truncated and reported: such a frame was never
    /// acknowledged. A bad frame anywhere else is an error naming the file and offset.
    #[default]
    TolerateTornTail,
    /// Recovery stops at the first bad frame in any segment: that segment is truncated
    /// there and every later segment is set aside (renamed `*.discarded` locally,
    /// reported). Use it to get a damaged log running again; it can drop acknowledged
    /// records, and says which.
    PointInTime,
}

/// Options of a [`Wal`].
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// When an append is acknowledged.
    pub durability: Durability,
    /// What recovery does with damage it finds on open.
    pub recovery: RecoveryMode,
    /// A segment is sealed and a new one started once it would grow past this size.
    pub segment_max_bytes: u64,
    /// A segment is sealed at the first append after it is this old.
    pub segment_max_age: Option<Duration>,
    /// The largest record accepted (at most [`format::MAX_RECORD_BYTES`]).
    pub max_record_bytes: usize,
    /// Verify every frame of every segment on open, not only the newest segment's.
    pub verify_on_open: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            durability: Durability::GroupCommit {
                max_wait: Duration::ZERO,
            },
            recovery: RecoveryMode::default(),
            segment_max_bytes: 64 << 20,
            segment_max_age: Some(Duration::from_secs(600)),
            max_record_bytes: 16 << 20,
            verify_on_open: false,
        }
    }
}

/// What recovery found and did on open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments whose tail was cut: `(location, offset cut at, bytes dropped, why)`.
    pub truncated: Vec<(PathBuf, u64, u64, String)>,
    /// Newest segments removed because their header never made it to disk.
    pub removed_unfinished: Vec<PathBuf>,
    /// Segments set aside by [`RecoveryMode::PointInTime`].
    pub discarded: Vec<PathBuf>,
}

impl RecoveryReport {
    /// True when recovery changed nothing.
    pub fn is_clean(&self) -> bool {
        *self == RecoveryReport::default()
    }
}
