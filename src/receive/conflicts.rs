//! The conflict log: values that lost a last-writer-wins merge on import,
//! kept so an operator can see what was overwritten, and the listing that
//! `fieldsync conflicts` prints (these plus the quarantine).
//!
//! A value is logged when two changes made *without knowledge of each
//! other* competed for one cell and the value differs from the winner's:
//!
//! - an incoming change takes a cell from a change held here that the
//!   bundle's sender had not seen (its seen-vector lacks it), so the sender
//!   edited the cell concurrently: the value that was here is logged;
//! - an incoming change this instance had never received loses a cell to a
//!   change held here: its value is logged;
//! - a delete (or re-insert) wins over concurrent edits of the row, or a
//!   late edit arrives for a row deleted here: the edited values are logged.
//!
//! Merging does not wait for anyone: the winner is applied as spec/merge.md
//! says, and the log only records. An edit overwritten by an instance that
//! had seen it is a normal update and is not logged. When bundles travel by
//! different routes, a value can be logged that its overwriter had in fact
//! seen (it reached this instance late); the log errs on the side of showing.

use std::collections::BTreeMap;

use rusqlite::{Connection, params, params_from_iter};
use serde::Serialize;

use crate::base::colset::SENTINEL;
use crate::base::hlc::Hlc;
use crate::base::merge::{RowState, Version};
use crate::base::seqset::SeqSet;
use crate::base::value::{Value, key_literal};
use crate::catalog::session::Session;
use crate::catalog::tracked::TrackedTable;
use crate::error::Error;
use crate::receive::quarantine::Change;

/// One overwritten value, as written to `fieldsync_conflicts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overwritten {
    /// The table.
    pub table: String,
    /// The row's key, as SQL literals (text output; JSON has `key_json`).
    #[serde(skip)]
    pub key: String,
    /// The row's key as JSON (spec/json.md, "Keys"): in JSON, `key`.
    #[serde(rename = "key")]
    pub key_json: serde_json::Value,
    /// The column, or empty for the row as a whole.
    pub column: String,
    /// The value that lost.
    #[serde(serialize_with = "crate::json::value")]
    pub lost_value: Value,
    /// The instance that wrote it.
    #[serde(rename = "loser_instance")]
    pub lost_site: String,
    /// When it was written (unix ms, from its clock).
    #[serde(rename = "lost_at", serialize_with = "crate::json::time")]
    pub lost_at_ms: i64,
    /// The value that won (NULL when the row was deleted).
    #[serde(serialize_with = "crate::json::value")]
    pub won_value: Value,
    /// The instance that wrote the winner.
    #[serde(rename = "winner_instance")]
    pub won_site: String,
    /// When the winner was written (unix ms).
    #[serde(rename = "won_at", serialize_with = "crate::json::time")]
    pub won_at_ms: i64,
    /// `later edit`, `row deleted`, `row re-created`.
    pub reason: String,
    /// When this instance noticed (unix ms).
    #[serde(rename = "noticed_at", serialize_with = "crate::json::time")]
    pub noticed_ms: i64,
}

impl Overwritten {
    /// Build one entry; times come from the versions' clocks.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        table: &str,
        key: String,
        column: &str,
        lost: (Value, String, Hlc),
        won: (Value, String, Hlc),
        reason: &str,
        noticed_ms: i64,
    ) -> Overwritten {
        Overwritten {
            table: table.to_owned(),
            key,
            key_json: serde_json::Value::Null,
            column: column.to_owned(),
            lost_value: lost.0,
            lost_site: lost.1,
            lost_at_ms: lost.2.unix_ms(),
            won_value: won.0,
            won_site: won.1,
            won_at_ms: won.2.unix_ms(),
            reason: reason.to_owned(),
            noticed_ms,
        }
    }
}

/// Append entries to the log.
pub(crate) fn record(conn: &Connection, entries: &[Overwritten]) -> Result<(), Error> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO fieldsync_conflicts(noticed_at, tbl, key, col, lost_value, lost_site, lost_at, \
         won_value, won_site, won_at, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for e in entries {
        stmt.execute(params![
            e.noticed_ms,
            e.table,
            e.key,
            e.column,
            e.lost_value,
            e.lost_site,
            e.lost_at_ms,
            e.won_value,
            e.won_site,
            e.won_at_ms,
            e.reason
        ])?;
    }
    Ok(())
}

/// One held change, as `fieldsync conflicts` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct HeldChange {
    /// `fieldsync_quarantine.id`.
    pub id: i64,
    /// The table.
    pub table: String,
    /// The row's key, as SQL literals (text output; JSON has `key_json`).
    #[serde(skip)]
    pub key: String,
    /// The row's key as JSON (spec/json.md, "Keys"): in JSON, `key`.
    #[serde(rename = "key")]
    pub key_json: serde_json::Value,
    /// Short reason: `missing parent`, `unique`, `not null`, …
    pub reason: String,
    /// What exactly.
    pub detail: String,
    /// The instance whose bundle brought it.
    #[serde(rename = "sender_instance")]
    pub sender: String,
    /// First refused (unix ms).
    #[serde(rename = "first_at", serialize_with = "crate::json::time")]
    pub first_ms: i64,
    /// Last tried (unix ms).
    #[serde(rename = "last_at", serialize_with = "crate::json::time")]
    pub last_ms: i64,
    /// Times tried.
    pub tries: i64,
}

