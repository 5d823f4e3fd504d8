//! Rate control: a token-bucket [`RateLimiter`] applied in
//! [`ReceiverContext::store`](crate::ReceiverContext::store), and backpressure, a
//! [`PidRateEstimator`] (Spark's `PIDRateEstimator`) fed by batch completions that
//! lowers or raises the limiter's rate to what the job actually processes. The Kafka
//! direct source (feature `kafka`) uses the same controller and reads its rate to size
//! each batch's offset ranges instead of throttling a receiver.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::observe::listener::{BatchInfo, StreamingListener};
use crate::{BatchTime, EngineError, Result};

/// The knobs of the PID rate estimator, with Spark's names and defaults
/// (`spark.streaming.backpressure.pid.*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PidConf {
    /// Weight of the current error (latest rate minus processing rate). Default 1.0.
    pub proportional: f64,
    /// Weight of the accumulated error, estimated from the scheduling delay. Default 0.2.
    pub integral: f64,
    /// Weight of the change of the error. Default 0.0 (Spark's `derived`).
    pub derivative: f64,
    /// The estimator never goes below this many records per second. Default 100.
    pub min_rate: f64,
}

impl Default for PidConf {
    fn default() -> Self {
        PidConf {
            proportional: 1.0,
            integral: 0.2,
            derivative: 0.0,
            min_rate: 100.0,
        }
    }
}

impl PidConf {
    /// Checks the knobs: the weights are finite and not negative, the minimum rate
    /// positive.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("backpressure_pid.proportional", self.proportional),
            ("backpressure_pid.integral", self.integral),
            ("backpressure_pid.derivative", self.derivative),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(EngineError::Config {
                    setting: name.into(),
                    reason: format!("{v} must be a finite number >= 0"),
                });
            }
        }
        if !self.min_rate.is_finite() || self.min_rate <= 0.0 {
            return Err(EngineError::Config {
                setting: "backpressure_pid.min_rate".into(),
                reason: format!("{} must be > 0 records/s", self.min_rate),
            });
        }
        Ok(())
    }
}

/// Spark's `PIDRateEstimator`: from each completed batch (its completion time, the
/// records it held, how long it took and how late it started) it computes the rate,
/// in records per second, the input should be limited to so that batches finish
/// within the batch interval.
///
/// With `error = latest_rate - processing_rate`,
/// `historical_error = scheduling_delay * processing_rate / batch_interval` (the
/// records queued behind) and `d_error = (error - latest_error) / seconds since the
/// last update`, the new rate is
/// `max(latest_rate - P * error - I * historical_error - D * d_error, min_rate)`.
/// The first usable batch only seeds the estimate (returns `None`); batches with no
/// records or no measurable processing time, and times that do not advance, are
/// ignored.
#[derive(Debug, Clone)]
pub struct PidRateEstimator {
    batch_interval_ms: f64,
    conf: PidConf,
    first_run: bool,
    latest_time_ms: u64,
    latest_rate: f64,
    latest_error: f64,
}

impl PidRateEstimator {
    /// An estimator for a job with the given batch interval.
    pub fn new(batch_interval: Duration, conf: PidConf) -> Result<Self> {
        conf.validate()?;
        if batch_interval.is_zero() {
            return Err(EngineError::Config {
                setting: "batch_interval".into(),
                reason: "must be positive for the rate estimator".into(),
            });
        }
        Ok(PidRateEstimator {
            batch_interval_ms: batch_interval.as_secs_f64() * 1000.0,
            conf,
            first_run: true,
            latest_time_ms: 0,
            latest_rate: -1.0,
            latest_error: -1.0,
        })
    }

