//! Quarantine: received changes the database refused, kept until they fit.
//!
//! A change can be refused for reasons that are nobody's mistake in a
//! disconnected system: its row points to a parent that has not arrived yet
//! (or was deleted here), it takes a UNIQUE value another row already holds
//! (two officers registered the same shelter code), a NOT NULL or CHECK
//! constraint fails, or a delete would leave child rows pointing at nothing.
//! Import does not fail for these: the change is stored in
//! `fieldsync_quarantine` with the reason, everything else is applied, and
//! later imports (and `fieldsync conflicts --retry`) try the held changes
//! again, applying and removing those that now fit.
//!
//! A held change is retried only when something it waits for may have
//! changed (spec/quarantine.md, "What a held change waits for"): each entry
//! lists in `fieldsync_quarantine_waits` the rows or tables whose change
//! could let it fit ([`waits_for`]); an import wakes the entries waiting on
//! what it changed ([`woken`]), so a large quarantine costs a later import
//! what changed, not what is held.
//!
//! A held change is not counted as received: its change numbers stay out of
//! `fieldsync_have`, so this instance does not relay a row it has not
//! applied, keeps acknowledging the numbers as missing, and the sender
//! offers them again. [`held_numbers`] is the set to leave out.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::base::colset::{ColSet, SENTINEL};
use crate::base::hlc::Hlc;
use crate::base::merge::{RowState, Version};
use crate::base::seqset::SeqSet;
use crate::base::site_id::SiteId;
use crate::base::value::{Value, encode_key};
use crate::catalog::foreign::ForeignKeys;
use crate::catalog::site::Sites;
use crate::catalog::tracked::TrackedTable;
use crate::error::{Error, SiteError};

/// Why a change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Its row points to a parent row that is not here.
    MissingParent,
    /// A delete that would leave child rows pointing at nothing.
    StillReferenced,
    /// A UNIQUE value another row holds.
    Unique,
    /// A NOT NULL column would be empty (often: the change that created the
    /// row has not arrived yet).
    NotNull,
    /// A CHECK constraint failed.
    Check,
    /// Another constraint failed.
    Other,
    /// The held record can no longer be applied as it is (a column it
    /// writes is no longer tracked).
    Unusable,
    /// Stamped further ahead of this computer's clock than the bound
    /// (spec/trust.md, "The clock bound"): applied once the clock reaches
    /// it, or by an administrator (`fieldsync conflicts --apply ID`).
    Future,
    /// A change of a revoked instance numbered after what it kept
    /// (spec/trust.md, "Revocation"), relayed by an instance the revocation
    /// had not reached: held until an administrator discards it.
    Revoked,
}

impl Reason {
    /// The word stored in `fieldsync_quarantine.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MissingParent => "missing parent",
            Reason::StillReferenced => "still referenced",
            Reason::Unique => "unique",
            Reason::NotNull => "not null",
            Reason::Check => "check",
            Reason::Other => "constraint",
            Reason::Unusable => "unusable",
            Reason::Future => FROM_THE_FUTURE,
            Reason::Revoked => "from a revoked instance",
        }
    }
}

/// [`Reason::Future`] as `fieldsync_quarantine.reason` stores it.
pub(crate) const FROM_THE_FUTURE: &str = "from the future";

/// A refusal: the reason and a sentence for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: Reason,
    /// What exactly, naming the columns and rows involved.
    pub detail: String,
}

/// One version of a held change, with its cells named rather than numbered,
/// so a held change stays readable if the table gains columns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HeldVersion {
    site: SiteId,
    seq: u64,
    hlc: u64,
    /// Holds the row itself (the sentinel).
    row: bool,
    cols: Vec<String>,
}

/// A held change: one row record as received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Held {
    key: Vec<Value>,
    cl: u64,
    versions: Vec<HeldVersion>,
    values: Vec<(String, Value)>,
    /// Cells holding tagged references (crate::catalog::refs), with the table each
    /// refers to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    refs: Vec<(String, String)>,
}

