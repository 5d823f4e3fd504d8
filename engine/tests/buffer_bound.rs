//! The receiver buffer bound (`receiver_max_buffered`): a receiver whose data the job
//! has not processed yet blocks in `store` instead of buffering without bound; a socket
//! receiver stops reading, so the server's writes block (TCP flow control); nothing is
//! lost, and a graceful stop still processes everything received.

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use sluice::prelude::*;
use sluice::ReceiverHandle;
use sluice_testkit::eventually;

/// Contexts are one-per-process; tests that start one run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn conf(name: &str, max_buffered: u64) -> StreamingConf {
    StreamingConf::new(name, Duration::from_millis(50))
        .block_interval(Duration::from_millis(20))
        .parallelism(2)
        .receiver_max_buffered(Some(max_buffered))
}

/// A gate the job's output waits at while closed: holds batches back, as a slow job.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// Collects every element of `s`, in batch order, behind `gate`.
fn collect_behind<T: Data>(s: &DStream<T>, gate: Arc<Gate>) -> Arc<Mutex<Vec<T>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    s.foreach_batch(move |b| {
        gate.wait();
        out.lock().unwrap().extend(b.batch.iter().cloned());
        Ok(())
    })
    .unwrap();
    seen
}

/// Stores 0, 1, 2, … one at a time until stopped; `stored` counts the calls that
/// returned.
struct Counter {
    stored: Arc<AtomicU64>,
}

impl Receiver<u64> for Counter {
    fn run(&mut self, ctx: &ReceiverContext<u64>) -> sluice::Result<()> {
        while !ctx.is_stopped() {
            ctx.store(self.stored.load(Ordering::SeqCst));
            self.stored.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// A started context whose `Counter` receiver (bound: 1000 records of 8 bytes) has
/// stored its first 1000 records, and whose output waits behind a closed gate.
struct Held {
    ssc: StreamingContext,
    stored: Arc<AtomicU64>,
    handle: ReceiverHandle,
    gate: Arc<Gate>,
    seen: Arc<Mutex<Vec<u64>>>,
}

fn counter_held_at_the_gate(name: &str) -> Held {
    let h = start_counter(conf(name, 8_000));
    assert!(eventually(20, || h.stored.load(Ordering::SeqCst) >= 1000));
    h
}

/// Starts the `Counter` job with `conf`, its output behind a closed gate.
fn start_counter(conf: StreamingConf) -> Held {
    let ssc = StreamingContext::new(conf).unwrap();
    let stored = Arc::new(AtomicU64::new(0));
    let (s, handle) = ssc
        .receiver_stream_with_handle(Counter {
            stored: stored.clone(),
        })
        .unwrap();
    let gate = Arc::new(Gate::default());
    let seen = collect_behind(&s, gate.clone());
    ssc.start().unwrap();
    Held {
        ssc,
        stored,
        handle,
        gate,
        seen,
    }
}

impl Held {
    /// Every stored record reached the output, in order, once.
    fn assert_all_processed(&self) {
        let got = self.seen.lock().unwrap().clone();
        let n = self.stored.load(Ordering::SeqCst);
        assert_eq!(
            got,
            (0..n).collect::<Vec<_>>(),
            "every record, in order, once"
        );
    }
}

#[test]
fn a_receiver_over_its_bound_blocks_until_batches_complete_and_loses_nothing() {
    let _g = serial();
    let h = counter_held_at_the_gate("bound-store");
    // The first batch is held at the gate: the receiver cannot go past its bound, for
    // as long as the gate stays closed.
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(10));
        let n = h.stored.load(Ordering::SeqCst);
        assert_eq!(n, 1000, "stored past the bound while nothing was processed");
        assert_eq!(h.handle.status().bytes_buffered, 8_000);
    }
    h.gate.open();
    // Batches complete, room is made, the receiver goes on.
    assert!(eventually(20, || h.stored.load(Ordering::SeqCst) > 5_000));
    h.ssc.stop(true).unwrap();
    h.assert_all_processed();
    assert_eq!(h.handle.status().bytes_buffered, 0, "all processed");
}

#[test]
fn graceful_stop_ends_the_wait_and_processes_what_was_received() {
    let _g = serial();
    let h = counter_held_at_the_gate("bound-stop");
    // The receiver waits for room; a graceful stop must end that wait (the gate opens
    // only once the stop is under way) and process every stored record.
    let stopper = h.ssc.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(stopper.stop(true));
    });
    std::thread::sleep(Duration::from_millis(50));
    h.gate.open();
    let stopped = rx.recv_timeout(Duration::from_secs(20));
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
    h.assert_all_processed();
}

