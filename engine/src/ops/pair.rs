//! Operations on keyed streams `DStream<(K, V)>`: per-key reductions, joins, cogroup,
//! and the stateful `update_state_by_key`.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use crate::ops::dstream::{group_partition, shuffle, split_by_key};
use crate::runtime::graph::{ExecutionEnv, Node};
use crate::{Batch, BatchTime, DStream, Data, EngineError, Result};

/// The hash map of `update_state_by_key`'s per-partition grouping: a fast hash
/// (FxHash), deterministic across runs. Shuffles keep the stable SipHash of
/// `stable_hash`.
type FastMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

/// Checks a stateful operator's name: non-empty, printable, at most 128 bytes.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(EngineError::OperatorName {
            name: name.into(),
            reason: reason.into(),
        })
    };
    if name.trim().is_empty() {
        return bad("a stateful operator needs a non-empty name, stable across restarts");
    }
    if name.len() > 128 || name.chars().any(char::is_control) {
        return bad("use at most 128 printable characters");
    }
    Ok(())
}

impl<K: Data + Hash + Eq, V: Data> DStream<(K, V)> {
    /// Applies `f` to every value, keeping the key.
    pub fn map_values<W: Data>(
        &self,
        f: impl Fn(&V) -> W + Send + Sync + 'static,
    ) -> Result<DStream<(K, W)>> {
        self.map(move |(k, v)| (k.clone(), f(v)))
    }

    /// Combines values per key with an associative `f` and splits the result into
    /// `parallelism` partitions by key. Values are combined in the order they arrive
    /// (partition by partition), so `f` need not be commutative.
    pub fn reduce_by_key(
        &self,
        f: impl Fn(&V, &V) -> V + Send + Sync + 'static,
    ) -> Result<DStream<(K, V)>> {
        let parent = self.clone();
        let info = self.info_for::<(K, V)>("reduce_by_key", vec![self.node.info.id]);
        let f = Arc::new(f);
        self.derive(info, self.slide(), move |t, env| {
            let b = parent.batch_streamed(t, env)?;
            reduce_batch(&b, env, &*f)
        })
    }

    /// Shuffles by key and collects every key's values.
    pub fn group_by_key(&self) -> Result<DStream<(K, Vec<V>)>> {
        let parent = self.clone();
        let info = self.info_for::<(K, Vec<V>)>("group_by_key", vec![self.node.info.id]);
        self.derive(info, self.slide(), move |t, env| {
            let b = parent.batch(t, env)?;
            let parts = shuffle(b.partitions(), env.parallelism);
            Ok(Batch::from_partitions(
                env.par_map(&parts, |p| group_partition(p)),
            ))
        })
    }

    /// For each key in either stream's batch: the values from both.
    pub fn cogroup<W: Data>(
        &self,
        other: &DStream<(K, W)>,
    ) -> Result<DStream<(K, (Vec<V>, Vec<W>))>> {
        let (a, b) = (self.clone(), other.clone());
        let info = self.info_for::<(K, (Vec<V>, Vec<W>))>(
            "cogroup",
            vec![self.node.info.id, other.node.info.id],
        );
        self.derive(info, self.slide(), move |t, env| {
            let left = shuffle(a.batch(t, env)?.partitions(), env.parallelism);
            let right = shuffle(b.batch(t, env)?.partitions(), env.parallelism);
            let pairs: Vec<(&Vec<(K, V)>, &Vec<(K, W)>)> = left.iter().zip(right.iter()).collect();
            Ok(Batch::from_partitions(
                env.par_map(&pairs, |(l, r)| cogroup_partition(l, r)),
            ))
        })
    }

    /// Inner join of the two streams' batches at each time.
    pub fn join<W: Data>(&self, other: &DStream<(K, W)>) -> Result<DStream<(K, (V, W))>> {
        self.cogroup_flat("join", other, |vs, ws| {
            let mut out = Vec::new();
            for v in vs {
                for w in ws {
                    out.push((v.clone(), w.clone()));
                }
            }
            out
        })
    }

