//! Applying one received change: merge it into the row's state, write the
//! result to the app table and the log, check the row's references, and
//! turn what the database refuses into a [`Refusal`]. Then settling the
//! refused ones: retry rounds, a joint pass for changes that only fit
//! together, and the quarantine for the rest.
//!
//! spec/merge.md says what a row becomes; spec/quarantine.md what happens
//! when the database refuses it.

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, params_from_iter};

use crate::base::colset::{ColSet, SENTINEL};
use crate::base::hlc::now_unix_ms;
use crate::base::merge::{RowAction, RowState, Verdict};
use crate::base::seqset::SeqSet;
use crate::base::value::{Value, key_literal};
use crate::catalog::foreign::{Broken, ForeignKeys};
use crate::catalog::identity::{bind, locate, unbind};
use crate::catalog::layout::Identity;
use crate::catalog::peers::have_all;
use crate::catalog::schema::quote_ident;
use crate::catalog::session::Session;
use crate::catalog::tracked::{Catalog, TrackedTable};
use crate::error::{BundleError, Error, ImportError};
use crate::local::log::{load_row, save_row};
use crate::receive::quarantine::{Change, Reason, Refusal};

/// A reference check a joint pass makes after all its changes are written.
enum PostCheck {
    /// The row's own references: its SQL key, the columns written (`None`
    /// for a new row) and those not to check (dangling at the sender).
    Row {
        table: usize,
        key: Vec<Value>,
        written: Option<Vec<String>>,
        unchecked: Vec<String>,
    },
    /// A reference to a row not written yet when its own row was (two new
    /// rows pointing at each other): written as NULL, resolved now.
    Resolve {
        table: usize,
        key: Vec<Value>,
        column: String,
        parent: String,
        value: Value,
    },
    /// Children of a table whose referenced columns changed (`None`: a
    /// row was deleted).
    Children {
        table: usize,
        columns: Option<Vec<String>>,
    },
}

/// Counts for one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableImport {
    /// Table name.
    pub table: String,
    /// Records that changed the row.
    pub applied: u64,
    /// Records already known here.
    pub known: u64,
    /// Records older than what is here.
    pub older: u64,
    /// Records the database refused, now in quarantine.
    pub quarantined: u64,
}

/// State shared by the changes of one import (or one retry).
pub(crate) struct Applier {
    fks: ForeignKeys,
    /// Per catalog table, its non-key columns that children point at.
    referenced: Vec<Vec<String>>,
    /// Per catalog table: SQLite numbers a new row's local key itself (a
    /// rowid), so an insert leaves it out.
    local_auto: Vec<bool>,
    sql_cache: HashMap<(i64, ColSet, bool), String>,
    /// What this instance had before, to tell a change never received from
    /// one it already merged.
    pub have_before: BTreeMap<i64, SeqSet>,
    pub sender: String,
    pub now_ms: i64,
    /// Per catalog table.
    pub counts: Vec<TableImport>,
    /// Quarantine entries written while reading the bundle, and whether
    /// each was new (rather than joined to an older entry).
    spilled: HashMap<i64, bool>,
    /// Rows that had a held change when the import began.
    held_rows: HashSet<(usize, Vec<u8>)>,
    /// Held changes from earlier imports applied now, and their numbers.
    pub released: u64,
    pub released_numbers: BTreeMap<i64, SeqSet>,
    /// Values added to the conflict log.
    pub overwritten: u64,
    /// In a joint pass: the checks to make once every change is written.
    joint: Option<Vec<(usize, PostCheck)>>,
    /// The entry being applied in a joint pass.
    current: usize,
}

/// One change waiting in [`Applier::settle`].
struct Entry {
    /// Its quarantine entry, if it has one.
    id: Option<i64>,
    change: Change,
    /// Holds a change of the bundle being imported (counted for its tables).
    fresh: bool,
    /// Only this bundle's change: the sender's seen-vector applies to it.
    sender_saw: bool,
    /// The stored record no longer matches `change`.
    dirty: bool,
    refusal: Option<Refusal>,
}

