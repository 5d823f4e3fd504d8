//! Observability: what a running job reports.
//!
//! Owns: the listener events ([`StreamingListener`](crate::StreamingListener),
//! [`BatchInfo`](crate::BatchInfo)), the one source of everything a job shows about
//! itself, and what inputs report of themselves ([`InputStatus`]). Uses nothing but
//! the runtime's types. With the `ui` feature, the web UI, `/api/*` and `/metrics`
//! (`ui`), fed by the same events.

pub(crate) mod listener;
pub mod status;
#[cfg(feature = "ui")]
pub(crate) mod ui;

pub use status::{InputStatus, PartitionStatus};
#[cfg(feature = "ui")]
pub use ui::{serve_metrics, HttpServer};
