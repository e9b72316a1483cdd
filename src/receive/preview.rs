//! What an import would do (`fieldsync import --dry-run`), as a report:
//! the rows it would insert, update (which columns) and delete per table,
//! the values that would win or lose against edits made here, and what
//! would be held in quarantine. The import itself runs on a scratch copy of
//! the database ([`crate::Instance::preview_import`] makes it); this module
//! only compares the copy after the import with the original (opened read
//! only) and holds the report types. spec/merge.md, "Dry run", is the
//! normative text.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, OptionalExtension, params};
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

use crate::base::seqset::SeqSet;
use crate::base::value::{Value, decode_key};
use crate::catalog::identity::local_of;
use crate::catalog::schema::quote_ident;
use crate::catalog::session::Session;
use crate::catalog::tracked::TrackedTable;
use crate::error::Error;
use crate::json::value_json;
use crate::receive::import::ImportReport;

/// What [`crate::Instance::preview_import`] found: everything the import
/// would do, and nothing was changed. Serialised as `import --dry-run
/// --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct ImportPreview {
    /// The instance whose database it is.
    pub instance: String,
    /// Always true: nothing was changed.
    pub dry_run: bool,
    /// Each file, in the order given: what its import would report, or why
    /// it would be refused.
    pub files: Vec<FilePreview>,
    /// Rows inserted, updated and deleted in all tables.
    pub inserted: u64,
    /// Rows updated.
    pub updated: u64,
    /// Rows deleted.
    pub deleted: u64,
    /// Records that would be held in quarantine (the sum of the files'
    /// `quarantined`).
    pub quarantined: u64,
    /// Files that would be refused.
    pub refused: u64,
    /// Per table whose rows would change, in the order tables are tracked.
    pub tables: Vec<TablePreview>,
    /// Values that would lose a merge to a concurrent change, both ways
    /// (`fieldsync conflicts` would list them), up to the limit.
    pub conflicts: Vec<ConflictPreview>,
    /// Of them, in all: an incoming value wins over the value here.
    pub incoming_wins: u64,
    /// An incoming value loses to the value here.
    pub local_wins: u64,
    /// What would be held in quarantine, and why, up to the limit.
    pub held: Vec<HeldPreview>,
    /// Conflicts and held changes not listed (over the limit).
    pub not_listed: u64,
}

/// One file of a preview.
#[derive(Debug, Clone, Serialize)]
pub struct FilePreview {
    /// The file as given.
    pub file: String,
    /// The one line saying why it would be refused; nothing of it would be
    /// applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// What its import would report (the same as `import --json` reports
    /// for the file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<ImportReport>,
}

/// The rows of one table the import would change.
#[derive(Debug, Clone, Serialize)]
pub struct TablePreview {
    /// The table.
    pub table: String,
    /// Rows inserted.
    pub inserted: u64,
    /// Rows updated.
    pub updated: u64,
    /// Rows deleted.
    pub deleted: u64,
    /// Per column, the updated rows whose value in it changes.
    pub columns: Vec<ColumnCount>,
    /// The changed rows, up to the limit, in key order.
    pub rows: Vec<RowChange>,
    /// Changed rows not listed (over the limit).
    pub not_listed: u64,
}

/// How many updated rows change one column.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnCount {
    /// The column.
    pub column: String,
    /// Rows.
    pub updated: u64,
}

/// What happens to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowAction {
    /// It is not here and would be.
    Insert,
    /// Some of its values would change.
    Update,
    /// It would be deleted.
    Delete,
}

/// One changed row.
#[derive(Debug, Clone, Serialize)]
pub struct RowChange {
    /// Insert, update or delete.
    pub change: RowAction,
    /// The row's key: its key columns, or for a table keyed by local
    /// numbers (or not keyed) its number here.
    pub key: RowKey,
    /// Update: the columns that change; insert: every column (no `old`);
    /// delete: every column (no `new`).
    pub columns: Vec<ColumnChange>,
}

/// A row's key, column by column; shown as SQL literals, serialised as an
/// object `{column: value}`.
#[derive(Debug, Clone, PartialEq)]
pub struct RowKey(pub Vec<(String, Value)>);

impl std::fmt::Display for RowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (c, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{c} = {v}")?;
        }
        Ok(())
    }
}

impl Serialize for RowKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (c, v) in &self.0 {
            map.serialize_entry(c, &value_json(v))?;
        }
        map.end()
    }
}

