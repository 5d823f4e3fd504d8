//! `sluice-chaos run`: starts the reference job under the supervise loop, feeds it,
//! injects the seeded faults, lets it drain, stops it gracefully and checks every
//! output against the oracle.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use rdkafka::client::ClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use crate::broker::Broker;
use crate::driver::{self, WINDOW_BATCHES};
use crate::oracle::{self, Counts, Outputs, Verdict};
use crate::proxy::{Mode, Proxy};
use crate::rng::Rng;

/// `sluice-chaos run`'s options.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub seed: u64,
    pub kills: u32,
    pub duration: Duration,
    /// `None`: a local directory in the work directory; `s3`: a moto server started for
    /// the run (behind the fault proxy); anything else: that location.
    pub checkpoint: Option<String>,
    pub batch_ms: u64,
    /// The PostgreSQL database the job writes to; `None`: a server started for the
    /// run by `sluice_testkit` (stopped when the run ends).
    pub pg: Option<String>,
    /// Keep the work directory (it is kept anyway when the run fails).
    pub work: Option<PathBuf>,
    /// Start a Kafka broker for the run: the job also reads a topic with the direct
    /// source and writes its per-batch counts to another through the exactly-once
    /// Kafka sink; the broker is SIGKILLed and restarted, and paused, while it runs.
    pub kafka: bool,
}

/// A fault the harness injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    Kill,
    Pause,
    FsyncFail,
    TornWrite,
    DiskFull,
    S3Down,
    S3Latency,
    KafkaKill,
    KafkaPause,
}

impl FaultKind {
    fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "sigkill",
            FaultKind::Pause => "sigstop",
            FaultKind::FsyncFail => "fsync_fail",
            FaultKind::TornWrite => "torn_write",
            FaultKind::DiskFull => "enospc",
            FaultKind::S3Down => "s3_outage",
            FaultKind::S3Latency => "s3_latency",
            FaultKind::KafkaKill => "kafka_kill",
            FaultKind::KafkaPause => "kafka_pause",
        }
    }
}

/// The run's result.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub location: String,
    pub faults: BTreeMap<FaultKind, u32>,
    pub restarts: u32,
    pub verdict: Verdict,
    pub recovery_ms: Vec<u64>,
    pub elapsed: Duration,
    /// Set when the run itself went wrong (the job never drained, did not stop, ...).
    pub failure: Option<String>,
}

impl Report {
    /// Clean: nothing lost, repeated or wrong, and the run completed.
    pub fn passed(&self) -> bool {
        self.failure.is_none() && self.verdict.clean()
    }

    fn percentile(&self, p: f64) -> Option<u64> {
        let mut v = self.recovery_ms.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(i).copied()
    }

    /// The table and the JSON line.
    pub fn render(&self) -> String {
        let v = &self.verdict;
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        let ms = |x: Option<u64>| x.map_or("-".into(), |x| format!("{x} ms"));
        let mut s = String::new();
        let rows = [
            ("seed", self.seed.to_string()),
            ("checkpoint", self.location.clone()),
            ("faults injected", faults.join(", ")),
            ("restarts", self.restarts.to_string()),
            ("batches", v.batches.to_string()),
            ("records in", v.records_in.to_string()),
            ("records out", v.records_out.to_string()),
            (
                "kafka out",
                v.records_out_kafka.map_or("-".into(), |n| n.to_string()),
            ),
            ("lost", v.lost.to_string()),
            ("duplicated", v.duplicated.to_string()),
            ("wrong", v.wrong.to_string()),
            ("recovery p50", ms(self.percentile(0.5))),
            ("recovery max", ms(self.recovery_ms.iter().max().copied())),
            ("elapsed", format!("{:.1} s", self.elapsed.as_secs_f64())),
            (
                "result",
                if self.passed() {
                    "PASS".into()
                } else {
                    "FAIL".into()
                },
            ),
        ];
        for (k, val) in rows {
            s.push_str(&format!("{k:<16} {val}\n"));
        }
        if let Some(f) = &self.failure {
            s.push_str(&format!("failure          {f}\n"));
        }
        for p in &v.problems {
            s.push_str(&format!("  problem: {p}\n"));
        }
        let json = serde_json::json!({
            "seed": self.seed,
            "checkpoint": self.location,
            "faults": self.faults.iter().map(|(k, n)| (k.name().to_owned(), *n)).collect::<BTreeMap<_, _>>(),
            "faults_total": self.faults.values().sum::<u32>(),
            "restarts": self.restarts,
            "batches": v.batches,
            "records_in": v.records_in,
            "records_out": v.records_out,
            "records_out_kafka": v.records_out_kafka,
            "lost": v.lost,
            "duplicated": v.duplicated,
            "wrong": v.wrong,
            "recovery_p50_ms": self.percentile(0.5),
            "recovery_max_ms": self.recovery_ms.iter().max(),
            "elapsed_s": (self.elapsed.as_secs_f64() * 10.0).round() / 10.0,
            "passed": self.passed(),
            "failure": self.failure,
        });
        s.push_str(&format!("{json}\n"));
        s
    }
}

