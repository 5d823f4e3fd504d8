//! Writing a checkpoint (DESIGN.md, durability protocol step 5): the state snapshots
//! of stateful operators first, then the metadata checkpoint that names them (graph
//! descriptor, input positions, window memos, the driver-log position), published
//! atomically; only then cleanup of what no retained checkpoint references.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_checkpoint::snapshot::{SnapshotOptions, SnapshotRef, StateSnapshots};
use sluice_checkpoint::CheckpointId;
use sluice_recovery::graph::NodeInfo;
use sluice_recovery::identity::{is_input, node_keys};
use sluice_recovery::resolve::CheckpointView;
use sluice_wal::Lsn;

use super::{ckpt_err, snapshot_operator_name, DriverStore};
use crate::runtime::graph::{AnyNode, ExecutionEnv};
use crate::runtime::io::Input;
use crate::{BatchTime, EngineError, Result};

/// The format version of the engine's checkpoint payload. Version 1 (index-keyed
/// inputs and memos) is still read: see [`CheckpointData::decode`].
const CHECKPOINT_VERSION: u32 = 2;

/// What a metadata checkpoint holds (bincode inside the checkpoint store's CRC-checked
/// envelope). Everything in it is found again by a stable key (see
/// `sluice_recovery::identity`), never by position.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CheckpointData {
    pub version: u32,
    pub app_name: String,
    pub batch_ms: u64,
    pub zero: BatchTime,
    /// The batch this checkpoint follows (also its [`CheckpointId`]).
    pub time: BatchTime,
    pub graph: Vec<NodeInfo>,
    /// Each input's position after batch `time`, by input key.
    pub inputs: Vec<(String, Vec<u8>)>,
    /// State snapshots of stateful operators.
    pub states: Vec<StateRef>,
    /// Remembered batches (window contents), by node key.
    pub memos: Vec<(String, Vec<u8>)>,
    /// The first driver-log LSN after this checkpoint whose records were durable when
    /// it was written.
    pub log_lsn: Lsn,
}

/// One stateful operator's snapshot, with the object prefix it was written under (kept
/// rather than recomputed, so a reader never depends on how names are derived).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StateRef {
    /// The operator's name.
    pub name: String,
    /// The snapshot object prefix (`snapshot_operator_name(name)` when written).
    pub snapshots: String,
    /// The snapshot.
    pub reference: SnapshotRef,
}

/// Version 1 of the payload, as builds before stable keys wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointDataV1 {
    version: u32,
    app_name: String,
    batch_ms: u64,
    zero: BatchTime,
    time: BatchTime,
    graph: Vec<NodeInfo>,
    /// By input position.
    inputs: Vec<Option<Vec<u8>>>,
    states: Vec<(String, SnapshotRef)>,
    /// By node position.
    memos: Vec<(usize, Vec<u8>)>,
    log_lsn: Lsn,
}

impl CheckpointData {
    /// Decodes a payload. The format version is read first, before anything else of
    /// the payload is decoded. A version 1 payload is converted: its inputs (which
    /// version 1 did not name, but for generators) take the names of the inputs at the
    /// same position in `graph` (the running job's graph, as version 1 matched them),
    /// and its index-keyed positions and memos get the keys of those nodes.
    pub(crate) fn decode(payload: &[u8], graph: Option<&[NodeInfo]>) -> Result<Self> {
        let version: u32 = crate::runtime::graph::decode_prefix(payload)?;
        match version {
            CHECKPOINT_VERSION => crate::runtime::graph::decode(payload),
            1 => {
                let v1: CheckpointDataV1 = crate::runtime::graph::decode(payload)?;
                Ok(Self::from_v1(v1, graph))
            }
            other => Err(EngineError::Config {
                setting: "checkpoint".into(),
                reason: format!(
                    "checkpoint format version {other} is not supported (this build reads versions 1 and {CHECKPOINT_VERSION}); a newer sluice wrote it"
                ),
            }),
        }
    }

