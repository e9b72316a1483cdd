//! Model-based differential property test of the merge rules.
//!
//! `instances_match_the_model` drives 3–5 real instances (database files in a
//! temporary directory; a table with a text key and a WITHOUT ROWID table
//! with a composite text/integer key; an `INTEGER PRIMARY KEY AUTOINCREMENT`
//! table `loc` whose `parent` points at its own rows, identified by origin,
//! and a table `opt` without a key, identified by content (spec/merge.md,
//! "Row identity"); INTEGER, TEXT, BLOB, REAL, NUMERIC and untyped columns; NULL, integers, reals with -0.0 and edge values, text
//! with non-UTF-8 bytes, blobs with the empty one) through a random history:
//! app writes through SQL (`INSERT OR IGNORE` / `OR REPLACE`, updates of
//! random column subsets with NULLs and `c = c`, deletes, re-inserts,
//! primary-key changes with `UPDATE OR REPLACE`, multi-row updates,
//! `INSERT OR REPLACE` taking another row's rowid; on `loc`, inserts numbered
//! by SQLite (two instances give the same numbers to different rows),
//! renames, re-pointing `parent` at a row or NULL, deletes; on `opt`,
//! inserts of rows often identical to rows already there or elsewhere,
//! updates and deletes by rowid), delta exports with and
//! without resend, syncs, full exports, imports of pooled bundles in any
//! order (repeated, dropped, an instance's own), compactions, and wall
//! clocks running ahead or behind; then an all-pairs exchange until a round
//! applies nothing.
//!
//! Beside the engine runs a reference model written from spec/merge.md and
//! spec/capture.md. It never calls `fieldsync::merge`:
//!
//! - From each SQL statement and the rows before and after it, the model
//!   predicts what capture records (row, insert/update/delete, the cells
//!   changed by the capture rule) and checks `fieldsync_pending`.
//! - When the engine stamps (export, import, compact), the model folds and
//!   numbers the captured writes itself and applies the spec's local rules
//!   (causal length; which change takes which cells); it records the delete
//!   of a row deleted without a trigger where spec/capture.md says the
//!   engine notices it. From the engine it takes only each surviving
//!   change's HLC, read from `fieldsync_log`; before an import, from a copy
//!   of the database stamped by importing a bundle without rows, so a local
//!   change the import then outranks still has its clock observed. It checks
//!   the clock rules it can: increasing, not before the write's wall time,
//!   past every clock the instance imported.
//! - For every export it predicts the bundle (rows, causal lengths, versions,
//!   values) from its own state of the sender and the change numbers the
//!   header says it covers, and checks the body against it.
//! - For every import it merges its predicted records by the spec's rules
//!   (a higher causal length wins outright, then each cell goes to the
//!   greatest rank `(hlc, site id, seq)`), predicts the applied / known /
//!   older counts, and checks them.
//! - After every operation the instance's app tables and change log must
//!   equal the model's state of that instance.
//! - Rows of `loc` and `opt` are tracked by identity (creating instance and
//!   change number; content signature when first stamped and copy
//!   number), never by local number: the model predicts the identity each
//!   stamped row gets and so `fieldsync_ids`, learns the number an import
//!   gives a row new there (checking it is free), and compares app rows and
//!   log by identity, a `loc` row's `parent` by the identity of the row it
//!   points at. The bundle must carry that identity as the reference.
//! - Which received `loc` rows the engine holds in quarantine is read from
//!   it and checked: a held row must not fit (merged, it would point at a
//!   row that is not here, or its delete would leave a row pointing at
//!   nothing), nor may held rows fit together; every other record is merged
//!   and must leave no reference dangling; a later record of a held row
//!   joins its entry; the quarantined and released counts must match. The
//!   app keeps references whole across instances (see `World::resolve`),
//!   so nothing stays held once every change has arrived.
//! - At the end every instance must hold the same tables and log, equal to
//!   the join of every change ever made, computed afresh from the list of
//!   changes: per row the greatest causal length, per cell the greatest
//!   ranked change of that causal length that wrote it, and its value.
//!
//! A failing history is shrunk, stripped of steps that do not matter, and
//! printed with what happened at each step. Failing seeds are kept in
//! `tests/model.proptest-regressions`. `FIELDSYNC_MODEL_TRACE=1` prints every
//! case's history and trace (with `-- --nocapture`).
//!
//! Cases: 128 by default (about 13 s of CPU in a debug build), or
//! `FIELDSYNC_PROPTEST_CASES`. The deep run:
//!
//! ```text
//! nice -n 10 env FIELDSYNC_PROPTEST_CASES=10000 cargo test --release --test model
//! ```
//!
//! Run of 2026-11-26 (2 shared cores): 10,000 cases passed in 882 s. With
//! `loc` and `opt` (test profile, `FIELDSYNC_MODEL_AVOID_KNOWN_BUGS=all`,
//! 2 shared cores): 3,000 cases passed in 647 s; without avoiding any
//! (engine at 996be85, the two bugs fixed): 2,000 cases passed in 266 s.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Cursor;

use fieldsync::bundle::BundleReader;
use fieldsync::colset::ColSet;
use fieldsync::seqset::SeqSet;
use fieldsync::value::decode_key;
use fieldsync::{Error, ExportTarget, ImportError, Instance, Selection, Value};
use proptest::collection::vec;
use proptest::prelude::*;
use rusqlite::Connection;

use crate::util::Res;
use crate::util::histories::{self, Delivery};

/// `FIELDSYNC_MODEL_AVOID_KNOWN_BUGS=all` (or a comma-separated list of
/// their names) steers clear of engine bugs the test found, to look for
/// others while they are open. Each has a regression test in
/// tests/regressions.rs and a seed in tests/model.proptest-regressions.
/// Both named here are fixed; the switch stays for the next finding.
///
/// - `cycles`: a `loc` row re-pointed so that it would reach itself through
///   another row is re-pointed at NULL instead (rows new at the receiver
///   that point at each other are held in quarantine for good);
/// - `first-stamp`: every instance stamps once after `track` (the first
///   stamp drops the writes captured on `opt` and records its rows anew at
///   the stamp's time).
fn avoid_known_bug(name: &str) -> bool {
    std::env::var("FIELDSYNC_MODEL_AVOID_KNOWN_BUGS")
        .is_ok_and(|v| v.split(',').any(|b| b.trim() == name || b.trim() == "all"))
}

fn config() -> ProptestConfig {
    histories::config(2048)
}

// ---------------------------------------------------------------------------
// The schema
// ---------------------------------------------------------------------------

/// Every instance's app schema. `b` (BLOB), `u` and `note` (no type) have no
/// type affinity and keep every value as written; the others convert.
const SCHEMA: &str = "
CREATE TABLE item(id TEXT PRIMARY KEY, i INTEGER, t TEXT, b BLOB, r REAL, u, n NUMERIC);
CREATE TABLE link(x TEXT, y INTEGER, note, w REAL, PRIMARY KEY(x, y)) WITHOUT ROWID;
CREATE TABLE loc(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, parent INTEGER REFERENCES loc(id));
CREATE TABLE opt(field TEXT, code TEXT, label TEXT);
";

/// How a table's rows are known across instances (spec/merge.md, "Row
/// identity").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// By the primary key's values.
    Key,
    /// By the instance that created the row and the number of the change
    /// that created it; the local `INTEGER PRIMARY KEY` is each instance's.
    Origin,
    /// By the row's content when it was first stamped and its copy number;
    /// the local rowid is each instance's.
    Content,
}

/// The loc table (index in [`TABLES`]) and its `parent` cell (bit).
const LOC: usize = 2;
const LOC_PARENT: usize = 2;
/// The opt table.
const OPT: usize = 3;

struct TableSpec {
    name: &'static str,
    kind: Kind,
    /// The key columns (for tables with a local key: that key, as SQL
    /// names the row here).
    key: &'static [&'static str],
    /// Non-key columns; `cells[i]` is bit `i + 1`.
    cells: &'static [&'static str],
    /// Whether `cells[i]` has no type affinity.
    untyped: &'static [bool],
}

const TABLES: [TableSpec; 4] = [
    TableSpec {
        name: "item",
        kind: Kind::Key,
        key: &["id"],
        cells: &["i", "t", "b", "r", "u", "n"],
        untyped: &[false, false, true, false, true, false],
    },
    TableSpec {
        name: "link",
        kind: Kind::Key,
        key: &["x", "y"],
        cells: &["note", "w"],
        untyped: &[true, false],
    },
    TableSpec {
        name: "loc",
        kind: Kind::Origin,
        key: &["id"],
        cells: &["name", "parent"],
        untyped: &[false, false],
    },
    TableSpec {
        name: "opt",
        kind: Kind::Content,
        key: &["rowid"],
        cells: &["field", "code", "label"],
        untyped: &[false, false, false],
    },
];

fn mapped(table: usize) -> bool {
    TABLES[table].kind != Kind::Key
}

/// Name of a bit of a table: 0 is the row itself.
fn bit_name(table: usize, bit: usize) -> &'static str {
    if bit == 0 {
        "row"
    } else {
        TABLES[table].cells[bit - 1]
    }
}

fn bits_text(table: usize, bits: &BTreeSet<usize>) -> String {
    let names: Vec<&str> = bits.iter().map(|&b| bit_name(table, b)).collect();
    format!("{{{}}}", names.join(","))
}

// ---------------------------------------------------------------------------
// Rows and values
// ---------------------------------------------------------------------------

/// One primary-key value (the schema's keys are text and integers), or a
/// row's global identity in a table with a local key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum KeyPart {
    Int(i64),
    Text(Vec<u8>),
    /// Created by instance `.0` with its change `.1`.
    Origin(usize, u64),
    /// Content signature when first stamped, copy number.
    Content([u8; 16], u32),
}

/// A row of a table, across instances.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RowId {
    table: usize,
    key: Vec<KeyPart>,
}

impl RowId {
    fn item(id: &[u8]) -> RowId {
        RowId {
            table: 0,
            key: vec![KeyPart::Text(id.to_vec())],
        }
    }

    fn link(x: &str, y: i64) -> RowId {
        RowId {
            table: 1,
            key: vec![KeyPart::Text(x.as_bytes().to_vec()), KeyPart::Int(y)],
        }
    }

    /// A row of a table with a local key, as this instance numbers it.
    fn local(table: usize, local: i64) -> RowId {
        RowId {
            table,
            key: vec![KeyPart::Int(local)],
        }
    }

    /// The local number of a row named by it (tables with a local key).
    fn local_number(&self) -> Option<i64> {
        match self.key.as_slice() {
            [KeyPart::Int(i)] if mapped(self.table) => Some(*i),
            _ => None,
        }
    }

    /// True if this names a row by its global identity.
    fn is_identity(&self) -> bool {
        matches!(
            self.key.as_slice(),
            [KeyPart::Origin(..)] | [KeyPart::Content(..)]
        )
    }

    fn values(&self) -> Vec<Value> {
        self.key
            .iter()
            .map(|k| match k {
                KeyPart::Int(i) => Value::Integer(*i),
                KeyPart::Text(t) => Value::Text(t.clone()),
                KeyPart::Origin(o, s) => Value::text(format!("i{o}#{s}")),
                KeyPart::Content(sig, c) => {
                    let hex: String = sig[..3].iter().map(|b| format!("{b:02x}")).collect();
                    Value::text(format!("{hex}…#{c}"))
                }
            })
            .collect()
    }

