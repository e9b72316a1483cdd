//! Setting up a new instance from one file (`fieldsync init --from`): a full
//! export carries the `CREATE TABLE` and `CREATE INDEX` statements of the
//! tracked tables, and a field laptop starts from it with nothing else.
//!
//! A bundle is data, and must never run arbitrary SQL. Every statement is
//! first compiled and run on a private in-memory database under an SQLite
//! authorizer that allows only creating the table the statement is filed
//! under (or an index on it) in the main schema, and refuses everything else:
//! other tables, triggers, views, temporary objects, `ATTACH`, `PRAGMA`,
//! `CREATE TABLE … AS SELECT`, more than one statement. The tables created
//! there must then have exactly the key and columns the bundle's records
//! use. Only statements that passed run on the real database, and they run
//! in the same transaction as the import, so a refusal changes nothing.

use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

use crate::bundle::Header;
use crate::error::{Error, SetupError};
use crate::schema::table_shape;

/// Longest schema statement accepted.
const MAX_STATEMENT_BYTES: usize = 1 << 20;

/// The statements a full export carries for one table: its `CREATE TABLE`,
/// then its `CREATE INDEX` statements (automatic indexes have none).
pub fn table_schema(conn: &Connection, table: &str) -> Result<Vec<String>, Error> {
    let mut stmt = conn.prepare(
        "SELECT sql FROM sqlite_schema WHERE tbl_name = ?1 COLLATE NOCASE \
         AND type IN ('table', 'index') AND sql IS NOT NULL \
         ORDER BY type = 'index', name",
    )?;
    let sql = stmt
        .query_map([table], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(sql)
}

/// Check every schema statement of a full bundle on a private in-memory
/// database (see the module doc). Returns the statements in the order to run
/// them.
pub fn check_schema(header: &Header) -> Result<Vec<String>, Error> {
    let mut scratch = Connection::open_in_memory()?;
    let current: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let refused: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    {
        let current = Arc::clone(&current);
        let refused = Arc::clone(&refused);
        scratch.authorizer(Some(move |ctx: AuthContext<'_>| {
            // Only statements from the bundle are restricted; fieldsync's own
            // queries on the scratch database run between them.
            let Some(table) = current.lock().ok().and_then(|c| c.clone()) else {
                return Authorization::Allow;
            };
            let verdict = allowed(&ctx, &table);
            if let (Err(why), Ok(mut slot)) = (verdict, refused.lock()) {
                slot.get_or_insert(why);
                return Authorization::Deny;
            }
            Authorization::Allow
        }))?;
    }
    let mut out = Vec::new();
    for def in &header.tables {
        let refuse = |detail: String| -> Error {
            SetupError::SchemaRefused {
                table: def.name.clone(),
                detail,
            }
            .into()
        };
        if def.schema.is_empty() {
            return Err(SetupError::NoSchema {
                table: def.name.clone(),
            }
            .into());
        }
        for (i, sql) in def.schema.iter().enumerate() {
            let words: Vec<String> = sql
                .split_whitespace()
                .take(3)
                .map(|w| w.to_ascii_uppercase())
                .collect();
            let kind_ok = if i == 0 {
                words.starts_with(&["CREATE".into(), "TABLE".into()])
            } else {
                words.starts_with(&["CREATE".into(), "INDEX".into()])
                    || words.starts_with(&["CREATE".into(), "UNIQUE".into(), "INDEX".into()])
            };
            if !kind_ok || sql.len() > MAX_STATEMENT_BYTES {
                return Err(refuse(format!(
                    "statement {} is not a CREATE {} statement: {}",
                    i + 1,
                    if i == 0 { "TABLE" } else { "INDEX" },
                    excerpt(sql)
                )));
            }
            if let Ok(mut c) = current.lock() {
                *c = Some(def.name.clone());
            }
            if let Ok(mut r) = refused.lock() {
                *r = None;
            }
            // `prepare` refuses a text holding more than one statement.
            let result = scratch.prepare(sql).and_then(|mut stmt| stmt.execute([]));
            if let Ok(mut c) = current.lock() {
                *c = None;
            }
            if let Err(e) = result {
                let why = refused.lock().ok().and_then(|r| r.clone());
                return Err(refuse(match why {
                    Some(why) => format!("{why}: {}", excerpt(sql)),
                    None => format!("{e}: {}", excerpt(sql)),
                }));
            }
        }
        // The table made must be the one the records describe.
        let shape = table_shape(&scratch, &def.name)
            .map_err(|_| refuse(format!("it does not create table {}", def.name)))?;
        let layout =
            crate::identity::layout_of(&shape, def.identity, def.key.first().map(String::as_str))
                .map_err(|e| refuse(e.to_string()))?;
        if layout.key != def.key || layout.cells != def.cells {
            return Err(refuse(format!(
                "it creates columns ({}) with key ({}), but the bundle's rows have columns ({}) with key ({})",
                layout.cells.join(", "),
                layout.key.join(", "),
                def.cells.join(", "),
                def.key.join(", ")
            )));
        }
        match def.identity {
            crate::tracked::Identity::Key => crate::schema::check_key_collation(&scratch, &shape)
                .map_err(|e| refuse(e.to_string()))?,
            crate::tracked::Identity::Column => {
                crate::identity::check_identity_column(&scratch, &shape, &layout.key[0])
                    .map_err(|e| refuse(e.to_string()))?
            }
            _ => {}
        }
        out.extend(def.schema.iter().cloned());
    }
    // A table may refer to a table the bundle does not carry (one the app
    // never creates, or one left local): such references are plain values,
    // never checked (spec/quarantine.md), so they do not stop the setup.
    Ok(out)
}

