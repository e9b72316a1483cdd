//! Export: choosing what a bundle carries and streaming it out.
//!
//! A delta export to a peer carries, per origin, the change numbers the peer
//! has neither acknowledged nor been sent ([`crate::catalog::peers::wanted_by`]); the
//! rows those changes touched are collected in a temporary table through the
//! `(origin, seq)` index, so the cost follows the delta, not the database.
//! Each row goes out once, with only the versions in range and the current
//! values of the cells they hold. A full export carries every row and
//! tombstone, and the schema a new instance is set up from (the statements
//! themselves are gathered by [`crate::send::setup`]); named for the
//! instances to be set up from it (`--for`), it counts as sent to each
//! ([`crate::catalog::peers::assume_sent`]) until its first bundle says
//! what it has. Relayed changes keep their origin, number and clock.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use rusqlite::{CachedStatement, Connection, Transaction};
use serde::Serialize;

use crate::base::colset::{ColSet, SENTINEL};
use crate::base::hlc::{Hlc, now_unix_ms};
use crate::base::seqset::SeqSet;
use crate::base::value::{Value, decode_key, key_literal};
use crate::bundle::envelope::{ENVELOPE_MAGIC, Sealer};
use crate::bundle::format::{
    Header, MAGIC, OriginSeqs, RefDef, SchemaVersion, SiteRef, TableDef, VersionRecord,
};
use crate::bundle::reader::read_header_checked;
use crate::bundle::writer::{BundleWriter, WriteSummary};
use crate::catalog::identity::locate;
use crate::catalog::peers::{
    Peer, assume_sent, have_all, known_all, lacks_all, list_peers, mark_sent, peer_seqs,
    resolve_for_export, touch, wanted_by,
};
use crate::catalog::refs::RefFk;
use crate::catalog::session::Session;
use crate::catalog::site::Sites;
use crate::catalog::tracked::TrackedTable;
use crate::error::{Error, ExportError, SiteError};
use crate::local::stamp::{StampReport, Suspects, record_vanished_rows, stamp_pending};

/// What to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportTarget {
    /// The changes a peer lacks.
    Peer {
        /// The peer's name (or site id).
        to: String,
        /// Ship everything not acknowledged, even if it was sent before.
        resend: bool,
    },
    /// No changes: a bundle whose header alone tells the peer what this
    /// instance holds of every origin (its seen vector), which schema
    /// versions and trust records it has, so the peer answers with what it
    /// lacks. A network pull sends one (spec/network.md).
    Acknowledge {
        /// The peer's name (or site id).
        to: String,
    },
    /// The whole current state.
    Full,
    /// The whole current state, to set up the named peers from (`export
    /// --full --for`): what it covers counts as sent to each of them, so
    /// the first export to one carries only what changed after it. A name
    /// never seen before becomes a peer. The peer's first bundle settles
    /// it: what that bundle does not say the peer has goes again
    /// (spec/merge.md, "Setting up from a full export").
    FullFor {
        /// The peers' names (or site ids).
        peers: Vec<String>,
    },
}

impl ExportTarget {
    /// True for a full export, named for peers or not.
    pub fn is_full(&self) -> bool {
        matches!(self, ExportTarget::Full | ExportTarget::FullFor { .. })
    }
}

/// Rows of one table in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCount {
    /// Table name.
    pub table: String,
    /// Row records.
    pub changes: u64,
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// True for a full export.
    pub full: bool,
    /// The peer it was made for.
    #[serde(rename = "recipient_instance")]
    pub peer: Option<String>,
    /// True if the peer was named for the first time.
    pub new_peer: bool,
    /// A full export named for peers (`--for`): the peers it counts as
    /// sent to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub setup_for: Vec<String>,
    /// Of those, the ones named for the first time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub new_peers: Vec<String>,
    /// Peers known before this export (to catch a misspelt name).
    pub known_peers: Vec<String>,
    /// Row records written.
    pub changes: u64,
    /// Versions in them.
    pub versions: u64,
    /// Per table.
    pub tables: Vec<TableCount>,
    /// Bundle size in bytes.
    pub bytes: u64,
    /// Captured changes folded into the log first.
    pub captured: u64,
    /// Per origin name, the change numbers covered.
    pub covers: BTreeMap<String, String>,
    /// Things worth telling the operator.
    pub warnings: Vec<String>,
    /// Write transactions the export took: stamping and planning, then
    /// marking what was sent (the rows are read without the write lock).
    pub write_transactions: u64,
    /// The longest of them, in milliseconds.
    pub longest_write_ms: u64,
    /// The instances the bundle is encrypted to (spec/trust.md); empty if
    /// it is not encrypted.
    pub encrypted_for: Vec<String>,
    /// The parts it was cut into with `--max-size` (spec/bundle.md, "Split
    /// bundles"); empty if it was written as one file.
    pub parts: Vec<crate::bundle::parts::PartFile>,
}

