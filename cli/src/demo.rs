//! `sluice demo`: a stateful word count over the built-in deterministic generator,
//! checkpointed to a local directory, that resumes where it was killed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::prelude::*;
use sluice::Result;

/// The demo's options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Checkpoint location (path, `file://`, `s3://…`, `rocksdb://…`).
    pub checkpoint: String,
    /// Where to write one directory per batch with the counts it updated.
    pub output: Option<PathBuf>,
    /// Batch interval in ms.
    pub batch_ms: u64,
    /// Generated lines per second.
    pub rate: u64,
    /// Stop gracefully after this long (default: run until killed or interrupted).
    pub duration: Option<Duration>,
    /// Print each batch's top words.
    pub quiet: bool,
    /// Count the words of text files moved into this directory instead of the generator.
    pub input_dir: Option<PathBuf>,
    /// Stop gracefully once no new input arrived for this long.
    pub exit_when_idle: Option<Duration>,
    /// Count the words of the values of this Kafka topic (with `kafka_brokers`).
    pub kafka_topic: Option<String>,
    /// The Kafka brokers (`host:port[,…]`) of `kafka_topic` and `kafka_output_topic`.
    pub kafka_brokers: Option<String>,
    /// Write every word a batch updated, with its new total, to this Kafka topic,
    /// exactly once (key = the word, value = the total as decimal text).
    pub kafka_output_topic: Option<String>,
    /// At most this many records per Kafka partition per second.
    pub kafka_max_rate: Option<u64>,
    /// Serve the web UI and `/metrics` here (`None`: no UI).
    pub ui: Option<String>,
    /// When the UI's port is busy, take the next free one (up to 20 further) instead
    /// of failing.
    pub ui_next_free_port: bool,
}

/// The demo's UI address by default.
pub const DEFAULT_UI: &str = "127.0.0.1:4040";

/// The UI addresses to try in order: none (no UI), the one asked for, or with
/// `ui_next_free_port` that port and the 20 after it.
fn ui_addresses(opts: &DemoOptions) -> Vec<Option<String>> {
    let Some(addr) = &opts.ui else {
        return vec![None];
    };
    let parsed = addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)));
    match parsed {
        Some((host, port)) if opts.ui_next_free_port && port != 0 => (port..=port
            .saturating_add(20))
            .map(|p| Some(format!("{host}:{p}")))
            .collect(),
        _ => vec![Some(addr.clone())],
    }
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            checkpoint: "sluice-demo-checkpoint".into(),
            output: None,
            batch_ms: 1000,
            rate: 2000,
            duration: None,
            quiet: false,
            input_dir: None,
            exit_when_idle: None,
            kafka_topic: None,
            kafka_brokers: None,
            kafka_output_topic: None,
            kafka_max_rate: None,
            ui: None,
            ui_next_free_port: false,
        }
    }
}

const WORDS: [&str; 24] = [
    "river", "stream", "sluice", "gate", "water", "flow", "batch", "block", "log", "state",
    "crash", "restart", "window", "key", "count", "spark", "rust", "disk", "fsync", "epoch",
    "offset", "record", "sink", "replay",
];

