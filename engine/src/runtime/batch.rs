//! Elements, batches and batch times.

use std::sync::{Arc, OnceLock};

use crate::Result;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// What a stream can carry: cloneable, shareable across threads, and serialisable (so
/// it can go to the write-ahead log, checkpoints and object files).
pub trait Data: Clone + Send + Sync + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static> Data for T {}

pub use sluice_recovery::BatchTime;

/// The data of one stream for one batch time: a set of partitions, processed in
/// parallel. Cheap to clone (shared).
///
/// A batch may be *stored*: its partitions are read only when needed. A receiver's
/// batch with the receiver WAL on stays in the WAL (page cache); a Kafka batch stays
/// on the brokers, its offset ranges fixed. Operators that go element by element
/// (map, filter, flat_map, `reduce`, the map side of `reduce_by_key`, `count`) read
/// each partition, use it and drop it — a Kafka partition in pieces of a bounded
/// size, as it arrives — so a batch of any size needs memory for the pieces in flight
/// only. Every other consumer (and every batch a user's function sees) gets the
/// partitions loaded first.
pub struct Batch<T> {
    parts: Arc<Parts<T>>,
}

enum Parts<T> {
    Ready(Vec<Vec<T>>),
    Stored(Stored<T>),
}

/// Reads partition `i` of a stored batch.
pub(crate) type LoadPart<T> = Arc<dyn Fn(usize) -> Result<Vec<T>> + Send + Sync>;

/// Reads partition `i` of a stored batch in consecutive pieces, handing each to the
/// callback in order.
pub(crate) type StreamPart<T> =
    Arc<dyn Fn(usize, &mut dyn FnMut(&[T])) -> Result<()> + Send + Sync>;

struct Stored<T> {
    /// The number of partitions.
    parts: usize,
    /// The number of elements of each partition, when known without reading it.
    lens: Option<Vec<usize>>,
    load: LoadPart<T>,
    /// Reads a partition in pieces (else element-wise operators read it whole).
    stream: Option<StreamPart<T>>,
    /// Every partition, once something needed them all at once.
    loaded: OnceLock<Vec<Vec<T>>>,
}

impl<T> std::fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, parts) = match &*self.parts {
            Parts::Ready(p) => ("ready", p.len()),
            Parts::Stored(s) => ("stored", s.parts),
        };
        // Never read to be printed: an unread batch of unknown sizes shows no length.
        let len = match self.unread() {
            Some(s) if s.lens.is_none() => None,
            _ => Some(self.len()),
        };
        f.debug_struct("Batch")
            .field("kind", &kind)
            .field("partitions", &parts)
            .field("len", &len)
            .finish()
    }
}

impl<T> Clone for Batch<T> {
    fn clone(&self) -> Self {
        Batch {
            parts: self.parts.clone(),
        }
    }
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Self::from_partitions(Vec::new())
    }
}

impl<T> Batch<T> {
    /// A batch of the given partitions.
    pub fn from_partitions(parts: Vec<Vec<T>>) -> Self {
        Batch {
            parts: Arc::new(Parts::Ready(parts)),
        }
    }

    /// A batch of one partition.
    pub fn from_vec(v: Vec<T>) -> Self {
        Self::from_partitions(vec![v])
    }

    /// A stored batch: partition `i` holds `lens[i]` elements and `load(i)` reads them.
    pub(crate) fn stored(lens: Vec<usize>, load: LoadPart<T>) -> Self {
        Batch {
            parts: Arc::new(Parts::Stored(Stored {
                parts: lens.len(),
                lens: Some(lens),
                load,
                stream: None,
                loaded: OnceLock::new(),
            })),
        }
    }

