//! Restart: `get_or_create` rebuilds the graph with the user's function, reads every
//! retained checkpoint and the driver log, and acts on the one pure decision
//! (`sluice_recovery::resolve`): restore state, window contents and input positions into
//! the nodes it names, and hand the scheduler the batches to re-run. A checkpoint whose
//! snapshots cannot be read whole is set aside and the decision taken again, falling
//! back to the next older one; nothing is applied to the graph until everything the
//! chosen checkpoint names has been read.

use std::sync::Arc;

use sluice_checkpoint::snapshot::StateSnapshots;
use sluice_checkpoint::{CheckpointError, CheckpointStore};
use sluice_recovery::graph::NodeInfo;
use sluice_recovery::log::DriverEvent;
use sluice_recovery::resolve::{resolve, RestartDecision, RestartInputs, Resume, Unusable};

use super::checkpoint::CheckpointData;
use super::{ckpt_err, DriverStore};
use crate::runtime::graph::ExecutionEnv;
use crate::{BatchTime, EngineError, Result, StreamingConf, StreamingContext};

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
        let store = self.inner.driver_store().ok_or(EngineError::NotStarted)?;
        let conf = &self.inner.conf;
        let (nodes, inputs) = self.inner.nodes_and_inputs();
        let graph: Vec<NodeInfo> = nodes.iter().map(|n| n.info().clone()).collect();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let decided = store.decide(
            &graph,
            conf.batch_interval.as_millis() as u64,
            conf.drop_incompatible_state,
            conf.down_time,
            now_ms,
        )?;
        *store
            .started_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = decided.started_logged;
        let Some((resume, loaded)) = decided.resume else {
            return Ok(()); // a first start
        };
        for s in &resume.skipped {
            tracing::warn!(
                checkpoint = s.time.0,
                reason = %s.reason,
                "skipped a checkpoint that cannot be used; fell back to an older one"
            );
        }
        for change in &resume.changes {
            tracing::info!("graph changed since the checkpoint (compatible): {change}");
        }
        for change in &resume.dropped {
            tracing::warn!("dropping state on an incompatible change, as configured: {change}");
        }
        for orphan in &resume.orphan_plans {
            tracing::warn!(
                "a logged input plan belongs to no input of the rebuilt graph: {orphan}"
            );
        }
        // Apply: everything was read whole.
        let env = ExecutionEnv {
            zero: resume.zero,
            ..self.inner.env.clone()
        };
        if let (Some(t), Some(d)) = (resume.checkpoint, &loaded.data) {
            for ((_, index), entries) in resume.states.iter().zip(loaded.states) {
                nodes[*index].restore_state(t, entries, &env)?;
            }
            for (key, index) in &resume.memos {
                if let Some((_, bytes)) = d.memos.iter().find(|(k, _)| k == key) {
                    nodes[*index].restore_memo(bytes)?;
                }
            }
            for (key, index) in &resume.positions {
                if let Some((_, pos)) = d.inputs.iter().find(|(k, _)| k == key) {
                    inputs[*index].restore_position(pos)?;
                }
            }
            tracing::info!(location = %store.location, checkpoint = t.0, "restored from checkpoint");
        }
        tracing::info!("restart: {}", resume.summary());
        let info = crate::observe::listener::RestoreInfo {
            checkpoint: resume.checkpoint,
            location: resume
                .checkpoint
                .map_or_else(|| store.location.clone(), |t| store.checkpoint_location(t)),
            skipped: resume
                .skipped
                .iter()
                .map(|s| (s.time, s.reason.clone()))
                .collect(),
            replayed_batches: resume.replay.len() as u64,
            caught_up_batches: resume.catch_up.len() as u64,
            decision: resume.summary(),
        };
        for l in self.inner.listeners() {
            l.on_restore(&info);
        }
        *store.plan.lock().unwrap_or_else(|e| e.into_inner()) = Some(*resume);
        Ok(())
    }
}

/// What [`DriverStore::decide`] found: the decision, and what it read for it.
pub(crate) struct Decided {
    /// `None`: a first start.
    pub resume: Option<(Box<Resume>, Loaded)>,
    /// Whether the driver log holds a `Started` record.
    pub started_logged: bool,
}