/// Log entries written between two progress reports.
const PROGRESS_EVERY: u64 = 8192;

/// Write a bundle for `target` to `out` in one transaction, in three
/// phases: [`prepare`] (stamp, choose what the bundle covers and which
/// tables it carries, the header), [`write_prepared`] (the rows),
/// [`record_prepared`] (the peer's "sent" mark). `seal` runs after the bundle
/// is completely written and before the mark is recorded, so a bundle that
/// failed to reach the disk is never counted as sent. `progress` is called
/// now and then with the change-log entries written so far and their total.
/// [`crate::Instance`] runs the phases in transactions of their own, the
/// rows read without the write lock (spec/merge.md, "Write transactions").
/// With a `sealer` the bundle is encrypted ([`write_prepared`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn export<W: Write>(
    tx: &Transaction<'_>,
    s: &mut Session,
    target: &ExportTarget,
    again: &BTreeMap<i64, SeqSet>,
    out: W,
    sealer: Option<&Sealer>,
    seal: impl FnOnce(W) -> Result<(), Error>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ExportReport, Error> {
    let prepared = prepare(tx, s, target, again, None)?;
    let (out, summary) = write_prepared(tx, &prepared, out, sealer, progress)?;
    seal(out)?;
    record_prepared(tx, s, &prepared)?;
    Ok(prepared.report(&s.sites, summary))
}

/// An export planned and its header made, the rows not written yet.
pub(crate) struct Prepared {
    plan: Plan,
    header: Header,
}

/// The first phase of an export: stamp, plan, make the header. The caller
/// saves the session (the header's clock) with it. A full export records
/// the rows deleted without a trigger: those in `vanished` (found by
/// [`find_vanished`] in a read transaction before) or, without it, those a
/// scan of every table finds now.
pub(crate) fn prepare(
    conn: &Connection,
    s: &mut Session,
    target: &ExportTarget,
    again: &BTreeMap<i64, SeqSet>,
    vanished: Option<&[(i64, Vec<u8>)]>,
) -> Result<Prepared, Error> {
    let plan = plan(conn, s, target, again, vanished)?;
    let header = plan.header(conn, s)?;
    Ok(Prepared { plan, header })
}

/// Before a full export, reading only: the rows of every tracked table the
/// log knows as live and the table lacks (deleted without a trigger).
pub(crate) fn find_vanished(conn: &Connection, s: &Session) -> Result<Vec<(i64, Vec<u8>)>, Error> {
    let mut found = Vec::new();
    for table in s.catalog.tables() {
        found.extend(crate::local::stamp::find_vanished_rows(
            conn,
            s,
            Suspects::Table(table),
        )?);
    }
    Ok(found)
}

