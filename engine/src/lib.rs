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

mod batch;
pub mod bench_wordcount;
mod conf;
mod context;
pub mod crash;
pub mod demo;
mod dstream;
mod durable;
mod error;
pub mod file_input;
pub mod graph;
mod input;
pub mod inspect;
mod lines;
mod listener;
mod malloc;
pub mod output;
mod pair;
mod rate;
mod receiver;
pub mod signals;
pub mod sinks;
pub mod socket;
mod state;
pub mod supervise;
mod window;

pub use batch::{Batch, BatchTime, Data};
pub use conf::{parse_bytes, parse_duration, StreamingConf, DEFAULT_RECEIVER_MAX_BUFFERED};
pub use context::StreamingContext;
pub use dstream::DStream;
pub use error::{EngineError, Result};
pub use listener::{BatchInfo, StreamingListener};
pub use malloc::{tune_allocator, AllocatorTuning, MMAP_THRESHOLD};
pub use output::BatchContext;
pub use rate::{PidConf, PidRateEstimator};
pub use receiver::{Receiver, ReceiverContext, ReceiverHandle, ReceiverStatus, BLOCK_BYTES};
pub use sluice_recovery::plan::DownTime;
pub use socket::{decode_lines, Decoder, SocketReceiver};
pub use state::{MapWithStateDStream, State, StateSpec};
pub use window::KeyFilter;

/// What a job needs: `use sluice::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Batch, BatchContext, BatchInfo, BatchTime, DStream, Data, EngineError, KeyFilter,
        MapWithStateDStream, State, StateSpec, StreamingConf, StreamingContext, StreamingListener,
    };
    pub use crate::{Receiver, ReceiverContext};
}
