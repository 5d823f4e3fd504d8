//! One server child process: started with its output in a log file, waited on until
//! it is ready, stopped by its PID, and guarded so that it also stops when the test
//! process dies without unwinding (a panic in another thread, a timeout, SIGKILL).
//!
//! The guard is a small `sh` beside the server whose standard input is a pipe this
//! process holds open. Every way this process can end closes the pipe; the guard then
//! sends the server its stop signal (escalating to SIGKILL), and removes the server's
//! directory. The guard checks the server's start time in `/proc/PID/stat` first, so a
//! PID reused by an unrelated process is never signalled. Dropping a [`ServerProcess`]
//! stops the server itself and dismisses the guard.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// How long a stopped server gets between its stop signal and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Lines of a server's log quoted in an error.
const LOG_TAIL_LINES: usize = 40;

/// The guard: waits for its stdin to close (the test process ended), then stops the
/// server `$1` with signal `$2` if `/proc/$1/stat` still shows start time `$3`, and
/// removes directory `$4` (if given).
const GUARD_SCRIPT: &str = r#"
read -r _ignored
start() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '$1 != "Z" {print $20}'; }
if [ -n "$3" ] && [ "$(start "$1")" = "$3" ]; then
    kill "-$2" "$1" 2>/dev/null
    i=0
    while [ "$(start "$1")" = "$3" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ "$(start "$1")" = "$3" ] && kill -KILL "$1" 2>/dev/null
fi
[ -n "$4" ] && rm -rf -- "$4"
exit 0
"#;

/// A running server process (see the module docs).
#[derive(Debug)]
pub struct ServerProcess {
    name: &'static str,
    command: String,
    child: Mutex<Child>,
    stop_signal: Signal,
    log_path: PathBuf,
    /// The guard and the pipe that keeps it waiting; `None` once detached.
    guard: Option<(Child, ChildStdin)>,
}