/// One column of a changed row.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnChange {
    /// The column.
    pub column: String,
    /// Its value here (none for an inserted row).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::opt_value"
    )]
    pub old: Option<Value>,
    /// Its value after the import (none for a deleted row).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::opt_value"
    )]
    pub new: Option<Value>,
}

/// A value that would lose a merge (spec/merge.md): either the value here
/// is replaced by a newer incoming one, or the incoming one is ignored.
#[derive(Debug, Clone)]
pub struct ConflictPreview {
    /// The table.
    pub table: String,
    /// The row's key, as SQL literals (as `fieldsync conflicts` shows it).
    pub key: String,
    /// The key as JSON (spec/json.md): an object column → value.
    pub key_json: serde_json::Value,
    /// The column, or empty for the row as a whole.
    pub column: String,
    /// True: the incoming value wins, the value here is replaced; false:
    /// the value here wins, the incoming one is ignored.
    pub incoming_wins: bool,
    /// The value that loses, who wrote it and when (unix ms).
    pub lost_value: Value,
    /// The instance that wrote the losing value.
    pub lost_site: String,
    /// When (unix ms, its clock).
    pub lost_at_ms: i64,
    /// The value that wins.
    pub won_value: Value,
    /// The instance that wrote it.
    pub won_site: String,
    /// When (unix ms).
    pub won_at_ms: i64,
    /// `later edit`, `row deleted`, `row re-created`.
    pub reason: String,
}

impl Serialize for ConflictPreview {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ConflictPreview", 11)?;
        st.serialize_field("table", &self.table)?;
        st.serialize_field("key", &self.key_json)?;
        st.serialize_field("column", &self.column)?;
        st.serialize_field(
            "winner",
            if self.incoming_wins {
                "incoming"
            } else {
                "local"
            },
        )?;
        st.serialize_field("lost_value", &value_json(&self.lost_value))?;
        st.serialize_field("loser_instance", &self.lost_site)?;
        st.serialize_field("lost_at", &crate::json::rfc3339(self.lost_at_ms))?;
        st.serialize_field("won_value", &value_json(&self.won_value))?;
        st.serialize_field("winner_instance", &self.won_site)?;
        st.serialize_field("won_at", &crate::json::rfc3339(self.won_at_ms))?;
        st.serialize_field("reason", &self.reason)?;
        st.end()
    }
}

/// A change that would be held in quarantine.
#[derive(Debug, Clone, Serialize)]
pub struct HeldPreview {
    /// The table.
    pub table: String,
    /// The row's key, as SQL literals (as `fieldsync conflicts` shows it).
    #[serde(skip)]
    pub key: String,
    /// The key as JSON (spec/json.md): an object column → value.
    #[serde(rename = "key")]
    pub key_json: serde_json::Value,
    /// Short reason: `missing parent`, `unique`, `not null`, `check`, `from
    /// the future`…
    pub reason: String,
    /// What exactly, in words.
    pub detail: String,
    /// The instance whose bundle brings it.
    #[serde(rename = "sender_instance")]
    pub sender: String,
}

/// Where the copy stood before the import: what to compare after it.
pub(crate) struct Before {
    have: BTreeMap<i64, SeqSet>,
    last_conflict: i64,
    last_held: i64,
}

/// Note where the copy stands, before the import runs in it.
pub(crate) fn before(copy: &Connection) -> Result<Before, Error> {
    let s = Session::load(copy)?;
    Ok(Before {
        have: crate::catalog::peers::have_all(copy, &s)?,
        last_conflict: copy.query_row(
            "SELECT coalesce(max(id), 0) FROM fieldsync_conflicts",
            [],
            |r| r.get(0),
        )?,
        last_held: copy.query_row(
            "SELECT coalesce(max(id), 0) FROM fieldsync_quarantine",
            [],
            |r| r.get(0),
        )?,
    })
}

