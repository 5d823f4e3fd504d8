//! Output operations: `print`, `foreach_batch`, `save_as_text_files`,
//! `save_as_object_files`.

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sluice_recovery::identity::upstream_inputs;

use crate::runtime::graph::{ExecutionEnv, NodeInfo};
use crate::runtime::io::{Input, Output};
use crate::sources::offsets::{InputOffsetRanges, OffsetRange};
use crate::{Batch, BatchTime, DStream, Data, EngineError, Result};

/// What `foreach_batch` hands the user: the batch, its time (the batch id an
/// exactly-once sink commits with), its partitions, and the offset ranges the Kafka
/// inputs upstream of the output read for it ([`BatchContext::offset_ranges`]).
#[derive(Debug)]
pub struct BatchContext<'a, T> {
    /// The batch time: stable across replays of the same batch after a restart.
    pub time: BatchTime,
    /// The batch's data.
    pub batch: &'a Batch<T>,
    /// The offset ranges of the upstream offset-based inputs at `time`.
    inputs: Arc<Vec<InputOffsetRanges>>,
}

impl<'a, T> BatchContext<'a, T> {
    /// A context for `batch` at `time` with no offset ranges: for calling a sink's
    /// `write_batch` directly (tests, benchmarks). `foreach_batch` makes its own.
    pub fn new(time: BatchTime, batch: &'a Batch<T>) -> Self {
        BatchContext {
            time,
            batch,
            inputs: Arc::default(),
        }
    }

    /// The same context carrying `inputs`' offset ranges (as `foreach_batch` would
    /// hand it to an output downstream of those inputs).
    pub fn with_offset_ranges(mut self, inputs: Vec<InputOffsetRanges>) -> Self {
        self.inputs = Arc::new(inputs);
        self
    }
}

impl<T> BatchContext<'_, T> {
    /// The batch id: the batch time in milliseconds.
    pub fn batch_id(&self) -> u64 {
        self.time.0
    }

    /// The Kafka offset ranges this batch read (Spark's `HasOffsetRanges`): one per
    /// partition of every Kafka input upstream of this output (through `map`,
    /// `filter`, joins, unions, …), input after input in definition order, each
    /// input's in partition order. They are the ranges in the batch's plan, so a batch
    /// replayed after a restart gets the same ones; store them in the same transaction
    /// as the batch's results to keep offsets of your own. Empty when no Kafka input
    /// is upstream. Only this batch time's ranges: a window's output gets the ranges of
    /// its newest batch, not of the whole window. With several Kafka inputs, use
    /// [`offset_ranges_by_input`](Self::offset_ranges_by_input), which names each.
    pub fn offset_ranges(&self) -> Vec<OffsetRange> {
        self.inputs
            .iter()
            .flat_map(|i| i.ranges.iter().cloned())
            .collect()
    }

    /// [`offset_ranges`](Self::offset_ranges) input by input, each with the input's
    /// stable name (see [`InputOffsetRanges::input`]).
    pub fn offset_ranges_by_input(&self) -> &[InputOffsetRanges] {
        &self.inputs
    }
}

struct FnOutput<T> {
    name: String,
    stream: DStream<T>,
    f: Box<dyn Fn(&BatchContext<'_, T>) -> Result<()> + Send + Sync>,
    /// The inputs upstream of `stream`, with their names (found once, at the first
    /// batch: the graph does not change after start).
    upstream: OnceLock<Vec<(String, Arc<dyn Input>)>>,
}

impl<T: Data> FnOutput<T> {
    /// The inputs upstream of the output's stream, by their stable keys (the same
    /// walk of the graph that decides which inputs a stateful operator reads).
    fn upstream(&self) -> &[(String, Arc<dyn Input>)] {
        self.upstream.get_or_init(|| {
            let (nodes, inputs) = self.stream.ctx.nodes_and_inputs();
            let graph: Vec<NodeInfo> = nodes.iter().map(|n| n.info().clone()).collect();
            // Inputs are registered with their nodes, so the n-th input node is the
            // n-th input.
            let keys = crate::durable::input_keys(&graph);
            let wanted = upstream_inputs(&graph)
                .into_iter()
                .nth(self.stream.node.info.id)
                .unwrap_or_default();
            keys.iter()
                .zip(inputs)
                .filter(|(k, _)| wanted.contains(k))
                .map(|(k, input)| (input_name(k), input))
                .collect()
        })
    }

