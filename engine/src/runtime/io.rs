//! The two traits at the edges of the graph: an [`Input`] decides the data of each
//! batch (every source implements it), an [`Output`] runs once per batch time (every
//! output operation and sink is one).

use crate::runtime::graph::ExecutionEnv;
use crate::sources::offsets::OffsetRange;
use crate::{BatchTime, EngineError, Result};

/// An input of the graph: decides the data of each batch.
pub(crate) trait Input: Send + Sync {
    /// A name for logs (`socket 127.0.0.1:9999`).
    fn describe(&self) -> String;
    /// Starts receiving (receivers start their threads here).
    fn start(&self, env: &ExecutionEnv) -> Result<()>;
    /// Fixes the data of batch `t` (blocks received so far, or an offset range) and
    /// returns how many records it holds. Called once per batch, in time order, before
    /// any job of `t` runs.
    fn allocate(&self, t: BatchTime, env: &ExecutionEnv) -> Result<u64>;
    /// Stops receiving new data (already received data stays to be allocated).
    fn stop_receiving(&self);
    /// Whether everything received has been allocated to a batch.
    fn drained(&self) -> bool;
    /// Whether the input holds data the next batch would take now (a graceful stop
    /// runs that batch without waiting for its time). By default: not drained.
    fn ready(&self) -> bool {
        !self.drained()
    }
    /// Forgets allocations of batches at or before `t` (they are processed).
    fn forget(&self, t: BatchTime);
    /// What `allocate` fixed for batch `t`, encoded for the driver log so a restarted
    /// driver can `replay` it; `None` for an input that cannot replay (its data for an
    /// unfinished batch is lost in a crash).
    fn plan_of(&self, _t: BatchTime) -> Option<Vec<u8>> {
        None
    }
    /// Fixes the data of batch `t` from a plan written by `plan_of` (restart).
    fn replay(&self, _t: BatchTime, _plan: &[u8], _env: &ExecutionEnv) -> Result<u64> {
        Err(EngineError::NotReplayable {
            input: self.describe(),
        })
    }
    /// The input's position after the last allocated batch (for checkpoints).
    fn position(&self) -> Option<Vec<u8>> {
        None
    }
    /// Restores a position written by `position` (before start).
    fn restore_position(&self, _pos: &[u8]) -> Result<()> {
        Ok(())
    }
    /// What the input reports about itself now (UI, metrics); by default its
    /// description and kind only.
    fn status(&self) -> crate::observe::InputStatus {
        crate::observe::InputStatus {
            name: self.describe(),
            kind: self.kind().into(),
            state: "active".into(),
            ..Default::default()
        }
    }
    /// What kind of input this is (`receiver`, `directory`, `queue`, …).
    fn kind(&self) -> &'static str;
    /// Drops what the input keeps for replays before `pos`, a position no retained
    /// checkpoint precedes (cleanup after a checkpoint).
    fn release_before(&self, _pos: &[u8]) -> Result<()> {
        Ok(())
    }
    /// The offset ranges batch `t` reads (allocated or replayed, until `forget(t)`),
    /// for an input that reads offset ranges (Kafka); `None` for any other input.
    fn offset_ranges(&self, _t: BatchTime) -> Option<Vec<OffsetRange>> {
        None
    }
}

/// An output operation: runs once per batch time, in definition order.
pub(crate) trait Output: Send + Sync {
    fn describe(&self) -> String;
    fn run(&self, t: BatchTime, env: &ExecutionEnv) -> Result<()>;
}
