//! The engine table `fieldsync_statements` (spec/trust.md, "Claims
//! checked against facts"): the newest origin statement of each other
//! instance, kept as it arrived so it can be relayed byte for byte. What a
//! statement is, and how it is checked, is [`crate::bundle::statement`]'s.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use crate::base::site_id::SiteId;
use crate::error::Error;

/// A held statement: its top, its bytes and its signature.
pub(crate) type Held = (u64, Vec<u8>, Vec<u8>);

/// The newest statement held of each other origin.
pub(crate) fn held(conn: &Connection) -> Result<BTreeMap<SiteId, Held>, Error> {
    let mut stmt =
        conn.prepare_cached("SELECT site_id, top, statement, signature FROM fieldsync_statements")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, Vec<u8>>(3)?,
        ))
    })?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (site, top, statement, signature) = row?;
        // A damaged row is skipped: it bounds and relays nothing.
        let Some(site) = SiteId::from_slice(&site) else {
            continue;
        };
        out.insert(site, (top.max(0) as u64, statement, signature));
    }
    Ok(out)
}

/// Keep a verified statement of another origin if it is newer than the one
/// held: a higher top, or the same top at a later clock.
pub(crate) fn keep(
    conn: &Connection,
    site: &SiteId,
    top: u64,
    hlc: u64,
    statement: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO fieldsync_statements(site_id, top, hlc, statement, signature) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT(site_id) DO UPDATE SET top = excluded.top, hlc = excluded.hlc, \
           statement = excluded.statement, signature = excluded.signature \
         WHERE excluded.top > fieldsync_statements.top \
            OR (excluded.top = fieldsync_statements.top AND excluded.hlc > fieldsync_statements.hlc)",
    )?
    .execute(params![
        site.as_bytes().as_slice(),
        top as i64,
        hlc as i64,
        statement,
        signature,
    ])?;
    Ok(())
}