    /// Feeds one completed batch; returns the new rate (records/s) if there is one.
    /// `time_ms` is when the batch completed, the delays in milliseconds.
    pub fn compute(
        &mut self,
        time_ms: u64,
        records: u64,
        processing_delay_ms: u64,
        scheduling_delay_ms: u64,
    ) -> Option<f64> {
        if !(time_ms > self.latest_time_ms && records > 0 && processing_delay_ms > 0) {
            return None;
        }
        let since_update_s = if self.first_run {
            // Unused on the first run (it only seeds the estimate).
            1.0
        } else {
            (time_ms - self.latest_time_ms) as f64 / 1000.0
        };
        let processing_rate = records as f64 / processing_delay_ms as f64 * 1000.0;
        let error = self.latest_rate - processing_rate;
        let historical_error =
            scheduling_delay_ms as f64 * processing_rate / self.batch_interval_ms;
        let d_error = (error - self.latest_error) / since_update_s;
        let new_rate = (self.latest_rate
            - self.conf.proportional * error
            - self.conf.integral * historical_error
            - self.conf.derivative * d_error)
            .max(self.conf.min_rate);
        self.latest_time_ms = time_ms;
        if self.first_run {
            self.latest_rate = processing_rate;
            self.latest_error = 0.0;
            self.first_run = false;
            tracing::debug!(processing_rate, "rate estimator seeded");
            None
        } else {
            self.latest_rate = new_rate;
            self.latest_error = error;
            tracing::debug!(
                processing_rate,
                error,
                historical_error,
                new_rate,
                "rate estimate"
            );
            Some(new_rate)
        }
    }
}

/// A token bucket: at most `rate` records a second on average, in bursts of at most a
/// tenth of a second's worth (at least one record). Callers reserve tokens and sleep
/// the returned wait; a reservation may run into debt, which later callers pay off.
///
/// The effective rate is the lower of the configured maximum (`receiver_max_rate`)
/// and the backpressure estimate; with neither, `reserve` returns at once.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    max_rate: Option<u64>,
    /// Whether any limit applies (fast path without the lock).
    limited: AtomicBool,
    /// The effective rate in records/s (0: none), for status reports.
    effective: AtomicU64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    estimated: Option<f64>,
    rate: Option<f64>,
    tokens: f64,
    last: Option<Instant>,
}

impl RateLimiter {
    /// A limiter with a maximum rate (`None` or 0: unlimited) and an initial estimate
    /// (backpressure's initial rate).
    pub(crate) fn new(max_rate: Option<u64>, initial: Option<f64>) -> Self {
        let l = RateLimiter {
            max_rate: max_rate.filter(|&r| r > 0),
            limited: AtomicBool::new(false),
            effective: AtomicU64::new(0),
            bucket: Mutex::new(Bucket {
                estimated: initial.filter(|r| *r > 0.0),
                rate: None,
                tokens: 0.0,
                last: None,
            }),
        };
        l.recompute(&mut l.lock());
        l
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn capacity(rate: f64) -> f64 {
        (rate / 10.0).max(1.0)
    }

    fn recompute(&self, b: &mut Bucket) {
        let rate = match (self.max_rate.map(|m| m as f64), b.estimated) {
            (Some(m), Some(e)) => Some(m.min(e)),
            (m, e) => m.or(e),
        };
        if b.rate.is_none() {
            // A fresh limit starts with a full bucket.
            b.tokens = rate.map_or(0.0, Self::capacity);
        }
        b.rate = rate;
        if let Some(r) = rate {
            b.tokens = b.tokens.min(Self::capacity(r));
        }
        self.limited.store(rate.is_some(), Ordering::SeqCst);
        self.effective
            .store(rate.map_or(0, |r| r.round() as u64), Ordering::SeqCst);
    }

    /// Sets the backpressure estimate (records/s); the configured maximum still caps it.
    pub(crate) fn set_estimated(&self, rate: f64) {
        if rate.is_finite() && rate > 0.0 {
            let mut b = self.lock();
            b.estimated = Some(rate);
            self.recompute(&mut b);
        }
    }

    /// The effective rate limit in records/s, if any.
    pub(crate) fn rate(&self) -> Option<u64> {
        match self.effective.load(Ordering::SeqCst) {
            0 if !self.limited.load(Ordering::SeqCst) => None,
            r => Some(r),
        }
    }

    /// Takes `n` tokens at `now`; returns how long the caller must wait before it may
    /// go on (zero when the tokens were there).
    pub(crate) fn reserve_at(&self, n: u64, now: Instant) -> Duration {
        if !self.limited.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        let mut b = self.lock();
        let Some(rate) = b.rate else {
            return Duration::ZERO;
        };
        if let Some(last) = b.last {
            let add = now.saturating_duration_since(last).as_secs_f64() * rate;
            b.tokens = (b.tokens + add).min(Self::capacity(rate));
        }
        b.last = Some(now.max(b.last.unwrap_or(now)));
        b.tokens -= n as f64;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / rate)
        }
    }

    /// Takes `n` tokens now (see [`RateLimiter::reserve_at`]).
    pub(crate) fn reserve(&self, n: u64) -> Duration {
        if !self.limited.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        self.reserve_at(n, Instant::now())
    }
}

