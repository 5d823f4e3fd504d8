//! Named crash points for kill-and-recover tests, compiled in only with the
//! `failpoints` cargo feature (the end-to-end tests turn it on; a job's build leaves it
//! off, and every point is then an empty function). With the feature, and
//! `SLUICE_CRASH_AT=NAME:N` in the environment, the N-th time the driver passes point
//! `NAME` it aborts on the spot (no destructor runs, nothing is flushed: as a SIGKILL
//! would leave it); without the variable every point is a single relaxed load.

#[cfg(feature = "failpoints")]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "failpoints")]
use std::sync::OnceLock;

/// The points, in the order a batch passes them.
pub const POINTS: [&str; 6] = [
    "driver-log-append",
    "after-batch-planned",
    "mid-sink",
    // The Kafka sink: after its transaction committed, before BatchCompleted.
    "after-sink-commit",
    "mid-checkpoint",
    "mid-cleanup",
];

#[cfg(feature = "failpoints")]
fn armed() -> Option<&'static (String, u64)> {
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = std::env::var("SLUICE_CRASH_AT").ok()?;
            let (name, n) = v.split_once(':').unwrap_or((&v, "1"));
            Some((name.to_owned(), n.parse().unwrap_or(1)))
        })
        .as_ref()
}

/// Does nothing: crash points are compiled in with the `failpoints` feature only.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn point(_name: &str) {}

/// Aborts the process if `SLUICE_CRASH_AT` names this point and its count is reached.
#[cfg(feature = "failpoints")]
pub fn point(name: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    if let Some((armed, n)) = armed() {
        if armed == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("sluice: crash point {name} reached (SLUICE_CRASH_AT), aborting");
            std::process::abort();
        }
    }
}
