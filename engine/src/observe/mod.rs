//! Observability: what a running job reports.
//!
//! Owns: the listener events ([`StreamingListener`](crate::StreamingListener),
//! [`BatchInfo`](crate::BatchInfo)), the one source of everything a job shows about
//! itself, and what inputs report of themselves ([`InputStatus`]). Uses nothing but
//! the runtime's types.

pub(crate) mod listener;
pub mod status;

pub use status::{InputStatus, PartitionStatus};
