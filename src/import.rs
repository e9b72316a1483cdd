//! Import: replaying a bundle's records into the app's tables with the
//! merge rules of [`crate::merge`], together with the watermark updates, in
//! the caller's single write transaction.
//!
//! Before any record is applied the header is checked against the tracked
//! schema (table by table, column by column) and local captured changes are
//! stamped, so they are ordered before the remote clocks they had not seen.
//! Every record is validated against its header (known table, columns, change
//! numbers inside the declared ranges) before it can touch a row. Writes are
//! made with triggers and foreign-key enforcement off on this connection (see
//! [`crate::Instance`]), so they are not captured as local changes, the app's
//! own triggers do not re-run effects that the origin already replicated, and
//! rows may arrive children first.
//!
//! A record the database refuses (a UNIQUE value another row holds, NOT
//! NULL, CHECK) or that would leave a dangling reference ([`crate::foreign`])
//! is retried once the rest of the bundle is in, then quarantined
//! ([`crate::quarantine`]); held changes from earlier imports are retried
//! too. Values that lose a merge to a concurrent change are logged
//! ([`crate::conflicts`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;

use rusqlite::{Connection, params_from_iter};
use serde::Serialize;

use crate::bundle::BundleReader;
use crate::bundle::format::TableDef;
use crate::colset::{ColSet, SENTINEL};
use crate::conflicts::Overwritten;
use crate::error::{BundleError, Error, ImportError};
use crate::foreign::{Broken, ForeignKeys};
use crate::hlc::{Hlc, now_unix_ms};
use crate::log::{load_row, save_row};
use crate::merge::{RowAction, RowState, Verdict, Version};
use crate::peers::{add_have, bind_sender, have_all, record_acks, touch};
use crate::quarantine::{Change, Reason, Refusal, held_count, held_numbers};
use crate::schema::{quote_ident, table_shape};
use crate::seqset::SeqSet;
use crate::session::Session;
use crate::site::SiteId;
use crate::tracked::TrackedTable;
use crate::value::{Value, encode_key, key_literal};

/// Counts for one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// The sender's name.
    pub from: String,
    /// The sender's site id.
    pub from_site_id: String,
    /// True if it was a full export.
    pub full: bool,
    /// Row records in the bundle.
    pub changes: u64,
    /// Records that changed a row.
    pub applied: u64,
    /// Records skipped: already known or older.
    pub skipped: u64,
    /// Of the skipped, already known.
    pub known: u64,
    /// Of the skipped, older than what is here.
    pub older: u64,
    /// Records of this bundle the database refused, kept in quarantine.
    pub quarantined: u64,
    /// Changes quarantined by earlier imports that fit now and were applied.
    pub released: u64,
    /// Changes in quarantine after this import, in all.
    pub held: u64,
    /// Values that lost to a concurrent change, added to the conflict log.
    pub overwritten: u64,
    /// Per table.
    pub tables: Vec<TableImport>,
    /// Local captured changes folded into the log first.
    pub captured: u64,
    /// Change numbers now missing, per origin name: a bundle was skipped or
    /// lost. The sender fills them on its next export to this instance.
    pub gaps: BTreeMap<String, String>,
    /// Things worth telling the operator.
    pub warnings: Vec<String>,
}

/// What a retry of the quarantine did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetryReport {
    /// Held changes applied and removed from quarantine.
    pub released: u64,
    /// Changes still held.
    pub held: u64,
    /// Values that lost to a concurrent change, added to the conflict log.
    pub overwritten: u64,
}

/// A bundle table resolved against the local catalog.
pub(crate) struct Mapped {
    /// Index of the table in the catalog.
    table: usize,
    /// Bundle bit → local bit (index 0 is the sentinel).
    bits: Vec<usize>,
}

/// Check a bundle's header against this instance before anything is
/// applied: not our own bundle, and every table and column it carries
/// matches the tracked schema.
pub(crate) fn preflight(
    conn: &Connection,
    s: &Session,
    header: &crate::bundle::Header,
) -> Result<Vec<Mapped>, Error> {
    if header.sender.id == s.local {
        return Err(ImportError::FromSelf {
            name: s.name.clone(),
        }
        .into());
    }
    s.catalog.check_live(conn)?;
    header
        .tables
        .iter()
        .map(|def| map_table(conn, s, def))
        .collect()
}

/// A clock more than this far ahead of ours is reported.
const CLOCK_AHEAD_WARN_MS: i64 = 60 * 60 * 1000;

