//! The restart policy of `sluice supervise`: pure decisions on a driver's exit.

use std::time::Duration;

/// How the driver process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exit status.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
}

/// What the supervisor does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Exit with this status (the driver finished, or was stopped on request).
    Exit(i32),
    /// Start the driver again after this delay.
    Restart { after: Duration, cause: String },
    /// Too many restarts: exit with this status and say why.
    GiveUp { status: i32, reason: String },
}

/// Restart limits and backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// At most this many restarts within `within` (then give up).
    pub max_restarts: u32,
    /// The window `max_restarts` counts in.
    pub within: Duration,
    /// The first restart's delay; doubles with every restart in the window.
    pub backoff_min: Duration,
    /// The longest delay.
    pub backoff_max: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_restarts: 10,
            within: Duration::from_secs(600),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
        }
    }
}

fn status_of(exit: Exit) -> i32 {
    match exit {
        Exit::Code(c) => c,
        Exit::Signal(s) => 128 + s,
    }
}

impl Policy {
    /// Decides on a driver's exit. `restarts_ms` are the times (ms, any epoch) of the
    /// restarts so far, `now_ms` the time now, `stopping` whether the supervisor was
    /// asked to stop (SIGTERM/SIGINT forwarded to the driver).
    pub fn decide(&self, exit: Exit, restarts_ms: &[u64], now_ms: u64, stopping: bool) -> Decision {
        let status = status_of(exit);
        if stopping || exit == Exit::Code(0) {
            return Decision::Exit(status);
        }
        let window = self.within.as_millis() as u64;
        let recent = restarts_ms
            .iter()
            .filter(|t| now_ms.saturating_sub(**t) < window)
            .count() as u32;
        if recent >= self.max_restarts {
            return Decision::GiveUp {
                status,
                reason: format!(
                    "the driver died {} times within {:?} (limit {}); giving up",
                    recent + 1,
                    self.within,
                    self.max_restarts
                ),
            };
        }
        let factor = 1u32.checked_shl(recent.min(20)).unwrap_or(u32::MAX);
        let after = self
            .backoff_min
            .saturating_mul(factor)
            .min(self.backoff_max);
        let cause = match exit {
            Exit::Code(c) => format!("exited with status {c}"),
            Exit::Signal(s) => format!("killed by signal {s}"),
        };
        Decision::Restart { after, cause }
    }
}

/// Parses a backoff range `MIN..MAX` of durations such as `200ms..30s`.
pub fn parse_backoff(
    s: &str,
    parse: impl Fn(&str) -> Result<Duration, String>,
) -> Result<(Duration, Duration), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?}: a backoff is MIN..MAX, as in 200ms..30s"))?;
    let (a, b) = (parse(a)?, parse(b)?);
    if a > b {
        return Err(format!("{s:?}: MIN is larger than MAX"));
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_and_requested_stops_exit_with_the_drivers_status() {
        let p = Policy::default();
        assert_eq!(p.decide(Exit::Code(0), &[], 0, false), Decision::Exit(0));
        assert_eq!(p.decide(Exit::Code(3), &[], 0, true), Decision::Exit(3));
        assert_eq!(
            p.decide(Exit::Signal(15), &[], 0, true),
            Decision::Exit(143)
        );
    }

    #[test]
    fn crashes_restart_with_doubling_backoff_up_to_the_cap() {
        let p = Policy {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(350),
            ..Policy::default()
        };
        let after = |n: usize| match p.decide(Exit::Signal(9), &vec![1000; n], 1000, false) {
            Decision::Restart { after, cause } => {
                assert!(cause.contains("signal 9"));
                after
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(after(0), Duration::from_millis(100));
        assert_eq!(after(1), Duration::from_millis(200));
        assert_eq!(after(2), Duration::from_millis(350));
    }

    #[test]
    fn too_many_restarts_in_the_window_give_up_old_ones_do_not_count() {
        let p = Policy {
            max_restarts: 3,
            within: Duration::from_secs(60),
            ..Policy::default()
        };
        let recent = [100_000, 110_000, 120_000];
        assert!(matches!(
            p.decide(Exit::Code(1), &recent, 130_000, false),
            Decision::GiveUp { status: 1, .. }
        ));
        // An hour later the same history is old news.
        assert!(matches!(
            p.decide(Exit::Code(1), &recent, 3_700_000, false),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn backoff_ranges_parse() {
        let ms = |s: &str| {
            s.trim_end_matches("ms")
                .parse()
                .map(Duration::from_millis)
                .map_err(|e| format!("{e}"))
        };
        assert_eq!(
            parse_backoff("100ms..500ms", ms).unwrap(),
            (Duration::from_millis(100), Duration::from_millis(500))
        );
        assert!(parse_backoff("500ms..100ms", ms).is_err());
        assert!(parse_backoff("100ms", ms).is_err());
    }
}