/// A row record ready to merge: key, causal length, versions (local bits)
/// and the values of their cells by local bit.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// Index of the table in the catalog.
    pub table: usize,
    pub key: Vec<Value>,
    pub pk: Vec<u8>,
    pub cl: u64,
    pub versions: Vec<Version>,
    pub values: Vec<(usize, Value)>,
    /// Cells whose values are tagged references ([`crate::catalog::refs`]), with
    /// the name of the table each refers to.
    pub refs: Vec<(usize, String)>,
}

impl Change {
    /// The value of cell `bit` (`values` is sorted by bit).
    pub fn value(&self, bit: usize) -> Option<&Value> {
        self.values
            .binary_search_by_key(&bit, |(b, _)| *b)
            .ok()
            .map(|i| &self.values[i].1)
    }

    /// Approximate memory held.
    pub fn size(&self) -> usize {
        let value = |v: &Value| match v {
            Value::Text(b) | Value::Blob(b) => b.len() + 32,
            _ => 32,
        };
        self.key.iter().map(value).sum::<usize>()
            + self.values.iter().map(|(_, v)| value(v)).sum::<usize>()
            + self.pk.len()
            + self.versions.len() * 64
    }

    pub(crate) fn to_held(&self, table: &TrackedTable) -> Held {
        let name = |bit: usize| table.cells.get(bit.wrapping_sub(1)).cloned();
        Held {
            key: self.key.clone(),
            cl: self.cl,
            versions: self
                .versions
                .iter()
                .map(|v| HeldVersion {
                    site: v.site,
                    seq: v.seq,
                    hlc: v.hlc.0,
                    row: v.cols.contains(SENTINEL),
                    cols: v.cols.iter().filter_map(name).collect(),
                })
                .collect(),
            values: self
                .values
                .iter()
                .filter_map(|(b, v)| name(*b).map(|n| (n, v.clone())))
                .collect(),
            refs: self
                .refs
                .iter()
                .filter_map(|(b, p)| name(*b).map(|n| (n, p.clone())))
                .collect(),
        }
    }

    /// The table a tagged reference in cell `bit` refers to, if it is one.
    pub fn ref_parent(&self, bit: usize) -> Option<&str> {
        self.refs
            .iter()
            .find(|(b, _)| *b == bit)
            .map(|(_, p)| p.as_str())
    }
}

/// One change holding everything two changes of the same row hold: the
/// join of [`crate::base::merge`], with each cell's value taken from the change
/// whose version won it. Two held pieces of one row (its insert, held for a
/// UNIQUE clash, and a later edit of it, held because the row is absent)
/// can only be applied together.
pub(crate) fn combine(a: &Change, b: &Change) -> Option<Change> {
    let mut state = RowState::default();
    state.merge(a.cl, &a.versions).ok()?;
    state.merge(b.cl, &b.versions).ok()?;
    let mut values = Vec::new();
    for v in &state.versions {
        let source = [a, b]
            .into_iter()
            .find(|c| c.versions.iter().any(|w| w.same_change(v)))?;
        for bit in v.cols.iter().filter(|&bit| bit != SENTINEL) {
            values.push((bit, source.value(bit)?.clone()));
        }
    }
    values.sort_by_key(|(bit, _)| *bit);
    let mut refs = a.refs.clone();
    for r in &b.refs {
        if !refs.iter().any(|(bit, _)| *bit == r.0) {
            refs.push(r.clone());
        }
    }
    Some(Change {
        table: a.table,
        key: a.key.clone(),
        pk: a.pk.clone(),
        cl: state.cl,
        versions: state.versions,
        values,
        refs,
    })
}

impl Held {
    /// A held record from its parts: the row's key and causal length, its
    /// versions (site, number, clock, whether it holds the row itself, the
    /// columns it holds) and the values of those columns.
    pub(crate) fn new(
        key: Vec<Value>,
        cl: u64,
        versions: Vec<(SiteId, u64, Hlc, bool, Vec<String>)>,
        values: Vec<(String, Value)>,
        refs: Vec<(String, String)>,
    ) -> Held {
        Held {
            key,
            cl,
            versions: versions
                .into_iter()
                .map(|(site, seq, hlc, row, cols)| HeldVersion {
                    site,
                    seq,
                    hlc: hlc.0,
                    row,
                    cols,
                })
                .collect(),
            values,
            refs,
        }
    }

