//! Capture: the triggers that record every write the app makes to a tracked
//! table, from any client.
//!
//! The triggers use only SQL built into SQLite 3.31+ (no functions of ours),
//! so writes from the `sqlite3` shell, Python or PHP are captured without
//! loading fieldsync. Each row change appends one row to `fieldsync_pending`:
//! the table, the operation, the wall time (`julianday()`), the key, and
//! for an UPDATE the bit set of the columns whose value actually changed
//! (`OLD.c IS NOT NEW.c`), so an ORM that rewrites every column does not
//! clobber a concurrent edit of another field. The HLC and sequence number
//! are assigned later, off the app's write path, by [`crate::local::stamp`].
//! spec/capture.md records the design and what it costs.

use rusqlite::{Connection, Transaction};

use crate::catalog::layout::{AsSent, Identity, TrackOptions, glob_match, layout_of, plan};
use crate::catalog::schema::{Affinity, TableShape, app_tables, quote_ident, table_shape};
use crate::catalog::store::column_names;
use crate::catalog::tracked::{Catalog, TrackedTable};
use crate::error::{Error, TrackError};

/// Operation codes in `fieldsync_pending.op`.
pub mod op {
    /// A row was inserted (or replaced).
    pub const INSERT: i64 = 1;
    /// Some cells of a row changed.
    pub const UPDATE: i64 = 2;
    /// A row was deleted.
    pub const DELETE: i64 = 3;
}

/// What `track` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TrackReport {
    /// Tables tracked by this call.
    pub tracked: Vec<String>,
    /// Tables that were already tracked (their triggers were refreshed).
    pub already: Vec<String>,
    /// Columns that started being followed on already tracked tables.
    pub new_columns: Vec<String>,
    /// Tables `--all` left out, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Tables `--except` left out.
    pub excepted: Vec<String>,
    /// Newly tracked tables whose rows are not identified by their key.
    pub identities: Vec<TableIdentity>,
    /// Existing rows recorded so they export too.
    pub existing_rows: u64,
    /// Things worth telling the operator.
    pub warnings: Vec<String>,
}

/// How a newly tracked table's rows are identified.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableIdentity {
    /// The table.
    pub table: String,
    /// Its identity.
    pub identity: Identity,
    /// In words.
    pub by: String,
}

/// Which tables to track.
#[derive(Debug, Clone)]
pub enum Selection {
    /// These tables; any that cannot be tracked is an error.
    Named(Vec<String>),
    /// Every app table that can be tracked; others are skipped and reported.
    All,
}

