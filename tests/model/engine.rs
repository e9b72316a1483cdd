//! The engine's side, read in the model's terms: an instance's app tables,
//! `fieldsync_ids`, quarantine and catalog; references as a bundle carries
//! them; and the SQL each app write runs.

use std::collections::{BTreeMap, BTreeSet};

use fieldsync::Value;
use fieldsync::fuzzing::decode_key;
use rusqlite::Connection;

use crate::model::history::{Set, Stmt};
use crate::model::reference::Tables;
use crate::model::rows::{Ids, RowId, row_from, show};
use crate::model::schema::TABLES;
use crate::util::Res;

/// The identity a reference to a `loc` row carries in a bundle
/// (src/refs.rs): NULL, or tag 2 and the parent's identity; the app never
/// points at a row that is not there, so never a value or dangling tag.
pub(super) fn untag(v: &Value) -> Res<Value> {
    match v {
        Value::Null => Ok(Value::Null),
        Value::Blob(b) if b.first() == Some(&fieldsync::fuzzing::TAG_IDENTITY) => {
            match decode_key(&b[1..])?.as_slice() {
                [Value::Blob(gid)] => Ok(Value::Blob(gid.clone())),
                other => Err(format!("a reference carries identity {other:?}").into()),
            }
        }
        other => Err(format!(
            "a reference to loc travels as {}, not as an identity",
            show(other)
        )
        .into()),
    }
}

pub(super) fn table_index(name: &str) -> Res<usize> {
    TABLES
        .iter()
        .position(|t| t.name == name)
        .ok_or_else(|| format!("unknown table {name}").into())
}

/// `fieldsync_tables.id` → table index.
pub(super) fn table_ids(conn: &Connection) -> Res<BTreeMap<i64, usize>> {
    let mut stmt = conn.prepare("SELECT id, name FROM fieldsync_tables")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(id, name)| Ok((id, table_index(&name)?)))
        .collect()
}

