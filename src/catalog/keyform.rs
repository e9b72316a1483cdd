//! Keys as this database stores them.
//!
//! SQLite converts a value written to a column with a type affinity: the
//! integer 5 written to a `TEXT` column is stored as the text `'5'`, the text
//! `'7'` written to an `INTEGER` column as the integer 7. A bundle carries a
//! key as the sender stored it, which differs when two instances declare a
//! key column differently (or a bundle was damaged). The change log finds a
//! row by the canonical encoding of its key ([`crate::base::value::encode_key`]),
//! and the capture triggers record the key the table holds, so an imported
//! key the local column would convert is converted first, by SQLite itself,
//! before it is encoded. Otherwise the log would hold the row under a key
//! the table does not have, and the next local edit of the row would start
//! a second, unrelated row state.

use rusqlite::Connection;

use crate::base::value::Value;
use crate::catalog::schema::{Affinity, quote_ident, table_shape};
use crate::catalog::tracked::TrackedTable;
use crate::error::Error;

/// The affinity of each key column of a tracked table, in key order.
pub fn key_affinities(conn: &Connection, table: &TrackedTable) -> Result<Vec<Affinity>, Error> {
    let shape = table_shape(conn, &table.name)?;
    Ok(table
        .key
        .iter()
        .map(|k| {
            shape
                .columns
                .iter()
                .find(|c| &c.name == k)
                .map_or(Affinity::Blob, |c| Affinity::of(&c.decl_type))
        })
        .collect())
}

/// True if storing `v` in a column of affinity `a` may change its storage
/// class in a way the key encoding sees. (An integral real in a numeric
/// column becomes an integer, and an integer in a REAL column a real, but
/// the encoding already writes both as the integer.)
fn may_convert(v: &Value, a: Affinity) -> bool {
    matches!(
        (v, a),
        (Value::Integer(_) | Value::Real(_), Affinity::Text)
            | (
                Value::Text(_),
                Affinity::Integer | Affinity::Numeric | Affinity::Real
            )
    )
}

/// The key as the local table would store it.
pub fn stored_key(
    conn: &Connection,
    affinities: &[Affinity],
    key: &[Value],
) -> Result<Vec<Value>, Error> {
    if !key.iter().zip(affinities).any(|(v, &a)| may_convert(v, a)) {
        return Ok(key.to_vec());
    }
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS fieldsync_affinity(
           t TEXT, n NUMERIC, i INTEGER, r REAL)",
    )?;
    let mut out = Vec::with_capacity(key.len());
    for (v, &a) in key.iter().zip(affinities) {
        if !may_convert(v, a) {
            out.push(v.clone());
            continue;
        }
        let col = quote_ident(match a {
            Affinity::Text => "t",
            Affinity::Integer => "i",
            Affinity::Real => "r",
            _ => "n",
        });
        conn.prepare_cached(&format!(
            "INSERT INTO temp.fieldsync_affinity({col}) VALUES (?1)"
        ))?
        .execute([v])?;
        let stored = conn
            .prepare_cached(&format!("SELECT {col} FROM temp.fieldsync_affinity"))?
            .query_row([], |r| r.get_ref(0).map(Value::from_ref))?;
        conn.prepare_cached("DELETE FROM temp.fieldsync_affinity")?
            .execute([])?;
        out.push(stored);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_convert_as_sqlite_stores_them() -> Result<(), Error> {
        let conn = Connection::open_in_memory()?;
        let cases = [
            (Value::Integer(5), Affinity::Text, Value::text("5")),
            (Value::Real(2.5), Affinity::Text, Value::text("2.5")),
            (Value::text("7"), Affinity::Integer, Value::Integer(7)),
            (Value::text(" 7 "), Affinity::Integer, Value::Integer(7)),
            (Value::text("7x"), Affinity::Integer, Value::text("7x")),
            (Value::text("2.5"), Affinity::Numeric, Value::Real(2.5)),
            (Value::text("3.0"), Affinity::Numeric, Value::Integer(3)),
            (Value::text("abc"), Affinity::Real, Value::text("abc")),
            (Value::Integer(5), Affinity::Blob, Value::Integer(5)),
            (Value::Blob(vec![1]), Affinity::Text, Value::Blob(vec![1])),
        ];
        for (v, a, want) in cases {
            assert_eq!(
                stored_key(&conn, &[a], std::slice::from_ref(&v))?,
                [want],
                "{v:?} {a:?}"
            );
        }
        Ok(())
    }
}
