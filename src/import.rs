//! Import: replaying a bundle's records into the app's tables with the
//! merge rules of [`crate::merge`], together with the watermark updates, in
//! the caller's single write transaction.
//!
//! Before any record is applied the header is checked against the tracked
//! schema (table by table, column by column) and local captured changes are
//! stamped, so they are ordered before the remote clocks they had not seen.
//! Every record is validated against its header (known table, columns, change
//! numbers inside the declared ranges) before it can touch a row. Writes are
//! made with triggers off on this connection (see [`crate::Instance`]), so
//! they are not captured as local changes and the app's own triggers do not
//! re-run effects that the origin already replicated.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use rusqlite::{Connection, params_from_iter};
use serde::Serialize;

use crate::bundle::BundleReader;
use crate::bundle::format::TableDef;
use crate::colset::{ColSet, SENTINEL};
use crate::error::{BundleError, Error, ImportError};
use crate::hlc::{Hlc, now_unix_ms};
use crate::log::{load_row, save_row};
use crate::merge::{RowAction, Verdict, Version};
use crate::peers::{add_have, bind_sender, have_all, record_acks, touch};
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

/// A bundle table resolved against the local catalog.
pub(crate) struct Mapped {
    table: TrackedTable,
    /// Bundle bit → local bit (index 0 is the sentinel).
    bits: Vec<usize>,
    /// Affinity of each local key column ([`crate::keyform`]).
    key_affinity: Vec<crate::schema::Affinity>,
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

