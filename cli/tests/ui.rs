//! `sluice demo`'s web UI (on by default, the next free port when 4040 is busy, an
//! explicit address that is taken is an error, `--no-ui`) and `sluice supervise
//! --metrics`.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A GET of `http://{addr}{path}`: (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let r = sluice_testkit::http::get(addr, path);
    (r.status, r.body_text())
}

/// Waits for the child to exit: (succeeded, its stderr).
fn finish(mut child: Child) -> (bool, String) {
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap().success(), err)
}

/// Forwards the child's stderr lines (also echoed, for a failing test's log).
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("child: {line}");
            let _ = tx.send(line);
        }
    });
    rx
}

/// The `http://ADDR/` address in the first line that has `marker`.
fn wait_for_url(lines: &mpsc::Receiver<String>, marker: &str) -> String {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no line with {marker:?}"));
        if line.contains(marker) {
            let from = line.find("http://").unwrap() + "http://".len();
            let rest = &line[from..];
            return rest[..rest.find('/').unwrap()].to_owned();
        }
    }
}

fn demo(args: &[&str], ckpt: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["demo", "--quiet", "--batch-ms", "100"])
        .args(args)
        .arg("--checkpoint")
        .arg(ckpt)
        .env_remove("SLUICE_UI")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn the_demo_serves_its_ui_on_the_next_free_port_when_4040_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    // Hold 4040 (if something else already does, it is busy all the same).
    let _held = std::net::TcpListener::bind("127.0.0.1:4040");
    let mut child = demo(&["--duration", "4"], &dir.path().join("ckpt"));
    let lines = stderr_lines(&mut child);
    let addr = wait_for_url(&lines, "web UI at");
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert_ne!(addr, "127.0.0.1:4040", "4040 is busy");
    let deadline = Instant::now() + Duration::from_secs(120);
    let app = loop {
        let (status, body) = get(&addr, "/api/app");
        assert_eq!(status, 200, "{body}");
        let app: serde_json::Value = serde_json::from_str(&body).unwrap();
        if app["completed_batches"].as_u64().unwrap() > 0 {
            break app;
        }
        assert!(Instant::now() < deadline, "no batch completed: {app}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(app["app_name"], "sluice-demo");
    let (status, page) = get(&addr, "/");
    assert_eq!(status, 200);
    assert!(page.contains("<table"), "the page");
    let (status, metrics) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("sluice_batches_completed_total"),
        "{metrics}"
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn an_explicit_ui_address_that_is_taken_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let (ok, err) = finish(demo(
        &["--duration", "1", "--ui", &addr],
        &dir.path().join("ckpt"),
    ));
    assert!(!ok, "{err}");
    assert!(err.contains(&addr), "{err}");
    assert!(err.contains("already in use"), "{err}");
}

#[test]
fn no_ui_turns_it_off() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = finish(demo(
        &["--duration", "1", "--no-ui"],
        &dir.path().join("ckpt"),
    ));
    assert!(ok, "{err}");
    assert!(!err.contains("web UI"), "{err}");
}

#[test]
fn supervise_exposes_its_restarts_and_the_last_exit_cause() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("failed-once");
    // Fails once with status 3, then runs until the supervisor forwards SIGTERM.
    let script = format!(
        "if [ -f '{0}' ]; then exec sleep 600; else touch '{0}'; exit 3; fi",
        flag.display()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "supervise",
            "--metrics",
            "127.0.0.1:0",
            "--backoff",
            "10ms..20ms",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let addr = wait_for_url(&lines, "metrics at");
    let deadline = Instant::now() + Duration::from_secs(120);
    let metrics = loop {
        let (status, body) = get(&addr, "/metrics");
        assert_eq!(status, 200);
        if body.contains("sluice_supervisor_restarts_total 1")
            && body.contains("sluice_supervisor_driver_running 1")
        {
            break body;
        }
        assert!(Instant::now() < deadline, "no restart seen:\n{body}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        metrics.contains("sluice_supervisor_last_exit{cause=\"exit status 3\"} 1"),
        "{metrics}"
    );
    let (status, body) = get(&addr, "/nope");
    assert_eq!(status, 404, "{body}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
}