/// Fill `preview`'s tables, conflicts and quarantine by comparing the copy
/// after the import with the original. `limit`: rows listed per table, and
/// conflicts and held changes listed (`None`: all). Counts are always
/// complete; only the listed rows are held in memory.
pub(crate) fn compare(
    original: &Connection,
    copy: &Connection,
    before: &Before,
    limit: Option<u64>,
    preview: &mut ImportPreview,
) -> Result<(), Error> {
    let s = Session::load(copy)?;
    let key_columns = s.catalog.key_columns();
    let after = crate::catalog::peers::have_all(copy, &s)?;
    // The rows the import touched: those with a log entry numbered among the
    // change numbers it added (received ones, and this instance's own for
    // what it folded or wrote). An entry a later change of the same import
    // replaced leaves that change's entry, on the same row.
    copy.execute_batch(
        "DROP TABLE IF EXISTS temp.fieldsync_preview_rows;
         CREATE TEMP TABLE fieldsync_preview_rows(tbl INTEGER, pk BLOB, PRIMARY KEY(tbl, pk)) WITHOUT ROWID;",
    )?;
    let mut new_origins: BTreeSet<String> = BTreeSet::new();
    {
        let mut add = copy.prepare(
            "INSERT OR IGNORE INTO temp.fieldsync_preview_rows(tbl, pk) \
             SELECT tbl, pk FROM fieldsync_log WHERE origin = ?1 AND seq BETWEEN ?2 AND ?3",
        )?;
        for (origin, seqs) in &after {
            let new = match before.have.get(origin) {
                Some(old) => seqs.minus(old),
                None => seqs.clone(),
            };
            if new.is_empty() {
                continue;
            }
            if *origin != s.local_idx {
                if let Some(site) = s.sites.get(*origin) {
                    new_origins.insert(site.name.clone());
                }
            }
            for (first, last) in new.ranges() {
                add.execute(params![origin, *first as i64, *last as i64])?;
            }
        }
    }
    let limit = limit.unwrap_or(u64::MAX);
    for table in s.catalog.tables() {
        let t = table_changes(original, copy, table, limit)?;
        if t.inserted + t.updated + t.deleted > 0 {
            preview.inserted += t.inserted;
            preview.updated += t.updated;
            preview.deleted += t.deleted;
            preview.tables.push(t);
        }
    }
    copy.execute_batch("DROP TABLE temp.fieldsync_preview_rows")?;

    let mut listed = 0u64;
    let mut stmt = copy.prepare(
        "SELECT tbl, key, col, lost_value, lost_site, lost_at, won_value, won_site, won_at, reason \
         FROM fieldsync_conflicts WHERE id > ?1 ORDER BY id",
    )?;
    let mut rows = stmt.query([before.last_conflict])?;
    while let Some(r) = rows.next()? {
        let won_site: String = r.get(7)?;
        let lost_site: String = r.get(4)?;
        // The winner came with this import if one of the origins it brought
        // wrote it and it is not this instance's own; otherwise the value
        // here stays and the incoming one loses.
        let incoming_wins = won_site != s.name && new_origins.contains(&won_site);
        if incoming_wins {
            preview.incoming_wins += 1;
        } else {
            preview.local_wins += 1;
        }
        if listed >= limit {
            preview.not_listed += 1;
            continue;
        }
        listed += 1;
        let (table, key): (String, String) = (r.get(0)?, r.get(1)?);
        preview.conflicts.push(ConflictPreview {
            key_json: crate::json::row_key(&key_columns, &table, &key),
            table,
            key,
            column: r.get(2)?,
            incoming_wins,
            lost_value: r.get(3)?,
            lost_site,
            lost_at_ms: r.get(5)?,
            won_value: r.get(6)?,
            won_site,
            won_at_ms: r.get(8)?,
            reason: r.get(9)?,
        });
    }
    let mut stmt = copy.prepare(
        "SELECT tbl, key, reason, detail, sender FROM fieldsync_quarantine WHERE id > ?1 ORDER BY id",
    )?;
    let mut rows = stmt.query([before.last_held])?;
    let mut listed = 0u64;
    while let Some(r) = rows.next()? {
        if listed >= limit {
            preview.not_listed += 1;
            continue;
        }
        listed += 1;
        let (table, key): (String, String) = (r.get(0)?, r.get(1)?);
        preview.held.push(HeldPreview {
            key_json: crate::json::row_key(&key_columns, &table, &key),
            table,
            key,
            reason: r.get(2)?,
            detail: r.get(3)?,
            sender: r.get(4)?,
        });
    }
    Ok(())
}

