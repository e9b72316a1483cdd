//! The sync journal (spec/console.md, "The journal"): `fieldsync_journal`,
//! one row per import, export and network sync this instance made, with
//! its counts, size, duration, peer and whether it went by file or over the
//! network. Written in the operation's own transaction where it has one,
//! otherwise right after its last commit; never for a refused import (those
//! go to `fieldsync_refused`). At most [`KEPT`] rows are kept, the newest.
//! `fieldsync journal` and the console's Activity page read it.

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::error::Error;

/// Rows the journal keeps: the newest this many.
pub const KEPT: i64 = 10_000;

/// How an import or export travelled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// A bundle file (`fieldsync import` / `export`, or the library given
    /// a reader or writer).
    #[default]
    File,
    /// Over the network (`fieldsync serve`, `sync`, `pull`, `push`).
    Network,
}

impl Via {
    /// The word stored in `fieldsync_journal.via`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::File => "file",
            Via::Network => "network",
        }
    }

    fn parse(s: &str) -> Via {
        if s == "network" {
            Via::Network
        } else {
            Via::File
        }
    }
}

/// What a journal row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalKind {
    /// A bundle imported.
    Import,
    /// A bundle exported.
    Export,
    /// A network sync with a peer (its pull and push are journaled as an
    /// import and an export of their own).
    Sync,
}

impl JournalKind {
    /// The word stored in `fieldsync_journal.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            JournalKind::Import => "import",
            JournalKind::Export => "export",
            JournalKind::Sync => "sync",
        }
    }

    fn parse(s: &str) -> JournalKind {
        match s {
            "export" => JournalKind::Export,
            "sync" => JournalKind::Sync,
            _ => JournalKind::Import,
        }
    }
}

/// One row of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    /// Its number in the journal (0 before it is recorded).
    pub id: i64,
    /// When the operation ended (unix ms).
    #[serde(rename = "at", serialize_with = "crate::json::time")]
    pub at_ms: i64,
    /// Import, export or sync.
    pub kind: JournalKind,
    /// By file or over the network.
    pub via: Via,
    /// The peer: the bundle's sender (import) or the instance it was made
    /// for (export); `None` for a full export named for nobody.
    #[serde(rename = "instance")]
    pub peer: Option<String>,
    /// A full export (or the import of one).
    pub full: bool,
    /// Row records in the bundle.
    pub changes: u64,
    /// Import: records that changed a row.
    pub applied: u64,
    /// Import: records already known here.
    pub known: u64,
    /// Import: records older than what is here.
    pub older: u64,
    /// Import: records of the bundle held in quarantine.
    pub quarantined: u64,
    /// The bundle's size in bytes, when known.
    pub bytes: Option<u64>,
    /// How long the operation took, in milliseconds.
    pub duration_ms: u64,
}

fn sql_u64(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

/// Append a row and drop all but the newest [`KEPT`]. Returns its id.
pub fn record(conn: &Connection, e: &JournalEntry) -> Result<i64, Error> {
    conn.prepare_cached(
        "INSERT INTO fieldsync_journal(at, kind, via, peer, full, changes, applied, known, older, \
         quarantined, bytes, duration_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        e.at_ms,
        e.kind.as_str(),
        e.via.as_str(),
        e.peer,
        e.full,
        sql_u64(e.changes),
        sql_u64(e.applied),
        sql_u64(e.known),
        sql_u64(e.older),
        sql_u64(e.quarantined),
        e.bytes.map(sql_u64),
        sql_u64(e.duration_ms),
    ])?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached("DELETE FROM fieldsync_journal WHERE id <= ?1")?
        .execute([id - KEPT])?;
    Ok(id)
}

/// The journal, newest first, at most `limit` rows.
pub fn list(conn: &Connection, limit: u64) -> Result<Vec<JournalEntry>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at, kind, via, peer, full, changes, applied, known, older, quarantined, bytes, \
         duration_ms FROM fieldsync_journal ORDER BY id DESC LIMIT ?1",
    )?;
    let out = stmt
        .query_map([sql_u64(limit)], |r| {
            let n = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
            Ok(JournalEntry {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                kind: JournalKind::parse(&r.get::<_, String>(2)?),
                via: Via::parse(&r.get::<_, String>(3)?),
                peer: r.get(4)?,
                full: r.get(5)?,
                changes: n(6)?,
                applied: n(7)?,
                known: n(8)?,
                older: n(9)?,
                quarantined: n(10)?,
                bytes: r.get::<_, Option<i64>>(11)?.map(|b| b.max(0) as u64),
                duration_ms: n(12)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(out)
}

/// Rows in the journal.
#[cfg(test)]
pub fn count(conn: &Connection) -> Result<u64, Error> {
    Ok(conn
        .query_row("SELECT count(*) FROM fieldsync_journal", [], |r| {
            r.get::<_, i64>(0)
        })?
        .max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: i64) -> JournalEntry {
        JournalEntry {
            id: 0,
            at_ms: n,
            kind: JournalKind::Import,
            via: Via::File,
            peer: Some(format!("field-{n}")),
            full: false,
            changes: 3,
            applied: 2,
            known: 1,
            older: 0,
            quarantined: 0,
            bytes: Some(100),
            duration_ms: 5,
        }
    }

    #[test]
    fn the_journal_keeps_the_newest_ten_thousand() -> Result<(), Error> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(crate::catalog::store::ENGINE_DDL)?;
        for n in 0..KEPT + 3 {
            record(&conn, &entry(n))?;
        }
        assert_eq!(count(&conn)?, KEPT as u64);
        let newest = list(&conn, 2)?;
        assert_eq!(newest[0].at_ms, KEPT + 2);
        assert_eq!(
            newest[1].peer.as_deref(),
            Some(&*format!("field-{}", KEPT + 1))
        );
        Ok(())
    }

    #[test]
    fn a_row_reads_back_as_written() -> Result<(), Error> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(crate::catalog::store::ENGINE_DDL)?;
        let mut e = entry(7);
        e.kind = JournalKind::Export;
        e.via = Via::Network;
        e.bytes = None;
        e.id = record(&conn, &e)?;
        assert_eq!(list(&conn, 10)?, vec![e]);
        Ok(())
    }
}