    /// Every column it holds a value of.
    pub(crate) fn column_names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in self.versions.iter().flat_map(|v| v.cols.iter()) {
            if !out.contains(c) {
                out.push(c.clone());
            }
        }
        out
    }

    /// Its change numbers with their clocks.
    pub(crate) fn numbers(&self) -> Vec<(SiteId, u64, Hlc)> {
        self.versions
            .iter()
            .map(|v| (v.site, v.seq, Hlc(v.hlc)))
            .collect()
    }

    /// The key as SQL literals.
    pub(crate) fn key_literal(&self) -> String {
        crate::base::value::key_literal(&self.key)
    }

    /// Its change numbers as `seqs` columns keep them (see [`seqs_of`]).
    pub(crate) fn seqs(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.versions.len() * 24);
        for v in &self.versions {
            out.extend_from_slice(v.site.as_bytes());
            out.extend_from_slice(&v.seq.to_be_bytes());
        }
        out
    }

    /// Both held records of one row as one: the merge join, by column
    /// name ([`combine`]).
    pub(crate) fn join(&self, other: &Held) -> Option<Held> {
        let mut names = self.column_names();
        for c in other.column_names() {
            if !names.contains(&c) {
                names.push(c);
            }
        }
        let table = TrackedTable {
            id: -1,
            name: String::new(),
            key: Vec::new(),
            cells: names,
            identity: crate::catalog::layout::Identity::Key,
            local: None,
        };
        let a = self.to_change(0, &table).ok()?;
        let b = other.to_change(0, &table).ok()?;
        combine(&a, &b).map(|c| c.to_held(&table))
    }

    /// The part `table` has every column of (the row itself included), and
    /// the part it lacks a column for.
    pub(crate) fn split_for(&self, table: &TrackedTable) -> (Option<Held>, Option<Held>) {
        let here = |c: &String| table.bit_of(c).is_some();
        let mut ready = Held {
            versions: Vec::new(),
            values: Vec::new(),
            refs: Vec::new(),
            ..self.clone()
        };
        let mut rest = ready.clone();
        for v in &self.versions {
            let (present, missing): (Vec<String>, Vec<String>) =
                v.cols.iter().cloned().partition(|c| here(c));
            if v.row || !present.is_empty() {
                ready.versions.push(HeldVersion {
                    cols: present,
                    ..v.clone()
                });
            }
            if !missing.is_empty() {
                rest.versions.push(HeldVersion {
                    row: false,
                    cols: missing,
                    ..v.clone()
                });
            }
        }
        for (c, v) in &self.values {
            let part = if here(c) { &mut ready } else { &mut rest };
            part.values.push((c.clone(), v.clone()));
        }
        for (c, p) in &self.refs {
            let part = if here(c) { &mut ready } else { &mut rest };
            part.refs.push((c.clone(), p.clone()));
        }
        let some = |h: Held| (!h.versions.is_empty()).then_some(h);
        (some(ready), some(rest))
    }

    /// Back to a change against the current catalog; `Err` names a column
    /// that is no longer tracked.
    pub(crate) fn to_change(
        &self,
        table_idx: usize,
        table: &TrackedTable,
    ) -> Result<Change, String> {
        let bit = |c: &str| {
            table
                .bit_of(c)
                .ok_or_else(|| format!("column {c} is no longer tracked"))
        };
        let mut versions = Vec::with_capacity(self.versions.len());
        for v in &self.versions {
            let mut cols = ColSet::new();
            if v.row {
                cols.insert(SENTINEL);
            }
            for c in &v.cols {
                cols.insert(bit(c)?);
            }
            versions.push(Version {
                site: v.site,
                seq: v.seq,
                hlc: Hlc(v.hlc),
                cols,
            });
        }
        let mut values = self
            .values
            .iter()
            .map(|(c, v)| Ok((bit(c)?, v.clone())))
            .collect::<Result<Vec<_>, String>>()?;
        values.sort_by_key(|(b, _)| *b);
        let refs = self
            .refs
            .iter()
            .map(|(c, p)| Ok((bit(c)?, p.clone())))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Change {
            table: table_idx,
            key: self.key.clone(),
            pk: encode_key(&self.key),
            cl: self.cl,
            versions,
            values,
            refs,
        })
    }
}

