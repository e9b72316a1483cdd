//! The reference model, written from spec/capture.md and spec/merge.md; it
//! never calls `fieldsync::merge`. What capture records for a statement
//! ([`predict`], [`changed`]); one row's state and the local-change rules
//! ([`RowModel`]); merging a record ([`merge_record`], [`combine`]); each
//! instance as the model sees it ([`InstModel`]); and the [`View`] an
//! instance and its model are compared by, with their [`diff`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use fieldsync::Value;
use fieldsync::bundle::SeqSet;

use crate::model::history::{Set, Stmt};
use crate::model::rows::{Ids, RowId, cells_by_identity, show, show_row};
use crate::model::schema::{TABLES, bit_name, bits_text};
use crate::util::Res;

/// What capture recorded for one row.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) enum Op {
    Insert,
    Update,
    Delete,
}

/// A change: origin instance, sequence number, HLC.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Ver {
    pub(super) origin: usize,
    pub(super) seq: u64,
    pub(super) hlc: u64,
}

/// The clock of a change the model has numbered but the engine's log does
/// not show (the model says it was superseded while being stamped).
pub(super) const UNSTAMPED: u64 = u64::MAX;

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
pub(super) fn hlc_text(hlc: u64) -> String {
    if hlc == UNSTAMPED {
        return "?".into();
    }
    format!("{}.{}", (hlc >> 22) % 1_000_000, hlc & ((1 << 22) - 1))
}

/// One row's state on one instance: causal length and, per bit, the change
/// holding it.
#[derive(Clone, Debug)]
pub(super) struct RowModel {
    pub(super) cl: u64,
    pub(super) holders: Vec<Option<Ver>>,
}

impl RowModel {
    pub(super) fn new(cells: usize) -> RowModel {
        RowModel {
            cl: 0,
            holders: vec![None; cells + 1],
        }
    }

    pub(super) fn live(&self) -> bool {
        self.cl % 2 == 1
    }

    fn new_era(&mut self, cl: u64) {
        self.cl = cl;
        self.holders.iter_mut().for_each(|h| *h = None);
    }

