//! The JSON vocabulary of the reports (spec/json.md): its version, the one
//! envelope every `--json` report is printed in, and the serde helpers the
//! report types use for the forms that are not serde's own: times as RFC
//! 3339 strings, SQLite values and row keys as JSON values. The report
//! types themselves live beside what they report on; this file owns only
//! the shared forms, so a time or a key is written the same way everywhere.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Serialize, Serializer};

use crate::base::value::{Value, parse_key_literal};

/// The version of the vocabulary (spec/json.md, "Versions"): adding a field
/// keeps it; renaming or removing a field, or changing its type, bumps it.
pub const VERSION: u32 = 1;

/// A report as `--json` prints it: `{"version": 1, ...the report's fields}`.
#[derive(Debug, Serialize)]
pub struct Versioned<'a, T: ?Sized> {
    /// Always [`VERSION`].
    pub version: u32,
    /// The report, its fields beside `version`.
    #[serde(flatten)]
    pub report: &'a T,
}

impl<'a, T: ?Sized> Versioned<'a, T> {
    /// `report` in the envelope of the current version.
    pub fn new(report: &'a T) -> Self {
        Versioned {
            version: VERSION,
            report,
        }
    }
}

/// Unix ms as an RFC 3339 UTC time with milliseconds
/// (`2026-11-30T02:55:01.123Z`). A time out of chrono's range (only a
/// corrupt value) is written as the Unix epoch shifted by what fits: the
/// earliest or latest representable time.
pub fn rfc3339(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or(if ms < 0 {
        chrono::DateTime::<chrono::Utc>::MIN_UTC
    } else {
        chrono::DateTime::<chrono::Utc>::MAX_UTC
    });
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `#[serde(serialize_with = "crate::json::time")]` on unix ms (`i64`).
pub fn time<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ms))
}

/// `#[serde(serialize_with = "crate::json::time_u64")]` on unix ms (`u64`).
pub fn time_u64<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(i64::try_from(*ms).unwrap_or(i64::MAX)))
}

/// `#[serde(serialize_with = "crate::json::opt_time")]` on optional unix ms:
/// the time, or `null`.
pub fn opt_time<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

/// One SQLite value as JSON: `null`, an integer, a number (a real that is
/// not finite, which SQLite can hold, as the string `"Infinity"`,
/// `"-Infinity"` or `"NaN"`), a string (text that is not UTF-8 with its
/// bad bytes replaced), or a blob as `{"base64": "..."}`.
pub fn value_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Integer(i) => J::from(*i),
        Value::Real(r) => match serde_json::Number::from_f64(*r) {
            Some(n) => J::Number(n),
            None if r.is_nan() => J::from("NaN"),
            None if *r > 0.0 => J::from("Infinity"),
            None => J::from("-Infinity"),
        },
        Value::Text(t) => J::from(String::from_utf8_lossy(t).into_owned()),
        Value::Blob(b) => {
            let mut o = serde_json::Map::new();
            o.insert("base64".to_owned(), J::from(BASE64.encode(b)));
            J::Object(o)
        }
    }
}

/// `#[serde(serialize_with = "crate::json::value")]` on a [`Value`].
pub fn value<S: Serializer>(v: &Value, s: S) -> Result<S::Ok, S::Error> {
    value_json(v).serialize(s)
}

/// `#[serde(serialize_with = "crate::json::opt_value")]` on an optional
/// [`Value`]: the value, or `null`.
pub fn opt_value<S: Serializer>(v: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => value_json(v).serialize(s),
        None => s.serialize_none(),
    }
}

/// A row's key as JSON: always an object. For a table with key columns,
/// each column's value by its name (`{"uuid": "p-1"}`, `{"a": 1, "b":
/// "x"}`). For a row without key columns (a table whose rows are
/// identified by their origin or their content), or a key recorded in a
/// form that does not match the table's key columns, the one member
/// `"row"`: the row's identity in words, as the text output shows it.
///
/// `shown` is the key as the engine records it for operators (SQL literals
/// separated by commas, or the words), `columns` the table's key columns.
pub fn key_json(columns: &[String], shown: &str) -> serde_json::Value {
    let parsed = if columns.is_empty() {
        None
    } else {
        parse_key_literal(shown).filter(|values| values.len() == columns.len())
    };
    let object: serde_json::Map<String, serde_json::Value> = match parsed {
        Some(values) => columns
            .iter()
            .zip(&values)
            .map(|(c, v)| (c.clone(), value_json(v)))
            .collect(),
        None => std::iter::once(("row".to_owned(), serde_json::Value::from(shown))).collect(),
    };
    serde_json::Value::Object(object)
}

/// The key columns of every tracked table, by table name in lower case:
/// what [`key_json`] needs, read once per report (`Catalog::key_columns`).
pub(crate) type KeyColumns = BTreeMap<String, Vec<String>>;

/// The key of a row of `table` as JSON, by the key columns in `columns`
/// (a table no longer tracked: the words).
pub(crate) fn row_key(columns: &KeyColumns, table: &str, shown: &str) -> serde_json::Value {
    let none = Vec::new();
    let cols = columns.get(&table.to_lowercase()).unwrap_or(&none);
    key_json(cols, shown)
}

/// `#[serde(serialize_with = "crate::json::table_reasons")]` on pairs of a
/// table and a reason: `[{"table": ..., "reason": ...}]`.
pub fn table_reasons<S: Serializer>(pairs: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct TableReason<'a> {
        table: &'a str,
        reason: &'a str,
    }
    s.collect_seq(
        pairs
            .iter()
            .map(|(table, reason)| TableReason { table, reason }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_006_101_123), "2026-11-30T02:35:01.123Z");
    }

    #[test]
    fn keys_are_objects_by_column() {
        let cols = vec!["uuid".to_owned()];
        assert_eq!(key_json(&cols, "'p-''1'").to_string(), r#"{"uuid":"p-'1"}"#);
        let cols = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        assert_eq!(
            key_json(&cols, "1, -2.5, X'0102'").to_string(),
            r#"{"a":1,"b":-2.5,"c":{"base64":"AQI="}}"#
        );
        assert_eq!(
            key_json(&[], "row with content 3f2a…, copy 0").to_string(),
            r#"{"row":"row with content 3f2a…, copy 0"}"#
        );
        // A recorded key that does not fit the columns keeps its words.
        assert_eq!(
            key_json(&["id".to_owned()], "1, 2").to_string(),
            r#"{"row":"1, 2"}"#
        );
    }
}
