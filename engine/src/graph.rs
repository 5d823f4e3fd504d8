//! The DStream graph: typed nodes that compute their batch for a time from their
//! parents' batches, memoised per time and remembered as long as a window needs it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Batch, BatchTime, Result};

/// What the graph descriptor stores about one node: enough to compare a rebuilt graph
/// with the one a checkpoint was taken from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Position in the graph (order of definition).
    pub id: usize,
    /// The operator, e.g. `map`, `window`, `update_state_by_key`, `input:socket`.
    pub kind: String,
    /// The stable name of a stateful operator (or an input).
    pub name: Option<String>,
    /// The nodes this one reads.
    pub parents: Vec<usize>,
    /// The element type.
    pub type_name: String,
    /// The state type, for stateful operators.
    pub state_type: Option<String>,
    /// `(window length, slide)` in milliseconds, for windowed operators.
    pub window_ms: Option<(u64, u64)>,
    /// How often the node produces a batch, in milliseconds.
    pub slide_ms: u64,
}

/// What a node's compute function sees.
#[derive(Debug, Clone)]
pub struct Env {
    /// The context's zero time: batch times are `zero + k * batch_interval`.
    pub zero: BatchTime,
    /// The batch interval.
    pub batch: Duration,
    /// Partitions for shuffles.
    pub parallelism: usize,
    /// The CPU pool partitions run on.
    pub pool: Arc<rayon::ThreadPool>,
}

impl Env {
    /// Runs `f` on every partition of `parts` in parallel on the CPU pool.
    pub fn par_map<I: Sync, O: Send>(
        &self,
        parts: &[I],
        f: impl Fn(&I) -> O + Sync + Send,
    ) -> Vec<O> {
        use rayon::prelude::*;
        self.pool.install(|| parts.par_iter().map(f).collect())
    }
}

pub(crate) type ComputeFn<T> = Box<dyn Fn(BatchTime, &Env) -> Result<Batch<T>> + Send + Sync>;

/// A typed node.
pub(crate) struct Node<T> {
    pub(crate) info: NodeInfo,
    compute: ComputeFn<T>,
    memo: Mutex<BTreeMap<BatchTime, Batch<T>>>,
    /// How long batches are kept after they are computed, in ms.
    remember_ms: AtomicU64,
    pub(crate) slide: Duration,
}

impl<T> std::fmt::Debug for Node<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("info", &self.info).finish()
    }
}

impl<T: Clone + Send + Sync + 'static> Node<T> {
    pub(crate) fn new(info: NodeInfo, slide: Duration, compute: ComputeFn<T>) -> Self {
        Node {
            info,
            compute,
            memo: Mutex::new(BTreeMap::new()),
            remember_ms: AtomicU64::new(0),
            slide,
        }
    }

    fn memo(&self) -> MutexGuard<'_, BTreeMap<BatchTime, Batch<T>>> {
        self.memo.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this node produces a batch at `t`.
    pub(crate) fn is_time(&self, t: BatchTime, env: &Env) -> bool {
        t > env.zero && (t.0 - env.zero.0).is_multiple_of((self.slide.as_millis() as u64).max(1))
    }

    /// The node's batch at `t`: memoised; empty before the zero time or off its slide.
    pub(crate) fn get(&self, t: BatchTime, env: &Env) -> Result<Batch<T>> {
        if !self.is_time(t, env) {
            return Ok(Batch::default());
        }
        if let Some(b) = self.memo().get(&t) {
            return Ok(b.clone());
        }
        let b = (self.compute)(t, env)?;
        self.memo().insert(t, b.clone());
        Ok(b)
    }
}

/// The type-erased view the context keeps of every node.
pub(crate) trait AnyNode: Send + Sync + std::fmt::Debug {
    fn info(&self) -> &NodeInfo;
    /// Drops memoised batches that nothing will ask for again after `t`.
    fn forget(&self, t: BatchTime, batch: Duration);
    /// Keeps batches for at least `d` (a downstream window needs them).
    fn remember(&self, d: Duration);
    /// Computes the node's batch at `t` if it keeps batches for a window, so a window
    /// that reads it later finds it even if nothing read it at `t`.
    fn keep_for_window(&self, t: BatchTime, env: &Env) -> Result<()>;
}

impl<T: Clone + Send + Sync + 'static> AnyNode for Node<T> {
    fn info(&self) -> &NodeInfo {
        &self.info
    }

    fn forget(&self, t: BatchTime, batch: Duration) {
        let keep = (self.remember_ms.load(Ordering::Relaxed)).max(batch.as_millis() as u64);
        let cutoff = BatchTime(t.0.saturating_sub(keep));
        let mut memo = self.memo();
        *memo = memo.split_off(&BatchTime(cutoff.0 + 1));
    }

    fn remember(&self, d: Duration) {
        self.remember_ms
            .fetch_max(d.as_millis() as u64, Ordering::Relaxed);
    }

    fn keep_for_window(&self, t: BatchTime, env: &Env) -> Result<()> {
        if self.remember_ms.load(Ordering::Relaxed) > env.batch.as_millis() as u64 {
            self.get(t, env)?;
        }
        Ok(())
    }
}

/// Registers nodes; shared by the context and every DStream handle.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub(crate) nodes: Vec<Arc<dyn AnyNode>>,
}
