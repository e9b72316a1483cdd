//! Settling the changes an import could not apply at once, together with
//! the changes held by earlier imports that something they wait for may
//! have changed since (spec/quarantine.md): retry rounds until none fits, a
//! joint pass for changes that only fit together, the schema's `ON DELETE`
//! actions for held deletes, and the quarantine for the rest
//! (spec/quarantine.md). Each change goes through
//! [`crate::receive::apply::apply`]; the quarantine table itself is
//! [`crate::receive::quarantine`]'s.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, Transaction};

use crate::base::colset::ColSet;
use crate::base::merge::Verdict;
use crate::base::seqset::SeqSet;
use crate::base::value::Value;
use crate::catalog::identity::locate;
use crate::catalog::savepoint::Savepoint;
use crate::catalog::session::Session;
use crate::catalog::site::{Sites, meta_get, meta_set};
use crate::catalog::tracked::TrackedTable;
use crate::error::Error;
use crate::local::log::load_row;
use crate::receive::applier::Applier;
use crate::receive::apply::{Applied, apply};
use crate::receive::quarantine::{self, Change, Reason, Refusal};
use crate::receive::write::{is_database_trouble, run_post_checks};

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

impl Entry {
    /// The sender's seen-vector, if it applies to this change.
    fn seen<'s>(
        &self,
        seen: Option<&'s BTreeMap<i64, SeqSet>>,
    ) -> Option<&'s BTreeMap<i64, SeqSet>> {
        if self.sender_saw { seen } else { None }
    }

    /// A delete refused because rows here still point at its row.
    fn is_delete_held_for_children(&self) -> bool {
        let referenced = self
            .refusal
            .as_ref()
            .is_some_and(|r| r.reason == Reason::StillReferenced);
        referenced && self.change.cl % 2 == 0
    }

    /// Refused for its references only: it may fit with others.
    fn refused_for_references(&self) -> bool {
        self.refusal
            .as_ref()
            .is_some_and(|r| matches!(r.reason, Reason::MissingParent | Reason::StillReferenced))
    }
}

/// How a round of [`Applier::settle`] tries an entry.
#[derive(Clone, Copy)]
enum Try {
    /// Apply it as it is.
    Apply,
    /// A delete held for children: carry out the schema's `ON DELETE`
    /// actions first (other entries wait).
    Cascade,
}

/// What writing the changes of a joint pass came to.
struct JointWrite {
    /// The entries written, by index, with their verdicts.
    written: Vec<(usize, Verdict)>,
    /// The entries refused, or whose references fail.
    failed: HashSet<usize>,
}

impl Applier {
    /// Hold a refused change in the quarantine table right away.
    pub fn spill(
        &mut self,
        conn: &Connection,
        s: &Session,
        change: &Change,
        refusal: &Refusal,
    ) -> Result<(), Error> {
        let table = &s.catalog.tables()[change.table];
        let (id, new) = quarantine::hold(
            conn,
            change.table,
            table,
            change,
            refusal,
            &self.sender,
            self.now_ms,
        )?;
        let waits = quarantine::waits_for(table, change, refusal, &self.fks);
        quarantine::set_waits(conn, id, &waits)?;
        self.spilled.insert(id, new);
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
        tx: &Transaction,
        s: &mut Session,
        deferred: Vec<(Change, Refusal)>,
        seen: Option<&BTreeMap<i64, SeqSet>>,
    ) -> Result<(), Error> {
        if !self.retry_all {
            self.touch_local_changes(tx, s)?;
        }
        let mut entries = self.gather(tx, s, deferred)?;
        loop {
            // Alternate the direction: a chain of changes each needing the
            // value the next one frees (a renumbered UNIQUE column) then goes
            // through in one round instead of one change per round.
            entries.reverse();
            let mut progress = self.round(tx, s, &mut entries, seen, Try::Apply)?;
            if !progress {
                // Changes refused for references may fit only with held
                // ones nothing woke (two rows pointing at each other): take
                // those in and try them alone first.
                if self.wake_partners(tx, s, &mut entries)? {
                    continue;
                }
                progress = self.joint_pass(tx, s, &mut entries, seen)?;
            }
            // What this round applied may let other held changes fit (a
            // child waits for its parent, itself held until now).
            let woke = self.wake(tx, s, &mut entries)?;
            if !progress && !woke {
                break;
            }
        }
        // Deletes still held for children the origin did not know: the
        // schema's ON DELETE CASCADE / SET NULL, carried out here. Round
        // after round: one delete applied may free another (a child the
        // origin deleted itself, whose own children were local).
        while self.round(tx, s, &mut entries, seen, Try::Cascade)? {}
        self.hold(tx, s, entries)?;
        // Local changes up to here, and this schema, are accounted for.
        meta_set(tx, HELD_MARK, s.seq as i64)?;
        meta_set(tx, HELD_SCHEMA, schema_version(tx)?)?;
        Ok(())
    }

