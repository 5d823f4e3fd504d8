//! SIGTERM/SIGINT as a flag: the first asks for a graceful stop.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

/// A flag set when the process receives SIGTERM or SIGINT (registered once).
pub fn stop_requested() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            if let Err(e) = signal_hook::flag::register(sig, flag.clone()) {
                tracing::warn!("cannot watch signal {sig}: {e}");
            }
        }
        flag
    })
    .clone()
}
