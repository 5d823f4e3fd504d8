//! Directory monitoring: `text_file_stream` / `file_stream`, a direct input (no
//! receiver). At every batch time the input lists the directory and takes every file
//! it has not processed yet, sorted by name (so the data of a batch, and its
//! partitions, are deterministic); each file becomes one partition of the batch.
//!
//! * Files must be moved (renamed) into the directory whole: a file is read once, at
//!   the first batch that sees it, and never again, so a file still being written
//!   would be read in part. Write elsewhere (or under an ignored name) and rename.
//! * Ignored: hidden files (`.name`), temporary files (`*.tmp`, `*._COPYING_`, what
//!   `hdfs dfs -put` writes while copying), and anything that is not a regular file
//!   (subdirectories are not descended into).
//! * Unlike Spark's `textFileStream`, files already in the directory at start are
//!   processed too ("every file not yet processed"); [`FileStreamOptions`] has Spark's
//!   `newFilesOnly` and a filter, for `file_stream_with`.
//! * Processed names are remembered as long as the file is in the directory; a file
//!   replaced under a processed name is not read again. Once a processed file is gone
//!   (archived or deleted: the usual way to keep the directory small), its name is
//!   forgotten at the next listing, so the memory and the checkpointed position stay
//!   as small as the directory, and a later file under that name is new data.
//! * A malformed record (a line that is not UTF-8, or whatever the decoder reports as
//!   [`std::io::ErrorKind::InvalidData`]) fails the batch with an error naming the file
//!   and the record number: files can be fixed and replayed, unlike a socket.
//! * A graceful stop lists the directory once more after the stop, so files moved in
//!   before the stop are processed.
//! * Replayable: the names of each batch's files go to the driver log as the batch's
//!   plan, and the processed names to every checkpoint as the input's position. After
//!   a crash, a batch that was planned but not completed is re-read from the same
//!   files (which must still be there: an error names a missing one), and files
//!   processed before the checkpoint are not read again.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::runtime::graph::ExecutionEnv;
use crate::runtime::io::Input;
use crate::sources::queue::Allocations;
use crate::sources::socket::{decode_lines, Decoder};
use crate::{Batch, BatchTime, DStream, Data, EngineError, Result, StreamingContext};

/// Whether a file name is one the directory input ignores (hidden or temporary).
pub fn is_ignored_file_name(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".tmp") || name.ends_with("._COPYING_")
}

/// What a listing of the directory found.
#[derive(Debug)]
struct Listing {
    /// Regular files with names not ignored and not processed, sorted by name.
    new: Vec<String>,
    /// Every name not ignored in the directory (to forget processed files now gone).
    present: HashSet<String>,
}

/// Options of [`StreamingContext::file_stream_with`].
#[derive(Clone, Default)]
pub struct FileStreamOptions {
    /// Reads only the files for which this is true (given the file's path), on top of
    /// the rules for hidden and temporary files. Spark's `filter`.
    pub filter: Option<Arc<dyn Fn(&Path) -> bool + Send + Sync>>,
    /// Skips the files already in the directory when the job starts fresh (Spark's
    /// `newFilesOnly`). A job resumed from a checkpoint still reads the files that
    /// arrived while it was down.
    pub new_files_only: bool,
}

impl std::fmt::Debug for FileStreamOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStreamOptions")
            .field("filter", &self.filter.is_some())
            .field("new_files_only", &self.new_files_only)
            .finish()
    }
}

impl FileStreamOptions {
    /// Reads only the files for which `f` is true.
    pub fn filter(mut self, f: impl Fn(&Path) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Arc::new(f));
        self
    }

    /// Skips the files already in the directory at a fresh start.
    pub fn new_files_only(mut self, on: bool) -> Self {
        self.new_files_only = on;
        self
    }
}

type FileFilter = Arc<dyn Fn(&Path) -> bool + Send + Sync>;

/// Lists `dir` (see [`Listing`]); files `filter` rejects are left out entirely.
fn list(dir: &Path, processed: &HashSet<String>, filter: Option<&FileFilter>) -> Result<Listing> {
    let what = || format!("input directory {}", dir.display());
    let mut names = Vec::new();
    let mut present = HashSet::new();
    for entry in std::fs::read_dir(dir).map_err(|e| EngineError::io(what(), e))? {
        let entry = entry.map_err(|e| EngineError::io(what(), e))?;
        let Ok(name) = entry.file_name().into_string() else {
            tracing::warn!(dir = %dir.display(), name = ?entry.file_name(),
                "ignoring a file whose name is not UTF-8");
            continue;
        };
        if is_ignored_file_name(&name) || filter.is_some_and(|f| !f(&entry.path())) {
            continue;
        }
        if processed.contains(&name) {
            present.insert(name);
            continue;
        }
        // Follows symlinks: a link to a regular file counts.
        match std::fs::metadata(entry.path()) {
            Ok(m) if m.is_file() => {
                present.insert(name.clone());
                names.push(name);
            }
            Ok(_) => {}
            // Gone between listing and looking: not ours to read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(EngineError::io(entry.path().display().to_string(), e)),
        }
    }
    names.sort();
    Ok(Listing {
        new: names,
        present,
    })
}

