//! Incremental state checkpoints: after a first full snapshot, a checkpoint writes only
//! the keys whose state changed or was removed since the last one (an incremental
//! snapshot on top of it), every `max_deltas` a full one again; a restart restores the
//! full snapshot plus its deltas into exactly the state a run without a restart has.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use sluice::prelude::*;
use sluice::{BatchInfo, CheckpointInfo, StreamingListener};

/// One hour: no batch falls due in real time; the graceful stop runs the queued ones.
const B: u64 = 3_600_000;
const KEYS: u64 = 200_000;

/// Batch 0 sets every key; each later batch touches 1% of them (`+1`), and batch 3
/// also removes 100 keys (a value of 0 removes a key).
fn input() -> Vec<Vec<(u64, u64)>> {
    let mut batches = vec![(0..KEYS).map(|k| (k, 1)).collect::<Vec<_>>()];
    for b in 1..7u64 {
        let mut batch: Vec<(u64, u64)> = (0..KEYS / 100)
            .map(|i| ((i * 97 + b * 13) % KEYS, 1))
            .collect();
        if b == 3 {
            batch.extend((0..100).map(|i| (KEYS - 1 - i, 0)));
        }
        batches.push(batch);
    }
    batches
}

type Totals = Arc<Mutex<BTreeMap<u64, BTreeMap<u64, u64>>>>;

/// One streaming context per process at a time: the tests of this file take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn build(
    ssc: &StreamingContext,
    batches: Vec<Vec<(u64, u64)>>,
    out: &Totals,
) -> sluice::Result<()> {
    let totals = ssc.queue_stream(batches, true)?.update_state_by_key(
        "totals",
        |vs: &[u64], s: Option<&u64>| {
            if vs.contains(&0) {
                return None;
            }
            Some(s.copied().unwrap_or(0) + vs.iter().sum::<u64>())
        },
    )?;
    let o = out.clone();
    totals.foreach_batch(move |b| {
        o.lock()
            .unwrap()
            .insert(b.time.0, b.batch.iter().cloned().collect());
        Ok(())
    })
}

/// Bytes of each state snapshot in the checkpoint directory: `(id, kind) -> bytes`,
/// kind `f` (full) or `d` (delta).
fn snapshot_sizes(dir: &Path) -> BTreeMap<(u64, String), u64> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("state-") else {
            continue;
        };
        // state-<operator>-<id:020>-<f|d>[-pNNNN-cNNNNNN | .manifest]
        let parts: Vec<&str> = rest.split('-').collect();
        let Some(i) = parts
            .iter()
            .position(|p| p.len() == 20 && p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let kind = parts[i + 1].split('.').next().unwrap().to_owned();
        *out.entry((parts[i].parse().unwrap(), kind)).or_default() += e.metadata().unwrap().len();
    }
    out
}

/// A run over `batches` with a checkpoint at every batch in `dir` (on the checkpoint
/// thread unless `sync`), resumed from what is there, each batch queued; the state
/// after each batch.
fn run(
    dir: &Path,
    name: &str,
    sync: bool,
    batches: Vec<Vec<(u64, u64)>>,
    listener: Option<Arc<dyn StreamingListener>>,
) -> Vec<BTreeMap<u64, u64>> {
    let conf = StreamingConf::new(name, Duration::from_millis(B))
        .checkpoint(dir.to_str().unwrap())
        .checkpoint_interval(Duration::from_millis(B))
        .async_checkpoints(!sync);
    let out: Totals = Arc::default();
    let ssc = StreamingContext::get_or_create(conf, |s| build(s, batches, &out)).unwrap();
    if let Some(l) = listener {
        ssc.add_listener(l);
    }
    ssc.start().unwrap();
    ssc.stop(true).unwrap();
    drop(ssc);
    let got = out.lock().unwrap().values().cloned().collect();
    got
}

/// The state after each batch of one run without checkpoints or restarts.
fn reference(batches: Vec<Vec<(u64, u64)>>) -> Vec<BTreeMap<u64, u64>> {
    let out: Totals = Arc::default();
    let ssc =
        StreamingContext::new(StreamingConf::new("reference", Duration::from_millis(B))).unwrap();
    build(&ssc, batches, &out).unwrap();
    ssc.start().unwrap();
    ssc.stop(true).unwrap();
    drop(ssc);
    let got = out.lock().unwrap().values().cloned().collect();
    got
}