/// Store a refused change. A row has at most one entry: a change for a
/// row already held is combined with it (see [`combine`]). Returns the
/// entry's id and whether the entry is new.
pub(crate) fn hold(
    conn: &Connection,
    table_idx: usize,
    table: &TrackedTable,
    change: &Change,
    refusal: &Refusal,
    sender: &str,
    now_ms: i64,
) -> Result<(i64, bool), Error> {
    let existing: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT id, record FROM fieldsync_quarantine WHERE tbl = ?1 AND pk = ?2")?
        .query_row(params![table.name, change.pk], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    if let Some((id, record)) = existing {
        let combined = rmp_serde::from_slice::<Held>(&record)
            .ok()
            .and_then(|held| held.to_change(table_idx, table).ok())
            .and_then(|old| combine(&old, change));
        if let Some(combined) = combined {
            rewrite(conn, id, table, &combined)?;
            still_held(conn, id, refusal, now_ms)?;
            return Ok((id, false));
        }
    }
    let record = encode(table, change)?;
    conn.prepare_cached(
        "INSERT INTO fieldsync_quarantine(tbl, key, pk, reason, detail, sender, first_at, last_at, record, seqs) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9)",
    )?
    .execute(params![
        table.name,
        crate::catalog::identity::shown_key(conn, table, &change.key)?,
        change.pk,
        refusal.reason.as_str(),
        refusal.detail,
        sender,
        now_ms,
        record,
        seqs_of(change)
    ])?;
    Ok((conn.last_insert_rowid(), true))
}

/// A change's numbers as `fieldsync_quarantine.seqs` keeps them: per
/// version its site id (16 bytes) and number (8, big-endian), so
/// [`held_numbers`] need not decode every record.
fn seqs_of(change: &Change) -> Vec<u8> {
    let mut out = Vec::with_capacity(change.versions.len() * 24);
    for v in &change.versions {
        out.extend_from_slice(v.site.as_bytes());
        out.extend_from_slice(&v.seq.to_be_bytes());
    }
    out
}

fn encode(table: &TrackedTable, change: &Change) -> Result<Vec<u8>, Error> {
    rmp_serde::to_vec_named(&change.to_held(table)).map_err(|e| {
        SiteError::Damaged {
            detail: format!("a held change could not be encoded: {e}"),
        }
        .into()
    })
}

/// Replace the change an entry holds (after combining it with another).
pub(crate) fn rewrite(
    conn: &Connection,
    id: i64,
    table: &TrackedTable,
    change: &Change,
) -> Result<(), Error> {
    conn.prepare_cached("UPDATE fieldsync_quarantine SET record = ?1, seqs = ?2 WHERE id = ?3")?
        .execute(params![encode(table, change)?, seqs_of(change), id])?;
    Ok(())
}

/// A held change read back for a retry.
pub(crate) struct Retry {
    /// `fieldsync_quarantine.id`.
    pub id: i64,
    /// The change, or why it cannot be rebuilt.
    pub change: Result<Change, String>,
}

/// Every held change, oldest first.
pub(crate) fn load_all(conn: &Connection, tables: &[TrackedTable]) -> Result<Vec<Retry>, Error> {
    let mut stmt =
        conn.prepare_cached("SELECT id, tbl, record FROM fieldsync_quarantine ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(read_retry(r, tables)?);
    }
    Ok(out)
}

/// The held changes of entries `ids` (those still there), in that order.
pub(crate) fn load_ids(
    conn: &Connection,
    tables: &[TrackedTable],
    ids: impl IntoIterator<Item = i64>,
) -> Result<Vec<Retry>, Error> {
    let mut stmt =
        conn.prepare_cached("SELECT id, tbl, record FROM fieldsync_quarantine WHERE id = ?1")?;
    let mut out = Vec::new();
    for id in ids {
        let mut rows = stmt.query([id])?;
        if let Some(r) = rows.next()? {
            out.push(read_retry(r, tables)?);
        }
    }
    Ok(out)
}

fn read_retry(r: &rusqlite::Row<'_>, tables: &[TrackedTable]) -> Result<Retry, Error> {
    let id: i64 = r.get(0)?;
    let tbl: String = r.get(1)?;
    let record = r.get_ref(2)?.as_blob()?;
    let change = match tables.iter().position(|t| t.name == tbl) {
        None => Err(format!("table {tbl} is no longer tracked")),
        Some(i) => rmp_serde::from_slice::<Held>(record)
            .map_err(|e| format!("the held record is damaged: {e}"))
            .and_then(|h| h.to_change(i, &tables[i])),
    };
    Ok(Retry { id, change })
}

/// Remove a held change that was applied (or turned out to be old news).
pub(crate) fn release(conn: &Connection, id: i64) -> Result<(), Error> {
    conn.prepare_cached("DELETE FROM fieldsync_quarantine WHERE id = ?1")?
        .execute([id])?;
    conn.prepare_cached("DELETE FROM fieldsync_quarantine_waits WHERE entry = ?1")?
        .execute([id])?;
    Ok(())
}

/// In `fieldsync_quarantine_waits.tbl`: the entry waits for any change.
pub(crate) const ANY_TABLE: &str = "*";

/// What a held change waits for: `(table, pk)` pairs, the table's name in
/// lower case, the pk empty for "any row of the table", and the table
/// [`ANY_TABLE`] for "any change at all".
///
/// - always its own row (a later change of it, here or received);
/// - not null, check: nothing else (only the row's own cells, or a schema
///   change, can make them hold);
/// - unique: any row of its table (the row holding the value may move on);
/// - missing parent: any row of each table it refers to;
/// - still referenced: any row of each table referring to its table;
/// - any other reason (an app trigger, an unusable record): any change.
///
/// A schema change wakes every entry (spec/quarantine.md).
pub(crate) fn waits_for(
    table: &TrackedTable,
    change: &Change,
    refusal: &Refusal,
    fks: &ForeignKeys,
) -> Vec<(String, Vec<u8>)> {
    let own = table.name.to_ascii_lowercase();
    let mut waits = vec![(own.clone(), change.pk.clone())];
    let any_row = |t: &str| (t.to_ascii_lowercase(), Vec::new());
    match refusal.reason {
        Reason::NotNull | Reason::Check => {}
        Reason::Unique => waits.push(any_row(&own)),
        Reason::MissingParent => {
            let parents: Vec<_> = fks
                .outgoing(&table.name)
                .iter()
                .map(|fk| any_row(&fk.parent))
                .chain(change.refs.iter().map(|(_, p)| any_row(p)))
                .collect();
            if parents.is_empty() {
                waits.push((ANY_TABLE.to_owned(), Vec::new()));
            }
            waits.extend(parents);
        }
        Reason::StillReferenced => {
            let children: Vec<_> = fks.children_of(&table.name).map(any_row).collect();
            if children.is_empty() {
                waits.push((ANY_TABLE.to_owned(), Vec::new()));
            }
            waits.extend(children);
        }
        Reason::Other | Reason::Unusable => waits.push((ANY_TABLE.to_owned(), Vec::new())),
        // Only time (or an administrator) lets it in: every import, export
        // and retry looks for those whose time has come ([`due_from_the_future`]).
        Reason::Future => {}
        // Nothing lets it in: an administrator discards it.
        Reason::Revoked => {}
    }
    waits.sort();
    waits.dedup();
    waits
}

/// Record what entry `id` waits for, in place of what it waited for before.
pub(crate) fn set_waits(
    conn: &Connection,
    id: i64,
    waits: &[(String, Vec<u8>)],
) -> Result<(), Error> {
    conn.prepare_cached("DELETE FROM fieldsync_quarantine_waits WHERE entry = ?1")?
        .execute([id])?;
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO fieldsync_quarantine_waits(tbl, pk, entry) VALUES (?1, ?2, ?3)",
    )?;
    for (tbl, pk) in waits {
        insert.execute(params![tbl, pk, id])?;
    }
    Ok(())
}

