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
/// A receiver's batch with the receiver WAL on may be *stored*: its partitions stay in
/// the WAL (page cache) until read, so operators that go partition by partition (map,
/// filter, flat_map, the map side of `reduce_by_key`, `count`) read each one, use it
/// and drop it, and a batch of any size needs memory for the partitions in flight
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

struct Stored<T> {
    /// The number of elements of each partition (known without reading it).
    lens: Vec<usize>,
    load: LoadPart<T>,
    /// Every partition, once something needed them all at once.
    loaded: OnceLock<Vec<Vec<T>>>,
}

impl<T> std::fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, parts) = match &*self.parts {
            Parts::Ready(p) => ("ready", p.len()),
            Parts::Stored(s) => ("stored", s.lens.len()),
        };
        f.debug_struct("Batch")
            .field("kind", &kind)
            .field("partitions", &parts)
            .field("len", &self.len())
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
                lens,
                load,
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
                let parts = (0..s.lens.len())
                    .map(|i| (s.load)(i))
                    .collect::<Result<_>>()?;
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
                (0..s.lens.len())
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
            (0..s.lens.len())
                .into_par_iter()
                .map(|i| (s.load)(i).map(|p| f(&p)))
                .collect()
        })
    }

    /// Folds the partitions into one `A` on `pool`: runs of neighbouring partitions are
    /// folded with `fold`, starting from `init()`, and neighbouring results are joined
    /// with `join`, left before right (rayon keeps the order), so with an associative
    /// `join` the result is that of folding every partition in order. Only a few
    /// accumulators are alive at once, whatever the number of partitions; a stored
    /// batch not in memory is read partition by partition, each dropped once folded.
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
            (0..s.lens.len())
                .into_par_iter()
                .try_fold(&init, |a, i| Ok(fold(a, &(s.load)(i)?)))
                .try_reduce(&init, |a, b| Ok(join(a, b)))
        })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match &*self.parts {
            Parts::Ready(p) => p.iter().map(Vec::len).sum(),
            Parts::Stored(s) => s.lens.iter().sum(),
        }
    }

    /// The number of partitions.
    pub fn num_partitions(&self) -> usize {
        match &*self.parts {
            Parts::Ready(p) => p.len(),
            Parts::Stored(s) => s.lens.len(),
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
