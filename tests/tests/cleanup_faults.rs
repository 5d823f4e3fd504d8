//! Cleanup that never loses a usable checkpoint. Seen before: cleanup skipped a
//! retained checkpoint it failed to read, so one transient disk or S3 error dropped it
//! from the live set and garbage collection deleted its snapshots and driver-log
//! segments, possibly those of the checkpoint just written. Here the read of the oldest
//! retained checkpoint fails during a cleanup round, and the job stops; then every
//! newer checkpoint is damaged, so the restart can only use that one: it must succeed,
//! with the exact state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice::prelude::*;
use sluice::CheckpointInfo;
use sluice_testkit::eventually;
use sluice_wal::fs::{Fault, FileSystem, SimFs};

const B: u64 = 20;
/// Checkpoints every this many batches: the job stops before the next one after the
/// failed round.
const EVERY: u64 = 10;
const RATE: u64 = 500;
/// How many checkpoints the store keeps (`sluice_checkpoint::DEFAULT_RETAINED`).
const RETAINED: u64 = sluice_checkpoint::DEFAULT_RETAINED as u64;

/// (newest batch time, its state, first batch time seen).
type Totals = Arc<Mutex<(u64, BTreeMap<u64, u64>, u64)>>;

fn job(fs: &SimFs, totals: &Totals) -> StreamingContext {
    let conf = StreamingConf::new("cleanup-faults", Duration::from_millis(B))
        .parallelism(2)
        .checkpoint("/ckpt")
        .checkpoint_interval(Duration::from_millis(EVERY * B))
        .file_system(Arc::new(fs.clone()));
    let totals = totals.clone();
    StreamingContext::get_or_create(conf, move |ssc| {
        ssc.generator_stream("numbers", RATE, |n| (n % 7, 1u64))?
            .update_state_by_key("totals", |vs: &[u64], s: Option<&u64>| {
                Some(s.copied().unwrap_or(0) + vs.iter().sum::<u64>())
            })?
            .foreach_batch(move |b| {
                let mut t = totals.lock().unwrap();
                if t.2 == 0 || b.batch_id() < t.2 {
                    t.2 = b.batch_id();
                }
                if b.batch_id() >= t.0 {
                    t.0 = b.batch_id();
                    t.1 = b.batch.iter().copied().collect();
                }
                Ok(())
            })
    })
    .unwrap()
}

fn checkpoints(fs: &SimFs) -> Vec<String> {
    let mut v: Vec<String> = fs
        .list(std::path::Path::new("/ckpt"))
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    v.sort();
    v
}

/// Arms the fault between two cleanup rounds, on request. It hears of each checkpoint
/// once its cleanup round is over, and the next round starts only after that (one
/// checkpoint is written at a time): arming here never lands mid-round, where the
/// fault could hit the next publish instead (which fails the job, as it should).
struct ArmBetweenRounds {
    fs: SimFs,
    /// Set by the test to ask for the fault; `Some(listing)` once armed.
    request: Mutex<(bool, Option<Vec<String>>)>,
}

impl StreamingListener for ArmBetweenRounds {
    fn on_checkpoint(&self, info: &CheckpointInfo) {
        let mut r = self.request.lock().unwrap();
        if !r.0 || r.1.is_some() || info.error.is_some() {
            return;
        }
        let now = checkpoints(&self.fs);
        if (now.len() as u64) < RETAINED {
            return;
        }
        // The next round publishes one more, so retention reads the newest `RETAINED`
        // (the second oldest now among them: its first open) and deletes the oldest;
        // then it reads every retained one, oldest first: the second oldest now, whose
        // second open fails.
        self.fs.inject(Fault::FailOpen {
            path_contains: now[1].clone(),
            nth: 2,
        });
        r.1 = Some(now);
    }
}

#[test]
fn read_failures_during_cleanup_never_cost_the_checkpoint_a_restart_falls_back_to() {
    let fs = SimFs::new();
    let totals: Totals = Arc::default();
    let ssc = job(&fs, &totals);
    let arm = Arc::new(ArmBetweenRounds {
        fs: fs.clone(),
        request: Mutex::new((false, None)),
    });
    ssc.add_listener(arm.clone());
    ssc.start().unwrap();
    // Retention is under way once the first checkpoint is gone again (more than
    // `RETAINED` were written).
    assert!(eventually(30, || !checkpoints(&fs).is_empty()));
    let first = checkpoints(&fs)[0].clone();
    assert!(eventually(30, || {
        let now = checkpoints(&fs);
        now.len() as u64 >= RETAINED && !now.contains(&first)
    }));
    arm.request.lock().unwrap().0 = true;
    assert!(eventually(30, || arm.request.lock().unwrap().1.is_some()));
    assert!(eventually(30, || fs.faults_pending() == 0));
    // Stop before the next checkpoint (and its cleanup round).
    ssc.stop(false).unwrap();
    drop(ssc);
    let rounds_before = arm.request.lock().unwrap().1.clone().unwrap();
    let retained = checkpoints(&fs);
    assert!(retained.len() as u64 >= RETAINED, "{retained:?}");
    assert_ne!(
        retained, rounds_before,
        "a checkpoint was written with the fault armed"
    );

    // Damage every checkpoint but the oldest: the restart can only use that one.
    for name in &retained[1..] {
        let path = std::path::Path::new("/ckpt").join(name);
        let mut bytes = fs.read_file(&path).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0x55;
        fs.write_file(&path, bytes);
    }

    let after: Totals = Arc::default();
    let ssc = job(&fs, &after);
    ssc.start().unwrap();
    std::thread::sleep(Duration::from_millis(6 * B));
    ssc.stop(true).unwrap();
    let (t, got, _) = after.lock().unwrap().clone();
    assert!(t > 0, "the restarted job ran");
    // The generator's offsets up to batch `t`: the job's zero time is one batch before
    // the first batch the first life ran.
    let zero = totals.lock().unwrap().2 - B;
    let mut want: BTreeMap<u64, u64> = BTreeMap::new();
    for n in 0..(t - zero) * RATE / 1000 {
        *want.entry(n % 7).or_default() += 1;
    }
    assert_eq!(
        got, want,
        "the state holds every generator offset up to batch {t} exactly once"
    );
}
