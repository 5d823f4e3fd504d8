//! The idempotent Redis sink.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use ::redis::{Client, Connection, ConnectionLike, Value};

use super::{check_sink_id, error_chain, redact, BatchOutcome, BoxError, SinkName};
use crate::{BatchContext, BatchTime, DStream, Data, Result};

/// One idempotent Redis write: running it twice leaves what running it once does.
/// (Counters — `INCRBY`, `HINCRBY` — are not offered: a batch the sink must write again
/// after a partial failure would count twice.)
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisWrite {
    /// `SET key value`.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// `HSET key field value`.
    HSet {
        /// The hash's key.
        key: String,
        /// The field.
        field: String,
        /// The value.
        value: String,
    },
    /// `SADD key member`.
    SAdd {
        /// The set's key.
        key: String,
        /// The member.
        member: String,
    },
    /// `DEL key`.
    Del {
        /// The key.
        key: String,
    },
}

impl RedisWrite {
    /// `SET key value`.
    pub fn set(key: impl Into<String>, value: impl ToString) -> Self {
        RedisWrite::Set {
            key: key.into(),
            value: value.to_string(),
        }
    }

    /// `HSET key field value`.
    pub fn hset(key: impl Into<String>, field: impl Into<String>, value: impl ToString) -> Self {
        RedisWrite::HSet {
            key: key.into(),
            field: field.into(),
            value: value.to_string(),
        }
    }

    /// `SADD key member`.
    pub fn sadd(key: impl Into<String>, member: impl Into<String>) -> Self {
        RedisWrite::SAdd {
            key: key.into(),
            member: member.into(),
        }
    }

    /// `DEL key`.
    pub fn del(key: impl Into<String>) -> Self {
        RedisWrite::Del { key: key.into() }
    }

    fn add_to(&self, pipe: &mut ::redis::Pipeline) {
        match self {
            RedisWrite::Set { key, value } => pipe.cmd("SET").arg(key).arg(value),
            RedisWrite::HSet { key, field, value } => {
                pipe.cmd("HSET").arg(key).arg(field).arg(value)
            }
            RedisWrite::SAdd { key, member } => pipe.cmd("SADD").arg(key).arg(member),
            RedisWrite::Del { key } => pipe.cmd("DEL").arg(key),
        }
        .ignore();
    }
}

/// An idempotent Redis sink: every batch's writes and a marker key for its batch id
/// go in one `MULTI`/`EXEC` guarded by `WATCH` on the marker; a batch whose marker is
/// there (a replay after a restart) is skipped. See [the module docs](super) for what
/// "exactly once" means here.
///
/// ```no_run
/// use sluice::sinks::{RedisSink, RedisWrite};
///
/// let sink = RedisSink::new("redis://127.0.0.1:6379/", "word-counts");
/// // Deterministic keys: the word's total, written whole (not incremented).
/// // totals.save_to_redis(sink, |(w, n): &(String, u64)| [RedisWrite::hset("totals", w, n)])?;
/// ```
///
/// The marker of batch `t` is the key `{marker_prefix}:{sink_id}:{t}` (prefix
/// `sluice:batches` by default), kept forever unless [`RedisSink::marker_ttl`] says
/// otherwise. The connection is opened at the first batch, kept, and opened again
/// after any error.
pub struct RedisSink {
    name: SinkName,
    url: String,
    marker_prefix: String,
    marker_ttl: Option<Duration>,
    connect_timeout: Duration,
    conn: Mutex<Option<Connection>>,
}

impl fmt::Debug for RedisSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSink")
            .field("sink_id", &self.name.id)
            .field("url", &redact(&self.url))
            .field("marker_prefix", &self.marker_prefix)
            .field("marker_ttl", &self.marker_ttl)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// A clone has the same settings and its own connection.
impl Clone for RedisSink {
    fn clone(&self) -> Self {
        RedisSink {
            name: self.name.clone(),
            url: self.url.clone(),
            marker_prefix: self.marker_prefix.clone(),
            marker_ttl: self.marker_ttl,
            connect_timeout: self.connect_timeout,
            conn: Mutex::new(None),
        }
    }
}

impl RedisSink {
    /// A sink writing to the Redis server at `url` (`redis://[:password@]host:port/db`),
    /// marking its batches under `sink_id` (stable across restarts, unique per sink).
    pub fn new(url: impl Into<String>, sink_id: impl Into<String>) -> Self {
        RedisSink {
            name: SinkName {
                kind: "redis",
                id: sink_id.into(),
            },
            url: url.into(),
            marker_prefix: "sluice:batches".to_owned(),
            marker_ttl: None,
            connect_timeout: Duration::from_secs(10),
            conn: Mutex::new(None),
        }
    }

