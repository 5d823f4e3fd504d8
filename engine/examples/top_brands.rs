//! Top 3 brands per category over a sliding window: purchases `(category, brand)` are
//! counted per pair over the last 6 seconds, every 2 seconds (incrementally, with the
//! inverse reduce), then grouped by category and ranked.
//!
//! ```sh
//! cargo run -p sluice --example top_brands            # runs 10 s, then stops
//! cargo run -p sluice --example top_brands -- 30      # runs 30 s
//! ```
//!
//! The purchases come from the built-in deterministic generator (500 a second).

use std::time::Duration;

use sluice::prelude::*;

const CATALOG: [(&str, &[&str]); 3] = [
    ("phones", &["acme", "bolt", "corvid", "dyna", "ember"]),
    ("shoes", &["fleet", "gait", "hop", "inkle"]),
    (
        "tea",
        &["jade", "kettle", "leaf", "matcha", "nilgiri", "oolong"],
    ),
];

/// Purchase `n`: a category and a brand, skewed so that rankings are stable but not
/// trivial.
fn purchase(n: u64) -> (String, String) {
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let (category, brands) = CATALOG[((h >> 40) % CATALOG.len() as u64) as usize];
    // The square of a uniform number in [0, 1) favours the first brands.
    let u = ((h >> 8) & 0xFFFF) as f64 / 65536.0;
    let brand = brands[((u * u) * brands.len() as f64) as usize];
    (category.to_string(), brand.to_string())
}

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
        .unwrap_or(10);
    let ssc = StreamingContext::new(StreamingConf::new("top-brands", Duration::from_millis(500)))?;
    let purchases = ssc.generator_stream("purchases", 500, purchase)?;
    let top3 = purchases
        .map(|p: &(String, String)| (p.clone(), 1i64))?
        .reduce_by_key_and_window_inv(
            |a, b| a + b,
            |a, b| a - b,
            Duration::from_secs(6),
            Duration::from_secs(2),
            Some(|_, n| *n > 0),
        )?
        .map(|((category, brand), n)| (category.clone(), (brand.clone(), *n)))?
        .group_by_key()?
        .map(|(category, brands)| {
            let mut ranked = brands.clone();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            ranked.truncate(3);
            (category.clone(), ranked)
        })?;
    top3.foreach_batch(|b| {
        let mut rows = b.batch.to_vec();
        rows.sort();
        println!("--- {} ms: top 3 brands per category, last 6 s", b.time.0);
        for (category, ranked) in rows {
            let shown: Vec<String> = ranked.iter().map(|(b, n)| format!("{b} {n}")).collect();
            println!("{category:>8}: {}", shown.join(", "));
        }
        Ok(())
    })?;
    ssc.start()?;
    if ssc.await_termination_timeout(Some(Duration::from_secs(secs)))? {
        return Ok(());
    }
    ssc.stop(true)
}