    /// The offset ranges the upstream inputs read at `t`.
    fn offset_ranges(&self, t: BatchTime) -> Vec<InputOffsetRanges> {
        self.upstream()
            .iter()
            .filter_map(|(name, input)| {
                Some(InputOffsetRanges {
                    input: name.clone(),
                    ranges: input.offset_ranges(t)?,
                })
            })
            .collect()
    }
}

/// An input's name from its key `input:KIND:IDENTITY[#n]`: `IDENTITY[#n]`.
fn input_name(key: &str) -> String {
    key.strip_prefix("input:")
        .and_then(|k| k.split_once(':'))
        .map_or(key, |(_, name)| name)
        .to_owned()
}

impl<T: Data> Output for FnOutput<T> {
    fn describe(&self) -> String {
        format!(
            "{} (output of node {})",
            self.name, self.stream.node.info.id
        )
    }

    fn run(&self, t: BatchTime, env: &ExecutionEnv) -> Result<()> {
        if !self.stream.node.is_time(t, env) {
            return Ok(());
        }
        let batch = self.stream.batch(t, env)?;
        let ranges = self.offset_ranges(t);
        (self.f)(&BatchContext::new(t, &batch).with_offset_ranges(ranges))
    }
}

impl<T: Data> DStream<T> {
    fn output(
        &self,
        name: &str,
        f: impl Fn(&BatchContext<'_, T>) -> Result<()> + Send + Sync + 'static,
    ) -> Result<()> {
        self.ctx.add_output(Arc::new(FnOutput {
            name: name.into(),
            stream: self.clone(),
            f: Box::new(f),
            upstream: OnceLock::new(),
        }))
    }

    /// Runs `f` on every batch (with its time and partitions). Returning an error fails
    /// the batch and stops the context.
    pub fn foreach_batch(
        &self,
        f: impl Fn(&BatchContext<'_, T>) -> Result<()> + Send + Sync + 'static,
    ) -> Result<()> {
        self.output("foreach_batch", f)
    }

    /// Prints the first `n` elements of every batch, as Spark's `print` does.
    pub fn print(&self, n: usize) -> Result<()>
    where
        T: std::fmt::Debug,
    {
        self.output("print", move |c| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "-------------------------------------------");
            let _ = writeln!(out, "Time: {} ms", c.time.0);
            let _ = writeln!(out, "-------------------------------------------");
            for x in c.batch.iter().take(n) {
                let _ = writeln!(out, "{x:?}");
            }
            if c.batch.len() > n {
                let _ = writeln!(out, "...");
            }
            let _ = writeln!(out);
            Ok(())
        })
    }

    /// Writes every batch to the directory `PREFIX-<batch time ms>[.SUFFIX]`, one
    /// `part-NNNNN` file per partition, one element per line. The directory is published
    /// atomically (written under a temporary name, fsynced, renamed, parent fsynced); a
    /// batch replayed after a restart finds it published and leaves it as it is, so
    /// deterministic jobs write every batch exactly once.
    pub fn save_as_text_files(&self, prefix: impl Into<String>, suffix: &str) -> Result<()>
    where
        T: Display,
    {
        let prefix = prefix.into();
        let suffix = suffix.to_owned();
        self.output("save_as_text_files", move |c| {
            let dir = batch_dir(&prefix, &suffix, c.time);
            publish_dir(&dir, c.batch.partitions(), |x, out| writeln!(out, "{x}"))
        })
    }