type DynDecoder<T> = Arc<dyn Fn(&mut dyn io::BufRead) -> io::Result<Option<T>> + Send + Sync>;

/// Reads every record of `path`.
fn read_file<T>(path: &Path, decoder: &DynDecoder<T>) -> Result<Vec<T>> {
    let file = std::fs::File::open(path)
        .map_err(|e| EngineError::io(format!("input file {}", path.display()), e))?;
    let mut r = BufReader::with_capacity(64 * 1024, file);
    let mut out = Vec::new();
    loop {
        match decoder(&mut r) {
            Ok(Some(x)) => out.push(x),
            Ok(None) => return Ok(out),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(EngineError::Malformed {
                    source_name: format!(
                        "input file {} (record {})",
                        path.display(),
                        out.len() + 1
                    ),
                    reason: e.to_string(),
                })
            }
            Err(e) => return Err(EngineError::io(format!("input file {}", path.display()), e)),
        }
    }
}

struct FileInput<T> {
    dir: PathBuf,
    decoder: DynDecoder<T>,
    alloc: Arc<Allocations<T>>,
    processed: Mutex<HashSet<String>>,
    /// The files of each planned batch (the input's replayable "offsets").
    planned: Mutex<BTreeMap<BatchTime, Vec<String>>>,
    stopping: AtomicBool,
    /// The directory was listed after the stop.
    listed_after_stop: AtomicBool,
    filter: Option<FileFilter>,
    new_files_only: bool,
    /// A checkpointed position was restored (so this is not a fresh start).
    restored: AtomicBool,
}

impl<T: Data> FileInput<T> {
    /// Reads the files `names` (in that order, one partition each) as batch `t` and
    /// marks them processed.
    fn take_files(&self, t: BatchTime, names: Vec<String>, env: &ExecutionEnv) -> Result<u64> {
        let paths: Vec<PathBuf> = names.iter().map(|n| self.dir.join(n)).collect();
        let decoder = &self.decoder;
        let parts: Vec<Result<Vec<T>>> = env.par_map(&paths, |p| read_file(p, decoder));
        let mut data = Vec::with_capacity(parts.len());
        for p in parts {
            data.push(p?);
        }
        self.processed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(names.iter().cloned());
        if !names.is_empty() {
            tracing::debug!(dir = %self.dir.display(), time = t.0, files = ?names, "files allocated");
        }
        self.planned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(t, names);
        let batch = Batch::from_partitions(data);
        let n = batch.len() as u64;
        self.alloc.set(t, batch);
        Ok(n)
    }
}