impl Applier {
    pub fn new(conn: &Connection, s: &Session, sender: &str) -> Result<Applier, Error> {
        let fks = ForeignKeys::load(conn, s.catalog.tables())?;
        let referenced = s
            .catalog
            .tables()
            .iter()
            .map(|t| fks.referenced_columns(t))
            .collect();
        let local_auto = s
            .catalog
            .tables()
            .iter()
            .map(|t| crate::catalog::identity::local_is_rowid(conn, t))
            .collect::<Result<_, _>>()?;
        let mut held_rows = HashSet::new();
        {
            let mut stmt = conn.prepare("SELECT tbl, pk FROM fieldsync_quarantine")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let tbl: String = r.get(0)?;
                if let Some(i) = s.catalog.tables().iter().position(|t| t.name == tbl) {
                    held_rows.insert((i, r.get::<_, Vec<u8>>(1)?));
                }
            }
        }
        Ok(Applier {
            fks,
            referenced,
            local_auto,
            sql_cache: HashMap::new(),
            have_before: have_all(conn, s)?,
            sender: sender.to_owned(),
            now_ms: now_unix_ms(),
            counts: s
                .catalog
                .tables()
                .iter()
                .map(|t| TableImport {
                    table: t.name.clone(),
                    ..TableImport::default()
                })
                .collect(),
            spilled: HashMap::new(),
            held_rows,
            released: 0,
            released_numbers: BTreeMap::new(),
            overwritten: 0,
            joint: None,
            current: 0,
        })
    }

    /// True if the row has a change in quarantine: a new change of it must
    /// join that entry rather than be applied alone (a later edit of a row
    /// whose insert is held would otherwise create a partial row).
    pub fn is_held(&self, c: &Change) -> bool {
        !self.held_rows.is_empty() && self.held_rows.contains(&(c.table, c.pk.clone()))
    }

    pub fn count(&mut self, table: usize, verdict: Verdict) {
        let c = &mut self.counts[table];
        match verdict {
            Verdict::Applied => c.applied += 1,
            Verdict::Known => c.known += 1,
            Verdict::Older => c.older += 1,
        }
    }

    /// Hold a refused change in the quarantine table right away.
    pub fn spill(
        &mut self,
        conn: &Connection,
        s: &Session,
        change: &Change,
        refusal: &Refusal,
    ) -> Result<(), Error> {
        let table = &s.catalog.tables()[change.table];
        let (id, new) = crate::receive::quarantine::hold(
            conn,
            change.table,
            table,
            change,
            refusal,
            &self.sender,
            self.now_ms,
        )?;
        self.spilled.insert(id, new);
        Ok(())
    }

    /// A change of `e` fits now: count it, release its entry.
    fn applied_entry(
        &mut self,
        conn: &Connection,
        s: &Session,
        e: &Entry,
        verdict: Verdict,
    ) -> Result<(), Error> {
        if e.fresh {
            self.count(e.change.table, verdict);
        }
        if let Some(id) = e.id {
            crate::receive::quarantine::release(conn, id)?;
            if !self.spilled.get(&id).copied().unwrap_or(false) {
                self.released += 1;
            }
            // Received now: the numbers join "have" (a number this bundle
            // covers is added twice, harmlessly).
            for v in &e.change.versions {
                if let Some(idx) = s.sites.idx_of(&v.site) {
                    self.released_numbers
                        .entry(idx)
                        .or_default()
                        .insert_range(v.seq, v.seq);
                }
            }
        }
        Ok(())
    }

    /// Retry the refused changes and every held change until a round makes
    /// no progress (a child waits for its parent, which may wait for its
    /// own), try those refused for references together, then hold what is
    /// left. A refused change of a row that is already held joins that
    /// entry, since the pieces of one row may only fit together (an insert
    /// held for a UNIQUE clash, and the edit that resolves it).
    pub fn settle(
        &mut self,
        conn: &Connection,
        s: &mut Session,
        deferred: Vec<(Change, Refusal)>,
        seen: Option<&BTreeMap<i64, SeqSet>>,
    ) -> Result<(), Error> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut by_row: HashMap<(usize, Vec<u8>), usize> = HashMap::new();
        for held in crate::receive::quarantine::load_all(conn, s.catalog.tables())? {
            match held.change {
                Ok(change) => {
                    by_row.insert((change.table, change.pk.clone()), entries.len());
                    entries.push(Entry {
                        id: Some(held.id),
                        fresh: self.spilled.contains_key(&held.id),
                        sender_saw: false,
                        change,
                        dirty: false,
                        refusal: None,
                    });
                }
                Err(detail) => {
                    let refusal = Refusal {
                        reason: Reason::Unusable,
                        detail,
                    };
                    crate::receive::quarantine::still_held(conn, held.id, &refusal, self.now_ms)?;
                }
            }
        }
        for (change, refusal) in deferred {
            let row = (change.table, change.pk.clone());
            if let Some(&i) = by_row.get(&row) {
                if let Some(joined) =
                    crate::receive::quarantine::combine(&entries[i].change, &change)
                {
                    let e = &mut entries[i];
                    e.change = joined;
                    e.fresh = true;
                    e.dirty = true;
                    e.refusal = Some(refusal);
                    continue;
                }
            }
            by_row.insert(row, entries.len());
            entries.push(Entry {
                id: None,
                change,
                fresh: true,
                sender_saw: true,
                dirty: true,
                refusal: Some(refusal),
            });
        }
        loop {
            // Alternate the direction: a chain of changes each needing the
            // value the next one frees (a renumbered UNIQUE column) then goes
            // through in one round instead of one change per round.
            entries.reverse();
            let mut progress = false;
            let mut still = Vec::new();
            for mut e in entries {
                let saw = if e.sender_saw { seen } else { None };
                match apply(conn, s, self, &e.change, saw)? {
                    Ok(verdict) => {
                        progress = true;
                        self.applied_entry(conn, s, &e, verdict)?;
                    }
                    // The newest reason is the one that still holds.
                    Err(refusal) => {
                        e.refusal = Some(refusal);
                        still.push(e);
                    }
                }
            }
            entries = still;
            if !progress && !self.joint_pass(conn, s, &mut entries, seen)? {
                break;
            }
        }
        // Deletes still held for children the origin did not know: the
        // schema's ON DELETE CASCADE / SET NULL, carried out here.
        // Round after round: one delete applied may free another (a child
        // the origin deleted itself, whose own children were local).
        loop {
            let mut progress = false;
            let mut rest = Vec::with_capacity(entries.len());
            for e in entries {
                let referenced = e
                    .refusal
                    .as_ref()
                    .is_some_and(|r| r.reason == Reason::StillReferenced);
                if referenced && e.change.cl % 2 == 0 {
                    let saw = if e.sender_saw { seen } else { None };
                    if let Some(verdict) = self.cascade_and_apply(conn, s, &e.change, saw)? {
                        self.applied_entry(conn, s, &e, verdict)?;
                        progress = true;
                        continue;
                    }
                }
                rest.push(e);
            }
            entries = rest;
            if !progress {
                break;
            }
        }
        for mut e in entries {
            // Versions this instance received before (a full export sends
            // them again with the held ones) are applied already: the entry
            // keeps only what is still missing. (A change of a held row
            // always joins its entry, so none is applied by another route
            // during the import.)
            let before = e.change.versions.len();
            let have_before = &self.have_before;
            let sites = &s.sites;
            e.change.versions.retain(|v| {
                !sites
                    .idx_of(&v.site)
                    .and_then(|i| have_before.get(&i))
                    .is_some_and(|set| set.contains(v.seq))
            });
            if e.change.versions.is_empty() {
                if let Some(id) = e.id {
                    crate::receive::quarantine::release(conn, id)?;
                }
                continue;
            }
            if e.change.versions.len() != before {
                let mut cells = ColSet::new();
                for v in &e.change.versions {
                    cells.union_with(&v.cols);
                }
                e.change.values.retain(|(bit, _)| cells.contains(*bit));
                e.dirty = true;
            }
            let table = &s.catalog.tables()[e.change.table];
            let refusal = e.refusal.unwrap_or(Refusal {
                reason: Reason::Other,
                detail: "refused".into(),
            });
            match e.id {
                Some(id) => {
                    if e.dirty {
                        crate::receive::quarantine::rewrite(conn, id, table, &e.change)?;
                    }
                    crate::receive::quarantine::still_held(conn, id, &refusal, self.now_ms)?;
                }
                None => {
                    crate::receive::quarantine::hold(
                        conn,
                        e.change.table,
                        table,
                        &e.change,
                        &refusal,
                        &self.sender,
                        self.now_ms,
                    )?;
                }
            }
            if e.fresh {
                self.counts[e.change.table].quarantined += 1;
            }
        }
        Ok(())
    }

    /// Carry out the `ON DELETE` actions that let the delete `change` apply
    /// (see [`ForeignKeys::cascade`]), with triggers on so the children's
    /// deletes and updates are captured as this instance's changes, then
    /// apply it. `None`, with nothing changed, if some child still stops it.
    fn cascade_and_apply(
        &mut self,
        conn: &Connection,
        s: &mut Session,
        change: &Change,
        seen: Option<&BTreeMap<i64, SeqSet>>,
    ) -> Result<Option<Verdict>, Error> {
        let table = s.catalog.tables()[change.table].clone();
        let Some(at) = locate(conn, &table, &change.pk, &change.key)? else {
            return Ok(None);
        };
        // Only children the deleting instance had not seen: one it knew and
        // kept (its app deletes with foreign keys off) stays, and so does
        // the delete, held.
        let Some(seen) = seen else {
            return Ok(None);
        };
        let sites = &s.sites;
        let mut unseen_here = |child: &TrackedTable, key: &[Value]| -> Result<bool, Error> {
            let pk = if child.identity.mapped() {
                match crate::catalog::identity::gid_of(conn, child.id, &key[0])? {
                    Some(pk) => pk,
                    None => return Ok(true),
                }
            } else {
                crate::base::value::encode_key(key)
            };
            let state = load_row(conn, sites, child.id, &pk)?;
            Ok(!state.versions.iter().any(|v| {
                sites
                    .idx_of(&v.site)
                    .and_then(|i| seen.get(&i))
                    .is_some_and(|set| set.contains(v.seq))
            }))
        };
        let mut sp = Savepoint::new(conn, "fieldsync_cascade")?;
        let triggers = conn.db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true)?;
        let done = self
            .fks
            .cascade(conn, s.catalog.tables(), &table, &at, 0, &mut unseen_here);
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, triggers)?;
        match done {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            // A child the action cannot change (SET NULL on a NOT NULL
            // column, an app trigger that raises): the delete stays held.
            Err(Error::Sqlite(e)) if !is_database_trouble(&e) => return Ok(None),
            Err(e) => return Err(e),
        }
        match apply(conn, s, self, change, Some(seen))? {
            Ok(verdict) => {
                sp.release()?;
                Ok(Some(verdict))
            }
            Err(_) => Ok(None),
        }
    }

    /// Changes refused only for their references may fit together: two
    /// new rows pointing at each other, a parent's renamed code and its
    /// children's updated references. Write them all, then check every
    /// reference; keep the set if all hold, otherwise undo, drop the
    /// changes whose references failed and try the rest. Returns true if
    /// some were applied.
    fn joint_pass(
        &mut self,
        conn: &Connection,
        s: &mut Session,
        entries: &mut Vec<Entry>,
        seen: Option<&BTreeMap<i64, SeqSet>>,
    ) -> Result<bool, Error> {
        let mut group: Vec<usize> = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.refusal.as_ref().is_some_and(|r| {
                    matches!(r.reason, Reason::MissingParent | Reason::StillReferenced)
                })
            })
            .map(|(i, _)| i)
            .collect();
        while group.len() >= 2 {
            conn.execute_batch("SAVEPOINT fieldsync_joint")?;
            let overwritten = self.overwritten;
            self.joint = Some(Vec::new());
            let mut written = Vec::new();
            let mut failed = HashSet::new();
            for &i in &group {
                self.current = i;
                let saw = if entries[i].sender_saw { seen } else { None };
                match apply(conn, s, self, &entries[i].change, saw) {
                    Ok(Ok(verdict)) => written.push((i, verdict)),
                    Ok(Err(_)) => {
                        failed.insert(i);
                    }
                    Err(e) => {
                        self.joint = None;
                        let _ = conn
                            .execute_batch("ROLLBACK TO fieldsync_joint; RELEASE fieldsync_joint");
                        return Err(e);
                    }
                }
            }
            let checks = self.joint.take().unwrap_or_default();
            // References to rows of the group first, then every check.
            for (i, check) in &checks {
                if let PostCheck::Resolve {
                    table,
                    key,
                    column,
                    parent,
                    value,
                } = check
                {
                    let t = &s.catalog.tables()[*table];
                    if !set_ref(conn, &s.catalog, t, key, column, parent, value)? {
                        failed.insert(*i);
                    }
                }
            }
            for (i, check) in &checks {
                let broken = match check {
                    PostCheck::Resolve { .. } => None,
                    PostCheck::Row {
                        table,
                        key,
                        written,
                        unchecked,
                    } => self.fks.check_row(
                        conn,
                        &s.catalog.tables()[*table],
                        key,
                        written.as_deref(),
                        unchecked,
                    )?,
                    PostCheck::Children { table, columns } => self.fks.dangling_children(
                        conn,
                        &s.catalog.tables()[*table],
                        columns.as_deref(),
                    )?,
                };
                if broken.is_some() {
                    failed.insert(*i);
                }
            }
            if failed.is_empty() && !written.is_empty() {
                conn.execute_batch("RELEASE fieldsync_joint")?;
                let done: HashSet<usize> = written.iter().map(|(i, _)| *i).collect();
                for (i, verdict) in written {
                    let e = &entries[i];
                    // Borrow of entries ends before the call below.
                    let e = Entry {
                        id: e.id,
                        change: e.change.clone(),
                        fresh: e.fresh,
                        sender_saw: e.sender_saw,
                        dirty: e.dirty,
                        refusal: None,
                    };
                    self.applied_entry(conn, s, &e, verdict)?;
                }
                let mut i = 0;
                entries.retain(|_| {
                    let keep = !done.contains(&i);
                    i += 1;
                    keep
                });
                return Ok(true);
            }
            conn.execute_batch("ROLLBACK TO fieldsync_joint; RELEASE fieldsync_joint")?;
            self.overwritten = overwritten;
            group.retain(|i| !failed.contains(i));
            if failed.is_empty() {
                break;
            }
        }
        Ok(false)
    }
}

