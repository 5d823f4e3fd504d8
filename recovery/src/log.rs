//! The driver log: what the driver appends, durably, around every batch.

use serde::{Deserialize, Serialize};

use crate::BatchTime;

/// The inputs of one input for one batch, as that input encodes them (WAL block
/// handles for a receiver, an offset range for a generator, file names for a file
/// stream). Opaque here: only the input that wrote it reads it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputPlan {
    /// The input's position among the graph's inputs.
    pub input: usize,
    /// Its encoded plan.
    pub plan: Vec<u8>,
}

/// One record of the driver log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DriverEvent {
    /// The job started (first start only): batch times are `zero + k * batch`.
    Started { zero: BatchTime, batch_ms: u64 },
    /// Rule: durable before any job of the batch runs.
    BatchPlanned {
        time: BatchTime,
        inputs: Vec<InputPlan>,
    },
    /// Rule: appended after every output of the batch committed.
    BatchCompleted { time: BatchTime },
}
