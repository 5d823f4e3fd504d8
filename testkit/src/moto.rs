//! Test support shared by the sluice crates' tests.
//!
//! The main item is [`MotoServer`]: a real, local S3-compatible server
//! ([moto](https://github.com/getmoto/moto) in server mode) started as a child
//! process on a free loopback port, so checkpoint/object-store code can be tested
//! against real HTTP instead of mocks. It is killed when the handle is dropped.
//!
//! ```no_run
//! use sluice_testkit::{s3_env, MotoServer};
//!
//! let moto = MotoServer::start().expect("moto");   // fails (never skips) if moto is missing
//! moto.create_bucket("checkpoints").unwrap();
//! // Settings for an S3 client (object_store's AmazonS3Builder, a child process, ...):
//! for (key, value) in s3_env(&moto, "checkpoints") {
//!     println!("{key}={value}"); // AWS_ENDPOINT=http://127.0.0.1:PORT, AWS_REGION=us-east-1, ...
//! }
//! ```
//!
//! Requirements: `python3` with `moto[server]` installed. `scripts/ensure-deps.sh`
//! installs it. If it is missing, [`MotoServer::start`] returns an error that says
//! so; tests using it then fail rather than silently pass. The interpreter can be
//! overridden with the `SLUICE_PYTHON` environment variable.
//!
//! Only `std` and `tempfile` are used: no async runtime, no HTTP client, no
//! object_store, so any crate can take this as a dev-dependency cheaply.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Region to configure clients with.
pub const REGION: &str = "us-east-1";
/// Access key id to configure clients with (moto accepts any).
pub const ACCESS_KEY_ID: &str = "test";
/// Secret access key to configure clients with (moto does not check signatures).
pub const SECRET_ACCESS_KEY: &str = "test";

/// How long [`MotoServer::start`] waits for the server to answer HTTP.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Port-race retries (we release the probed port before moto binds it).
const START_ATTEMPTS: usize = 3;
/// Timeout for a single request made through [`MotoServer::request`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

const ENSURE_DEPS_HINT: &str =
    "run `scripts/ensure-deps.sh` (installs python3 and moto[server]) and retry";

/// Runs `python -m moto.server ARGS` (via runpy, exactly what `-m` does), plus a
/// watchdog thread that exits when the parent (the test process) dies, so a test
/// binary killed without unwinding (timeout, SIGKILL) does not leak moto servers.
const LAUNCHER: &str = r#"
import os, runpy, sys, threading, time
parent = os.getppid()
def _watch():
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)
threading.Thread(target=_watch, daemon=True).start()
sys.argv = ["moto.server"] + sys.argv[1:]
runpy.run_module("moto.server", run_name="__main__", alter_sys=True)
"#;

/// A moto S3 server running as a child process on `127.0.0.1:<free port>`.
///
/// Dropping the handle kills the server (by its PID) and reaps it.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    port: u16,
    log_path: PathBuf,
    // Holds the log file; removed on drop.
    _dir: TempDir,
}

