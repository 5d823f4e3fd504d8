//! `StreamingConf`: the settings of a streaming job, in code or from `SLUICE_*`
//! environment variables.

use std::time::Duration;

use crate::{EngineError, Result};

/// The settings of a streaming job. Build it in code; [`StreamingConf::with_env`]
/// then lets `SLUICE_*` environment variables override any setting:
///
/// | variable | setting | example |
/// |---|---|---|
/// | `SLUICE_APP_NAME` | `app_name` | `wordcount` |
/// | `SLUICE_BATCH_INTERVAL` | `batch_interval` | `1s`, `500ms` |
/// | `SLUICE_BLOCK_INTERVAL` | `block_interval` | `200ms` |
/// | `SLUICE_PARALLELISM` | `parallelism` | `4` |
/// | `SLUICE_CHECKPOINT` | `checkpoint` | `/var/lib/job`, `s3://bucket/prefix` |
/// | `SLUICE_CHECKPOINT_INTERVAL` | `checkpoint_interval` | `10s` |
/// | `SLUICE_RECEIVER_WAL` | `receiver_wal` | `true` |
/// | `SLUICE_RECEIVER_READ_BACK` | `receiver_read_back` | `true` (default), `false` |
/// | `SLUICE_RECEIVER_MAX_RATE` | `receiver_max_rate` (records/s, 0 = none) | `100000` |
/// | `SLUICE_BACKPRESSURE` | `backpressure` | `true` |
/// | `SLUICE_DROP_INCOMPATIBLE_STATE` | `drop_incompatible_state` | `false` |
/// | `SLUICE_DOWN_TIME` | `down_time` | `run-each`, `fold` |
/// | `SLUICE_BACKPRESSURE_INITIAL_RATE` | `backpressure_initial_rate` (records/s) | `10000` |
/// | `SLUICE_BACKPRESSURE_PID_PROPORTIONAL` | `backpressure_pid.proportional` | `1.0` |
/// | `SLUICE_BACKPRESSURE_PID_INTEGRAL` | `backpressure_pid.integral` | `0.2` |
/// | `SLUICE_BACKPRESSURE_PID_DERIVATIVE` | `backpressure_pid.derivative` | `0.0` |
/// | `SLUICE_BACKPRESSURE_PID_MIN_RATE` | `backpressure_pid.min_rate` (records/s) | `100` |
/// | `SLUICE_RECEIVER_RESTART_DELAY` | `receiver_restart_delay` | `500ms` |
/// | `SLUICE_RECEIVER_MAX_BUFFERED` | `receiver_max_buffered` (bytes, 0 = no bound) | `64MiB`, `16000000` |
/// | `SLUICE_RECEIVER_MAX_RECORD_BYTES` | `receiver_max_record_bytes` | `1MiB` |
/// | `SLUICE_WAL_RECOVERY_MODE` | `wal_recovery_mode` | `tolerate-torn-tail`, `point-in-time`, `absolute-consistency` |
/// | `SLUICE_ASYNC_CHECKPOINTS` | `async_checkpoints` | `true` (default), `false` |
/// | `SLUICE_UI` | `ui` (address of the web UI and `/metrics`; empty or `off`: none) | `127.0.0.1:4040` |
/// | `SLUICE_UI_RETAINED_BATCHES` | `ui_retained_batches` | `1000` |
/// | `SLUICE_UI_RETAINED_CHECKPOINTS` | `ui_retained_checkpoints` | `100` |
#[derive(Debug, Clone, PartialEq)]
pub struct StreamingConf {
    /// A name for logs and the listener.
    pub app_name: String,
    /// The time between batches.
    pub batch_interval: Duration,
    /// How often receivers cut their input into blocks (partitions).
    pub block_interval: Duration,
    /// Partitions for keyed operators (shuffles) and the CPU pool size.
    pub parallelism: usize,
    /// Where checkpoints go (a path, `file://`, `s3://bucket/prefix`, `rocksdb://path`).
    pub checkpoint: Option<String>,
    /// How often a metadata and state checkpoint is written.
    pub checkpoint_interval: Option<Duration>,
    /// Store every received block in the write-ahead log before acknowledging it.
    pub receiver_wal: bool,
    /// With the receiver WAL on: a block durable in the WAL leaves memory, and the
    /// batch that takes it reads it back (from the page cache, for a local WAL)
    /// partition by partition. What a receiver holds in memory is then only what it
    /// has not yet written, so its intake no longer depends on the batch interval;
    /// the backlog of unprocessed blocks waits on disk. Default on; off keeps blocks in
    /// memory until their batch completes (as without the WAL).
    pub receiver_read_back: bool,
    /// The most records per second a receiver stores (`None`: no limit).
    pub receiver_max_rate: Option<u64>,
    /// Adapt the receivers' rate, and the size of each Kafka direct stream's batches,
    /// to the processing speed (PID estimator, one per input).
    pub backpressure: bool,
    /// With backpressure, the rate each receiver (or Kafka direct stream, over all its
    /// partitions) starts at before the first estimate (`None`: unlimited until then,
    /// or `receiver_max_rate` / `max_rate_per_partition`).
    pub backpressure_initial_rate: Option<u64>,
    /// The PID estimator's knobs (Spark's `spark.streaming.backpressure.pid.*`).
    pub backpressure_pid: crate::sources::rate::PidConf,
    /// How long a receiver waits before its first restart after an error; each further
    /// consecutive failure doubles it, up to 60 times this value (at most 30 s).
    pub receiver_restart_delay: Duration,
    /// The most data, in bytes, each receiver holds received but not yet processed
    /// (buffered, in blocks, or in a batch that has not completed; with the receiver
    /// WAL and `receiver_read_back`, only what it has not yet written to the WAL);
    /// `None`: no bound.
    /// A receiver over it blocks in `store` until a batch completes, so a socket
    /// receiver stops reading and TCP pushes back on the sender; nothing is dropped.
    /// Bytes are what the receiver reports (a socket: the bytes it read), else the
    /// in-memory size of each record (`size_of::<T>()`, a lower bound for records that
    /// own heap data). Without read-back, a receiver takes in at most about this much
    /// per batch interval, so set it to at least the input rate times the batch
    /// interval. Default 64 MiB.
    pub receiver_max_buffered: Option<u64>,
    /// On restart, drop the state of operators whose change is incompatible with the
    /// checkpoint (renamed, removed, retyped) instead of refusing to start.
    pub drop_incompatible_state: bool,
    /// On restart, what to do with batch times that passed while the driver was down.
    pub down_time: sluice_recovery::plan::DownTime,
    /// The largest record a receiver takes, in bytes (a socket line without its
    /// newline). A longer one is discarded while it is read (never buffered past this),
    /// logged with its source and size and counted (`InputStatus::dropped_oversized`);
    /// the other records are kept and the job runs on. Default 1 MiB.
    pub receiver_max_record_bytes: u64,
    /// What opening the driver log and the receiver WALs does with damage: cut a torn
    /// tail (default), stop at the first bad frame (point in time, to get a damaged
    /// log running again), or refuse any damage.
    pub wal_recovery_mode: sluice_wal::RecoveryMode,
    /// Whether checkpoints are written on a thread of their own while the next batches
    /// run (default), rather than on the scheduler thread between two batches. The state
    /// is taken on the scheduler thread either way; one checkpoint is written at a time.
    pub async_checkpoints: bool,
    /// The file system of this context's local checkpoint directory, driver log and
    /// receiver WALs (`None`: the process's default, the real disk): a test runs a job
    /// on a simulated disk and cuts its power.
    pub file_system: Option<FileSystemHandle>,
    /// Where to serve the web UI, the `/api/*` JSON and Prometheus `/metrics`
    /// (`host:port`; port 0 picks a free one; `None`: no UI). Needs the `ui` feature.
    pub ui: Option<String>,
    /// How many of the latest batches the UI keeps (Spark's `retainedBatches`).
    pub ui_retained_batches: usize,
    /// How many of the latest checkpoints the UI keeps.
    pub ui_retained_checkpoints: usize,
}

