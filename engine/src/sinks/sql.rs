//! What the PostgreSQL and MySQL sinks share: row values, the marker table's name and
//! settings, the batch id as a `BIGINT`.

use super::{check_sink_id, BoxError, SinkName};
use crate::{BatchTime, EngineError};

/// The marker table the SQL sinks create and use unless told otherwise.
pub const DEFAULT_MARKER_TABLE: &str = "sluice_batches";

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

/// The batch id as the SQL marker column stores it (`BIGINT`).
pub(crate) fn batch_id_i64(name: &SinkName, t: BatchTime) -> crate::Result<i64> {
    i64::try_from(t.0).map_err(|_| {
        EngineError::User(format!(
            "{name}, batch {}: the batch id does not fit a BIGINT",
            t.0
        ))
    })
}

/// How a SQL dialect writes placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placeholders {
    /// PostgreSQL: `$1`, `$2`, … (numbered; a number may repeat).
    Dollar,
    /// MySQL / MariaDB: `?` (positional).
    Question,
}

/// The rows one statement carries unless told otherwise.
pub const DEFAULT_ROWS_PER_STATEMENT: usize = 500;

/// A single-row `INSERT … VALUES (…) …` rewritten to carry several rows: the `VALUES`
/// tuple repeated with its placeholders renumbered, the rest (`ON CONFLICT …`, `ON
/// DUPLICATE KEY UPDATE …`) unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MultiRow {
    head: String,
    tuple: String,
    tail: String,
    /// The placeholders one row fills.
    pub(crate) params_per_row: usize,
    style: Placeholders,
}

/// The byte ranges of `sql` outside string literals, quoted identifiers and comments:
/// `(start, end, is_code)`.
fn code_spans(sql: &str) -> Vec<(usize, usize, bool)> {
    let b = sql.as_bytes();
    let mut spans = Vec::new();
    let (mut i, mut start) = (0, 0);
    while i < b.len() {
        // What opens a literal or comment here (its length) and what closes it.
        let (open, close) = match b[i] {
            b'\'' => (1, "'"),
            b'"' => (1, "\""),
            b'`' => (1, "`"),
            b'-' if b.get(i + 1) == Some(&b'-') => (2, "\n"),
            b'/' if b.get(i + 1) == Some(&b'*') => (2, "*/"),
            _ => {
                i += 1;
                continue;
            }
        };
        spans.push((start, i, true));
        let from = i + open;
        let end = sql[from..]
            .find(close)
            .map_or(b.len(), |k| from + k + close.len());
        spans.push((i, end, false));
        i = end;
        start = end;
    }
    spans.push((start, b.len(), true));
    spans
}