/// Track tables: record them in the catalog, install triggers, and record
/// the rows they already hold, all or nothing.
pub fn track(
    tx: &Transaction<'_>,
    catalog: &mut Catalog,
    selection: &Selection,
    opts: &TrackOptions,
    as_sent: &AsSent,
) -> Result<TrackReport, Error> {
    let mut report = TrackReport::default();
    for name in selected(tx, selection, opts, &mut report)? {
        track_table(tx, catalog, &name, selection, opts, as_sent, &mut report)?;
    }
    warn_local_numbers_in_keys(tx, catalog, &mut report)?;
    if matches!(selection, Selection::All) && report.tracked.is_empty() && report.already.is_empty()
    {
        let detail = if report.skipped.is_empty() {
            "the database has no tables to track; create the app's tables first (or check --db names the app's database)".to_owned()
        } else {
            report
                .skipped
                .iter()
                .map(|(t, why)| format!("{t}: {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        return Err(TrackError::NothingTracked { detail }.into());
    }
    Ok(report)
}

/// The names of the tables a selection asks for; `--all` leaves out those
/// `--except` matches (and says so in the report).
fn selected(
    conn: &Connection,
    selection: &Selection,
    opts: &TrackOptions,
    report: &mut TrackReport,
) -> Result<Vec<String>, Error> {
    match selection {
        Selection::Named(names) if names.is_empty() => Err(TrackError::NothingNamed.into()),
        Selection::Named(names) => Ok(names.clone()),
        Selection::All => Ok(app_tables(conn)?
            .into_iter()
            .filter(|name| {
                let keep = !opts.except.iter().any(|p| glob_match(p, name));
                if !keep {
                    report.excepted.push(name.clone());
                }
                keep
            })
            .collect()),
    }
}

/// Track one table, or follow the new columns of a tracked one, and
/// refresh its triggers. A table `--all` cannot track is skipped and
/// reported.
fn track_table(
    conn: &Connection,
    catalog: &mut Catalog,
    name: &str,
    selection: &Selection,
    opts: &TrackOptions,
    as_sent: &AsSent,
    report: &mut TrackReport,
) -> Result<(), Error> {
    let shape = table_shape(conn, name)?;
    let before = catalog.by_name(&shape.name).cloned();
    let layout = match &before {
        Some(old) => {
            if matches!(selection, Selection::Named(_)) {
                refuse_identity_change(old, &shape, opts)?;
            }
            layout_of(&shape, old.identity, old.key.first().map(String::as_str))?
        }
        None => match plan(conn, &shape, opts, as_sent, &mut report.warnings) {
            Ok(layout) => layout,
            Err(e @ Error::Track(_)) if matches!(selection, Selection::All) => {
                report.skipped.push((shape.name.clone(), e.to_string()));
                return Ok(());
            }
            Err(e) => return Err(e),
        },
    };
    let table = catalog.record(conn, &shape, &layout)?;
    ensure_pending_columns(conn, &table)?;
    install_triggers(conn, &table)?;
    match before {
        Some(old) => {
            report.already.push(table.name.clone());
            for c in table.cells.iter().skip(old.cells.len()) {
                report.new_columns.push(format!("{}.{}", table.name, c));
            }
            report.existing_rows += record_new_column_values(conn, &table, old.cells.len() + 1)?;
        }
        None => {
            report.existing_rows += record_existing_rows(conn, &table)?;
            report.tracked.push(table.name.clone());
            if table.identity != Identity::Key {
                report.identities.push(TableIdentity {
                    table: table.name.clone(),
                    identity: table.identity,
                    by: describe(table.identity, table.key.first().or(table.local.as_ref())),
                });
            }
        }
    }
    let null_keys = rows_with_null_key(conn, &table)?;
    if null_keys > 0 {
        report.warnings.push(format!(
            "table '{}' has {null_keys} rows with NULL in a key column; such rows cannot be found on another \
             instance and are not replicated (declare the key columns NOT NULL and give those rows a key)",
            table.name
        ));
    }
    Ok(())
}

/// Refuse `--identity` naming a column of a table already tracked by its
/// local numbers: its rows already have identities everywhere.
fn refuse_identity_change(
    old: &TrackedTable,
    shape: &TableShape,
    opts: &TrackOptions,
) -> Result<(), Error> {
    let asked_identity = opts.identity.as_ref().is_some_and(|col| {
        old.identity != Identity::Column
            && old.local.is_some()
            && shape
                .columns
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(col))
    });
    if asked_identity {
        return Err(TrackError::IdentityChange {
            table: old.name.clone(),
            current: describe(old.identity, old.key.first()),
            requested: describe(Identity::Column, opts.identity.as_ref()),
        }
        .into());
    }
    Ok(())
}

/// A key made of another table's local numbers is not the same row
/// everywhere: say so for each newly tracked table (such key values are
/// not translated).
fn warn_local_numbers_in_keys(
    conn: &Connection,
    catalog: &Catalog,
    report: &mut TrackReport,
) -> Result<(), Error> {
    for name in &report.tracked {
        let Some(table) = catalog.by_name(name) else {
            continue;
        };
        if table.identity != Identity::Key {
            continue;
        }
        for fk in crate::catalog::foreign::followable(conn, &table.name)? {
            let parent = catalog.by_name(&fk.parent);
            let local_parent = parent.is_some_and(|p| {
                p.identity != Identity::Key
                    && fk
                        .to
                        .iter()
                        .any(|t| p.local.as_ref().is_some_and(|l| l.eq_ignore_ascii_case(t)))
            });
            let in_key = fk
                .from
                .iter()
                .any(|f| table.key.iter().any(|k| k.eq_ignore_ascii_case(f)));
            if local_parent && in_key {
                report.warnings.push(format!(
                    "the key of table '{}' includes {}, the local numbers of table '{}', which mean other rows on \
                     other instances; rows of '{}' created on two instances may be taken for one. Give '{}' a key \
                     of its own (or a uuid column, tracked with --identity)",
                    table.name,
                    fk.from.join(", "),
                    fk.parent,
                    table.name,
                    table.name
                ));
            }
        }
    }
    Ok(())
}

/// How rows of a table are identified, in words.
fn describe(identity: Identity, column: Option<&String>) -> String {
    let column = column.map(String::as_str).unwrap_or("?");
    match identity {
        Identity::Key => "by their primary key".to_owned(),
        Identity::Column => format!("by column {column}"),
        Identity::Origin => {
            format!("by the instance that created them ({column} is numbered by each instance)")
        }
        Identity::Content => "by their content (the table has no primary key)".to_owned(),
    }
}

/// Number of 64-bit mask words a table needs (bit 0 is the sentinel).
pub fn mask_words(table: &TrackedTable) -> usize {
    (table.cells.len() + 1).div_ceil(64)
}

/// Add `k1..`, `m1..` columns to `fieldsync_pending` if this table needs more
/// than it has.
fn ensure_pending_columns(conn: &Connection, table: &TrackedTable) -> Result<(), Error> {
    let existing = column_names(conn, "fieldsync_pending")?;
    for i in 0..table.sql_key().len() {
        let col = format!("k{i}");
        if !existing.contains(&col) {
            conn.execute_batch(&format!("ALTER TABLE fieldsync_pending ADD COLUMN {col}"))?;
        }
    }
    for i in 0..mask_words(table) {
        let col = format!("m{i}");
        if !existing.contains(&col) {
            conn.execute_batch(&format!(
                "ALTER TABLE fieldsync_pending ADD COLUMN {col} INTEGER"
            ))?;
        }
    }
    Ok(())
}

/// Names of the triggers fieldsync has on a table (whatever version made them).
fn existing_triggers(conn: &Connection, table: &str) -> Result<Vec<String>, Error> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ?1 COLLATE NOCASE \
         AND name LIKE 'fieldsync\\_%' ESCAPE '\\'",
    )?;
    let names = stmt
        .query_map([table], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(names)
}

/// (Re)create a table's capture triggers.
pub fn install_triggers(conn: &Connection, table: &TrackedTable) -> Result<(), Error> {
    remove_triggers(conn, table)?;
    for (_, sql) in expected_triggers(conn, table)? {
        conn.execute_batch(&sql)?;
    }
    Ok(())
}

/// The triggers (name, CREATE statement) a tracked table should have, given
/// its columns' current types: what [`install_triggers`] creates and
/// [`crate::admin::check`] looks for.
pub fn expected_triggers(
    conn: &Connection,
    table: &TrackedTable,
) -> Result<Vec<(String, String)>, Error> {
    let shape = table_shape(conn, &table.name)?;
    let cells: Vec<CellKind> = table
        .cells
        .iter()
        .map(|c| {
            let untyped = shape
                .columns
                .iter()
                .find(|col| &col.name == c)
                .is_some_and(|col| Affinity::of(&col.decl_type) == Affinity::Blob);
            // The collation SQLite compares the column with; unknown counts
            // as not BINARY, which only adds a test.
            let binary = conn
                .column_metadata(None::<&str>, table.name.as_str(), c.as_str())
                .ok()
                .and_then(|(_, coll, ..)| coll)
                .is_some_and(|coll| coll.to_bytes().eq_ignore_ascii_case(b"BINARY"));
            CellKind { untyped, binary }
        })
        .collect();
    Ok(named_triggers(table, &cells))
}

/// Remove a table's capture triggers (the catalog keeps the table).
pub fn remove_triggers(conn: &Connection, table: &TrackedTable) -> Result<(), Error> {
    for name in existing_triggers(conn, &table.name)? {
        conn.execute_batch(&format!("DROP TRIGGER IF EXISTS {}", quote_ident(&name)))?;
    }
    Ok(())
}

/// The pending columns a row's key goes into: its SQL key (the local
/// number for mapped identities, which stamping turns into the identity).
fn key_cols(table: &TrackedTable) -> String {
    (0..table.sql_key().len())
        .map(|i| format!(", k{i}"))
        .collect()
}

fn key_vals(table: &TrackedTable, row: &str) -> String {
    table
        .sql_key()
        .iter()
        .map(|k| format!(", {row}.{}", quote_ident(k)))
        .collect()
}

/// One pending row recording `op` for the key as seen in `row` (`NEW`/`OLD`).
fn pending_insert(table: &TrackedTable, op: i64, row: &str) -> String {
    format!(
        "INSERT INTO fieldsync_pending(t, op, at{}) VALUES ({}, {op}, julianday(){});",
        key_cols(table),
        table.id,
        key_vals(table, row)
    )
}

/// What the change test of one cell must look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellKind {
    /// The column has no type affinity.
    pub untyped: bool,
    /// The column compares with BINARY collation.
    pub binary: bool,
}

