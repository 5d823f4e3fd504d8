//! The DStream graph: typed nodes that compute their batch for a time from their
//! parents' batches, memoised per time and remembered as long as a window needs it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::{Batch, BatchTime, Result};

pub use sluice_recovery::graph::NodeInfo;

/// What a node's compute function sees.
#[derive(Debug, Clone)]
pub(crate) struct ExecutionEnv {
    /// The context's zero time: batch times are `zero + k * batch_interval`.
    pub zero: BatchTime,
    /// The batch interval.
    pub batch: Duration,
    /// Partitions for shuffles.
    pub parallelism: usize,
    /// The CPU pool partitions run on.
    pub pool: Arc<rayon::ThreadPool>,
}

impl ExecutionEnv {
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

pub(crate) type ComputeFn<T> =
    Box<dyn Fn(BatchTime, &ExecutionEnv) -> Result<Batch<T>> + Send + Sync>;

/// Encodes a stateful node's state, taken at a batch, into `(key, value)` bytes.
pub(crate) type EncodeState = Box<dyn FnOnce() -> Result<Vec<(Vec<u8>, Vec<u8>)>> + Send>;

/// Splits a stateful node's elements into key and value bytes for state snapshots,
/// and joins them back.
pub(crate) struct KvCodec<T> {
    pub(crate) split: fn(&T) -> Result<(Vec<u8>, Vec<u8>)>,
    pub(crate) join: fn(&[u8], &[u8]) -> Result<T>,
    /// The partition of `n` an element's key is shuffled to (as `shuffle` does).
    pub(crate) partition: fn(&T, usize) -> usize,
}

fn codec_err(e: impl std::fmt::Display) -> crate::EngineError {
    crate::EngineError::User(format!("state (de)serialization failed: {e}"))
}

/// Encodes `x` into a vector sized once: a first pass only adds up the length (cheap
/// next to the copy), so a large block is not copied through doubling reallocations
/// and does not leave up to twice its size allocated.
pub(crate) fn encode<X: serde::Serialize>(x: &X) -> Result<Vec<u8>> {
    let cfg = bincode::config::standard();
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(x, &mut size, cfg).map_err(codec_err)?;
    let mut out = Vec::with_capacity(size.bytes_written);
    bincode::serde::encode_into_std_write(x, &mut out, cfg).map_err(codec_err)?;
    Ok(out)
}

/// Decodes bytes from disk (checkpoints, snapshots, WAL records, memos), bounded: a
/// corrupt length is an error, never an allocation of the claimed size.
pub(crate) fn decode<X: serde::de::DeserializeOwned>(b: &[u8]) -> Result<X> {
    sluice_wal::codec::decode_bounded(b)
        .map(|(x, _)| x)
        .map_err(codec_err)
}

/// Decodes the value at the start of `b` and ignores the rest (a format version read
/// before the payload it governs).
pub(crate) fn decode_prefix<X: serde::de::DeserializeOwned>(b: &[u8]) -> Result<X> {
    decode(b)
}

/// The codec of keyed state `(K, S)`.
pub(crate) fn pair_codec<K: crate::Data + std::hash::Hash, S: crate::Data>() -> KvCodec<(K, S)> {
    KvCodec {
        split: |(k, s)| Ok((encode(k)?, encode(s)?)),
        join: |k, s| Ok((decode(k)?, decode(s)?)),
        partition: |(k, _), n| crate::ops::dstream::key_partition(k, n),
    }
}

/// A typed node.
pub(crate) struct Node<T> {
    pub(crate) info: NodeInfo,
    compute: ComputeFn<T>,
    memo: Mutex<BTreeMap<BatchTime, Batch<T>>>,
    /// How long batches are kept after they are computed, in ms.
    remember_ms: AtomicU64,
    pub(crate) slide: Duration,
    /// Set on stateful nodes: how their state goes into snapshots.
    pub(crate) kv: std::sync::OnceLock<KvCodec<T>>,
}

impl<T> std::fmt::Debug for Node<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("info", &self.info).finish()
    }
}

impl<T: crate::Data> Node<T> {
    pub(crate) fn new(info: NodeInfo, slide: Duration, compute: ComputeFn<T>) -> Self {
        Node {
            info,
            compute,
            memo: Mutex::new(BTreeMap::new()),
            remember_ms: AtomicU64::new(0),
            slide,
            kv: std::sync::OnceLock::new(),
        }
    }

    fn memo(&self) -> MutexGuard<'_, BTreeMap<BatchTime, Batch<T>>> {
        self.memo.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this node produces a batch at `t`.
    pub(crate) fn is_time(&self, t: BatchTime, env: &ExecutionEnv) -> bool {
        t > env.zero && (t.0 - env.zero.0).is_multiple_of((self.slide.as_millis() as u64).max(1))
    }

