//! The receiver write-ahead log: blocks a reliable receiver stored are durable before
//! `store_block` returns; after a failure, a restarted job re-reads the failed batch's
//! blocks from the WAL and queues blocks that were stored but never allocated, so every
//! stored record is processed exactly once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice::prelude::*;
use sluice_testkit::eventually;

/// Stores `before` at once; then, if `after` is not empty, waits until the context
/// stops (the sink fails) and stores `after`: blocks durable in the WAL that no batch
/// of this life will take.
struct Blocks {
    before: Vec<Vec<u32>>,
    after: Vec<Vec<u32>>,
}

impl Receiver<u32> for Blocks {
    fn run(&mut self, ctx: &ReceiverContext<u32>) -> sluice::Result<()> {
        for b in self.before.drain(..) {
            ctx.store_block(b)?; // durable in the WAL when this returns
        }
        if !self.after.is_empty() {
            for _ in 0..500 {
                if ctx.is_stopped() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            for b in self.after.drain(..) {
                ctx.store_block(b)?;
            }
        }
        Ok(())
    }
}

type Seen = Arc<Mutex<BTreeMap<u64, Vec<u32>>>>;

/// One active context per process: tests that start one take turns.
static SERIAL: Mutex<()> = Mutex::new(());

/// A job named `name` with the receiver WAL at `dir`: `receiver`'s stream into `sink`.
fn wal_job<T: Data>(
    dir: &std::path::Path,
    name: &str,
    receiver: impl Receiver<T>,
    sink: impl Fn(&sluice::BatchContext<'_, T>) -> sluice::Result<()> + Send + Sync + 'static,
) -> (StreamingContext, sluice::ReceiverHandle) {
    let handle = Arc::new(Mutex::new(None));
    let h2 = handle.clone();
    let conf = StreamingConf::new(name, Duration::from_millis(40))
        .parallelism(2)
        .checkpoint(dir.display().to_string())
        .receiver_wal(true);
    let ssc = StreamingContext::get_or_create(conf, move |ssc| {
        let (s, h) = ssc.receiver_stream_with_handle(receiver)?;
        *h2.lock().unwrap() = Some(h);
        s.foreach_batch(sink)
    })
    .unwrap();
    let h = handle.lock().unwrap().take().unwrap();
    (ssc, h)
}

fn job(
    dir: &std::path::Path,
    blocks: Blocks,
    seen: Seen,
    fail_once: Option<Arc<AtomicBool>>,
) -> (StreamingContext, sluice::ReceiverHandle) {
    wal_job(dir, "receiver-wal", blocks, move |b| {
        let mut v = b.batch.to_vec();
        v.sort();
        // Idempotent by batch id: a replayed batch overwrites its own entry.
        seen.lock().unwrap().insert(b.batch_id(), v.clone());
        if let Some(f) = &fail_once {
            if v.contains(&25) && !f.swap(true, Ordering::SeqCst) {
                return Err(EngineError::User("the sink failed (simulated)".into()));
            }
        }
        Ok(())
    })
}

#[test]
fn a_failed_batch_is_replayed_from_the_wal_and_nothing_is_lost_or_repeated() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let seen: Seen = Arc::default();
    let mut blocks: Vec<Vec<u32>> = (0..6).map(|b| (b * 10..b * 10 + 10).collect()).collect();
    let after = blocks.split_off(3);
    let failed = Arc::new(AtomicBool::new(false));
    let (ssc, receiver) = job(
        dir.path(),
        Blocks {
            before: blocks,
            after,
        },
        seen.clone(),
        Some(failed.clone()),
    );
    ssc.start().unwrap();
    let err = ssc.await_termination().unwrap_err();
    assert!(err.to_string().contains("simulated"), "{err}");
    assert!(failed.load(Ordering::SeqCst));
    // The receiver stores its last blocks after the failure, then ends.
    // A minute at most, also on a loaded machine.
    for _ in 0..6000 {
        if receiver.status().finished {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        receiver.status().finished,
        "the first receiver never finished"
    );
    assert_eq!(receiver.status().records_stored, 60);
    drop(receiver);

    // Second life: the failed batch comes back from the WAL, and so do the blocks
    // stored after it; the receiver itself adds two records.
    let (ssc, _) = job(
        dir.path(),
        Blocks {
            before: vec![vec![60, 61]],
            after: vec![],
        },
        seen.clone(),
        None,
    );
    ssc.start().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    ssc.stop(true).unwrap();

    let mut all: Vec<u32> = seen.lock().unwrap().values().flatten().copied().collect();
    all.sort();
    let want: Vec<u32> = (0..62).collect();
    assert_eq!(all, want, "every stored record exactly once");
}

#[test]
fn the_receiver_wal_needs_a_checkpoint_location() {
    let conf = StreamingConf::new("no-location", Duration::from_millis(40)).receiver_wal(true);
    let ssc = StreamingContext::new(conf).unwrap();
    let err = ssc
        .receiver_stream(Blocks {
            before: vec![],
            after: vec![],
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("receiver_wal") && err.contains("checkpoint"),
        "{err}"
    );
}

#[test]
fn a_block_larger_than_a_wal_record_is_stored_in_parts() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let seen: Seen = Arc::default();
    // About 24 MiB encoded: more than the WAL's 16 MiB record limit.
    let big: Vec<u32> = (0..6_000_000).collect();
    let (ssc, receiver) = job(
        dir.path(),
        Blocks {
            before: vec![big],
            after: vec![],
        },
        seen.clone(),
        None,
    );
    ssc.start().unwrap();
    // A minute at most, also on a loaded machine.
    for _ in 0..6000 {
        if receiver.status().finished {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        receiver.status().records_stored,
        6_000_000,
        "{:?}",
        receiver.status()
    );
    assert_eq!(receiver.status().errors, 0);
    ssc.stop(true).unwrap();
    let n: usize = seen.lock().unwrap().values().map(Vec::len).sum();
    assert_eq!(n, 6_000_000);
}

/// A source with acknowledgements (as a message broker has): records `0..len`, and the
/// offset of the last acknowledged one.
#[derive(Clone, Default)]
struct Broker {
    len: Arc<std::sync::atomic::AtomicU32>,
    acked: Arc<std::sync::atomic::AtomicU32>,
}

/// Reads the broker in blocks of 10, stored with their end offset, and acknowledges
/// each block after it is stored — except, with `die_before_ack`, the last one (the
/// process "dies" between the WAL write and the acknowledgement).
struct Positioned {
    broker: Broker,
    die_before_ack: bool,
}

impl Receiver<u32> for Positioned {
    fn run(&mut self, ctx: &ReceiverContext<u32>) -> sluice::Result<()> {
        let mut from = match ctx.stored_position() {
            Some(p) => u32::from_le_bytes(p.try_into().expect("a 4-byte position")),
            None => self.broker.acked.load(Ordering::SeqCst),
        };
        let len = self.broker.len.load(Ordering::SeqCst);
        while from < len {
            let to = (from + 10).min(len);
            ctx.store_block_at((from..to).collect(), to.to_le_bytes())?;
            if self.die_before_ack && to == len {
                return Ok(());
            }
            self.broker.acked.store(to, Ordering::SeqCst);
            from = to;
        }
        Ok(())
    }
}

#[test]
fn a_reliable_receiver_resumes_from_the_position_stored_with_its_blocks() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let seen: Seen = Arc::default();
    let broker = Broker::default();
    let life = |receiver: Positioned, seen: Seen| {
        let conf = StreamingConf::new("positioned", Duration::from_millis(40))
            .checkpoint(dir.path().display().to_string())
            .checkpoint_interval(Duration::from_millis(80))
            .receiver_wal(true);
        let ssc = StreamingContext::get_or_create(conf, move |ssc| {
            ssc.receiver_stream(receiver)?.foreach_batch(move |b| {
                seen.lock().unwrap().insert(b.batch_id(), b.batch.to_vec());
                Ok(())
            })
        })
        .unwrap();
        ssc.start().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        ssc.stop(true).unwrap();
    };

    // First life: 50 records; the block 40..50 is durable but never acknowledged.
    broker.len.store(50, Ordering::SeqCst);
    life(
        Positioned {
            broker: broker.clone(),
            die_before_ack: true,
        },
        seen.clone(),
    );
    assert_eq!(broker.acked.load(Ordering::SeqCst), 40);

    // Second life: the broker would redeliver from 40; the receiver resumes from 50.
    broker.len.store(100, Ordering::SeqCst);
    life(
        Positioned {
            broker: broker.clone(),
            die_before_ack: false,
        },
        seen.clone(),
    );
    // Third life: nothing new; the stored position (from the WAL or the checkpoint)
    // keeps the receiver from reading anything again.
    life(
        Positioned {
            broker: Broker {
                len: broker.len.clone(),
                acked: Arc::default(), // a broker that forgot every acknowledgement
            },
            die_before_ack: false,
        },
        seen.clone(),
    );

    let mut all: Vec<u32> = seen.lock().unwrap().values().flatten().copied().collect();
    all.sort();
    assert_eq!(
        all,
        (0..100).collect::<Vec<u32>>(),
        "every record exactly once"
    );
}

/// A TCP server on loopback that sends `text` to its one client, then waits for the
/// client to close the connection.
fn serve_once(text: Vec<u8>) -> (u16, std::thread::JoinHandle<()>) {
    serve_once_on(0, text)
}

/// Like `serve_once`, on `port` (0: any free one). The receiver's identity, and with it
/// its WAL, is its `host:port`: a restarted job reads from the same server address.
fn serve_once_on(port: u16, text: Vec<u8>) -> (u16, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        if let Ok((mut c, _)) = l.accept() {
            let _ = c.write_all(&text);
            let mut buf = [0u8; 64];
            while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
        }
    });
    (port, h)
}