    /// The prefix of the marker keys (default `sluice:batches`).
    pub fn marker_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.marker_prefix = prefix.into();
        self
    }

    /// Expire markers after `ttl` (default: never). A batch replayed after its marker
    /// expired is written again, which idempotent writes make harmless unless a later
    /// batch changed the same keys since: keep `ttl` well above the longest time a
    /// driver may stay down.
    pub fn marker_ttl(mut self, ttl: Duration) -> Self {
        self.marker_ttl = Some(ttl);
        self
    }

    /// How long to wait for a connection (default 10 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// The sink id.
    pub fn sink_id(&self) -> &str {
        &self.name.id
    }

    /// The marker key of batch `t`.
    pub fn marker_key(&self, t: BatchTime) -> String {
        format!("{}:{}:{}", self.marker_prefix, self.name.id, t.0)
    }

    fn validate(&self) -> Result<Client> {
        check_sink_id("redis", &self.name.id)?;
        if self.marker_ttl.is_some_and(|d| d.as_millis() == 0) {
            return Err(self.name.config("marker_ttl", "must be at least 1 ms"));
        }
        Client::open(self.url.as_str()).map_err(|e| {
            self.name.config(
                "url",
                format!(
                    "{} is not a Redis URL: {}",
                    redact(&self.url),
                    error_chain(&e)
                ),
            )
        })
    }

    fn connect(&self, t: Option<BatchTime>) -> Result<Connection> {
        let client = self.validate()?;
        client
            .get_connection_with_timeout(self.connect_timeout)
            .map_err(|e| {
                self.name
                    .error(t, format!("cannot connect to {}", redact(&self.url)), &e)
            })
    }

    /// Connects now: a job can call it before `start` to fail early on a wrong URL or
    /// a dead server.
    pub fn check(&self) -> Result<()> {
        let conn = self.connect(None)?;
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
        Ok(())
    }

    /// Runs `f` on the open connection (connecting first if needed); an error drops
    /// the connection so the next batch starts on a fresh one.
    fn with_conn<R>(
        &self,
        t: BatchTime,
        f: impl FnOnce(&mut Connection) -> Result<R>,
    ) -> Result<R> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut conn = match guard.take() {
            Some(c) if c.is_open() => c,
            _ => self.connect(Some(t))?,
        };
        let out = f(&mut conn);
        if out.is_ok() {
            *guard = Some(conn);
        }
        out
    }

    /// Whether batch `t` is committed (its marker key exists).
    pub fn is_committed(&self, t: BatchTime) -> Result<bool> {
        let key = self.marker_key(t);
        self.with_conn(t, |conn| {
            ::redis::cmd("EXISTS")
                .arg(&key)
                .query::<bool>(conn)
                .map_err(|e| self.name.error(Some(t), "cannot read the marker", &e))
        })
    }

    /// Writes batch `c` once: the writes `f` maps each element to, with the batch's
    /// marker, in one `MULTI`/`EXEC`; a batch whose marker exists is skipped. This is
    /// what [`DStream::save_to_redis`] runs for every batch.
    pub fn write_batch<T, I>(
        &self,
        c: &BatchContext<'_, T>,
        f: impl Fn(&T) -> I,
    ) -> Result<BatchOutcome>
    where
        I: IntoIterator<Item = RedisWrite>,
    {
        if c.batch.is_empty() {
            return Ok(BatchOutcome::Empty);
        }
        self.write_with(c, |c| Ok(c.batch.iter().flat_map(&f).collect()))
    }

    /// Writes batch `c` once: the writes `f` returns for the whole batch, with the
    /// batch's marker, in one `MULTI`/`EXEC`; a batch whose marker exists is skipped
    /// without calling `f`.
    pub fn write_with<T>(
        &self,
        c: &BatchContext<'_, T>,
        f: impl FnOnce(&BatchContext<'_, T>) -> Result<Vec<RedisWrite>, BoxError>,
    ) -> Result<BatchOutcome> {
        let t = c.time;
        let marker = self.marker_key(t);
        self.with_conn(t, |conn| {
            let err = |what: &str, e: &dyn std::error::Error| self.name.error(Some(t), what, e);
            // WATCH first: if another driver commits this batch between our check and
            // our EXEC, the EXEC is discarded instead of writing the batch twice.
            ::redis::cmd("WATCH")
                .arg(&marker)
                .exec(conn)
                .map_err(|e| err("cannot watch the marker", &e))?;
            let exists: bool = ::redis::cmd("EXISTS")
                .arg(&marker)
                .query(conn)
                .map_err(|e| err("cannot read the marker", &e))?;
            let unwatch = |conn: &mut Connection| ::redis::cmd("UNWATCH").exec(conn);
            if exists {
                unwatch(conn).map_err(|e| err("cannot unwatch the marker", &e))?;
                tracing::info!(sink = %self.name, batch = t.0, "batch already committed; replay skipped");
                return Ok(BatchOutcome::AlreadyCommitted);
            }
            let writes = match f(c) {
                Ok(w) => w,
                Err(e) => {
                    let _ = unwatch(conn);
                    return Err(err("mapping the batch to writes failed", &*e));
                }
            };
            let mut pipe = ::redis::pipe();
            pipe.atomic();
            for w in &writes {
                w.add_to(&mut pipe);
            }
            let elements = c.batch.len() as u64;
            let set_marker = pipe.cmd("SET").arg(&marker).arg(elements);
            if let Some(ttl) = self.marker_ttl {
                set_marker.arg("PX").arg(ttl.as_millis() as u64);
            }
            set_marker.ignore();
            // Rule: the writes and the marker go in one EXEC, so a replay finds both or
            // neither (short of a command failing inside the EXEC: see below).
            match pipe.query::<Value>(conn) {
                Ok(Value::Nil) => {
                    // The marker changed under our WATCH: another writer got there.
                    let exists: bool = ::redis::cmd("EXISTS")
                        .arg(&marker)
                        .query(conn)
                        .map_err(|e| err("cannot read the marker", &e))?;
                    if exists {
                        tracing::info!(sink = %self.name, batch = t.0, "batch committed concurrently by another writer; skipped");
                        Ok(BatchOutcome::AlreadyCommitted)
                    } else {
                        Err(self.name.error(
                            Some(t),
                            "the marker changed during the write",
                            &std::io::Error::other("another writer touched it; nothing was written"),
                        ))
                    }
                }
                Ok(_) => Ok(BatchOutcome::Committed { elements }),
                Err(e) => {
                    // Redis does not roll an EXEC back when one of its commands fails:
                    // drop the marker so the replay writes the batch again (harmless,
                    // every write being idempotent). Best effort: if the connection is
                    // gone, the EXEC most likely did not run.
                    let _ = ::redis::cmd("DEL").arg(&marker).exec(conn);
                    Err(err(
                        "writing the batch failed (marker removed: a replay writes it again)",
                        &e,
                    ))
                }
            }
        })
    }
}