/// Apply one bundle (already checksum-verified) inside the caller's write
/// transaction.
pub(crate) fn import<R: Read>(
    conn: &Connection,
    s: &mut Session,
    mut reader: BundleReader<R>,
) -> Result<ImportReport, Error> {
    let header = reader.header().clone();
    let mapped = preflight(conn, s, &header)?;
    let stamped = crate::stamp::stamp_pending(conn, s)?;

    // Learn of the sender and of the origins whose changes the bundle
    // covers; an origin only listed costs nothing and is not kept. Our own
    // entry is never renamed by a bundle.
    let covered: Vec<u32> = header
        .covers
        .iter()
        .filter(|c| !c.seqs.is_empty())
        .map(|c| c.origin)
        .collect();
    let mut origins: Vec<Option<(i64, SiteId)>> = Vec::with_capacity(header.origins.len());
    for (i, o) in header.origins.iter().enumerate() {
        let idx = if o.id == s.local {
            Some(s.local_idx)
        } else if covered.contains(&(i as u32)) || o.id == header.sender.id {
            Some(s.sites.intern(conn, o.id, &o.name)?)
        } else {
            s.sites.idx_of(&o.id)
        };
        origins.push(idx.map(|idx| (idx, o.id)));
    }
    let sender_idx = s
        .sites
        .intern(conn, header.sender.id, &header.sender.name)?;
    let mut covers: BTreeMap<i64, SeqSet> = BTreeMap::new();
    for c in &header.covers {
        if let Some(Some((idx, _))) = origins.get(c.origin as usize) {
            covers.entry(*idx).or_default().union_with(&c.seqs);
        }
    }
    let mut seen: BTreeMap<i64, SeqSet> = BTreeMap::new();
    for x in &header.seen {
        if let Some(Some((idx, _))) = origins.get(x.origin as usize) {
            seen.entry(*idx).or_default().union_with(&x.seqs);
        }
    }
    let mut warnings = stamped.warnings();
    notice_own_restore(s, &covers, &seen, &header.sender.name, &mut warnings)?;

    let mut ap = Applier::new(conn, s, &header.sender.name)?;
    // The latest clock seen per origin, to name a machine whose clock is ahead.
    let mut latest: HashMap<SiteId, Hlc> = HashMap::new();
    latest.insert(header.sender.id, Hlc(header.created));
    // Records refused, retried once the rest of the bundle is in: rows arrive
    // in key order, so a child may come before its parent, or a row may need
    // a UNIQUE value another row of the bundle frees. Past a memory budget
    // they wait in the quarantine table instead.
    let mut deferred: Vec<(Change, Refusal)> = Vec::new();
    let mut deferred_bytes = 0usize;
    while let Some(rec) = reader.next_row()? {
        let change = prepare(&rec, &mapped, s.catalog.tables(), &origins, &covers)?;
        for v in &change.versions {
            let e = latest.entry(v.site).or_default();
            *e = (*e).max(v.hlc);
        }
        match apply(conn, s, &mut ap, &change, Some(&seen))? {
            Ok(verdict) => ap.count(change.table, verdict),
            Err(refusal) if deferred_bytes < MAX_DEFERRED_BYTES => {
                deferred_bytes += change.size();
                deferred.push((change, refusal));
            }
            Err(refusal) => ap.spill(conn, s, &change, &refusal)?,
        }
    }
    let end = reader.finish()?;
    ap.settle(conn, s, deferred)?;

    let now = now_unix_ms();
    let max_hlc = latest.values().copied().max().unwrap_or_default();
    if let Some((site, ahead)) = latest
        .iter()
        .max_by_key(|(_, h)| **h)
        .filter(|(_, h)| h.unix_ms() > now + CLOCK_AHEAD_WARN_MS)
    {
        let hours = (ahead.unix_ms() - now) as f64 / 3_600_000.0;
        let name = s
            .sites
            .idx_of(site)
            .and_then(|i| s.sites.get(i))
            .map(|x| x.name.clone())
            .unwrap_or_else(|| site.to_string());
        warnings.push(format!(
            "the clock of '{name}' runs about {hours:.1} h ahead of this machine's; its edits will win over later ones made here until the clocks agree"
        ));
    }
    s.clock.observe(max_hlc, now)?;
    let tables: Vec<TableImport> = mapped.iter().map(|m| ap.counts[m.table].clone()).collect();
    let quarantined: u64 = tables.iter().map(|c| c.quarantined).sum();
    let held = held_count(conn)?;
    if quarantined > 0 {
        warnings.push(format!(
            "{quarantined} change(s) could not be applied yet and are kept in quarantine; \
             `fieldsync conflicts --db {}` lists them and why. They are retried at every import",
            crate::store::db_arg(conn)
        ));
    }
    let report = ImportReport {
        from: header.sender.name.clone(),
        from_site_id: header.sender.id.to_string(),
        full: header.full,
        changes: end.rows,
        applied: tables.iter().map(|c| c.applied).sum(),
        known: tables.iter().map(|c| c.known).sum(),
        older: tables.iter().map(|c| c.older).sum(),
        quarantined,
        released: ap.released,
        held,
        overwritten: ap.overwritten,
        tables,
        captured: stamped.captured,
        warnings,
        ..ImportReport::default()
    };
    let released = std::mem::take(&mut ap.released_numbers);
    record_watermarks(
        conn, s, &header, sender_idx, &seen, &covers, &released, report,
    )
}