    /// A stored batch of `parts` partitions whose sizes are known only once read:
    /// `load(i)` reads partition `i` whole, `stream(i, f)` hands it to `f` in pieces.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) fn streamed(parts: usize, load: LoadPart<T>, stream: StreamPart<T>) -> Self {
        Batch {
            parts: Arc::new(Parts::Stored(Stored {
                parts,
                lens: None,
                load,
                stream: Some(stream),
                loaded: OnceLock::new(),
            })),
        }
    }

    /// The partitions, if they are in memory (always, except for a stored batch no
    /// one loaded yet).
    fn in_memory(&self) -> Option<&[Vec<T>]> {
        match &*self.parts {
            Parts::Ready(p) => Some(p),
            Parts::Stored(s) => s.loaded.get().map(Vec::as_slice),
        }
    }

    /// The partitions.
    ///
    /// The engine loads a stored batch (see the type's docs) before anything outside
    /// the partition-by-partition operators sees it, so this never reads; were it to,
    /// a read error would panic, naming the error.
    pub fn partitions(&self) -> &[Vec<T>] {
        if let Some(p) = self.in_memory() {
            return p;
        }
        if let Err(e) = self.load_in_order() {
            panic!("a stored batch could not be read: {e}");
        }
        self.in_memory().unwrap_or(&[])
    }

    /// Reads every partition of a stored batch into memory, one after the other.
    fn load_in_order(&self) -> Result<()> {
        if let Parts::Stored(s) = &*self.parts {
            if s.loaded.get().is_none() {
                let parts = (0..s.parts).map(|i| (s.load)(i)).collect::<Result<_>>()?;
                let _ = s.loaded.set(parts);
            }
        }
        Ok(())
    }

    /// Reads every partition of a stored batch into memory (on `pool`, in parallel,
    /// when given), once; nothing for a batch already in memory.
    pub(crate) fn load_all(&self, pool: Option<&rayon::ThreadPool>) -> Result<()>
    where
        T: Send + Sync,
    {
        let (Parts::Stored(s), Some(pool)) = (&*self.parts, pool) else {
            return self.load_in_order();
        };
        if s.loaded.get().is_none() {
            use rayon::prelude::*;
            let parts = pool.install(|| {
                (0..s.parts)
                    .into_par_iter()
                    .map(|i| (s.load)(i))
                    .collect::<Result<Vec<Vec<T>>>>()
            })?;
            let _ = s.loaded.set(parts);
        }
        Ok(())
    }

    /// `f` over every partition on `pool`, in parallel; a stored batch not in memory is
    /// read partition by partition, each dropped once `f` returns.
    pub(crate) fn par_map_parts<U: Send>(
        &self,
        pool: &rayon::ThreadPool,
        f: impl Fn(&[T]) -> U + Sync + Send,
    ) -> Result<Vec<U>>
    where
        T: Send + Sync,
    {
        use rayon::prelude::*;
        if let Some(p) = self.in_memory() {
            return Ok(pool.install(|| p.par_iter().map(|x| f(x)).collect()));
        }
        let Parts::Stored(s) = &*self.parts else {
            return Ok(Vec::new());
        };
        pool.install(|| {
            (0..s.parts)
                .into_par_iter()
                .map(|i| (s.load)(i).map(|p| f(&p)))
                .collect()
        })
    }

    /// `f` over every partition on `pool`, in parallel, for an `f` that goes element
    /// by element: it may be given a partition in consecutive pieces, appending each
    /// piece's output to the partition's. A stored batch not in memory is read piece
    /// by piece (see the type's docs).
    pub(crate) fn par_map_pieces<U: Send>(
        &self,
        pool: &rayon::ThreadPool,
        f: impl Fn(&[T], &mut Vec<U>) + Sync + Send,
    ) -> Result<Vec<Vec<U>>>
    where
        T: Send + Sync,
    {
        use rayon::prelude::*;
        let Some(s) = self.unread() else {
            return self.par_map_parts(pool, |p| {
                let mut out = Vec::new();
                f(p, &mut out);
                out
            });
        };
        pool.install(|| {
            (0..s.parts)
                .into_par_iter()
                .map(|i| {
                    let mut out = Vec::new();
                    s.pieces(i, &mut |p| f(p, &mut out))?;
                    Ok(out)
                })
                .collect()
        })
    }

    /// The stored batch's parts, if it is one and nothing loaded them yet.
    fn unread(&self) -> Option<&Stored<T>> {
        match &*self.parts {
            Parts::Stored(s) if s.loaded.get().is_none() => Some(s),
            _ => None,
        }
    }

    /// Folds the partitions into one `A` on `pool`: runs of neighbouring partitions are
    /// folded with `fold`, starting from `init()`, and neighbouring results are joined
    /// with `join`, left before right (rayon keeps the order), so with an associative
    /// `join` the result is that of folding every partition in order. Only a few
    /// accumulators are alive at once, whatever the number of partitions; a stored
    /// batch not in memory is read partition by partition, each dropped once folded,
    /// and a partition may come to `fold` in consecutive pieces (so `fold` must go
    /// element by element).
    pub(crate) fn par_fold_parts<A: Send>(
        &self,
        pool: &rayon::ThreadPool,
        init: impl Fn() -> A + Sync + Send,
        fold: impl Fn(A, &[T]) -> A + Sync + Send,
        join: impl Fn(A, A) -> A + Sync + Send,
    ) -> Result<A>
    where
        T: Send + Sync,
    {
        use rayon::prelude::*;
        if let Some(p) = self.in_memory() {
            return Ok(pool.install(|| {
                p.par_iter()
                    .fold(&init, |a, part| fold(a, part))
                    .reduce(&init, &join)
            }));
        }
        let Parts::Stored(s) = &*self.parts else {
            return Ok(init());
        };
        pool.install(|| {
            (0..s.parts)
                .into_par_iter()
                .try_fold(&init, |a, i| {
                    let mut acc = Some(a);
                    s.pieces(i, &mut |p| acc = acc.take().map(|a| fold(a, p)))?;
                    Ok(acc.unwrap_or_else(&init))
                })
                .try_reduce(&init, |a, b| Ok(join(a, b)))
        })
    }

    /// The number of elements.
    ///
    /// A stored batch whose sizes are known only once read (a Kafka batch) is read
    /// for this, as by [`partitions`](Self::partitions); the engine counts such a
    /// batch with [`count`](Self::count) instead.
    pub fn len(&self) -> usize {
        match &*self.parts {
            Parts::Ready(p) => p.iter().map(Vec::len).sum(),
            Parts::Stored(s) => match &s.lens {
                Some(lens) => lens.iter().sum(),
                None => self.partitions().iter().map(Vec::len).sum(),
            },
        }
    }

    /// The number of elements, reading a stored batch whose sizes are unknown piece
    /// by piece on `pool` (a read error is returned, not raised).
    pub(crate) fn count(&self, pool: &rayon::ThreadPool) -> Result<usize>
    where
        T: Send + Sync,
    {
        match self.unread() {
            Some(s) if s.lens.is_none() => {
                self.par_fold_parts(pool, || 0, |n, p| n + p.len(), |a, b| a + b)
            }
            _ => Ok(self.len()),
        }
    }

    /// The number of partitions.
    pub fn num_partitions(&self) -> usize {
        match &*self.parts {
            Parts::Ready(p) => p.len(),
            Parts::Stored(s) => s.parts,
        }
    }

    /// Whether the batch has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All elements, partition by partition.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.partitions().iter().flatten()
    }
}