    /// Left outer join: every left value, with `None` where the key has no right value.
    pub fn left_outer_join<W: Data>(
        &self,
        other: &DStream<(K, W)>,
    ) -> Result<DStream<(K, (V, Option<W>))>> {
        self.cogroup_flat("left_outer_join", other, |vs, ws| {
            let mut out = Vec::new();
            for v in vs {
                if ws.is_empty() {
                    out.push((v.clone(), None));
                }
                for w in ws {
                    out.push((v.clone(), Some(w.clone())));
                }
            }
            out
        })
    }

    /// Right outer join: every right value, with `None` where the key has no left value.
    pub fn right_outer_join<W: Data>(
        &self,
        other: &DStream<(K, W)>,
    ) -> Result<DStream<(K, (Option<V>, W))>> {
        self.cogroup_flat("right_outer_join", other, |vs, ws| {
            let mut out = Vec::new();
            for w in ws {
                if vs.is_empty() {
                    out.push((None, w.clone()));
                }
                for v in vs {
                    out.push((Some(v.clone()), w.clone()));
                }
            }
            out
        })
    }

    /// Full outer join: every value of either side, `None` where the other has none.
    pub fn full_outer_join<W: Data>(
        &self,
        other: &DStream<(K, W)>,
    ) -> Result<DStream<(K, (Option<V>, Option<W>))>> {
        self.cogroup_flat("full_outer_join", other, |vs, ws| {
            let mut out = Vec::new();
            if ws.is_empty() {
                out.extend(vs.iter().map(|v| (Some(v.clone()), None)));
            } else if vs.is_empty() {
                out.extend(ws.iter().map(|w| (None, Some(w.clone()))));
            } else {
                for v in vs {
                    for w in ws {
                        out.push((Some(v.clone()), Some(w.clone())));
                    }
                }
            }
            out
        })
    }

    fn cogroup_flat<W: Data, R: Data>(
        &self,
        kind: &str,
        other: &DStream<(K, W)>,
        f: impl Fn(&[V], &[W]) -> Vec<R> + Send + Sync + 'static,
    ) -> Result<DStream<(K, R)>> {
        let (a, b) = (self.clone(), other.clone());
        let info = self.info_for::<(K, R)>(kind, vec![self.node.info.id, other.node.info.id]);
        self.derive(info, self.slide(), move |t, env| {
            let left = shuffle(a.batch(t, env)?.partitions(), env.parallelism);
            let right = shuffle(b.batch(t, env)?.partitions(), env.parallelism);
            let pairs: Vec<(&Vec<(K, V)>, &Vec<(K, W)>)> = left.iter().zip(right.iter()).collect();
            Ok(Batch::from_partitions(env.par_map(&pairs, |(l, r)| {
                cogroup_partition(l, r)
                    .into_iter()
                    .flat_map(|(k, (vs, ws))| f(&vs, &ws).into_iter().map(move |x| (k.clone(), x)))
                    .collect()
            })))
        })
    }

    /// Keeps a state per key across batches: at every batch, `f(new values of the key,
    /// previous state)` gives the new state (`None` removes the key); keys without new
    /// values are called with an empty slice. The stream holds every key's state after
    /// each batch. `name` identifies the state across restarts and must be unique.
    pub fn update_state_by_key<S: Data>(
        &self,
        name: &str,
        f: impl Fn(&[V], Option<&S>) -> Option<S> + Send + Sync + 'static,
    ) -> Result<DStream<(K, S)>> {
        self.update_state_by_key_with_initial(name, f, Vec::new())
    }

    /// [`DStream::update_state_by_key`] starting from `initial` state.
    ///
    /// `initial` is built by the build function on every start, also when a
    /// restart then restores the state from a checkpoint and drops it; for a large
    /// initial state, [`DStream::update_state_by_key_with_initial_fn`] builds it only
    /// when a job starts without a checkpoint.
    pub fn update_state_by_key_with_initial<S: Data>(
        &self,
        name: &str,
        f: impl Fn(&[V], Option<&S>) -> Option<S> + Send + Sync + 'static,
        initial: Vec<(K, S)>,
    ) -> Result<DStream<(K, S)>> {
        let initial = Arc::new(initial);
        self.update_state_by_key_with_initial_fn(name, f, move || initial.to_vec())
    }

