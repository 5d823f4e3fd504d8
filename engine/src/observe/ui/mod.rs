//! The driver's web UI (feature `ui`): the page of `ui/index.html`, the `/api/*` JSON
//! it reads (specified in `ui/README.md`) and Prometheus `/metrics`.
//!
//! [`UiState`] is a [`StreamingListener`]: listener events are the one source of what it
//! shows, kept in bounded history (the latest `ui_retained_batches` batches and
//! `ui_retained_checkpoints` checkpoints). Inputs are asked for their status when a
//! page or a scrape asks. Nothing here changes the job: every endpoint is a `GET`.

mod metrics;
mod server;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use serde::Serialize;

use crate::observe::listener::{BatchInfo, CheckpointInfo, RestoreInfo, StreamingListener};
use crate::observe::InputStatus;
use crate::runtime::context::{now_ms, CtxInner};
use crate::StreamingConf;

pub(crate) use server::HttpServer as UiServer;
pub use server::{serve_metrics, HttpServer};

/// One batch as `/api/batches` shows it.
#[derive(Debug, Clone, Serialize)]
struct BatchRow {
    batch_time_ms: u64,
    records: u64,
    scheduling_delay_ms: Option<u64>,
    processing_ms: Option<u64>,
    total_delay_ms: Option<u64>,
    status: &'static str,
    kind: &'static str,
    submitted_at_ms: u64,
    started_at_ms: Option<u64>,
    completed_at_ms: Option<u64>,
    outputs: usize,
    error: Option<String>,
    input_records: BTreeMap<String, u64>,
}

/// One checkpoint as `/api/checkpoints` shows it.
#[derive(Debug, Clone, Serialize)]
struct CheckpointRow {
    id: u64,
    batch_time_ms: u64,
    started_at_ms: u64,
    duration_ms: u64,
    bytes: u64,
    kind: &'static str,
    location: String,
    status: &'static str,
    error: Option<String>,
}

#[derive(Debug, Default)]
struct History {
    batches: VecDeque<BatchRow>,
    checkpoints: VecDeque<CheckpointRow>,
    completed: u64,
    failed: u64,
    total_records: u64,
    /// Records per input over every batch (for inputs that do not count their own).
    input_totals: BTreeMap<String, u64>,
    restore: Option<RestoreInfo>,
    first_completed_at_ms: Option<u64>,
}

/// What the UI knows of one running context.
pub(crate) struct UiState {
    app_name: String,
    batch_interval_ms: u64,
    started_at_ms: u64,
    retained_batches: usize,
    retained_checkpoints: usize,
    checkpoint_location: Option<String>,
    conf: Vec<(String, String)>,
    history: Mutex<History>,
    /// What the inputs reported last (kept after the context stops and lets them go).
    inputs: metrics::InputsSnapshot,
    metrics: metrics::Metrics,
    /// The graph's output operations (read once, at the first batch: the graph is
    /// fixed by then, and released when the context stops).
    outputs: std::sync::atomic::AtomicUsize,
    /// The context, to ask its inputs and phase; weak, so the UI never keeps it alive.
    ctx: Weak<CtxInner>,
}

impl std::fmt::Debug for UiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiState")
            .field("app", &self.app_name)
            .finish_non_exhaustive()
    }
}

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

impl UiState {
    pub(crate) fn new(conf: &StreamingConf, ctx: Weak<CtxInner>) -> UiState {
        let inputs = metrics::InputsSnapshot::default();
        UiState {
            app_name: conf.app_name.clone(),
            batch_interval_ms: ms(conf.batch_interval),
            started_at_ms: now_ms(),
            retained_batches: conf.ui_retained_batches,
            retained_checkpoints: conf.ui_retained_checkpoints,
            checkpoint_location: conf.checkpoint.as_deref().map(mask_secrets),
            conf: conf_entries(conf),
            history: Mutex::new(History::default()),
            metrics: metrics::Metrics::new(&conf.app_name, inputs.clone()),
            inputs,
            outputs: Default::default(),
            ctx,
        }
    }

    fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the context's inputs for their status now (the last answer once the
    /// context has stopped).
    fn refresh_inputs(&self) -> Vec<InputStatus> {
        let live = self.ctx.upgrade().map(|c| c.input_statuses());
        let mut last = self.inputs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(now) = live.filter(|s| !s.is_empty()) {
            *last = now;
        }
        last.clone()
    }

