//! `StreamingContext`: owns the graph, the inputs and outputs, and the batch scheduler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::observe::listener::{BatchInfo, StreamingListener};
use crate::runtime::graph::{AnyNode, ComputeFn, Env, Node, NodeInfo, Registry};
use crate::{BatchTime, DStream, EngineError, Result, StreamingConf};

/// An input of the graph: decides the data of each batch.
pub(crate) trait Input: Send + Sync {
    /// A name for logs (`socket 127.0.0.1:9999`).
    fn describe(&self) -> String;
    /// Starts receiving (receivers start their threads here).
    fn start(&self, env: &Env) -> Result<()>;
    /// Fixes the data of batch `t` (blocks received so far, or an offset range) and
    /// returns how many records it holds. Called once per batch, in time order, before
    /// any job of `t` runs.
    fn allocate(&self, t: BatchTime, env: &Env) -> Result<u64>;
    /// Stops receiving new data (already received data stays to be allocated).
    fn stop_receiving(&self);
    /// Whether everything received has been allocated to a batch.
    fn drained(&self) -> bool;
    /// Forgets allocations of batches at or before `t` (they are processed).
    fn forget(&self, t: BatchTime);
    /// What `allocate` fixed for batch `t`, encoded for the driver log so a restarted
    /// driver can `replay` it; `None` for an input that cannot replay (its data for an
    /// unfinished batch is lost in a crash).
    fn plan_of(&self, _t: BatchTime) -> Option<Vec<u8>> {
        None
    }
    /// Fixes the data of batch `t` from a plan written by `plan_of` (restart).
    fn replay(&self, _t: BatchTime, _plan: &[u8], _env: &Env) -> Result<u64> {
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
    /// Drops what the input keeps for replays before `pos`, a position no retained
    /// checkpoint precedes (cleanup after a checkpoint).
    fn release_before(&self, _pos: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// An output operation: runs once per batch time, in definition order.
pub(crate) trait Output: Send + Sync {
    fn describe(&self) -> String;
    fn run(&self, t: BatchTime, env: &Env) -> Result<()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Defining,
    Running,
    Stopped,
}

pub(crate) struct GraphState {
    phase: Phase,
    pub(crate) registry: Registry,
    inputs: Vec<Arc<dyn Input>>,
    outputs: Vec<Arc<dyn Output>>,
    listeners: Vec<Arc<dyn StreamingListener>>,
    scheduler: Option<JoinHandle<()>>,
    result: Option<Result<()>>,
}

impl GraphState {
    /// Drops the graph of a stopped context. Nodes and outputs hold handles to the
    /// context, so without this the context (with its driver log and its lock) would
    /// outlive every handle the user dropped, and a restart in the same process could
    /// not open the checkpoint location again.
    fn release_graph(&mut self) {
        self.registry.nodes.clear();
        self.inputs.clear();
        self.outputs.clear();
    }
}

pub(crate) struct CtxInner {
    pub(crate) conf: StreamingConf,
    pub(crate) env: Env,
    /// The driver log and checkpoint store; released when the context stops (the
    /// graph's closures keep the context itself alive, and with it the log's lock).
    pub(crate) durable: Mutex<Option<Arc<crate::durable::Durable>>>,
    state: Mutex<GraphState>,
    /// Receivers defined so far (names their write-ahead logs).
    pub(crate) receiver_count: std::sync::atomic::AtomicUsize,
    done: Condvar,
    stop: AtomicBool,
    graceful: AtomicBool,
}

impl std::fmt::Debug for CtxInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingContext")
            .field("app", &self.conf.app_name)
            .finish()
    }
}

static ACTIVE: Mutex<Option<String>> = Mutex::new(None);

fn active() -> MutexGuard<'static, Option<String>> {
    ACTIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl CtxInner {
    fn state(&self) -> MutexGuard<'_, GraphState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn durable(&self) -> Option<Arc<crate::durable::Durable>> {
        self.durable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn nodes_and_inputs(&self) -> (Vec<Arc<dyn AnyNode>>, Vec<Arc<dyn Input>>) {
        let st = self.state();
        (st.registry.nodes.clone(), st.inputs.clone())
    }

    /// Adds a node; refused once the context has started.
    pub(crate) fn add_node<T: crate::Data>(
        self: &Arc<Self>,
        mut info: NodeInfo,
        slide: Duration,
        compute: ComputeFn<T>,
    ) -> Result<Arc<Node<T>>> {
        let mut st = self.state();
        match st.phase {
            Phase::Defining => {}
            Phase::Running => {
                return Err(EngineError::AfterStart {
                    what: "add an operation",
                })
            }
            Phase::Stopped => return Err(EngineError::Stopped),
        }
        if let Some(name) = &info.name {
            if st
                .registry
                .nodes
                .iter()
                .any(|n| n.info().name.as_deref() == Some(name.as_str()))
            {
                return Err(EngineError::OperatorName {
                    name: name.clone(),
                    reason: "another operator already has this name; names must be unique".into(),
                });
            }
        }
        info.id = st.registry.nodes.len();
        info.slide_ms = slide.as_millis() as u64;
        let node = Arc::new(Node::new(info, slide, compute));
        st.registry.nodes.push(node.clone() as Arc<dyn AnyNode>);
        Ok(node)
    }

    pub(crate) fn add_input(&self, input: Arc<dyn Input>) -> Result<()> {
        let mut st = self.state();
        if st.phase != Phase::Defining {
            return Err(EngineError::AfterStart {
                what: "add an input",
            });
        }
        st.inputs.push(input);
        Ok(())
    }

    pub(crate) fn add_output(&self, output: Arc<dyn Output>) -> Result<()> {
        let mut st = self.state();
        match st.phase {
            Phase::Defining => {}
            Phase::Running => {
                return Err(EngineError::AfterStart {
                    what: "add an output",
                })
            }
            Phase::Stopped => return Err(EngineError::Stopped),
        }
        st.outputs.push(output);
        Ok(())
    }

    /// Checks that `d` is a positive multiple of the batch interval.
    pub(crate) fn check_multiple(&self, what: &'static str, d: Duration) -> Result<()> {
        let b = self.conf.batch_interval.as_millis();
        let m = d.as_millis();
        if m == 0 || !m.is_multiple_of(b) || !d.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(EngineError::NotMultipleOfBatch {
                what,
                duration: d,
                batch: self.conf.batch_interval,
            });
        }
        Ok(())
    }
}

