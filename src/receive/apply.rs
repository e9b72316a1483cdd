//! Applying one received change: merge it into the row's state by the
//! rules of [`crate::merge`], note the values it overwrites
//! ([`crate::receive::conflicts`]), write the result to the app table
//! ([`crate::receive::write`]) and to the log. What the changes of one
//! import (or one retry) share is an [`Applier`] ([`crate::receive::applier`]);
//! the changes the database refuses are settled by [`crate::receive::settle`].
//!
//! spec/merge.md says what a row becomes; spec/quarantine.md what happens
//! when the database refuses it.

use std::collections::BTreeMap;

use rusqlite::{Connection, Transaction};

use crate::base::hlc::{Hlc, now_unix_ms};
use crate::base::merge::{RowAction, RowState, Verdict};
use crate::base::seqset::SeqSet;
use crate::base::value::key_literal;
use crate::catalog::savepoint::Savepoint;
use crate::catalog::session::Session;
use crate::error::{Error, ImportError};
use crate::local::log::{load_row, save_row};
use crate::receive::applier::Applier;
use crate::receive::conflicts::MergedRow;
use crate::receive::quarantine::{Change, Reason, Refusal};
use crate::receive::write::{Written, malformed, write_row};

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
    // A change a revoked instance made after what it kept is not taken,
    // whoever relays it (spec/trust.md, "Revocation").
    if let Some(v) = c.versions.iter().find(|v| {
        ap.revoked
            .get(&v.site)
            .is_some_and(|(keep, ..)| v.seq > *keep)
    }) {
        if let Some((keep, name, at)) = ap.revoked.get(&v.site) {
            return Ok(Applied::Refused(Refusal {
                reason: Reason::Revoked,
                detail: format!(
                    "change {} of '{name}', revoked on {} after its change {keep}: \
                     discard it with `fieldsync conflicts --db {} --discard ID` unless HQ says it is genuine",
                    v.seq,
                    chrono::DateTime::from_timestamp_millis(*at).map_or_else(
                        || at.to_string(),
                        |t| t.format("%Y-%m-%d %H:%M UTC").to_string()
                    ),
                    crate::catalog::store::db_arg(tx)
                ),
            }));
        }
    }
    // A stamp beyond the clock bound neither wins a merge nor moves the
    // clock: the change waits, whole (spec/trust.md, "The clock bound").
    let newest = c.versions.iter().map(|v| v.hlc).max().unwrap_or_default();
    if ap.future_limit.is_some_and(|limit| newest > limit) {
        return Ok(Applied::Refused(from_the_future(tx, newest, ap.now_ms)));
    }
    let applied = apply_now(tx, s, ap, c, seen)?;
    if let Applied::Merged(_) = applied {
        ap.applied_max = ap.applied_max.max(newest);
    }
    Ok(applied)
}

/// The refusal of a change stamped `newest`, beyond the clock bound.
fn from_the_future(tx: &Transaction, newest: Hlc, now_ms: i64) -> Refusal {
    Refusal {
        reason: Reason::Future,
        detail: format!(
            "stamped {newest}, {} ahead of this computer's clock; applied once the clock gets there \
             (check the date on the instance that made it), or now with `fieldsync conflicts --db {} --apply ID`",
            crate::base::hlc::span(newest.unix_ms() - now_ms),
            crate::catalog::store::db_arg(tx)
        ),
    }
}

/// [`apply`] within the clock bound.
fn apply_now(
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
    if merged.verdict == Verdict::Applied && ap.notes_touched() {
        // Held changes waiting for this row are retried (settle.rs).
        ap.touched.push((c.table, c.pk.clone()));
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
    use crate::base::colset::{ColSet, SENTINEL};
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