    fn from_v1(v1: CheckpointDataV1, graph: Option<&[NodeInfo]>) -> Self {
        let mut stored = v1.graph;
        if let Some(rebuilt) = graph {
            let rebuilt_inputs: Vec<&NodeInfo> = rebuilt.iter().filter(|n| is_input(n)).collect();
            for (k, n) in stored.iter_mut().filter(|n| is_input(n)).enumerate() {
                if let Some(r) = rebuilt_inputs.get(k) {
                    if n.name.is_none() && r.kind == n.kind {
                        n.name = r.name.clone();
                    }
                }
            }
        }
        let keys = node_keys(&stored);
        let input_keys: Vec<&String> = stored
            .iter()
            .zip(&keys)
            .filter(|(n, _)| is_input(n))
            .map(|(_, k)| k)
            .collect();
        CheckpointData {
            version: CHECKPOINT_VERSION,
            app_name: v1.app_name,
            batch_ms: v1.batch_ms,
            zero: v1.zero,
            time: v1.time,
            inputs: v1
                .inputs
                .into_iter()
                .enumerate()
                .filter_map(|(i, p)| Some(((*input_keys.get(i)?).clone(), p?)))
                .collect(),
            states: v1
                .states
                .into_iter()
                .map(|(name, reference)| StateRef {
                    snapshots: snapshot_operator_name(&name),
                    name,
                    reference,
                })
                .collect(),
            memos: v1
                .memos
                .into_iter()
                .filter_map(|(id, m)| Some((keys.get(id)?.clone(), m)))
                .collect(),
            graph: stored,
            log_lsn: v1.log_lsn,
        }
    }

    /// What the restart decision needs to know of this checkpoint.
    pub(crate) fn view(&self) -> CheckpointView {
        CheckpointView {
            time: self.time,
            zero: self.zero,
            batch_ms: self.batch_ms,
            graph: self.graph.clone(),
            positions: self.inputs.iter().map(|(k, _)| k.clone()).collect(),
            states: self.states.iter().map(|s| s.name.clone()).collect(),
            memos: self.memos.iter().map(|(k, _)| k.clone()).collect(),
        }
    }
}

/// The keys of the inputs of `graph`, in input order.
pub(crate) fn input_keys(graph: &[NodeInfo]) -> Vec<String> {
    graph
        .iter()
        .zip(node_keys(graph))
        .filter(|(n, _)| is_input(n))
        .map(|(_, k)| k)
        .collect()
}

/// What writing a checkpoint wrote (for listeners: the UI's checkpoint history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CheckpointWritten {
    /// Bytes of state snapshot files and of the metadata checkpoint.
    pub bytes: u64,
    /// Every state snapshot was written whole.
    pub full: bool,
}

impl DriverStore {
    /// Where the metadata checkpoint of batch `t` is published.
    pub(crate) fn checkpoint_location(&self, t: BatchTime) -> String {
        self.store.object_path(&CheckpointId(t.0).file_name())
    }