/// A [`sluice_wal::fs::FileSystem`] a context runs on; equal when it is the same one.
#[derive(Debug, Clone)]
pub struct FileSystemHandle(pub std::sync::Arc<dyn sluice_wal::fs::FileSystem>);

impl PartialEq for FileSystemHandle {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The default of [`StreamingConf::receiver_max_record_bytes`]: 1 MiB.
pub const DEFAULT_RECEIVER_MAX_RECORD_BYTES: u64 = 1 << 20;

/// The default of [`StreamingConf::receiver_max_buffered`]: 64 MiB per receiver.
pub const DEFAULT_RECEIVER_MAX_BUFFERED: u64 = 64 << 20;

/// Prefixes of the variables that belong to sluice's tools, not to a job's settings.
const TOOL_PREFIXES: [&str; 3] = ["SLUICE_TEST_", "SLUICE_CHAOS_", "SLUICE_BENCH_"];

impl StreamingConf {
    /// A configuration with the given name and batch interval, and defaults for the rest:
    /// 200 ms blocks, parallelism = available cores, no checkpoint, no WAL, no rate limit.
    pub fn new(app_name: impl Into<String>, batch_interval: Duration) -> Self {
        StreamingConf {
            app_name: app_name.into(),
            batch_interval,
            block_interval: Duration::from_millis(200),
            parallelism: std::thread::available_parallelism().map_or(2, |n| n.get()),
            checkpoint: None,
            checkpoint_interval: None,
            receiver_wal: false,
            receiver_read_back: true,
            receiver_max_rate: None,
            backpressure: false,
            backpressure_initial_rate: None,
            backpressure_pid: crate::sources::rate::PidConf::default(),
            receiver_restart_delay: Duration::from_millis(500),
            receiver_max_buffered: Some(DEFAULT_RECEIVER_MAX_BUFFERED),
            drop_incompatible_state: false,
            down_time: sluice_recovery::plan::DownTime::RunEach,
            receiver_max_record_bytes: DEFAULT_RECEIVER_MAX_RECORD_BYTES,
            wal_recovery_mode: sluice_wal::RecoveryMode::TolerateTornTail,
            async_checkpoints: true,
            file_system: None,
            ui: None,
            ui_retained_batches: 1000,
            ui_retained_checkpoints: 100,
        }
    }

