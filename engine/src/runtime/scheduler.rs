//! The batch scheduler: one thread per running context that waits for each batch time
//! and runs the batch — inputs fixed (or replayed from the driver log), `BatchPlanned`
//! logged, outputs run in order, `BatchCompleted` logged, a checkpoint when due.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::observe::listener::{BatchInfo, BatchKind, StreamingListener};
use crate::runtime::context::{now_ms, CtxInner};
use crate::runtime::graph::{AnyNode, ExecutionEnv};
use crate::runtime::io::{Input, Output};
use crate::{BatchTime, EngineError, Result};

pub(crate) fn run_scheduler(inner: &Arc<CtxInner>, env: &ExecutionEnv) -> Result<()> {
    let res = run_batches(inner, env);
    // A checkpoint still being written is finished (or has failed) before the
    // scheduler ends: a stopped context has written what it started.
    let flushed = inner
        .driver_store()
        .map_or(Ok(()), |d| d.finish_checkpoint());
    res.and(flushed)
}

fn run_batches(inner: &Arc<CtxInner>, env: &ExecutionEnv) -> Result<()> {
    let (inputs, outputs, nodes) = {
        let st = inner.state();
        (
            st.inputs.clone(),
            st.outputs.clone(),
            st.registry.nodes.clone(),
        )
    };
    let durable = inner.driver_store();
    let runner = BatchRunner {
        env,
        inputs: &inputs,
        outputs: &outputs,
        nodes: &nodes,
        store: durable.as_ref(),
        app_name: &inner.conf.app_name,
        input_keys: crate::durable::input_keys(
            &nodes.iter().map(|n| n.info().clone()).collect::<Vec<_>>(),
        ),
        input_names: inputs.iter().map(|i| i.status().name).collect(),
    };
    let mut t = env.zero.plus(env.batch);
    // How far batch times run ahead of the clock: zero, except after a restart whose
    // driver log already planned batch times in the future (an earlier build could run
    // ahead while draining). Batch times only ever grow (sinks commit by them), so such
    // a job keeps its times and runs them at the batch interval instead of sitting idle
    // until the clock catches up.
    let mut lead = 0u64;
    let plan = durable
        .as_ref()
        .and_then(|d| d.plan.lock().unwrap_or_else(|e| e.into_inner()).take());
    if let Some(plan) = plan {
        // Restart: re-run what was planned after the checkpoint, with the same inputs,
        // then the batch times the clock passed while the driver was down.
        let listeners = inner.state().listeners.clone();
        for (time, plans) in &plan.replay {
            runner.run_batch(*time, Some(plans), BatchKind::Replay, &listeners)?;
        }
        for time in &plan.catch_up {
            runner.run_batch(*time, None, BatchKind::CatchUp, &listeners)?;
        }
        t = plan.next;
        let now = now_ms();
        let batch = env.batch.as_millis() as u64;
        if t.0 > now + batch {
            lead = t.0 - now - batch;
            tracing::warn!(
                ahead_ms = lead,
                "the driver log planned batch times ahead of the clock; they keep their times and run at the batch interval"
            );
        }
    }
    loop {
        // Wait for the batch time, or an immediate stop, or a drained graceful one.
        let mut st = inner.state();
        loop {
            if inner.stop.load(Ordering::SeqCst)
                && (!inner.graceful.load(Ordering::SeqCst)
                    || inputs.iter().all(|i| i.drained())
                    // While a graceful stop drains the inputs, a batch runs before its
                    // time only when an input holds data it would take now (a queue);
                    // a receiver still draining with nothing stored waits for the
                    // clock, so empty batches do not race ahead of it.
                    || inputs.iter().any(|i| i.ready()))
            {
                break;
            }
            let now = now_ms() + lead;
            if now >= t.0 {
                break;
            }
            // Woken early by a stop; a graceful one re-checks the inputs at least every
            // 50 ms while it waits.
            let wait = (t.0 - now).min(if inner.stop.load(Ordering::SeqCst) {
                50
            } else {
                u64::MAX
            });
            st = inner
                .done
                .wait_timeout(st, Duration::from_millis(wait))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let listeners = st.listeners.clone();
        drop(st);
        if inner.stop.load(Ordering::SeqCst) {
            if !inner.graceful.load(Ordering::SeqCst) {
                return Ok(());
            }
            if inputs.iter().all(|i| i.drained()) {
                return Ok(());
            }
        }
        runner.run_batch(t, None, BatchKind::Live, &listeners)?;
        t = t.plus(env.batch);
    }
}

struct BatchRunner<'a> {
    env: &'a ExecutionEnv,
    inputs: &'a [Arc<dyn Input>],
    outputs: &'a [Arc<dyn Output>],
    nodes: &'a [Arc<dyn AnyNode>],
    store: Option<&'a Arc<crate::durable::DriverStore>>,
    app_name: &'a str,
    /// The inputs' stable keys, in input order.
    input_keys: Vec<String>,
    /// The inputs' names for listeners (as their `InputStatus` names them), in input
    /// order.
    input_names: Vec<String>,
}