impl<T: Data> DStream<T> {
    /// Writes every batch to Redis once: the idempotent writes `f` maps each element
    /// to, and the batch's marker, in one `MULTI`/`EXEC`; a batch whose marker exists
    /// is skipped. See [`RedisSink`].
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sluice::prelude::*;
    /// use sluice::sinks::{RedisSink, RedisWrite};
    /// # let ssc = StreamingContext::new(StreamingConf::new("doc", Duration::from_secs(1)))?;
    /// # let totals = ssc.queue_stream(vec![vec![("a".to_string(), 1u64)]], true)?;
    /// totals.save_to_redis(
    ///     RedisSink::new("redis://127.0.0.1:6379/", "word-totals"),
    ///     |(w, n): &(String, u64)| [RedisWrite::hset("totals", w, n)],
    /// )?;
    /// # Ok::<(), sluice::EngineError>(())
    /// ```
    pub fn save_to_redis<I>(
        &self,
        sink: RedisSink,
        f: impl Fn(&T) -> I + Send + Sync + 'static,
    ) -> Result<()>
    where
        I: IntoIterator<Item = RedisWrite>,
    {
        sink.validate()?;
        self.foreach_batch(move |c| sink.write_batch(c, &f).map(drop))
    }

    /// Writes every batch to Redis once with the writes `f` returns for the whole
    /// batch (it sees the batch id: `c.batch_id()`, for per-batch keys). See
    /// [`RedisSink::write_with`].
    pub fn save_to_redis_with(
        &self,
        sink: RedisSink,
        f: impl Fn(&BatchContext<'_, T>) -> Result<Vec<RedisWrite>, BoxError> + Send + Sync + 'static,
    ) -> Result<()> {
        sink.validate()?;
        self.foreach_batch(move |c| sink.write_with(c, &f).map(drop))
    }
}