    fn from_values(table: usize, values: &[Value]) -> Res<RowId> {
        let key = values
            .iter()
            .map(|v| match v {
                Value::Integer(i) => Ok(KeyPart::Int(*i)),
                Value::Text(t) => Ok(KeyPart::Text(t.clone())),
                other => Err(format!(
                    "unexpected key value {other} in {}",
                    TABLES[table].name
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RowId { table, key })
    }

    fn cells(&self) -> usize {
        TABLES[self.table].cells.len()
    }
}

impl fmt::Debug for RowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.values().iter().map(show).collect();
        write!(f, "{}[{}]", TABLES[self.table].name, parts.join(", "))
    }
}

/// A value as SQL would write it; text that is not UTF-8 as a cast blob.
fn show(v: &Value) -> String {
    match v {
        Value::Text(t) if std::str::from_utf8(t).is_err() => {
            let hex: String = t.iter().map(|b| format!("{b:02X}")).collect();
            format!("CAST(X'{hex}' AS TEXT)")
        }
        Value::Real(r) => format!("{r:?}"),
        other => other.to_string(),
    }
}

fn show_row(table: usize, row: &[Value]) -> String {
    let cells: Vec<String> = TABLES[table]
        .cells
        .iter()
        .zip(row)
        .map(|(c, v)| format!("{c}={}", show(v)))
        .collect();
    format!("({})", cells.join(", "))
}

/// Two records of one row joined (spec/quarantine.md: a later change of a
/// held row joins its entry): the higher causal length wins outright; at
/// equal ones each bit goes to the greater-ranked change.
fn combine(a: &Rec, b: &Rec, rank: &dyn Fn(&Ver) -> Rank) -> Rec {
    if a.cl != b.cl {
        return if a.cl > b.cl { a.clone() } else { b.clone() };
    }
    let mut won: BTreeMap<usize, (Ver, Option<Value>)> = BTreeMap::new();
    for rec in [a, b] {
        for (&(origin, seq), (hlc, bits)) in &rec.versions {
            let v = Ver {
                origin,
                seq,
                hlc: *hlc,
            };
            for &bit in bits {
                if won.get(&bit).is_none_or(|(w, _)| rank(&v) > rank(w)) {
                    won.insert(bit, (v, rec.values.get(&bit).cloned()));
                }
            }
        }
    }
    let mut out = Rec {
        cl: a.cl,
        versions: Holders::new(),
        values: BTreeMap::new(),
    };
    for (bit, (v, value)) in won {
        out.versions
            .entry((v.origin, v.seq))
            .or_insert_with(|| (v.hlc, BTreeSet::new()))
            .1
            .insert(bit);
        if let Some(value) = value {
            out.values.insert(bit, value);
        }
    }
    out
}

/// Merge a record into a row of a table with a local key, its app cells
/// (references by identity) kept in `touched` until the import is over.
fn merge_mapped(
    sites: &[[u8; 16]],
    m: &mut InstModel,
    row: &RowId,
    rec: &Rec,
    rank: &dyn Fn(&Ver) -> Rank,
    touched: &mut BTreeMap<RowId, Option<Vec<Value>>>,
) -> Verdict {
    let mut app = match touched.get(row) {
        Some(a) => a.clone(),
        None => m.app_row(sites, row),
    };
    let state = m
        .rows
        .entry(row.clone())
        .or_insert_with(|| RowModel::new(row.cells()));
    let verdict = merge_record(state, &mut app, rec, rank);
    touched.insert(row.clone(), app);
    verdict
}

/// SQLite's `a IS b` with BINARY collation: numbers compare by value.
fn sql_is(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Integer(x), Value::Integer(y)) => x == y,
        (Value::Real(x), Value::Real(y)) => x == y,
        (Value::Integer(i), Value::Real(r)) | (Value::Real(r), Value::Integer(i)) => {
            r.fract() == 0.0 && *r >= -(2f64.powi(63)) && *r < 2f64.powi(63) && *r as i64 == *i
        }
        (Value::Text(x), Value::Text(y)) | (Value::Blob(x), Value::Blob(y)) => x == y,
        _ => false,
    }
}

/// The capture rule (spec/capture.md): does an UPDATE that sets a column
/// from `old` to `new` change the cell? In a column without type affinity
/// also a change of storage class counts, and every write of a real zero
/// (no SQL tells 0.0 from -0.0).
fn changed(untyped: bool, old: &Value, new: &Value) -> bool {
    if untyped {
        matches!(new, Value::Real(r) if *r == 0.0) || old != new
    } else {
        !sql_is(old, new)
    }
}

// ---------------------------------------------------------------------------
// The history
// ---------------------------------------------------------------------------

/// One column of an UPDATE's SET list: a new value, or `None` for
/// `c = c`.
#[derive(Clone)]
struct Set {
    cell: usize,
    value: Option<Value>,
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
enum Write {
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
enum Resolved {
    Insert { table: usize, values: Vec<Value> },
    Update { row: RowId, set: Vec<Set> },
    Delete { row: RowId },
}

impl Resolved {
    fn statement(&self) -> Stmt<'_> {
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
enum Plan {
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
enum Stmt<'a> {
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
    fn statements(&self) -> Vec<Stmt<'_>> {
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
enum Step {
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
    /// A full export, pooled.
    ExportFull { from: usize },
    /// `compact` on instance `at`.
    Compact { at: usize },
    /// Instance `at` imports a pooled bundle: `back` = 0 is the newest,
    /// counting back (modulo the pool size). Nothing if the pool is empty.
    Import { at: usize, back: usize },
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
            Step::ExportFull { from } => write!(f, "i{from}: export full"),
            Step::Compact { at } => write!(f, "i{at}: compact"),
            Step::Import { at, back: 0 } => write!(f, "i{at}: import the newest bundle"),
            Step::Import { at, back } => {
                write!(f, "i{at}: import the bundle {back} before the newest")
            }
        }
    }
}

#[derive(Clone, Debug)]
struct History {
    instances: usize,
    /// Per instance, how far (ms) its wall clock runs ahead of the true
    /// time: the wall time its capture triggers record is shifted by it.
    skew_ms: Vec<i64>,
    steps: Vec<Step>,
    deliveries: Vec<Delivery>,
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

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

const MAX_INSTANCES: usize = 5;

fn value() -> impl Strategy<Value = Value> {
    // Mostly values that SQLite calls equal or that look alike but are not
    // the same (1, 1.0, '1', X'31'; 0.0 and -0.0; '' and X'' and NULL), so
    // they meet in one cell; then edge values; now and then anything.
    let small = prop::sample::select(vec![
        Value::Null,
        Value::Integer(0),
        Value::Integer(1),
        Value::Real(0.0),
        Value::Real(-0.0),
        Value::Real(1.0),
        Value::text(""),
        Value::text("1"),
        Value::text("a"),
        Value::Blob(Vec::new()),
        Value::Blob(b"1".to_vec()),
    ]);
    let edge = prop::sample::select(vec![
        Value::Integer(i64::MIN),
        Value::Integer(i64::MAX),
        Value::Integer(-1),
        Value::Real(f64::MAX),
        Value::Real(f64::MIN),
        Value::Real(f64::MIN_POSITIVE),
        Value::Real(-5e-324),
        Value::Real(f64::INFINITY),
        Value::Real(f64::NEG_INFINITY),
        Value::Real(9_007_199_254_740_993.0),
        Value::Real(9.223_372_036_854_776e18),
        Value::Real(0.1),
        Value::text("héllo"),
        // Not UTF-8: SQLite keeps the bytes, so must fieldsync.
        Value::Text(vec![0xff, 0x00, 0x80]),
        Value::Blob(vec![0]),
        Value::Blob(vec![0xff, 0xfe, 0xfd]),
    ]);
    let any_value = prop_oneof![
        any::<i64>().prop_map(Value::Integer),
        any::<f64>()
            .prop_filter("SQLite stores NaN as NULL", |r| !r.is_nan())
            .prop_map(Value::Real),
        vec(any::<u8>(), 0..4).prop_map(Value::Text),
        vec(any::<u8>(), 0..4).prop_map(Value::Blob),
    ];
    prop_oneof![6 => small, 2 => edge, 1 => any_value]
}

fn row_of(table: usize) -> BoxedStrategy<RowId> {
    if table == 0 {
        prop::sample::select(vec![&b"k0"[..], b"k1", b"k\xff"])
            .prop_map(RowId::item)
            .boxed()
    } else {
        prop::sample::select(vec![("a", 1), ("a", 2), ("b", 1)])
            .prop_map(|(x, y)| RowId::link(x, y))
            .boxed()
    }
}

/// A SET list: some cells, each a new value or `c = c`.
fn set_of(table: usize, at_least_one: bool) -> BoxedStrategy<Vec<Set>> {
    let n = TABLES[table].cells.len();
    (
        vec(
            proptest::option::of(proptest::option::weighted(0.9, value())),
            n,
        ),
        0..n,
    )
        .prop_map(move |(choice, first)| {
            let mut set: Vec<Set> = choice
                .into_iter()
                .enumerate()
                .filter_map(|(cell, v)| v.map(|value| Set { cell, value }))
                .collect();
            if set.is_empty() && at_least_one {
                set.push(Set {
                    cell: first,
                    value: None,
                });
            }
            set
        })
        .boxed()
}

fn write_for(table: usize) -> BoxedStrategy<Write> {
    let n = TABLES[table].cells.len();
    let rows = row_of(table);
    prop_oneof![
        3 => (rows.clone(), vec(value(), n), any::<bool>())
            .prop_map(|(row, values, replace)| Write::Insert { row, values, replace }),
        4 => (rows.clone(), set_of(table, true)).prop_map(|(row, set)| Write::Update { row, set }),
        2 => rows.clone().prop_map(|row| Write::Delete { row }),
        1 => (rows.clone(), vec(value(), n)).prop_map(|(row, values)| Write::Reinsert { row, values }),
        2 => (rows.clone(), rows, set_of(table, false))
            .prop_map(|(from, to, set)| Write::Rekey { from, to, set }),
        1 => set_of(table, true).prop_map(move |set| Write::UpdateAll { table, set }),
    ]
    .boxed()
}

/// Writes on `item`, which has a rowid: those of every table, and an
/// `INSERT OR REPLACE` that takes another row's rowid.
fn item_write() -> BoxedStrategy<Write> {
    let rows = row_of(0);
    let n = TABLES[0].cells.len();
    prop_oneof![
        14 => write_for(0),
        1 => (rows.clone(), rows, vec(value(), n))
            .prop_map(|(row, from, values)| Write::ReplaceRowid { row, from, values }),
    ]
    .boxed()
}

/// Writes on `loc` (integer key numbered by SQLite, a self-reference).
fn loc_name() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        Value::Null,
        Value::text("a"),
        Value::text("b"),
        Value::text("c"),
    ])
}

fn loc_write() -> BoxedStrategy<Write> {
    let name = loc_name;
    let pick = || 0..8usize;
    prop_oneof![
        3 => (name(), proptest::option::weighted(0.7, pick()))
            .prop_map(|(name, parent)| Write::LocInsert { name, parent }),
        2 => (pick(), name()).prop_map(|(pick, name)| Write::LocRename { pick, name }),
        3 => (pick(), proptest::option::weighted(0.8, pick()))
            .prop_map(|(pick, parent)| Write::LocRepoint { pick, parent }),
        2 => pick().prop_map(|pick| Write::LocDelete { pick }),
    ]
    .boxed()
}

/// Writes on `opt` (no primary key): few distinct values, so identical
/// rows are inserted on one instance and on several.
fn opt_value() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![Value::Null, Value::text("x"), Value::text("y")])
}

fn opt_write() -> BoxedStrategy<Write> {
    let v = opt_value;
    let pick = || 0..8usize;
    let n = TABLES[OPT].cells.len();
    prop_oneof![
        3 => vec(v(), n).prop_map(|values| Write::OptInsert { values }),
        1 => pick().prop_map(|pick| Write::OptCopy { pick }),
        3 => (pick(), set_of(OPT, true)).prop_map(|(pick, set)| Write::OptUpdate { pick, set }),
        2 => pick().prop_map(|pick| Write::OptDelete { pick }),
    ]
    .boxed()
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![3 => item_write(), 1 => write_for(1), 2 => loc_write(), 2 => opt_write()]
}

/// A step with instance numbers below `MAX_INSTANCES`; [`history`] brings
/// them below the case's instance count.
fn step() -> impl Strategy<Value = Step> {
    let i = 0..MAX_INSTANCES;
    prop_oneof![
        6 => (i.clone(), write()).prop_map(|(at, write)| Step::Write { at, write }),
        2 => (i.clone(), 1..MAX_INSTANCES, any::<bool>())
            .prop_map(|(from, off, resend)| Step::Export { from, to: off, resend }),
        2 => (i.clone(), 1..MAX_INSTANCES).prop_map(|(from, off)| Step::Sync { from, to: off }),
        1 => i.clone().prop_map(|from| Step::ExportFull { from }),
        1 => i.clone().prop_map(|at| Step::Compact { at }),
        3 => (i, 0..4usize).prop_map(|(at, back)| Step::Import { at, back }),
    ]
}

/// A row every instance starts with (inserted at i0, shared by a full
/// export), so concurrent edits of one row happen from the first step.
fn initial_row() -> impl Strategy<Value = Write> {
    let n = |t: usize| TABLES[t].cells.len();
    prop_oneof![
        (row_of(0), vec(value(), n(0))),
        (row_of(1), vec(value(), n(1))),
    ]
    .prop_map(|(row, values)| Write::Insert {
        row,
        values,
        replace: true,
    })
}

fn history() -> impl Strategy<Value = History> {
    (
        3..=MAX_INSTANCES,
        vec(initial_row(), 0..6),
        vec(step(), 1..64),
        vec((0..64usize, 0..MAX_INSTANCES), 0..16),
        vec(
            prop::sample::select(vec![0i64, 0, 0, 3, -3, 2_000, -2_000, 7_200_000]),
            MAX_INSTANCES,
        ),
        vec(vec(opt_value(), TABLES[OPT].cells.len()), 0..3),
        vec(
            (loc_name(), proptest::option::weighted(0.7, 0..8usize)),
            0..5,
        ),
    )
        .prop_map(
            |(n, mut initial, steps, deliveries, mut skew_ms, defaults, locs)| {
                // A hierarchy every instance starts with.
                initial.extend(
                    locs.into_iter()
                        .map(|(name, parent)| Write::LocInsert { name, parent }),
                );
                skew_ms.truncate(n);
                // The app's default rows of `opt`, installed on every instance
                // before they meet: identical rows, one row everywhere.
                let mut prologue: Vec<Step> = (0..n)
                    .flat_map(|at| {
                        defaults.iter().map(move |values| Step::Write {
                            at,
                            write: Write::OptInsert {
                                values: values.clone(),
                            },
                        })
                    })
                    .collect();
                if !initial.is_empty() {
                    prologue.extend(
                        initial
                            .into_iter()
                            .map(|write| Step::Write { at: 0, write }),
                    );
                    prologue.push(Step::ExportFull { from: 0 });
                    prologue.extend((1..n).map(|at| Step::Import { at, back: 0 }));
                }
                let steps = prologue
                    .into_iter()
                    .chain(steps)
                    .map(|s| match s {
                        Step::Write { at, write } => Step::Write { at: at % n, write },
                        // `to` holds an offset 1.. from `from`, never `from` itself.
                        Step::Export { from, to, resend } => Step::Export {
                            from: from % n,
                            to: (from % n + 1 + (to - 1) % (n - 1)) % n,
                            resend,
                        },
                        Step::Sync { from, to } => Step::Sync {
                            from: from % n,
                            to: (from % n + 1 + (to - 1) % (n - 1)) % n,
                        },
                        Step::ExportFull { from } => Step::ExportFull { from: from % n },
                        Step::Compact { at } => Step::Compact { at: at % n },
                        Step::Import { at, back } => Step::Import { at: at % n, back },
                    })
                    .collect();
                let deliveries = deliveries
                    .into_iter()
                    .map(|(bundle, at)| Delivery { bundle, at: at % n })
                    .collect();
                History {
                    instances: n,
                    skew_ms,
                    steps,
                    deliveries,
                }
            },
        )
}

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

