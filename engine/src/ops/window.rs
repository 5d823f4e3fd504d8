//! Windowed operators beyond the core `window`/`count_by_window`/`reduce_by_window`:
//! per-key reductions and groups over a sliding window, plain and incremental (with an
//! inverse function), and counts of values over a window.
//!
//! Every window here is `(t - window, t]`, produced every `slide`; both must be
//! multiples of the batch interval and of the parent stream's slide.
//!
//! The incremental form ([`DStream::reduce_by_key_and_window_inv`]) keeps its own
//! previous window value and the parent's per-batch reductions for `window + slide`,
//! and computes `value(t) = value(t - slide) ⊕ batches entering ⊖ batches leaving`, as
//! Spark's `ReducedWindowedDStream` does.
//!
//! ```
//! use std::time::Duration;
//! use sluice::prelude::*;
//!
//! let batch = Duration::from_secs(60); // the graceful stop runs the queued batches at once
//! let ssc = StreamingContext::new(StreamingConf::new("doc-window", batch))?;
//! let (a, b) = ("a".to_string(), "b".to_string());
//! let words = ssc.queue_stream(vec![vec![a.clone(), b], vec![a], vec![]], true)?;
//! let counts = words
//!     .map(|w: &String| (w.clone(), 1i64))?
//!     .reduce_by_key_and_window_inv(|a, b| a + b, |a, b| a - b, 2 * batch, batch, Some(|_, c| *c > 0))?;
//! let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
//! let out = seen.clone();
//! counts.foreach_batch(move |b| {
//!     let mut v = b.batch.to_vec();
//!     v.sort();
//!     out.lock().unwrap().push(v);
//!     Ok(())
//! })?;
//! ssc.start()?;
//! ssc.stop(true)?;
//! let c = |w: &str, n| (w.to_string(), n);
//! assert_eq!(
//!     *seen.lock().unwrap(),
//!     vec![vec![c("a", 1), c("b", 1)], vec![c("a", 2), c("b", 1)], vec![c("a", 1)]]
//! );
//! # Ok::<(), sluice::EngineError>(())
//! ```

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use crate::ops::dstream::{group_partition, shuffle, window_times};
use crate::ops::pair::previous_state;
use crate::runtime::graph::{AnyNode, ExecutionEnv, Node};
use crate::{Batch, BatchTime, DStream, Data, EngineError, Result};

/// The filter of [`DStream::reduce_by_key_and_window_inv`]: keys for which it returns
/// `false` are removed from the window's value (Spark's `filterFunc`), e.g.
/// `Some(|_, count| *count > 0)`.
pub type KeyFilter<K, V> = fn(&K, &V) -> bool;

type ReduceFn<V> = Arc<dyn Fn(&V, &V) -> V + Send + Sync>;

impl<T: Data> DStream<T> {
    /// Checks a window and slide against the batch interval and this stream's slide.
    pub(crate) fn check_window(&self, window: Duration, slide: Duration) -> Result<()> {
        self.ctx.check_multiple("window length", window)?;
        self.ctx.check_multiple("slide", slide)?;
        let step = self.slide().as_millis().max(1);
        for (what, d) in [("window length", window), ("slide", slide)] {
            if !d.as_millis().is_multiple_of(step) {
                return Err(EngineError::Config {
                    setting: "window".into(),
                    reason: format!(
                        "{what} {d:?} is not a multiple of the parent stream's slide {:?}",
                        self.slide()
                    ),
                });
            }
        }
        Ok(())
    }

    /// How often each distinct element occurs in the last `window`, every `slide`.
    /// Incremental (counts of entering batches added, of leaving batches subtracted);
    /// values whose count drops to zero are removed.
    pub fn count_by_value_and_window(
        &self,
        window: Duration,
        slide: Duration,
    ) -> Result<DStream<(T, u64)>>
    where
        T: Hash + Eq,
    {
        self.map(|x| (x.clone(), 1u64))?
            .reduce_by_key_and_window_inv(
                |a, b| a + b,
                |a, b| a.saturating_sub(*b),
                window,
                slide,
                Some(|_, c| *c > 0),
            )
    }

