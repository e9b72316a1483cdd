//! The catalog of tracked tables: which app tables fieldsync follows, their
//! key columns, and the bit each non-key column was given.
//!
//! Bits are assigned once, in the order columns were first tracked, and never
//! renumbered, so the change log stays valid when the app adds a column.
//! Installing the triggers is [`crate::local::capture`]'s job.

use rusqlite::{Connection, params};

use crate::catalog::layout::{Identity, Layout, layout_of};
use crate::catalog::schema::{TableShape, quote_ident, table_shape};
use crate::error::{Error, TrackError};

/// One tracked table as recorded in `fieldsync_tables` / `fieldsync_columns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedTable {
    /// `fieldsync_tables.id`.
    pub id: i64,
    /// Table name.
    pub name: String,
    /// The columns whose values identify a row everywhere, in order: the
    /// primary key ([`Identity::Key`]), the identity column
    /// ([`Identity::Column`]), or none for mapped identities.
    pub key: Vec<String>,
    /// Non-key columns; column `cells[i]` has bit `i + 1`.
    pub cells: Vec<String>,
    /// How rows are recognised across instances.
    pub identity: Identity,
    /// The column holding this instance's own number for a row, which is
    /// not replicated: the `INTEGER PRIMARY KEY` (or `--local-key` column),
    /// or `rowid` for a table without a primary key. `None` for
    /// [`Identity::Key`].
    pub local: Option<String>,
}

impl TrackedTable {
    /// The bit of a non-key column (names compare as SQLite compares
    /// them, without regard to ASCII case).
    pub fn bit_of(&self, column: &str) -> Option<usize> {
        self.cells
            .iter()
            .position(|c| c.eq_ignore_ascii_case(column))
            .map(|i| i + 1)
    }

    /// Number of values in a row's replicated key.
    pub fn key_len(&self) -> usize {
        if self.identity.mapped() {
            1
        } else {
            self.key.len()
        }
    }

    /// Number of columns in [`sql_key`](Self::sql_key).
    pub fn sql_key_len(&self) -> usize {
        if self.identity.mapped() {
            1
        } else {
            self.key.len()
        }
    }

    /// The columns SQL finds a row by in the app table: the replicated key,
    /// or the local key for mapped identities.
    pub fn sql_key(&self) -> Vec<String> {
        match (&self.local, self.identity.mapped()) {
            (Some(local), true) => vec![local.clone()],
            _ => self.key.clone(),
        }
    }

