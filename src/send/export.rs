//! Export: choosing what a bundle carries and streaming it out.
//!
//! A delta export to a peer carries, per origin, the change numbers the peer
//! has neither acknowledged nor been sent ([`crate::catalog::peers::wanted_by`]); the
//! rows those changes touched are collected in a temporary table through the
//! `(origin, seq)` index, so the cost follows the delta, not the database.
//! Each row goes out once, with only the versions in range and the current
//! values of the cells they hold. A full export carries every row and
//! tombstone, and the schema a new instance is set up from (the statements
//! themselves are gathered by [`crate::send::setup`]). Relayed changes keep their
//! origin, number and clock.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use rusqlite::Connection;
use serde::Serialize;

use crate::base::colset::{ColSet, SENTINEL};
use crate::base::hlc::{Hlc, now_unix_ms};
use crate::base::seqset::SeqSet;
use crate::base::value::{Value, decode_key, key_literal};
use crate::bundle::format::{Header, OriginSeqs, RefDef, SiteRef, TableDef, VersionRecord};
use crate::bundle::writer::BundleWriter;
use crate::catalog::identity::locate;
use crate::catalog::peers::{
    have_all, list_peers, mark_sent, resolve_for_export, touch, wanted_by,
};
use crate::catalog::session::Session;
use crate::catalog::tracked::TrackedTable;
use crate::error::{Error, ExportError, SiteError};
use crate::local::stamp::{Suspects, record_vanished_rows};

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
    /// The whole current state.
    Full,
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
    pub peer: Option<String>,
    /// True if the peer was named for the first time.
    pub new_peer: bool,
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
}

/// Log entries written between two progress reports.
const PROGRESS_EVERY: u64 = 8192;

