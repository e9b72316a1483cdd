//! The language of the histories the model test plays: app writes
//! ([`Write`], made concrete against an instance as [`Resolved`] and run as
//! [`Stmt`]s), steps (writes, exports, syncs, imports, compactions) and the
//! [`History`] itself, each printed as a readable line when a case fails.

use std::fmt;

use fieldsync::Value;

use crate::model::rows::{RowId, show, show_row};
use crate::model::schema::{OPT, TABLES};
use crate::util::histories::{self, Delivery};

/// One column of an UPDATE's SET list: a new value, or `None` for
/// `c = c`.
#[derive(Clone)]
pub(super) struct Set {
    pub(super) cell: usize,
    pub(super) value: Option<Value>,
}

impl fmt::Debug for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "cell {} = {}", self.cell, show(v)),
            None => write!(f, "cell {} unchanged", self.cell),
        }
    }
}

/// An app write on one instance, through its own connection.
#[derive(Clone)]
pub(super) enum Write {
    /// `INSERT OR REPLACE` / `INSERT OR IGNORE` of a whole row.
    Insert {
        row: RowId,
        values: Vec<Value>,
        replace: bool,
    },
    /// `UPDATE … SET` some cells of one row.
    Update { row: RowId, set: Vec<Set> },
    /// `DELETE` one row.
    Delete { row: RowId },
    /// `DELETE`, then `INSERT OR REPLACE` of the same key.
    Reinsert { row: RowId, values: Vec<Value> },
    /// `UPDATE OR REPLACE … SET key = to[, cells] WHERE key = from`.
    Rekey {
        from: RowId,
        to: RowId,
        set: Vec<Set>,
    },
    /// `UPDATE table SET …` of every row.
    UpdateAll { table: usize, set: Vec<Set> },
    /// `INSERT OR REPLACE` of `row` taking the rowid of `from` (a rowid
    /// table): `from` is deleted without a DELETE trigger.
    ReplaceRowid {
        row: RowId,
        from: RowId,
        values: Vec<Value>,
    },
    /// `INSERT INTO loc(name, parent)`: SQLite numbers the new row; its
    /// parent is the `parent`-th row that may be pointed at (`None`: NULL).
    LocInsert { name: Value, parent: Option<usize> },
    /// `UPDATE loc SET name … WHERE id` of the `pick`-th row.
    LocRename { pick: usize, name: Value },
    /// `UPDATE loc SET parent … WHERE id` of the `pick`-th row: to the
    /// `parent`-th row that may be pointed at (itself too), or NULL.
    LocRepoint { pick: usize, parent: Option<usize> },
    /// `DELETE FROM loc WHERE id` of the `pick`-th row that may be deleted.
    LocDelete { pick: usize },
    /// `INSERT INTO opt` of a row (often one that is already there).
    OptInsert { values: Vec<Value> },
    /// `INSERT INTO opt` of an exact copy of the `pick`-th row.
    OptCopy { pick: usize },
    /// `UPDATE opt SET … WHERE rowid` of the `pick`-th row.
    OptUpdate { pick: usize, set: Vec<Set> },
    /// `DELETE FROM opt WHERE rowid` of the `pick`-th row.
    OptDelete { pick: usize },
}

/// A write on a table with a local key, made concrete against the rows an
/// instance has: plain statements on local numbers.
pub(super) enum Resolved {
    Insert { table: usize, values: Vec<Value> },
    Update { row: RowId, set: Vec<Set> },
    Delete { row: RowId },
}

impl Resolved {
    pub(super) fn statement(&self) -> Stmt<'_> {
        match self {
            Resolved::Insert { table, values } => Stmt::InsertAuto {
                table: *table,
                values,
            },
            Resolved::Update { row, set } => Stmt::Update {
                row: Some(row),
                table: row.table,
                set,
            },
            Resolved::Delete { row } => Stmt::Delete { row },
        }
    }
}

