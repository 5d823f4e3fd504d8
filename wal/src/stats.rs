//! Process-wide counters of what every log in this process wrote, for metrics
//! (`sluice_wal_bytes_written_total`, `sluice_wal_fsyncs_total`). Relaxed atomics: one
//! add per commit, never on the append path.

use std::sync::atomic::{AtomicU64, Ordering};

static BYTES_WRITTEN: AtomicU64 = AtomicU64::new(0);
static SYNCS: AtomicU64 = AtomicU64::new(0);

/// What the logs of this process have written so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Bytes committed (frames and segment headers) by every log of this process.
    pub bytes_written: u64,
    /// Commits made durable with an fsync (or an object put that is durable at once).
    pub syncs: u64,
}

/// The counters now.
pub fn stats() -> WalStats {
    WalStats {
        bytes_written: BYTES_WRITTEN.load(Ordering::Relaxed),
        syncs: SYNCS.load(Ordering::Relaxed),
    }
}

pub(crate) fn committed(bytes: u64, synced: bool) {
    BYTES_WRITTEN.fetch_add(bytes, Ordering::Relaxed);
    if synced {
        SYNCS.fetch_add(1, Ordering::Relaxed);
    }
}
