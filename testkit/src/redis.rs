//! Redis from Debian's `redis-server`, on a free loopback port, without persistence.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::{RunningServer, ServerProcess};
use crate::with_free_ports;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A Redis server running as a child process (port, process, directory: see
/// [`RunningServer`]).
#[derive(Debug)]
pub struct RedisServer(RunningServer);

impl std::ops::Deref for RedisServer {
    type Target = RunningServer;
    fn deref(&self) -> &RunningServer {
        &self.0
    }
}

impl RedisServer {
    /// Starts the server; returns once it answers `PING`.
    pub fn start() -> io::Result<RedisServer> {
        with_free_ports(|port| {
            let dir = tempfile::Builder::new().prefix("sluice-redis-").tempdir()?;
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir.path());
            let process = ServerProcess::spawn(
                "Redis",
                cmd,
                &dir.path().join("redis.log"),
                Signal::SIGKILL,
                Some(dir.path()),
            )?;
            process.wait_ready(STARTUP_TIMEOUT, || ping(port))?;
            Ok(RedisServer(RunningServer::new(process, port, dir)))
        })
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port())
    }

    /// See [`RunningServer::detach`].
    pub fn detach(self) -> (u32, PathBuf) {
        self.0.detach()
    }
}

/// `PING` in the inline protocol; true on `+PONG`.
pub fn ping(port: u16) -> Result<bool, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let t = Some(Duration::from_secs(5));
    s.set_read_timeout(t).map_err(|e| e.to_string())?;
    s.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).map_err(|e| e.to_string())?;
    Ok(&buf == b"+PONG\r\n")
}