    fn status(&self) -> &'static str {
        self.ctx.upgrade().map_or("stopped", |c| c.phase_name())
    }

    fn outputs(&self) -> usize {
        use std::sync::atomic::Ordering;
        let known = self.outputs.load(Ordering::Relaxed);
        if known > 0 {
            return known;
        }
        let n = self.ctx.upgrade().map_or(0, |c| c.output_count());
        self.outputs.store(n, Ordering::Relaxed);
        n
    }

    fn update(&self, info: &BatchInfo, f: impl FnOnce(&mut BatchRow)) {
        let mut h = self.history();
        if let Some(row) = h
            .batches
            .iter_mut()
            .rev()
            .find(|b| b.batch_time_ms == info.time.0)
        {
            f(row);
        }
    }

    fn finish(&self, info: &BatchInfo, status: &'static str, error: Option<&str>) {
        let now = now_ms();
        let sched = ms(info.scheduling_delay);
        let proc = info.processing_delay.map(ms);
        self.update(info, |row| {
            row.status = status;
            row.processing_ms = proc;
            row.total_delay_ms = proc.map(|p| p + sched);
            row.completed_at_ms = Some(now);
            row.error = error.map(str::to_owned);
        });
        let mut h = self.history();
        if status == "completed" {
            h.completed += 1;
            h.first_completed_at_ms.get_or_insert(now);
        } else {
            h.failed += 1;
        }
        h.total_records += info.records;
        for (input, n) in &info.input_records {
            *h.input_totals.entry(input.clone()).or_default() += n;
        }
    }

    // ---- the JSON answers (ui/README.md, "The API it reads") ----

    pub(crate) fn app_json(&self) -> serde_json::Value {
        let status = self.status();
        let h = self.history();
        serde_json::json!({
            "app_name": self.app_name,
            "batch_interval_ms": self.batch_interval_ms,
            "started_at_ms": self.started_at_ms,
            "now_ms": now_ms(),
            "status": status,
            "retained_batches": self.retained_batches,
            "completed_batches": h.completed,
            "failed_batches": h.failed,
            "total_records": h.total_records,
            "conf": self.conf.iter().map(|(k, v)| serde_json::json!({"key": k, "value": v})).collect::<Vec<_>>(),
        })
    }

    pub(crate) fn batches_json(&self) -> serde_json::Value {
        let outputs = self.outputs();
        let h = self.history();
        let rows: Vec<BatchRow> = h
            .batches
            .iter()
            .map(|b| BatchRow {
                outputs,
                ..b.clone()
            })
            .collect();
        drop(h);
        serde_json::to_value(rows).unwrap_or_default()
    }

    pub(crate) fn inputs_json(&self) -> serde_json::Value {
        let statuses = self.refresh_inputs();
        // The rate over the retained batches of the last 10 batch intervals.
        let window = 10;
        let h = self.history();
        let recent: Vec<&BatchRow> = h.batches.iter().rev().take(window).collect();
        let secs = (recent.len().max(1) as f64) * self.batch_interval_ms as f64 / 1000.0;
        let rows: Vec<serde_json::Value> = statuses
            .iter()
            .map(|s| {
                let n: u64 = recent
                    .iter()
                    .filter_map(|b| b.input_records.get(&s.name))
                    .sum();
                serde_json::json!({
                    "name": s.name,
                    "kind": s.kind,
                    "status": s.state,
                    "rate_per_s": if recent.is_empty() { 0.0 } else { n as f64 / secs },
                    "rate_limit_per_s": s.rate_limit_per_s,
                    "buffered_bytes": s.buffered_bytes,
                    "restarts": s.restarts,
                    "last_error": s.last_error.as_deref().map(mask_secrets),
                    "records_total": s.records_total.max(h.input_totals.get(&s.name).copied().unwrap_or(0)),
                    "dropped_oversized": s.dropped_oversized,
                    "lost_to_retention": s.lost_to_retention,
                    "partitions": s.partitions.iter().map(|p| serde_json::json!({
                        "topic": p.topic,
                        "partition": p.partition,
                        "from_offset": p.from_offset,
                        "until_offset": p.until_offset,
                        "high_watermark": p.high_watermark,
                        "lag": p.lag,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::Value::Array(rows)
    }

    pub(crate) fn checkpoints_json(&self) -> serde_json::Value {
        let h = self.history();
        serde_json::to_value(&h.checkpoints).unwrap_or_default()
    }

    pub(crate) fn recovery_json(&self) -> serde_json::Value {
        let h = self.history();
        let first = h.first_completed_at_ms;
        let ttfb = first.map(|f| f.saturating_sub(self.started_at_ms));
        let r = h.restore.as_ref();
        let decision = match (r, &self.checkpoint_location) {
            (Some(r), _) => r.decision.clone(),
            (None, Some(_)) => "started afresh: nothing to restore".to_owned(),
            (None, None) => "no checkpoint location: nothing is restored on restart".to_owned(),
        };
        serde_json::json!({
            "restored": r.is_some_and(|r| r.checkpoint.is_some()),
            "checkpoint": r.and_then(|r| r.checkpoint).map(|t| serde_json::json!({
                "id": t.0,
                "batch_time_ms": t.0,
                "location": r.map(|r| mask_secrets(&r.location)),
            })),
            "skipped": r.map_or(Vec::new(), |r| r.skipped.iter().map(|(t, why)| serde_json::json!({
                "id": t.0,
                "reason": mask_secrets(why),
            })).collect()),
            "replayed_batches": r.map_or(0, |r| r.replayed_batches),
            "caught_up_batches": r.map_or(0, |r| r.caught_up_batches),
            "process_started_at_ms": self.started_at_ms,
            "first_batch_completed_at_ms": first,
            "time_to_first_batch_ms": ttfb,
            "decision": mask_secrets(&decision),
        })
    }

    pub(crate) fn metrics_text(&self) -> String {
        self.refresh_inputs();
        self.metrics.encode()
    }
}

impl StreamingListener for UiState {
    fn on_batch_submitted(&self, info: &BatchInfo) {
        let now = now_ms();
        self.outputs();
        let mut h = self.history();
        if h.batches.len() >= self.retained_batches {
            h.batches.pop_front();
        }
        h.batches.push_back(BatchRow {
            batch_time_ms: info.time.0,
            records: info.records,
            scheduling_delay_ms: None,
            processing_ms: None,
            total_delay_ms: None,
            status: "queued",
            kind: info.kind.as_str(),
            submitted_at_ms: now,
            started_at_ms: None,
            completed_at_ms: None,
            outputs: 0,
            error: None,
            input_records: info.input_records.iter().cloned().collect(),
        });
    }

    fn on_batch_started(&self, info: &BatchInfo) {
        let now = now_ms();
        let sched = ms(info.scheduling_delay);
        self.update(info, |row| {
            row.status = "running";
            row.started_at_ms = Some(now);
            row.scheduling_delay_ms = Some(sched);
        });
    }

    fn on_batch_completed(&self, info: &BatchInfo) {
        // Also keeps what the inputs reported at the last batch for after the stop
        // (a stopped context lets its inputs go).
        self.refresh_inputs();
        self.metrics.batch_completed(info);
        self.finish(info, "completed", None);
    }

    fn on_batch_failed(&self, info: &BatchInfo, error: &str) {
        self.metrics.batch_failed(info);
        self.finish(info, "failed", Some(&mask_secrets(error)));
    }

    fn on_checkpoint(&self, info: &CheckpointInfo) {
        self.metrics.checkpoint(info);
        let mut h = self.history();
        if h.checkpoints.len() >= self.retained_checkpoints {
            h.checkpoints.pop_front();
        }
        h.checkpoints.push_back(CheckpointRow {
            id: info.time.0,
            batch_time_ms: info.time.0,
            started_at_ms: info.started_at_ms,
            duration_ms: ms(info.duration),
            bytes: info.bytes,
            kind: if info.full { "full" } else { "incremental" },
            location: mask_secrets(&info.location),
            status: if info.error.is_some() {
                "failed"
            } else {
                "completed"
            },
            error: info.error.as_deref().map(mask_secrets),
        });
    }

    fn on_restore(&self, info: &RestoreInfo) {
        self.history().restore = Some(info.clone());
    }
}

/// `scheme://user:password@host…` → `scheme://user:***@host…`, and the value of any
/// `password=`, `secret=` or `token=` parameter → `***`, wherever they occur in `s`.
pub(crate) fn mask_secrets(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(a) => {
                let userinfo = &authority[..a];
                match userinfo.find(':') {
                    Some(c) => {
                        out.push_str(&userinfo[..c]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[a..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    for key in ["password=", "secret=", "token="] {
        let mut masked = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(i) = rest.to_ascii_lowercase().find(key) {
            masked.push_str(&rest[..i + key.len()]);
            let tail = &rest[i + key.len()..];
            let end = tail
                .find(|c: char| c == '&' || c == ';' || c.is_whitespace())
                .unwrap_or(tail.len());
            masked.push_str("***");
            rest = &tail[end..];
        }
        masked.push_str(rest);
        out = masked;
    }
    out
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

/// The configuration as the page shows it, secrets masked.
fn conf_entries(c: &StreamingConf) -> Vec<(String, String)> {
    let d = |d: std::time::Duration| format!("{}ms", d.as_millis());
    let rows: Vec<(&str, String)> = vec![
        ("app_name", c.app_name.clone()),
        ("batch_interval", d(c.batch_interval)),
        ("block_interval", d(c.block_interval)),
        ("parallelism", c.parallelism.to_string()),
        ("checkpoint", opt(c.checkpoint.as_deref())),
        ("checkpoint_interval", opt(c.checkpoint_interval.map(d))),
        ("receiver_wal", c.receiver_wal.to_string()),
        ("receiver_read_back", c.receiver_read_back.to_string()),
        ("receiver_max_rate", opt(c.receiver_max_rate)),
        ("backpressure", c.backpressure.to_string()),
        (
            "backpressure_initial_rate",
            opt(c.backpressure_initial_rate),
        ),
        ("receiver_restart_delay", d(c.receiver_restart_delay)),
        ("receiver_max_buffered", opt(c.receiver_max_buffered)),
        (
            "receiver_max_record_bytes",
            c.receiver_max_record_bytes.to_string(),
        ),
        (
            "drop_incompatible_state",
            c.drop_incompatible_state.to_string(),
        ),
        ("down_time", format!("{:?}", c.down_time)),
        ("wal_recovery_mode", format!("{:?}", c.wal_recovery_mode)),
        ("ui", opt(c.ui.as_deref())),
        ("ui_retained_batches", c.ui_retained_batches.to_string()),
        (
            "ui_retained_checkpoints",
            c.ui_retained_checkpoints.to_string(),
        ),
    ];
    rows.into_iter()
        .map(|(k, v)| (k.to_owned(), mask_secrets(&v)))
        .collect()
}

/// Starts the UI of a context being created: binds `addr` now (so a taken port is an
/// error of `StreamingContext::new`), serves on its own thread.
pub(crate) fn bind(addr: &str) -> crate::Result<std::net::TcpListener> {
    server::bind(addr)
}

/// Starts serving on `listener` for the context `ctx`; returns the server (stopped when
/// dropped) and the listener to register.
pub(crate) fn start(
    listener: std::net::TcpListener,
    conf: &StreamingConf,
    ctx: Weak<CtxInner>,
) -> crate::Result<(UiServer, Arc<UiState>)> {
    let state = Arc::new(UiState::new(conf, ctx));
    let server = UiServer::start(listener, server::router(state.clone()))?;
    Ok((server, state))
}

#[cfg(test)]
mod tests {
    use super::mask_secrets;

    #[test]
    fn passwords_in_urls_and_parameters_are_masked() {
        assert_eq!(
            mask_secrets("postgres://app:hunter2@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(
            mask_secrets("s3://bucket/prefix and redis://:pw@h/0"),
            "s3://bucket/prefix and redis://:***@h/0"
        );
        assert_eq!(
            mask_secrets("host=db user=a password=s3cr3t dbname=x"),
            "host=db user=a password=*** dbname=x"
        );
        assert_eq!(mask_secrets("k?token=abc&x=1"), "k?token=***&x=1");
        assert_eq!(mask_secrets("/var/lib/job"), "/var/lib/job");
    }
}