/// The changes to one table's rows the import touched.
fn table_changes(
    original: &Connection,
    copy: &Connection,
    table: &TrackedTable,
    limit: u64,
) -> Result<TablePreview, Error> {
    let mut out = TablePreview {
        table: table.name.clone(),
        inserted: 0,
        updated: 0,
        deleted: 0,
        columns: Vec::new(),
        rows: Vec::new(),
        not_listed: 0,
    };
    // A table a schema change in the bundle would create is not in the
    // original: every row of it is new.
    let in_original: bool = original
        .query_row(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
            [&table.name],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    let mut stmt =
        copy.prepare("SELECT pk FROM temp.fieldsync_preview_rows WHERE tbl = ?1 ORDER BY pk")?;
    let mut rows = stmt.query([table.id])?;
    while let Some(r) = rows.next()? {
        let pk: Vec<u8> = r.get(0)?;
        let old = if in_original {
            read_row(original, table, &pk)?
        } else {
            None
        };
        let new = read_row(copy, table, &pk)?;
        let (change, key, columns) = match (old, new) {
            (None, None) => continue,
            (None, Some((key, values))) => (
                RowAction::Insert,
                key,
                values
                    .into_iter()
                    .map(|(column, v)| ColumnChange {
                        column,
                        old: None,
                        new: Some(v),
                    })
                    .collect::<Vec<_>>(),
            ),
            (Some((key, values)), None) => (
                RowAction::Delete,
                key,
                values
                    .into_iter()
                    .map(|(column, v)| ColumnChange {
                        column,
                        old: Some(v),
                        new: None,
                    })
                    .collect(),
            ),
            (Some((_, old)), Some((key, new))) => {
                let changed = changed_columns(old, new);
                if changed.is_empty() {
                    continue;
                }
                (RowAction::Update, key, changed)
            }
        };
        match change {
            RowAction::Insert => out.inserted += 1,
            RowAction::Delete => out.deleted += 1,
            RowAction::Update => {
                out.updated += 1;
                for c in &columns {
                    match out.columns.iter_mut().find(|n| n.column == c.column) {
                        Some(n) => n.updated += 1,
                        None => out.columns.push(ColumnCount {
                            column: c.column.clone(),
                            updated: 1,
                        }),
                    }
                }
            }
        }
        if (out.rows.len() as u64) < limit {
            out.rows.push(RowChange {
                change,
                key,
                columns,
            });
        } else {
            out.not_listed += 1;
        }
    }
    Ok(out)
}

/// The columns whose values differ, by name (a column only one side has
/// counts as NULL on the other).
fn changed_columns(old: Cells, new: Cells) -> Vec<ColumnChange> {
    let mut out = Vec::new();
    let mut old: Vec<Option<(String, Value)>> = old.into_iter().map(Some).collect();
    for (column, v) in new {
        let before = old
            .iter_mut()
            .find(|o| matches!(o, Some((c, _)) if c.eq_ignore_ascii_case(&column)))
            .and_then(Option::take)
            .map(|(_, v)| v)
            .unwrap_or(Value::Null);
        if before != v {
            out.push(ColumnChange {
                column,
                old: Some(before),
                new: Some(v),
            });
        }
    }
    for (column, v) in old.into_iter().flatten() {
        if v != Value::Null {
            out.push(ColumnChange {
                column,
                old: Some(v),
                new: Some(Value::Null),
            });
        }
    }
    out
}

/// Every column of a row, by name, in the table's order.
type Cells = Vec<(String, Value)>;

/// A row's key and every column's value, found by its identity in the log
/// (`pk`): by its key columns, or through `fieldsync_ids` for a table keyed
/// by local numbers. `None` if the database does not have it.
fn read_row(
    conn: &Connection,
    table: &TrackedTable,
    pk: &[u8],
) -> Result<Option<(RowKey, Cells)>, Error> {
    let (columns, values): (Vec<String>, Vec<Value>) = if table.identity.mapped() {
        match local_of(conn, table.id, pk)? {
            Some(local) => (table.sql_key(), vec![local]),
            None => return Ok(None),
        }
    } else {
        let key = decode_key(pk).map_err(|e| crate::error::SiteError::Damaged {
            detail: format!(
                "a key in the change log of '{}' is malformed: {e}",
                table.name
            ),
        })?;
        (table.key.clone(), key)
    };
    let sql = format!(
        "SELECT * FROM {} WHERE {}",
        quote_ident(&table.name),
        table.key_predicate()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let names: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
    let row = stmt
        .query_row(rusqlite::params_from_iter(values.iter()), |r| {
            (0..names.len())
                .map(|i| r.get_ref(i).map(Value::from_ref))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .optional()?;
    Ok(row.map(|row| {
        (
            RowKey(columns.into_iter().zip(values).collect()),
            names.into_iter().zip(row).collect(),
        )
    }))
}