    /// [`DStream::update_state_by_key`] starting from the state `initial()` returns.
    /// `initial` runs only when the job's first batch needs it: never when a restart
    /// restores the state from a checkpoint (Spark's `initialRDD`, without building it
    /// on recovery). Reading a million keys from a database or a file costs nothing on
    /// restart this way. It may run again if the first batch fails and is retried.
    pub fn update_state_by_key_with_initial_fn<S: Data>(
        &self,
        name: &str,
        f: impl Fn(&[V], Option<&S>) -> Option<S> + Send + Sync + 'static,
        initial: impl Fn() -> Vec<(K, S)> + Send + Sync + 'static,
    ) -> Result<DStream<(K, S)>> {
        check_name(name)?;
        let parent = self.clone();
        let mut info = self.info_for::<(K, S)>("update_state_by_key", vec![self.node.info.id]);
        info.name = Some(name.into());
        info.state_type = Some(std::any::type_name::<S>().into());
        let me: Arc<OnceLock<Weak<Node<(K, S)>>>> = Arc::new(OnceLock::new());
        let me2 = me.clone();
        let slide = self.slide();
        let out = self.derive(info, slide, move |t, env| {
            let prev = previous_state(&me2, t, slide, env, &initial)?;
            let new = shuffle(parent.batch(t, env)?.partitions(), env.parallelism);
            let pairs: Vec<(&Vec<(K, S)>, &Vec<(K, V)>)> =
                prev.partitions().iter().zip(new.iter()).collect();
            Ok(Batch::from_partitions(env.par_map(&pairs, |(old, new)| {
                update_partition(old, new, &f)
            })))
        })?;
        // The node reads its own batch at `t - slide`: keep it that long (a slide can be
        // longer than the batch interval).
        crate::runtime::graph::AnyNode::remember(&*out.node, slide);
        let _ = me.set(Arc::downgrade(&out.node));
        let _ = out.node.kv.set(crate::runtime::graph::pair_codec::<K, S>());
        Ok(out)
    }
}

impl<T: Data> DStream<T> {
    /// `flat_map` into `(key, value)` pairs and `reduce_by_key`, fused, without a
    /// batch of pairs in between: `emit` gets each element and a sink to call with each
    /// of its pairs, whose key may be borrowed (`&str` out of a `String` line). Each
    /// input partition combines its pairs with `f` in a hash map before the shuffle
    /// (Spark's map-side combine), so an owned key `K` is made once per distinct key
    /// per partition rather than once per pair. The batches equal those of
    /// `flat_map(..).map(..).reduce_by_key(f)`, keys in the order first seen.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use sluice::prelude::*;
    /// # let ssc = StreamingContext::new(StreamingConf::new("doc", Duration::from_millis(50)))?;
    /// let lines = ssc.queue_stream(vec![vec!["a b a".to_string()]], true)?;
    /// let counts: DStream<(String, u64)> = lines.flat_map_reduce_by_key(
    ///     |line: &String, emit: &mut dyn FnMut(&str, u64)| {
    ///         for w in line.split_whitespace() {
    ///             emit(w, 1);
    ///         }
    ///     },
    ///     |a, b| a + b,
    /// )?;
    /// # Ok::<(), sluice::EngineError>(())
    /// ```
    pub fn flat_map_reduce_by_key<K, Q, V>(
        &self,
        emit: impl Fn(&T, &mut dyn FnMut(&Q, V)) + Send + Sync + 'static,
        f: impl Fn(&V, &V) -> V + Send + Sync + 'static,
    ) -> Result<DStream<(K, V)>>
    where
        K: Data + Hash + Eq + Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        V: Data,
    {
        let parent = self.clone();
        let info = self.info_for::<(K, V)>("flat_map_reduce_by_key", vec![self.node.info.id]);
        self.derive(info, self.slide(), move |t, env| {
            let b = parent.batch_streamed(t, env)?;
            let combined = b.par_fold_parts(
                &env.pool,
                Combined::default,
                |mut acc, p| {
                    let mut sink = |q: &Q, v: V| combine_into(&mut acc, q, v, &f);
                    for x in p {
                        emit(x, &mut sink);
                    }
                    acc
                },
                |a, b| join_combined(a, b, &f),
            )?;
            Ok(into_partitions(combined, env.parallelism))
        })
    }
}

