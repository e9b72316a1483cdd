//! Following the app's schema: when the app (or its upgrade) changed a
//! tracked table, `export`, `import` and `track` notice it and bring the
//! catalog and the capture triggers up to date in their own write
//! transaction, before anything else (spec/schema.md, "Tracking follows
//! the schema").
//!
//! - A column added (`ALTER TABLE … ADD COLUMN`, or a rebuild with the same
//!   key) is tracked from then on; the values it already holds that differ
//!   from its declared default are recorded as updates of that cell, so a
//!   write between the `ALTER` and this moment is not lost.
//! - A column that is gone stops being tracked: its bit is taken out of the
//!   catalog and the change log, the other cells renumbered.
//! - A table whose capture triggers are missing (an app migration rebuilt
//!   it: create a new table, copy, drop the old, rename) gets them back;
//!   the rows it gained meanwhile are recorded as inserts and the rows it
//!   lost as deletes.
//! - A changed key (or local key) is refused, saying what to do.
//!
//! The check is skipped when SQLite's schema cookie has not moved since the
//! last time (`fieldsync_meta.followed_schema`), so it costs nothing
//! between schema changes.

use rusqlite::{Connection, params_from_iter};

use crate::base::colset::{ColSet, SENTINEL};
use crate::base::value::{Value, encode_key};
use crate::catalog::layout::{Identity, layout_of};
use crate::catalog::schema::quote_ident;
use crate::catalog::session::Session;
use crate::catalog::site::{meta_get, meta_set};
use crate::catalog::tracked::{Catalog, TrackedTable};
use crate::error::{Error, SiteError};
use crate::local::capture::{
    ensure_pending_columns, expected_triggers, install_triggers, op, record_new_column_values,
};
use crate::local::stamp::{
    StampReport, Suspects, record_vanished_rows, remap_by_content, schema_cookie, stamp_pending,
};

/// The `fieldsync_meta` key holding the schema cookie the tracked tables
/// were last compared at.
const FOLLOWED_KEY: &str = "followed_schema";

/// What following the schema did.
#[derive(Debug, Default)]
pub(crate) struct Followed {
    /// One line per thing followed, for the operator.
    pub notices: Vec<String>,
    /// Captured changes it had to stamp on the way (before renumbering a
    /// table's cells, and before looking for rows a rebuilt table lost):
    /// the caller's report counts them with its own stamping.
    pub stamped: StampReport,
    /// True if the catalog or a table's triggers changed.
    pub changed: bool,
}

/// Bring the catalog and triggers up to date with the app's schema. What
/// it records (new columns' values, rows a rebuilt table gained) is left
/// captured for the caller's stamping, which comes next.
pub(crate) fn follow_schema(conn: &Connection, s: &mut Session) -> Result<Followed, Error> {
    follow_schema_after(conn, s, &[])
}

/// [`follow_schema`] after fieldsync itself added columns (a schema change
/// received in a bundle): `fresh` names them, per table. They hold only
/// their default, so no row is read to find values written in them.
pub(crate) fn follow_schema_after(
    conn: &Connection,
    s: &mut Session,
    fresh: &[(String, Vec<String>)],
) -> Result<Followed, Error> {
    let mut out = Followed::default();
    let cookie = schema_cookie(conn)?;
    if meta_get::<i64>(conn, FOLLOWED_KEY)? == Some(cookie) {
        return Ok(out);
    }
    for table in s.catalog.tables().to_vec() {
        let fresh = (fresh.iter())
            .find(|(t, _)| t.eq_ignore_ascii_case(&table.name))
            .map_or(&[][..], |(_, columns)| columns.as_slice());
        follow_table(conn, s, &table, fresh, &mut out)?;
    }
    if out.changed {
        s.catalog = Catalog::load(conn)?;
        // The triggers just made moved the cookie: not a VACUUM.
        meta_set(conn, "schema_cookie", schema_cookie(conn)?)?;
    }
    meta_set(conn, FOLLOWED_KEY, schema_cookie(conn)?)?;
    Ok(out)
}

/// Note the schema as followed (after `track` or a setup changed it
/// knowingly), so the next command does not compare every table again.
pub(crate) fn mark_followed(conn: &Connection) -> Result<(), Error> {
    meta_set(conn, FOLLOWED_KEY, schema_cookie(conn)?)
}

