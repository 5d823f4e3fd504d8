//! Hot paths of the WAL: frame encoding and CRC-checked scanning, the append path
//! without fsync (the CPU cost per record), and durable group commit with 16 writers.
//! The end-to-end figures beside the raw disk come from `sluice bench wal`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_wal::{format, Durability, Lsn, Wal, WalOptions};

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    let payload = vec![7u8; 1024];
    g.throughput(Throughput::Bytes(1024));
    g.bench_function("encode_1KiB", |b| {
        let mut out = Vec::with_capacity(2048);
        b.iter(|| {
            out.clear();
            format::encode_frame(black_box(&payload), &mut out);
        })
    });
    let mut run = Vec::new();
    for _ in 0..1024 {
        format::encode_frame(&payload, &mut run);
    }
    g.throughput(Throughput::Bytes(run.len() as u64));
    g.bench_function("scan_1MiB_of_1KiB_frames", |b| {
        b.iter(|| black_box(format::scan_frames(black_box(&run))).frames.len())
    });
    g.finish();
}

fn appends(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(
        dir.path().join("nosync"),
        WalOptions {
            durability: Durability::NoSync,
            ..WalOptions::default()
        },
    )
    .unwrap();
    let record = vec![1u8; 100];
    g.throughput(Throughput::Elements(1));
    g.bench_function("nosync_100B", |b| {
        b.iter(|| wal.append(black_box(&record)).unwrap())
    });
    drop(wal);

    let wal = Arc::new(Wal::open(dir.path().join("gc"), WalOptions::default()).unwrap());
    g.throughput(Throughput::Elements(16 * 64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("group_commit_16_writers_64_in_flight_100B", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            let threads: Vec<_> = (0..16)
                .map(|_| {
                    let wal = wal.clone();
                    std::thread::spawn(move || {
                        let record = [3u8; 100];
                        for _ in 0..iters {
                            let mut last = Lsn(0);
                            for _ in 0..64 {
                                last = wal.submit(&record).unwrap().lsn;
                            }
                            wal.wait(last).unwrap();
                        }
                    })
                })
                .collect();
            for th in threads {
                th.join().unwrap();
            }
            t.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, frames, appends);
criterion_main!(benches);
