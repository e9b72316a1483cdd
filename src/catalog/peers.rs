//! Watermarks: what this instance has from each origin, and per peer what
//! the peer acknowledged and what was already sent to it.
//!
//! All are [`SeqSet`]s per origin. "Have" grows when a bundle is imported
//! (its covered ranges). "Acked" is the seen-vector of the peer's newest
//! bundle: what it said it has. "Sent" grows when a bundle is exported to
//! the peer. "Lacks" is what the peer's newest bundle reported missing (its
//! `lacks`) among what was sent to it and not sent again since.
//! "Assumed" is what a full export named for the peer (`export --full
//! --for`) counts as sent to it until the peer's next bundle says what it
//! has.
//!
//! What is *known to exist* of an origin is what any peer said it has
//! (the union of their acked sets); what is *missing* here is what is known
//! to exist, or lies below the highest number received, and was not
//! received (spec/merge.md, "Watermarks"). An export to a peer ships, per
//! origin other than the peer itself, `have − acked − (sent − lacks − holes)`
//! (or `have − acked` with `--resend`): what was sent and may still be in
//! transit is not sent again, what the peer shows it lacks is.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::base::seqset::SeqSet;
use crate::base::site_id::SiteId;
use crate::catalog::session::Session;
use crate::catalog::site::check_name;
use crate::catalog::store::parse_set;
use crate::error::{Error, ExportError};

/// A peer: an instance bundles are exported to or imported from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// `fieldsync_peers.id`.
    pub id: i64,
    /// The name it goes by.
    pub name: String,
    /// Its local site number, once a bundle from it (or relayed about it)
    /// told us its site id.
    pub site: Option<i64>,
}

/// What this instance has from every origin, its own changes included.
pub fn have_all(conn: &Connection, s: &Session) -> Result<BTreeMap<i64, SeqSet>, Error> {
    let mut out = BTreeMap::new();
    let mut stmt = conn.prepare_cached("SELECT origin, seqs FROM fieldsync_have")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (origin, seqs) = row?;
        out.insert(origin, parse_set(seqs)?);
    }
    out.insert(s.local_idx, SeqSet::range(1, s.seq).minus(&s.lost));
    Ok(out)
}

