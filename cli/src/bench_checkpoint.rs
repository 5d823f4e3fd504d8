//! `sluice bench checkpoint`: a stateful job with N keys of which a share changes each
//! batch, checkpointed every batch to a local directory, with checkpoints written on
//! their own thread (the default) and, in the same run, between batches on the
//! scheduler thread. For each: the scheduling delay of the batches (p50, p99, max),
//! the bytes of each state snapshot (the first full, then incremental), and the time a
//! restart takes to restore the N keys and complete its first batch.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice::prelude::*;
use sluice::{BatchInfo, StreamingListener};

/// The bench's settings.
pub struct CheckpointBenchOptions {
    pub keys: u64,
    pub change_pct: f64,
    pub batch_ms: u64,
    pub batches: u64,
    pub json: bool,
}

#[derive(Default)]
struct Delays(Mutex<Vec<(u64, Duration)>>);

impl StreamingListener for Delays {
    fn on_batch_submitted(&self, info: &BatchInfo) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((info.time.0, info.scheduling_delay));
    }
}

#[derive(Default)]
struct FirstBatch(Mutex<Option<Instant>>);

impl StreamingListener for FirstBatch {
    fn on_batch_completed(&self, _info: &BatchInfo) {
        let mut first = self.0.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(Instant::now);
    }
}

fn build(ssc: &StreamingContext, keys: u64, rate: u64) -> sluice::Result<()> {
    // Spread over the key space so each batch touches distinct keys.
    let updates = ssc.generator_stream("updates", rate, move |n| {
        (format!("key-{}", n.wrapping_mul(7_919) % keys), 1u64)
    })?;
    updates
        .update_state_by_key_with_initial_fn(
            "bench-state",
            |vs: &[u64], s: Option<&u64>| Some(s.copied().unwrap_or(0) + vs.iter().sum::<u64>()),
            move || (0..keys).map(|k| (format!("key-{k}"), 0)).collect(),
        )?
        .foreach_batch(|_| Ok(()))
}

/// Bytes of each state snapshot: `(checkpoint id, "full"|"incremental") -> bytes`.
fn snapshot_bytes(dir: &Path) -> Result<BTreeMap<(u64, &'static str), u64>, String> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let e = e.map_err(|e| e.to_string())?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("state-") {
            continue;
        }
        let parts: Vec<&str> = name.split(['-', '.']).collect();
        let Some(i) = parts
            .iter()
            .position(|p| p.len() == 20 && p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let kind = if parts.get(i + 1) == Some(&"f") {
            "full"
        } else {
            "incremental"
        };
        let id: u64 = parts[i].parse().map_err(|_| format!("{name}: bad id"))?;
        *out.entry((id, kind)).or_default() += e.metadata().map_err(|e| e.to_string())?.len();
    }
    Ok(out)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn run_mode(o: &CheckpointBenchOptions, async_checkpoints: bool) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-checkpoint")
        .tempdir_in(std::env::var_os("TMPDIR").unwrap_or_else(|| "/var/tmp".into()))
        .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let location = dir.path().display().to_string();
    let per_batch = ((o.keys as f64) * o.change_pct / 100.0).max(1.0);
    let rate = ((per_batch * 1000.0) / o.batch_ms as f64).ceil() as u64;
    let (keys, batch) = (o.keys, Duration::from_millis(o.batch_ms));
    let conf = || {
        StreamingConf::new("bench-checkpoint", batch)
            .checkpoint(&location)
            .checkpoint_interval(batch)
            .async_checkpoints(async_checkpoints)
    };
    let mode = if async_checkpoints {
        "checkpoint thread"
    } else {
        "scheduler thread"
    };

    let ssc = StreamingContext::get_or_create(conf(), |s| build(s, keys, rate))
        .map_err(|e| e.to_string())?;
    let delays = Arc::new(Delays::default());
    ssc.add_listener(delays.clone());
    ssc.start().map_err(|e| e.to_string())?;
    std::thread::sleep(batch * o.batches as u32);
    ssc.stop(false).map_err(|e| e.to_string())?;
    drop(ssc);

    let mut d: Vec<Duration> = delays
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .skip(1) // the first batch waits for the start
        .map(|x| x.1)
        .collect();
    d.sort();
    let sizes = snapshot_bytes(dir.path())?;
    let full = sizes
        .iter()
        .filter(|(k, _)| k.1 == "full")
        .map(|(_, v)| *v)
        .max()
        .unwrap_or(0);
    let incremental: Vec<u64> = sizes
        .iter()
        .filter(|(k, _)| k.1 == "incremental")
        .map(|(_, v)| *v)
        .collect();
    let max_inc = incremental.iter().copied().max().unwrap_or(0);

    // The restart: build + restore, then the first completed batch.
    let t0 = Instant::now();
    let ssc = StreamingContext::get_or_create(conf(), |s| build(s, keys, rate))
        .map_err(|e| e.to_string())?;
    let restored = t0.elapsed();
    let first = Arc::new(FirstBatch::default());
    ssc.add_listener(first.clone());
    ssc.start().map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let first_batch = loop {
        if let Some(at) = *first.0.lock().unwrap_or_else(|e| e.into_inner()) {
            break at.duration_since(t0);
        }
        if Instant::now() > deadline {
            return Err("the restarted job completed no batch within 2 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    ssc.stop(false).map_err(|e| e.to_string())?;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    if o.json {
        println!(
            "{}",
            serde_json::json!({"bench": "checkpoint", "mode": mode, "keys": o.keys,
                "change_pct": o.change_pct, "batch_ms": o.batch_ms, "batches": d.len(),
                "scheduling_delay_ms": {"p50": ms(percentile(&d, 0.5)),
                    "p99": ms(percentile(&d, 0.99)), "max": ms(d.last().copied().unwrap_or_default())},
                "full_snapshot_bytes": full, "incremental_snapshot_bytes": incremental,
                "restore_ms": ms(restored), "restart_to_first_batch_ms": ms(first_batch)})
        );
    } else {
        println!(
            "{mode:<17} {} keys, {}%/batch, {} ms batches: scheduling delay p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} batches; \
             snapshots: full {} B, incremental {} (max {} B = {:.2}% of full); restore {:.0} ms, restart to first batch {:.0} ms",
            o.keys,
            o.change_pct,
            o.batch_ms,
            ms(percentile(&d, 0.5)),
            ms(percentile(&d, 0.99)),
            ms(d.last().copied().unwrap_or_default()),
            d.len(),
            full,
            incremental.len(),
            max_inc,
            if full == 0 { 0.0 } else { max_inc as f64 * 100.0 / full as f64 },
            ms(restored),
            ms(first_batch),
        );
    }
    Ok(())
}

/// Runs the bench: checkpoints on their own thread, then on the scheduler thread.
pub fn run(o: CheckpointBenchOptions) -> Result<(), String> {
    if o.keys == 0
        || o.batch_ms == 0
        || o.batches < 2
        || o.change_pct.is_nan()
        || o.change_pct <= 0.0
    {
        return Err(
            "--keys, --batch-ms and --change-pct must be positive, --batches at least 2".into(),
        );
    }
    run_mode(&o, true)?;
    run_mode(&o, false)
}