    /// Each window reduced to one element, incrementally: `inv_f` must undo `f`
    /// (`inv_f(f(a, b), b) == a`). Agrees with [`DStream::reduce_by_window`] for such
    /// pairs of functions; no element for an empty window.
    pub fn reduce_by_window_inv(
        &self,
        f: impl Fn(&T, &T) -> T + Send + Sync + 'static,
        inv_f: impl Fn(&T, &T) -> T + Send + Sync + 'static,
        window: Duration,
        slide: Duration,
    ) -> Result<DStream<T>> {
        // One key for everything. The count beside the value tells an empty window
        // (count 0, removed by the filter) from one whose value is the identity.
        self.map(|x| ((), (x.clone(), 1u64)))?
            .reduce_by_key_and_window_inv(
                move |a, b| (f(&a.0, &b.0), a.1 + b.1),
                // Saturating: a window recomputed after a restart that lost part of
                // its past must not panic when those batches leave it.
                move |a, b| (inv_f(&a.0, &b.0), a.1.saturating_sub(b.1)),
                window,
                slide,
                Some(|_, v| v.1 > 0),
            )?
            .map(|(_, (v, _))| v.clone())
    }
}

impl<K: Data + Hash + Eq, V: Data> DStream<(K, V)> {
    /// Per key, the values of the last `window` combined with the associative and
    /// commutative `f`, every `slide`. Each batch is reduced once (memoised); a window
    /// combines the reductions of its batches.
    pub fn reduce_by_key_and_window(
        &self,
        f: impl Fn(&V, &V) -> V + Send + Sync + 'static,
        window: Duration,
        slide: Duration,
    ) -> Result<DStream<(K, V)>> {
        self.check_window(window, slide)?;
        let f: ReduceFn<V> = Arc::new(f);
        let f1 = f.clone();
        let reduced = self.reduce_by_key(move |a, b| f1(a, b))?;
        // The per-batch reductions are kept as long as the window spans.
        AnyNode::remember(&*reduced.node, window);
        let mut info =
            reduced.info_for::<(K, V)>("reduce_by_key_and_window", vec![reduced.node.info.id]);
        info.window_ms = Some((window.as_millis() as u64, slide.as_millis() as u64));
        let parent = reduced.clone();
        let step = reduced.slide();
        reduced.derive(info, slide, move |t, env| {
            let batches = batches_at(&parent, &window_times(t, window, step, env), env)?;
            let empty = empty_parts(env.parallelism);
            Ok(merge_windows(env, &empty, &[], &batches, &*f, &*f, None))
        })
    }