impl ServerProcess {
    /// Spawns `cmd` for the server called `name`, with stdout and stderr appended to
    /// `log_path`, and its guard. `stop_signal` is what stops it promptly (the data
    /// directory is thrown away, so an immediate shutdown is right). `cleanup_dir` is
    /// removed by the guard if this process dies first.
    pub fn spawn(
        name: &'static str,
        mut cmd: Command,
        log_path: &Path,
        stop_signal: Signal,
        cleanup_dir: Option<&Path>,
    ) -> io::Result<ServerProcess> {
        let command = describe(&cmd);
        let log = File::options().create(true).append(true).open(log_path)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot start {name}: `{command}`: {e}; {ENSURE_DEPS_HINT}"),
                )
            })?;
        let pid = child.id();
        let mut server = ServerProcess {
            name,
            command,
            child: Mutex::new(child),
            stop_signal,
            log_path: log_path.to_owned(),
            guard: None,
        };
        let start_time = proc_start_time(pid).unwrap_or_default();
        let mut guard = Command::new("sh")
            .arg("-c")
            .arg(GUARD_SCRIPT)
            .arg("sluice-testkit-guard")
            .arg(pid.to_string())
            .arg(signal_name(stop_signal))
            .arg(start_time)
            .arg(
                cleanup_dir
                    .map(|d| d.as_os_str().to_owned())
                    .unwrap_or_default(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let pipe = guard.stdin.take().expect("piped stdin");
        server.guard = Some((guard, pipe));
        Ok(server)
    }

    /// Waits until `probe` answers `Ok(true)`, for at most `timeout`. Fails with the
    /// command and the log's tail if the server exits first or never gets ready. The
    /// probe's last error is quoted too.
    pub fn wait_ready(
        &self,
        timeout: Duration,
        mut probe: impl FnMut() -> Result<bool, String>,
    ) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            self.check_running()?;
            match probe() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                let probe = if last.is_empty() {
                    String::new()
                } else {
                    format!(" (last check: {last})")
                };
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} did not become ready within {timeout:?}{probe}\ncommand: {}\n{}",
                        self.name,
                        self.command,
                        self.log_tail()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `Ok` while the server runs; an error naming how it ended, with the command and
    /// the log's tail, once it has exited (killed under a test, crashed, ...).
    pub fn check_running(&self) -> io::Result<()> {
        let status = self.lock().try_wait()?;
        match status {
            None => Ok(()),
            Some(status) => Err(self.exited(status)),
        }
    }

    fn exited(&self, status: ExitStatus) -> io::Error {
        io::Error::other(format!(
            "{} (pid {}) exited: {status}\ncommand: {}\n{}",
            self.name,
            self.pid(),
            self.command,
            self.log_tail()
        ))
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.lock().id()
    }

    /// The file the server's output goes to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The command line that started the server.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The last lines of the server's log, headed by the log's path.
    pub fn log_tail(&self) -> String {
        format!(
            "last lines of {}:\n{}",
            self.log_path.display(),
            log_tail(&self.log_path)
        )
    }

    /// Sends `signal` to the server (a test kills or pauses a server under a job).
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        kill(Pid::from_raw(self.pid() as i32), signal).map_err(io::Error::from)
    }

    /// Stops the server: its stop signal, up to [`STOP_GRACE`], then SIGKILL; reaps it.
    pub fn stop(&mut self) {
        self.dismiss_guard();
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Ok(None) = child.try_wait() {
            let _ = kill(Pid::from_raw(child.id() as i32), self.stop_signal);
            let deadline = Instant::now() + STOP_GRACE;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// Leaves the server running after this handle and this process are gone;
    /// returns its PID.
    fn detach(mut self) -> u32 {
        self.dismiss_guard();
        let pid = self.pid();
        std::mem::forget(self);
        pid
    }

    fn dismiss_guard(&mut self) {
        if let Some((mut guard, pipe)) = self.guard.take() {
            let _ = guard.kill();
            let _ = guard.wait();
            drop(pipe);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A started server: its process, its port and its directory (removed when dropped,
/// after the process is stopped). Each server type wraps one and derefs to it.
#[derive(Debug)]
pub struct RunningServer {
    // Field order: the process stops before the directory is removed.
    process: ServerProcess,
    port: u16,
    dir: TempDir,
}

impl RunningServer {
    pub(crate) fn new(process: ServerProcess, port: u16, dir: TempDir) -> RunningServer {
        RunningServer { process, port, dir }
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server process (PID, log, signals).
    pub fn process(&self) -> &ServerProcess {
        &self.process
    }

    /// The server process, to stop it (a server that can restart on its directory).
    pub(crate) fn process_mut(&mut self) -> &mut ServerProcess {
        &mut self.process
    }

    /// Puts a restarted process in place of the stopped one (same port, same
    /// directory).
    pub(crate) fn replace_process(&mut self, process: ServerProcess) {
        self.process = process;
    }

    /// The server's directory (data, configuration, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Leaves the server running, and its directory in place, after this handle and
    /// this process are gone (for `sluice-dev-servers start`); returns its PID and
    /// directory.
    pub fn detach(self) -> (u32, PathBuf) {
        (self.process.detach(), self.dir.keep())
    }
}

/// Runs a client command that checks or sets up a server (`psql -c …`): `Ok(true)`
/// when it succeeds, else its standard error.
pub fn client_command(mut cmd: Command) -> Result<bool, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", describe(&cmd)))?;
    if out.status.success() {
        Ok(true)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// What to do when a server's program is missing.
pub(crate) const ENSURE_DEPS_HINT: &str =
    "run `scripts/ensure-deps.sh`, which installs the test servers, and retry";

/// The last [`LOG_TAIL_LINES`] lines of a log file (empty if it cannot be read).
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// `program arg arg ...`, for error messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a setup command to completion (initdb, storage format, ...); an error carries
/// the command and its output's tail.
pub fn run_to_completion(what: &str, mut cmd: Command) -> io::Result<()> {
    let command = describe(&cmd);
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run {what}: `{command}`: {e}; {ENSURE_DEPS_HINT}"),
        )
    })?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    Err(io::Error::other(format!(
        "{what} failed ({})\ncommand: {command}\noutput:\n{}",
        out.status,
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    )))
}

/// The start time (field 22 of `/proc/PID/stat`, clock ticks since boot) that tells a
/// process from a later one with the same PID; `None` once it has exited (gone, or a
/// zombie).
fn proc_start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2 (comm) is in parentheses and may hold spaces: count from its end.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    if state == "Z" {
        return None;
    }
    fields.nth(18).map(str::to_owned)
}

fn signal_name(signal: Signal) -> &'static str {
    signal.as_str().trim_start_matches("SIG")
}

/// The uid and gid of `user` from `/etc/passwd`.
pub fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != user {
            return None;
        }
        let uid = f.nth(1)?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// For a server that refuses root: when this process is root, the ids of the system
/// user `user` the server runs as instead, after handing it `dir`; otherwise `None`
/// (the server runs as this process's user).
pub fn server_user(server: &str, user: &str, dir: &Path) -> io::Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let ids = user_ids(user).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{server} refuses to run as root and there is no `{user}` user; {ENSURE_DEPS_HINT}"
            ),
        )
    })?;
    std::os::unix::fs::chown(dir, Some(ids.0), Some(ids.1))?;
    Ok(Some(ids))
}

