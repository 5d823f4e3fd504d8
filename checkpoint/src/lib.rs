//! `sluice-checkpoint`: checkpoint stores for sluice.
//!
//! Everything a restarted driver needs is stored at one location named by a URL
//! ([`open_location`]): a path or `file://PATH` ([`LocalStore`]), `s3://BUCKET/PREFIX`
//! or any `Arc<dyn ObjectStore>` ([`ObjectCheckpointStore`]), or `rocksdb://PATH`
//! ([`RocksStore`]). All three implement [`CheckpointStore`], whose checkpoint protocol
//! is written once on top of five object primitives, and all three pass the same
//! conformance suite (`tests/conformance.rs`).
//!
//! # Guarantees
//!
//! - **Atomic, durable publish.** [`CheckpointStore::put_checkpoint`] returns only once
//!   the checkpoint is durable, and a reader sees either no checkpoint or all of it.
//!   Locally: write a temporary file, fsync it, rename it, fsync the directory. On an
//!   object store: one new immutable object written by a conditional put
//!   (`PutMode::Create`), never a rename. On RocksDB: one synced write.
//! - **Nothing is replaced.** A put never overwrites an object. A checkpoint whose id
//!   exists, or that is older than the newest checkpoint that reads back whole (an
//!   older batch finishing after a newer one), is not written; the put reports
//!   [`PutOutcome::AlreadyExists`] or [`PutOutcome::Superseded`] (not an error).
//! - **Never wrong data.** Every file carries a magic, a format version, its length and
//!   a CRC32; a read that fails any check returns an error naming the file and offset.
//! - **Fallback.** [`CheckpointStore::read_newest`] uses the newest checkpoint that
//!   reads back whole and reports every newer one it skipped ([`Skipped`]: path and
//!   reason). When none is readable it fails with
//!   [`CheckpointError::NoReadableCheckpoint`], unless the caller chose a
//!   [`StartMode`] that allows starting fresh. An I/O error (not damage) stops the
//!   read instead of falling back.
//! - **Retention.** [`CheckpointStore::retain_newest`] (default
//!   [`DEFAULT_RETAINED`] = 10) deletes old checkpoints only once that many newer ones
//!   are durable and read back whole, so it never removes the last usable one.
//! - **State snapshots** ([`snapshot`]): keyed state written as partitioned, chunked,
//!   CRC-checked files named by a manifest that is published only after every file it
//!   names is durable; full and incremental snapshots (small deltas inline in the
//!   manifest); restore = full + deltas, every file checked against the manifest's
//!   length and CRC; compaction into a new full snapshot; garbage collection of files
//!   no live manifest names (manifests deleted before chunks).
//! - **Writer** ([`writer`]): a background thread with a bounded queue; a full queue
//!   refuses the submission ([`CheckpointError::QueueFull`]) and every publish,
//!   failure and retention result comes back as a [`writer::WriterEvent`].
//!   Object-store requests are retried with exponential backoff ([`RetryPolicy`])
//!   before an error surfaces with the object's location and the cause.
//!
//! # Limits
//!
//! - One process writes a location at a time (the driver holds the WAL's lock). Two
//!   processes on one object-store prefix cannot overwrite each other's objects
//!   (conditional puts), but retention and GC assume a single writer.
//! - Garbage collection must not run concurrently with a snapshot write of the same
//!   operator.
//! - [`fault::FaultyObjectStore`] is a test tool (errors, latency, a put applied but
//!   reported failed); it is public so other crates' tests can use it.
//!
//! # On-disk format
//!
//! Every file (checkpoint, snapshot chunk, snapshot manifest) is wrapped in the
//! envelope described in [`format`]: 8-byte magic, u16 format version, u16 reserved,
//! u64 payload length, CRC32 of header and payload, payload (little-endian).
//! A metadata checkpoint is named `checkpoint-<batch time in ms, 20 digits>`; its
//! payload is the batch time (u64) followed by the engine's opaque bytes.

pub mod error;
pub mod fault;
pub mod format;
pub mod local;
pub mod location;
pub mod object;
pub mod rocks;
pub mod snapshot;
pub mod store;
pub mod writer;

pub use error::{CheckpointError, Result};
pub use local::LocalStore;
pub use location::{open_location, open_location_on, open_location_with, Location};
pub use object::{ObjectCheckpointStore, RetryPolicy};
pub use rocks::RocksStore;
pub use store::{
    Checkpoint, CheckpointId, CheckpointStore, PutOutcome, Recovered, Skipped, StartMode,
    DEFAULT_RETAINED,
};