/// The entries waiting for a change of one of `rows` (`(table, pk)`, the
/// table by its name), and with `any`, those waiting for any change.
pub(crate) fn woken(
    conn: &Connection,
    rows: &[(&str, &[u8])],
    any: bool,
) -> Result<std::collections::BTreeSet<i64>, Error> {
    let mut ids = std::collections::BTreeSet::new();
    let mut by_row = conn.prepare_cached(
        "SELECT entry FROM fieldsync_quarantine_waits WHERE tbl = ?1 AND pk = ?2",
    )?;
    let mut tables = std::collections::BTreeSet::new();
    for (tbl, pk) in rows {
        let tbl = tbl.to_ascii_lowercase();
        for id in by_row.query_map(params![tbl, pk], |r| r.get::<_, i64>(0))? {
            ids.insert(id?);
        }
        tables.insert(tbl);
    }
    if any {
        tables.insert(ANY_TABLE.to_owned());
    }
    for tbl in tables {
        for id in by_row.query_map(params![tbl, Vec::<u8>::new()], |r| r.get::<_, i64>(0))? {
            ids.insert(id?);
        }
    }
    Ok(ids)
}

/// The distinct values of the indexed column `col` of `table` (one index
/// step per value, not a scan of the rows).
pub(crate) fn distinct_tables(
    conn: &Connection,
    table: &str,
) -> Result<std::collections::HashSet<String>, Error> {
    let sql = format!("SELECT tbl FROM {table} WHERE tbl > ?1 ORDER BY tbl LIMIT 1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut out = std::collections::HashSet::new();
    let mut after = String::new();
    while let Some(tbl) = stmt
        .query_row([&after], |r| r.get::<_, String>(0))
        .optional()?
    {
        out.insert(tbl.clone());
        after = tbl;
    }
    Ok(out)
}

/// The entry holding the row `pk` of `table`, if any.
pub(crate) fn entry_of(conn: &Connection, table: &str, pk: &[u8]) -> Result<Option<i64>, Error> {
    Ok(conn
        .prepare_cached("SELECT id FROM fieldsync_quarantine WHERE tbl = ?1 AND pk = ?2")?
        .query_row(params![table, pk], |r| r.get(0))
        .optional()?)
}

/// Record that a retry failed again, with the current reason.
pub(crate) fn still_held(
    conn: &Connection,
    id: i64,
    refusal: &Refusal,
    now_ms: i64,
) -> Result<(), Error> {
    conn.prepare_cached(
        "UPDATE fieldsync_quarantine SET reason = ?1, detail = ?2, last_at = ?3, tries = tries + 1 WHERE id = ?4",
    )?
    .execute(params![refusal.reason.as_str(), refusal.detail, now_ms, id])?;
    Ok(())
}

/// Add the change numbers a `seqs` column holds (see [`seqs_of`]) to
/// `numbers`, per origin (local site number); origins not known here are
/// left out.
pub(crate) fn add_seqs(seqs: &[u8], sites: &Sites, numbers: &mut BTreeMap<i64, Vec<u64>>) {
    for one in seqs.chunks_exact(24) {
        let (site, seq) = one.split_at(16);
        let (Some(site), Ok(seq)) = (SiteId::from_slice(site), <[u8; 8]>::try_from(seq)) else {
            continue;
        };
        if let Some(idx) = sites.idx_of(&site) {
            numbers
                .entry(idx)
                .or_default()
                .push(u64::from_be_bytes(seq));
        }
    }
}

/// Change numbers of every held change, per origin (local site number):
/// they are not counted as received until applied (with those of
/// [`crate::receive::waiting`]: [`crate::receive::waiting::not_received`]).
pub fn held_numbers(conn: &Connection, sites: &Sites) -> Result<BTreeMap<i64, SeqSet>, Error> {
    let mut numbers: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
    let mut stmt = conn.prepare_cached("SELECT seqs, record FROM fieldsync_quarantine")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        // An entry written before the seqs column: its record says.
        let Some(seqs) = r.get_ref(0)?.as_blob_or_null()? else {
            let Ok(held) = rmp_serde::from_slice::<Held>(r.get_ref(1)?.as_blob()?) else {
                continue;
            };
            for v in held.versions {
                if let Some(idx) = sites.idx_of(&v.site) {
                    numbers.entry(idx).or_default().push(v.seq);
                }
            }
            continue;
        };
        add_seqs(seqs, sites, &mut numbers);
    }
    Ok(numbers
        .into_iter()
        .map(|(origin, seqs)| (origin, SeqSet::from_numbers(seqs)))
        .collect())
}