impl<T: Data> Input for FileInput<T> {
    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }

    fn kind(&self) -> &'static str {
        "directory"
    }

    fn start(&self, _env: &ExecutionEnv) -> Result<()> {
        match std::fs::metadata(&self.dir) {
            Ok(m) if m.is_dir() => {
                if self.new_files_only && !self.restored.load(Ordering::SeqCst) {
                    let mut processed = self.processed.lock().unwrap_or_else(|e| e.into_inner());
                    let old = list(&self.dir, &processed, self.filter.as_ref())?.new;
                    tracing::info!(dir = %self.dir.display(), files = old.len(),
                        "new files only: skipping the files already in the directory");
                    processed.extend(old);
                }
                Ok(())
            }
            Ok(_) => Err(EngineError::io(
                format!("input directory {}", self.dir.display()),
                io::Error::other("not a directory"),
            )),
            Err(e) => Err(EngineError::io(
                format!("input directory {}", self.dir.display()),
                e,
            )),
        }
    }

    fn allocate(&self, t: BatchTime, env: &ExecutionEnv) -> Result<u64> {
        let stopping = self.stopping.load(Ordering::SeqCst);
        let names = {
            let mut processed = self.processed.lock().unwrap_or_else(|e| e.into_inner());
            let listing = list(&self.dir, &processed, self.filter.as_ref())?;
            processed.retain(|n| listing.present.contains(n));
            listing.new
        };
        let n = self.take_files(t, names, env)?;
        if stopping {
            self.listed_after_stop.store(true, Ordering::SeqCst);
        }
        Ok(n)
    }

    fn stop_receiving(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    fn drained(&self) -> bool {
        self.listed_after_stop.load(Ordering::SeqCst)
    }

    fn forget(&self, t: BatchTime) {
        self.alloc.forget(t);
        let mut p = self.planned.lock().unwrap_or_else(|e| e.into_inner());
        *p = p.split_off(&BatchTime(t.0 + 1));
    }

    fn plan_of(&self, t: BatchTime) -> Option<Vec<u8>> {
        let planned = self.planned.lock().unwrap_or_else(|e| e.into_inner());
        crate::runtime::graph::encode(planned.get(&t)?).ok()
    }

    fn replay(&self, t: BatchTime, plan: &[u8], env: &ExecutionEnv) -> Result<u64> {
        let names: Vec<String> = crate::runtime::graph::decode(plan)?;
        self.take_files(t, names, env)
    }

    fn position(&self) -> Option<Vec<u8>> {
        let processed = self.processed.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<&String> = processed.iter().collect();
        names.sort();
        crate::runtime::graph::encode(&names).ok()
    }

    fn restore_position(&self, pos: &[u8]) -> Result<()> {
        let names: Vec<String> = crate::runtime::graph::decode(pos)?;
        self.restored.store(true, Ordering::SeqCst);
        tracing::info!(dir = %self.dir.display(), files = names.len(),
            "restored the processed files of the input directory");
        self.processed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(names);
        Ok(())
    }
}

impl StreamingContext {
    /// The lines (UTF-8) of every new file moved into `dir`, one partition per file
    /// (see [`crate::sources::files`] for which files and when).
    pub fn text_file_stream(&self, dir: impl Into<PathBuf>) -> Result<DStream<String>> {
        self.file_stream(dir, decode_lines)
    }

    /// The records `decoder` reads from every new file moved into `dir`, one partition
    /// per file.
    pub fn file_stream<T: Data>(
        &self,
        dir: impl Into<PathBuf>,
        decoder: impl Decoder<T>,
    ) -> Result<DStream<T>> {
        self.file_stream_with(dir, FileStreamOptions::default(), decoder)
    }

    /// [`StreamingContext::file_stream`] with a filter and/or new files only.
    pub fn file_stream_with<T: Data>(
        &self,
        dir: impl Into<PathBuf>,
        options: FileStreamOptions,
        decoder: impl Decoder<T>,
    ) -> Result<DStream<T>> {
        let dir: PathBuf = dir.into();
        let identity = dir.display().to_string();
        let alloc = Arc::new(Allocations::default());
        let input = Arc::new(FileInput {
            dir,
            decoder: Arc::new(decoder),
            alloc: alloc.clone(),
            processed: Mutex::new(HashSet::new()),
            planned: Mutex::new(BTreeMap::new()),
            stopping: AtomicBool::new(false),
            listed_after_stop: AtomicBool::new(false),
            filter: options.filter,
            new_files_only: options.new_files_only,
            restored: AtomicBool::new(false),
        });
        self.input_stream("files", identity, alloc, input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_names() {
        for n in [".hidden", "part-1.tmp", "part-2._COPYING_", ".x.txt"] {
            assert!(is_ignored_file_name(n), "{n}");
        }
        for n in ["part-1", "a.txt", "tmp", "x.tmp.txt"] {
            assert!(!is_ignored_file_name(n), "{n}");
        }
    }

    #[test]
    fn listing_skips_ignored_processed_and_directories_and_sorts() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b", "a", "c.tmp", ".d", "e._COPYING_", "f"] {
            std::fs::write(dir.path().join(n), "x\n").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let processed: HashSet<String> =
            ["f".to_string(), "gone".to_string()].into_iter().collect();
        let listing = list(dir.path(), &processed, None).unwrap();
        assert_eq!(listing.new, vec!["a", "b"]);
        let mut present: Vec<&String> = listing.present.iter().collect();
        present.sort();
        assert_eq!(present, vec!["a", "b", "f"]);
        let err = list(&dir.path().join("missing"), &processed, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }

    fn env() -> ExecutionEnv {
        ExecutionEnv {
            zero: BatchTime(0),
            batch: std::time::Duration::from_millis(100),
            parallelism: 2,
            pool: Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(2)
                    .build()
                    .unwrap(),
            ),
        }
    }

    fn input(dir: &Path) -> FileInput<String> {
        input_with(dir, FileStreamOptions::default())
    }

    fn input_with(dir: &Path, o: FileStreamOptions) -> FileInput<String> {
        FileInput {
            dir: dir.to_path_buf(),
            decoder: Arc::new(decode_lines),
            alloc: Arc::new(Allocations::default()),
            processed: Mutex::new(HashSet::new()),
            planned: Mutex::new(BTreeMap::new()),
            stopping: AtomicBool::new(false),
            listed_after_stop: AtomicBool::new(false),
            filter: o.filter,
            new_files_only: o.new_files_only,
            restored: AtomicBool::new(false),
        }
    }

    #[test]
    fn filter_and_new_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let env = env();
        std::fs::write(dir.path().join("old.csv"), "o\n").unwrap();
        let opts = FileStreamOptions::default()
            .new_files_only(true)
            .filter(|p| p.extension().is_some_and(|e| e == "csv"));
        let fresh = input_with(dir.path(), opts.clone());
        fresh.start(&env).unwrap();
        std::fs::write(dir.path().join("new.csv"), "n\n").unwrap();
        std::fs::write(dir.path().join("new.json"), "{}\n").unwrap();
        assert_eq!(fresh.allocate(BatchTime(100), &env).unwrap(), 1);
        assert_eq!(fresh.alloc.get(BatchTime(100)).to_vec(), vec!["n"]);

        // Resumed from a checkpoint that had seen nothing: files that arrived while the
        // job was down are read, even with new files only.
        let resumed = input_with(dir.path(), opts);
        resumed
            .restore_position(&crate::runtime::graph::encode(&Vec::<String>::new()).unwrap())
            .unwrap();
        resumed.start(&env).unwrap();
        assert_eq!(resumed.allocate(BatchTime(100), &env).unwrap(), 2);
        assert_eq!(
            resumed.alloc.get(BatchTime(100)).partitions(),
            &[vec!["n"], vec!["o"]]
        );
    }

