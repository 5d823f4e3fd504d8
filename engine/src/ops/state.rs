//! `map_with_state`: per-key state updated record by record, as Spark's `mapWithState`.
//!
//! ```
//! use std::time::Duration;
//! use sluice::prelude::*;
//!
//! let ssc = StreamingContext::new(StreamingConf::new("doc-mws", Duration::from_millis(50)))?;
//! let words = ssc.queue_stream(vec![vec![("a".to_string(), 1u64), ("a".to_string(), 2)]], true)?;
//! let spec = StateSpec::function(|_k: &String, v: Option<&u64>, s: &mut State<u64>| {
//!     let total = s.get().copied().unwrap_or(0) + v.copied().unwrap_or(0);
//!     s.update(total);
//!     Some(total)
//! })
//! .timeout(Duration::from_secs(60));
//! let running = words.map_with_state("running-sums", spec)?;
//! let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
//! let out = seen.clone();
//! running.foreach_batch(move |b| { out.lock().unwrap().extend(b.batch.to_vec()); Ok(()) })?;
//! running.state_snapshots().print(10)?;
//! ssc.start()?;
//! ssc.stop(true)?;
//! assert_eq!(*seen.lock().unwrap(), vec![1, 3]);
//! # Ok::<(), sluice::EngineError>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use crate::ops::dstream::shuffle;
use crate::ops::pair::{check_name, previous_state};
use crate::runtime::graph::{AnyNode, Node};
use crate::{Batch, BatchTime, DStream, Data, Result};

/// The state of one key as the mapping function of `map_with_state` sees it.
#[derive(Debug)]
pub struct State<S> {
    value: Option<S>,
    updated: bool,
    removed: bool,
    timing_out: bool,
}

impl<S> State<S> {
    fn new(value: Option<S>) -> Self {
        State {
            value,
            updated: false,
            removed: false,
            timing_out: false,
        }
    }

    /// The state, if the key has one.
    pub fn get(&self) -> Option<&S> {
        self.value.as_ref()
    }

    /// Whether the key has a state.
    pub fn exists(&self) -> bool {
        self.value.is_some()
    }

    /// Sets the key's state. Ignored (with a warning) when the key is timing out: a
    /// timing-out key is removed after this call, whatever the function does.
    pub fn update(&mut self, s: S) {
        if self.timing_out {
            tracing::warn!("State::update on a key that is timing out is ignored");
            return;
        }
        self.value = Some(s);
        self.updated = true;
        self.removed = false;
    }

    /// Removes the key's state.
    pub fn remove(&mut self) {
        self.value = None;
        self.removed = true;
        self.updated = false;
    }

    /// Whether the key is being called because it timed out (then the value is `None`
    /// and the state is removed after the call).
    pub fn is_timing_out(&self) -> bool {
        self.timing_out
    }
}

type MappingFn<K, V, S, U> = Arc<dyn Fn(&K, Option<&V>, &mut State<S>) -> Option<U> + Send + Sync>;

/// What `map_with_state` does: the mapping function, the initial state, the timeout.
pub struct StateSpec<K, V, S, U> {
    f: MappingFn<K, V, S, U>,
    initial: Vec<(K, S)>,
    timeout: Option<Duration>,
}

impl<K, V, S, U> std::fmt::Debug for StateSpec<K, V, S, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSpec")
            .field("initial_keys", &self.initial.len())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<K, V, S, U> StateSpec<K, V, S, U> {
    /// A spec with the mapping function `f(key, value, state) -> mapped`: called once
    /// per record of the batch (in order), with `Some(value)`, and once with `None` for
    /// a key that timed out. `None` as result emits nothing.
    pub fn function(
        f: impl Fn(&K, Option<&V>, &mut State<S>) -> Option<U> + Send + Sync + 'static,
    ) -> Self {
        StateSpec {
            f: Arc::new(f),
            initial: Vec::new(),
            timeout: None,
        }
    }

    /// The state before the first batch.
    pub fn initial_state(mut self, initial: Vec<(K, S)>) -> Self {
        self.initial = initial;
        self
    }

    /// Keys that receive no record for `d` (of batch time) are called once with `None`
    /// and `is_timing_out()`, then removed. A key's idle time starts at the last batch
    /// with a record for it (the first batch, for initial state).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
}

/// One key's state and the batch time it last saw a record: the elements of the
/// stateful node (what a state snapshot holds).
type Keyed<K, S> = (K, (S, u64));

/// The mapped values of the batches computed last, by batch time: the stateful node
/// computes them beside the state, the mapped stream takes them.
type Side<U> = Arc<Mutex<BTreeMap<BatchTime, Batch<U>>>>;

/// The result of `map_with_state`: a stream of the mapped values (it derefs to it), and
/// the full state after each batch with [`MapWithStateDStream::state_snapshots`].
pub struct MapWithStateDStream<K, S, U> {
    mapped: DStream<U>,
    snapshots: DStream<(K, S)>,
}

