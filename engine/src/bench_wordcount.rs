//! `sluice bench wordcount`: word count over a TCP text source, as Spark's
//! `socketTextStream` benchmark does; one JSON line per batch, then a summary.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::demo::IdleWatch;
use crate::prelude::*;
use crate::{EngineError, Result};

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
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Peak resident memory of this process (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
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

/// Runs the bench until the source has been idle for `opts.idle`.
pub fn run(opts: WordcountOptions) -> Result<()> {
    let mut conf = StreamingConf::new("bench-wordcount", Duration::from_millis(opts.batch_ms))
        .receiver_wal(opts.wal);
    if let Some(c) = &opts.checkpoint {
        conf = conf.checkpoint(c.clone());
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
        let pairs = lines
            .flat_map(|l: &String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())?
            .map(|w: &String| (w.clone(), 1u64))?;
        let counts = if o.stateful {
            pairs.update_state_by_key("bench-word-counts", |vs: &[u64], s: Option<&u64>| {
                Some(s.copied().unwrap_or(0) + vs.iter().sum::<u64>())
            })?
        } else {
            pairs.reduce_by_key(|a, b| a + b)?
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
    ssc.start()?;
    let t0 = Instant::now();
    let mut first_input: Option<Instant> = None;
    loop {
        if ssc.await_termination_timeout(Some(Duration::from_millis(50)))? {
            break;
        }
        let idle_for = idle.idle_for(t0);
        if first_input.is_none() && idle_for < t0.elapsed() {
            first_input = Some(Instant::now());
        }
        if first_input.is_some() && idle_for >= opts.idle {
            ssc.stop(true)?;
            break;
        }
    }
    let busy = first_input.map_or(0.0, |f| f.elapsed().as_secs_f64() - opts.idle.as_secs_f64());
    let words = words_total.load(Ordering::SeqCst);
    eprintln!(
        "{{\"bench\":\"wordcount\",\"stateful\":{},\"wal\":{},\"batch_ms\":{},\"seconds\":{busy:.2},\"words\":{words},\"words_per_s\":{:.0},\"peak_rss_mb\":{:.0}}}",
        opts.stateful,
        opts.wal,
        opts.batch_ms,
        words as f64 / busy.max(1e-9),
        peak_rss_mb(),
    );
    Ok(())
}