/// Retry every held change now (`fieldsync conflicts --retry`), inside the
/// caller's write transaction with the import connection settings.
pub(crate) fn retry_held(conn: &Connection, s: &mut Session) -> Result<RetryReport, Error> {
    s.catalog.check_live(conn)?;
    crate::stamp::stamp_pending(conn, s)?;
    let mut ap = Applier::new(conn, s, "")?;
    ap.settle(conn, s, Vec::new())?;
    for (origin, set) in &ap.released_numbers {
        if *origin != s.local_idx {
            add_have(conn, *origin, set)?;
        }
    }
    s.save(conn)?;
    Ok(RetryReport {
        released: ap.released,
        held: held_count(conn)?,
        overwritten: ap.overwritten,
    })
}

/// State shared by the records of one import.
struct Applier {
    fks: ForeignKeys,
    sql_cache: HashMap<(i64, ColSet, bool), String>,
    /// What this instance had before the import, to tell a change never
    /// received from one it already merged.
    have_before: BTreeMap<i64, SeqSet>,
    sender: String,
    now_ms: i64,
    /// Per catalog table.
    counts: Vec<TableImport>,
    /// Quarantine entries this import wrote while reading the bundle.
    spilled: HashSet<i64>,
    /// Entries from earlier imports applied now, and their change numbers.
    released: u64,
    released_numbers: BTreeMap<i64, SeqSet>,
    overwritten: u64,
}

impl Applier {
    fn new(conn: &Connection, s: &Session, sender: &str) -> Result<Applier, Error> {
        Ok(Applier {
            fks: ForeignKeys::load(conn, s.catalog.tables())?,
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
            spilled: HashSet::new(),
            released: 0,
            released_numbers: BTreeMap::new(),
            overwritten: 0,
        })
    }

    fn count(&mut self, table: usize, verdict: Verdict) {
        let c = &mut self.counts[table];
        match verdict {
            Verdict::Applied => c.applied += 1,
            Verdict::Known => c.known += 1,
            Verdict::Older => c.older += 1,
        }
    }

    /// Hold a refused record in the quarantine table right away.
    fn spill(
        &mut self,
        conn: &Connection,
        s: &Session,
        change: &Change,
        refusal: &Refusal,
    ) -> Result<(), Error> {
        let table = &s.catalog.tables()[change.table];
        let id = crate::quarantine::hold(
            conn,
            change.table,
            table,
            change,
            refusal,
            &self.sender,
            self.now_ms,
        )?;
        self.spilled.insert(id);
        Ok(())
    }