    /// Like [`DStream::save_as_text_files`], each element bincode-encoded behind a
    /// `u32` length, in `part-NNNNN` files; read back with [`read_object_file`].
    pub fn save_as_object_files(&self, prefix: impl Into<String>, suffix: &str) -> Result<()> {
        let prefix = prefix.into();
        let suffix = suffix.to_owned();
        self.output("save_as_object_files", move |c| {
            let dir = batch_dir(&prefix, &suffix, c.time);
            publish_dir(&dir, c.batch.partitions(), |x, out| {
                let b = bincode::serde::encode_to_vec(x, bincode::config::standard())
                    .map_err(std::io::Error::other)?;
                out.write_all(&(b.len() as u32).to_le_bytes())?;
                out.write_all(&b)
            })
        })
    }
}

/// The directory a batch is saved to: `PREFIX-<ms>` or `PREFIX-<ms>.SUFFIX`.
pub fn batch_dir(prefix: &str, suffix: &str, t: BatchTime) -> PathBuf {
    if suffix.is_empty() {
        PathBuf::from(format!("{prefix}-{}", t.0))
    } else {
        PathBuf::from(format!("{prefix}-{}.{suffix}", t.0))
    }
}

/// Reads the elements of one `part-NNNNN` file written by `save_as_object_files`.
pub fn read_object_file<T: Data>(path: &Path) -> Result<Vec<T>> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::io(path.display().to_string(), e))?;
    let mut out = Vec::new();
    let mut at = 0;
    let bad = |reason: String| EngineError::Malformed {
        source_name: path.display().to_string(),
        reason,
    };
    while at < bytes.len() {
        if at + 4 > bytes.len() {
            return Err(bad(format!("record length cut short at offset {at}")));
        }
        let len =
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        at += 4;
        let end = at
            .checked_add(len)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(|| bad(format!("record at offset {} runs past the end", at - 4)))?;
        let (v, _) = sluice_wal::codec::decode_bounded(&bytes[at..end])
            .map_err(|e| bad(format!("record at offset {}: {e}", at - 4)))?;
        out.push(v);
        at = end;
    }
    Ok(out)
}