/// What capture recorded for one row.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Op {
    Insert,
    Update,
    Delete,
}

/// A change: origin instance, sequence number, HLC.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Ver {
    origin: usize,
    seq: u64,
    hlc: u64,
}

/// The clock of a change the model has numbered but the engine's log does
/// not show (the model says it was superseded while being stamped).
const UNSTAMPED: u64 = u64::MAX;

impl Ver {
    fn same(&self, other: &Ver) -> bool {
        self.origin == other.origin && self.seq == other.seq
    }
}

impl fmt::Debug for Ver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}#{}@{}", self.origin, self.seq, hlc_text(self.hlc))
    }
}

/// An HLC as `milliseconds.counter`, the milliseconds cut to their last six
/// digits (enough to order the changes of one run).
fn hlc_text(hlc: u64) -> String {
    if hlc == UNSTAMPED {
        return "?".into();
    }
    format!("{}.{}", (hlc >> 22) % 1_000_000, hlc & ((1 << 22) - 1))
}

/// One row's state on one instance: causal length and, per bit, the change
/// holding it.
#[derive(Clone, Debug)]
struct RowModel {
    cl: u64,
    holders: Vec<Option<Ver>>,
}

impl RowModel {
    fn new(cells: usize) -> RowModel {
        RowModel {
            cl: 0,
            holders: vec![None; cells + 1],
        }
    }

    fn live(&self) -> bool {
        self.cl % 2 == 1
    }

    fn new_era(&mut self, cl: u64) {
        self.cl = cl;
        self.holders.iter_mut().for_each(|h| *h = None);
    }

    /// A local change, by the table in spec/merge.md "Local changes".
    /// Returns the bits it wrote (empty: it is no change).
    fn local(&mut self, op: Op, bits: &BTreeSet<usize>, v: Ver) -> BTreeSet<usize> {
        let all: BTreeSet<usize> = (0..self.holders.len()).collect();
        match op {
            Op::Update if self.live() => {
                for &b in bits {
                    self.holders[b] = Some(v);
                }
                bits.clone()
            }
            // An insert; an update of a row not known as existing is one.
            Op::Insert | Op::Update => {
                if !self.live() {
                    self.new_era(self.cl + 1);
                }
                for h in &mut self.holders {
                    *h = Some(v);
                }
                all
            }
            Op::Delete if self.live() || self.cl == 0 => {
                self.new_era(if self.cl == 0 { 2 } else { self.cl + 1 });
                self.holders[0] = Some(v);
                BTreeSet::from([0])
            }
            // Deleting a row already deleted: the spec's table has no such
            // line; it cannot happen while the app table and the log agree.
            Op::Delete => BTreeSet::new(),
        }
    }

    /// Who holds what: per change, its clock and cells.
    fn holders(&self) -> Holders {
        let mut out = Holders::new();
        for (bit, h) in self.holders.iter().enumerate() {
            if let Some(v) = h {
                out.entry((v.origin, v.seq))
                    .or_insert_with(|| (v.hlc, BTreeSet::new()))
                    .1
                    .insert(bit);
            }
        }
        out
    }
}

/// Per change (origin, seq): its clock and the bits it holds.
type Holders = BTreeMap<(usize, u64), (u64, BTreeSet<usize>)>;

/// App rows: per row, its cells in table order.
type Tables = BTreeMap<RowId, Vec<Value>>;

/// A captured row change not yet stamped, as `fieldsync_pending` has it,
/// with the row as the statement left it.
#[derive(Clone)]
struct Captured {
    row: RowId,
    op: Op,
    bits: BTreeSet<usize>,
    at: f64,
    after: Option<Vec<Value>>,
}

/// A change that survived stamping, for the join at the end: what it wrote.
#[derive(Clone)]
struct Change {
    ver: Ver,
    row: RowId,
    cl: u64,
    writes: BTreeSet<usize>,
    values: Option<Vec<Value>>,
}

/// A row record of a bundle.
#[derive(Clone, PartialEq)]
struct Rec {
    cl: u64,
    versions: Holders,
    /// Values of the cells carried (bits ≥ 1).
    values: BTreeMap<usize, Value>,
}

impl Rec {
    fn text(&self, row: &RowId) -> String {
        let values: Vec<String> = self
            .values
            .iter()
            .map(|(b, v)| format!("{}={}", bit_name(row.table, *b), show(v)))
            .collect();
        format!(
            "{row:?} cl {}: {}; values ({})",
            self.cl,
            versions_text(row, &self.versions),
            values.join(", ")
        )
    }
}

/// New changes of one instance in its log: seq → (row, hlc).
type Stamps = BTreeMap<u64, (RowId, u64)>;

/// Which rows deleted without a trigger an operation records deletes for
/// (spec/capture.md): every one (compact, full export), those a delta
/// export carries (a covered change holds a cell), or none (import stamping).
#[derive(Clone, Copy)]
enum Vanish<'a> {
    All,
    Covered(&'a BTreeMap<usize, SeqSet>),
    NotRecorded,
}

/// Verdict counts: applied, known, older.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Verdicts {
    applied: u64,
    known: u64,
    older: u64,
}

impl Verdicts {
    fn add(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Applied => self.applied += 1,
            Verdict::Known => self.known += 1,
            Verdict::Older => self.older += 1,
        }
    }
}

/// One instance as the model sees it.
#[derive(Default)]
struct InstModel {
    rows: BTreeMap<RowId, RowModel>,
    app: Tables,
    pending: Vec<Captured>,
    /// Last sequence number handed out.
    seq: u64,
    /// Greatest HLC this instance stamped or imported.
    seen_hlc: u64,
    /// The identity of each row of a table with a local key, by its local
    /// number here (the model's prediction of `fieldsync_ids`).
    ids: Ids,
    /// Rows whose received changes wait in quarantine, with those changes
    /// combined into one record.
    held: BTreeMap<RowId, Rec>,
}

impl InstModel {
    /// The local number of the row with this identity, if it is here.
    fn local_of(&self, row: &RowId) -> Option<i64> {
        self.ids
            .iter()
            .find(|(_, r)| *r == row)
            .map(|((_, l), _)| *l)
    }

    /// A row's app cells as compared (references by identity), if the app
    /// table has it.
    fn app_row(&self, sites: &[[u8; 16]], row: &RowId) -> Option<Vec<Value>> {
        if !row.is_identity() {
            return self.app.get(row).cloned();
        }
        let l = self.local_of(row)?;
        self.app
            .get(&RowId::local(row.table, l))
            .map(|c| cells_by_identity(sites, &self.ids, row.table, c))
    }

    fn has_app(&self, row: &RowId) -> bool {
        if !row.is_identity() {
            return self.app.contains_key(row);
        }
        self.local_of(row)
            .is_some_and(|l| self.app.contains_key(&RowId::local(row.table, l)))
    }
}

type Rank = (u64, [u8; 16], u64);

