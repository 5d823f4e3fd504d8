//! Windowed word counts with the inverse reduce, as Spark's `reduceByKeyAndWindow` with
//! an `invReduceFunc`: every second, the counts of the last 10 seconds, computed from
//! the previous window's counts plus the entering batch minus the leaving one. Beside
//! it, the same window computed afresh, to show that both agree.
//!
//! ```sh
//! cargo run -p sluice --example windowed_counts            # runs 12 s, then stops
//! cargo run -p sluice --example windowed_counts -- 30      # runs 30 s
//! ```
//!
//! The input is the built-in deterministic generator (2000 words a second).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice::prelude::*;

const WORDS: [&str; 6] = ["apple", "banana", "cherry", "damson", "elder", "fig"];

fn main() -> sluice::Result<()> {
    let secs: u64 = std::env::args()
        .nth(1)
        .map(|s| {
            s.parse().map_err(|_| EngineError::Config {
                setting: "seconds".into(),
                reason: format!("{s:?} is not a number of seconds"),
            })
        })
        .transpose()?
        .unwrap_or(12);
    let (window, slide) = (Duration::from_secs(10), Duration::from_secs(1));
    let ssc = StreamingContext::new(StreamingConf::new(
        "windowed-counts",
        Duration::from_millis(500),
    ))?;
    // A deterministic word stream: word n is chosen by a multiplicative hash of n.
    let words = ssc.generator_stream("words", 2000, |n| {
        WORDS[((n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % WORDS.len() as u64) as usize]
            .to_string()
    })?;
    let pairs = words.map(|w: &String| (w.clone(), 1i64))?;
    let incremental = pairs.reduce_by_key_and_window_inv(
        |a, b| a + b,
        |a, b| a - b,
        window,
        slide,
        Some(|_, c| *c > 0),
    )?;
    let afresh = pairs.reduce_by_key_and_window(|a, b| a + b, window, slide)?;

    let last: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let keep = last.clone();
    incremental.foreach_batch(move |b| {
        let mut counts = b.batch.to_vec();
        counts.sort();
        println!(
            "{} ms  incremental: {:?}  total {}",
            b.time.0,
            counts,
            counts.iter().map(|(_, c)| c).sum::<i64>()
        );
        *keep.lock().unwrap_or_else(|e| e.into_inner()) = counts;
        Ok(())
    })?;
    let seen = last.clone();
    afresh.foreach_batch(move |b| {
        let mut counts = b.batch.to_vec();
        counts.sort();
        let same = *seen.lock().unwrap_or_else(|e| e.into_inner()) == counts;
        println!(
            "{} ms  afresh:      {}",
            b.time.0,
            if same { "the same" } else { "DIFFERENT" }
        );
        if same {
            Ok(())
        } else {
            Err(EngineError::User(format!(
                "the windows disagree at {}",
                b.time
            )))
        }
    })?;

    ssc.start()?;
    if ssc.await_termination_timeout(Some(Duration::from_secs(secs)))? {
        return Ok(());
    }
    ssc.stop(true)
}
