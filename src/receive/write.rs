//! Writing one merged change to the app table: the decision of the merge
//! (delete the row, or write some of its cells) carried out with the
//! row's references resolved to what they point at here, the references
//! it touches checked, and what the database refuses turned into a
//! [`Refusal`] that names what clashed. In a joint pass the reference
//! checks wait until every change of the pass is written ([`PostCheck`]).
//!
//! It writes the app table and the identity map only; the log, the
//! savepoint and the conflict log are [`crate::receive::apply`]'s.

use std::collections::HashSet;

use rusqlite::{Connection, params_from_iter};

use crate::base::colset::{ColSet, SENTINEL};
use crate::base::merge::{RowAction, RowState};
use crate::base::value::{Value, key_literal};
use crate::catalog::foreign::{Broken, ForeignKeys};
use crate::catalog::identity::{bind, locate, unbind};
use crate::catalog::layout::Identity;
use crate::catalog::refs::Tagged;
use crate::catalog::schema::quote_ident;
use crate::catalog::tracked::{Catalog, TrackedTable};
use crate::error::{BundleError, Error};
use crate::receive::applier::{Applier, PostCheck, RowRefs};
use crate::receive::quarantine::{Change, Reason, Refusal};

/// What [`write_row`] did.
pub(crate) enum Written {
    /// The decision is in the app table.
    Done,
    /// The database refused it; what was written of it is to be undone.
    Refused(Refusal),
    /// A row the log knows as live is not in the table; nothing was written.
    Vanished,
}

impl RowRefs {
    fn broken(
        &self,
        conn: &Connection,
        fks: &ForeignKeys,
        table: &TrackedTable,
    ) -> Result<Option<Broken>, Error> {
        fks.check_row(
            conn,
            table,
            &self.key,
            self.written.as_deref(),
            &self.unchecked,
        )
    }
}

/// Make the checks a joint pass noted, once all its changes are written:
/// first the references to rows of the pass, then every reference check.
/// Returns the entries (the first of each pair) whose references fail.
pub(crate) fn run_post_checks(
    conn: &Connection,
    fks: &ForeignKeys,
    catalog: &Catalog,
    checks: &[(usize, PostCheck)],
) -> Result<HashSet<usize>, Error> {
    let mut failed = HashSet::new();
    for (i, check) in checks {
        if let PostCheck::Resolve {
            table,
            key,
            column,
            parent,
            value,
        } = check
        {
            let t = &catalog.tables()[*table];
            if !set_ref(conn, catalog, t, key, column, parent, value)? {
                failed.insert(*i);
            }
        }
    }
    for (i, check) in checks {
        let broken = match check {
            PostCheck::Resolve { .. } => None,
            PostCheck::Row { table, refs } => refs.broken(conn, fks, &catalog.tables()[*table])?,
            PostCheck::Children { table, columns } => {
                fks.dangling_children(conn, &catalog.tables()[*table], columns.as_deref())?
            }
        };
        if broken.is_some() {
            failed.insert(*i);
        }
    }
    Ok(failed)
}

/// Write the merge's decision `action` for the change `c` (its row was
/// `before` in the log, is `after` now) to the app table, and check the
/// references it touches (or, in a joint pass, note the checks to make).
pub(crate) fn write_row(
    conn: &Connection,
    ap: &mut Applier,
    catalog: &Catalog,
    c: &Change,
    before: &RowState,
    after: &RowState,
    action: &RowAction,
) -> Result<Written, Error> {
    let row = Row {
        conn,
        catalog,
        table: &catalog.tables()[c.table],
        c,
    };
    // Where the row is in the app table (for a local-number table, only if
    // this database has it).
    let at = locate(conn, row.table, &c.pk, &c.key)?;
    match action {
        RowAction::None => Ok(Written::Done),
        RowAction::Delete => match at {
            Some(at) => row.delete(ap, &at),
            // Never here, or already gone: nothing to delete.
            None => Ok(Written::Done),
        },
        RowAction::Write(cells) => row.write(ap, cells, at, before, after),
    }
}

/// The change being written and its table: what every phase of
/// [`write_row`] reads.
struct Row<'a> {
    conn: &'a Connection,
    catalog: &'a Catalog,
    table: &'a TrackedTable,
    c: &'a Change,
}