/// The second phase: the header and every row record, reading only (a
/// delta's rows are listed in `temp.fieldsync_export_rows` by the first).
/// With a `sealer`, the signed bundle is the plaintext of an encrypted
/// envelope (sign, then encrypt; spec/trust.md).
pub(crate) fn write_prepared<W: Write>(
    conn: &Connection,
    p: &Prepared,
    out: W,
    sealer: Option<&Sealer>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(W, WriteSummary), Error> {
    // Signed with this instance's own key, which goes to the writer only.
    let key = crate::catalog::keys::signing_key(conn)?;
    let Some(sealer) = sealer else {
        let mut writer = BundleWriter::new(out, &p.header, &key)?;
        write_rows(conn, &p.plan, &mut writer, progress)?;
        return Ok(writer.finish()?);
    };
    let stream = sealer.start(out)?;
    let mut writer = BundleWriter::new(stream, &p.header, &key)?;
    write_rows(conn, &p.plan, &mut writer, progress)?;
    let (stream, mut summary) = writer.finish()?;
    let (out, bytes) = Sealer::finish(stream)?;
    summary.bytes = bytes;
    Ok((out, summary))
}

/// The last phase, once the bundle is sealed: what it carries counts as
/// sent.
pub(crate) fn record_prepared(conn: &Connection, s: &Session, p: &Prepared) -> Result<(), Error> {
    record(conn, s, &p.plan)
}

impl Prepared {
    /// The report of the export, once written.
    pub(crate) fn report(self, sites: &Sites, summary: WriteSummary) -> ExportReport {
        self.plan.report(sites, summary)
    }
}

/// What a bundle carries, decided before anything is written.
struct Plan {
    /// The peer a delta export is for; `None` for a full export.
    to: Option<Recipient>,
    /// The peers a full export is named for (`--for`).
    setup_for: Vec<Recipient>,
    /// Peers known before this export.
    known_peers: Vec<String>,
    /// The stamping pass that opened the export.
    stamped: StampReport,
    /// Per origin, the change numbers the bundle covers.
    covers: BTreeMap<i64, SeqSet>,
    /// Per origin, every change number this instance has.
    have: BTreeMap<i64, SeqSet>,
    /// Per origin, what this instance knows exists and has not received
    /// (as of its last import): the bundle reports it, so whoever sent it
    /// sends it again.
    lacks: BTreeMap<i64, SeqSet>,
    /// The tracked tables the bundle carries, in header order.
    tables: Vec<TrackedTable>,
    /// Their columns referring to other tracked tables, by table id: these
    /// travel tagged ([`crate::catalog::refs`]).
    refs: HashMap<i64, Vec<RefFk>>,
    /// Each site's index in the header's origins, by its local number.
    origin_index: BTreeMap<i64, u32>,
    /// Every tracked table's schema version here, by table id.
    versions: Vec<(i64, String, String)>,
    /// The tables a delta carries the schema of: those whose version the
    /// peer does not have (spec/schema.md, "Schema changes travel").
    schema_for: Vec<i64>,
    /// What a full export cannot carry.
    warnings: Vec<String>,
}

/// The peer a delta export is made for.
struct Recipient {
    peer: Peer,
    /// Named for the first time by this export.
    new: bool,
}

/// Stamp what was captured, record rows deleted without a trigger, and
/// decide what the bundle covers and which tables it carries; a delta
/// carries `again` too (what a bundle file it replaces held undelivered).
/// A delta export leaves the rows it carries in `temp.fieldsync_export_rows`.
fn plan(
    conn: &Connection,
    s: &mut Session,
    target: &ExportTarget,
    again: &BTreeMap<i64, SeqSet>,
    vanished: Option<&[(i64, Vec<u8>)]>,
) -> Result<Plan, Error> {
    if s.catalog.is_empty() {
        return Err(ExportError::NothingTracked {
            db: crate::catalog::store::db_arg(conn),
        }
        .into());
    }
    let followed = crate::local::follow::follow_schema(conn, s)?;
    let mut stamped = stamp_pending(conn, s)?;
    stamped.absorb(followed.stamped);
    let followed = followed.notices;
    let known_peers: Vec<String> = list_peers(conn)?.into_iter().map(|p| p.name).collect();
    let mut setup_for: Vec<Recipient> = Vec::new();
    let (to, wanted) = match target {
        ExportTarget::Full | ExportTarget::FullFor { .. } => {
            if let ExportTarget::FullFor { peers } = target {
                for name in peers {
                    let (peer, new) = resolve_for_export(conn, s, name)?;
                    if !setup_for.iter().any(|r| r.peer.id == peer.id) {
                        setup_for.push(Recipient { peer, new });
                    }
                }
            }
            match vanished {
                Some(found) => {
                    crate::local::stamp::record_found_vanished(conn, s, found)?;
                }
                None => {
                    for table in s.catalog.tables().to_vec() {
                        record_vanished_rows(conn, s, Suspects::Table(&table))?;
                    }
                }
            }
            (None, None)
        }
        ExportTarget::Peer { to, resend } => {
            let (peer, new) = resolve_for_export(conn, s, to)?;
            let wanted = collect_delta(conn, s, &peer, *resend, again)?;
            (Some(Recipient { peer, new }), Some(wanted))
        }
        ExportTarget::Acknowledge { to } => {
            let (peer, new) = resolve_for_export(conn, s, to)?;
            let wanted = BTreeMap::new();
            collect_delta_rows(conn, &wanted)?;
            (Some(Recipient { peer, new }), Some(wanted))
        }
    };
    // After the vanished-row passes above, which may add changes.
    let have = have_all(conn, s)?;
    let lacks = lacks_all(conn)?
        .into_iter()
        .filter(|(o, _)| *o != s.local_idx)
        .map(|(o, set)| {
            let set = have.get(&o).map_or_else(|| set.clone(), |h| set.minus(h));
            (o, set)
        })
        .collect();
    let full = to.is_none();
    let mut versions = Vec::new();
    for t in s.catalog.tables() {
        if let Some(v) = crate::catalog::schema::schema_version(conn, &t.name)? {
            versions.push((t.id, t.name.clone(), v));
        }
    }
    // A delta carries the schema of each table whose version the peer
    // lacks (it reported another, or nothing at all).
    let schema_for: Vec<i64> = match &to {
        Some(r) => {
            let known = crate::catalog::peers::peer_schema(conn, r.peer.id)?;
            versions
                .iter()
                .filter(|(_, name, v)| known.get(&name.to_ascii_lowercase()) != Some(v))
                .map(|(id, ..)| *id)
                .collect()
        }
        None => Vec::new(),
    };
    let tables = carried_tables(conn, s, full, &schema_for)?;
    let refs = carried_refs(conn, s, &tables)?;
    let origin_index = s
        .sites
        .all()
        .iter()
        .enumerate()
        .map(|(i, site)| (site.idx, i as u32))
        .collect();
    Ok(Plan {
        to,
        setup_for,
        known_peers,
        stamped,
        covers: wanted.unwrap_or_else(|| have.clone()),
        have,
        lacks,
        tables,
        refs,
        origin_index,
        versions,
        schema_for,
        warnings: if full {
            followed
                .into_iter()
                .chain(crate::send::setup::not_carried(conn)?)
                .collect()
        } else {
            followed
        },
    })
}

/// What a delta export to `peer` covers, with the rows it touches collected
/// in `temp.fieldsync_export_rows`.
fn collect_delta(
    conn: &Connection,
    s: &mut Session,
    peer: &Peer,
    resend: bool,
    again: &BTreeMap<i64, SeqSet>,
) -> Result<BTreeMap<i64, SeqSet>, Error> {
    let with_again = |mut want: BTreeMap<i64, SeqSet>| {
        for (origin, set) in again {
            if Some(*origin) != peer.site {
                want.entry(*origin).or_default().union_with(set);
            }
        }
        want.retain(|_, set| !set.is_empty());
        want
    };
    let want = with_again(wanted_by(conn, s, peer, resend)?);
    collect_delta_rows(conn, &want)?;
    if record_vanished_rows(conn, s, Suspects::ExportRows)? > 0 {
        // The deletes just recorded are new changes: count them in.
        // They are of rows already collected, so the rows stand.
        return Ok(with_again(wanted_by(conn, s, peer, resend)?));
    }
    Ok(want)
}

/// What `export` may do with a bundle file already at its output path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overwrite {
    /// Refuse if the file holds changes its recipient has not acknowledged
    /// (or looks like a bundle whose header cannot be read).
    #[default]
    IfDelivered,
    /// Overwrite it anyway (`--force`); the report's warnings say what it
    /// held, and a bundle of ours to the same peer is carried again.
    Force,
}