fn follow_table(
    conn: &Connection,
    s: &mut Session,
    t: &TrackedTable,
    fresh: &[String],
    out: &mut Followed,
) -> Result<(), Error> {
    let shape = crate::catalog::tracked::live_shape(conn, t)?;
    let live = layout_of(&shape, t.identity, t.key.first().map(String::as_str))?;
    crate::catalog::tracked::same_key(conn, t, &live)?;
    let mut table = t.clone();
    let gone: Vec<String> = (t.cells.iter())
        .filter(|c| !live.cells.contains(c))
        .cloned()
        .collect();
    // A rebuild drops the triggers with the old table; a column renamed or
    // dropped by the app changes or loses the one on it.
    let triggers_ok = triggers_intact(conn, t)?;
    let cells_change = !gone.is_empty() || live.cells.iter().any(|c| !t.cells.contains(c));
    if t.identity == Identity::Content && gone.is_empty() && (cells_change || !triggers_ok) {
        // A rebuild may have renumbered the rows of a table without a key:
        // find them by their content as it was, before the columns change.
        out.stamped.absorb(stamp_pending(conn, s)?);
        out.stamped.renumbered += remap_by_content(conn, s, t)?;
    }
    if !gone.is_empty() {
        // What was captured under the old numbering goes into the log first.
        out.stamped.absorb(stamp_pending(conn, s)?);
        table = drop_cells(conn, t, &gone)?;
        for c in &gone {
            out.notices.push(format!(
                "table '{}': column '{c}' no longer exists; it is no longer replicated from here \
                 (other instances keep their values)",
                t.name
            ));
        }
    }
    let added: Vec<&String> = (live.cells.iter())
        .filter(|c| !table.cells.contains(c))
        .collect();
    let first_new = table.cells.len() + 1;
    if !added.is_empty() {
        let mut catalog = Catalog::load(conn)?;
        table = catalog.record(conn, &shape, &live)?;
        ensure_pending_columns(conn, &table)?;
    }
    if !added.is_empty() || !gone.is_empty() || !triggers_ok {
        install_triggers(conn, &table)?;
        out.changed = true;
    }
    if table.identity == Identity::Content && cells_change {
        // Rows of a table without a key are found again by a signature of
        // their content, which now has other columns.
        refresh_sigs(conn, &table)?;
    }
    if !added.is_empty() {
        let only_fresh = added
            .iter()
            .all(|c| fresh.iter().any(|f| f.eq_ignore_ascii_case(c)));
        let recorded = if only_fresh {
            0
        } else {
            record_new_column_values(conn, &table, first_new)?
        };
        // A column added from a bundle was reported where it was added.
        for c in added.iter().filter(|_| !only_fresh) {
            out.notices.push(format!(
                "table '{}': new column '{c}' is replicated from now on",
                t.name
            ));
        }
        if recorded > 0 {
            out.notices.push(format!(
                "table '{}': {} values in the new {}, recorded as changes",
                t.name,
                crate::error::count(recorded, "row already holds", "rows already hold"),
                if added.len() == 1 {
                    "column"
                } else {
                    "columns"
                }
            ));
        }
    }
    if !triggers_ok {
        // The rows it gained while nothing captured them are inserts; the
        // rows it lost, deletes.
        let found = record_untracked_rows(conn, &table)?;
        s.catalog = Catalog::load(conn)?;
        // The log must know every change captured before the rows it
        // misses are looked for.
        out.stamped.absorb(stamp_pending(conn, s)?);
        let deleted = record_vanished_rows(conn, s, Suspects::Table(&table))?;
        out.notices.push(format!(
            "table '{}' had lost its capture triggers (rebuilt by an app migration?): they are back; \
             {} added and {deleted} deleted meanwhile are recorded, and edits made meanwhile \
             to rows it already had go out with their next change",
            t.name,
            crate::error::count(found, "row", "rows")
        ));
    }
    Ok(())
}

