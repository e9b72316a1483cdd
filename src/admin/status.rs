//! `status`: what an instance is, what it tracks, what it has from whom, and
//! what each peer is still owed. Read-only: nothing is stamped or written.

use std::collections::BTreeMap;

use rusqlite::{Connection, Transaction};
use serde::Serialize;

use crate::base::seqset::SeqSet;
use crate::catalog::peers::{Peer, have_all, known_all, list_peers, missing, peer_seqs, wanted_by};
use crate::catalog::session::Session;
use crate::error::Error;
use crate::local::capture::pending_count;

/// One tracked table.
#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    /// Table name.
    #[serde(rename = "table")]
    pub name: String,
    /// Rows the change log knows as existing.
    pub rows: u64,
    /// Deleted rows it keeps tombstones for.
    pub tombstones: u64,
    /// Its schema version here (spec/schema.md).
    pub version: Option<String>,
    /// Peers whose version of it differs, with their version.
    pub peers_differ: BTreeMap<String, String>,
}

/// One origin this instance has changes from.
#[derive(Debug, Clone, Serialize)]
pub struct OriginStatus {
    /// Its name.
    #[serde(rename = "instance")]
    pub name: String,
    /// Its site id.
    #[serde(rename = "site")]
    pub site_id: String,
    /// Change numbers held, e.g. `1-500`.
    pub have: String,
    /// Missing numbers: known to exist (a peer said it has them) or below
    /// the highest received, and not received (a lost, skipped or
    /// overwritten bundle). This instance's bundles report them, so they
    /// come again.
    pub gaps: String,
    /// Numbers received but held in quarantine, not applied yet.
    pub quarantined: String,
}

/// One peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// Its name.
    #[serde(rename = "instance")]
    pub name: String,
    /// Its site id, once known.
    #[serde(rename = "site")]
    pub site_id: Option<String>,
    /// Per origin name, what it acknowledged.
    pub acked: BTreeMap<String, String>,
    /// Changes a `export --to` would ship now.
    pub pending_changes: u64,
    /// Changes sent, not yet acknowledged and not reported missing: in
    /// transit (a `--resend` ships them again, for when nothing comes back).
    pub unacknowledged: u64,
    /// Last import from it (unix ms).
    #[serde(rename = "last_import_at", serialize_with = "crate::json::opt_time")]
    pub last_import: Option<i64>,
    /// Last export to it (unix ms).
    #[serde(rename = "last_export_at", serialize_with = "crate::json::opt_time")]
    pub last_export: Option<i64>,
}

/// The whole status.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// This instance's name.
    #[serde(rename = "instance")]
    pub name: String,
    /// Its site id.
    #[serde(rename = "site")]
    pub site_id: String,
    /// Names of tracked tables.
    pub tracked_tables: Vec<String>,
    /// Per tracked table.
    pub tables: Vec<TableStatus>,
    /// Captured local changes not yet folded into the log.
    pub captured_unstamped: u64,
    /// Changes this instance has numbered so far.
    pub local_seq: u64,
    /// Entries in the change log.
    pub log_entries: u64,
    /// Origins with their coverage and gaps.
    pub origins: Vec<OriginStatus>,
    /// Peers.
    pub peers: Vec<PeerStatus>,
    /// Changes received but held in quarantine (`fieldsync conflicts`).
    pub quarantined: u64,
    /// Values recorded as overwritten by concurrent edits.
    pub overwritten: u64,
    /// An import stopped between two of its write transactions (a crash, a
    /// kill, an error): what it applied is kept, and importing its bundle
    /// again finishes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted_import: Option<InterruptedImport>,
    /// Values received for a column or table this database does not have
    /// yet, per table and column (spec/schema.md).
    pub waiting: Vec<crate::receive::waiting::WaitingSummary>,
    /// Schema changes received and held or failed (`fieldsync schema`).
    pub schema_held: u64,
    /// What this database does with schema changes received in bundles.
    pub schema_mode: crate::receive::schema_changes::SchemaMode,
    /// The clock against the wall clock and the peers' clocks, with its
    /// warnings (spec/trust.md, "The clock bound").
    pub clock: crate::admin::clock::ClockStatus,
    /// A content hash per tracked table, to compare with another instance's
    /// (`fieldsync fingerprint`). Always there in
    /// [`Instance::status`](crate::Instance::status); the console's pages,
    /// which do not show it, skip reading every row for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprints: Option<crate::admin::fingerprint::Fingerprints>,
}

/// An import that stopped between two of its write transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterruptedImport {
    /// The bundle's sender.
    #[serde(rename = "sender_instance")]
    pub from: String,
    /// Records it had merged.
    pub applied: u64,
}

fn interrupted_import(conn: &Connection) -> Result<Option<InterruptedImport>, Error> {
    Ok(crate::receive::import::interrupted(conn)?
        .into_iter()
        .next()
        .map(|(from, applied)| InterruptedImport { from, applied }))
}

fn count_in(conn: &Connection, origin: i64, set: &SeqSet) -> Result<u64, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT count(*) FROM fieldsync_log WHERE origin = ?1 AND seq BETWEEN ?2 AND ?3",
    )?;
    let mut n = 0u64;
    for &(a, b) in set.ranges() {
        n += stmt.query_row(
            rusqlite::params![
                origin,
                a.min(i64::MAX as u64) as i64,
                b.min(i64::MAX as u64) as i64
            ],
            |r| r.get::<_, i64>(0),
        )? as u64;
    }
    Ok(n)
}

