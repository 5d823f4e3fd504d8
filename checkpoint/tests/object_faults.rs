//! Object-store failures (through the fault-injecting wrapper) and the async writer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::memory::InMemory;
use sluice_checkpoint::fault::{FaultyObjectStore, ObjectFault, Op};
use sluice_checkpoint::writer::{CheckpointWriter, WriterEvent, WriterOptions};
use sluice_checkpoint::{
    CheckpointError, CheckpointId, CheckpointStore, ObjectCheckpointStore, PutOutcome, RetryPolicy,
    StartMode,
};

fn faulty() -> (FaultyObjectStore, Arc<ObjectCheckpointStore>) {
    let f = FaultyObjectStore::new(Arc::new(InMemory::new()));
    let store = ObjectCheckpointStore::new(Arc::new(f.clone()), "job", "memory://job")
        .unwrap()
        .with_retry_policy(RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(1),
        });
    (f, Arc::new(store))
}

#[test]
fn transient_put_errors_are_retried() {
    let (f, s) = faulty();
    f.inject(ObjectFault::Fail {
        op: Op::Put,
        count: 3,
    });
    assert_eq!(
        s.put_checkpoint(CheckpointId(1), b"x").unwrap(),
        PutOutcome::Published
    );
    let puts = f.calls().iter().filter(|(op, _)| *op == Op::Put).count();
    assert_eq!(puts, 4);
    assert_eq!(s.read_checkpoint(CheckpointId(1)).unwrap().payload, b"x");
}

#[test]
fn persistent_put_errors_surface_with_location_and_cause() {
    let (f, s) = faulty();
    f.inject(ObjectFault::Fail {
        op: Op::Put,
        count: 100,
    });
    let err = s.put_checkpoint(CheckpointId(1), b"x").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CheckpointError::ObjectStore { .. }), "{msg}");
    assert!(
        msg.contains("memory://job/checkpoint-00000000000000000001"),
        "{msg}"
    );
    assert!(msg.contains("injected fault"), "{msg}");
    f.clear();
    assert!(s.list_checkpoints().unwrap().is_empty());
}

#[test]
fn put_applied_but_reported_failed_is_recognised_on_retry() {
    let (f, s) = faulty();
    f.inject(ObjectFault::PutAppliedThenFail);
    let out = s.put_checkpoint(CheckpointId(5), b"payload").unwrap();
    assert_eq!(out, PutOutcome::AlreadyExists { identical: true });
    let r = s.read_newest(StartMode::RequireCheckpoint).unwrap();
    assert_eq!(r.checkpoint.unwrap().payload, b"payload");
}

#[test]
fn read_errors_do_not_fall_back_past_a_good_checkpoint() {
    let (f, s) = faulty();
    s.put_checkpoint(CheckpointId(1), b"old").unwrap();
    s.put_checkpoint(CheckpointId(2), b"new").unwrap();
    // One transient failure: retried, newest returned.
    f.inject(ObjectFault::Fail {
        op: Op::Get,
        count: 1,
    });
    let r = s.read_newest(StartMode::RequireCheckpoint).unwrap();
    assert_eq!(r.checkpoint.unwrap().payload, b"new");
    // A store that keeps failing: an error, not a silent fallback to the old one.
    f.inject(ObjectFault::Fail {
        op: Op::Get,
        count: 4,
    });
    let err = s.read_newest(StartMode::RequireCheckpoint).unwrap_err();
    assert!(matches!(err, CheckpointError::ObjectStore { .. }), "{err}");
    // Listing failures surface too.
    f.inject(ObjectFault::Fail {
        op: Op::List,
        count: 4,
    });
    assert!(s.list_checkpoints().is_err());
}

#[test]
fn latency_slows_but_does_not_break() {
    let (f, s) = faulty();
    f.inject(ObjectFault::Latency(Duration::from_millis(30)));
    let t = Instant::now();
    s.put_checkpoint(CheckpointId(1), b"x").unwrap();
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(s.read_checkpoint(CheckpointId(1)).unwrap().payload, b"x");
}