/// The test that a cell changed: `IS NOT`, with BINARY collation so a
/// case-only edit in a `COLLATE NOCASE` column counts (spelled out only for
/// such columns: an explicit COLLATE makes every shell UPDATE ~6% slower);
/// in a column without type affinity also a change of storage class (1 to
/// 1.0), which `IS NOT` alone treats as equal, and any write of a real zero,
/// since no SQL tells 0.0 from -0.0 (a rewrite of the same zero is recorded
/// too, harmlessly). Typed columns convert on write (a REAL column stores
/// -0.0 as 0.0), so they cannot hold equal values that differ and skip the
/// extra tests.
fn changed_test(column: &str, kind: CellKind) -> String {
    let c = quote_ident(column);
    let collate = if kind.binary { "" } else { " COLLATE BINARY" };
    if kind.untyped {
        format!(
            "OLD.{c} IS NOT NEW.{c}{collate} OR typeof(OLD.{c}) <> typeof(NEW.{c}) \
             OR (NEW.{c} = 0 AND typeof(NEW.{c}) = 'real')"
        )
    } else {
        format!("OLD.{c} IS NOT NEW.{c}{collate}")
    }
}

/// The CREATE TRIGGER statements for a table, each with its name;
/// `cells[i]` describes cell `i + 1`.
///
/// Updates are captured by one `AFTER UPDATE OF column` trigger per non-key
/// column. SQLite compiles only the triggers of the columns an UPDATE sets
/// into that statement, so a one-column UPDATE pays for one small trigger,
/// which matters most to clients that prepare every statement afresh (the
/// `sqlite3` shell, PHP): spec/capture.md has the measurements. Each trigger
/// records its column only if the value really changed; the rows one UPDATE
/// writes for several columns share a wall time and are folded back into one
/// change by [`crate::local::stamp`].
fn named_triggers(table: &TrackedTable, cells: &[CellKind]) -> Vec<(String, String)> {
    let t = quote_ident(&table.name);
    let plain = |what: &str| format!("fieldsync_{}_{what}", table.name);
    let name = |what: &str| quote_ident(&plain(what));
    let mut out = vec![(
        plain("insert"),
        format!(
            "CREATE TRIGGER {} AFTER INSERT ON {t} BEGIN {} END",
            name("insert"),
            pending_insert(table, op::INSERT, "NEW")
        ),
    )];
    for (i, cell) in table.cells.iter().enumerate() {
        let bit = i + 1;
        let kind = cells.get(i).copied().unwrap_or(CellKind {
            untyped: true,
            binary: false,
        });
        out.push((plain(&format!("update_{cell}")), format!(
            "CREATE TRIGGER {} AFTER UPDATE OF {} ON {t} WHEN {} BEGIN \
             INSERT INTO fieldsync_pending(t, op, at{}, m{}) VALUES ({}, {}, julianday(){}, {}); END",
            name(&format!("update_{cell}")),
            quote_ident(cell),
            changed_test(cell, kind),
            key_cols(table),
            bit / 64,
            table.id,
            op::UPDATE,
            key_vals(table, "NEW"),
            (1u64 << (bit % 64)) as i64,
        )));
    }
    // A table without a key has no key column to change (its rowid is
    // not a column an UPDATE OF trigger can name).
    if table.identity != Identity::Content {
        let sql_key = table.sql_key();
        let key_list = sql_key
            .iter()
            .map(|k| quote_ident(k))
            .collect::<Vec<_>>()
            .join(", ");
        let key_changed = sql_key
            .iter()
            .map(|k| format!("NEW.{0} IS NOT OLD.{0}", quote_ident(k)))
            .collect::<Vec<_>>()
            .join(" OR ");
        out.push((plain("rekey"), format!(
            "CREATE TRIGGER {} AFTER UPDATE OF {key_list} ON {t} WHEN {key_changed} BEGIN {} {} END",
            name("rekey"),
            pending_insert(table, op::DELETE, "OLD"),
            pending_insert(table, op::INSERT, "NEW"),
        )));
    }
    out.push((
        plain("delete"),
        format!(
            "CREATE TRIGGER {} AFTER DELETE ON {t} BEGIN {} END",
            name("delete"),
            pending_insert(table, op::DELETE, "OLD")
        ),
    ));
    out
}

