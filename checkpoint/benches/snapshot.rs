//! State snapshots of 1,000,000 keys (string key, u64 value): full write, restore, and
//! an incremental snapshot with 1% of the keys changed, on local disk, RocksDB and
//! (with `SLUICE_BENCH_S3=1`) a moto S3 server.
//!
//! ```text
//! cargo bench -p sluice-checkpoint --bench snapshot
//! SLUICE_BENCH_S3=1 cargo bench -p sluice-checkpoint --bench snapshot
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use sluice_checkpoint::snapshot::{SnapshotOptions, StateSnapshots};
use sluice_checkpoint::{
    CheckpointId, CheckpointStore, LocalStore, ObjectCheckpointStore, RocksStore,
};

const KEYS: u64 = 1_000_000;

fn state() -> Vec<(String, [u8; 8])> {
    (0..KEYS)
        .map(|i| (format!("key-{i:08}"), i.to_le_bytes()))
        .collect()
}

fn changed(n: u64, round: u64) -> Vec<(String, [u8; 8])> {
    // 1% of the keys, spread over the key space.
    (0..n / 100)
        .map(|i| {
            (
                format!("key-{:08}", i * 100 + round % 100),
                (i + round).to_le_bytes(),
            )
        })
        .collect()
}

/// Removes every object of the store (not timed).
fn clear(store: &dyn CheckpointStore) {
    for n in store.list_names().unwrap() {
        store.delete(&n).unwrap();
    }
}

fn bench_backend(c: &mut Criterion, name: &str, store: Arc<dyn CheckpointStore>) {
    let data = state();
    let snaps = StateSnapshots::new(store.clone(), "bench", SnapshotOptions::default()).unwrap();
    let mut g = c.benchmark_group(format!("snapshot_1m/{name}"));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));
    g.warm_up_time(Duration::from_secs(1));

    let mut next_id = 1u64;
    g.bench_function("full_write", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                clear(&*store);
                next_id += 1;
                let t = Instant::now();
                let m = snaps
                    .write_full(CheckpointId(next_id), data.iter().map(|(k, v)| (k, v)))
                    .unwrap();
                total += t.elapsed();
                black_box(m);
            }
            total
        })
    });

    clear(&*store);
    next_id += 1;
    let base = snaps
        .write_full(CheckpointId(next_id), data.iter().map(|(k, v)| (k, v)))
        .unwrap();
    g.bench_function("restore", |b| {
        // The restored map is kept by the engine, so dropping it is not timed.
        b.iter_with_large_drop(|| {
            let s = snaps.restore(&base).unwrap();
            assert_eq!(s.len() as u64, KEYS);
            s
        })
    });

    g.bench_function("incremental_1pct_write", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                next_id += 1;
                let delta = changed(KEYS, next_id);
                let t = Instant::now();
                let m = snaps
                    .write_incremental(
                        CheckpointId(next_id),
                        &base,
                        delta.iter().map(|(k, v)| (k, v)),
                        std::iter::empty::<&[u8]>(),
                    )
                    .unwrap();
                total += t.elapsed();
                // Keep only the base and this delta's files around.
                snaps.gc(&[base.reference(), m.reference()]).unwrap();
            }
            total
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let dir =
        tempfile::tempdir_in(std::env::var("SLUICE_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .unwrap();
    let local: Arc<dyn CheckpointStore> =
        Arc::new(LocalStore::open(dir.path().join("local")).unwrap());
    bench_backend(c, "local", local);
    let rocks: Arc<dyn CheckpointStore> =
        Arc::new(RocksStore::open(dir.path().join("rocks")).unwrap());
    bench_backend(c, "rocksdb", rocks);
    if std::env::var("SLUICE_BENCH_S3").is_ok_and(|v| v == "1") {
        let moto = sluice_testkit::MotoServer::start().unwrap_or_else(|e| panic!("{e}"));
        moto.create_bucket("bench").unwrap();
        let mut b = object_store::aws::AmazonS3Builder::new();
        for (k, v) in sluice_testkit::s3_env(&moto, "bench") {
            if k != "AWS_DEFAULT_REGION" {
                b = b.with_config(k.to_ascii_lowercase().parse().unwrap(), v);
            }
        }
        let s3: Arc<dyn CheckpointStore> = Arc::new(
            ObjectCheckpointStore::new(Arc::new(b.build().unwrap()), "bench", "s3://bench/bench")
                .unwrap(),
        );
        bench_backend(c, "moto_s3", s3);
    }
}

criterion_group!(snapshot, benches);
criterion_main!(snapshot);