/// Backpressure for one input (a receiver, or the Kafka direct source): a listener
/// that feeds each completed batch's record count for this input (not the whole
/// batch's) into the estimator and sets the new rate on the input's limiter.
pub(crate) struct RateController {
    pub(crate) estimator: Mutex<PidRateEstimator>,
    pub(crate) limiter: Arc<RateLimiter>,
    /// Records this input allocated to each batch not yet completed.
    pub(crate) records: Arc<Mutex<BTreeMap<BatchTime, u64>>>,
    pub(crate) name: String,
}

impl std::fmt::Debug for RateController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateController")
            .field("input", &self.name)
            .finish()
    }
}

impl RateController {
    /// Feeds a completed batch that finished at `now_ms`.
    pub(crate) fn on_completed_at(&self, info: &BatchInfo, now_ms: u64) {
        let records = {
            let mut m = self.records.lock().unwrap_or_else(|e| e.into_inner());
            let n = m.remove(&info.time).unwrap_or(0);
            // Older entries belong to batches that will never complete (a failed run).
            *m = m.split_off(&info.time);
            n
        };
        let Some(processing) = info.processing_delay else {
            return;
        };
        let new = self
            .estimator
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .compute(
                now_ms,
                records,
                processing.as_millis() as u64,
                info.scheduling_delay.as_millis() as u64,
            );
        if let Some(rate) = new {
            self.limiter.set_estimated(rate);
            tracing::info!(input = %self.name, rate = rate.round(), effective = ?self.limiter.rate(),
                "backpressure: new input rate");
        }
    }
}

