//! The durability protocol of DESIGN.md, per batch: the driver log (`BatchPlanned`
//! durable before any job of the batch runs, `BatchCompleted` after every output),
//! metadata + state checkpoints, cleanup, and `get_or_create` on restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_checkpoint::snapshot::{SnapshotOptions, SnapshotRef, StateSnapshots};
use sluice_checkpoint::{CheckpointId, CheckpointStore, StartMode};
use sluice_recovery::graph::NodeInfo;
use sluice_recovery::log::{DriverEvent, InputPlan};
use sluice_recovery::plan::{plan_restart, RestartPlan};
use sluice_wal::{Durability, Lsn, TypedWal, Wal, WalOptions};

pub mod inspect;

use crate::runtime::context::Input;
use crate::runtime::graph::{AnyNode, Env};
use crate::{BatchTime, EngineError, Result, StreamingConf, StreamingContext};

/// The format version of the engine's checkpoint payload.
const CHECKPOINT_VERSION: u32 = 1;

/// What a metadata checkpoint holds (bincode inside the checkpoint store's CRC-checked
/// envelope).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CheckpointData {
    pub version: u32,
    pub app_name: String,
    pub batch_ms: u64,
    pub zero_ms: u64,
    pub time_ms: u64,
    pub graph: Vec<NodeInfo>,
    /// Each input's position after batch `time_ms`, by input index.
    pub inputs: Vec<Option<Vec<u8>>>,
    /// State snapshots of stateful operators, by operator name.
    pub states: Vec<(String, SnapshotRef)>,
    /// Remembered batches of nodes a window reads, by node id.
    pub memos: Vec<(usize, Vec<u8>)>,
    /// The first driver-log LSN after this checkpoint.
    pub log_lsn: u64,
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

/// The durable side of a running context.
pub(crate) struct Durable {
    pub(crate) location: String,
    pub(crate) store: Arc<dyn CheckpointStore>,
    pub(crate) log: TypedWal<DriverEvent>,
    /// How often to checkpoint, in ms (a multiple of the batch interval).
    pub(crate) every_ms: u64,
    /// Set by `get_or_create`, taken by the scheduler on start.
    pub(crate) plan: Mutex<Option<RestartPlan>>,
    /// Whether the log already holds a `Started` record.
    pub(crate) started_logged: Mutex<bool>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("location", &self.location)
            .finish()
    }
}

fn ckpt_err(e: sluice_checkpoint::CheckpointError) -> EngineError {
    EngineError::Checkpoint(e)
}

/// The location of a log kept beside the checkpoints (`name` under a directory or
/// prefix; next to a RocksDB directory).
pub(crate) fn side_url(location: &str, name: &str) -> String {
    if let Some(path) = location.strip_prefix("rocksdb://") {
        format!("{}-{name}", path.trim_end_matches('/'))
    } else {
        format!("{}/{name}", location.trim_end_matches('/'))
    }
}

/// The driver log's location for a checkpoint location.
pub(crate) fn driver_log_url(location: &str) -> String {
    side_url(location, "driver-log")
}

/// A state snapshot operator name (ASCII letters, digits, `-`, `_`) for any user name:
/// other characters become `_`, and a hash of the original keeps names apart.
pub(crate) fn snapshot_operator_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .take(60)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{clean}-{:08x}",
        crate::ops::dstream::stable_hash(&name) as u32
    )
}

impl Durable {
    pub(crate) fn open(conf: &StreamingConf) -> Result<Option<Durable>> {
        let Some(location) = conf.checkpoint.clone() else {
            return Ok(None);
        };
        let store = sluice_checkpoint::open_location(&location).map_err(ckpt_err)?;
        let opts = WalOptions {
            durability: Durability::GroupCommit {
                max_wait: Duration::ZERO,
            },
            ..WalOptions::default()
        };
        let wal = Wal::open_url(&driver_log_url(&location), opts)?;
        let report = wal.recovery_report();
        if !report.is_clean() {
            tracing::warn!(?report, "the driver log was repaired on open");
        }
        let batch = conf.batch_interval.as_millis() as u64;
        let every_ms = conf
            .checkpoint_interval
            .map_or(batch.max(10_000).div_ceil(batch) * batch, |d| {
                d.as_millis() as u64
            });
        Ok(Some(Durable {
            location,
            store,
            log: TypedWal::new(wal),
            every_ms,
            plan: Mutex::new(None),
            started_logged: Mutex::new(false),
        }))
    }