    /// Serves the web UI, `/api/*` and `/metrics` at `addr` (`127.0.0.1:4040`; port 0
    /// picks a free port, see [`StreamingContext::ui_addr`](crate::StreamingContext::ui_addr)).
    /// Bind to loopback unless the UI must be reachable from elsewhere: it has no
    /// authentication (it is read-only and masks secrets).
    pub fn ui(mut self, addr: impl Into<String>) -> Self {
        self.ui = Some(addr.into());
        self
    }

    /// Sets how many of the latest batches the UI keeps.
    pub fn ui_retained_batches(mut self, n: usize) -> Self {
        self.ui_retained_batches = n;
        self
    }

    /// Runs this context's local checkpoint directory, driver log and receiver WALs on
    /// `fs` (a `sluice_wal::fs::SimFs` in a power-loss test).
    pub fn file_system(mut self, fs: std::sync::Arc<dyn sluice_wal::fs::FileSystem>) -> Self {
        self.file_system = Some(FileSystemHandle(fs));
        self
    }

    /// The file system local durable state goes to (`None`: the process default).
    pub(crate) fn fs(&self) -> Option<std::sync::Arc<dyn sluice_wal::fs::FileSystem>> {
        self.file_system.as_ref().map(|f| f.0.clone())
    }

    /// Sets the largest record a receiver takes; see
    /// [`StreamingConf::receiver_max_record_bytes`].
    pub fn receiver_max_record_bytes(mut self, bytes: u64) -> Self {
        self.receiver_max_record_bytes = bytes;
        self
    }

    /// Sets whether checkpoints are written on a thread of their own (default `true`).
    pub fn async_checkpoints(mut self, on: bool) -> Self {
        self.async_checkpoints = on;
        self
    }

    /// Sets what opening the driver log and the receiver WALs does with damage.
    pub fn wal_recovery_mode(mut self, mode: sluice_wal::RecoveryMode) -> Self {
        self.wal_recovery_mode = mode;
        self
    }

    /// Sets the block interval.
    pub fn block_interval(mut self, d: Duration) -> Self {
        self.block_interval = d;
        self
    }

