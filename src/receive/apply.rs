//! Applying one received change: merge it into the row's state by the
//! rules of [`crate::merge`], note the values it overwrites
//! ([`crate::receive::conflicts`]), write the result to the app table
//! ([`crate::receive::write`]) and to the log. What the changes of one
//! import (or one retry) share is an [`Applier`]; the changes the database
//! refuses are settled by [`crate::receive::settle`].
//!
//! spec/merge.md says what a row becomes; spec/quarantine.md what happens
//! when the database refuses it.

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::{Connection, Transaction};

use crate::base::colset::ColSet;
use crate::base::hlc::now_unix_ms;
use crate::base::merge::{RowAction, RowState, Verdict};
use crate::base::seqset::SeqSet;
use crate::base::value::key_literal;
use crate::catalog::foreign::ForeignKeys;
use crate::catalog::peers::have_all;
use crate::catalog::session::Session;
use crate::error::{Error, ImportError};
use crate::local::log::{load_row, save_row};
use crate::receive::conflicts::MergedRow;
use crate::receive::quarantine::{Change, Refusal};
use crate::receive::savepoint::Savepoint;
use crate::receive::write::{PostCheck, Written, malformed, write_row};

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
    pub(super) fks: ForeignKeys,
    /// Per catalog table, its non-key columns that children point at.
    pub(super) referenced: Vec<Vec<String>>,
    /// Per catalog table: SQLite numbers a new row's local key itself (a
    /// rowid), so an insert leaves it out.
    pub(super) local_auto: Vec<bool>,
    pub(super) sql_cache: HashMap<(i64, ColSet, bool), String>,
    /// What this instance had before, to tell a change never received from
    /// one it already merged.
    pub(super) have_before: BTreeMap<i64, SeqSet>,
    pub(super) sender: String,
    pub(super) now_ms: i64,
    /// Per catalog table.
    pub(super) counts: Vec<TableImport>,
    /// Quarantine entries written while reading the bundle, and whether
    /// each was new (rather than joined to an older entry).
    pub(super) spilled: HashMap<i64, bool>,
    /// Rows that had a held change when the import began.
    held_rows: HashSet<(usize, Vec<u8>)>,
    /// Held changes from earlier imports applied now, and their numbers.
    pub(super) released: u64,
    pub(super) released_numbers: BTreeMap<i64, SeqSet>,
    /// Values added to the conflict log.
    pub(super) overwritten: u64,
    /// In a joint pass: the checks to make once every change is written,
    /// each with the entry it belongs to.
    pub(super) joint: Option<Vec<(usize, PostCheck)>>,
    /// The entry being applied in a joint pass.
    pub(super) current: usize,
}