impl<K, S, U> std::fmt::Debug for MapWithStateDStream<K, S, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapWithStateDStream")
            .field("mapped", &self.mapped)
            .field("snapshots", &self.snapshots)
            .finish()
    }
}

impl<K, S, U> Clone for MapWithStateDStream<K, S, U> {
    fn clone(&self) -> Self {
        MapWithStateDStream {
            mapped: self.mapped.clone(),
            snapshots: self.snapshots.clone(),
        }
    }
}

impl<K, S, U> MapWithStateDStream<K, S, U> {
    /// The mapped values of each batch.
    pub fn mapped(&self) -> &DStream<U> {
        &self.mapped
    }

    /// Every key's state after each batch.
    pub fn state_snapshots(&self) -> DStream<(K, S)> {
        self.snapshots.clone()
    }
}

impl<K, S, U> Deref for MapWithStateDStream<K, S, U> {
    type Target = DStream<U>;
    fn deref(&self) -> &DStream<U> {
        &self.mapped
    }
}

impl<K: Data + Hash + Eq, V: Data> DStream<(K, V)> {
    /// Keeps a state per key, updated record by record by the spec's function, whose
    /// results form the output stream (Spark's `mapWithState`). `name` identifies the
    /// state across restarts and must be unique.
    pub fn map_with_state<S: Data, U: Data>(
        &self,
        name: &str,
        spec: StateSpec<K, V, S, U>,
    ) -> Result<MapWithStateDStream<K, S, U>> {
        check_name(name)?;
        let parent = self.clone();
        let mut info = self.info_for::<Keyed<K, S>>("map_with_state", vec![self.node.info.id]);
        info.name = Some(name.into());
        info.state_type = Some(std::any::type_name::<S>().into());
        let me: Arc<OnceLock<Weak<Node<Keyed<K, S>>>>> = Arc::new(OnceLock::new());
        let me2 = me.clone();
        let slide = self.slide();
        let StateSpec {
            f,
            initial,
            timeout,
        } = spec;
        let initial = Arc::new(initial);
        let side: Side<U> = Arc::default();
        let side2 = side.clone();
        let state = self.derive(info, slide, move |t, env| {
            // The initial state counts as seen at the first batch.
            let first: Vec<Keyed<K, S>> = if t.minus(slide) <= env.zero {
                initial
                    .iter()
                    .map(|(k, s)| (k.clone(), (s.clone(), t.0)))
                    .collect()
            } else {
                Vec::new()
            };
            let prev = previous_state(&me2, t, slide, env, || first)?;
            let new = shuffle(parent.batch(t, env)?.partitions(), env.parallelism);
            let pairs: Vec<(&Vec<Keyed<K, S>>, &Vec<(K, V)>)> =
                prev.partitions().iter().zip(new.iter()).collect();
            let (states, mapped): (Vec<_>, Vec<_>) = env
                .par_map(&pairs, |(old, new)| {
                    map_partition(old, new, &*f, t, timeout)
                })
                .into_iter()
                .unzip();
            let mut side = side2.lock().unwrap_or_else(|e| e.into_inner());
            // Mapped values nobody took within a slide are dropped (no stream reads them).
            *side = side.split_off(&t.minus(slide));
            side.insert(t, Batch::from_partitions(mapped));
            Ok(Batch::from_partitions(states))
        })?;
        // The node reads its own batch at `t - slide`: keep it that long, and one batch
        // more so it counts as remembering past batches and checkpoints carry it.
        AnyNode::remember(&*state.node, slide + self.ctx.conf.batch_interval);
        let _ = me.set(Arc::downgrade(&state.node));
        // Checkpoints write the state to the operator's state snapshots.
        let _ = state
            .node
            .kv
            .set(crate::runtime::graph::pair_codec::<K, (S, u64)>());
        let source = state.clone();
        let info = state.info_for::<U>("map_with_state:mapped", vec![state.node.info.id]);
        let mapped = state.derive(info, slide, move |t, env| {
            source.batch(t, env)?;
            let mut side = side.lock().unwrap_or_else(|e| e.into_inner());
            // Absent when the state at `t` was restored rather than computed: that
            // batch's outputs ran before the restart.
            Ok(side.remove(&t).unwrap_or_default())
        })?;
        let snapshots = state.map(|(k, (s, _))| (k.clone(), s.clone()))?;
        Ok(MapWithStateDStream { mapped, snapshots })
    }
}