/// What the driver reports on stdout, as the harness saw it.
#[derive(Debug, Default)]
struct Seen {
    /// The running driver's pid (None between a kill and the next `ready`).
    pid: Option<i32>,
    readies: u32,
    /// Completed batches (arrival instants), in order.
    batches: Vec<Instant>,
    last_batch: Option<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Notes the first record the Kafka producer could not deliver.
#[derive(Default)]
struct Delivery {
    failed: Mutex<Option<String>>,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            lock(&self.failed).get_or_insert_with(|| e.to_string());
        }
    }
}

/// Writes lines to the Kafka input topic: idempotent, and retried for as long as a
/// broker outage of the run can last, so each line lands exactly once.
struct KafkaFeed {
    /// The harness counts a line when it hands it over: delivery failures are
    /// noted by [`Delivery`] and fail the run.
    producer: BaseProducer<Delivery>,
    brokers: String,
}

impl KafkaFeed {
    fn new(brokers: &str) -> Result<KafkaFeed, String> {
        let producer = sluice_testkit::kafka_client::config(brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "600000")
            .create_with_context(Delivery::default())
            .map_err(|e| format!("kafka producer for {brokers}: {e}"))?;
        Ok(KafkaFeed {
            producer,
            brokers: brokers.to_owned(),
        })
    }

    fn send(&self, partition: i32, line: &str) -> Result<(), String> {
        let rec = BaseRecord::<(), str>::to(driver::KAFKA_INPUT)
            .partition(partition)
            .payload(line);
        sluice::sinks::kafka::send_waiting(&self.producer, rec).map_err(|e| {
            format!(
                "producing to {} on {}: {e}",
                driver::KAFKA_INPUT,
                self.brokers
            )
        })?;
        self.producer.poll(Duration::ZERO);
        self.failed()
    }

    fn failed(&self) -> Result<(), String> {
        match lock(&self.producer.context().failed).as_ref() {
            Some(e) => Err(format!(
                "a line for {} was not delivered: {e}",
                driver::KAFKA_INPUT
            )),
            None => Ok(()),
        }
    }

    /// Waits until every line handed over is delivered.
    fn flush(&self) -> Result<(), String> {
        self.producer
            .flush(Duration::from_secs(600))
            .map_err(|e| format!("flushing the lines for {}: {e}", driver::KAFKA_INPUT))?;
        self.failed()
    }
}