/// The set of change numbers `sql` selects (one text column, at most one
/// row); empty if there is no row.
fn stored_set(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<SeqSet, Error> {
    let current: Option<String> = conn.query_row(sql, params, |r| r.get(0)).optional()?;
    current.map_or_else(|| Ok(SeqSet::new()), parse_set)
}

/// Add to what this instance has from `origin`.
pub fn add_have(conn: &Connection, origin: i64, seqs: &SeqSet) -> Result<(), Error> {
    let mut set = stored_set(
        conn,
        "SELECT seqs FROM fieldsync_have WHERE origin = ?1",
        params![origin],
    )?;
    set.union_with(seqs);
    conn.execute(
        "INSERT INTO fieldsync_have(origin, seqs) VALUES (?1, ?2) ON CONFLICT(origin) DO UPDATE SET seqs = excluded.seqs",
        params![origin, set.to_string()],
    )?;
    Ok(())
}

/// Every peer.
pub fn list_peers(conn: &Connection) -> Result<Vec<Peer>, Error> {
    let mut stmt = conn.prepare("SELECT id, name, site FROM fieldsync_peers ORDER BY id")?;
    let peers = stmt
        .query_map([], |r| {
            Ok(Peer {
                id: r.get(0)?,
                name: r.get(1)?,
                site: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(peers)
}

fn create_peer(conn: &Connection, name: &str, site: Option<i64>) -> Result<Peer, Error> {
    conn.execute(
        "INSERT INTO fieldsync_peers(name, site) VALUES (?1, ?2)",
        params![name, site],
    )?;
    Ok(Peer {
        id: conn.last_insert_rowid(),
        name: name.to_owned(),
        site,
    })
}

/// Find the peer an export `--to` names: a site id, a peer name, or the name
/// of an instance known from relayed changes. A name never seen before
/// becomes a new peer; the flag says so.
pub fn resolve_for_export(conn: &Connection, s: &Session, to: &str) -> Result<(Peer, bool), Error> {
    let peers = list_peers(conn)?;
    if let Ok(uuid) = uuid::Uuid::parse_str(to) {
        let id = SiteId(uuid);
        if id == s.local {
            return Err(ExportError::PeerIsSelf {
                name: to.to_owned(),
            }
            .into());
        }
        if let Some(idx) = s.sites.idx_of(&id) {
            if let Some(p) = peers.iter().find(|p| p.site == Some(idx)) {
                return Ok((p.clone(), false));
            }
            let name = s
                .sites
                .get(idx)
                .map(|site| site.name.clone())
                .unwrap_or_else(|| to.to_owned());
            return Ok((create_peer(conn, &name, Some(idx))?, false));
        }
    }
    if to == s.name {
        return Err(ExportError::PeerIsSelf {
            name: to.to_owned(),
        }
        .into());
    }
    check_name(to).map_err(|reason| ExportError::InvalidPeer {
        name: to.to_owned(),
        reason,
    })?;
    let named: Vec<&Peer> = peers.iter().filter(|p| p.name == to).collect();
    let ambiguous = |sites: Vec<i64>| -> Error {
        let ids = sites
            .iter()
            .filter_map(|&i| s.sites.get(i).map(|site| site.id.to_string()))
            .collect::<Vec<_>>()
            .join(", ");
        ExportError::AmbiguousPeer {
            name: to.to_owned(),
            sites: ids,
        }
        .into()
    };
    match named.as_slice() {
        [one] => return Ok(((*one).clone(), false)),
        [] => {}
        many => return Err(ambiguous(many.iter().filter_map(|p| p.site).collect())),
    }
    let known: Vec<i64> = s
        .sites
        .all()
        .into_iter()
        .filter(|site| site.name == to && site.idx != s.local_idx)
        .map(|site| site.idx)
        .collect();
    match known.as_slice() {
        [one] => Ok((create_peer(conn, to, Some(*one))?, false)),
        [] => Ok((create_peer(conn, to, None)?, true)),
        _ => Err(ambiguous(known)),
    }
}

/// The peer a bundle came from, binding a peer that was so far known only by
/// name (from an earlier `export --to`) to the sender's site.
pub fn bind_sender(conn: &Connection, site: i64, name: &str) -> Result<Peer, Error> {
    let peers = list_peers(conn)?;
    if let Some(p) = peers.iter().find(|p| p.site == Some(site)) {
        if p.name != name {
            conn.execute(
                "UPDATE fieldsync_peers SET name = ?1 WHERE id = ?2",
                params![name, p.id],
            )?;
        }
        return Ok(Peer {
            name: name.to_owned(),
            ..p.clone()
        });
    }
    if let Some(p) = peers.iter().find(|p| p.site.is_none() && p.name == name) {
        conn.execute(
            "UPDATE fieldsync_peers SET site = ?1 WHERE id = ?2",
            params![site, p.id],
        )?;
        return Ok(Peer {
            site: Some(site),
            ..p.clone()
        });
    }
    create_peer(conn, name, Some(site))
}

/// Per origin: what the peer acknowledged, what was sent to it, and what
/// of that it reported missing.
#[derive(Debug, Clone, Default)]
pub struct PeerSeqs {
    /// Acknowledged by the peer.
    pub acked: SeqSet,
    /// Exported to it.
    pub sent: SeqSet,
    /// Sent to it, reported missing by its newest bundle, not sent again
    /// since.
    pub lacks: SeqSet,
}

/// The acked and sent sets of a peer, by origin.
pub fn peer_seqs(conn: &Connection, peer: i64) -> Result<BTreeMap<i64, PeerSeqs>, Error> {
    let mut out = BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT origin, acked, sent, lacks FROM fieldsync_peer_seqs WHERE peer = ?1",
    )?;
    let rows = stmt.query_map([peer], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (origin, acked, sent, lacks) = row?;
        out.insert(
            origin,
            PeerSeqs {
                acked: parse_set(acked)?,
                sent: parse_set(sent)?,
                lacks: parse_set(lacks)?,
            },
        );
    }
    Ok(out)
}

/// Write a peer's sets for one origin.
fn save_peer_seqs(conn: &Connection, peer: i64, origin: i64, p: &PeerSeqs) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO fieldsync_peer_seqs(peer, origin, acked, sent, lacks) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT(peer, origin) DO UPDATE SET acked = excluded.acked, sent = excluded.sent, \
         lacks = excluded.lacks",
        params![
            peer,
            origin,
            p.acked.to_string(),
            p.sent.to_string(),
            p.lacks.to_string()
        ],
    )?;
    Ok(())
}

/// Record that `seqs` of `origin` were exported to a peer. What it had
/// reported missing among them is answered: it goes again only if a later
/// bundle of the peer still reports it missing.
pub fn mark_sent(conn: &Connection, peer: i64, origin: i64, seqs: &SeqSet) -> Result<(), Error> {
    if seqs.is_empty() {
        return Ok(());
    }
    let mut all = peer_seqs(conn, peer)?;
    let entry = all.entry(origin).or_default();
    entry.sent.union_with(seqs);
    entry.lacks = entry.lacks.minus(seqs);
    save_peer_seqs(conn, peer, origin, entry)
}

/// Record that a full export named for a peer (`export --full --for`)
/// carried `seqs` of `origin`: they count as sent to it, as if the peer
/// had been set up from that export, until its next bundle settles what
/// it has ([`record_acks`]).
pub fn assume_sent(conn: &Connection, peer: i64, origin: i64, seqs: &SeqSet) -> Result<(), Error> {
    if seqs.is_empty() {
        return Ok(());
    }
    mark_sent(conn, peer, origin, seqs)?;
    let mut set = stored_set(
        conn,
        "SELECT seqs FROM fieldsync_assumed WHERE peer = ?1 AND origin = ?2",
        params![peer, origin],
    )?;
    set.union_with(seqs);
    conn.execute(
        "INSERT INTO fieldsync_assumed(peer, origin, seqs) VALUES (?1, ?2, ?3) \
         ON CONFLICT(peer, origin) DO UPDATE SET seqs = excluded.seqs",
        params![peer, origin, set.to_string()],
    )?;
    Ok(())
}

/// What full exports named for a peer count as sent to it, by origin,
/// until the peer's next bundle.
pub fn assumed(conn: &Connection, peer: i64) -> Result<BTreeMap<i64, SeqSet>, Error> {
    let mut out = BTreeMap::new();
    let mut stmt =
        conn.prepare_cached("SELECT origin, seqs FROM fieldsync_assumed WHERE peer = ?1")?;
    let rows = stmt.query_map([peer], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (origin, seqs) = row?;
        out.insert(origin, parse_set(seqs)?);
    }
    Ok(out)
}

/// Take a peer's seen-vector (from a bundle it wrote at HLC `created`) as
/// what it has now, and its `lacks` as what it is missing. A bundle older
/// than the last one acknowledged from is ignored, so bundles may be
/// imported in any order. If the peer no longer has changes it acknowledged
/// before (it was restored from a backup), they stop counting as sent, so
/// the next export ships them again; the count of such changes is returned.
/// Of what it lacks, only what was sent to it is kept (the rest goes to it
/// anyway, as not sent): a claim cannot make this instance keep more than
/// it sent. What a full export named for the peer was assumed to have
/// given it ([`assume_sent`]) is settled by the seen-vector: what the peer
/// does not say it has stops counting as sent (it was set up from another
/// file, or not from that one), so the next export carries it.
pub fn record_acks(
    conn: &Connection,
    peer: i64,
    created: u64,
    seen: &BTreeMap<i64, SeqSet>,
    lacks: &BTreeMap<i64, SeqSet>,
    peer_lost: &SeqSet,
) -> Result<u64, Error> {
    let acked_at: Option<i64> = conn.query_row(
        "SELECT acked_at FROM fieldsync_peers WHERE id = ?1",
        [peer],
        |r| r.get(0),
    )?;
    if acked_at.is_some_and(|at| crate::base::hlc::Hlc::from_sql(at).0 >= created) {
        return Ok(0);
    }
    let mut all = peer_seqs(conn, peer)?;
    for origin in seen.keys() {
        all.entry(*origin).or_default();
    }
    // Settled once, by the first bundle of the peer's newer than the
    // ones acknowledged from before: it says what the peer has.
    let empty = SeqSet::new();
    for (origin, set) in assumed(conn, peer)? {
        let p = all.entry(origin).or_default();
        p.sent = p
            .sent
            .minus(&set.minus(seen.get(&origin).unwrap_or(&empty)));
    }
    conn.execute("DELETE FROM fieldsync_assumed WHERE peer = ?1", [peer])?;
    let mut lost = 0;
    for (origin, p) in all.iter_mut() {
        let now = seen.get(origin).cloned().unwrap_or_default();
        let gone = p.acked.minus(&now);
        if !gone.is_empty() {
            lost += gone.len();
            p.sent = p.sent.minus(&gone);
        }
        p.lacks = lacks
            .get(origin)
            .map(|l| l.intersect(&p.sent).minus(&now))
            .unwrap_or_default();
        p.acked = now;
        save_peer_seqs(conn, peer, *origin, p)?;
    }
    conn.execute(
        "UPDATE fieldsync_peers SET acked_at = ?1, lost = ?2 WHERE id = ?3",
        params![
            crate::base::hlc::Hlc(created).to_sql(),
            peer_lost.to_string(),
            peer
        ],
    )?;
    Ok(lost)
}

/// What an export to `peer` should cover, per origin: everything this
/// instance has that the peer has not acknowledged and, unless `resend`,
/// was not already sent or was sent and is shown missing by the peer (it
/// reported it lacks it, or a later bundle arrived and left a hole); never
/// the peer's own changes.
pub fn wanted_by(
    conn: &Connection,
    s: &Session,
    peer: &Peer,
    resend: bool,
) -> Result<BTreeMap<i64, SeqSet>, Error> {
    let have = have_all(conn, s)?;
    let seqs = peer_seqs(conn, peer.id)?;
    let peer_lost = parse_set(conn.query_row(
        "SELECT lost FROM fieldsync_peers WHERE id = ?1",
        [peer.id],
        |r| r.get::<_, String>(0),
    )?)?;
    let mut out = BTreeMap::new();
    for (origin, set) in have {
        if Some(origin) == peer.site {
            // Never echo a peer's own changes back to it, except those it
            // reports lost (it was restored from a backup).
            let mut missing = seqs
                .get(&origin)
                .map(|p| p.acked.gaps())
                .unwrap_or_default();
            missing.union_with(&peer_lost);
            let want = set.intersect(&missing);
            if !want.is_empty() {
                out.insert(origin, want);
            }
            continue;
        }
        let mut want = set;
        if let Some(p) = seqs.get(&origin) {
            want = want.minus(&p.acked);
            if !resend {
                // A hole below the highest number the peer acknowledged means
                // a later bundle arrived and an earlier one did not: what was
                // sent into such a hole counts as lost and goes again.
                // What the peer reported it lacks was sent and did not
                // arrive (the bundle was lost or overwritten): it goes again.
                let holes = p.acked.gaps();
                want = want.minus(&p.sent.minus(&holes).minus(&p.lacks));
            }
        }
        if !want.is_empty() {
            out.insert(origin, want);
        }
    }
    Ok(out)
}

/// What is known to exist of each origin: the union of what every peer
/// said it has (its newest seen-vector).
pub fn known_all(conn: &Connection) -> Result<BTreeMap<i64, SeqSet>, Error> {
    let mut out: BTreeMap<i64, SeqSet> = BTreeMap::new();
    let mut stmt = conn.prepare_cached("SELECT origin, acked FROM fieldsync_peer_seqs")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (origin, acked) = row?;
        out.entry(origin)
            .or_default()
            .union_with(&parse_set(acked)?);
    }
    Ok(out)
}

/// What is missing here of each origin other than this instance: numbers
/// known to exist (`known`) or below the highest received, that were not
/// received. `received` is what this instance has, with the numbers held
/// in quarantine (received, not applied yet). Origins missing nothing are
/// left out.
pub fn missing(
    s: &Session,
    known: &BTreeMap<i64, SeqSet>,
    received: &BTreeMap<i64, SeqSet>,
) -> BTreeMap<i64, SeqSet> {
    let empty = SeqSet::new();
    known
        .keys()
        .chain(received.keys())
        .filter(|&&o| o != s.local_idx)
        .filter_map(|&o| {
            let got = received.get(&o).unwrap_or(&empty);
            let mut gone = known.get(&o).unwrap_or(&empty).minus(got);
            gone.union_with(&got.gaps());
            (!gone.is_empty()).then_some((o, gone))
        })
        .collect()
}

/// Record what this instance lacks, per origin (replacing what was
/// recorded): its next bundles report it.
pub fn save_lacks(conn: &Connection, lacks: &BTreeMap<i64, SeqSet>) -> Result<(), Error> {
    conn.execute("DELETE FROM fieldsync_lacks", [])?;
    let mut stmt =
        conn.prepare_cached("INSERT INTO fieldsync_lacks(origin, seqs) VALUES (?1, ?2)")?;
    for (origin, set) in lacks {
        stmt.execute(params![origin, set.to_string()])?;
    }
    Ok(())
}

/// What this instance recorded it lacks at its last import, per origin.
pub fn lacks_all(conn: &Connection) -> Result<BTreeMap<i64, SeqSet>, Error> {
    let mut out = BTreeMap::new();
    let mut stmt = conn.prepare_cached("SELECT origin, seqs FROM fieldsync_lacks")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (origin, seqs) = row?;
        out.insert(origin, parse_set(seqs)?);
    }
    Ok(out)
}