/// Merge one record into a row, by spec/merge.md "Merging a remote change
/// into a row". `rank` orders changes by `(hlc, site id, seq)`.
fn merge_record(
    state: &mut RowModel,
    app: &mut Option<Vec<Value>>,
    rec: &Rec,
    rank: &dyn Fn(&Ver) -> Rank,
) -> Verdict {
    // 1. A lower causal length changes nothing.
    if rec.cl < state.cl {
        return Verdict::Older;
    }
    // 2. A higher one starts a new era.
    let new_era = rec.cl > state.cl;
    if new_era {
        state.new_era(rec.cl);
    }
    // 3. Each cell goes to the greater-ranked change.
    let mut won = BTreeSet::new();
    let mut lost = false;
    for (&(origin, seq), (hlc, bits)) in &rec.versions {
        let v = Ver {
            origin,
            seq,
            hlc: *hlc,
        };
        for &b in bits {
            match state.holders[b] {
                None => {
                    state.holders[b] = Some(v);
                    won.insert(b);
                }
                Some(h) if h.same(&v) => {}
                Some(h) if rank(&v) > rank(&h) => {
                    state.holders[b] = Some(v);
                    won.insert(b);
                }
                Some(_) => lost = true,
            }
        }
    }
    // 4. The app row.
    if !state.live() {
        if new_era {
            *app = None;
        }
    } else if new_era || !won.is_empty() {
        // A new era keeps the old values of cells it does not carry (NULL
        // if the row was not there).
        let cells = state.holders.len() - 1;
        let row = app.get_or_insert_with(|| vec![Value::Null; cells]);
        for &b in won.iter().filter(|&&b| b > 0) {
            if let Some(v) = rec.values.get(&b) {
                row[b - 1] = v.clone();
            }
        }
    }
    if new_era || !won.is_empty() {
        Verdict::Applied
    } else if lost {
        Verdict::Older
    } else {
        Verdict::Known
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Verdict {
    Applied,
    Known,
    Older,
}

/// An instance's state as compared: app rows and change log.
#[derive(PartialEq)]
struct View {
    app: Tables,
    log: BTreeMap<RowId, (u64, Holders)>,
}

/// Which change holds which bits of a row.
fn versions_text(row: &RowId, h: &Holders) -> String {
    let parts: Vec<String> = h
        .iter()
        .map(|((o, s), (hlc, bits))| {
            format!(
                "i{o}#{s}@{} holds {}",
                hlc_text(*hlc),
                bits_text(row.table, bits)
            )
        })
        .collect();
    parts.join(", ")
}

fn holders_text(row: &RowId, cl: u64, h: &Holders) -> String {
    format!("cl {cl}: {}", versions_text(row, h))
}

/// The differences between two views, named `a` and `b`.
fn diff(a_name: &str, a: &View, b_name: &str, b: &View) -> String {
    let mut out = Vec::new();
    let rows: BTreeSet<&RowId> = a.app.keys().chain(b.app.keys()).collect();
    for row in rows {
        let (x, y) = (a.app.get(row), b.app.get(row));
        if x != y {
            let text = |r: Option<&Vec<Value>>| match r {
                Some(r) => show_row(row.table, r),
                None => "absent".into(),
            };
            out.push(format!(
                "  app row {row:?}: {a_name} {}, {b_name} {}",
                text(x),
                text(y)
            ));
        }
    }
    let rows: BTreeSet<&RowId> = a.log.keys().chain(b.log.keys()).collect();
    for row in rows {
        let (x, y) = (a.log.get(row), b.log.get(row));
        if x != y {
            let text = |r: Option<&(u64, Holders)>| match r {
                Some((cl, h)) => holders_text(row, *cl, h),
                None => "not in the log".into(),
            };
            out.push(format!(
                "  log {row:?}: {a_name} {}\n  {:width$}{b_name} {}",
                text(x),
                "",
                text(y),
                width = format!("  log {row:?}: ").len() - 2,
            ));
        }
    }
    out.join("\n")
}

// ---------------------------------------------------------------------------
// Running a history
// ---------------------------------------------------------------------------

struct Bundle {
    sender: usize,
    what: String,
    bytes: Vec<u8>,
    /// The records the model predicts (and checked the body against).
    records: BTreeMap<RowId, Rec>,
}

struct World {
    instances: Vec<Instance>,
    sites: Vec<[u8; 16]>,
    models: Vec<InstModel>,
    /// Every change that survived stamping, anywhere.
    changes: Vec<Change>,
    pool: Vec<Bundle>,
    trace: Vec<String>,
    skew_ms: Vec<i64>,
    /// A bundle without rows from an instance outside the world.
    probe: Vec<u8>,
    /// The app's foreign-key discipline, kept across instances (see
    /// [`World::resolve`]): `loc` rows some change ever pointed at (by
    /// identity; by instance and local number while not stamped), and
    /// those deleted somewhere, which no new change may point at.
    ever_parent: BTreeSet<RowId>,
    pending_parent: BTreeSet<(usize, i64)>,
    doomed: BTreeSet<RowId>,
    // Declared last, so it is dropped (and the files removed) last.
    dir: tempfile::TempDir,
}

fn name(i: usize) -> String {
    format!("i{i}")
}

impl World {
    fn new(n: usize, skew_ms: &[i64]) -> Res<World> {
        let dir = tempfile::tempdir()?;
        let mut instances = Vec::with_capacity(n);
        let mut sites = Vec::with_capacity(n);
        for i in 0..n {
            let (mut inst, _) =
                Instance::init(dir.path().join(format!("{}.db", name(i))), &name(i))?;
            inst.connection().execute_batch(SCHEMA)?;
            // Durability is not under test; fsync would dominate the run time.
            inst.connection()
                .execute_batch("PRAGMA synchronous = OFF")?;
            inst.track(&Selection::All)?;
            // Known engine bug (see `avoid_known_bug`): the first stamp
            // after `track` records writes to `opt` at its own time.
            if avoid_known_bug("first-stamp") {
                inst.compact()?;
            }
            check_catalog(inst.connection())?;
            sites.push(*inst.site_id()?.as_bytes());
            instances.push(inst);
        }
        let mut probe = Vec::new();
        {
            let (mut p, _) = Instance::init(dir.path().join("probe.db"), "probe")?;
            p.connection().execute_batch(SCHEMA)?;
            p.track(&Selection::All)?;
            p.export(&ExportTarget::Full, &mut probe)?;
        }
        Ok(World {
            probe,
            instances,
            sites,
            models: (0..n).map(|_| InstModel::default()).collect(),
            skew_ms: skew_ms.to_vec(),
            changes: Vec::new(),
            pool: Vec::new(),
            trace: Vec::new(),
            ever_parent: BTreeSet::new(),
            pending_parent: BTreeSet::new(),
            doomed: BTreeSet::new(),
            dir,
        })
    }

    fn rank(&self, v: &Ver) -> Rank {
        (v.hlc, self.sites[v.origin], v.seq)
    }

    fn origin_of(&self, site: &[u8]) -> Res<usize> {
        self.sites
            .iter()
            .position(|s| s[..] == *site)
            .ok_or_else(|| format!("unknown site id {site:02x?}").into())
    }

    // --- reading an instance ---------------------------------------------

    fn view_of(&self, conn: &Connection) -> Res<View> {
        let app = app_by_identity(
            &self.sites,
            &read_tables(conn)?,
            &read_ids(conn, &self.sites)?,
        );
        let mut log: BTreeMap<RowId, (u64, Holders)> = BTreeMap::new();
        let mut stmt = conn.prepare(
            "SELECT t.name, l.pk, s.site_id, l.seq, l.cl, l.hlc, l.cols \
             FROM fieldsync_log AS l \
             JOIN fieldsync_sites AS s ON s.id = l.origin \
             JOIN fieldsync_tables AS t ON t.id = l.tbl",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let table_name: String = r.get(0)?;
            let table = table_index(&table_name)?;
            let key = decode_key(&r.get::<_, Vec<u8>>(1)?)?;
            let row = row_from(&self.sites, table, &key)?;
            let origin = self.origin_of(&r.get::<_, Vec<u8>>(2)?)?;
            let seq = r.get::<_, i64>(3)? as u64;
            let cl = r.get::<_, i64>(4)? as u64;
            let hlc = r.get::<_, i64>(5)? as u64;
            let cols = ColSet::from_bytes(&r.get::<_, Vec<u8>>(6)?)?;
            let entry = log.entry(row.clone()).or_insert((cl, Holders::new()));
            if entry.0 != cl {
                return Err(format!(
                    "the log has two causal lengths for {row:?}: {} and {cl}",
                    entry.0
                )
                .into());
            }
            entry.1.insert((origin, seq), (hlc, cols.iter().collect()));
        }
        Ok(View { app, log })
    }

    fn model_view(&self, at: usize) -> View {
        let m = &self.models[at];
        View {
            app: app_by_identity(&self.sites, &m.app, &m.ids),
            log: m
                .rows
                .iter()
                .filter(|(_, r)| r.cl > 0)
                .map(|(row, r)| (row.clone(), (r.cl, r.holders())))
                .collect(),
        }
    }

    /// The instance must hold exactly what the model says.
    fn check_state(&self, at: usize, when: &str) -> Res<()> {
        let real = self.view_of(self.instances[at].connection())?;
        let model = self.model_view(at);
        if real != model {
            return Err(format!(
                "i{at} {when} differs from the model:\n{}",
                diff("engine", &real, "model", &model)
            )
            .into());
        }
        // The identity map and the quarantine.
        let conn = self.instances[at].connection();
        let ids = read_ids(conn, &self.sites)?;
        let m = &self.models[at];
        if ids != m.ids {
            let show = |ids: &Ids| -> String {
                ids.iter()
                    .map(|((t, l), r)| format!("{} {l} = {r:?}", TABLES[*t].name))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(format!(
                "i{at} {when}: fieldsync_ids is {{{}}}, the model says {{{}}}",
                show(&ids),
                show(&m.ids)
            )
            .into());
        }
        let held = read_held(conn, &self.sites)?;
        if held.iter().ne(m.held.keys()) {
            return Err(format!(
                "i{at} {when}: quarantine holds {held:?}, the model {:?}",
                m.held.keys().collect::<Vec<_>>()
            )
            .into());
        }
        // The model's own invariant: a row in the app table lives (a live
        // row may be missing: deleted without a trigger, not yet noticed).
        for (row, r) in &self.models[at].rows {
            if !r.live() && self.models[at].has_app(row) {
                return Err(format!(
                    "model inconsistency at i{at}: {row:?} has cl {} but is in the app table",
                    r.cl
                )
                .into());
            }
        }
        Ok(())
    }

    /// The changes of `at` numbered after the model's counter, as the log at
    /// `conn` (the instance or a stamped copy) shows them: row and clock.
    fn new_stamps(&self, conn: &Connection, at: usize) -> Res<Stamps> {
        let mut stmt = conn.prepare(
            "SELECT l.seq, t.name, l.pk, l.hlc FROM fieldsync_log AS l \
             JOIN fieldsync_sites AS s ON s.id = l.origin \
             JOIN fieldsync_tables AS t ON t.id = l.tbl \
             WHERE s.site_id = ?1 AND l.seq > ?2",
        )?;
        let mut rows = stmt.query(rusqlite::params![
            &self.sites[at][..],
            self.models[at].seq as i64
        ])?;
        let mut out = Stamps::new();
        while let Some(r) = rows.next()? {
            let table = table_index(&r.get::<_, String>(1)?)?;
            let key = decode_key(&r.get::<_, Vec<u8>>(2)?)?;
            out.insert(
                r.get::<_, i64>(0)? as u64,
                (
                    row_from(&self.sites, table, &key)?,
                    r.get::<_, i64>(3)? as u64,
                ),
            );
        }
        Ok(out)
    }

    // --- app writes --------------------------------------------------------

    /// Make a write on a table with a local key concrete on instance `at`
    /// (rows picked by position among those it has, in local-number order).
    ///
    /// References stay whole as with an app running with foreign keys on,
    /// and more: a `loc` row is deleted only if no change anywhere ever
    /// pointed at it, and once deleted anywhere no new change points at it
    /// (it may still be live elsewhere). A delete made concurrently with a
    /// reference to the row made elsewhere is refused on both sides
    /// (spec/quarantine.md: still referenced here, missing parent there)
    /// and held until one of the rows is edited again: the instances do not
    /// converge (spec/merge.md, "Consequences, and what is still open").
    /// The model does not go there.
    fn resolve(&self, at: usize, w: &Write) -> Plan {
        let m = &self.models[at];
        let rows = |t: usize| -> Vec<i64> {
            m.app
                .keys()
                .filter(|r| r.table == t)
                .filter_map(RowId::local_number)
                .collect()
        };
        let pick = |list: &[i64], k: usize| -> Option<i64> {
            (!list.is_empty()).then(|| list[k % list.len()])
        };
        let locs = rows(LOC);
        let identity = |l: i64| m.ids.get(&(LOC, l));
        let pointable: Vec<i64> = locs
            .iter()
            .copied()
            .filter(|&l| identity(l).is_none_or(|id| !self.doomed.contains(id)))
            .collect();
        let parent = |p: &Option<usize>| p.and_then(|p| pick(&pointable, p));
        // Known engine bug (see `avoid_known_bug`): rows new at the
        // receiver pointing at each other never arrive.
        let no_cycles = avoid_known_bug("cycles");
        let reaches = |from: i64, to: i64| -> bool {
            let mut at = Some(from);
            let mut steps = 0;
            while let Some(l) = at {
                if l == to {
                    return true;
                }
                steps += 1;
                if steps > 100 {
                    return true;
                }
                at = match m.app.get(&RowId::local(LOC, l)).map(|c| &c[LOC_PARENT - 1]) {
                    Some(Value::Integer(p)) => Some(*p),
                    _ => None,
                };
            }
            false
        };
        let int = |l: Option<i64>| l.map_or(Value::Null, Value::Integer);
        let opts = rows(OPT);
        let update = |row: RowId, set: Vec<Set>, points_at: Option<i64>| Plan::Do {
            stmt: Resolved::Update { row, set },
            points_at,
            deletes: None,
        };
        match w {
            Write::LocInsert { name, parent: p } => {
                let p = parent(p);
                Plan::Do {
                    stmt: Resolved::Insert {
                        table: LOC,
                        values: vec![name.clone(), int(p)],
                    },
                    points_at: p,
                    deletes: None,
                }
            }
            Write::LocRename { pick: k, name } => match pick(&locs, *k) {
                None => Plan::Nothing,
                Some(l) => update(
                    RowId::local(LOC, l),
                    vec![Set {
                        cell: 0,
                        value: Some(name.clone()),
                    }],
                    None,
                ),
            },
            Write::LocRepoint { pick: k, parent: p } => match pick(&locs, *k) {
                None => Plan::Nothing,
                Some(l) => {
                    let mut p = parent(p);
                    if no_cycles && p.is_some_and(|p| p != l && reaches(p, l)) {
                        p = None;
                    }
                    update(
                        RowId::local(LOC, l),
                        vec![Set {
                            cell: LOC_PARENT - 1,
                            value: Some(int(p)),
                        }],
                        p,
                    )
                }
            },
            Write::LocDelete { pick: k } => {
                let deletable: Vec<i64> = locs
                    .iter()
                    .copied()
                    .filter(|&l| {
                        !self.pending_parent.contains(&(at, l))
                            && identity(l).is_none_or(|id| !self.ever_parent.contains(id))
                            && !m.app.iter().any(|(r, c)| {
                                r.table == LOC && c[LOC_PARENT - 1] == Value::Integer(l)
                            })
                    })
                    .collect();
                match pick(&deletable, *k) {
                    None => Plan::Nothing,
                    Some(l) => Plan::Do {
                        stmt: Resolved::Delete {
                            row: RowId::local(LOC, l),
                        },
                        points_at: None,
                        deletes: Some(l),
                    },
                }
            }
            Write::OptInsert { values } => Plan::Do {
                stmt: Resolved::Insert {
                    table: OPT,
                    values: values.clone(),
                },
                points_at: None,
                deletes: None,
            },
            Write::OptCopy { pick: k } => {
                match pick(&opts, *k).and_then(|l| m.app.get(&RowId::local(OPT, l))) {
                    None => Plan::Nothing,
                    Some(values) => Plan::Do {
                        stmt: Resolved::Insert {
                            table: OPT,
                            values: values.clone(),
                        },
                        points_at: None,
                        deletes: None,
                    },
                }
            }
            Write::OptUpdate { pick: k, set } => match pick(&opts, *k) {
                None => Plan::Nothing,
                Some(l) => update(RowId::local(OPT, l), set.clone(), None),
            },
            Write::OptDelete { pick: k } => match pick(&opts, *k) {
                None => Plan::Nothing,
                Some(l) => Plan::Do {
                    stmt: Resolved::Delete {
                        row: RowId::local(OPT, l),
                    },
                    points_at: None,
                    deletes: None,
                },
            },
            _ => Plan::Key,
        }
    }

    fn write(&mut self, at: usize, w: &Write) -> Res<()> {
        let plan = self.resolve(at, w);
        let stmts = match &plan {
            Plan::Key => w.statements(),
            Plan::Nothing => {
                self.trace.push(format!("i{at}: {w:?}  [no row to pick]"));
                return Ok(());
            }
            Plan::Do { stmt, .. } => vec![stmt.statement()],
        };
        let mut notes = Vec::new();
        for stmt in stmts {
            let conn = self.instances[at].connection();
            let before = read_tables(conn)?;
            if before != self.models[at].app {
                return Err(format!(
                    "i{at}'s app tables changed behind the model's back:\n{}",
                    diff(
                        "engine",
                        &View {
                            app: before,
                            log: BTreeMap::new()
                        },
                        "model",
                        &View {
                            app: self.models[at].app.clone(),
                            log: BTreeMap::new()
                        }
                    )
                )
                .into());
            }
            let (sql, params) = stmt_sql(&stmt);
            let last: i64 = conn.query_row(
                "SELECT coalesce(max(id), 0) FROM fieldsync_pending",
                [],
                |r| r.get(0),
            )?;
            let n = conn.execute(&sql, rusqlite::params_from_iter(params.iter()))?;
            if self.skew_ms[at] != 0 {
                conn.execute(
                    "UPDATE fieldsync_pending SET at = at + ?1 WHERE id > ?2",
                    rusqlite::params![self.skew_ms[at] as f64 / 86_400_000.0, last],
                )?;
            }
            let after = read_tables(conn)?;
            let mut predicted = predict(&stmt, &before, &after)?;
            let observed = self.read_pending(at)?;
            let mut got: Vec<(RowId, Op, BTreeSet<usize>)> = observed
                .iter()
                .map(|c| (c.row.clone(), c.op, c.bits.clone()))
                .collect();
            predicted.sort();
            got.sort();
            if predicted != got {
                return Err(format!(
                    "i{at}: `{sql}` was captured as {} but the capture rules say {}",
                    captured_text(&got),
                    captured_text(&predicted)
                )
                .into());
            }
            let m = &mut self.models[at];
            for mut c in observed {
                c.after = after.get(&c.row).cloned();
                m.pending.push(c);
            }
            m.app = after;
            if matches!(plan, Plan::Do { .. }) {
                let params: Vec<String> = params.iter().map(show).collect();
                notes.push(format!("`{sql}` ({})", params.join(", ")));
            }
            notes.push(format!("{n} row(s), captured {}", captured_text(&got)));
        }
        if let Plan::Do {
            points_at, deletes, ..
        } = &plan
        {
            let ids = &self.models[at].ids;
            if let Some(l) = points_at {
                match ids.get(&(LOC, *l)) {
                    Some(id) => self.ever_parent.insert(id.clone()),
                    None => self.pending_parent.insert((at, *l)),
                };
            }
            if let Some(l) = deletes {
                if let Some(id) = ids.get(&(LOC, *l)) {
                    self.doomed.insert(id.clone());
                }
            }
        }
        self.trace
            .push(format!("i{at}: {w:?}  [{}]", notes.join("; ")));
        Ok(())
    }

    /// The captured rows beyond those the model already has, in capture
    /// order; checks that those it has are still there.
    fn read_pending(&self, at: usize) -> Res<Vec<Captured>> {
        let conn = self.instances[at].connection();
        let ids = table_ids(conn)?;
        let mut stmt =
            conn.prepare("SELECT t, op, at, k0, k1, m0 FROM fieldsync_pending ORDER BY id")?;
        let mut rows = stmt.query([])?;
        let mut all = Vec::new();
        while let Some(r) = rows.next()? {
            let t: i64 = r.get(0)?;
            let table = *ids
                .get(&t)
                .ok_or_else(|| format!("fieldsync_pending names table #{t}"))?;
            let op = match r.get::<_, i64>(1)? {
                1 => Op::Insert,
                2 => Op::Update,
                3 => Op::Delete,
                other => return Err(format!("fieldsync_pending has op {other}").into()),
            };
            let key: Vec<Value> = (0..TABLES[table].key.len())
                .map(|i| r.get::<_, Value>(3 + i))
                .collect::<rusqlite::Result<_>>()?;
            let mask = r.get::<_, Option<i64>>(5)?.unwrap_or(0) as u64;
            all.push(Captured {
                row: RowId::from_values(table, &key)?,
                op,
                bits: (0..64).filter(|b| mask & (1 << b) != 0).collect(),
                at: r.get(2)?,
                after: None,
            });
        }
        let known = &self.models[at].pending;
        let same = |a: &Captured, b: &Captured| a.row == b.row && a.op == b.op && a.bits == b.bits;
        if all.len() < known.len() || !known.iter().zip(&all).all(|(a, b)| same(a, b)) {
            return Err(format!(
                "i{at}: fieldsync_pending no longer holds the {} captured row(s) the model expects",
                known.len()
            )
            .into());
        }
        Ok(all.split_off(known.len()))
    }

    // --- stamping ----------------------------------------------------------

    /// Stamp the model's captured writes at `at` (spec/capture.md
    /// "From captured rows to changes"), with the clocks the engine gave the
    /// changes that survive; then record a delete for each row the log
    /// knows as live but the app table lacks (deleted without a trigger)
    /// among those `vanish` selects. Returns a line for the trace.
    fn stamp(&mut self, at: usize, stamps: &Stamps, vanish: Vanish<'_>) -> Res<Option<String>> {
        let m = &mut self.models[at];
        // Consecutive updates of one row with one wall time (one statement)
        // fold into one change.
        let mut folded: Vec<Captured> = Vec::new();
        for c in std::mem::take(&mut m.pending) {
            if let Some(prev) = folded.last_mut() {
                if c.op == Op::Update
                    && prev.op == Op::Update
                    && prev.row == c.row
                    && prev.at == c.at
                {
                    prev.bits.extend(c.bits);
                    prev.after = c.after;
                    continue;
                }
            }
            folded.push(c);
        }
        let first = m.seq + 1;
        let mut made = Vec::new();
        for c in folded {
            // A table with a local key: the change is of the row the number
            // stands for, or creates a new row (spec/merge.md, "Row
            // identity"), identified by this change's number, or by the
            // row's content as the table has it now and the first copy
            // number not taken here.
            let mut numbered = false;
            let row = match c.row.local_number() {
                None => c.row.clone(),
                Some(local) => {
                    let t = c.row.table;
                    match m.ids.get(&(t, local)).cloned() {
                        Some(id) => {
                            if c.op == Op::Delete {
                                m.ids.remove(&(t, local));
                            }
                            id
                        }
                        // Never known: nothing to tell anyone.
                        None if c.op == Op::Delete => continue,
                        None => {
                            m.seq += 1;
                            // Gone again before it was stamped: the number
                            // is used up, nothing is recorded.
                            let Some(now) = m.app.get(&c.row) else {
                                continue;
                            };
                            let id = match TABLES[t].kind {
                                Kind::Content => {
                                    let sig = fieldsync::identity::content_sig(now);
                                    let taken: BTreeSet<&RowId> = m.ids.values().collect();
                                    let mut copy = 0;
                                    loop {
                                        let id = RowId {
                                            table: t,
                                            key: vec![KeyPart::Content(sig, copy)],
                                        };
                                        if !taken.contains(&id) {
                                            break id;
                                        }
                                        copy += 1;
                                    }
                                }
                                _ => RowId {
                                    table: t,
                                    key: vec![KeyPart::Origin(at, m.seq)],
                                },
                            };
                            m.ids.insert((t, local), id.clone());
                            numbered = true;
                            id
                        }
                    }
                }
            };
            if !numbered {
                m.seq += 1;
            }
            let ver = Ver {
                origin: at,
                seq: m.seq,
                hlc: stamps.get(&m.seq).map_or(UNSTAMPED, |(_, h)| *h),
            };
            let state = m
                .rows
                .entry(row.clone())
                .or_insert_with(|| RowModel::new(row.cells()));
            let writes = state.local(c.op, &c.bits, ver);
            made.push((
                Change {
                    ver,
                    row,
                    cl: state.cl,
                    writes,
                    values: c.after,
                },
                Some(c.at),
            ));
        }
        // Values of changes to `loc`: references by identity.
        for (c, _) in &mut made {
            if let Some(v) = &mut c.values {
                *v = cells_by_identity(&self.sites, &m.ids, c.row.table, v);
            }
        }
        // Rows pointed at before they were stamped now have an identity.
        let ids = &m.ids;
        let pending: Vec<(usize, i64)> = self
            .pending_parent
            .iter()
            .filter(|(i, _)| *i == at)
            .copied()
            .collect();
        for p in pending {
            self.pending_parent.remove(&p);
            if let Some(id) = ids.get(&(LOC, p.1)) {
                self.ever_parent.insert(id.clone());
            }
        }
        let stamped = m.seq;

        // Rows deleted without a trigger.
        let vanished: Vec<RowId> = m
            .rows
            .iter()
            .filter(|(row, st)| st.live() && !m.has_app(row))
            .filter(|(_, st)| match vanish {
                Vanish::All => true,
                Vanish::Covered(covers) => st
                    .holders
                    .iter()
                    .flatten()
                    .any(|v| covers.get(&v.origin).is_some_and(|set| set.contains(v.seq))),
                Vanish::NotRecorded => false,
            })
            .map(|(row, _)| row.clone())
            .collect();
        let recorded: Vec<(u64, RowId, u64)> = stamps
            .range(stamped + 1..)
            .map(|(seq, (row, hlc))| (*seq, row.clone(), *hlc))
            .collect();
        let rows: BTreeSet<&RowId> = recorded.iter().map(|(_, r, _)| r).collect();
        if rows != vanished.iter().collect::<BTreeSet<_>>()
            || recorded.len() != vanished.len()
            || recorded
                .last()
                .is_some_and(|(seq, ..)| *seq != stamped + vanished.len() as u64)
        {
            return Err(format!(
                "i{at} recorded deletes of rows deleted without a trigger {:?}; the model \
                 expects {vanished:?}",
                recorded
                    .iter()
                    .map(|(s, r, _)| format!("#{s} {r:?}"))
                    .collect::<Vec<_>>()
            )
            .into());
        }
        for (seq, row, hlc) in recorded {
            let ver = Ver {
                origin: at,
                seq,
                hlc,
            };
            let state = m
                .rows
                .get_mut(&row)
                .ok_or("model inconsistency: a vanished row has no state")?;
            let writes = state.local(Op::Delete, &BTreeSet::new(), ver);
            made.push((
                Change {
                    ver,
                    row,
                    cl: state.cl,
                    writes,
                    values: None,
                },
                None,
            ));
            m.seq = seq;
        }

        // What survived (a vanished row's delete supersedes its insert).
        let held: BTreeSet<u64> = m
            .rows
            .values()
            .flat_map(|r| r.holders.iter().flatten())
            .filter(|v| v.origin == at && v.seq >= first)
            .map(|v| v.seq)
            .collect();
        for (seq, (row, _)) in stamps.range(..=stamped) {
            if !held.contains(seq) {
                return Err(format!(
                    "i{at}'s log holds its change #{seq} of {row:?}, which by the local rules \
                     was superseded while being stamped"
                )
                .into());
            }
            if made.iter().any(|(c, _)| c.ver.seq == *seq && c.row != *row) {
                return Err(format!(
                    "i{at}'s change #{seq} is of {row:?}, not the row the model says"
                )
                .into());
            }
        }
        if let Some(seq) = held.iter().find(|s| !stamps.contains_key(s)) {
            return Err(format!(
                "by the local rules i{at}'s change #{seq} holds cells, but i{at}'s log has no such change"
            )
            .into());
        }

        if made.is_empty() {
            return Ok(None);
        }

        // The clock: increasing, not before the write, past what was seen.
        let mut last = m.seen_hlc;
        let mut notes = Vec::new();
        for (c, wall) in &made {
            if c.ver.seq <= stamped && !held.contains(&c.ver.seq) {
                notes.push(format!("#{} superseded", c.ver.seq));
                continue;
            }
            let hlc = c.ver.hlc;
            let hlc_ms = (hlc >> 22) as i64 + 1_704_067_200_000;
            let wall_ms = wall.map_or(0, |w| ((w - 2_440_587.5) * 86_400_000.0).round() as i64);
            if hlc <= last || hlc_ms < wall_ms {
                return Err(format!(
                    "i{at}'s change #{} got clock {} (ms {hlc_ms}), not past {} or not at or after its write (ms {wall_ms})",
                    c.ver.seq,
                    hlc_text(hlc),
                    hlc_text(last)
                )
                .into());
            }
            last = hlc;
            notes.push(format!(
                "{:?} {:?} cl {} writes {}{}",
                c.ver,
                c.row,
                c.cl,
                bits_text(c.row.table, &c.writes),
                if wall.is_none() {
                    " (vanished row)"
                } else {
                    ""
                }
            ));
        }
        m.seen_hlc = last;
        for (c, _) in made {
            if c.ver.seq > stamped || held.contains(&c.ver.seq) {
                self.changes.push(c);
            }
        }
        Ok(Some(format!("i{at}: stamped {}", notes.join("; "))))
    }

    /// The clocks the next stamping of `at` gives its captured writes,
    /// observed on a copy of the database stamped by importing a bundle
    /// without rows, as an import stamps; and that copy's state.
    fn stamps_of_copy(&self, at: usize) -> Res<(Stamps, View)> {
        let path = self.dir.path().join("copy.db");
        let _ = std::fs::remove_file(&path);
        // A byte copy (no transaction is open): `VACUUM INTO` would move
        // the schema cookie and may renumber the rowids of `opt`, which
        // the next stamp then matches by content (src/stamp.rs) as the
        // instance itself would not.
        std::fs::copy(self.dir.path().join(format!("{}.db", name(at))), &path)?;
        let result = (|| -> Res<(Stamps, View)> {
            let mut copy = Instance::open(&path)?;
            copy.import(Cursor::new(&self.probe))?;
            Ok((
                self.new_stamps(copy.connection(), at)?,
                self.view_of(copy.connection())?,
            ))
        })();
        let _ = std::fs::remove_file(&path);
        result
    }

    // --- engine operations -------------------------------------------------

    fn export(&mut self, from: usize, target: &ExportTarget) -> Res<usize> {
        let mut bytes = Vec::new();
        self.instances[from]
            .export(target, &mut bytes)
            .map_err(|e| format!("i{from}: export {target:?} failed: {e}"))?;
        let mut reader = BundleReader::open(Cursor::new(&bytes))?;
        let header = reader.header().clone();
        let mut covers: BTreeMap<usize, SeqSet> = BTreeMap::new();
        for c in &header.covers {
            let site = header.origins[c.origin as usize].id;
            covers
                .entry(self.origin_of(site.as_bytes())?)
                .or_default()
                .union_with(&c.seqs);
        }
        let stamps = self.new_stamps(self.instances[from].connection(), from)?;
        let vanish = match target {
            ExportTarget::Full => Vanish::All,
            ExportTarget::Peer { .. } => Vanish::Covered(&covers),
        };
        if let Some(t) = self.stamp(from, &stamps, vanish)? {
            self.trace.push(t);
        }
        let what = match target {
            ExportTarget::Full => format!("i{from} full"),
            ExportTarget::Peer { to, resend } => {
                format!("i{from} → {to}{}", if *resend { " (resend)" } else { "" })
            }
        };
        self.check_state(from, &format!("after export {what}"))?;

        // What the bundle must carry: every row holding a covered change,
        // with the covered changes and the values of their cells.
        let model = &self.models[from];
        let mut expected: BTreeMap<RowId, Rec> = BTreeMap::new();
        for (row, state) in &model.rows {
            let versions: Holders = state
                .holders()
                .into_iter()
                .filter(|((o, s), _)| covers.get(o).is_some_and(|set| set.contains(*s)))
                .collect();
            if versions.is_empty() {
                continue;
            }
            let mut values = BTreeMap::new();
            let app_row = model.app_row(&self.sites, row);
            for &b in versions.values().flat_map(|(_, bits)| bits) {
                if b > 0 {
                    let app = app_row.as_ref().ok_or_else(|| {
                        format!("model inconsistency: {row:?} lives at i{from} but has no app row")
                    })?;
                    values.insert(b, app[b - 1].clone());
                }
            }
            expected.insert(
                row.clone(),
                Rec {
                    cl: state.cl,
                    versions,
                    values,
                },
            );
        }
        let mut actual: BTreeMap<RowId, Rec> = BTreeMap::new();
        while let Some(rec) = reader.next_row()? {
            let def = &header.tables[rec.table as usize];
            let table = table_index(&def.name)?;
            let local_bit = |b: usize| -> Res<usize> {
                if b == 0 {
                    return Ok(0);
                }
                let name = &def.cells[b - 1];
                TABLES[table]
                    .cells
                    .iter()
                    .position(|c| c == name)
                    .map(|i| i + 1)
                    .ok_or_else(|| format!("the bundle names column {name}").into())
            };
            let mut versions = Holders::new();
            let mut carried = Vec::new();
            for v in &rec.versions {
                let origin = self.origin_of(header.origins[v.origin as usize].id.as_bytes())?;
                let bits = v.cols.iter().map(local_bit).collect::<Res<BTreeSet<_>>>()?;
                carried.extend(v.cols.iter().filter(|&b| b > 0));
                versions.insert((origin, v.seq), (v.hlc, bits));
            }
            carried.sort_unstable();
            if carried.len() != rec.values.len() {
                return Err(format!(
                    "a record of the bundle has {} values for {} cells",
                    rec.values.len(),
                    carried.len()
                )
                .into());
            }
            let values = carried
                .iter()
                .map(|&b| local_bit(b))
                .zip(rec.values.iter().cloned())
                .map(|(b, v)| {
                    let b = b?;
                    // A reference to a `loc` row travels as its identity.
                    if table == LOC && b == LOC_PARENT {
                        return Ok((b, untag(&v)?));
                    }
                    Ok((b, v))
                })
                .collect::<Res<BTreeMap<_, _>>>()?;
            let row = row_from(&self.sites, table, &rec.key)?;
            actual.insert(
                row,
                Rec {
                    cl: rec.cl,
                    versions,
                    values,
                },
            );
        }
        reader.finish()?;
        if actual != expected {
            let mut lines = Vec::new();
            let rows: BTreeSet<&RowId> = actual.keys().chain(expected.keys()).collect();
            for row in rows {
                let (a, e) = (actual.get(row), expected.get(row));
                if a != e {
                    let text = |r: Option<&Rec>| r.map_or("nothing".into(), |r| r.text(row));
                    lines.push(format!("  carries {}\n  expected {}", text(a), text(e)));
                }
            }
            return Err(format!(
                "export {what}: the bundle differs from what the model predicts from i{from}'s state \
                 and the covered change numbers:\n{}",
                lines.join("\n")
            )
            .into());
        }
        let n = self.pool.len();
        let covers_text: Vec<String> = covers
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(o, s)| format!("i{o}: {s}"))
            .collect();
        self.trace.push(format!(
            "bundle #{n} = {what}: covers {{{}}}, {} row(s)",
            covers_text.join(", "),
            expected.len()
        ));
        for (row, rec) in &expected {
            self.trace.push(format!("    {}", rec.text(row)));
        }
        self.pool.push(Bundle {
            sender: from,
            what,
            bytes,
            records: expected,
        });
        Ok(n)
    }

    fn compact(&mut self, at: usize) -> Res<()> {
        let r = self.instances[at]
            .compact()
            .map_err(|e| format!("i{at}: compact failed: {e}"))?;
        let stamps = self.new_stamps(self.instances[at].connection(), at)?;
        if let Some(t) = self.stamp(at, &stamps, Vanish::All)? {
            self.trace.push(t);
        }
        self.trace.push(format!(
            "i{at}: compact: {} captured, {} vanished",
            r.captured, r.vanished
        ));
        self.check_state(at, "after compact")
    }

    /// Import pooled bundle `b` at `at`; returns the applied count (`None`:
    /// refused as the instance's own).
    fn import(&mut self, b: usize, at: usize) -> Res<Option<u64>> {
        if self.pool[b].sender == at {
            let result = self.instances[at].import(Cursor::new(&self.pool[b].bytes));
            return match result {
                Err(Error::Import(ImportError::FromSelf { .. })) => {
                    self.trace
                        .push(format!("i{at} ← #{b}: refused (its own bundle)"));
                    Ok(None)
                }
                Err(e) => Err(format!(
                    "i{at} importing its own bundle #{b} failed with {e:?}, not FromSelf"
                )
                .into()),
                Ok(_) => Err(format!("i{at} accepted its own bundle #{b}").into()),
            };
        }
        let h0: BTreeSet<RowId> = self.models[at].held.keys().cloned().collect();
        // Captured writes are stamped first; their clocks, seen on a copy.
        let captured = self.models[at].pending.len() as u64;
        if captured > 0 {
            let (stamps, copy) = self.stamps_of_copy(at)?;
            if let Some(t) = self.stamp(at, &stamps, Vanish::NotRecorded)? {
                self.trace.push(t);
            }
            let model = self.model_view(at);
            if copy != model {
                return Err(format!(
                    "i{at} stamped (on a copy, before importing #{b}) differs from the model:\n{}",
                    diff("engine", &copy, "model", &model)
                )
                .into());
            }
        }
        let report = self.instances[at]
            .import(Cursor::new(&self.pool[b].bytes))
            .map_err(|e| {
                format!(
                    "i{at} failed to import bundle #{b} ({}): {e} [{e:?}]",
                    self.pool[b].what
                )
            })?;
        if report.captured != captured {
            return Err(format!(
                "i{at} stamped {} captured row(s) on import, not the {captured} the model knows of",
                report.captured
            )
            .into());
        }
        let mut counts = Verdicts::default();
        let mut notes = Vec::new();
        let mut max_hlc = 0;
        let records = self.pool[b].records.clone();
        // Deletes the import records for rows deleted without a trigger, as
        // the log shows them (those a new era superseded at once are gone).
        let mut vanish_log = self.new_stamps(self.instances[at].connection(), at)?;
        let seq_before = self.models[at].seq;
        let seen_before = self.models[at].seen_hlc;
        let sites = self.sites.clone();
        let rank = move |v: &Ver| (v.hlc, sites[v.origin], v.seq);
        // Rows of tables with a local key: which the engine holds in
        // quarantine now is read from it, and checked below (check_held).
        let h1 = read_held(self.instances[at].connection(), &self.sites)?;
        let mut touched: BTreeMap<RowId, Option<Vec<Value>>> = BTreeMap::new();
        let mut fresh: BTreeSet<RowId> = BTreeSet::new();
        for (row, rec) in records.iter().filter(|(row, _)| mapped(row.table)) {
            max_hlc = rec
                .versions
                .values()
                .map(|(h, _)| *h)
                .fold(max_hlc, u64::max);
            let m = &mut self.models[at];
            // A row with a held change: the record joins it (and a record
            // the database refuses starts an entry).
            if h0.contains(row) || h1.contains(row) {
                let entry = match m.held.remove(row) {
                    Some(old) => combine(&old, rec, &rank),
                    None => rec.clone(),
                };
                m.held.insert(row.clone(), entry);
                fresh.insert(row.clone());
                continue;
            }
            let verdict = merge_mapped(&self.sites, m, row, rec, &rank, &mut touched);
            counts.add(verdict);
            if verdict != Verdict::Known {
                notes.push(format!("{row:?} {verdict:?}"));
            }
        }
        // Held entries: applied now, or still held.
        let mut released = 0u64;
        let mut quarantined = 0u64;
        let entries: BTreeSet<RowId> = h0.union(&fresh).cloned().collect();
        if let Some(row) = h1.iter().find(|r| !entries.contains(r)) {
            return Err(format!("i{at} holds {row:?}, which #{b} did not bring").into());
        }
        for row in &entries {
            if h1.contains(row) {
                if fresh.contains(row) {
                    quarantined += 1;
                    notes.push(format!("{row:?} held"));
                }
                continue;
            }
            let m = &mut self.models[at];
            let Some(entry) = m.held.remove(row) else {
                continue;
            };
            let verdict = merge_mapped(&self.sites, m, row, &entry, &rank, &mut touched);
            // A record of this bundle counts by its verdict; an entry held
            // by an earlier import counts as released (both, if the record
            // joined it).
            if fresh.contains(row) {
                match verdict {
                    Verdict::Applied => counts.applied += 1,
                    Verdict::Known => counts.known += 1,
                    Verdict::Older => counts.older += 1,
                }
            }
            if h0.contains(row) {
                released += 1;
            }
            notes.push(format!("{row:?} {verdict:?} (was held)"));
        }
        self.bind_mapped(at, touched)?;
        for (row, rec) in records.iter().filter(|(row, _)| !mapped(row.table)) {
            let m = &mut self.models[at];
            let state = m
                .rows
                .entry(row.clone())
                .or_insert_with(|| RowModel::new(row.cells()));
            let mut app = m.app.remove(row);
            let mut trial = (state.clone(), app.clone());
            let mut verdict = merge_record(&mut trial.0, &mut trial.1, rec, &rank);
            if state.live() && app.is_none() && trial.1.is_some() {
                // The import would write a row the log knows as live but
                // the table lacks: it records the row's delete first, then
                // merges the record against it (spec/merge.md, step 4).
                m.seq += 1;
                let logged = vanish_log
                    .iter()
                    .find(|(_, (r, _))| r == row)
                    .map(|(seq, (_, hlc))| (*seq, *hlc));
                let ver = match logged {
                    Some((seq, hlc)) => {
                        vanish_log.remove(&seq);
                        Ver {
                            origin: at,
                            seq,
                            hlc,
                        }
                    }
                    // Superseded by the record at once; never seen again.
                    None => Ver {
                        origin: at,
                        seq: u64::MAX - m.seq,
                        hlc: UNSTAMPED,
                    },
                };
                let writes = state.local(Op::Delete, &BTreeSet::new(), ver);
                notes.push(match logged {
                    Some(_) => format!("{row:?} vanished here: delete {ver:?} first"),
                    None => format!("{row:?} vanished here: delete it first (superseded)"),
                });
                if logged.is_some() {
                    if ver.hlc <= seen_before {
                        return Err(format!(
                            "i{at}'s delete {ver:?} of vanished {row:?} is not stamped past {}",
                            hlc_text(seen_before)
                        )
                        .into());
                    }
                    self.changes.push(Change {
                        ver,
                        row: row.clone(),
                        cl: state.cl,
                        writes,
                        values: None,
                    });
                }
                app = None;
                verdict = merge_record(state, &mut app, rec, &rank);
            } else {
                *state = trial.0;
                app = trial.1;
            }
            let m = &mut self.models[at];
            if let Some(a) = app {
                m.app.insert(row.clone(), a);
            }
            max_hlc = rec
                .versions
                .values()
                .map(|(h, _)| *h)
                .fold(max_hlc, u64::max);
            counts.add(verdict);
            if verdict != Verdict::Known {
                notes.push(format!("{row:?} {verdict:?}"));
            }
        }
        let m = &mut self.models[at];
        if let Some((seq, (row, _))) = vanish_log.iter().next() {
            return Err(format!(
                "i{at} recorded change #{seq} of {row:?} while importing #{b}; the model expects none"
            )
            .into());
        }
        if m.seq > seq_before {
            // The numbers the engine used, in its order of the records.
            let logged: Vec<u64> = self
                .changes
                .iter()
                .filter(|c| c.ver.origin == at && c.ver.seq > seq_before)
                .map(|c| c.ver.seq)
                .collect();
            if logged.iter().any(|&s| s > m.seq) {
                return Err(format!(
                    "i{at} numbered its deletes of vanished rows {logged:?}, beyond #{}",
                    m.seq
                )
                .into());
            }
        }
        m.seen_hlc = m.seen_hlc.max(max_hlc);
        let got = Verdicts {
            applied: report.applied,
            known: report.known,
            older: report.older,
        };
        if (report.quarantined, report.released, report.held)
            != (quarantined, released, h1.len() as u64)
        {
            return Err(format!(
                "i{at} importing #{b}: the engine quarantined {}, released {}, holds {}; \
                 the model says {quarantined}, {released}, {}",
                report.quarantined,
                report.released,
                report.held,
                h1.len()
            )
            .into());
        }
        self.trace.push(format!(
            "i{at} ← #{b}: applied {}, known {}, older {} [{}]",
            got.applied,
            got.known,
            got.older,
            notes.join(", ")
        ));
        if got != counts {
            return Err(format!(
                "i{at} importing #{b}: the engine counts {got:?}, the model {counts:?}"
            )
            .into());
        }
        self.check_state(at, &format!("after importing #{b}"))?;
        self.check_held(at)
            .map_err(|e| format!("i{at} after importing #{b}: {e}"))?;
        Ok(Some(report.applied + report.released))
    }

    /// After an import: rows of tables with a local key that the merge
    /// created get the local number the engine gave them (checked to be
    /// free), deleted ones lose theirs, and the app rows are written with
    /// references as local numbers.
    fn bind_mapped(&mut self, at: usize, touched: BTreeMap<RowId, Option<Vec<Value>>>) -> Res<()> {
        let engine_ids = read_ids(self.instances[at].connection(), &self.sites)?;
        let sites = &self.sites;
        let m = &mut self.models[at];
        let mut writes = Vec::new();
        // Deleted rows first: a row new here may take the number one of
        // them had (a rowid is max + 1).
        let (gone, touched): (Vec<_>, Vec<_>) = touched.into_iter().partition(|(_, a)| a.is_none());
        for (row, app) in gone.into_iter().chain(touched) {
            let t = row.table;
            match (app, m.local_of(&row)) {
                (Some(cells), Some(l)) => writes.push((l, row, cells)),
                (Some(cells), None) => {
                    let Some((&(_, l), _)) = engine_ids.iter().find(|(_, r)| **r == row) else {
                        return Err(format!(
                            "i{at} has no local number for {row:?}, which the model says arrived live"
                        )
                        .into());
                    };
                    if m.ids.contains_key(&(t, l)) || m.app.contains_key(&RowId::local(t, l)) {
                        return Err(format!(
                            "i{at} numbered the new {row:?} {l}, the number of another row"
                        )
                        .into());
                    }
                    m.ids.insert((t, l), row.clone());
                    writes.push((l, row, cells));
                }
                (None, Some(l)) => {
                    m.ids.remove(&(t, l));
                    m.app.remove(&RowId::local(t, l));
                }
                (None, None) => {}
            }
        }
        for (l, row, mut cells) in writes {
            if row.table == LOC {
                if let Value::Blob(gid) = &cells[LOC_PARENT - 1] {
                    let parent = identity_of(sites, LOC, gid)?;
                    let Some(p) = m.local_of(&parent) else {
                        return Err(format!(
                            "i{at}: {row:?} arrived pointing at {parent:?}, which is not here, \
                             and was not held in quarantine"
                        )
                        .into());
                    };
                    cells[LOC_PARENT - 1] = Value::Integer(p);
                }
            }
            m.app.insert(RowId::local(row.table, l), cells);
        }
        Ok(())
    }

    /// What the engine holds in quarantine must not fit (spec/quarantine.md):
    /// merged into the instance's state, a held row would point at a row
    /// that is not here, or its delete would leave a row pointing at
    /// nothing; and no set of held rows fits together either (two new rows
    /// pointing at each other).
    fn check_held(&self, at: usize) -> Res<()> {
        let m = &self.models[at];
        if m.held.is_empty() {
            return Ok(());
        }
        // Each entry's outcome: live pointing at (Some) a row or at
        // nothing, or deleted (None).
        let mut outcome: BTreeMap<&RowId, Option<Option<RowId>>> = BTreeMap::new();
        for (row, rec) in &m.held {
            let mut state = m
                .rows
                .get(row)
                .cloned()
                .unwrap_or_else(|| RowModel::new(row.cells()));
            let mut app = m.app_row(&self.sites, row);
            merge_record(&mut state, &mut app, rec, &|v: &Ver| self.rank(v));
            let result = match (&app, state.live()) {
                (Some(cells), true) if row.table == LOC => match &cells[LOC_PARENT - 1] {
                    Value::Blob(gid) => Some(Some(identity_of(&self.sites, LOC, gid)?)),
                    _ => Some(None),
                },
                (_, true) => Some(None),
                (_, false) => None,
            };
            outcome.insert(row, result);
        }
        // Does `row` fit with the rows of `group` applied too?
        let fits = |row: &RowId, group: &BTreeSet<&RowId>| -> bool {
            let live = |r: &RowId| match outcome.get(r) {
                Some(o) if group.contains(r) => o.is_some(),
                _ => m.local_of(r).is_some(),
            };
            match &outcome[row] {
                Some(None) => true,
                Some(Some(parent)) => parent == row || live(parent),
                None => {
                    let Some(local) = m.local_of(row) else {
                        return true;
                    };
                    let here = m.app.iter().any(|(r, cells)| {
                        r.table == LOC
                            && cells[LOC_PARENT - 1] == Value::Integer(local)
                            && r.local_number()
                                .and_then(|l| m.ids.get(&(LOC, l)))
                                .is_none_or(|child| !group.contains(child))
                    });
                    let held = group
                        .iter()
                        .any(|r| matches!(&outcome[r], Some(Some(p)) if p == row));
                    !here && !held
                }
            }
        };
        for row in m.held.keys() {
            if fits(row, &BTreeSet::from([row])) {
                return Err(format!(
                    "the engine holds {row:?} in quarantine, but it fits: {}",
                    m.held[row].text(row)
                )
                .into());
            }
        }
        let mut group: BTreeSet<&RowId> = m.held.keys().collect();
        loop {
            let keep: BTreeSet<&RowId> =
                group.iter().copied().filter(|r| fits(r, &group)).collect();
            if keep.len() == group.len() {
                break;
            }
            group = keep;
        }
        if !group.is_empty() {
            return Err(
                format!("the engine holds {group:?} in quarantine, but together they fit").into(),
            );
        }
        Ok(())
    }

    // --- the whole history -------------------------------------------------

    fn play(&mut self, h: &History) -> Res<()> {
        let n = h.instances;
        for step in &h.steps {
            match step {
                Step::Write { at, write } => self.write(*at, write)?,
                Step::Export { from, to, resend } => {
                    let target = ExportTarget::Peer {
                        to: name(*to),
                        resend: *resend,
                    };
                    self.export(*from, &target)?;
                }
                Step::Sync { from, to } => {
                    let target = ExportTarget::Peer {
                        to: name(*to),
                        resend: false,
                    };
                    let b = self.export(*from, &target)?;
                    self.import(b, *to)?;
                }
                Step::ExportFull { from } => {
                    self.export(*from, &ExportTarget::Full)?;
                }
                Step::Compact { at } => self.compact(*at)?,
                Step::Import { at, back } => {
                    if self.pool.is_empty() {
                        self.trace.push(format!("i{at}: no bundle to import yet"));
                    } else {
                        let b = self.pool.len() - 1 - back % self.pool.len();
                        self.import(b, *at)?;
                    }
                }
            }
        }
        let history_bundles = self.pool.len();
        self.trace.push("-- deliveries --".into());
        if history_bundles > 0 {
            for d in &h.deliveries {
                self.import(d.bundle % history_bundles, d.at)?;
            }
        }

        // A row deleted without a trigger and not otherwise changed reaches
        // peers only after a compact or full export (spec/capture.md): an
        // instance holding one is compacted first.
        for at in 0..n {
            let m = &self.models[at];
            if m.rows
                .iter()
                .any(|(row, st)| st.live() && !m.app.contains_key(row))
            {
                self.compact(at)?;
            }
        }

        // Every pair, resending what is not acknowledged, until a round
        // applies nothing.
        let mut quiet = false;
        for round in 1..=4 {
            self.trace.push(format!("-- exchange round {round} --"));
            let mut applied = 0;
            for from in 0..n {
                for to in (0..n).filter(|&to| to != from) {
                    let target = ExportTarget::Peer {
                        to: name(to),
                        resend: true,
                    };
                    let b = self.export(from, &target)?;
                    applied += self.import(b, to)?.unwrap_or(0);
                }
            }
            if applied == 0 {
                quiet = true;
                break;
            }
        }
        if !quiet {
            return Err("still applying changes after 4 all-pairs exchange rounds".into());
        }
        for at in 0..n {
            if !self.models[at].held.is_empty() {
                return Err(format!(
                    "after the exchange i{at} still holds {:?} in quarantine",
                    self.models[at].held.keys().collect::<Vec<_>>()
                )
                .into());
            }
        }

        // (a) Every instance holds the same.
        let views: Vec<View> = (0..n)
            .map(|at| self.view_of(self.instances[at].connection()))
            .collect::<Res<_>>()?;
        for at in 1..n {
            if views[at] != views[0] {
                return Err(format!(
                    "after the exchange i0 and i{at} differ:\n{}",
                    diff("i0", &views[0], &format!("i{at}"), &views[at])
                )
                .into());
            }
        }
        // (b) That is the join of every change ever made.
        let join = self.join()?;
        if views[0] != join {
            return Err(format!(
                "the instances agree, but not with the join of all changes:\n{}",
                diff("instances", &views[0], "join", &join)
            )
            .into());
        }
        self.trace.push(format!(
            "-- all {n} instances agree with the join of {} changes --",
            self.changes.len()
        ));
        Ok(())
    }

    /// The state every instance must reach: per row the greatest causal
    /// length of any change; at it, per cell, the greatest-ranked change
    /// that wrote the cell, and that change's value.
    fn join(&self) -> Res<View> {
        let mut by_row: BTreeMap<&RowId, Vec<&Change>> = BTreeMap::new();
        for c in &self.changes {
            by_row.entry(&c.row).or_default().push(c);
        }
        let mut view = View {
            app: Tables::new(),
            log: BTreeMap::new(),
        };
        for (row, changes) in by_row {
            let Some(cl) = changes.iter().map(|c| c.cl).max() else {
                continue;
            };
            let mut holders = Holders::new();
            let mut values = vec![Value::Null; row.cells()];
            for bit in 0..=row.cells() {
                let winner = changes
                    .iter()
                    .filter(|c| c.cl == cl && c.writes.contains(&bit))
                    .max_by_key(|c| self.rank(&c.ver));
                let Some(w) = winner else {
                    if cl % 2 == 1 || bit == 0 {
                        return Err(format!(
                            "model inconsistency: no change of {row:?} at cl {cl} wrote {}",
                            bit_name(row.table, bit)
                        )
                        .into());
                    }
                    continue;
                };
                holders
                    .entry((w.ver.origin, w.ver.seq))
                    .or_insert_with(|| (w.ver.hlc, BTreeSet::new()))
                    .1
                    .insert(bit);
                if bit > 0 {
                    let v = w.values.as_ref().ok_or_else(|| {
                        format!(
                            "model inconsistency: {:?} wrote cells but has no values",
                            w.ver
                        )
                    })?;
                    values[bit - 1] = v[bit - 1].clone();
                }
            }
            if cl % 2 == 1 {
                view.app.insert(row.clone(), values);
            }
            view.log.insert(row.clone(), (cl, holders));
        }
        Ok(view)
    }
}

/// The identity a reference to a `loc` row carries in a bundle
/// (src/refs.rs): NULL, or tag 2 and the parent's identity; the app never
/// points at a row that is not there, so never a value or dangling tag.
fn untag(v: &Value) -> Res<Value> {
    match v {
        Value::Null => Ok(Value::Null),
        Value::Blob(b) if b.first() == Some(&fieldsync::refs::TAG_IDENTITY) => {
            match decode_key(&b[1..])?.as_slice() {
                [Value::Blob(gid)] => Ok(Value::Blob(gid.clone())),
                other => Err(format!("a reference carries identity {other:?}").into()),
            }
        }
        other => Err(format!(
            "a reference to loc travels as {}, not as an identity",
            show(other)
        )
        .into()),
    }
}

fn table_index(name: &str) -> Res<usize> {
    TABLES
        .iter()
        .position(|t| t.name == name)
        .ok_or_else(|| format!("unknown table {name}").into())
}

/// `fieldsync_tables.id` → table index.
fn table_ids(conn: &Connection) -> Res<BTreeMap<i64, usize>> {
    let mut stmt = conn.prepare("SELECT id, name FROM fieldsync_tables")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(id, name)| Ok((id, table_index(&name)?)))
        .collect()
}

/// Per instance, the local number of each row of a table with a local key
/// and the row's identity (`fieldsync_ids`): (table, local) → identity.
type Ids = BTreeMap<(usize, i64), RowId>;

/// The identity a (decoded) key of `table` names: the row's key, or for a
/// table with a local key, the identity its blob encodes.
fn row_from(sites: &[[u8; 16]], table: usize, values: &[Value]) -> Res<RowId> {
    if !mapped(table) {
        return RowId::from_values(table, values);
    }
    match values {
        [Value::Blob(gid)] => identity_of(sites, table, gid),
        other => Err(format!(
            "{} is keyed by an identity, not {other:?}",
            TABLES[table].name
        )
        .into()),
    }
}

/// The identity encoded in `gid` (spec/merge.md, "Row identity"): site id
/// and change number (24 bytes), or content signature and copy (20 bytes).
fn identity_of(sites: &[[u8; 16]], table: usize, gid: &[u8]) -> Res<RowId> {
    let part = match (TABLES[table].kind, gid.len()) {
        (Kind::Origin, 24) => {
            let origin = sites
                .iter()
                .position(|s| s[..] == gid[..16])
                .ok_or_else(|| format!("an identity names unknown site {:02x?}", &gid[..16]))?;
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&gid[16..]);
            KeyPart::Origin(origin, u64::from_be_bytes(seq))
        }
        (Kind::Content, 20) => {
            let mut sig = [0u8; 16];
            sig.copy_from_slice(&gid[..16]);
            let mut copy = [0u8; 4];
            copy.copy_from_slice(&gid[16..]);
            KeyPart::Content(sig, u32::from_be_bytes(copy))
        }
        (kind, n) => {
            return Err(format!(
                "a {n}-byte identity for {} (identified by {kind:?})",
                TABLES[table].name
            )
            .into());
        }
    };
    Ok(RowId {
        table,
        key: vec![part],
    })
}

