//! A row's history (spec/console.md, "Data"): found by its key as an
//! operator types it, the versions the change log keeps for it (each
//! change that still wins a cell: its origin, number and time), which of
//! them holds each cell now with the cell's value here, and the values of
//! the row that lost to a concurrent edit (`fieldsync_conflicts`). Read
//! only; the typed key is a value bound as a parameter, never SQL.

use std::collections::BTreeSet;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::base::colset::{ColSet, SENTINEL};
use crate::base::hlc::Hlc;
use crate::base::value::{Value, decode_key, encode_key};
use crate::catalog::identity::{gid_of, shown_key};
use crate::catalog::keyform::{key_affinities, stored_key};
use crate::catalog::schema::quote_ident;
use crate::catalog::session::Session;
use crate::catalog::tracked::TrackedTable;
use crate::error::{Error, TrackError};

/// Rows a search shows at most (a typed value may name several).
const MAX_FOUND: usize = 20;

/// One version of a row the change log keeps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowVersion {
    /// The instance that made the change.
    pub origin: String,
    /// Its site id.
    pub origin_site_id: String,
    /// The change's number at that instance.
    pub seq: u64,
    /// When it was made (unix ms, from its clock).
    pub at_ms: i64,
    /// True if it deleted the row.
    pub deleted: bool,
    /// The cells it still holds (`(row)` for the row's existence).
    pub holds: Vec<String>,
}

/// One cell of a row: its value here and the change that holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellHistory {
    /// The column (`(row)` for the row's existence).
    pub column: String,
    /// Its value in this database, if the row is here.
    pub value: Option<Value>,
    /// The instance whose change holds it.
    pub origin: String,
    /// That change's number.
    pub seq: u64,
    /// When that change was made (unix ms).
    pub at_ms: i64,
}

/// A value of the row that lost to a concurrent edit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LostValue {
    /// The column, empty for the row itself.
    pub column: String,
    /// The value that lost.
    pub value: Value,
    /// Who wrote it.
    pub site: String,
    /// When (unix ms).
    pub at_ms: i64,
    /// Who wrote the value that won.
    pub won_site: String,
    /// Why it lost: later edit, row deleted, row re-created.
    pub reason: String,
}

/// The history of one row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowHistory {
    /// The table.
    pub table: String,
    /// The row's key as shown everywhere else (SQL literals).
    pub key: String,
    /// True if the row exists (its newest version is not a delete).
    pub live: bool,
    /// Each cell, with the change that holds it.
    pub cells: Vec<CellHistory>,
    /// The versions the change log keeps, newest first.
    pub versions: Vec<RowVersion>,
    /// Values of the row that lost to a concurrent edit, newest first.
    pub lost: Vec<LostValue>,
}

