//! A fault-injecting [`ObjectStore`] wrapper for tests: transient errors, latency, and
//! a put that is applied but reports failure (the case that makes naive retries
//! dangerous).

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// Which operation a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `put_opts`.
    Put,
    /// `get_opts` / `get_ranges`.
    Get,
    /// `list` / `list_with_delimiter`.
    List,
    /// `delete_stream` (and so `delete`).
    Delete,
}

/// A fault to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectFault {
    /// The next `count` calls of `op` fail with a generic (transient) error, without
    /// touching the store.
    Fail { op: Op, count: u32 },
    /// The next put is applied to the store, then reports a generic error (as when
    /// the response is lost).
    PutAppliedThenFail,
    /// Every call sleeps this long first.
    Latency(Duration),
}

#[derive(Debug, Default)]
struct Faults {
    fail: Vec<(Op, u32)>,
    applied_then_fail: u32,
    latency: Option<Duration>,
    calls: Vec<(Op, String)>,
}

/// Wraps an object store and injects [`ObjectFault`]s.
#[derive(Debug, Clone)]
pub struct FaultyObjectStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Mutex<Faults>>,
}

impl fmt::Display for FaultyObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyObjectStore",
        source: format!("injected fault: {what}").into(),
    }
}

impl FaultyObjectStore {
    /// Wraps `inner` with no faults armed.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        FaultyObjectStore {
            inner,
            faults: Arc::default(),
        }
    }

    /// Arms a fault.
    pub fn inject(&self, fault: ObjectFault) {
        let mut f = self.lock();
        match fault {
            ObjectFault::Fail { op, count } => f.fail.push((op, count)),
            ObjectFault::PutAppliedThenFail => f.applied_then_fail += 1,
            ObjectFault::Latency(d) => f.latency = Some(d),
        }
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        let mut f = self.lock();
        f.fail.clear();
        f.applied_then_fail = 0;
        f.latency = None;
    }

    /// Every call made so far: operation and path.
    pub fn calls(&self) -> Vec<(Op, String)> {
        self.lock().calls.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the call; returns (latency, whether it must fail).
    fn enter(&self, op: Op, path: &str) -> (Option<Duration>, bool) {
        let mut f = self.lock();
        f.calls.push((op, path.to_owned()));
        let mut fail = false;
        if let Some(slot) = f.fail.iter_mut().find(|(o, n)| *o == op && *n > 0) {
            slot.1 -= 1;
            fail = true;
        }
        f.fail.retain(|(_, n)| *n > 0);
        (f.latency, fail)
    }

    async fn before(&self, op: Op, path: &str) -> Result<()> {
        let (latency, fail) = self.enter(op, path);
        if let Some(d) = latency {
            tokio::time::sleep(d).await;
        }
        if fail {
            return Err(injected(&format!("{op:?} {path}")));
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for FaultyObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.before(Op::Put, location.as_ref()).await?;
        let res = self.inner.put_opts(location, payload, opts).await?;
        let applied_then_fail = {
            let mut f = self.lock();
            let hit = f.applied_then_fail > 0;
            f.applied_then_fail = f.applied_then_fail.saturating_sub(1);
            hit
        };
        if applied_then_fail {
            return Err(injected(&format!("put {location} applied, response lost")));
        }
        Ok(res)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.before(Op::Put, location.as_ref()).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.before(Op::Get, location.as_ref()).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.before(Op::Get, location.as_ref()).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let me = self.clone();
        let inner = self.inner.clone();
        // Decide per location before handing it to the inner store.
        let checked = locations
            .map(move |r| {
                r.and_then(|p| {
                    let (_, fail) = me.enter(Op::Delete, p.as_ref());
                    if fail {
                        Err(injected(&format!("Delete {p}")))
                    } else {
                        Ok(p)
                    }
                })
            })
            .boxed();
        // Errors pass through the inner delete_stream unchanged (it forwards them).
        inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let (_, fail) = self.enter(Op::List, prefix.map(|p| p.as_ref()).unwrap_or(""));
        if fail {
            return futures::stream::once(async { Err(injected("List")) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.before(Op::List, prefix.map(|p| p.as_ref()).unwrap_or(""))
            .await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
