//! The journal of refused bundles (spec/trust.md, "Journal of refused
//! bundles"): `fieldsync_refused`, one row per bundle an import refused,
//! written in a transaction of its own after the import's was rolled back,
//! so an administrator sees forged, damaged and unwelcome files
//! (`fieldsync conflicts`). At most [`KEPT`] rows are kept, the newest.

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::error::Error;

/// Rows the journal keeps: the newest this many.
pub const KEPT: i64 = 1000;

/// One refused bundle, as the journal keeps it. What was not known when it
/// was refused (a file that could not be read, a signer or sender that a
/// damaged file does not show) is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedBundle {
    /// Its number in the journal.
    pub id: i64,
    /// When it was refused (unix ms).
    #[serde(rename = "at", serialize_with = "crate::json::time")]
    pub at_ms: i64,
    /// The file, as given to `import`.
    pub file: Option<String>,
    /// Its size in bytes.
    #[serde(rename = "bytes")]
    pub size: Option<i64>,
    /// BLAKE3 of the whole file (hex), to recognise the same file again.
    pub blake3: Option<String>,
    /// The fingerprint of the signing key in its trailer (as `fieldsync
    /// inspect` shows it), whether or not the signature held.
    pub signer_fingerprint: Option<String>,
    /// The sender its header names, read only when its signature and
    /// checksum held.
    #[serde(rename = "claimed_sender_instance")]
    pub claimed_sender: Option<String>,
    /// The kind of refusal, e.g. `bundle: signature invalid`, `trust: key
    /// changed`, `import: too many held`.
    pub reason: String,
    /// The error line the import printed.
    pub message: String,
}

/// Append a row and drop all but the newest [`KEPT`].
pub fn record(conn: &Connection, r: &RefusedBundle) -> Result<i64, Error> {
    conn.prepare_cached(
        "INSERT INTO fieldsync_refused(at, file, size, blake3, signer_fingerprint, claimed_sender, reason, message) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        r.at_ms,
        r.file,
        r.size,
        r.blake3,
        r.signer_fingerprint,
        r.claimed_sender,
        r.reason,
        r.message
    ])?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached("DELETE FROM fieldsync_refused WHERE id <= ?1")?
        .execute([id - KEPT])?;
    Ok(id)
}

/// The journal, newest first, at most `limit` rows.
pub fn list(conn: &Connection, limit: u64) -> Result<Vec<RefusedBundle>, Error> {
    let mut stmt = conn.prepare(
        "SELECT id, at, file, size, blake3, signer_fingerprint, claimed_sender, reason, message \
         FROM fieldsync_refused ORDER BY id DESC LIMIT ?1",
    )?;
    let out = stmt
        .query_map([limit.min(i64::MAX as u64) as i64], |r| {
            Ok(RefusedBundle {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                file: r.get(2)?,
                size: r.get(3)?,
                blake3: r.get(4)?,
                signer_fingerprint: r.get(5)?,
                claimed_sender: r.get(6)?,
                reason: r.get(7)?,
                message: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(out)
}

/// Rows in the journal.
pub fn count(conn: &Connection) -> Result<u64, Error> {
    Ok(
        conn.query_row("SELECT count(*) FROM fieldsync_refused", [], |r| {
            r.get::<_, i64>(0)
        })? as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: i64) -> RefusedBundle {
        RefusedBundle {
            id: 0,
            at_ms: n,
            file: Some(format!("f{n}")),
            size: None,
            blake3: None,
            signer_fingerprint: None,
            claimed_sender: None,
            reason: "bundle: truncated".into(),
            message: "the bundle is truncated".into(),
        }
    }

    #[test]
    fn the_journal_keeps_the_newest_thousand() -> Result<(), Error> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(crate::catalog::store::ENGINE_DDL)?;
        for n in 0..KEPT + 5 {
            record(&conn, &entry(n))?;
        }
        assert_eq!(count(&conn)?, KEPT as u64);
        let newest = list(&conn, 2)?;
        assert_eq!(newest[0].at_ms, KEPT + 4);
        assert_eq!(newest[1].file.as_deref(), Some(&*format!("f{}", KEPT + 3)));
        assert_eq!(newest[0].size, None);
        Ok(())
    }
}
