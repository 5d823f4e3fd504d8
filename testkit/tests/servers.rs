//! The server harness itself: every server starts on a bare machine, answers a real
//! client, and leaves nothing listening once stopped; a server killed under a test is
//! reported with its log, not hung on; the shared accessors honour their overrides.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use std::ops::Deref;

use sluice_testkit::process::{RunningServer, ServerProcess};
use sluice_testkit::{KafkaServer, MariaDbServer, MotoServer, PostgresServer, RedisServer};

fn listening(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit(") ").next().unwrap_or("").starts_with('Z'))
}

/// Drops `server` (stopping it) and checks its port, its process and its directory are
/// gone.
fn stopped_cleanly<S: Deref<Target = RunningServer>>(server: S) {
    let port = server.port();
    let pid = server.process().pid();
    let log = server.process().log_path().to_owned();
    assert!(listening(port), "port {port} not open while running");
    drop(server);
    assert!(!running(pid), "server pid {pid} still runs after drop");
    assert!(!listening(port), "port {port} still open after drop");
    assert!(!log.exists(), "{} left behind", log.display());
}

#[test]
fn postgres_starts_answers_and_stops() {
    let server = PostgresServer::start().unwrap_or_else(|e| panic!("{e}"));
    let mut client = postgres::Client::connect(&server.url(), postgres::NoTls).unwrap();
    let row = client
        .query_one("SELECT current_database(), 40 + 2", &[])
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "test");
    assert_eq!(row.get::<_, i32>(1), 42);
    drop(client);
    stopped_cleanly(server);
}

#[test]
fn mariadb_starts_answers_and_stops() {
    use mysql::prelude::Queryable;
    let server = MariaDbServer::start().unwrap_or_else(|e| panic!("{e}"));
    let mut conn = mysql::Conn::new(mysql::Opts::from_url(&server.url()).unwrap()).unwrap();
    let row: Option<(String, i64)> = conn.query_first("SELECT DATABASE(), 40 + 2").unwrap();
    assert_eq!(row, Some(("test".to_owned(), 42)));
    drop(conn);
    stopped_cleanly(server);
}

#[test]
fn redis_starts_answers_and_stops() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query::<()>(&mut conn)
        .unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut conn).unwrap();
    assert_eq!(v, "v");
    drop(conn);
    stopped_cleanly(server);
}

#[test]
fn moto_starts_answers_and_stops() {
    let server = MotoServer::start().unwrap_or_else(|e| panic!("{e}"));
    server.create_bucket("harness").unwrap();
    stopped_cleanly(server);
}

#[test]
fn kafka_starts_answers_and_stops() {
    let server = KafkaServer::start().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        sluice_testkit::kafka::metadata_brokers(server.port()),
        Ok(1)
    );
    let controller = server.controller_port();
    assert!(listening(controller));
    stopped_cleanly(server);
    assert!(!listening(controller), "controller port still open");
}

#[test]
fn a_server_killed_under_a_test_is_reported_with_its_log() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    server.process().check_running().unwrap();
    server.process().signal(Signal::SIGKILL).unwrap();
    let start = Instant::now();
    let err = loop {
        match server.process().check_running() {
            Err(e) => break e.to_string(),
            Ok(()) => {
                assert!(start.elapsed() < Duration::from_secs(10), "kill not seen");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert!(err.contains("Redis"), "{err}");
    assert!(
        err.contains("SIGKILL") || err.contains("signal: 9"),
        "{err}"
    );
    assert!(
        err.contains("redis-server --port"),
        "command missing: {err}"
    );
    assert!(err.contains("last lines of"), "log tail missing: {err}");
    // A client gets a prompt error, not a hang.
    let client = redis::Client::open(server.url()).unwrap();
    assert!(client
        .get_connection_with_timeout(Duration::from_secs(2))
        .is_err());
}

#[test]
fn a_server_that_cannot_start_fails_with_its_command_and_log() {
    // Redis refuses an unknown option: the error must carry the command and the log.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", "0", "--no-such-option", "x"]);
    let process =
        ServerProcess::spawn("Redis", cmd, &dir.path().join("log"), Signal::SIGKILL, None).unwrap();
    let err = process
        .wait_ready(Duration::from_secs(30), || Ok(false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("exited"), "{err}");
    assert!(err.contains("--no-such-option"), "{err}");
    assert!(err.contains("no-such-option"), "{err}");
}

/// Set in the child run of `the_shared_accessors_honour_their_overrides`.
const OVERRIDE_CHILD: &str = "SLUICE_TEST_OVERRIDE_CHILD";

#[test]
fn the_shared_accessors_honour_their_overrides() {
    if std::env::var_os(OVERRIDE_CHILD).is_some() {
        // After the harness's "test … " on the same line.
        println!();
        println!("postgres={}", sluice_testkit::postgres_url());
        println!("mysql={}", sluice_testkit::mysql_url());
        println!("redis={}", sluice_testkit::redis_url());
        println!("kafka={}", sluice_testkit::kafka_brokers());
        println!("kafka_server={}", sluice_testkit::kafka_server().is_some());
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "the_shared_accessors_honour_their_overrides"])
        .args(["--nocapture", "--test-threads=1"])
        .env(OVERRIDE_CHILD, "1")
        .env("SLUICE_TEST_POSTGRES_URL", "postgres://u@db.invalid:1/x")
        .env("SLUICE_TEST_MYSQL_URL", "mysql://u@db.invalid:2/x")
        .env("SLUICE_TEST_REDIS_URL", "redis://db.invalid:3/")
        .env("SLUICE_TEST_KAFKA_BROKERS", "kafka.invalid:4")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for line in [
        "postgres=postgres://u@db.invalid:1/x",
        "mysql=mysql://u@db.invalid:2/x",
        "redis=redis://db.invalid:3/",
        "kafka=kafka.invalid:4",
        "kafka_server=false",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line} missing: {stdout}"
        );
    }
}

#[test]
fn the_shared_servers_are_started_once_per_process() {
    let first = sluice_testkit::redis_url();
    assert_eq!(sluice_testkit::redis_url(), first);
    let mut conn = redis::Client::open(first)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG");
}
