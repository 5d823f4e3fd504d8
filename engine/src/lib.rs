//! sluice: a micro-batch stream processor in the model of Spark Streaming (DStreams).
//!
//! A job defines a graph of [`DStream`]s on a [`StreamingContext`]: inputs
//! (`queue_stream`, `generator_stream`, sockets, directories, custom receivers),
//! transformations (`map`, `filter`, `reduce_by_key`, joins, windows, stateful
//! `update_state_by_key`, …) and outputs (`print`, `foreach_batch`,
//! `save_as_text_files`, …). Every batch interval the scheduler fixes each input's data
//! for the batch time, then runs the outputs in definition order; each node computes
//! its batch from its parents', memoised per time, partitions in parallel on a CPU pool.
//!
//! ```
//! use std::time::Duration;
//! use sluice::prelude::*;
//!
//! let ssc = StreamingContext::new(StreamingConf::new("doc", Duration::from_millis(50)))?;
//! let words = ssc.queue_stream(vec![vec!["a b a".to_string()]], true)?;
//! let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
//! let out = seen.clone();
//! words
//!     .flat_map(|l: &String| l.split(' ').map(str::to_owned).collect::<Vec<_>>())?
//!     .map(|w: &String| (w.clone(), 1u64))?
//!     .reduce_by_key(|a, b| a + b)?
//!     .foreach_batch(move |b| { out.lock().unwrap().extend(b.batch.to_vec()); Ok(()) })?;
//! ssc.start()?;
//! ssc.stop(true)?; // graceful: processes what the queue holds, then stops
//! let mut got = seen.lock().unwrap().clone();
//! got.sort();
//! assert_eq!(got, vec![("a".to_string(), 2), ("b".to_string(), 1)]);
//! # Ok::<(), sluice::EngineError>(())
//! ```

pub mod durable;
mod error;
pub mod failpoints;
pub mod observe;
pub mod ops;
pub mod runtime;
pub mod sinks;
pub mod sources;

pub use error::{EngineError, Result};
pub use observe::listener::{BatchInfo, StreamingListener};
pub use ops::dstream::{stable_hash, DStream};
pub use ops::output::BatchContext;
pub use ops::state::{MapWithStateDStream, State, StateSpec};
pub use ops::window::KeyFilter;
pub use runtime::allocator::{tune_allocator, AllocatorTuning, MMAP_THRESHOLD};
pub use runtime::batch::{Batch, BatchTime, Data};
pub use runtime::conf::{
    parse_bytes, parse_duration, StreamingConf, DEFAULT_RECEIVER_MAX_BUFFERED,
};
pub use runtime::context::StreamingContext;
pub use sluice_recovery::plan::DownTime;
pub use sources::rate::{PidConf, PidRateEstimator};
pub use sources::receiver::{
    Receiver, ReceiverContext, ReceiverHandle, ReceiverStatus, BLOCK_BYTES,
};
pub use sources::socket::{decode_lines, Decoder, SocketReceiver};

/// What a job needs: `use sluice::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Batch, BatchContext, BatchInfo, BatchTime, DStream, Data, EngineError, KeyFilter,
        MapWithStateDStream, State, StateSpec, StreamingConf, StreamingContext, StreamingListener,
    };
    pub use crate::{Receiver, ReceiverContext};
}