/// How [`crate::Instance::export_to_file_with`] writes its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// What to do with a bundle file already at the output path.
    pub overwrite: Overwrite,
    /// Encrypt the bundle to its recipients (the peer of `--to`, the peers
    /// of `--full --for`), as `fieldsync export` does unless given
    /// `--no-encrypt`; false writes the signed bundle unencrypted.
    pub encrypt: bool,
    /// How the bundle leaves, as the sync journal records it (a file by
    /// default; the network code says `Via::Network`).
    pub via: crate::catalog::journal::Via,
}

impl Default for ExportOptions {
    /// Encrypted, refusing to overwrite an undelivered bundle, by file.
    fn default() -> Self {
        ExportOptions {
            overwrite: Overwrite::IfDelivered,
            encrypt: true,
            via: crate::catalog::journal::Via::File,
        }
    }
}

/// What an export does about the bundle file it replaces.
#[derive(Debug, Default)]
pub(crate) struct Replaced {
    /// Changes the file held undelivered that the new bundle carries again
    /// (the file was this instance's bundle to the same peer), per origin.
    pub again: BTreeMap<i64, SeqSet>,
    /// What to tell the operator, with `--force`.
    pub warning: Option<String>,
}

/// What is at an export's output path already.
enum Existing {
    /// Nothing, or not a bundle: replaced without asking.
    NotABundle,
    /// A bundle whose header reads (checked like any received header).
    Bundle(Box<Header>),
    /// A bundle whose header does not read, replaced because forced.
    Unreadable(Replaced),
}

fn existing(
    conn: &Connection,
    s: &Session,
    path: &Path,
    overwrite: Overwrite,
) -> Result<Existing, Error> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Ok(Existing::NotABundle);
    };
    let mut magic = [0u8; 8];
    if file.read_exact(&mut magic).is_err() || (magic != MAGIC && magic != ENVELOPE_MAGIC) {
        return Ok(Existing::NotABundle);
    }
    file.seek(SeekFrom::Start(0))?;
    // An encrypted bundle is read with this instance's key: its own
    // bundles are encrypted to it too (src/send/encrypt.rs).
    let me = SiteRef {
        id: s.local,
        name: s.name.clone(),
    };
    let header = crate::bundle::envelope::open(file, &me, || {
        crate::catalog::keys::encryption_identity(conn)
    })
    .and_then(|mut opened| Ok(read_header_checked(&mut opened)?));
    match header {
        Ok(h) => Ok(Existing::Bundle(Box::new(h))),
        Err(e) if overwrite == Overwrite::Force => Ok(Existing::Unreadable(Replaced {
            again: BTreeMap::new(),
            warning: Some(format!(
                "overwrote {}, whose header could not be read ({e})",
                path.display()
            )),
        })),
        Err(e) => Err(ExportError::OverwriteUnreadable {
            path: path.into(),
            reason: e.to_string(),
        }
        .into()),
    }
}

