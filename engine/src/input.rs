//! Direct (pull) inputs: the queue stream for tests and the deterministic generator.
//! Each batch's data is fixed by `allocate` before any job of the batch runs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::context::Input;
use crate::graph::{Env, NodeInfo};
use crate::{Batch, BatchTime, DStream, Data, Result, StreamingContext};

/// The allocations of an input: the batch of each planned time until it is processed.
pub(crate) struct Allocations<T> {
    map: Mutex<BTreeMap<BatchTime, Batch<T>>>,
}

impl<T> Default for Allocations<T> {
    fn default() -> Self {
        Allocations {
            map: Mutex::new(BTreeMap::new()),
        }
    }
}

impl<T: Clone> Allocations<T> {
    pub(crate) fn set(&self, t: BatchTime, b: Batch<T>) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(t, b);
    }
    pub(crate) fn get(&self, t: BatchTime) -> Batch<T> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&t)
            .cloned()
            .unwrap_or_default()
    }
    pub(crate) fn forget(&self, t: BatchTime) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        *m = m.split_off(&BatchTime(t.0 + 1));
    }
}

pub(crate) fn input_info<T>(kind: &str, name: Option<String>) -> NodeInfo {
    NodeInfo {
        id: 0,
        kind: format!("input:{kind}"),
        name,
        parents: vec![],
        type_name: std::any::type_name::<T>().into(),
        state_type: None,
        window_ms: None,
        slide_ms: 0,
    }
}

impl StreamingContext {
    /// Registers an input whose node reads `alloc` (shared by input sources).
    pub(crate) fn input_stream<T: Data>(
        &self,
        kind: &str,
        name: Option<String>,
        alloc: Arc<Allocations<T>>,
        input: Arc<dyn Input>,
    ) -> Result<DStream<T>> {
        let stream = self.node_stream(
            input_info::<T>(kind, name),
            Box::new(move |t, _env| Ok(alloc.get(t))),
        )?;
        self.inner.add_input(input)?;
        Ok(stream)
    }

    /// A stream fed from a queue of batches (for tests): each batch time takes the next
    /// batch (`one_at_a_time`) or everything queued.
    pub fn queue_stream<T: Data>(
        &self,
        batches: impl IntoIterator<Item = Vec<T>>,
        one_at_a_time: bool,
    ) -> Result<DStream<T>> {
        let alloc = Arc::new(Allocations::default());
        let input = Arc::new(QueueInput {
            queue: Mutex::new(batches.into_iter().collect()),
            one_at_a_time,
            alloc: alloc.clone(),
        });
        self.input_stream("queue", None, alloc, input)
    }

    /// A deterministic source replayable by offset: `rate_per_sec` records a second,
    /// record number `n` being `f(n)`. Batch `t` holds the offsets the clock passed in
    /// `(t - batch interval, t]`, so a replayed batch gets the same records.
    pub fn generator_stream<T: Data>(
        &self,
        name: &str,
        rate_per_sec: u64,
        f: impl Fn(u64) -> T + Send + Sync + 'static,
    ) -> Result<DStream<T>> {
        let alloc = Arc::new(Allocations::default());
        let input = Arc::new(GeneratorInput {
            rate: rate_per_sec,
            f: Box::new(f),
            alloc: alloc.clone(),
            zero: AtomicU64::new(0),
            stop_at: AtomicU64::new(u64::MAX),
            allocated_to: AtomicU64::new(0),
            name: name.into(),
        });
        self.input_stream("generator", Some(name.into()), alloc, input)
    }
}

struct QueueInput<T> {
    queue: Mutex<VecDeque<Vec<T>>>,
    one_at_a_time: bool,
    alloc: Arc<Allocations<T>>,
}

impl<T: Data> Input for QueueInput<T> {
    fn describe(&self) -> String {
        "queue".into()
    }
    fn start(&self, _env: &Env) -> Result<()> {
        Ok(())
    }
    fn allocate(&self, t: BatchTime, _env: &Env) -> Result<u64> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let parts: Vec<Vec<T>> = if self.one_at_a_time {
            q.pop_front().into_iter().collect()
        } else {
            q.drain(..).collect()
        };
        let b = Batch::from_partitions(parts);
        let n = b.len() as u64;
        self.alloc.set(t, b);
        Ok(n)
    }
    fn stop_receiving(&self) {}
    fn drained(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
    fn forget(&self, t: BatchTime) {
        self.alloc.forget(t);
    }
}

type GenFn<T> = Box<dyn Fn(u64) -> T + Send + Sync>;

struct GeneratorInput<T> {
    name: String,
    rate: u64,
    f: GenFn<T>,
    alloc: Arc<Allocations<T>>,
    zero: AtomicU64,
    /// Graceful stop: the generator produces nothing past this time.
    stop_at: AtomicU64,
    /// The batch time allocated last.
    allocated_to: AtomicU64,
}

impl<T> GeneratorInput<T> {
    /// The first offset after `t` (offsets the clock passed up to `t`).
    fn offset_at(&self, t: u64) -> u64 {
        let zero = self.zero.load(Ordering::SeqCst);
        let t = t.min(self.stop_at.load(Ordering::SeqCst)).max(zero);
        ((t - zero) as u128 * self.rate as u128 / 1000) as u64
    }
}

impl<T: Data> Input for GeneratorInput<T> {
    fn describe(&self) -> String {
        format!("generator {:?} at {}/s", self.name, self.rate)
    }
    fn start(&self, env: &Env) -> Result<()> {
        self.zero.store(env.zero.0, Ordering::SeqCst);
        self.allocated_to.store(env.zero.0, Ordering::SeqCst);
        Ok(())
    }
    fn allocate(&self, t: BatchTime, env: &Env) -> Result<u64> {
        let from = self.offset_at(t.minus(env.batch).0);
        let to = self.offset_at(t.0);
        let n = (to - from) as usize;
        // Split the range into up to `parallelism` partitions.
        let parts = env.parallelism.max(1);
        let per = n.div_ceil(parts).max(1);
        let f = &self.f;
        let chunks: Vec<(u64, u64)> = (0..parts)
            .map(|i| {
                let a = from + (i * per) as u64;
                (a.min(to), (a + per as u64).min(to))
            })
            .filter(|(a, b)| a < b)
            .collect();
        let data = env.par_map(&chunks, |&(a, b)| (a..b).map(f).collect::<Vec<T>>());
        self.alloc.set(t, Batch::from_partitions(data));
        self.allocated_to.store(t.0, Ordering::SeqCst);
        Ok(to - from)
    }
    fn stop_receiving(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let _ = self
            .stop_at
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| Some(s.min(now)));
    }
    fn drained(&self) -> bool {
        self.allocated_to.load(Ordering::SeqCst) >= self.stop_at.load(Ordering::SeqCst)
    }
    fn forget(&self, t: BatchTime) {
        self.alloc.forget(t);
    }
}
