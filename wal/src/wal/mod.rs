//! The log itself, over a [`Storage`] backend (local segment files or one object per
//! commit), split along its seams as raft-engine splits its pipe and reader:
//! `options` (what it promises), `storage` (where segments live), `writer` (appends
//! and group commit), `recovery` (open), `reader` (reads and iteration); this file
//! holds the shared state, opening, accessors and cleanup.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::format::{self, BadFrame, FRAME_HEADER_LEN, HEADER_LEN};
use crate::{Lsn, RecordHandle, Result, SegmentId, WalError};

mod options;
mod reader;
mod recovery;
mod storage;
mod writer;

pub use options::{Durability, RecoveryMode, RecoveryReport, WalOptions};
pub use reader::WalIter;
use recovery::recover;
pub(crate) use storage::{Chunk, Storage};
use writer::Syncer;

#[derive(Debug, Clone, Copy)]
struct SegMeta {
    first_lsn: Lsn,
    created_ms: u64,
}

#[derive(Debug)]
struct State {
    next_lsn: Lsn,
    /// Chunks appended but not yet handed to storage.
    queue: Vec<Chunk>,
    /// Records below this LSN have been written to storage.
    written: Lsn,
    /// Records below this LSN are durable.
    durable: Lsn,
    /// A commit is in flight.
    leader: bool,
    poisoned: Option<String>,
    closed: bool,
    /// The next append starts a new segment.
    needs_roll: bool,
    active_offset: u64,
    /// Every live segment, the newest last.
    segments: BTreeMap<SegmentId, SegMeta>,
}

#[derive(Debug)]
struct Inner {
    storage: Box<dyn Storage>,
    opts: WalOptions,
    state: Mutex<State>,
    cond: Condvar,
    report: RecoveryReport,
}

/// A segmented write-ahead log. Cheap to clone; clones share the log. Appends may come
/// from many threads at once.
#[derive(Debug, Clone)]
pub struct Wal {
    inner: Arc<Inner>,
    _syncer: Option<Arc<Syncer>>,
}

/// The result of an append: the record's LSN and where it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub lsn: Lsn,
    pub handle: RecordHandle,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn frame_error(storage: &dyn Storage, seg: SegmentId, offset: u64, bad: &BadFrame) -> WalError {
    let path = storage.location(seg);
    match bad {
        BadFrame::ChecksumMismatch { stored, computed } => WalError::ChecksumMismatch {
            path,
            offset,
            stored: *stored,
            computed: *computed,
        },
        other => WalError::Corruption {
            path,
            offset,
            reason: other.to_string(),
        },
    }
}

impl Wal {
    pub(crate) fn open_storage(storage: Box<dyn Storage>, opts: WalOptions) -> Result<Wal> {
        if opts.max_record_bytes > format::MAX_RECORD_BYTES {
            return Err(WalError::InvalidOptions(format!(
                "max_record_bytes {} exceeds the format limit {}",
                opts.max_record_bytes,
                format::MAX_RECORD_BYTES
            )));
        }
        if opts.segment_max_bytes < (HEADER_LEN + FRAME_HEADER_LEN) as u64 {
            return Err(WalError::InvalidOptions(format!(
                "segment_max_bytes {} is smaller than a header and one frame",
                opts.segment_max_bytes
            )));
        }
        let (segments, next_lsn, report) = recover(storage.as_ref(), &opts)?;
        for (path, offset, dropped, why) in &report.truncated {
            tracing::warn!(path = %path.display(), offset, dropped, "WAL recovery truncated a segment: {why}");
        }
        for path in &report.removed_unfinished {
            tracing::warn!(path = %path.display(), "WAL recovery removed a segment whose header was never completed");
        }
        for path in &report.discarded {
            tracing::warn!(path = %path.display(), "WAL recovery (point-in-time) set a segment aside");
        }
        let state = State {
            next_lsn,
            queue: Vec::new(),
            written: next_lsn,
            durable: next_lsn,
            leader: false,
            poisoned: None,
            closed: false,
            needs_roll: true,
            active_offset: 0,
            segments,
        };
        let inner = Arc::new(Inner {
            storage,
            opts,
            state: Mutex::new(state),
            cond: Condvar::new(),
            report,
        });
        let syncer = match inner.opts.durability {
            Durability::Interval(every) => Some(Arc::new(Syncer::start(inner.clone(), every))),
            _ => None,
        };
        Ok(Wal {
            inner,
            _syncer: syncer,
        })
    }