impl StreamingListener for RateController {
    fn on_batch_completed(&self, info: &BatchInfo) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.on_completed_at(info, now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est() -> PidRateEstimator {
        PidRateEstimator::new(Duration::from_secs(1), PidConf::default()).unwrap()
    }

    #[test]
    fn pid_first_batch_seeds_then_follows_the_formula() {
        let mut e = est();
        // 1000 records in 500 ms: processing rate 2000/s; the first batch only seeds.
        assert_eq!(e.compute(1_000, 1_000, 500, 0), None);
        // 1000 records in 1000 ms (rate 1000/s), 200 ms late:
        // error = 2000 - 1000 = 1000, historical = 200 * 1000 / 1000 = 200,
        // new = 2000 - 1.0 * 1000 - 0.2 * 200 - 0 = 960.
        let r = e.compute(2_000, 1_000, 1_000, 200).unwrap();
        assert!((r - 960.0).abs() < 1e-9, "{r}");
        // 10 records/s processed, 100 s of scheduling delay: far below the minimum.
        assert_eq!(e.compute(3_000, 10, 1_000, 100_000), Some(100.0));
    }

    #[test]
    fn pid_ignores_unusable_batches() {
        let mut e = est();
        assert_eq!(e.compute(1_000, 0, 500, 0), None, "no records");
        assert_eq!(e.compute(1_000, 100, 0, 0), None, "no processing time");
        assert_eq!(e.compute(1_000, 1_000, 500, 0), None, "seed");
        assert_eq!(
            e.compute(1_000, 1_000, 500, 0),
            None,
            "time does not advance"
        );
        assert_eq!(e.compute(900, 1_000, 500, 0), None, "time goes back");
        // Steady state: processing exactly at the latest rate, no delay: no change.
        let r = e.compute(2_000, 2_000, 1_000, 0).unwrap();
        assert!((r - 2000.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn pid_knobs_change_the_estimate() {
        let conf = PidConf {
            proportional: 0.5,
            integral: 0.0,
            derivative: 0.1,
            min_rate: 10.0,
        };
        let mut e = PidRateEstimator::new(Duration::from_millis(500), conf).unwrap();
        assert_eq!(e.compute(1_000, 1_000, 500, 0), None); // seeds 2000/s
                                                           // Rate 1000/s two seconds later: error 1000, d_error (1000 - 0) / 2 = 500,
                                                           // new = 2000 - 0.5 * 1000 - 0 - 0.1 * 500 = 1450.
        let r = e.compute(3_000, 1_000, 1_000, 400).unwrap();
        assert!((r - 1450.0).abs() < 1e-9, "{r}");
        assert!(PidRateEstimator::new(
            Duration::from_secs(1),
            PidConf {
                min_rate: 0.0,
                ..PidConf::default()
            }
        )
        .is_err());
        assert!(PidRateEstimator::new(
            Duration::from_secs(1),
            PidConf {
                integral: -1.0,
                ..PidConf::default()
            }
        )
        .is_err());
    }

    #[test]
    fn token_bucket_limits_and_refills() {
        let l = RateLimiter::new(Some(100), None);
        assert_eq!(l.rate(), Some(100));
        let t0 = Instant::now();
        // Burst: a tenth of a second's worth (10 records) is there at once.
        assert_eq!(l.reserve_at(10, t0), Duration::ZERO);
        // The 11th waits 10 ms, the 12th 20 ms (debt accumulates).
        assert_eq!(l.reserve_at(1, t0), Duration::from_millis(10));
        assert_eq!(l.reserve_at(1, t0), Duration::from_millis(20));
        // 120 ms later the debt of 2 is paid and the bucket is full again (capped).
        let t1 = t0 + Duration::from_millis(120);
        assert_eq!(l.reserve_at(10, t1), Duration::ZERO);
        assert!(l.reserve_at(1, t1) > Duration::ZERO);
    }

    #[test]
    fn limiter_takes_the_lower_of_max_and_estimate() {
        let none = RateLimiter::new(None, None);
        assert_eq!(none.rate(), None);
        assert_eq!(none.reserve_at(1_000_000, Instant::now()), Duration::ZERO);
        none.set_estimated(500.0);
        assert_eq!(none.rate(), Some(500));

        let l = RateLimiter::new(Some(1_000), Some(5_000.0));
        assert_eq!(l.rate(), Some(1_000), "max caps the initial rate");
        l.set_estimated(200.0);
        assert_eq!(l.rate(), Some(200));
        l.set_estimated(f64::NAN);
        assert_eq!(l.rate(), Some(200), "a bad estimate is ignored");
        l.set_estimated(2_000.0);
        assert_eq!(l.rate(), Some(1_000));
    }

    #[test]
    fn rate_controller_uses_this_inputs_records() {
        let limiter = Arc::new(RateLimiter::new(None, None));
        let records = Arc::new(Mutex::new(BTreeMap::new()));
        let c = RateController {
            estimator: Mutex::new(est()),
            limiter: limiter.clone(),
            records: records.clone(),
            name: "test".into(),
        };
        let info = |t: u64, proc_ms: u64, sched_ms: u64| BatchInfo {
            time: BatchTime(t),
            // The whole batch's count, which must not be used.
            records: 1_000_000,
            scheduling_delay: Duration::from_millis(sched_ms),
            processing_delay: Some(Duration::from_millis(proc_ms)),
            kind: crate::observe::listener::BatchKind::Live,
            input_records: Vec::new(),
        };
        records.lock().unwrap().insert(BatchTime(1_000), 1_000);
        records.lock().unwrap().insert(BatchTime(2_000), 1_000);
        c.on_completed_at(&info(1_000, 500, 0), 1_500);
        assert_eq!(limiter.rate(), None, "the first batch only seeds");
        c.on_completed_at(&info(2_000, 1_000, 200), 3_000);
        assert_eq!(limiter.rate(), Some(960));
        assert!(records.lock().unwrap().is_empty());
    }
}