/// Gather the status. Reads only, in one transaction so the parts agree.
/// The status; with `fingerprints`, each table's content hash too (which
/// reads every tracked row).
pub(crate) fn status(
    tx: &Transaction<'_>,
    s: &Session,
    fingerprints: bool,
) -> Result<Status, Error> {
    let captured = pending_count(tx)?;
    let peers = list_peers(tx)?
        .iter()
        .map(|p| peer_status(tx, s, p, captured))
        .collect::<Result<_, Error>>()?;
    Ok(Status {
        site_id: s.local.to_string(),
        name: s.name.clone(),
        tracked_tables: s.catalog.tables().iter().map(|t| t.name.clone()).collect(),
        tables: with_versions(table_statuses(tx, s)?, tx, s)?,
        captured_unstamped: captured,
        local_seq: s.seq,
        log_entries: crate::local::log::entry_count(tx)?,
        origins: origin_statuses(tx, s)?,
        peers,
        quarantined: crate::receive::quarantine::held_count(tx)?,
        overwritten: tx.query_row("SELECT count(*) FROM fieldsync_conflicts", [], |r| {
            r.get::<_, i64>(0)
        })? as u64,
        interrupted_import: interrupted_import(tx)?,
        waiting: crate::receive::waiting::summary(tx)?,
        schema_held: crate::receive::schema_changes::held_count(tx)?,
        schema_mode: crate::receive::schema_changes::mode(tx)?,
        clock: crate::admin::clock::clock_status(tx)?,
        fingerprints: if fingerprints {
            Some(crate::admin::fingerprint::fingerprints(tx, s, &[])?)
        } else {
            None
        },
    })
}

/// Each table's schema version, and the peers whose version differs.
fn with_versions(
    mut tables: Vec<TableStatus>,
    conn: &Connection,
    s: &Session,
) -> Result<Vec<TableStatus>, Error> {
    for (t, schema) in tables
        .iter_mut()
        .zip(crate::admin::schema::table_schemas(conn, s)?)
    {
        t.peers_differ = (schema.peers.into_iter())
            .filter(|p| Some(&p.version) != schema.version.as_ref())
            .map(|p| (p.peer, p.version))
            .collect();
        t.version = schema.version;
    }
    Ok(tables)
}

/// Live rows and tombstones of each tracked table, as the log knows them.
fn table_statuses(conn: &Connection, s: &Session) -> Result<Vec<TableStatus>, Error> {
    // Per table id: (live rows, tombstones).
    let mut counts: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    let mut stmt = conn.prepare(
        "SELECT tbl, sum(cl % 2 = 1), sum(cl % 2 = 0) FROM (SELECT DISTINCT tbl, pk, cl FROM fieldsync_log) GROUP BY tbl",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (t, live, dead) = row?;
        counts.insert(t, (live as u64, dead as u64));
    }
    Ok(s.catalog
        .tables()
        .iter()
        .map(|t| {
            let (rows, tombstones) = counts.get(&t.id).copied().unwrap_or((0, 0));
            TableStatus {
                name: t.name.clone(),
                rows,
                tombstones,
                version: None,
                peers_differ: BTreeMap::new(),
            }
        })
        .collect())
}

/// What this instance has from each known origin, with what it is missing
/// (holes below the highest number received, and numbers a peer said it
/// has above them) and what waits in quarantine.
fn origin_statuses(conn: &Connection, s: &Session) -> Result<Vec<OriginStatus>, Error> {
    let mut have = have_all(conn, s)?;
    let held = crate::receive::waiting::not_received(conn, &s.sites)?;
    let known = known_all(conn)?;
    for origin in known.keys().chain(held.keys()) {
        have.entry(*origin).or_default();
    }
    let mut received = have.clone();
    for (origin, set) in &held {
        received.entry(*origin).or_default().union_with(set);
    }
    let missing = missing(s, &known, &received);
    Ok(have
        .iter()
        .filter_map(|(&idx, set)| {
            let site = s.sites.get(idx)?;
            let quarantined = held.get(&idx).cloned().unwrap_or_default();
            let mut gaps = missing.get(&idx).cloned().unwrap_or_default();
            if idx == s.local_idx {
                // Our own changes lost in a restore, above what we hold too.
                gaps.union_with(&s.lost);
            }
            Some(OriginStatus {
                name: site.name.clone(),
                site_id: site.id.to_string(),
                have: set.to_string(),
                gaps: gaps.to_string(),
                quarantined: quarantined.to_string(),
            })
        })
        .collect())
}

/// What a peer acknowledged and is still owed; `captured` local changes
/// not yet stamped count as owed to every peer.
fn peer_status(
    conn: &Connection,
    s: &Session,
    p: &Peer,
    captured: u64,
) -> Result<PeerStatus, Error> {
    let seqs = peer_seqs(conn, p.id)?;
    let want = wanted_by(conn, s, p, false)?;
    let all_unacked = wanted_by(conn, s, p, true)?;
    let mut pending = captured;
    for (origin, set) in &want {
        pending += count_in(conn, *origin, set)?;
    }
    let mut unacknowledged = 0;
    for (origin, set) in &all_unacked {
        let sent_only = set.minus(want.get(origin).unwrap_or(&SeqSet::new()));
        unacknowledged += count_in(conn, *origin, &sent_only)?;
    }
    let (last_import, last_export) = conn.query_row(
        "SELECT last_import, last_export FROM fieldsync_peers WHERE id = ?1",
        [p.id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(PeerStatus {
        name: p.name.clone(),
        site_id: p
            .site
            .and_then(|i| s.sites.get(i))
            .map(|site| site.id.to_string()),
        acked: seqs
            .iter()
            .filter(|(_, v)| !v.acked.is_empty())
            .map(|(o, v)| (s.sites.label(*o), v.acked.to_string()))
            .collect(),
        pending_changes: pending,
        unacknowledged,
        last_import,
        last_export,
    })
}
