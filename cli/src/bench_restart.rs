//! `sluice bench restart`: restart-to-first-completed-batch after SIGKILL, with N keys
//! of state, at a local, S3 or RocksDB checkpoint location.
//!
//! The driver (this binary's hidden `bench-restart-driver` command) keeps N keys of
//! state (`update_state_by_key` seeded with N initial keys) fed by a small generator,
//! checkpoints every batch, and prints `BATCH <time ms> <wall ms>` after each batch.
//! The bench starts it, waits for a checkpoint holding the N keys, SIGKILLs it, starts
//! it again, and measures from the second spawn to its first completed batch.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice::prelude::*;

pub fn driver(keys: u64, checkpoint: &str, batch_ms: u64) -> Result<(), String> {
    let conf = StreamingConf::new("bench-restart", Duration::from_millis(batch_ms))
        .checkpoint(checkpoint)
        .checkpoint_interval(Duration::from_millis(batch_ms));
    let ssc = StreamingContext::get_or_create(conf, |ssc| {
        let updates = ssc.generator_stream("updates", 1000, move |n| {
            (format!("key-{}", n % keys), 1u64)
        })?;
        // Built only when the job starts without a checkpoint: a restart restores it.
        let initial =
            move || -> Vec<(String, u64)> { (0..keys).map(|k| (format!("key-{k}"), 0)).collect() };
        let state = updates.update_state_by_key_with_initial_fn(
            "bench-state",
            |vs: &[u64], s: Option<&u64>| Some(s.copied().unwrap_or(0) + vs.iter().sum::<u64>()),
            initial,
        )?;
        state.foreach_batch(|b| {
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            println!("BATCH {} {} {}", b.time.0, wall, b.batch.len());
            Ok(())
        })
    })
    .map_err(|e| e.to_string())?;
    ssc.start().map_err(|e| e.to_string())?;
    ssc.await_termination().map_err(|e| e.to_string())
}

struct Driver {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

fn spawn(keys: u64, checkpoint: &str, batch_ms: u64) -> Result<Driver, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["bench-restart-driver", "--keys", &keys.to_string()])
        .args([
            "--checkpoint",
            checkpoint,
            "--batch-ms",
            &batch_ms.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the driver: {e}"))?;
    let out = child.stdout.take().ok_or("no driver stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Ok(Driver { child, lines: rx })
}

impl Driver {
    /// Waits for the next `BATCH` line; returns its key count.
    fn next_batch(&mut self, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("BATCH ") {
                        return Ok(rest
                            .split(' ')
                            .nth(2)
                            .and_then(|k| k.parse().ok())
                            .unwrap_or(0));
                    }
                }
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    return Err(format!(
                        "no batch from the driver within {timeout:?} (exit: {status:?})"
                    ));
                }
            }
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run(
    keys: &[u64],
    checkpoint: Option<String>,
    batch_ms: u64,
    json: bool,
) -> Result<(), String> {
    for &n in keys {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let location = match &checkpoint {
            Some(l) => format!(
                "{}/bench-restart-{n}-{}",
                l.trim_end_matches('/'),
                std::process::id()
            ),
            None => tmp.path().join("ckpt").display().to_string(),
        };
        // First life: build the state and checkpoint it.
        let mut d = spawn(n, &location, batch_ms)?;
        for _ in 0..3 {
            d.next_batch(Duration::from_secs(120))?;
        }
        d.kill(); // SIGKILL
                  // Second life: time to the first completed batch.
        let t0 = Instant::now();
        let mut d = spawn(n, &location, batch_ms)?;
        let restored_keys = d.next_batch(Duration::from_secs(300))?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        d.kill();
        if restored_keys < n {
            return Err(format!(
                "the restarted driver saw {restored_keys} keys, expected {n}"
            ));
        }
        if json {
            println!(
                "{{\"bench\":\"restart\",\"keys\":{n},\"location\":{:?},\"batch_ms\":{batch_ms},\"restart_to_first_batch_ms\":{ms:.0}}}",
                location
            );
        } else {
            println!(
                "{n:>9} keys at {location}: restart to first completed batch {ms:.0} ms (batch interval {batch_ms} ms)"
            );
        }
    }
    Ok(())
}
