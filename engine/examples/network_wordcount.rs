//! Network word count, as Spark's `NetworkWordCount`: counts the words of each one-second
//! batch of lines read from a TCP server.
//!
//! ```sh
//! nc -lk 9999                                                   # terminal 1: type lines
//! cargo run -p sluice --example network_wordcount -- 127.0.0.1 9999   # terminal 2
//! ```
//!
//! The receiver reconnects (with backoff) if `nc` is restarted; `SLUICE_*` variables
//! override the settings (e.g. `SLUICE_RECEIVER_MAX_RATE=1000`); Ctrl-C stops it.

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
    let conf = StreamingConf::new("network-wordcount", Duration::from_secs(1)).with_env()?;
    let ssc = StreamingContext::new(conf)?;
    let counts = ssc
        .socket_text_stream(&host, port)?
        .flat_map(|l: &String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())?
        .map(|w: &String| (w.clone(), 1u64))?
        .reduce_by_key(|a: &u64, b: &u64| a + b)?;
    counts.print(20)?;
    ssc.start()?;
    ssc.await_termination()
}
