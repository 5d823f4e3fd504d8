//! `DStream<T>`: a typed handle into the graph, with the element-wise and whole-batch
//! transformations and the window operations.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::context::CtxInner;
use crate::runtime::graph::{ExecutionEnv, Node, NodeInfo};
use crate::{Batch, BatchTime, Data, Result};

/// A discretized stream: at every batch time it holds one [`Batch`] of `T`.
pub struct DStream<T> {
    pub(crate) ctx: Arc<CtxInner>,
    pub(crate) node: Arc<Node<T>>,
}

impl<T> Clone for DStream<T> {
    fn clone(&self) -> Self {
        DStream {
            ctx: self.ctx.clone(),
            node: self.node.clone(),
        }
    }
}

impl<T> std::fmt::Debug for DStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DStream")
            .field("id", &self.node.info.id)
            .field("kind", &self.node.info.kind)
            .finish()
    }
}

/// A deterministic hash, the same in every process, run and Rust release, so shuffles
/// (and with them the partitions a sink sees) are the same when a batch is replayed:
/// SipHash-1-3 with the key (0, 0), see [`sluice_recovery::identity`].
pub fn stable_hash<K: Hash>(k: &K) -> u64 {
    sluice_recovery::identity::stable_hash(k)
}

/// Splits keyed pairs into `n` partitions (at least one) by the key's stable hash,
/// keeping their order within each partition: the one place a key's partition is
/// chosen, so every keyed operator puts a key in the same partition.
pub(crate) fn split_by_key<K: Hash, V>(
    pairs: impl IntoIterator<Item = (K, V)>,
    n: usize,
) -> Vec<Vec<(K, V)>> {
    let n = n.max(1);
    let mut out: Vec<Vec<(K, V)>> = (0..n).map(|_| Vec::new()).collect();
    for (k, v) in pairs {
        out[key_partition(&k, n)].push((k, v));
    }
    out
}

/// The partition of `n` (at least one) that key `k` belongs to: in shuffles and in
/// keyed state snapshots alike.
pub(crate) fn key_partition<K: Hash>(k: &K, n: usize) -> usize {
    (stable_hash(k) % n.max(1) as u64) as usize
}

/// Splits keyed partitions into `n` partitions by key hash (copies; see
/// [`split_by_key`]).
pub(crate) fn shuffle<K: Hash + Clone, V: Clone>(
    parts: &[Vec<(K, V)>],
    n: usize,
) -> Vec<Vec<(K, V)>> {
    split_by_key(parts.iter().flatten().cloned(), n)
}

impl<T: Data> DStream<T> {
    /// The node's descriptor.
    pub fn info(&self) -> &NodeInfo {
        &self.node.info
    }

    /// How often this stream produces a batch.
    pub fn slide(&self) -> Duration {
        self.node.slide
    }

    pub(crate) fn info_for<U>(&self, kind: &str, parents: Vec<usize>) -> NodeInfo {
        NodeInfo {
            id: 0,
            kind: kind.into(),
            name: None,
            parents,
            type_name: std::any::type_name::<U>().into(),
            state_type: None,
            window_ms: None,
            slide_ms: 0,
        }
    }

    /// Adds a node reading this stream (and maybe others) that produces batches on
    /// `slide`.
    pub(crate) fn derive<U: Data>(
        &self,
        info: NodeInfo,
        slide: Duration,
        compute: impl Fn(BatchTime, &ExecutionEnv) -> Result<Batch<U>> + Send + Sync + 'static,
    ) -> Result<DStream<U>> {
        let node = self.ctx.add_node(info, slide, Box::new(compute))?;
        Ok(DStream {
            ctx: self.ctx.clone(),
            node,
        })
    }

    /// The batch of this stream at `t` (computing it if needed), in memory.
    pub(crate) fn batch(&self, t: BatchTime, env: &ExecutionEnv) -> Result<Batch<T>> {
        let b = self.node.get(t, env)?;
        b.load_all(Some(&env.pool))?;
        Ok(b)
    }

    /// Like [`DStream::batch`], for operators that go partition by partition with
    /// [`Batch::par_map_parts`] or need only [`Batch::len`]: a stored receiver batch
    /// stays in the WAL and is read one partition at a time.
    pub(crate) fn batch_streamed(&self, t: BatchTime, env: &ExecutionEnv) -> Result<Batch<T>> {
        self.node.get(t, env)
    }

