//! The receiver write-ahead log: blocks a reliable receiver stored are durable before
//! `store_block` returns; after a failure, a restarted job re-reads the failed batch's
//! blocks from the WAL and queues blocks that were stored but never allocated, so every
//! stored record is processed exactly once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice::prelude::*;

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

fn job(
    dir: &std::path::Path,
    blocks: Blocks,
    seen: Seen,
    fail_once: Option<Arc<AtomicBool>>,
) -> (StreamingContext, sluice::ReceiverHandle) {
    let handle = Arc::new(Mutex::new(None));
    let h2 = handle.clone();
    let conf = StreamingConf::new("receiver-wal", Duration::from_millis(40))
        .parallelism(2)
        .checkpoint(dir.display().to_string())
        .receiver_wal(true);
    let ssc = StreamingContext::get_or_create(conf, move |ssc| {
        let (s, h) = ssc.receiver_stream_with_handle(blocks)?;
        *h2.lock().unwrap() = Some(h);
        s.foreach_batch(move |b| {
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
    })
    .unwrap();
    let h = handle.lock().unwrap().take().unwrap();
    (ssc, h)
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
    for _ in 0..500 {
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
    for _ in 0..500 {
        if receiver.status().finished {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(receiver.status().records_stored, 6_000_000);
    assert_eq!(receiver.status().errors, 0);
    ssc.stop(true).unwrap();
    let n: usize = seen.lock().unwrap().values().map(Vec::len).sum();
    assert_eq!(n, 6_000_000);
}