    /// Sets the parallelism.
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = n;
        self
    }

    /// Sets the checkpoint location.
    pub fn checkpoint(mut self, location: impl Into<String>) -> Self {
        self.checkpoint = Some(location.into());
        self
    }

    /// Sets the checkpoint interval.
    pub fn checkpoint_interval(mut self, d: Duration) -> Self {
        self.checkpoint_interval = Some(d);
        self
    }

    /// Turns the receiver write-ahead log on or off.
    pub fn receiver_wal(mut self, on: bool) -> Self {
        self.receiver_wal = on;
        self
    }

    /// With the receiver WAL on, whether batches read their blocks back from it instead
    /// of keeping them in memory; see [`StreamingConf::receiver_read_back`].
    pub fn receiver_read_back(mut self, on: bool) -> Self {
        self.receiver_read_back = on;
        self
    }

    /// Limits each receiver to `records_per_sec`.
    pub fn receiver_max_rate(mut self, records_per_sec: u64) -> Self {
        self.receiver_max_rate = Some(records_per_sec);
        self
    }

    /// Turns backpressure on or off (receivers and Kafka direct streams).
    pub fn backpressure(mut self, on: bool) -> Self {
        self.backpressure = on;
        self
    }

    /// Sets backpressure's initial rate (records/s per receiver or Kafka input).
    pub fn backpressure_initial_rate(mut self, records_per_sec: u64) -> Self {
        self.backpressure_initial_rate = Some(records_per_sec);
        self
    }

    /// Sets the PID rate estimator's knobs.
    pub fn backpressure_pid(mut self, pid: crate::sources::rate::PidConf) -> Self {
        self.backpressure_pid = pid;
        self
    }

    /// Sets the delay before a failed receiver is restarted (doubled per consecutive
    /// failure).
    pub fn receiver_restart_delay(mut self, d: Duration) -> Self {
        self.receiver_restart_delay = d;
        self
    }

    /// Bounds what each receiver holds received but not yet processed, in bytes
    /// (`None`: no bound); see [`StreamingConf::receiver_max_buffered`].
    pub fn receiver_max_buffered(mut self, bytes: Option<u64>) -> Self {
        self.receiver_max_buffered = bytes;
        self
    }

    /// Applies `SLUICE_*` overrides from the process environment. Any other `SLUICE_*`
    /// variable is an error (a misspelt setting must not pass silently), except the
    /// tools' own: `SLUICE_TEST_*`, `SLUICE_CHAOS_*`, `SLUICE_BENCH_*`.
    pub fn with_env(self) -> Result<Self> {
        self.with_vars(std::env::vars())
    }