/// Values combined per key, keys in the order first seen (FxHash): what a keyed
/// reduction folds its input partitions into, one accumulator per run of partitions
/// (see [`Batch::par_fold_parts`]), so memory follows the distinct keys, not the
/// number of partitions in the batch.
type Combined<K, V> = indexmap::IndexMap<K, V, rustc_hash::FxBuildHasher>;

/// Adds `v` to `q`'s value in `acc` with `f` (or makes it `q`'s first value).
fn combine_into<K, Q, V>(
    acc: &mut Combined<K, V>,
    q: &Q,
    v: V,
    f: &(dyn Fn(&V, &V) -> V + Send + Sync),
) where
    K: Hash + Eq + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
{
    match acc.get_mut(q) {
        Some(old) => *old = f(old, &v),
        None => {
            acc.insert(q.to_owned(), v);
        }
    }
}

/// `a` then `b` (the partitions `b` covers come after `a`'s): keys in the order first
/// seen, each value `f(a's, b's)`.
fn join_combined<K: Hash + Eq, V>(
    mut a: Combined<K, V>,
    b: Combined<K, V>,
    f: &(dyn Fn(&V, &V) -> V + Send + Sync),
) -> Combined<K, V> {
    if a.is_empty() {
        return b;
    }
    for (k, v) in b {
        match a.get_mut(&k) {
            Some(old) => *old = f(old, &v),
            None => {
                a.insert(k, v);
            }
        }
    }
    a
}

/// Splits combined values into `n` partitions by the key's stable hash, keeping their
/// order (the partitions [`shuffle`] and a per-partition combine would give).
fn into_partitions<K: Hash, V>(c: Combined<K, V>, n: usize) -> Batch<(K, V)> {
    Batch::from_partitions(split_by_key(c, n))
}

/// Combines values per key: within runs of input partitions, then across them, and
/// splits the result into partitions by key (see [`into_partitions`]).
pub(crate) fn reduce_batch<K: Data + Hash + Eq, V: Data>(
    b: &Batch<(K, V)>,
    env: &ExecutionEnv,
    f: &(dyn Fn(&V, &V) -> V + Send + Sync),
) -> Result<Batch<(K, V)>> {
    let combined = b.par_fold_parts(
        &env.pool,
        Combined::default,
        |mut acc, p| {
            for (k, v) in p {
                combine_into(&mut acc, k, v.clone(), f);
            }
            acc
        },
        |a, b| join_combined(a, b, f),
    )?;
    Ok(into_partitions(combined, env.parallelism))
}

fn cogroup_partition<K: Hash + Eq + Clone, V: Clone, W: Clone>(
    l: &[(K, V)],
    r: &[(K, W)],
) -> Vec<(K, (Vec<V>, Vec<W>))> {
    let mut idx: HashMap<K, usize> = HashMap::new();
    let mut out: Vec<(K, (Vec<V>, Vec<W>))> = Vec::new();
    for (k, v) in l {
        let i = *idx.entry(k.clone()).or_insert_with(|| {
            out.push((k.clone(), (Vec::new(), Vec::new())));
            out.len() - 1
        });
        out[i].1 .0.push(v.clone());
    }
    for (k, w) in r {
        let i = *idx.entry(k.clone()).or_insert_with(|| {
            out.push((k.clone(), (Vec::new(), Vec::new())));
            out.len() - 1
        });
        out[i].1 .1.push(w.clone());
    }
    out
}

/// The state before batch `t`: the node's own batch at `t - slide`, or the initial state
/// (shuffled into partitions) at the first batch.
pub(crate) fn previous_state<K: Data + Hash + Eq, S: Data>(
    me: &OnceLock<Weak<Node<(K, S)>>>,
    t: BatchTime,
    slide: Duration,
    env: &ExecutionEnv,
    initial: impl FnOnce() -> Vec<(K, S)>,
) -> Result<Batch<(K, S)>> {
    let prev_t = t.minus(slide);
    if prev_t <= env.zero {
        return Ok(Batch::from_partitions(shuffle(
            &[initial()],
            env.parallelism,
        )));
    }
    let node = me
        .get()
        .and_then(Weak::upgrade)
        .ok_or_else(|| EngineError::User("a stateful operator lost its own node".into()))?;
    let b = node.get(prev_t, env)?;
    if b.partitions().len() == env.parallelism {
        Ok(b)
    } else {
        Ok(Batch::from_partitions(shuffle(
            b.partitions(),
            env.parallelism,
        )))
    }
}