/// What `fieldsync conflicts` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Conflicts {
    /// Changes received but not applied yet.
    pub quarantined: Vec<HeldChange>,
    /// Values that lost a merge, newest first.
    pub overwritten: Vec<Overwritten>,
    /// Overwritten values recorded in all (the list may be cut).
    pub overwritten_total: u64,
    /// Held changes the operator discarded, newest first.
    pub discarded: Vec<crate::receive::quarantine::DiscardedChange>,
    /// Schema changes received and held, or that failed here
    /// (spec/schema.md): `fieldsync schema --apply` runs them.
    pub schema: Vec<crate::receive::schema_changes::HeldSchema>,
    /// Values waiting for a column or table, per table and column.
    pub waiting: Vec<crate::receive::waiting::WaitingSummary>,
    /// Bundles imports refused, newest first (the journal of refused
    /// bundles, spec/trust.md; at most as many as overwritten values shown).
    pub refused: Vec<crate::catalog::refused::RefusedBundle>,
    /// Refused bundles in the journal in all (the list may be cut).
    pub refused_total: u64,
}

/// Read the quarantine and the newest `limit` overwritten values.
pub fn list(conn: &Connection, limit: u64) -> Result<Conflicts, Error> {
    let columns = Session::load(conn)?.catalog.key_columns();
    let mut stmt = conn.prepare(
        "SELECT id, tbl, key, reason, detail, sender, first_at, last_at, tries \
         FROM fieldsync_quarantine ORDER BY id",
    )?;
    let quarantined = stmt
        .query_map([], |r| {
            Ok(HeldChange {
                id: r.get(0)?,
                table: r.get(1)?,
                key: r.get(2)?,
                key_json: serde_json::Value::Null,
                reason: r.get(3)?,
                detail: r.get(4)?,
                sender: r.get(5)?,
                first_ms: r.get(6)?,
                last_ms: r.get(7)?,
                tries: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stmt = conn.prepare(
        "SELECT tbl, key, col, lost_value, lost_site, lost_at, won_value, won_site, won_at, reason, noticed_at \
         FROM fieldsync_conflicts ORDER BY id DESC LIMIT ?1",
    )?;
    let overwritten = stmt
        .query_map([limit as i64], |r| {
            Ok(Overwritten {
                table: r.get(0)?,
                key: r.get(1)?,
                key_json: serde_json::Value::Null,
                column: r.get(2)?,
                lost_value: r.get(3)?,
                lost_site: r.get(4)?,
                lost_at_ms: r.get(5)?,
                won_value: r.get(6)?,
                won_site: r.get(7)?,
                won_at_ms: r.get(8)?,
                reason: r.get(9)?,
                noticed_ms: r.get(10)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut quarantined = quarantined;
    for q in &mut quarantined {
        q.key_json = crate::json::row_key(&columns, &q.table, &q.key);
    }
    let mut overwritten = overwritten;
    for o in &mut overwritten {
        o.key_json = crate::json::row_key(&columns, &o.table, &o.key);
    }
    let mut discarded = crate::receive::quarantine::discarded(conn)?;
    for d in &mut discarded {
        d.key_json = crate::json::row_key(&columns, &d.table, &d.key);
    }
    let overwritten_total: i64 =
        conn.query_row("SELECT count(*) FROM fieldsync_conflicts", [], |r| r.get(0))?;
    Ok(Conflicts {
        quarantined,
        overwritten,
        overwritten_total: overwritten_total as u64,
        discarded,
        schema: crate::receive::schema_changes::held(conn)?
            .into_iter()
            .filter(|h| h.status == "held" || h.status == "failed")
            .collect(),
        waiting: crate::receive::waiting::summary(conn)?,
        refused: crate::catalog::refused::list(conn, limit)?,
        refused_total: crate::catalog::refused::count(conn)?,
    })
}

/// A change merged into its row, as the conflict log looks at it.
pub(crate) struct MergedRow<'a> {
    pub table: &'a TrackedTable,
    pub c: &'a Change,
    /// The row's state in the log before the change.
    pub before: &'a RowState,
    /// And after it.
    pub after: &'a RowState,
    /// What this instance had received before the import.
    pub have_before: &'a BTreeMap<i64, SeqSet>,
    /// The sender's seen-vector, when it applies.
    pub seen: Option<&'a BTreeMap<i64, SeqSet>>,
}

/// A cell two changes competed for: its bit, the loser, the winner, and
/// whether the loser is the incoming change.
type Case<'v> = (usize, &'v Version, &'v Version, bool);

/// The values a merge overwrites or rejects that a concurrent change wrote
/// (the rules in the module doc), read before the app row is written.
pub(crate) fn losses(
    conn: &Connection,
    s: &Session,
    m: &MergedRow<'_>,
    now_ms: i64,
) -> Result<Vec<Overwritten>, Error> {
    let (reason, cases) = m.cases(s);
    if cases.is_empty() {
        return Ok(Vec::new());
    }
    let (c, before, table) = (m.c, m.before, m.table);
    let here = m.row_here(conn)?;
    let here_value = |bit: usize| {
        here.as_ref()
            .and_then(|row| row.get(bit - 1).cloned())
            .unwrap_or(Value::Null)
    };
    // A reference shows what it points at, not its tagged form.
    let incoming_value = |bit: usize| {
        c.value(bit)
            .map(crate::catalog::refs::shown)
            .unwrap_or(Value::Null)
    };
    let deleted_wins = reason == "row deleted" && c.cl > before.cl;
    let key = key_literal(&c.key);
    let mut out = Vec::new();
    for (bit, loser, winner, incoming_lost) in cases {
        // An instance's later edit always knew its earlier one.
        if loser.site == winner.site {
            continue;
        }
        let (lost, won) = if incoming_lost {
            let won = if before.is_live() {
                here_value(bit)
            } else {
                Value::Null
            };
            (incoming_value(bit), won)
        } else if deleted_wins {
            (here_value(bit), Value::Null)
        } else {
            (here_value(bit), incoming_value(bit))
        };
        // Nothing was lost if the winner holds the same value.
        if lost == won {
            continue;
        }
        out.push(Overwritten::new(
            &table.name,
            key.clone(),
            table.cells.get(bit - 1).map(String::as_str).unwrap_or(""),
            (lost, s.sites.name_of(&loser.site), loser.hlc),
            (won, s.sites.name_of(&winner.site), winner.hlc),
            reason,
            now_ms,
        ));
    }
    Ok(out)
}

impl<'a> MergedRow<'a> {
    /// A change this instance had neither made nor received before.
    fn new_here(&self, s: &Session, v: &Version) -> bool {
        v.site != s.local
            && !s
                .sites
                .idx_of(&v.site)
                .and_then(|i| self.have_before.get(&i))
                .is_some_and(|set| set.contains(v.seq))
    }

    /// A change held here that the sender had not seen when it exported.
    fn unseen(&self, s: &Session, h: &Version) -> bool {
        match self.seen {
            None => true,
            Some(seen) => !s
                .sites
                .idx_of(&h.site)
                .and_then(|i| seen.get(&i))
                .is_some_and(|set| set.contains(h.seq)),
        }
    }

    /// The cells concurrent changes competed for, and the reason to log.
    fn cases(&self, s: &Session) -> (&'static str, Vec<Case<'a>>) {
        let (c, before) = (self.c, self.before);
        let mut cases = Vec::new();
        if c.cl < before.cl {
            // The row here was deleted or re-created since: the incoming
            // change's cells lose to that.
            if let Some(winner) = before.holder(SENTINEL) {
                for v in c.versions.iter().filter(|v| self.new_here(s, v)) {
                    for bit in v.cols.iter().filter(|&b| b != SENTINEL) {
                        cases.push((bit, v, winner, true));
                    }
                }
            }
            let reason = if before.is_live() {
                "row re-created"
            } else {
                "row deleted"
            };
            return (reason, cases);
        }
        if c.cl > before.cl {
            // The incoming change deletes or re-creates the row: edits here
            // the sender had not seen lose to it.
            if let (true, Some(winner)) = (
                before.is_live(),
                c.versions.iter().find(|v| v.cols.contains(SENTINEL)),
            ) {
                for h in before.versions.iter().filter(|h| self.unseen(s, h)) {
                    for bit in h.cols.iter().filter(|&b| b != SENTINEL) {
                        cases.push((bit, h, winner, false));
                    }
                }
            }
            let reason = if c.cl % 2 == 0 {
                "row deleted"
            } else {
                "row re-created"
            };
            return (reason, cases);
        }
        for v in &c.versions {
            for bit in v.cols.iter().filter(|&b| b != SENTINEL) {
                let (Some(was), Some(now)) = (before.holder(bit), self.after.holder(bit)) else {
                    continue;
                };
                if now.same_change(v) && !was.same_change(v) && self.unseen(s, was) {
                    cases.push((bit, was, v, false));
                } else if !now.same_change(v) && self.new_here(s, v) {
                    cases.push((bit, v, now, true));
                }
            }
        }
        ("later edit", cases)
    }

    /// The app row's values as they are before the change is written.
    fn row_here(&self, conn: &Connection) -> Result<Option<Vec<Value>>, Error> {
        let (table, c) = (self.table, self.c);
        if !self.before.is_live() {
            return Ok(None);
        }
        let Some(at) = crate::catalog::identity::locate(conn, table, &c.pk, &c.key)? else {
            return Ok(None);
        };
        let sql = table.select_cells_sql();
        Ok(conn
            .prepare_cached(&sql)?
            .query_row(params_from_iter(at.iter()), |r| {
                (0..table.cells.len())
                    .map(|i| r.get::<_, Value>(i))
                    .collect()
            })
            .ok())
    }
}
