//! The `sluice-chaos` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use sluice_chaos::{driver, harness};

#[derive(Parser, Debug)]
#[command(
    name = "sluice-chaos",
    version,
    about = "Kill-and-recover chaos runs for sluice"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the reference job, inject seeded faults, and check every output against an
    /// oracle computed from the input alone. Exits 1 on any loss, duplicate or wrong value.
    Run {
        /// The seed: the same seed replays the same input and the same faults (default:
        /// from the clock, printed).
        #[arg(long)]
        seed: Option<u64>,
        /// SIGKILLs to inject (other fault kinds are added: at least one of each).
        #[arg(long, default_value_t = 20)]
        kills: u32,
        /// Seconds of faults before the job is drained and stopped.
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
        /// Checkpoint location: a local directory (default: in the work directory),
        /// `s3` for a moto server started for the run behind a fault proxy, or an
        /// `s3://BUCKET/PREFIX` / `rocksdb://PATH` location.
        #[arg(long)]
        checkpoint: Option<String>,
        /// The batch interval in ms.
        #[arg(long, default_value_t = 200)]
        batch_ms: u64,
        /// The PostgreSQL database the job writes to (default: `SLUICE_CHAOS_PG`, else
        /// a PostgreSQL server started for the run on a free loopback port).
        #[arg(long)]
        pg: Option<String>,
        /// Work directory to use and keep (default: a temporary one, kept on failure).
        #[arg(long)]
        work: Option<PathBuf>,
        /// Also run Kafka: a broker started for the run, a topic the job reads with the
        /// direct source, its per-batch counts written to another topic exactly once
        /// (checked with a `read_committed` reader), and broker faults (SIGKILL and
        /// restart, SIGSTOP) beside the job's.
        #[arg(long)]
        kafka: bool,
    },
    /// The reference job (started by `run` under `supervise`; not for direct use).
    #[command(hide = true)]
    Driver(driver::DriverOptions),
    /// `sluice supervise`, built in (the same code): restart the driver when it dies.
    #[command(hide = true)]
    Supervise(sluice_cli::supervise::SuperviseArgs),
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Run {
            seed,
            kills,
            duration,
            checkpoint,
            batch_ms,
            pg,
            work,
            kafka,
        } => {
            let seed = seed.unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
            if !(duration.is_finite() && duration > 0.0) || batch_ms == 0 {
                eprintln!("sluice-chaos: --duration and --batch-ms must be positive");
                return ExitCode::from(2);
            }
            let pg = pg.or_else(|| {
                std::env::var("SLUICE_CHAOS_PG")
                    .ok()
                    .filter(|v| !v.is_empty())
            });
            let opts = harness::RunOptions {
                seed,
                kills,
                duration: Duration::from_secs_f64(duration),
                checkpoint: checkpoint.clone(),
                batch_ms,
                pg,
                work,
                kafka,
            };
            eprintln!("sluice-chaos: seed {seed}, {kills} kills over {duration} s");
            match harness::run(&opts) {
                Ok(report) => {
                    print!("{}", report.render());
                    if report.passed() {
                        ExitCode::SUCCESS
                    } else {
                        let mut loc =
                            checkpoint.map_or(String::new(), |c| format!(" --checkpoint {c}"));
                        if kafka {
                            loc.push_str(" --kafka");
                        }
                        eprintln!(
                            "sluice-chaos: FAILED with seed {seed}; replay with:\n  \
                             sluice-chaos run --seed {seed} --kills {kills} --duration {duration} \
                             --batch-ms {batch_ms}{loc}"
                        );
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("sluice-chaos: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Driver(opts) => match driver::run(opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice-chaos driver: {e}");
                ExitCode::from(1)
            }
        },
        Cmd::Supervise(args) => args.run("sluice-chaos supervise"),
    }
}