/// Record the time of the last import from / export to a peer.
pub fn touch(conn: &Connection, peer: i64, import: bool, unix_ms: i64) -> Result<(), Error> {
    let sql = if import {
        "UPDATE fieldsync_peers SET last_import = ?1 WHERE id = ?2"
    } else {
        "UPDATE fieldsync_peers SET last_export = ?1 WHERE id = ?2"
    };
    conn.execute(sql, params![unix_ms, peer])?;
    Ok(())
}

/// A peer's schema version of each table, as it reported it or as assumed
/// from what was sent to it: lower-case table name → version.
pub fn peer_schema(conn: &Connection, peer: i64) -> Result<HashMap<String, String>, Error> {
    let mut stmt = conn
        .prepare_cached("SELECT lower(tbl), version FROM fieldsync_peer_schema WHERE peer = ?1")?;
    let rows = stmt
        .query_map([peer], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<HashMap<String, String>>>()?;
    Ok(rows)
}

/// Record a peer's schema versions: all it reported (replacing what was
/// known), or those assumed from the schema changes just sent to it.
pub fn save_peer_schema(
    conn: &Connection,
    peer: i64,
    versions: &[(String, String)],
    reported: bool,
) -> Result<(), Error> {
    if reported {
        conn.execute("DELETE FROM fieldsync_peer_schema WHERE peer = ?1", [peer])?;
    }
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO fieldsync_peer_schema(peer, tbl, version, reported) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (tbl, version) in versions {
        stmt.execute(params![peer, tbl, version, reported])?;
    }
    Ok(())
}