/// `fieldsync_ids` of an instance.
pub(super) fn read_ids(conn: &Connection, sites: &[[u8; 16]]) -> Res<Ids> {
    let mut stmt = conn.prepare(
        "SELECT t.name, i.gid, i.local FROM fieldsync_ids AS i \
         JOIN fieldsync_tables AS t ON t.id = i.tbl",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Ids::new();
    while let Some(r) = rows.next()? {
        let table = table_index(&r.get::<_, String>(0)?)?;
        let key = decode_key(&r.get::<_, Vec<u8>>(1)?)?;
        let row = row_from(sites, table, &key)?;
        let local: i64 = r.get(2)?;
        if out.insert((table, local), row).is_some() {
            return Err(format!(
                "fieldsync_ids maps two rows to {} {local}",
                TABLES[table].name
            )
            .into());
        }
    }
    Ok(out)
}

/// The rows with a change held in quarantine.
pub(super) fn read_held(conn: &Connection, sites: &[[u8; 16]]) -> Res<BTreeSet<RowId>> {
    let mut stmt = conn.prepare("SELECT tbl, pk FROM fieldsync_quarantine")?;
    let mut rows = stmt.query([])?;
    let mut out = BTreeSet::new();
    while let Some(r) = rows.next()? {
        let table = table_index(&r.get::<_, String>(0)?)?;
        let key = decode_key(&r.get::<_, Vec<u8>>(1)?)?;
        out.insert(row_from(sites, table, &key)?);
    }
    Ok(out)
}

/// The catalog gives the cells the bits the model uses.
pub(super) fn check_catalog(conn: &Connection) -> Res<()> {
    for (t, spec) in TABLES.iter().enumerate() {
        let mut stmt = conn.prepare(
            "SELECT c.pos, c.name FROM fieldsync_columns AS c \
             JOIN fieldsync_tables AS t ON t.id = c.tbl \
             WHERE t.name = ?1 AND c.role = 'cell' ORDER BY c.pos",
        )?;
        let cells = stmt
            .query_map([spec.name], |r| {
                Ok((r.get::<_, i64>(0)? as usize, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let expected: Vec<(usize, String)> = spec
            .cells
            .iter()
            .enumerate()
            .map(|(i, c)| (i + 1, c.to_string()))
            .collect();
        if cells != expected {
            return Err(format!("table {t} is tracked with cells {cells:?}").into());
        }
    }
    Ok(())
}

pub(super) fn read_tables(conn: &Connection) -> Res<Tables> {
    let mut out = Tables::new();
    for (t, spec) in TABLES.iter().enumerate() {
        let cols: Vec<&str> = spec.key.iter().chain(spec.cells).copied().collect();
        let mut stmt = conn.prepare(&format!("SELECT {} FROM {}", cols.join(", "), spec.name))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let values: Vec<Value> = (0..cols.len())
                .map(|i| r.get::<_, Value>(i))
                .collect::<rusqlite::Result<_>>()?;
            let (key, cells) = values.split_at(spec.key.len());
            out.insert(RowId::from_values(t, key)?, cells.to_vec());
        }
    }
    Ok(out)
}

fn predicate(table: usize, first: usize) -> String {
    TABLES[table]
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k} = ?{}", first + i))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// `c = ?n` (or `c = c`) for a SET list whose parameters start at `first`.
fn assignments(table: usize, set: &[Set], first: usize, params: &mut Vec<Value>) -> Vec<String> {
    let mut out = Vec::new();
    for s in set {
        let c = TABLES[table].cells[s.cell];
        match &s.value {
            Some(v) => {
                params.push(v.clone());
                out.push(format!("{c} = ?{}", first + params.len() - 1));
            }
            None => out.push(format!("{c} = {c}")),
        }
    }
    out
}

pub(super) fn stmt_sql(stmt: &Stmt<'_>) -> (String, Vec<Value>) {
    match stmt {
        Stmt::Insert {
            row,
            values,
            replace,
        } => {
            let spec = &TABLES[row.table];
            let mut params = row.values();
            params.extend(values.iter().cloned());
            let cols: Vec<&str> = spec.key.iter().chain(spec.cells).copied().collect();
            let marks: Vec<String> = (1..=params.len()).map(|i| format!("?{i}")).collect();
            let verb = if *replace { "REPLACE" } else { "IGNORE" };
            (
                format!(
                    "INSERT OR {verb} INTO {}({}) VALUES ({})",
                    spec.name,
                    cols.join(", "),
                    marks.join(", ")
                ),
                params,
            )
        }
        Stmt::Update { row, table, set } => {
            let mut params = Vec::new();
            let assign = assignments(*table, set, 1, &mut params);
            let mut sql = format!("UPDATE {} SET {}", TABLES[*table].name, assign.join(", "));
            if let Some(row) = row {
                sql.push_str(&format!(" WHERE {}", predicate(*table, params.len() + 1)));
                params.extend(row.values());
            }
            (sql, params)
        }
        Stmt::Delete { row } => (
            format!(
                "DELETE FROM {} WHERE {}",
                TABLES[row.table].name,
                predicate(row.table, 1)
            ),
            row.values(),
        ),
        Stmt::Rekey { from, to, set } => {
            let spec = &TABLES[to.table];
            let mut params = to.values();
            let mut assign: Vec<String> = spec
                .key
                .iter()
                .enumerate()
                .map(|(i, k)| format!("{k} = ?{}", i + 1))
                .collect();
            assign.extend(assignments(to.table, set, 1, &mut params));
            let sql = format!(
                "UPDATE OR REPLACE {} SET {} WHERE {}",
                spec.name,
                assign.join(", "),
                predicate(from.table, params.len() + 1)
            );
            params.extend(from.values());
            (sql, params)
        }
        Stmt::ReplaceRowid { row, from, values } => {
            let spec = &TABLES[row.table];
            let mut params = row.values();
            params.extend(values.iter().cloned());
            let cols: Vec<&str> = spec.key.iter().chain(spec.cells).copied().collect();
            let marks: Vec<String> = (1..=params.len()).map(|i| format!("?{i}")).collect();
            let sql = format!(
                "INSERT OR REPLACE INTO {0}(rowid, {1}) SELECT rowid, {2} FROM {0} WHERE {3}",
                spec.name,
                cols.join(", "),
                marks.join(", "),
                predicate(from.table, params.len() + 1)
            );
            params.extend(from.values());
            (sql, params)
        }
        Stmt::InsertAuto { table, values } => {
            let spec = &TABLES[*table];
            let marks: Vec<String> = (1..=values.len()).map(|i| format!("?{i}")).collect();
            (
                format!(
                    "INSERT INTO {}({}) VALUES ({})",
                    spec.name,
                    spec.cells.join(", "),
                    marks.join(", ")
                ),
                values.to_vec(),
            )
        }
    }
}
