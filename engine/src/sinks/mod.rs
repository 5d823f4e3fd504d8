//! Exactly-once sinks: PostgreSQL, MySQL/MariaDB and Redis, each behind a cargo
//! feature of the same name (`postgres`, `mysql`, `redis`; all on by default), so a job
//! that does not use one leaves its client out of the build. The file outputs
//! (`save_as_text_files`, …) are output operations in `ops::output`. A new sink is a
//! file here, behind its own feature, that turns a batch and its batch id into one
//! atomic or idempotent write.
//!
//! A restarted driver re-runs its unfinished batches with the same inputs and the same
//! batch times (DESIGN.md, durability protocol). A sink turns those replays into no-ops
//! by remembering, next to the output, which batches it has committed:
//!
//! - [`PostgresSink`] and [`MySqlSink`] are **transactional**. Each batch is one
//!   transaction that first claims the batch in a marker table
//!   (`sluice_batches(sink_id, batch_id)`, primary key on both, created if missing),
//!   then writes the rows and commits. A batch whose marker is already there was
//!   committed before: the transaction is rolled back and the batch is skipped. Rows
//!   and marker commit together or not at all, so a crash at any instant leaves either
//!   both or neither, and every batch lands exactly once. Two drivers racing on the
//!   same batch serialise on the marker's primary key: the second one waits, then
//!   skips.
//! - [`RedisSink`] is **idempotent, not transactional**: it writes only idempotent
//!   commands (`SET`, `HSET`, `SADD`, `DEL` of keys the job derives deterministically
//!   from its data and, where it needs them, the batch id) and a per-batch marker key,
//!   all in one `MULTI`/`EXEC` guarded by `WATCH` on the marker. A replay finds the
//!   marker and does nothing. Redis does not roll a transaction back when one of its
//!   commands fails (a `WRONGTYPE`, say): the sink then deletes the marker and fails
//!   the batch, so the replay writes the batch again, which is harmless because every
//!   write is idempotent. "Exactly once" for Redis therefore means: the final contents
//!   are those of a run in which every batch was written once. Redis keeps it only as
//!   durably as its own persistence (AOF/RDB) is configured to.
//!
//! - [`KafkaSink`] (feature `kafka`) is **transactional**: each batch is one Kafka
//!   transaction that also commits the batch id as an offset of the sink's own
//!   consumer group; a replay finds it and is skipped, and a zombie driver is fenced by
//!   the transactional id (see [`kafka`] for the guarantee and its limits).
//!
//! The marker table, the marker keys and the batch id are per *sink id*: give every
//! sink of every job its own stable id (it must not change across restarts, or the
//! replays are no longer recognised).
//!
//! How a batch becomes rows is the job's choice: a statement and a row mapper
//! ([`DStream::save_to_postgres`](crate::DStream::save_to_postgres),
//! [`DStream::save_to_mysql`](crate::DStream::save_to_mysql)), or a closure given the
//! open transaction and the batch
//! ([`DStream::save_to_postgres_with`](crate::DStream::save_to_postgres_with),
//! [`DStream::save_to_mysql_with`](crate::DStream::save_to_mysql_with)). The mapper's
//! values are [`SqlValue`]s, built with `.into()` from the usual Rust types:
//!
//! ```no_run
//! use std::time::Duration;
//! use sluice::prelude::*;
//! use sluice::sinks::PostgresSink;
//!
//! let ssc = StreamingContext::new(StreamingConf::new("wc", Duration::from_secs(1)))?;
//! let words = ssc.queue_stream(vec![vec!["a b a".to_string()]], true)?;
//! words
//!     .flat_map(|l: &String| l.split(' ').map(str::to_owned).collect::<Vec<_>>())?
//!     .map(|w: &String| (w.clone(), 1i64))?
//!     .reduce_by_key(|a, b| a + b)?
//!     .save_to_postgres(
//!         PostgresSink::new("postgres://postgres@127.0.0.1/test", "word-counts").statement(
//!             "INSERT INTO counts(word, n) VALUES ($1, $2) \
//!              ON CONFLICT (word) DO UPDATE SET n = counts.n + EXCLUDED.n",
//!         ),
//!         |(w, n): &(String, i64)| vec![w.as_str().into(), (*n).into()],
//!     )?;
//! ssc.start()?;
//! # Ok::<(), sluice::EngineError>(())
//! ```
//!
//! For any other store, [`DStream::foreach_batch`](crate::DStream::foreach_batch) hands
//! over the batch id ([`BatchContext::batch_id`](crate::BatchContext::batch_id)) for
//! the job to make its own writes idempotent:
//!
//! ```
//! use std::time::Duration;
//! use sluice::prelude::*;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let out = dir.path().to_owned();
//! let ssc = StreamingContext::new(StreamingConf::new("doc", Duration::from_millis(20)))?;
//! let counts = ssc.queue_stream(vec![vec![("a".to_string(), 1u64)]], true)?;
//! counts.foreach_batch(move |b| {
//!     if b.batch.is_empty() {
//!         return Ok(());
//!     }
//!     // One file per batch, named by the batch id and published by rename: a replayed
//!     // batch replaces its own file with the same content instead of adding another.
//!     let err = |e: std::io::Error| EngineError::User(format!("batch {}: {e}", b.batch_id()));
//!     let tmp = out.join(format!(".counts-{}.tmp", b.batch_id()));
//!     let body: String = b.batch.iter().map(|(w, n)| format!("{w} {n}\n")).collect();
//!     std::fs::write(&tmp, body).map_err(err)?;
//!     std::fs::rename(&tmp, out.join(format!("counts-{}.txt", b.batch_id()))).map_err(err)
//! })?;
//! ssc.start()?;
//! ssc.stop(true)?;
//! assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
//! # Ok::<(), sluice::EngineError>(())
//! ```