/// Which held changes to discard (`fieldsync conflicts --discard`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discard {
    /// The entry with this number (`fieldsync_quarantine.id`).
    Entry(i64),
    /// Every entry a bundle of this sender brought.
    From(String),
}

/// A held change the operator discarded, as `fieldsync_discarded` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscardedChange {
    /// Its number in the quarantine.
    pub entry: i64,
    /// When it was discarded (unix ms).
    #[serde(rename = "discarded_at", serialize_with = "crate::json::time")]
    pub discarded_ms: i64,
    /// The table.
    pub table: String,
    /// The row's key, as SQL literals (text output; JSON has `key_json`).
    #[serde(skip)]
    pub key: String,
    /// The row's key as JSON (spec/json.md, "Keys"): in JSON, `key`.
    #[serde(rename = "key")]
    pub key_json: serde_json::Value,

    /// Why it was held.
    pub reason: String,
    /// What exactly.
    pub detail: String,
    /// The instance whose bundle brought it.
    #[serde(rename = "sender_instance")]
    pub sender: String,
    /// When it was first held (unix ms).
    #[serde(rename = "first_at", serialize_with = "crate::json::time")]
    pub first_ms: i64,
    /// Its change numbers, `origin#seq`, comma-separated.
    #[serde(rename = "change_numbers")]
    pub changes: String,
    /// The values it carried, `column = value`, comma-separated.
    pub values: String,
    /// Who discarded it, when recorded (`console: NAME` from the console;
    /// `None` from the command line or before engine schema 10).
    pub discarded_by: Option<String>,
}

