//! Apache Kafka 4.x in KRaft mode (one combined broker and controller), from its
//! Maven Central jars, on free loopback ports.
//!
//! `scripts/ensure-deps.sh` fetches the runtime dependencies of
//! `org.apache.kafka:kafka_2.13` (plus the log4j binding, so the broker's log says
//! something) with `mvn dependency:copy-dependencies` into
//! `$HOME/.cache/sluice/kafka-<version>/libs` (`SLUICE_TEST_KAFKA_LIBS` overrides the
//! folder). A start formats the storage with `kafka.tools.StorageTool format
//! --standalone` and runs `kafka.Kafka` with a generated `server.properties`:
//! a PLAINTEXT listener and a controller listener on free loopback ports, replication
//! factor 1 for the internal topics (offsets, transactions, share state), topics
//! created explicitly (no auto-creation). Ready means the broker answers a Metadata
//! request that lists itself.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;

use crate::process::{run_to_completion, RunningServer, ServerProcess, ENSURE_DEPS_HINT};
use crate::{free_port, with_free_ports};

/// The Kafka release the harness runs (the same as `scripts/kafka/pom.xml`).
pub const KAFKA_VERSION: &str = "4.4.0";

/// A JVM on two shared cores can take a while.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// The folder holding the Kafka jars: `SLUICE_TEST_KAFKA_LIBS`, else
/// `$HOME/.cache/sluice/kafka-<version>/libs`.
pub fn kafka_libs() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLUICE_TEST_KAFKA_LIBS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home)
        .join(".cache/sluice")
        .join(format!("kafka-{KAFKA_VERSION}"))
        .join("libs")
}

/// A Kafka broker (and its controller) running as a child process (broker port,
/// process, directory: see [`RunningServer`]).
#[derive(Debug)]
pub struct KafkaServer {
    server: RunningServer,
    controller_port: u16,
    libs: PathBuf,
}

impl std::ops::Deref for KafkaServer {
    type Target = RunningServer;
    fn deref(&self) -> &RunningServer {
        &self.server
    }
}

impl KafkaServer {
    /// Formats fresh storage and starts the broker; returns once it answers a Metadata
    /// request listing itself.
    pub fn start() -> io::Result<KafkaServer> {
        let libs = kafka_libs();
        let has_server_jar = std::fs::read_dir(&libs)
            .map(|entries| {
                entries.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("kafka_2.13-{KAFKA_VERSION}"))
                })
            })
            .unwrap_or(false);
        if !has_server_jar {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the Kafka {KAFKA_VERSION} jars are not in {}; {ENSURE_DEPS_HINT}",
                    libs.display()
                ),
            ));
        }
        with_free_ports(|port| {
            let controller_port = free_port()?;
            Self::start_on(&libs, port, controller_port)
        })
    }

    fn start_on(libs: &Path, port: u16, controller_port: u16) -> io::Result<KafkaServer> {
        let dir = tempfile::Builder::new().prefix("sluice-kafka-").tempdir()?;
        let props = dir.path().join("server.properties");
        std::fs::write(&props, server_properties(dir.path(), port, controller_port))?;
        let log4j = dir.path().join("log4j2.properties");
        std::fs::write(&log4j, LOG4J2)?;

        let mut format = java(libs, &log4j);
        format
            .args(["kafka.tools.StorageTool", "format", "--standalone", "-t"])
            .arg(cluster_id())
            .arg("-c")
            .arg(&props);
        run_to_completion("formatting the Kafka storage", format)?;

        let process = spawn_broker(libs, dir.path(), port)?;
        Ok(KafkaServer {
            server: RunningServer::new(process, port, dir),
            controller_port,
            libs: libs.to_owned(),
        })
    }

    /// SIGKILLs the broker (no clean shutdown: what a crash leaves behind) and reaps
    /// it. Its directory, data and configuration stay for [`restart`](Self::restart);
    /// clients see the broker gone until then.
    pub fn kill(&mut self) {
        self.server.process_mut().stop();
    }

    /// Starts the broker again after [`kill`](Self::kill) (or a crash): the same ports,
    /// configuration and data directory, so topics, offsets and transactions are
    /// those it had; Kafka recovers its log as after any unclean shutdown. Returns
    /// once the broker answers a Metadata request listing itself. Fails if the broker
    /// still runs, or if another process took one of its ports meanwhile.
    pub fn restart(&mut self) -> io::Result<()> {
        if self.server.process().check_running().is_ok() {
            return Err(io::Error::other(format!(
                "Kafka (pid {}) is still running: kill it first",
                self.server.process().pid()
            )));
        }
        let process = spawn_broker(&self.libs, self.server.dir(), self.server.port())?;
        self.server.replace_process(process);
        Ok(())
    }

    /// `127.0.0.1:PORT`: the `bootstrap.servers` for clients.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// The controller listener's port.
    pub fn controller_port(&self) -> u16 {
        self.controller_port
    }

    /// See [`RunningServer::detach`].
    pub fn detach(self) -> (u32, PathBuf) {
        self.server.detach()
    }
}

