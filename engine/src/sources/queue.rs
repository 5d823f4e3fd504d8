//! Direct (pull) inputs: the queue stream for tests and the deterministic generator.
//! Each batch's data is fixed by `allocate` before any job of the batch runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::runtime::graph::{ExecutionEnv, NodeInfo};
use crate::runtime::io::Input;
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
        drop(self.take_through(t));
    }
    /// Removes and returns the batches at or before `t`.
    pub(crate) fn take_through(&self, t: BatchTime) -> Vec<Batch<T>> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let later = m.split_off(&BatchTime(t.0 + 1));
        std::mem::replace(&mut *m, later).into_values().collect()
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
    /// `identity` is the input's stable name: the user's, or derived from what it reads
    /// (a directory, `host:port`); its position in checkpoints, its plans in the driver
    /// log and its receiver WAL are found again by it (see `sluice_recovery::identity`).
    pub(crate) fn input_stream<T: Data>(
        &self,
        kind: &str,
        identity: String,
        alloc: Arc<Allocations<T>>,
        input: Arc<dyn Input>,
    ) -> Result<DStream<T>> {
        let stream = self.node_stream(
            input_info::<T>(kind, Some(identity)),
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
            items: batches.into_iter().collect(),
            cursor: Mutex::new(0),
            plans: Mutex::new(BTreeMap::new()),
            one_at_a_time,
            alloc: alloc.clone(),
        });
        self.input_stream("queue", "queue".into(), alloc, input)
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
            batch_ms: AtomicU64::new(0),
            stop_at: AtomicU64::new(u64::MAX),
            next_offset: AtomicU64::new(0),
            plans: Mutex::new(BTreeMap::new()),
            name: name.into(),
        });
        self.input_stream("generator", name.into(), alloc, input)
    }
}

/// The queue is kept whole with a cursor, so a restarted job that queues the same
/// batches resumes after the ones it consumed and replays a logged batch exactly.
struct QueueInput<T> {
    items: Vec<Vec<T>>,
    cursor: Mutex<usize>,
    /// The items each batch took, `[from, to)`, until the batch is processed.
    plans: Mutex<BTreeMap<BatchTime, (usize, usize)>>,
    one_at_a_time: bool,
    alloc: Arc<Allocations<T>>,
}

impl<T: Data> QueueInput<T> {
    fn take(&self, t: BatchTime, from: usize, to: usize) -> u64 {
        let to = to.min(self.items.len());
        let from = from.min(to);
        let b = Batch::from_partitions(self.items[from..to].to_vec());
        let n = b.len() as u64;
        self.alloc.set(t, b);
        lock(&self.plans).insert(t, (from, to));
        *lock(&self.cursor) = to;
        n
    }
}

fn lock<X>(m: &Mutex<X>) -> std::sync::MutexGuard<'_, X> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: Data> Input for QueueInput<T> {
    fn describe(&self) -> String {
        "queue".into()
    }
    fn kind(&self) -> &'static str {
        "queue"
    }
    fn start(&self, _env: &ExecutionEnv) -> Result<()> {
        Ok(())
    }
    fn allocate(&self, t: BatchTime, _env: &ExecutionEnv) -> Result<u64> {
        let from = *lock(&self.cursor);
        let to = if self.one_at_a_time {
            from + 1
        } else {
            self.items.len()
        };
        Ok(self.take(t, from, to))
    }
    fn stop_receiving(&self) {}
    fn drained(&self) -> bool {
        *lock(&self.cursor) >= self.items.len()
    }
    fn forget(&self, t: BatchTime) {
        self.alloc.forget(t);
        let mut p = lock(&self.plans);
        *p = p.split_off(&BatchTime(t.0 + 1));
    }
    fn plan_of(&self, t: BatchTime) -> Option<Vec<u8>> {
        let (a, b) = *lock(&self.plans).get(&t)?;
        crate::runtime::graph::encode(&(a as u64, b as u64)).ok()
    }
    fn replay(&self, t: BatchTime, plan: &[u8], _env: &ExecutionEnv) -> Result<u64> {
        let (a, b): (u64, u64) = crate::runtime::graph::decode(plan)?;
        Ok(self.take(t, a as usize, b as usize))
    }
    fn position(&self) -> Option<Vec<u8>> {
        crate::runtime::graph::encode(&(*lock(&self.cursor) as u64)).ok()
    }
    fn restore_position(&self, pos: &[u8]) -> Result<()> {
        let c: u64 = crate::runtime::graph::decode(pos)?;
        *lock(&self.cursor) = c as usize;
        Ok(())
    }
}

