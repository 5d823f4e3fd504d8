//! Writing a checkpoint (DESIGN.md, durability protocol step 5): the state snapshots
//! of stateful operators first, then the metadata checkpoint that names them (graph
//! descriptor, input positions, window memos, the driver-log position), published
//! atomically; only then cleanup of what no retained checkpoint references.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_checkpoint::snapshot::{SnapshotOptions, SnapshotRef, StateSnapshots};
use sluice_checkpoint::CheckpointId;
use sluice_recovery::graph::NodeInfo;
use sluice_wal::Lsn;

use super::{ckpt_err, snapshot_operator_name, DriverStore};
use crate::runtime::graph::{AnyNode, ExecutionEnv};
use crate::runtime::io::Input;
use crate::{BatchTime, EngineError, Result};

/// The format version of the engine's checkpoint payload.
const CHECKPOINT_VERSION: u32 = 1;

/// What a metadata checkpoint holds (bincode inside the checkpoint store's CRC-checked
/// envelope).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CheckpointData {
    pub version: u32,
    pub app_name: String,
    pub batch_ms: u64,
    pub zero: BatchTime,
    /// The batch this checkpoint follows (also its [`CheckpointId`]).
    pub time: BatchTime,
    pub graph: Vec<NodeInfo>,
    /// Each input's position after batch `time`, by input index.
    pub inputs: Vec<Option<Vec<u8>>>,
    /// State snapshots of stateful operators, by operator name.
    pub states: Vec<(String, SnapshotRef)>,
    /// Remembered batches of nodes a window reads, by node id.
    pub memos: Vec<(usize, Vec<u8>)>,
    /// The first driver-log LSN after this checkpoint.
    pub log_lsn: Lsn,
}

impl CheckpointData {
    pub(crate) fn decode(payload: &[u8]) -> Result<Self> {
        let d: CheckpointData = crate::runtime::graph::decode(payload)?;
        if d.version != CHECKPOINT_VERSION {
            return Err(EngineError::Config {
                setting: "checkpoint".into(),
                reason: format!(
                    "checkpoint format version {} is not supported (this build reads {CHECKPOINT_VERSION})",
                    d.version
                ),
            });
        }
        Ok(d)
    }
}

impl DriverStore {
    /// Writes the checkpoint of batch `t` (after it completed): state snapshots first,
    /// then the metadata checkpoint naming them, then cleanup of what nothing references.
    pub(crate) fn checkpoint(
        &self,
        t: BatchTime,
        env: &ExecutionEnv,
        app_name: &str,
        nodes: &[Arc<dyn AnyNode>],
        inputs: &[Arc<dyn Input>],
    ) -> Result<()> {
        let id = CheckpointId(t.0);
        let mut states = Vec::new();
        let mut memos = Vec::new();
        for n in nodes {
            if let Some(entries) = n.state_entries(t, env) {
                let name = n.info().name.clone().unwrap_or_default();
                let snaps = StateSnapshots::new(
                    self.store.clone(),
                    &snapshot_operator_name(&name),
                    SnapshotOptions::default(),
                )
                .map_err(ckpt_err)?;
                // Rule: the snapshot is durable before the checkpoint that names it.
                let manifest = snaps.write_full(id, entries?).map_err(ckpt_err)?;
                crate::failpoints::point("mid-checkpoint");
                states.push((name, manifest.reference()));
            } else if n.remembers_past(env.batch) {
                memos.push((n.info().id, n.encode_memo(t)?));
            }
        }
        let data = CheckpointData {
            version: CHECKPOINT_VERSION,
            app_name: app_name.to_owned(),
            batch_ms: env.batch.as_millis() as u64,
            zero: env.zero,
            time: t,
            graph: nodes.iter().map(|n| n.info().clone()).collect(),
            inputs: inputs.iter().map(|i| i.position()).collect(),
            states,
            memos,
            log_lsn: self.log.inner().next_lsn(),
        };
        // Rule: the metadata checkpoint is published atomically (the store writes temp,
        // fsyncs, renames, fsyncs the directory, or puts a new object conditionally).
        self.store
            .put_checkpoint(id, &crate::runtime::graph::encode(&data)?)
            .map_err(ckpt_err)?;
        self.cleanup(inputs)
    }

    /// Deletes checkpoints past retention, then the snapshots and driver-log segments
    /// no retained checkpoint references (only once a newer checkpoint is durable).
    fn cleanup(&self, inputs: &[Arc<dyn Input>]) -> Result<()> {
        self.store
            .retain_newest(sluice_checkpoint::DEFAULT_RETAINED)
            .map_err(ckpt_err)?;
        crate::failpoints::point("mid-cleanup");
        let mut live: Vec<(String, SnapshotRef)> = Vec::new();
        let mut oldest_lsn = u64::MAX;
        let mut oldest_positions: Option<Vec<Option<Vec<u8>>>> = None;
        for id in self.store.list_checkpoints().map_err(ckpt_err)? {
            let Ok(c) = self.store.read_checkpoint(id) else {
                continue;
            };
            let Ok(d) = CheckpointData::decode(&c.payload) else {
                continue;
            };
            if d.log_lsn.0 < oldest_lsn {
                oldest_positions = Some(d.inputs.clone());
            }
            oldest_lsn = oldest_lsn.min(d.log_lsn.0);
            live.extend(d.states);
        }
        let mut names: Vec<&String> = live.iter().map(|(n, _)| n).collect();
        names.sort();
        names.dedup();
        for name in names {
            let refs: Vec<SnapshotRef> = live
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, r)| *r)
                .collect();
            StateSnapshots::new(
                self.store.clone(),
                &snapshot_operator_name(name),
                SnapshotOptions::default(),
            )
            .and_then(|s| s.gc(&refs))
            .map_err(ckpt_err)?;
        }
        if oldest_lsn != u64::MAX {
            self.log.inner().delete_before(Lsn(oldest_lsn))?;
        }
        // Inputs drop what no retained checkpoint can need (receiver WAL segments
        // before the oldest retained checkpoint's position).
        for (input, pos) in inputs.iter().zip(oldest_positions.unwrap_or_default()) {
            if let Some(pos) = pos {
                input.release_before(&pos)?;
            }
        }
        Ok(())
    }
}
