//! The transactional PostgreSQL sink.

use std::error::Error as StdError;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use ::postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use ::postgres::{Client, Config, NoTls, Transaction};
use bytes::{BufMut, BytesMut};

use super::sql::{
    batch_id_i64, check_sql_settings, retention_cutoff, write_rows_in, MultiRow, Placeholders,
    RowWriter, SqlValue, DEFAULT_MARKER_TABLE, DEFAULT_ROWS_PER_STATEMENT, SAVEPOINT,
};
use super::{error_chain, redact, BatchOutcome, BoxError, SinkName};
use crate::{BatchContext, BatchTime, DStream, Data, Result};

/// An exactly-once PostgreSQL sink: every batch is one transaction that claims the
/// batch id in the marker table, writes the rows and commits; a batch committed
/// before (a replay after a restart) is skipped. See [the module docs](super).
///
/// ```no_run
/// use sluice::sinks::PostgresSink;
///
/// let sink = PostgresSink::new("postgres://postgres@127.0.0.1:5432/test", "word-counts")
///     .statement("INSERT INTO counts(word, n) VALUES ($1, $2) \
///                 ON CONFLICT (word) DO UPDATE SET n = counts.n + EXCLUDED.n");
/// // counts.save_to_postgres(sink, |(w, n): &(String, u64)| vec![w.into(), (*n).into()])?;
/// ```
///
/// The connection URL is a `postgres://user:password@host:port/db` URL or a
/// `host=… user=… dbname=…` string; TLS is not supported (connect on a trusted
/// network or through a local proxy). The connection is opened at the first batch,
/// kept, and opened again after any error.
pub struct PostgresSink {
    name: SinkName,
    url: String,
    statement: Option<String>,
    marker_table: String,
    marker_retention: Option<Duration>,
    connect_timeout: Duration,
    rows_per_statement: usize,
    client: Mutex<Option<Client>>,
}

impl fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSink")
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
impl Clone for PostgresSink {
    fn clone(&self) -> Self {
        PostgresSink {
            name: self.name.clone(),
            url: self.url.clone(),
            statement: self.statement.clone(),
            marker_table: self.marker_table.clone(),
            marker_retention: self.marker_retention,
            connect_timeout: self.connect_timeout,
            rows_per_statement: self.rows_per_statement,
            client: Mutex::new(None),
        }
    }
}

impl PostgresSink {
    /// A sink writing to the database at `url`, committing its batch ids under
    /// `sink_id` (stable across restarts, unique per sink).
    pub fn new(url: impl Into<String>, sink_id: impl Into<String>) -> Self {
        PostgresSink {
            name: SinkName {
                kind: "postgres",
                id: sink_id.into(),
            },
            url: url.into(),
            statement: None,
            marker_table: DEFAULT_MARKER_TABLE.to_owned(),
            marker_retention: None,
            connect_timeout: Duration::from_secs(10),
            rows_per_statement: DEFAULT_ROWS_PER_STATEMENT,
            client: Mutex::new(None),
        }
    }

    /// The statement for one element, with the row mapper's values as `$1`, `$2`, …: an
    /// `INSERT`, or an upsert (`INSERT … ON CONFLICT … DO UPDATE`). A single-row
    /// `INSERT … VALUES ($1, …) …` whose placeholders are all in its `VALUES` tuple is
    /// sent for many rows at once (see [`PostgresSink::rows_per_statement`]); any other
    /// statement runs once per element.
    pub fn statement(mut self, sql: impl Into<String>) -> Self {
        self.statement = Some(sql.into());
        self
    }

    /// How many rows one `INSERT` carries (default 500; at most 65 535 parameters):
    /// the `VALUES` tuple of the statement is repeated, inside the batch's transaction.
    /// A multi-row statement the server refuses (`ON CONFLICT DO UPDATE` meeting one
    /// key twice in it) is rolled back to a savepoint and its rows run one by one, so
    /// the result is the same as one statement per row. `1` sends one statement per
    /// row. Statement-level triggers fire once per statement.
    pub fn rows_per_statement(mut self, rows: usize) -> Self {
        self.rows_per_statement = rows.max(1);
        self
    }