/// Line `n` of the demo's generator: three words picked deterministically from `n`.
pub fn demo_line(n: u64) -> String {
    let h = sluice::stable_hash(&n);
    (0..3)
        .map(|i| WORDS[((h >> (i * 16)) % WORDS.len() as u64) as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

/// The words of a Kafka record's value; a value that is not UTF-8 text fails the batch
/// with an error naming the record (its topic, partition and offset).
fn kafka_text(r: &sluice::KafkaRecord) -> Result<String> {
    let v = r.value.as_deref().unwrap_or_default();
    match std::str::from_utf8(v) {
        Ok(s) => Ok(s.to_owned()),
        Err(e) => Err(sluice::EngineError::Malformed {
            source_name: format!(
                "kafka record {}-{} at offset {}",
                r.topic, r.partition, r.offset
            ),
            reason: format!(
                "the value is not UTF-8 text ({e}); the demo counts the words of UTF-8 text values"
            ),
        }),
    }
}

/// The demo's input: the Kafka topic, the input directory or the generator.
fn demo_lines(ssc: &StreamingContext, o: &DemoOptions) -> Result<DStream<String>> {
    match (&o.kafka_topic, &o.kafka_brokers, &o.input_dir) {
        (Some(topic), Some(brokers), None) => {
            let mut source = sluice::KafkaSource::new(brokers.clone()).topics([topic]);
            if let Some(r) = o.kafka_max_rate {
                source = source.max_rate_per_partition(r);
            }
            ssc.kafka_direct_stream(source)?
                .transform(|b, _| b.iter().map(kafka_text).collect())
        }
        (None, _, Some(dir)) => ssc.text_file_stream(dir.clone()),
        (None, _, None) => ssc.generator_stream("demo-lines", o.rate, demo_line),
        (Some(_), None, _) => Err(sluice::EngineError::Config {
            setting: "--kafka-topic".into(),
            reason: "needs --kafka-brokers HOST:PORT".into(),
        }),
        (Some(_), Some(_), Some(_)) => Err(sluice::EngineError::Config {
            setting: "--kafka-topic".into(),
            reason: "reads Kafka instead of --input-dir: give one of them".into(),
        }),
    }
}

/// Runs the demo until it is stopped (duration, Ctrl-C/SIGTERM) or killed.
pub fn run(opts: DemoOptions) -> Result<()> {
    if opts.kafka_output_topic.is_some() && opts.kafka_brokers.is_none() {
        return Err(sluice::EngineError::Config {
            setting: "--kafka-output-topic".into(),
            reason: "needs --kafka-brokers HOST:PORT".into(),
        });
    }
    let base = StreamingConf::new("sluice-demo", Duration::from_millis(opts.batch_ms))
        .checkpoint(opts.checkpoint.clone())
        .checkpoint_interval(Duration::from_millis(opts.batch_ms * 5));
    let batches = Arc::new(AtomicU64::new(0));
    // The UI address, and with `ui_next_free_port` the next ports to try when it is busy.
    let addresses = ui_addresses(&opts);
    let mut attempt = 0;
    let ssc = loop {
        let mut conf = base.clone();
        if let Some(addr) = &addresses[attempt] {
            conf = conf.ui(addr.clone());
        }
        let conf = conf.with_env()?;
        let (o, b2) = (opts.clone(), batches.clone());
        match StreamingContext::get_or_create(conf, move |ssc| build(ssc, &o, &b2)) {
            Err(sluice::EngineError::Config { setting, .. })
                if setting == "ui" && attempt + 1 < addresses.len() =>
            {
                attempt += 1;
            }
            res => break res?,
        }
    };
    let idle = Arc::new(IdleWatch::default());
    ssc.add_listener(idle.clone());
    ssc.start()?;
    if let Some(addr) = ssc.ui_addr() {
        eprintln!(
            "sluice demo: web UI at http://{addr}/ (Prometheus metrics at http://{addr}/metrics)"
        );
    }
    let stop = crate::signals::stop_requested();
    let t0 = Instant::now();
    loop {
        if ssc.await_termination_timeout(Some(Duration::from_millis(100)))? {
            return Ok(());
        }
        let timed_out = opts.duration.is_some_and(|d| t0.elapsed() >= d);
        let idle_out = opts.exit_when_idle.is_some_and(|d| idle.idle_for(t0) >= d);
        if idle_out {
            eprintln!(
                "sluice demo: no new input for {:?}",
                opts.exit_when_idle.unwrap_or_default()
            );
        }
        if timed_out || idle_out || stop.load(Ordering::SeqCst) {
            eprintln!(
                "sluice demo: stopping gracefully after {} batches",
                batches.load(Ordering::Relaxed)
            );
            return ssc.stop(true);
        }
    }
}

/// Defines the demo's graph on `ssc` (on every start: `get_or_create` runs it).
fn build(ssc: &StreamingContext, o: &DemoOptions, b2: &Arc<AtomicU64>) -> Result<()> {
    let b2 = b2.clone();
    let lines = demo_lines(ssc, o)?;
    let words = lines
        .flat_map(|l: &String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())?
        .map(|w: &String| (w.clone(), 1u64))?;
    // Cumulative counts, plus which words this batch touched.
    let counts =
        words.update_state_by_key("word-counts", |vs: &[u64], s: Option<&(u64, bool)>| {
            let total = s.map_or(0, |s| s.0) + vs.iter().sum::<u64>();
            Some((total, !vs.is_empty()))
        })?;
    if let (Some(out), Some(brokers)) = (&o.kafka_output_topic, &o.kafka_brokers) {
        // One transaction per batch; the sink id (hence the transactional id) is per
        // output topic, so two demos writing different topics never fence each other.
        let sink =
            sluice::sinks::KafkaSink::new(brokers.clone(), out.clone(), format!("demo-{out}"));
        counts
            .filter(|(_, (_, touched))| *touched)?
            .save_to_kafka(sink, |(w, (c, _)): &(String, (u64, bool))| {
                (w.clone(), c.to_string())
            })?;
    }
    let quiet = o.quiet;
    let output = o.output.clone();
    counts.foreach_batch(move |b| {
        let mut updated: Vec<(String, u64)> = b
            .batch
            .iter()
            .filter(|(_, (_, touched))| *touched)
            .map(|(w, (c, _))| (w.clone(), *c))
            .collect();
        updated.sort();
        if let Some(dir) = &output {
            write_batch(dir, b.time, &updated)?;
        }
        b2.fetch_add(1, Ordering::Relaxed);
        if !quiet {
            let total: u64 = b.batch.iter().map(|(_, (c, _))| c).sum();
            let mut top = updated.clone();
            top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let top: Vec<String> = top
                .iter()
                .take(5)
                .map(|(w, c)| format!("{w}={c}"))
                .collect();
            println!(
                "batch {} ms: {} words counted so far; top: {}",
                b.time.0,
                total,
                top.join(" ")
            );
        }
        Ok(())
    })?;
    Ok(())
}

/// Writes `DIR/batch-<ms>` atomically: the counts the batch updated, one `word count`
/// per line. A replayed batch finds its file published and leaves it.
fn write_batch(dir: &std::path::Path, t: BatchTime, rows: &[(String, u64)]) -> Result<()> {
    let io = |e| sluice::EngineError::io(dir.display().to_string(), e);
    let path = dir.join(format!("batch-{:020}", t.0));
    if path.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(".batch-{:020}.tmp", t.0));
    let mut text = String::new();
    for (w, c) in rows {
        text.push_str(&format!("{w} {c}\n"));
    }
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        // Rule: the file is durable before it is published.
        f.sync_all().map_err(io)?;
    }
    sluice::failpoints::point("mid-sink");
    // Rule: publish by rename, then fsync the directory.
    std::fs::rename(&tmp, &path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// Tracks when a batch last carried input.
#[derive(Debug, Default)]
pub(crate) struct IdleWatch {
    /// Milliseconds since the demo started at the last batch with records (0: none yet).
    last_input_ms: AtomicU64,
    start: std::sync::OnceLock<Instant>,
}

impl IdleWatch {
    pub(crate) fn idle_for(&self, t0: Instant) -> Duration {
        let _ = self.start.set(t0);
        let last = Duration::from_millis(self.last_input_ms.load(Ordering::SeqCst));
        t0.elapsed().saturating_sub(last)
    }
}

impl StreamingListener for IdleWatch {
    fn on_batch_completed(&self, info: &BatchInfo) {
        if info.records > 0 {
            if let Some(t0) = self.start.get() {
                self.last_input_ms
                    .store(t0.elapsed().as_millis() as u64, Ordering::SeqCst);
            }
        }
    }
}
