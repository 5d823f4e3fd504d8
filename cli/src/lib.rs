//! `sluice-cli`: the `sluice` command — `demo`, `supervise`, `inspect` and the
//! benches — on top of the `sluice` library. The binary is [`main`]; the modules
//! are public where another tool reuses them (`sluice-chaos` runs the same
//! supervise loop).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench_checkpoint;
mod bench_kafka;
mod bench_restart;
mod bench_sql;
mod bench_wal;
mod bench_wordcount;
pub mod demo;
mod inspect;
pub mod signals;
pub mod supervise;

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
    /// The embedded default job: a stateful word count over a built-in deterministic
    /// source, checkpointed locally. Kill it (kill -9 too) and run it again: it resumes.
    Demo {
        /// Checkpoint location: a path, file://PATH, s3://BUCKET/PREFIX or rocksdb://PATH.
        #[arg(long, default_value = "sluice-demo-checkpoint")]
        checkpoint: String,
        /// Write one file per batch with the counts it updated into this directory.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Batch interval in milliseconds.
        #[arg(long, default_value_t = 1000)]
        batch_ms: u64,
        /// Generated lines per second.
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        /// Stop gracefully after this many seconds (default: run until stopped).
        #[arg(long)]
        duration: Option<f64>,
        /// Do not print each batch.
        #[arg(long)]
        quiet: bool,
        /// Count the words of text files moved into this directory (instead of the
        /// built-in generator); hidden and *.tmp files are ignored.
        #[arg(long)]
        input_dir: Option<PathBuf>,
        /// Stop gracefully after no new input for this many seconds.
        #[arg(long)]
        exit_when_idle: Option<f64>,
        /// Count the words of the values (UTF-8 text) of this Kafka topic, read with
        /// the direct source (offsets in the checkpoint); needs --kafka-brokers.
        #[arg(long)]
        kafka_topic: Option<String>,
        /// The Kafka brokers, HOST:PORT[,HOST:PORT…].
        #[arg(long)]
        kafka_brokers: Option<String>,
        /// Write every word a batch updated to this topic, exactly once, in one Kafka
        /// transaction per batch: key = the word, value = its new total.
        #[arg(long)]
        kafka_output_topic: Option<String>,
        /// At most this many records per Kafka partition per second of batch.
        #[arg(long)]
        kafka_max_rate_per_partition: Option<u64>,
        /// Serve the web UI and Prometheus /metrics at this address (default
        /// 127.0.0.1:4040, or the next free port after it when that one is busy).
        #[arg(long, value_name = "ADDR")]
        ui: Option<String>,
        /// No web UI.
        #[arg(long, conflicts_with = "ui")]
        no_ui: bool,
    },
    /// Restart a driver when it dies (non-zero exit or a signal), with backoff; forward
    /// SIGTERM/SIGINT for a graceful stop; exit with the driver's status.
    Supervise(supervise::SuperviseArgs),
    /// List checkpoints, state snapshots, the driver log and pending batches of a
    /// checkpoint location, verifying every CRC; exits 2 when something is damaged.
    Inspect {
        /// The checkpoint location.
        location: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The driver `sluice bench restart` kills and restarts (not for direct use).
    #[command(hide = true)]
    BenchRestartDriver {
        #[arg(long)]
        keys: u64,
        #[arg(long)]
        checkpoint: String,
        #[arg(long)]
        batch_ms: u64,
    },
    /// Reproducible benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Subcommand, Debug)]
enum BenchWhat {
    /// Word count over newline-separated text from a TCP server (as Spark's
    /// socketTextStream); one JSON line per batch on stdout
    /// ({"batch_time_ms","done_ms","records","keys","total"}; `total` is cumulative with
    /// --stateful), and a summary line on stderr once the source is idle.
    Wordcount {
        /// The text server, HOST:PORT.
        #[arg(long)]
        socket: String,
        /// Batch interval in ms.
        #[arg(long, default_value_t = 1000)]
        batch_ms: u64,
        /// Cumulative counts (update_state_by_key) instead of per-batch counts.
        #[arg(long)]
        stateful: bool,
        /// Every received block durable in the receiver WAL before it is counted.
        #[arg(long)]
        wal: bool,
        /// Checkpoint location (needed with --stateful or --wal).
        #[arg(long)]
        checkpoint: Option<String>,
        /// Stop after the source has been idle this many seconds.
        #[arg(long, default_value_t = 2.0)]
        idle_secs: f64,
        /// Serve the web UI and /metrics at this address while it runs (off by default).
        #[arg(long, value_name = "ADDR")]
        ui: Option<String>,
    },
    /// Restart-to-first-completed-batch after SIGKILL with N keys of state.
    Restart {
        /// State sizes to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
        keys: Vec<u64>,
        /// Checkpoint location under which each run makes its own prefix (default: a
        /// temporary local directory); e.g. s3://bucket/prefix or rocksdb:///tmp/x.
        #[arg(long)]
        checkpoint: Option<String>,
        /// Batch interval in ms (the first batch after restart may wait up to one).
        #[arg(long, default_value_t = 100)]
        batch_ms: u64,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// A stateful job with N keys, a share of them changing each batch, checkpointed
    /// every batch: scheduling delay, snapshot bytes (full, then incremental), restore
    /// and restart-to-first-batch time, with checkpoints written on their own thread
    /// and then on the scheduler thread.
    Checkpoint {
        /// Keys of state.
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        /// Percent of the keys changing per batch.
        #[arg(long, default_value_t = 1.0)]
        change_pct: f64,
        /// Batch interval in ms.
        #[arg(long, default_value_t = 1000)]
        batch_ms: u64,
        /// Batches to run before the restart.
        #[arg(long, default_value_t = 10)]
        batches: u64,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// One batch of N rows through the exactly-once PostgreSQL and MySQL/MariaDB sinks:
    /// one statement per row beside many rows per statement, each a fresh table and one
    /// transaction. URLs default to SLUICE_TEST_POSTGRES_URL / SLUICE_TEST_MYSQL_URL
    /// (`eval "$(scripts/dev-servers.sh env)"`).
    Sql {
        /// PostgreSQL URL.
        #[arg(long)]
        postgres: Option<String>,
        /// MySQL / MariaDB URL.
        #[arg(long)]
        mysql: Option<String>,
        /// Rows in the batch.
        #[arg(long, default_value_t = 100_000)]
        rows: u64,
        /// Runs of each measurement.
        #[arg(long, default_value_t = 2)]
        runs: u32,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// The Kafka direct source's read throughput (a count over a 3-partition topic of
    /// 100-byte records) beside the Kafka client's own read ceiling on that topic, and
    /// topic-to-topic exactly-once ETL throughput, on the inputs of bench/spark (filled
    /// first unless already there); one JSON line per run.
    Kafka(bench_kafka::KafkaBenchOptions),
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

/// The `sluice` command: parses the process's arguments and runs the command.
pub fn main() -> ExitCode {
    main_with(std::env::args_os())
}

/// The `sluice` command with these arguments (the first is the program name).
pub fn main_with<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    ExitCode::from(status_with(args))
}

/// Like [`main_with`], the exit status as a number (for a caller that exits itself).
pub fn status_with<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    sluice::tune_allocator();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let cli = Cli::parse_from(args);
    let res = match cli.command {
        Command::Demo {
            checkpoint,
            output,
            batch_ms,
            rate,
            duration,
            quiet,
            input_dir,
            exit_when_idle,
            kafka_topic,
            kafka_brokers,
            kafka_output_topic,
            kafka_max_rate_per_partition,
            ui,
            no_ui,
        } => demo::run(demo::DemoOptions {
            ui_next_free_port: ui.is_none(),
            ui: (!no_ui).then(|| ui.unwrap_or_else(|| demo::DEFAULT_UI.to_owned())),
            checkpoint,
            output,
            batch_ms,
            rate,
            duration: duration.map(std::time::Duration::from_secs_f64),
            quiet,
            input_dir,
            exit_when_idle: exit_when_idle.map(std::time::Duration::from_secs_f64),
            kafka_topic,
            kafka_brokers,
            kafka_output_topic,
            kafka_max_rate: kafka_max_rate_per_partition,
        })
        .map_err(|e| e.to_string()),
        Command::Supervise(args) => return args.status("sluice supervise"),
        Command::Inspect { location, json } => {
            return inspect::run(&location, json);
        }
        Command::Bench {
            what: BenchWhat::Wal { dir, quick, json },
        } => bench_wal::run(dir, quick, json),
        Command::Bench {
            what: BenchWhat::Kafka(o),
        } => bench_kafka::run(&o),
        Command::Bench {
            what:
                BenchWhat::Checkpoint {
                    keys,
                    change_pct,
                    batch_ms,
                    batches,
                    json,
                },
        } => bench_checkpoint::run(bench_checkpoint::CheckpointBenchOptions {
            keys,
            change_pct,
            batch_ms,
            batches,
            json,
        }),
        Command::Bench {
            what:
                BenchWhat::Sql {
                    postgres,
                    mysql,
                    rows,
                    runs,
                    json,
                },
        } => bench_sql::run(bench_sql::SqlBenchOptions {
            postgres,
            mysql,
            rows,
            runs,
            json,
        }),
        Command::Bench {
            what:
                BenchWhat::Restart {
                    keys,
                    checkpoint,
                    batch_ms,
                    json,
                },
        } => bench_restart::run(&keys, checkpoint, batch_ms, json),
        Command::Bench {
            what:
                BenchWhat::Wordcount {
                    socket,
                    batch_ms,
                    stateful,
                    wal,
                    checkpoint,
                    idle_secs,
                    ui,
                },
        } => (|| -> Result<(), String> {
            let (host, port) = socket
                .rsplit_once(':')
                .ok_or_else(|| format!("--socket {socket:?}: use HOST:PORT"))?;
            let port = port
                .parse()
                .map_err(|_| format!("--socket {socket:?}: {port:?} is not a port"))?;
            bench_wordcount::run(bench_wordcount::WordcountOptions {
                host: host.to_owned(),
                port,
                batch_ms,
                stateful,
                wal,
                checkpoint,
                idle: std::time::Duration::from_secs_f64(idle_secs),
                ui,
            })
            .map_err(|e| e.to_string())
        })(),
        Command::BenchRestartDriver {
            keys,
            checkpoint,
            batch_ms,
        } => bench_restart::driver(keys, &checkpoint, batch_ms),
    };
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sluice: {e}");
            1
        }
    }
}