/// Compute again the content signature of every mapped row of a table
/// without a key (its columns changed).
fn refresh_sigs(conn: &Connection, table: &TrackedTable) -> Result<(), Error> {
    let rows: Vec<(Vec<u8>, Value)> = conn
        .prepare("SELECT gid, local FROM fieldsync_ids WHERE tbl = ?1")?
        .query_map([table.id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (gid, local) in rows {
        crate::catalog::identity::refresh_sig(conn, table, &gid, &local)?;
    }
    Ok(())
}

/// True if the table carries every capture trigger it should, as
/// installed (or under the names an older fieldsync gave them, which
/// `track` renames).
fn triggers_intact(conn: &Connection, t: &TrackedTable) -> Result<bool, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ?1 COLLATE NOCASE \
         AND name LIKE 'fieldsync\\_%' ESCAPE '\\'",
    )?;
    let have: Vec<(String, String)> = stmt
        .query_map([&t.name], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let expected = expected_triggers(conn, t)?;
    Ok(expected.iter().all(|e| {
        have.iter().any(|(name, sql)| {
            (name.eq_ignore_ascii_case(&e.name) && sql.trim() == e.sql.trim())
                || (name.eq_ignore_ascii_case(&e.legacy_name) && sql.trim() == e.legacy_sql.trim())
        })
    }))
}

/// Stop tracking columns that no longer exist: the other cells keep their
/// order and are numbered again from 1, in the catalog and in the log (a
/// version left without a cell is dropped: it no longer wins anything
/// here). Captured changes are stamped before, so no mask is left in the
/// old numbering.
fn drop_cells(conn: &Connection, t: &TrackedTable, gone: &[String]) -> Result<TrackedTable, Error> {
    let kept: Vec<String> = (t.cells.iter())
        .filter(|c| !gone.contains(c))
        .cloned()
        .collect();
    // Old bit → new bit.
    let mut new_bit = vec![None; t.cells.len() + 1];
    new_bit[SENTINEL] = Some(SENTINEL);
    for (i, c) in t.cells.iter().enumerate() {
        new_bit[i + 1] = kept.iter().position(|k| k == c).map(|p| p + 1);
    }
    conn.execute(
        "DELETE FROM fieldsync_columns WHERE tbl = ?1 AND role = 'cell'",
        [t.id],
    )?;
    for (i, c) in kept.iter().enumerate() {
        conn.execute(
            "INSERT INTO fieldsync_columns(tbl, role, pos, name) VALUES (?1, 'cell', ?2, ?3)",
            rusqlite::params![t.id, (i + 1) as i64, c],
        )?;
    }
    let rows: Vec<(Vec<u8>, i64, i64, Vec<u8>)> = conn
        .prepare("SELECT pk, origin, seq, cols FROM fieldsync_log WHERE tbl = ?1")?
        .query_map([t.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut update = conn.prepare(
        "UPDATE fieldsync_log SET cols = ?5 WHERE tbl = ?1 AND pk = ?2 AND origin = ?3 AND seq = ?4",
    )?;
    let mut delete = conn.prepare(
        "DELETE FROM fieldsync_log WHERE tbl = ?1 AND pk = ?2 AND origin = ?3 AND seq = ?4",
    )?;
    for (pk, origin, seq, cols) in rows {
        let cols = ColSet::from_bytes(&cols).map_err(|detail| SiteError::Damaged { detail })?;
        let mut mapped = ColSet::new();
        for bit in cols.iter() {
            if let Some(Some(b)) = new_bit.get(bit) {
                mapped.insert(*b);
            }
        }
        if mapped.is_empty() {
            delete.execute(rusqlite::params![t.id, pk, origin, seq])?;
        } else if mapped != cols {
            update.execute(rusqlite::params![t.id, pk, origin, seq, mapped.to_bytes()])?;
        }
    }
    Ok(TrackedTable {
        cells: kept,
        ..t.clone()
    })
}

/// Record as inserts the rows of a table the log does not know as live
/// (written while its triggers were missing). Returns how many.
fn record_untracked_rows(conn: &Connection, table: &TrackedTable) -> Result<u64, Error> {
    let key = table.sql_key();
    let cols: String = (0..key.len()).map(|i| format!(", k{i}")).collect();
    let marks: String = (0..key.len()).map(|i| format!(", ?{}", i + 3)).collect();
    let mut record = conn.prepare(&format!(
        "INSERT INTO fieldsync_pending(t, op, at{cols}) VALUES (?1, ?2, julianday(){marks})"
    ))?;
    let keys = key
        .iter()
        .map(|k| quote_ident(k))
        .collect::<Vec<_>>()
        .join(", ");
    let name = quote_ident(&table.name);
    let mut n = 0u64;
    if table.identity.mapped() {
        // Rows keyed by a local number: those without an identity here.
        let mut stmt = conn.prepare(&format!(
            "SELECT {keys} FROM {name} WHERE {keys} IS NOT NULL AND {keys} NOT IN \
             (SELECT local FROM fieldsync_ids WHERE tbl = ?1)"
        ))?;
        let locals: Vec<Value> = stmt
            .query_map([table.id], |r| r.get_ref(0).map(Value::from_ref))?
            .collect::<rusqlite::Result<_>>()?;
        for local in locals {
            record.execute(rusqlite::params![table.id, op::INSERT, local])?;
            n += 1;
        }
        return Ok(n);
    }
    let mut live = conn.prepare_cached(
        "SELECT cl FROM fieldsync_log WHERE tbl = ?1 AND pk = ?2 AND seq > 0 ORDER BY cl DESC LIMIT 1",
    )?;
    let mut stmt = conn.prepare(&format!("SELECT {keys} FROM {name}"))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let values: Vec<Value> = (0..key.len())
            .map(|i| r.get_ref(i).map(Value::from_ref))
            .collect::<rusqlite::Result<_>>()?;
        if values.iter().any(|v| matches!(v, Value::Null)) {
            continue;
        }
        let pk = encode_key(&values);
        let cl: Option<i64> = live
            .query_row(rusqlite::params![table.id, pk], |r| r.get(0))
            .ok();
        if cl.is_some_and(|cl| cl % 2 == 1) {
            continue;
        }
        let mut params: Vec<&dyn rusqlite::ToSql> = vec![&table.id, &op::INSERT];
        params.extend(values.iter().map(|v| v as &dyn rusqlite::ToSql));
        record.execute(params_from_iter(params))?;
        n += 1;
    }
    Ok(n)
}