    /// What recovery found and did when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// The options this log runs with.
    pub fn options(&self) -> &WalOptions {
        &self.inner.opts
    }

    /// Records below this LSN survive power loss.
    pub fn durable_lsn(&self) -> Lsn {
        lock(&self.inner.state).durable
    }

    /// The LSN the next append will get.
    pub fn next_lsn(&self) -> Lsn {
        lock(&self.inner.state).next_lsn
    }

    /// The oldest LSN still in the log.
    pub fn first_lsn(&self) -> Lsn {
        let st = lock(&self.inner.state);
        self.first_lsn_locked(&st)
    }

    fn first_lsn_locked(&self, st: &State) -> Lsn {
        st.segments
            .values()
            .next()
            .map_or(st.next_lsn, |m| m.first_lsn)
    }

    /// The live segments and the first LSN of each, oldest first.
    pub fn segments(&self) -> Vec<(SegmentId, Lsn)> {
        lock(&self.inner.state)
            .segments
            .iter()
            .map(|(id, m)| (*id, m.first_lsn))
            .collect()
    }

    /// Where a segment is stored.
    pub fn segment_location(&self, seg: SegmentId) -> PathBuf {
        self.inner.storage.location(seg)
    }

    /// Deletes every sealed segment whose records are all below `lsn`. The newest segment
    /// is never deleted. Returns how many segments were deleted.
    pub fn delete_before(&self, lsn: Lsn) -> Result<usize> {
        self.delete_where(|_, next| next.first_lsn <= lsn)
    }

    /// Deletes every sealed segment that was sealed (its successor created) at or before
    /// `time`. The newest segment is never deleted. Returns how many were deleted.
    pub fn delete_older_than(&self, time: SystemTime) -> Result<usize> {
        let t = time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.delete_where(|_, next| next.created_ms <= t)
    }

    fn delete_where(&self, doomed: impl Fn(&SegMeta, &SegMeta) -> bool) -> Result<usize> {
        let ids: Vec<SegmentId> = {
            let mut st = lock(&self.inner.state);
            let metas: Vec<(SegmentId, SegMeta)> =
                st.segments.iter().map(|(k, v)| (*k, *v)).collect();
            if let Some(cause) = &st.poisoned {
                return Err(WalError::Poisoned {
                    cause: cause.clone(),
                });
            }
            // A segment is deleted only once its successor holds an acknowledged record:
            // until then the successor may vanish in a crash, and with it the only record
            // of where the log's LSNs stand.
            let acked = if self.inner.opts.durability.syncs_each_commit() {
                st.durable
            } else {
                st.written
            };
            let ids: Vec<SegmentId> = metas
                .windows(2)
                .take_while(|w| w[1].1.first_lsn < acked && doomed(&w[0].1, &w[1].1))
                .map(|w| w[0].0)
                .collect();
            for id in &ids {
                st.segments.remove(id);
            }
            ids
        };
        if !ids.is_empty() {
            self.inner.storage.delete(&ids)?;
        }
        Ok(ids.len())
    }

    /// Commits what is queued, fsyncs (except under `NoSync`), and refuses further appends.
    pub fn close(&self) -> Result<()> {
        let res = if self.inner.opts.durability == Durability::NoSync {
            let next = self.next_lsn();
            if next.0 > 0 {
                self.wait(Lsn(next.0 - 1))
            } else {
                Ok(())
            }
        } else {
            self.sync()
        };
        lock(&self.inner.state).closed = true;
        res
    }
}
