//! `schema`: each tracked table's schema version here and at each peer,
//! the schema changes received and not run (held, failed, refused, not
//! additive), and the values waiting for a column or table
//! (spec/schema.md). Read-only; `fieldsync schema --apply` goes through
//! [`crate::Instance::apply_schema`].

use rusqlite::Connection;
use serde::Serialize;

use crate::catalog::session::Session;
use crate::error::Error;
use crate::receive::schema_changes::{HeldSchema, SchemaMode};
use crate::receive::waiting::WaitingSummary;

/// A peer's schema version of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerSchema {
    /// The peer.
    #[serde(rename = "instance")]
    pub peer: String,
    /// Its version of the table.
    pub version: String,
    /// True if it said so in its last bundle; false if assumed from the
    /// schema changes sent to it since.
    pub reported: bool,
}

/// One tracked table's schema version, here and at each peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableSchema {
    /// The table.
    pub table: String,
    /// Its version here (spec/schema.md, "Schema versions").
    pub version: Option<String>,
    /// Each peer's version, where known.
    pub peers: Vec<PeerSchema>,
}

/// What `fieldsync schema` shows.
#[derive(Debug, Clone, Serialize)]
pub struct SchemaReport {
    /// What this database does with schema changes received in bundles.
    pub mode: SchemaMode,
    /// Per tracked table.
    pub tables: Vec<TableSchema>,
    /// Schema changes received and not run.
    pub held: Vec<HeldSchema>,
    /// Values waiting for a column or table, per table and column.
    pub waiting: Vec<WaitingSummary>,
    /// What `--apply` did, one line each.
    pub applied: Vec<String>,
}

/// Each tracked table's version here and at each peer.
pub(crate) fn table_schemas(conn: &Connection, s: &Session) -> Result<Vec<TableSchema>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT p.name, ps.version, ps.reported FROM fieldsync_peer_schema AS ps \
         JOIN fieldsync_peers AS p ON p.id = ps.peer WHERE ps.tbl = ?1 ORDER BY p.name",
    )?;
    let mut out = Vec::new();
    for t in s.catalog.tables() {
        let peers = stmt
            .query_map([&t.name], |r| {
                Ok(PeerSchema {
                    peer: r.get(0)?,
                    version: r.get(1)?,
                    reported: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        out.push(TableSchema {
            table: t.name.clone(),
            version: crate::catalog::schema::schema_version(conn, &t.name)?,
            peers,
        });
    }
    Ok(out)
}

/// The whole report.
pub(crate) fn report(conn: &Connection, s: &Session) -> Result<SchemaReport, Error> {
    Ok(SchemaReport {
        mode: crate::receive::schema_changes::mode(conn)?,
        tables: table_schemas(conn, s)?,
        held: crate::receive::schema_changes::held(conn)?,
        waiting: crate::receive::waiting::summary(conn)?,
        applied: Vec::new(),
    })
}
