//! Introspection of the app's tables: columns, primary key, and whether
//! fieldsync can track them.
//!
//! This module only reads the app's schema (through SQLite's `pragma_*`
//! table-valued functions); it never changes it. What fieldsync remembers
//! about a tracked table lives in [`crate::catalog::tracked`].

use rusqlite::{Connection, OptionalExtension};

use crate::catalog::store::is_engine_table;
use crate::error::{Error, TrackError};

/// Prefix of every table, index and trigger fieldsync creates.
pub const ENGINE_PREFIX: &str = "fieldsync_";

/// One ordinary (not generated, not hidden) column of an app table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name as declared.
    pub name: String,
    /// Declared type, as written (may be empty).
    pub decl_type: String,
    /// Declared NOT NULL.
    pub not_null: bool,
    /// Position in the primary key (0-based), if the column is part of it.
    pub key_pos: Option<usize>,
}

/// The shape of an app table as fieldsync sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableShape {
    /// Table name as stored in the schema.
    pub name: String,
    /// Ordinary columns in declaration order.
    pub columns: Vec<Column>,
    /// Declared `WITHOUT ROWID`.
    pub without_rowid: bool,
}

impl TableShape {
    /// Key columns in primary-key order.
    pub fn key_columns(&self) -> Vec<&Column> {
        let mut keys: Vec<&Column> = self
            .columns
            .iter()
            .filter(|c| c.key_pos.is_some())
            .collect();
        keys.sort_by_key(|c| c.key_pos);
        keys
    }

    /// Non-key columns in declaration order: the cells fieldsync merges.
    pub fn cell_columns(&self) -> Vec<&Column> {
        self.columns
            .iter()
            .filter(|c| c.key_pos.is_none())
            .collect()
    }
}

/// A column's type affinity, by SQLite's rules for declared types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    /// Contains "INT".
    Integer,
    /// Contains "CHAR", "CLOB" or "TEXT".
    Text,
    /// Empty, or contains "BLOB": values are stored as given.
    Blob,
    /// Contains "REAL", "FLOA" or "DOUB".
    Real,
    /// Anything else.
    Numeric,
}

impl Affinity {
    /// The affinity of a declared type (section 3.1 of SQLite's datatype doc).
    pub fn of(decl_type: &str) -> Affinity {
        let t = decl_type.to_ascii_uppercase();
        if t.contains("INT") {
            Affinity::Integer
        } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
            Affinity::Text
        } else if t.is_empty() || t.contains("BLOB") {
            Affinity::Blob
        } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
            Affinity::Real
        } else {
            Affinity::Numeric
        }
    }
}