/// Discard held changes: each is recorded in `fieldsync_discarded` with
/// its values, removed from the quarantine, and its change numbers count
/// as received (dropped), so no peer is asked for them again. The caller
/// saves the session (this instance's own numbers leave `lost`).
pub(crate) fn discard(
    conn: &Connection,
    s: &mut crate::catalog::session::Session,
    which: &Discard,
    now_ms: i64,
    by: Option<&str>,
) -> Result<Vec<DiscardedChange>, Error> {
    let (sql, arg): (&str, rusqlite::types::Value) = match which {
        Discard::Entry(id) => ("id = ?1", (*id).into()),
        Discard::From(sender) => ("sender = ?1", sender.clone().into()),
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT id, tbl, key, reason, detail, sender, first_at, record          FROM fieldsync_quarantine WHERE {sql} ORDER BY id"
    ))?;
    let mut rows = stmt.query([arg])?;
    let mut out = Vec::new();
    let mut numbers: BTreeMap<i64, SeqSet> = BTreeMap::new();
    while let Some(r) = rows.next()? {
        let held = rmp_serde::from_slice::<Held>(r.get_ref(7)?.as_blob()?).ok();
        let (changes, values) = match &held {
            None => (String::new(), "(the held record is damaged)".to_owned()),
            Some(h) => {
                let changes = h
                    .versions
                    .iter()
                    .map(|v| format!("{}#{}", s.sites.name_of(&v.site), v.seq))
                    .collect::<Vec<_>>()
                    .join(", ");
                let values = h
                    .values
                    .iter()
                    .map(|(c, v)| {
                        let shown = if h.refs.iter().any(|(rc, _)| rc == c) {
                            crate::catalog::refs::shown(v)
                        } else {
                            v.clone()
                        };
                        format!("{c} = {shown}")
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                for v in &h.versions {
                    if let Some(idx) = s.sites.idx_of(&v.site) {
                        numbers.entry(idx).or_default().insert_range(v.seq, v.seq);
                    }
                }
                (changes, values)
            }
        };
        out.push(DiscardedChange {
            entry: r.get(0)?,
            discarded_ms: now_ms,
            table: r.get(1)?,
            key: r.get(2)?,
            key_json: serde_json::Value::Null,
            reason: r.get(3)?,
            detail: r.get(4)?,
            sender: r.get(5)?,
            first_ms: r.get(6)?,
            changes,
            values,
            discarded_by: by.map(str::to_owned),
        });
    }
    let columns = s.catalog.key_columns();
    for d in &mut out {
        d.key_json = crate::json::row_key(&columns, &d.table, &d.key);
    }
    for d in &out {
        conn.prepare_cached(
            "INSERT INTO fieldsync_discarded(entry, discarded_at, tbl, key, reason, detail, sender,              first_at, changes, vals, discarded_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            d.entry,
            d.discarded_ms,
            d.table,
            d.key,
            d.reason,
            d.detail,
            d.sender,
            d.first_ms,
            d.changes,
            d.values,
            d.discarded_by
        ])?;
        release(conn, d.entry)?;
    }
    // Received and dropped: the numbers join "have" (ours leave "lost").
    for (origin, set) in &numbers {
        if *origin == s.local_idx {
            s.lost = s.lost.minus(set);
        } else {
            crate::catalog::peers::add_have(conn, *origin, set)?;
        }
    }
    Ok(out)
}

