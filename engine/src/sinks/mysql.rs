//! The transactional MySQL / MariaDB sink.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use ::mysql::prelude::Queryable;
use ::mysql::{Conn, Opts, OptsBuilder, Params, Transaction, TxOpts, Value};

use super::sql::{
    batch_id_i64, check_sql_settings, retention_cutoff, write_rows_in, MultiRow, Placeholders,
    RowWriter, SqlValue, DEFAULT_MARKER_TABLE, DEFAULT_ROWS_PER_STATEMENT, SAVEPOINT,
};
use super::{error_chain, redact, BatchOutcome, BoxError, SinkName};
use crate::{BatchContext, BatchTime, DStream, Data, Result};

/// MySQL's and MariaDB's error code for a duplicate key.
const ER_DUP_ENTRY: u16 = 1062;

/// An exactly-once MySQL / MariaDB sink: every batch is one transaction that claims
/// the batch id in the marker table, writes the rows and commits; a batch committed
/// before (a replay after a restart) is skipped. See [the module docs](super).
///
/// ```no_run
/// use sluice::sinks::MySqlSink;
///
/// let sink = MySqlSink::new("mysql://root@127.0.0.1:3306/test", "word-counts")
///     .statement("INSERT INTO counts(word, n) VALUES (?, ?) \
///                 ON DUPLICATE KEY UPDATE n = n + VALUES(n)");
/// // counts.save_to_mysql(sink, |(w, n): &(String, u64)| vec![w.into(), (*n).into()])?;
/// ```
///
/// The tables written must be transactional (InnoDB, the default): a MyISAM table
/// ignores the rollback and breaks the guarantee. Statements that commit implicitly
/// (DDL: `CREATE`, `ALTER`, `TRUNCATE`, …) must not run inside the batch. TLS is not
/// supported (the crate is built without it). The connection is opened at the first
/// batch, kept, and opened again after any error.
pub struct MySqlSink {
    name: SinkName,
    url: String,
    statement: Option<String>,
    marker_table: String,
    marker_retention: Option<Duration>,
    connect_timeout: Duration,
    rows_per_statement: usize,
    conn: Mutex<Option<Conn>>,
}

impl fmt::Debug for MySqlSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlSink")
            .field("sink_id", &self.name.id)
            .field("url", &redact(&self.url))
            .field("statement", &self.statement)
            .field("marker_table", &self.marker_table)
            .field("marker_retention", &self.marker_retention)
            .field("connect_timeout", &self.connect_timeout)
            .field("rows_per_statement", &self.rows_per_statement)
            .finish_non_exhaustive()
    }
}

/// A clone has the same settings and its own connection.
impl Clone for MySqlSink {
    fn clone(&self) -> Self {
        MySqlSink {
            name: self.name.clone(),
            url: self.url.clone(),
            statement: self.statement.clone(),
            marker_table: self.marker_table.clone(),
            marker_retention: self.marker_retention,
            connect_timeout: self.connect_timeout,
            rows_per_statement: self.rows_per_statement,
            conn: Mutex::new(None),
        }
    }
}

impl MySqlSink {
    /// A sink writing to the database at `url` (`mysql://user:password@host:port/db`),
    /// committing its batch ids under `sink_id` (stable across restarts, unique per
    /// sink).
    pub fn new(url: impl Into<String>, sink_id: impl Into<String>) -> Self {
        MySqlSink {
            name: SinkName {
                kind: "mysql",
                id: sink_id.into(),
            },
            url: url.into(),
            statement: None,
            marker_table: DEFAULT_MARKER_TABLE.to_owned(),
            marker_retention: None,
            connect_timeout: Duration::from_secs(10),
            rows_per_statement: DEFAULT_ROWS_PER_STATEMENT,
            conn: Mutex::new(None),
        }
    }

    /// The statement for one element, with the row mapper's values for the `?`
    /// placeholders: an `INSERT`, or an upsert (`… ON DUPLICATE KEY UPDATE …`). A
    /// single-row `INSERT … VALUES (?, …) …` whose placeholders are all in its first
    /// `VALUES` tuple is sent for many rows at once (see
    /// [`MySqlSink::rows_per_statement`]); any other statement runs once per element.
    pub fn statement(mut self, sql: impl Into<String>) -> Self {
        self.statement = Some(sql.into());
        self
    }

