//! The reference job `sluice-chaos run` supervises, kills and damages: a stateful word
//! count plus windowed counts over two inputs — a directory of text files (replayable
//! source) and the broker (reliable receiver, receiver WAL on) — writing
//!
//! - per-batch word counts to PostgreSQL (exactly-once transactional sink),
//! - the cumulative counts each batch updated to `OUT/state/state-<ms>/` (exactly-once
//!   file sink),
//! - windowed counts (inverse reduce) to `OUT/window/window-<ms>/`.
//!
//! With `--kafka BROKERS` a third input is the `chaos-in` topic, read with the direct
//! source (offset ranges in the driver log and checkpoints), and the per-batch counts
//! also go to the `chaos-out` topic through the exactly-once Kafka sink (key: the word,
//! value: `BATCH_MS COUNT`).
//!
//! It runs on a [`FaultyFs`] and arms the disk faults the harness drops into its
//! `faults/` directory while it runs; it prints `ready` and one line per completed
//! batch on stdout for the harness.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sluice::prelude::*;
use sluice::sinks::{KafkaSink, PostgresSink};
use sluice::{KafkaRecord, KafkaSource};
use sluice_wal::fs::{Fault, FaultyFs, StdFs};

use crate::broker::BrokerReceiver;

/// The window of the windowed counts, in batches.
pub const WINDOW_BATCHES: u64 = 4;
/// Its slide, in batches.
pub const SLIDE_BATCHES: u64 = 2;

/// The driver's settings (all passed on the command line by the harness).
#[derive(Debug, Clone, clap::Args)]
pub struct DriverOptions {
    /// The run's work directory (input/, out/, faults/).
    #[arg(long)]
    pub work: PathBuf,
    /// The checkpoint location.
    #[arg(long)]
    pub checkpoint: String,
    /// The batch interval in ms.
    #[arg(long)]
    pub batch_ms: u64,
    /// The broker's HOST:PORT.
    #[arg(long)]
    pub broker: String,
    /// The PostgreSQL URL.
    #[arg(long)]
    pub pg: String,
    /// The table of per-batch counts.
    #[arg(long)]
    pub table: String,
    /// Kafka's bootstrap servers: read [`KAFKA_INPUT`] too, and write the per-batch
    /// counts to [`KAFKA_OUTPUT`] exactly once.
    #[arg(long)]
    pub kafka: Option<String>,
}

/// The topic the harness writes lines to (with `--kafka`).
pub const KAFKA_INPUT: &str = "chaos-in";
/// The topic the job writes its per-batch counts to (with `--kafka`).
pub const KAFKA_OUTPUT: &str = "chaos-out";

/// A disk fault as the harness writes it into `faults/NAME.fault`: `fsync-fail N`,
/// `torn-write N KEEP` or `enospc BYTES`.
pub fn parse_fault(text: &str) -> Result<Fault, String> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let num = |i: usize| -> Result<u64, String> {
        parts
            .get(i)
            .ok_or_else(|| format!("fault {text:?}: missing argument {i}"))?
            .parse()
            .map_err(|e| format!("fault {text:?}: argument {i}: {e}"))
    };
    match parts.first().copied() {
        Some("fsync-fail") => Ok(Fault::FailSync { nth: num(1)? }),
        Some("torn-write") => Ok(Fault::TornWrite {
            nth: num(1)?,
            keep: num(2)? as usize,
        }),
        Some("enospc") => Ok(Fault::DiskFull { bytes: num(1)? }),
        _ => Err(format!(
            "fault {text:?}: expected fsync-fail N, torn-write N KEEP or enospc BYTES"
        )),
    }
}