/// The values a write carries, in the order of its cells.
struct Values<'a> {
    /// References resolved to what they point at here.
    values: Vec<Value>,
    /// Columns whose reference is not to be checked (dangling at the
    /// sender).
    unchecked: Vec<String>,
    /// References to a row not here (yet), written as NULL for now: the
    /// column, the table referred to, the tagged value and the refusal if
    /// the row stays missing.
    later: Vec<(String, &'a str, &'a Value, Refusal)>,
}

/// Where a write put the row.
enum Placed {
    /// At this SQL key.
    At(Vec<Value>),
    /// Nowhere: the database refused the write.
    Refused(Refusal),
    /// Nowhere: the row to update is not in the table.
    Vanished,
}

impl<'a> Row<'a> {
    /// Delete the row at `at`, unless children would be left pointing at
    /// nothing.
    fn delete(&self, ap: &mut Applier, at: &[Value]) -> Result<Written, Error> {
        match ap.joint.as_mut() {
            Some(checks) => checks.push((
                ap.current,
                PostCheck::Children {
                    table: self.c.table,
                    columns: None,
                },
            )),
            None => {
                if let Some(broken) = ap.fks.would_orphan(self.conn, self.table, at, None)? {
                    return Ok(Written::Refused(broken_refusal(broken)));
                }
            }
        }
        let sql = format!(
            "DELETE FROM {} WHERE {}",
            quote_ident(&self.table.name),
            self.table.key_predicate()
        );
        if let Err(e) = self
            .conn
            .prepare_cached(&sql)?
            .execute(params_from_iter(at.iter()))
        {
            return Ok(Written::Refused(self.refused(e, false)?));
        }
        if self.table.identity.mapped() {
            unbind(self.conn, self.table.id, &self.c.pk)?;
        }
        Ok(Written::Done)
    }

    /// Write `cells` of the row (at `at`, if it is here), then resolve the
    /// references left for later and check those the write touched.
    fn write(
        &self,
        ap: &mut Applier,
        cells: &ColSet,
        at: Option<Vec<Value>>,
        before: &RowState,
        after: &RowState,
    ) -> Result<Written, Error> {
        let values = self.values(cells)?;
        let children = self.children_to_check(ap, cells, at.as_deref(), before)?;
        // Only some cells of a row this instance never had: the insert
        // that created it is in a bundle not imported yet.
        let partial = after.holder(SENTINEL).is_none();
        let placed = if before.is_live() {
            self.update_live(ap, cells, at, &values.values)?
        } else if self.table.identity.mapped() {
            self.put_mapped(ap, cells, at, &values.values, partial)?
        } else {
            self.upsert(ap, cells, &values.values, partial)?
        };
        let at = match placed {
            Placed::At(at) => at,
            Placed::Refused(refusal) => return Ok(Written::Refused(refusal)),
            Placed::Vanished => return Ok(Written::Vanished),
        };
        if let Some(refusal) = self.resolve_later(ap, &at, values.later)? {
            return Ok(Written::Refused(refusal));
        }
        if self.table.identity == Identity::Content {
            crate::catalog::identity::refresh_sig(self.conn, self.table, &self.c.pk, &at[0])?;
        }
        let written: Option<Vec<String>> = before.is_live().then(|| {
            cells
                .iter()
                .filter_map(|b| self.table.cells.get(b - 1).cloned())
                .collect()
        });
        let refs = RowRefs {
            key: at,
            written,
            unchecked: values.unchecked,
        };
        self.check(ap, refs, children)
    }