    /// Note the rows this instance's own changes touched since the last
    /// settling (its app may have created a missing parent, or moved the
    /// row holding a UNIQUE value). Without a record of when that was, or
    /// if the schema changed since (a column appeared, a constraint went),
    /// every held change is retried.
    fn touch_local_changes(&mut self, conn: &Connection, s: &Session) -> Result<(), Error> {
        let mark: Option<i64> = meta_get(conn, HELD_MARK)?;
        let schema: Option<i64> = meta_get(conn, HELD_SCHEMA)?;
        let (Some(mark), Some(schema)) = (mark, schema) else {
            self.retry_all = true;
            return Ok(());
        };
        if schema != schema_version(conn)? {
            self.retry_all = true;
            return Ok(());
        }
        if !self.notes_touched() {
            return Ok(());
        }
        let mut stmt = conn
            .prepare_cached("SELECT tbl, pk FROM fieldsync_log WHERE origin = ?1 AND seq > ?2")?;
        let mut rows = stmt.query(rusqlite::params![s.local_idx, mark])?;
        while let Some(r) = rows.next()? {
            let tbl: i64 = r.get(0)?;
            if let Some(i) = s.catalog.tables().iter().position(|t| t.id == tbl) {
                self.touched.push((i, r.get(1)?));
            }
        }
        Ok(())
    }

    /// The held changes not taken in yet that wait for a row changed since
    /// the last look ([`Applier::touched`]).
    fn woken_ids(&mut self, conn: &Connection, s: &Session) -> Result<BTreeSet<i64>, Error> {
        let mut touched = std::mem::take(&mut self.touched);
        if touched.is_empty() || self.retry_all {
            return Ok(BTreeSet::new());
        }
        touched.sort_unstable();
        touched.dedup();
        let waited = quarantine::distinct_tables(conn, "fieldsync_quarantine_waits")?;
        let tables = s.catalog.tables();
        let rows: Vec<(&str, &[u8])> = touched
            .iter()
            .map(|(t, pk)| (tables[*t].name.as_str(), pk.as_slice()))
            .filter(|(name, _)| waited.contains(&name.to_ascii_lowercase()))
            .collect();
        let mut ids = quarantine::woken(conn, &rows, true)?;
        ids.retain(|id| !self.loaded.contains(id));
        Ok(ids)
    }

    /// Take in the held changes woken by what was applied since the last
    /// look; true if there were any.
    fn wake(
        &mut self,
        conn: &Connection,
        s: &Session,
        entries: &mut Vec<Entry>,
    ) -> Result<bool, Error> {
        let ids = self.woken_ids(conn, s)?;
        if ids.is_empty() {
            return Ok(false);
        }
        let before = entries.len();
        for held in quarantine::load_ids(conn, s.catalog.tables(), ids)? {
            if let Some(e) = self.take_in(conn, held)? {
                entries.push(e);
            }
        }
        Ok(entries.len() > before)
    }

    /// Take in the held changes refused for references in the tables the
    /// entries refused for references are in, refer to, or are referred
    /// from: a joint pass may need them. True if there were any.
    fn wake_partners(
        &mut self,
        conn: &Connection,
        s: &Session,
        entries: &mut Vec<Entry>,
    ) -> Result<bool, Error> {
        if self.retry_all {
            return Ok(false);
        }
        let mut related = BTreeSet::new();
        for e in entries.iter().filter(|e| e.refused_for_references()) {
            let name = &s.catalog.tables()[e.change.table].name;
            related.insert(name.clone());
            related.extend(self.fks.outgoing(name).iter().map(|fk| fk.parent.clone()));
            related.extend(self.fks.children_of(name).map(str::to_owned));
            related.extend(e.change.refs.iter().map(|(_, p)| p.clone()));
        }
        let mut ids = BTreeSet::new();
        let mut stmt = conn.prepare_cached(
            "SELECT id FROM fieldsync_quarantine WHERE tbl = ?1 \
             AND reason IN ('missing parent', 'still referenced')",
        )?;
        for name in related {
            let Some(table) = s.catalog.by_name(&name) else {
                continue;
            };
            for id in stmt.query_map([&table.name], |r| r.get::<_, i64>(0))? {
                let id = id?;
                if !self.loaded.contains(&id) {
                    ids.insert(id);
                }
            }
        }
        if ids.is_empty() {
            return Ok(false);
        }
        for held in quarantine::load_ids(conn, s.catalog.tables(), ids)? {
            if let Some(e) = self.take_in(conn, held)? {
                entries.push(e);
            }
        }
        Ok(true)
    }