/// Writes one file per partition into a temporary directory beside `dir`, then
/// publishes it by rename. An existing `dir` means the batch was published before.
fn publish_dir<T>(
    dir: &Path,
    parts: &[Vec<T>],
    write: impl Fn(&T, &mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let io = |what: &Path, e| EngineError::io(what.display().to_string(), e);
    if dir.exists() {
        return Ok(());
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    for (i, part) in parts.iter().enumerate() {
        let path = tmp.join(format!("part-{i:05}"));
        let f = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
        let mut w = std::io::BufWriter::new(f);
        for x in part {
            write(x, &mut w).map_err(|e| io(&path, e))?;
        }
        let f = w.into_inner().map_err(|e| io(&path, e.into_error()))?;
        // Rule: every part is durable before the directory is published.
        f.sync_all().map_err(|e| io(&path, e))?;
    }
    std::fs::File::open(&tmp)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(&tmp, e))?;
    // Rule: publish by rename, then fsync the parent so the publish survives power loss.
    std::fs::rename(&tmp, dir).map_err(|e| io(dir, e))?;
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(parent, e))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::sources::queue::Allocations;
    use crate::{StreamingConf, StreamingContext};

    /// An input that reads nothing but reports one range per batch, `[t, t + 1)` of
    /// partition 0 of a topic named after it (as the Kafka source reports its plan).
    struct Offsets(String);

    impl Input for Offsets {
        fn describe(&self) -> String {
            self.0.clone()
        }
        fn kind(&self) -> &'static str {
            "offsets"
        }
        fn start(&self, _env: &ExecutionEnv) -> Result<()> {
            Ok(())
        }
        fn allocate(&self, _t: BatchTime, _env: &ExecutionEnv) -> Result<u64> {
            Ok(0)
        }
        fn stop_receiving(&self) {}
        fn drained(&self) -> bool {
            true
        }
        fn forget(&self, _t: BatchTime) {}
        fn offset_ranges(&self, t: BatchTime) -> Option<Vec<OffsetRange>> {
            Some(vec![OffsetRange {
                topic: self.0.clone(),
                partition: 0,
                from_offset: t.0 as i64,
                until_offset: t.0 as i64 + 1,
            }])
        }
    }

    fn offsets_stream(ssc: &StreamingContext, name: &str) -> DStream<u64> {
        let alloc = Arc::new(Allocations::default());
        ssc.input_stream(
            "offsets",
            name.into(),
            alloc,
            Arc::new(Offsets(name.into())),
        )
        .unwrap()
    }

    type Seen = Arc<Mutex<Vec<(BatchTime, Vec<InputOffsetRanges>, Vec<OffsetRange>)>>>;

    fn keep<T: Data>(s: &DStream<T>) -> Seen {
        let seen: Seen = Arc::default();
        let out = seen.clone();
        s.foreach_batch(move |b| {
            let mut g = out.lock().unwrap();
            g.push((
                b.time,
                b.offset_ranges_by_input().to_vec(),
                b.offset_ranges(),
            ));
            Ok(())
        })
        .unwrap();
        seen
    }

    #[test]
    fn an_output_gets_the_ranges_of_the_offset_inputs_upstream_of_it_at_its_batch_time() {
        let ssc =
            StreamingContext::new(StreamingConf::new("ranges", Duration::from_millis(20))).unwrap();
        let a = offsets_stream(&ssc, "orders");
        // A second input with the same identity: named `#2`, as its checkpointed
        // position is.
        let b = offsets_stream(&ssc, "orders");
        let queue = ssc.queue_stream(vec![vec![1u64, 2, 3]], true).unwrap();
        let from_a = keep(&a.map(|x| x + 1).unwrap().filter(|x| *x > 0).unwrap());
        let from_both = keep(&a.union(&b).unwrap().union(&queue).unwrap());
        let none = keep(&queue.map(|x| x * 2).unwrap());
        ssc.start().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while from_both.lock().unwrap().len() < 3 {
            assert!(Instant::now() < deadline, "no batches ran");
            std::thread::sleep(Duration::from_millis(10));
        }
        ssc.stop(false).unwrap();

        let range = |name: &str, t: BatchTime| OffsetRange {
            topic: name.into(),
            partition: 0,
            from_offset: t.0 as i64,
            until_offset: t.0 as i64 + 1,
        };
        for (t, by_input, flat) in from_a.lock().unwrap().iter() {
            assert_eq!(
                by_input,
                &[InputOffsetRanges {
                    input: "orders".into(),
                    ranges: vec![range("orders", *t)],
                }]
            );
            assert_eq!(flat, &[range("orders", *t)]);
        }
        for (t, by_input, flat) in from_both.lock().unwrap().iter() {
            let names: Vec<&str> = by_input.iter().map(|i| i.input.as_str()).collect();
            assert_eq!(names, ["orders", "orders#2"], "the queue has no ranges");
            assert_eq!(flat, &[range("orders", *t), range("orders", *t)]);
        }
        for (_, by_input, flat) in none.lock().unwrap().iter() {
            assert!(by_input.is_empty() && flat.is_empty(), "{by_input:?}");
        }
        assert!(!from_a.lock().unwrap().is_empty());
        assert!(!none.lock().unwrap().is_empty());
    }

    #[test]
    fn input_names_drop_the_kind_but_keep_the_twin_number() {
        assert_eq!(input_name("input:kafka:orders"), "orders");
        assert_eq!(input_name("input:kafka:a:0,a:2#2"), "a:0,a:2#2");
        assert_eq!(input_name("odd"), "odd");
    }

    #[test]
    fn a_context_made_for_a_direct_call_has_no_ranges() {
        let batch = Batch::from_vec(vec![1u8]);
        let c = BatchContext::new(BatchTime(5), &batch);
        assert!(c.offset_ranges().is_empty() && c.offset_ranges_by_input().is_empty());
        let r = OffsetRange {
            topic: "t".into(),
            partition: 1,
            from_offset: 0,
            until_offset: 4,
        };
        let c = c.with_offset_ranges(vec![InputOffsetRanges {
            input: "t".into(),
            ranges: vec![r.clone()],
        }]);
        assert_eq!(c.offset_ranges(), vec![r]);
        assert_eq!(c.batch_id(), 5);
    }
}
