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
//! # What it guarantees
//!
//! With a checkpoint location ([`StreamingConf::checkpoint`]) and a context made by
//! [`StreamingContext::get_or_create`]:
//!
//! - **No input lost.** A batch's inputs are fixed and written to the driver log,
//!   durably, before any of its jobs runs: received blocks are in the receiver
//!   write-ahead log before the receiver is told they are stored (with
//!   `receiver_wal`), replayable inputs log what they read (file names, offsets). A
//!   driver killed at any instant (SIGKILL, power loss, a full disk) restarts and
//!   re-runs every batch that did not complete, with exactly the same inputs, then the
//!   batch times it missed while down.
//! - **State restored.** Stateful operators and windows come back from the newest
//!   checkpoint that reads back whole (older ones are the fallback), every file
//!   CRC-checked; a damaged one is an error naming the file, never wrong data.
//! - **Exactly once, with an exactly-once sink.** A re-run batch has the same batch
//!   time, so the sinks in [`sinks`] (and any output that commits with the batch id)
//!   turn a replay into a no-op. Other outputs see a re-run batch again
//!   (at-least-once). Deterministic user functions give the same output on a replay.
//! - **Code changes checked.** The rebuilt graph is compared with the checkpointed
//!   one: compatible changes resume, incompatible ones stop with every difference
//!   listed.
//!
//! Without a checkpoint location nothing is durable: a stopped or killed job starts
//! afresh.
//!
//! # Module map
//!
//! | module | owns | a change that goes here |
//! |---|---|---|
//! | [`runtime`] | the context, configuration, the node graph, batches, the scheduler | how batches are scheduled or computed |
//! | [`durable`] | the driver log, checkpoint writing, restore, inspection: the only code that writes durable state | what a checkpoint holds, how a restart decides |
//! | [`sources`] | queue, generator, directories, receivers (block generator, receiver WAL, rate control), sockets, the Kafka direct source (feature `kafka`) | a new source |
//! | [`ops`] | the DStream API: transformations, pair operations, windows, state, output operations | a new operator |
//! | [`sinks`] | exactly-once sinks, each behind a cargo feature (`postgres`, `mysql`, `redis`, `kafka`) | a new sink |
//! | [`observe`] | listener events | what a job reports about itself |
//! | [`failpoints`] | named crash points for kill tests (feature `failpoints`) | a new crash point |
//!
//! Dependencies point one way: sources, operators and sinks use the runtime; the
//! runtime calls `durable` at each batch and reports to `observe`. The command-line
//! tools (`sluice demo`, `supervise`, `inspect`, `bench`) are the `sluice-cli` crate.
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
pub use observe::listener::{BatchInfo, BatchKind, CheckpointInfo, RestoreInfo, StreamingListener};
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
#[cfg(feature = "kafka")]
pub use sources::kafka::{KafkaRecord, KafkaSource, RetentionPolicy, StartingOffsets};
pub use sources::offsets::{InputOffsetRanges, OffsetRange};
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
