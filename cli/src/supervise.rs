//! `sluice supervise [opts] -- CMD…`: restarts the driver when it dies, with backoff;
//! forwards SIGTERM/SIGINT for a graceful stop and exits with the driver's status.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sluice_recovery::supervise::{Decision, Exit, Policy};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn exit_of(status: ExitStatus) -> Exit {
    match (status.code(), status.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(s)) => Exit::Signal(s),
        (None, None) => Exit::Code(1),
    }
}

/// The command line of `sluice supervise` (also built into `sluice-chaos`).
#[derive(Debug, Clone, clap::Args)]
pub struct SuperviseArgs {
    /// Give up after this many restarts within --within.
    #[arg(long, default_value_t = 10)]
    pub max_restarts: u32,
    /// The window --max-restarts counts in (e.g. 10m).
    #[arg(long, default_value = "10m")]
    pub within: String,
    /// Backoff between restarts, MIN..MAX (doubling).
    #[arg(long, default_value = "200ms..30s")]
    pub backoff: String,
    /// Serve Prometheus /metrics at this address (HOST:PORT): the restart count, the
    /// last exit cause, whether the driver runs.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// The driver command.
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

impl SuperviseArgs {
    /// The restart policy the options describe.
    pub fn policy(&self) -> Result<Policy, String> {
        let (backoff_min, backoff_max) =
            sluice_recovery::supervise::parse_backoff(&self.backoff, sluice::parse_duration)?;
        Ok(Policy {
            max_restarts: self.max_restarts,
            within: sluice::parse_duration(&self.within).map_err(|e| format!("--within: {e}"))?,
            backoff_min,
            backoff_max,
        })
    }

    /// Supervises the command; returns the process exit status (2 for bad options).
    pub fn run(&self, who: &str) -> std::process::ExitCode {
        std::process::ExitCode::from(self.status(who))
    }

    /// Like [`SuperviseArgs::run`], the status as a number.
    pub fn status(&self, who: &str) -> u8 {
        let watch = SupervisorMetrics::default();
        let server = match &self.metrics {
            Some(addr) => match watch.serve(addr) {
                Ok(s) => {
                    eprintln!("{who}: metrics at http://{}/metrics", s.addr());
                    Some(s)
                }
                Err(e) => {
                    eprintln!("{who}: {e}");
                    return 2;
                }
            },
            None => None,
        };
        let res = self
            .policy()
            .and_then(|p| run_watched(&self.cmd, &p, &watch));
        drop(server);
        match res {
            Ok(code) => code.clamp(0, 255) as u8,
            Err(e) => {
                eprintln!("{who}: {e}");
                2
            }
        }
    }
}

/// Runs `cmd` under `policy` until it finishes, is stopped, or the policy gives up;
/// returns the exit status for the supervisor itself.
pub fn run(cmd: &[String], policy: &Policy) -> Result<i32, String> {
    run_watched(cmd, policy, &SupervisorMetrics::default())
}

/// What `--metrics` shows: the supervisor's restarts and its driver's last exit.
#[derive(Debug, Clone)]
pub struct SupervisorMetrics {
    registry: Arc<Registry>,
    restarts: Counter,
    running: Gauge,
    last_exit: Family<Vec<(String, String)>, Gauge>,
    last_exit_time: Gauge<f64, AtomicU64>,
}

impl Default for SupervisorMetrics {
    fn default() -> Self {
        let (restarts, running) = (Counter::default(), Gauge::default());
        let last_exit = Family::<Vec<(String, String)>, Gauge>::default();
        let last_exit_time = Gauge::<f64, AtomicU64>::default();
        let mut r = Registry::default();
        r.register(
            "sluice_supervisor_restarts",
            "Times the supervisor restarted its driver",
            restarts.clone(),
        );
        r.register(
            "sluice_supervisor_driver_running",
            "1 while the driver process runs",
            running.clone(),
        );
        r.register(
            "sluice_supervisor_last_exit",
            "The cause of the driver's last exit (value 1, the cause in the label)",
            last_exit.clone(),
        );
        r.register(
            "sluice_supervisor_last_exit_timestamp_seconds",
            "When the driver last exited (Unix time)",
            last_exit_time.clone(),
        );
        SupervisorMetrics {
            registry: Arc::new(r),
            restarts,
            running,
            last_exit,
            last_exit_time,
        }
    }
}

impl SupervisorMetrics {
    /// Serves `/metrics` at `addr` until the returned server is dropped.
    pub fn serve(&self, addr: &str) -> Result<sluice::observe::HttpServer, String> {
        let registry = self.registry.clone();
        sluice::observe::serve_metrics(addr, move || {
            let mut out = String::new();
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
            out
        })
        .map_err(|e| e.to_string())
    }

    fn started(&self) {
        self.running.set(1);
    }

    fn exited(&self, cause: &str) {
        self.running.set(0);
        self.last_exit.clear();
        self.last_exit
            .get_or_create(&vec![("cause".to_owned(), cause.to_owned())])
            .set(1);
        self.last_exit_time.set(now_ms() as f64 / 1000.0);
    }
}

/// Exit status 3, or killed by signal 9 (SIGKILL).
fn describe(exit: Exit) -> String {
    match exit {
        Exit::Code(c) => format!("exit status {c}"),
        Exit::Signal(s) => format!(
            "signal {s}{}",
            Signal::try_from(s).map_or(String::new(), |s| format!(" ({s})"))
        ),
    }
}

/// Like [`run`], reporting to `watch`.
pub fn run_watched(
    cmd: &[String],
    policy: &Policy,
    watch: &SupervisorMetrics,
) -> Result<i32, String> {
    let (program, args) = cmd
        .split_first()
        .ok_or("supervise needs a command after --, as in: sluice supervise -- sluice demo")?;
    let stop = crate::signals::stop_requested();
    let mut restarts: Vec<u64> = Vec::new();
    loop {
        let started = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .spawn()
            .map_err(|e| format!("cannot start {program:?}: {e}"))?;
        let pid = Pid::from_raw(child.id() as i32);
        eprintln!("sluice supervise: started {program} (pid {pid})");
        watch.started();
        let mut forwarded = false;
        let status = loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| format!("waiting for {pid}: {e}"))?
            {
                break status;
            }
            if stop.load(Ordering::SeqCst) && !forwarded {
                eprintln!("sluice supervise: forwarding SIGTERM to pid {pid} for a graceful stop");
                let _ = kill(pid, Signal::SIGTERM);
                forwarded = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let exit = exit_of(status);
        watch.exited(&describe(exit));
        match policy.decide(exit, &restarts, now_ms(), stop.load(Ordering::SeqCst)) {
            Decision::Exit(code) => {
                eprintln!("sluice supervise: driver exited with status {code}");
                return Ok(code);
            }
            Decision::GiveUp { status, reason } => {
                eprintln!("sluice supervise: {reason}");
                return Ok(status);
            }
            Decision::Restart { after, cause } => {
                restarts.push(now_ms());
                watch.restarts.inc();
                eprintln!(
                    "sluice supervise: driver {cause} after {:.1} s; restart #{} in {:?}",
                    started.elapsed().as_secs_f64(),
                    restarts.len(),
                    after
                );
                let until = Instant::now() + after;
                while Instant::now() < until {
                    if stop.load(Ordering::SeqCst) {
                        eprintln!("sluice supervise: stop requested while waiting to restart");
                        return Ok(match exit {
                            Exit::Code(c) => c,
                            Exit::Signal(s) => 128 + s,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}