    /// A per-partition transformation (runs partitions in parallel).
    fn per_partition<U: Data>(
        &self,
        kind: &str,
        f: impl Fn(&[T]) -> Vec<U> + Send + Sync + 'static,
    ) -> Result<DStream<U>> {
        let parent = self.clone();
        let info = self.info_for::<U>(kind, vec![self.node.info.id]);
        self.derive(info, self.slide(), move |t, env| {
            let b = parent.batch_streamed(t, env)?;
            Ok(Batch::from_partitions(
                b.par_map_parts(&env.pool, |p| f(p))?,
            ))
        })
    }

    /// Like `per_partition` for an `f` that goes element by element, appending its
    /// output: a stored batch may reach it in pieces (see [`Batch`]).
    fn per_element<U: Data>(
        &self,
        kind: &str,
        f: impl Fn(&[T], &mut Vec<U>) + Send + Sync + 'static,
    ) -> Result<DStream<U>> {
        let parent = self.clone();
        let info = self.info_for::<U>(kind, vec![self.node.info.id]);
        self.derive(info, self.slide(), move |t, env| {
            let b = parent.batch_streamed(t, env)?;
            Ok(Batch::from_partitions(b.par_map_pieces(&env.pool, &f)?))
        })
    }

    /// Applies `f` to every element.
    pub fn map<U: Data>(&self, f: impl Fn(&T) -> U + Send + Sync + 'static) -> Result<DStream<U>> {
        self.per_element("map", move |p, out| out.extend(p.iter().map(&f)))
    }

    /// Applies `f` to every element and flattens the results.
    pub fn flat_map<U: Data, I: IntoIterator<Item = U>>(
        &self,
        f: impl Fn(&T) -> I + Send + Sync + 'static,
    ) -> Result<DStream<U>> {
        self.per_element("flat_map", move |p, out| out.extend(p.iter().flat_map(&f)))
    }

    /// Keeps the elements for which `f` is true.
    pub fn filter(&self, f: impl Fn(&T) -> bool + Send + Sync + 'static) -> Result<DStream<T>> {
        self.per_element("filter", move |p, out| {
            out.extend(p.iter().filter(|x| f(x)).cloned())
        })
    }

    /// Applies `f` to each whole partition.
    pub fn map_partitions<U: Data>(
        &self,
        f: impl Fn(&[T]) -> Vec<U> + Send + Sync + 'static,
    ) -> Result<DStream<U>> {
        self.per_partition("map_partitions", f)
    }

    /// Redistributes the elements round-robin over `n` partitions.
    pub fn repartition(&self, n: usize) -> Result<DStream<T>> {
        let n = n.max(1);
        let parent = self.clone();
        let info = self.info_for::<T>("repartition", vec![self.node.info.id]);
        self.derive(info, self.slide(), move |t, env| {
            let b = parent.batch(t, env)?;
            let mut out: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
            for (i, x) in b.iter().enumerate() {
                out[i % n].push(x.clone());
            }
            Ok(Batch::from_partitions(out))
        })
    }

    /// The elements of this stream and of `other`, batch by batch.
    pub fn union(&self, other: &DStream<T>) -> Result<DStream<T>> {
        Self::union_all(&[self.clone(), other.clone()])
    }

    /// The elements of all `streams`, batch by batch (they must share a slide).
    pub fn union_all(streams: &[DStream<T>]) -> Result<DStream<T>> {
        let first = streams.first().ok_or_else(|| crate::EngineError::Config {
            setting: "union".into(),
            reason: "needs at least one stream".into(),
        })?;
        let parents: Vec<DStream<T>> = streams.to_vec();
        let info = first.info_for::<T>("union", streams.iter().map(|s| s.node.info.id).collect());
        first.derive(info, first.slide(), move |t, env| {
            let mut parts = Vec::new();
            for p in &parents {
                parts.extend(p.batch(t, env)?.partitions().iter().cloned());
            }
            Ok(Batch::from_partitions(parts))
        })
    }

    /// The number of elements of each batch (one element per batch).
    pub fn count(&self) -> Result<DStream<u64>> {
        let parent = self.clone();
        let info = self.info_for::<u64>("count", vec![self.node.info.id]);
        self.derive(info, self.slide(), move |t, env| {
            Ok(Batch::from_vec(vec![
                parent.batch_streamed(t, env)?.count(&env.pool)? as u64,
            ]))
        })
    }

    /// Reduces each batch to one element with an associative `f` (no element for an
    /// empty batch).
    pub fn reduce(&self, f: impl Fn(&T, &T) -> T + Send + Sync + 'static) -> Result<DStream<T>> {
        let parent = self.clone();
        let info = self.info_for::<T>("reduce", vec![self.node.info.id]);
        self.derive(info, self.slide(), move |t, env| {
            let b = parent.batch_streamed(t, env)?;
            let both = |a: Option<T>, b: Option<T>| match (a, b) {
                (Some(a), Some(b)) => Some(f(&a, &b)),
                (a, b) => a.or(b),
            };
            let total = b.par_fold_parts(
                &env.pool,
                || None,
                |acc, p| {
                    p.iter().fold(acc, |acc, x| match acc {
                        Some(a) => Some(f(&a, x)),
                        None => Some(x.clone()),
                    })
                },
                both,
            )?;
            Ok(Batch::from_vec(total.into_iter().collect()))
        })
    }

