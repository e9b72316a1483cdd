//! What an import does with the schema changes a bundle carries
//! (spec/schema.md, "Schema changes travel"): for each table whose
//! statements it carries, [`crate::receive::upgrade`] works out the
//! additive difference (a new table, added columns, new indexes), checked
//! on a private database; this module runs it, or holds it for an
//! administrator, as the database's setting says, and records what was
//! held, refused or not applied in `fieldsync_schema_held`, which `fieldsync
//! schema` lists and applies.
//!
//! Nothing here ever runs a statement the planner did not produce and
//! check, and nothing that is not additive is ever run: a dropped column, a
//! changed type or key is reported and the data of the unchanged part still
//! flows.

use rusqlite::{Connection, Transaction, params};
use serde::Serialize;

use crate::base::hlc::now_unix_ms;
use crate::bundle::format::TableDef;
use crate::catalog::layout::TrackOptions;
use crate::catalog::savepoint::Savepoint;
use crate::catalog::session::Session;
use crate::catalog::site::{meta_get, meta_set};
use crate::error::{Error, SiteError};
use crate::local::capture::Selection;
use crate::receive::upgrade::{TablePlan, plan_table};

/// The `fieldsync_meta` key of the setting.
const MODE_KEY: &str = "schema_from_bundles";

/// What this instance does with schema changes received in bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaMode {
    /// Run them as they arrive (instances set up with `init --from`).
    Apply,
    /// Keep them for an administrator (`fieldsync schema --apply`).
    Hold,
}

impl SchemaMode {
    /// The word `fieldsync_meta` keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaMode::Apply => "apply",
            SchemaMode::Hold => "hold",
        }
    }
}

/// The database's setting: `hold` unless set (an instance set up by hand,
/// or HQ, whose schema its administrator owns).
pub fn mode(conn: &Connection) -> Result<SchemaMode, Error> {
    Ok(match meta_get::<String>(conn, MODE_KEY)?.as_deref() {
        Some("apply") => SchemaMode::Apply,
        _ => SchemaMode::Hold,
    })
}

/// Change the setting.
pub fn set_mode(conn: &Connection, mode: SchemaMode) -> Result<(), Error> {
    meta_set(conn, MODE_KEY, mode.as_str())
}

/// A schema change received and not run here, as `fieldsync schema` and
/// `fieldsync conflicts` list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldSchema {
    /// Its number.
    pub id: i64,
    /// The table.
    pub table: String,
    /// `held` (waits for `fieldsync schema --apply`), `failed` (SQLite
    /// refused it here), `refused` (not a statement a bundle may carry) or
    /// `not applied` (not additive: never applied from a bundle).
    pub status: String,
    /// Why, in words.
    pub why: String,
    /// The statements it would run.
    pub statements: Vec<String>,
    /// The instance whose bundle brought it.
    #[serde(rename = "sender_instance")]
    pub sender: String,
    /// When it last arrived, unix ms.
    #[serde(serialize_with = "crate::json::time")]
    pub at: i64,
}

