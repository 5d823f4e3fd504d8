//! A checkpoint store in a local directory, through the WAL's file-system seam
//! ([`sluice_wal::fs::FileSystem`]), so tests can run it on [`sluice_wal::fs::SimFs`]
//! and crash it at every step of a publish.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sluice_wal::fs::FileSystem;

use crate::error::{CheckpointError, Result};
use crate::store::{validate_name, CheckpointStore};

const TMP_PREFIX: &str = ".tmp-";

/// A checkpoint store in one local directory.
///
/// Publish protocol (see [`CheckpointStore::put_new`]): write a temporary file, fsync
/// it, rename it to its final name, fsync the directory. One process writes a
/// directory at a time (the driver holds the WAL's lock); readers may run alongside.
#[derive(Debug)]
pub struct LocalStore {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    tmp_seq: AtomicU64,
    /// Serialises check-then-rename within this process, so two threads publishing the
    /// same name cannot both rename (the second rename would replace the first).
    publish_lock: Mutex<()>,
}

impl LocalStore {
    /// Opens (creating if needed) a store in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(sluice_wal::fs::default_fs(), dir)
    }

    /// Opens (creating if needed) a store in `dir` on `fs`. Temporary files left by a
    /// publish that a crash interrupted are removed.
    pub fn open_with(fs: Arc<dyn FileSystem>, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs.create_dir_all(&dir)
            .map_err(|e| CheckpointError::io(dir.display(), e))?;
        // Rule: the directory entry of a new checkpoint directory must survive a crash
        // before anything in it can.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs.sync_dir(parent)
                .map_err(|e| CheckpointError::io(parent.display(), e))?;
        }
        let store = LocalStore {
            fs,
            dir,
            tmp_seq: AtomicU64::new(0),
            publish_lock: Mutex::new(()),
        };
        let names = store
            .fs
            .list(&store.dir)
            .map_err(|e| CheckpointError::io(store.dir.display(), e))?;
        let mut removed = false;
        for name in names.iter().filter(|n| n.starts_with(TMP_PREFIX)) {
            let path = store.dir.join(name);
            tracing::info!("removing {} left by an interrupted publish", path.display());
            match store.fs.remove(&path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(CheckpointError::io(path.display(), e)),
            }
        }
        if removed {
            store.sync_dir()?;
        }
        Ok(store)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn sync_dir(&self) -> Result<()> {
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| CheckpointError::io(self.dir.display(), e))
    }

    fn exists(&self, path: &Path) -> Result<bool> {
        match self.fs.open(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(CheckpointError::io(path.display(), e)),
        }
    }
}

impl CheckpointStore for LocalStore {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn object_path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn put_new(&self, name: &str, data: &[u8]) -> Result<bool> {
        validate_name(name)?;
        let path = self.dir.join(name);
        if self.exists(&path)? {
            return Ok(false);
        }
        let tmp = self.dir.join(format!(
            "{TMP_PREFIX}{name}-{}-{}",
            std::process::id(),
            self.tmp_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let io_err = |p: &Path, e| CheckpointError::io(p.display(), e);
        let file = self.fs.create_new(&tmp).map_err(|e| io_err(&tmp, e))?;
        let written = file
            .write_all_at(data, 0)
            // Rule: fsync the file before it gets its final name, so the name never
            // points at bytes a power loss can take back (never retry a failed fsync:
            // the temporary file is abandoned instead).
            .and_then(|()| file.sync_data());
        drop(file);
        if let Err(e) = written {
            let _ = self.fs.remove(&tmp);
            return Err(io_err(&tmp, e));
        }
        let _guard = self.publish_lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.exists(&path)? {
            let _ = self.fs.remove(&tmp);
            return Ok(false);
        }
        // Rule: publish by rename, which is atomic: a reader sees no file or the whole
        // file, never a partial one.
        if let Err(e) = self.fs.rename(&tmp, &path) {
            let _ = self.fs.remove(&tmp);
            return Err(io_err(&path, e));
        }
        // Rule: fsync the directory so the rename survives power loss; the object is
        // durable (and may be relied on, e.g. by retention) only after this.
        self.sync_dir()?;
        Ok(true)
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        validate_name(name)?;
        let path = self.dir.join(name);
        let file = match self.fs.open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CheckpointError::io(path.display(), e)),
        };
        file.read_to_end_from(0)
            .map(Some)
            .map_err(|e| CheckpointError::io(path.display(), e))
    }

    fn list_names(&self) -> Result<Vec<String>> {
        let names = self
            .fs
            .list(&self.dir)
            .map_err(|e| CheckpointError::io(self.dir.display(), e))?;
        Ok(names
            .into_iter()
            .filter(|n| validate_name(n).is_ok() && n != "LOCK")
            .collect())
    }

    fn delete(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let path = self.dir.join(name);
        match self.fs.remove(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(CheckpointError::io(path.display(), e)),
        }
        // Rule: make each removal durable before the next step (garbage collection
        // removes manifests before the files they name, and a crash must not undo that
        // order).
        self.sync_dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_wal::fs::{Fault, SimFs};

    fn sim() -> (SimFs, LocalStore) {
        let fs = SimFs::new();
        let store = LocalStore::open_with(Arc::new(fs.clone()), "/ckpt").unwrap();
        (fs, store)
    }

    #[test]
    fn put_new_never_replaces() {
        let (_fs, s) = sim();
        assert!(s.put_new("a", b"1").unwrap());
        assert!(!s.put_new("a", b"2").unwrap());
        assert_eq!(s.get("a").unwrap().unwrap(), b"1");
        assert_eq!(s.get("b").unwrap(), None);
    }

    #[test]
    fn failed_fsync_leaves_no_object_and_no_temp_file() {
        let (fs, s) = sim();
        fs.inject(Fault::FailSync { nth: 1 });
        let err = s.put_new("a", b"1").unwrap_err();
        assert!(err.to_string().contains(".tmp-a"), "{err}");
        assert_eq!(s.get("a").unwrap(), None);
        assert!(fs.list(Path::new("/ckpt")).unwrap().is_empty());
    }

    #[test]
    fn torn_write_is_reported_and_not_published() {
        let (fs, s) = sim();
        fs.inject(Fault::TornWrite { nth: 1, keep: 3 });
        assert!(s.put_new("a", b"123456").is_err());
        assert_eq!(s.get("a").unwrap(), None);
    }

    #[test]
    fn leftover_temp_files_are_removed_on_open_and_never_listed() {
        let (fs, s) = sim();
        let f = fs.create_new(Path::new("/ckpt/.tmp-x-1-0")).unwrap();
        f.write_all_at(b"junk", 0).unwrap();
        assert!(s.list_names().unwrap().is_empty());
        drop(s);
        let _s = LocalStore::open_with(Arc::new(fs.clone()), "/ckpt").unwrap();
        assert!(fs.list(Path::new("/ckpt")).unwrap().is_empty());
    }

    #[test]
    fn published_object_survives_a_crash() {
        let (fs, s) = sim();
        s.put_new("a", b"durable").unwrap();
        fs.crash();
        let s = LocalStore::open_with(Arc::new(fs.clone()), "/ckpt").unwrap();
        assert_eq!(s.get("a").unwrap().unwrap(), b"durable");
    }
}