    /// The values to write for `cells`: references resolved to what they
    /// point at here ([`crate::catalog::refs`]).
    fn values(&self, cells: &ColSet) -> Result<Values<'a>, Error> {
        let c: &'a Change = self.c;
        let mut out = Values {
            values: Vec::with_capacity(cells.len()),
            unchecked: Vec::new(),
            later: Vec::new(),
        };
        for bit in cells.iter() {
            let v = c
                .value(bit)
                .ok_or_else(|| malformed("a won cell has no value".into()))?;
            let Some(parent) = c.ref_parent(bit) else {
                out.values.push(v.clone());
                continue;
            };
            let column = &self.table.cells[bit - 1];
            match resolve_ref(self.conn, self.catalog, parent, v)? {
                Resolved::Here { value, checked } => {
                    if !checked {
                        out.unchecked.push(column.clone());
                    }
                    out.values.push(value);
                }
                // A row of this change's own making (it points at itself,
                // or at a row written with it in a joint pass): written as
                // NULL, resolved once the rows are written.
                Resolved::Missing(refusal) => {
                    out.later.push((column.clone(), parent, v, refusal));
                    out.values.push(Value::Null);
                }
            }
        }
        Ok(out)
    }

    /// The columns whose children to check once the row is written: those
    /// of an existing row that the write changes and other rows point at.
    /// Outside a joint pass only if a child points at the row now (after
    /// the write, the old values are gone).
    fn children_to_check(
        &self,
        ap: &Applier,
        cells: &ColSet,
        at: Option<&[Value]>,
        before: &RowState,
    ) -> Result<Option<Vec<String>>, Error> {
        if !before.is_live() {
            return Ok(None);
        }
        let rewritten: Vec<String> = cells
            .iter()
            .filter_map(|b| self.table.cells.get(b - 1))
            .filter(|name| {
                ap.referenced[self.c.table]
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(name))
            })
            .cloned()
            .collect();
        if rewritten.is_empty() {
            return Ok(None);
        }
        if ap.joint.is_some() {
            return Ok(Some(rewritten));
        }
        let Some(at) = at else {
            return Ok(None);
        };
        let orphans_possible = ap
            .fks
            .would_orphan(self.conn, self.table, at, Some(&rewritten))?
            .is_some();
        Ok(orphans_possible.then_some(rewritten))
    }

    /// A row the log knows as live should be in the table: UPDATE it, since
    /// an upsert would check NOT NULL on the cells it does not carry. Its
    /// row count tells if the row is gone.
    fn update_live(
        &self,
        ap: &mut Applier,
        cells: &ColSet,
        at: Option<Vec<Value>>,
        values: &[Value],
    ) -> Result<Placed, Error> {
        let Some(at) = at else {
            return Ok(Placed::Vanished);
        };
        Ok(
            match update(self.conn, ap, self.table, cells, &at, values) {
                Ok(true) => Placed::At(at),
                Ok(false) => Placed::Vanished,
                Err(e) => Placed::Refused(self.refused(e, false)?),
            },
        )
    }

    /// A row of a table identified by local numbers: updated if this
    /// database has it, otherwise inserted with the next local number of
    /// this database, which the app's own later inserts never reuse.
    fn put_mapped(
        &self,
        ap: &mut Applier,
        cells: &ColSet,
        at: Option<Vec<Value>>,
        values: &[Value],
        partial: bool,
    ) -> Result<Placed, Error> {
        if let Some(at) = at {
            match update(self.conn, ap, self.table, cells, &at, values) {
                Ok(true) => return Ok(Placed::At(at)),
                Ok(false) => {}
                Err(e) => return Ok(Placed::Refused(self.refused(e, partial)?)),
            }
        }
        let (table, c) = (self.table, self.c);
        let sql = ap
            .sql_cache
            .entry((table.id, cells.clone(), true))
            .or_insert_with(|| insert_sql(table, cells, ap.local_auto[c.table]));
        let inserted = self
            .conn
            .prepare_cached(sql)?
            .query_row(params_from_iter(values.iter()), |r| r.get::<_, Value>(0));
        let local = match inserted {
            Ok(local) => local,
            Err(e) => return Ok(Placed::Refused(self.refused(e, partial)?)),
        };
        bind(self.conn, table.id, &c.pk, &local, None)?;
        Ok(Placed::At(vec![local]))
    }

    /// A row of a table identified by its key: inserted, or updated if a
    /// row with its key is here.
    fn upsert(
        &self,
        ap: &mut Applier,
        cells: &ColSet,
        values: &[Value],
        partial: bool,
    ) -> Result<Placed, Error> {
        let (table, c) = (self.table, self.c);
        let sql = ap
            .sql_cache
            .entry((table.id, cells.clone(), true))
            .or_insert_with(|| upsert_sql(table, cells, ap.local_auto[c.table]));
        let args = c.key.iter().chain(values.iter());
        if let Err(e) = self
            .conn
            .prepare_cached(sql)?
            .execute(params_from_iter(args))
        {
            return Ok(Placed::Refused(self.refused(e, partial)?));
        }
        Ok(Placed::At(c.key.clone()))
    }

    /// Set the references written as NULL now that the row is at `at`. One
    /// to a row still missing refuses the change, or, in a joint pass,
    /// waits until every change of the pass is written.
    fn resolve_later(
        &self,
        ap: &mut Applier,
        at: &[Value],
        later: Vec<(String, &str, &Value, Refusal)>,
    ) -> Result<Option<Refusal>, Error> {
        for (column, parent, value, refusal) in later {
            if set_ref(
                self.conn,
                self.catalog,
                self.table,
                at,
                &column,
                parent,
                value,
            )? {
                continue;
            }
            match ap.joint.as_mut() {
                Some(checks) => checks.push((
                    ap.current,
                    PostCheck::Resolve {
                        table: self.c.table,
                        key: at.to_vec(),
                        column,
                        parent: parent.to_owned(),
                        value: value.clone(),
                    },
                )),
                // The write is undone with the change's savepoint.
                None => return Ok(Some(refusal)),
            }
        }
        Ok(None)
    }

    /// Check the written row's references and the children of the
    /// `children` columns it rewrote; in a joint pass, note the checks
    /// instead.
    fn check(
        &self,
        ap: &mut Applier,
        refs: RowRefs,
        children: Option<Vec<String>>,
    ) -> Result<Written, Error> {
        let table = self.c.table;
        if let Some(checks) = ap.joint.as_mut() {
            checks.push((ap.current, PostCheck::Row { table, refs }));
            if let Some(columns) = children {
                let columns = Some(columns);
                checks.push((ap.current, PostCheck::Children { table, columns }));
            }
            return Ok(Written::Done);
        }
        let mut broken = refs.broken(self.conn, &ap.fks, self.table)?;
        if let (None, Some(columns)) = (&broken, children) {
            broken = ap
                .fks
                .dangling_children(self.conn, self.table, Some(&columns))?;
        }
        Ok(match broken {
            Some(broken) => Written::Refused(broken_refusal(broken)),
            None => Written::Done,
        })
    }

    /// The refusal for an error SQLite reported while writing the row.
    fn refused(&self, e: rusqlite::Error, partial: bool) -> Result<Refusal, Error> {
        refused(self.conn, self.table, self.c, e, partial)
    }
}