// The shared helpers below serve the sinks; a build without any sink feature keeps
// them (they are small) rather than a cfg on each.
#![cfg_attr(
    not(any(
        feature = "postgres",
        feature = "mysql",
        feature = "redis",
        feature = "kafka"
    )),
    allow(dead_code)
)]

use std::error::Error as StdError;
use std::fmt;

use crate::{BatchTime, EngineError};

#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod sql;

#[cfg(feature = "kafka")]
pub use self::kafka::KafkaSink;
#[cfg(feature = "mysql")]
pub use self::mysql::MySqlSink;
#[cfg(feature = "postgres")]
pub use self::postgres::PostgresSink;
#[cfg(feature = "redis")]
pub use self::redis::{RedisSink, RedisWrite};
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub use self::sql::{SqlValue, DEFAULT_MARKER_TABLE, DEFAULT_ROWS_PER_STATEMENT};

/// An error a user's write closure may return: any error converts with `?`.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// What a sink did with one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// The batch was written and committed together with its marker.
    Committed {
        /// The number of elements in the batch.
        elements: u64,
    },
    /// The batch had been committed before (a replay): nothing was written.
    AlreadyCommitted,
    /// The batch had no elements: the row-mapping writers (`write_rows`,
    /// `write_batch`) skip it without a transaction or a marker, its replay being
    /// empty too. The closure writers (`write_with`) always run.
    Empty,
}

#[derive(Debug, Clone)]
pub(crate) struct SinkName {
    pub(crate) kind: &'static str,
    pub(crate) id: String,
}

impl fmt::Display for SinkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sink {:?}", self.kind, self.id)
    }
}

impl SinkName {
    /// An error of this sink for batch `t` (or of its configuration, `t` = `None`).
    pub(crate) fn error(
        &self,
        t: Option<BatchTime>,
        what: impl fmt::Display,
        cause: &dyn StdError,
    ) -> EngineError {
        let batch = t.map(|t| format!(", batch {}", t.0)).unwrap_or_default();
        EngineError::User(format!("{self}{batch}: {what}: {}", error_chain(cause)))
    }

    /// A configuration error, before any batch.
    pub(crate) fn config(&self, setting: &str, reason: impl fmt::Display) -> EngineError {
        EngineError::Config {
            setting: format!("{self}: {setting}"),
            reason: reason.to_string(),
        }
    }
}

/// `e` and its sources, each once (`a: b: c`): client crates often keep the useful
/// part (the server's message, the OS error) in a source.
pub(crate) fn error_chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// A connection URL fit for messages and logs: the password replaced by `***`
/// (URL form `scheme://user:pass@host` and key-value form `password=…`).
pub fn redact(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                return format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &rest[..colon],
                    &rest[at..]
                );
            }
        }
        return url.to_owned();
    }
    url.split(' ')
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A sink id: non-empty, at most 255 bytes (the SQL marker column).
pub(crate) fn check_sink_id(kind: &'static str, id: &str) -> crate::Result<()> {
    if id.is_empty() || id.len() > 255 {
        return Err(EngineError::Config {
            setting: format!("{kind} sink id"),
            reason: format!(
                "{id:?} must be 1 to 255 bytes long (a stable name for this sink, kept across restarts)"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("mysql://root@h/db"), "mysql://root@h/db");
        assert_eq!(
            redact("host=h user=u password=secret dbname=d"),
            "host=h user=u password=*** dbname=d"
        );
    }
}
