//! Receivers: push inputs that run on their own thread, in the model of Spark's
//! `Receiver`.
//!
//! A [`Receiver`] runs on a dedicated thread (`sluice-recv-…`) and hands its records to
//! the engine through a [`ReceiverContext`]. Records stored one at a time
//! ([`ReceiverContext::store`]) are buffered and cut into a block every
//! `block_interval` by the block generator, or sooner once the buffer holds
//! [`BLOCK_BYTES`] (as counted for the buffer bound, below), so a fast receiver's
//! blocks stay small enough to spread over the CPU pool; a whole block
//! ([`ReceiverContext::store_block`]) is stored at once. At every batch time the input
//! allocates every block stored so far to the batch, each block one partition.
//!
//! # Reliable and unreliable receivers
//!
//! * **Unreliable**: the receiver calls `store(record)` and never tells its source
//!   anything (a socket, UDP, a firehose). Records in the buffer (up to one block
//!   interval's worth) and blocks not yet processed are lost if the process dies.
//! * **Reliable**: the receiver pulls a chunk from a source that can redeliver (a queue
//!   with acknowledgements), calls `store_block(chunk)`, and acknowledges the chunk to
//!   its source only after `store_block` returned `Ok`. `store_block` returns once the
//!   block is stored; with the receiver write-ahead log on, that means durable in the
//!   WAL, so every acknowledged record survives a crash. On `Err`, do not acknowledge:
//!   the source will redeliver.
//!
//! # Errors and restarts
//!
//! `run` returning `Err` (or panicking), or a call to [`ReceiverContext::restart`],
//! restarts the receiver: `run` is called again on the same value after
//! `receiver_restart_delay`, doubled per consecutive failure (a run that stored
//! something resets it), up to 60 times the delay and at most 30 s. Every restart is
//! logged with its reason. `run` returning `Ok(())` while the context is running means
//! the source is exhausted: the receiver is not restarted. Errors that do not need a
//! restart (a skipped malformed record) go to [`ReceiverContext::report_error`].
//!
//! # Bounded buffering
//!
//! What a receiver stored but the engine has not yet processed (buffered records,
//! queued blocks, the blocks of a batch that has not completed) is bounded by
//! `receiver_max_buffered` bytes: over it, `store*` blocks until a batch completes, so
//! a receiver reading a socket stops reading and TCP pushes back on the sender, and a
//! reliable receiver stops pulling from its queue. Nothing is dropped: a stop or a
//! restart ends the wait and what the receiver holds is stored. Records count as the
//! bytes a `*_sized` call reports, else as `size_of::<T>()` each.
//!
//! A receiver blocked in I/O must notice a stop: either poll
//! [`ReceiverContext::is_stopped`] (with a read timeout), or register an
//! [`ReceiverContext::on_stop`] hook that unblocks it (closing its socket).

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::runtime::graph::ExecutionEnv;
use crate::runtime::io::Input;
use crate::sources::lines::PackedLines;
use crate::sources::queue::Allocations;
use crate::sources::rate::{PidRateEstimator, RateController, RateLimiter};
use crate::{Batch, BatchTime, DStream, Data, EngineError, Result, StreamingContext};

mod accounting;
use accounting::ReceiverBytes;

/// The block generator cuts a block before the block interval ends once the buffer
/// holds this many bytes (4 MiB).
pub const BLOCK_BYTES: u64 = 4 << 20;

/// A custom push source. Implement `run`; the engine calls it on a thread of its own.
///
/// ```
/// use sluice::prelude::*;
///
/// /// Counts from 0 to `n - 1`, one record at a time, then ends.
/// struct Counter { n: u64 }
///
/// impl Receiver<u64> for Counter {
///     fn describe(&self) -> String { format!("counter to {}", self.n) }
///     fn run(&mut self, ctx: &ReceiverContext<u64>) -> sluice::Result<()> {
///         for i in 0..self.n {
///             if ctx.is_stopped() { break; }
///             ctx.store(i);
///         }
///         Ok(()) // exhausted: not restarted
///     }
/// }
/// ```
pub trait Receiver<T: Data>: Send + 'static {
    /// A name for logs and status (`socket 127.0.0.1:9999`).
    fn describe(&self) -> String {
        std::any::type_name::<Self>().to_string()
    }

    /// Receives until the source is exhausted (return `Ok`), the context stops or a
    /// restart is requested ([`ReceiverContext::is_stopped`] turns true: return soon),
    /// or an error (return `Err`: the receiver is restarted after a delay).
    fn run(&mut self, ctx: &ReceiverContext<T>) -> Result<()>;
}

/// A receiver's link to the engine, handed to [`Receiver::run`]. Cheap to clone, so a
/// receiver can pass it to helper threads.
pub struct ReceiverContext<T> {
    shared: Arc<ReceiverCore<T>>,
}

impl<T> Clone for ReceiverContext<T> {
    fn clone(&self) -> Self {
        ReceiverContext {
            shared: self.shared.clone(),
        }
    }
}

impl<T> std::fmt::Debug for ReceiverContext<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverContext")
            .field("receiver", &self.shared.name)
            .finish()
    }
}

