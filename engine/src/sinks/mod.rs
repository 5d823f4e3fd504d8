//! Exactly-once sinks: PostgreSQL, MySQL/MariaDB and Redis.
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

use std::error::Error as StdError;
use std::fmt;

use crate::{BatchTime, EngineError};

mod mysql;
mod postgres;
mod redis;

pub use self::mysql::MySqlSink;
pub use self::postgres::PostgresSink;
pub use self::redis::{RedisSink, RedisWrite};

/// The marker table the SQL sinks create and use unless told otherwise.
pub const DEFAULT_MARKER_TABLE: &str = "sluice_batches";

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

/// One value of a row, for the SQL sinks' row mappers. Built with `.into()` from
/// `bool`, integers, floats, `String`/`&str`, `Vec<u8>`/`&[u8]` and `Option` of those
/// (`None` is SQL `NULL`). PostgreSQL converts integers to the column's integer or
/// float type (an out-of-range value is an error, never a silent wrap).
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// SQL `NULL`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A floating-point number.
    Float(f64),
    /// Text.
    Text(String),
    /// Bytes (`bytea`, `BLOB`).
    Bytes(Vec<u8>),
}

macro_rules! sql_value_from {
    ($($t:ty => $v:ident as $as:ty),* $(,)?) => {$(
        impl From<$t> for SqlValue {
            fn from(x: $t) -> Self {
                SqlValue::$v(<$as>::from(x))
            }
        }
    )*};
}

sql_value_from!(
    bool => Bool as bool,
    i8 => Int as i64, i16 => Int as i64, i32 => Int as i64, i64 => Int as i64,
    u8 => UInt as u64, u16 => UInt as u64, u32 => UInt as u64, u64 => UInt as u64,
    f32 => Float as f64, f64 => Float as f64,
    String => Text as String, &str => Text as String,
    Vec<u8> => Bytes as Vec<u8>, &[u8] => Bytes as Vec<u8>,
);

impl From<usize> for SqlValue {
    fn from(x: usize) -> Self {
        SqlValue::UInt(x as u64)
    }
}

impl From<&String> for SqlValue {
    fn from(x: &String) -> Self {
        SqlValue::Text(x.clone())
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(x: Option<T>) -> Self {
        x.map_or(SqlValue::Null, Into::into)
    }
}

/// Which sink, for messages: `postgres sink "word-counts"`.
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
pub(crate) fn redact(url: &str) -> String {
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

/// A SQL identifier the sink interpolates (the marker table): letters, digits and
/// `_`, not starting with a digit, optionally schema-qualified (`schema.table`).
pub(crate) fn check_identifier(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.split('.').count() <= 2
        && name.split('.').all(|p| {
            !p.is_empty()
                && !p.starts_with(|c: char| c.is_ascii_digit())
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a plain SQL identifier (letters, digits, '_', optionally schema.table)"
        ))
    }
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

/// The batch id as the SQL marker column stores it (`BIGINT`).
/// The settings both SQL sinks check the same way before connecting: the sink id, the
/// marker table name, a non-zero marker retention, and (when the sink is used through
/// `save_fn`) a statement.
pub(crate) fn check_sql_settings(
    name: &SinkName,
    marker_table: &str,
    marker_retention: Option<std::time::Duration>,
    statement: Option<&str>,
    need_statement: bool,
    save_fn: &str,
) -> crate::Result<()> {
    check_sink_id(name.kind, &name.id)?;
    check_identifier(marker_table).map_err(|r| name.config("marker_table", r))?;
    if marker_retention.is_some_and(|d| d.as_millis() == 0) {
        return Err(name.config(
            "marker_retention",
            "must be at least 1 ms (or unset: keep all)",
        ));
    }
    if need_statement && statement.is_none() {
        return Err(name.config(
            "statement",
            format!(
                "{save_fn} needs .statement(\"INSERT …\") to turn rows into SQL \
                 (or use {save_fn}_with)"
            ),
        ));
    }
    Ok(())
}

/// Markers of batches whose id is below this go, with a marker retention of `keep`.
pub(crate) fn retention_cutoff(keep: Option<std::time::Duration>, t: BatchTime) -> Option<i64> {
    let keep = keep?.as_millis();
    i64::try_from(u128::from(t.0).checked_sub(keep)?).ok()
}

pub(crate) fn batch_id_i64(name: &SinkName, t: BatchTime) -> crate::Result<i64> {
    i64::try_from(t.0).map_err(|_| {
        EngineError::User(format!(
            "{name}, batch {}: the batch id does not fit a BIGINT",
            t.0
        ))
    })
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

    #[test]
    fn identifiers() {
        assert!(check_identifier("sluice_batches").is_ok());
        assert!(check_identifier("public.sluice_batches").is_ok());
        assert!(check_identifier("x; DROP TABLE y").is_err());
        assert!(check_identifier("1abc").is_err());
        assert!(check_identifier("a.b.c").is_err());
    }

    #[test]
    fn values_convert() {
        assert_eq!(SqlValue::from(3u64), SqlValue::UInt(3));
        assert_eq!(SqlValue::from(None::<i32>), SqlValue::Null);
        assert_eq!(SqlValue::from("a"), SqlValue::Text("a".into()));
    }
}
