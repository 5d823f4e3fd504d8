//! Measurements behind `sluice bench wal` and the criterion benches: the raw disk
//! (sequential write bandwidth, fdatasync rate) beside the WAL on the same directory,
//! so both figures come from the same machine in the same run.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Durability, Lsn, Result, Wal, WalError, WalOptions};

/// The raw disk under a directory.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RawDisk {
    /// Sequential write of `bytes` in 1 MiB writes plus a final fdatasync, MB/s.
    pub seq_write_mb_s: f64,
    /// 4 KiB append + fdatasync per operation, operations per second.
    pub fdatasync_per_s: f64,
    /// Median latency of one 4 KiB append + fdatasync, microseconds.
    pub fdatasync_p50_us: f64,
}

/// Measures the raw disk under `dir`: `bytes` of sequential writes, and `syncs`
/// append+fdatasync operations.
pub fn raw_disk(dir: &Path, bytes: u64, syncs: usize) -> Result<RawDisk> {
    let path = dir.join("raw-disk-probe");
    let io = |e| WalError::io(&path, e);
    let block = vec![0x5au8; 1 << 20];
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    let t = Instant::now();
    let mut written = 0;
    while written < bytes {
        f.write_all(&block).map_err(io)?;
        written += block.len() as u64;
    }
    f.sync_data().map_err(io)?;
    let seq = written as f64 / t.elapsed().as_secs_f64() / 1e6;
    drop(f);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    let page = vec![0xa5u8; 4096];
    let mut lat = Vec::with_capacity(syncs);
    let t = Instant::now();
    for _ in 0..syncs {
        let t1 = Instant::now();
        f.write_all(&page).map_err(io)?;
        f.sync_data().map_err(io)?;
        lat.push(t1.elapsed());
    }
    let rate = syncs as f64 / t.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(RawDisk {
        seq_write_mb_s: seq,
        fdatasync_per_s: rate,
        fdatasync_p50_us: percentile(&mut lat, 0.5).as_secs_f64() * 1e6,
    })
}

/// Throughput of durable appends.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Throughput {
    pub record_bytes: usize,
    pub writers: usize,
    /// Appends each writer keeps in flight before waiting (1: every append waits).
    pub in_flight: usize,
    pub records_per_s: f64,
    pub mb_s: f64,
}

/// `writers` threads append `record_bytes` records under group commit for `duration`;
/// each keeps `in_flight` appends queued and counts a record only once a wait covering
/// it has returned (it is durable).
pub fn group_commit(
    dir: &Path,
    record_bytes: usize,
    writers: usize,
    in_flight: usize,
    duration: Duration,
) -> Result<Throughput> {
    let opts = WalOptions {
        durability: Durability::GroupCommit {
            max_wait: Duration::ZERO,
        },
        segment_max_bytes: 256 << 20,
        ..WalOptions::default()
    };
    let wal = Wal::open(dir, opts)?;
    let stop = Arc::new(AtomicBool::new(false));
    let durable = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (wal, stop, durable) = (wal.clone(), stop.clone(), durable.clone());
            std::thread::spawn(move || -> Result<()> {
                let record = vec![w as u8; record_bytes];
                while !stop.load(Ordering::Relaxed) {
                    let mut last = Lsn(0);
                    for _ in 0..in_flight {
                        last = wal.submit(&record)?.lsn;
                    }
                    wal.wait(last)?;
                    durable.fetch_add(in_flight as u64, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join()
            .map_err(|_| WalError::InvalidOptions("a bench writer panicked".into()))??;
    }
    let secs = t.elapsed().as_secs_f64();
    let n = durable.load(Ordering::Relaxed) as f64;
    drop(wal);
    clear(dir)?;
    Ok(Throughput {
        record_bytes,
        writers,
        in_flight,
        records_per_s: n / secs,
        mb_s: n * record_bytes as f64 / secs / 1e6,
    })
}

/// Latency of single appends under [`Durability::PerAppend`], beside the raw floor.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Latency {
    pub record_bytes: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    /// The same-size write + fdatasync on a plain file, alternating one for one with
    /// the WAL's appends so both see the same background load.
    pub raw_p50_us: f64,
    pub raw_p99_us: f64,
}

/// One writer, `n` appends of `record_bytes`, each fsynced before the next; interleaved
/// one for one with raw appends of the same size + fdatasync on a plain file beside it.
pub fn per_append_latency(dir: &Path, record_bytes: usize, n: usize) -> Result<Latency> {
    let opts = WalOptions {
        durability: Durability::PerAppend,
        ..WalOptions::default()
    };
    let wal = Wal::open(dir, opts)?;
    let raw_path = dir.join("raw-latency-probe");
    let io = |e| WalError::io(&raw_path, e);
    let mut raw = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&raw_path)
        .map_err(io)?;
    let record = vec![1u8; record_bytes];
    // The raw file gets what a minimal log writes per record: header + payload.
    let raw_record = vec![1u8; record_bytes + crate::format::FRAME_HEADER_LEN];
    wal.append(&record)?; // creates the segment; not a steady-state append
    let mut lat = Vec::with_capacity(n);
    let mut raw_lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        wal.append(&record)?;
        lat.push(t.elapsed());
        let t = Instant::now();
        raw.write_all(&raw_record).map_err(io)?;
        raw.sync_data().map_err(io)?;
        raw_lat.push(t.elapsed());
    }
    drop(wal);
    drop(raw);
    clear(dir)?;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Ok(Latency {
        record_bytes,
        p50_us: us(percentile(&mut lat, 0.5)),
        p99_us: us(percentile(&mut lat, 0.99)),
        raw_p50_us: us(percentile(&mut raw_lat, 0.5)),
        raw_p99_us: us(percentile(&mut raw_lat, 0.99)),
    })
}

/// Read-back scan speed.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Scan {
    pub bytes: u64,
    pub mb_s: f64,
}

/// Writes `bytes` of 64 KiB records, then times a full CRC-checked scan with
/// [`Wal::iter_from`] (from the page cache: the scan measures the WAL, not the disk).
pub fn scan(dir: &Path, bytes: u64) -> Result<Scan> {
    let wal = Wal::open(dir, WalOptions::default())?;
    let record = vec![7u8; 64 << 10];
    let batch: Vec<&[u8]> = (0..64).map(|_| &record[..]).collect();
    let mut written = 0;
    while written < bytes {
        wal.append_batch(&batch)?;
        written += (batch.len() * record.len()) as u64;
    }
    let t = Instant::now();
    let mut read = 0u64;
    for r in wal.iter_from(Lsn(0))? {
        read += r?.1.len() as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    drop(wal);
    clear(dir)?;
    Ok(Scan {
        bytes: read,
        mb_s: read as f64 / secs / 1e6,
    })
}

fn clear(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).map_err(|e| WalError::io(dir, e))
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}