    /// Retry the refused records and every held change until a round makes
    /// no progress (a child waits for its parent, which may wait for its
    /// own), then hold what is left. A refused record of a row that is
    /// already held joins that entry, since the pieces of one row may only
    /// fit together (an insert held for a UNIQUE clash, and the edit that
    /// resolves it).
    fn settle(
        &mut self,
        conn: &Connection,
        s: &mut Session,
        deferred: Vec<(Change, Refusal)>,
    ) -> Result<(), Error> {
        struct Entry {
            /// `fieldsync_quarantine.id`, or none for a record of this import.
            id: Option<i64>,
            change: Change,
            /// Pieces of this import in it: counted for the bundle's tables.
            fresh: bool,
            /// The stored record no longer matches `change`.
            dirty: bool,
            refusal: Option<Refusal>,
        }
        let mut entries: Vec<Entry> = Vec::new();
        let mut by_row: HashMap<(usize, Vec<u8>), usize> = HashMap::new();
        for held in crate::quarantine::load_all(conn, s.catalog.tables())? {
            match held.change {
                Ok(change) => {
                    by_row.insert((change.table, change.pk.clone()), entries.len());
                    entries.push(Entry {
                        id: Some(held.id),
                        fresh: self.spilled.contains(&held.id),
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
                    crate::quarantine::still_held(conn, held.id, &refusal, self.now_ms)?;
                }
            }
        }
        for (change, refusal) in deferred {
            let row = (change.table, change.pk.clone());
            if let Some(&i) = by_row.get(&row) {
                if let Some(joined) = crate::quarantine::combine(&entries[i].change, &change) {
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
                dirty: true,
                refusal: Some(refusal),
            });
        }
        loop {
            let mut progress = false;
            let mut still = Vec::new();
            for mut e in entries {
                match apply(conn, s, self, &e.change, None)? {
                    Ok(verdict) => {
                        progress = true;
                        if e.fresh {
                            self.count(e.change.table, verdict);
                        }
                        if let Some(id) = e.id {
                            crate::quarantine::release(conn, id)?;
                            if !self.spilled.contains(&id) {
                                self.released += 1;
                                for v in &e.change.versions {
                                    if let Some(idx) = s.sites.idx_of(&v.site) {
                                        self.released_numbers
                                            .entry(idx)
                                            .or_default()
                                            .insert_range(v.seq, v.seq);
                                    }
                                }
                            }
                        }
                    }
                    // The newest reason is the one that still holds.
                    Err(refusal) => {
                        e.refusal = Some(refusal);
                        still.push(e);
                    }
                }
            }
            entries = still;
            if !progress {
                break;
            }
        }
        for e in entries {
            let table = &s.catalog.tables()[e.change.table];
            let refusal = e.refusal.unwrap_or(Refusal {
                reason: Reason::Other,
                detail: "refused".into(),
            });
            match e.id {
                Some(id) => {
                    if e.dirty {
                        crate::quarantine::rewrite(conn, id, table, &e.change)?;
                    }
                    crate::quarantine::still_held(conn, id, &refusal, self.now_ms)?;
                }
                None => {
                    crate::quarantine::hold(
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
}

/// Most bytes of records held back in memory for a retry within one
/// import: past this, refused records wait in the quarantine table.
const MAX_DEFERRED_BYTES: usize = 64 << 20;

/// Largest causal length accepted from a bundle; local deletes and
/// re-inserts add one at a time, so this never runs out.
const MAX_CL: u64 = 1 << 62;

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
                origin: site_name(s, &v.site),
                seq: v.seq,
            }
            .into();
        }
    }
    e
}

fn site_name(s: &Session, site: &SiteId) -> String {
    s.sites
        .idx_of(site)
        .and_then(|i| s.sites.get(i))
        .map(|x| x.name.clone())
        .unwrap_or_else(|| site.to_string())
}

/// Check a record against its header: known table, well-formed key, change
/// numbers inside the declared ranges, disjoint cells, one value per cell.
fn prepare(
    rec: &crate::bundle::RowRecord,
    mapped: &[Mapped],
    tables: &[TrackedTable],
    origins: &[Option<(i64, SiteId)>],
    covers: &BTreeMap<i64, SeqSet>,
) -> Result<Change, Error> {
    let m = mapped
        .get(rec.table as usize)
        .ok_or_else(|| malformed(format!("table #{} is not in the header", rec.table)))?;
    let table = &tables[m.table];
    let name = || format!("'{}'", table.name);
    if rec.key.len() != table.key.len() || rec.key.contains(&Value::Null) {
        return Err(malformed(format!(
            "a record of table {} has a malformed key",
            name()
        )));
    }
    if rec.versions.is_empty() {
        return Err(malformed(format!(
            "a record of table {} has no versions",
            name()
        )));
    }
    if rec.cl == 0 || rec.cl > MAX_CL {
        return Err(malformed(format!(
            "a record of table {} has causal length {}, outside 1..=2^62",
            name(),
            rec.cl
        )));
    }
    let mut versions = Vec::with_capacity(rec.versions.len());
    let mut all_cells = ColSet::new();
    for v in &rec.versions {
        let Some(&Some((idx, site))) = origins.get(v.origin as usize) else {
            return Err(malformed(format!(
                "a change of origin #{} lies outside the ranges the header declares",
                v.origin
            )));
        };
        if v.seq == 0
            || v.seq > i64::MAX as u64
            || !covers.get(&idx).is_some_and(|set| set.contains(v.seq))
        {
            return Err(malformed(format!(
                "change {site}#{} lies outside the ranges the header declares",
                v.seq
            )));
        }
        let mut cols = ColSet::new();
        for bit in v.cols.iter() {
            let local = m.bits.get(bit).copied().ok_or_else(|| {
                malformed(format!(
                    "a record of table {} names column #{bit}, which the header does not list",
                    name()
                ))
            })?;
            cols.insert(local);
        }
        if cols.is_empty()
            || all_cells.intersects(&cols)
            || (rec.cl % 2 == 0 && cols != ColSet::of(&[SENTINEL]))
        {
            return Err(malformed(format!(
                "a record of table {} has inconsistent versions",
                name()
            )));
        }
        all_cells.union_with(&cols);

        versions.push(Version {
            site,
            seq: v.seq,
            hlc: Hlc(v.hlc),
            cols,
        });
    }
    // Values arrive in ascending bundle-bit order; key them by local bit.
    let mut bundle_bits: Vec<usize> = rec
        .versions
        .iter()
        .flat_map(|v| v.cols.iter())
        .filter(|&b| b != SENTINEL)
        .collect();
    bundle_bits.sort_unstable();
    if bundle_bits.len() != rec.values.len() {
        return Err(malformed(format!(
            "a record of table {} has {} values for {} cells",
            name(),
            rec.values.len(),
            bundle_bits.len()
        )));
    }
    let mut values: Vec<(usize, Value)> = bundle_bits
        .iter()
        .map(|&b| m.bits[b])
        .zip(rec.values.iter().cloned())
        .collect();
    values.sort_by_key(|(b, _)| *b);
    Ok(Change {
        table: m.table,
        key: rec.key.clone(),
        pk: encode_key(&rec.key),
        cl: rec.cl,
        versions,
        values,
    })
}

/// Merge one change into its row and write the result to the app table and
/// the log. A refusal leaves nothing of the change behind. `seen` is the
/// sender's seen-vector (none when retrying a held change), used to tell
/// concurrent edits from normal ones for the conflict log.
fn apply(
    conn: &Connection,
    s: &Session,
    ap: &mut Applier,
    c: &Change,
    seen: Option<&BTreeMap<i64, SeqSet>>,
) -> Result<Result<Verdict, Refusal>, Error> {
    let table = &s.catalog.tables()[c.table];
    let mut state = load_row(conn, &s.sites, table.id, &c.pk)?;
    let before = state.clone();
    let outcome = state
        .merge(c.cl, &c.versions)
        .map_err(|e| ImportError::SequenceReused {
            origin: site_name(s, &e.site),
            seq: e.seq,
        })?;
    let losses = losses(conn, s, ap, table, c, &before, &state, seen)?;
    let guarded = outcome.action != RowAction::None && ap.fks.involves(&table.name);
    if guarded {
        conn.prepare_cached("SAVEPOINT fieldsync_change")?
            .execute([])?;
    }
    let written = write_row(conn, ap, table, c, &before, &state, &outcome.action);
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
        Ok(Ok(())) => {}
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
        crate::conflicts::record(conn, &losses)?;
        ap.overwritten += losses.len() as u64;
    }
    Ok(Ok(outcome.verdict))
}

/// Write the merge's decision to the app table, then check the row's
/// references. `Err` is a failure of the database; `Ok(Err)` a refusal.
fn write_row(
    conn: &Connection,
    ap: &mut Applier,
    table: &TrackedTable,
    c: &Change,
    before: &RowState,
    after: &RowState,
    action: &RowAction,
) -> Result<Result<(), Refusal>, Error> {
    match action {
        RowAction::None => {}
        RowAction::Delete => {
            let referenced = ap.fks.referenced_values(conn, table, &c.key)?;
            let sql = format!(
                "DELETE FROM {} WHERE {}",
                quote_ident(&table.name),
                table.key_predicate()
            );
            if let Err(e) = conn
                .prepare_cached(&sql)?
                .execute(params_from_iter(c.key.iter()))
            {
                return refused(conn, table, c, e, false);
            }
            if let Some(broken) = ap.fks.check_deleted(conn, &referenced)? {
                return Ok(Err(broken_refusal(broken)));
            }
        }
        RowAction::Write(cells) => {
            let mut args: Vec<&Value> = c.key.iter().collect();
            for bit in cells.iter() {
                args.push(
                    c.value(bit)
                        .ok_or_else(|| malformed("a won cell has no value".into()))?,
                );
            }
            // A row the log knows as live is in the table: UPDATE it, since
            // an upsert would check NOT NULL on the cells it does not carry.
            let mut done = before.is_live() && cells.is_empty();
            if before.is_live() && !cells.is_empty() {
                let sql = ap
                    .sql_cache
                    .entry((table.id, cells.clone(), false))
                    .or_insert_with(|| update_sql(table, cells));
                match conn
                    .prepare_cached(sql)?
                    .execute(params_from_iter(args.iter()))
                {
                    Ok(n) => done = n > 0,
                    Err(e) => return refused(conn, table, c, e, false),
                }
            }
            if !done {
                let sql = ap
                    .sql_cache
                    .entry((table.id, cells.clone(), true))
                    .or_insert_with(|| upsert_sql(table, cells));
                // Only some cells of a row this instance never had: the
                // insert that created it is in a bundle not imported yet.
                let partial = after.holder(SENTINEL).is_none();
                if let Err(e) = conn
                    .prepare_cached(sql)?
                    .execute(params_from_iter(args.iter()))
                {
                    return refused(conn, table, c, e, partial);
                }
            }
            if let Some(broken) = ap.fks.check_row(conn, table, &c.key)? {
                return Ok(Err(broken_refusal(broken)));
            }
        }
    }
    Ok(Ok(()))
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
fn refused(
    conn: &Connection,
    table: &TrackedTable,
    c: &Change,
    e: rusqlite::Error,
    partial: bool,
) -> Result<Result<(), Refusal>, Error> {
    let rusqlite::Error::SqliteFailure(f, msg) = &e else {
        return Err(e.into());
    };
    if f.code != rusqlite::ErrorCode::ConstraintViolation {
        return Err(e.into());
    }
    let message = msg.clone().unwrap_or_else(|| f.to_string());
    use rusqlite::ffi;
    let reason = match f.extended_code {
        ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => Reason::Unique,
        ffi::SQLITE_CONSTRAINT_NOTNULL => Reason::NotNull,
        ffi::SQLITE_CONSTRAINT_CHECK => Reason::Check,
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
            .key
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
            (0..table.key.len()).map(|i| r.get::<_, Value>(i)).collect()
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

/// The values this merge overwrites or rejects that a concurrent change
/// wrote (see [`crate::conflicts`]), read before the app row is written.
#[allow(clippy::too_many_arguments)]
fn losses(
    conn: &Connection,
    s: &Session,
    ap: &Applier,
    table: &TrackedTable,
    c: &Change,
    before: &RowState,
    after: &RowState,
    seen: Option<&BTreeMap<i64, SeqSet>>,
) -> Result<Vec<Overwritten>, Error> {
    let new_here = |v: &Version| {
        v.site != s.local
            && !s
                .sites
                .idx_of(&v.site)
                .and_then(|i| ap.have_before.get(&i))
                .is_some_and(|set| set.contains(v.seq))
    };
    // A change held here that the sender had not seen when it exported.
    let unseen = |h: &Version| match seen {
        None => true,
        Some(seen) => !s
            .sites
            .idx_of(&h.site)
            .and_then(|i| seen.get(&i))
            .is_some_and(|set| set.contains(h.seq)),
    };
    let cell_name = |bit: usize| table.cells.get(bit - 1).map(String::as_str).unwrap_or("");
    // (bit, loser, winner, loser is the incoming one)
    let mut cases: Vec<(usize, &Version, &Version, bool)> = Vec::new();
    let reason;
    if c.cl < before.cl {
        reason = if before.is_live() {
            "row re-created"
        } else {
            "row deleted"
        };
        if let Some(winner) = before.holder(SENTINEL) {
            for v in c.versions.iter().filter(|v| new_here(v)) {
                for bit in v.cols.iter().filter(|&b| b != SENTINEL) {
                    cases.push((bit, v, winner, true));
                }
            }
        }
    } else if c.cl > before.cl {
        reason = if c.cl % 2 == 0 {
            "row deleted"
        } else {
            "row re-created"
        };
        if before.is_live() {
            if let Some(winner) = c.versions.iter().find(|v| v.cols.contains(SENTINEL)) {
                for h in before.versions.iter().filter(|h| unseen(h)) {
                    for bit in h.cols.iter().filter(|&b| b != SENTINEL) {
                        cases.push((bit, h, winner, false));
                    }
                }
            }
        }
    } else {
        reason = "later edit";
        for v in &c.versions {
            for bit in v.cols.iter().filter(|&b| b != SENTINEL) {
                let (Some(was), Some(now)) = (before.holder(bit), after.holder(bit)) else {
                    continue;
                };
                if now.same_change(v) && !was.same_change(v) && unseen(was) {
                    cases.push((bit, was, v, false));
                } else if !now.same_change(v) && new_here(v) {
                    cases.push((bit, v, now, true));
                }
            }
        }
    }
    if cases.is_empty() {
        return Ok(Vec::new());
    }
    // The app row's values as they are before this change is written.
    let here: Option<Vec<Value>> = if before.is_live() {
        let sql = table.select_cells_sql();
        conn.prepare_cached(&sql)?
            .query_row(params_from_iter(c.key.iter()), |r| {
                (0..table.cells.len())
                    .map(|i| r.get::<_, Value>(i))
                    .collect()
            })
            .ok()
    } else {
        None
    };
    let here_value = |bit: usize| {
        here.as_ref()
            .and_then(|row| row.get(bit - 1).cloned())
            .unwrap_or(Value::Null)
    };
    let incoming_value = |bit: usize| c.value(bit).cloned().unwrap_or(Value::Null);
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
        if lost == won && reason == "later edit" {
            continue;
        }
        out.push(Overwritten::new(
            &table.name,
            key.clone(),
            cell_name(bit),
            (lost, site_name(s, &loser.site), loser.hlc),
            (won, site_name(s, &winner.site), winner.hlc),
            reason,
            ap.now_ms,
        ));
    }
    Ok(out)
}

fn malformed(detail: String) -> Error {
    BundleError::Malformed { detail }.into()
}

/// The most changes of ours a peer may hold beyond our counter (a restore
/// from a backup); a bundle claiming more is refused rather than trusted to
/// push our numbering towards its limit.
const MAX_RESTORE_JUMP: u64 = 1 << 40;

/// If another instance has changes of ours numbered beyond our counter, this
/// database was restored from a backup (or copied): numbering continues above
/// them so no number is used twice, and the ones missing here are recorded as
/// lost, so they show as gaps and peers send them back.
fn notice_own_restore(
    s: &mut Session,
    covers: &BTreeMap<i64, SeqSet>,
    seen: &BTreeMap<i64, SeqSet>,
    sender: &str,
    warnings: &mut Vec<String>,
) -> Result<(), Error> {
    let claimed = [covers.get(&s.local_idx), seen.get(&s.local_idx)]
        .into_iter()
        .flatten()
        .map(SeqSet::max)
        .max()
        .unwrap_or(0);
    if claimed > s.seq.saturating_add(MAX_RESTORE_JUMP) {
        return Err(malformed(format!(
            "'{sender}' claims {claimed} changes made on this instance, which has made {}",
            s.seq
        )));
    }
    if claimed > s.seq {
        s.lost.insert_range(s.seq + 1, claimed);
        warnings.push(format!(
            "'{sender}' has changes #{}-#{claimed} made on this instance that this database does not: it was \
             probably restored from a backup or copied. New changes are numbered from #{}; the missing ones \
             come back with the next exports to this instance",
            s.seq + 1,
            claimed + 1
        ));
        s.seq = claimed;
    }
    Ok(())
}

/// Record what the bundle covered and what its sender acknowledged; note
/// gaps that appeared.
#[allow(clippy::too_many_arguments)]
fn record_watermarks(
    conn: &Connection,
    s: &mut Session,
    header: &crate::bundle::Header,
    sender_idx: i64,
    seen: &BTreeMap<i64, SeqSet>,
    covers: &BTreeMap<i64, SeqSet>,
    released: &BTreeMap<i64, SeqSet>,
    mut report: ImportReport,
) -> Result<ImportReport, Error> {
    // Held changes are not received yet: their numbers stay out of "have"
    // (and show as missing to the sender) until they are applied.
    let held = held_numbers(conn, &s.sites)?;
    let with_held = |mut have: BTreeMap<i64, SeqSet>| {
        for (origin, set) in &held {
            have.entry(*origin).or_default().union_with(set);
        }
        have
    };
    let before = with_held(have_all(conn, s)?);
    let empty = SeqSet::new();
    for (origin, set) in covers.iter().chain(released) {
        let set = set.minus(held.get(origin).unwrap_or(&empty));
        if *origin == s.local_idx {
            // Our own changes sent back to us: no longer missing.
            s.lost = s.lost.minus(&set);
        } else {
            add_have(conn, *origin, &set)?;
        }
    }
    let after = with_held(have_all(conn, s)?);
    for origin in covers.keys() {
        let gaps = after.get(origin).map(SeqSet::gaps).unwrap_or_default();
        let old = before.get(origin).map(SeqSet::gaps).unwrap_or_default();
        if !gaps.minus(&old).is_empty() {
            let name = s
                .sites
                .get(*origin)
                .map(|site| site.name.clone())
                .unwrap_or_default();
            report.gaps.insert(name, gaps.to_string());
        }
    }
    let peer = bind_sender(conn, sender_idx, &header.sender.name)?;
    let lost = record_acks(conn, peer.id, header.created, seen, &header.lost)?;
    if lost > 0 {
        report.warnings.push(format!(
            "'{}' no longer has {lost} changes it had acknowledged (was it restored from a backup?); \
             the next export to it sends them again",
            header.sender.name
        ));
    }
    touch(conn, peer.id, true, now_unix_ms())?;
    s.save(conn)?;
    report.skipped = report.known + report.older;
    Ok(report)
}

/// Resolve a table of the bundle against the local catalog, column by column.
fn map_table(conn: &Connection, s: &Session, def: &TableDef) -> Result<Mapped, Error> {
    let Some(local) = s.catalog.by_name(&def.name) else {
        let reason = match table_shape(conn, &def.name) {
            Ok(_) => format!(
                "is not tracked here; run `fieldsync track --db {} {}` first",
                crate::store::db_arg(conn),
                def.name
            ),
            Err(_) => "does not exist in this database".to_owned(),
        };
        return Err(ImportError::UnknownTable {
            table: def.name.clone(),
            reason,
        }
        .into());
    };
    let mismatch = |column: &str, detail: &str| -> Error {
        ImportError::SchemaMismatch {
            table: local.name.clone(),
            column: column.to_owned(),
            detail: detail.to_owned(),
        }
        .into()
    };
    if def.key != local.key {
        let column = def
            .key
            .iter()
            .zip(local.key.iter())
            .find(|(a, b)| a != b)
            .map(|(a, _)| a.as_str());
        let column = column
            .or_else(|| def.key.get(local.key.len()).map(String::as_str))
            .or_else(|| local.key.get(def.key.len()).map(String::as_str));
        return Err(mismatch(
            column.unwrap_or(""),
            &format!(
                "is not where the keys differ: bundle key ({}) vs local key ({})",
                def.key.join(", "),
                local.key.join(", ")
            ),
        ));
    }
    let mut bits = vec![SENTINEL];
    for c in &def.cells {
        match local.bit_of(c) {
            Some(b) => bits.push(b),
            None => return Err(mismatch(c, "is in the bundle but not tracked here")),
        }
    }
    if let Some(extra) = local.cells.iter().find(|c| !def.cells.contains(c)) {
        return Err(mismatch(
            extra,
            "is tracked here but missing from the bundle (the sender's table has no such column)",
        ));
    }
    let table = s
        .catalog
        .tables()
        .iter()
        .position(|t| t.id == local.id)
        .ok_or_else(|| {
            malformed(format!(
                "table '{}' is missing from the catalog",
                local.name
            ))
        })?;
    Ok(Mapped { table, bits })
}

/// `UPDATE … SET cells WHERE key`, parameters: key first, then cells.
fn update_sql(table: &TrackedTable, cells: &ColSet) -> String {
    let n = table.key.len();
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

/// `INSERT … ON CONFLICT(key) DO UPDATE` writing the key and `cells`.
fn upsert_sql(table: &TrackedTable, cells: &ColSet) -> String {
    let mut cols: Vec<String> = table.key.iter().map(|k| quote_ident(k)).collect();
    let cell_cols: Vec<String> = cells
        .iter()
        .map(|b| quote_ident(&table.cells[b - 1]))
        .collect();
    cols.extend(cell_cols.iter().cloned());
    let params = (1..=cols.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
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
        "INSERT OR ABORT INTO {}({}) VALUES ({params}) ON CONFLICT({conflict}) DO {action}",
        quote_ident(&table.name),
        cols.join(", ")
    )
}