/// Merge one change into its row and write the result to the app table and
/// the log. A refusal leaves nothing of the change behind. `seen` is the
/// sender's seen-vector (none when it does not apply), used to tell
/// concurrent edits from normal ones for the conflict log.
pub(crate) fn apply(
    conn: &Connection,
    s: &mut Session,
    ap: &mut Applier,
    c: &Change,
    seen: Option<&BTreeMap<i64, SeqSet>>,
) -> Result<Result<Verdict, Refusal>, Error> {
    let table = &s.catalog.tables()[c.table];
    let mut before = load_row(conn, &s.sites, table.id, &c.pk)?;
    let mut vanished_checked = false;
    loop {
        let mut state = before.clone();
        let outcome = state
            .merge(c.cl, &c.versions)
            .map_err(|e| ImportError::SequenceReused {
                origin: s.sites.name_of(&e.site),
                seq: e.seq,
            })?;
        let row = crate::receive::conflicts::MergedRow {
            table,
            c,
            before: &before,
            after: &state,
            have_before: &ap.have_before,
            seen,
        };
        let losses = crate::receive::conflicts::losses(conn, s, &row, ap.now_ms)?;
        let guarded = outcome.action != RowAction::None && ap.fks.involves(&table.name);
        if guarded {
            conn.prepare_cached("SAVEPOINT fieldsync_change")?
                .execute([])?;
        }
        let written = write_row(
            conn,
            ap,
            &s.catalog,
            table,
            c,
            &before,
            &state,
            &outcome.action,
        );
        let undo = |conn: &Connection| -> Result<(), Error> {
            if guarded {
                conn.prepare_cached("ROLLBACK TO fieldsync_change")?
                    .execute([])?;
                conn.prepare_cached("RELEASE fieldsync_change")?
                    .execute([])?;
            }
            Ok(())
        };
        match written {
            Ok(Ok(Written::Done)) => {}
            Ok(Ok(Written::Vanished)) if !vanished_checked => {
                // The log has the row but the table does not: it was deleted
                // without a trigger (`INSERT OR REPLACE` on its rowid or a
                // secondary UNIQUE key) and no vanished-row check has run
                // yet. Record that delete now, as that check would have,
                // and merge the change against it: a concurrent update loses
                // to it, instead of re-creating the row with only its cells.
                undo(conn)?;
                vanished_checked = true;
                let hlc = s.clock.stamp(now_unix_ms())?;
                let seq = crate::catalog::session::next_seq(&mut s.seq)?;
                let mut deleted = before.clone();
                deleted.local_delete(s.local, seq, hlc);
                save_row(conn, &s.sites, table.id, &c.pk, &before, &deleted)?;
                before = deleted;
                continue;
            }
            Ok(Ok(Written::Vanished)) => {
                undo(conn)?;
                return Err(malformed(format!(
                    "row {} of table '{}' vanished while it was written",
                    key_literal(&c.key),
                    table.name
                )));
            }
            Ok(Err(refusal)) => {
                undo(conn)?;
                return Ok(Err(refusal));
            }
            Err(e) => {
                undo(conn)?;
                return Err(e);
            }
        }
        save_row(conn, &s.sites, table.id, &c.pk, &before, &state)
            .map_err(|e| reused_number(conn, s, c, e))?;
        if guarded {
            conn.prepare_cached("RELEASE fieldsync_change")?
                .execute([])?;
        }
        if !losses.is_empty() {
            crate::receive::conflicts::record(conn, &losses)?;
            ap.overwritten += losses.len() as u64;
        }
        return Ok(Ok(outcome.verdict));
    }
}