/// Quote an identifier for SQL: `"name"` with inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Look up a table by name (case-insensitively, as SQLite does) and read its
/// shape. Errors say why a name is not an ordinary table.
pub fn table_shape(conn: &Connection, name: &str) -> Result<TableShape, Error> {
    let found: Option<(String, String, bool)> = conn
        .query_row(
            "SELECT name, type, wr FROM pragma_table_list \
             WHERE schema = 'main' AND name = ?1 COLLATE NOCASE",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((stored_name, kind, without_rowid)) = found else {
        return Err(TrackError::NoSuchTable {
            table: name.to_owned(),
        }
        .into());
    };
    if stored_name.to_ascii_lowercase().starts_with(ENGINE_PREFIX) && !is_engine_table(&stored_name)
    {
        return Err(TrackError::ReservedName { table: stored_name }.into());
    }
    if stored_name.to_ascii_lowercase().starts_with(ENGINE_PREFIX)
        || stored_name.to_ascii_lowercase().starts_with("sqlite_")
    {
        return Err(TrackError::EngineTable { table: stored_name }.into());
    }
    if kind != "table" {
        let kind = match kind.as_str() {
            "virtual" => "virtual table".to_owned(),
            other => other.to_owned(),
        };
        return Err(TrackError::NotATable {
            table: stored_name,
            kind,
        }
        .into());
    }
    let mut stmt = conn.prepare(
        "SELECT name, type, \"notnull\", pk, hidden FROM pragma_table_xinfo(?1) ORDER BY cid",
    )?;
    let columns = stmt
        .query_map([&stored_name], |r| {
            let pk: i64 = r.get(3)?;
            let hidden: i64 = r.get(4)?;
            Ok((
                Column {
                    name: r.get(0)?,
                    decl_type: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    not_null: r.get(2)?,
                    key_pos: (pk > 0).then(|| (pk - 1) as usize),
                },
                hidden,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        // Generated and hidden columns are computed, never written.
        .filter(|(_, hidden)| *hidden == 0)
        .map(|(c, _)| c)
        .collect();
    Ok(TableShape {
        name: stored_name,
        columns,
        without_rowid,
    })
}

/// Check that a table's primary key compares byte for byte, as a key
/// identifying rows on every instance must.
pub fn check_key_collation(conn: &Connection, shape: &TableShape) -> Result<(), Error> {
    // The key index carries the collation each key column compares with.
    let index: Option<String> = conn
        .query_row(
            "SELECT name FROM pragma_index_list(?1) WHERE origin = 'pk'",
            [&shape.name],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(index) = index {
        let mut stmt =
            conn.prepare("SELECT name, coll FROM pragma_index_xinfo(?1) WHERE key = 1")?;
        let rows = stmt.query_map([&index], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
            ))
        })?;
        for row in rows {
            let (column, coll) = row?;
            let coll = coll.unwrap_or_else(|| "BINARY".to_owned());
            if !coll.eq_ignore_ascii_case("BINARY") {
                return Err(TrackError::KeyCollation {
                    table: shape.name.clone(),
                    column: column.unwrap_or_default(),
                    collation: coll,
                }
                .into());
            }
        }
    }
    Ok(())
}

/// Names of the app's ordinary tables (not fieldsync's, not SQLite's), in
/// the order they were created.
pub fn app_tables(conn: &Connection) -> Result<Vec<String>, Error> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND name NOT LIKE 'fieldsync\\_%' ESCAPE '\\' ORDER BY rowid",
    )?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // Virtual tables appear in sqlite_schema as type 'table' too.
    let mut out = Vec::new();
    for name in names {
        let kind: Option<String> = conn
            .query_row(
                "SELECT type FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
                [&name],
                |r| r.get(0),
            )
            .optional()?;
        if kind.as_deref() == Some("table") {
            out.push(name);
        }
    }
    Ok(out)
}

/// The tables `track --all` cannot take, each with the reason, in the
/// order they were created: virtual tables, and app tables named with
/// fieldsync's prefix. fieldsync's own tables, SQLite's, and the tables
/// a virtual table keeps its data in are not listed.
pub fn untrackable_tables(conn: &Connection) -> Result<Vec<(String, TrackError)>, Error> {
    let mut stmt = conn.prepare(
        "SELECT s.name, l.type FROM sqlite_schema AS s \
         JOIN pragma_table_list AS l ON l.schema = 'main' AND l.name = s.name \
         WHERE s.type = 'table' AND s.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY s.rowid",
    )?;
    let tables = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for (name, kind) in tables {
        let why = if name.to_ascii_lowercase().starts_with(ENGINE_PREFIX) {
            if is_engine_table(&name) {
                continue;
            }
            TrackError::ReservedName {
                table: name.clone(),
            }
        } else if kind == "virtual" {
            TrackError::NotATable {
                table: name.clone(),
                kind: "virtual table".to_owned(),
            }
        } else {
            continue;
        };
        out.push((name, why));
    }
    Ok(out)
}

/// A table's schema version (spec/schema.md, "Schema versions"): the first
/// 16 hex digits of a BLAKE3 hash over its columns (name, declared type,
/// primary-key position, NOT NULL, default; in name order, so the order
/// columns were added in does not matter) and its indexes (name,
/// uniqueness, columns). Two instances whose table has the same version
/// need no schema change from each other. `None` if there is no such table.
pub fn schema_version(conn: &Connection, table: &str) -> Result<Option<String>, Error> {
    let mut columns: Vec<String> = conn
        .prepare_cached(
            "SELECT lower(name), upper(type), pk, \"notnull\", ifnull(dflt_value, '') \
             FROM pragma_table_xinfo(?1) WHERE hidden = 0",
        )?
        .query_map([table], |r| {
            Ok(format!(
                "{}\x1f{}\x1f{}\x1f{}\x1f{}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if columns.is_empty() {
        return Ok(None);
    }
    columns.sort();
    let mut indexes: Vec<String> = conn
        .prepare_cached(
            "SELECT lower(l.name) || '\x1f' || l.\"unique\" || '\x1f' || \
               (SELECT group_concat(lower(ifnull(i.name, '')), ',') FROM \
                 (SELECT name FROM pragma_index_info(l.name) ORDER BY seqno) AS i) \
             FROM pragma_index_list(?1) AS l WHERE l.origin = 'c'",
        )?
        .query_map([table], |r| r.get::<_, Option<String>>(0))?
        .filter_map(|r| r.transpose())
        .collect::<rusqlite::Result<_>>()?;
    indexes.sort();
    let mut hasher = blake3::Hasher::new();
    for c in &columns {
        hasher.update(c.as_bytes());
        hasher.update(b"\x1e");
    }
    hasher.update(b"\x1d");
    for i in &indexes {
        hasher.update(i.as_bytes());
        hasher.update(b"\x1e");
    }
    Ok(Some(hasher.finalize().to_hex()[..16].to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::store::memory_db as conn;

    #[test]
    fn reads_composite_keys_in_key_order() -> Result<(), Error> {
        let c = conn("CREATE TABLE m(a TEXT, b BLOB, v, PRIMARY KEY(b, a));")?;
        let shape = table_shape(&c, "M")?;
        assert_eq!(shape.name, "m");
        let keys: Vec<_> = shape.key_columns().iter().map(|c| c.name.clone()).collect();
        assert_eq!(keys, ["b", "a"]);
        assert_eq!(shape.cell_columns().len(), 1);
        check_key_collation(&c, &shape)
    }

    #[test]
    fn refuses_keys_that_do_not_compare_byte_for_byte() -> Result<(), Error> {
        let c = conn(
            "CREATE TABLE nocase(code TEXT COLLATE NOCASE PRIMARY KEY, v);
             CREATE TABLE intkey_wr(id INTEGER PRIMARY KEY, v) WITHOUT ROWID;
             CREATE VIEW vw AS SELECT 1;",
        )?;
        let err = |name: &str| -> Result<String, Error> {
            let shape = table_shape(&c, name)?;
            Ok(check_key_collation(&c, &shape)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default())
        };
        assert!(err("nocase")?.contains("COLLATE NOCASE"));
        assert_eq!(err("intkey_wr")?, "");
        assert!(matches!(
            table_shape(&c, "vw"),
            Err(Error::Track(TrackError::NotATable { .. }))
        ));
        assert!(matches!(
            table_shape(&c, "nope"),
            Err(Error::Track(TrackError::NoSuchTable { .. }))
        ));
        Ok(())
    }

    #[test]
    fn generated_columns_are_not_cells() -> Result<(), Error> {
        let c =
            conn("CREATE TABLE g(id TEXT PRIMARY KEY, a INT, b INT GENERATED ALWAYS AS (a*2));")?;
        let shape = table_shape(&c, "g")?;
        assert_eq!(shape.columns.len(), 2);
        Ok(())
    }

    #[test]
    fn lists_app_tables_only() -> Result<(), Error> {
        let c = conn(
            "CREATE TABLE a(id TEXT PRIMARY KEY); CREATE TABLE fieldsync_x(k);
             CREATE VIEW v AS SELECT 1; CREATE TABLE b(id TEXT PRIMARY KEY);",
        )?;
        assert_eq!(app_tables(&c)?, ["a", "b"]);
        Ok(())
    }

    /// `track --all` reports virtual tables and app tables named with
    /// fieldsync's prefix; not fieldsync's own tables, SQLite's, or the
    /// tables a virtual table keeps its data in.
    #[test]
    fn lists_the_tables_track_all_cannot_take() -> Result<(), Error> {
        let c = conn(
            "CREATE TABLE a(id TEXT PRIMARY KEY); CREATE TABLE Fieldsync_Notes(k);
             CREATE VIRTUAL TABLE r USING rtree(id, x0, x1);
             CREATE TABLE b(id INTEGER PRIMARY KEY AUTOINCREMENT);",
        )?;
        crate::catalog::store::create_engine_tables(&c)?;
        let found: Vec<(String, String)> = untrackable_tables(&c)?
            .into_iter()
            .map(|(t, why)| (t, why.to_string()))
            .collect();
        let names: Vec<&str> = found.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, ["Fieldsync_Notes", "r"], "{found:?}");
        assert!(found[0].1.contains("kept for fieldsync's own tables"));
        assert!(found[1].1.contains("virtual table"));
        assert!(matches!(
            table_shape(&c, "fieldsync_notes"),
            Err(Error::Track(TrackError::ReservedName { .. }))
        ));
        assert!(matches!(
            table_shape(&c, "fieldsync_log"),
            Err(Error::Track(TrackError::EngineTable { .. }))
        ));
        Ok(())
    }
}
