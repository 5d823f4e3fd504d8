//! The driver web UI against running jobs: the `/api/*` JSON and `/metrics` follow the
//! listener's events, bad requests get clear answers, a restart shows its recovery, and
//! the page renders its charts and a table row per batch in a real headless Chromium.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::prelude::*;
use sluice::{CheckpointInfo, RestoreInfo};

/// Contexts are one-per-process; tests that start one run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything the listener was told.
#[derive(Default)]
struct Recorder {
    completed: Mutex<Vec<BatchInfo>>,
    failed: Mutex<Vec<(BatchInfo, String)>>,
    checkpoints: Mutex<Vec<CheckpointInfo>>,
    restores: Mutex<Vec<RestoreInfo>>,
}

impl StreamingListener for Recorder {
    fn on_batch_completed(&self, info: &BatchInfo) {
        self.completed.lock().unwrap().push(info.clone());
    }
    fn on_batch_failed(&self, info: &BatchInfo, error: &str) {
        self.failed
            .lock()
            .unwrap()
            .push((info.clone(), error.to_owned()));
    }
    fn on_checkpoint(&self, info: &CheckpointInfo) {
        self.checkpoints.lock().unwrap().push(info.clone());
    }
    fn on_restore(&self, info: &RestoreInfo) {
        self.restores.lock().unwrap().push(info.clone());
    }
}

