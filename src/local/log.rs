//! The change log (`fieldsync_log`): each row's causal length and the
//! versions that still win its cells, read and written as [`RowState`]s.
//!
//! The log holds one entry per (row, live version), so its size follows the
//! number of rows, cells and tombstones, not the number of edits: a version
//! that loses its last cell is deleted the moment that happens. The primary
//! key `(tbl, pk, origin, seq)` makes "all versions of a row" one index seek;
//! the index on `(origin, seq)` makes "what origin O did after n" a range
//! scan, so an export costs O(delta).

use rusqlite::{Connection, params};

use crate::base::colset::ColSet;
use crate::base::hlc::Hlc;
use crate::base::merge::{RowState, Version};
use crate::catalog::site::Sites;
use crate::error::{Error, SiteError};

/// Read one row's state (empty if the log has never seen the row).
pub fn load_row(conn: &Connection, sites: &Sites, tbl: i64, pk: &[u8]) -> Result<RowState, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT origin, seq, cl, hlc, cols FROM fieldsync_log WHERE tbl = ?1 AND pk = ?2",
    )?;
    let mut rows = stmt.query(params![tbl, pk])?;
    let mut state = RowState::default();
    while let Some(r) = rows.next()? {
        let origin: i64 = r.get(0)?;
        let seq: i64 = r.get(1)?;
        let cl: i64 = r.get(2)?;
        let hlc: i64 = r.get(3)?;
        let cols = ColSet::from_bytes(r.get_ref(4)?.as_blob()?)
            .map_err(|detail| SiteError::Damaged { detail })?;
        state.cl = cl as u64;
        state.versions.push(Version {
            site: sites.id_of(origin)?,
            seq: seq as u64,
            hlc: Hlc::from_sql(hlc),
            cols,
        });
    }
    Ok(state)
}

/// Write the difference between `before` (as loaded) and `after`.
pub fn save_row(
    conn: &Connection,
    sites: &Sites,
    tbl: i64,
    pk: &[u8],
    before: &RowState,
    after: &RowState,
) -> Result<(), Error> {
    if before == after {
        return Ok(());
    }
    let origin_of = |v: &Version| {
        sites.idx_of(&v.site).ok_or_else(|| {
            Error::from(SiteError::Damaged {
                detail: format!("site {} is not in fieldsync_sites", v.site),
            })
        })
    };
    // Statements are fetched only when needed: most merges touch one or two
    // entries, and each cache lookup costs about as much as a small write.
    let insert = |v: &Version| -> Result<(), Error> {
        conn.prepare_cached(
            "INSERT INTO fieldsync_log(tbl, pk, origin, seq, cl, hlc, cols) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            tbl,
            pk,
            origin_of(v)?,
            v.seq as i64,
            after.cl as i64,
            v.hlc.to_sql(),
            v.cols.to_bytes()
        ])?;
        Ok(())
    };
    if before.cl != after.cl {
        if !before.versions.is_empty() {
            conn.prepare_cached("DELETE FROM fieldsync_log WHERE tbl = ?1 AND pk = ?2")?
                .execute(params![tbl, pk])?;
        }
        for v in &after.versions {
            insert(v)?;
        }
        return Ok(());
    }
    for old in &before.versions {
        if !after.versions.iter().any(|v| v.same_change(old)) {
            conn.prepare_cached(
                "DELETE FROM fieldsync_log WHERE tbl = ?1 AND pk = ?2 AND origin = ?3 AND seq = ?4",
            )?
            .execute(params![tbl, pk, origin_of(old)?, old.seq as i64])?;
        }
    }
    for v in &after.versions {
        match before.versions.iter().find(|old| old.same_change(v)) {
            Some(old) if old.cols == v.cols => {}
            Some(_) => {
                conn.prepare_cached(
                    "UPDATE fieldsync_log SET cols = ?5 WHERE tbl = ?1 AND pk = ?2 AND origin = ?3 AND seq = ?4",
                )?
                .execute(params![
                    tbl,
                    pk,
                    origin_of(v)?,
                    v.seq as i64,
                    v.cols.to_bytes()
                ])?;
            }
            None => {
                insert(v)?;
            }
        }
    }
    Ok(())
}

/// Number of entries in the log.
pub fn entry_count(conn: &Connection) -> Result<u64, Error> {
    Ok(
        conn.query_row("SELECT count(*) FROM fieldsync_log", [], |r| {
            r.get::<_, i64>(0)
        })? as u64,
    )
}
