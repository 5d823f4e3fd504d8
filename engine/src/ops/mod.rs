//! Operators: the DStream API a job is written in.
//!
//! Owns: [`DStream`](crate::DStream) and its transformations (`map`, `filter`,
//! `flat_map`, shuffles), pair operations (`reduce_by_key`, joins, `group_by_key`),
//! windows (incremental ones too), stateful operators (`update_state_by_key`,
//! `map_with_state`) and output operations (`print`, `foreach_batch`, file outputs).
//! Uses: the runtime (nodes, batches). Stateful operators hand their state to
//! `durable` through the node interface; they do no I/O themselves.

pub(crate) mod dstream;
pub mod output;
pub(crate) mod pair;
pub(crate) mod state;
pub(crate) mod window;