    let mut counts: Vec<TableImport> = mapped
        .iter()
        .map(|m| TableImport {
            table: m.table.name.clone(),
            ..TableImport::default()
        })
        .collect();
    let mut sql_cache: HashMap<(i64, ColSet, bool), String> = HashMap::new();
    // The latest clock seen per origin, to name a machine whose clock is ahead.
    let mut latest: HashMap<SiteId, Hlc> = HashMap::new();
    latest.insert(header.sender.id, Hlc(header.created));
    // Records a constraint refused, retried once the rest of the bundle is in:
    // rows arrive in key order, so a row may need a value another row frees
    // (a UNIQUE code moved from one row to another).
    let mut deferred: Vec<(Prepared, Error)> = Vec::new();
    let mut deferred_bytes = 0usize;
    while let Some(rec) = reader.next_row()? {
        let prepared = prepare(conn, &rec, &mapped, &origins, &covers)?;
        for v in &prepared.versions {
            let e = latest.entry(v.site).or_default();
            *e = (*e).max(v.hlc);
        }
        match apply(conn, s, &mapped[prepared.table], &prepared, &mut sql_cache) {
            Ok(verdict) => counts[prepared.table].count(verdict),
            Err(e) if is_constraint(&e) && deferred_bytes < MAX_DEFERRED_BYTES => {
                deferred_bytes += prepared.size();
                deferred.push((prepared, e))
            }
            Err(e) => return Err(e),
        }
    }
    let end = reader.finish()?;
    while !deferred.is_empty() {
        // Alternate the direction: a chain of records each needing the value
        // the next one frees (a UNIQUE column renumbered) then goes through
        // in one pass instead of one record per pass.
        deferred.reverse();
        let before = deferred.len();
        let mut still = Vec::new();
        for (prepared, _) in deferred {
            match apply(conn, s, &mapped[prepared.table], &prepared, &mut sql_cache) {
                Ok(verdict) => counts[prepared.table].count(verdict),
                Err(e) if is_constraint(&e) => still.push((prepared, e)),
                Err(e) => return Err(e),
            }
        }
        if still.len() == before {
            if let Some((_, e)) = still.into_iter().next() {
                return Err(e);
            }
            break;
        }
        deferred = still;
    }

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
    let report = ImportReport {
        from: header.sender.name.clone(),
        from_site_id: header.sender.id.to_string(),
        full: header.full,
        changes: end.rows,
        applied: counts.iter().map(|c| c.applied).sum(),
        known: counts.iter().map(|c| c.known).sum(),
        older: counts.iter().map(|c| c.older).sum(),
        tables: counts,
        captured: stamped.captured,
        warnings,
        ..ImportReport::default()
    };
    record_watermarks(conn, s, &header, sender_idx, &seen, &covers, report)
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
fn record_watermarks(
    conn: &Connection,
    s: &mut Session,
    header: &crate::bundle::Header,
    sender_idx: i64,
    seen: &BTreeMap<i64, SeqSet>,
    covers: &BTreeMap<i64, SeqSet>,
    mut report: ImportReport,
) -> Result<ImportReport, Error> {
    let before = have_all(conn, s)?;
    for (origin, set) in covers {
        if *origin == s.local_idx {
            // Our own changes sent back to us: no longer missing.
            s.lost = s.lost.minus(set);
        } else {
            add_have(conn, *origin, set)?;
        }
    }
    let after = have_all(conn, s)?;
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

/// Most bytes of records held back for a retry within one import: past
/// this, a refused record fails the import at once.
const MAX_DEFERRED_BYTES: usize = 64 << 20;

/// Largest causal length accepted from a bundle; local deletes and
/// re-inserts add one at a time, so this never runs out.
const MAX_CL: u64 = 1 << 62;

impl Prepared {
    /// Approximate memory held by the record.
    fn size(&self) -> usize {
        let value = |v: &Value| match v {
            Value::Text(b) | Value::Blob(b) => b.len() + 32,
            _ => 32,
        };
        self.key.iter().map(value).sum::<usize>()
            + self.values.values().map(value).sum::<usize>()
            + self.pk.len()
            + self.versions.len() * 64
    }
}

/// A change number already used by another row in the log: the origin
/// numbered two changes alike (it was restored from an old backup).
fn reused_number(conn: &Connection, s: &Session, p: &Prepared, e: Error) -> Error {
    let is_unique = matches!(&e, Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::ConstraintViolation);
    if !is_unique {
        return e;
    }
    for v in &p.versions {
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
        if other.is_some_and(|pk| pk != p.pk) {
            let name = s
                .sites
                .get(origin)
                .map(|site| site.name.clone())
                .unwrap_or_else(|| v.site.to_string());
            return ImportError::SequenceReused {
                origin: name,
                seq: v.seq,
            }
            .into();
        }
    }
    e
}

impl TableImport {
    fn count(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Applied => self.applied += 1,
            Verdict::Known => self.known += 1,
            Verdict::Older => self.older += 1,
        }
    }
}

/// A record checked against its header and mapped to local bits.
struct Prepared {
    /// Index into the mapped tables.
    table: usize,
    key: Vec<Value>,
    pk: Vec<u8>,
    cl: u64,
    versions: Vec<Version>,
    /// Values by local bit.
    values: HashMap<usize, Value>,
}

/// Check a record against its header: known table, well-formed key, change
/// numbers inside the declared ranges, disjoint cells, one value per cell.
fn prepare(
    conn: &Connection,
    rec: &crate::bundle::RowRecord,
    mapped: &[Mapped],
    origins: &[Option<(i64, SiteId)>],
    covers: &BTreeMap<i64, SeqSet>,
) -> Result<Prepared, Error> {
    let table = rec.table as usize;
    let m = mapped
        .get(table)
        .ok_or_else(|| malformed(format!("table #{} is not in the header", rec.table)))?;
    // SQLite stores a NaN as NULL: a key holding one is no key either.
    let null_like =
        |v: &Value| matches!(v, Value::Null) || matches!(v, Value::Real(r) if r.is_nan());
    if rec.key.len() != m.table.key.len() || rec.key.iter().any(null_like) {
        return Err(malformed(format!(
            "a record of table '{}' has a malformed key",
            m.table.name
        )));
    }
    if rec.versions.is_empty() {
        return Err(malformed(format!(
            "a record of table '{}' has no versions",
            m.table.name
        )));
    }
    if rec.cl == 0 || rec.cl > MAX_CL {
        return Err(malformed(format!(
            "a record of table '{}' has causal length {}, outside 1..=2^62",
            m.table.name, rec.cl
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
                    "a record of table '{}' names column #{bit}, which the header does not list",
                    m.table.name
                ))
            })?;
            cols.insert(local);
        }
        // One change listed twice (with two clocks, the merge would keep
        // one and a re-import refuse the other as a reused number).
        let repeated = versions
            .iter()
            .any(|x: &Version| x.site == site && x.seq == v.seq);
        if cols.is_empty()
            || repeated
            || all_cells.intersects(&cols)
            || (rec.cl % 2 == 0 && cols != ColSet::of(&[SENTINEL]))
        {
            return Err(malformed(format!(
                "a record of table '{}' has inconsistent versions",
                m.table.name
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
            "a record of table '{}' has {} values for {} cells",
            m.table.name,
            rec.values.len(),
            bundle_bits.len()
        )));
    }
    let values = bundle_bits
        .iter()
        .map(|&b| m.bits[b])
        .zip(rec.values.iter().cloned())
        .collect();
    // The key as this table stores it, so the log finds the row the table holds.
    let key = crate::keyform::stored_key(conn, &m.key_affinity, &rec.key)?;
    Ok(Prepared {
        table,
        pk: encode_key(&key),
        key,
        cl: rec.cl,
        versions,
        values,
    })
}

