//! Reading: one record by its handle, and iteration from an LSN, CRC-checked.

use super::{frame_error, lock, Wal};
use crate::format::{self, SegmentHeader, FRAME_HEADER_LEN, HEADER_LEN};
use crate::{Lsn, RecordHandle, Result, SegmentId, WalError};

impl Wal {
    /// Reads one record by its handle, verifying its CRC.
    pub fn read(&self, handle: RecordHandle) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let payload = self.read_into(handle, &mut buf)?.len();
        buf.truncate(FRAME_HEADER_LEN + payload);
        buf.drain(..FRAME_HEADER_LEN);
        Ok(buf)
    }

    /// Reads one record by its handle into `buf` (its allocation reused: a reader of
    /// many records keeps one buffer), verifying its CRC; returns the record's bytes.
    pub fn read_into<'b>(&self, handle: RecordHandle, buf: &'b mut Vec<u8>) -> Result<&'b [u8]> {
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
        storage.read_at_into(handle.segment, handle.offset, want, buf)?;
        let (payload, _) = format::decode_frame(buf)
            .map_err(|bad| frame_error(storage, handle.segment, handle.offset, &bad))?;
        if payload.len() != handle.len as usize {
            return Err(WalError::BadHandle(format!(
                "{handle:?} points at a record of {} bytes in {}",
                payload.len(),
                storage.location(handle.segment).display()
            )));
        }
        Ok(payload)
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
