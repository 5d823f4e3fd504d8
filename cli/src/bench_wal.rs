//! `sluice bench wal`: the raw disk and the WAL, measured in one run on one directory.

use std::path::PathBuf;
use std::time::Duration;

use sluice_wal::bench;

fn json_line(kind: &str, value: &impl serde::Serialize) -> String {
    let mut v = serde_json::to_value(value).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("bench".into(), serde_json::Value::from(kind));
    }
    v.to_string()
}

pub fn run(dir: Option<PathBuf>, quick: bool, json: bool) -> Result<(), String> {
    let tmp;
    let base = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            d
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("sluice-bench-wal")
                .tempdir_in(std::env::var_os("TMPDIR").unwrap_or_else(|| "/var/tmp".into()))
                .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
            tmp.path().to_path_buf()
        }
    };
    let (dur, seq_bytes, syncs, lat_n, scan_bytes) = if quick {
        (
            Duration::from_millis(700),
            256u64 << 20,
            1000,
            1000,
            256u64 << 20,
        )
    } else {
        (Duration::from_secs(3), 1u64 << 30, 3000, 3000, 1u64 << 30)
    };
    let say = |human: String, line: String| {
        if json {
            println!("{line}");
        } else {
            println!("{human}");
        }
    };
    if !json {
        println!(
            "sluice bench wal on {} ({} cores)",
            base.display(),
            num_cpus()
        );
    }
    let err = |e: sluice_wal::WalError| e.to_string();
    let raw = bench::raw_disk(&base, seq_bytes, syncs).map_err(err)?;
    say(
        format!(
            "raw disk: sequential write {:.0} MB/s, 4 KiB append+fdatasync {:.0}/s (p50 {:.0} us)",
            raw.seq_write_mb_s, raw.fdatasync_per_s, raw.fdatasync_p50_us
        ),
        json_line("raw_disk", &raw),
    );
    if !json {
        println!(
            "{:>8} {:>8} {:>9} {:>14} {:>10} {:>9}",
            "record", "writers", "in-flight", "records/s", "MB/s", "% of raw"
        );
    }
    for &record in &[100usize, 1024, 64 << 10] {
        for &writers in &[1usize, 4, 16] {
            for &in_flight in &[1usize, 64] {
                if record == 64 << 10 && in_flight == 64 && writers > 4 {
                    continue; // 64 MiB in flight adds nothing but memory
                }
                let t = bench::group_commit(&base.join("gc"), record, writers, in_flight, dur)
                    .map_err(err)?;
                say(
                    format!(
                        "{:>8} {:>8} {:>9} {:>14.0} {:>10.1} {:>8.0}%",
                        record,
                        writers,
                        in_flight,
                        t.records_per_s,
                        t.mb_s,
                        100.0 * t.mb_s / raw.seq_write_mb_s
                    ),
                    json_line("group_commit", &t),
                );
            }
        }
    }
    let l = bench::per_append_latency(&base.join("lat"), 100, lat_n).map_err(err)?;
    say(
        format!(
            "per-append fsync, {} B: p50 {:.0} us, p99 {:.0} us; raw write+fdatasync of the same size, interleaved: p50 {:.0} us, p99 {:.0} us ({:.2}x at p50)",
            l.record_bytes,
            l.p50_us,
            l.p99_us,
            l.raw_p50_us,
            l.raw_p99_us,
            l.p50_us / l.raw_p50_us
        ),
        json_line("per_append_latency", &l),
    );
    let s = bench::scan(&base.join("scan"), scan_bytes).map_err(err)?;
    say(
        format!(
            "scan (CRC-checked, page cache): {:.0} MB/s over {} MiB",
            s.mb_s,
            s.bytes >> 20
        ),
        json_line("scan", &s),
    );
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