/// Merge one record into its row and write the result to the app table and
/// the log. On error nothing of this record is written to the log.
fn apply(
    conn: &Connection,
    s: &Session,
    m: &Mapped,
    p: &Prepared,
    sql_cache: &mut HashMap<(i64, ColSet, bool), String>,
) -> Result<Verdict, Error> {
    let mut state = load_row(conn, &s.sites, m.table.id, &p.pk)?;
    let before = state.clone();
    let outcome = state
        .merge(p.cl, &p.versions)
        .map_err(|e| ImportError::SequenceReused {
            origin: s
                .sites
                .idx_of(&e.site)
                .and_then(|i| s.sites.get(i))
                .map(|site| site.name.clone())
                .unwrap_or_else(|| e.site.to_string()),
            seq: e.seq,
        })?;
    match &outcome.action {
        RowAction::None => {}
        RowAction::Delete => {
            let sql = format!(
                "DELETE FROM {} WHERE {}",
                quote_ident(&m.table.name),
                m.table.key_predicate()
            );
            conn.prepare_cached(&sql)?
                .execute(params_from_iter(p.key.iter()))
                .map_err(|e| constraint(&m.table, &p.key, e))?;
        }
        RowAction::Write(cells) => {
            let mut args: Vec<&Value> = p.key.iter().collect();
            for bit in cells.iter() {
                args.push(
                    p.values
                        .get(&bit)
                        .ok_or_else(|| malformed("a won cell has no value".into()))?,
                );
            }
            // A row the log knows as live is in the table: UPDATE it, since
            // an upsert would check NOT NULL on the cells it does not carry.
            let mut done = before.is_live() && cells.is_empty();
            if before.is_live() && !cells.is_empty() {
                let sql = sql_cache
                    .entry((m.table.id, cells.clone(), false))
                    .or_insert_with(|| update_sql(&m.table, cells));
                let n = conn
                    .prepare_cached(sql)?
                    .execute(params_from_iter(args.iter()))
                    .map_err(|e| constraint(&m.table, &p.key, e))?;
                done = n > 0;
            }
            if !done {
                let sql = sql_cache
                    .entry((m.table.id, cells.clone(), true))
                    .or_insert_with(|| upsert_sql(&m.table, cells));
                // Only some cells of a row this instance never had: the
                // insert that created it is in a bundle not imported yet.
                let partial = state.holder(SENTINEL).is_none();
                conn.prepare_cached(sql)?
                    .execute(params_from_iter(args.iter()))
                    .map_err(|e| match constraint(&m.table, &p.key, e) {
                        Error::Import(ImportError::Constraint { table, key, detail })
                            if partial =>
                        {
                            ImportError::NeedsEarlierBundle { table, key, detail }.into()
                        }
                        other => other,
                    })?;
            }
        }
    }
    save_row(conn, &s.sites, m.table.id, &p.pk, &before, &state)
        .map_err(|e| reused_number(conn, s, p, e))?;
    Ok(outcome.verdict)
}

fn is_constraint(e: &Error) -> bool {
    matches!(
        e,
        Error::Import(ImportError::Constraint { .. } | ImportError::NeedsEarlierBundle { .. })
    )
}

fn malformed(detail: String) -> Error {
    BundleError::Malformed { detail }.into()
}

fn constraint(table: &TrackedTable, key: &[Value], e: rusqlite::Error) -> Error {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            ImportError::Constraint {
                table: table.name.clone(),
                key: key_literal(key),
                detail: msg.clone().unwrap_or_else(|| f.to_string()),
            }
            .into()
        }
        _ => e.into(),
    }
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
    Ok(Mapped {
        key_affinity: crate::keyform::key_affinities(conn, local)?,
        table: local.clone(),
        bits,
    })
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