#[test]
fn a_socket_receiver_over_its_bound_stops_reading_and_the_sender_blocks() {
    let _g = serial();
    // 40 MB of lines, far more than the loopback socket buffers (a few MB) plus the
    // bound: while the job holds its first batch, the server cannot finish writing.
    const LINES: u64 = 400_000;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let written = Arc::new(AtomicBool::new(false));
    let w = written.clone();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut chunk = Vec::new();
        for i in 0..LINES {
            writeln!(chunk, "{i:099}").unwrap(); // 100 bytes per line
            if chunk.len() >= 1 << 20 {
                c.write_all(&chunk).unwrap();
                chunk.clear();
            }
        }
        c.write_all(&chunk).unwrap();
        w.store(true, Ordering::SeqCst);
        // Keep the connection open until the client closes it.
        let _ = std::io::Read::read_to_end(&mut c, &mut Vec::new());
    });
    let bound = 256 * 1024;
    let ssc = StreamingContext::new(conf("bound-socket", bound)).unwrap();
    let (s, handle) = ssc
        .receiver_stream_with_handle(sluice::SocketReceiver::text("127.0.0.1", port))
        .unwrap();
    let gate = Arc::new(Gate::default());
    let seen = collect_behind(&s, gate.clone());
    ssc.start().unwrap();
    assert!(eventually(20, || handle.status().bytes_buffered >= bound));
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(10));
        assert!(
            !written.load(Ordering::SeqCst),
            "the server wrote everything: the receiver kept reading past its bound"
        );
        // At most one read buffer's worth over the bound.
        let b = handle.status().bytes_buffered;
        assert!(b <= bound + 512 * 1024, "{b} bytes buffered");
    }
    gate.open();
    assert!(eventually(60, || seen.lock().unwrap().len() as u64 >= LINES));
    assert!(written.load(Ordering::SeqCst));
    ssc.stop(true).unwrap();
    server.join().unwrap();
    let got = seen.lock().unwrap();
    assert_eq!(got.len() as u64, LINES, "no line lost or repeated");
    for (i, l) in got.iter().enumerate() {
        assert_eq!(l, &format!("{i:099}"), "line {i} in order");
    }
}

/// The `Counter` job of [`counter_held_at_the_gate`] with the receiver WAL in `dir`,
/// blocks read back from it (`receiver_read_back`) or kept in memory.
fn counter_with_wal(name: &str, dir: &std::path::Path, read_back: bool) -> Held {
    start_counter(
        conf(name, 8_000)
            .checkpoint(dir.to_str().unwrap())
            .receiver_wal(true)
            .receiver_read_back(read_back),
    )
}

#[test]
fn with_the_wal_read_back_intake_goes_on_while_batches_are_held_and_nothing_is_lost() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let h = counter_with_wal("bound-read-back", dir.path(), true);
    // The first batch waits at the gate, yet the receiver stores far past its bound of
    // 1000 records: blocks durable in the WAL leave memory, and only what the receiver
    // has not yet written counts against the bound.
    assert!(
        eventually(30, || h.stored.load(Ordering::SeqCst) > 50_000),
        "the receiver was held by its bound although its blocks are in the WAL: {:?}",
        h.handle.status()
    );
    let b = h.handle.status().bytes_buffered;
    assert!(b <= 2 * 8_000, "{b} bytes in memory, bound 8000");
    h.gate.open();
    h.ssc.stop(true).unwrap();
    // Every record, read back from the WAL partition by partition, in order, once.
    h.assert_all_processed();
    assert_eq!(h.handle.status().bytes_buffered, 0);
}

#[test]
fn with_the_wal_kept_in_memory_the_bound_holds_the_receiver_as_without_it() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let h = counter_with_wal("bound-no-read-back", dir.path(), false);
    assert!(eventually(20, || h.stored.load(Ordering::SeqCst) >= 1000));
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(
            h.stored.load(Ordering::SeqCst),
            1000,
            "stored past the bound while nothing was processed"
        );
    }
    h.gate.open();
    h.ssc.stop(true).unwrap();
    h.assert_all_processed();
}