    /// Applies `SLUICE_*` overrides from the given variables (testable without touching
    /// the process environment).
    pub fn with_vars(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        for (k, v) in vars {
            let bad = |reason: String| EngineError::Config {
                setting: k.clone(),
                reason,
            };
            match k.as_str() {
                "SLUICE_APP_NAME" => self.app_name = v,
                "SLUICE_BATCH_INTERVAL" => self.batch_interval = parse_duration(&v).map_err(bad)?,
                "SLUICE_BLOCK_INTERVAL" => self.block_interval = parse_duration(&v).map_err(bad)?,
                "SLUICE_PARALLELISM" => self.parallelism = parse_count(&v).map_err(bad)?,
                "SLUICE_CHECKPOINT" => self.checkpoint = (!v.is_empty()).then_some(v),
                "SLUICE_CHECKPOINT_INTERVAL" => {
                    self.checkpoint_interval = Some(parse_duration(&v).map_err(bad)?)
                }
                "SLUICE_RECEIVER_WAL" => self.receiver_wal = parse_bool(&v).map_err(bad)?,
                "SLUICE_RECEIVER_READ_BACK" => {
                    self.receiver_read_back = parse_bool(&v).map_err(bad)?
                }
                "SLUICE_RECEIVER_MAX_RATE" => {
                    let n: u64 = parse_count(&v).map_err(bad)?;
                    self.receiver_max_rate = (n > 0).then_some(n);
                }
                "SLUICE_BACKPRESSURE" => self.backpressure = parse_bool(&v).map_err(bad)?,
                "SLUICE_DROP_INCOMPATIBLE_STATE" => {
                    self.drop_incompatible_state = parse_bool(&v).map_err(bad)?
                }
                "SLUICE_ASYNC_CHECKPOINTS" => {
                    self.async_checkpoints = parse_bool(&v).map_err(bad)?
                }
                "SLUICE_RECEIVER_MAX_RECORD_BYTES" => {
                    self.receiver_max_record_bytes = parse_bytes(&v).map_err(bad)?
                }
                "SLUICE_WAL_RECOVERY_MODE" => {
                    self.wal_recovery_mode = match v.as_str() {
                        "tolerate-torn-tail" => sluice_wal::RecoveryMode::TolerateTornTail,
                        "point-in-time" => sluice_wal::RecoveryMode::PointInTime,
                        "absolute-consistency" => sluice_wal::RecoveryMode::AbsoluteConsistency,
                        _ => {
                            return Err(bad(format!(
                            "{v:?}: use tolerate-torn-tail, point-in-time or absolute-consistency"
                        )))
                        }
                    }
                }
                "SLUICE_DOWN_TIME" => {
                    self.down_time = match v.as_str() {
                        "run-each" => sluice_recovery::plan::DownTime::RunEach,
                        "fold" => sluice_recovery::plan::DownTime::Fold,
                        _ => return Err(bad(format!("{v:?}: use run-each or fold"))),
                    }
                }
                "SLUICE_BACKPRESSURE_INITIAL_RATE" => {
                    let n: u64 = parse_count(&v).map_err(bad)?;
                    self.backpressure_initial_rate = (n > 0).then_some(n);
                }
                "SLUICE_BACKPRESSURE_PID_PROPORTIONAL" => {
                    self.backpressure_pid.proportional = parse_f64(&v).map_err(bad)?
                }
                "SLUICE_BACKPRESSURE_PID_INTEGRAL" => {
                    self.backpressure_pid.integral = parse_f64(&v).map_err(bad)?
                }
                "SLUICE_BACKPRESSURE_PID_DERIVATIVE" => {
                    self.backpressure_pid.derivative = parse_f64(&v).map_err(bad)?
                }
                "SLUICE_BACKPRESSURE_PID_MIN_RATE" => {
                    self.backpressure_pid.min_rate = parse_f64(&v).map_err(bad)?
                }
                "SLUICE_RECEIVER_RESTART_DELAY" => {
                    self.receiver_restart_delay = parse_duration(&v).map_err(bad)?
                }
                "SLUICE_UI" => {
                    self.ui = (!v.is_empty() && v != "off").then_some(v);
                }
                "SLUICE_UI_RETAINED_BATCHES" => {
                    self.ui_retained_batches = parse_count(&v).map_err(bad)?;
                }
                "SLUICE_UI_RETAINED_CHECKPOINTS" => {
                    self.ui_retained_checkpoints = parse_count(&v).map_err(bad)?;
                }
                "SLUICE_RECEIVER_MAX_BUFFERED" => {
                    let n = parse_bytes(&v).map_err(bad)?;
                    self.receiver_max_buffered = (n > 0).then_some(n);
                }
                // A testing hook read by `sluice::failpoints` (built with that feature
                // only; otherwise an unknown setting, since nothing would read it).
                #[cfg(feature = "failpoints")]
                "SLUICE_CRASH_AT" => {}
                // The tools' own variables (the test servers, the chaos harness, the
                // benches): exported in a shell where jobs run too, never the job's.
                other if TOOL_PREFIXES.iter().any(|p| other.starts_with(p)) => {}
                other if other.starts_with("SLUICE_") => {
                    return Err(bad(
                        "unknown setting (see StreamingConf's docs for the list)".into(),
                    ))
                }
                _ => {}
            }
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<()> {
        let bad = |setting: &str, reason: String| {
            Err(EngineError::Config {
                setting: setting.into(),
                reason,
            })
        };
        for (setting, d) in [
            ("batch_interval", Some(self.batch_interval)),
            ("block_interval", Some(self.block_interval)),
            ("checkpoint_interval", self.checkpoint_interval),
            ("receiver_restart_delay", Some(self.receiver_restart_delay)),
        ] {
            if d.is_some_and(|d| d.as_millis() > u128::from(MAX_DURATION_MS)) {
                return bad(setting, "is too long (at most 365 days)".into());
            }
        }
        if self.receiver_max_record_bytes == 0 {
            return bad(
                "receiver_max_record_bytes",
                "must be at least 1 byte".into(),
            );
        }
        if self.batch_interval.is_zero()
            || !self.batch_interval.subsec_nanos().is_multiple_of(1_000_000)
        {
            return bad(
                "batch_interval",
                format!(
                    "{:?} must be a positive whole number of milliseconds",
                    self.batch_interval
                ),
            );
        }
        if self.block_interval.is_zero() {
            return bad("block_interval", "must be positive".into());
        }
        self.backpressure_pid.validate()?;
        if self.parallelism == 0 {
            return bad("parallelism", "must be at least 1".into());
        }
        if self.ui_retained_batches == 0 || self.ui_retained_checkpoints == 0 {
            return bad(
                "ui_retained_batches",
                "the UI must keep at least 1 batch and 1 checkpoint".into(),
            );
        }
        if self.ui.is_some() && !cfg!(feature = "ui") {
            return bad(
                "ui",
                "this build of sluice has no web UI (build it with the `ui` feature)".into(),
            );
        }
        if let Some(ci) = self.checkpoint_interval {
            let (c, b) = (ci.as_millis(), self.batch_interval.as_millis());
            if c == 0 || !c.is_multiple_of(b) {
                return bad(
                    "checkpoint_interval",
                    format!(
                        "{ci:?} is not a positive multiple of the batch interval {:?}",
                        self.batch_interval
                    ),
                );
            }
        }
        Ok(())
    }
}

/// Splits `64MiB` into 64 and `MiB` (the unit trimmed); `what` names the expected
/// form in the error.
fn number_and_unit<'a>(s: &'a str, what: &str) -> Result<(u64, &'a str), String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n = num.parse().map_err(|_| format!("{s:?} is not {what}"))?;
    Ok((n, unit.trim()))
}

/// Parses `250ms`, `2s`, `1m`, `1h`, or a bare number of milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(s, "a duration (use e.g. 500ms, 2s, 1m)")?;
    let s = s.trim();
    let ms_per_unit: u64 = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use ms, s, m or h)")),
    };
    // Batch times are milliseconds since the epoch plus such durations: a duration past
    // a year is a typo, and one past u64 milliseconds would overflow.
    match n.checked_mul(ms_per_unit) {
        Some(ms) if ms <= MAX_DURATION_MS => Ok(Duration::from_millis(ms)),
        _ => Err(format!("{s:?} is too long (at most 365 days)")),
    }
}