/// What a schema statement from a bundle may do while it is compiled: create
/// `table` or an index on it in the main schema, and the bookkeeping that
/// implies. Anything else is refused with the reason.
fn allowed(ctx: &AuthContext<'_>, table: &str) -> Result<(), String> {
    let main = matches!(ctx.database_name, None | Some("main"));
    let is_schema_table = |t: &str| {
        t.eq_ignore_ascii_case("sqlite_master") || t.eq_ignore_ascii_case("sqlite_schema")
    };
    match ctx.action {
        AuthAction::CreateTable { table_name }
            if main && table_name.eq_ignore_ascii_case(table) =>
        {
            Ok(())
        }
        AuthAction::CreateIndex { table_name, .. }
            if main && table_name.eq_ignore_ascii_case(table) =>
        {
            Ok(())
        }
        // AUTOINCREMENT keeps its counters in sqlite_sequence, which SQLite
        // creates with the first such table.
        AuthAction::CreateTable { table_name }
            if main && table_name.eq_ignore_ascii_case("sqlite_sequence") =>
        {
            Ok(())
        }
        AuthAction::CreateTable { table_name } => {
            Err(format!("it creates table {table_name}, not {table}"))
        }
        AuthAction::CreateIndex { table_name, .. } => Err(format!(
            "it creates an index on {table_name}, not on {table}"
        )),
        // Recording the new object in the schema table.
        AuthAction::Insert { table_name } | AuthAction::Update { table_name, .. }
            if main && is_schema_table(table_name) =>
        {
            Ok(())
        }
        // Column references in CHECK, DEFAULT, index and generated-column
        // expressions, and the functions they call, are compiled, not run.
        // Building the new index over the (new, so empty) table.
        AuthAction::Read { .. } | AuthAction::Function { .. } | AuthAction::Reindex { .. } => {
            Ok(())
        }
        other => Err(format!(
            "it does something other than create a table or index ({other:?})"
        )),
    }
}

/// The start of a statement, for messages.
fn excerpt(sql: &str) -> String {
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::format::{SiteRef, TableDef};
    use crate::site::SiteId;

    fn header(name: &str, key: &[&str], cells: &[&str], schema: &[&str]) -> Header {
        Header {
            sender: SiteRef {
                id: SiteId::random(),
                name: "hq".into(),
            },
            created: 0,
            full: true,
            recipient: None,
            origins: Vec::new(),
            tables: vec![TableDef {
                name: name.into(),
                key: key.iter().map(|s| s.to_string()).collect(),
                cells: cells.iter().map(|s| s.to_string()).collect(),
                schema: schema.iter().map(|s| s.to_string()).collect(),
                ..TableDef::default()
            }],
            covers: Vec::new(),
            seen: Vec::new(),
            lost: Default::default(),
        }
    }

    #[test]
    fn a_table_and_its_indexes_pass() -> Result<(), Error> {
        let h = header(
            "loc",
            &["id"],
            &["parent", "name", "code"],
            &[
                "CREATE TABLE loc(id TEXT PRIMARY KEY, parent TEXT REFERENCES loc(id), name TEXT NOT NULL CHECK (length(name) > 0), code TEXT UNIQUE DEFAULT (lower(hex(randomblob(4)))))",
                "CREATE INDEX loc_parent ON loc(parent)",
                "CREATE UNIQUE INDEX loc_name ON loc(parent, lower(name)) WHERE parent IS NOT NULL",
            ],
        );
        assert_eq!(check_schema(&h)?.len(), 3);
        Ok(())
    }

    #[test]
    fn anything_but_creating_the_listed_table_is_refused() {
        let cases: &[&[&str]] = &[
            &["DROP TABLE loc"],
            &["CREATE TABLE loc(id TEXT PRIMARY KEY, name TEXT); DROP TABLE x"],
            &["CREATE TABLE other(id TEXT PRIMARY KEY, name TEXT)"],
            &["CREATE TEMP TABLE loc(id TEXT PRIMARY KEY, name TEXT)"],
            &["CREATE TABLE loc AS SELECT 1 AS id, 2 AS name"],
            &["CREATE TABLE aux.loc(id TEXT PRIMARY KEY, name TEXT)"],
            &[
                "CREATE TABLE loc(id TEXT PRIMARY KEY, name TEXT)",
                "CREATE TRIGGER t AFTER INSERT ON loc BEGIN DELETE FROM loc; END",
            ],
            &[
                "CREATE TABLE loc(id TEXT PRIMARY KEY, name TEXT)",
                "CREATE VIEW v AS SELECT * FROM loc",
            ],
            &[
                "CREATE TABLE loc(id TEXT PRIMARY KEY, name TEXT)",
                "CREATE INDEX i ON other(x)",
            ],
            &["PRAGMA writable_schema = 1"],
            &["ATTACH '/tmp/x.db' AS x"],
            &["CREATE TABLE loc(id TEXT PRIMARY KEY, name TEXT, extra TEXT)"],
            &["CREATE TABLE loc(id INTEGER, name TEXT)"],
            &[],
        ];
        for schema in cases {
            let h = header("loc", &["id"], &["name"], schema);
            let result = check_schema(&h);
            assert!(result.is_err(), "accepted {schema:?}");
        }
    }
}