/// The entry point of a streaming job: define the graph on it, then `start` it.
///
/// ```no_run
/// use std::time::Duration;
/// use sluice::prelude::*;
///
/// let ssc = StreamingContext::new(StreamingConf::new("wordcount", Duration::from_secs(1)))?;
/// let lines = ssc.generator_stream("lines", 1000, |n| format!("word{} other", n % 7))?;
/// let counts = lines
///     .flat_map(|l: &String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())?
///     .map(|w: &String| (w.clone(), 1u64))?
///     .reduce_by_key(|a: &u64, b: &u64| a + b)?;
/// counts.print(10)?;
/// ssc.start()?;
/// ssc.await_termination()?;
/// # Ok::<(), sluice::EngineError>(())
/// ```
#[derive(Debug, Clone)]
pub struct StreamingContext {
    pub(crate) inner: Arc<CtxInner>,
}

impl StreamingContext {
    /// A context for `conf` (validated).
    pub fn new(conf: StreamingConf) -> Result<Self> {
        conf.validate()?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(conf.parallelism)
            .thread_name(|i| format!("sluice-cpu-{i}"))
            .build()
            .map_err(|e| EngineError::Config {
                setting: "parallelism".into(),
                reason: format!("cannot start the CPU pool: {e}"),
            })?;
        let env = Env {
            zero: BatchTime(0),
            batch: conf.batch_interval,
            parallelism: conf.parallelism,
            pool: Arc::new(pool),
        };
        let durable = crate::durable::Durable::open(&conf)?.map(Arc::new);
        Ok(StreamingContext {
            inner: Arc::new(CtxInner {
                conf,
                env,
                durable: Mutex::new(durable),
                receiver_count: std::sync::atomic::AtomicUsize::new(0),
                state: Mutex::new(GraphState {
                    phase: Phase::Defining,
                    registry: Registry::default(),
                    inputs: Vec::new(),
                    outputs: Vec::new(),
                    listeners: Vec::new(),
                    scheduler: None,
                    result: None,
                }),
                done: Condvar::new(),
                stop: AtomicBool::new(false),
                graceful: AtomicBool::new(false),
            }),
        })
    }

    /// The configuration.
    pub fn conf(&self) -> &StreamingConf {
        &self.inner.conf
    }

    /// Adds a listener for batch events.
    pub fn add_listener(&self, l: Arc<dyn StreamingListener>) {
        self.inner.state().listeners.push(l);
    }

    /// The graph: every node's descriptor, in definition order.
    pub fn graph(&self) -> Vec<NodeInfo> {
        self.inner
            .state()
            .registry
            .nodes
            .iter()
            .map(|n| n.info().clone())
            .collect()
    }