/// Write a bundle for `target` to `out`, inside the caller's write
/// transaction. `seal` runs after the bundle is completely written and before
/// the peer's "sent" mark is recorded, so a bundle that failed to reach the
/// disk is never counted as sent. `progress` is called now and then with the
/// change-log entries written so far and their total.
pub(crate) fn export<W: Write>(
    conn: &Connection,
    s: &mut Session,
    target: &ExportTarget,
    out: W,
    seal: impl FnOnce(W) -> Result<(), Error>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ExportReport, Error> {
    if s.catalog.is_empty() {
        return Err(ExportError::NothingTracked {
            db: crate::catalog::store::db_arg(conn),
        }
        .into());
    }
    s.catalog.check_live(conn)?;
    let stamped = crate::local::stamp::stamp_pending(conn, s)?;
    let known_peers: Vec<String> = list_peers(conn)?.into_iter().map(|p| p.name).collect();
    if matches!(target, ExportTarget::Full) {
        for table in s.catalog.tables().to_vec() {
            record_vanished_rows(conn, s, Suspects::Table(&table))?;
        }
    }
    let (peer, new_peer, covers) = match target {
        ExportTarget::Full => (None, false, BTreeMap::new()),
        ExportTarget::Peer { to, resend } => {
            let (peer, new) = resolve_for_export(conn, s, to)?;
            let mut want = wanted_by(conn, s, &peer, *resend)?;
            collect_delta_rows(conn, &want)?;
            if record_vanished_rows(conn, s, Suspects::ExportRows)? > 0 {
                // The deletes just recorded are new changes: count them in.
                // They are of rows already collected, so the rows stand.
                want = wanted_by(conn, s, &peer, *resend)?;
            }
            (Some(peer), new, want)
        }
    };
    let full = matches!(target, ExportTarget::Full);
    // After the vanished-row passes above, which may add changes.
    let have = have_all(conn, s)?;
    let covers = if full { have.clone() } else { covers };

    // Which rows, and so which tables, the bundle carries.
    let tables: Vec<TrackedTable> = if full {
        s.catalog.tables().to_vec()
    } else {
        let mut stmt = conn.prepare("SELECT DISTINCT tbl FROM temp.fieldsync_export_rows")?;
        let ids = stmt
            .query_map([], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        s.catalog
            .tables()
            .iter()
            .filter(|t| ids.contains(&t.id))
            .cloned()
            .collect()
    };

    // Columns referring to other tracked tables travel tagged (crate::catalog::refs).
    let all_refs = crate::catalog::refs::load(conn, s.catalog.tables())?;
    let refs: HashMap<i64, Vec<crate::catalog::refs::RefFk>> = s
        .catalog
        .tables()
        .iter()
        .zip(all_refs)
        .filter(|(t, r)| !r.is_empty() && tables.iter().any(|x| x.id == t.id))
        .map(|(t, r)| (t.id, r))
        .collect();

    let sites = s.sites.all();
    let origin_index: BTreeMap<i64, u32> = sites
        .iter()
        .enumerate()
        .map(|(i, site)| (site.idx, i as u32))
        .collect();
    let seqs_list = |m: &BTreeMap<i64, SeqSet>| -> Vec<OriginSeqs> {
        m.iter()
            .filter(|(_, set)| !set.is_empty())
            .filter_map(|(o, set)| {
                origin_index.get(o).map(|&i| OriginSeqs {
                    origin: i,
                    seqs: set.clone(),
                })
            })
            .collect()
    };
    // A full export sets up new instances: besides the tracked tables it
    // carries the app's other tables (schema only) and its views, and says
    // what it cannot carry.
    let mut warnings = Vec::new();
    let (local_tables, views) = if full {
        warnings.extend(crate::send::setup::not_carried(conn)?);
        (
            crate::send::setup::local_tables(conn, s.catalog.tables())?,
            crate::send::setup::views(conn)?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let created = s.clock.stamp(now_unix_ms())?;
    let header = Header {
        sender: SiteRef {
            id: s.local,
            name: s.name.clone(),
        },
        created: created.0,
        full,
        recipient: peer.as_ref().map(|p| p.name.clone()),
        origins: sites
            .iter()
            .map(|site| SiteRef {
                id: site.id,
                name: site.name.clone(),
            })
            .collect(),
        tables: tables
            .iter()
            .map(|t| {
                Ok(TableDef {
                    name: t.name.clone(),
                    key: t.key.clone(),
                    cells: t.cells.clone(),
                    // A full export sets up new instances: it carries the schema.
                    schema: if full {
                        crate::send::setup::table_schema(conn, &t.name)?
                    } else {
                        Vec::new()
                    },
                    identity: t.identity,
                    refs: refs.get(&t.id).map(|r| RefDef::of(r)).unwrap_or_default(),
                })
            })
            .collect::<Result<_, Error>>()?,
        covers: seqs_list(&covers),
        seen: seqs_list(&have),
        lost: s.lost.clone(),
        local_tables,
        views,
    };

    let mut writer = BundleWriter::new(out, &header)?;
    // Rows go out in the order of their first change (the log's
    // (origin, seq) order), not in key order: consecutive records then have
    // close clocks and numbers, and values written one after another (names,
    // counters, dates) sit together, which compresses far better.
    let (order_sql, total_sql) = if full {
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
        let at: Option<(i64, i64)> = match (r.get(2)?, r.get(3)?) {
            (Some(origin), Some(seq)) => Some((origin, seq)),
            _ => None,
        };
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
            if !covers.get(&origin).is_some_and(|set| set.contains(seq)) {
                continue;
            }
            let Some(&origin_i) = origin_index.get(&origin) else {
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
        drop(found);
        if at.is_some() && first != at {
            continue;
        }
        emit(conn, &mut writer, &tables, &refs, row)?;
    }
    drop(rows);
    drop(order);
    drop(versions_of);
    progress(total, total);
    let (out, summary) = writer.finish()?;
    seal(out)?;

    if let Some(p) = &peer {
        for (origin, set) in &covers {
            mark_sent(conn, p.id, *origin, set)?;
        }
        touch(conn, p.id, false, now_unix_ms())?;
    }
    if !full {
        conn.execute_batch("DELETE FROM temp.fieldsync_export_rows")?;
    }
    s.save(conn)?;
    let name_of = |o: &i64| {
        s.sites
            .get(*o)
            .map(|site| site.name.clone())
            .unwrap_or_else(|| o.to_string())
    };
    Ok(ExportReport {
        full,
        peer: peer.map(|p| p.name),
        new_peer,
        known_peers,
        changes: summary.rows,
        versions: summary.versions,
        tables: tables
            .iter()
            .zip(summary.per_table.iter())
            .map(|(t, &n)| TableCount {
                table: t.name.clone(),
                changes: n,
            })
            .collect(),
        bytes: summary.bytes,
        captured: stamped.captured,
        covers: covers
            .iter()
            .map(|(o, set)| (name_of(o), set.to_string()))
            .collect(),
        warnings: stamped.warnings().into_iter().chain(warnings).collect(),
    })
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
    refs: &HashMap<i64, Vec<crate::catalog::refs::RefFk>>,
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
