//! Appending: LSN assignment, segment roll, group commit (one leader writes and fsyncs
//! for every waiting appender), and the background fsync of `Durability::Interval`.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{lock, now_ms, Appended, Chunk, Durability, Inner, SegMeta, State, Wal};
use crate::format::{self, SegmentHeader, FRAME_HEADER_LEN, HEADER_LEN};
use crate::{Lsn, RecordHandle, Result, SegmentId, WalError};

impl Wal {
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
        let bytes: u64 = chunks.iter().map(|c| c.bytes.len() as u64).sum();
        let res = if chunks.is_empty() {
            Ok(())
        } else {
            self.inner.storage.commit(chunks, sync)
        };
        if res.is_ok() && bytes > 0 {
            crate::stats::committed(bytes, sync);
        }
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
                crate::stats::committed(0, true);
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
}

/// The background fsync of [`Durability::Interval`].
#[derive(Debug)]
pub(super) struct Syncer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    pub(super) fn start(inner: Arc<Inner>, every: Duration) -> Syncer {
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
