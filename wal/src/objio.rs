//! Object-store I/O from synchronous code, shared by the WAL's object-store backend and
//! the checkpoint store: an owned runtime to run requests on (safe to call from any
//! thread, inside another tokio runtime or not) and retries with backoff.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, PutResult};

/// How transient object-store failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Delay before the first retry; doubled each time.
    pub initial_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            initial_backoff: Duration::from_millis(50),
        }
    }
}

/// Retries transient failures (not "already exists", "not found", precondition,
/// "not implemented" or "not supported", which retrying cannot fix) with exponential
/// backoff.
pub async fn with_retry<T, F, Fut>(policy: RetryPolicy, mut op: F) -> object_store::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = object_store::Result<T>>,
{
    let mut delay = policy.initial_backoff;
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(
                e @ (object_store::Error::AlreadyExists { .. }
                | object_store::Error::NotFound { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. }),
            ) => return Err(e),
            Err(e) if attempt >= policy.max_retries => return Err(e),
            Err(e) => {
                tracing::warn!("object-store request failed, retrying in {delay:?}: {e}");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
        }
    }
}

/// Publishes a new object whole with one conditional put (`PutMode::Create`), retrying
/// transient failures: it is durable when this returns `Ok`, and it never overwrites an
/// existing object (`AlreadyExists` or `Precondition` if one is there).
pub async fn put_new(
    store: Arc<dyn ObjectStore>,
    path: ObjPath,
    payload: PutPayload,
    policy: RetryPolicy,
) -> object_store::Result<PutResult> {
    with_retry(policy, || {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        store.put_opts(&path, payload.clone(), opts)
    })
    .await
}

/// [`put_new`] for an object only its writer may create, where the writer's own earlier
/// attempt can be the object that is "already there": a put that S3 applied but whose
/// response was lost is retried (by [`with_retry`] or by the client's own retries) and
/// meets itself. Then the object is read back, and if it holds exactly `payload` the
/// put succeeded; anything else is another writer's object and stays an error.
pub async fn put_new_or_same(
    store: Arc<dyn ObjectStore>,
    path: ObjPath,
    payload: PutPayload,
    policy: RetryPolicy,
) -> object_store::Result<PutResult> {
    let res = put_new(store.clone(), path.clone(), payload.clone(), policy).await;
    let Err(
        conflict @ (object_store::Error::AlreadyExists { .. }
        | object_store::Error::Precondition { .. }),
    ) = res
    else {
        return res;
    };
    let Ok(found) = with_retry(policy, || store.get_opts(&path, Default::default())).await else {
        return Err(conflict);
    };
    let meta = found.meta.clone();
    let Ok(bytes) = found.bytes().await else {
        return Err(conflict);
    };
    let mine = payload.iter().flat_map(|b| b.iter());
    if bytes.len() == payload.content_length() && bytes.iter().eq(mine) {
        tracing::info!(%path, "a put reported failed had been applied; the object is ours");
        return Ok(PutResult {
            e_tag: meta.e_tag,
            version: meta.version,
            extensions: Default::default(),
        });
    }
    Err(conflict)
}

/// A runtime owned by a store, for its object-store requests.
#[derive(Debug)]
pub struct IoRuntime {
    rt: Option<tokio::runtime::Runtime>,
}

impl IoRuntime {
    /// A two-thread runtime whose threads are called `name`.
    pub fn new(name: &str) -> io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()?;
        Ok(IoRuntime { rt: Some(rt) })
    }

    /// Runs `fut` on the runtime and blocks the caller until it is done.
    pub fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> io::Result<T> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| io::Error::other("the object-store runtime is shut down"))?;
        let handle = rt.spawn(fut);
        futures::executor::block_on(handle).map_err(io::Error::other)
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another runtime's context panics; this does not.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