    /// A stream of `T` computed by `compute` at every batch time (for custom sources and
    /// tests); `kind` names it in the graph.
    pub(crate) fn node_stream<T: crate::Data>(
        &self,
        info: NodeInfo,
        compute: ComputeFn<T>,
    ) -> Result<DStream<T>> {
        let node = self
            .inner
            .add_node(info, self.inner.conf.batch_interval, compute)?;
        Ok(DStream {
            ctx: self.inner.clone(),
            node,
        })
    }

    /// Starts the job: aligns the zero time to the batch interval, starts the inputs and
    /// the scheduler. Errors for a second start, a start after stop, a graph without
    /// outputs, or another active context in this process.
    pub fn start(&self) -> Result<()> {
        self.start_at(None)
    }

    pub(crate) fn start_at(&self, zero: Option<BatchTime>) -> Result<()> {
        let mut st = self.inner.state();
        match st.phase {
            Phase::Defining => {}
            Phase::Running => return Err(EngineError::AlreadyStarted),
            Phase::Stopped => return Err(EngineError::Stopped),
        }
        if st.outputs.is_empty() {
            return Err(EngineError::NoOutputs);
        }
        {
            let mut a = active();
            if let Some(other) = a.as_ref() {
                return Err(EngineError::AnotherContextActive {
                    other: other.clone(),
                });
            }
            *a = Some(self.inner.conf.app_name.clone());
        }
        let b = self.inner.conf.batch_interval.as_millis() as u64;
        let durable = self.inner.durable();
        let plan_zero = durable.as_ref().and_then(|d| {
            d.plan
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|p| BatchTime(p.zero_ms))
        });
        let zero = zero.or(plan_zero).unwrap_or(BatchTime(now_ms() / b * b));
        if let Some(d) = &durable {
            if plan_zero.is_none() && d.log.inner().next_lsn().0 > 0 {
                return Err(EngineError::Config {
                    setting: "checkpoint".into(),
                    reason: format!(
                        "{} already holds a job's driver log: resume it with StreamingContext::get_or_create, or use an empty location",
                        d.location
                    ),
                });
            }
            d.log_started(zero, self.inner.conf.batch_interval)?;
        }
        let env = Env {
            zero,
            ..self.inner.env.clone()
        };
        for input in &st.inputs {
            tracing::info!(input = %input.describe(), "starting input");
            if let Err(e) = input.start(&env) {
                for i in &st.inputs {
                    i.stop_receiving();
                }
                *active() = None;
                return Err(e);
            }
        }
        st.phase = Phase::Running;
        let inner = self.inner.clone();
        let handle = std::thread::Builder::new()
            .name("sluice-scheduler".into())
            .spawn(move || {
                let res = run_scheduler(&inner, &env);
                // Release the driver log and the checkpoint store (and their locks).
                inner
                    .durable
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                let mut st = inner.state();
                for i in &st.inputs {
                    i.stop_receiving();
                }
                st.phase = Phase::Stopped;
                st.release_graph();
                st.result = Some(res);
                *active() = None;
                inner.done.notify_all();
            })
            .map_err(|e| EngineError::io("the scheduler thread", e))?;
        st.scheduler = Some(handle);
        tracing::info!(app = %self.inner.conf.app_name, zero = zero.0, "streaming context started");
        Ok(())
    }

    /// Blocks until the context stops; returns the error that stopped it, if any.
    pub fn await_termination(&self) -> Result<()> {
        self.await_termination_timeout(None).map(|_| ())
    }

    /// Like [`StreamingContext::await_termination`], giving up after `timeout`;
    /// returns whether the context has stopped.
    pub fn await_termination_timeout(&self, timeout: Option<Duration>) -> Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.inner.state();
        match st.phase {
            Phase::Defining => return Err(EngineError::NotStarted),
            Phase::Stopped => {}
            Phase::Running => loop {
                if st.phase == Phase::Stopped {
                    break;
                }
                match deadline {
                    None => {
                        st = self.inner.done.wait(st).unwrap_or_else(|e| e.into_inner());
                    }
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Ok(false);
                        }
                        st = self
                            .inner
                            .done
                            .wait_timeout(st, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
            },
        }
        if let Some(h) = st.scheduler.take() {
            drop(st);
            let _ = h.join();
            st = self.inner.state();
        }
        match st.result.take() {
            Some(Err(e)) => Err(e),
            _ => Ok(true),
        }
    }

    /// Stops the job. Graceful: stop receiving, process everything already received,
    /// then stop. Otherwise stop after the batch in progress.
    pub fn stop(&self, graceful: bool) -> Result<()> {
        {
            let mut st = self.inner.state();
            match st.phase {
                Phase::Defining => {
                    st.phase = Phase::Stopped;
                    st.release_graph();
                    self.inner
                        .durable
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take();
                    return Ok(());
                }
                Phase::Stopped => return Ok(()),
                Phase::Running => {}
            }
            for i in &st.inputs {
                i.stop_receiving();
            }
        }
        self.inner.graceful.store(graceful, Ordering::SeqCst);
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.done.notify_all();
        if std::thread::current().name() == Some("sluice-scheduler") {
            // Called from inside a batch (an output): the scheduler stops after it.
            return Ok(());
        }
        self.await_termination()
    }
}

