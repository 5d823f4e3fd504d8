//! A checkpoint store in an object store (S3-compatible, in-memory, ...), through
//! `Arc<dyn ObjectStore>`.
//!
//! Object stores have no rename: every object is published whole by one conditional put
//! ([`PutMode::Create`]), which is atomic and durable when it returns and never
//! overwrites an existing object, so two writers cannot clobber each other.

use std::future::Future;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{CheckpointError, Result};
use crate::store::{validate_name, CheckpointStore};

/// How transient object-store failures are retried.
pub use sluice_wal::objio::RetryPolicy;
use sluice_wal::objio::{put_new, with_retry, IoRuntime};

/// A checkpoint store under a prefix of an object store.
#[derive(Debug)]
pub struct ObjectCheckpointStore {
    store: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    /// Shown in messages, e.g. `s3://bucket/prefix`.
    display: String,
    retry: RetryPolicy,
    rt: IoRuntime,
}

impl ObjectCheckpointStore {
    /// A store under `prefix` (no leading or trailing `/` needed) of `store`;
    /// `display` names the location in messages.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, display: &str) -> Result<Self> {
        let rt = IoRuntime::new("sluice-ckpt-io")
            .map_err(|e| CheckpointError::io("<tokio runtime>", e))?;
        Ok(ObjectCheckpointStore {
            store,
            prefix: ObjPath::from(prefix.trim_matches('/')),
            display: display.to_owned(),
            retry: RetryPolicy::default(),
            rt,
        })
    }

    /// Replaces the retry policy.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    fn path(&self, name: &str) -> ObjPath {
        self.prefix.clone().join(name)
    }

    /// Runs object-store I/O on the store's own runtime and blocks until it is done.
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Result<T> {
        self.rt
            .run(fut)
            .map_err(|e| CheckpointError::io(&self.display, e))
    }

    fn err(&self, path: &ObjPath, source: object_store::Error) -> CheckpointError {
        CheckpointError::ObjectStore {
            path: self.describe(path),
            source,
        }
    }

    fn describe(&self, path: &ObjPath) -> String {
        if self.display.is_empty() {
            path.to_string()
        } else {
            let name = path.filename().unwrap_or_default();
            format!("{}/{name}", self.display.trim_end_matches('/'))
        }
    }
}

impl CheckpointStore for ObjectCheckpointStore {
    fn location(&self) -> String {
        self.display.clone()
    }

    fn object_path(&self, name: &str) -> String {
        self.describe(&self.path(name))
    }

    fn put_new(&self, name: &str, data: &[u8]) -> Result<bool> {
        validate_name(name)?;
        let path = self.path(name);
        let store = self.store.clone();
        let payload = PutPayload::from(bytes::Bytes::copy_from_slice(data));
        // Rule: an object is published whole by one conditional put; it is durable when
        // the put returns, and it never overwrites an existing object (no rename).
        let res = self.run(put_new(store, path.clone(), payload, self.retry))?;
        match res {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.err(&path, e)),
        }
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        validate_name(name)?;
        let path = self.path(name);
        let store = self.store.clone();
        let p = path.clone();
        let policy = self.retry;
        let res = self.run(async move {
            with_retry(policy, || async { store.get(&p).await?.bytes().await }).await
        })?;
        match res {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(&path, e)),
        }
    }

    fn list_names(&self) -> Result<Vec<String>> {
        let store = self.store.clone();
        let prefix = self.prefix.clone();
        let policy = self.retry;
        let prefix_opt = (!prefix.as_ref().is_empty()).then_some(prefix.clone());
        let metas = self
            .run(async move {
                with_retry(policy, || {
                    store.list(prefix_opt.as_ref()).try_collect::<Vec<_>>()
                })
                .await
            })?
            .map_err(|source| CheckpointError::ObjectStore {
                path: format!("{} (listing)", self.display),
                source,
            })?;
        let depth = self.prefix.parts().count();
        Ok(metas
            .into_iter()
            // Only direct children of the prefix: a nested prefix is another store.
            .filter(|m| m.location.parts().count() == depth + 1)
            .filter_map(|m| m.location.filename().map(str::to_owned))
            .filter(|n| validate_name(n).is_ok())
            .collect())
    }

    fn delete(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let path = self.path(name);
        let store = self.store.clone();
        let p = path.clone();
        let policy = self.retry;
        match self.run(async move { with_retry(policy, || store.delete(&p)).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(&path, e)),
        }
    }
}
