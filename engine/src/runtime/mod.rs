//! The runtime: the context, its configuration, the graph of nodes, batches and the
//! batch scheduler.
//!
//! Owns: [`StreamingContext`](crate::StreamingContext) (defining, starting and
//! stopping a job), [`StreamingConf`](crate::StreamingConf), the node graph and its
//! per-batch memoisation, the `Input`/`Output` traits every source and output
//! implements, and the scheduler loop that runs one batch after another.
//! Uses: `durable` (the scheduler calls it to log and checkpoint each batch) and
//! `observe` (it reports each batch to the listeners). Sources, operators and sinks
//! build on the runtime, never the other way round.

pub(crate) mod allocator;
pub(crate) mod batch;
pub(crate) mod conf;
pub(crate) mod context;
pub mod graph;
pub(crate) mod io;
pub(crate) mod scheduler;
