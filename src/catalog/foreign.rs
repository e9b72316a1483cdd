//! Foreign keys among the app's tables, as import sees them: which rows a
//! written row points to, and which rows point to a deleted one.
//!
//! Import writes with `PRAGMA foreign_keys` off, because rows of one bundle
//! (and of bundles from different instances) arrive in no useful order: a
//! village may come before its district. Instead, every row import writes
//! into a table with foreign keys is checked here before its change is
//! recorded, so the database never keeps a dangling reference: a row whose
//! parent is missing, or a delete that would leave children pointing at
//! nothing, is retried after the rest of the bundle and quarantined if it
//! still does not fit ([`crate::receive::quarantine`]). The checks mirror SQLite's
//! own: a reference with a NULL column points at nothing and is allowed; the
//! parent columns are the ones the constraint names, or the parent's primary
//! key.
//!
//! Only references between tracked tables are followed. A reference to a
//! table or column that does not exist, or to a table that is not tracked,
//! is a plain value: SQLite itself never checks it (it cannot), and neither
//! does import (spec/quarantine.md, "References").

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params_from_iter};

use crate::base::value::{Value, key_literal};
use crate::catalog::schema::quote_ident;
use crate::catalog::tracked::TrackedTable;
use crate::error::Error;

/// One `FOREIGN KEY (from…) REFERENCES parent(to…)` constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// The referencing table.
    pub child: String,
    /// Its columns.
    pub from: Vec<String>,
    /// The referenced table.
    pub parent: String,
    /// The referenced columns (the named ones, or the parent's primary
    /// key), all present in the parent.
    pub to: Vec<String>,
    /// The `ON DELETE` action as SQLite reports it (`CASCADE`, `SET NULL`,
    /// `SET DEFAULT`, `RESTRICT`, `NO ACTION`).
    pub on_delete: String,
}

/// The foreign keys touching the tracked tables, both ways.
#[derive(Debug, Default)]
pub struct ForeignKeys {
    /// Per table name, the constraints it declares (it is the child).
    outgoing: BTreeMap<String, Vec<ForeignKey>>,
    /// Per table name, the constraints that reference it (it is the parent).
    incoming: BTreeMap<String, Vec<ForeignKey>>,
}

/// Whether a child row (its table, its SQL key) may be changed by an `ON
/// DELETE` action ([`ForeignKeys::cascade`]).
pub type MayAct<'a> = dyn FnMut(&TrackedTable, &[Value]) -> Result<bool, Error> + 'a;

/// A reference that does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// The written row points at a parent row that is not there.
    MissingParent {
        /// The parent table.
        parent: String,
        /// The parent key it points at, as SQL literals.
        key: String,
    },
    /// The deleted row still has children.
    StillReferenced {
        /// The child table.
        child: String,
        /// How many child rows point at it.
        rows: u64,
    },
}

impl ForeignKeys {
    /// Read the constraints between tracked tables that can be followed
    /// (the parent and every referenced column exist).
    pub fn load(conn: &Connection, tracked: &[TrackedTable]) -> Result<ForeignKeys, Error> {
        let mut fks = ForeignKeys::default();
        let is_tracked = |name: &str| tracked.iter().any(|t| t.name.eq_ignore_ascii_case(name));
        for child in tracked {
            for fk in followable(conn, &child.name)? {
                if !is_tracked(&fk.parent) {
                    continue;
                }
                fks.outgoing
                    .entry(child.name.to_ascii_lowercase())
                    .or_default()
                    .push(fk.clone());
                fks.incoming
                    .entry(fk.parent.to_ascii_lowercase())
                    .or_default()
                    .push(fk);
            }
        }
        Ok(fks)
    }

    /// The constraints `table` declares towards other tracked tables.
    pub fn outgoing(&self, table: &str) -> &[ForeignKey] {
        self.outgoing
            .get(&table.to_ascii_lowercase())
            .map_or(&[], Vec::as_slice)
    }