    /// The `WHERE` clause matching one row by its SQL key
    /// ([`sql_key`](Self::sql_key)), with parameters `?1..?n`.
    pub fn key_predicate(&self) -> String {
        self.sql_key()
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{} = ?{}", quote_ident(k), i + 1))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// `SELECT` of every cell column of one row, by its SQL key.
    pub fn select_cells_sql(&self) -> String {
        format!(
            "SELECT {} FROM {} WHERE {}",
            self.cells_sql(),
            quote_ident(&self.name),
            self.key_predicate()
        )
    }

    /// The cell columns as a `SELECT` lists them, in order (`1` for a
    /// table without cells, which then yields one column).
    pub fn cells_sql(&self) -> String {
        if self.cells.is_empty() {
            return "1".to_owned();
        }
        self.cells
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every tracked table, in tracking order.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    tables: Vec<TrackedTable>,
}

impl Catalog {
    /// Read the catalog.
    pub fn load(conn: &Connection) -> Result<Catalog, Error> {
        let mut tables = Vec::new();
        let mut stmt =
            conn.prepare("SELECT id, name, identity FROM fieldsync_tables ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut cols = conn.prepare(
            "SELECT role, name FROM fieldsync_columns WHERE tbl = ?1 ORDER BY role, pos",
        )?;
        for (id, name, identity) in rows {
            let identity = Identity::parse(identity.as_deref()).ok_or_else(|| {
                crate::error::SiteError::Damaged {
                    detail: format!("table '{name}' has an unknown identity in fieldsync_tables"),
                }
            })?;
            let mut key = Vec::new();
            let mut cells = Vec::new();
            let mut local = None;
            let col_rows = cols.query_map([id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            for c in col_rows {
                let (role, col) = c?;
                match role.as_str() {
                    "key" => key.push(col),
                    "local" => local = Some(col),
                    _ => cells.push(col),
                }
            }
            tables.push(TrackedTable {
                id,
                name,
                key,
                cells,
                identity,
                local,
            });
        }
        Ok(Catalog { tables })
    }

    /// All tracked tables.
    pub fn tables(&self) -> &[TrackedTable] {
        &self.tables
    }

    /// Each tracked table's key columns, by its name in lower case: how a
    /// report writes a row's key as JSON ([`crate::json::row_key`]).
    pub fn key_columns(&self) -> crate::json::KeyColumns {
        self.tables
            .iter()
            .map(|t| (t.name.to_lowercase(), t.key.clone()))
            .collect()
    }

    /// True if nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// A tracked table by name (case-insensitive, as SQLite names are).
    pub fn by_name(&self, name: &str) -> Option<&TrackedTable> {
        self.tables
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
    }

    /// A tracked table by id.
    pub fn by_id(&self, id: i64) -> Option<&TrackedTable> {
        self.tables.iter().find(|t| t.id == id)
    }

    /// Record a newly tracked table (laid out as `layout`), or new columns of
    /// a tracked one. Returns the table as now recorded.
    pub fn record(
        &mut self,
        conn: &Connection,
        shape: &TableShape,
        layout: &Layout,
    ) -> Result<TrackedTable, Error> {
        if let Some(existing) = self.by_name(&shape.name).cloned() {
            let live = check_compatible(conn, &existing, shape)?;
            let mut updated = existing.clone();
            for cell in live.cells.iter().filter(|c| !existing.cells.contains(c)) {
                updated.cells.push(cell.clone());
                conn.execute(
                    "INSERT INTO fieldsync_columns(tbl, role, pos, name) VALUES (?1, 'cell', ?2, ?3)",
                    params![updated.id, updated.cells.len() as i64, cell],
                )?;
            }
            if let Some(slot) = self.tables.iter_mut().find(|t| t.id == updated.id) {
                *slot = updated.clone();
            }
            return Ok(updated);
        }
        conn.execute(
            "INSERT INTO fieldsync_tables(name, identity) VALUES (?1, ?2)",
            params![&shape.name, layout.identity.as_str()],
        )?;
        let id = conn.last_insert_rowid();
        for (pos, k) in layout.key.iter().enumerate() {
            conn.execute(
                "INSERT INTO fieldsync_columns(tbl, role, pos, name) VALUES (?1, 'key', ?2, ?3)",
                params![id, pos as i64, k],
            )?;
        }
        if let Some(local) = &layout.local {
            conn.execute(
                "INSERT INTO fieldsync_columns(tbl, role, pos, name) VALUES (?1, 'local', 0, ?2)",
                params![id, local],
            )?;
        }
        for (i, c) in layout.cells.iter().enumerate() {
            conn.execute(
                "INSERT INTO fieldsync_columns(tbl, role, pos, name) VALUES (?1, 'cell', ?2, ?3)",
                params![id, (i + 1) as i64, c],
            )?;
        }
        let table = TrackedTable {
            id,
            name: shape.name.clone(),
            key: layout.key.clone(),
            cells: layout.cells.clone(),
            identity: layout.identity,
            local: layout.local.clone(),
        };
        self.tables.push(table.clone());
        Ok(table)
    }

    /// Put back what the catalog held of table `name` before a
    /// [`record`](Self::record) whose writes were rolled back: `before` as
    /// it was, or no entry if it was not tracked.
    pub fn restore(&mut self, name: &str, before: Option<TrackedTable>) {
        let at = self
            .tables
            .iter()
            .position(|t| t.name.eq_ignore_ascii_case(name));
        match (at, before) {
            (Some(i), Some(old)) => self.tables[i] = old,
            (Some(i), None) => {
                self.tables.remove(i);
            }
            (None, Some(old)) => self.tables.push(old),
            (None, None) => {}
        }
    }
}

/// A tracked table's shape now; a table that no longer exists is a change
/// fieldsync cannot follow.
pub(crate) fn live_shape(conn: &Connection, t: &TrackedTable) -> Result<TableShape, Error> {
    match table_shape(conn, &t.name) {
        Err(Error::Track(TrackError::NoSuchTable { .. })) => Err(TrackError::IncompatibleChange {
            table: t.name.clone(),
            detail: "the table no longer exists".to_owned(),
        }
        .into()),
        other => other,
    }
}

/// Check that a tracked table still has the shape that was recorded (for
/// `check`; the data path follows changes, [`crate::local::follow`]).
pub fn check_table_live(conn: &Connection, t: &TrackedTable) -> Result<(), Error> {
    let shape = live_shape(conn, t)?;
    let live = check_compatible(conn, t, &shape)?;
    if let Some(new) = live.cells.iter().find(|c| !t.cells.contains(c)) {
        return Err(TrackError::SchemaChanged {
            db: crate::catalog::store::db_arg(conn),
            table: t.name.clone(),
            detail: format!("new column '{new}'"),
        }
        .into());
    }
    Ok(())
}

/// The changes fieldsync can follow are added columns; anything else is
/// reported with what changed. Returns the table's layout now.
fn check_compatible(
    conn: &Connection,
    t: &TrackedTable,
    shape: &TableShape,
) -> Result<Layout, Error> {
    let live = layout_of(shape, t.identity, t.key.first().map(String::as_str))?;
    same_key(conn, t, &live)?;
    if let Some(gone) = t.cells.iter().find(|c| !live.cells.contains(c)) {
        return Err(TrackError::IncompatibleChange {
            table: t.name.clone(),
            detail: format!("column '{gone}' was removed or renamed"),
        }
        .into());
    }
    Ok(live)
}

/// Refuse a tracked table whose key (or local key) is no longer the one it
/// was tracked with: other instances find its rows by it.
pub(crate) fn same_key(conn: &Connection, t: &TrackedTable, live: &Layout) -> Result<(), Error> {
    let local_changed = match (&live.local, &t.local) {
        (Some(a), Some(b)) => !a.eq_ignore_ascii_case(b),
        (a, b) => a.is_some() != b.is_some(),
    };
    if live.key == t.key && !local_changed {
        return Ok(());
    }
    let show = |key: &[String], local: &Option<String>| {
        key.iter()
            .chain(local.iter())
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(TrackError::KeyChanged {
        db: crate::catalog::store::db_arg(conn),
        table: t.name.clone(),
        was: show(&t.key, &t.local),
        now: show(&live.key, &live.local),
    }
    .into())
}