fn update_partition<K: Hash + Eq + Clone, V: Clone, S: Clone>(
    old: &[(K, S)],
    new: &[(K, V)],
    f: &(impl Fn(&[V], Option<&S>) -> Option<S> + ?Sized),
) -> Vec<(K, S)> {
    let mut values: FastMap<&K, Vec<V>> = FastMap::default();
    let mut order: Vec<&K> = Vec::new();
    for (k, v) in new {
        values
            .entry(k)
            .or_insert_with(|| {
                order.push(k);
                Vec::new()
            })
            .push(v.clone());
    }
    let mut out = Vec::with_capacity(old.len() + order.len());
    for (k, s) in old {
        let vs = values.remove(k).unwrap_or_default();
        if let Some(s2) = f(&vs, Some(s)) {
            out.push((k.clone(), s2));
        }
    }
    for k in order {
        if let Some(vs) = values.remove(k) {
            if let Some(s) = f(&vs, None) {
                out.push((k.clone(), s));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::dstream::stable_hash;

    fn env(threads: usize, parallelism: usize) -> ExecutionEnv {
        ExecutionEnv {
            zero: BatchTime(0),
            batch: Duration::from_millis(100),
            parallelism,
            pool: Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap(),
            ),
        }
    }

    /// The reference: every partition in order, keys in the order first seen, then
    /// split by the key's stable hash.
    fn sequential(parts: &[Vec<(u16, String)>], n: usize) -> Vec<Vec<(u16, String)>> {
        let mut all: Vec<(u16, String)> = Vec::new();
        for (k, v) in parts.iter().flatten() {
            match all.iter_mut().find(|(k2, _)| k2 == k) {
                Some((_, acc)) => acc.push_str(v),
                None => all.push((*k, v.clone())),
            }
        }
        let mut out = vec![Vec::new(); n];
        for (k, v) in all {
            out[(stable_hash(&k) % n as u64) as usize].push((k, v));
        }
        out
    }

    #[test]
    fn a_keyed_reduce_is_the_same_on_any_pool_and_keeps_the_order_of_its_input() {
        // Concatenation is associative, not commutative: any value out of order or
        // key order that depended on the pool's scheduling would show.
        let parts: Vec<Vec<(u16, String)>> = (0..97)
            .map(|p| {
                (0..(p * 7) % 50)
                    .map(|i| (((p * 31 + i * 17) % 40) as u16, format!("{p}.{i};")))
                    .collect()
            })
            .collect();
        let concat = |a: &String, b: &String| format!("{a}{b}");
        for (threads, n) in [(1, 1), (1, 3), (2, 2), (4, 5), (8, 7)] {
            let want = sequential(&parts, n);
            let env = env(threads, n);
            let ready = Batch::from_partitions(parts.clone());
            let got = reduce_batch(&ready, &env, &concat).unwrap();
            assert_eq!(
                got.partitions(),
                &want[..],
                "{threads} threads, {n} partitions"
            );
            // A stored batch (read partition by partition) gives the same.
            let source = Arc::new(parts.clone());
            let stored = Batch::stored(
                parts.iter().map(Vec::len).collect(),
                Arc::new(move |i| Ok(source[i].clone())),
            );
            let got = reduce_batch(&stored, &env, &concat).unwrap();
            assert_eq!(got.partitions(), &want[..], "stored, {threads} threads");
        }
    }

    #[test]
    fn a_stored_partition_that_cannot_be_read_fails_the_reduce() {
        let env = env(2, 2);
        let stored: Batch<(u16, u64)> = Batch::stored(
            vec![1, 1, 1],
            Arc::new(|i| {
                if i == 1 {
                    Err(EngineError::User("block 1 is torn".into()))
                } else {
                    Ok(vec![(i as u16, 1)])
                }
            }),
        );
        let err = reduce_batch(&stored, &env, &|a, b| a + b).unwrap_err();
        assert!(err.to_string().contains("block 1 is torn"), "{err}");
    }
}