    /// Rule: `BatchPlanned` is durable before any job of the batch runs.
    pub(crate) fn planned(&self, t: BatchTime, inputs: Vec<InputPlan>) -> Result<()> {
        // Crash mid append: the record is queued (maybe written) but not yet durable.
        let a = self.log.inner().submit(&TypedWal::<DriverEvent>::encode(
            &DriverEvent::BatchPlanned {
                time_ms: t.0,
                inputs,
            },
        )?)?;
        crate::failpoints::point("driver-log-append");
        self.log.inner().wait(a.lsn)?;
        crate::failpoints::point("after-batch-planned");
        Ok(())
    }

    /// Rule: `BatchCompleted` after every output of the batch committed. It need not be
    /// durable at once: if it is lost, the batch is replayed and exactly-once sinks skip
    /// it; it becomes durable with the next batch's `BatchPlanned`.
    pub(crate) fn completed(&self, t: BatchTime) -> Result<()> {
        self.log.inner().submit(&TypedWal::<DriverEvent>::encode(
            &DriverEvent::BatchCompleted { time_ms: t.0 },
        )?)?;
        Ok(())
    }

    pub(crate) fn log_started(&self, zero: BatchTime, batch: Duration) -> Result<()> {
        let mut logged = self
            .started_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !*logged {
            self.log.append(&DriverEvent::Started {
                zero_ms: zero.0,
                batch_ms: batch.as_millis() as u64,
            })?;
            *logged = true;
        }
        Ok(())
    }

    pub(crate) fn due(&self, t: BatchTime, env: &Env) -> bool {
        (t.0 - env.zero.0).is_multiple_of(self.every_ms.max(1))
    }