impl Applier {
    pub fn new(conn: &Connection, s: &Session, sender: &str) -> Result<Applier, Error> {
        let tables = s.catalog.tables();
        let fks = ForeignKeys::load(conn, tables)?;
        let referenced = tables.iter().map(|t| fks.referenced_columns(t)).collect();
        let local_auto = tables
            .iter()
            .map(|t| crate::catalog::identity::local_is_rowid(conn, t))
            .collect::<Result<_, _>>()?;
        Ok(Applier {
            fks,
            referenced,
            local_auto,
            sql_cache: HashMap::new(),
            have_before: have_all(conn, s)?,
            sender: sender.to_owned(),
            now_ms: now_unix_ms(),
            counts: tables
                .iter()
                .map(|t| TableImport {
                    table: t.name.clone(),
                    ..TableImport::default()
                })
                .collect(),
            spilled: HashMap::new(),
            held_rows: held_rows(conn, s)?,
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
}

/// The rows, by catalog table, that have a change in quarantine.
fn held_rows(conn: &Connection, s: &Session) -> Result<HashSet<(usize, Vec<u8>)>, Error> {
    let mut held = HashSet::new();
    let mut stmt = conn.prepare("SELECT tbl, pk FROM fieldsync_quarantine")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let tbl: String = r.get(0)?;
        if let Some(i) = s.catalog.tables().iter().position(|t| t.name == tbl) {
            held.insert((i, r.get::<_, Vec<u8>>(1)?));
        }
    }
    Ok(held)
}

/// What became of one change.
pub(crate) enum Applied {
    /// Merged into its row; the verdict says whether it changed the row.
    Merged(Verdict),
    /// Refused by the database, with nothing of it left behind.
    Refused(Refusal),
}

/// One attempt at merging a change into a state of its row.
enum Attempt {
    /// The change is merged, or refused.
    Done(Applied),
    /// The log knows the row as live but the table does not have it;
    /// nothing was written.
    Vanished,
}

/// Merge one change into its row and write the result to the app table and
/// the log. A refusal leaves nothing of the change behind; an error fails
/// the caller's transaction. `seen` is the sender's seen-vector (none when
/// it does not apply), used to tell concurrent edits from normal ones for
/// the conflict log.
pub(crate) fn apply(
    tx: &Transaction,
    s: &mut Session,
    ap: &mut Applier,
    c: &Change,
    seen: Option<&BTreeMap<i64, SeqSet>>,
) -> Result<Applied, Error> {
    let tbl = s.catalog.tables()[c.table].id;
    let before = load_row(tx, &s.sites, tbl, &c.pk)?;
    if let Attempt::Done(applied) = merge_into(tx, s, ap, c, &before, seen)? {
        return Ok(applied);
    }
    // The log has the row but the table does not: it was deleted without a
    // trigger (`INSERT OR REPLACE` on its rowid or a secondary UNIQUE key)
    // and no vanished-row check has run yet. Record that delete now, as
    // that check would have, and merge the change against it: a concurrent
    // update loses to it, instead of re-creating the row with only its
    // cells.
    let hlc = s.clock.stamp(now_unix_ms())?;
    let seq = s.next_seq()?;
    let mut deleted = before.clone();
    deleted.local_delete(s.local, seq, hlc);
    save_row(tx, &s.sites, tbl, &c.pk, &before, &deleted)?;
    match merge_into(tx, s, ap, c, &deleted, seen)? {
        Attempt::Done(applied) => Ok(applied),
        Attempt::Vanished => Err(malformed(format!(
            "row {} of table '{}' vanished while it was written",
            key_literal(&c.key),
            s.catalog.tables()[c.table].name
        ))),
    }
}

/// Merge `c` into `before`, the row's state in the log, and write the
/// result. When the table takes part in a foreign key the write goes in a
/// savepoint: the row's references are checked once it is written, and a
/// refusal then must undo it. (Any other write is refused by its one
/// statement, which SQLite undoes itself.)
fn merge_into(
    tx: &Transaction,
    s: &Session,
    ap: &mut Applier,
    c: &Change,
    before: &RowState,
    seen: Option<&BTreeMap<i64, SeqSet>>,
) -> Result<Attempt, Error> {
    let table = &s.catalog.tables()[c.table];
    let mut after = before.clone();
    let merged = after
        .merge(c.cl, &c.versions)
        .map_err(|e| ImportError::SequenceReused {
            origin: s.sites.name_of(&e.site),
            seq: e.seq,
        })?;
    let row = MergedRow {
        table,
        c,
        before,
        after: &after,
        have_before: &ap.have_before,
        seen,
    };
    let losses = crate::receive::conflicts::losses(tx, s, &row, ap.now_ms)?;
    let guard = if merged.action != RowAction::None && ap.fks.involves(&table.name) {
        Some(Savepoint::open(tx, "fieldsync_change")?)
    } else {
        None
    };
    let undone = match write_row(tx, ap, &s.catalog, c, before, &after, &merged.action)? {
        Written::Done => None,
        Written::Refused(refusal) => Some(Attempt::Done(Applied::Refused(refusal))),
        Written::Vanished => Some(Attempt::Vanished),
    };
    if let Some(attempt) = undone {
        // Rolled back here rather than on drop, so a failure to undo fails
        // the import instead of leaving part of the change to be committed.
        if let Some(guard) = guard {
            guard.rollback()?;
        }
        return Ok(attempt);
    }
    save_row(tx, &s.sites, table.id, &c.pk, before, &after)
        .map_err(|e| reused_number(tx, s, c, e))?;
    if let Some(guard) = guard {
        guard.commit()?;
    }
    if !losses.is_empty() {
        crate::receive::conflicts::record(tx, &losses)?;
        ap.overwritten += losses.len() as u64;
    }
    Ok(Attempt::Done(Applied::Merged(merged.verdict)))
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

#[cfg(test)]
mod tests {
    use rusqlite::config::DbConfig;

    use super::*;
    use crate::base::colset::SENTINEL;
    use crate::base::hlc::Hlc;
    use crate::base::merge::Version;
    use crate::base::site_id::SiteId;
    use crate::base::value::{Value, encode_key};

    /// A new row of `shelter`, made by `origin` as its change number 1.
    fn shelter(s: &Session, origin: SiteId, id: &str, name: &str) -> Change {
        let key = vec![Value::Text(id.into())];
        let table = s.catalog.tables().iter().position(|t| t.name == "shelter");
        Change {
            table: table.unwrap_or_default(),
            pk: encode_key(&key),
            key,
            cl: 1,
            versions: vec![Version {
                site: origin,
                seq: 1,
                hlc: Hlc::from_unix_ms(1_700_000_000_000),
                cols: ColSet::of(&[SENTINEL, 1]),
            }],
            values: vec![(1, Value::Text(name.into()))],
            refs: Vec::new(),
        }
    }

    /// Caught: an error after a change's row was written in its savepoint
    /// (here the log refusing a change number already used for another
    /// row: the origin was restored from an old backup) returned with the
    /// savepoint still open, so whatever then committed the transaction
    /// committed the row without its log entry. The savepoint is rolled back
    /// and closed, and the transaction commits only what was merged.
    #[test]
    fn an_error_while_writing_a_row_leaves_no_savepoint_open()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (mut db, _) = crate::Instance::init(dir.path().join("hq.db"), "hq")?;
        db.connection().execute_batch(
            "CREATE TABLE shelter(id TEXT PRIMARY KEY, name TEXT);
             CREATE TABLE person(id TEXT PRIMARY KEY, shelter TEXT REFERENCES shelter(id));",
        )?;
        db.track(&crate::Selection::All)?;
        // The connection as an import sets it up.
        let conn = db.connection();
        conn.execute_batch("PRAGMA foreign_keys = OFF")?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)?;

        let tx = conn.unchecked_transaction()?;
        let mut s = Session::load(&tx)?;
        let origin = SiteId::random();
        s.sites.intern(&tx, origin, "field-1")?;
        let mut ap = Applier::new(&tx, &s, "field-1")?;
        let first = shelter(&s, origin, "s-1", "Hall");
        let reused = shelter(&s, origin, "s-2", "School");
        assert!(matches!(
            apply(&tx, &mut s, &mut ap, &first, None)?,
            Applied::Merged(Verdict::Applied)
        ));
        let failed = apply(&tx, &mut s, &mut ap, &reused, None);
        assert!(
            matches!(
                failed,
                Err(Error::Import(ImportError::SequenceReused { seq: 1, .. }))
            ),
            "{:?}",
            failed.err()
        );
        assert!(
            tx.execute_batch("RELEASE fieldsync_change").is_err(),
            "the change's savepoint is still open"
        );
        tx.commit()?;
        let ids: Vec<String> = conn
            .prepare("SELECT id FROM shelter ORDER BY id")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        assert_eq!(ids, ["s-1"]);
        Ok(())
    }
}