/// Who has to have acknowledged what an existing bundle covers (for the
/// message), what they did acknowledge, and whether the new bundle goes to
/// that same peer.
fn delivered_to(
    conn: &Connection,
    s: &Session,
    header: &Header,
    target: &ExportTarget,
    ours: bool,
) -> Result<(String, BTreeMap<i64, SeqSet>, bool), Error> {
    if !ours {
        // A bundle from another instance: delivered if imported here.
        return Ok(("this instance".to_owned(), have_all(conn, s)?, false));
    }
    let Some(name) = &header.recipient else {
        return Ok(("any peer".to_owned(), known_all(conn)?, false));
    };
    let peer = list_peers(conn)?.into_iter().find(|p| &p.name == name);
    let acked = match &peer {
        Some(p) => peer_seqs(conn, p.id)?
            .into_iter()
            .map(|(o, x)| (o, x.acked))
            .collect(),
        None => BTreeMap::new(),
    };
    let same = matches!(target, ExportTarget::Peer { to, .. } | ExportTarget::Acknowledge { to }
        if to == name || peer.as_ref().and_then(|p| p.site).and_then(|i| s.sites.get(i))
            .is_some_and(|site| site.id.to_string() == *to));
    Ok((format!("'{name}'"), acked, same))
}

/// Look at the bundle file an export is about to replace. Its header is
/// read (and checked, as hostile input) to learn what it covers; what of
/// that its recipient has not acknowledged would be lost with the file:
/// the export is refused unless `overwrite` is [`Overwrite::Force`]. A file
/// that is not a bundle (no bundle magic) is replaced as before.
pub(crate) fn check_overwrite(
    conn: &Connection,
    s: &Session,
    path: &Path,
    target: &ExportTarget,
    overwrite: Overwrite,
) -> Result<Replaced, Error> {
    let header = match existing(conn, s, path, overwrite)? {
        Existing::NotABundle => return Ok(Replaced::default()),
        Existing::Unreadable(replaced) => return Ok(replaced),
        Existing::Bundle(header) => header,
    };
    // Who has to have acknowledged what the file covers, and what they did.
    let ours = header.sender.id == s.local;
    if ours && target.is_full() {
        // A full export covers everything this instance has: all the
        // replaced bundle of its own held, and more.
        return Ok(Replaced::default());
    }
    let (who, delivered, same_peer) = delivered_to(conn, s, &header, target, ours)?;
    let empty = SeqSet::new();
    let mut undelivered: BTreeMap<i64, SeqSet> = BTreeMap::new();
    let mut numbers = Vec::new();
    let mut count = 0u64;
    for c in &header.covers {
        let Some(site) = header.origins.get(c.origin as usize) else {
            continue;
        };
        let idx = s.sites.idx_of(&site.id);
        let left = c
            .seqs
            .minus(idx.and_then(|i| delivered.get(&i)).unwrap_or(&empty));
        if left.is_empty() {
            continue;
        }
        count += left.len();
        numbers.push(format!("{} {left}", site.name));
        if let Some(i) = idx {
            undelivered.insert(i, left);
        }
    }
    if count == 0 {
        return Ok(Replaced::default());
    }
    let numbers = numbers.join(", ");
    let recipient = header.recipient.clone().unwrap_or_default();
    let after = if same_peer {
        "; the new bundle then carries them again".to_owned()
    } else if ours && !recipient.is_empty() {
        format!(
            "; they go to '{recipient}' again once it reports them missing, or at once with \
             `fieldsync export --to {recipient} --resend`"
        )
    } else if ours {
        String::new()
    } else {
        format!(
            "; they come again once '{}' hears from this instance that they are missing",
            header.sender.name
        )
    };
    if overwrite == Overwrite::IfDelivered {
        return Err(ExportError::WouldOverwrite {
            path: path.into(),
            who,
            count,
            numbers,
            after,
        }
        .into());
    }
    let have = have_all(conn, s)?;
    let again = if same_peer {
        undelivered
            .into_iter()
            .filter_map(|(o, set)| {
                let set = set.intersect(have.get(&o)?);
                (!set.is_empty()).then_some((o, set))
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    Ok(Replaced {
        again,
        warning: Some(format!(
            "overwrote {}, which held {} {who} had not acknowledged ({numbers}){after}",
            path.display(),
            crate::error::count(count, "change number", "change numbers")
        )),
    })
}

/// The tracked tables a bundle carries: all of them in a full export, those
/// with a collected row or whose schema it carries (`schema_for`) in a
/// delta.
fn carried_tables(
    conn: &Connection,
    s: &Session,
    full: bool,
    schema_for: &[i64],
) -> Result<Vec<TrackedTable>, Error> {
    if full {
        return Ok(s.catalog.tables().to_vec());
    }
    let mut stmt = conn.prepare("SELECT DISTINCT tbl FROM temp.fieldsync_export_rows")?;
    let ids = stmt
        .query_map([], |r| r.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(s.catalog
        .tables()
        .iter()
        .filter(|t| ids.contains(&t.id) || schema_for.contains(&t.id))
        .cloned()
        .collect())
}

/// The followed references of the carried tables that have any, by table id.
fn carried_refs(
    conn: &Connection,
    s: &Session,
    tables: &[TrackedTable],
) -> Result<HashMap<i64, Vec<RefFk>>, Error> {
    let all_refs = crate::catalog::refs::load(conn, s.catalog.tables())?;
    Ok(s.catalog
        .tables()
        .iter()
        .zip(all_refs)
        .filter(|(t, r)| !r.is_empty() && tables.iter().any(|x| x.id == t.id))
        .map(|(t, r)| (t.id, r))
        .collect())
}

impl Plan {
    fn full(&self) -> bool {
        self.to.is_none()
    }

    /// The bundle's header, stamped with the clock now.
    fn header(&self, conn: &Connection, s: &mut Session) -> Result<Header, Error> {
        let full = self.full();
        // A full export sets up new instances: besides the tracked tables it
        // carries the app's other tables (schema only) and its views.
        let (local_tables, views) = if full {
            (
                crate::send::setup::local_tables(conn, s.catalog.tables())?,
                crate::send::setup::views(conn)?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        // The anchor's enrolments and revocations the peer has not
        // acknowledged (a full export: all of them).
        let ring = crate::catalog::keyring::Keyring::load(conn)?;
        let created = s.clock.stamp(now_unix_ms())?;
        let statements = self.statements(conn, s, created.0)?;
        Ok(Header {
            sender: SiteRef {
                id: s.local,
                name: s.name.clone(),
            },
            created: created.0,
            full,
            recipient: self.to.as_ref().map(|to| to.peer.name.clone()),
            origins: s
                .sites
                .all()
                .iter()
                .map(|site| SiteRef {
                    id: site.id,
                    name: site.name.clone(),
                })
                .collect(),
            tables: self
                .tables
                .iter()
                .map(|t| self.table_def(conn, t))
                .collect::<Result<_, Error>>()?,
            covers: self.origin_seqs(&self.covers),
            seen: self.origin_seqs(&self.have),
            lost: s.lost.clone(),
            lacks: self.origin_seqs(&self.lacks),
            local_tables,
            views,
            schemas: self
                .versions
                .iter()
                .map(|(_, name, version)| SchemaVersion {
                    name: name.clone(),
                    version: version.clone(),
                })
                .collect(),
            trust: ring.records_after(match &self.to {
                Some(to) => crate::catalog::keyring::trust_seen(conn, to.peer.id)?,
                None => None,
            }),
            trust_seen: ring.highest_serial(),
            sender_recipient: Some(crate::catalog::keys::public_keys(conn)?.recipient),
            statements,
        })
    }

    /// The origin statements the bundle carries (spec/trust.md, "Claims
    /// checked against facts"): this instance's own, signed now, and the
    /// newest held of every origin the header names a number of.
    fn statements(
        &self,
        conn: &Connection,
        s: &Session,
        created: u64,
    ) -> Result<Vec<crate::bundle::format::SignedStatement>, Error> {
        let key = crate::catalog::keys::signing_key(conn)?;
        let own = crate::bundle::statement::Statement {
            site: s.local,
            top: s.seq,
            hlc: created,
            key: key.verifying_key(),
            name: s.name.clone(),
        };
        let origins: std::collections::BTreeSet<i64> = [&self.covers, &self.have, &self.lacks]
            .into_iter()
            .flat_map(|m| m.iter().filter(|(_, set)| !set.is_empty()).map(|(o, _)| *o))
            .collect();
        let sites = origins
            .into_iter()
            .filter_map(|o| s.sites.get(o).map(|site| site.id));
        crate::bundle::statement::for_bundle(conn, &own, &key, sites)
    }

    /// A carried table as the header describes it.
    fn table_def(&self, conn: &Connection, t: &TrackedTable) -> Result<TableDef, Error> {
        Ok(TableDef {
            name: t.name.clone(),
            key: t.key.clone(),
            cells: t.cells.clone(),
            // A full export sets up new instances, and a delta brings the
            // peer the schema changes it lacks: both carry the schema.
            schema: if self.full() || self.schema_for.contains(&t.id) {
                crate::send::setup::table_schema(conn, &t.name)?
            } else {
                Vec::new()
            },
            identity: t.identity,
            refs: self
                .refs
                .get(&t.id)
                .map(|r| RefDef::of(r))
                .unwrap_or_default(),
        })
    }

    /// Per-origin sets as the header lists them: by origin index, empty
    /// sets left out.
    fn origin_seqs(&self, m: &BTreeMap<i64, SeqSet>) -> Vec<OriginSeqs> {
        m.iter()
            .filter(|(_, set)| !set.is_empty())
            .filter_map(|(o, set)| {
                self.origin_index.get(o).map(|&i| OriginSeqs {
                    origin: i,
                    seqs: set.clone(),
                })
            })
            .collect()
    }

    /// What the export wrote, for the operator.
    fn report(self, sites: &Sites, summary: WriteSummary) -> ExportReport {
        let full = self.full();
        let (peer, new_peer) = match self.to {
            Some(to) => (Some(to.peer.name), to.new),
            None => (None, false),
        };
        ExportReport {
            full,
            peer,
            new_peer,
            setup_for: self.setup_for.iter().map(|r| r.peer.name.clone()).collect(),
            new_peers: (self.setup_for.iter())
                .filter(|r| r.new)
                .map(|r| r.peer.name.clone())
                .collect(),
            known_peers: self.known_peers,
            changes: summary.rows,
            versions: summary.versions,
            tables: self
                .tables
                .iter()
                .zip(summary.per_table.iter())
                .map(|(t, &n)| TableCount {
                    table: t.name.clone(),
                    changes: n,
                })
                .collect(),
            bytes: summary.bytes,
            captured: self.stamped.captured,
            covers: self
                .covers
                .iter()
                .map(|(o, set)| (sites.label(*o), set.to_string()))
                .collect(),
            warnings: self
                .stamped
                .warnings()
                .into_iter()
                .chain(self.warnings)
                .collect(),
            write_transactions: 1,
            longest_write_ms: 0,
            encrypted_for: Vec::new(),
            parts: Vec::new(),
        }
    }
}

/// Write every row record the plan covers. Rows go out in the order of
/// their first change (the log's (origin, seq) order), not in key order:
/// consecutive records then have close clocks and numbers, and values
/// written one after another (names, counters, dates) sit together, which
/// compresses far better.
fn write_rows<W: Write>(
    conn: &Connection,
    plan: &Plan,
    writer: &mut BundleWriter<W>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), Error> {
    let (order_sql, total_sql) = if plan.full() {
        (
            "SELECT tbl, pk, origin, seq FROM fieldsync_log ORDER BY origin, seq",
            "SELECT count(*) FROM fieldsync_log",
        )
    } else {
        (
            "SELECT tbl, pk, NULL, NULL FROM temp.fieldsync_export_rows ORDER BY rowid",
            "SELECT count(*) FROM temp.fieldsync_export_rows",
        )
    };
    let total = conn.query_row(total_sql, [], |r| r.get::<_, i64>(0))? as u64;
    progress(0, total);
    let mut done = 0u64;
    let mut versions_of = conn.prepare_cached(
        "SELECT origin, seq, cl, hlc, cols FROM fieldsync_log WHERE tbl = ?1 AND pk = ?2",
    )?;
    let mut order = conn.prepare(order_sql)?;
    let mut rows = order.query([])?;
    while let Some(r) = rows.next()? {
        done += 1;
        if done % PROGRESS_EVERY == 0 {
            progress(done, total);
        }
        let tbl: i64 = r.get(0)?;
        let pk = r.get_ref(1)?.as_blob()?;
        // A full export meets a row once per version; it is written at the
        // first one.
        let met_at: Option<(i64, i64)> = match (r.get(2)?, r.get(3)?) {
            (Some(origin), Some(seq)) => Some((origin, seq)),
            _ => None,
        };
        if let Some(row) = gather_row(&mut versions_of, plan, tbl, pk, met_at)? {
            emit(conn, writer, &plan.tables, &plan.refs, row)?;
        }
    }
    progress(total, total);
    Ok(())
}

/// A row's log entries, with the versions the bundle covers; `None` if
/// the row was met at `met_at`, a version other than its first (a full
/// export writes it at its first).
fn gather_row(
    versions_of: &mut CachedStatement<'_>,
    plan: &Plan,
    tbl: i64,
    pk: &[u8],
    met_at: Option<(i64, i64)>,
) -> Result<Option<PendingRow>, Error> {
    let mut row = PendingRow {
        tbl,
        pk: pk.to_vec(),
        cl: 0,
        versions: Vec::new(),
    };
    let mut first: Option<(i64, i64)> = None;
    let mut found = versions_of.query(rusqlite::params![tbl, pk])?;
    while let Some(v) = found.next()? {
        let origin: i64 = v.get(0)?;
        let seq: i64 = v.get(1)?;
        first = Some(first.map_or((origin, seq), |f| f.min((origin, seq))));
        row.cl = v.get::<_, i64>(2)? as u64;
        let seq = seq as u64;
        if !plan
            .covers
            .get(&origin)
            .is_some_and(|set| set.contains(seq))
        {
            continue;
        }
        let Some(&origin_i) = plan.origin_index.get(&origin) else {
            return Err(SiteError::Damaged {
                detail: format!("origin {origin} is not in fieldsync_sites"),
            }
            .into());
        };
        let cols = ColSet::from_bytes(v.get_ref(4)?.as_blob()?)
            .map_err(|detail| SiteError::Damaged { detail })?;
        row.versions.push(VersionRecord {
            origin: origin_i,
            seq,
            hlc: Hlc::from_sql(v.get(3)?).0,
            cols,
        });
    }
    if met_at.is_some() && first != met_at {
        return Ok(None);
    }
    Ok(Some(row))
}

/// Record what a bundle that reached its destination sent: the peer's
/// "sent" mark and export time (for a full export named for peers, each
/// one's, as assumed until it is heard from), and the clock and counter.
fn record(conn: &Connection, s: &Session, plan: &Plan) -> Result<(), Error> {
    let versions_of = |ids: Option<&[i64]>| -> Vec<(String, String)> {
        (plan.versions.iter())
            .filter(|(id, ..)| ids.is_none_or(|ids| ids.contains(id)))
            .map(|(_, name, v)| (name.clone(), v.clone()))
            .collect()
    };
    for r in &plan.setup_for {
        for (origin, set) in &plan.covers {
            // Its own changes are never sent to it anyway.
            if Some(*origin) != r.peer.site {
                assume_sent(conn, r.peer.id, *origin, set)?;
            }
        }
        // Set up from this file, it has the schema this file carries.
        crate::catalog::peers::save_peer_schema(conn, r.peer.id, &versions_of(None), false)?;
        touch(conn, r.peer.id, false, now_unix_ms())?;
    }
    if let Some(to) = &plan.to {
        crate::catalog::peers::save_peer_schema(
            conn,
            to.peer.id,
            &versions_of(Some(&plan.schema_for)),
            false,
        )?;
        for (origin, set) in &plan.covers {
            mark_sent(conn, to.peer.id, *origin, set)?;
        }
        touch(conn, to.peer.id, false, now_unix_ms())?;
        conn.execute_batch("DELETE FROM temp.fieldsync_export_rows")?;
    }
    s.save(conn)
}

/// Fill `temp.fieldsync_export_rows` with the rows touched by the covered
/// change numbers.
fn collect_delta_rows(conn: &Connection, covers: &BTreeMap<i64, SeqSet>) -> Result<(), Error> {
    // Rowid order is the order rows were first met, walking each origin's
    // changes by number: the order the records are written in.
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS fieldsync_export_rows(
           tbl INTEGER NOT NULL, pk BLOB NOT NULL, UNIQUE(tbl, pk));
         DELETE FROM temp.fieldsync_export_rows;",
    )?;
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO temp.fieldsync_export_rows(tbl, pk) \
         SELECT tbl, pk FROM fieldsync_log WHERE origin = ?1 AND seq BETWEEN ?2 AND ?3",
    )?;
    for (origin, set) in covers {
        for &(a, b) in set.ranges() {
            stmt.execute(rusqlite::params![
                origin,
                a.min(i64::MAX as u64) as i64,
                b.min(i64::MAX as u64) as i64
            ])?;
        }
    }
    Ok(())
}

/// A row being gathered from consecutive log entries.
struct PendingRow {
    tbl: i64,
    pk: Vec<u8>,
    cl: u64,
    versions: Vec<VersionRecord>,
}

/// Write one row record: its versions in range and the values of their
/// cells (references tagged, see [`crate::catalog::refs`]).
fn emit<W: Write>(
    conn: &Connection,
    writer: &mut BundleWriter<W>,
    tables: &[TrackedTable],
    refs: &HashMap<i64, Vec<RefFk>>,
    row: PendingRow,
) -> Result<(), Error> {
    if row.versions.is_empty() {
        return Ok(());
    }
    let Some((table_i, table)) = tables.iter().enumerate().find(|(_, t)| t.id == row.tbl) else {
        return Ok(());
    };
    let key = decode_key(&row.pk).map_err(|e| SiteError::Damaged {
        detail: format!("a key in fieldsync_log: {e}"),
    })?;
    let mut cells = ColSet::new();
    for v in &row.versions {
        cells.union_with(&v.cols);
    }
    cells.remove(SENTINEL);
    let mut values = Vec::with_capacity(cells.len());
    if !cells.is_empty() {
        let vanished = || -> Error {
            ExportError::RowVanished {
                table: table.name.clone(),
                key: key_literal(&key),
            }
            .into()
        };
        let at = locate(conn, table, &row.pk, &key)?.ok_or_else(vanished)?;
        let mut stmt = conn.prepare_cached(&table.select_cells_sql())?;
        let mut found = stmt.query(rusqlite::params_from_iter(at.iter()))?;
        let Some(r) = found.next()? else {
            return Err(vanished());
        };
        let table_refs = refs.get(&table.id).filter(|fks| {
            fks.iter()
                .any(|fk| fk.bits.iter().any(|&b| cells.contains(b)))
        });
        match table_refs {
            None => {
                for bit in cells.iter() {
                    values.push(Value::from_ref(r.get_ref(bit - 1)?));
                }
            }
            Some(fks) => {
                let all: Vec<Value> = (0..table.cells.len())
                    .map(|i| r.get_ref(i).map(Value::from_ref))
                    .collect::<rusqlite::Result<_>>()?;
                drop(found);
                let tagged = crate::catalog::refs::encode(conn, fks, &all)?;
                for bit in cells.iter() {
                    match tagged.iter().find(|(b, _)| *b == bit) {
                        Some((_, v)) => values.push(v.clone()),
                        None => values.push(all[bit - 1].clone()),
                    }
                }
            }
        }
    }
    writer.write_row(table_i as u32, &key, row.cl, &row.versions, &values)?;
    Ok(())
}
