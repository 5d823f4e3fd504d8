//! Segments as immutable objects in an object store: one object per group commit.
//!
//! Object stores have no append and no rename, so every commit writes one new object
//! `PREFIX/<segment id, 20 digits>.wal` holding a segment header and the commit's
//! frames, with a conditional put ([`PutMode::Create`]): two processes writing the
//! same log cannot overwrite each other's objects; the loser is poisoned and says why.
//! A put is atomic, so an object is never torn; a bad frame in one is always damage.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::local::segment_file_name;
use crate::objio::{IoRuntime, RetryPolicy};
use crate::wal::{Chunk, Storage};
use crate::{Result, SegmentId, Wal, WalError, WalOptions};

#[derive(Debug)]
pub(crate) struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    rt: IoRuntime,
}

impl ObjectStorage {
    fn path(&self, seg: SegmentId) -> ObjPath {
        self.prefix.clone().join(segment_file_name(seg))
    }

    /// Runs object-store I/O on the log's own runtime and blocks until it is done.
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Result<T> {
        self.rt
            .run(fut)
            .map_err(|e| WalError::io(self.prefix.to_string(), e))
    }

    fn err(&self, path: &ObjPath, source: object_store::Error) -> WalError {
        WalError::ObjectStore {
            path: path.to_string(),
            source,
        }
    }
}

fn with_retry<T, F, Fut>(op: F) -> impl Future<Output = object_store::Result<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = object_store::Result<T>>,
{
    crate::objio::with_retry(RetryPolicy::default(), op)
}

impl Storage for ObjectStorage {
    fn location(&self, seg: SegmentId) -> PathBuf {
        PathBuf::from(self.path(seg).to_string())
    }

    fn list(&self) -> Result<Vec<SegmentId>> {
        let store = self.store.clone();
        let prefix = self.prefix.clone();
        let metas = self
            .run(async move { store.list(Some(&prefix)).try_collect::<Vec<_>>().await })?
            .map_err(|e| self.err(&self.prefix, e))?;
        Ok(metas
            .iter()
            .filter_map(|m| {
                let name = m.location.filename()?;
                let digits = name.strip_suffix(".wal")?;
                (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| digits.parse().ok().map(SegmentId))
                    .flatten()
            })
            .collect())
    }

    fn read_all(&self, seg: SegmentId) -> Result<Vec<u8>> {
        let store = self.store.clone();
        let path = self.path(seg);
        let p = path.clone();
        let bytes = self
            .run(async move { with_retry(|| async { store.get(&p).await?.bytes().await }).await })?
            .map_err(|e| self.err(&path, e))?;
        Ok(bytes.to_vec())
    }

    fn read_at_into(
        &self,
        seg: SegmentId,
        offset: u64,
        len: usize,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let store = self.store.clone();
        let path = self.path(seg);
        let p = path.clone();
        let res = self.run(async move {
            let size = with_retry(|| store.head(&p)).await?.size;
            let end = (offset + len as u64).min(size);
            if offset >= end {
                return Ok(bytes::Bytes::new());
            }
            with_retry(|| store.get_range(&p, offset..end)).await
        })?;
        let bytes = res.map_err(|e| self.err(&path, e))?;
        buf.clear();
        buf.extend_from_slice(&bytes);
        Ok(())
    }