/// One key-hash partition: applies the records of `new` in order to the states of
/// `old`, then times out idle keys. Returns the states (in a stable order) and the
/// mapped values.
fn map_partition<K: Hash + Eq + Clone, V, S: Clone, U>(
    old: &[Keyed<K, S>],
    new: &[(K, V)],
    f: &(dyn Fn(&K, Option<&V>, &mut State<S>) -> Option<U> + Send + Sync),
    t: BatchTime,
    timeout: Option<Duration>,
) -> (Vec<Keyed<K, S>>, Vec<U>) {
    // Slots keep the order of keys stable; a removed key leaves an empty slot.
    let mut slots: Vec<Option<(K, S, u64)>> = Vec::new();
    let mut idx: HashMap<K, usize> = HashMap::new();
    for (k, (s, at)) in old {
        idx.insert(k.clone(), slots.len());
        slots.push(Some((k.clone(), s.clone(), *at)));
    }
    let mut mapped = Vec::new();
    for (k, v) in new {
        let slot = idx.get(k).copied();
        let current = slot.and_then(|i| slots[i].as_ref().map(|(_, s, _)| s.clone()));
        let mut state = State::new(current);
        mapped.extend(f(k, Some(v), &mut state));
        if state.removed {
            if let Some(i) = slot {
                slots[i] = None;
            }
            idx.remove(k);
        } else if state.updated || timeout.is_some() {
            // Updated, or (with a timeout) seen: the key's idle time restarts at `t`.
            if let Some(s) = state.value {
                match slot {
                    Some(i) => slots[i] = Some((k.clone(), s, t.0)),
                    None => {
                        idx.insert(k.clone(), slots.len());
                        slots.push(Some((k.clone(), s, t.0)));
                    }
                }
            }
        }
    }
    if let Some(d) = timeout {
        let threshold = t.0.saturating_sub(d.as_millis() as u64);
        for slot in &mut slots {
            if slot.as_ref().is_some_and(|(_, _, at)| *at < threshold) {
                if let Some((k, s, _)) = slot.take() {
                    let mut state = State::new(Some(s));
                    state.timing_out = true;
                    mapped.extend(f(&k, None, &mut state));
                }
            }
        }
    }
    let states = slots
        .into_iter()
        .flatten()
        .map(|(k, s, at)| (k, (s, at)))
        .collect();
    (states, mapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(_k: &&str, v: Option<&u64>, s: &mut State<u64>) -> Option<(u64, bool)> {
        if s.is_timing_out() {
            return Some((*s.get()?, true));
        }
        let n = s.get().copied().unwrap_or(0) + v.copied().unwrap_or(0);
        if n >= 100 {
            s.remove();
        } else {
            s.update(n);
        }
        Some((n, false))
    }

    type Out = (Vec<Keyed<&'static str, u64>>, Vec<(u64, bool)>);

    fn states(out: &Out) -> Vec<(&'static str, u64, u64)> {
        out.0.iter().map(|(k, (s, at))| (*k, *s, *at)).collect()
    }

    fn mapped(out: &Out) -> Vec<(u64, bool)> {
        out.1.clone()
    }

    #[test]
    fn records_update_in_order_and_removal_drops_the_key() {
        let old = vec![("a", (5, 10)), ("b", (99, 10))];
        let new = vec![("a", 1), ("b", 1), ("a", 2), ("c", 3)];
        let out = map_partition(&old, &new, &sum, BatchTime(20), None);
        assert_eq!(states(&out), vec![("a", 8, 20), ("c", 3, 20)]);
        assert_eq!(
            mapped(&out),
            vec![(6, false), (100, false), (8, false), (3, false)]
        );
    }

    #[test]
    fn idle_keys_time_out_once_with_none() {
        let old = vec![("a", (5, 10)), ("b", (7, 30))];
        // Threshold 40 - 20 = 20: "a" (last seen at 10) times out, "b" (30) does not.
        let out = map_partition::<_, u64, _, _>(
            &old,
            &[],
            &sum,
            BatchTime(40),
            Some(Duration::from_millis(20)),
        );
        assert_eq!(states(&out), vec![("b", 7, 30)]);
        assert_eq!(mapped(&out), vec![(5, true)]);
    }

    #[test]
    fn a_record_refreshes_the_idle_time_when_a_timeout_is_set() {
        let old = vec![("a", (5, 10))];
        let f = |_k: &&str, _v: Option<&u64>, _s: &mut State<u64>| -> Option<(u64, bool)> { None };
        let out = map_partition(
            &old,
            &[("a", 1)],
            &f,
            BatchTime(40),
            Some(Duration::from_millis(20)),
        );
        assert_eq!(states(&out), vec![("a", 5, 40)]);
        let out = map_partition(&old, &[("a", 1)], &f, BatchTime(40), None);
        assert_eq!(states(&out), vec![("a", 5, 10)]);
    }

    #[test]
    fn update_while_timing_out_is_ignored() {
        let mut s = State::new(Some(1u8));
        s.timing_out = true;
        s.update(2);
        assert_eq!(s.get(), Some(&1));
        assert!(!s.updated);
    }
}