/// Record every row a newly tracked table already holds as an insert.
fn record_existing_rows(conn: &Connection, table: &TrackedTable) -> Result<u64, Error> {
    let keys = table
        .sql_key()
        .iter()
        .map(|k| format!(", {}", quote_ident(k)))
        .collect::<String>();
    let n = conn.execute(
        &format!(
            // NOT INDEXED: in the table's own order (rowid, the order rows
            // were added), which keeps like rows together in full exports.
            "INSERT INTO fieldsync_pending(t, op, at{}) SELECT {}, {}, julianday(){keys} FROM {} NOT INDEXED",
            key_cols(table),
            table.id,
            op::INSERT,
            quote_ident(&table.name)
        ),
        [],
    )?;
    Ok(n as u64)
}

/// Record the values that newly followed columns (bits `first_bit..`)
/// already hold, as updates of those cells: an app upgrade that adds a
/// column and fills it before `track` is run again still replicates. Rows
/// where every new column is NULL are left out: that is the state every
/// instance that added the column starts from.
fn record_new_column_values(
    conn: &Connection,
    table: &TrackedTable,
    first_bit: usize,
) -> Result<u64, Error> {
    let new_cells: Vec<(usize, &String)> = table
        .cells
        .iter()
        .enumerate()
        .map(|(i, c)| (i + 1, c))
        .filter(|(bit, _)| *bit >= first_bit)
        .collect();
    if new_cells.is_empty() {
        return Ok(0);
    }
    let mut words = vec![0u64; mask_words(table)];
    for (bit, _) in &new_cells {
        words[bit / 64] |= 1 << (bit % 64);
    }
    let mask_cols: String = (0..words.len()).map(|w| format!(", m{w}")).collect();
    let mask_vals: String = words.iter().map(|w| format!(", {}", *w as i64)).collect();
    let keys = table
        .sql_key()
        .iter()
        .map(|k| format!(", {}", quote_ident(k)))
        .collect::<String>();
    let any_set = new_cells
        .iter()
        .map(|(_, c)| format!("{} IS NOT NULL", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(" OR ");
    let n = conn.execute(
        &format!(
            "INSERT INTO fieldsync_pending(t, op, at{}{mask_cols}) SELECT {}, {}, julianday(){keys}{mask_vals} FROM {} WHERE {any_set}",
            key_cols(table),
            table.id,
            op::UPDATE,
            quote_ident(&table.name)
        ),
        [],
    )?;
    Ok(n as u64)
}

/// Rows whose key holds a NULL (SQLite allows it in non-integer keys).
fn rows_with_null_key(conn: &Connection, table: &TrackedTable) -> Result<u64, Error> {
    let any_null = table
        .sql_key()
        .iter()
        .map(|k| format!("{} IS NULL", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(" OR ");
    let n: i64 = conn.query_row(
        &format!(
            "SELECT count(*) FROM {} WHERE {any_null}",
            quote_ident(&table.name)
        ),
        [],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

/// Number of captured changes not yet folded into the log.
pub fn pending_count(conn: &Connection) -> Result<u64, Error> {
    Ok(
        conn.query_row("SELECT count(*) FROM fieldsync_pending", [], |r| {
            r.get::<_, i64>(0)
        })? as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_capture_inserts_updates_deletes_and_key_changes() -> Result<(), Error> {
        let conn = Connection::open_in_memory()?;
        crate::catalog::store::create_engine_tables(&conn)?;
        conn.execute_batch("CREATE TABLE p(a TEXT, b INT, x, y, PRIMARY KEY(a, b));")?;
        let mut catalog = Catalog::load(&conn)?;
        let tx = conn.unchecked_transaction()?;
        let report = track(
            &tx,
            &mut catalog,
            &Selection::Named(vec!["p".into()]),
            &TrackOptions::default(),
            &[],
        )?;
        tx.commit()?;
        assert_eq!(report.tracked, ["p"]);
        conn.execute_batch(
            "INSERT INTO p VALUES ('k', 1, 'x0', 'y0');
             UPDATE p SET y = 'y1' WHERE a = 'k';
             UPDATE p SET x = x, y = 'y1' WHERE a = 'k';
             UPDATE p SET x = 'x1', y = 'y2' WHERE a = 'k';
             UPDATE p SET b = 2 WHERE a = 'k';
             DELETE FROM p;",
        )?;
        let mut stmt = conn.prepare("SELECT op, k0, k1, m0 FROM fieldsync_pending ORDER BY id")?;
        let mut rows: Vec<(i64, String, i64, Option<i64>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?;
        // The two column triggers of one UPDATE fire in no promised order.
        rows[2..4].sort();
        assert_eq!(
            rows,
            [
                (op::INSERT, "k".into(), 1, None),
                (op::UPDATE, "k".into(), 1, Some(0b100)),
                // `SET x = x, y = 'y1'` changed nothing: nothing recorded.
                (op::UPDATE, "k".into(), 1, Some(0b010)),
                (op::UPDATE, "k".into(), 1, Some(0b100)),
                (op::DELETE, "k".into(), 1, None),
                (op::INSERT, "k".into(), 2, None),
                (op::DELETE, "k".into(), 2, None),
            ]
        );
        Ok(())
    }
}