/// `cmd` run as `user` (from [`server_user`]) in `cwd`.
pub fn as_user(mut cmd: Command, user: Option<(u32, u32)>, cwd: &Path) -> Command {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd.current_dir(cwd);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_read_past_a_comm_with_spaces() {
        let me = std::process::id();
        let t = proc_start_time(me).expect("own stat");
        assert!(t.parse::<u64>().is_ok(), "{t}");
        assert_eq!(proc_start_time(me), Some(t));
    }

    #[test]
    fn a_failed_setup_command_names_itself_and_its_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo why-it-failed >&2; exit 3"]);
        let err = run_to_completion("the setup", cmd).unwrap_err().to_string();
        assert!(err.contains("the setup failed"), "{err}");
        assert!(err.contains("sh -c"), "{err}");
        assert!(err.contains("why-it-failed"), "{err}");
    }

    #[test]
    fn a_missing_program_says_how_to_install_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = ServerProcess::spawn(
            "nothing",
            Command::new("/nonexistent/sluice-server"),
            &dir.path().join("log"),
            Signal::SIGTERM,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/sluice-server"), "{err}");
        assert!(err.contains("scripts/ensure-deps.sh"), "{err}");
    }

    /// Set in the child run of `the_guard_stops_the_server_when_its_owner_dies`.
    const GUARD_CHILD: &str = "SLUICE_TEST_GUARD_CHILD";

    #[test]
    fn the_guard_stops_the_server_when_its_owner_dies() {
        if let Ok(dir) = std::env::var(GUARD_CHILD) {
            // The child: start a "server" and abort without unwinding, as a test
            // process killed by a timeout would.
            let dir = PathBuf::from(dir);
            let mut cmd = Command::new("sleep");
            cmd.arg("300");
            let server =
                ServerProcess::spawn("sleep", cmd, &dir.join("log"), Signal::SIGTERM, Some(&dir))
                    .unwrap();
            println!("server-pid={}", server.pid());
            std::process::abort();
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "process::tests::the_guard_stops_the_server_when_its_owner_dies",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env(GUARD_CHILD, &data)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "the child must abort: {stdout}");
        let pid: u32 = stdout
            .lines()
            .find_map(|l| l.split("server-pid=").nth(1))
            .unwrap_or_else(|| panic!("no pid in the child's output: {stdout}"))
            .parse()
            .unwrap();
        assert!(
            crate::eventually(15, || proc_start_time(pid).is_none()),
            "server {pid} still runs after its owner died"
        );
        assert!(
            crate::eventually(5, || !data.exists()),
            "the guard did not remove the server's directory"
        );
    }
}
