//! The `sluice` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench_wal;

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "A micro-batch stream processor with a crash-safe write-ahead log"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Reproducible benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Subcommand, Debug)]
enum BenchWhat {
    /// The write-ahead log beside the raw disk it runs on: sequential write MB/s and
    /// fdatasync/s, then group-commit throughput (100 B, 1 KiB, 64 KiB records; 1, 4,
    /// 16 writers), per-append fsync latency and read-back scan speed.
    Wal {
        /// Directory on the disk to measure (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Shorter runs (about 15 s in all instead of about a minute).
        #[arg(long)]
        quick: bool,
        /// Print only JSON lines.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Bench {
            what: BenchWhat::Wal { dir, quick, json },
        } => bench_wal::run(dir, quick, json),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}
