//! Elements, batches and batch times.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// What a stream can carry: cloneable, shareable across threads, and serialisable (so
/// it can go to the write-ahead log, checkpoints and object files).
pub trait Data: Clone + Send + Sync + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static> Data for T {}

pub use sluice_recovery::BatchTime;

/// The data of one stream for one batch time: a set of partitions, processed in
/// parallel. Cheap to clone (shared).
#[derive(Debug)]
pub struct Batch<T> {
    parts: Arc<Vec<Vec<T>>>,
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
        Batch {
            parts: Arc::new(Vec::new()),
        }
    }
}

impl<T> Batch<T> {
    /// A batch of the given partitions.
    pub fn from_partitions(parts: Vec<Vec<T>>) -> Self {
        Batch {
            parts: Arc::new(parts),
        }
    }

    /// A batch of one partition.
    pub fn from_vec(v: Vec<T>) -> Self {
        Self::from_partitions(vec![v])
    }

    /// The partitions.
    pub fn partitions(&self) -> &[Vec<T>] {
        &self.parts
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Vec::len).sum()
    }

    /// Whether the batch has no elements.
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(Vec::is_empty)
    }

    /// All elements, partition by partition.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.parts.iter().flatten()
    }
}

impl<T: Send> Batch<T> {
    /// Drops the batch's elements on `pool`, partitions in parallel, if this is the
    /// last handle on them (else just drops the handle): freeing millions of small
    /// allocations is work worth sharing.
    pub(crate) fn drop_on(self, pool: &rayon::ThreadPool) {
        if let Ok(parts) = Arc::try_unwrap(self.parts) {
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
