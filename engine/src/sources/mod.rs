//! Sources: where a job's records come from.
//!
//! Owns: the direct (pull) inputs — the queue stream for tests, the deterministic
//! generator, directories of files (replayable: each batch's file names are its plan
//! in the driver log), the Kafka direct source (feature `kafka`: each batch's offset
//! ranges are its plan) — and the receivers (push): the receiver framework with its
//! block generator, write-ahead log and rate control, and the socket text receiver.
//! Uses: the runtime (`Input`, nodes, batches). A new source is a new file here that
//! implements `Input` (pull) or [`Receiver`](crate::Receiver) (push).

pub mod files;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kafka")]
mod kafka_queue;
pub(crate) mod lines;
pub mod offsets;
pub(crate) mod queue;
pub(crate) mod rate;
pub(crate) mod receiver;
pub mod socket;