    fn commit(&self, chunks: Vec<Chunk>, _sync: bool) -> Result<()> {
        for chunk in chunks {
            let path = self.path(chunk.segment);
            if !chunk.create || chunk.offset != 0 {
                return Err(WalError::BadHandle(format!(
                    "object {path} would need an append; objects are written whole"
                )));
            }
            let payload = PutPayload::from(chunk.bytes);
            // Rule: an object is published whole by one conditional put; it is durable
            // when the put returns, and never overwrites another writer's object.
            let res = self.run(crate::objio::put_new_or_same(
                self.store.clone(),
                path.clone(),
                payload,
                RetryPolicy::default(),
            ))?;
            match res {
                Ok(_) => {}
                Err(e @ object_store::Error::AlreadyExists { .. }) => {
                    return Err(WalError::ObjectStore {
                        path: format!("{path} (another writer is using this WAL prefix)"),
                        source: e,
                    })
                }
                Err(e) => return Err(self.err(&path, e)),
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn sync_segment(&self, _seg: SegmentId) -> Result<()> {
        Ok(())
    }

    fn truncate(&self, seg: SegmentId, _len: u64) -> Result<()> {
        Err(WalError::Corruption {
            path: self.location(seg),
            offset: 0,
            reason: "a damaged object cannot be truncated in place; objects are never torn, so this is damage: restore the object or remove it by hand".into(),
        })
    }

    fn discard(&self, seg: SegmentId) -> Result<PathBuf> {
        Err(WalError::Corruption {
            path: self.location(seg),
            offset: 0,
            reason: "point-in-time recovery is not supported on object stores".into(),
        })
    }

    fn delete(&self, segs: &[SegmentId]) -> Result<()> {
        for seg in segs {
            let store = self.store.clone();
            let path = self.path(*seg);
            let p = path.clone();
            match self.run(async move { with_retry(|| store.delete(&p)).await })? {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err(&path, e)),
            }
        }
        Ok(())
    }

    fn roll_each_commit(&self) -> bool {
        true
    }
}

impl Wal {
    /// Opens (or creates) a WAL under `prefix` of an object store. Each commit is one
    /// new object; the [`crate::Durability`] mode only decides when an append waits
    /// (every put is durable when it returns). `RecoveryMode::PointInTime` is refused
    /// on damage because objects cannot be cut.
    pub fn open_object_store(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        opts: WalOptions,
    ) -> Result<Wal> {
        let rt = IoRuntime::new("sluice-wal-io").map_err(|e| WalError::io("<tokio runtime>", e))?;
        let storage = ObjectStorage {
            store,
            prefix: ObjPath::from(prefix),
            rt,
        };
        Wal::open_storage(Box::new(storage), opts)
    }

    /// Opens a WAL at a URL: a local path or `file://` URL, or `s3://bucket/prefix`
    /// (endpoint, region and credentials from the standard `AWS_*` environment
    /// variables; plain HTTP is allowed when `AWS_ENDPOINT` starts with `http://`).
    pub fn open_url(url: &str, opts: WalOptions) -> Result<Wal> {
        Self::open_url_with_fs(url, opts, None)
    }

    /// [`Wal::open_url`] with the file system a local location uses (`None`: the
    /// process's default, [`crate::fs::default_fs`]); object-store locations ignore it.
    pub fn open_url_with_fs(
        url: &str,
        opts: WalOptions,
        fs: Option<Arc<dyn crate::fs::FileSystem>>,
    ) -> Result<Wal> {
        let local = |path: &str, opts| match &fs {
            Some(fs) => Wal::open_with_fs(fs.clone(), path, opts),
            None => Wal::open(path, opts),
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(WalError::InvalidOptions(format!(
                    "{url:?}: an s3:// URL needs a bucket, as in s3://bucket/prefix"
                )));
            }
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if std::env::var("AWS_ENDPOINT")
                .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                .is_ok_and(|e| e.starts_with("http://"))
            {
                b = b.with_allow_http(true);
            }
            if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                b = b.with_endpoint(endpoint);
            }
            let store = b
                .build()
                .map_err(|e| WalError::InvalidOptions(format!("{url:?}: {e}")))?;
            return Wal::open_object_store(Arc::new(store), prefix.trim_matches('/'), opts);
        }
        if let Some(path) = url.strip_prefix("file://") {
            return local(path, opts);
        }
        if url.contains("://") {
            return Err(WalError::InvalidOptions(format!(
                "{url:?}: unsupported WAL location; use a path, file://PATH or s3://BUCKET/PREFIX"
            )));
        }
        local(url, opts)
    }
}