/// Arms every fault file that appears in `dir` (each one once: it is renamed first).
fn watch_faults(dir: PathBuf, fs: FaultyFs) {
    loop {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.ends_with(".fault") {
                    continue;
                }
                let taken = dir.join(format!(".{name}.taken"));
                if std::fs::rename(e.path(), &taken).is_err() {
                    continue;
                }
                match std::fs::read_to_string(&taken)
                    .map_err(|e| e.to_string())
                    .and_then(|t| parse_fault(&t))
                {
                    Ok(f) => {
                        eprintln!("sluice-chaos driver: arming {f:?}");
                        fs.inject(f);
                    }
                    Err(e) => eprintln!("sluice-chaos driver: ignoring {name}: {e}"),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Progress;

impl StreamingListener for Progress {
    fn on_batch_completed(&self, info: &BatchInfo) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "batch {} {}", info.time.0, info.records);
        let _ = out.flush();
    }
}

fn out_prefix(work: &Path, kind: &str) -> String {
    work.join("out").join(kind).join(kind).display().to_string()
}

/// Runs the reference job until SIGTERM (graceful stop) or death.
pub fn run(o: DriverOptions) -> Result<(), String> {
    let fs = FaultyFs::new(Arc::new(StdFs));
    if !sluice_wal::fs::install_default_fs(Arc::new(fs.clone())) {
        return Err("the default file system was already chosen".into());
    }
    let faults = o.work.join("faults");
    std::fs::create_dir_all(&faults).map_err(|e| format!("{}: {e}", faults.display()))?;
    std::thread::Builder::new()
        .name("chaos-faults".into())
        .spawn(move || watch_faults(faults, fs))
        .map_err(|e| e.to_string())?;

    let batch = Duration::from_millis(o.batch_ms);
    let conf = StreamingConf::new("sluice-chaos", batch)
        .checkpoint(o.checkpoint.clone())
        .checkpoint_interval(batch * 4)
        .receiver_wal(true)
        .with_env()
        .map_err(|e| e.to_string())?;
    let oc = o.clone();
    let ssc = StreamingContext::get_or_create(conf, move |ssc| {
        let files = ssc.text_file_stream(oc.work.join("input"))?;
        let received = ssc.receiver_stream(BrokerReceiver {
            addr: oc.broker.clone(),
        })?;
        let mut lines = files.union(&received)?;
        if let Some(brokers) = &oc.kafka {
            let kafka = ssc
                .kafka_direct_stream(KafkaSource::new(brokers.clone()).topics([KAFKA_INPUT]))?
                .map(|r: &KafkaRecord| {
                    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
                })?;
            lines = lines.union(&kafka)?;
        }
        let words = lines
            .flat_map(|l: &String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())?
            .map(|w: &String| (w.clone(), 1u64))?;

        let deltas = words.reduce_by_key(|a, b| a + b)?;
        let sink = PostgresSink::new(oc.pg.clone(), format!("{}-deltas", oc.table))
            .marker_table(format!("{}_markers", oc.table))
            .statement(format!(
                "INSERT INTO {}(batch_ms, word, n) VALUES ($1, $2, $3)",
                oc.table
            ));
        let per_batch = deltas.transform(|b: &Batch<(String, u64)>, t| {
            Ok(b.iter().map(|(w, n)| (t.0, w.clone(), *n)).collect())
        })?;
        per_batch.save_to_postgres(sink, |(t, w, n): &(u64, String, u64)| {
            vec![(*t).into(), w.into(), (*n).into()]
        })?;
        if let Some(brokers) = &oc.kafka {
            let sink = KafkaSink::new(brokers.clone(), KAFKA_OUTPUT, oc.table.clone());
            per_batch.save_to_kafka(sink, |(t, w, n): &(u64, String, u64)| {
                (w.clone(), format!("{t} {n}"))
            })?;
        }

        let state =
            words.update_state_by_key("chaos-counts", |vs: &[u64], s: Option<&(u64, bool)>| {
                let total = s.map_or(0, |s| s.0) + vs.iter().sum::<u64>();
                Some((total, !vs.is_empty()))
            })?;
        state
            .filter(|(_, (_, touched)): &(String, (u64, bool))| *touched)?
            .map(|(w, (c, _)): &(String, (u64, bool))| format!("{w} {c}"))?
            .save_as_text_files(out_prefix(&oc.work, "state"), "")?;

        words
            .reduce_by_key_and_window_inv(
                |a, b| a + b,
                |a, b| a - b,
                batch * WINDOW_BATCHES as u32,
                batch * SLIDE_BATCHES as u32,
                Some(|_: &String, n: &u64| *n > 0),
            )?
            .map(|(w, n): &(String, u64)| format!("{w} {n}"))?
            .save_as_text_files(out_prefix(&oc.work, "window"), "")?;
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    ssc.add_listener(Arc::new(Progress));
    ssc.start().map_err(|e| e.to_string())?;
    println!("ready {}", std::process::id());
    let _ = std::io::stdout().flush();
    let stop = sluice_cli::signals::stop_requested();
    loop {
        if ssc
            .await_termination_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?
        {
            return Ok(());
        }
        if stop.load(Ordering::SeqCst) {
            eprintln!("sluice-chaos driver: stopping gracefully");
            return ssc.stop(true).map_err(|e| e.to_string());
        }
    }
}
