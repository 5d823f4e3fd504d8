//! `sluice bench wordcount`: word count over a TCP text source, as Spark's
//! `socketTextStream` benchmark does; one JSON line per batch, then a summary.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::demo::IdleWatch;
use sluice::prelude::*;
use sluice::{EngineError, Result};

/// The bench's options.
#[derive(Debug, Clone)]
pub struct WordcountOptions {
    pub host: String,
    pub port: u16,
    pub batch_ms: u64,
    pub stateful: bool,
    pub wal: bool,
    pub checkpoint: Option<String>,
    /// Stop once no input arrived for this long (after the first input).
    pub idle: Duration,
    /// Serve the web UI and `/metrics` here while it runs (to measure their cost).
    pub ui: Option<String>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Peak resident memory of this process (VmHWM), in MB.
pub(crate) fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// When the batches holding input ran: from the submission of the first one to the
/// completion of the last one.
#[derive(Debug, Default)]
struct InputSpan {
    first_submitted: std::sync::Mutex<Option<Instant>>,
    last_completed: std::sync::Mutex<Option<Instant>>,
}

impl StreamingListener for InputSpan {
    fn on_batch_submitted(&self, info: &BatchInfo) {
        if info.records > 0 {
            let mut f = self
                .first_submitted
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            f.get_or_insert_with(Instant::now);
        }
    }

    fn on_batch_completed(&self, info: &BatchInfo) {
        if info.records > 0 {
            *self
                .last_completed
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }
}

/// Runs the bench until the source has been idle for `opts.idle`.
pub fn run(opts: WordcountOptions) -> Result<()> {
    // `SLUICE_*` variables tune the rest (`SLUICE_RECEIVER_MAX_BUFFERED`, …).
    let mut conf = StreamingConf::new("bench-wordcount", Duration::from_millis(opts.batch_ms))
        .receiver_wal(opts.wal)
        .with_env()?;
    if let Some(c) = &opts.checkpoint {
        conf = conf.checkpoint(c.clone());
    }
    if let Some(addr) = &opts.ui {
        conf = conf.ui(addr.clone());
    }
    if (opts.stateful || opts.wal) && conf.checkpoint.is_none() {
        return Err(EngineError::Config {
            setting: "--checkpoint".into(),
            reason: "--stateful and --wal need a checkpoint location".into(),
        });
    }
    let words_total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let wt = words_total.clone();
    let o = opts.clone();
    let stateful = opts.stateful;
    let build = move |ssc: &StreamingContext| -> Result<()> {
        let lines = ssc.socket_text_stream(&o.host, o.port)?;
        // Each block's words are counted in place (borrowed `&str` keys, one `String`
        // per distinct word per block), then shuffled and combined: the same counts as
        // `flat_map(split).map((w, 1)).reduce_by_key(+)`.
        let pairs = lines.flat_map_reduce_by_key(
            |l: &String, emit: &mut dyn FnMut(&str, u64)| {
                for w in l.split_whitespace() {
                    emit(w, 1);
                }
            },
            |a, b| a + b,
        )?;
        let counts = if o.stateful {
            pairs.update_state_by_key("bench-word-counts", |vs: &[u64], s: Option<&u64>| {
                Some(s.copied().unwrap_or(0) + vs.iter().sum::<u64>())
            })?
        } else {
            pairs
        };
        let input = lines.count()?;
        counts.transform_with(&input, |c, n, _| {
            let total: u64 = c.iter().map(|(_, v)| v).sum();
            Ok(vec![(n.iter().sum::<u64>(), c.len() as u64, total)])
        })?
        .foreach_batch(move |b| {
            for (records, keys, total) in b.batch.iter() {
                if stateful {
                    wt.store(*total, Ordering::SeqCst); // cumulative already
                } else {
                    wt.fetch_add(*total, Ordering::SeqCst);
                }
                println!(
                    "{{\"batch_time_ms\":{},\"done_ms\":{},\"records\":{records},\"keys\":{keys},\"total\":{total}}}",
                    b.time.0,
                    now_ms()
                );
            }
            Ok(())
        })
    };
    let ssc = match &conf.checkpoint {
        Some(_) => StreamingContext::get_or_create(conf, build)?,
        None => {
            let ssc = StreamingContext::new(conf)?;
            build(&ssc)?;
            ssc
        }
    };
    let idle = Arc::new(IdleWatch::default());
    ssc.add_listener(idle.clone());
    let span = Arc::new(InputSpan::default());
    ssc.add_listener(span.clone());
    ssc.start()?;
    let t0 = Instant::now();
    loop {
        if ssc.await_termination_timeout(Some(Duration::from_millis(50)))? {
            break;
        }
        let idle_for = idle.idle_for(t0);
        if idle_for < t0.elapsed() && idle_for >= opts.idle {
            ssc.stop(true)?;
            break;
        }
    }
    let first = *span
        .first_submitted
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let last = *span
        .last_completed
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // Busy: from the first batch with input submitted to the last one completed.
    // Wall: from the start (the receiver connects, the feeder starts sending), which
    // adds the wait for the first batch time.
    let (busy, wall) = match (first, last) {
        (Some(f), Some(l)) => (
            l.saturating_duration_since(f).as_secs_f64(),
            l.saturating_duration_since(t0).as_secs_f64(),
        ),
        _ => (0.0, 0.0),
    };
    let words = words_total.load(Ordering::SeqCst);
    eprintln!(
        "{{\"bench\":\"wordcount\",\"stateful\":{},\"wal\":{},\"batch_ms\":{},\"seconds\":{busy:.2},\"wall_seconds\":{wall:.2},\"words\":{words},\"words_per_s\":{:.0},\"words_per_s_wall\":{:.0},\"peak_rss_mb\":{:.0}}}",
        opts.stateful,
        opts.wal,
        opts.batch_ms,
        words as f64 / busy.max(1e-9),
        words as f64 / wall.max(1e-9),
        peak_rss_mb(),
    );
    Ok(())
}