/// The rows of `table` whose key (or local number) is `typed`: one value,
/// or several separated by commas for a key of several columns; text may
/// be quoted as in SQL (`'p-1'`). An empty list if none is known here.
pub fn row_history(
    conn: &Connection,
    s: &Session,
    table: &str,
    typed: &str,
) -> Result<Vec<RowHistory>, Error> {
    let Some(t) = s.catalog.by_name(table) else {
        return Err(TrackError::NotTracked {
            table: table.to_owned(),
        }
        .into());
    };
    let mut pks: Vec<Vec<u8>> = Vec::new();
    let parts = parse_typed(typed);
    if !t.identity.mapped() && parts.len() == t.key.len() {
        let affinities = key_affinities(conn, t)?;
        for key in combinations(&parts) {
            pks.push(encode_key(&stored_key(conn, &affinities, &key)?));
        }
    }
    // Its local number, for tables whose rows each instance numbers itself.
    if let (Some(local), [choices]) = (&t.local, parts.as_slice()) {
        for v in choices {
            if t.identity.mapped() {
                pks.extend(gid_of(conn, t.id, v)?);
            } else if let Some(key) = key_of_local(conn, t, local, v)? {
                pks.push(encode_key(&key));
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for pk in pks {
        if out.len() >= MAX_FOUND || !seen.insert(pk.clone()) {
            continue;
        }
        if let Some(h) = history_of(conn, s, t, &pk)? {
            out.push(h);
        }
    }
    Ok(out)
}

/// The values typed for each key column: each part read as SQL would
/// (quoted text, a number) and, unquoted, as text too.
fn parse_typed(typed: &str) -> Vec<Vec<Value>> {
    let typed = typed.trim();
    if typed.is_empty() {
        return Vec::new();
    }
    split_parts(typed)
        .into_iter()
        .map(|part| {
            let p = part.trim();
            if p.len() >= 2 && p.starts_with('\'') && p.ends_with('\'') {
                return vec![Value::text(p[1..p.len() - 1].replace("''", "'"))];
            }
            let mut choices = Vec::new();
            if let Ok(i) = p.parse::<i64>() {
                choices.push(Value::Integer(i));
            } else if let Ok(r) = p.parse::<f64>() {
                choices.push(Value::Real(r));
            }
            choices.push(Value::text(p));
            choices
        })
        .collect()
}

/// `typed` cut at the commas outside quotes.
fn split_parts(typed: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in typed.chars() {
        if c == ',' && !quoted {
            parts.push(String::new());
            continue;
        }
        if c == '\'' {
            quoted = !quoted;
        }
        if let Some(p) = parts.last_mut() {
            p.push(c);
        }
    }
    parts
}

/// Every key the choices make (a few: at most two readings per part).
fn combinations(parts: &[Vec<Value>]) -> Vec<Vec<Value>> {
    let mut out: Vec<Vec<Value>> = vec![Vec::new()];
    for choices in parts {
        let mut next = Vec::new();
        for prefix in &out {
            for v in choices {
                let mut k = prefix.clone();
                k.push(v.clone());
                next.push(k);
            }
        }
        out = next;
        if out.len() > 64 {
            out.truncate(64);
        }
    }
    out
}

/// The key of the row a table of identity `column` numbers `v` here.
fn key_of_local(
    conn: &Connection,
    t: &TrackedTable,
    local: &str,
    v: &Value,
) -> Result<Option<Vec<Value>>, Error> {
    if t.key.is_empty() {
        return Ok(None);
    }
    let cols = t
        .key
        .iter()
        .map(|k| quote_ident(k))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {cols} FROM {} WHERE {} = ?1",
        quote_ident(&t.name),
        quote_ident(local)
    );
    let n = t.key.len();
    Ok(conn
        .prepare(&sql)?
        .query_row([v], |r| {
            (0..n)
                .map(|i| r.get_ref(i).map(Value::from_ref))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .optional()?)
}

/// The history of the row `pk` of `t`, if the change log knows it.
fn history_of(
    conn: &Connection,
    s: &Session,
    t: &TrackedTable,
    pk: &[u8],
) -> Result<Option<RowHistory>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT origin, seq, cl, hlc, cols FROM fieldsync_log WHERE tbl = ?1 AND pk = ?2 \
         ORDER BY hlc DESC, origin, seq DESC",
    )?;
    let rows = stmt
        .query_map(params![t.id, pk], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Vec<u8>>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if rows.is_empty() {
        return Ok(None);
    }
    let column_name = |bit: usize| -> String {
        if bit == SENTINEL {
            "(row)".to_owned()
        } else {
            t.cells
                .get(bit - 1)
                .cloned()
                .unwrap_or_else(|| format!("(column {bit})"))
        }
    };
    let key_values = decode_key(pk).map_err(|e| crate::error::SiteError::Damaged {
        detail: format!("a key in fieldsync_log does not decode: {e}"),
    })?;
    let key = shown_key(conn, t, &key_values)?;
    let mut versions = Vec::new();
    let mut holders: Vec<(usize, usize)> = Vec::new(); // (bit, version index)
    let mut newest_cl = 0i64;
    for (i, (origin, seq, cl, hlc, cols)) in rows.iter().enumerate() {
        let cols = ColSet::from_bytes(cols).map_err(|detail| crate::error::SiteError::Damaged {
            detail: format!("fieldsync_log.cols: {detail}"),
        })?;
        newest_cl = newest_cl.max(*cl);
        let bits: Vec<usize> = cols.iter().collect();
        holders.extend(bits.iter().map(|&b| (b, i)));
        let site = s.sites.get(*origin);
        versions.push(RowVersion {
            origin: s.sites.label(*origin),
            origin_site_id: site.map(|x| x.id.to_string()).unwrap_or_default(),
            seq: (*seq).max(0) as u64,
            at_ms: Hlc::from_sql(*hlc).unix_ms(),
            deleted: cl % 2 == 0,
            holds: bits.into_iter().map(column_name).collect(),
        });
    }
    let live = newest_cl % 2 == 1;
    let here = if live {
        current_values(conn, t, pk, &key_values)?
    } else {
        None
    };
    holders.sort();
    let cells = holders
        .into_iter()
        .map(|(bit, i)| CellHistory {
            column: column_name(bit),
            value: match (&here, bit) {
                (Some(_), SENTINEL) => None,
                (Some(vals), b) => vals.get(b - 1).cloned(),
                (None, _) => None,
            },
            origin: versions[i].origin.clone(),
            seq: versions[i].seq,
            at_ms: versions[i].at_ms,
        })
        .collect();
    let mut stmt = conn.prepare_cached(
        "SELECT col, lost_value, lost_site, lost_at, won_site, reason FROM fieldsync_conflicts \
         WHERE tbl = ?1 COLLATE NOCASE AND key = ?2 ORDER BY id DESC LIMIT 100",
    )?;
    let lost = stmt
        .query_map(params![t.name, key], |r| {
            Ok(LostValue {
                column: r.get(0)?,
                value: r.get(1)?,
                site: r.get(2)?,
                at_ms: r.get(3)?,
                won_site: r.get(4)?,
                reason: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(RowHistory {
        table: t.name.clone(),
        key,
        live,
        cells,
        versions,
        lost,
    }))
}

/// The row's cells as this database holds them, if it is here.
fn current_values(
    conn: &Connection,
    t: &TrackedTable,
    pk: &[u8],
    key: &[Value],
) -> Result<Option<Vec<Value>>, Error> {
    let Some(sql_key) = crate::catalog::identity::locate(conn, t, pk, key)? else {
        return Ok(None);
    };
    let n = t.cells.len().max(1);
    Ok(conn
        .prepare(&t.select_cells_sql())?
        .query_row(rusqlite::params_from_iter(sql_key.iter()), |r| {
            (0..n)
                .map(|i| r.get_ref(i).map(Value::from_ref))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_keys_are_read_as_sql_would_and_as_text() {
        assert_eq!(
            parse_typed("'a,b', 7"),
            vec![
                vec![Value::text("a,b")],
                vec![Value::Integer(7), Value::text("7")]
            ]
        );
        assert_eq!(parse_typed("  "), Vec::<Vec<Value>>::new());
        assert_eq!(parse_typed("'it''s'"), vec![vec![Value::text("it's")]]);
    }
}
