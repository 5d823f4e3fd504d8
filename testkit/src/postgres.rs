//! PostgreSQL from Debian's `postgresql`: `initdb` into a temporary directory, then
//! `postgres` on a free loopback port, with a database `test` and the superuser
//! `postgres` (trust authentication, loopback only). PostgreSQL refuses to run as
//! root, so as root both run as the `postgres` user.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::{
    as_user, client_command, run_to_completion, server_user, RunningServer, ServerProcess,
    ENSURE_DEPS_HINT,
};
use crate::with_free_ports;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A PostgreSQL server running as a child process (port, process, directory: see
/// [`RunningServer`]).
#[derive(Debug)]
pub struct PostgresServer {
    server: RunningServer,
    bin: PathBuf,
}

impl std::ops::Deref for PostgresServer {
    type Target = RunningServer;
    fn deref(&self) -> &RunningServer {
        &self.server
    }
}

impl PostgresServer {
    /// Initialises a cluster and starts the server; returns once database `test`
    /// exists and answers queries.
    pub fn start() -> io::Result<PostgresServer> {
        let bin = bin_dir()?;
        with_free_ports(|port| Self::start_on(&bin, port))
    }

    fn start_on(bin: &Path, port: u16) -> io::Result<PostgresServer> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-postgres-")
            .tempdir()?;
        let user = server_user("PostgreSQL", "postgres", dir.path())?;
        let data = dir.path().join("data");

        let mut initdb = as_user(Command::new(bin.join("initdb")), user, dir.path());
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync");
        run_to_completion("initdb", initdb)?;

        let mut cmd = as_user(Command::new(bin.join("postgres")), user, dir.path());
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            .args(["-c", "max_connections=200"]);
        // SIGQUIT: immediate shutdown; the postmaster takes its backends with it.
        let process = ServerProcess::spawn(
            "PostgreSQL",
            cmd,
            &dir.path().join("postgres.log"),
            Signal::SIGQUIT,
            Some(dir.path()),
        )?;
        let server = PostgresServer {
            server: RunningServer::new(process, port, dir),
            bin: bin.to_owned(),
        };
        server
            .process()
            .wait_ready(STARTUP_TIMEOUT, || server.psql("postgres", "SELECT 1"))?;
        server
            .psql("postgres", "CREATE DATABASE test")
            .map_err(|e| io::Error::other(format!("creating database test: {e}")))?;
        Ok(server)
    }

    /// Runs one SQL statement with `psql` against `database` as `postgres`.
    fn psql(&self, database: &str, sql: &str) -> Result<bool, String> {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.port().to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-c", sql])
            .env("PGCONNECT_TIMEOUT", "5");
        client_command(cmd)
    }

    /// `postgres://postgres@127.0.0.1:PORT/test`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/test", self.port())
    }

    /// See [`RunningServer::detach`].
    pub fn detach(self) -> (u32, PathBuf) {
        self.server.detach()
    }
}

/// Where PostgreSQL's programs are: `SLUICE_TEST_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian), else the folder of `initdb` on `PATH`.
fn bin_dir() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_TEST_PG_BIN").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max();
    if let Some((_, bin)) = newest {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no \
                     initdb on PATH; SLUICE_TEST_PG_BIN names another folder); {ENSURE_DEPS_HINT}"
                ),
            )
        })
}
