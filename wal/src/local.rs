//! Segments as files in a local directory, through the [`FileSystem`] seam.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{DirLock, FileSystem, WalFile};
use crate::wal::{Chunk, Storage};
use crate::{Result, SegmentId, Wal, WalError, WalOptions};

const SUFFIX: &str = ".wal";

/// The name of a segment's file: its id, zero-padded so names sort.
pub fn segment_file_name(seg: SegmentId) -> String {
    format!("{:020}{SUFFIX}", seg.0)
}

fn parse_segment_file_name(name: &str) -> Option<SegmentId> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(SegmentId)
}

#[derive(Debug, Default)]
struct Files {
    /// Open handles, shared by the writer and readers.
    open: HashMap<SegmentId, Arc<dyn WalFile>>,
    /// Files written since the last fsync.
    unsynced: Vec<(SegmentId, Arc<dyn WalFile>)>,
    /// A segment was created since the directory was last fsynced.
    dir_dirty: bool,
}

#[derive(Debug)]
pub(crate) struct LocalStorage {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    files: Mutex<Files>,
    _lock: Option<DirLock>,
}

impl LocalStorage {
    fn path(&self, seg: SegmentId) -> PathBuf {
        self.dir.join(segment_file_name(seg))
    }

    fn files(&self) -> MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handle(&self, seg: SegmentId) -> Result<Arc<dyn WalFile>> {
        let mut files = self.files();
        if let Some(f) = files.open.get(&seg) {
            return Ok(f.clone());
        }
        let path = self.path(seg);
        let f = self.fs.open(&path).map_err(|e| WalError::io(&path, e))?;
        files.open.insert(seg, f.clone());
        Ok(f)
    }

    fn sync_dir(&self) -> Result<()> {
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| WalError::io(&self.dir, e))
    }
}

impl Storage for LocalStorage {
    fn location(&self, seg: SegmentId) -> PathBuf {
        self.path(seg)
    }

    fn list(&self) -> Result<Vec<SegmentId>> {
        let names = self
            .fs
            .list(&self.dir)
            .map_err(|e| WalError::io(&self.dir, e))?;
        Ok(names
            .iter()
            .filter_map(|n| parse_segment_file_name(n))
            .collect())
    }

    fn read_all(&self, seg: SegmentId) -> Result<Vec<u8>> {
        let f = self.handle(seg)?;
        f.read_to_end_from(0)
            .map_err(|e| WalError::io(self.path(seg), e))
    }

    fn read_at_into(
        &self,
        seg: SegmentId,
        offset: u64,
        len: usize,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let f = self.handle(seg)?;
        buf.clear();
        buf.resize(len, 0);
        let mut done = 0;
        while done < len {
            let n = f
                .read_at(&mut buf[done..], offset + done as u64)
                .map_err(|e| WalError::io(self.path(seg), e))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(())
    }

    fn commit(&self, chunks: Vec<Chunk>, sync: bool) -> Result<()> {
        for chunk in chunks {
            let path = self.path(chunk.segment);
            let f = if chunk.create {
                let f = self
                    .fs
                    .create_new(&path)
                    .map_err(|e| WalError::io(&path, e))?;
                let mut files = self.files();
                files.open.insert(chunk.segment, f.clone());
                files.dir_dirty = true;
                f
            } else {
                self.handle(chunk.segment)?
            };
            f.write_all_at(&chunk.bytes, chunk.offset)
                .map_err(|e| WalError::io(&path, e))?;
            let mut files = self.files();
            if !files.unsynced.iter().any(|(s, _)| *s == chunk.segment) {
                files.unsynced.push((chunk.segment, f));
            }
        }
        if sync {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        let (unsynced, dir_dirty) = {
            let mut files = self.files();
            (
                std::mem::take(&mut files.unsynced),
                std::mem::replace(&mut files.dir_dirty, false),
            )
        };
        // Rule: fsync every file written since the last sync (a sealed segment included)
        // before its records are acknowledged as durable.
        for (seg, f) in &unsynced {
            f.sync_data()
                .map_err(|e| WalError::io(self.path(*seg), e))?;
        }
        // Rule: fsync the directory after creating a segment, or the new file (and every
        // record in it) can vanish on power loss even though the file itself was synced.
        if dir_dirty {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn sync_segment(&self, seg: SegmentId) -> Result<()> {
        self.handle(seg)?
            .sync_data()
            .map_err(|e| WalError::io(self.path(seg), e))?;
        // The next `sync` also syncs the directory holding the segment.
        self.files().dir_dirty = true;
        Ok(())
    }

    fn truncate(&self, seg: SegmentId, len: u64) -> Result<()> {
        let path = self.path(seg);
        let f = self.handle(seg)?;
        f.truncate(len).map_err(|e| WalError::io(&path, e))?;
        // Rule: the cut must be durable before anything is appended after it.
        f.sync_data().map_err(|e| WalError::io(&path, e))
    }

    fn discard(&self, seg: SegmentId) -> Result<PathBuf> {
        let from = self.path(seg);
        let to = self
            .dir
            .join(format!("{}.discarded", segment_file_name(seg)));
        self.files().open.remove(&seg);
        self.fs
            .rename(&from, &to)
            .map_err(|e| WalError::io(&from, e))?;
        // Rule: the set-aside must be durable, or the segment comes back on the next open.
        self.sync_dir()?;
        Ok(to)
    }

    fn delete(&self, segs: &[SegmentId]) -> Result<()> {
        for seg in segs {
            self.files().open.remove(seg);
            let path = self.path(*seg);
            match self.fs.remove(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(WalError::io(&path, e)),
            }
        }
        // Rule: fsync the directory when a segment is removed, so a removed segment does
        // not reappear after power loss (it would hold LSNs the log has moved past).
        self.sync_dir()
    }

    fn roll_each_commit(&self) -> bool {
        false
    }
}

impl Wal {
    /// Opens (or creates) a WAL in a local directory, recovering what is there.
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions) -> Result<Wal> {
        Self::open_with_fs(crate::fs::default_fs(), dir, opts)
    }

    /// Opens a WAL in a directory of the given file system (a [`crate::fs::SimFs`] in
    /// tests). On the real file system the directory is locked against a second writer.
    pub fn open_with_fs(
        fs: Arc<dyn FileSystem>,
        dir: impl AsRef<Path>,
        opts: WalOptions,
    ) -> Result<Wal> {
        let dir = dir.as_ref().to_path_buf();
        fs.create_dir_all(&dir).map_err(|e| WalError::io(&dir, e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Rule: the WAL directory itself must survive power loss.
            fs.sync_dir(parent).map_err(|e| WalError::io(parent, e))?;
        }
        let lock = fs.lock_dir(&dir).map_err(|e| WalError::io(&dir, e))?;
        let storage = LocalStorage {
            fs,
            dir,
            files: Mutex::new(Files::default()),
            _lock: lock,
        };
        Wal::open_storage(Box::new(storage), opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_and_parse() {
        let a = segment_file_name(SegmentId(9));
        let b = segment_file_name(SegmentId(10));
        assert!(a < b);
        assert_eq!(parse_segment_file_name(&a), Some(SegmentId(9)));
        assert_eq!(parse_segment_file_name("LOCK"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000001.wal.discarded"),
            None
        );
    }
}