impl MultiRow {
    /// Finds the one `VALUES (…)` tuple of `sql`; `None` when the statement is not a
    /// single-row insert every placeholder of which is in that tuple (it then runs once
    /// per row).
    pub(crate) fn parse(sql: &str, style: Placeholders) -> Option<MultiRow> {
        let spans = code_spans(sql);
        let in_code = |at: usize| spans.iter().any(|&(a, e, c)| c && a <= at && at < e);
        let upper = sql.to_ascii_uppercase();
        let mut found = None;
        for (at, _) in upper.match_indices("VALUES") {
            let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            if !in_code(at)
                || word(upper[..at].chars().next_back())
                || word(upper[at + 6..].chars().next())
            {
                continue;
            }
            // The first one is the row's tuple; a later `VALUES(col)` (MySQL's
            // function in `ON DUPLICATE KEY UPDATE`) is left as it is.
            found = Some(at);
            break;
        }
        let at = found?;
        let open = at + 6 + sql[at + 6..].len() - sql[at + 6..].trim_start().len();
        if sql.as_bytes().get(open) != Some(&b'(') {
            return None;
        }
        let mut depth = 0usize;
        let mut close = None;
        for (i, ch) in sql.char_indices().skip_while(|(i, _)| *i < open) {
            if !in_code(i) {
                continue;
            }
            match ch {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let close = close?;
        let tuple = &sql[open..=close];
        // Every placeholder must be in the tuple, or renumbering would break the rest.
        let (inside, outside) = (
            placeholders(sql, &spans, open, close + 1, style),
            placeholders(sql, &spans, 0, open, style).len()
                + placeholders(sql, &spans, close + 1, sql.len(), style).len(),
        );
        if outside > 0 || inside.is_empty() {
            return None;
        }
        let params_per_row = match style {
            Placeholders::Question => inside.len(),
            Placeholders::Dollar => inside.iter().map(|p| p.2).max().unwrap_or(0),
        };
        Some(MultiRow {
            head: sql[..open].to_owned(),
            tuple: tuple.to_owned(),
            tail: sql[close + 1..].to_owned(),
            params_per_row,
            style,
        })
    }

    /// The statement for `rows` rows.
    pub(crate) fn statement(&self, rows: usize) -> String {
        let mut out = self.head.clone();
        let spans = code_spans(&self.tuple);
        let marks = placeholders(&self.tuple, &spans, 0, self.tuple.len(), self.style);
        for r in 0..rows {
            if r > 0 {
                out.push_str(", ");
            }
            let mut last = 0;
            for &(a, e, n) in &marks {
                out.push_str(&self.tuple[last..a]);
                match self.style {
                    Placeholders::Question => out.push('?'),
                    Placeholders::Dollar => {
                        out.push_str(&format!("${}", n + r * self.params_per_row))
                    }
                }
                last = e;
            }
            out.push_str(&self.tuple[last..]);
        }
        out.push_str(&self.tail);
        out
    }

    /// Rows per statement: at most `wanted`, and within the 65 535 parameters one
    /// statement may carry (both servers' limit).
    pub(crate) fn rows_per_statement(&self, wanted: usize) -> usize {
        wanted.clamp(1, (65_535 / self.params_per_row.max(1)).max(1))
    }
}

/// What a SQL sink's transaction offers [`write_rows_in`].
pub(crate) trait RowWriter {
    /// Runs the multi-row statement for `rows.len()` rows.
    fn multi(&mut self, m: &MultiRow, rows: &[Vec<SqlValue>]) -> Result<(), BoxError>;
    /// Runs the single-row statement for one row.
    fn single(&mut self, row: &[SqlValue]) -> Result<(), BoxError>;
    /// `SAVEPOINT`, `RELEASE SAVEPOINT` and `ROLLBACK TO SAVEPOINT` of one savepoint.
    fn savepoint(&mut self) -> Result<(), BoxError>;
    fn release(&mut self) -> Result<(), BoxError>;
    fn rollback_to(&mut self) -> Result<(), BoxError>;
}

/// The savepoint a multi-row statement runs under.
pub(crate) const SAVEPOINT: &str = "sluice_rows";

/// Writes `items` through `w`: `rows_per_statement` rows per statement when `multi` is
/// given, each statement under a savepoint; a statement that fails (PostgreSQL refuses
/// `ON CONFLICT DO UPDATE` touching one row twice in a statement; or a bad row) is rolled
/// back to its savepoint and its rows run one at a time, so the outcome is the same as
/// one statement per row and an error names the element.
pub(crate) fn write_rows_in<T>(
    w: &mut dyn RowWriter,
    multi: Option<&MultiRow>,
    rows_per_statement: usize,
    items: &[&T],
    row: &dyn Fn(&T) -> Vec<SqlValue>,
) -> Result<(), BoxError> {
    let one_by_one = |w: &mut dyn RowWriter, from: usize, rows: &[Vec<SqlValue>]| {
        for (i, values) in rows.iter().enumerate() {
            w.single(values)
                .map_err(|e| format!("element {} ({values:?}): {e}", from + i))?;
        }
        Ok::<(), BoxError>(())
    };
    let Some(m) = multi else {
        for (i, x) in items.iter().enumerate() {
            one_by_one(w, i, &[row(x)])?;
        }
        return Ok(());
    };
    let per = m.rows_per_statement(rows_per_statement);
    for (k, chunk) in items.chunks(per).enumerate() {
        let rows: Vec<Vec<SqlValue>> = chunk.iter().map(|x| row(x)).collect();
        if rows.iter().all(|r| r.len() == m.params_per_row) {
            w.savepoint()?;
            if w.multi(m, &rows).is_ok() {
                w.release()?;
                continue;
            }
            w.rollback_to()?;
        }
        one_by_one(w, k * per, &rows)?;
    }
    Ok(())
}

/// The placeholders of `sql[from..to]` outside literals: `(start, end, number)`, the
/// number counting from 1 (for `?`, their order).
fn placeholders(
    sql: &str,
    spans: &[(usize, usize, bool)],
    from: usize,
    to: usize,
    style: Placeholders,
) -> Vec<(usize, usize, usize)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    for &(a, e, code) in spans {
        if !code {
            continue;
        }
        let (a, e) = (a.max(from), e.min(to));
        let mut i = a;
        while i < e {
            match (style, b[i]) {
                (Placeholders::Question, b'?') => {
                    out.push((i, i + 1, out.len() + 1));
                    i += 1;
                }
                (Placeholders::Dollar, b'$')
                    if b.get(i + 1).is_some_and(u8::is_ascii_digit)
                        && !(i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
                {
                    let mut j = i + 1;
                    while j < e && b[j].is_ascii_digit() {
                        j += 1;
                    }
                    let n = sql[i + 1..j].parse().unwrap_or(usize::MAX);
                    out.push((i, j, n));
                    i = j;
                }
                _ => i += 1,
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_row_insert_becomes_a_multi_row_one() {
        let pg = MultiRow::parse(
            "INSERT INTO counts(word, n) VALUES ($1, $2) \
             ON CONFLICT (word) DO UPDATE SET n = counts.n + EXCLUDED.n",
            Placeholders::Dollar,
        )
        .unwrap();
        assert_eq!(pg.params_per_row, 2);
        assert_eq!(
            pg.statement(3),
            "INSERT INTO counts(word, n) VALUES ($1, $2), ($3, $4), ($5, $6) \
             ON CONFLICT (word) DO UPDATE SET n = counts.n + EXCLUDED.n"
        );
        // A repeated number and an expression stay as they are, per row.
        let rep = MultiRow::parse(
            "insert into t values ($1, lower($2), $1::text || 'a$1?')",
            Placeholders::Dollar,
        )
        .unwrap();
        assert_eq!(
            rep.statement(2),
            "insert into t values ($1, lower($2), $1::text || 'a$1?'), \
             ($3, lower($4), $3::text || 'a$1?')"
        );
        let my = MultiRow::parse(
            "INSERT INTO counts(word, n) VALUES (?, ?) ON DUPLICATE KEY UPDATE n = n + VALUES(n)",
            Placeholders::Question,
        );
        // A later VALUES(n) is MySQL's function: left alone.
        assert_eq!(
            my.unwrap().statement(2),
            "INSERT INTO counts(word, n) VALUES (?, ?), (?, ?) ON DUPLICATE KEY UPDATE n = n + VALUES(n)"
        );
        let my = MultiRow::parse(
            "INSERT INTO counts(word, n) VALUES (?, ?) AS new ON DUPLICATE KEY UPDATE n = counts.n + new.n",
            Placeholders::Question,
        )
        .unwrap();
        assert_eq!(
            my.statement(2),
            "INSERT INTO counts(word, n) VALUES (?, ?), (?, ?) AS new ON DUPLICATE KEY UPDATE n = counts.n + new.n"
        );
    }

    #[test]
    fn statements_that_are_not_single_row_inserts_run_per_row() {
        for sql in [
            "UPDATE t SET n = n + $2 WHERE k = $1",
            "INSERT INTO t SELECT $1, $2",
            "INSERT INTO t VALUES ($1) ON CONFLICT (k) DO UPDATE SET n = $2",
            "INSERT INTO t VALUES (1, 2)",
            "INSERT INTO t VALUES ($1",
        ] {
            assert_eq!(MultiRow::parse(sql, Placeholders::Dollar), None, "{sql}");
        }
        // `/*/` opens a comment; it does not close it.
        let m = MultiRow::parse(
            "INSERT INTO t(a) /*/ VALUES */ VALUES ($1)",
            Placeholders::Dollar,
        )
        .unwrap();
        assert_eq!(
            m.statement(2),
            "INSERT INTO t(a) /*/ VALUES */ VALUES ($1), ($2)"
        );
        // A VALUES inside a literal or a comment is not the keyword.
        let m = MultiRow::parse(
            "INSERT INTO t(a) /* VALUES */ VALUES ($1) -- VALUES\n",
            Placeholders::Dollar,
        )
        .unwrap();
        assert_eq!(
            m.statement(2),
            "INSERT INTO t(a) /* VALUES */ VALUES ($1), ($2) -- VALUES\n"
        );
    }

    #[test]
    fn rows_per_statement_stays_within_the_parameter_limit() {
        let m = MultiRow::parse("INSERT INTO t VALUES ($1, $2, $3)", Placeholders::Dollar).unwrap();
        assert_eq!(m.rows_per_statement(500), 500);
        assert_eq!(m.rows_per_statement(100_000), 21_845);
        assert_eq!(m.rows_per_statement(0), 1);
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