    /// The marker table (default `sluice_batches`; `schema.table` allowed). It is
    /// created if missing: `(sink_id TEXT, batch_id BIGINT, committed_at TIMESTAMPTZ,
    /// PRIMARY KEY (sink_id, batch_id))`.
    pub fn marker_table(mut self, table: impl Into<String>) -> Self {
        self.marker_table = table.into();
        self
    }

    /// How long to wait for a connection (default 10 s) unless the URL sets
    /// `connect_timeout`.
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

    /// Checks the settings without connecting: the sink id, the marker table name, the
    /// URL, and (with `need_statement`) that a statement was given.
    fn validate(&self, need_statement: bool) -> Result<Config> {
        check_sql_settings(
            &self.name,
            &self.marker_table,
            self.marker_retention,
            self.statement.as_deref(),
            need_statement,
            "save_to_postgres",
        )?;
        let mut config = Config::from_str(&self.url).map_err(|e| {
            self.name.config(
                "url",
                format!(
                    "{} is not a PostgreSQL URL: {}",
                    redact(&self.url),
                    error_chain(&e)
                ),
            )
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(self.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("sluice");
        }
        Ok(config)
    }

    /// Markers of batches before this id go, with [`PostgresSink::marker_retention`].
    fn retention_cutoff(&self, t: BatchTime) -> Option<i64> {
        retention_cutoff(self.marker_retention, t)
    }

    /// Connects and creates the marker table if missing.
    fn connect(&self, t: Option<BatchTime>) -> Result<Client> {
        let config = self.validate(false)?;
        let mut client = config.connect(NoTls).map_err(|e| {
            self.name
                .error(t, format!("cannot connect to {}", redact(&self.url)), &e)
        })?;
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {} (sink_id TEXT NOT NULL, batch_id BIGINT NOT NULL, \
             committed_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (sink_id, batch_id))",
            self.marker_table
        );
        if let Err(e) = client.batch_execute(&create) {
            // Two sinks creating the table at once: one of them loses with a
            // unique violation, and the table is there all the same.
            let exists = client
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&self.marker_table])
                .map(|r| r.get::<_, bool>(0))
                .unwrap_or(false);
            if !exists {
                return Err(self.name.error(
                    t,
                    format!("cannot create the marker table {}", self.marker_table),
                    &e,
                ));
            }
        }
        Ok(client)
    }

    /// Connects now, creating the marker table if missing: a job can call it before
    /// `start` to fail early on a wrong URL or a dead server.
    pub fn check(&self) -> Result<()> {
        let client = self.connect(None)?;
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(client);
        Ok(())
    }

    /// Whether batch `t` is committed (its marker is in the marker table).
    pub fn is_committed(&self, t: BatchTime) -> Result<bool> {
        let id = batch_id_i64(&self.name, t)?;
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE sink_id = $1 AND batch_id = $2)",
            self.marker_table
        );
        self.with_client(t, |client| {
            client
                .query_one(&sql, &[&self.name.id, &id])
                .map(|r| r.get::<_, bool>(0))
                .map_err(|e| self.name.error(Some(t), "cannot read the marker table", &e))
        })
    }

    /// Runs `f` on the open connection (connecting first if needed); an error drops
    /// the connection so the next batch starts on a fresh one.
    fn with_client<R>(&self, t: BatchTime, f: impl FnOnce(&mut Client) -> Result<R>) -> Result<R> {
        let mut guard = self.client.lock().unwrap_or_else(|e| e.into_inner());
        let mut client = match guard.take() {
            Some(c) if !c.is_closed() => c,
            _ => self.connect(Some(t))?,
        };
        let out = f(&mut client);
        if out.is_ok() {
            *guard = Some(client);
        }
        out
    }

    /// Writes batch `c` exactly once with the sink's statement, one execution per
    /// element with the values `row` maps it to. A batch committed before is skipped.
    /// This is what [`DStream::save_to_postgres`] runs for every batch; call it
    /// directly to write a batch from elsewhere (a replay test, a backfill).
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
            MultiRow::parse(sql, Placeholders::Dollar).filter(|_| self.rows_per_statement > 1);
        self.write_with(c, |tx, c| {
            let single = tx
                .prepare(sql)
                .map_err(|e| format!("preparing {sql:?}: {}", error_chain(&e)))?;
            let items: Vec<&T> = c.batch.iter().collect();
            let mut w = PgRows {
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
    /// calling `f`. `f` must write only through `tx`, deterministically from the batch.
    pub fn write_with<T>(
        &self,
        c: &BatchContext<'_, T>,
        f: impl FnOnce(&mut Transaction<'_>, &BatchContext<'_, T>) -> Result<(), BoxError>,
    ) -> Result<BatchOutcome> {
        let t = c.time;
        let id = batch_id_i64(&self.name, t)?;
        let claim = format!(
            "INSERT INTO {} (sink_id, batch_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            self.marker_table
        );
        self.with_client(t, |client| {
            let err = |what: &str, e: &dyn StdError| self.name.error(Some(t), what, e);
            let mut tx = client
                .transaction()
                .map_err(|e| err("cannot begin the transaction", &e))?;
            // Claim the batch first: a concurrent claim of the same batch waits on the
            // primary key until this transaction ends, then finds it committed.
            let claimed = tx
                .execute(&claim, &[&self.name.id, &id])
                .map_err(|e| err("cannot write the marker table", &e))?;
            if claimed == 0 {
                tx.rollback()
                    .map_err(|e| err("cannot roll back the transaction", &e))?;
                tracing::info!(sink = %self.name, batch = t.0, "batch already committed; replay skipped");
                return Ok(BatchOutcome::AlreadyCommitted);
            }
            f(&mut tx, c).map_err(|e| err("writing the batch failed, rolled back", &*e))?;
            if let Some(before) = self.retention_cutoff(t) {
                let prune = format!(
                    "DELETE FROM {} WHERE sink_id = $1 AND batch_id < $2",
                    self.marker_table
                );
                tx.execute(&prune, &[&self.name.id, &before])
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

impl<T: Data> DStream<T> {
    /// Writes every batch to PostgreSQL exactly once: `sink`'s statement runs once per
    /// element with the values `row` maps it to, in one transaction per batch that also
    /// records the batch id, and a batch committed before is skipped.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sluice::prelude::*;
    /// use sluice::sinks::PostgresSink;
    /// # let ssc = StreamingContext::new(StreamingConf::new("doc", Duration::from_secs(1)))?;
    /// # let counts = ssc.queue_stream(vec![vec![("a".to_string(), 1u64)]], true)?;
    /// counts.save_to_postgres(
    ///     PostgresSink::new("postgres://postgres@127.0.0.1/test", "word-counts")
    ///         .statement("INSERT INTO counts(word, n) VALUES ($1, $2) \
    ///                     ON CONFLICT (word) DO UPDATE SET n = counts.n + EXCLUDED.n"),
    ///     |(w, n): &(String, u64)| vec![w.into(), (*n).into()],
    /// )?;
    /// # Ok::<(), sluice::EngineError>(())
    /// ```
    pub fn save_to_postgres(
        &self,
        sink: PostgresSink,
        row: impl Fn(&T) -> Vec<SqlValue> + Send + Sync + 'static,
    ) -> Result<()> {
        sink.validate(true)?;
        self.foreach_batch(move |c| sink.write_rows(c, &row).map(drop))
    }

    /// Writes every batch to PostgreSQL exactly once with `f`, given the batch's open
    /// transaction (after the batch id is claimed in it) and the batch. See
    /// [`PostgresSink::write_with`].
    pub fn save_to_postgres_with(
        &self,
        sink: PostgresSink,
        f: impl Fn(&mut Transaction<'_>, &BatchContext<'_, T>) -> Result<(), BoxError>
            + Send
            + Sync
            + 'static,
    ) -> Result<()> {
        sink.validate(false)?;
        self.foreach_batch(move |c| sink.write_with(c, &f).map(drop))
    }
}

/// The batch's transaction as [`write_rows_in`] uses it: the single-row statement and
/// the multi-row one last prepared (by row count).
struct PgRows<'a, 'b> {
    tx: &'a mut Transaction<'b>,
    single: ::postgres::Statement,
    multi: Option<(usize, ::postgres::Statement)>,
}

fn params(values: &[SqlValue]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl RowWriter for PgRows<'_, '_> {
    fn multi(&mut self, m: &MultiRow, rows: &[Vec<SqlValue>]) -> Result<(), BoxError> {
        let stmt = match &self.multi {
            Some((n, s)) if *n == rows.len() => s.clone(),
            _ => {
                let s = self.tx.prepare(&m.statement(rows.len()))?;
                self.multi = Some((rows.len(), s.clone()));
                s
            }
        };
        let flat: Vec<SqlValue> = rows.concat();
        self.tx.execute(&stmt, &params(&flat))?;
        Ok(())
    }

    fn single(&mut self, row: &[SqlValue]) -> Result<(), BoxError> {
        self.tx
            .execute(&self.single, &params(row))
            .map(drop)
            .map_err(|e| error_chain(&e).into())
    }

    fn savepoint(&mut self) -> Result<(), BoxError> {
        Ok(self.tx.batch_execute(&format!("SAVEPOINT {SAVEPOINT}"))?)
    }

    fn release(&mut self) -> Result<(), BoxError> {
        Ok(self
            .tx
            .batch_execute(&format!("RELEASE SAVEPOINT {SAVEPOINT}"))?)
    }

    fn rollback_to(&mut self) -> Result<(), BoxError> {
        Ok(self
            .tx
            .batch_execute(&format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}"))?)
    }
}

/// Integers go to any integer or float column whose range holds them.
fn int_to_sql(v: i128, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    let range = |_| -> BoxError { format!("{v} is out of range for a column of type {ty}").into() };
    match *ty {
        Type::INT2 => i16::try_from(v).map_err(range)?.to_sql_checked(ty, out),
        Type::INT4 => i32::try_from(v).map_err(range)?.to_sql_checked(ty, out),
        Type::OID => u32::try_from(v).map_err(range)?.to_sql_checked(ty, out),
        Type::FLOAT4 => (v as f32).to_sql_checked(ty, out),
        Type::FLOAT8 => (v as f64).to_sql_checked(ty, out),
        // INT8, and any other type: i64's own check names the mismatch.
        _ => i64::try_from(v).map_err(range)?.to_sql_checked(ty, out),
    }
}

impl ToSql for SqlValue {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::Bool(b) => b.to_sql_checked(ty, out),
            SqlValue::Int(i) => int_to_sql(i128::from(*i), ty, out),
            SqlValue::UInt(u) => int_to_sql(i128::from(*u), ty, out),
            SqlValue::Float(f) if *ty == Type::FLOAT4 => (*f as f32).to_sql_checked(ty, out),
            SqlValue::Float(f) => f.to_sql_checked(ty, out),
            SqlValue::Text(s) if *ty == Type::JSON => {
                out.put_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            SqlValue::Text(s) if *ty == Type::JSONB => {
                out.put_u8(1); // jsonb binary format version
                out.put_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            SqlValue::Text(s) => s.to_sql_checked(ty, out),
            SqlValue::Bytes(b) => b.to_sql_checked(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Each variant checks the column type itself (in to_sql).
        true
    }

    to_sql_checked!();
}
