//! What each input reports about itself, for the web UI, `/api/inputs` and metrics.

/// The status of one input at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputStatus {
    /// The input's name (its stable identity where it has one).
    pub name: String,
    /// What kind of input: `receiver`, `kafka`, `directory`, `queue`, `generator`, …
    pub kind: String,
    /// `active`, `restarting`, `stopped` or `failed`.
    pub state: String,
    /// The effective rate limit in records/s, if any.
    pub rate_limit_per_s: Option<f64>,
    /// Bytes received and not yet processed (receivers).
    pub buffered_bytes: Option<u64>,
    /// How many times it was restarted (receivers).
    pub restarts: u64,
    /// The latest error, if any.
    pub last_error: Option<String>,
    /// Records it has handed to batches (or stored, for receivers) so far.
    pub records_total: u64,
    /// Records dropped because they were over the maximum record size.
    pub dropped_oversized: u64,
    /// Records lost to a source's retention (a range the source no longer had).
    pub lost_to_retention: u64,
    /// Per source partition (Kafka): offsets of the latest batch and the lag.
    pub partitions: Vec<PartitionStatus>,
}

/// One partition of a partitioned source (a Kafka topic partition).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionStatus {
    /// The topic.
    pub topic: String,
    /// The partition number.
    pub partition: i32,
    /// The first offset of the latest batch's range.
    pub from_offset: i64,
    /// One past the last offset of the latest batch's range.
    pub until_offset: i64,
    /// The partition's high watermark when last fetched.
    pub high_watermark: Option<i64>,
    /// `high_watermark - until_offset`.
    pub lag: Option<i64>,
}