/// Every discarded change, newest first.
pub(crate) fn discarded(conn: &Connection) -> Result<Vec<DiscardedChange>, Error> {
    let mut stmt = conn.prepare(
        "SELECT entry, discarded_at, tbl, key, reason, detail, sender, first_at, changes, vals,          discarded_by FROM fieldsync_discarded ORDER BY id DESC",
    )?;
    let out = stmt
        .query_map([], |r| {
            Ok(DiscardedChange {
                entry: r.get(0)?,
                discarded_ms: r.get(1)?,
                table: r.get(2)?,
                key: r.get(3)?,
                key_json: serde_json::Value::Null,
                reason: r.get(4)?,
                detail: r.get(5)?,
                sender: r.get(6)?,
                first_ms: r.get(7)?,
                changes: r.get(8)?,
                values: r.get(9)?,
                discarded_by: r.get(10)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(out)
}

/// Held changes per sender allowed by default (`fieldsync_meta` key
/// [`MAX_HELD_KEY`] sets another bound).
pub const DEFAULT_MAX_HELD: u64 = 10_000;
/// The `fieldsync_meta` key of the bound on held changes per sender.
pub const MAX_HELD_KEY: &str = "max_held_per_sender";

/// Refuse a bundle of `sender` that added `added` held changes and left
/// more of its changes held than the bound (the caller's transaction then
/// rolls back, leaving the database as it was).
pub(crate) fn within_bound(conn: &Connection, sender: &str, added: u64) -> Result<(), Error> {
    if added == 0 {
        return Ok(());
    }
    let limit = crate::catalog::site::meta_get::<i64>(conn, MAX_HELD_KEY)?
        .map_or(DEFAULT_MAX_HELD, |n| n.max(0) as u64);
    let held: i64 = conn
        .prepare_cached("SELECT count(*) FROM fieldsync_quarantine WHERE sender = ?1")?
        .query_row([sender], |r| r.get(0))?;
    let held = held as u64;
    if held > limit {
        return Err(crate::error::ImportError::TooManyHeld {
            sender: sender.to_owned(),
            held,
            limit,
            kept: "nothing was imported".to_owned(),
            db: crate::catalog::store::db_arg(conn),
        }
        .into());
    }
    Ok(())
}

/// Number of held changes.
pub fn held_count(conn: &Connection) -> Result<u64, Error> {
    Ok(
        conn.query_row("SELECT count(*) FROM fieldsync_quarantine", [], |r| {
            r.get::<_, i64>(0)
        })? as u64,
    )
}

/// Entries held "from the future" whose every stamp is at or before
/// `limit` now (the wall clock caught up with them), and, apart, the
/// number still ahead.
pub(crate) fn due_from_the_future(
    conn: &Connection,
    limit: Hlc,
) -> Result<(std::collections::BTreeSet<i64>, u64), Error> {
    let mut stmt =
        conn.prepare_cached("SELECT id, record FROM fieldsync_quarantine WHERE reason = ?1")?;
    let mut rows = stmt.query([FROM_THE_FUTURE])?;
    let mut due = std::collections::BTreeSet::new();
    let mut ahead = 0u64;
    while let Some(r) = rows.next()? {
        let newest = rmp_serde::from_slice::<Held>(r.get_ref(1)?.as_blob()?)
            .ok()
            .and_then(|h| h.versions.iter().map(|v| Hlc(v.hlc)).max());
        match newest {
            Some(newest) if newest > limit => ahead += 1,
            // Due, or damaged: a retry says which.
            _ => {
                due.insert(r.get(0)?);
            }
        }
    }
    Ok((due, ahead))
}