/// What [`World::resolve`] makes of a write.
pub(super) enum Plan {
    /// A write on a table with a replicated key, as it is.
    Key,
    /// Nothing to write (no row to pick).
    Nothing,
    /// This statement; the `loc` row it makes point at, and the one it
    /// deletes (local numbers).
    Do {
        stmt: Resolved,
        points_at: Option<i64>,
        deletes: Option<i64>,
    },
}

/// One SQL statement of a write.
pub(super) enum Stmt<'a> {
    Insert {
        row: &'a RowId,
        values: &'a [Value],
        replace: bool,
    },
    Update {
        /// One row, or every row of the table.
        row: Option<&'a RowId>,
        table: usize,
        set: &'a [Set],
    },
    Delete {
        row: &'a RowId,
    },
    Rekey {
        from: &'a RowId,
        to: &'a RowId,
        set: &'a [Set],
    },
    ReplaceRowid {
        row: &'a RowId,
        from: &'a RowId,
        values: &'a [Value],
    },
    /// `INSERT INTO table(cells)`: SQLite numbers the row.
    InsertAuto {
        table: usize,
        values: &'a [Value],
    },
}

impl Write {
    pub(super) fn statements(&self) -> Vec<Stmt<'_>> {
        match self {
            Write::Insert {
                row,
                values,
                replace,
            } => vec![Stmt::Insert {
                row,
                values,
                replace: *replace,
            }],
            Write::Update { row, set } => vec![Stmt::Update {
                row: Some(row),
                table: row.table,
                set,
            }],
            Write::Delete { row } => vec![Stmt::Delete { row }],
            Write::Reinsert { row, values } => vec![
                Stmt::Delete { row },
                Stmt::Insert {
                    row,
                    values,
                    replace: true,
                },
            ],
            Write::Rekey { from, to, set } => vec![Stmt::Rekey { from, to, set }],
            Write::UpdateAll { table, set } => vec![Stmt::Update {
                row: None,
                table: *table,
                set,
            }],
            Write::ReplaceRowid { row, from, values } => {
                vec![Stmt::ReplaceRowid { row, from, values }]
            }
            // Resolved against the instance first (World::resolve).
            Write::LocInsert { .. }
            | Write::LocRename { .. }
            | Write::LocRepoint { .. }
            | Write::LocDelete { .. }
            | Write::OptInsert { .. }
            | Write::OptCopy { .. }
            | Write::OptUpdate { .. }
            | Write::OptDelete { .. } => Vec::new(),
        }
    }
}