impl BatchRunner<'_> {
    /// Runs batch `t` and returns its records: fix its inputs (or replay a logged plan), log the plan durably,
    /// run the outputs in order, log completion, checkpoint when due.
    fn run_batch(
        &self,
        t: BatchTime,
        replay: Option<&[(usize, Vec<u8>)]>,
        kind: BatchKind,
        listeners: &[Arc<dyn StreamingListener>],
    ) -> Result<u64> {
        let env = self.env;
        let span = tracing::info_span!("batch", time = t.0, replay = replay.is_some());
        let _g = span.enter();
        let submitted = Instant::now();
        let mut records = 0;
        let mut input_records = Vec::with_capacity(self.inputs.len());
        for (i, input) in self.inputs.iter().enumerate() {
            let logged = replay.and_then(|p| p.iter().find(|(input, _)| *input == i));
            let n = match logged {
                Some((_, plan)) => input.replay(t, plan, env)?,
                None => input.allocate(t, env)?,
            };
            records += n;
            if !listeners.is_empty() {
                input_records.push((self.input_names[i].clone(), n));
            }
        }
        if let (Some(d), None) = (self.store, replay) {
            // Each plan under its input's stable key (see sluice_recovery::identity).
            let plans = self
                .input_keys
                .iter()
                .zip(self.inputs)
                .filter_map(|(key, input)| {
                    input
                        .plan_of(t)
                        .map(|plan| sluice_recovery::log::InputPlan {
                            input: key.clone(),
                            plan,
                        })
                })
                .collect();
            d.planned(t, plans)?;
        }
        let mut info = BatchInfo {
            time: t,
            records,
            scheduling_delay: Duration::from_millis(now_ms().saturating_sub(t.0)),
            processing_delay: None,
            kind,
            input_records,
        };
        for l in listeners {
            l.on_batch_submitted(&info);
            l.on_batch_started(&info);
        }
        let started = Instant::now();
        for out in self.outputs {
            if let Err(e) = out.run(t, env) {
                let e = EngineError::Batch {
                    time: t,
                    output: out.describe(),
                    cause: Box::new(e),
                };
                info.processing_delay = Some(started.elapsed());
                let error = e.to_string();
                for l in listeners {
                    l.on_batch_failed(&info, &error);
                }
                return Err(e);
            }
        }
        info.processing_delay = Some(started.elapsed());
        // A window reads its parent's past batches: compute them now, before the inputs
        // forget this batch's data, also where no output read them at `t`.
        for n in self.nodes {
            n.keep_for_window(t, env)?;
        }
        if let Some(d) = self.store {
            d.completed(t)?;
            if d.due(t, env) {
                d.checkpoint(t, env, self.app_name, self.nodes, self.inputs, listeners)?;
            }
        }
        for n in self.nodes {
            n.forget(t);
        }
        for i in self.inputs {
            i.forget(t);
        }
        tracing::debug!(records, took = ?submitted.elapsed(), "batch done");
        for l in listeners {
            l.on_batch_completed(&info);
        }
        Ok(records)
    }
}
