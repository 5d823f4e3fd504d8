//! Output operations: `print`, `foreach_batch`, `save_as_text_files`,
//! `save_as_object_files`.

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::runtime::graph::ExecutionEnv;
use crate::runtime::io::Output;
use crate::{Batch, BatchTime, DStream, Data, EngineError, Result};

/// What `foreach_batch` hands the user: the batch, its time (the batch id an
/// exactly-once sink commits with), and its partitions.
#[derive(Debug)]
pub struct BatchContext<'a, T> {
    /// The batch time: stable across replays of the same batch after a restart.
    pub time: BatchTime,
    /// The batch's data.
    pub batch: &'a Batch<T>,
}

impl<T> BatchContext<'_, T> {
    /// The batch id: the batch time in milliseconds.
    pub fn batch_id(&self) -> u64 {
        self.time.0
    }
}

struct FnOutput<T> {
    name: String,
    stream: DStream<T>,
    f: Box<dyn Fn(&BatchContext<'_, T>) -> Result<()> + Send + Sync>,
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
        (self.f)(&BatchContext {
            time: t,
            batch: &batch,
        })
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