    /// The node's batch at `t`: memoised; empty before the zero time or off its slide.
    pub(crate) fn get(&self, t: BatchTime, env: &ExecutionEnv) -> Result<Batch<T>> {
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
    fn forget(&self, t: BatchTime);
    /// Keeps batches for at least `d` (a downstream window needs them).
    fn remember(&self, d: Duration);
    /// Whether the node keeps batches longer than one batch interval (a window reads
    /// them): those batches go into checkpoints.
    fn remembers_past(&self, batch: Duration) -> bool;
    /// The memoised batches at or before `t` still remembered, encoded (checkpoints).
    fn encode_memo(&self, t: BatchTime) -> Result<Vec<u8>>;
    /// Restores batches written by `encode_memo`.
    fn restore_memo(&self, bytes: &[u8]) -> Result<()>;
    /// A stateful node's state at `t`, or `None` for a node that keeps no state: taken
    /// now (a handle on the batch, no copy), encoded into `(key, value)` bytes when the
    /// returned function runs — on the checkpoint thread, off the scheduler's.
    fn state_entries(&self, t: BatchTime, env: &ExecutionEnv) -> Option<Result<EncodeState>>;
    /// Restores a stateful node's state at `t` from `(key, value)` bytes.
    fn restore_state(
        &self,
        t: BatchTime,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        env: &ExecutionEnv,
    ) -> Result<()>;
    /// Computes the node's batch at `t` if it keeps batches for a window, so a window
    /// that reads it later finds it even if nothing read it at `t`.
    fn keep_for_window(&self, t: BatchTime, env: &ExecutionEnv) -> Result<()>;
}

impl<T: crate::Data> AnyNode for Node<T> {
    fn info(&self) -> &NodeInfo {
        &self.info
    }

    fn forget(&self, t: BatchTime) {
        // A node no window or state reads back (nothing asked it to remember) keeps
        // nothing past its batch: batch `t` is freed as soon as `t` is done, which is
        // what lets a receiver's buffer bound also bound what its batches hold.
        let keep = self.remember_ms.load(Ordering::Relaxed);
        let cutoff = BatchTime(t.0.saturating_sub(keep));
        let mut memo = self.memo();
        *memo = memo.split_off(&BatchTime(cutoff.0 + 1));
    }

    fn remember(&self, d: Duration) {
        self.remember_ms
            .fetch_max(d.as_millis() as u64, Ordering::Relaxed);
    }

    fn remembers_past(&self, batch: Duration) -> bool {
        self.remember_ms.load(Ordering::Relaxed) > batch.as_millis() as u64
    }

    fn keep_for_window(&self, t: BatchTime, env: &ExecutionEnv) -> Result<()> {
        if self.remembers_past(env.batch) {
            // In memory: a window reads it after the WAL may have dropped its blocks.
            self.get(t, env)?.load_all(Some(&env.pool))?;
        }
        Ok(())
    }

    fn encode_memo(&self, t: BatchTime) -> Result<Vec<u8>> {
        let memo = self.memo();
        let mut entries: Vec<(u64, Vec<Vec<T>>)> = Vec::new();
        for (k, b) in memo.range(..=t) {
            b.load_all(None)?;
            entries.push((k.0, b.partitions().to_vec()));
        }
        encode(&entries)
    }

    fn restore_memo(&self, bytes: &[u8]) -> Result<()> {
        let entries: Vec<(u64, Vec<Vec<T>>)> = decode(bytes)?;
        let mut memo = self.memo();
        for (t, parts) in entries {
            memo.insert(BatchTime(t), Batch::from_partitions(parts));
        }
        Ok(())
    }

    fn state_entries(&self, t: BatchTime, env: &ExecutionEnv) -> Option<Result<EncodeState>> {
        let split = self.kv.get()?.split;
        Some(
            self.get(t, env)
                .map(|b| -> EncodeState { Box::new(move || b.iter().map(split).collect()) }),
        )
    }

    fn restore_state(
        &self,
        t: BatchTime,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        env: &ExecutionEnv,
    ) -> Result<()> {
        let kv = self.kv.get().ok_or_else(|| {
            crate::EngineError::User(format!("node {} keeps no state to restore", self.info.id))
        })?;
        // Decoded in parallel, straight into the partitions the operator's keys shuffle
        // to, so its first batch does not shuffle (and clone) the restored state again.
        let n = env.parallelism.max(1);
        let chunks: Vec<&[(Vec<u8>, Vec<u8>)]> = entries
            .chunks(entries.len().div_ceil(n * 4).max(1))
            .collect();
        let decoded = env.par_map(&chunks, |chunk| -> Result<Vec<Vec<T>>> {
            let mut parts: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
            for (k, v) in chunk.iter() {
                let x = (kv.join)(k, v)?;
                parts[(kv.partition)(&x, n)].push(x);
            }
            Ok(parts)
        });
        let mut parts: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
        for d in decoded {
            for (all, p) in parts.iter_mut().zip(d?) {
                all.extend(p);
            }
        }
        self.memo().insert(t, Batch::from_partitions(parts));
        Ok(())
    }
}

/// Registers nodes; shared by the context and every DStream handle.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub(crate) nodes: Vec<Arc<dyn AnyNode>>,
}