    /// Writes the checkpoint of batch `t` (after it completed): state snapshots first,
    /// then the metadata checkpoint naming them, then cleanup of what nothing references.
    pub(crate) fn checkpoint(
        &self,
        t: BatchTime,
        env: &ExecutionEnv,
        app_name: &str,
        nodes: &[Arc<dyn AnyNode>],
        inputs: &[Arc<dyn Input>],
    ) -> Result<CheckpointWritten> {
        let id = CheckpointId(t.0);
        let mut bytes = 0u64;
        let graph: Vec<NodeInfo> = nodes.iter().map(|n| n.info().clone()).collect();
        let keys = node_keys(&graph);
        // Rule: only driver-log records known durable are counted as before this
        // checkpoint (`BatchCompleted` is appended without waiting for its commit).
        let log_lsn = self.log.inner().durable_lsn();
        let mut states = Vec::new();
        let mut memos = Vec::new();
        for (n, key) in nodes.iter().zip(&keys) {
            if let Some(entries) = n.state_entries(t, env) {
                let name = n.info().name.clone().unwrap_or_default();
                let prefix = snapshot_operator_name(&name);
                let snaps =
                    StateSnapshots::new(self.store.clone(), &prefix, SnapshotOptions::default())
                        .map_err(ckpt_err)?;
                // Rule: the snapshot is durable before the checkpoint that names it.
                let manifest = snaps.write_full(id, entries?).map_err(ckpt_err)?;
                bytes += manifest.files().map(|f| f.len).sum::<u64>();
                crate::failpoints::point("mid-checkpoint");
                states.push(StateRef {
                    name,
                    snapshots: prefix,
                    reference: manifest.reference(),
                });
            } else if n.remembers_past(env.batch) {
                memos.push((key.clone(), n.encode_memo(t)?));
            }
        }
        let data = CheckpointData {
            version: CHECKPOINT_VERSION,
            app_name: app_name.to_owned(),
            batch_ms: env.batch.as_millis() as u64,
            zero: env.zero,
            time: t,
            inputs: input_keys(&graph)
                .into_iter()
                .zip(inputs)
                .filter_map(|(k, i)| Some((k, i.position()?)))
                .collect(),
            graph,
            states,
            memos,
            log_lsn,
        };
        // Rule: the metadata checkpoint is published atomically (the store writes temp,
        // fsyncs, renames, fsyncs the directory, or puts a new object conditionally).
        let payload = crate::runtime::graph::encode(&data)?;
        bytes += payload.len() as u64;
        self.store.put_checkpoint(id, &payload).map_err(ckpt_err)?;
        // The checkpoint is durable: a failed cleanup deletes less, never fails the job.
        if let Err(e) = self.cleanup(nodes, inputs) {
            tracing::warn!(error = %e, "cleanup stopped; nothing more is deleted until the next checkpoint");
        }
        Ok(CheckpointWritten { bytes, full: true })
    }

    /// Deletes checkpoints past retention, then the snapshots, driver-log segments and
    /// input data (receiver WAL segments) no retained checkpoint references — only once
    /// a newer checkpoint is durable. Rule: if any retained checkpoint cannot be read
    /// whole, this round deletes nothing more (what it references is unknown, and may be
    /// all a restart has).
    fn cleanup(&self, nodes: &[Arc<dyn AnyNode>], inputs: &[Arc<dyn Input>]) -> Result<()> {
        self.store
            .retain_newest(sluice_checkpoint::DEFAULT_RETAINED)
            .map_err(ckpt_err)?;
        crate::failpoints::point("mid-cleanup");
        let graph: Vec<NodeInfo> = nodes.iter().map(|n| n.info().clone()).collect();
        let mut live: Vec<StateRef> = Vec::new();
        let mut oldest: Option<CheckpointData> = None;
        for id in self.store.list_checkpoints().map_err(ckpt_err)? {
            let c = self
                .store
                .read_checkpoint(id)
                .map_err(|e| EngineError::Io {
                    what: format!("cleanup: reading retained checkpoint {}", id.0),
                    source: std::io::Error::other(e.to_string()),
                })?;
            let d = CheckpointData::decode(&c.payload, Some(&graph))?;
            if oldest.as_ref().is_none_or(|o| d.log_lsn < o.log_lsn) {
                live.extend(d.states.iter().cloned());
                oldest = Some(d);
            } else {
                live.extend(d.states);
            }
        }
        let mut prefixes: Vec<&String> = live.iter().map(|s| &s.snapshots).collect();
        prefixes.sort();
        prefixes.dedup();
        for prefix in prefixes {
            let refs: Vec<SnapshotRef> = live
                .iter()
                .filter(|s| &s.snapshots == prefix)
                .map(|s| s.reference)
                .collect();
            StateSnapshots::new(self.store.clone(), prefix, SnapshotOptions::default())
                .and_then(|s| s.gc(&refs))
                .map_err(ckpt_err)?;
        }
        let Some(oldest) = oldest else {
            return Ok(());
        };
        self.log.inner().delete_before(oldest.log_lsn)?;
        // Inputs drop what no retained checkpoint can need (receiver WAL segments
        // before the oldest retained checkpoint's position), found by key.
        for (key, input) in input_keys(&graph).iter().zip(inputs) {
            if let Some((_, pos)) = oldest.inputs.iter().find(|(k, _)| k == key) {
                input.release_before(pos)?;
            }
        }
        Ok(())
    }
}