/// The bytes of an identity, as a tagged reference carries them.
fn gid_bytes(sites: &[[u8; 16]], row: &RowId) -> Vec<u8> {
    match row.key.as_slice() {
        [KeyPart::Origin(o, seq)] => {
            let mut b = sites[*o].to_vec();
            b.extend_from_slice(&seq.to_be_bytes());
            b
        }
        [KeyPart::Content(sig, copy)] => {
            let mut b = sig.to_vec();
            b.extend_from_slice(&copy.to_be_bytes());
            b
        }
        _ => Vec::new(),
    }
}

/// A row's cells as the model compares them: a reference to a `loc` row
/// by that row's identity (a blob of its bytes) instead of its local
/// number here.
fn cells_by_identity(sites: &[[u8; 16]], ids: &Ids, table: usize, cells: &[Value]) -> Vec<Value> {
    let mut out = cells.to_vec();
    if table == LOC {
        if let Value::Integer(l) = &out[LOC_PARENT - 1] {
            out[LOC_PARENT - 1] = match ids.get(&(LOC, *l)) {
                Some(p) => Value::Blob(gid_bytes(sites, p)),
                None => Value::text(format!("<loc {l} without identity>")),
            };
        }
    }
    out
}

/// The app tables as the model compares them: rows of tables with a local
/// key named by their identity (by their local number while they have
/// none: captured, not stamped yet), references by identity.
fn app_by_identity(sites: &[[u8; 16]], app: &Tables, ids: &Ids) -> Tables {
    app.iter()
        .map(|(row, cells)| match row.local_number() {
            Some(l) => (
                ids.get(&(row.table, l))
                    .cloned()
                    .unwrap_or_else(|| row.clone()),
                cells_by_identity(sites, ids, row.table, cells),
            ),
            None => (row.clone(), cells.clone()),
        })
        .collect()
}