/// Writes input files into `dir`, lines into the broker, and with `kafka` lines into
/// the Kafka input topic until `stop`, counting every word into `oracle`.
fn produce(
    mut rng: Rng,
    dir: PathBuf,
    broker: Broker,
    kafka: Option<KafkaFeed>,
    oracle: Arc<Mutex<Counts>>,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let mut file_no = 0u64;
    let mut tick = 0u64;
    while !stop.load(Ordering::SeqCst) {
        for _ in 0..rng.range(2, 20) {
            let l = oracle::line(&mut rng);
            oracle::count_line(&mut lock(&oracle), &l);
            broker.push(l);
        }
        if let Some(k) = &kafka {
            for _ in 0..rng.range(2, 20) {
                let l = oracle::line(&mut rng);
                oracle::count_line(&mut lock(&oracle), &l);
                k.send(rng.range(0, 2) as i32, &l)?;
            }
        }
        if tick.is_multiple_of(4) {
            // A file, moved in atomically: written under a hidden name, then renamed.
            let mut text = String::new();
            let mut counts = Counts::new();
            for _ in 0..rng.range(5, 60) {
                let l = oracle::line(&mut rng);
                oracle::count_line(&mut counts, &l);
                text.push_str(&l);
                text.push('\n');
            }
            let tmp = dir.join(format!(".in-{file_no}.tmp"));
            let path = dir.join(format!("in-{file_no:06}.txt"));
            std::fs::write(&tmp, &text)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            let mut o = lock(&oracle);
            for (w, n) in counts {
                *o.entry(w).or_default() += n;
            }
            file_no += 1;
        }
        tick += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    kafka.as_ref().map_or(Ok(()), KafkaFeed::flush)
}

/// The checkpoint location, the extra environment of the driver, and what must stay
/// alive for the run (moto, proxy).
struct Location {
    url: String,
    env: Vec<(String, String)>,
    proxy: Option<Proxy>,
    _moto: Option<sluice_testkit::MotoServer>,
    /// Whether disk faults reach the durable state (a local location).
    local: bool,
}

fn location(o: &RunOptions, work: &Path) -> Result<Location, String> {
    match o.checkpoint.as_deref() {
        None => Ok(Location {
            url: work.join("checkpoint").display().to_string(),
            env: vec![],
            proxy: None,
            _moto: None,
            local: true,
        }),
        Some("s3") => {
            let moto = sluice_testkit::MotoServer::start()
                .map_err(|e| format!("starting moto for --checkpoint s3: {e}"))?;
            moto.create_bucket("chaos")
                .map_err(|e| format!("creating the bucket on moto: {e}"))?;
            let proxy = Proxy::start(format!("127.0.0.1:{}", moto.port()))
                .map_err(|e| format!("starting the fault proxy: {e}"))?;
            let mut env = sluice_testkit::s3_env(&moto, "chaos");
            for (k, v) in &mut env {
                if k == "AWS_ENDPOINT" {
                    *v = format!("http://{}", proxy.addr());
                }
            }
            Ok(Location {
                url: format!("s3://chaos/run-{}", o.seed),
                env,
                proxy: Some(proxy),
                _moto: Some(moto),
                local: false,
            })
        }
        Some(url) if url.starts_with("s3://") => {
            // A user's S3: faults through the proxy when its endpoint is plain HTTP.
            let endpoint = std::env::var("AWS_ENDPOINT")
                .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                .ok();
            let upstream = endpoint
                .as_deref()
                .and_then(|e| e.strip_prefix("http://"))
                .map(|e| e.trim_end_matches('/').to_owned());
            let (proxy, env) = match upstream {
                Some(up) => {
                    let p =
                        Proxy::start(up).map_err(|e| format!("starting the fault proxy: {e}"))?;
                    let env = vec![("AWS_ENDPOINT".to_owned(), format!("http://{}", p.addr()))];
                    (Some(p), env)
                }
                None => (None, vec![]),
            };
            Ok(Location {
                url: url.to_owned(),
                env,
                proxy,
                _moto: None,
                local: false,
            })
        }
        Some(other) => Ok(Location {
            url: other.to_owned(),
            env: vec![],
            proxy: None,
            _moto: None,
            local: !other.contains("://") || other.starts_with("file://"),
        }),
    }
}

/// The faults of the run, in order: `kills` SIGKILLs plus at least one of every other
/// kind that applies to the location, shuffled by the seed.
fn schedule(rng: &mut Rng, kills: u32, loc: &Location, kafka: bool) -> Vec<FaultKind> {
    let mut kinds = vec![FaultKind::Kill; kills as usize];
    let extra = (kills / 8).max(1);
    let mut others = vec![FaultKind::Pause];
    if loc.local {
        others.extend([
            FaultKind::FsyncFail,
            FaultKind::TornWrite,
            FaultKind::DiskFull,
        ]);
    }
    if loc.proxy.is_some() {
        others.extend([FaultKind::S3Down, FaultKind::S3Latency]);
    }
    if kafka {
        others.extend([FaultKind::KafkaKill, FaultKind::KafkaPause]);
    }
    for k in others {
        kinds.extend(std::iter::repeat_n(k, extra as usize));
    }
    // Fisher-Yates with the run's generator.
    for i in (1..kinds.len()).rev() {
        let j = rng.range(0, i as u64) as usize;
        kinds.swap(i, j);
    }
    kinds
}

fn pg_connect(url: &str) -> Result<postgres::Client, String> {
    postgres::Client::connect(url, postgres::NoTls).map_err(|e| {
        format!(
            "PostgreSQL is not reachable at {url}: {e} (the reference job writes to it; \
             start it, or leave out --pg and SLUICE_CHAOS_PG to have one started)"
        )
    })
}

fn pg_outputs(pg: &mut postgres::Client, table: &str) -> Result<Outputs, String> {
    let rows = pg
        .query(&format!("SELECT batch_ms, word, n FROM {table}"), &[])
        .map_err(|e| format!("reading {table}: {e}"))?;
    let mut out = Outputs::default();
    for r in rows {
        let (t, w, n): (i64, String, i64) = (r.get(0), r.get(1), r.get(2));
        if out
            .deltas
            .entry(t as u64)
            .or_default()
            .insert(w.clone(), n as u64)
            .is_some()
        {
            out.repeated_rows.push((t as u64, w));
        }
    }
    Ok(out)
}

fn pg_total(pg: &mut postgres::Client, table: &str) -> Result<u64, String> {
    let r = pg
        .query_one(
            &format!("SELECT COALESCE(SUM(n), 0)::BIGINT FROM {table}"),
            &[],
        )
        .map_err(|e| format!("reading {table}: {e}"))?;
    Ok(r.get::<_, i64>(0) as u64)
}

/// Starts `sluice-chaos supervise -- sluice-chaos driver …` with stdout piped.
fn start_supervisor(
    o: &RunOptions,
    work: &Path,
    loc: &Location,
    broker: &Broker,
    table: &str,
    pg: &str,
    kafka: Option<&str>,
) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating sluice-chaos: {e}"))?;
    let log = std::fs::File::create(work.join("driver.log"))
        .map_err(|e| format!("creating driver.log: {e}"))?;
    let mut cmd = Command::new(&exe);
    // The harness's own settings (`SLUICE_CHAOS_PG`, the campaign's `SLUICE_CHAOS_SEED`)
    // are not the job's: its `StreamingConf` rejects `SLUICE_*` variables it does not
    // know, so the driver would fail at every start.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SLUICE_CHAOS_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["supervise", "--max-restarts", "100000", "--within", "1m"])
        .args(["--backoff", "50ms..400ms", "--"])
        .arg(&exe)
        .arg("driver")
        .arg("--work")
        .arg(work)
        .args(["--checkpoint", &loc.url])
        .args(["--batch-ms", &o.batch_ms.to_string()])
        .args(["--broker", broker.addr()])
        .args(["--pg", pg])
        .args(["--table", table])
        .args(kafka.iter().flat_map(|k| ["--kafka", k]))
        .envs(loc.env.iter().map(|(k, v)| (k, v)))
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting the supervisor: {e}"))
}