    /// A held change read back, as an entry to retry; one that can no
    /// longer be rebuilt stays held, as unusable.
    fn take_in(
        &mut self,
        conn: &Connection,
        held: quarantine::Retry,
    ) -> Result<Option<Entry>, Error> {
        self.loaded.insert(held.id);
        let change = match held.change {
            Ok(change) => change,
            Err(detail) => {
                let reason = Reason::Unusable;
                let refusal = Refusal { reason, detail };
                quarantine::still_held(conn, held.id, &refusal, self.now_ms)?;
                return Ok(None);
            }
        };
        if !self.spilled.contains_key(&held.id) {
            self.retried += 1;
        }
        Ok(Some(Entry {
            id: Some(held.id),
            fresh: self.spilled.contains_key(&held.id),
            sender_saw: false,
            change,
            dirty: false,
            refusal: None,
        }))
    }

    /// Every held change, and the refused ones of this import joined to the
    /// entry of their row. A held change that can no longer be rebuilt
    /// stays held, as unusable.
    fn gather(
        &mut self,
        conn: &Connection,
        s: &Session,
        deferred: Vec<(Change, Refusal)>,
    ) -> Result<Vec<Entry>, Error> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut by_row: HashMap<(usize, Vec<u8>), usize> = HashMap::new();
        let held = if self.retry_all {
            quarantine::load_all(conn, s.catalog.tables())?
        } else {
            // Those written while reading the bundle, those of the rows the
            // refused records change (they join), those woken.
            let mut ids: BTreeSet<i64> = self.spilled.keys().copied().collect();
            for (change, _) in &deferred {
                let table = &s.catalog.tables()[change.table].name;
                ids.extend(quarantine::entry_of(conn, table, &change.pk)?);
            }
            ids.extend(self.woken_ids(conn, s)?);
            // Those held from the future whose time has come, and those an
            // administrator accepted.
            if let Some(limit) = self.future_limit {
                ids.extend(quarantine::due_from_the_future(conn, limit)?.0);
            }
            ids.extend(self.accepted.iter().copied());
            quarantine::load_ids(conn, s.catalog.tables(), ids)?
        };
        for held in held {
            let Some(e) = self.take_in(conn, held)? else {
                continue;
            };
            by_row.insert((e.change.table, e.change.pk.clone()), entries.len());
            entries.push(e);
        }
        for (change, refusal) in deferred {
            let row = (change.table, change.pk.clone());
            if let Some(&i) = by_row.get(&row) {
                if let Some(joined) = quarantine::combine(&entries[i].change, &change) {
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
        Ok(entries)
    }

    /// One round over the entries, each tried as `how` says; true if some
    /// fit.
    fn round(
        &mut self,
        tx: &Transaction,
        s: &mut Session,
        entries: &mut Vec<Entry>,
        seen: Option<&BTreeMap<i64, SeqSet>>,
        how: Try,
    ) -> Result<bool, Error> {
        let mut progress = false;
        let mut rest = Vec::with_capacity(entries.len());
        for mut e in std::mem::take(entries) {
            let verdict = match how {
                Try::Apply => match self.apply_entry(tx, s, &e, seen)? {
                    Applied::Merged(verdict) => Some(verdict),
                    // The newest reason is the one that still holds.
                    Applied::Refused(refusal) => {
                        e.refusal = Some(refusal);
                        None
                    }
                },
                Try::Cascade if e.is_delete_held_for_children() => {
                    self.cascade_and_apply(tx, s, &e.change, e.seen(seen))?
                }
                Try::Cascade => None,
            };
            match verdict {
                Some(verdict) => {
                    self.applied_entry(tx, s, &e, verdict)?;
                    progress = true;
                }
                None => rest.push(e),
            }
        }
        *entries = rest;
        Ok(progress)
    }

    /// Apply an entry's change; one an administrator accepted, whatever
    /// its clock.
    fn apply_entry(
        &mut self,
        tx: &Transaction,
        s: &mut Session,
        e: &Entry,
        seen: Option<&BTreeMap<i64, SeqSet>>,
    ) -> Result<Applied, Error> {
        let lifted = e.id.is_some_and(|id| self.accepted.contains(&id));
        let limit = self.future_limit;
        if lifted {
            self.future_limit = None;
        }
        let applied = apply(tx, s, self, &e.change, e.seen(seen));
        self.future_limit = limit;
        applied
    }

    /// Hold what is left in the quarantine, each change with only what
    /// this instance still lacks.
    fn hold(&mut self, conn: &Connection, s: &Session, entries: Vec<Entry>) -> Result<(), Error> {
        for mut e in entries {
            if !self.keep_missing(s, &mut e) {
                if let Some(id) = e.id {
                    quarantine::release(conn, id)?;
                }
                continue;
            }
            let table = &s.catalog.tables()[e.change.table];
            let refusal = e.refusal.unwrap_or(Refusal {
                reason: Reason::Other,
                detail: "refused".into(),
            });
            let id = match e.id {
                Some(id) => {
                    if e.dirty {
                        quarantine::rewrite(conn, id, table, &e.change)?;
                    }
                    quarantine::still_held(conn, id, &refusal, self.now_ms)?;
                    id
                }
                None => {
                    quarantine::hold(
                        conn,
                        e.change.table,
                        table,
                        &e.change,
                        &refusal,
                        &self.sender,
                        self.now_ms,
                    )?
                    .0
                }
            };
            let waits = quarantine::waits_for(table, &e.change, &refusal, &self.fks);
            quarantine::set_waits(conn, id, &waits)?;
            if e.fresh {
                self.counts[e.change.table].quarantined += 1;
                if refusal.reason == Reason::Future {
                    self.note_future(&e.change);
                }
            }
        }
        Ok(())
    }

    /// Count a change of the bundle being imported held from the future,
    /// noting the furthest ahead.
    fn note_future(&mut self, change: &Change) {
        self.future_held += 1;
        if let Some(v) = change.versions.iter().max_by_key(|v| v.hlc) {
            if self.future_furthest.is_none_or(|(hlc, _)| v.hlc > hlc) {
                self.future_furthest = Some((v.hlc, v.site));
            }
        }
    }

    /// Versions this instance received before (a full export sends them
    /// again with the held ones) are applied already: the entry keeps only
    /// what is still missing. (A change of a held row always joins its
    /// entry, so none is applied by another route during the import.)
    /// False if nothing is left.
    fn keep_missing(&self, s: &Session, e: &mut Entry) -> bool {
        let before = e.change.versions.len();
        let have_before = &self.have_before;
        e.change.versions.retain(|v| {
            !s.sites
                .idx_of(&v.site)
                .and_then(|i| have_before.get(&i))
                .is_some_and(|set| set.contains(v.seq))
        });
        if e.change.versions.is_empty() {
            return false;
        }
        if e.change.versions.len() != before {
            let mut cells = ColSet::new();
            for v in &e.change.versions {
                cells.union_with(&v.cols);
            }
            e.change.values.retain(|(bit, _)| cells.contains(*bit));
            e.dirty = true;
        }
        true
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
            quarantine::release(conn, id)?;
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

    /// Carry out the `ON DELETE` actions that let the delete `change` apply
    /// (see [`crate::catalog::foreign::ForeignKeys::cascade`]), with
    /// triggers on so the children's deletes and updates are captured as
    /// this instance's changes, then apply it. `None`, with nothing
    /// changed, if some child still stops it.
    fn cascade_and_apply(
        &mut self,
        tx: &Transaction,
        s: &mut Session,
        change: &Change,
        seen: Option<&BTreeMap<i64, SeqSet>>,
    ) -> Result<Option<Verdict>, Error> {
        let table = s.catalog.tables()[change.table].clone();
        let Some(at) = locate(tx, &table, &change.pk, &change.key)? else {
            return Ok(None);
        };
        // Only children the deleting instance had not seen: one it knew and
        // kept (its app deletes with foreign keys off) stays, and so does
        // the delete, held.
        let Some(seen) = seen else {
            return Ok(None);
        };
        let sites = &s.sites;
        let mut unseen_here =
            |child: &TrackedTable, key: &[Value]| unseen_by_sender(tx, sites, seen, child, key);
        let sp = Savepoint::open(tx, "fieldsync_cascade")?;
        let triggers = tx.db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER)?;
        tx.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true)?;
        let done = self
            .fks
            .cascade(tx, s.catalog.tables(), &table, &at, 0, &mut unseen_here);
        tx.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, triggers)?;
        let applied = match done {
            Ok(true) => Some(apply(tx, s, self, change, Some(seen))?),
            Ok(false) => None,
            // A child the action cannot change (SET NULL on a NOT NULL
            // column, an app trigger that raises): the delete stays held.
            Err(Error::Sqlite(e)) if !is_database_trouble(&e) => None,
            Err(e) => return Err(e),
        };
        match applied {
            Some(Applied::Merged(verdict)) => {
                sp.commit()?;
                Ok(Some(verdict))
            }
            _ => {
                sp.rollback()?;
                Ok(None)
            }
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
        tx: &Transaction,
        s: &mut Session,
        entries: &mut Vec<Entry>,
        seen: Option<&BTreeMap<i64, SeqSet>>,
    ) -> Result<bool, Error> {
        let mut group: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].refused_for_references())
            .collect();
        while group.len() >= 2 {
            let sp = Savepoint::open(tx, "fieldsync_joint")?;
            let overwritten = self.overwritten;
            let JointWrite { written, failed } =
                self.write_jointly(tx, s, entries, &group, seen)?;
            if failed.is_empty() && !written.is_empty() {
                sp.commit()?;
                self.accept(tx, s, entries, written)?;
                return Ok(true);
            }
            sp.rollback()?;
            self.overwritten = overwritten;
            group.retain(|i| !failed.contains(i));
            if failed.is_empty() {
                break;
            }
        }
        Ok(false)
    }

    /// Write every change of `group` with the reference checks deferred,
    /// then make them: the changes written, and those refused or whose
    /// references fail.
    fn write_jointly(
        &mut self,
        tx: &Transaction,
        s: &mut Session,
        entries: &[Entry],
        group: &[usize],
        seen: Option<&BTreeMap<i64, SeqSet>>,
    ) -> Result<JointWrite, Error> {
        self.joint = Some(Vec::new());
        let mut written = Vec::new();
        let mut failed = HashSet::new();
        let mut write = |ap: &mut Applier| -> Result<(), Error> {
            for &i in group {
                ap.current = i;
                match apply(tx, s, ap, &entries[i].change, entries[i].seen(seen))? {
                    Applied::Merged(verdict) => written.push((i, verdict)),
                    Applied::Refused(_) => {
                        failed.insert(i);
                    }
                }
            }
            Ok(())
        };
        let wrote = write(self);
        // Out of the joint pass however the writes ended.
        let checks = self.joint.take().unwrap_or_default();
        wrote?;
        failed.extend(run_post_checks(tx, &self.fks, &s.catalog, &checks)?);
        Ok(JointWrite { written, failed })
    }

    /// The changes of a joint pass fit: count them, release their entries
    /// and take them from those still waiting.
    fn accept(
        &mut self,
        conn: &Connection,
        s: &Session,
        entries: &mut Vec<Entry>,
        written: Vec<(usize, Verdict)>,
    ) -> Result<(), Error> {
        for &(i, verdict) in &written {
            self.applied_entry(conn, s, &entries[i], verdict)?;
        }
        let done: HashSet<usize> = written.iter().map(|(i, _)| *i).collect();
        let mut i = 0;
        entries.retain(|_| {
            let keep = !done.contains(&i);
            i += 1;
            keep
        });
        Ok(())
    }
}

/// `fieldsync_meta` keys: the last change number of this instance, and
/// the schema version, the quarantine was settled against.
const HELD_MARK: &str = "held_mark";
const HELD_SCHEMA: &str = "held_schema";

/// SQLite's counter of schema changes of the database.
fn schema_version(conn: &Connection) -> Result<i64, Error> {
    Ok(conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?)
}

/// True if no change the sender had seen made the row of `child` at `key`
/// what it is here (or the row has no identity here yet).
fn unseen_by_sender(
    conn: &Connection,
    sites: &Sites,
    seen: &BTreeMap<i64, SeqSet>,
    child: &TrackedTable,
    key: &[Value],
) -> Result<bool, Error> {
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
}