    /// How often each distinct element occurs in each batch.
    pub fn count_by_value(&self) -> Result<DStream<(T, u64)>>
    where
        T: Hash + Eq,
    {
        self.map(|x| (x.clone(), 1u64))?.reduce_by_key(|a, b| a + b)
    }

    /// Any batch-to-batch function, given the batch time; e.g. a join with a static
    /// dataset. `f` sees the whole batch.
    pub fn transform<U: Data>(
        &self,
        f: impl Fn(&Batch<T>, BatchTime) -> Result<Vec<U>> + Send + Sync + 'static,
    ) -> Result<DStream<U>> {
        let parent = self.clone();
        let info = self.info_for::<U>("transform", vec![self.node.info.id]);
        self.derive(info, self.slide(), move |t, env| {
            Ok(Batch::from_vec(f(&parent.batch(t, env)?, t)?))
        })
    }

    /// A function of this stream's batch and `other`'s batch at the same time.
    pub fn transform_with<U: Data, V: Data>(
        &self,
        other: &DStream<U>,
        f: impl Fn(&Batch<T>, &Batch<U>, BatchTime) -> Result<Vec<V>> + Send + Sync + 'static,
    ) -> Result<DStream<V>> {
        let (a, b) = (self.clone(), other.clone());
        let info = self.info_for::<V>(
            "transform_with",
            vec![self.node.info.id, other.node.info.id],
        );
        self.derive(info, self.slide(), move |t, env| {
            Ok(Batch::from_vec(f(&a.batch(t, env)?, &b.batch(t, env)?, t)?))
        })
    }

    /// The elements of the last `window` of time, every `slide` (both multiples of the
    /// batch interval; the window a multiple of the slide's batch too).
    pub fn window(&self, window: Duration, slide: Duration) -> Result<DStream<T>> {
        // Also multiples of this stream's slide: a window of a window steps on its grid.
        self.check_window(window, slide)?;
        let parent = self.clone();
        // The parent keeps its batches as long as the window spans.
        crate::runtime::graph::AnyNode::remember(&*self.node, window);
        let mut info = self.info_for::<T>("window", vec![self.node.info.id]);
        info.window_ms = Some((window.as_millis() as u64, slide.as_millis() as u64));
        let step = self.slide();
        self.derive(info, slide, move |t, env| {
            let mut parts = Vec::new();
            for s in window_times(t, window, step, env) {
                parts.extend(parent.batch(s, env)?.partitions().iter().cloned());
            }
            Ok(Batch::from_partitions(parts))
        })
    }

    /// The number of elements in each window.
    pub fn count_by_window(&self, window: Duration, slide: Duration) -> Result<DStream<u64>> {
        self.window(window, slide)?.count()
    }

    /// Each window reduced to one element.
    pub fn reduce_by_window(
        &self,
        f: impl Fn(&T, &T) -> T + Send + Sync + 'static,
        window: Duration,
        slide: Duration,
    ) -> Result<DStream<T>> {
        self.window(window, slide)?.reduce(f)
    }
}

/// The parent batch times in the window ending at `t`: `(t - window, t]` on `step`.
pub(crate) fn window_times(
    t: BatchTime,
    window: Duration,
    step: Duration,
    env: &ExecutionEnv,
) -> Vec<BatchTime> {
    let step = step.as_millis() as u64;
    let lo = t.0.saturating_sub(window.as_millis() as u64);
    let mut out = Vec::new();
    let mut s = t.0;
    while s > lo && s > env.zero.0 {
        out.push(BatchTime(s));
        if s < step {
            break;
        }
        s -= step;
    }
    out.reverse();
    out
}

/// Groups `(K, V)` pairs by key, preserving first-seen order of keys within a partition.
pub(crate) fn group_partition<K: Hash + Eq + Clone, V: Clone>(p: &[(K, V)]) -> Vec<(K, Vec<V>)> {
    let mut idx: HashMap<&K, usize> = HashMap::new();
    let mut out: Vec<(K, Vec<V>)> = Vec::new();
    for (k, v) in p {
        match idx.get(k) {
            Some(&i) => out[i].1.push(v.clone()),
            None => {
                idx.insert(k, out.len());
                out.push((k.clone(), vec![v.clone()]));
            }
        }
    }
    out
}
