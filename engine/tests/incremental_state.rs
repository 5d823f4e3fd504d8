//! Incremental state checkpoints: after a first full snapshot, a checkpoint writes only
//! the keys whose state changed or was removed since the last one (an incremental
//! snapshot on top of it), every `max_deltas` a full one again; a restart restores the
//! full snapshot plus its deltas into exactly the state a run without a restart has.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice::prelude::*;

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

#[test]
fn checkpoints_write_only_changed_keys_and_restore_full_plus_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let conf = || {
        StreamingConf::new("incremental", Duration::from_millis(B))
            .checkpoint(dir.path().to_str().unwrap())
            .checkpoint_interval(Duration::from_millis(B))
    };
    let all = input();
    let first: Totals = Arc::default();
    let ssc =
        StreamingContext::get_or_create(conf(), |s| build(s, all[..5].to_vec(), &first)).unwrap();
    ssc.start().unwrap();
    ssc.stop(true).unwrap();
    drop(ssc);

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
    let second: Totals = Arc::default();
    let ssc = StreamingContext::get_or_create(conf(), |s| build(s, all.clone(), &second)).unwrap();
    ssc.start().unwrap();
    ssc.stop(true).unwrap();
    drop(ssc);

    let reference: Totals = Arc::default();
    let ssc = StreamingContext::new(StreamingConf::new(
        "incremental-ref",
        Duration::from_millis(B),
    ))
    .unwrap();
    build(&ssc, all, &reference).unwrap();
    ssc.start().unwrap();
    ssc.stop(true).unwrap();
    drop(ssc);

    let want: Vec<BTreeMap<u64, u64>> = reference.lock().unwrap().values().cloned().collect();
    let got_first: Vec<BTreeMap<u64, u64>> = first.lock().unwrap().values().cloned().collect();
    let got_second: Vec<BTreeMap<u64, u64>> = second.lock().unwrap().values().cloned().collect();
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