/// Every schema change received and not run, oldest first.
pub fn held(conn: &Connection) -> Result<Vec<HeldSchema>, Error> {
    let mut stmt = conn.prepare(
        "SELECT id, tbl, status, why, stmts, sender, at FROM fieldsync_schema_held ORDER BY id",
    )?;
    let rows = stmt
        .query_map([], |r| {
            let stmts: String = r.get(4)?;
            Ok(HeldSchema {
                id: r.get(0)?,
                table: r.get(1)?,
                status: r.get(2)?,
                why: r.get(3)?,
                statements: serde_json::from_str(&stmts).unwrap_or_default(),
                sender: r.get(5)?,
                at: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// What a bundle's schema changes did here, for the import's report.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// One line each, for the operator.
    pub notices: Vec<String>,
    /// True if a statement ran (the catalog was updated).
    pub changed: bool,
    /// Captured changes stamped while following what ran.
    pub stamped: crate::local::stamp::StampReport,
}

/// In an import's first write transaction, before its tables are mapped:
/// run (or hold) the additive schema changes of every table the bundle
/// carries statements for.
pub(crate) fn receive(
    conn: &Transaction,
    s: &mut Session,
    defs: &[TableDef],
    sender: &str,
) -> Result<Received, Error> {
    let mode = mode(conn)?;
    let mut out = Received::default();
    // The columns added here, which hold only their defaults.
    let mut fresh: Vec<(String, Vec<String>)> = Vec::new();
    for def in defs.iter().filter(|d| !d.schema.is_empty()) {
        let plan = match plan_table(conn, def)? {
            Err(why) => {
                forget(conn, &def.name)?;
                record(conn, def, "refused", &why, &def.schema, sender)?;
                out.notices.push(format!(
                    "a schema change for table '{}' from '{sender}' was refused: {why}",
                    def.name
                ));
                continue;
            }
            Ok(plan) => plan,
        };
        forget(conn, &def.name)?;
        for why in &plan.not_applied {
            record(conn, def, "not applied", why, &[], sender)?;
            out.notices.push(format!(
                "table '{}' differs from '{sender}''s in a way fieldsync never changes from a bundle: {why}; \
                 the data of the columns both have still flows",
                def.name
            ));
        }
        if plan.run.is_empty() {
            continue;
        }
        match mode {
            SchemaMode::Hold => {
                record(conn, def, "held", &describe(&plan), &plan.run, sender)?;
                out.notices.push(format!(
                    "'{sender}' sent a schema change for table '{}' ({}); held: `fieldsync schema --db {} --apply` \
                     runs it, and values for it wait until then",
                    def.name,
                    describe(&plan),
                    crate::catalog::store::db_arg(conn)
                ));
            }
            SchemaMode::Apply => match run(conn, s, def, &plan)? {
                Ok(()) => {
                    out.changed = true;
                    fresh.push((def.name.clone(), plan.added_columns.clone()));
                    out.notices.push(format!(
                        "table '{}': {} (a schema change from '{sender}')",
                        def.name,
                        describe(&plan)
                    ));
                }
                Err(why) => {
                    record(conn, def, "failed", &why, &plan.run, sender)?;
                    out.notices.push(format!(
                        "a schema change for table '{}' from '{sender}' could not be made here: {why}; \
                         values for it wait (`fieldsync conflicts --db {}` lists it)",
                        def.name,
                        crate::catalog::store::db_arg(conn)
                    ));
                }
            },
        }
    }
    if out.changed {
        let followed = crate::local::follow::follow_schema_after(conn, s, &fresh)?;
        out.notices.extend(followed.notices);
        out.stamped = followed.stamped;
    }
    Ok(out)
}

/// What a plan does, in words.
fn describe(plan: &TablePlan) -> String {
    let mut parts = Vec::new();
    if plan.creates_table {
        parts.push("new table".to_owned());
    }
    if !plan.added_columns.is_empty() {
        parts.push(format!(
            "new {} {}",
            if plan.added_columns.len() == 1 {
                "column"
            } else {
                "columns"
            },
            plan.added_columns.join(", ")
        ));
    }
    if !plan.added_indexes.is_empty() {
        parts.push(format!(
            "new {} {}",
            if plan.added_indexes.len() == 1 {
                "index"
            } else {
                "indexes"
            },
            plan.added_indexes.join(", ")
        ));
    }
    parts.join("; ")
}

/// Run a plan in a savepoint; a new table is tracked as the sender tracks
/// it. `Err` is SQLite's reason (a NOT NULL column without a default on a
/// table that has rows), with nothing changed.
fn run(
    conn: &Transaction,
    s: &mut Session,
    def: &TableDef,
    plan: &TablePlan,
) -> Result<Result<(), String>, Error> {
    let sp = Savepoint::open(conn, "fieldsync_schema_change")?;
    let before = s.catalog.clone();
    let result = (|| -> Result<(), Error> {
        for sql in &plan.run {
            // One statement each (checked): a text holding more fails here.
            conn.prepare(sql)?.execute([])?;
        }
        if plan.creates_table {
            let as_sent = [(def.name.clone(), def.identity, def.key.first().cloned())];
            crate::local::capture::track(
                conn,
                &mut s.catalog,
                &Selection::Named(vec![def.name.clone()]),
                &TrackOptions::default(),
                &as_sent,
            )?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            sp.commit()?;
            forget(conn, &def.name)?;
            Ok(Ok(()))
        }
        Err(Error::Sqlite(e)) => {
            sp.rollback()?;
            s.catalog = before;
            Ok(Err(e.to_string()))
        }
        Err(Error::Track(e)) => {
            sp.rollback()?;
            s.catalog = before;
            Ok(Err(e.to_string()))
        }
        Err(e) => Err(e),
    }
}

/// Forget what was recorded of a table (a newer bundle brought its schema
/// again, or it was applied).
fn forget(conn: &Connection, table: &str) -> Result<(), Error> {
    conn.execute("DELETE FROM fieldsync_schema_held WHERE tbl = ?1", [table])?;
    Ok(())
}

fn record(
    conn: &Connection,
    def: &TableDef,
    status: &str,
    why: &str,
    statements: &[String],
    sender: &str,
) -> Result<(), Error> {
    let def_bytes = rmp_serde::to_vec_named(def).map_err(|e| SiteError::Damaged {
        detail: format!("a schema change could not be encoded: {e}"),
    })?;
    let stmts = serde_json::to_string(statements).map_err(|e| SiteError::Damaged {
        detail: format!("a schema change could not be encoded: {e}"),
    })?;
    conn.execute(
        "INSERT INTO fieldsync_schema_held(tbl, stmts, status, why, sender, at, def) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![def.name, stmts, status, why, sender, now_unix_ms(), def_bytes],
    )?;
    Ok(())
}

/// `fieldsync schema --apply`: run the held (and failed) schema changes
/// as if their bundles arrived now with the setting `apply`. Returns one
/// line per table.
pub(crate) fn apply_held(conn: &Transaction, s: &mut Session) -> Result<Vec<String>, Error> {
    let rows: Vec<(String, Vec<u8>)> = conn
        .prepare(
            "SELECT sender, def FROM fieldsync_schema_held WHERE status IN ('held', 'failed') ORDER BY id",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut notices = Vec::new();
    let saved = mode(conn)?;
    set_mode(conn, SchemaMode::Apply)?;
    for (sender, def) in rows {
        let def: TableDef = rmp_serde::from_slice(&def).map_err(|e| SiteError::Damaged {
            detail: format!("fieldsync_schema_held holds a change that does not decode: {e}"),
        })?;
        notices.extend(receive(conn, s, std::slice::from_ref(&def), &sender)?.notices);
    }
    set_mode(conn, saved)?;
    Ok(notices)
}

/// Number of schema changes held or failed.
pub fn held_count(conn: &Connection) -> Result<u64, Error> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM fieldsync_schema_held WHERE status IN ('held', 'failed')",
        [],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}
