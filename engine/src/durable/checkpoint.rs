//! Writing a checkpoint (DESIGN.md, durability protocol step 5): the state snapshots
//! of stateful operators first, then the metadata checkpoint that names them (graph
//! descriptor, input positions, window memos, the driver-log position), published
//! atomically; only then cleanup of what no retained checkpoint references.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sluice_checkpoint::snapshot::{SnapshotRef, StateSnapshots};
use sluice_checkpoint::CheckpointId;
use sluice_recovery::graph::NodeInfo;
use sluice_recovery::identity::{is_input, node_keys};
use sluice_recovery::resolve::CheckpointView;
use sluice_wal::Lsn;

use super::{ckpt_err, snapshot_operator_name, DriverStore};
use crate::observe::listener::{CheckpointInfo, StreamingListener};
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

/// A 128-bit digest of a state value's bytes (SipHash-1-3, zero keys): a changed value
/// is missed only on a 128-bit collision.
fn digest(v: &[u8]) -> u128 {
    use std::hash::Hasher;
    let mut h = siphasher::sip128::SipHasher13::new_with_keys(0, 0);
    h.write(v);
    siphasher::sip128::Hasher128::finish128(&h).as_u128()
}

/// Writes one operator's state at `id`: an incremental snapshot on top of `base` (the
/// keys whose value changed or that are new, and the keys removed) when there is a base
/// and it has fewer deltas than the store's compaction threshold, else a full one.
/// Returns the manifest and the base for the next checkpoint.
fn write_snapshot(
    snaps: &StateSnapshots,
    id: CheckpointId,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    base: Option<super::SnapshotBase>,
) -> Result<(
    sluice_checkpoint::snapshot::SnapshotManifest,
    super::SnapshotBase,
)> {
    let digests: Vec<u128> = entries.iter().map(|(_, v)| digest(v)).collect();
    let manifest = match base {
        Some(b) if !snaps.needs_compaction(&b.manifest) => {
            let mut still_there = 0usize;
            let changed = entries.iter().zip(&digests).filter(|((k, _), d)| {
                let old = b.digests.get(k);
                still_there += usize::from(old.is_some());
                old != Some(d)
            });
            let changed: Vec<(&Vec<u8>, &Vec<u8>)> = changed.map(|((k, v), _)| (k, v)).collect();
            let removed: Vec<&Vec<u8>> = if still_there == b.digests.len() {
                Vec::new()
            } else {
                let now: std::collections::HashSet<&[u8]> =
                    entries.iter().map(|(k, _)| k.as_slice()).collect();
                b.digests
                    .keys()
                    .filter(|k| !now.contains(k.as_slice()))
                    .collect()
            };
            snaps
                .write_incremental(id, &b.manifest, changed, removed)
                .map_err(ckpt_err)?
        }
        _ => snaps
            .write_full(id, entries.iter().map(|(k, v)| (k, v)))
            .map_err(ckpt_err)?,
    };
    let base = super::SnapshotBase {
        manifest: manifest.clone(),
        digests: entries.into_iter().map(|(k, _)| k).zip(digests).collect(),
    };
    Ok((manifest, base))
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

/// What a checkpoint of batch `t` holds, taken from the running job on the scheduler
/// thread (state entries encoded, memos, input positions); written afterwards.
struct Captured {
    t: BatchTime,
    app_name: String,
    batch_ms: u64,
    zero: BatchTime,
    graph: Vec<NodeInfo>,
    /// `(operator name, its state at t)` of each stateful operator, encoded when the
    /// checkpoint is written.
    states: Vec<(String, crate::runtime::graph::EncodeState)>,
    memos: Vec<(String, Vec<u8>)>,
    inputs: Vec<(String, Vec<u8>)>,
    log_lsn: Lsn,
}

impl DriverStore {
    /// Where the metadata checkpoint of batch `t` is published.
    pub(crate) fn checkpoint_location(&self, t: BatchTime) -> String {
        self.store.object_path(&CheckpointId(t.0).file_name())
    }

    /// Checkpoints batch `t` (after it completed). The job's state at `t` is taken
    /// now, on the scheduler thread (handles on its batches, no copy); it is encoded and
    /// written on a checkpoint thread while the next batches run: state snapshots
    /// first, then the metadata checkpoint naming them, then cleanup of what nothing
    /// references. One checkpoint is written at a time, and the scheduler never waits
    /// for it: while the previous one is still being written this one is deferred to
    /// the first batch that completes after it (as if the interval were longer; the
    /// driver log covers the batches in between). A failed checkpoint's error fails the
    /// batch that takes the next one. `listeners` hear of each once it is written (or
    /// failed).
    pub(crate) fn checkpoint(
        self: &Arc<Self>,
        t: BatchTime,
        env: &ExecutionEnv,
        app_name: &str,
        nodes: &[Arc<dyn AnyNode>],
        inputs: &[Arc<dyn Input>],
        listeners: &[Arc<dyn StreamingListener>],
    ) -> Result<()> {
        let busy = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|h| !h.is_finished());
        if busy {
            // Rule: the scheduler does not wait for a checkpoint being written.
            self.deferred.store(true, Ordering::Relaxed);
            tracing::debug!(
                batch = t.0,
                "previous checkpoint still being written; deferred"
            );
            return Ok(());
        }
        self.deferred.store(false, Ordering::Relaxed);
        self.finish_checkpoint()?;
        let (started_at_ms, took) = (crate::runtime::context::now_ms(), Instant::now());
        let report = move |me: &DriverStore,
                           res: Result<CheckpointWritten>,
                           listeners: &[Arc<dyn StreamingListener>]| {
            let mut info = CheckpointInfo {
                time: t,
                started_at_ms,
                duration: took.elapsed(),
                bytes: 0,
                full: true,
                location: me.checkpoint_location(t),
                error: None,
            };
            match &res {
                Ok(w) => (info.bytes, info.full) = (w.bytes, w.full),
                Err(e) => info.error = Some(e.to_string()),
            }
            for l in listeners {
                l.on_checkpoint(&info);
            }
            res.map(drop)
        };
        let captured = match self.capture(t, env, app_name, nodes, inputs) {
            Ok(c) => c,
            Err(e) => return report(self, Err(e), listeners),
        };
        if !self.async_checkpoints {
            let res = self.write_captured(captured, inputs);
            return report(self, res, listeners);
        }
        let me = self.clone();
        let inputs = inputs.to_vec();
        let listeners = listeners.to_vec();
        let handle = std::thread::Builder::new()
            .name("sluice-checkpoint".into())
            .spawn(move || {
                let res = me.write_captured(captured, &inputs);
                report(&me, res, &listeners)
            })
            .map_err(|e| EngineError::Io {
                what: "starting the checkpoint thread".into(),
                source: e,
            })?;
        *self.in_flight.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

    /// Waits for the checkpoint being written, if any; its error, if it failed.
    pub(crate) fn finish_checkpoint(&self) -> Result<()> {
        let handle = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match handle.map(std::thread::JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(EngineError::User(
                "the checkpoint thread panicked; see the log".into(),
            )),
        }
    }

    /// Takes the job's state at `t`: what [`DriverStore::write_captured`] writes.
    fn capture(
        &self,
        t: BatchTime,
        env: &ExecutionEnv,
        app_name: &str,
        nodes: &[Arc<dyn AnyNode>],
        inputs: &[Arc<dyn Input>],
    ) -> Result<Captured> {
        let graph: Vec<NodeInfo> = nodes.iter().map(|n| n.info().clone()).collect();
        let keys = node_keys(&graph);
        // Rule: only driver-log records known durable are counted as before this
        // checkpoint (`BatchCompleted` is appended without waiting for its commit).
        let log_lsn = self.log.inner().durable_lsn();
        let mut states = Vec::new();
        let mut memos = Vec::new();
        for (n, key) in nodes.iter().zip(&keys) {
            if let Some(entries) = n.state_entries(t, env) {
                states.push((n.info().name.clone().unwrap_or_default(), entries?));
            } else if n.remembers_past(env.batch) {
                memos.push((key.clone(), n.encode_memo(t)?));
            }
        }
        let inputs = input_keys(&graph)
            .into_iter()
            .zip(inputs)
            .filter_map(|(k, i)| Some((k, i.position()?)))
            .collect();
        Ok(Captured {
            t,
            app_name: app_name.to_owned(),
            batch_ms: env.batch.as_millis() as u64,
            zero: env.zero,
            graph,
            states,
            memos,
            inputs,
            log_lsn,
        })
    }

    /// Writes a captured checkpoint: state snapshots, then the metadata checkpoint, then
    /// cleanup.
    fn write_captured(&self, c: Captured, inputs: &[Arc<dyn Input>]) -> Result<CheckpointWritten> {
        let id = CheckpointId(c.t.0);
        let (mut bytes, mut full) = (0u64, true);
        let mut states = Vec::new();
        // The bases taken out are put back, renewed, only once this checkpoint is
        // published: after a failure the next snapshot of each operator is full.
        let mut bases = std::mem::take(
            &mut *self
                .snapshot_bases
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let mut new_bases = Vec::new();
        for (name, entries) in c.states {
            let prefix = snapshot_operator_name(&name);
            let snaps = StateSnapshots::new(
                self.store.clone(),
                &prefix,
                crate::durable::snapshot_options(),
            )
            .map_err(ckpt_err)?;
            // Rule: the snapshot is durable before the checkpoint that names it.
            let (manifest, base) = write_snapshot(&snaps, id, entries()?, bases.remove(&prefix))?;
            // What this checkpoint wrote: its own layer (a delta's manifest also names
            // its base's files, written before).
            let own = format!("{:020}", id.0);
            bytes += manifest
                .files()
                .filter(|f| f.name.contains(&own))
                .map(|f| f.len)
                .sum::<u64>();
            full &= manifest.delta_count() == 0;
            new_bases.push((prefix.clone(), base));
            crate::failpoints::point("mid-checkpoint");
            states.push(StateRef {
                name,
                snapshots: prefix,
                reference: manifest.reference(),
            });
        }
        let data = CheckpointData {
            version: CHECKPOINT_VERSION,
            app_name: c.app_name,
            batch_ms: c.batch_ms,
            zero: c.zero,
            time: c.t,
            inputs: c.inputs,
            graph: c.graph,
            states,
            memos: c.memos,
            log_lsn: c.log_lsn,
        };
        // Rule: the metadata checkpoint is published atomically (the store writes temp,
        // fsyncs, renames, fsyncs the directory, or puts a new object conditionally).
        let payload = crate::runtime::graph::encode(&data)?;
        bytes += payload.len() as u64;
        self.store.put_checkpoint(id, &payload).map_err(ckpt_err)?;
        self.snapshot_bases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(new_bases);
        // The checkpoint is durable: a failed cleanup deletes less, never fails the job.
        if let Err(e) = self.cleanup(&data.graph, inputs) {
            tracing::warn!(error = %e, "cleanup stopped; nothing more is deleted until the next checkpoint");
        }
        Ok(CheckpointWritten { bytes, full })
    }

    /// Deletes checkpoints past retention, then the snapshots, driver-log segments and
    /// input data (receiver WAL segments) no retained checkpoint references — only once
    /// a newer checkpoint is durable. Rule: if any retained checkpoint cannot be read
    /// whole, this round deletes nothing more (what it references is unknown, and may be
    /// all a restart has).
    fn cleanup(&self, graph: &[NodeInfo], inputs: &[Arc<dyn Input>]) -> Result<()> {
        self.store
            .retain_newest(sluice_checkpoint::DEFAULT_RETAINED)
            .map_err(ckpt_err)?;
        crate::failpoints::point("mid-cleanup");
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
            let d = CheckpointData::decode(&c.payload, Some(graph))?;
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
            StateSnapshots::new(
                self.store.clone(),
                prefix,
                crate::durable::snapshot_options(),
            )
            .and_then(|s| s.gc(&refs))
            .map_err(ckpt_err)?;
        }
        let Some(oldest) = oldest else {
            return Ok(());
        };
        self.log.inner().delete_before(oldest.log_lsn)?;
        // Inputs drop what no retained checkpoint can need (receiver WAL segments
        // before the oldest retained checkpoint's position), found by key.
        for (key, input) in input_keys(graph).iter().zip(inputs) {
            if let Some((_, pos)) = oldest.inputs.iter().find(|(k, _)| k == key) {
                input.release_before(pos)?;
            }
        }
        Ok(())
    }
}
