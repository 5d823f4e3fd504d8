//! Observability: what a running job reports.
//!
//! Owns: the listener events ([`StreamingListener`](crate::StreamingListener),
//! [`BatchInfo`](crate::BatchInfo)), the one source of everything a job shows about
//! itself. Uses nothing but the runtime's types.

pub(crate) mod listener;