/// Runs the broker of the formatted directory `dir` (its `server.properties`) and
/// waits until it answers on `port`.
fn spawn_broker(libs: &Path, dir: &Path, port: u16) -> io::Result<ServerProcess> {
    let mut cmd = java(libs, &dir.join("log4j2.properties"));
    cmd.args([
        "-Xms256m",
        "-Xmx768m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
    ])
    .arg("kafka.Kafka")
    .arg(dir.join("server.properties"));
    let process = ServerProcess::spawn(
        "Kafka",
        cmd,
        &dir.join("kafka.log"),
        Signal::SIGKILL,
        Some(dir),
    )?;
    process.wait_ready(STARTUP_TIMEOUT, || metadata_brokers(port).map(|n| n > 0))?;
    Ok(process)
}

fn java(libs: &Path, log4j: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("SLUICE_TEST_JAVA").unwrap_or_else(|_| "java".into()));
    cmd.arg("-Djava.awt.headless=true")
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
        .arg("-cp")
        .arg(format!("{}/*", libs.display()));
    cmd
}

fn server_properties(dir: &Path, port: u16, controller_port: u16) -> String {
    let mut p = String::new();
    let _ = write!(
        p,
        "process.roles=broker,controller\n\
         node.id=1\n\
         controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}\n\
         listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}\n\
         advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}\n\
         controller.listener.names=CONTROLLER\n\
         inter.broker.listener.name=PLAINTEXT\n\
         listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
         log.dirs={data}\n\
         num.partitions=1\n\
         auto.create.topics.enable=false\n\
         offsets.topic.replication.factor=1\n\
         offsets.topic.num.partitions=4\n\
         transaction.state.log.replication.factor=1\n\
         transaction.state.log.min.isr=1\n\
         transaction.state.log.num.partitions=4\n\
         share.coordinator.state.topic.replication.factor=1\n\
         share.coordinator.state.topic.min.isr=1\n\
         group.initial.rebalance.delay.ms=0\n",
        data = dir.join("data").display(),
    );
    p
}

const LOG4J2: &str = "\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
";

/// A cluster id: 16 bytes in URL-safe base64 without padding, as `random-uuid` prints.
fn cluster_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut x = (nanos as u64) ^ ((std::process::id() as u64) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    let mut bytes = [0u8; 16];
    for b in &mut bytes {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *b = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    // An id starting with '-' reads as an option to `kafka-storage format -t ID` (it
    // failed one CI run in 64); Kafka's own `Uuid.randomUuid` never makes one either.
    if out.starts_with('-') {
        out.replace_range(..1, "A");
    }
    out
}

/// Sends a Metadata request (v4: all topics, no auto-creation) to the broker on
/// `port` and returns how many brokers its answer lists.
pub fn metadata_brokers(port: u16) -> Result<usize, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let t = Some(Duration::from_secs(5));
    s.set_read_timeout(t).map_err(|e| e.to_string())?;
    s.set_write_timeout(t).map_err(|e| e.to_string())?;

    const CLIENT_ID: &[u8] = b"sluice-testkit";
    let mut req = Vec::new();
    req.extend_from_slice(&3i16.to_be_bytes()); // api key: Metadata
    req.extend_from_slice(&4i16.to_be_bytes()); // api version 4
    req.extend_from_slice(&1i32.to_be_bytes()); // correlation id
    req.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
    req.extend_from_slice(CLIENT_ID);
    req.extend_from_slice(&(-1i32).to_be_bytes()); // topics: null = all
    req.push(0); // allow_auto_topic_creation = false
    let mut frame = (req.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&req);
    s.write_all(&frame)
        .map_err(|e| format!("send Metadata to {addr}: {e}"))?;

    let mut len = [0u8; 4];
    s.read_exact(&mut len)
        .map_err(|e| format!("read Metadata answer from {addr}: {e}"))?;
    let len = i32::from_be_bytes(len);
    if !(8..=64 << 20).contains(&len) {
        return Err(format!("Metadata answer of {len} bytes from {addr}"));
    }
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body)
        .map_err(|e| format!("read Metadata answer from {addr}: {e}"))?;
    // correlation id (4), throttle_time_ms (4), brokers: [int32 count, ...]
    let count = body
        .get(8..12)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| format!("short Metadata answer from {addr}"))?;
    Ok(count.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_22_url_safe_base64_characters() {
        let id = cluster_id();
        assert_eq!(id.len(), 22, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{id}"
        );
        assert!(!id.starts_with('-'), "{id} would read as an option");
    }

    #[test]
    fn the_pom_fetches_the_version_the_harness_runs() {
        let pom = include_str!("../../scripts/kafka/pom.xml");
        assert!(
            pom.contains(&format!("<kafka.version>{KAFKA_VERSION}</kafka.version>")),
            "scripts/kafka/pom.xml and KAFKA_VERSION disagree"
        );
    }

    #[test]
    fn properties_put_both_listeners_on_loopback() {
        let p = server_properties(Path::new("/x"), 1234, 5678);
        assert!(p.contains("listeners=PLAINTEXT://127.0.0.1:1234,CONTROLLER://127.0.0.1:5678"));
        assert!(p.contains("transaction.state.log.replication.factor=1"));
        assert!(p.contains("log.dirs=/x/data"));
    }
}