#[test]
fn delete_failures_surface() {
    let (f, s) = faulty();
    s.put_checkpoint(CheckpointId(1), b"x").unwrap();
    f.inject(ObjectFault::Fail {
        op: Op::Delete,
        count: 4,
    });
    assert!(s.delete_checkpoint(CheckpointId(1)).is_err());
    assert_eq!(s.list_checkpoints().unwrap(), vec![CheckpointId(1)]);
    s.delete_checkpoint(CheckpointId(1)).unwrap();
    assert!(s.list_checkpoints().unwrap().is_empty());
}

#[test]
fn writer_publishes_applies_retention_and_reports_failures() {
    let (f, s) = faulty();
    let w = CheckpointWriter::spawn(
        s.clone(),
        WriterOptions {
            capacity: 4,
            retain: Some(3),
        },
    )
    .unwrap();
    for i in 1..=5u64 {
        w.submit_blocking(CheckpointId(i), vec![i as u8]).unwrap();
    }
    w.flush().unwrap();
    let events = w.events();
    assert_eq!(events.len(), 5);
    assert!(events.iter().all(|e| matches!(
        e,
        WriterEvent::Done {
            outcome: PutOutcome::Published,
            ..
        }
    )));
    assert_eq!(
        s.list_checkpoints().unwrap(),
        vec![CheckpointId(3), CheckpointId(4), CheckpointId(5)]
    );
    // A failing store: the checkpoint comes back as Failed, with the cause.
    f.inject(ObjectFault::Fail {
        op: Op::Put,
        count: 100,
    });
    w.submit(CheckpointId(6), vec![6]).unwrap();
    let events = w.close().unwrap();
    assert_eq!(events.len(), 1);
    match &events[0] {
        WriterEvent::Failed { id, error } => {
            assert_eq!(*id, CheckpointId(6));
            assert!(
                error
                    .to_string()
                    .contains("checkpoint-00000000000000000006"),
                "{error}"
            );
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn writer_refuses_when_its_queue_is_full() {
    let (f, s) = faulty();
    f.inject(ObjectFault::Latency(Duration::from_millis(100)));
    let w = CheckpointWriter::spawn(
        s.clone(),
        WriterOptions {
            capacity: 1,
            retain: None,
        },
    )
    .unwrap();
    let mut refused = Vec::new();
    for i in 1..=4u64 {
        match w.submit(CheckpointId(i), vec![]) {
            Ok(()) => {}
            Err(CheckpointError::QueueFull { id, capacity }) => {
                assert_eq!(capacity, 1);
                refused.push(id);
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(!refused.is_empty());
    let events = w.close().unwrap();
    // Every accepted checkpoint is reported; no refused one is.
    assert_eq!(events.len(), 4 - refused.len());
    f.clear();
    for id in refused {
        assert!(s.read_checkpoint(id).is_err());
    }
}

/// The object-store WAL meets the same case: a segment put that S3 applied but whose
/// response was lost is retried and finds its own object. It is recognised by its
/// bytes, and the log goes on; another writer's object stays an error.
#[test]
fn a_wal_put_applied_but_reported_failed_is_recognised_as_its_own() {
    use sluice_wal::{Wal, WalOptions};
    let f = FaultyObjectStore::new(Arc::new(InMemory::new()));
    let wal = Wal::open_object_store(Arc::new(f.clone()), "wal", WalOptions::default()).unwrap();
    wal.append(b"one").unwrap();
    f.inject(ObjectFault::PutAppliedThenFail);
    wal.append(b"two").unwrap();
    wal.append(b"three").unwrap();
    drop(wal);
    let wal = Wal::open_object_store(Arc::new(f.clone()), "wal", WalOptions::default()).unwrap();
    let got: Vec<Vec<u8>> = wal
        .iter_from(wal.first_lsn())
        .unwrap()
        .map(|r| r.unwrap().1)
        .collect();
    assert_eq!(
        got,
        vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
}