/// `UPDATE` the cells of the row at `at`; false if no such row. With no
/// cells, only whether the row is there.
fn update(
    conn: &Connection,
    ap: &mut Applier,
    table: &TrackedTable,
    cells: &ColSet,
    at: &[Value],
    values: &[Value],
) -> Result<bool, rusqlite::Error> {
    if cells.is_empty() {
        return conn
            .prepare_cached(&format!(
                "SELECT 1 FROM {} WHERE {}",
                quote_ident(&table.name),
                table.key_predicate()
            ))?
            .exists(params_from_iter(at.iter()));
    }
    let sql = ap
        .sql_cache
        .entry((table.id, cells.clone(), false))
        .or_insert_with(|| update_sql(table, cells));
    let n = conn
        .prepare_cached(sql)?
        .execute(params_from_iter(at.iter().chain(values.iter())))?;
    Ok(n > 0)
}

/// Write the tagged reference `value` to `parent` into `column` of the row
/// at `key`, if the row it names is here now; false if it is not.
fn set_ref(
    conn: &Connection,
    catalog: &Catalog,
    table: &TrackedTable,
    key: &[Value],
    column: &str,
    parent: &str,
    value: &Value,
) -> Result<bool, Error> {
    let Resolved::Here {
        value: resolved, ..
    } = resolve_ref(conn, catalog, parent, value)?
    else {
        return Ok(false);
    };
    let sql = format!(
        "UPDATE {} SET {} = ?{} WHERE {}",
        quote_ident(&table.name),
        quote_ident(column),
        key.len() + 1,
        table.key_predicate()
    );
    conn.prepare_cached(&sql)?.execute(params_from_iter(
        key.iter().chain(std::iter::once(&resolved)),
    ))?;
    Ok(true)
}