    /// [`DStream::reduce_by_key_and_window`] computed incrementally: the value of the
    /// window at `t` is the value at `t - slide`, combined with `f` with the batches
    /// entering the window and with `inv_f` with the batches leaving it. `inv_f` must
    /// undo `f` (`inv_f(f(a, b), b) == a`), e.g. `+` and `-`.
    ///
    /// Keys whose value `filter` rejects are removed from the window (Spark's
    /// `filterFunc`); without a filter, a key stays with the identity value (a count of
    /// 0) once all its values have left. As in Spark, the filter must reject only values
    /// that no batch still in the window contributes to (such as a count of 0): a key it
    /// removes starts afresh from the next batch that has it, and its values in batches
    /// still leaving the window are ignored.
    ///
    /// When `slide >= window` the windows do not overlap and each is computed afresh.
    pub fn reduce_by_key_and_window_inv(
        &self,
        f: impl Fn(&V, &V) -> V + Send + Sync + 'static,
        inv_f: impl Fn(&V, &V) -> V + Send + Sync + 'static,
        window: Duration,
        slide: Duration,
        filter: Option<KeyFilter<K, V>>,
    ) -> Result<DStream<(K, V)>> {
        self.check_window(window, slide)?;
        let f: ReduceFn<V> = Arc::new(f);
        let inv_f: ReduceFn<V> = Arc::new(inv_f);
        let f1 = f.clone();
        let reduced = self.reduce_by_key(move |a, b| f1(a, b))?;
        // The batches leaving the window at `t` are those in `(t - slide - window, t - window]`.
        AnyNode::remember(&*reduced.node, window + slide);
        let mut info =
            reduced.info_for::<(K, V)>("reduce_by_key_and_window_inv", vec![reduced.node.info.id]);
        info.window_ms = Some((window.as_millis() as u64, slide.as_millis() as u64));
        let me: Arc<OnceLock<Weak<Node<(K, V)>>>> = Arc::new(OnceLock::new());
        let me2 = me.clone();
        let parent = reduced.clone();
        let step = reduced.slide();
        // Set while the node computes a window. A nested request for its own previous
        // window (not memoised: a restart that dropped it) is computed afresh from the
        // parent's batches instead of recursing back to the zero time.
        let busy = Arc::new(AtomicBool::new(false));
        let out = reduced.derive(info, slide, move |t, env| {
            let nested = busy.swap(true, Ordering::SeqCst);
            let _done = (!nested).then(|| ClearOnDrop(&busy));
            if slide >= window || nested {
                let batches = batches_at(&parent, &window_times(t, window, step, env), env)?;
                let empty = empty_parts(env.parallelism);
                return Ok(merge_windows(
                    env,
                    &empty,
                    &[],
                    &batches,
                    &*f,
                    &*inv_f,
                    filter,
                ));
            }
            let prev = previous_state(&me2, t, slide, env, Vec::new)?;
            let leaving = batches_at(
                &parent,
                &window_times(t.minus(window), slide, step, env),
                env,
            )?;
            let entering = batches_at(&parent, &window_times(t, slide, step, env), env)?;
            Ok(merge_windows(
                env,
                prev.partitions(),
                &leaving,
                &entering,
                &*f,
                &*inv_f,
                filter,
            ))
        })?;
        // The node reads its own value at `t - slide`: keep it that long, and one batch
        // more so it counts as remembering past batches and checkpoints carry it (a
        // restarted job resumes from it; its parent's batches are kept likewise).
        AnyNode::remember(&*out.node, slide + self.ctx.conf.batch_interval);
        let _ = me.set(Arc::downgrade(&out.node));
        Ok(out)
    }

    /// Per key, every value of the last `window`, every `slide` (values in batch order).
    pub fn group_by_key_and_window(
        &self,
        window: Duration,
        slide: Duration,
    ) -> Result<DStream<(K, Vec<V>)>> {
        self.check_window(window, slide)?;
        AnyNode::remember(&*self.node, window);
        let mut info =
            self.info_for::<(K, Vec<V>)>("group_by_key_and_window", vec![self.node.info.id]);
        info.window_ms = Some((window.as_millis() as u64, slide.as_millis() as u64));
        let parent = self.clone();
        let step = self.slide();
        self.derive(info, slide, move |t, env| {
            let mut parts = Vec::new();
            for s in window_times(t, window, step, env) {
                parts.extend(parent.batch(s, env)?.partitions().iter().cloned());
            }
            let parts = shuffle(&parts, env.parallelism);
            Ok(Batch::from_partitions(
                env.par_map(&parts, |p| group_partition(p)),
            ))
        })
    }
}

/// Clears a flag when dropped (also on an early error return).
struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn empty_parts<T>(n: usize) -> Vec<Vec<T>> {
    (0..n).map(|_| Vec::new()).collect()
}

/// The parent's batches at `times`, each split into `parallelism` partitions by key
/// hash (the parent is a `reduce_by_key`, so they already are, except empty batches).
fn batches_at<K: Data + Hash + Eq, V: Data>(
    parent: &DStream<(K, V)>,
    times: &[BatchTime],
    env: &ExecutionEnv,
) -> Result<Vec<Batch<(K, V)>>> {
    times
        .iter()
        .map(|&s| {
            let b = parent.batch(s, env)?;
            Ok(if b.partitions().len() == env.parallelism {
                b
            } else {
                Batch::from_partitions(shuffle(b.partitions(), env.parallelism))
            })
        })
        .collect()
}