    /// The tables whose rows may refer to rows of `table`.
    pub fn children_of<'a>(&'a self, table: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.incoming
            .get(&table.to_ascii_lowercase())
            .into_iter()
            .flatten()
            .map(|fk| fk.child.as_str())
    }

    /// True if rows of `table` need checking when written or deleted.
    pub fn involves(&self, table: &str) -> bool {
        if self.outgoing.is_empty() && self.incoming.is_empty() {
            return false;
        }
        let t = table.to_ascii_lowercase();
        self.outgoing.contains_key(&t) || self.incoming.contains_key(&t)
    }

    /// Check the references of the row of `table` found by `key` (its SQL
    /// key, [`TrackedTable::sql_key`]) as it is now in the database, after a
    /// write. With `written`, only the constraints that involve one of those
    /// columns; constraints involving a column of `unchecked` (its
    /// reference pointed at nothing at the sender either) are skipped.
    pub fn check_row(
        &self,
        conn: &Connection,
        table: &TrackedTable,
        key: &[Value],
        written: Option<&[String]>,
        unchecked: &[String],
    ) -> Result<Option<Broken>, Error> {
        let Some(fks) = self.outgoing.get(&table.name.to_ascii_lowercase()) else {
            return Ok(None);
        };
        let key_pred = table
            .sql_key()
            .iter()
            .enumerate()
            .map(|(i, k)| format!("c.{} = ?{}", quote_ident(k), i + 1))
            .collect::<Vec<_>>()
            .join(" AND ");
        for fk in fks {
            if written.is_some_and(|w| !touches(&fk.from, w)) || touches(&fk.from, unchecked) {
                continue;
            }
            let from: Vec<String> = fk
                .from
                .iter()
                .map(|c| format!("c.{}", quote_ident(c)))
                .collect();
            let not_null = from
                .iter()
                .map(|c| format!("{c} IS NOT NULL"))
                .collect::<Vec<_>>()
                .join(" AND ");
            let matches = fk
                .to
                .iter()
                .zip(&from)
                .map(|(t, f)| format!("p.{} = {f}", quote_ident(t)))
                .collect::<Vec<_>>()
                .join(" AND ");
            let sql = format!(
                "SELECT {} FROM {} AS c WHERE {key_pred} AND {not_null} \
                 AND NOT EXISTS (SELECT 1 FROM {} AS p WHERE {matches})",
                from.join(", "),
                quote_ident(&table.name),
                quote_ident(&fk.parent),
            );
            let dangling: Option<Vec<Value>> = conn
                .prepare_cached(&sql)?
                .query_row(params_from_iter(key.iter()), |r| {
                    (0..from.len()).map(|i| r.get::<_, Value>(i)).collect()
                })
                .optional()?;
            if let Some(values) = dangling {
                return Ok(Some(Broken::MissingParent {
                    parent: fk.parent.clone(),
                    key: key_literal(&values),
                }));
            }
        }
        Ok(None)
    }

    /// The constraints whose children point at `table`; with `changed`,
    /// only those pointing at one of the columns rewritten (a rewrite only
    /// matters for the columns children point at).
    fn pointing_at<'a>(
        &'a self,
        table: &TrackedTable,
        changed: Option<&'a [String]>,
    ) -> impl Iterator<Item = &'a ForeignKey> + 'a {
        self.incoming
            .get(&table.name.to_ascii_lowercase())
            .into_iter()
            .flatten()
            .filter(move |fk| changed.is_none_or(|changed| touches(&fk.to, changed)))
    }

    /// Before a row of `table` is deleted (or, with `changed`, before those
    /// columns of it are rewritten): the children that point at it and at no
    /// other row, which the change would leave dangling. Matching uses the
    /// parent column's collation, as SQLite's own check does.
    pub fn would_orphan(
        &self,
        conn: &Connection,
        table: &TrackedTable,
        key: &[Value],
        changed: Option<&[String]>,
    ) -> Result<Option<Broken>, Error> {
        for fk in self.pointing_at(table, changed) {
            let sql = only_children_sql(fk, table, "count(*)");
            let rows: i64 = conn
                .prepare_cached(&sql)?
                .query_row(params_from_iter(key.iter()), |r| r.get(0))?;
            if rows > 0 {
                return Ok(Some(Broken::StillReferenced {
                    child: fk.child.clone(),
                    rows: rows as u64,
                }));
            }
        }
        Ok(None)
    }

    /// Before the row of `table` at `key` (its SQL key) is deleted: carry
    /// out the `ON DELETE CASCADE` and `SET NULL` actions of the constraints
    /// whose children still point at it (and at no other row), as SQLite
    /// would with foreign keys on, children's children first. `may_act`
    /// says whether a child row may be deleted or changed so (only rows
    /// the deleting instance did not know). Returns false, having changed
    /// nothing the caller needs to keep, if a constraint without such an
    /// action still has children, or `may_act` refuses one: the caller
    /// rolls back.
    /// The caller enables triggers, so the children's deletes and updates
    /// are captured as this instance's changes.
    pub fn cascade(
        &self,
        conn: &Connection,
        tables: &[TrackedTable],
        table: &TrackedTable,
        key: &[Value],
        depth: usize,
        may_act: &mut MayAct<'_>,
    ) -> Result<bool, Error> {
        const MAX_DEPTH: usize = 64;
        let Some(fks) = self.incoming.get(&table.name.to_ascii_lowercase()) else {
            return Ok(true);
        };
        if depth > MAX_DEPTH {
            return Ok(false);
        }
        for fk in fks {
            let Some(child) = tables
                .iter()
                .find(|t| t.name.eq_ignore_ascii_case(&fk.child))
            else {
                continue;
            };
            let child_key = child
                .sql_key()
                .iter()
                .map(|k| format!("c.{}", quote_ident(k)))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = only_children_sql(fk, table, &child_key);
            let n = child.sql_key_len();
            let children: Vec<Vec<Value>> = conn
                .prepare(&sql)?
                .query_map(params_from_iter(key.iter()), |r| {
                    (0..n).map(|i| r.get::<_, Value>(i)).collect()
                })?
                .collect::<rusqlite::Result<_>>()?;
            if children.is_empty() {
                continue;
            }
            for c in &children {
                if !may_act(child, c)? {
                    return Ok(false);
                }
            }
            match fk.on_delete.to_ascii_uppercase().as_str() {
                "CASCADE" => {
                    for c in &children {
                        if !self.cascade(conn, tables, child, c, depth + 1, may_act)? {
                            return Ok(false);
                        }
                        conn.prepare(&format!(
                            "DELETE FROM {} WHERE {}",
                            quote_ident(&child.name),
                            child.key_predicate()
                        ))?
                        .execute(params_from_iter(c.iter()))?;
                    }
                }
                "SET NULL" => {
                    let set = fk
                        .from
                        .iter()
                        .map(|f| format!("{} = NULL", quote_ident(f)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    for c in &children {
                        conn.prepare(&format!(
                            "UPDATE {} SET {set} WHERE {}",
                            quote_ident(&child.name),
                            child.key_predicate()
                        ))?
                        .execute(params_from_iter(c.iter()))?;
                    }
                }
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// After rows of `table` were deleted (`changed` none) or the columns
    /// `changed` rewritten: children pointing at no row at all. A full scan
    /// of each child table, made only in the rare cases that need it (a
    /// rewritten code, changes applied jointly).
    pub fn dangling_children(
        &self,
        conn: &Connection,
        table: &TrackedTable,
        changed: Option<&[String]>,
    ) -> Result<Option<Broken>, Error> {
        for fk in self.pointing_at(table, changed) {
            let to = &fk.to;
            let not_null = fk
                .from
                .iter()
                .map(|f| format!("c.{} IS NOT NULL", quote_ident(f)))
                .collect::<Vec<_>>()
                .join(" AND ");
            let on = matching("p", to, &fk.from);
            let sql = format!(
                "SELECT count(*) FROM {} AS c WHERE {not_null} AND NOT EXISTS (SELECT 1 FROM {} AS p WHERE {on})",
                quote_ident(&fk.child),
                quote_ident(&fk.parent),
            );
            let rows: i64 = conn.prepare_cached(&sql)?.query_row([], |r| r.get(0))?;
            if rows > 0 {
                return Ok(Some(Broken::StillReferenced {
                    child: fk.child.clone(),
                    rows: rows as u64,
                }));
            }
        }
        Ok(None)
    }

    /// True if some child points at `columns` of `table` that are not its
    /// key (a rewrite of them needs checking).
    pub fn referenced_columns(&self, table: &TrackedTable) -> Vec<String> {
        let mut out = Vec::new();
        let key = table.sql_key();
        if let Some(fks) = self.incoming.get(&table.name.to_ascii_lowercase()) {
            for fk in fks {
                for c in &fk.to {
                    if !key.iter().any(|k| k.eq_ignore_ascii_case(c)) && !out.contains(c) {
                        out.push(c.clone());
                    }
                }
            }
        }
        out
    }
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Broken::MissingParent { parent, key } => write!(
                f,
                "it points to {parent} row {key}, which is not here (deleted here, or not received yet)"
            ),
            Broken::StillReferenced { child, rows } => {
                write!(
                    f,
                    "{} of {child} here still {} to it",
                    crate::error::count(*rows, "row", "rows"),
                    if *rows == 1 { "points" } else { "point" }
                )
            }
        }
    }
}

/// `SELECT {what}` over the children of `fk` that point at the row of
/// `table` whose SQL key is bound as `?1, ?2, …` and at no other row of it:
/// the children a delete (or a rewrite of the referenced columns) would
/// leave dangling. A row that is its own parent goes with it, so it is not
/// its own child here.
fn only_children_sql(fk: &ForeignKey, table: &TrackedTable, what: &str) -> String {
    let this = |alias: &str| {
        table
            .sql_key()
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{alias}.{} IS ?{}", quote_ident(k), i + 1))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let not_itself = if fk.child.eq_ignore_ascii_case(&table.name) {
        format!(" AND NOT ({})", this("c"))
    } else {
        String::new()
    };
    format!(
        "SELECT {what} FROM {parent} AS p JOIN {child} AS c ON {on} \
         WHERE {this_p}{not_itself} \
         AND NOT EXISTS (SELECT 1 FROM {parent} AS o WHERE {on_o} AND NOT ({this_o}))",
        parent = quote_ident(&fk.parent),
        child = quote_ident(&fk.child),
        on = matching("p", &fk.to, &fk.from),
        this_p = this("p"),
        on_o = matching("o", &fk.to, &fk.from),
        this_o = this("o"),
    )
}

/// `p.to1 = c.from1 AND …`: a parent row (alias `parent`) matching a child
/// row (alias `c`), compared with the parent column's collation (its left
/// operand's), as SQLite's own check compares.
fn matching(parent: &str, to: &[String], from: &[String]) -> String {
    to.iter()
        .zip(from)
        .map(|(t, f)| format!("{parent}.{} = c.{}", quote_ident(t), quote_ident(f)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// True if a rewrite of `changed` touches one of the columns `to`.
fn touches(to: &[String], changed: &[String]) -> bool {
    to.iter()
        .any(|c| changed.iter().any(|x| x.eq_ignore_ascii_case(c)))
}

/// The constraints `table` declares, one entry per constraint, with the
/// referenced columns resolved; those that cannot be followed (the parent
/// table or a referenced column does not exist, or the parent has no key
/// to refer to) are left out, as SQLite leaves them unchecked.
pub fn followable(conn: &Connection, table: &str) -> Result<Vec<ForeignKey>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, \"table\", \"from\", \"to\", on_delete FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
    )?;
    let rows = stmt.query_map([table], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    let mut out: Vec<(i64, ForeignKey)> = Vec::new();
    for row in rows {
        let (id, parent, from, to, on_delete) = row?;
        match out.last_mut() {
            Some((last, fk)) if *last == id => {
                fk.from.push(from);
                fk.to.extend(to);
            }
            _ => out.push((
                id,
                ForeignKey {
                    child: table.to_owned(),
                    from: vec![from],
                    parent,
                    to: to.into_iter().collect(),
                    on_delete,
                },
            )),
        }
    }
    let mut kept = Vec::new();
    for (_, mut fk) in out {
        let parent_cols: Vec<(String, i64)> = conn
            .prepare_cached("SELECT name, pk FROM pragma_table_info(?1)")?
            .query_map([&fk.parent], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        if parent_cols.is_empty() {
            continue; // no such table
        }
        if fk.to.len() != fk.from.len() {
            let mut key: Vec<(i64, String)> = parent_cols
                .iter()
                .filter(|(_, pk)| *pk > 0)
                .map(|(n, pk)| (*pk, n.clone()))
                .collect();
            key.sort();
            fk.to = key.into_iter().map(|(_, n)| n).collect();
        }
        let all_there = fk.to.len() == fk.from.len()
            && fk
                .to
                .iter()
                .all(|t| parent_cols.iter().any(|(n, _)| n.eq_ignore_ascii_case(t)));
        if all_there {
            kept.push(fk);
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(conn: &Connection, name: &str) -> Result<TrackedTable, Error> {
        let shape = crate::catalog::schema::table_shape(conn, name)?;
        Ok(TrackedTable {
            id: 1,
            name: name.to_owned(),
            key: shape.key_columns().iter().map(|c| c.name.clone()).collect(),
            cells: shape
                .cell_columns()
                .iter()
                .map(|c| c.name.clone())
                .collect(),
            identity: crate::catalog::layout::Identity::Key,
            local: None,
        })
    }

    #[test]
    fn a_row_pointing_at_a_missing_parent_is_found() -> Result<(), Error> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(
            "PRAGMA foreign_keys = OFF;
             CREATE TABLE loc(id TEXT PRIMARY KEY, parent TEXT REFERENCES loc(id), name TEXT);
             INSERT INTO loc VALUES ('a', NULL, 'A'), ('b', 'a', 'B'), ('c', 'x', 'C');",
        )?;
        let loc = table(&conn, "loc")?;
        let fks = ForeignKeys::load(&conn, std::slice::from_ref(&loc))?;
        assert!(fks.involves("loc"));
        assert_eq!(
            fks.check_row(&conn, &loc, &[Value::text("a")], None, &[])?,
            None
        );
        assert_eq!(
            fks.check_row(&conn, &loc, &[Value::text("b")], None, &[])?,
            None
        );
        assert_eq!(
            fks.check_row(&conn, &loc, &[Value::text("c")], None, &[])?,
            Some(Broken::MissingParent {
                parent: "loc".into(),
                key: "'x'".into()
            })
        );
        Ok(())
    }

    #[test]
    fn a_deleted_parent_with_children_is_found() -> Result<(), Error> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(
            "PRAGMA foreign_keys = OFF;
             CREATE TABLE loc(id TEXT PRIMARY KEY, parent TEXT REFERENCES loc);
             INSERT INTO loc VALUES ('a', NULL), ('b', 'a'), ('c', 'c');",
        )?;
        let loc = table(&conn, "loc")?;
        let fks = ForeignKeys::load(&conn, std::slice::from_ref(&loc))?;
        assert_eq!(
            fks.would_orphan(&conn, &loc, &[Value::text("a")], None)?,
            Some(Broken::StillReferenced {
                child: "loc".into(),
                rows: 1
            })
        );
        assert_eq!(
            fks.would_orphan(&conn, &loc, &[Value::text("c")], None)?,
            None
        );
        Ok(())
    }
}
