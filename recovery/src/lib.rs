//! `sluice-recovery`: what a restarted driver must do, decided by pure functions.
//!
//! Nothing here does I/O. The engine reads the checkpoint and the driver log, hands
//! them to these functions, and acts on the decision they return, so every restart path
//! is unit-testable without a disk:
//!
//! * [`graph::compare`]: is the rebuilt graph the one the checkpoint was taken from,
//!   a compatible change (resume and say what changed), or an incompatible one (stop
//!   and list every difference)?
//! * [`plan::plan_restart`]: which batches to re-run, in order and with which inputs:
//!   those planned but not completed, those completed after the state snapshot, and
//!   those the clock passed while the driver was down.
//! * [`supervise::Policy`]: when `sluice supervise` restarts a dead driver, after how
//!   long, and when it gives up.

pub mod graph;
pub mod log;
pub mod plan;
pub mod supervise;