    /// Writes the checkpoint of batch `t` (after it completed): state snapshots first,
    /// then the metadata checkpoint naming them, then cleanup of what nothing references.
    pub(crate) fn checkpoint(
        &self,
        t: BatchTime,
        env: &Env,
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
            zero_ms: env.zero.0,
            time_ms: t.0,
            graph: nodes.iter().map(|n| n.info().clone()).collect(),
            inputs: inputs.iter().map(|i| i.position()).collect(),
            states,
            memos,
            log_lsn: self.log.inner().next_lsn().0,
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
            if d.log_lsn < oldest_lsn {
                oldest_positions = Some(d.inputs.clone());
            }
            oldest_lsn = oldest_lsn.min(d.log_lsn);
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

/// An incompatible change between the checkpointed graph and the rebuilt one.
fn incompatible(differences: Vec<String>) -> EngineError {
    EngineError::IncompatibleGraph { differences }
}

impl StreamingContext {
    /// Creates the context with `build`, and — when the checkpoint location holds a
    /// checkpoint or a driver log — restores it: the rebuilt graph is compared with the
    /// checkpointed one (identical or compatible: resume and log what changed;
    /// incompatible: an error listing every difference, unless
    /// [`StreamingConf::drop_incompatible_state`]), operator state, input positions and
    /// window contents are restored, and the batches to re-run are planned: those
    /// planned but not completed, those completed after the state snapshot, and those the
    /// clock passed while the driver was down. Call `start` on the result.
    pub fn get_or_create(
        conf: StreamingConf,
        build: impl FnOnce(&StreamingContext) -> Result<()>,
    ) -> Result<StreamingContext> {
        if conf.checkpoint.is_none() {
            return Err(EngineError::Config {
                setting: "checkpoint".into(),
                reason: "get_or_create needs a checkpoint location (StreamingConf::checkpoint or SLUICE_CHECKPOINT)".into(),
            });
        }
        let ssc = StreamingContext::new(conf)?;
        // On any error the context is stopped, which releases the driver log's lock (the
        // graph's closures would otherwise keep the context, and the lock, alive).
        match build(&ssc).and_then(|()| ssc.restore()) {
            Ok(()) => Ok(ssc),
            Err(e) => {
                let _ = ssc.stop(false);
                Err(e)
            }
        }
    }

    /// The restore half of `get_or_create`.
    fn restore(&self) -> Result<()> {
        let ssc = self;
        let durable = ssc.inner.durable().ok_or(EngineError::NotStarted)?;
        let conf = &ssc.inner.conf;
        let batch_ms = conf.batch_interval.as_millis() as u64;
        let recovered = durable
            .store
            .read_newest(StartMode::FreshIfEmpty)
            .map_err(ckpt_err)?;
        for s in &recovered.skipped {
            tracing::warn!(checkpoint = %s.path, reason = %s.reason, "skipped an unreadable checkpoint, falling back to an older one");
        }
        let events: Vec<DriverEvent> = {
            let wal = durable.log.inner();
            durable
                .log
                .iter_from(wal.first_lsn())?
                .map(|r| r.map(|(_, e)| e))
                .collect::<std::result::Result<_, _>>()?
        };
        let started = events.iter().find_map(|e| match e {
            DriverEvent::Started { zero_ms, batch_ms } => Some((*zero_ms, *batch_ms)),
            _ => None,
        });
        let data = recovered
            .checkpoint
            .as_ref()
            .map(|c| CheckpointData::decode(&c.payload))
            .transpose()?;
        let (zero_ms, stored_batch) = match (&data, started) {
            (Some(d), _) => (d.zero_ms, d.batch_ms),
            (None, Some(s)) => s,
            (None, None) => return Ok(()), // a first start
        };
        *durable
            .started_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = started.is_some();
        if stored_batch != batch_ms {
            return Err(incompatible(vec![format!(
                "batch interval changed from {stored_batch} ms to {batch_ms} ms"
            )]));
        }
        let env = Env {
            zero: BatchTime(zero_ms),
            ..ssc.inner.env.clone()
        };
        let (nodes, inputs) = ssc.inner.nodes_and_inputs();
        let mut checkpoint_ms = None;
        if let Some(d) = &data {
            let rebuilt: Vec<NodeInfo> = nodes.iter().map(|n| n.info().clone()).collect();
            let cmp = sluice_recovery::graph::compare(&d.graph, &rebuilt);
            for change in &cmp.compatible {
                tracing::info!("graph changed since the checkpoint (compatible): {change}");
            }
            if !cmp.incompatible.is_empty() {
                if !conf.drop_incompatible_state {
                    return Err(incompatible(cmp.incompatible));
                }
                for change in &cmp.incompatible {
                    tracing::warn!(
                        "dropping state on an incompatible change, as configured: {change}"
                    );
                }
            }
            let t = BatchTime(d.time_ms);
            for (name, r) in &d.states {
                if cmp.dropped_state.contains(name) {
                    continue;
                }
                let Some(node) = nodes
                    .iter()
                    .find(|n| n.info().name.as_deref() == Some(name) && n.info().is_stateful())
                else {
                    continue;
                };
                let snaps = StateSnapshots::new(
                    durable.store.clone(),
                    &snapshot_operator_name(name),
                    SnapshotOptions::default(),
                )
                .map_err(ckpt_err)?;
                let manifest = snaps.read_manifest(*r).map_err(ckpt_err)?;
                let entries = snaps.restore(&manifest).map_err(ckpt_err)?;
                node.restore_state(t, entries.into_iter().collect(), &env)?;
            }
            if cmp.incompatible.is_empty() {
                for (id, bytes) in &d.memos {
                    if let Some(n) = nodes.get(*id) {
                        n.restore_memo(bytes)?;
                    }
                }
            }
            for (input, pos) in inputs.iter().zip(&d.inputs) {
                if let Some(pos) = pos {
                    input.restore_position(pos)?;
                }
            }
            checkpoint_ms = Some(d.time_ms);
            tracing::info!(
                location = %durable.location,
                checkpoint = d.time_ms,
                skipped = recovered.skipped.len(),
                "restored from checkpoint"
            );
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let plan = plan_restart(
            checkpoint_ms,
            &events,
            zero_ms,
            batch_ms,
            now,
            conf.down_time,
        );
        tracing::info!(
            replay = plan.replay.len(),
            replay_completed = plan.replay_completed.len(),
            catch_up = plan.catch_up.len(),
            "restart plan"
        );
        *durable.plan.lock().unwrap_or_else(|e| e.into_inner()) = Some(plan);
        Ok(())
    }
}