/// `fieldsync_ids` of an instance.
fn read_ids(conn: &Connection, sites: &[[u8; 16]]) -> Res<Ids> {
    let mut stmt = conn.prepare(
        "SELECT t.name, i.gid, i.local FROM fieldsync_ids AS i \
         JOIN fieldsync_tables AS t ON t.id = i.tbl",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Ids::new();
    while let Some(r) = rows.next()? {
        let table = table_index(&r.get::<_, String>(0)?)?;
        let key = decode_key(&r.get::<_, Vec<u8>>(1)?)?;
        let row = row_from(sites, table, &key)?;
        let local: i64 = r.get(2)?;
        if out.insert((table, local), row).is_some() {
            return Err(format!(
                "fieldsync_ids maps two rows to {} {local}",
                TABLES[table].name
            )
            .into());
        }
    }
    Ok(out)
}

/// The rows with a change held in quarantine.
fn read_held(conn: &Connection, sites: &[[u8; 16]]) -> Res<BTreeSet<RowId>> {
    let mut stmt = conn.prepare("SELECT tbl, pk FROM fieldsync_quarantine")?;
    let mut rows = stmt.query([])?;
    let mut out = BTreeSet::new();
    while let Some(r) = rows.next()? {
        let table = table_index(&r.get::<_, String>(0)?)?;
        let key = decode_key(&r.get::<_, Vec<u8>>(1)?)?;
        out.insert(row_from(sites, table, &key)?);
    }
    Ok(out)
}

/// The catalog gives the cells the bits the model uses.
fn check_catalog(conn: &Connection) -> Res<()> {
    for (t, spec) in TABLES.iter().enumerate() {
        let mut stmt = conn.prepare(
            "SELECT c.pos, c.name FROM fieldsync_columns AS c \
             JOIN fieldsync_tables AS t ON t.id = c.tbl \
             WHERE t.name = ?1 AND c.role = 'cell' ORDER BY c.pos",
        )?;
        let cells = stmt
            .query_map([spec.name], |r| {
                Ok((r.get::<_, i64>(0)? as usize, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let expected: Vec<(usize, String)> = spec
            .cells
            .iter()
            .enumerate()
            .map(|(i, c)| (i + 1, c.to_string()))
            .collect();
        if cells != expected {
            return Err(format!("table {t} is tracked with cells {cells:?}").into());
        }
    }
    Ok(())
}

fn read_tables(conn: &Connection) -> Res<Tables> {
    let mut out = Tables::new();
    for (t, spec) in TABLES.iter().enumerate() {
        let cols: Vec<&str> = spec.key.iter().chain(spec.cells).copied().collect();
        let mut stmt = conn.prepare(&format!("SELECT {} FROM {}", cols.join(", "), spec.name))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let values: Vec<Value> = (0..cols.len())
                .map(|i| r.get::<_, Value>(i))
                .collect::<rusqlite::Result<_>>()?;
            let (key, cells) = values.split_at(spec.key.len());
            out.insert(RowId::from_values(t, key)?, cells.to_vec());
        }
    }
    Ok(out)
}

fn predicate(table: usize, first: usize) -> String {
    TABLES[table]
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k} = ?{}", first + i))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// `c = ?n` (or `c = c`) for a SET list whose parameters start at `first`.
fn assignments(table: usize, set: &[Set], first: usize, params: &mut Vec<Value>) -> Vec<String> {
    let mut out = Vec::new();
    for s in set {
        let c = TABLES[table].cells[s.cell];
        match &s.value {
            Some(v) => {
                params.push(v.clone());
                out.push(format!("{c} = ?{}", first + params.len() - 1));
            }
            None => out.push(format!("{c} = {c}")),
        }
    }
    out
}

fn stmt_sql(stmt: &Stmt<'_>) -> (String, Vec<Value>) {
    match stmt {
        Stmt::Insert {
            row,
            values,
            replace,
        } => {
            let spec = &TABLES[row.table];
            let mut params = row.values();
            params.extend(values.iter().cloned());
            let cols: Vec<&str> = spec.key.iter().chain(spec.cells).copied().collect();
            let marks: Vec<String> = (1..=params.len()).map(|i| format!("?{i}")).collect();
            let verb = if *replace { "REPLACE" } else { "IGNORE" };
            (
                format!(
                    "INSERT OR {verb} INTO {}({}) VALUES ({})",
                    spec.name,
                    cols.join(", "),
                    marks.join(", ")
                ),
                params,
            )
        }
        Stmt::Update { row, table, set } => {
            let mut params = Vec::new();
            let assign = assignments(*table, set, 1, &mut params);
            let mut sql = format!("UPDATE {} SET {}", TABLES[*table].name, assign.join(", "));
            if let Some(row) = row {
                sql.push_str(&format!(" WHERE {}", predicate(*table, params.len() + 1)));
                params.extend(row.values());
            }
            (sql, params)
        }
        Stmt::Delete { row } => (
            format!(
                "DELETE FROM {} WHERE {}",
                TABLES[row.table].name,
                predicate(row.table, 1)
            ),
            row.values(),
        ),
        Stmt::Rekey { from, to, set } => {
            let spec = &TABLES[to.table];
            let mut params = to.values();
            let mut assign: Vec<String> = spec
                .key
                .iter()
                .enumerate()
                .map(|(i, k)| format!("{k} = ?{}", i + 1))
                .collect();
            assign.extend(assignments(to.table, set, 1, &mut params));
            let sql = format!(
                "UPDATE OR REPLACE {} SET {} WHERE {}",
                spec.name,
                assign.join(", "),
                predicate(from.table, params.len() + 1)
            );
            params.extend(from.values());
            (sql, params)
        }
        Stmt::ReplaceRowid { row, from, values } => {
            let spec = &TABLES[row.table];
            let mut params = row.values();
            params.extend(values.iter().cloned());
            let cols: Vec<&str> = spec.key.iter().chain(spec.cells).copied().collect();
            let marks: Vec<String> = (1..=params.len()).map(|i| format!("?{i}")).collect();
            let sql = format!(
                "INSERT OR REPLACE INTO {0}(rowid, {1}) SELECT rowid, {2} FROM {0} WHERE {3}",
                spec.name,
                cols.join(", "),
                marks.join(", "),
                predicate(from.table, params.len() + 1)
            );
            params.extend(from.values());
            (sql, params)
        }
        Stmt::InsertAuto { table, values } => {
            let spec = &TABLES[*table];
            let marks: Vec<String> = (1..=values.len()).map(|i| format!("?{i}")).collect();
            (
                format!(
                    "INSERT INTO {}({}) VALUES ({})",
                    spec.name,
                    spec.cells.join(", "),
                    marks.join(", ")
                ),
                values.to_vec(),
            )
        }
    }
}

/// What spec/capture.md says a statement records, from the rows before and
/// after it: (row, operation, changed bits), one entry per trigger row.
fn predict(
    stmt: &Stmt<'_>,
    before: &Tables,
    after: &Tables,
) -> Res<Vec<(RowId, Op, BTreeSet<usize>)>> {
    let updates = |old_row: &RowId,
                   new_row: &RowId,
                   set: &[Set],
                   out: &mut Vec<(RowId, Op, BTreeSet<usize>)>|
     -> Res<()> {
        let (Some(old), Some(new)) = (before.get(old_row), after.get(new_row)) else {
            return Err(format!("{old_row:?} / {new_row:?} missing around an UPDATE").into());
        };
        let table = new_row.table;
        let mut cells: Vec<usize> = set.iter().map(|s| s.cell).collect();
        cells.sort_unstable();
        cells.dedup();
        for c in cells {
            if changed(TABLES[table].untyped[c], &old[c], &new[c]) {
                out.push((new_row.clone(), Op::Update, BTreeSet::from([c + 1])));
            }
        }
        Ok(())
    };
    let mut out = Vec::new();
    match stmt {
        Stmt::Insert { row, replace, .. } => {
            if *replace || !before.contains_key(*row) {
                out.push(((*row).clone(), Op::Insert, BTreeSet::new()));
            }
        }
        Stmt::Update { row, table, set } => {
            let rows: Vec<&RowId> = match row {
                Some(r) => before
                    .get_key_value(*r)
                    .map(|(k, _)| k)
                    .into_iter()
                    .collect(),
                None => before.keys().filter(|r| r.table == *table).collect(),
            };
            for r in rows {
                updates(r, r, set, &mut out)?;
            }
        }
        Stmt::Delete { row } => {
            if before.contains_key(*row) {
                out.push(((*row).clone(), Op::Delete, BTreeSet::new()));
            }
        }
        Stmt::Rekey { from, to, set } => {
            if before.contains_key(*from) {
                if from != to {
                    out.push(((*from).clone(), Op::Delete, BTreeSet::new()));
                    out.push(((*to).clone(), Op::Insert, BTreeSet::new()));
                }
                updates(from, to, set, &mut out)?;
            }
        }
        // The rows it replaces (`row` by key, `from` by rowid) fire no
        // DELETE trigger.
        Stmt::ReplaceRowid { row, from, .. } => {
            if before.contains_key(*from) {
                out.push(((*row).clone(), Op::Insert, BTreeSet::new()));
            }
        }
        // The row SQLite numbered: the one new in the table.
        Stmt::InsertAuto { table, .. } => {
            for row in after.keys().filter(|r| r.table == *table) {
                if !before.contains_key(row) {
                    out.push((row.clone(), Op::Insert, BTreeSet::new()));
                }
            }
        }
    }
    Ok(out)
}

fn captured_text(rows: &[(RowId, Op, BTreeSet<usize>)]) -> String {
    if rows.is_empty() {
        return "nothing".into();
    }
    rows.iter()
        .map(|(row, op, bits)| match op {
            Op::Update => format!("update {row:?} {}", bits_text(row.table, bits)),
            Op::Insert => format!("insert {row:?}"),
            Op::Delete => format!("delete {row:?}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Play a history; on failure, the error and what happened.
fn check(h: &History) -> Result<(), String> {
    let mut world = World::new(h.instances, &h.skew_ms).map_err(|e| format!("setting up: {e}"))?;
    let result = world
        .play(h)
        .map_err(|e| format!("{e}\n--- what happened ---\n{}", world.trace.join("\n")));
    if std::env::var_os("FIELDSYNC_MODEL_TRACE").is_some() {
        eprintln!("=====\n{h:#?}\n{}", world.trace.join("\n"));
    }
    result
}

#[test]
fn instances_match_the_model() {
    let config = ProptestConfig {
        source_file: Some(file!()),
        ..config()
    };
    histories::run(config, history(), check);
}