/// A savepoint that rolls back unless released (the shape of rusqlite's
/// own savepoint, on a shared connection).
struct Savepoint<'c> {
    conn: &'c Connection,
    name: &'static str,
    done: bool,
}

impl<'c> Savepoint<'c> {
    fn new(conn: &'c Connection, name: &'static str) -> Result<Savepoint<'c>, Error> {
        conn.execute_batch(&format!("SAVEPOINT {name}"))?;
        Ok(Savepoint {
            conn,
            name,
            done: false,
        })
    }

    fn release(&mut self) -> Result<(), Error> {
        self.conn.execute_batch(&format!("RELEASE {}", self.name))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self
                .conn
                .execute_batch(&format!("ROLLBACK TO {0}; RELEASE {0}", self.name));
        }
    }
}

/// What [`write_row`] did.
enum Written {
    /// The decision is in the app table.
    Done,
    /// A row the log knows as live is not in the table; nothing was written.
    Vanished,
}

/// Write the merge's decision to the app table and check the references
/// it touches (or, in a joint pass, note the checks to make). `Err` is a
/// failure of the database; `Ok(Err)` a refusal.
#[allow(clippy::too_many_arguments)]
fn write_row(
    conn: &Connection,
    ap: &mut Applier,
    catalog: &Catalog,
    table: &TrackedTable,
    c: &Change,
    before: &RowState,
    after: &RowState,
    action: &RowAction,
) -> Result<Result<Written, Refusal>, Error> {
    // Where the row is in the app table (for a local-number table, only if
    // this database has it).
    let at = locate(conn, table, &c.pk, &c.key)?;
    match action {
        RowAction::None => {}
        RowAction::Delete => {
            let Some(at) = at else {
                // Never here, or already gone: nothing to delete.
                return Ok(Ok(Written::Done));
            };
            match ap.joint.as_mut() {
                Some(checks) => checks.push((
                    ap.current,
                    PostCheck::Children {
                        table: c.table,
                        columns: None,
                    },
                )),
                None => {
                    if let Some(broken) = ap.fks.would_orphan(conn, table, &at, None)? {
                        return Ok(Err(broken_refusal(broken)));
                    }
                }
            }
            let sql = format!(
                "DELETE FROM {} WHERE {}",
                quote_ident(&table.name),
                table.key_predicate()
            );
            if let Err(e) = conn
                .prepare_cached(&sql)?
                .execute(params_from_iter(at.iter()))
            {
                return refused(conn, table, c, e, false);
            }
            if table.identity.mapped() {
                unbind(conn, table.id, &c.pk)?;
            }
        }
        RowAction::Write(cells) => {
            // The values to write: references resolved to what they point
            // at here (crate::catalog::refs).
            let mut values: Vec<Value> = Vec::with_capacity(cells.len());
            let mut unchecked: Vec<String> = Vec::new();
            let mut later = Vec::new();
            for bit in cells.iter() {
                let v = c
                    .value(bit)
                    .ok_or_else(|| malformed("a won cell has no value".into()))?;
                let Some(parent_name) = c.ref_parent(bit) else {
                    values.push(v.clone());
                    continue;
                };
                match resolve_ref(conn, catalog, parent_name, v)? {
                    Ok((value, checked)) => {
                        if !checked {
                            unchecked.push(table.cells[bit - 1].clone());
                        }
                        values.push(value);
                    }
                    // A row of this change's own making (it points at
                    // itself, or at a row written with it in a joint pass):
                    // written as NULL, resolved once the rows are written.
                    Err(refusal) => {
                        later.push((table.cells[bit - 1].clone(), parent_name, v, refusal));
                        values.push(Value::Null);
                    }
                }
            }
            // Columns other rows point at, rewritten here.
            let rewritten: Vec<String> = if before.is_live() {
                cells
                    .iter()
                    .filter_map(|b| table.cells.get(b - 1))
                    .filter(|name| {
                        ap.referenced[c.table]
                            .iter()
                            .any(|r| r.eq_ignore_ascii_case(name))
                    })
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            };
            let orphans_possible = match &at {
                Some(at) if !rewritten.is_empty() && ap.joint.is_none() => ap
                    .fks
                    .would_orphan(conn, table, at, Some(&rewritten))?
                    .is_some(),
                _ => false,
            };
            // Only some cells of a row this instance never had: the insert
            // that created it is in a bundle not imported yet.
            let partial = after.holder(SENTINEL).is_none();
            let written_at: Vec<Value> = if before.is_live() {
                // A row the log knows as live should be in the table: UPDATE
                // it, since an upsert would check NOT NULL on the cells it
                // does not carry. Its row count tells if the row is gone.
                let Some(at) = at else {
                    return Ok(Ok(Written::Vanished));
                };
                match update(conn, ap, table, cells, &at, &values) {
                    Ok(true) => at,
                    Ok(false) => return Ok(Ok(Written::Vanished)),
                    Err(e) => return refused(conn, table, c, e, false),
                }
            } else if table.identity.mapped() {
                // A row new here gets the next local number of this
                // database, which the app's own later inserts never reuse.
                let existing = match &at {
                    Some(at) => match update(conn, ap, table, cells, at, &values) {
                        Ok(present) => present.then(|| at.clone()),
                        Err(e) => return refused(conn, table, c, e, partial),
                    },
                    None => None,
                };
                match existing {
                    Some(at) => at,
                    None => {
                        let sql = ap
                            .sql_cache
                            .entry((table.id, cells.clone(), true))
                            .or_insert_with(|| insert_sql(table, cells, ap.local_auto[c.table]));
                        let local = match conn
                            .prepare_cached(sql)?
                            .query_row(params_from_iter(values.iter()), |r| r.get::<_, Value>(0))
                        {
                            Ok(local) => local,
                            Err(e) => return refused(conn, table, c, e, partial),
                        };
                        bind(conn, table.id, &c.pk, &local, None)?;
                        vec![local]
                    }
                }
            } else {
                let sql = ap
                    .sql_cache
                    .entry((table.id, cells.clone(), true))
                    .or_insert_with(|| upsert_sql(table, cells, ap.local_auto[c.table]));
                let args = c.key.iter().chain(values.iter());
                if let Err(e) = conn.prepare_cached(sql)?.execute(params_from_iter(args)) {
                    return refused(conn, table, c, e, partial);
                }
                c.key.clone()
            };
            for (column, parent, value, refusal) in later {
                if set_ref(conn, catalog, table, &written_at, &column, parent, value)? {
                    continue;
                }
                match ap.joint.as_mut() {
                    Some(checks) => checks.push((
                        ap.current,
                        PostCheck::Resolve {
                            table: c.table,
                            key: written_at.clone(),
                            column,
                            parent: parent.to_owned(),
                            value: value.clone(),
                        },
                    )),
                    // The write is undone with the change's savepoint.
                    None => return Ok(Err(refusal)),
                }
            }
            if table.identity == Identity::Content {
                crate::catalog::identity::refresh_sig(conn, table, &c.pk, &written_at[0])?;
            }
            let written: Option<Vec<String>> = before.is_live().then(|| {
                cells
                    .iter()
                    .filter_map(|b| table.cells.get(b - 1).cloned())
                    .collect()
            });
            match ap.joint.as_mut() {
                Some(checks) => {
                    checks.push((
                        ap.current,
                        PostCheck::Row {
                            table: c.table,
                            key: written_at,
                            written,
                            unchecked,
                        },
                    ));
                    if !rewritten.is_empty() {
                        checks.push((
                            ap.current,
                            PostCheck::Children {
                                table: c.table,
                                columns: Some(rewritten),
                            },
                        ));
                    }
                }
                None => {
                    if let Some(broken) = ap.fks.check_row(
                        conn,
                        table,
                        &written_at,
                        written.as_deref(),
                        &unchecked,
                    )? {
                        return Ok(Err(broken_refusal(broken)));
                    }
                    if orphans_possible {
                        if let Some(broken) =
                            ap.fks.dangling_children(conn, table, Some(&rewritten))?
                        {
                            return Ok(Err(broken_refusal(broken)));
                        }
                    }
                }
            }
        }
    }
    Ok(Ok(Written::Done))
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
    let Ok((resolved, _)) = resolve_ref(conn, catalog, parent, value)? else {
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

/// The value to write for the tagged reference `v` to table `parent`, and
/// whether its constraint is to be checked; a refusal if it names a row
/// that is not here.
fn resolve_ref(
    conn: &Connection,
    catalog: &Catalog,
    parent: &str,
    v: &Value,
) -> Result<Result<(Value, bool), Refusal>, Error> {
    let table = catalog.by_name(parent);
    let identity = table.map_or(Identity::Key, |t| t.identity);
    let key_len = table.map_or(0, |t| t.key_len());
    let tagged = crate::catalog::refs::decode(v, identity, key_len).map_err(malformed)?;
    let resolved = match table {
        Some(t) => crate::catalog::refs::resolve(conn, t, &tagged)?,
        None => match &tagged {
            crate::catalog::refs::Tagged::Null => Some((Value::Null, true)),
            crate::catalog::refs::Tagged::Value(v) => Some((v.clone(), true)),
            crate::catalog::refs::Tagged::Dangling(v) => Some((v.clone(), false)),
            crate::catalog::refs::Tagged::DanglingLocal => Some((Value::Null, false)),
            crate::catalog::refs::Tagged::Identity(_) => None,
        },
    };
    Ok(resolved.ok_or_else(|| Refusal {
        reason: Reason::MissingParent,
        detail: format!(
            "it points to {parent} row {}, which is not here (deleted here, or not received yet)",
            crate::catalog::refs::shown(v)
        ),
    }))
}

fn malformed(detail: String) -> Error {
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

/// Turn a constraint failure into a refusal naming what clashed; any other
/// error is the database's and fails the import.
fn refused<T>(
    conn: &Connection,
    table: &TrackedTable,
    c: &Change,
    e: rusqlite::Error,
    partial: bool,
) -> Result<Result<T, Refusal>, Error> {
    let rusqlite::Error::SqliteFailure(f, msg) = &e else {
        return Err(e.into());
    };
    // The database's own trouble fails the import; anything the row's
    // values provoke (a constraint, a CHECK whose expression raises an
    // error, a value too big) refuses only this change.
    if is_database_trouble(&e) {
        return Err(e.into());
    }
    let message = msg.clone().unwrap_or_else(|| f.to_string());
    refusal_of(conn, table, c, f, message, partial)
}

/// True for the database's own trouble (busy, I/O, corruption, …), as
/// opposed to an error the values written provoke.
fn is_database_trouble(e: &rusqlite::Error) -> bool {
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

/// The refusal for a value error SQLite reported while writing `c`.
fn refusal_of<T>(
    conn: &Connection,
    table: &TrackedTable,
    c: &Change,
    f: &rusqlite::ffi::Error,
    message: String,
    partial: bool,
) -> Result<Result<T, Refusal>, Error> {
    use rusqlite::ffi;
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
    Ok(Err(Refusal { reason, detail }))
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

/// A change number already used by another row in the log: the origin
/// numbered two changes alike (it was restored from an old backup).
fn reused_number(conn: &Connection, s: &Session, c: &Change, e: Error) -> Error {
    let is_unique = matches!(&e, Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::ConstraintViolation);
    if !is_unique {
        return e;
    }
    for v in &c.versions {
        let Some(origin) = s.sites.idx_of(&v.site) else {
            continue;
        };
        let other: Option<Vec<u8>> = conn
            .query_row(
                "SELECT pk FROM fieldsync_log WHERE origin = ?1 AND seq = ?2",
                rusqlite::params![origin, v.seq as i64],
                |r| r.get(0),
            )
            .ok();
        if other.is_some_and(|pk| pk != c.pk) {
            return ImportError::SequenceReused {
                origin: s.sites.name_of(&v.site),
                seq: v.seq,
            }
            .into();
        }
    }
    e
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
