//! The promise, end to end: `sluice demo` killed with SIGKILL at seeded random instants
//! and restarted (get_or_create) loses no batch and repeats none. Every batch file it
//! wrote is checked against an oracle computed from the generator alone.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

const BATCH_MS: u64 = 200;
const RATE: u64 = 500;

fn demo_at(checkpoint: &str, output: &Path, extra: &[&str], env: &[(String, String)]) -> Child {
    let batch_ms = BATCH_MS.to_string();
    let rate = RATE.to_string();
    let output = output.display().to_string();
    let mut args = vec![
        "demo",
        "--quiet",
        "--batch-ms",
        &batch_ms,
        "--rate",
        &rate,
        "--checkpoint",
        checkpoint,
        "--output",
        &output,
    ];
    args.extend(extra);
    sluice_tests::sluice(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice demo")
}

/// A small deterministic generator for the kill instants (seeded).
fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

fn batch_files(dir: &Path) -> BTreeMap<u64, String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let t = name.strip_prefix("batch-")?.parse().ok()?;
                    Some((t, std::fs::read_to_string(e.path()).ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn oracle_file(zero: u64, t: u64) -> String {
    let offset_at = |t: u64| (t - zero) * RATE / 1000;
    let (from, to) = (offset_at(t - BATCH_MS), offset_at(t));
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut touched = std::collections::BTreeSet::new();
    for n in 0..to {
        for w in sluice_cli::demo::demo_line(n).split(' ') {
            *counts.entry(w.to_string()).or_default() += 1;
            if n >= from {
                touched.insert(w.to_string());
            }
        }
    }
    touched
        .iter()
        .map(|w| format!("{w} {}\n", counts[w]))
        .collect()
}

/// Kills the demo `kills` times at seeded instants, lets a last run stop gracefully, and
/// checks every batch file against the oracle.
fn kill_and_check(checkpoint: &str, out: &Path, env: &[(String, String)], kills: usize, seed: u64) {
    let mut seed = seed;
    for _ in 0..kills {
        let mut child = demo_at(checkpoint, out, &[], env);
        let wait = Duration::from_millis(300 + next(&mut seed) % 1200);
        std::thread::sleep(wait);
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("the demo exited early ({status}): {err}");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    finish_and_check(checkpoint, out, env);
}

/// A last run that stops gracefully, then every batch file against the oracle.
fn finish_and_check(checkpoint: &str, out: &Path, env: &[(String, String)]) {
    let child = demo_at(checkpoint, out, &["--duration", "1.5"], env);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "final run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let files = batch_files(out);
    assert!(files.len() >= 10, "only {} batches written", files.len());
    let times: Vec<u64> = files.keys().copied().collect();
    let zero = times[0] - BATCH_MS;
    // No batch lost: every batch time from the first to the last has its file.
    for w in times.windows(2) {
        assert_eq!(
            w[1] - w[0],
            BATCH_MS,
            "a batch is missing between {} and {}",
            w[0],
            w[1]
        );
    }
    // Nothing repeated or wrong: each file is exactly what the input alone implies.
    for (t, text) in &files {
        assert_eq!(text, &oracle_file(zero, *t), "batch {t} (zero {zero})");
    }
}

#[test]
fn sigkill_at_random_instants_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, out) = (dir.path().join("ckpt"), dir.path().join("out"));
    kill_and_check(ckpt.to_str().unwrap(), &out, &[], 5, 0x5eed);
}

#[test]
fn the_same_with_the_checkpoint_location_on_s3() {
    let server = sluice_testkit::MotoServer::start().unwrap();
    server.create_bucket("sluice-demo").unwrap();
    let env = sluice_testkit::s3_env(&server, "sluice-demo");
    let dir = tempfile::tempdir().unwrap();
    kill_and_check(
        "s3://sluice-demo/jobs/demo",
        &dir.path().join("out"),
        &env,
        3,
        0xfeed,
    );
}

#[test]
fn a_crash_at_each_phase_of_a_batch_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, out) = (dir.path().join("ckpt"), dir.path().join("out"));
    let ckpt = ckpt.to_str().unwrap().to_owned();
    // (point, which passage of it): checkpoints come every 5 batches.
    for (point, n) in [
        ("driver-log-append", 4),
        ("after-batch-planned", 3),
        ("mid-sink", 4),
        ("mid-checkpoint", 2),
        ("mid-cleanup", 1),
    ] {
        assert!(sluice::failpoints::POINTS.contains(&point));
        let env = vec![("SLUICE_CRASH_AT".to_string(), format!("{point}:{n}"))];
        let child = demo_at(&ckpt, &out, &["--duration", "30"], &env);
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{point}: the driver did not crash: {stderr}"
        );
        assert!(
            stderr.contains(&format!("crash point {point} reached")),
            "{point}: {stderr}"
        );
    }
    finish_and_check(&ckpt, &out, &[]);
}

#[test]
fn the_same_with_the_checkpoint_location_on_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let location = format!("rocksdb://{}", dir.path().join("ckpt").display());
    kill_and_check(&location, &dir.path().join("out"), &[], 2, 0xbeef);
}

#[test]
#[ignore = "the sluice command, run as a child process by this file's tests"]
fn sluice_command() {
    sluice_tests::run_sluice_command()
}
