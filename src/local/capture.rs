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

use rusqlite::{Connection, OptionalExtension, Transaction};

use crate::catalog::layout::{AsSent, Identity, TrackOptions, glob_match, layout_of, plan};
use crate::catalog::savepoint::Savepoint;
use crate::catalog::schema::{
    Affinity, TableShape, app_tables, quote_ident, table_shape, untrackable_tables,
};
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
    /// Tracked tables whose capture triggers had the names an older
    /// fieldsync gave them (from table and column names) and now have
    /// their current names.
    pub renamed: Vec<String>,
    /// Tables `--all` could not track (or refresh), each with the reason;
    /// nothing was changed for them.
    #[serde(serialize_with = "crate::json::table_reasons")]
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
/// the rows they already hold. Named tables are all or nothing; with
/// [`Selection::All`] each table is tracked or left as it was on its own
/// (see [`track_one_of_all`]). Tracked tables whose triggers still carry
/// the names an older fieldsync gave them get their current names first.
pub fn track(
    tx: &Transaction<'_>,
    catalog: &mut Catalog,
    selection: &Selection,
    opts: &TrackOptions,
    as_sent: &AsSent,
) -> Result<TrackReport, Error> {
    let mut report = TrackReport::default();
    rename_legacy_triggers(tx, catalog, &mut report)?;
    for name in selected(tx, selection, opts, &mut report)? {
        match selection {
            Selection::Named(_) => {
                track_table(tx, catalog, &name, selection, opts, as_sent, &mut report)?
            }
            Selection::All => track_one_of_all(tx, catalog, &name, opts, as_sent, &mut report)?,
        }
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

/// `--all`: track (or refresh) one table in a savepoint of its own. A
/// table that cannot be tracked, whatever the reason (a refusal of
/// fieldsync's or an SQLite error of the table's own), is undone entirely
/// (its catalog rows, pending columns and triggers, and what the report
/// said of it) and reported in [`TrackReport::skipped`] with the reason;
/// the other tables go on. Only an error that concerns the database as a
/// whole ([`stops_the_run`]) ends the run, and the whole `track` with it.
fn track_one_of_all(
    tx: &Transaction<'_>,
    catalog: &mut Catalog,
    name: &str,
    opts: &TrackOptions,
    as_sent: &AsSent,
    report: &mut TrackReport,
) -> Result<(), Error> {
    let (table_before, report_before) = (catalog.by_name(name).cloned(), report.clone());
    let outcome = in_savepoint(tx, || {
        track_table(tx, catalog, name, &Selection::All, opts, as_sent, report)
    })?;
    match outcome {
        Ok(()) => Ok(()),
        Err(e) if stops_the_run(&e) => Err(e),
        Err(e) => {
            let was_tracked = table_before.is_some();
            catalog.restore(name, table_before);
            *report = report_before;
            let why = if was_tracked {
                format!("{e} (it stays tracked with the triggers it had)")
            } else {
                e.to_string()
            };
            report.skipped.push((name.to_owned(), why));
            Ok(())
        }
    }
}

/// True for errors that concern the database as a whole (busy, I/O, a
/// full disk, a damaged file or damaged engine tables), which no other
/// table would escape either; false for those of one table (fieldsync's
/// refusals, SQLite's errors in the statements made for it).
fn stops_the_run(e: &Error) -> bool {
    use rusqlite::ErrorCode as C;
    match e {
        Error::Track(_) => false,
        Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => !matches!(
            f.code,
            C::Unknown
                | C::ConstraintViolation
                | C::TooBig
                | C::TypeMismatch
                | C::ParameterOutOfRange
        ),
        Error::Sqlite(_) => false,
        _ => true,
    }
}

/// Run `f` in a savepoint: released if `f` succeeds, rolled back (every
/// change `f` made, schema included) if it fails. The outer error is the
/// savepoint's own failure, after which the transaction's state is unknown.
fn in_savepoint<T>(
    tx: &Transaction<'_>,
    f: impl FnOnce() -> Result<T, Error>,
) -> Result<Result<T, Error>, Error> {
    let sp = Savepoint::open(tx, "fieldsync_track_table")?;
    let out = f();
    match out {
        Ok(_) => sp.commit()?,
        Err(_) => sp.rollback()?,
    }
    Ok(out)
}

/// Give the capture triggers of every tracked table that carries a name an
/// older fieldsync gave it ([`legacy_trigger_name`]) their current names
/// ([`install_triggers`], which drops the old ones, so no write is captured
/// twice). A table that cannot be done keeps the triggers it has, which
/// still capture its writes, and is named in a warning.
fn rename_legacy_triggers(
    tx: &Transaction<'_>,
    catalog: &Catalog,
    report: &mut TrackReport,
) -> Result<(), Error> {
    for table in catalog.tables() {
        if !has_legacy_triggers(tx, table)? {
            continue;
        }
        match in_savepoint(tx, || install_triggers(tx, table))? {
            Ok(()) => report.renamed.push(table.name.clone()),
            Err(e) if stops_the_run(&e) => return Err(e),
            Err(e) => report.warnings.push(format!(
                "the capture triggers of table '{}' keep the names an older fieldsync gave them (they still \
                 capture its writes): {e}",
                table.name
            )),
        }
    }
    Ok(())
}

/// The names of the tables a selection asks for. `--all` leaves out those
/// `--except` matches (and says so in the report), and reports the tables
/// it cannot take whatever they hold (virtual tables, names with
/// fieldsync's prefix) as skipped, with the reason.
fn selected(
    conn: &Connection,
    selection: &Selection,
    opts: &TrackOptions,
    report: &mut TrackReport,
) -> Result<Vec<String>, Error> {
    match selection {
        Selection::Named(names) if names.is_empty() => Err(TrackError::NothingNamed.into()),
        Selection::Named(names) => Ok(names.clone()),
        Selection::All => {
            let mut excepted = |name: &String| {
                let out = opts.except.iter().any(|p| glob_match(p, name));
                if out {
                    report.excepted.push(name.clone());
                }
                out
            };
            let mut skipped = Vec::new();
            for (name, why) in untrackable_tables(conn)? {
                if !excepted(&name) {
                    skipped.push((name, why.to_string()));
                }
            }
            let names = app_tables(conn)?
                .into_iter()
                .filter(|name| !excepted(name))
                .collect();
            report.skipped.extend(skipped);
            Ok(names)
        }
    }
}

/// Track one table, or follow the new columns of a tracked one, and
/// refresh its triggers. A table `--all` cannot lay out is skipped and
/// reported here; [`track_one_of_all`] undoes and reports any other failure.
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
pub(crate) fn ensure_pending_columns(conn: &Connection, table: &TrackedTable) -> Result<(), Error> {
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

/// What a capture trigger records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fires {
    /// `AFTER INSERT`: the new row.
    Insert,
    /// `AFTER UPDATE OF column`: a change of one cell.
    Update {
        /// The column.
        column: String,
        /// Its bit in the table's cell set.
        bit: usize,
    },
    /// `AFTER UPDATE OF` the key columns: a key change.
    Rekey,
    /// `AFTER DELETE`: the deleted row.
    Delete,
}

/// One capture trigger a tracked table should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureTrigger {
    /// What it records.
    pub fires: Fires,
    /// Its name ([`trigger_name`]).
    pub name: String,
    /// Its `CREATE TRIGGER` statement, as `sqlite_schema` keeps it.
    pub sql: String,
    /// The name fieldsync gave the same trigger before names were built
    /// from table ids ([`legacy_trigger_name`]).
    pub legacy_name: String,
    /// The same statement under that name: what such a fieldsync installed.
    pub legacy_sql: String,
}

/// The name of a capture trigger of table `table_id` (its
/// `fieldsync_tables.id`): `fieldsync_insert_<id>`,
/// `fieldsync_update_<id>_<bit>`, `fieldsync_rekey_<id>`,
/// `fieldsync_delete_<id>`. Table ids and a table's bits are unique, so no
/// two triggers get one name whatever the tables and columns are called;
/// and no such name has the shape [`legacy_trigger_name`] gives (those end
/// in `_insert`, `_rekey` or `_delete`, or hold `_update_` after the
/// prefix), so a trigger installed under an old name never takes the name
/// of another table's trigger.
pub fn trigger_name(table_id: i64, fires: &Fires) -> String {
    match fires {
        Fires::Insert => format!("fieldsync_insert_{table_id}"),
        Fires::Update { bit, .. } => format!("fieldsync_update_{table_id}_{bit}"),
        Fires::Rekey => format!("fieldsync_rekey_{table_id}"),
        Fires::Delete => format!("fieldsync_delete_{table_id}"),
    }
}

/// The name fieldsync used to give a capture trigger, from the table and
/// column names: `fieldsync_<table>_insert`, `fieldsync_<table>_update_<column>`
/// and so on. Two tables could get one name (`x` with a column `y_insert`
/// and `x_update_y`), so it is only recognised, never installed.
pub fn legacy_trigger_name(table: &str, fires: &Fires) -> String {
    match fires {
        Fires::Insert => format!("fieldsync_{table}_insert"),
        Fires::Update { column, .. } => format!("fieldsync_{table}_update_{column}"),
        Fires::Rekey => format!("fieldsync_{table}_rekey"),
        Fires::Delete => format!("fieldsync_{table}_delete"),
    }
}

/// The capture triggers a table has, in the order they are installed: one
/// per insert, per non-key column, per key change (not for a table without
/// a key: its rowid is not a column an `UPDATE OF` trigger can name) and
/// per delete.
fn fires_of(table: &TrackedTable) -> Vec<Fires> {
    let mut out = vec![Fires::Insert];
    out.extend(table.cells.iter().enumerate().map(|(i, c)| Fires::Update {
        column: c.clone(),
        bit: i + 1,
    }));
    if table.identity != Identity::Content {
        out.push(Fires::Rekey);
    }
    out.push(Fires::Delete);
    out
}

/// Names of the triggers fieldsync has on a table (whatever version made
/// them): every trigger on it whose name starts with `fieldsync_`.
fn existing_triggers(conn: &Connection, table: &str) -> Result<Vec<String>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ?1 COLLATE NOCASE \
         AND name LIKE 'fieldsync\\_%' ESCAPE '\\'",
    )?;
    let names = stmt
        .query_map([table], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(names)
}