impl Recorder {
    fn completed(&self) -> Vec<BatchInfo> {
        self.completed.lock().unwrap().clone()
    }
    /// Waits (a generous bound, so a slow machine does not fail the test) until `n`
    /// batches completed.
    fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.completed.lock().unwrap().len() < n {
            assert!(
                Instant::now() < deadline,
                "the job never completed {n} batches"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A GET: (status, content type, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let r = sluice_testkit::http::get(&addr.to_string(), path);
    let kind = r.header("content-type").unwrap_or_default().to_owned();
    (r.status, kind, r.body_text())
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let r = sluice_testkit::http::get(&addr.to_string(), path);
    let body = r.body_text();
    assert_eq!(r.status, 200, "{path}: {body}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{path}"
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn conf(name: &str) -> StreamingConf {
    StreamingConf::new(name, Duration::from_millis(100))
        .parallelism(2)
        .ui("127.0.0.1:0")
}

/// A word count over the generator, with a recorder; not started.
fn job(conf: StreamingConf) -> (StreamingContext, Arc<Recorder>) {
    let ssc = StreamingContext::new(conf).unwrap();
    let rec = Arc::new(Recorder::default());
    ssc.add_listener(rec.clone());
    word_count(&ssc);
    (ssc, rec)
}

fn word_count(ssc: &StreamingContext) {
    ssc.generator_stream("lines", 2000, |n| format!("w{} w{}", n % 7, n % 3))
        .unwrap()
        .flat_map(|l: &String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .unwrap()
        .map(|w: &String| (w.clone(), 1u64))
        .unwrap()
        .update_state_by_key("counts", |vs: &[u64], s: Option<&u64>| {
            Some(s.copied().unwrap_or(0) + vs.iter().sum::<u64>())
        })
        .unwrap()
        .foreach_batch(|_| Ok(()))
        .unwrap();
}

fn completed_rows(batches: &Value) -> Vec<&Value> {
    batches
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["status"] == "completed")
        .collect()
}

/// The value of an unlabelled-but-for-`app` sample in the Prometheus text.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{metrics}"))
        .parse()
        .unwrap()
}

#[test]
fn endpoints_follow_a_running_job_and_match_the_listener() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("ckpt");
    let (ssc, rec) = job(conf("ui-endpoints")
        .checkpoint(location.display().to_string())
        .checkpoint_interval(Duration::from_millis(200)));
    let addr = ssc.ui_addr().expect("the UI is on");
    assert!(addr.ip().is_loopback());
    // Before start: the page and an app in its defining phase, no batches.
    let (status, head, page) = get(addr, "/");
    assert_eq!(status, 200);
    assert!(head.contains("text/html"), "{head}");
    assert!(page.contains("id=\"batches-completed\""));
    assert_eq!(get_json(addr, "/api/batches"), Value::Array(vec![]));

    ssc.start().unwrap();
    rec.wait_for(3);
    let app = get_json(addr, "/api/app");
    assert_eq!(app["status"], "running");
    assert_eq!(app["app_name"], "ui-endpoints");
    assert_eq!(app["batch_interval_ms"], 100);
    assert_eq!(app["retained_batches"], 1000);
    assert!(app["now_ms"].as_u64().unwrap() >= app["started_at_ms"].as_u64().unwrap());
    let first = get_json(addr, "/api/batches");
    let seen = completed_rows(&first).len();
    assert!(seen >= 3, "{first}");
    // Counts move as batches complete.
    rec.wait_for(seen + 3);
    let later = get_json(addr, "/api/batches");
    assert!(completed_rows(&later).len() >= seen + 3, "{later}");
    ssc.stop(false).unwrap();

    // Stopped: every answer now matches what the listener was told, exactly.
    let events = rec.completed();
    let app = get_json(addr, "/api/app");
    assert_eq!(app["status"], "stopped");
    assert_eq!(app["completed_batches"], events.len() as u64);
    assert_eq!(app["failed_batches"], 0);
    let records: u64 = events.iter().map(|e| e.records).sum();
    assert_eq!(app["total_records"], records);
    assert!(app["conf"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["key"] == "checkpoint" && c["value"] == location.display().to_string()));

    let batches = get_json(addr, "/api/batches");
    let rows = completed_rows(&batches);
    assert_eq!(rows.len(), events.len());
    let mut previous = 0;
    for (row, e) in rows.iter().zip(&events) {
        assert_eq!(row["batch_time_ms"], e.time.0);
        assert!(e.time.0 > previous, "oldest first");
        previous = e.time.0;
        assert_eq!(row["records"], e.records);
        assert_eq!(row["kind"], "live");
        assert_eq!(row["outputs"], 1);
        let sched = e.scheduling_delay.as_millis() as u64;
        let proc = e.processing_delay.unwrap().as_millis() as u64;
        assert_eq!(row["scheduling_delay_ms"], sched);
        assert_eq!(row["processing_ms"], proc);
        assert_eq!(row["total_delay_ms"], sched + proc);
        assert!(row["error"].is_null());
        let per_input = row["input_records"].as_object().unwrap();
        let total: u64 = per_input.values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(total, e.records);
        let completed = row["completed_at_ms"].as_u64().unwrap();
        assert!(completed >= row["started_at_ms"].as_u64().unwrap());
    }

    let checkpoints = get_json(addr, "/api/checkpoints");
    let told = rec.checkpoints.lock().unwrap().clone();
    assert!(!told.is_empty());
    let list = checkpoints.as_array().unwrap();
    assert_eq!(list.len(), told.len());
    // The first snapshot of a run is full, the next ones incremental.
    assert!(told[0].full, "{told:?}");
    for (c, t) in list.iter().zip(&told) {
        assert_eq!(c["id"], t.time.0);
        assert_eq!(c["status"], "completed");
        assert_eq!(c["kind"], if t.full { "full" } else { "incremental" });
        assert_eq!(c["bytes"], t.bytes);
        assert!(t.bytes > 0);
        assert_eq!(c["duration_ms"], t.duration.as_millis() as u64);
        assert!(
            c["location"]
                .as_str()
                .unwrap()
                .starts_with(&location.display().to_string()),
            "{c}"
        );
    }

    let inputs = get_json(addr, "/api/inputs");
    let inputs = inputs.as_array().unwrap();
    assert_eq!(inputs.len(), 1);
    let name = inputs[0]["name"].as_str().unwrap();
    assert!(rows[0]["input_records"].get(name).is_some(), "{name}");
    assert!(inputs[0]["rate_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(inputs[0]["records_total"], records);
    assert!(inputs[0]["partitions"].as_array().unwrap().is_empty());

    let recovery = get_json(addr, "/api/recovery");
    assert_eq!(recovery["restored"], false);
    assert!(recovery["checkpoint"].is_null());
    let first_done = recovery["first_batch_completed_at_ms"].as_u64().unwrap();
    assert_eq!(
        recovery["time_to_first_batch_ms"].as_u64().unwrap(),
        first_done - recovery["process_started_at_ms"].as_u64().unwrap()
    );

    let (status, head, metrics) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(head.contains("text"), "{head}");
    for family in [
        "# TYPE sluice_batches_completed counter",
        "# TYPE sluice_batch_processing_seconds histogram",
        "# TYPE sluice_batch_scheduling_delay_seconds histogram",
        "# TYPE sluice_input_records counter",
        "# TYPE sluice_checkpoints_completed counter",
        "# TYPE sluice_checkpoint_duration_seconds histogram",
        "# TYPE sluice_receiver_buffered_bytes gauge",
        "# TYPE sluice_wal_written_bytes counter",
        "# TYPE sluice_wal_fsyncs counter",
        "# TYPE sluice_input_dropped_oversized counter",
        "# TYPE sluice_input_lost_to_retention counter",
        "# TYPE sluice_batches_replayed counter",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    let n = events.len() as f64;
    assert_eq!(sample(&metrics, "sluice_batches_completed_total"), n);
    assert_eq!(sample(&metrics, "sluice_batch_processing_seconds_count"), n);
    assert_eq!(
        sample(&metrics, "sluice_input_records_total"),
        records as f64
    );
    assert_eq!(
        sample(&metrics, "sluice_checkpoints_completed_total"),
        told.len() as f64
    );
    // The driver log (group commit, fsync per batch) went through the WAL counters.
    assert!(sample(&metrics, "sluice_wal_fsyncs_total") > 0.0);
    assert!(sample(&metrics, "sluice_wal_written_bytes_total") > 0.0);
}

#[test]
fn a_failed_batch_is_shown_with_its_error() {
    let _g = serial();
    let ssc = StreamingContext::new(conf("ui-failure")).unwrap();
    let rec = Arc::new(Recorder::default());
    ssc.add_listener(rec.clone());
    let seen = Arc::new(Mutex::new(0));
    ssc.generator_stream("lines", 100, |n| n)
        .unwrap()
        .foreach_batch(move |_| {
            let mut seen = seen.lock().unwrap();
            *seen += 1;
            if *seen == 3 {
                return Err(EngineError::io(
                    "sink postgres://app:hunter2@db/x",
                    std::io::Error::other("refused"),
                ));
            }
            Ok(())
        })
        .unwrap();
    let addr = ssc.ui_addr().unwrap();
    ssc.start().unwrap();
    assert!(ssc.await_termination().is_err());
    let failed = rec.failed.lock().unwrap().clone();
    assert_eq!(failed.len(), 1);
    let batches = get_json(addr, "/api/batches");
    let rows = batches.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let last = &rows[2];
    assert_eq!(last["status"], "failed");
    assert_eq!(last["batch_time_ms"], failed[0].0.time.0);
    let error = last["error"].as_str().unwrap();
    assert!(error.contains("refused"), "{error}");
    assert!(
        !error.contains("hunter2"),
        "the password is masked: {error}"
    );
    assert!(error.contains("app:***@db"), "{error}");
    let app = get_json(addr, "/api/app");
    assert_eq!(app["failed_batches"], 1);
    assert_eq!(app["completed_batches"], 2);
    let (_, _, metrics) = get(addr, "/metrics");
    assert_eq!(sample(&metrics, "sluice_batches_failed_total"), 1.0);
}

#[test]
fn history_is_bounded_by_the_retained_batches() {
    let _g = serial();
    let (ssc, rec) = job(conf("ui-bounded").ui_retained_batches(4));
    let addr = ssc.ui_addr().unwrap();
    ssc.start().unwrap();
    rec.wait_for(8);
    ssc.stop(false).unwrap();
    let events = rec.completed();
    let batches = get_json(addr, "/api/batches");
    let rows = batches.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    // The newest four, oldest first.
    let newest: Vec<u64> = events[events.len() - 4..]
        .iter()
        .map(|e| e.time.0)
        .collect();
    let shown: Vec<u64> = rows
        .iter()
        .map(|r| r["batch_time_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(shown, newest);
    assert_eq!(
        get_json(addr, "/api/app")["completed_batches"],
        events.len() as u64,
        "totals count every batch, not only the retained ones"
    );
}

#[test]
fn a_restart_shows_what_it_restored() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("ckpt").display().to_string();
    let conf = || {
        StreamingConf::new("ui-restart", Duration::from_millis(100))
            .parallelism(2)
            .checkpoint(location.clone())
            .checkpoint_interval(Duration::from_millis(200))
    };
    let rec = Arc::new(Recorder::default());
    let ssc = StreamingContext::get_or_create(conf(), |ssc| {
        word_count(ssc);
        Ok(())
    })
    .unwrap();
    ssc.add_listener(rec.clone());
    ssc.start().unwrap();
    while rec.checkpoints.lock().unwrap().len() < 2 {
        std::thread::sleep(Duration::from_millis(10));
    }
    ssc.stop(false).unwrap();
    drop(ssc);
    let newest = rec.checkpoints.lock().unwrap().last().unwrap().time;

    let rec = Arc::new(Recorder::default());
    let r2 = rec.clone();
    let ssc = StreamingContext::get_or_create(conf().ui("127.0.0.1:0"), move |ssc| {
        ssc.add_listener(r2);
        word_count(ssc);
        Ok(())
    })
    .unwrap();
    let addr = ssc.ui_addr().unwrap();
    let told = rec.restores.lock().unwrap().clone();
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].checkpoint, Some(newest));
    let recovery = get_json(addr, "/api/recovery");
    assert_eq!(recovery["restored"], true);
    assert_eq!(recovery["checkpoint"]["id"], newest.0);
    let restored_from = recovery["checkpoint"]["location"].as_str().unwrap();
    assert!(restored_from.starts_with(&location), "{restored_from}");
    assert!(
        restored_from.contains(&newest.0.to_string()),
        "{restored_from}"
    );
    assert_eq!(recovery["skipped"], Value::Array(vec![]));
    assert_eq!(recovery["replayed_batches"], told[0].replayed_batches);
    assert_eq!(recovery["caught_up_batches"], told[0].caught_up_batches);
    assert_eq!(recovery["decision"], told[0].decision.as_str());
    assert!(recovery["first_batch_completed_at_ms"].is_null());
    assert!(recovery["time_to_first_batch_ms"].is_null());

    let rerun = (told[0].replayed_batches + told[0].caught_up_batches) as usize;
    ssc.start().unwrap();
    rec.wait_for(rerun + 2);
    ssc.stop(false).unwrap();
    let recovery = get_json(addr, "/api/recovery");
    assert!(recovery["time_to_first_batch_ms"].is_u64(), "{recovery}");
    let batches = get_json(addr, "/api/batches");
    let kinds: Vec<&str> = batches
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["kind"].as_str().unwrap())
        .collect();
    let replays = kinds.iter().filter(|k| **k == "replay").count() as u64;
    let catch_ups = kinds.iter().filter(|k| **k == "catch-up").count() as u64;
    assert_eq!(replays, told[0].replayed_batches, "{kinds:?}");
    assert_eq!(catch_ups, told[0].caught_up_batches, "{kinds:?}");
    let (_, _, metrics) = get(addr, "/metrics");
    assert_eq!(
        sample(&metrics, "sluice_batches_replayed_total"),
        replays as f64
    );
}

#[test]
fn bad_requests_get_clear_answers() {
    let _g = serial();
    let (ssc, _rec) = job(conf("ui-bad-requests"));
    let addr = ssc.ui_addr().unwrap();
    let (status, head, body) = get(addr, "/api/nope");
    assert_eq!(status, 404);
    assert!(head.contains("text/plain"), "{head}");
    assert!(body.contains("/api/nope"), "{body}");
    assert!(
        body.contains("/api/batches"),
        "the body lists what exists: {body}"
    );
    // Read-only: no other method on an API path.
    for method in ["POST", "PUT", "DELETE"] {
        let r = sluice_testkit::http::request(method, &addr.to_string(), "/api/batches");
        assert_eq!(r.status, 405, "{method}: {}", r.body_text());
    }

    // The same address again: a clear error naming it.
    let taken = addr.to_string();
    let err =
        StreamingContext::new(StreamingConf::new("second", Duration::from_secs(1)).ui(&taken))
            .unwrap_err()
            .to_string();
    assert!(err.contains(&taken), "{err}");
    assert!(err.contains("already in use"), "{err}");
    // A bad address too.
    let err = StreamingContext::new(
        StreamingConf::new("third", Duration::from_secs(1)).ui("not-an-address"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not-an-address"), "{err}");
    drop(ssc);
}

/// The text of the element whose opening tag has `id="{id}"`, up to its closing `tag`.
fn element<'a>(dom: &'a str, tag: &str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the DOM"));
    let start = dom[..at].rfind(&format!("<{tag}")).unwrap();
    let end = at + dom[at..].find(&format!("</{tag}>")).unwrap();
    &dom[start..end]
}

/// The values of `attr` on the opening tags in `html` that start with `prefix`.
fn attrs<'a>(html: &'a str, prefix: &str, attr: &str) -> Vec<&'a str> {
    html.match_indices(prefix)
        .filter_map(|(i, _)| {
            let tag = &html[i..i + html[i..].find('>')?];
            let from = tag.find(&format!(" {attr}=\""))? + attr.len() + 3;
            Some(&tag[from..from + tag[from..].find('"')?])
        })
        .collect()
}

/// The page in Debian's headless Chromium (ui/screenshot.sh, which installs it when
/// missing): after the scripts ran, every chart plots the batches and the completed
/// table has one row per batch the listener saw complete.
#[test]
fn the_page_renders_charts_and_a_row_per_batch_in_chromium() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (ssc, rec) = job(conf("ui-chromium")
        .checkpoint(dir.path().join("ckpt").display().to_string())
        .checkpoint_interval(Duration::from_millis(300)));
    let addr = ssc.ui_addr().unwrap();
    ssc.start().unwrap();
    rec.wait_for(8);
    // Stopped, so the page and the listener see the same batches (the server stays up
    // as long as the context lives).
    ssc.stop(false).unwrap();
    let events = rec.completed();

    let png = dir.path().join("ui.png");
    let dom_file = dir.path().join("dom.html");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../ui/screenshot.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(format!("http://{addr}/"))
        .arg(&png)
        .arg(&dom_file)
        .env("BUDGET_MS", "4000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = std::fs::read(&png).unwrap();
    assert!(image.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
    assert!(image.len() > 20_000, "a screenshot with content");
    let dom = std::fs::read_to_string(&dom_file).unwrap();

    assert!(dom.contains("data-state=\"live\""), "connected");
    assert!(dom.contains(">ui-chromium<"), "the app's name");
    for chart in [
        "chart-input-rate",
        "chart-scheduling-delay",
        "chart-processing-time",
        "chart-total-delay",
    ] {
        let html = element(&dom, "div", chart);
        let points = attrs(html, "<svg class=\"timeline\"", "data-points");
        assert_eq!(points, vec![events.len().to_string()], "{chart}");
        assert!(html.contains("class=\"histogram\""), "{chart} histogram");
        assert!(html.contains("<path"), "{chart} draws a line");
    }
    let table = element(&dom, "table", "batches-completed");
    let mut shown: Vec<u64> = attrs(table, "<tr class=\"batch", "data-batch-time")
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    shown.sort();
    let told: Vec<u64> = events.iter().map(|e| e.time.0).collect();
    assert_eq!(shown, told, "a row per completed batch");
    let checkpoints = element(&dom, "table", "checkpoints");
    assert_eq!(
        attrs(checkpoints, "<tr class=\"checkpoint", "data-id").len(),
        rec.checkpoints.lock().unwrap().len()
    );
}

/// A socket receiver: `/api/inputs` shows its status, buffered bytes and rate under
/// the same name the batches count its records by, and `/metrics` its gauges.
#[test]
fn a_receiver_is_shown_under_one_name_in_inputs_batches_and_metrics() {
    let _g = serial();
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        let (mut conn, _) = server.accept().unwrap();
        for i in 0..5_000 {
            if writeln!(conn, "line {i}").is_err() {
                return;
            }
        }
        // Keep the connection open until the job stops reading.
        let mut buf = [0u8; 1];
        let _ = std::io::Read::read(&mut conn, &mut buf);
    });
    let ssc = StreamingContext::new(conf("ui-receiver")).unwrap();
    let rec = Arc::new(Recorder::default());
    ssc.add_listener(rec.clone());
    ssc.socket_text_stream("127.0.0.1", port)
        .unwrap()
        .foreach_batch(|_| Ok(()))
        .unwrap();
    let addr = ssc.ui_addr().unwrap();
    ssc.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while rec.completed().iter().map(|e| e.records).sum::<u64>() < 5_000 {
        assert!(
            Instant::now() < deadline,
            "the receiver never delivered 5000 lines"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let inputs = get_json(addr, "/api/inputs");
    let input = &inputs.as_array().unwrap()[0];
    assert_eq!(input["kind"], "receiver");
    assert_eq!(input["status"], "active");
    assert!(input["buffered_bytes"].is_u64(), "{input}");
    assert_eq!(input["records_total"], 5_000);
    let name = input["name"].as_str().unwrap().to_owned();
    ssc.stop(false).unwrap();
    feeder.join().unwrap();
    let counted: u64 = get_json(addr, "/api/batches")
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["input_records"][&name].as_u64())
        .sum();
    assert_eq!(
        counted, 5_000,
        "batches count the receiver's records by its name"
    );
    let (_, _, metrics) = get(addr, "/metrics");
    let label = format!("input=\"{name}\"");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_receiver_buffered_bytes{") && l.contains(&label)),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_input_records_total{")
                && l.contains(&label)
                && l.ends_with(" 5000")),
        "{metrics}"
    );
}