/// A parsed HTTP response from [`MotoServer::request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code, e.g. 200, 404, 412.
    pub status: u16,
    /// Headers in order received; names as sent by the server.
    pub headers: Vec<(String, String)>,
    /// The (de-chunked) body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8, for assertions and error messages.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl MotoServer {
    /// Starts a moto server on a free loopback port and waits (up to ~20 s) until
    /// it answers HTTP.
    ///
    /// Errors (never skips) if `python3` or moto is missing; the message says to
    /// run `scripts/ensure-deps.sh`.
    pub fn start() -> io::Result<MotoServer> {
        let python = python();
        check_moto_installed(&python)?;

        let dir = tempfile::Builder::new().prefix("sluice-moto-").tempdir()?;
        let log_path = dir.path().join("moto.log");
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let log = File::create(&log_path)?;
            let mut child = Command::new(&python)
                .arg("-c")
                .arg(LAUNCHER)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("PYTHONUNBUFFERED", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .map_err(|e| missing_error(&python, &e.to_string()))?;
            match wait_ready(&mut child, port) {
                Ok(()) => {
                    return Ok(MotoServer {
                        child,
                        port,
                        log_path,
                        _dir: dir,
                    })
                }
                Err(Startup::Exited(status)) => {
                    let log = read_log_tail(&log_path);
                    let err = io::Error::other(format!(
                        "moto server exited during startup ({status}) on port {port}; log:\n{log}"
                    ));
                    if log.contains("Address already in use") {
                        last_err = Some(err); // lost the port race: retry on another port
                        continue;
                    }
                    return Err(err);
                }
                Err(Startup::TimedOut) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "moto server did not answer on 127.0.0.1:{port} within {:?}; log:\n{}",
                            STARTUP_TIMEOUT,
                            read_log_tail(&log_path)
                        ),
                    ));
                }
                Err(Startup::Io(e)) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("moto server failed to start")))
    }

    /// Base URL of the server, `http://127.0.0.1:PORT` (path-style S3 endpoint).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// OS process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's combined stdout/stderr log (useful when a test fails).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Creates bucket `name` (`PUT /name`); errors unless the server answers 200.
    ///
    /// S3 bucket names are 3–63 chars of `a-z0-9.-`; moto rejects others with 400.
    pub fn create_bucket(&self, name: &str) -> io::Result<()> {
        let resp = self.request("PUT", &format!("/{name}"), &[], b"")?;
        if resp.status != 200 {
            return Err(io::Error::other(format!(
                "create_bucket({name:?}): HTTP {} {}",
                resp.status,
                resp.body_text()
            )));
        }
        Ok(())
    }

    /// Sends one raw HTTP/1.1 request (path-style, e.g. `/bucket/key`) and reads the
    /// whole response.
    ///
    /// Adds `Host`, `Content-Length`, `Connection: close`, a syntactically valid but
    /// unsigned SigV4 `Authorization` header (moto does not verify signatures, but
    /// treats requests without one as anonymous and denies object access), and
    /// `Content-Type: application/octet-stream` unless `headers` sets one (a
    /// form content type would make the server swallow the body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<HttpResponse> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;

        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
             Content-Length: {len}\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20240101/{REGION}/s3/aws4_request, \
             SignedHeaders=host, Signature=0000000000000000000000000000000000000000000000000000000000000000\r\n\
             x-amz-date: 20240101T000000Z\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n",
            port = self.port,
            len = body.len(),
        );
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            head.push_str("Content-Type: application/octet-stream\r\n");
        }
        for (k, v) in headers {
            let _ = write!(head, "{k}: {v}\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        stream.flush()?;

        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        parse_response(&raw)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Settings an S3 client needs to talk to `server`'s bucket `bucket`, as
/// environment-variable style `(name, value)` pairs:
///
/// `AWS_ENDPOINT`, `AWS_REGION`, `AWS_DEFAULT_REGION` (`us-east-1`),
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (`test`), `AWS_ALLOW_HTTP` (`true`),
/// `AWS_BUCKET`, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` (`false`: path-style) and
/// `AWS_CONDITIONAL_PUT` (`etag`: moto honours `If-None-Match: *` / `If-Match`).
///
/// Pass them to a child process with `Command::envs`, or to object_store with
/// `AmazonS3Builder::new().with_config(name.to_ascii_lowercase().parse()?, value)`
/// for each pair (every name here is a valid `AmazonS3ConfigKey`).
pub fn s3_env(server: &MotoServer, bucket: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT", server.endpoint()),
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_DEFAULT_REGION", REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
        ("AWS_BUCKET", bucket.to_owned()),
        ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false".to_owned()),
        ("AWS_CONDITIONAL_PUT", "etag".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

// ---------------------------------------------------------------------------

fn python() -> String {
    std::env::var("SLUICE_PYTHON")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

fn missing_error(python: &str, detail: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "cannot start the moto S3 server: `{python}` with moto[server] is not available \
             ({detail}); {ENSURE_DEPS_HINT}"
        ),
    )
}

fn check_moto_installed(python: &str) -> io::Result<()> {
    let out = Command::new(python)
        .args(["-c", "import moto.server, flask"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| missing_error(python, &e.to_string()))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or("import failed").trim();
    Err(missing_error(python, last))
}

/// Binds 127.0.0.1:0 to let the OS choose a free port, then releases it.
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

enum Startup {
    Exited(ExitStatus),
    TimedOut,
    Io(io::Error),
}

fn wait_ready(child: &mut Child, port: u16) -> Result<(), Startup> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().map_err(Startup::Io)? {
            return Err(Startup::Exited(status));
        }
        if answers_http(port) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Startup::TimedOut);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// True if something on `port` answers a raw `GET / HTTP/1.0` with an HTTP status line.
fn answers_http(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).is_ok() && &buf == b"HTTP/"
}

fn read_log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let bad = |msg: &str| io::Error::new(io::ErrorKind::InvalidData, msg.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("HTTP response without end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("non-UTF-8 HTTP headers"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/"))
        .ok_or_else(|| bad(&format!("bad HTTP status line: {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut resp = HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    };
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        resp.body = dechunk(&resp.body).ok_or_else(|| bad("malformed chunked body"))?;
    } else if let Some(len) = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        resp.body.truncate(len);
    }
    Ok(resp)
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Polls `cond` every 10 ms until it holds or `secs` pass; returns whether it held.
/// For waiting on a background thread in a test, never for timing assertions.
pub fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> MotoServer {
        MotoServer::start().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn put_then_get_roundtrip_and_port_closed_after_drop() {
        let moto = start();
        assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
        moto.create_bucket("testkit-roundtrip").unwrap();

        let payload = b"hello \x00\xff sluice";
        let put = moto
            .request("PUT", "/testkit-roundtrip/dir/obj.bin", &[], payload)
            .unwrap();
        assert_eq!(put.status, 200, "PUT failed: {}", put.body_text());

        let get = moto
            .request("GET", "/testkit-roundtrip/dir/obj.bin", &[], b"")
            .unwrap();
        assert_eq!(get.status, 200, "GET failed: {}", get.body_text());
        assert_eq!(get.body, payload);

        let missing = moto
            .request("GET", "/testkit-roundtrip/nope", &[], b"")
            .unwrap();
        assert_eq!(missing.status, 404);

        let env = s3_env(&moto, "testkit-roundtrip");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("AWS_ENDPOINT"), Some(moto.endpoint()));
        assert_eq!(get("AWS_REGION").as_deref(), Some("us-east-1"));
        assert_eq!(get("AWS_ACCESS_KEY_ID").as_deref(), Some("test"));
        assert_eq!(get("AWS_SECRET_ACCESS_KEY").as_deref(), Some("test"));
        assert_eq!(get("AWS_ALLOW_HTTP").as_deref(), Some("true"));
        assert_eq!(get("AWS_BUCKET").as_deref(), Some("testkit-roundtrip"));

        let port = moto.port();
        drop(moto);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
            "port {port} still open after drop"
        );
    }

    #[test]
    fn conditional_put_if_none_match_is_enforced() {
        let moto = start();
        moto.create_bucket("testkit-cond").unwrap();
        let err = moto.create_bucket("x").unwrap_err(); // too short for S3
        assert!(err.to_string().contains("400"), "{err}");
        let key = "/testkit-cond/checkpoint-000001";
        let inm = [("If-None-Match", "*")];

        let first = moto.request("PUT", key, &inm, b"first").unwrap();
        assert_eq!(first.status, 200, "create-if-absent: {}", first.body_text());

        let second = moto.request("PUT", key, &inm, b"second").unwrap();
        assert_eq!(second.status, 412, "expected 412: {}", second.body_text());

        let get = moto.request("GET", key, &[], b"").unwrap();
        assert_eq!(
            get.body, b"first",
            "losing conditional PUT overwrote the object"
        );
    }

    #[test]
    fn missing_moto_error_names_ensure_deps() {
        let err = missing_error("python3", "No module named 'moto'");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("scripts/ensure-deps.sh"), "{err}");
    }

    #[test]
    fn parses_chunked_response() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let resp = parse_response(raw).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"hello world");
    }
}
