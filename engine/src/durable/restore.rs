//! Restart: `get_or_create` rebuilds the graph with the user's function, reads the
//! newest checkpoint that reads back whole and the driver log after it, compares the
//! rebuilt graph with the checkpointed one, restores state, window memos and input
//! positions, and hands the scheduler the batches to re-run.

use sluice_checkpoint::snapshot::{SnapshotOptions, StateSnapshots};
use sluice_checkpoint::StartMode;
use sluice_recovery::graph::NodeInfo;
use sluice_recovery::log::DriverEvent;
use sluice_recovery::plan::plan_restart;

use super::checkpoint::CheckpointData;
use super::{ckpt_err, snapshot_operator_name};
use crate::runtime::graph::ExecutionEnv;
use crate::{BatchTime, EngineError, Result, StreamingConf, StreamingContext};

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
        let durable = ssc.inner.driver_store().ok_or(EngineError::NotStarted)?;
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
            DriverEvent::Started { zero, batch_ms } => Some((zero.0, *batch_ms)),
            _ => None,
        });
        let data = recovered
            .checkpoint
            .as_ref()
            .map(|c| CheckpointData::decode(&c.payload))
            .transpose()?;
        let (zero_ms, stored_batch) = match (&data, started) {
            (Some(d), _) => (d.zero.0, d.batch_ms),
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
        let env = ExecutionEnv {
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
            let t = d.time;
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
            checkpoint_ms = Some(d.time.0);
            tracing::info!(
                location = %durable.location,
                checkpoint = d.time.0,
                skipped = recovered.skipped.len(),
                "restored from checkpoint"
            );
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let plan = plan_restart(
            checkpoint_ms.map(BatchTime),
            &events,
            BatchTime(zero_ms),
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
