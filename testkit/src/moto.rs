//! [moto](https://github.com/getmoto/moto) in server mode: a real, local
//! S3-compatible server on a free loopback port, so checkpoint and object-store code
//! is tested against real HTTP instead of mocks.
//!
//! Requirements: `python3` with `moto[server]` (`scripts/ensure-deps.sh` installs it;
//! `SLUICE_TEST_PYTHON` names another interpreter). If it is missing, [`MotoServer::start`]
//! returns an error that says so; tests using it then fail rather than silently pass.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::{RunningServer, ServerProcess};
use crate::with_free_ports;

/// Region to configure clients with.
pub const REGION: &str = "us-east-1";
/// Access key id to configure clients with (moto accepts any).
pub const ACCESS_KEY_ID: &str = "test";
/// Secret access key to configure clients with (moto does not check signatures).
pub const SECRET_ACCESS_KEY: &str = "test";

/// How long [`MotoServer::start`] waits for the server to answer HTTP.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout for a single request made through [`MotoServer::request`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

const ENSURE_DEPS_HINT: &str =
    "run `scripts/ensure-deps.sh` (installs python3 and moto[server]) and retry";

/// A moto S3 server running as a child process on `127.0.0.1:<free port>`.
///
/// Dropping the handle stops the server (by its PID) and reaps it. Port, process and
/// directory: see [`RunningServer`].
#[derive(Debug)]
pub struct MotoServer(RunningServer);

impl std::ops::Deref for MotoServer {
    type Target = RunningServer;
    fn deref(&self) -> &RunningServer {
        &self.0
    }
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
    /// Starts a moto server on a free loopback port and waits until it answers HTTP.
    ///
    /// Errors (never skips) if `python3` or moto is missing; the message says to
    /// run `scripts/ensure-deps.sh`.
    pub fn start() -> io::Result<MotoServer> {
        let python = python();
        check_moto_installed(&python)?;
        with_free_ports(|port| {
            let dir = tempfile::Builder::new().prefix("sluice-moto-").tempdir()?;
            let mut cmd = Command::new(&python);
            cmd.args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env("PYTHONUNBUFFERED", "1");
            let process = ServerProcess::spawn(
                "moto",
                cmd,
                &dir.path().join("moto.log"),
                Signal::SIGKILL,
                Some(dir.path()),
            )?;
            process.wait_ready(STARTUP_TIMEOUT, || Ok(answers_http(port)))?;
            Ok(MotoServer(RunningServer::new(process, port, dir)))
        })
    }

    /// Base URL of the server, `http://127.0.0.1:PORT` (path-style S3 endpoint).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// OS process id of the server.
    pub fn pid(&self) -> u32 {
        self.process().pid()
    }

    /// The server's combined stdout/stderr log (useful when a test fails).
    pub fn log_path(&self) -> &Path {
        self.process().log_path()
    }

    /// See [`RunningServer::detach`].
    pub fn detach(self) -> (u32, std::path::PathBuf) {
        self.0.detach()
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
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port()));
        let mut stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;

        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
             Content-Length: {len}\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20240101/{REGION}/s3/aws4_request, \
             SignedHeaders=host, Signature=0000000000000000000000000000000000000000000000000000000000000000\r\n\
             x-amz-date: 20240101T000000Z\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n",
            port = self.port(),
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
    std::env::var("SLUICE_TEST_PYTHON")
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

pub(crate) fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
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