impl<T: Data> ReceiverContext<T> {
    /// The receiver's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Stores one record (unreliable: buffered until the block generator cuts the next
    /// block). Blocks while the receiver is over its rate limit or its buffer bound
    /// (see the module docs).
    pub fn store(&self, record: T) {
        self.shared.wait_for_room();
        self.shared.acquire(1);
        self.shared.buffer_records(
            BufferedRecords::Records(vec![record]),
            std::mem::size_of::<T>() as u64,
        );
        self.shared.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Stores several records (like `store` for each, rate-limited as a whole).
    pub fn store_all(&self, records: impl IntoIterator<Item = T>) {
        let records: Vec<T> = records.into_iter().collect();
        let bytes = (records.len() * std::mem::size_of::<T>()) as u64;
        self.store_all_sized(records, bytes);
    }

    /// Like [`ReceiverContext::store_all`], counting the records as `bytes` against the
    /// buffer bound (`receiver_max_buffered`) instead of `size_of::<T>()` each: the
    /// bytes they came as (a socket receiver passes the bytes it read) or hold.
    pub fn store_all_sized(&self, records: Vec<T>, bytes: u64) {
        let n = records.len() as u64;
        self.shared.wait_for_room();
        self.shared.acquire(n);
        self.shared
            .buffer_records(BufferedRecords::Records(records), bytes);
        self.shared.received.fetch_add(n, Ordering::Relaxed);
    }

    /// Stores `block` as one block (one partition of a batch) and returns once it is
    /// stored; with the receiver write-ahead log on, once it is durable. A reliable
    /// receiver acknowledges its source only after this returned `Ok`. Blocks while the
    /// receiver is over its rate limit or its buffer bound (see the module docs).
    pub fn store_block(&self, block: Vec<T>) -> Result<()> {
        let bytes = (block.len() * std::mem::size_of::<T>()) as u64;
        self.store_block_sized(block, bytes)
    }

    /// Like [`ReceiverContext::store_block`], counting the block as `bytes` against the
    /// buffer bound instead of `size_of::<T>()` per record.
    pub fn store_block_sized(&self, block: Vec<T>, bytes: u64) -> Result<()> {
        self.store_counted(block, bytes, None)
    }

    /// Stores a block, counting its bytes against the buffer bound, with or without a
    /// source position.
    fn store_counted(&self, block: Vec<T>, bytes: u64, position: Option<Vec<u8>>) -> Result<()> {
        if block.is_empty() && position.is_none() {
            return Ok(());
        }
        let n = block.len() as u64;
        self.shared.wait_for_room();
        self.shared.acquire(n);
        self.shared.bytes.storing_block(bytes);
        let keep = self.shared.keep_in_memory(bytes);
        let stored = self.shared.store_positioned(block, position, keep);
        self.shared.blocks_stored(bytes, keep);
        stored?;
        self.shared.received.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Stores `block` like [`ReceiverContext::store_block`], together with `position`:
    /// the source position just after the block (an offset, a cursor, a sequence number:
    /// any bytes the receiver can resume from). With the receiver write-ahead log on, the
    /// position is written in the same WAL record as the block, so the two are durable
    /// together and [`ReceiverContext::stored_position`] returns it after any crash.
    ///
    /// This is what makes a reliable receiver exactly-once rather than at-least-once: on
    /// (re)start it resumes its source from `stored_position()` instead of from the
    /// source's last acknowledgement, so a block made durable but not yet acknowledged
    /// when the process died is not received twice. Use it for every block of a receiver.
    pub fn store_block_at(&self, block: Vec<T>, position: impl Into<Vec<u8>>) -> Result<()> {
        let bytes = (block.len() * std::mem::size_of::<T>()) as u64;
        self.store_counted(block, bytes, Some(position.into()))
    }

    /// The position stored with the newest block [`ReceiverContext::store_block_at`]
    /// stored, by this process or (with the receiver write-ahead log on) by an earlier
    /// life of the job: read back from the WAL, or from the checkpoint once the WAL
    /// records were cleaned up. `None` if no positioned block was ever stored (start the
    /// source from its beginning or its own committed offset).
    pub fn stored_position(&self) -> Option<Vec<u8>> {
        lock(&self.shared.position).clone()
    }

    /// The receiver's current rate limit in records/s (`receiver_max_rate` and
    /// backpressure), if any: a receiver that stores in chunks keeps them to about a
    /// tenth of this, so the limit stays smooth.
    pub fn rate_limit(&self) -> Option<u64> {
        self.shared.limiter.rate()
    }

    /// The largest record this receiver may store, in bytes
    /// ([`StreamingConf::receiver_max_record_bytes`](crate::StreamingConf::receiver_max_record_bytes)).
    /// A receiver discards a longer record while it reads it, and reports it with
    /// [`ReceiverContext::dropped_oversized`].
    pub fn max_record_bytes(&self) -> u64 {
        self.shared.max_record_bytes
    }

    /// Reports a record of `bytes` (at least) from `source` that was over
    /// [`ReceiverContext::max_record_bytes`] and discarded: logged with its source and
    /// size, and counted in the receiver's status (`dropped_oversized`).
    pub fn dropped_oversized(&self, source: &str, bytes: u64) {
        let max = self.shared.max_record_bytes;
        tracing::warn!(receiver = %self.shared.name, %source, bytes, max,
            "discarded a record over the maximum record size (receiver_max_record_bytes)");
        lock(&self.shared.stats).dropped_oversized += 1;
    }

    /// Whether `run` should return: the context is stopping or a restart was requested.
    pub fn is_stopped(&self) -> bool {
        self.shared.is_stopped()
    }

    /// Asks for a restart: `is_stopped` turns true and the `on_stop` hooks run; once
    /// `run` returns, it is called again after the restart delay.
    pub fn restart(&self, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::warn!(receiver = %self.shared.name, %reason, "receiver asked for a restart");
        {
            let mut r = lock(&self.shared.restart);
            if r.is_none() {
                *r = Some(reason);
            }
            self.shared.restarting.store(true, Ordering::SeqCst);
        }
        self.shared.run_stop_hooks();
    }

    /// Reports an error that needs no restart (logged, counted in the status).
    pub fn report_error(&self, error: impl std::fmt::Display) {
        let msg = error.to_string();
        tracing::warn!(receiver = %self.shared.name, error = %msg, "receiver reported an error");
        self.shared.note_error(msg);
    }

    /// Registers `f` to run once when this run of the receiver must end (stop or
    /// restart), e.g. to shut down a socket a blocking read waits on. Runs at once if
    /// that is already the case. Hooks are dropped when `run` returns. A hook may run on
    /// the thread that stops the context, while it holds the context's lock: keep it
    /// short (close a socket, set a flag) and do not call into the context from it.
    pub fn on_stop(&self, f: impl FnOnce() + Send + 'static) {
        {
            let mut hooks = lock(&self.shared.hooks);
            if !self.shared.is_stopped() {
                hooks.push(Box::new(f));
                return;
            }
        }
        f();
    }
}

impl ReceiverContext<String> {
    /// Stores `lines` (read as `bytes`) like [`ReceiverContext::store_all_sized`] of one
    /// `String` per line, but packed until a batch takes them (see [`crate::sources::lines`]);
    /// leaves `lines` empty.
    pub(crate) fn store_lines(&self, lines: &mut PackedLines, bytes: u64) {
        let n = lines.len() as u64;
        self.shared.wait_for_room();
        self.shared.acquire(n);
        let held = BufferedRecords::Lines {
            lines: std::mem::take(lines),
            unpack: PackedLines::to_strings,
        };
        self.shared.buffer_records(held, bytes);
        self.shared.received.fetch_add(n, Ordering::Relaxed);
    }
}

/// What a receiver has done so far; see [`ReceiverHandle::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceiverStatus {
    /// The receiver's name.
    pub name: String,
    /// Records stored (buffered records count once their block is cut).
    pub records_stored: u64,
    /// Blocks stored.
    pub blocks_stored: u64,
    /// How many times it was restarted.
    pub restarts: u64,
    /// Errors: failed runs and reported errors.
    pub errors: u64,
    /// The latest error.
    pub last_error: Option<String>,
    /// The effective rate limit (records/s), from `receiver_max_rate` and backpressure.
    pub rate_limit: Option<u64>,
    /// Whether it has ended for good (stopped or exhausted) and its last block is cut.
    pub finished: bool,
    /// Bytes stored and not yet processed (what `receiver_max_buffered` bounds).
    pub bytes_buffered: u64,
    /// Records discarded for being over `receiver_max_record_bytes`.
    pub dropped_oversized: u64,
}

/// A handle on a running receiver, for monitoring.
#[derive(Clone)]
pub struct ReceiverHandle {
    status: Arc<dyn Fn() -> ReceiverStatus + Send + Sync>,
}

impl std::fmt::Debug for ReceiverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ReceiverHandle")
            .field(&(self.status)().name)
            .finish()
    }
}

