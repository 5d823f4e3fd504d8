//! `StreamingContext`: owns the graph, the inputs and outputs, and the batch scheduler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::observe::listener::StreamingListener;
use crate::runtime::graph::{AnyNode, ComputeFn, ExecutionEnv, Node, NodeInfo, Registry};
use crate::runtime::io::{Input, Output};
use crate::runtime::scheduler::run_scheduler;
use crate::{BatchTime, DStream, EngineError, Result, StreamingConf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Defining,
    Running,
    Stopped,
}

pub(crate) struct GraphState {
    phase: Phase,
    pub(crate) registry: Registry,
    pub(super) inputs: Vec<Arc<dyn Input>>,
    pub(super) outputs: Vec<Arc<dyn Output>>,
    pub(super) listeners: Vec<Arc<dyn StreamingListener>>,
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
    pub(crate) env: ExecutionEnv,
    /// The driver log and checkpoint store; released when the context stops (the
    /// graph's closures keep the context itself alive, and with it the log's lock).
    pub(crate) driver_store: Mutex<Option<Arc<crate::durable::DriverStore>>>,
    pub(super) state: Mutex<GraphState>,
    /// Receivers defined so far (names their write-ahead logs).
    pub(crate) receiver_count: std::sync::atomic::AtomicUsize,
    pub(super) done: Condvar,
    pub(super) stop: AtomicBool,
    pub(super) graceful: AtomicBool,
    /// The web UI, when `StreamingConf::ui` is set (stops when the context is dropped).
    #[cfg(feature = "ui")]
    pub(crate) ui: Option<crate::observe::ui::UiServer>,
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

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl CtxInner {
    pub(super) fn state(&self) -> MutexGuard<'_, GraphState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn driver_store(&self) -> Option<Arc<crate::durable::DriverStore>> {
        self.driver_store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What each input reports about itself now, in definition order.
    pub(crate) fn input_statuses(&self) -> Vec<crate::observe::InputStatus> {
        let inputs = self.state().inputs.clone();
        inputs.iter().map(|i| i.status()).collect()
    }

    /// `defining`, `running`, `stopping` or `stopped` (the UI's app status).
    #[cfg(feature = "ui")]
    pub(crate) fn phase_name(&self) -> &'static str {
        match self.state().phase {
            Phase::Defining => "defining",
            Phase::Running if self.stop.load(Ordering::SeqCst) => "stopping",
            Phase::Running => "running",
            Phase::Stopped => "stopped",
        }
    }

    /// The listeners registered so far.
    pub(crate) fn listeners(&self) -> Vec<Arc<dyn StreamingListener>> {
        self.state().listeners.clone()
    }

    /// How many output operations the graph has.
    #[cfg(feature = "ui")]
    pub(crate) fn output_count(&self) -> usize {
        self.state().outputs.len()
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
        // Operator names must be unique; inputs with the same identity are told apart
        // by their keys (`#2`, …; see sluice_recovery::identity).
        if let Some(name) = info
            .name
            .as_ref()
            .filter(|_| !info.kind.starts_with("input:"))
        {
            if st.registry.nodes.iter().any(|n| {
                n.info().name.as_deref() == Some(name.as_str())
                    && !n.info().kind.starts_with("input:")
            }) {
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

    /// The stable key the next input of `kind` named `identity` will get (see
    /// `sluice_recovery::identity::node_keys`: a second input with the same kind and
    /// identity gets `#2`, …).
    pub(crate) fn next_input_key(&self, kind: &str, identity: &str) -> String {
        let st = self.state();
        let kind = format!("input:{kind}");
        let twins = st
            .registry
            .nodes
            .iter()
            .filter(|n| n.info().kind == kind && n.info().name.as_deref() == Some(identity))
            .count();
        match twins {
            0 => format!("{kind}:{identity}"),
            n => format!("{kind}:{identity}#{}", n + 1),
        }
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
        let env = ExecutionEnv {
            zero: BatchTime(0),
            batch: conf.batch_interval,
            parallelism: conf.parallelism,
            pool: Arc::new(pool),
        };
        let driver_store = crate::durable::DriverStore::open(&conf)?.map(Arc::new);
        // Bind the UI's address first: a taken port is an error here, naming it.
        #[cfg(feature = "ui")]
        let ui_listener = conf
            .ui
            .as_deref()
            .map(crate::observe::ui::bind)
            .transpose()?;
        #[cfg_attr(not(feature = "ui"), allow(unused_mut))]
        let mut ui_error = None;
        let inner = Arc::new_cyclic(|weak| {
            #[cfg_attr(not(feature = "ui"), allow(unused_mut))]
            let mut listeners: Vec<Arc<dyn StreamingListener>> = Vec::new();
            #[cfg(feature = "ui")]
            let ui =
                ui_listener.and_then(
                    |l| match crate::observe::ui::start(l, &conf, weak.clone()) {
                        Ok((server, state)) => {
                            listeners.push(state);
                            Some(server)
                        }
                        Err(e) => {
                            ui_error = Some(e);
                            None
                        }
                    },
                );
            #[cfg(not(feature = "ui"))]
            let _ = weak;
            CtxInner {
                #[cfg(feature = "ui")]
                ui,
                conf,
                env,
                driver_store: Mutex::new(driver_store),
                receiver_count: std::sync::atomic::AtomicUsize::new(0),
                state: Mutex::new(GraphState {
                    phase: Phase::Defining,
                    registry: Registry::default(),
                    inputs: Vec::new(),
                    outputs: Vec::new(),
                    listeners,
                    scheduler: None,
                    result: None,
                }),
                done: Condvar::new(),
                stop: AtomicBool::new(false),
                graceful: AtomicBool::new(false),
            }
        });
        if let Some(e) = ui_error {
            return Err(e);
        }
        Ok(StreamingContext { inner })
    }

    /// Where the web UI serves (`http://{addr}/`), when `StreamingConf::ui` is set: the
    /// real port when port 0 was asked for.
    pub fn ui_addr(&self) -> Option<std::net::SocketAddr> {
        #[cfg(feature = "ui")]
        return self.inner.ui.as_ref().map(|u| u.addr());
        #[cfg(not(feature = "ui"))]
        None
    }

    /// The configuration.
    pub fn conf(&self) -> &StreamingConf {
        &self.inner.conf
    }

    /// Adds a listener for batch events.
    pub fn add_listener(&self, l: Arc<dyn StreamingListener>) {
        self.inner.state().listeners.push(l);
    }

    /// What each input reports about itself now, in definition order.
    pub fn input_statuses(&self) -> Vec<crate::observe::InputStatus> {
        self.inner.input_statuses()
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
        let durable = self.inner.driver_store();
        let plan_zero = durable.as_ref().and_then(|d| {
            d.plan
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|p| p.zero)
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
        let env = ExecutionEnv {
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
                    .driver_store
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
                        .driver_store
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