type GenFn<T> = Box<dyn Fn(u64) -> T + Send + Sync>;

struct GeneratorInput<T> {
    name: String,
    rate: u64,
    f: GenFn<T>,
    alloc: Arc<Allocations<T>>,
    zero: AtomicU64,
    batch_ms: AtomicU64,
    /// Graceful stop: the generator produces nothing past this time.
    stop_at: AtomicU64,
    /// The first offset not yet allocated to a batch.
    next_offset: AtomicU64,
    /// The offsets each batch took, `[from, to)`, until the batch is processed.
    plans: Mutex<BTreeMap<BatchTime, (u64, u64)>>,
}

impl<T: Data> GeneratorInput<T> {
    /// The first offset after `t` (offsets the clock passed up to `t`).
    fn offset_at(&self, t: u64) -> u64 {
        let zero = self.zero.load(Ordering::SeqCst);
        let t = t.min(self.stop_at.load(Ordering::SeqCst)).max(zero);
        ((t - zero) as u128 * self.rate as u128 / 1000) as u64
    }

    fn generate(&self, t: BatchTime, from: u64, to: u64, env: &ExecutionEnv) -> u64 {
        let to = to.max(from);
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
        lock(&self.plans).insert(t, (from, to));
        self.next_offset.store(to, Ordering::SeqCst);
        to - from
    }
}

impl<T: Data> Input for GeneratorInput<T> {
    fn describe(&self) -> String {
        format!("generator {:?} at {}/s", self.name, self.rate)
    }
    fn kind(&self) -> &'static str {
        "generator"
    }
    fn start(&self, env: &ExecutionEnv) -> Result<()> {
        self.zero.store(env.zero.0, Ordering::SeqCst);
        self.batch_ms
            .store(env.batch.as_millis() as u64, Ordering::SeqCst);
        Ok(())
    }
    fn allocate(&self, t: BatchTime, env: &ExecutionEnv) -> Result<u64> {
        let from = self.next_offset.load(Ordering::SeqCst);
        Ok(self.generate(t, from, self.offset_at(t.0), env))
    }
    fn stop_receiving(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // Stop at the end of the batch in progress, so every batch holds exactly the
        // offsets its time implies, however the stop was timed.
        let (zero, batch) = (
            self.zero.load(Ordering::SeqCst),
            self.batch_ms.load(Ordering::SeqCst).max(1),
        );
        let end = zero + (now.saturating_sub(zero)).div_ceil(batch) * batch;
        let _ = self
            .stop_at
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| Some(s.min(end)));
    }
    fn drained(&self) -> bool {
        let stop = self.stop_at.load(Ordering::SeqCst);
        stop != u64::MAX && self.next_offset.load(Ordering::SeqCst) >= self.offset_at(stop)
    }
    fn forget(&self, t: BatchTime) {
        self.alloc.forget(t);
        let mut p = lock(&self.plans);
        *p = p.split_off(&BatchTime(t.0 + 1));
    }
    fn plan_of(&self, t: BatchTime) -> Option<Vec<u8>> {
        crate::runtime::graph::encode(lock(&self.plans).get(&t)?).ok()
    }
    fn replay(&self, t: BatchTime, plan: &[u8], env: &ExecutionEnv) -> Result<u64> {
        let (from, to): (u64, u64) = crate::runtime::graph::decode(plan)?;
        Ok(self.generate(t, from, to, env))
    }
    fn position(&self) -> Option<Vec<u8>> {
        crate::runtime::graph::encode(&self.next_offset.load(Ordering::SeqCst)).ok()
    }
    fn restore_position(&self, pos: &[u8]) -> Result<()> {
        self.next_offset
            .store(crate::runtime::graph::decode(pos)?, Ordering::SeqCst);
        Ok(())
    }
}
