//! `sluice supervise`: restarts a dying driver with backoff, gives up past the limit,
//! forwards SIGTERM for a graceful stop, and exits with the driver's status.

use std::process::{Command, Stdio};
use std::time::Duration;

fn supervise(args: &[&str], cmd: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.arg("supervise")
        .args(args)
        .args(["--", "sh", "-c", cmd])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

#[test]
fn gives_up_after_the_limit_with_the_drivers_status() {
    let out = supervise(
        &["--max-restarts", "2", "--backoff", "10ms..20ms"],
        "exit 3",
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.matches("restart #").count(), 2, "{err}");
    assert!(
        err.contains("exited with status 3") && err.contains("giving up"),
        "{err}"
    );
}

#[test]
fn restarts_a_killed_driver_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran-once");
    let script = format!(
        "if [ -f '{m}' ]; then exit 0; else touch '{m}'; kill -9 $$; fi",
        m = marker.display()
    );
    let out = supervise(&["--backoff", "10ms..20ms"], &script)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("killed by signal 9"), "{err}");
    assert_eq!(err.matches("restart #").count(), 1, "{err}");
}

#[test]
fn sigterm_is_forwarded_for_a_graceful_stop() {
    let mut child = supervise(&[], "exec sleep 30").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut status = None;
    for _ in 0..100 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = status else {
        child.kill().unwrap();
        panic!("the supervisor did not stop after SIGTERM");
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("forwarding SIGTERM"), "{err}");
    // The driver (sh running sleep) died of the forwarded SIGTERM: 128 + 15.
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(
        !err.contains("restart #"),
        "a requested stop is not restarted: {err}"
    );
}