impl ReceiverHandle {
    /// The receiver's status now.
    pub fn status(&self) -> ReceiverStatus {
        (self.status)()
    }
}

fn lock<X>(m: &Mutex<X>) -> MutexGuard<'_, X> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A stored block, waiting to be allocated to a batch.
struct ReceivedBlock<T> {
    /// Per-receiver sequence number.
    id: u64,
    /// The records, or `None` once they are durable in the WAL and read back from it
    /// when a batch needs them (`receiver_read_back`).
    records: Option<BufferedRecords<T>>,
    /// The number of records.
    len: usize,
    /// Where the block is in the receiver WAL (with the WAL on).
    handle: Option<sluice_wal::RecordHandle>,
}

#[derive(Debug, Default)]
struct Stats {
    records: u64,
    blocks: u64,
    restarts: u64,
    errors: u64,
    last_error: Option<String>,
    dropped_oversized: u64,
}

type StopHook = Box<dyn FnOnce() + Send>;

/// Records as a receiver stored them: decoded, or lines of text packed together (a
/// socket text stream; see [`crate::sources::lines`]), made records when a batch takes them.
enum BufferedRecords<T> {
    Records(Vec<T>),
    Lines {
        lines: PackedLines,
        /// The lines as the stream's records. Only `ReceiverContext<String>` makes
        /// packed lines, so the records are the lines' `String`s, and the WAL holds
        /// the lines in the bytes of those records.
        unpack: fn(&PackedLines) -> Vec<T>,
    },
}

impl<T> Default for BufferedRecords<T> {
    fn default() -> Self {
        BufferedRecords::Records(Vec::new())
    }
}

impl<T: Data> BufferedRecords<T> {
    fn len(&self) -> usize {
        match self {
            BufferedRecords::Records(v) => v.len(),
            BufferedRecords::Lines { lines, .. } => lines.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records, in order.
    fn into_records(self) -> Vec<T> {
        match self {
            BufferedRecords::Records(v) => v,
            BufferedRecords::Lines { lines, unpack } => unpack(&lines),
        }
    }

    /// Appends `more` (packed lines stay packed while both are).
    fn append(&mut self, more: BufferedRecords<T>, reserve: (usize, usize)) {
        match (&mut *self, more) {
            (BufferedRecords::Records(v), BufferedRecords::Records(w)) => {
                if v.capacity() == 0 {
                    // Grown once to about the last block's size, not doubled up to it.
                    v.reserve(reserve.0.max(w.len()));
                }
                v.extend(w);
            }
            (BufferedRecords::Lines { lines, .. }, BufferedRecords::Lines { lines: more, .. }) => {
                lines.append(&more)
            }
            (BufferedRecords::Records(v), BufferedRecords::Lines { lines, unpack })
                if v.is_empty() =>
            {
                // Room for about the last block, and an eighth more: a block is cut
                // a little after it reaches `BLOCK_BYTES`, by a varying amount.
                let (n, bytes) = (reserve.0 + reserve.0 / 8, reserve.1 + reserve.1 / 8);
                let mut packed = PackedLines::with_capacity(bytes, n);
                packed.append(&lines);
                *self = BufferedRecords::Lines {
                    lines: packed,
                    unpack,
                };
            }
            (_, more) => {
                // A receiver storing both records and lines: keep their order.
                let mut v = std::mem::take(self).into_records();
                v.extend(more.into_records());
                *self = BufferedRecords::Records(v);
            }
        }
    }

    /// Splits off the records from `at` on.
    fn split_off(&mut self, at: usize) -> BufferedRecords<T> {
        match self {
            BufferedRecords::Records(v) => BufferedRecords::Records(v.split_off(at)),
            BufferedRecords::Lines { lines, unpack } => BufferedRecords::Lines {
                lines: lines.split_off(at),
                unpack: *unpack,
            },
        }
    }

    /// The block as the receiver WAL holds it (see [`encode_block`]).
    fn encode(&self, position: Option<&[u8]>) -> Result<Vec<u8>> {
        match self {
            BufferedRecords::Records(v) => encode_block(v.as_slice(), position),
            BufferedRecords::Lines { lines, .. } => encode_block(lines, position),
        }
    }
}

/// Whether [`ReceiverCore::store_cut_blocks`] also cuts what the buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BufferCut {
    /// The block interval ended: the buffer becomes one more block.
    Cut,
    /// Only the blocks already cut (at [`BLOCK_BYTES`]) are stored.
    Keep,
}

/// State shared by the receiver thread, the block generator, the context handle and
/// the input.
struct ReceiverCore<T> {
    name: String,
    limiter: Arc<RateLimiter>,
    /// Records `store`d since the last cut.
    buffer: Mutex<BufferedRecords<T>>,
    /// Serialises storing blocks, so they are queued in the order of their WAL records.
    cut: Mutex<()>,
    /// Blocks cut from the buffer and not yet stored, in order, with their bytes.
    cuts: Mutex<VecDeque<(BufferedRecords<T>, u64)>>,
    /// Stored blocks not yet allocated to a batch.
    blocks: Mutex<VecDeque<ReceivedBlock<T>>>,
    next_block: AtomicU64,
    /// The context is stopping.
    stop: AtomicBool,
    /// A restart was requested (the reason).
    restart: Mutex<Option<String>>,
    /// `restart` is set (read on every record, so without the lock).
    restarting: AtomicBool,
    started: AtomicBool,
    /// The receiver has ended for good and its last buffer is cut.
    finished: AtomicBool,
    hooks: Mutex<Vec<StopHook>>,
    stats: Mutex<Stats>,
    /// Records handed to `store*` so far (decides whether a run made progress).
    received: AtomicU64,
    /// Wakes sleepers (block generator, restart delay, rate limit) on a stop.
    signal: (Mutex<()>, Condvar),
    /// The receiver write-ahead log (with `receiver_wal` on).
    wal: Option<sluice_wal::Wal>,
    /// Blocks durable in the WAL leave memory; batches read them back
    /// (`receiver_read_back`, with the WAL on).
    read_back: bool,
    /// The source position stored with the newest positioned block (see
    /// [`ReceiverContext::store_block_at`]).
    position: Mutex<Option<Vec<u8>>>,
    /// Whether the WAL held a positioned block when it was opened (then the checkpoint's
    /// position, which is older, does not replace it).
    position_from_wal: bool,
    /// Set when the WAL failed: the job cannot go on in this process.
    fatal: Mutex<Option<String>>,
    /// The bound on `bytes.buffered()` (`receiver_max_buffered`).
    max_buffered: Option<u64>,
    /// `receiver_max_record_bytes`.
    max_record_bytes: u64,
    /// What the bound counts, and when batches release it.
    bytes: ReceiverBytes,
    /// Blocks were cut at `BLOCK_BYTES`: the block generator should store them now.
    cut_soon: AtomicBool,
    /// The records and bytes of the last block cut from the buffer (the next one's
    /// capacity).
    last_cut_len: AtomicU64,
    last_cut_bytes: AtomicU64,
}

impl<T: Data> ReceiverCore<T> {
    fn buffer(&self) -> MutexGuard<'_, BufferedRecords<T>> {
        lock(&self.buffer)
    }

    fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.restarting.load(Ordering::Relaxed)
    }

    fn note_error(&self, msg: String) {
        let mut s = lock(&self.stats);
        s.errors += 1;
        s.last_error = Some(msg);
    }

    fn run_stop_hooks(&self) {
        let hooks = std::mem::take(&mut *lock(&self.hooks));
        for h in hooks {
            h();
        }
        self.wake();
    }

    fn wake(&self) {
        let _g = lock(&self.signal.0);
        self.signal.1.notify_all();
    }

    /// Sleeps `d`, or less if `until` turns true (checked on every wake-up).
    fn sleep_until(&self, d: Duration, until: impl Fn() -> bool) {
        let deadline = Instant::now() + d;
        let mut g = lock(&self.signal.0);
        loop {
            if until() {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            g = self
                .signal
                .1
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The rate limit: waits for `n` tokens (not past a stop or restart).
    fn acquire(&self, n: u64) {
        let wait = self.limiter.reserve(n);
        if !wait.is_zero() {
            self.sleep_until(wait, || self.is_stopped());
        }
    }

    /// The buffer bound: waits while the bytes stored and not yet processed are at or
    /// over `max_buffered` (one call may go over it, so a record larger than the bound
    /// still passes). A stop or restart ends the wait: what a stopping receiver holds
    /// is stored, never dropped.
    fn wait_for_room(&self) {
        let Some(max) = self.max_buffered else {
            return;
        };
        // With read-back, the bound is shared: half for what is not yet in the WAL
        // (over it, the receiver waits for the WAL, not for batches), half for blocks
        // kept in memory for their batch (the rest is read back from the WAL).
        let full = || {
            if self.read_back {
                self.bytes.unwritten() >= max / 2
            } else {
                self.bytes.buffered() >= max
            }
        };
        while full() && !self.is_stopped() {
            // Woken by `released` (a batch completed) and by a stop.
            self.sleep_until(Duration::from_millis(100), || !full() || self.is_stopped());
        }
    }

    /// Appends `records` (of `bytes`) to the buffer, counting them against the bound.
    /// Once the buffer holds [`BLOCK_BYTES`] it is cut here, on the storing thread, so
    /// blocks stay about that size also while the block generator is busy writing
    /// earlier ones to the WAL.
    fn buffer_records(&self, records: BufferedRecords<T>, bytes: u64) {
        let mut b = self.buffer();
        let reserve = (
            self.last_cut_len.load(Ordering::Relaxed) as usize,
            self.last_cut_bytes.load(Ordering::Relaxed) as usize,
        );
        b.append(records, reserve);
        let held = self.bytes.add_to_buffer(bytes);
        if held >= BLOCK_BYTES {
            self.take_cut(&mut b);
            drop(b);
            self.cut_soon.store(true, Ordering::SeqCst);
            self.wake();
        }
    }

    /// Whether blocks of `bytes` about to be stored keep their records in memory until
    /// their batch: always without read-back; with it, while the blocks kept stay within
    /// half the bound (the rest is read back from the WAL by its batch).
    fn keep_in_memory(&self, bytes: u64) -> bool {
        match (self.read_back, self.max_buffered) {
            (true, Some(max)) => self.bytes.kept() + bytes <= max / 2,
            _ => true,
        }
    }

    /// Blocks of `bytes` were stored (or lost): kept in memory until the batch that
    /// takes them completes, or out of memory already (read back from the WAL).
    fn blocks_stored(&self, bytes: u64, kept: bool) {
        self.bytes.written(bytes);
        if kept {
            self.bytes.queued(bytes);
        } else {
            self.released(self.bytes.release_now(bytes));
        }
    }

    /// Bytes were released (a batch completed): room for more.
    fn released(&self, bytes: u64) {
        if bytes > 0 {
            self.wake();
        }
    }

    /// Moves what the buffer holds to the blocks cut and not yet stored (called with
    /// the buffer locked, so cuts are queued in the order of their records).
    fn take_cut(&self, buffer: &mut BufferedRecords<T>) {
        let bytes = self.bytes.cut_buffer();
        let records = std::mem::take(buffer);
        if records.is_empty() {
            // Bytes without records are released with the next batch.
            self.bytes.written(bytes);
            self.bytes.queued(bytes);
            return;
        }
        self.last_cut_len
            .store(records.len() as u64, Ordering::Relaxed);
        self.last_cut_bytes.store(bytes, Ordering::Relaxed);
        lock(&self.cuts).push_back((records, bytes));
    }

    /// Stores the blocks cut so far, after cutting the buffer into one more with
    /// [`BufferCut::Cut`] (the block interval ended; not when woken early by a cut at
    /// [`BLOCK_BYTES`]). One WAL commit covers them all.
    fn store_cut_blocks(&self, buffer: BufferCut) {
        let _g = lock(&self.cut);
        if buffer == BufferCut::Cut {
            let mut b = self.buffer();
            self.take_cut(&mut b);
        }
        let cuts: Vec<(BufferedRecords<T>, u64)> = lock(&self.cuts).drain(..).collect();
        if cuts.is_empty() {
            return;
        }
        let bytes: u64 = cuts.iter().map(|(_, b)| b).sum();
        let n: usize = cuts.iter().map(|(h, _)| h.len()).sum();
        let keep = self.keep_in_memory(bytes);
        let stored = self.store_blocks(cuts.into_iter().map(|(h, _)| h).collect(), None, keep);
        // Counted also when the blocks are lost, so their bytes are released.
        self.blocks_stored(bytes, keep);
        if let Err(e) = stored {
            // Buffered records were never acknowledged to anyone: they are lost.
            tracing::error!(receiver = %self.name, records = n, error = %e,
                "could not store buffered blocks; their records are lost");
            self.note_error(format!("storing {n} buffered records: {e}"));
        }
    }

    /// The one place every received block passes through on its way to a batch, from
    /// `store_block` (reliable receivers) and from the block generator (buffered
    /// records), always under the `cut` lock: blocks are queued in the order of their
    /// WAL records, so a batch that took a block took every block before it in the WAL.
    /// With the receiver write-ahead log on, the WAL append goes here: each block is
    /// appended, one commit (group commit) makes them all durable, and only then are
    /// they queued and does this return, so `store_block` returning `Ok` means durable
    /// and a reliable receiver acknowledges its source only for durable data
    /// (DESIGN.md, durability protocol step 1). Nothing else may push to `blocks`.
    /// `position` goes with the last block. With `keep` false, the blocks' records leave
    /// memory once submitted to the WAL (their batch reads them back).
    fn store_blocks(
        &self,
        blocks: Vec<BufferedRecords<T>>,
        position: Option<&[u8]>,
        keep: bool,
    ) -> Result<()> {
        let n: u64 = blocks.iter().map(|b| b.len() as u64).sum();
        let count = blocks.len() as u64;
        let last = blocks.len().saturating_sub(1);
        let mut queued: Vec<ReceivedBlock<T>> = Vec::with_capacity(blocks.len());
        match &self.wal {
            // A block whose encoding is larger than a WAL record may be goes in several
            // records (and partitions).
            Some(wal) => {
                let limit = (wal.options().max_record_bytes / 2).max(1);
                let mut last_lsn = None;
                for (i, block) in blocks.into_iter().enumerate() {
                    let id = self.next_block.fetch_add(1, Ordering::SeqCst);
                    let mut pending = vec![block];
                    while let Some(chunk) = pending.pop() {
                        // The position goes with the last part of the last block: it is
                        // durable only once everything before it is.
                        let pos = if i == last && pending.is_empty() {
                            position
                        } else {
                            None
                        };
                        let bytes = chunk.encode(pos)?;
                        if bytes.len() <= limit || chunk.len() < 2 {
                            // Queued for the commit; the encoding is freed at once.
                            let a = wal.submit(&bytes).map_err(|e| self.wal_failed(e))?;
                            last_lsn = Some(a.lsn);
                            queued.push(ReceivedBlock {
                                id,
                                len: chunk.len(),
                                // The WAL holds the bytes: a batch reads them back.
                                records: keep.then_some(chunk),
                                handle: Some(a.handle),
                            });
                        } else {
                            let mut first = chunk;
                            let second = first.split_off(first.len() / 2);
                            pending.push(second);
                            pending.push(first);
                        }
                    }
                }
                if let Some(lsn) = last_lsn {
                    wal.wait(lsn).map_err(|e| self.wal_failed(e))?;
                }
            }
            None => {
                for records in blocks {
                    queued.push(ReceivedBlock {
                        id: self.next_block.fetch_add(1, Ordering::SeqCst),
                        len: records.len(),
                        records: Some(records),
                        handle: None,
                    });
                }
            }
        }
        lock(&self.blocks).extend(queued);
        let mut s = lock(&self.stats);
        s.records += n;
        s.blocks += count;
        Ok(())
    }

    /// A failed write or fsync poisons the WAL: nothing more can be stored in this
    /// process. The next batch fails the job, so it restarts and recovers the log (a
    /// supervisor restarts it).
    fn wal_failed(&self, e: sluice_wal::WalError) -> EngineError {
        let msg = format!("the write-ahead log of receiver {} failed: {e}", self.name);
        lock(&self.fatal).get_or_insert(msg);
        e.into()
    }

    /// Stores a block from `store_counted`; an empty block with a position still moves
    /// the position on (a source may advance without records, e.g. past filtered data).
    fn store_positioned(
        &self,
        records: Vec<T>,
        position: Option<Vec<u8>>,
        keep: bool,
    ) -> Result<()> {
        // Under the cut lock: blocks are queued in WAL order, positions in block order.
        let _g = lock(&self.cut);
        self.store_blocks(
            vec![BufferedRecords::Records(records)],
            position.as_deref(),
            keep,
        )?;
        if position.is_some() {
            *lock(&self.position) = position;
        }
        Ok(())
    }

    fn status(&self) -> ReceiverStatus {
        let s = lock(&self.stats);
        ReceiverStatus {
            name: self.name.clone(),
            records_stored: s.records,
            blocks_stored: s.blocks,
            restarts: s.restarts,
            errors: s.errors,
            last_error: s.last_error.clone(),
            rate_limit: self.limiter.rate(),
            finished: self.finished.load(Ordering::SeqCst),
            bytes_buffered: self.bytes.buffered(),
            dropped_oversized: s.dropped_oversized,
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// The delay before restart number `failures` (1-based) in a row.
pub(crate) fn restart_delay(base: Duration, failures: u32) -> Duration {
    let cap = (base * 60).min(Duration::from_secs(30)).max(base);
    base.saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(cap)
}

/// Runs the receiver until it ends for good, restarting it after errors.
fn supervise<T: Data>(
    shared: Arc<ReceiverCore<T>>,
    mut receiver: Box<dyn Receiver<T>>,
    base: Duration,
) {
    let ctx = ReceiverContext {
        shared: shared.clone(),
    };
    let mut failures = 0u32;
    loop {
        let received_before = shared.received.load(Ordering::Relaxed);
        tracing::info!(receiver = %shared.name, "receiver starting");
        let res = std::panic::catch_unwind(AssertUnwindSafe(|| receiver.run(&ctx)));
        lock(&shared.hooks).clear();
        let asked = {
            let mut r = lock(&shared.restart);
            shared.restarting.store(false, Ordering::SeqCst);
            r.take()
        };
        if shared.stop.load(Ordering::SeqCst) {
            if let Ok(Err(e)) = &res {
                tracing::debug!(receiver = %shared.name, error = %e, "receiver ended with an error while stopping");
            }
            break;
        }
        let reason = match res {
            Ok(Ok(())) => match asked {
                None => {
                    tracing::info!(receiver = %shared.name, "receiver finished: its source is exhausted");
                    break;
                }
                Some(r) => r,
            },
            Ok(Err(e)) => {
                let m = e.to_string();
                shared.note_error(m.clone());
                m
            }
            Err(p) => {
                let m = format!("the receiver panicked: {}", panic_message(p.as_ref()));
                shared.note_error(m.clone());
                m
            }
        };
        if shared.received.load(Ordering::Relaxed) > received_before {
            failures = 0;
        }
        failures = failures.saturating_add(1);
        let delay = restart_delay(base, failures);
        tracing::warn!(receiver = %shared.name, %reason, ?delay, "restarting receiver after a delay");
        shared.sleep_until(delay, || shared.stop.load(Ordering::SeqCst));
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        lock(&shared.stats).restarts += 1;
    }
    // What was stored before the stop becomes the last block.
    shared.store_cut_blocks(BufferCut::Cut);
    shared.finished.store(true, Ordering::SeqCst);
    shared.wake();
    tracing::info!(receiver = %shared.name, "receiver stopped");
}

/// Cuts a block every `interval` until the receiver has finished (the supervisor cuts
/// the last one).
fn generate_blocks<T: Data>(shared: Arc<ReceiverCore<T>>, interval: Duration) {
    let mut next = Instant::now() + interval;
    loop {
        shared.sleep_until(next.saturating_duration_since(Instant::now()), || {
            shared.finished.load(Ordering::SeqCst) || shared.cut_soon.load(Ordering::SeqCst)
        });
        if shared.finished.load(Ordering::SeqCst) {
            return;
        }
        shared.cut_soon.store(false, Ordering::SeqCst);
        // Woken early, blocks were cut at `BLOCK_BYTES`: store them; the buffer is cut
        // when the interval ends.
        let now = Instant::now();
        shared.store_cut_blocks(if next <= now {
            BufferCut::Cut
        } else {
            BufferCut::Keep
        });
        if next <= now {
            next += interval;
            if next < now {
                // Fell behind (a long pause): cut on the interval from now on.
                next = now + interval;
            }
        }
    }
}

/// The input of a receiver stream.
struct ReceiverInput<T> {
    shared: Arc<ReceiverCore<T>>,
    receiver: Mutex<Option<Box<dyn Receiver<T>>>>,
    alloc: Arc<Allocations<T>>,
    /// Records allocated per batch, for backpressure (`None` without it).
    records: Option<Arc<Mutex<BTreeMap<BatchTime, u64>>>>,
    restart_delay: Duration,
    block_interval: Duration,
    /// With the WAL: the blocks (WAL handles) each batch took, until it is processed.
    plans: Mutex<BTreeMap<BatchTime, Vec<sluice_wal::RecordHandle>>>,
    /// With the WAL: the first LSN no batch has taken (restored from the checkpoint and
    /// moved on by replays).
    next_lsn: AtomicU64,
    /// With the WAL: the LSN this process's own blocks start at; blocks of an earlier
    /// life in `[next_lsn, boundary)` were stored but never allocated, and are queued
    /// again before the first new batch.
    boundary: u64,
    requeued: AtomicBool,
    /// The CPU pool (from the first allocation), to free processed batches on.
    pool: std::sync::OnceLock<Arc<rayon::ThreadPool>>,
}

impl<T: Data> ReceiverInput<T> {
    /// A batch of `blocks`, one partition each: in memory (packed lines become
    /// records here, block by block on the CPU pool), or read back from the WAL
    /// partition by partition as the batch's operators need them.
    fn batch_of(&self, blocks: Vec<ReceivedBlock<T>>, env: &ExecutionEnv) -> Result<Batch<T>> {
        if blocks.iter().all(|b| b.records.is_some()) {
            use rayon::prelude::*;
            let held: Vec<BufferedRecords<T>> =
                blocks.into_iter().filter_map(|b| b.records).collect();
            let parts: Vec<Vec<T>> = env.pool.install(|| {
                held.into_par_iter()
                    .map(BufferedRecords::into_records)
                    .collect()
            });
            return Ok(Batch::from_partitions(parts));
        }
        let wal = self
            .shared
            .wal
            .clone()
            .ok_or_else(|| EngineError::NotReplayable {
                input: self.describe(),
            })?;
        let mut lens = Vec::with_capacity(blocks.len());
        let mut handles = Vec::with_capacity(blocks.len());
        let mut held = Vec::with_capacity(blocks.len());
        for b in blocks {
            let h = b.handle.ok_or_else(|| EngineError::NotReplayable {
                input: self.describe(),
            })?;
            lens.push(b.len);
            handles.push(h);
            held.push(Mutex::new(b.records));
        }
        // A block kept in memory is used from there the first time (and dropped); any
        // later read, and every block not kept, comes from the WAL.
        let load: crate::runtime::batch::LoadPart<T> =
            Arc::new(move |i: usize| match lock(&held[i]).take() {
                Some(records) => Ok(records.into_records()),
                None => read_block(&wal, handles[i]),
            });
        Ok(Batch::stored(lens, load))
    }

    /// Queues the blocks an earlier life stored in the WAL but never allocated.
    fn requeue_unallocated(&self) -> Result<()> {
        let Some(wal) = &self.shared.wal else {
            return Ok(());
        };
        if self.requeued.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let from = sluice_wal::Lsn(self.next_lsn.load(Ordering::SeqCst).max(wal.first_lsn().0));
        if from.0 >= self.boundary {
            return Ok(());
        }
        let mut it = wal.iter_from(from)?;
        let mut old = Vec::new();
        while let Some(r) = it.next_with_handle() {
            let (handle, bytes) = r?;
            if handle.lsn.0 >= self.boundary {
                break;
            }
            let records = decode_block::<T>(&bytes)?;
            old.push(ReceivedBlock {
                id: u64::MAX,
                len: records.len(),
                records: (!self.shared.read_back).then_some(BufferedRecords::Records(records)),
                handle: Some(handle),
            });
        }
        tracing::info!(receiver = %self.shared.name, blocks = old.len(),
            "queued blocks stored in the WAL before the crash but never processed");
        let mut q = lock(&self.shared.blocks);
        for b in old.into_iter().rev() {
            q.push_front(b);
        }
        Ok(())
    }
}

impl<T: Data> Input for ReceiverInput<T> {
    fn describe(&self) -> String {
        format!("receiver {}", self.shared.name)
    }

    fn kind(&self) -> &'static str {
        "receiver"
    }

    fn status(&self) -> crate::observe::InputStatus {
        let s = self.shared.status();
        let state = if lock(&self.shared.fatal).is_some() {
            "failed"
        } else if s.finished {
            "stopped"
        } else if self.shared.restarting.load(Ordering::Relaxed) {
            "restarting"
        } else {
            "active"
        };
        crate::observe::InputStatus {
            name: s.name,
            kind: "receiver".into(),
            state: state.into(),
            rate_limit_per_s: s.rate_limit.map(|r| r as f64),
            buffered_bytes: Some(s.bytes_buffered),
            restarts: s.restarts,
            last_error: s.last_error,
            records_total: s.records_stored,
            dropped_oversized: s.dropped_oversized,
            ..Default::default()
        }
    }

    fn start(&self, _env: &ExecutionEnv) -> Result<()> {
        let receiver = lock(&self.receiver)
            .take()
            .ok_or_else(|| EngineError::Config {
                setting: "receiver".into(),
                reason: format!("{} was already started", self.shared.name),
            })?;
        let short: String = self.shared.name.chars().take(24).collect();
        let (s1, s2) = (self.shared.clone(), self.shared.clone());
        let (base, interval) = (self.restart_delay, self.block_interval);
        std::thread::Builder::new()
            .name(format!("sluice-blocks-{short}"))
            .spawn(move || generate_blocks(s2, interval))
            .map_err(|e| {
                EngineError::io(format!("the block generator of {}", self.shared.name), e)
            })?;
        std::thread::Builder::new()
            .name(format!("sluice-recv-{short}"))
            .spawn(move || supervise(s1, receiver, base))
            .map_err(|e| {
                self.shared.finished.store(true, Ordering::SeqCst);
                self.shared.wake();
                EngineError::io(format!("the thread of receiver {}", self.shared.name), e)
            })?;
        self.shared.started.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn allocate(&self, t: BatchTime, env: &ExecutionEnv) -> Result<u64> {
        if let Some(msg) = lock(&self.shared.fatal).clone() {
            return Err(EngineError::ReceiverFailed(msg));
        }
        let _ = self.pool.set(env.pool.clone());
        self.requeue_unallocated()?;
        // The batch takes the bytes of the blocks queued since the last one: read before
        // the blocks are taken, so every byte counted is in this batch or an earlier one.
        self.shared.bytes.take_for_batch(t);
        let blocks: Vec<ReceivedBlock<T>> = lock(&self.shared.blocks).drain(..).collect();
        if self.shared.wal.is_some() {
            let handles: Vec<sluice_wal::RecordHandle> =
                blocks.iter().filter_map(|b| b.handle).collect();
            if let Some(last) = handles.last() {
                self.next_lsn.fetch_max(last.lsn.0 + 1, Ordering::SeqCst);
            }
            lock(&self.plans).insert(t, handles);
        }
        if let (Some(first), Some(last)) = (blocks.first(), blocks.last()) {
            tracing::debug!(receiver = %self.shared.name, time = t.0, from = first.id, to = last.id,
                "blocks allocated");
        }
        let batch = self.batch_of(blocks, env)?;
        let n = batch.len() as u64;
        if let Some(r) = &self.records {
            lock(r).insert(t, n);
        }
        self.alloc.set(t, batch);
        Ok(n)
    }

    fn stop_receiving(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.run_stop_hooks();
        if !self.shared.started.load(Ordering::SeqCst) {
            // Never started: nothing will ever be received.
            self.shared.finished.store(true, Ordering::SeqCst);
        }
    }

    fn drained(&self) -> bool {
        self.shared.finished.load(Ordering::SeqCst) && lock(&self.shared.blocks).is_empty()
    }

    fn ready(&self) -> bool {
        !lock(&self.shared.blocks).is_empty()
    }

    fn forget(&self, t: BatchTime) {
        let done = self.alloc.take_through(t);
        match self.pool.get() {
            Some(pool) => done.into_iter().for_each(|b| b.drop_on(pool)),
            None => drop(done),
        }
        let mut p = lock(&self.plans);
        *p = p.split_off(&BatchTime(t.0 + 1));
        drop(p);
        let bytes = &self.shared.bytes;
        self.shared.released(bytes.release_through(t));
        // Once the receiver has finished and its queue is empty there is no next batch
        // to take the bytes of a block queued after the last one read the count.
        if self.drained() {
            self.shared.released(bytes.release_untaken());
        }
    }

    fn plan_of(&self, t: BatchTime) -> Option<Vec<u8>> {
        self.shared.wal.as_ref()?;
        crate::runtime::graph::encode(lock(&self.plans).get(&t)?).ok()
    }

    fn replay(&self, t: BatchTime, plan: &[u8], env: &ExecutionEnv) -> Result<u64> {
        let wal = self
            .shared
            .wal
            .as_ref()
            .ok_or_else(|| EngineError::NotReplayable {
                input: self.describe(),
            })?;
        let handles: Vec<sluice_wal::RecordHandle> = crate::runtime::graph::decode(plan)?;
        let mut blocks = Vec::with_capacity(handles.len());
        for h in &handles {
            let records = decode_block::<T>(&wal.read(*h)?)?;
            blocks.push(ReceivedBlock {
                id: u64::MAX,
                len: records.len(),
                records: (!self.shared.read_back).then_some(BufferedRecords::Records(records)),
                handle: Some(*h),
            });
            self.next_lsn.fetch_max(h.lsn.0 + 1, Ordering::SeqCst);
        }
        let batch = self.batch_of(blocks, env)?;
        let n = batch.len() as u64;
        self.alloc.set(t, batch);
        lock(&self.plans).insert(t, handles);
        Ok(n)
    }

    fn position(&self) -> Option<Vec<u8>> {
        self.shared.wal.as_ref()?;
        let source = lock(&self.shared.position).clone();
        crate::runtime::graph::encode(&(self.next_lsn.load(Ordering::SeqCst), source)).ok()
    }

    fn restore_position(&self, pos: &[u8]) -> Result<()> {
        let (lsn, source) = decode_input_position(pos)?;
        self.next_lsn.store(lsn, Ordering::SeqCst);
        // A positioned block still in the WAL is newer than anything the checkpoint saw.
        if !self.shared.position_from_wal {
            *lock(&self.shared.position) = source;
        }
        Ok(())
    }

    fn release_before(&self, pos: &[u8]) -> Result<()> {
        if let Some(wal) = &self.shared.wal {
            let (lsn, _) = decode_input_position(pos)?;
            wal.delete_before(sluice_wal::Lsn(lsn))?;
        }
        Ok(())
    }
}

/// A block as the receiver WAL holds it: the source position stored with it (if any),
/// then its records. The position comes first, so a scan reads it without decoding the
/// records. `records` serialises as a sequence of the stream's records (a slice, or
/// packed lines standing for `String`s).
fn encode_block<R: serde::Serialize + ?Sized>(
    records: &R,
    position: Option<&[u8]>,
) -> Result<Vec<u8>> {
    crate::runtime::graph::encode(&(position, records))
}

thread_local! {
    /// Each CPU-pool thread reads blocks into one buffer: a fresh multi-MiB buffer per
    /// block would be a fresh mapping (see `tune_allocator`), its pages faulted in and
    /// zeroed for every block.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads one block back from the receiver WAL (a partition of a stored batch).
fn read_block<T: Data>(wal: &sluice_wal::Wal, handle: sluice_wal::RecordHandle) -> Result<Vec<T>> {
    READ_BUFFER.with(|b| {
        let mut buf = b.borrow_mut();
        let records = decode_block::<T>(wal.read_into(handle, &mut buf)?);
        if buf.capacity() > 4 * BLOCK_BYTES as usize {
            *buf = Vec::new();
        }
        records
    })
}

fn decode_block<T: Data>(bytes: &[u8]) -> Result<Vec<T>> {
    crate::runtime::graph::decode::<(Option<Vec<u8>>, Vec<T>)>(bytes).map(|(_, r)| r)
}

/// The receiver input's checkpointed position: the first WAL LSN no batch took, and the
/// source position of the newest positioned block. (Checkpoints written before source
/// positions existed hold the LSN alone.)
fn decode_input_position(pos: &[u8]) -> Result<(u64, Option<Vec<u8>>)> {
    crate::runtime::graph::decode::<(u64, Option<Vec<u8>>)>(pos)
        .or_else(|_| crate::runtime::graph::decode::<u64>(pos).map(|lsn| (lsn, None)))
}

/// Opens a receiver's write-ahead log, named by the input's stable key (so it follows
/// the input, not its position among the receivers). A log that builds before stable
/// names kept at `receiver-wal-<position>` is used instead while it holds records and
/// the named one is empty: records it holds that no batch processed are not lost.
fn open_receiver_wal(
    location: &str,
    key: &str,
    position: usize,
    conf: &crate::StreamingConf,
) -> Result<sluice_wal::Wal> {
    let opts = sluice_wal::WalOptions {
        recovery: conf.wal_recovery_mode,
        ..sluice_wal::WalOptions::default()
    };
    let fs = conf.fs();
    let named = crate::durable::sibling_location(
        location,
        &format!(
            "receiver-wal-{}",
            crate::durable::snapshot_operator_name(key)
        ),
    );
    let legacy = crate::durable::sibling_location(location, &format!("receiver-wal-{position}"));
    if !crate::durable::location_holds_records(&named, &opts, fs.clone())?
        && crate::durable::location_holds_records(&legacy, &opts, fs.clone())?
    {
        tracing::info!(receiver = key, wal = %legacy, "using the receiver WAL an earlier build wrote at this receiver's position");
        return Ok(sluice_wal::Wal::open_url_with_fs(&legacy, opts, fs)?);
    }
    Ok(sluice_wal::Wal::open_url_with_fs(&named, opts, fs)?)
}

/// The source position of the newest positioned block the WAL holds.
fn newest_position(wal: &sluice_wal::Wal) -> Result<Option<Vec<u8>>> {
    let mut newest = None;
    let mut it = wal.iter_from(wal.first_lsn())?;
    while let Some(r) = it.next_with_handle() {
        let (_, bytes) = r?;
        if let Some(p) = crate::runtime::graph::decode::<Option<Vec<u8>>>(&bytes)? {
            newest = Some(p);
        }
    }
    Ok(newest)
}

impl StreamingContext {
    /// A stream of what `receiver` stores; see [`Receiver`].
    pub fn receiver_stream<T: Data>(&self, receiver: impl Receiver<T>) -> Result<DStream<T>> {
        self.receiver_stream_with_handle(receiver).map(|(s, _)| s)
    }

    /// Like [`StreamingContext::receiver_stream`], with a handle to watch the receiver.
    pub fn receiver_stream_with_handle<T: Data>(
        &self,
        receiver: impl Receiver<T>,
    ) -> Result<(DStream<T>, ReceiverHandle)> {
        self.add_receiver("receiver", Box::new(receiver))
    }

    pub(crate) fn add_receiver<T: Data>(
        &self,
        kind: &str,
        receiver: Box<dyn Receiver<T>>,
    ) -> Result<(DStream<T>, ReceiverHandle)> {
        let conf = self.conf();
        let name = receiver.describe();
        let identity = name.clone();
        let initial = if conf.backpressure {
            conf.backpressure_initial_rate.map(|r| r as f64)
        } else {
            None
        };
        let limiter = Arc::new(RateLimiter::new(conf.receiver_max_rate, initial));
        let wal = if conf.receiver_wal {
            let location = conf
                .checkpoint
                .as_deref()
                .ok_or_else(|| EngineError::Config {
                    setting: "receiver_wal".into(),
                    reason: "the receiver WAL lives at the checkpoint location: set one".into(),
                })?;
            let k = self.inner.receiver_count.fetch_add(1, Ordering::SeqCst);
            let key = self.inner.next_input_key(kind, &identity);
            Some(open_receiver_wal(location, &key, k, conf)?)
        } else {
            None
        };
        let boundary = wal.as_ref().map_or(0, |w| w.next_lsn().0);
        let wal_position = match &wal {
            Some(w) => newest_position(w)?,
            None => None,
        };
        let controller = if conf.backpressure {
            Some(Arc::new(RateController {
                estimator: Mutex::new(PidRateEstimator::new(
                    conf.batch_interval,
                    conf.backpressure_pid,
                )?),
                limiter: limiter.clone(),
                records: Arc::new(Mutex::new(BTreeMap::new())),
                name: name.clone(),
            }))
        } else {
            None
        };
        let shared = Arc::new(ReceiverCore {
            name,
            limiter,
            buffer: Mutex::new(BufferedRecords::default()),
            cut: Mutex::new(()),
            cuts: Mutex::new(VecDeque::new()),
            blocks: Mutex::new(VecDeque::new()),
            next_block: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            restart: Mutex::new(None),
            restarting: AtomicBool::new(false),
            started: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            hooks: Mutex::new(Vec::new()),
            stats: Mutex::new(Stats::default()),
            received: AtomicU64::new(0),
            signal: (Mutex::new(()), Condvar::new()),
            read_back: wal.is_some() && conf.receiver_read_back,
            wal,
            position_from_wal: wal_position.is_some(),
            fatal: Mutex::new(None),
            position: Mutex::new(wal_position),
            max_buffered: conf.receiver_max_buffered,
            max_record_bytes: conf.receiver_max_record_bytes,
            bytes: ReceiverBytes::default(),
            cut_soon: AtomicBool::new(false),
            last_cut_len: AtomicU64::new(0),
            last_cut_bytes: AtomicU64::new(0),
        });
        let alloc = Arc::new(Allocations::default());
        let input = Arc::new(ReceiverInput {
            shared: shared.clone(),
            receiver: Mutex::new(Some(receiver)),
            alloc: alloc.clone(),
            records: controller.as_ref().map(|c| c.records.clone()),
            restart_delay: conf.receiver_restart_delay,
            block_interval: conf.block_interval,
            plans: Mutex::new(BTreeMap::new()),
            next_lsn: AtomicU64::new(0),
            boundary,
            requeued: AtomicBool::new(false),
            pool: std::sync::OnceLock::new(),
        });
        let stream = self.input_stream(kind, identity, alloc, input)?;
        if let Some(c) = controller {
            self.add_listener(c);
        }
        let handle = ReceiverHandle {
            status: Arc::new(move || shared.status()),
        };
        Ok((stream, handle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delay_doubles_up_to_a_cap() {
        let b = Duration::from_millis(100);
        assert_eq!(restart_delay(b, 1), b);
        assert_eq!(restart_delay(b, 2), Duration::from_millis(200));
        assert_eq!(restart_delay(b, 4), Duration::from_millis(800));
        assert_eq!(restart_delay(b, 30), Duration::from_secs(6), "60x the base");
        assert_eq!(
            restart_delay(Duration::from_secs(2), 30),
            Duration::from_secs(30),
            "at most 30 s"
        );
        assert_eq!(
            restart_delay(Duration::from_secs(60), 3),
            Duration::from_secs(60),
            "never below the base"
        );
    }

    fn lines(ls: &[&str]) -> BufferedRecords<String> {
        let mut p = PackedLines::default();
        for l in ls {
            p.push(l);
        }
        BufferedRecords::Lines {
            lines: p,
            unpack: PackedLines::to_strings,
        }
    }

    fn records(ls: &[&str]) -> BufferedRecords<String> {
        BufferedRecords::Records(ls.iter().map(|l| l.to_string()).collect())
    }

    #[test]
    fn held_lines_and_records_append_in_order_and_stay_packed_together() {
        let mut h = BufferedRecords::default();
        h.append(lines(&["a", "b"]), (0, 0));
        h.append(lines(&["c"]), (4, 64));
        assert!(
            matches!(h, BufferedRecords::Lines { .. }),
            "lines after lines stay packed"
        );
        h.append(records(&["d"]), (0, 0));
        h.append(lines(&["e", ""]), (0, 0));
        assert_eq!(h.len(), 6);
        assert_eq!(h.into_records(), ["a", "b", "c", "d", "e", ""]);
    }

    #[test]
    fn a_packed_block_is_in_the_wal_as_its_records_and_splits_anywhere() {
        let all = ["one", "two 2", "", "drei"];
        let pos: Option<&[u8]> = Some(b"at 4");
        let bytes = lines(&all).encode(pos).unwrap();
        assert_eq!(bytes, records(&all).encode(pos).unwrap());
        assert_eq!(decode_block::<String>(&bytes).unwrap(), all);
        for at in 0..=all.len() {
            let mut first = lines(&all);
            let second = first.split_off(at);
            let mut joined = first.into_records();
            joined.extend(second.into_records());
            assert_eq!(joined, all, "split at {at}");
        }
    }
}