#[test]
fn checkpoints_write_only_changed_keys_and_restore_full_plus_deltas() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let all = input();
    // A checkpoint at every batch, written between batches: none deferred while
    // another is written (`the_scheduler_does_not_wait_for_a_checkpoint_being_written`).
    let got_first = run(dir.path(), "incremental", true, all[..5].to_vec(), None);

    let sizes = snapshot_sizes(dir.path());
    eprintln!("snapshot bytes by (checkpoint, full/delta): {sizes:?}");
    let fulls: Vec<u64> = sizes
        .iter()
        .filter(|(k, _)| k.1 == "f")
        .map(|(_, v)| *v)
        .collect();
    let deltas: Vec<u64> = sizes
        .iter()
        .filter(|(k, _)| k.1 == "d")
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(fulls.len(), 1, "one full snapshot, then deltas: {sizes:?}");
    assert!(deltas.len() >= 3, "a delta per later checkpoint: {sizes:?}");
    for d in &deltas {
        assert!(
            *d * 20 <= fulls[0],
            "a delta of 1% of the keys writes at most 5% of a full snapshot: {d} vs {}",
            fulls[0]
        );
    }

    // The restart restores full + deltas, and goes on exactly as one run would.
    let got_second = run(dir.path(), "incremental", true, all.clone(), None);
    let want = reference(all);
    assert_eq!(got_first, want[..5].to_vec());
    assert_eq!(
        got_second.last(),
        want.last(),
        "final state after the restart"
    );
    assert_eq!(got_second.last().unwrap().len() as u64, KEYS - 100);
    assert_eq!(
        got_second.len(),
        2,
        "the two batches queued after the restart ran"
    );
    assert_eq!(got_second, want[5..].to_vec());
}

/// Holds the first checkpoint's thread (inside its listener call, after it wrote the
/// checkpoint) until two more batches have completed.
struct Gate {
    completed: Mutex<Vec<u64>>,
    cv: Condvar,
    checkpoints: Mutex<Vec<u64>>,
    /// The batches that completed while the first checkpoint's thread was held.
    while_held: Mutex<Vec<u64>>,
    held_too_long: Mutex<bool>,
}

impl StreamingListener for Gate {
    fn on_batch_completed(&self, info: &BatchInfo) {
        self.completed.lock().unwrap().push(info.time.0);
        self.cv.notify_all();
    }

    fn on_checkpoint(&self, info: &CheckpointInfo) {
        assert_eq!(info.error, None);
        let first = {
            let mut c = self.checkpoints.lock().unwrap();
            c.push(info.time.0);
            c.len() == 1
        };
        if first {
            let done = self.completed.lock().unwrap();
            let n0 = done.len();
            // Not a timing bound: only a scheduler waiting for this thread (a
            // deadlock) would keep the batches from completing for a minute.
            let (done, waited) = self
                .cv
                .wait_timeout_while(done, Duration::from_secs(60), |d| d.len() < n0 + 2)
                .unwrap();
            *self.while_held.lock().unwrap() = done[n0..].to_vec();
            *self.held_too_long.lock().unwrap() = waited.timed_out();
        }
    }
}

/// 50k keys set by the first batch, then 1% of them touched by each of 79 more.
fn long_input() -> Vec<Vec<(u64, u64)>> {
    let keys = 50_000;
    let mut batches = vec![(0..keys).map(|k| (k, 1)).collect::<Vec<_>>()];
    for b in 1..80u64 {
        batches.push(
            (0..keys / 100)
                .map(|i| ((i * 97 + b * 13) % keys, 1))
                .collect(),
        );
    }
    batches
}

#[test]
fn the_scheduler_does_not_wait_for_a_checkpoint_being_written() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let all = long_input();
    let run_to = all.len() - 10;
    let gate = Arc::new(Gate {
        completed: Mutex::default(),
        cv: Condvar::new(),
        checkpoints: Mutex::default(),
        while_held: Mutex::default(),
        held_too_long: Mutex::new(false),
    });
    let listener: Arc<dyn StreamingListener> = gate.clone();
    let got_first = run(
        dir.path(),
        "deferred",
        false,
        all[..run_to].to_vec(),
        Some(listener),
    );

    assert!(
        !*gate.held_too_long.lock().unwrap(),
        "batches stopped completing while the first checkpoint's thread was held"
    );
    let completed = gate.completed.lock().unwrap().clone();
    let checkpoints = gate.checkpoints.lock().unwrap().clone();
    let held = gate.while_held.lock().unwrap().clone();
    assert_eq!(completed.len(), run_to, "{completed:?}");
    assert_eq!(checkpoints[0], completed[0], "{checkpoints:?}");
    // Every checkpoint falls due at every batch: the batches that completed while the
    // first one was still being written (at least those while it was held) deferred
    // theirs to a later batch.
    assert!(held.len() >= 2, "{held:?}");
    assert!(checkpoints.len() >= 2, "{checkpoints:?}");
    assert!(
        checkpoints[1] > *held.last().unwrap(),
        "{checkpoints:?} {held:?}"
    );
    for t in &held {
        assert!(!checkpoints.contains(t), "{t} in {checkpoints:?}");
    }

    // A restart from the deferred checkpoints goes on exactly as one run would.
    let got_second = run(dir.path(), "deferred", false, all.clone(), None);
    let want = reference(all);
    assert_eq!(got_first, want[..run_to].to_vec());
    assert_eq!(got_second.last(), want.last());
}
