//! Offset ranges: what a batch of an offset-based input (the Kafka direct source,
//! feature `kafka`) reads of each partition. Outside the `kafka` feature so that
//! [`BatchContext::offset_ranges`](crate::BatchContext::offset_ranges) is the same API
//! with or without it (empty without Kafka inputs).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The range of one partition a batch reads: offsets `from_offset` (inclusive) to
/// `until_offset` (exclusive). Spark's `OffsetRange`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OffsetRange {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The first offset of the range.
    pub from_offset: i64,
    /// One past the last offset of the range.
    pub until_offset: i64,
}

impl OffsetRange {
    /// `until_offset - from_offset` (an upper bound of the records: offsets may have gaps).
    pub fn count(&self) -> i64 {
        self.until_offset - self.from_offset
    }
}

impl fmt::Display for OffsetRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{} [{}, {})",
            self.topic, self.partition, self.from_offset, self.until_offset
        )
    }
}

/// The offset ranges one input read for a batch, with the input's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputOffsetRanges {
    /// The input's stable name: its `.name(..)`, else its topic list or assignment
    /// (`orders`, `a,b`, `a:0,a:2`), with `#2`, `#3`, … for a second or third input of
    /// the same name (the name its checkpointed offsets are kept under).
    pub input: String,
    /// One range per partition, in partition order (empty ranges included).
    pub ranges: Vec<OffsetRange>,
}
