//! The catalog of tracked tables: which app tables fieldsync follows, their
//! key columns, and the bit each non-key column was given.
//!
//! Bits are assigned once, in the order columns were first tracked, and never
//! renumbered, so the change log stays valid when the app adds a column.
//! Installing the triggers is [`crate::capture`]'s job.

use rusqlite::{Connection, params};

use crate::error::{Error, TrackError};
use crate::schema::{TableShape, quote_ident, table_shape};

/// One tracked table as recorded in `fieldsync_tables` / `fieldsync_columns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedTable {
    /// `fieldsync_tables.id`.
    pub id: i64,
    /// Table name.
    pub name: String,
    /// Key columns in primary-key order.
    pub key: Vec<String>,
    /// Non-key columns; column `cells[i]` has bit `i + 1`.
    pub cells: Vec<String>,
}

impl TrackedTable {
    /// The bit of a non-key column.
    pub fn bit_of(&self, column: &str) -> Option<usize> {
        self.cells.iter().position(|c| c == column).map(|i| i + 1)
    }

    /// The `WHERE` clause matching one row by key, with parameters `?1..?n`.
    pub fn key_predicate(&self) -> String {
        self.key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{} = ?{}", quote_ident(k), i + 1))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// `SELECT` of every cell column of one row, by key.
    pub fn select_cells_sql(&self) -> String {
        let cols = if self.cells.is_empty() {
            "1".to_owned()
        } else {
            self.cells
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "SELECT {cols} FROM {} WHERE {}",
            quote_ident(&self.name),
            self.key_predicate()
        )
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
        let mut stmt = conn.prepare("SELECT id, name FROM fieldsync_tables ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut cols = conn.prepare(
            "SELECT role, name FROM fieldsync_columns WHERE tbl = ?1 ORDER BY role, pos",
        )?;
        for (id, name) in rows {
            let mut key = Vec::new();
            let mut cells = Vec::new();
            let col_rows = cols.query_map([id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            for c in col_rows {
                let (role, col) = c?;
                if role == "key" {
                    key.push(col);
                } else {
                    cells.push(col);
                }
            }
            tables.push(TrackedTable {
                id,
                name,
                key,
                cells,
            });
        }
        Ok(Catalog { tables })
    }

    /// All tracked tables.
    pub fn tables(&self) -> &[TrackedTable] {
        &self.tables
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

    /// Record a newly tracked table, or new columns of a tracked one.
    /// Returns the table as now recorded.
    pub fn record(&mut self, conn: &Connection, shape: &TableShape) -> Result<TrackedTable, Error> {
        let key: Vec<String> = shape.key_columns().iter().map(|c| c.name.clone()).collect();
        let live_cells: Vec<String> = shape
            .cell_columns()
            .iter()
            .map(|c| c.name.clone())
            .collect();
        if let Some(existing) = self.by_name(&shape.name).cloned() {
            check_compatible(&existing, shape)?;
            let mut updated = existing.clone();
            for cell in live_cells.iter().filter(|c| !existing.cells.contains(c)) {
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
            "INSERT INTO fieldsync_tables(name) VALUES (?1)",
            [&shape.name],
        )?;
        let id = conn.last_insert_rowid();
        for (pos, k) in key.iter().enumerate() {
            conn.execute(
                "INSERT INTO fieldsync_columns(tbl, role, pos, name) VALUES (?1, 'key', ?2, ?3)",
                params![id, pos as i64, k],
            )?;
        }
        for (i, c) in live_cells.iter().enumerate() {
            conn.execute(
                "INSERT INTO fieldsync_columns(tbl, role, pos, name) VALUES (?1, 'cell', ?2, ?3)",
                params![id, (i + 1) as i64, c],
            )?;
        }
        let table = TrackedTable {
            id,
            name: shape.name.clone(),
            key,
            cells: live_cells,
        };
        self.tables.push(table.clone());
        Ok(table)
    }

    /// Check that every tracked table still has the shape that was recorded,
    /// so triggers, log and bundles agree with the app's schema.
    pub fn check_live(&self, conn: &Connection) -> Result<(), Error> {
        for t in &self.tables {
            check_table_live(conn, t)?;
        }
        Ok(())
    }
}

/// [`Catalog::check_live`] for one table.
pub fn check_table_live(conn: &Connection, t: &TrackedTable) -> Result<(), Error> {
    let shape = match table_shape(conn, &t.name) {
        Ok(s) => s,
        Err(Error::Track(TrackError::NoSuchTable { .. })) => {
            return Err(TrackError::IncompatibleChange {
                table: t.name.clone(),
                detail: "the table no longer exists".to_owned(),
            }
            .into());
        }
        Err(e) => return Err(e),
    };
    check_compatible(t, &shape)?;
    if let Some(new) = shape
        .cell_columns()
        .iter()
        .find(|c| !t.cells.contains(&c.name))
    {
        return Err(TrackError::SchemaChanged {
            db: crate::store::db_arg(conn),
            table: t.name.clone(),
            detail: format!("new column '{}'", new.name),
        }
        .into());
    }
    Ok(())
}

/// The changes fieldsync can follow are added columns; anything else is
/// reported with what changed.
fn check_compatible(t: &TrackedTable, shape: &TableShape) -> Result<(), Error> {
    let key: Vec<String> = shape.key_columns().iter().map(|c| c.name.clone()).collect();
    if key != t.key {
        return Err(TrackError::IncompatibleChange {
            table: t.name.clone(),
            detail: format!(
                "primary key was ({}), is now ({})",
                t.key.join(", "),
                key.join(", ")
            ),
        }
        .into());
    }
    let live: Vec<&str> = shape
        .cell_columns()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    if let Some(gone) = t.cells.iter().find(|c| !live.contains(&c.as_str())) {
        return Err(TrackError::IncompatibleChange {
            table: t.name.clone(),
            detail: format!("column '{gone}' was removed or renamed"),
        }
        .into());
    }
    Ok(())
}
