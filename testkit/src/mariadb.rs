//! MariaDB from Debian's `mariadb-server`: `mariadb-install-db` into a temporary
//! directory, then `mariadbd` on a free loopback port (no other networking, no
//! options files read), with a database `test` and `root` without a password. As
//! root, the server runs as the `mysql` user.

use std::io;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::{
    as_user, client_command, run_to_completion, server_user, RunningServer, ServerProcess,
};
use crate::with_free_ports;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A MariaDB server running as a child process (port, process, directory: see
/// [`RunningServer`]).
#[derive(Debug)]
pub struct MariaDbServer(RunningServer);

impl std::ops::Deref for MariaDbServer {
    type Target = RunningServer;
    fn deref(&self) -> &RunningServer {
        &self.0
    }
}

impl MariaDbServer {
    /// Installs a fresh data directory and starts the server; returns once database
    /// `test` exists and answers queries.
    pub fn start() -> io::Result<MariaDbServer> {
        with_free_ports(Self::start_on)
    }

    fn start_on(port: u16) -> io::Result<MariaDbServer> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-mariadb-")
            .tempdir()?;
        let user = server_user("MariaDB", "mysql", dir.path())?;
        let data = dir.path().join("data");

        let mut install = as_user(Command::new("mariadb-install-db"), user, dir.path());
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        run_to_completion("mariadb-install-db", install)?;

        let mut cmd = as_user(Command::new(mariadbd()), user, dir.path());
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!(
                "--socket={}",
                dir.path().join("mysqld.sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
            .args(["--max-connections=200", "--innodb-buffer-pool-size=64M"]);
        // The data directory is thrown away: no need for a clean shutdown.
        let process = ServerProcess::spawn(
            "MariaDB",
            cmd,
            &dir.path().join("mariadb.log"),
            Signal::SIGKILL,
            Some(dir.path()),
        )?;
        let server = MariaDbServer(RunningServer::new(process, port, dir));
        server
            .process()
            .wait_ready(STARTUP_TIMEOUT, || server.sql("SELECT 1"))?;
        server
            .sql("CREATE DATABASE test")
            .map_err(|e| io::Error::other(format!("creating database test: {e}")))?;
        Ok(server)
    }

    /// Runs SQL with the `mariadb` client as root over TCP.
    fn sql(&self, sql: &str) -> Result<bool, String> {
        let mut cmd = Command::new("mariadb");
        cmd.args(["--no-defaults", "--protocol=tcp", "-h", "127.0.0.1"])
            .arg(format!("--port={}", self.port()))
            .args(["-u", "root", "--connect-timeout=5", "-e", sql]);
        client_command(cmd)
    }

    /// `mysql://root@127.0.0.1:PORT/test`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/test", self.port())
    }

    /// See [`RunningServer::detach`].
    pub fn detach(self) -> (u32, PathBuf) {
        self.0.detach()
    }
}

/// `mariadbd` lives in `/usr/sbin`, which is not on every user's `PATH`.
fn mariadbd() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/mariadbd");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("mariadbd")
    }
}
