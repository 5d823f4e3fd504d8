//! The log itself: LSN assignment, group commit, recovery, reads and cleanup, over a
//! [`Storage`] backend (local segment files or one object per commit).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::format::{self, BadFrame, SegmentHeader, FRAME_HEADER_LEN, HEADER_LEN};
use crate::{Lsn, RecordHandle, Result, SegmentId, WalError};

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
    fn syncs_each_commit(self) -> bool {
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

/// A run of bytes to write to one segment.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub segment: SegmentId,
    /// The chunk starts a new segment (its bytes begin with the header).
    pub create: bool,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// A place the log's segments live.
pub(crate) trait Storage: Send + Sync + std::fmt::Debug + 'static {
    /// A printable location for a segment (file path or object path).
    fn location(&self, seg: SegmentId) -> PathBuf;
    /// The segments present, in any order.
    fn list(&self) -> Result<Vec<SegmentId>>;
    /// A whole segment.
    fn read_all(&self, seg: SegmentId) -> Result<Vec<u8>>;
    /// `len` bytes at `offset` of a segment (fewer at its end).
    fn read_at(&self, seg: SegmentId, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// Writes the chunks in order; with `sync`, makes them durable before returning.
    fn commit(&self, chunks: Vec<Chunk>, sync: bool) -> Result<()>;
    /// Makes everything written so far durable.
    fn sync(&self) -> Result<()>;
    /// Makes one segment's current content durable (recovery).
    fn sync_segment(&self, seg: SegmentId) -> Result<()>;
    /// Cuts a segment to `len` bytes, durably (recovery).
    fn truncate(&self, seg: SegmentId, len: u64) -> Result<()>;
    /// Sets a segment aside so it is no longer part of the log, durably (recovery).
    fn discard(&self, seg: SegmentId) -> Result<PathBuf>;
    /// Deletes segments, durably.
    fn delete(&self, segs: &[SegmentId]) -> Result<()>;
    /// Whether every commit must go to a new segment (immutable objects).
    fn roll_each_commit(&self) -> bool;
}

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

    /// Appends one record and returns once it is acknowledged under the log's
    /// [`Durability`].
    pub fn append(&self, payload: &[u8]) -> Result<Appended> {
        let a = self.submit(payload)?;
        self.wait(a.lsn)?;
        Ok(a)
    }

    /// Appends several records, contiguous and in order; returns once all are
    /// acknowledged. One commit (one fsync) covers them when they fit one segment.
    pub fn append_batch<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<Vec<Appended>> {
        let mut st = self.lock_for_append()?;
        let mut out = Vec::with_capacity(payloads.len());
        for p in payloads {
            out.push(self.enqueue(&mut st, p.as_ref())?);
        }
        drop(st);
        if let Some(last) = out.last() {
            self.wait(last.lsn)?;
        }
        Ok(out)
    }

    /// Queues a record without waiting; [`Wal::wait`] on its LSN (or a later one) to
    /// know it is acknowledged. Lets one writer keep many appends in flight. A record is
    /// not acknowledged, and must not be treated as stored, until a wait returns.
    pub fn submit(&self, payload: &[u8]) -> Result<Appended> {
        let mut st = self.lock_for_append()?;
        self.enqueue(&mut st, payload)
    }

    fn lock_for_append(&self) -> Result<MutexGuard<'_, State>> {
        let st = lock(&self.inner.state);
        if let Some(cause) = &st.poisoned {
            return Err(WalError::Poisoned {
                cause: cause.clone(),
            });
        }
        if st.closed {
            return Err(WalError::Closed);
        }
        Ok(st)
    }

    fn enqueue(&self, st: &mut State, payload: &[u8]) -> Result<Appended> {
        let opts = &self.inner.opts;
        if payload.len() > opts.max_record_bytes {
            return Err(WalError::RecordTooLarge {
                len: payload.len(),
                max: opts.max_record_bytes,
            });
        }
        let frame_len = (FRAME_HEADER_LEN + payload.len()) as u64;
        let now = now_ms();
        let roll =
            st.needs_roll
                || (st.active_offset > HEADER_LEN as u64
                    && st.active_offset + frame_len > opts.segment_max_bytes)
                || opts.segment_max_age.is_some_and(|age| {
                    st.active_offset > HEADER_LEN as u64
                        && st.segments.values().next_back().is_some_and(|m| {
                            now.saturating_sub(m.created_ms) >= age.as_millis() as u64
                        })
                });
        if roll {
            let id = st
                .segments
                .keys()
                .next_back()
                .map_or(SegmentId(1), |s| SegmentId(s.0 + 1));
            let header = SegmentHeader {
                segment: id,
                first_lsn: st.next_lsn,
                created_ms: now,
            };
            st.segments.insert(
                id,
                SegMeta {
                    first_lsn: st.next_lsn,
                    created_ms: now,
                },
            );
            st.queue.push(Chunk {
                segment: id,
                create: true,
                offset: 0,
                bytes: header.encode().to_vec(),
            });
            st.active_offset = HEADER_LEN as u64;
            st.needs_roll = false;
        }
        let (&segment, _) = st
            .segments
            .iter()
            .next_back()
            .ok_or_else(|| WalError::BadHandle("no active segment".into()))?;
        let offset = st.active_offset;
        match st.queue.last_mut() {
            Some(c) if c.segment == segment => {
                // A large frame grows the chunk by its size, not by doubling it, which
                // would leave up to the chunk's size allocated and unused.
                if frame_len >= 1 << 16 {
                    c.bytes.reserve_exact(frame_len as usize);
                }
                format::encode_frame(payload, &mut c.bytes)
            }
            _ => {
                let mut bytes = Vec::with_capacity(frame_len as usize);
                format::encode_frame(payload, &mut bytes);
                st.queue.push(Chunk {
                    segment,
                    create: false,
                    offset,
                    bytes,
                });
            }
        }
        let lsn = st.next_lsn;
        st.next_lsn = Lsn(lsn.0 + 1);
        st.active_offset += frame_len;
        Ok(Appended {
            lsn,
            handle: RecordHandle {
                lsn,
                segment,
                offset,
                len: payload.len() as u32,
            },
        })
    }

    /// Waits until the record `lsn` (and every record before it) is acknowledged under the
    /// log's [`Durability`]: durable for `PerAppend`/`GroupCommit`, written for the others.
    /// The caller may find itself leading the commit that writes it.
    pub fn wait(&self, lsn: Lsn) -> Result<()> {
        let durable = self.inner.opts.durability.syncs_each_commit();
        let target = Lsn(lsn.0 + 1);
        let mut st = lock(&self.inner.state);
        loop {
            let reached = if durable { st.durable } else { st.written };
            if reached >= target {
                return Ok(());
            }
            if let Some(cause) = &st.poisoned {
                return Err(WalError::Poisoned {
                    cause: cause.clone(),
                });
            }
            if st.next_lsn < target {
                return Err(WalError::LsnOutOfRange {
                    lsn,
                    first: self.first_lsn_locked(&st),
                    next: st.next_lsn,
                });
            }
            if st.leader {
                st = self.inner.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st = self.lead_commit(st)?;
        }
    }

    /// Runs one commit as its leader; returns the re-taken lock.
    fn lead_commit<'a>(&'a self, mut st: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>> {
        st.leader = true;
        if let Durability::GroupCommit { max_wait } = self.inner.opts.durability {
            if !max_wait.is_zero() {
                drop(st);
                std::thread::sleep(max_wait);
                st = lock(&self.inner.state);
            }
        }
        let chunks = std::mem::take(&mut st.queue);
        let end = st.next_lsn;
        if self.inner.storage.roll_each_commit() {
            st.needs_roll = true;
        }
        drop(st);
        let sync = self.inner.opts.durability.syncs_each_commit();
        // Rule: a record is acknowledged only after the commit that holds it returned,
        // and, under PerAppend/GroupCommit, after that commit's fsync (storage.commit
        // syncs the data, and the directory when it created a segment).
        let res = if chunks.is_empty() {
            Ok(())
        } else {
            self.inner.storage.commit(chunks, sync)
        };
        let mut st = lock(&self.inner.state);
        st.leader = false;
        match res {
            Ok(()) => {
                st.written = st.written.max(end);
                if sync {
                    st.durable = st.durable.max(end);
                }
            }
            Err(e) => {
                // Rule: never retry a failed write or fsync: the kernel may have dropped
                // the dirty pages, so a retry could report success for lost bytes.
                tracing::error!("WAL commit failed, the log is poisoned: {e}");
                st.poisoned = Some(e.to_string());
            }
        }
        self.inner.cond.notify_all();
        Ok(st)
    }

    /// Writes and fsyncs everything appended so far, whatever the durability mode.
    pub fn sync(&self) -> Result<()> {
        let next = lock(&self.inner.state).next_lsn;
        if next.0 > 0 {
            let mut st = lock(&self.inner.state);
            while st.written < next {
                if let Some(cause) = &st.poisoned {
                    return Err(WalError::Poisoned {
                        cause: cause.clone(),
                    });
                }
                if st.leader {
                    st = self.inner.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                } else {
                    st = self.lead_commit(st)?;
                }
            }
        }
        self.sync_written()
    }

    /// Makes what has been written durable (the interval syncer's step).
    fn sync_written(&self) -> Result<()> {
        let target = {
            let st = lock(&self.inner.state);
            if let Some(cause) = &st.poisoned {
                return Err(WalError::Poisoned {
                    cause: cause.clone(),
                });
            }
            if st.durable >= st.written {
                return Ok(());
            }
            st.written
        };
        // Rule: fsync before advancing the durable LSN that callers may rely on.
        let res = self.inner.storage.sync();
        let mut st = lock(&self.inner.state);
        match res {
            Ok(()) => {
                st.durable = st.durable.max(target);
                Ok(())
            }
            Err(e) => {
                st.poisoned = Some(e.to_string());
                self.inner.cond.notify_all();
                Err(e)
            }
        }
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

    /// Reads one record by its handle, verifying its CRC.
    pub fn read(&self, handle: RecordHandle) -> Result<Vec<u8>> {
        {
            let st = lock(&self.inner.state);
            if handle.lsn >= st.written {
                return Err(WalError::LsnOutOfRange {
                    lsn: handle.lsn,
                    first: self.first_lsn_locked(&st),
                    next: st.written,
                });
            }
            if !st.segments.contains_key(&handle.segment) {
                return Err(WalError::LsnOutOfRange {
                    lsn: handle.lsn,
                    first: self.first_lsn_locked(&st),
                    next: st.written,
                });
            }
        }
        let storage = self.inner.storage.as_ref();
        let want = FRAME_HEADER_LEN + handle.len as usize;
        let bytes = storage.read_at(handle.segment, handle.offset, want)?;
        let (payload, _) = format::decode_frame(&bytes)
            .map_err(|bad| frame_error(storage, handle.segment, handle.offset, &bad))?;
        if payload.len() != handle.len as usize {
            return Err(WalError::BadHandle(format!(
                "{handle:?} points at a record of {} bytes in {}",
                payload.len(),
                storage.location(handle.segment).display()
            )));
        }
        Ok(payload.to_vec())
    }

    /// Iterates over the records from `from` (inclusive) to the last record written when
    /// the iterator was made. Every frame's CRC is checked; a bad one ends the iteration
    /// with an error naming the file and offset.
    pub fn iter_from(&self, from: Lsn) -> Result<WalIter> {
        let st = lock(&self.inner.state);
        let first = self.first_lsn_locked(&st);
        if from < first || from > st.written {
            return Err(WalError::LsnOutOfRange {
                lsn: from,
                first,
                next: st.written,
            });
        }
        // Only segments holding at least one written record exist in storage.
        let segs: Vec<(SegmentId, Lsn)> = st
            .segments
            .iter()
            .filter(|(_, m)| m.first_lsn < st.written)
            .map(|(id, m)| (*id, m.first_lsn))
            .collect();
        // Start at the last segment whose first LSN is at or before `from`.
        let start = segs.iter().rposition(|(_, f)| *f <= from).unwrap_or(0);
        Ok(WalIter {
            wal: self.clone(),
            segs: segs[start..].to_vec(),
            next_seg: 0,
            end: st.written,
            from,
            buf: Vec::new(),
            pos: 0,
            lsn: Lsn(0),
            seg_end_lsn: Lsn(0),
            current: None,
            failed: false,
        })
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

/// Recovery: reads what storage holds and decides where the log ends.
fn recover(
    storage: &dyn Storage,
    opts: &WalOptions,
) -> Result<(BTreeMap<SegmentId, SegMeta>, Lsn, RecoveryReport)> {
    let mut ids = storage.list()?;
    ids.sort();
    let mut report = RecoveryReport::default();
    let mut segments = BTreeMap::new();
    let mut next_lsn = Lsn(0);
    let scan_all = opts.verify_on_open || opts.recovery == RecoveryMode::PointInTime;
    let tolerate_tail = opts.recovery != RecoveryMode::AbsoluteConsistency;
    // A newest segment shorter than a header (or all zero) is one whose creation was cut
    // off by a crash: it never held an acknowledged record, so it goes.
    while let Some(&last) = ids.last() {
        let head = storage.read_at(last, 0, HEADER_LEN)?;
        let unfinished = head.len() < HEADER_LEN || head.iter().all(|b| *b == 0);
        if !(tolerate_tail && unfinished) {
            break;
        }
        storage.delete(&[last])?;
        report.removed_unfinished.push(storage.location(last));
        ids.pop();
    }
    let mut i = 0;
    while i < ids.len() {
        let id = ids[i];
        let newest = i + 1 == ids.len();
        let path = storage.location(id);
        let data = if newest || scan_all {
            storage.read_all(id)?
        } else {
            storage.read_at(id, 0, HEADER_LEN)?
        };
        let header = SegmentHeader::decode(&data).map_err(|reason| WalError::Corruption {
            path: path.clone(),
            offset: 0,
            reason,
        })?;
        if header.segment != id {
            return Err(WalError::Corruption {
                path,
                offset: 0,
                reason: format!(
                    "header names segment {} but the file is {}",
                    header.segment, id
                ),
            });
        }
        if header.first_lsn < next_lsn {
            return Err(WalError::Corruption {
                path,
                offset: 0,
                reason: format!(
                    "first LSN {} overlaps the previous segment, which ends at {}",
                    header.first_lsn, next_lsn
                ),
            });
        }
        if scan_all && !segments.is_empty() && header.first_lsn != next_lsn {
            return Err(WalError::Corruption {
                path,
                offset: 0,
                reason: format!(
                    "first LSN {} does not follow the previous segment, which ends at {} (a segment is missing)",
                    header.first_lsn, next_lsn
                ),
            });
        }
        segments.insert(
            id,
            SegMeta {
                first_lsn: header.first_lsn,
                created_ms: header.created_ms,
            },
        );
        next_lsn = header.first_lsn;
        if newest || scan_all {
            let scan = format::scan_frames(&data[HEADER_LEN..]);
            next_lsn = Lsn(header.first_lsn.0 + scan.frames.len() as u64);
            if let Some(stop) = scan.stop {
                let offset = (HEADER_LEN + stop.offset) as u64;
                let cut = (newest && tolerate_tail && stop.tail)
                    || opts.recovery == RecoveryMode::PointInTime;
                if !cut {
                    return Err(frame_error(storage, id, offset, &stop.bad));
                }
                // Rule: cut the bad tail and make the cut durable before any new record
                // can be appended after it.
                storage.truncate(id, offset)?;
                report.truncated.push((
                    path,
                    offset,
                    data.len() as u64 - offset,
                    stop.bad.to_string(),
                ));
                if !newest {
                    // PointInTime: everything after the first damage is set aside.
                    for later in &ids[i + 1..] {
                        report.discarded.push(storage.discard(*later)?);
                    }
                    break;
                }
            }
        }
        i += 1;
    }
    // Rule: what recovery found is what later records build on, so it must be durable
    // before anything is appended: after a process crash, the tail of a segment may sit
    // in the page cache unsynced (its fsync failed or never ran), and power loss would
    // then open a hole below records acknowledged later.
    // The same holds for their directory entries (a segment created just before the
    // crash may never have had its directory synced).
    for id in segments.keys() {
        storage.sync_segment(*id)?;
    }
    storage.sync()?;
    Ok((segments, next_lsn, report))
}

/// An iterator over `(Lsn, payload)`; see [`Wal::iter_from`].
#[derive(Debug)]
pub struct WalIter {
    wal: Wal,
    segs: Vec<(SegmentId, Lsn)>,
    next_seg: usize,
    end: Lsn,
    from: Lsn,
    buf: Vec<u8>,
    pos: usize,
    lsn: Lsn,
    seg_end_lsn: Lsn,
    current: Option<SegmentId>,
    failed: bool,
}

impl WalIter {
    fn load_next_segment(&mut self) -> Result<bool> {
        let Some(&(id, first)) = self.segs.get(self.next_seg) else {
            return Ok(false);
        };
        let seg_end = self
            .segs
            .get(self.next_seg + 1)
            .map_or(self.end, |(_, f)| *f)
            .min(self.end);
        self.next_seg += 1;
        let storage = self.wal.inner.storage.as_ref();
        self.buf = storage.read_all(id)?;
        let header = SegmentHeader::decode(&self.buf).map_err(|reason| WalError::Corruption {
            path: storage.location(id),
            offset: 0,
            reason,
        })?;
        if header.first_lsn != first {
            return Err(WalError::Corruption {
                path: storage.location(id),
                offset: 0,
                reason: format!(
                    "header says first LSN {}, expected {}",
                    header.first_lsn, first
                ),
            });
        }
        self.pos = HEADER_LEN;
        self.lsn = first;
        self.seg_end_lsn = seg_end;
        self.current = Some(id);
        Ok(true)
    }

    fn next_record(&mut self) -> Result<Option<(RecordHandle, Vec<u8>)>> {
        loop {
            if self.current.is_some() && self.lsn < self.seg_end_lsn {
                let id = self.current.unwrap_or(SegmentId(0));
                let storage = self.wal.inner.storage.as_ref();
                if self.pos >= self.buf.len() {
                    return Err(WalError::Corruption {
                        path: storage.location(id),
                        offset: self.pos as u64,
                        reason: format!(
                            "segment ends before record {} (expected records up to {})",
                            self.lsn, self.seg_end_lsn
                        ),
                    });
                }
                let (payload, total) = format::decode_frame(&self.buf[self.pos..])
                    .map_err(|bad| frame_error(storage, id, self.pos as u64, &bad))?;
                let lsn = self.lsn;
                let out = payload.to_vec();
                let handle = RecordHandle {
                    lsn,
                    segment: id,
                    offset: self.pos as u64,
                    len: out.len() as u32,
                };
                self.pos += total;
                self.lsn = Lsn(lsn.0 + 1);
                if lsn >= self.from {
                    return Ok(Some((handle, out)));
                }
                continue;
            }
            if self.lsn >= self.end && self.current.is_some() {
                return Ok(None);
            }
            if !self.load_next_segment()? {
                return Ok(None);
            }
        }
    }

    /// The next record with its handle (for random reads later), instead of its LSN.
    pub fn next_with_handle(&mut self) -> Option<Result<(RecordHandle, Vec<u8>)>> {
        if self.failed {
            return None;
        }
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl Iterator for WalIter {
    type Item = Result<(Lsn, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_with_handle()
            .map(|r| r.map(|(handle, payload)| (handle.lsn, payload)))
    }
}

/// The background fsync of [`Durability::Interval`].
#[derive(Debug)]
struct Syncer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    fn start(inner: Arc<Inner>, every: Duration) -> Syncer {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = stop.clone();
        let weak = Arc::downgrade(&inner);
        drop(inner);
        let thread = std::thread::Builder::new()
            .name("sluice-wal-sync".into())
            .spawn(move || loop {
                let (m, c) = &*stop2;
                let guard = m.lock().unwrap_or_else(|e| e.into_inner());
                let (guard, _) = c
                    .wait_timeout(guard, every)
                    .unwrap_or_else(|e| e.into_inner());
                if *guard {
                    return;
                }
                drop(guard);
                let Some(inner) = weak.upgrade() else { return };
                let wal = Wal {
                    inner,
                    _syncer: None,
                };
                if let Err(e) = wal.sync_written() {
                    tracing::error!("WAL interval fsync failed: {e}");
                    return;
                }
            })
            .ok();
        Syncer { stop, thread }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        let (m, c) = &*self.stop;
        *m.lock().unwrap_or_else(|e| e.into_inner()) = true;
        c.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
