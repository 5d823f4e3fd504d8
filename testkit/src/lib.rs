//! The real servers sluice's tests run against, started on a bare machine.
//!
//! | server | type | shared, per test process | override |
//! |---|---|---|---|
//! | PostgreSQL (Debian `postgresql`) | [`PostgresServer`] | [`postgres_url`] | `SLUICE_TEST_POSTGRES_URL` |
//! | MariaDB (Debian `mariadb-server`) | [`MariaDbServer`] | [`mysql_url`] | `SLUICE_TEST_MYSQL_URL` |
//! | Redis (Debian `redis-server`) | [`RedisServer`] | [`redis_url`] | `SLUICE_TEST_REDIS_URL` |
//! | Apache Kafka 4.x, KRaft (Maven Central jars) | [`KafkaServer`] | [`kafka_brokers`] | `SLUICE_TEST_KAFKA_BROKERS` |
//! | S3 ([moto](https://github.com/getmoto/moto) server) | [`MotoServer`] | (one per test) | |
//!
//! Each server runs as a child process on a free loopback port, in a temporary
//! directory of its own, and is ready before `start` returns: the harness waits on
//! the server's own readiness (a query for the databases, `PING` for Redis, a
//! Metadata request for Kafka, HTTP for moto), not just on the port. PostgreSQL and
//! MariaDB refuse to run as root; as root they run as the `postgres` and `mysql`
//! users. A server that cannot start is an error carrying the command it ran and the
//! tail of its log; a server that dies under a test is reported the same way by the
//! next [`postgres_url`]-style call. Nothing here skips a test.
//!
//! **Stopping.** A server is stopped by its PID: when its handle is dropped, and —
//! through a guard process watching a pipe (see [`process`]) — when the test process
//! ends in any other way (exit with statics alive, panic in another thread, SIGKILL
//! by a timeout). Its directory goes with it.
//!
//! **Sharing: one server of each kind per test process, started on first use.** The
//! accessors ([`postgres_url`], …) start the server the first time a test in the
//! process asks, and every later test of that process reuses it (tests use their own
//! table, key or topic names). Why per process rather than one per run behind a lock
//! file: a server's life is then tied to exactly one process, so the guard can stop it
//! whatever way that process ends, with no coordinator that could itself die and leave
//! servers behind, and no cross-process reference counting. The cost is one start per
//! test binary that uses the server (`cargo test` runs one process per test binary):
//! about 1 s for PostgreSQL, MariaDB and Redis, 5–10 s for Kafka. Under cargo nextest,
//! which runs each test in its own process, every test that needs a server starts its
//! own: slower, but isolated; set the `SLUICE_TEST_*` overrides (for example from
//! `scripts/dev-servers.sh start`) to point a nextest run at servers started once.
//!
//! ```no_run
//! // A test that needs PostgreSQL:
//! let url = sluice_testkit::postgres_url(); // postgres://postgres@127.0.0.1:PORT/test
//! # let _ = url;
//! ```
//!
//! Only `std`, `nix` and `tempfile` are used: no async runtime and no client
//! libraries, so any crate can take this as a dev-dependency cheaply.

use std::io;
use std::net::{Ipv4Addr, TcpListener};

pub mod http;
pub mod kafka;
pub mod kafka_client;
pub mod mariadb;
pub mod moto;
pub mod postgres;
pub mod process;
pub mod redis;
mod shared;

pub use kafka::KafkaServer;
pub use mariadb::MariaDbServer;
pub use moto::{s3_env, HttpResponse, MotoServer, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
pub use postgres::PostgresServer;
pub use redis::RedisServer;
pub use shared::{kafka_brokers, kafka_server, mysql_url, postgres_url, redis_url};

/// Binds 127.0.0.1:0 to let the OS choose a free port, then releases it.
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Runs `start` on a free port, again on another one (up to three tries) when it
/// fails because another process took the port between the probe and the bind.
pub(crate) fn with_free_ports<T>(mut start: impl FnMut(u16) -> io::Result<T>) -> io::Result<T> {
    const ATTEMPTS: usize = 3;
    let mut attempt = 1;
    loop {
        match start(free_port()?) {
            Err(e) if attempt < ATTEMPTS && lost_port_race(&e) => attempt += 1,
            result => return result,
        }
    }
}

fn lost_port_race(e: &io::Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    [
        "address already in use",
        "could not bind",
        "bind on tcp/ip port",
    ]
    .iter()
    .any(|needle| text.contains(needle))
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

    #[test]
    fn a_lost_port_race_is_retried_on_another_port() {
        let mut ports = Vec::new();
        let got = with_free_ports(|port| {
            ports.push(port);
            if ports.len() < 3 {
                Err(io::Error::other("bind: Address already in use"))
            } else {
                Ok(port)
            }
        })
        .unwrap();
        assert_eq!(ports.len(), 3);
        assert_eq!(got, ports[2]);
    }

    #[test]
    fn other_start_errors_are_not_retried() {
        let mut tries = 0;
        let err = with_free_ports::<()>(|_| {
            tries += 1;
            Err(io::Error::other("initdb failed"))
        })
        .unwrap_err();
        assert_eq!(tries, 1);
        assert!(err.to_string().contains("initdb failed"));
    }
}