/// What a resume restores, read whole before anything is applied.
pub(crate) struct Loaded {
    /// The checkpoint restored.
    pub data: Option<CheckpointData>,
    /// The state entries of each operator of `Resume::states`, in that order.
    pub states: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl DriverStore {
    /// Reads the retained checkpoints and the driver log and takes the restart
    /// decision for `graph`, falling back past checkpoints whose snapshots cannot be
    /// read whole. Reads only: nothing is changed.
    pub(crate) fn decide(
        &self,
        graph: &[NodeInfo],
        batch_ms: u64,
        drop_incompatible_state: bool,
        down_time: sluice_recovery::plan::DownTime,
        now_ms: u64,
    ) -> Result<Decided> {
        let events: Vec<DriverEvent> = {
            let wal = self.log.inner();
            self.log
                .iter_from(wal.first_lsn())?
                .map(|r| r.map(|(_, e)| e))
                .collect::<std::result::Result<_, _>>()?
        };
        let started_logged = events
            .iter()
            .any(|e| matches!(e, DriverEvent::Started { .. }));
        let (mut usable, mut unusable) = read_retained(&*self.store, graph)?;
        loop {
            let views: Vec<_> = usable.iter().map(CheckpointData::view).collect();
            let decision = resolve(&RestartInputs {
                checkpoints: &views,
                unusable: &unusable,
                log: &events,
                graph,
                batch_ms,
                drop_incompatible_state,
                down_time,
                now_ms,
            });
            let resume = match decision {
                RestartDecision::Fresh => {
                    return Ok(Decided {
                        resume: None,
                        started_logged,
                    })
                }
                RestartDecision::Refuse(reasons) if usable.is_empty() => {
                    return Err(EngineError::Checkpoint(
                        CheckpointError::NoReadableCheckpoint {
                            location: self.location.clone(),
                            detail: reasons.join("; "),
                        },
                    ))
                }
                RestartDecision::Refuse(differences) => {
                    return Err(EngineError::IncompatibleGraph { differences })
                }
                RestartDecision::Resume(r) => r,
            };
            let Some(t) = resume.checkpoint else {
                let loaded = Loaded {
                    data: None,
                    states: Vec::new(),
                };
                return Ok(Decided {
                    resume: Some((resume, loaded)),
                    started_logged,
                });
            };
            let at = usable
                .iter()
                .position(|d| d.time == t)
                .expect("the decision names a checkpoint it was given");
            match read_states(&self.store, &usable[at], &resume) {
                Ok(states) => {
                    let loaded = Loaded {
                        data: Some(usable.swap_remove(at)),
                        states,
                    };
                    return Ok(Decided {
                        resume: Some((resume, loaded)),
                        started_logged,
                    });
                }
                // Damage (a missing or corrupt snapshot file): set this checkpoint
                // aside and decide again. An I/O error is not damage: stop rather than
                // fall back past a checkpoint that may be fine.
                Err(e) if e.is_damage() => {
                    tracing::warn!(checkpoint = t.0, error = %e, "a checkpoint's state cannot be read whole; falling back to an older checkpoint");
                    usable.remove(at);
                    unusable.push(Unusable {
                        time: t,
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(ckpt_err(e)),
            }
        }
    }
}

/// Every retained checkpoint, newest first: those whose metadata reads back whole and
/// decodes, and the others with the reason.
fn read_retained(
    store: &dyn CheckpointStore,
    graph: &[NodeInfo],
) -> Result<(Vec<CheckpointData>, Vec<Unusable>)> {
    let mut usable = Vec::new();
    let mut unusable = Vec::new();
    for id in store
        .list_checkpoints()
        .map_err(ckpt_err)?
        .into_iter()
        .rev()
    {
        let time = BatchTime(id.0);
        match store.read_checkpoint(id) {
            Ok(c) => match CheckpointData::decode(&c.payload, Some(graph)) {
                Ok(d) => usable.push(d),
                Err(e) => unusable.push(Unusable {
                    time,
                    reason: format!("{}: {e}", store.object_path(&id.file_name())),
                }),
            },
            Err(e) if !e.is_damage() => return Err(ckpt_err(e)),
            Err(e) => unusable.push(Unusable {
                time,
                reason: e.to_string(),
            }),
        }
    }
    Ok((usable, unusable))
}

/// Reads the snapshot of every operator `resume` restores, whole (CRC-checked).
fn read_states(
    store: &Arc<dyn CheckpointStore>,
    d: &CheckpointData,
    resume: &Resume,
) -> std::result::Result<Vec<Vec<(Vec<u8>, Vec<u8>)>>, CheckpointError> {
    let mut out = Vec::with_capacity(resume.states.len());
    for (name, _) in &resume.states {
        let s =
            d.states
                .iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| CheckpointError::NotFound {
                    path: format!("checkpoint of batch {}", d.time.0),
                    hint: format!("it names no snapshot of operator {name:?}"),
                })?;
        let snaps = StateSnapshots::new(
            store.clone(),
            &s.snapshots,
            crate::durable::snapshot_options(),
        )?;
        let manifest = snaps.read_manifest(s.reference)?;
        out.push(snaps.restore_entries(&manifest)?);
    }
    Ok(out)
}
