//! The app's side of the demo: records entered the way the app enters
//! them (the database numbers the row, the schema gives it a uuid), and
//! looked up by uuid the way an officer picks one from a list.

use fieldsync::Instance;
use rusqlite::{OptionalExtension, params};

use super::DemoError;

/// A record as the database that created it numbers it, and the uuid it
/// has everywhere.
#[derive(Debug, Clone)]
pub(super) struct Rec {
    pub(super) id: i64,
    pub(super) uuid: String,
}

/// Run an `INSERT` the way the app does: the database numbers the row and
/// the schema's DEFAULT gives it a uuid.
pub(super) fn insert(db: &Instance, sql: &str, p: impl rusqlite::Params) -> Result<Rec, DemoError> {
    Ok(db
        .connection()
        .query_row(&format!("{sql} RETURNING id, uuid"), p, |r| {
            Ok(Rec {
                id: r.get(0)?,
                uuid: r.get(1)?,
            })
        })?)
}

/// Add a location under the location numbered `parent` in `db`.
pub(super) fn location(
    db: &Instance,
    parent: Option<i64>,
    level: &str,
    name: &str,
    code: &str,
) -> Result<Rec, DemoError> {
    insert(
        db,
        "INSERT INTO gis_location(name, level, code, parent) VALUES (?1, ?2, ?3, ?4)",
        params![name, level, code, parent],
    )
}

pub(super) fn person(
    db: &Instance,
    name: (&str, &str),
    age: i64,
    status: &str,
    location_id: i64,
    organisation_id: i64,
) -> Result<Rec, DemoError> {
    insert(
        db,
        "INSERT INTO pr_person(first_name, last_name, age, missing_status, location_id, organisation_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![name.0, name.1, age, status, location_id, organisation_id],
    )
}

/// Open a shelter: code, name, location, organisation, capacity, population.
pub(super) fn shelter(
    db: &Instance,
    code: &str,
    name: &str,
    place: (i64, i64),
    counts: (i64, i64),
) -> Result<Rec, DemoError> {
    insert(
        db,
        "INSERT INTO cr_shelter(code, name, location_id, organisation_id, capacity, population) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![code, name, place.0, place.1, counts.0, counts.1],
    )
}

/// The id `db` gives the record known everywhere as `uuid` (what the app
/// finds when an officer picks the record from a list).
pub(super) fn id_of(db: &Instance, table: &str, uuid: &str) -> Result<i64, DemoError> {
    let id = db
        .connection()
        .query_row(
            &format!("SELECT id FROM {} WHERE uuid = ?1", quote_ident(table)),
            [uuid],
            |r| r.get(0),
        )
        .optional()?;
    match id {
        Some(id) => Ok(id),
        None => Err(DemoError::Diverged(format!(
            "{} has no {table} row with uuid {uuid}",
            db.name()?
        ))),
    }
}

/// The next id SQLite's AUTOINCREMENT gives in `table` of `db`.
pub(super) fn next_id(db: &Instance, table: &str) -> Result<i64, DemoError> {
    let seq: Option<i64> = db
        .connection()
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = ?1",
            [table],
            |r| r.get(0),
        )
        .optional()?;
    Ok(seq.unwrap_or(0) + 1)
}

/// A uuid, shortened for printing.
pub(super) fn short(uuid: &str) -> String {
    let hex = uuid.strip_prefix("urn:uuid:").unwrap_or(uuid);
    format!("{}…", hex.get(..8).unwrap_or(hex))
}

/// An SQL identifier, quoted.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