/// Runs a chaos campaign; `Err` only when it could not be set up.
pub fn run(o: &RunOptions) -> Result<Report, String> {
    let started = Instant::now();
    let (work_dir, _tmp) = match &o.work {
        Some(w) => {
            std::fs::create_dir_all(w).map_err(|e| format!("{}: {e}", w.display()))?;
            (w.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("sluice-chaos-")
                .tempdir()
                .map_err(|e| format!("creating a work directory: {e}"))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let input = work_dir.join("input");
    std::fs::create_dir_all(&input).map_err(|e| format!("{}: {e}", input.display()))?;
    let mut root = Rng::new(o.seed);
    let input_rng = root.fork(1);
    let mut fault_rng = root.fork(2);

    let loc = location(o, &work_dir)?;
    let (pg_url, _pg_server) = match &o.pg {
        Some(url) => (url.clone(), None),
        None => {
            let server = sluice_testkit::PostgresServer::start()
                .map_err(|e| format!("starting PostgreSQL for the run (or pass --pg URL): {e}"))?;
            (server.url(), Some(server))
        }
    };
    let table = format!("chaos_{}_{}", o.seed, std::process::id());
    let mut pg = pg_connect(&pg_url)?;
    pg.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS {table}_markers; \
         CREATE TABLE {table} (batch_ms BIGINT NOT NULL, word TEXT NOT NULL, n BIGINT NOT NULL)"
    ))
    .map_err(|e| format!("creating {table}: {e}"))?;

    let broker = Broker::start().map_err(|e| format!("starting the broker: {e}"))?;
    let mut kafka = match o.kafka {
        false => None,
        true => Some(start_kafka()?),
    };
    let brokers = kafka.as_ref().map(sluice_testkit::KafkaServer::brokers);
    let feed = brokers.as_deref().map(KafkaFeed::new).transpose()?;
    let oracle: Arc<Mutex<Counts>> = Arc::default();
    let stop_input = Arc::new(AtomicBool::new(false));
    let producer = {
        let (dir, b, orc, stop) = (
            input.clone(),
            broker.clone(),
            oracle.clone(),
            stop_input.clone(),
        );
        std::thread::spawn(move || produce(input_rng, dir, b, feed, orc, stop))
    };

    let mut sup = start_supervisor(
        o,
        &work_dir,
        &loc,
        &broker,
        &table,
        &pg_url,
        brokers.as_deref(),
    )?;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let (ready_tx, ready_rx) = mpsc::channel::<Instant>();
    {
        let stdout = sup.stdout.take().ok_or("no stdout from the supervisor")?;
        let seen = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut s = lock(&seen);
                if let Some(pid) = line.strip_prefix("ready ").and_then(|p| p.parse().ok()) {
                    s.pid = Some(pid);
                    s.readies += 1;
                    let _ = ready_tx.send(Instant::now());
                } else if let Some(t) = line
                    .strip_prefix("batch ")
                    .and_then(|r| r.split(' ').next())
                    .and_then(|t| t.parse().ok())
                {
                    s.batches.push(Instant::now());
                    s.last_batch = Some(t);
                }
            }
        });
    }

    let mut report = Report {
        seed: o.seed,
        location: o.checkpoint.clone().unwrap_or_else(|| "local".into()),
        faults: BTreeMap::new(),
        restarts: 0,
        verdict: Verdict::default(),
        recovery_ms: vec![],
        elapsed: Duration::ZERO,
        failure: None,
    };
    let batch = Duration::from_millis(o.batch_ms);
    let result = campaign(
        o,
        &mut fault_rng,
        &loc,
        &work_dir,
        &seen,
        &ready_rx,
        &mut report,
        &mut sup,
        kafka.as_mut(),
    );
    if let Err(e) = &result {
        report.failure = Some(e.clone());
    }

    // Drain: no new input; wait until everything produced is counted.
    stop_input.store(true, Ordering::SeqCst);
    match producer.join() {
        Ok(Err(e)) => report.failure = report.failure.take().or(Some(e)),
        Err(_) => {
            report.failure = report
                .failure
                .take()
                .or(Some("the producer panicked".into()))
        }
        Ok(Ok(())) => {}
    }
    if let Some(p) = &loc.proxy {
        p.set(Mode::Pass);
    }
    let want: u64 = lock(&oracle).values().sum();
    let drain_deadline = Instant::now() + Duration::from_secs(60).max(batch * 100);
    let mut counted = 0;
    while Instant::now() < drain_deadline {
        counted = pg_total(&mut pg, &table)?;
        if counted >= want && broker.acked() >= broker.produced() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A few more batches, so the last windows slide.
    std::thread::sleep(batch * (WINDOW_BATCHES as u32 + 2));

    // Graceful stop through the supervisor. A job that fell behind finishes its overdue
    // batches first: it has not stopped only when no batch completed for 60 s.
    let _ = kill(Pid::from_raw(sup.id() as i32), Signal::SIGTERM);
    let mut progress = (lock(&seen).batches.len(), Instant::now());
    let status = loop {
        if let Ok(Some(s)) = sup.try_wait() {
            break Some(s);
        }
        let done = lock(&seen).batches.len();
        if done != progress.0 {
            progress = (done, Instant::now());
        }
        if progress.1.elapsed() > Duration::from_secs(60) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    match status {
        Some(s) if s.success() => {}
        Some(s) => {
            report.failure = report
                .failure
                .take()
                .or(Some(format!("the supervised job ended with {s}")))
        }
        None => {
            if let Some(pid) = lock(&seen).pid {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = sup.kill();
            let _ = sup.wait();
            report.failure = report.failure.take().or(Some(
                "the job did not stop after SIGTERM: no batch completed for 60 s".into(),
            ));
        }
    }
    broker.stop();
    if counted < want && report.failure.is_none() {
        report.failure = Some(format!(
            "the job had counted {counted} of {want} words after draining for 60 s"
        ));
    }

    // Compare.
    let mut out = pg_outputs(&mut pg, &table)?;
    if let Some(b) = &brokers {
        let mut k = oracle::KafkaOut::default();
        for p in 0..KAFKA_PARTITIONS {
            for r in sluice_testkit::kafka_client::read_partition(
                b,
                driver::KAFKA_OUTPUT,
                p,
                "read_committed",
            )? {
                k.add(&r.key, &r.value)?;
            }
        }
        out.kafka = Some(k);
    }
    out.state = oracle::read_file_sink(&work_dir.join("out").join("state"), "state")?;
    out.window = oracle::read_file_sink(&work_dir.join("out").join("window"), "window")?;
    report.verdict = oracle::check(&lock(&oracle), &out, o.batch_ms, WINDOW_BATCHES);
    report.restarts = lock(&seen).readies.saturating_sub(1);
    report.elapsed = started.elapsed();

    let keep = o.work.is_some() || !report.passed();
    if keep {
        // The broker's log goes with its temporary directory: keep a copy beside the
        // driver's.
        if let Some(k) = &kafka {
            let _ = std::fs::copy(k.process().log_path(), work_dir.join("kafka.log"));
        }
        if let Some(t) = _tmp {
            let kept = t.keep();
            eprintln!("sluice-chaos: work directory kept at {}", kept.display());
        }
        eprintln!("sluice-chaos: PostgreSQL table {table} kept");
    } else {
        let _ = pg.batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS {table}_markers"
        ));
    }
    Ok(report)
}

