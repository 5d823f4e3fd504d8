//! Stateful network word count, as Spark's `StatefulNetworkWordCount`: the running count
//! of every word ever read from a TCP server, checkpointed so a killed run resumes.
//!
//! ```sh
//! nc -lk 9999                                                              # terminal 1
//! cargo run -p sluice --example stateful_wordcount -- 127.0.0.1 9999 /tmp/swc   # terminal 2
//! ```
//!
//! Kill it (`kill -9`) and start it again with the same checkpoint directory: the counts
//! come back, and with the receiver write-ahead log on (the default here) every line it
//! had stored is counted exactly once. `SLUICE_*` variables override the settings.

use std::time::Duration;

use sluice::prelude::*;

fn main() -> sluice::Result<()> {
    sluice::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "127.0.0.1".into());
    let port = match args.next() {
        None => 9999,
        Some(p) => p.parse::<u16>().map_err(|_| EngineError::Config {
            setting: "port".into(),
            reason: format!("{p:?} is not a port number"),
        })?,
    };
    let checkpoint = args
        .next()
        .unwrap_or_else(|| "stateful-wordcount-checkpoint".into());
    let conf = StreamingConf::new("stateful-wordcount", Duration::from_secs(1))
        .checkpoint(checkpoint)
        .checkpoint_interval(Duration::from_secs(5))
        .receiver_wal(true)
        .with_env()?;
    let ssc = StreamingContext::get_or_create(conf, move |ssc| {
        let totals = ssc
            .socket_text_stream(&host, port)?
            .flat_map_reduce_by_key(
                |l: &String, emit: &mut dyn FnMut(&str, u64)| {
                    l.split_whitespace().for_each(|w| emit(w, 1))
                },
                |a: &u64, b: &u64| a + b,
            )?
            .update_state_by_key("word-totals", |new: &[u64], total: Option<&u64>| {
                Some(total.copied().unwrap_or(0) + new.iter().sum::<u64>())
            })?;
        totals.print(20)
    })?;
    ssc.start()?;
    ssc.await_termination()
}