/// The longest duration a setting takes: 365 days.
const MAX_DURATION_MS: u64 = 365 * 24 * 3_600_000;

/// Parses a byte count: `65536`, `64KiB`, `64MiB`, `1GiB`, or `64kB`, `64MB`, `1GB`
/// (powers of ten).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let (n, unit) = number_and_unit(s, "a byte count (use e.g. 64MiB, 16000000)")?;
    let s = s.trim();
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} (use B, KiB, MiB, GiB, kB, MB or GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn parse_count<N: std::str::FromStr>(s: &str) -> Result<N, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a whole number"))
}

fn parse_f64(s: &str) -> Result<f64, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (use true or false)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_code() {
        let c = StreamingConf::new("a", Duration::from_secs(1))
            .with_vars(vars(&[
                ("SLUICE_BATCH_INTERVAL", "500ms"),
                ("SLUICE_PARALLELISM", "3"),
                ("SLUICE_RECEIVER_WAL", "true"),
                ("SLUICE_CHECKPOINT", "/tmp/x"),
                ("SLUICE_CHECKPOINT_INTERVAL", "5s"),
                ("PATH", "/bin"),
                // The tools' variables, as `scripts/dev-servers.sh env` exports them.
                (
                    "SLUICE_TEST_POSTGRES_URL",
                    "postgres://postgres@127.0.0.1:1/test",
                ),
                ("SLUICE_TEST_KAFKA_BROKERS", "127.0.0.1:2"),
                ("SLUICE_CHAOS_PG", "postgres://x"),
                ("SLUICE_BENCH_DIR", "/tmp"),
            ]))
            .unwrap();
        assert_eq!(c.batch_interval, Duration::from_millis(500));
        assert_eq!(c.parallelism, 3);
        assert!(c.receiver_wal);
        assert_eq!(c.checkpoint.as_deref(), Some("/tmp/x"));
        assert_eq!(c.checkpoint_interval, Some(Duration::from_secs(5)));
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let c = StreamingConf::new("a", Duration::from_secs(1));
        for (k, v, want) in [
            ("SLUICE_BATCH_INTERVAL", "fast", "not a duration"),
            ("SLUICE_PARALLELISM", "-1", "whole number"),
            ("SLUICE_RECEIVER_WAL", "maybe", "boolean"),
            ("SLUICE_BACKPRESSURE_PID_MIN_RATE", "lots", "not a number"),
            ("SLUICE_BATCH_SIZE", "3", "unknown setting"),
            ("SLUICE_BATCH_INTERVAL", "99999999999999999h", "too long"),
            (
                "SLUICE_CHECKPOINT_INTERVAL",
                "18446744073709551615s",
                "too long",
            ),
            ("SLUICE_RECEIVER_MAX_RECORD_BYTES", "0", "at least 1 byte"),
            ("SLUICE_WAL_RECOVERY_MODE", "fast", "tolerate-torn-tail"),
            (
                "SLUICE_CHECKPOINT_INTERVAL",
                "1500ms",
                "multiple of the batch interval",
            ),
        ] {
            let err = c
                .clone()
                .with_vars(vars(&[(k, v)]))
                .unwrap_err()
                .to_string();
            let setting = k.trim_start_matches("SLUICE_").to_ascii_lowercase();
            assert!(
                (err.contains(k) || err.contains(&setting)) && err.contains(want),
                "{k}={v}: {err}"
            );
        }
    }

    #[test]
    fn pid_knobs_are_settable_and_checked() {
        let c = StreamingConf::new("a", Duration::from_secs(1))
            .with_vars(vars(&[
                ("SLUICE_BACKPRESSURE_PID_PROPORTIONAL", "0.5"),
                ("SLUICE_BACKPRESSURE_PID_MIN_RATE", "10"),
                ("SLUICE_BACKPRESSURE_INITIAL_RATE", "300"),
                ("SLUICE_RECEIVER_RESTART_DELAY", "50ms"),
            ]))
            .unwrap();
        assert_eq!(c.backpressure_pid.proportional, 0.5);
        assert_eq!(c.backpressure_pid.integral, 0.2);
        assert_eq!(c.backpressure_pid.min_rate, 10.0);
        assert_eq!(c.backpressure_initial_rate, Some(300));
        assert_eq!(c.receiver_restart_delay, Duration::from_millis(50));
        let err = StreamingConf::new("a", Duration::from_secs(1))
            .with_vars(vars(&[("SLUICE_BACKPRESSURE_PID_INTEGRAL", "-0.5")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("backpressure_pid.integral"), "{err}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("1 fortnight").is_err());
    }

    #[test]
    fn byte_counts_parse_and_zero_means_no_bound() {
        assert_eq!(parse_bytes("65536").unwrap(), 65536);
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("2 GB").unwrap(), 2_000_000_000);
        assert!(parse_bytes("64 parsecs").is_err());
        assert!(parse_bytes("99999999999GiB").is_err());
        let c = StreamingConf::new("a", Duration::from_secs(1));
        assert_eq!(c.receiver_max_buffered, Some(DEFAULT_RECEIVER_MAX_BUFFERED));
        let c = c
            .with_vars(vars(&[("SLUICE_RECEIVER_MAX_BUFFERED", "0")]))
            .unwrap();
        assert_eq!(c.receiver_max_buffered, None);
        let err = StreamingConf::new("a", Duration::from_secs(1))
            .with_vars(vars(&[("SLUICE_RECEIVER_MAX_BUFFERED", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SLUICE_RECEIVER_MAX_BUFFERED"), "{err}");
    }
}