/// Partitions of the Kafka input and output topics.
const KAFKA_PARTITIONS: i32 = 3;

/// A Kafka broker for the run, with its input and output topics.
fn start_kafka() -> Result<sluice_testkit::KafkaServer, String> {
    let k = sluice_testkit::KafkaServer::start()
        .map_err(|e| format!("starting Kafka for --kafka: {e}"))?;
    for t in [driver::KAFKA_INPUT, driver::KAFKA_OUTPUT] {
        sluice_testkit::kafka_client::create_topic(&k.brokers(), t, KAFKA_PARTITIONS)?;
    }
    Ok(k)
}

/// Waits until a driver is up (a `ready` after the last kill), or `deadline`.
fn wait_up(seen: &Mutex<Seen>, deadline: Instant) -> Result<i32, String> {
    loop {
        if let Some(pid) = lock(seen).pid {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            return Err("no driver came up within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Injects the faults.
#[allow(clippy::too_many_arguments)]
fn campaign(
    o: &RunOptions,
    rng: &mut Rng,
    loc: &Location,
    work: &Path,
    seen: &Mutex<Seen>,
    ready_rx: &mpsc::Receiver<Instant>,
    report: &mut Report,
    sup: &mut Child,
    mut kafka: Option<&mut sluice_testkit::KafkaServer>,
) -> Result<(), String> {
    let batch = Duration::from_millis(o.batch_ms);
    let faults = schedule(rng, o.kills, loc, kafka.is_some());
    let t0 = Instant::now();
    let spacing = o.duration.as_secs_f64() / (faults.len() as f64 + 1.0);
    let mut fault_no = 0u64;
    for (i, kind) in faults.iter().enumerate() {
        if let Ok(Some(s)) = sup.try_wait() {
            return Err(format!("the supervisor ended early ({s}); see driver.log"));
        }
        // Fault i at a random instant in its slot of the run.
        let at = spacing * (i as f64 + 0.5 + rng.range(0, 1000) as f64 / 1000.0);
        let when = t0 + Duration::from_secs_f64(at);
        while Instant::now() < when {
            std::thread::sleep(Duration::from_millis(5));
        }
        let pid = wait_up(seen, Instant::now() + Duration::from_secs(60))?;
        let pid = Pid::from_raw(pid);
        match kind {
            FaultKind::Kill => {
                // Sometimes right after a restart, in the middle of recovery.
                while ready_rx.try_recv().is_ok() {}
                let killed_at = Instant::now();
                lock(seen).pid = None;
                let _ = kill(pid, Signal::SIGKILL);
                let batches_before = lock(seen).batches.len();
                // Recovery time: from the kill to the first batch the next life completes.
                let deadline = killed_at + Duration::from_secs(60);
                let ready = ready_rx
                    .recv_timeout(Duration::from_secs(60))
                    .map_err(|_| "no driver came up within 60 s of a kill".to_string())?;
                loop {
                    let s = lock(seen);
                    if let Some(done) = s.batches[batches_before.min(s.batches.len())..]
                        .iter()
                        .find(|t| **t > ready)
                    {
                        report
                            .recovery_ms
                            .push(done.duration_since(killed_at).as_millis() as u64);
                        break;
                    }
                    drop(s);
                    if Instant::now() > deadline {
                        return Err("no batch completed within 60 s of a restart".into());
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                // Half of the next kills land during the next recovery.
                if rng.range(0, 1) == 0 {
                    std::thread::sleep(Duration::from_millis(rng.range(0, o.batch_ms * 2)));
                }
            }
            FaultKind::Pause => {
                let pause = batch.mul_f64(1.5 + rng.range(0, 1500) as f64 / 1000.0);
                let _ = kill(pid, Signal::SIGSTOP);
                std::thread::sleep(pause);
                let _ = kill(pid, Signal::SIGCONT);
            }
            FaultKind::FsyncFail | FaultKind::TornWrite | FaultKind::DiskFull => {
                let text = match kind {
                    FaultKind::FsyncFail => format!("fsync-fail {}", rng.range(1, 20)),
                    FaultKind::TornWrite => {
                        format!("torn-write {} {}", rng.range(1, 20), rng.range(0, 30))
                    }
                    _ => format!("enospc {}", rng.range(0, 8 * 1024)),
                };
                fault_no += 1;
                let dir = work.join("faults");
                let tmp = dir.join(format!(".f{fault_no}.tmp"));
                std::fs::write(&tmp, &text)
                    .and_then(|()| std::fs::rename(&tmp, dir.join(format!("f{fault_no}.fault"))))
                    .map_err(|e| format!("writing a fault file: {e}"))?;
            }
            FaultKind::S3Down | FaultKind::S3Latency => {
                let proxy = loc.proxy.as_ref().ok_or("no proxy for an S3 fault")?;
                let mode = match kind {
                    FaultKind::S3Down => Mode::Down,
                    _ => Mode::Latency(Duration::from_millis(rng.range(30, 300))),
                };
                proxy.set(mode);
                std::thread::sleep(Duration::from_millis(rng.range(300, 2500)));
                proxy.set(Mode::Pass);
            }
            FaultKind::KafkaKill => {
                let k = kafka.as_deref_mut().ok_or("no Kafka broker to kill")?;
                k.kill();
                std::thread::sleep(Duration::from_millis(rng.range(0, 2000)));
                k.restart().map_err(|e| {
                    format!(
                        "restarting Kafka after a kill: {e}\n{}",
                        k.process().log_tail()
                    )
                })?;
            }
            FaultKind::KafkaPause => {
                let k = kafka.as_deref().ok_or("no Kafka broker to pause")?;
                let signal = |s| {
                    k.process()
                        .signal(s)
                        .map_err(|e| format!("{s} to Kafka: {e}"))
                };
                signal(Signal::SIGSTOP)?;
                std::thread::sleep(Duration::from_millis(rng.range(300, 3000)));
                signal(Signal::SIGCONT)?;
            }
        }
        *report.faults.entry(*kind).or_default() += 1;
        let recovered = match kind {
            FaultKind::Kill => report
                .recovery_ms
                .last()
                .map_or(String::new(), |ms| format!(", first batch after {ms} ms")),
            _ => String::new(),
        };
        eprintln!(
            "sluice-chaos: [{}/{}] {} at {:.1} s{recovered}",
            i + 1,
            faults.len(),
            kind.name(),
            t0.elapsed().as_secs_f64()
        );
    }
    // The rest of the run's time, undisturbed.
    let end = t0 + o.duration;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::io::stderr().flush();
    Ok(())
}
