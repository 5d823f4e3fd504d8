//! The HTTP side: axum on a small tokio runtime of its own (one thread, named
//! `sluice-ui`), so serving never takes a thread of the CPU pool or the scheduler.
//! Every route is a `GET`; anything else is a 404 or 405 with a plain-text body.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;

use super::UiState;
use crate::{EngineError, Result};

/// The page: one self-contained file (no CDN, inline SVG charts), in the binary.
const INDEX_HTML: &str = include_str!("../../../../ui/index.html");

const NO_STORE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-store");

/// A running HTTP server (the web UI, or [`serve_metrics`]); stops when dropped.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Serves Prometheus text at `GET /metrics` on `addr` (`host:port`), what `render`
/// returns at each scrape; every other path is a 404. For processes that are not a
/// streaming context (`sluice supervise --metrics`).
pub fn serve_metrics(
    addr: &str,
    render: impl Fn() -> String + Send + Sync + 'static,
) -> Result<HttpServer> {
    let render = Arc::new(render);
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move { metrics_response(render()) }
            }),
        )
        .fallback(not_found);
    HttpServer::start(bind(addr)?, app)
}

fn metrics_response(text: String) -> Response {
    (
        [
            NO_STORE,
            (
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        ],
        text,
    )
        .into_response()
}

impl HttpServer {
    /// The address it serves at (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(super) fn start(listener: TcpListener, app: Router) -> Result<HttpServer> {
        let addr = listener
            .local_addr()
            .map_err(|e| EngineError::io("the web UI's listening socket", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| EngineError::io(format!("the web UI at {addr}"), e))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EngineError::io("the web UI's runtime", e))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("sluice-ui".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(%addr, error = %e, "the web UI cannot serve");
                            return;
                        }
                    };
                    let served = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::error!(%addr, error = %e, "the web UI stopped");
                    }
                });
            })
            .map_err(|e| EngineError::io("the web UI thread", e))?;
        tracing::info!("serving http://{addr}/ (metrics at http://{addr}/metrics)");
        Ok(HttpServer {
            addr,
            shutdown: Some(tx),
        })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Binds `addr` (`host:port`), with an error that names it.
pub(super) fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| EngineError::Config {
        setting: "ui".into(),
        reason: if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("cannot serve the web UI at {addr}: the address is already in use (another job or program listens there); choose another port, or port 0 for any free one")
        } else {
            format!("cannot serve the web UI at {addr}: {e}")
        },
    })
}

fn json(v: serde_json::Value) -> Response {
    (
        [
            NO_STORE,
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
        ],
        v.to_string(),
    )
        .into_response()
}

/// A `GET` route answering `answer(state)` as JSON.
fn api(answer: fn(&UiState) -> serde_json::Value) -> MethodRouter<Arc<UiState>> {
    get(move |State(s): State<Arc<UiState>>| async move { json(answer(&s)) })
}

/// The web UI's routes.
pub(super) fn router(state: Arc<UiState>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8"), NO_STORE],
                    INDEX_HTML,
                )
            }),
        )
        .route("/api/app", api(UiState::app_json))
        .route("/api/batches", api(UiState::batches_json))
        .route("/api/inputs", api(UiState::inputs_json))
        .route("/api/checkpoints", api(UiState::checkpoints_json))
        .route("/api/recovery", api(UiState::recovery_json))
        .route(
            "/metrics",
            get(|State(s): State<Arc<UiState>>| async move { metrics_response(s.metrics_text()) }),
        )
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        [NO_STORE, (header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "404 not found: {}\nsluice serves GET /metrics, and with the web UI /, /api/app, /api/batches, /api/inputs, /api/checkpoints and /api/recovery\n",
            uri.path()
        ),
    )
        .into_response()
}