    /// A local change, by the table in spec/merge.md "Local changes".
    /// Returns the bits it wrote (empty: it is no change).
    pub(super) fn local(&mut self, op: Op, bits: &BTreeSet<usize>, v: Ver) -> BTreeSet<usize> {
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
    pub(super) fn holders(&self) -> Holders {
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
pub(super) type Holders = BTreeMap<(usize, u64), (u64, BTreeSet<usize>)>;

/// App rows: per row, its cells in table order.
pub(super) type Tables = BTreeMap<RowId, Vec<Value>>;

/// A captured row change not yet stamped, as `fieldsync_pending` has it,
/// with the row as the statement left it.
#[derive(Clone)]
pub(super) struct Captured {
    pub(super) row: RowId,
    pub(super) op: Op,
    pub(super) bits: BTreeSet<usize>,
    pub(super) at: f64,
    pub(super) after: Option<Vec<Value>>,
}

/// A change that survived stamping, for the join at the end: what it wrote.
#[derive(Clone)]
pub(super) struct Change {
    pub(super) ver: Ver,
    pub(super) row: RowId,
    pub(super) cl: u64,
    pub(super) writes: BTreeSet<usize>,
    pub(super) values: Option<Vec<Value>>,
}

/// A row record of a bundle.
#[derive(Clone, PartialEq)]
pub(super) struct Rec {
    pub(super) cl: u64,
    pub(super) versions: Holders,
    /// Values of the cells carried (bits ≥ 1).
    pub(super) values: BTreeMap<usize, Value>,
}

impl Rec {
    pub(super) fn text(&self, row: &RowId) -> String {
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
pub(super) type Stamps = BTreeMap<u64, (RowId, u64)>;

/// Which rows deleted without a trigger an operation records deletes for
/// (spec/capture.md): every one (compact, full export), those a delta
/// export carries (a covered change holds a cell), or none (import stamping).
#[derive(Clone, Copy)]
pub(super) enum Vanish<'a> {
    All,
    Covered(&'a BTreeMap<usize, SeqSet>),
    NotRecorded,
}

/// Verdict counts: applied, known, older.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(super) struct Verdicts {
    pub(super) applied: u64,
    pub(super) known: u64,
    pub(super) older: u64,
}

impl Verdicts {
    pub(super) fn add(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Applied => self.applied += 1,
            Verdict::Known => self.known += 1,
            Verdict::Older => self.older += 1,
        }
    }
}

/// One instance as the model sees it.
#[derive(Default)]
pub(super) struct InstModel {
    pub(super) rows: BTreeMap<RowId, RowModel>,
    pub(super) app: Tables,
    pub(super) pending: Vec<Captured>,
    /// Last sequence number handed out.
    pub(super) seq: u64,
    /// Greatest HLC this instance stamped or imported.
    pub(super) seen_hlc: u64,
    /// The identity of each row of a table with a local key, by its local
    /// number here (the model's prediction of `fieldsync_ids`).
    pub(super) ids: Ids,
    /// Rows whose received changes wait in quarantine, with those changes
    /// combined into one record.
    pub(super) held: BTreeMap<RowId, Rec>,
}

impl InstModel {
    /// The local number of the row with this identity, if it is here.
    pub(super) fn local_of(&self, row: &RowId) -> Option<i64> {
        self.ids
            .iter()
            .find(|(_, r)| *r == row)
            .map(|((_, l), _)| *l)
    }

    /// A row's app cells as compared (references by identity), if the app
    /// table has it.
    pub(super) fn app_row(&self, sites: &[[u8; 16]], row: &RowId) -> Option<Vec<Value>> {
        if !row.is_identity() {
            return self.app.get(row).cloned();
        }
        let l = self.local_of(row)?;
        self.app
            .get(&RowId::local(row.table, l))
            .map(|c| cells_by_identity(sites, &self.ids, row.table, c))
    }

    pub(super) fn has_app(&self, row: &RowId) -> bool {
        if !row.is_identity() {
            return self.app.contains_key(row);
        }
        self.local_of(row)
            .is_some_and(|l| self.app.contains_key(&RowId::local(row.table, l)))
    }
}

pub(super) type Rank = (u64, [u8; 16], u64);

/// Merge one record into a row, by spec/merge.md "Merging a remote change
/// into a row". `rank` orders changes by `(hlc, site id, seq)`.
pub(super) fn merge_record(
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
pub(super) enum Verdict {
    Applied,
    Known,
    Older,
}

/// Two records of one row joined (spec/quarantine.md: a later change of a
/// held row joins its entry): the higher causal length wins outright; at
/// equal ones each bit goes to the greater-ranked change.
pub(super) fn combine(a: &Rec, b: &Rec, rank: &dyn Fn(&Ver) -> Rank) -> Rec {
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
pub(super) fn merge_mapped(
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
pub(super) fn changed(untyped: bool, old: &Value, new: &Value) -> bool {
    if untyped {
        matches!(new, Value::Real(r) if *r == 0.0) || old != new
    } else {
        !sql_is(old, new)
    }
}

/// What spec/capture.md says a statement records, from the rows before and
/// after it: (row, operation, changed bits), one entry per trigger row.
pub(super) fn predict(
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

pub(super) fn captured_text(rows: &[(RowId, Op, BTreeSet<usize>)]) -> String {
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

/// An instance's state as compared: app rows and change log.
#[derive(PartialEq)]
pub(super) struct View {
    pub(super) app: Tables,
    pub(super) log: BTreeMap<RowId, (u64, Holders)>,
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
pub(super) fn diff(a_name: &str, a: &View, b_name: &str, b: &View) -> String {
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