fn run_scheduler(inner: &Arc<CtxInner>, env: &Env) -> Result<()> {
    let (inputs, outputs, nodes) = {
        let st = inner.state();
        (
            st.inputs.clone(),
            st.outputs.clone(),
            st.registry.nodes.clone(),
        )
    };
    let durable = inner.durable();
    let job = Job {
        env,
        inputs: &inputs,
        outputs: &outputs,
        nodes: &nodes,
        durable: durable.as_deref(),
        app_name: &inner.conf.app_name,
    };
    let mut t = env.zero.plus(env.batch);
    let plan = durable
        .as_ref()
        .and_then(|d| d.plan.lock().unwrap_or_else(|e| e.into_inner()).take());
    if let Some(plan) = plan {
        // Restart: re-run what was planned after the checkpoint, with the same inputs,
        // then the batch times the clock passed while the driver was down.
        let listeners = inner.state().listeners.clone();
        for (time, plans) in &plan.replay {
            job.run_batch(BatchTime(*time), Some(plans), &listeners)?;
        }
        for time in &plan.catch_up {
            job.run_batch(BatchTime(*time), None, &listeners)?;
        }
        t = BatchTime(plan.next_ms);
    }
    loop {
        // Wait for the batch time, or a stop.
        let mut st = inner.state();
        loop {
            if inner.stop.load(Ordering::SeqCst) {
                break;
            }
            let now = now_ms();
            if now >= t.0 {
                break;
            }
            st = inner
                .done
                .wait_timeout(st, Duration::from_millis(t.0 - now))
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
        job.run_batch(t, None, &listeners)?;
        t = t.plus(env.batch);
    }
}

struct Job<'a> {
    env: &'a Env,
    inputs: &'a [Arc<dyn Input>],
    outputs: &'a [Arc<dyn Output>],
    nodes: &'a [Arc<dyn AnyNode>],
    durable: Option<&'a crate::durable::Durable>,
    app_name: &'a str,
}

impl Job<'_> {
    /// Runs batch `t`: fix its inputs (or replay a logged plan), log the plan durably,
    /// run the outputs in order, log completion, checkpoint when due.
    fn run_batch(
        &self,
        t: BatchTime,
        replay: Option<&[sluice_recovery::log::InputPlan]>,
        listeners: &[Arc<dyn StreamingListener>],
    ) -> Result<()> {
        let env = self.env;
        let span = tracing::info_span!("batch", time = t.0, replay = replay.is_some());
        let _g = span.enter();
        let submitted = Instant::now();
        let mut records = 0;
        for (i, input) in self.inputs.iter().enumerate() {
            let logged = replay.and_then(|p| p.iter().find(|x| x.input == i));
            records += match logged {
                Some(p) => input.replay(t, &p.plan, env)?,
                None => input.allocate(t, env)?,
            };
        }
        if let (Some(d), None) = (self.durable, replay) {
            let plans = self
                .inputs
                .iter()
                .enumerate()
                .filter_map(|(i, input)| {
                    input
                        .plan_of(t)
                        .map(|plan| sluice_recovery::log::InputPlan { input: i, plan })
                })
                .collect();
            d.planned(t, plans)?;
        }
        let mut info = BatchInfo {
            time: t,
            records,
            scheduling_delay: Duration::from_millis(now_ms().saturating_sub(t.0)),
            processing_delay: None,
        };
        for l in listeners {
            l.on_batch_submitted(&info);
            l.on_batch_started(&info);
        }
        let started = Instant::now();
        for out in self.outputs {
            out.run(t, env).map_err(|e| EngineError::Batch {
                time: t,
                output: out.describe(),
                cause: Box::new(e),
            })?;
        }
        info.processing_delay = Some(started.elapsed());
        // A window reads its parent's past batches: compute them now, before the inputs
        // forget this batch's data, also where no output read them at `t`.
        for n in self.nodes {
            n.keep_for_window(t, env)?;
        }
        if let Some(d) = self.durable {
            d.completed(t)?;
            if d.due(t, env) {
                d.checkpoint(t, env, self.app_name, self.nodes, self.inputs)?;
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
        Ok(())
    }
}