fn set_text(table: usize, set: &[Set]) -> String {
    set.iter()
        .map(|s| {
            let c = TABLES[table].cells[s.cell];
            match &s.value {
                Some(v) => format!("{c} = {}", show(v)),
                None => format!("{c} = {c}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Debug for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Write::Insert {
                row,
                values,
                replace,
            } => {
                let how = if *replace { "OR REPLACE" } else { "OR IGNORE" };
                write!(f, "INSERT {how} {row:?} {}", show_row(row.table, values))
            }
            Write::Update { row, set } => {
                write!(f, "UPDATE {row:?} SET {}", set_text(row.table, set))
            }
            Write::Delete { row } => write!(f, "DELETE {row:?}"),
            Write::Reinsert { row, values } => {
                write!(f, "DELETE {row:?}, INSERT {}", show_row(row.table, values))
            }
            Write::Rekey { from, to, set } if set.is_empty() => {
                write!(f, "UPDATE OR REPLACE {from:?} SET key = {to:?}")
            }
            Write::Rekey { from, to, set } => write!(
                f,
                "UPDATE OR REPLACE {from:?} SET key = {to:?}, {}",
                set_text(from.table, set)
            ),
            Write::UpdateAll { table, set } => {
                write!(
                    f,
                    "UPDATE {} SET {} (every row)",
                    TABLES[*table].name,
                    set_text(*table, set)
                )
            }
            Write::ReplaceRowid { row, from, values } => write!(
                f,
                "INSERT OR REPLACE {row:?} {} with the rowid of {from:?}",
                show_row(row.table, values)
            ),
            Write::LocInsert { name, parent } => {
                write!(f, "INSERT loc name {}, parent #{parent:?}", show(name))
            }
            Write::LocRename { pick, name } => {
                write!(f, "UPDATE loc #{pick} SET name = {}", show(name))
            }
            Write::LocRepoint { pick, parent } => {
                write!(f, "UPDATE loc #{pick} SET parent = #{parent:?}")
            }
            Write::LocDelete { pick } => write!(f, "DELETE loc #{pick}"),
            Write::OptInsert { values } => write!(f, "INSERT opt {}", show_row(OPT, values)),
            Write::OptCopy { pick } => write!(f, "INSERT opt copy of #{pick}"),
            Write::OptUpdate { pick, set } => {
                write!(f, "UPDATE opt #{pick} SET {}", set_text(OPT, set))
            }
            Write::OptDelete { pick } => write!(f, "DELETE opt #{pick}"),
        }
    }
}

/// One step of the history.
#[derive(Clone)]
pub(super) enum Step {
    /// An app write on instance `at`.
    Write { at: usize, write: Write },
    /// A delta export from `from` to `to`, pooled.
    Export {
        from: usize,
        to: usize,
        resend: bool,
    },
    /// A delta export from `from` to `to`, pooled and imported by `to`.
    Sync { from: usize, to: usize },
    /// A network exchange (spec/network.md) of `client` with `server`: the
    /// client's bundle (everything not acknowledged, or with `pull` a
    /// header alone) imported by the server, then the server's answer
    /// (everything the client has not acknowledged) imported by the client.
    NetSync {
        client: usize,
        server: usize,
        pull: bool,
    },
    /// A full export, pooled.
    ExportFull { from: usize },
    /// `compact` on instance `at`.
    Compact { at: usize },
    /// Instance `at` imports a pooled bundle: `back` = 0 is the newest,
    /// counting back (modulo the pool size). Nothing if the pool is empty.
    Import { at: usize, back: usize },
    /// As `Import`, but the import stops after its first write transaction
    /// of `records` records, as a crash between two would leave it; then the
    /// bundle is imported again, which must end as one uninterrupted import.
    ImportStopped {
        at: usize,
        back: usize,
        records: u64,
    },
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Write { at, write } => write!(f, "i{at}: {write:?}"),
            Step::Export { from, to, resend } => {
                let resend = if *resend { " (resend)" } else { "" };
                write!(f, "i{from} → i{to}: export{resend}")
            }
            Step::Sync { from, to } => write!(f, "i{from} → i{to}: export, imported"),
            Step::NetSync {
                client,
                server,
                pull,
            } => write!(
                f,
                "i{client} ⇄ i{server}: network {}",
                if *pull { "pull" } else { "sync" }
            ),
            Step::ExportFull { from } => write!(f, "i{from}: export full"),
            Step::Compact { at } => write!(f, "i{at}: compact"),
            Step::Import { at, back: 0 } => write!(f, "i{at}: import the newest bundle"),
            Step::Import { at, back } => {
                write!(f, "i{at}: import the bundle {back} before the newest")
            }
            Step::ImportStopped { at, back, records } => write!(
                f,
                "i{at}: import the bundle {back} before the newest, stopped after {records} record(s), then again"
            ),
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct History {
    pub(super) instances: usize,
    /// Per instance, how far (ms) its wall clock runs ahead of the true
    /// time: the wall time its capture triggers record is shifted by it.
    pub(super) skew_ms: Vec<i64>,
    pub(super) steps: Vec<Step>,
    pub(super) deliveries: Vec<Delivery>,
    /// No `--resend` anywhere: exports in the steps and the final exchange
    /// never resend, so bundles never imported (lost) must come back by
    /// themselves, reported missing by their receivers.
    pub(super) resend_free: bool,
}

impl histories::History for History {
    type Step = Step;
    fn steps(&mut self) -> &mut Vec<Step> {
        &mut self.steps
    }
    fn deliveries(&mut self) -> &mut Vec<Delivery> {
        &mut self.deliveries
    }
}