/// What a tagged reference comes to here.
enum Resolved {
    /// The value to write, and whether its constraint is to be checked.
    Here { value: Value, checked: bool },
    /// It names a row that is not here.
    Missing(Refusal),
}

/// Resolve the tagged reference `v` to table `parent`.
fn resolve_ref(
    conn: &Connection,
    catalog: &Catalog,
    parent: &str,
    v: &Value,
) -> Result<Resolved, Error> {
    let table = catalog.by_name(parent);
    let identity = table.map_or(Identity::Key, |t| t.identity);
    let key_len = table.map_or(0, |t| t.key_len());
    let tagged = crate::catalog::refs::decode(v, identity, key_len).map_err(malformed)?;
    let resolved = match table {
        Some(t) => crate::catalog::refs::resolve(conn, t, &tagged)?,
        None => match &tagged {
            Tagged::Null => Some((Value::Null, true)),
            Tagged::Value(v) => Some((v.clone(), true)),
            Tagged::Dangling(v) => Some((v.clone(), false)),
            Tagged::DanglingLocal => Some((Value::Null, false)),
            Tagged::Identity(_) => None,
        },
    };
    Ok(match resolved {
        Some((value, checked)) => Resolved::Here { value, checked },
        None => Resolved::Missing(Refusal {
            reason: Reason::MissingParent,
            detail: format!(
                "it points to {parent} row {}, which is not here (deleted here, or not received yet)",
                crate::catalog::refs::shown(v)
            ),
        }),
    })
}

pub(crate) fn malformed(detail: String) -> Error {
    BundleError::Malformed { detail }.into()
}

fn broken_refusal(broken: Broken) -> Refusal {
    let reason = match broken {
        Broken::MissingParent { .. } => Reason::MissingParent,
        Broken::StillReferenced { .. } => Reason::StillReferenced,
    };
    Refusal {
        reason,
        detail: broken.to_string(),
    }
}

/// Turn an error SQLite reported while writing `c` into a refusal naming
/// what clashed. The database's own trouble fails the import; anything the
/// row's values provoke (a constraint, a CHECK whose expression raises an
/// error, a value too big) refuses only this change.
fn refused(
    conn: &Connection,
    table: &TrackedTable,
    c: &Change,
    e: rusqlite::Error,
    partial: bool,
) -> Result<Refusal, Error> {
    let rusqlite::Error::SqliteFailure(f, msg) = &e else {
        return Err(e.into());
    };
    if is_database_trouble(&e) {
        return Err(e.into());
    }
    use rusqlite::ffi;
    let message = msg.clone().unwrap_or_else(|| f.to_string());
    let reason = match (f.code, f.extended_code) {
        (_, ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => Reason::Unique,
        (_, ffi::SQLITE_CONSTRAINT_NOTNULL) => Reason::NotNull,
        (_, ffi::SQLITE_CONSTRAINT_CHECK) => Reason::Check,
        _ => Reason::Other,
    };
    let detail = match reason {
        Reason::Unique => unique_detail(conn, table, c, &message).unwrap_or(message),
        Reason::NotNull if partial => {
            format!("{message}: the change that created this row has not arrived here yet")
        }
        _ => message,
    };
    Ok(Refusal { reason, detail })
}

/// True for the database's own trouble (busy, I/O, corruption, …), as
/// opposed to an error the values written provoke.
pub(crate) fn is_database_trouble(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    let rusqlite::Error::SqliteFailure(f, _) = e else {
        return true;
    };
    matches!(
        f.code,
        C::DatabaseBusy
            | C::DatabaseLocked
            | C::DiskFull
            | C::SystemIoFailure
            | C::DatabaseCorrupt
            | C::ReadOnly
            | C::OutOfMemory
            | C::CannotOpen
            | C::NotADatabase
            | C::PermissionDenied
            | C::FileLockingProtocolFailed
            | C::OperationInterrupted
            | C::OperationAborted
    )
}

/// "code = 'S-01' is already used by row 'uuid-1'", from SQLite's
/// "UNIQUE constraint failed: shelter.code" and the change's values.
fn unique_detail(
    conn: &Connection,
    table: &TrackedTable,
    c: &Change,
    message: &str,
) -> Option<String> {
    let list = message.split_once("failed: ")?.1;
    let columns: Vec<&str> = list
        .split(", ")
        .map(|q| q.rsplit_once('.').map_or(q, |(_, col)| col))
        .collect();
    let mut values = Vec::with_capacity(columns.len());
    for col in &columns {
        values.push(c.value(table.bit_of(col)?)?.clone());
    }
    let sql = format!(
        "SELECT {} FROM {} WHERE {}",
        table
            .sql_key()
            .iter()
            .map(|k| quote_ident(k))
            .collect::<Vec<_>>()
            .join(", "),
        quote_ident(&table.name),
        columns
            .iter()
            .enumerate()
            .map(|(i, col)| format!("{} = ?{}", quote_ident(col), i + 1))
            .collect::<Vec<_>>()
            .join(" AND ")
    );
    let other: Vec<Value> = conn
        .query_row(&sql, params_from_iter(values.iter()), |r| {
            (0..table.sql_key_len())
                .map(|i| r.get::<_, Value>(i))
                .collect()
        })
        .ok()?;
    let what = columns
        .iter()
        .zip(&values)
        .map(|(col, v)| format!("{col} = {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "{what} is already used by row {} of {} here",
        key_literal(&other),
        table.name
    ))
}

/// `UPDATE … SET cells WHERE key`, parameters: key first, then cells.
fn update_sql(table: &TrackedTable, cells: &ColSet) -> String {
    let n = table.sql_key_len();
    let set = cells
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{} = ?{}", quote_ident(&table.cells[b - 1]), n + i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "UPDATE OR ABORT {} SET {set} WHERE {}",
        quote_ident(&table.name),
        table.key_predicate()
    )
}

