//! `sluice-recovery`: what a restarted driver must do, decided by pure functions.
//!
//! Nothing here does I/O. The engine reads the checkpoint and the driver log, hands
//! them to these functions, and acts on the decision they return, so every restart path
//! is unit-testable without a disk:
//!
//! * [`resolve::resolve`]: the one restart decision — from the retained checkpoints,
//!   the driver log, the rebuilt graph, the configuration and the clock: start afresh,
//!   resume (what to restore into which node, which batches to replay with which
//!   inputs, which to catch up), or refuse (every difference listed). It falls back
//!   past checkpoints the engine could not read whole.
//! * [`graph::compare`]: is the rebuilt graph the one the checkpoint was taken from,
//!   a compatible change (resume and say what changed), or an incompatible one (stop
//!   and list every difference)? By stable identity ([`identity`]), never position.
//! * [`plan::plan_restart`]: which batches to re-run, in order and with which inputs:
//!   those planned but not completed, those completed after the state snapshot, and
//!   those the clock passed while the driver was down.
//! * [`supervise::Policy`]: when `sluice supervise` restarts a dead driver, after how
//!   long, and when it gives up.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod graph;
pub mod identity;
pub mod log;
pub mod plan;
pub mod resolve;
pub mod supervise;

/// The time of a batch: milliseconds since the Unix epoch, aligned to the batch
/// interval from the context's zero time.
///
/// Stored as its `u64` (bincode encodes the newtype as the number), so the driver log
/// and checkpoints written before it was a type read back unchanged.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct BatchTime(pub u64);

impl BatchTime {
    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> u64 {
        self.0
    }

    /// This time plus a duration.
    pub fn plus(self, d: Duration) -> BatchTime {
        BatchTime(self.0 + d.as_millis() as u64)
    }

    /// This time minus a duration (saturating at zero).
    pub fn minus(self, d: Duration) -> BatchTime {
        BatchTime(self.0.saturating_sub(d.as_millis() as u64))
    }
}

impl fmt::Display for BatchTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0)
    }
}
