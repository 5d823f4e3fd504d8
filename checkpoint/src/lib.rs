//! `sluice-checkpoint`: checkpoint stores for sluice.
//!
//! Not built yet (issue 3). This crate will hold the `CheckpointStore` trait with its
//! local-directory, S3-compatible and RocksDB backends, metadata checkpoint files,
//! keyed-state snapshots, retention and fallback reading.
