//! File stream: counts the lines and words of the files moved into a directory, batch
//! by batch, as Spark's `HdfsWordCount` does with `textFileStream`.
//!
//! ```sh
//! mkdir -p /tmp/in
//! cargo run -p sluice --example file_stream -- /tmp/in
//! # elsewhere: write a file, then move it in whole (files are read once, when they appear)
//! echo "a b a" > /tmp/x.tmp && mv /tmp/x.tmp /tmp/in/x.txt
//! ```
//!
//! Hidden files and `*.tmp` / `*._COPYING_` files in the directory are ignored.
//! With a second argument `SECS`, stops gracefully after that many seconds.

use std::time::Duration;

use sluice::prelude::*;

fn main() -> sluice::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| ".".into());
    let run_for = args.next().and_then(|s| s.parse::<u64>().ok());
    let conf = StreamingConf::new("file-stream", Duration::from_secs(1)).with_env()?;
    let ssc = StreamingContext::new(conf)?;
    let lines = ssc.text_file_stream(&dir)?;
    lines.foreach_batch(|b| {
        if !b.batch.is_empty() {
            let words: usize = b.batch.iter().map(|l| l.split_whitespace().count()).sum();
            println!(
                "batch {}: {} files, {} lines, {} words",
                b.batch_id(),
                b.batch.partitions().len(),
                b.batch.len(),
                words
            );
        }
        Ok(())
    })?;
    lines
        .flat_map(|l: &String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())?
        .map(|w: &String| (w.clone(), 1u64))?
        .reduce_by_key(|a: &u64, b: &u64| a + b)?
        .print(10)?;
    ssc.start()?;
    match run_for {
        Some(secs) => {
            ssc.await_termination_timeout(Some(Duration::from_secs(secs)))?;
            ssc.stop(true)
        }
        None => ssc.await_termination(),
    }
}