/// True if the table carries a trigger under a name an older fieldsync
/// gave it ([`legacy_trigger_name`]).
fn has_legacy_triggers(conn: &Connection, table: &TrackedTable) -> Result<bool, Error> {
    let legacy: Vec<String> = fires_of(table)
        .iter()
        .map(|f| legacy_trigger_name(&table.name, f))
        .collect();
    Ok(existing_triggers(conn, &table.name)?
        .iter()
        .any(|name| legacy.iter().any(|l| l.eq_ignore_ascii_case(name))))
}

/// (Re)create a table's capture triggers: those it has (under any name
/// fieldsync ever gave them) are dropped first, so a write is never
/// captured twice.
pub fn install_triggers(conn: &Connection, table: &TrackedTable) -> Result<(), Error> {
    remove_triggers(conn, table)?;
    let expected = expected_triggers(conn, table)?;
    for trigger in &expected {
        // Only a trigger the app made itself can hold one of these names;
        // say so rather than pass on SQLite's "already exists".
        let owner: Option<String> = conn
            .prepare_cached(
                "SELECT tbl_name FROM sqlite_schema WHERE type = 'trigger' AND name = ?1 COLLATE NOCASE",
            )?
            .query_row([&trigger.name], |r| r.get(0))
            .optional()?;
        if let Some(owner) = owner {
            return Err(TrackError::TriggerNameTaken {
                table: table.name.clone(),
                trigger: trigger.name.clone(),
                owner,
            }
            .into());
        }
        conn.execute_batch(&trigger.sql)?;
    }
    Ok(())
}