impl<T> Stored<T> {
    /// Hands partition `i` to `f`: in pieces when it can be streamed, else whole.
    fn pieces(&self, i: usize, f: &mut dyn FnMut(&[T])) -> Result<()> {
        match &self.stream {
            Some(stream) => stream(i, f),
            None => {
                f(&(self.load)(i)?);
                Ok(())
            }
        }
    }
}

impl<T: Send> Batch<T> {
    /// Drops the batch's elements on `pool`, partitions in parallel, if this is the
    /// last handle on them (else just drops the handle): freeing millions of small
    /// allocations is work worth sharing.
    pub(crate) fn drop_on(self, pool: &rayon::ThreadPool) {
        if let Ok(parts) = Arc::try_unwrap(self.parts) {
            let parts = match parts {
                Parts::Ready(p) => p,
                Parts::Stored(s) => s.loaded.into_inner().unwrap_or_default(),
            };
            use rayon::prelude::*;
            pool.install(|| parts.into_par_iter().for_each(drop));
        }
    }
}

impl<T: Clone> Batch<T> {
    /// All elements in one vector, partition by partition.
    pub fn to_vec(&self) -> Vec<T> {
        self.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Partition `i` holds `0..lens[i]`, streamed in pieces of 3; partition `bad`
    /// fails after its first piece.
    fn streamed(lens: Vec<usize>, bad: Option<usize>) -> Batch<usize> {
        let lens = Arc::new(lens);
        let l2 = lens.clone();
        let load: LoadPart<usize> = Arc::new(move |i| Ok((0..l2[i]).collect()));
        let stream: StreamPart<usize> = Arc::new(move |i, f| {
            let all: Vec<usize> = (0..lens[i]).collect();
            for (n, piece) in all.chunks(3).enumerate() {
                if bad == Some(i) && n == 1 {
                    return Err(crate::EngineError::Stopped);
                }
                f(piece);
            }
            Ok(())
        });
        Batch::streamed(3, load, stream)
    }

    #[test]
    fn a_streamed_batch_is_counted_mapped_and_folded_piece_by_piece() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let b = streamed(vec![7, 0, 5], None);
        assert_eq!(b.num_partitions(), 3);
        assert_eq!(b.count(&pool).unwrap(), 12);
        let doubled = b
            .par_map_pieces(&pool, |p, out| out.extend(p.iter().map(|x| x * 2)))
            .unwrap();
        assert_eq!(
            doubled,
            vec![vec![0, 2, 4, 6, 8, 10, 12], vec![], vec![0, 2, 4, 6, 8]]
        );
        let order = b
            .par_fold_parts(
                &pool,
                Vec::new,
                |mut a, p| {
                    a.extend_from_slice(p);
                    a
                },
                |mut a, b| {
                    a.extend(b);
                    a
                },
            )
            .unwrap();
        assert_eq!(order, vec![0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4]);
        // Nothing above loaded the batch; `len` (outside the engine) reads it whole.
        assert!(b.in_memory().is_none());
        assert_eq!(b.len(), 12);
        assert_eq!(b.partitions()[2], vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_piece_that_cannot_be_read_fails_the_operator_without_a_panic() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let b = streamed(vec![7, 0, 5], Some(2));
        assert!(b.count(&pool).is_err());
        assert!(b
            .par_map_pieces(&pool, |p, out| out.extend_from_slice(p))
            .is_err());
    }
}