    #[test]
    fn plans_replay_the_same_files_and_positions_skip_processed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let env = env();
        std::fs::write(dir.path().join("b"), "b1\nb2\n").unwrap();
        std::fs::write(dir.path().join("a"), "a1\n").unwrap();
        let (t1, t2) = (BatchTime(100), BatchTime(200));
        let first = input(dir.path());
        first.start(&env).unwrap();
        assert_eq!(first.allocate(t1, &env).unwrap(), 3);
        let plan = first.plan_of(t1).unwrap();
        let pos = first.position().unwrap();
        let batch = first.alloc.get(t1);
        assert_eq!(batch.partitions(), &[vec!["a1"], vec!["b1", "b2"]]);
        std::fs::write(dir.path().join("c"), "c1\n").unwrap();

        // A restart from the checkpoint taken after t1: only the new file is read.
        let restored = input(dir.path());
        restored.restore_position(&pos).unwrap();
        assert_eq!(restored.allocate(t2, &env).unwrap(), 1);
        assert_eq!(restored.alloc.get(t2).to_vec(), vec!["c1"]);

        // A restart that replays t1 from the driver log: the same files, in the same
        // partitions, and they count as processed afterwards.
        let replayed = input(dir.path());
        assert_eq!(replayed.replay(t1, &plan, &env).unwrap(), 3);
        assert_eq!(replayed.alloc.get(t1).partitions(), batch.partitions());
        assert_eq!(replayed.allocate(t2, &env).unwrap(), 1);

        // A processed file that is archived is forgotten; a new file under its name is
        // new data.
        std::fs::remove_file(dir.path().join("c")).unwrap();
        assert_eq!(restored.allocate(BatchTime(300), &env).unwrap(), 0);
        assert!(!restored.processed.lock().unwrap().contains("c"));
        std::fs::write(dir.path().join("c"), "c2\n").unwrap();
        assert_eq!(restored.allocate(BatchTime(400), &env).unwrap(), 1);
        assert_eq!(restored.alloc.get(BatchTime(400)).to_vec(), vec!["c2"]);

        // A planned file that disappeared cannot be replayed: the error names it.
        std::fs::remove_file(dir.path().join("a")).unwrap();
        let err = input(dir.path())
            .replay(t1, &plan, &env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&dir.path().join("a").display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn malformed_line_names_file_and_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad");
        std::fs::write(&p, b"ok\nfine\n\xc3\x28\n").unwrap();
        let d: DynDecoder<String> = Arc::new(decode_lines);
        let err = read_file(&p, &d).unwrap_err();
        assert!(matches!(err, EngineError::Malformed { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("bad") && msg.contains("record 3"), "{msg}");
        std::fs::write(&p, b"ok\nfine").unwrap();
        assert_eq!(read_file(&p, &d).unwrap(), vec!["ok", "fine"]);
    }
}
