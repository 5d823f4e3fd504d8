//! What the PostgreSQL and MySQL sinks share: row values, the marker table's name and
//! settings, the batch id as a `BIGINT`.

use super::{check_sink_id, SinkName};
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

#[cfg(test)]
mod tests {
    use super::*;

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