/// The triggers a tracked table should have, given its columns' current
/// types: what [`install_triggers`] creates and [`crate::admin::check`]
/// looks for.
pub fn expected_triggers(
    conn: &Connection,
    table: &TrackedTable,
) -> Result<Vec<CaptureTrigger>, Error> {
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
fn named_triggers(table: &TrackedTable, cells: &[CellKind]) -> Vec<CaptureTrigger> {
    let t = quote_ident(&table.name);
    fires_of(table)
        .into_iter()
        .map(|fires| {
            // Everything after the trigger's name.
            let rest = match &fires {
                Fires::Insert => format!(
                    "AFTER INSERT ON {t} BEGIN {} END",
                    pending_insert(table, op::INSERT, "NEW")
                ),
                Fires::Update { column, bit } => {
                    let kind = cells.get(bit - 1).copied().unwrap_or(CellKind {
                        untyped: true,
                        binary: false,
                    });
                    format!(
                        "AFTER UPDATE OF {} ON {t} WHEN {} BEGIN \
                         INSERT INTO fieldsync_pending(t, op, at{}, m{}) VALUES ({}, {}, julianday(){}, {}); END",
                        quote_ident(column),
                        changed_test(column, kind),
                        key_cols(table),
                        bit / 64,
                        table.id,
                        op::UPDATE,
                        key_vals(table, "NEW"),
                        (1u64 << (bit % 64)) as i64,
                    )
                }
                Fires::Rekey => {
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
                    format!(
                        "AFTER UPDATE OF {key_list} ON {t} WHEN {key_changed} BEGIN {} {} END",
                        pending_insert(table, op::DELETE, "OLD"),
                        pending_insert(table, op::INSERT, "NEW"),
                    )
                }
                Fires::Delete => format!(
                    "AFTER DELETE ON {t} BEGIN {} END",
                    pending_insert(table, op::DELETE, "OLD")
                ),
            };
            let name = trigger_name(table.id, &fires);
            let legacy_name = legacy_trigger_name(&table.name, &fires);
            CaptureTrigger {
                sql: format!("CREATE TRIGGER {} {rest}", quote_ident(&name)),
                legacy_sql: format!("CREATE TRIGGER {} {rest}", quote_ident(&legacy_name)),
                name,
                legacy_name,
                fires,
            }
        })
        .collect()
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
/// column and fills it before it is followed still replicates. Rows where
/// every new column is NULL or holds its declared default are left out:
/// that is the state every instance that added the column starts from.
pub(crate) fn record_new_column_values(
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
    let defaults = column_defaults(conn, &table.name)?;
    let any_set = new_cells
        .iter()
        .map(|(_, c)| {
            let default = defaults
                .iter()
                .find(|(name, _)| name == *c)
                .and_then(|(_, d)| d.clone())
                .unwrap_or_else(|| "NULL".to_owned());
            format!("{} IS NOT ({default})", quote_ident(c))
        })
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

/// Each column's declared default, as SQLite keeps its text (an
/// expression of the app's own schema), if it has one.
fn column_defaults(conn: &Connection, table: &str) -> Result<Vec<(String, Option<String>)>, Error> {
    let mut stmt = conn.prepare("SELECT name, dflt_value FROM pragma_table_info(?1)")?;
    let out = stmt
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(out)
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

    fn table(id: i64, name: &str, cells: &[&str], identity: Identity) -> TrackedTable {
        TrackedTable {
            id,
            name: name.to_owned(),
            key: if identity == Identity::Key {
                vec!["id".to_owned()]
            } else {
                Vec::new()
            },
            cells: cells.iter().map(|c| (*c).to_owned()).collect(),
            identity,
            local: (identity != Identity::Key).then(|| "rowid".to_owned()),
        }
    }

    /// Tables whose old trigger names collide (in letter case too) get
    /// distinct names, none of which any table could have had as an old
    /// name.
    #[test]
    fn trigger_names_are_unique_and_never_an_old_name() {
        let tables = [
            table(1, "x", &["y_insert", "Y_DELETE"], Identity::Key),
            table(2, "x_update_y", &["v"], Identity::Key),
            table(3, "X_UPDATE_Y_INSERT", &["_update_"], Identity::Content),
            table(4, "1", &["1_insert", "v"], Identity::Key),
            table(12, "insert_1", &["update_1_1"], Identity::Key),
            table(21, "update_1", &["2"], Identity::Content),
        ];
        let old = |t: &TrackedTable| -> Vec<String> {
            fires_of(t)
                .iter()
                .map(|f| legacy_trigger_name(&t.name, f).to_ascii_lowercase())
                .collect()
        };
        assert!(
            old(&tables[0]).iter().any(|n| old(&tables[1]).contains(n)),
            "the old names of x and x_update_y collide"
        );
        let mut current = std::collections::HashSet::new();
        for t in &tables {
            for f in fires_of(t) {
                let name = trigger_name(t.id, &f).to_ascii_lowercase();
                assert!(current.insert(name.clone()), "{name} given twice");
            }
        }
        for t in &tables {
            for name in old(t) {
                assert!(!current.contains(&name), "{name} is an old name");
            }
        }
    }

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
