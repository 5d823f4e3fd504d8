//! A checkpoint store in a RocksDB database: one key per object name.
//!
//! Every write uses `WriteOptions::set_sync(true)`, so a put or delete is in RocksDB's
//! fsynced write-ahead log before it returns. A put is one write batch of one key, so
//! it is atomic: a reader sees no value or the whole value.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rocksdb::{Options, WriteOptions, DB};

use crate::error::{CheckpointError, Result};
use crate::store::{validate_name, CheckpointStore};

/// A checkpoint store in a RocksDB database (one process at a time: RocksDB locks it).
#[derive(Debug)]
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    /// Serialises check-then-put so `put_new` never replaces an object.
    put_lock: Mutex<()>,
}

impl RocksStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, &path).map_err(|e| CheckpointError::Rocks {
            path: path.display().to_string(),
            message: format!("cannot open: {e}"),
        })?;
        Ok(RocksStore {
            db,
            path,
            put_lock: Mutex::new(()),
        })
    }

    /// Replaces (or creates) an object unconditionally, bypassing the publish
    /// protocol. For repair tools and damage tests only.
    pub fn raw_put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.db
            .put_opt(name.as_bytes(), data, &Self::sync_writes())
            .map_err(|e| self.err(name, e))
    }

    fn err(&self, name: &str, e: rocksdb::Error) -> CheckpointError {
        CheckpointError::Rocks {
            path: self.object_path(name),
            message: e.to_string(),
        }
    }

    fn sync_writes() -> WriteOptions {
        let mut w = WriteOptions::default();
        // Rule: a checkpoint is durable when the put returns: fsync RocksDB's WAL.
        w.set_sync(true);
        w
    }
}

impl CheckpointStore for RocksStore {
    fn location(&self) -> String {
        format!("rocksdb://{}", self.path.display())
    }

    fn object_path(&self, name: &str) -> String {
        format!("rocksdb://{}#{name}", self.path.display())
    }

    fn put_new(&self, name: &str, data: &[u8]) -> Result<bool> {
        validate_name(name)?;
        let _guard = self.put_lock.lock().unwrap_or_else(|e| e.into_inner());
        if self
            .db
            .get_pinned(name.as_bytes())
            .map_err(|e| self.err(name, e))?
            .is_some()
        {
            return Ok(false);
        }
        self.db
            .put_opt(name.as_bytes(), data, &Self::sync_writes())
            .map_err(|e| self.err(name, e))?;
        Ok(true)
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        validate_name(name)?;
        self.db.get(name.as_bytes()).map_err(|e| self.err(name, e))
    }

    fn list_names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut it = self.db.raw_iterator();
        it.seek_to_first();
        while let Some(k) = it.key() {
            if let Ok(name) = std::str::from_utf8(k) {
                if validate_name(name).is_ok() {
                    names.push(name.to_owned());
                }
            }
            it.next();
        }
        it.status().map_err(|e| self.err("", e))?;
        Ok(names)
    }

    fn delete(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        self.db
            .delete_opt(name.as_bytes(), &Self::sync_writes())
            .map_err(|e| self.err(name, e))
    }
}