/// Partition by partition: `prev ⊖ leaving ⊕ entering`, then the filter.
fn merge_windows<K: Data + Hash + Eq, V: Data>(
    env: &ExecutionEnv,
    prev: &[Vec<(K, V)>],
    leaving: &[Batch<(K, V)>],
    entering: &[Batch<(K, V)>],
    f: &(dyn Fn(&V, &V) -> V + Send + Sync),
    inv_f: &(dyn Fn(&V, &V) -> V + Send + Sync),
    filter: Option<KeyFilter<K, V>>,
) -> Batch<(K, V)> {
    let idx: Vec<usize> = (0..env.parallelism).collect();
    Batch::from_partitions(env.par_map(&idx, |&i| {
        fn part<X>(b: &Batch<X>, i: usize) -> &[X] {
            b.partitions().get(i).map_or(&[], Vec::as_slice)
        }
        let old: Vec<&[(K, V)]> = leaving.iter().map(|b| part(b, i)).collect();
        let new: Vec<&[(K, V)]> = entering.iter().map(|b| part(b, i)).collect();
        merge_window_partition(
            prev.get(i).map_or(&[][..], Vec::as_slice),
            &old,
            &new,
            f,
            inv_f,
            filter,
        )
    }))
}

/// One key-hash partition of a window: `prev` with the values of `old` removed by
/// `inv_f` (only for keys `prev` has) and those of `new` added by `f`, then filtered.
fn merge_window_partition<K: Hash + Eq + Clone, V: Clone>(
    prev: &[(K, V)],
    old: &[&[(K, V)]],
    new: &[&[(K, V)]],
    f: &(dyn Fn(&V, &V) -> V + Send + Sync),
    inv_f: &(dyn Fn(&V, &V) -> V + Send + Sync),
    filter: Option<KeyFilter<K, V>>,
) -> Vec<(K, V)> {
    let mut out: Vec<(K, V)> = prev.to_vec();
    let mut idx: HashMap<K, usize> = HashMap::with_capacity(out.len());
    for (i, (k, _)) in out.iter().enumerate() {
        idx.insert(k.clone(), i);
    }
    for (k, v) in old.iter().copied().flatten() {
        if let Some(&i) = idx.get(k) {
            out[i].1 = inv_f(&out[i].1, v);
        }
    }
    for (k, v) in new.iter().copied().flatten() {
        match idx.get(k) {
            Some(&i) => out[i].1 = f(&out[i].1, v),
            None => {
                idx.insert(k.clone(), out.len());
                out.push((k.clone(), v.clone()));
            }
        }
    }
    if let Some(keep) = filter {
        out.retain(|(k, v)| keep(k, v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(a: &i64, b: &i64) -> i64 {
        a + b
    }
    fn sub(a: &i64, b: &i64) -> i64 {
        a - b
    }

    #[test]
    fn merge_removes_leaving_values_only_for_keys_it_has() {
        let prev = vec![("a", 3), ("b", 1)];
        let old: Vec<&[_]> = vec![&[("a", 1), ("c", 5)]];
        let new: Vec<&[_]> = vec![&[("b", 2), ("d", 4)], &[("d", 1)]];
        let got = merge_window_partition(&prev, &old, &new, &add, &sub, None);
        assert_eq!(got, vec![("a", 2), ("b", 3), ("d", 5)]);
    }

    #[test]
    fn merge_applies_the_filter_after_the_inverse() {
        let prev = vec![("a", 1), ("b", 2)];
        let old: Vec<&[_]> = vec![&[("a", 1), ("b", 1)]];
        let got = merge_window_partition(&prev, &old, &[], &add, &sub, Some(|_, v| *v != 0));
        assert_eq!(got, vec![("b", 1)]);
        let kept = merge_window_partition(&prev, &old, &[], &add, &sub, None);
        assert_eq!(kept, vec![("a", 0), ("b", 1)]);
    }
}