type SeenLines = Arc<Mutex<BTreeMap<u64, Vec<String>>>>;

/// A socket text stream with the receiver WAL into an idempotent sink that fails once
/// on the batch holding `fail_on`.
fn socket_job(
    dir: &std::path::Path,
    port: u16,
    seen: SeenLines,
    fail_on: Option<&'static str>,
) -> (StreamingContext, sluice::ReceiverHandle) {
    let failed = AtomicBool::new(false);
    let receiver = sluice::SocketReceiver::text("127.0.0.1", port);
    wal_job(dir, "receiver-wal-socket", receiver, move |b| {
        let v = b.batch.to_vec();
        // Fails before recording: the failed batch's lines can only come back from
        // the WAL.
        if let Some(line) = fail_on {
            if v.iter().any(|l| l == line) && !failed.swap(true, Ordering::SeqCst) {
                return Err(EngineError::User("the sink failed (simulated)".into()));
            }
        }
        seen.lock().unwrap().insert(b.batch_id(), v);
        Ok(())
    })
}

#[test]
fn socket_lines_in_the_wal_come_back_as_the_same_lines_after_a_failure() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let seen: SeenLines = Arc::default();
    // Lines of several sizes (empty, multi-byte, CRLF), packed per block on receipt.
    let first: Vec<String> = (0..3000)
        .map(|i| match i % 4 {
            0 => String::new(),
            1 => format!("l{i} ünï"),
            _ => format!("l{i} {}", "x".repeat(i % 300)),
        })
        .collect();
    let mut text = Vec::new();
    for (i, l) in first.iter().enumerate() {
        text.extend_from_slice(l.as_bytes());
        text.extend_from_slice(if i % 7 == 0 { b"\r\n" } else { b"\n" });
    }
    let (port, server) = serve_once(text);
    let (ssc, receiver) = socket_job(dir.path(), port, seen.clone(), Some("l1501 ünï"));
    ssc.start().unwrap();
    let err = ssc.await_termination().unwrap_err();
    assert!(err.to_string().contains("simulated"), "{err}");
    assert!(eventually(5, || receiver.status().finished));
    assert_eq!(receiver.status().records_stored, 3000);
    drop((ssc, receiver));
    server.join().unwrap();

    // Second life, on a new server at the same address: the failed batch and whatever
    // no batch took come back from the WAL as the lines they were; then two new lines.
    let (port, server) = serve_once_on(port, b"m0\nm1\n".to_vec());
    let (ssc, _) = socket_job(dir.path(), port, seen.clone(), None);
    ssc.start().unwrap();
    assert!(eventually(5, || seen
        .lock()
        .unwrap()
        .values()
        .flatten()
        .any(|l| l == "m1")));
    ssc.stop(true).unwrap();
    server.join().unwrap();
    let mut got: Vec<String> = seen.lock().unwrap().values().flatten().cloned().collect();
    got.sort();
    let mut want = first;
    want.extend(["m0".to_string(), "m1".to_string()]);
    want.sort();
    assert_eq!(got.len(), want.len(), "every line exactly once");
    assert_eq!(got, want);
}
