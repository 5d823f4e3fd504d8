//! One server of each kind per test process, started on first use (see the crate
//! docs for why), or the server a `SLUICE_TEST_*` variable names.

use std::io;
use std::ops::Deref;
use std::sync::OnceLock;

use crate::process::RunningServer;
use crate::{KafkaServer, MariaDbServer, PostgresServer, RedisServer};

/// A server kind the accessors share.
trait Shared: Deref<Target = RunningServer> + Sized + Send + Sync + 'static {
    const NAME: &'static str;
    const OVERRIDE: &'static str;
    fn start() -> io::Result<Self>;
    fn address(&self) -> String;
}

/// The address of this process's server of kind `S`: the override variable if set,
/// else the shared server, started now if it is not yet. Panics (fails the test) with
/// the server's own error if it cannot start, or with its log tail if it has died.
fn address<S: Shared>(cell: &'static OnceLock<Result<S, String>>) -> String {
    if let Some(value) = std::env::var(S::OVERRIDE).ok().filter(|v| !v.is_empty()) {
        return value;
    }
    match cell.get_or_init(|| {
        S::start().map_err(|e| format!("{e}\n(set {} to use a running server)", S::OVERRIDE))
    }) {
        Ok(server) => {
            if let Err(e) = server.process().check_running() {
                panic!("the shared {} server died under the tests: {e}", S::NAME);
            }
            server.address()
        }
        Err(e) => panic!("cannot start {} for the tests: {e}", S::NAME),
    }
}

macro_rules! shared {
    ($ty:ty, $name:literal, $var:literal, $address:ident) => {
        impl Shared for $ty {
            const NAME: &'static str = $name;
            const OVERRIDE: &'static str = $var;
            fn start() -> io::Result<Self> {
                <$ty>::start()
            }
            fn address(&self) -> String {
                self.$address()
            }
        }
    };
}

shared!(
    PostgresServer,
    "PostgreSQL",
    "SLUICE_TEST_POSTGRES_URL",
    url
);
shared!(MariaDbServer, "MariaDB", "SLUICE_TEST_MYSQL_URL", url);
shared!(RedisServer, "Redis", "SLUICE_TEST_REDIS_URL", url);
shared!(KafkaServer, "Kafka", "SLUICE_TEST_KAFKA_BROKERS", brokers);

static POSTGRES: OnceLock<Result<PostgresServer, String>> = OnceLock::new();
static MARIADB: OnceLock<Result<MariaDbServer, String>> = OnceLock::new();
static REDIS: OnceLock<Result<RedisServer, String>> = OnceLock::new();
static KAFKA: OnceLock<Result<KafkaServer, String>> = OnceLock::new();

/// `postgres://…/test` of this process's PostgreSQL (`SLUICE_TEST_POSTGRES_URL`
/// overrides).
pub fn postgres_url() -> String {
    address(&POSTGRES)
}

/// `mysql://…/test` of this process's MariaDB (`SLUICE_TEST_MYSQL_URL` overrides).
pub fn mysql_url() -> String {
    address(&MARIADB)
}

/// `redis://…/` of this process's Redis (`SLUICE_TEST_REDIS_URL` overrides).
pub fn redis_url() -> String {
    address(&REDIS)
}

/// `host:port` bootstrap servers of this process's Kafka broker
/// (`SLUICE_TEST_KAFKA_BROKERS` overrides).
pub fn kafka_brokers() -> String {
    address(&KAFKA)
}

/// This process's Kafka server itself, for tests that stop, pause or restart the
/// broker; `None` when `SLUICE_TEST_KAFKA_BROKERS` points the tests elsewhere.
pub fn kafka_server() -> Option<&'static KafkaServer> {
    if std::env::var("SLUICE_TEST_KAFKA_BROKERS").is_ok_and(|v| !v.is_empty()) {
        return None;
    }
    kafka_brokers();
    KAFKA.get().and_then(|r| r.as_ref().ok())
}