    /// How many rows one `INSERT` carries (default 500; at most 65 535 parameters, and
    /// the statement must fit the server's `max_allowed_packet`): the `VALUES` tuple of
    /// the statement is repeated, inside the batch's transaction. A multi-row statement
    /// that fails is rolled back to a savepoint and its rows run one by one, so an error
    /// names the element. `1` sends one statement per row.
    pub fn rows_per_statement(mut self, rows: usize) -> Self {
        self.rows_per_statement = rows.max(1);
        self
    }

    /// The marker table (default `sluice_batches`; `db.table` allowed). It is created
    /// if missing: `(sink_id VARCHAR(255), batch_id BIGINT, committed_at TIMESTAMP,
    /// PRIMARY KEY (sink_id, batch_id)) ENGINE=InnoDB`.
    pub fn marker_table(mut self, table: impl Into<String>) -> Self {
        self.marker_table = table.into();
        self
    }

    /// How long to wait for a TCP connection (default 10 s) unless the URL sets
    /// `tcp_connect_timeout_ms`.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Delete the markers of batches older than `keep` of batch time before the batch
    /// being committed, in the same transaction (default: keep every marker, one row
    /// per non-empty batch). A replayed batch whose marker was deleted would be
    /// written again, so `keep` must be far longer than the batch time a restart may
    /// replay (the checkpoint interval plus the batches in flight): hours or days,
    /// not seconds.
    pub fn marker_retention(mut self, keep: Duration) -> Self {
        self.marker_retention = Some(keep);
        self
    }

    /// The sink id.
    pub fn sink_id(&self) -> &str {
        &self.name.id
    }

    fn validate(&self, need_statement: bool) -> Result<Opts> {
        check_sql_settings(
            &self.name,
            &self.marker_table,
            self.marker_retention,
            self.statement.as_deref(),
            need_statement,
            "save_to_mysql",
        )?;
        let opts = Opts::from_url(&self.url).map_err(|e| {
            self.name.config(
                "url",
                format!(
                    "{} is not a MySQL URL: {}",
                    redact(&self.url),
                    error_chain(&e)
                ),
            )
        })?;
        let timeout = opts
            .get_tcp_connect_timeout()
            .unwrap_or(self.connect_timeout);
        Ok(OptsBuilder::from_opts(opts)
            .tcp_connect_timeout(Some(timeout))
            .into())
    }

    /// Markers of batches before this id go, with [`MySqlSink::marker_retention`].
    fn retention_cutoff(&self, t: BatchTime) -> Option<i64> {
        retention_cutoff(self.marker_retention, t)
    }

