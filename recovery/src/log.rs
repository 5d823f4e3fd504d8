//! The driver log: what the driver appends, durably, around every batch.

use serde::{Deserialize, Serialize};

use crate::BatchTime;

/// What one input fixed for one batch, as that input encodes it (WAL block handles for
/// a receiver, an offset range for a generator or Kafka, file names for a file stream).
/// Opaque here: only the input that wrote it reads it back. The input is named by its
/// stable key (see [`crate::identity`]), so a replay goes to the input that wrote it
/// whatever the order inputs are defined in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputPlan {
    /// The input's key.
    pub input: String,
    /// Its encoded plan.
    pub plan: Vec<u8>,
}

/// [`InputPlan`] as builds before stable input names wrote it: by position among the
/// graph's inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionalInputPlan {
    /// The input's position among the graph's inputs.
    pub input: usize,
    /// Its encoded plan.
    pub plan: Vec<u8>,
}

/// One record of the driver log. The variants are stored by their position in this
/// list: add new ones at the end only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DriverEvent {
    /// The job started (first start only): batch times are `zero + k * batch`.
    Started { zero: BatchTime, batch_ms: u64 },
    /// A batch planned by a build before stable input names (read, never written).
    BatchPlannedByPosition {
        time: BatchTime,
        inputs: Vec<PositionalInputPlan>,
    },
    /// Rule: appended after every output of the batch committed.
    BatchCompleted { time: BatchTime },
    /// Rule: durable before any job of the batch runs.
    BatchPlanned {
        time: BatchTime,
        inputs: Vec<InputPlan>,
    },
}

impl DriverEvent {
    /// The batch a `BatchPlanned` (either form) is for.
    pub fn planned_time(&self) -> Option<BatchTime> {
        match self {
            DriverEvent::BatchPlanned { time, .. }
            | DriverEvent::BatchPlannedByPosition { time, .. } => Some(*time),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_written_before_named_inputs_read_back() {
        // The bytes an earlier build wrote for BatchPlanned { time_ms: 7, inputs:
        // [InputPlan { input: 1, plan: [9] }] }: variant 1, then the fields.
        let cfg = bincode::config::standard();
        let old =
            bincode::serde::encode_to_vec((1u32, 7u64, vec![(1usize, vec![9u8])]), cfg).unwrap();
        let (e, _): (DriverEvent, _) = bincode::serde::decode_from_slice(&old, cfg).unwrap();
        assert_eq!(
            e,
            DriverEvent::BatchPlannedByPosition {
                time: BatchTime(7),
                inputs: vec![PositionalInputPlan {
                    input: 1,
                    plan: vec![9]
                }]
            }
        );
        assert_eq!(e.planned_time(), Some(BatchTime(7)));
    }
}