/// `INSERT … ON CONFLICT(key) DO UPDATE` writing the key and `cells`. A
/// table identified by a column whose local number SQLite does not assign
/// (`--local-key`) gets the next one.
fn upsert_sql(table: &TrackedTable, cells: &ColSet, local_auto: bool) -> String {
    let mut cols: Vec<String> = table.key.iter().map(|k| quote_ident(k)).collect();
    let cell_cols: Vec<String> = cells
        .iter()
        .map(|b| quote_ident(&table.cells[b - 1]))
        .collect();
    cols.extend(cell_cols.iter().cloned());
    let mut params = (1..=cols.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>();
    if let (Some(local), false) = (&table.local, local_auto) {
        cols.push(quote_ident(local));
        params.push(next_local(table, local));
    }
    let conflict = table
        .key
        .iter()
        .map(|k| quote_ident(k))
        .collect::<Vec<_>>()
        .join(", ");
    let action = if cell_cols.is_empty() {
        "NOTHING".to_owned()
    } else {
        format!(
            "UPDATE SET {}",
            cell_cols
                .iter()
                .map(|c| format!("{c} = excluded.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    format!(
        "INSERT OR ABORT INTO {}({}) VALUES ({}) ON CONFLICT({conflict}) DO {action}",
        quote_ident(&table.name),
        cols.join(", "),
        params.join(", ")
    )
}

/// `INSERT` of a new row of a mapped table, returning its local number.
fn insert_sql(table: &TrackedTable, cells: &ColSet, local_auto: bool) -> String {
    let local = table.local.as_deref().unwrap_or("rowid");
    let mut cols: Vec<String> = cells
        .iter()
        .map(|b| quote_ident(&table.cells[b - 1]))
        .collect();
    let mut params = (1..=cols.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>();
    if !local_auto {
        cols.push(quote_ident(local));
        params.push(next_local(table, local));
    }
    let t = quote_ident(&table.name);
    if cols.is_empty() {
        format!(
            "INSERT OR ABORT INTO {t} DEFAULT VALUES RETURNING {}",
            quote_ident(local)
        )
    } else {
        format!(
            "INSERT OR ABORT INTO {t}({}) VALUES ({}) RETURNING {}",
            cols.join(", "),
            params.join(", "),
            quote_ident(local)
        )
    }
}

/// The next local number of a table whose app numbers rows `MAX + 1`.
fn next_local(table: &TrackedTable, local: &str) -> String {
    format!(
        "(SELECT coalesce(max({0}), 0) + 1 FROM {1})",
        quote_ident(local),
        quote_ident(&table.name)
    )
}