    /// Connects and creates the marker table if missing.
    fn connect(&self, t: Option<BatchTime>) -> Result<Conn> {
        let opts = self.validate(false)?;
        let mut conn = Conn::new(opts).map_err(|e| {
            self.name
                .error(t, format!("cannot connect to {}", redact(&self.url)), &e)
        })?;
        // Outside any transaction: DDL commits implicitly in MySQL.
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {} (sink_id VARCHAR(255) NOT NULL, \
             batch_id BIGINT NOT NULL, \
             committed_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, \
             PRIMARY KEY (sink_id, batch_id)) ENGINE=InnoDB",
            self.marker_table
        );
        conn.query_drop(&create).map_err(|e| {
            self.name.error(
                t,
                format!("cannot create the marker table {}", self.marker_table),
                &e,
            )
        })?;
        Ok(conn)
    }

    /// Connects now, creating the marker table if missing: a job can call it before
    /// `start` to fail early on a wrong URL or a dead server.
    pub fn check(&self) -> Result<()> {
        let conn = self.connect(None)?;
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
        Ok(())
    }

    /// Whether batch `t` is committed (its marker is in the marker table).
    pub fn is_committed(&self, t: BatchTime) -> Result<bool> {
        let id = batch_id_i64(&self.name, t)?;
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE sink_id = ? AND batch_id = ?",
            self.marker_table
        );
        self.with_conn(t, |conn| {
            conn.exec_first::<u64, _, _>(&sql, (&self.name.id, id))
                .map(|n| n.unwrap_or(0) > 0)
                .map_err(|e| self.name.error(Some(t), "cannot read the marker table", &e))
        })
    }

    /// Runs `f` on the open connection (connecting first if needed); an error drops
    /// the connection so the next batch starts on a fresh one.
    fn with_conn<R>(&self, t: BatchTime, f: impl FnOnce(&mut Conn) -> Result<R>) -> Result<R> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut conn = match guard.take() {
            Some(c) => c,
            None => self.connect(Some(t))?,
        };
        let out = f(&mut conn);
        if out.is_ok() {
            *guard = Some(conn);
        }
        out
    }

    /// Writes batch `c` exactly once with the sink's statement, one execution per
    /// element with the values `row` maps it to. A batch committed before is skipped.
    /// This is what [`DStream::save_to_mysql`] runs for every batch; call it directly
    /// to write a batch from elsewhere (a replay test, a backfill).
    pub fn write_rows<T>(
        &self,
        c: &BatchContext<'_, T>,
        row: impl Fn(&T) -> Vec<SqlValue>,
    ) -> Result<BatchOutcome> {
        self.validate(true)?;
        if c.batch.is_empty() {
            return Ok(BatchOutcome::Empty);
        }
        let sql = self.statement.as_deref().unwrap_or_default();
        let multi =
            MultiRow::parse(sql, Placeholders::Question).filter(|_| self.rows_per_statement > 1);
        self.write_with(c, |tx, c| {
            let single = tx
                .prep(sql)
                .map_err(|e| format!("preparing {sql:?}: {}", error_chain(&e)))?;
            let items: Vec<&T> = c.batch.iter().collect();
            let mut w = MySqlRows {
                tx,
                single,
                multi: None,
            };
            write_rows_in(
                &mut w,
                multi.as_ref(),
                self.rows_per_statement,
                &items,
                &row,
            )
        })
    }

    /// Writes batch `c` exactly once with `f`, which runs inside the batch's
    /// transaction after the batch is claimed; `f` returning an error rolls the whole
    /// batch back (rows and marker). A batch committed before is skipped without
    /// calling `f`. `f` must write only through `tx`, deterministically from the batch,
    /// and run no statement that commits implicitly.
    pub fn write_with<T>(
        &self,
        c: &BatchContext<'_, T>,
        f: impl FnOnce(&mut Transaction<'_>, &BatchContext<'_, T>) -> Result<(), BoxError>,
    ) -> Result<BatchOutcome> {
        let t = c.time;
        let id = batch_id_i64(&self.name, t)?;
        let claim = format!(
            "INSERT INTO {} (sink_id, batch_id) VALUES (?, ?)",
            self.marker_table
        );
        self.with_conn(t, |conn| {
            let err = |what: &str, e: &dyn StdError| self.name.error(Some(t), what, e);
            let mut tx = conn
                .start_transaction(TxOpts::default())
                .map_err(|e| err("cannot begin the transaction", &e))?;
            // Claim the batch first: a concurrent claim of the same batch waits on the
            // primary key until this transaction ends, then finds it committed.
            match tx.exec_drop(&claim, (&self.name.id, id)) {
                Ok(()) => {}
                Err(::mysql::Error::MySqlError(e)) if e.code == ER_DUP_ENTRY => {
                    tx.rollback()
                        .map_err(|e| err("cannot roll back the transaction", &e))?;
                    tracing::info!(sink = %self.name, batch = t.0, "batch already committed; replay skipped");
                    return Ok(BatchOutcome::AlreadyCommitted);
                }
                Err(e) => return Err(err("cannot write the marker table", &e)),
            }
            f(&mut tx, c).map_err(|e| err("writing the batch failed, rolled back", &*e))?;
            if let Some(before) = self.retention_cutoff(t) {
                let prune = format!(
                    "DELETE FROM {} WHERE sink_id = ? AND batch_id < ?",
                    self.marker_table
                );
                tx.exec_drop(&prune, (&self.name.id, before))
                    .map_err(|e| err("cannot delete old markers", &e))?;
            }
            // Rule: rows and marker commit together, so a replay finds both or neither.
            tx.commit()
                .map_err(|e| err("cannot commit the transaction", &e))?;
            Ok(BatchOutcome::Committed {
                elements: c.batch.len() as u64,
            })
        })
    }
}

