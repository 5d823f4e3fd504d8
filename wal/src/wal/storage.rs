//! The seam between the log and where its segments live (local segment files, or one
//! object per commit): the log hands [`Storage`] whole chunks to commit.

use std::path::PathBuf;

use crate::{Result, SegmentId};

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
    /// `len` bytes at `offset` of a segment (fewer at its end), into `buf` (replacing
    /// what it held, keeping its allocation).
    fn read_at_into(
        &self,
        seg: SegmentId,
        offset: u64,
        len: usize,
        buf: &mut Vec<u8>,
    ) -> Result<()>;
    /// `len` bytes at `offset` of a segment (fewer at its end).
    fn read_at(&self, seg: SegmentId, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_at_into(seg, offset, len, &mut buf)?;
        Ok(buf)
    }
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