/// The batch's transaction as [`write_rows_in`] uses it: the single-row statement and
/// the multi-row one last prepared (by row count).
struct MySqlRows<'a, 'b> {
    tx: &'a mut Transaction<'b>,
    single: ::mysql::Statement,
    multi: Option<(usize, ::mysql::Statement)>,
}

impl RowWriter for MySqlRows<'_, '_> {
    fn multi(&mut self, m: &MultiRow, rows: &[Vec<SqlValue>]) -> Result<(), BoxError> {
        let stmt = match &self.multi {
            Some((n, s)) if *n == rows.len() => s.clone(),
            _ => {
                let s = self.tx.prep(m.statement(rows.len()))?;
                self.multi = Some((rows.len(), s.clone()));
                s
            }
        };
        let params = Params::Positional(rows.iter().flatten().map(to_value).collect());
        Ok(self.tx.exec_drop(&stmt, params)?)
    }

    fn single(&mut self, row: &[SqlValue]) -> Result<(), BoxError> {
        let params = Params::Positional(row.iter().map(to_value).collect());
        self.tx
            .exec_drop(&self.single, params)
            .map_err(|e| error_chain(&e).into())
    }

    fn savepoint(&mut self) -> Result<(), BoxError> {
        Ok(self.tx.query_drop(format!("SAVEPOINT {SAVEPOINT}"))?)
    }

    fn release(&mut self) -> Result<(), BoxError> {
        Ok(self
            .tx
            .query_drop(format!("RELEASE SAVEPOINT {SAVEPOINT}"))?)
    }

    fn rollback_to(&mut self) -> Result<(), BoxError> {
        Ok(self
            .tx
            .query_drop(format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}"))?)
    }
}

/// The MySQL value of a row value.
fn to_value(v: &SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::NULL,
        SqlValue::Bool(b) => Value::Int(i64::from(*b)),
        SqlValue::Int(i) => Value::Int(*i),
        SqlValue::UInt(u) => Value::UInt(*u),
        SqlValue::Float(f) => Value::Double(*f),
        SqlValue::Text(s) => Value::Bytes(s.clone().into_bytes()),
        SqlValue::Bytes(b) => Value::Bytes(b.clone()),
    }
}

impl<T: Data> DStream<T> {
    /// Writes every batch to MySQL / MariaDB exactly once: `sink`'s statement runs
    /// once per element with the values `row` maps it to, in one transaction per batch
    /// that also records the batch id, and a batch committed before is skipped.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sluice::prelude::*;
    /// use sluice::sinks::MySqlSink;
    /// # let ssc = StreamingContext::new(StreamingConf::new("doc", Duration::from_secs(1)))?;
    /// # let counts = ssc.queue_stream(vec![vec![("a".to_string(), 1u64)]], true)?;
    /// counts.save_to_mysql(
    ///     MySqlSink::new("mysql://root@127.0.0.1/test", "word-counts")
    ///         .statement("INSERT INTO counts(word, n) VALUES (?, ?) \
    ///                     ON DUPLICATE KEY UPDATE n = n + VALUES(n)"),
    ///     |(w, n): &(String, u64)| vec![w.into(), (*n).into()],
    /// )?;
    /// # Ok::<(), sluice::EngineError>(())
    /// ```
    pub fn save_to_mysql(
        &self,
        sink: MySqlSink,
        row: impl Fn(&T) -> Vec<SqlValue> + Send + Sync + 'static,
    ) -> Result<()> {
        sink.validate(true)?;
        self.foreach_batch(move |c| sink.write_rows(c, &row).map(drop))
    }

    /// Writes every batch to MySQL / MariaDB exactly once with `f`, given the batch's
    /// open transaction (after the batch id is claimed in it) and the batch. See
    /// [`MySqlSink::write_with`].
    pub fn save_to_mysql_with(
        &self,
        sink: MySqlSink,
        f: impl Fn(&mut Transaction<'_>, &BatchContext<'_, T>) -> Result<(), BoxError>
            + Send
            + Sync
            + 'static,
    ) -> Result<()> {
        sink.validate(false)?;
        self.foreach_batch(move |c| sink.write_with(c, &f).map(drop))
    }
}
