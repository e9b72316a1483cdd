//! Setting up a new instance from one file (`fieldsync init --from`): a full
//! export carries the app's whole schema (the `CREATE TABLE` and `CREATE
//! INDEX` statements of the tracked tables, of the app's other tables, which
//! travel without rows, and its views), and a field laptop starts from it
//! with nothing else. This module gathers those statements for the export
//! and checks them before a setup runs them.
//!
//! A bundle is data, and must never run arbitrary SQL. Every statement is
//! first compiled and run on a private in-memory database under an SQLite
//! authorizer that allows only creating the object it is filed under (a
//! table or an index on it, or a view) in the main schema, and refuses
//! everything else: other tables, triggers, temporary objects, `ATTACH`,
//! `PRAGMA`, `CREATE TABLE … AS SELECT`, more than one statement. Names
//! fieldsync or SQLite keep for themselves are refused. The tracked tables
//! created there must then have exactly the key and columns the bundle's
//! records use. Only statements that passed run on the real database, and
//! they run in the same transaction as the import, so a refusal changes
//! nothing.
//!
//! The app's triggers are never carried: a trigger's body is compiled only
//! when a write fires it, so no check at setup can bound what it would do
//! on every later write (spec/bundle.md, "Setting up from a full export").

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

use crate::bundle::Header;
use crate::bundle::format::{LocalTable, TableDef, ViewDef};
use crate::catalog::schema::{ENGINE_PREFIX, table_shape};
use crate::catalog::tracked::TrackedTable;
use crate::error::{Error, SetupError};

/// Longest schema statement accepted.
const MAX_STATEMENT_BYTES: usize = 1 << 20;

/// Longest table or view name accepted from a bundle.
const MAX_NAME_BYTES: usize = 1024;

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

/// The app's tables that are not tracked (sessions, per-instance counters),
/// with their statements, in the order they were created: a full export
/// carries them without rows, so the app finds every table it uses.
pub fn local_tables(conn: &Connection, tracked: &[TrackedTable]) -> Result<Vec<LocalTable>, Error> {
    let mut out = Vec::new();
    for name in crate::catalog::schema::app_tables(conn)? {
        if tracked.iter().any(|t| t.name.eq_ignore_ascii_case(&name)) {
            continue;
        }
        out.push(LocalTable {
            schema: table_schema(conn, &name)?,
            name,
        });
    }
    Ok(out)
}

/// The app's views with their `CREATE VIEW` statements, in the order they
/// were created.
pub fn views(conn: &Connection) -> Result<Vec<ViewDef>, Error> {
    let mut stmt = conn.prepare(
        "SELECT name, sql FROM sqlite_schema WHERE type = 'view' AND sql IS NOT NULL \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND name NOT LIKE 'fieldsync\\_%' ESCAPE '\\' ORDER BY rowid",
    )?;
    let views = stmt
        .query_map([], |r| {
            Ok(ViewDef {
                name: r.get(0)?,
                sql: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(views)
}

/// What a full export cannot carry, as warnings for the operator: the app's
/// triggers (never carried, see the module doc) and virtual tables (their
/// module may not exist where the bundle is read).
pub fn not_carried(conn: &Connection) -> Result<Vec<String>, Error> {
    let names = |sql: &str| -> Result<Vec<String>, Error> {
        let mut stmt = conn.prepare(sql)?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(names)
    };
    let triggers = names(
        "SELECT name FROM sqlite_schema WHERE type = 'trigger' \
         AND name NOT LIKE 'fieldsync\\_%' ESCAPE '\\' ORDER BY rowid",
    )?;
    let virtual_tables = names(
        "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'virtual' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND name NOT LIKE 'fieldsync\\_%' ESCAPE '\\' ORDER BY name",
    )?;
    let mut out = Vec::new();
    if !triggers.is_empty() {
        out.push(format!(
            "the app's triggers are not in the full export (a bundle never installs code that runs on writes): {}; \
             on an instance set up from it, create them yourself if the app needs them",
            triggers.join(", ")
        ));
    }
    if !virtual_tables.is_empty() {
        out.push(format!(
            "virtual tables are not in the full export: {}; \
             on an instance set up from it, create them yourself if the app needs them",
            virtual_tables.join(", ")
        ));
    }
    Ok(out)
}

/// What a statement being checked may create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// This table, or an index on it.
    Table(String),
    /// This view.
    View(String),
    /// Adding a column to this table (`ALTER TABLE … ADD COLUMN`): checked
    /// on a copy of the receiver's table, see [`crate::receive::upgrade`].
    Alter(String),
}

/// The kind of statement expected at a place in the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Table,
    Index,
    View,
    /// `ALTER TABLE … ADD COLUMN`.
    AddColumn,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Table => "CREATE TABLE",
            Kind::Index => "CREATE INDEX",
            Kind::View => "CREATE VIEW",
            Kind::AddColumn => "ALTER TABLE",
        }
    }

    /// Whether `sql` starts the way a statement of this kind does.
    fn begins(self, sql: &str) -> bool {
        match self {
            Kind::Table => starts_with_keywords(sql, &["CREATE", "TABLE"]),
            Kind::Index => {
                starts_with_keywords(sql, &["CREATE", "INDEX"])
                    || starts_with_keywords(sql, &["CREATE", "UNIQUE", "INDEX"])
            }
            Kind::View => starts_with_keywords(sql, &["CREATE", "VIEW"]),
            Kind::AddColumn => starts_with_keywords(sql, &["ALTER", "TABLE"]),
        }
    }
}

/// The private in-memory database statements are checked on, with its
/// authorizer.
pub(crate) struct Scratch {
    pub(crate) conn: Connection,
    /// What the statement being run may create; `None` between statements,
    /// when fieldsync's own queries run unrestricted.
    target: Arc<Mutex<Option<Target>>>,
    /// Why the authorizer refused the statement being run.
    refused: Arc<Mutex<Option<String>>>,
}

impl Scratch {
    pub(crate) fn new() -> Result<Scratch, Error> {
        let mut conn = Connection::open_in_memory()?;
        let target: Arc<Mutex<Option<Target>>> = Arc::new(Mutex::new(None));
        let refused: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        {
            let target = Arc::clone(&target);
            let refused = Arc::clone(&refused);
            conn.authorizer(Some(move |ctx: AuthContext<'_>| {
                let Some(target) = target.lock().ok().and_then(|c| c.clone()) else {
                    return Authorization::Allow;
                };
                let verdict = allowed(&ctx, &target);
                if let (Err(why), Ok(mut slot)) = (verdict, refused.lock()) {
                    slot.get_or_insert(why);
                    return Authorization::Deny;
                }
                Authorization::Allow
            }))?;
        }
        Ok(Scratch {
            conn,
            target,
            refused,
        })
    }

    /// Check the form of `sql`, then compile and run it allowed to create
    /// only `target`. The error is the reason, for a message.
    /// `what` names the statement in messages ("statement 2").
    pub(crate) fn run(
        &self,
        sql: &str,
        kind: Kind,
        what: &str,
        target: Target,
    ) -> Result<(), String> {
        if sql.len() > MAX_STATEMENT_BYTES {
            return Err(format!("{what} is longer than {MAX_STATEMENT_BYTES} bytes"));
        }
        if !kind.begins(sql) {
            return Err(format!(
                "{what} is not a {} statement: {}",
                kind.name(),
                excerpt(sql)
            ));
        }
        if let Ok(mut t) = self.target.lock() {
            *t = Some(target);
        }
        if let Ok(mut r) = self.refused.lock() {
            *r = None;
        }
        // `prepare` refuses a text holding more than one statement.
        let result = self.conn.prepare(sql).and_then(|mut stmt| stmt.execute([]));
        if let Ok(mut t) = self.target.lock() {
            *t = None;
        }
        result.map(|_| ()).map_err(|e| {
            let why = self.refused.lock().ok().and_then(|r| r.clone());
            match why {
                Some(why) => format!("{why}: {}", excerpt(sql)),
                None => format!("{e}: {}", excerpt(sql)),
            }
        })
    }

    /// Whether a view of that name exists.
    fn has_view(&self, name: &str) -> Result<bool, Error> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'view' AND name = ?1 COLLATE NOCASE",
            [name],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }
}

/// Check every schema statement of a full bundle on a private in-memory
/// database (see the module doc): the tracked tables' first, then the local
/// tables', then the views' (a view may read any of the tables). Returns the
/// statements in the order to run them.
pub fn check_schema(header: &Header) -> Result<Vec<String>, Error> {
    let scratch = Scratch::new()?;
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for def in &header.tables {
        check_tracked_table(&scratch, def, &mut names)?;
        out.extend(def.schema.iter().cloned());
    }
    // A table may refer to a table the bundle does not carry (one the app
    // never creates, or one left local): such references are plain values,
    // never checked (spec/quarantine.md), so they do not stop the setup.
    for local in &header.local_tables {
        check_local_table(&scratch, local, &mut names)?;
        out.extend(local.schema.iter().cloned());
    }
    for view in &header.views {
        check_view(&scratch, view, &mut names)?;
        out.push(view.sql.clone());
    }
    Ok(out)
}

/// A tracked table's statements must create the table its records
/// describe: the same key and cells, and an identity it can have.
fn check_tracked_table(
    scratch: &Scratch,
    def: &TableDef,
    names: &mut HashSet<String>,
) -> Result<(), Error> {
    let refuse = |detail: String| -> Error {
        SetupError::SchemaRefused {
            table: excerpt(&def.name),
            detail,
        }
        .into()
    };
    usable_name(&def.name, names).map_err(refuse)?;
    if def.schema.is_empty() {
        return Err(SetupError::NoSchema {
            table: def.name.clone(),
        }
        .into());
    }
    run_table(scratch, &def.name, &def.schema).map_err(refuse)?;
    check_created_table(scratch, def).map_err(refuse)
}

/// The table `def`'s statements made on `scratch` must be the one the
/// records describe: the same key and cells, and an identity it can have.
/// The error is the reason, for a message.
pub(crate) fn check_created_table(scratch: &Scratch, def: &TableDef) -> Result<(), String> {
    let refuse = |detail: String| detail;
    let shape = table_shape(&scratch.conn, &def.name)
        .map_err(|_| refuse(format!("it does not create table {}", def.name)))?;
    let layout = crate::catalog::layout::layout_of(
        &shape,
        def.identity,
        def.key.first().map(String::as_str),
    )
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
        crate::catalog::layout::Identity::Key => {
            crate::catalog::schema::check_key_collation(&scratch.conn, &shape)
                .map_err(|e| refuse(e.to_string()))
        }
        crate::catalog::layout::Identity::Column => {
            crate::catalog::layout::check_identity_column(&scratch.conn, &shape, &layout.key[0])
                .map_err(|e| refuse(e.to_string()))
        }
        _ => Ok(()),
    }
}

/// A local table's statements must create that table (and its indexes).
fn check_local_table(
    scratch: &Scratch,
    local: &LocalTable,
    names: &mut HashSet<String>,
) -> Result<(), Error> {
    let refuse = object_refused("local table", &local.name);
    usable_name(&local.name, names).map_err(&refuse)?;
    if local.schema.is_empty() {
        return Err(refuse("it comes without a CREATE TABLE statement".into()));
    }
    run_table(scratch, &local.name, &local.schema).map_err(&refuse)?;
    table_shape(&scratch.conn, &local.name)
        .map_err(|_| refuse(format!("it does not create table {}", local.name)))?;
    Ok(())
}

/// A view's statement must create that view.
fn check_view(scratch: &Scratch, view: &ViewDef, names: &mut HashSet<String>) -> Result<(), Error> {
    let refuse = object_refused("view", &view.name);
    usable_name(&view.name, names).map_err(&refuse)?;
    scratch
        .run(
            &view.sql,
            Kind::View,
            "its statement",
            Target::View(view.name.clone()),
        )
        .map_err(&refuse)?;
    if !scratch.has_view(&view.name)? {
        return Err(refuse(format!("it does not create view {}", view.name)));
    }
    Ok(())
}

/// The refusal of the local table or view `name`, for a reason.
fn object_refused(kind: &'static str, name: &str) -> impl Fn(String) -> Error {
    let name = excerpt(name);
    move |detail| {
        SetupError::ObjectRefused {
            kind,
            name: name.clone(),
            detail,
        }
        .into()
    }
}

/// Run a table's statements on the scratch database: `CREATE TABLE`, then
/// `CREATE INDEX` statements on that table.
pub(crate) fn run_table(scratch: &Scratch, table: &str, schema: &[String]) -> Result<(), String> {
    for (i, sql) in schema.iter().enumerate() {
        let kind = if i == 0 { Kind::Table } else { Kind::Index };
        let what = format!("statement {}", i + 1);
        scratch.run(sql, kind, &what, Target::Table(table.to_owned()))?;
    }
    Ok(())
}

/// Refuse a name a bundle may not create (fieldsync's or SQLite's own, too
/// long, empty) or one it already listed; remember it otherwise.
pub(crate) fn usable_name(name: &str, seen: &mut HashSet<String>) -> Result<(), String> {
    let lower = name.to_ascii_lowercase();
    if name.is_empty() {
        return Err("it has no name".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("its name is longer than {MAX_NAME_BYTES} bytes"));
    }
    if lower.starts_with(ENGINE_PREFIX) {
        return Err(format!(
            "names starting with {ENGINE_PREFIX} belong to fieldsync's own tables"
        ));
    }
    if lower.starts_with("sqlite_") {
        return Err("names starting with sqlite_ belong to SQLite".into());
    }
    if !seen.insert(lower) {
        return Err("the bundle lists another table or view of that name".into());
    }
    Ok(())
}

/// Whether `sql` begins with these keywords, in any case, separated by
/// whitespace, each followed by something that cannot continue a word.
fn starts_with_keywords(sql: &str, words: &[&str]) -> bool {
    let mut rest = sql;
    for w in words {
        rest = rest.trim_start();
        if !rest
            .as_bytes()
            .get(..w.len())
            .is_some_and(|b| b.eq_ignore_ascii_case(w.as_bytes()))
        {
            return false;
        }
        // The keyword's bytes are ASCII, so this is a character boundary.
        rest = &rest[w.len()..];
        if rest
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
        {
            return false;
        }
    }
    true
}

/// What a schema statement from a bundle may do while it is compiled: create
/// its target (a table or an index on it, or a view) in the main schema, and
/// the bookkeeping that implies. Anything else is refused with the reason.
fn allowed(ctx: &AuthContext<'_>, target: &Target) -> Result<(), String> {
    let main = matches!(ctx.database_name, None | Some("main"));
    let is_schema_table = |t: &str| {
        t.eq_ignore_ascii_case("sqlite_master") || t.eq_ignore_ascii_case("sqlite_schema")
    };
    match ctx.action {
        // Recording the new object in the schema table.
        AuthAction::Insert { table_name } | AuthAction::Update { table_name, .. }
            if main && is_schema_table(table_name) =>
        {
            return Ok(());
        }
        // Column references in CHECK, DEFAULT, index and generated-column
        // expressions and in a view's query, and the functions they call,
        // are compiled, not run.
        AuthAction::Read { .. } | AuthAction::Function { .. } => return Ok(()),
        _ => {}
    }
    match target {
        Target::Table(table) => match ctx.action {
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
            // AUTOINCREMENT keeps its counters in sqlite_sequence, which
            // SQLite creates with the first such table.
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
            // Building the new index over the (new, so empty) table.
            AuthAction::Reindex { .. } => Ok(()),
            ref other => Err(format!(
                "it does something other than create a table or index ({other:?})"
            )),
        },
        Target::Alter(table) => match ctx.action {
            AuthAction::AlterTable {
                database_name,
                table_name,
            } if database_name.eq_ignore_ascii_case("main")
                && table_name.eq_ignore_ascii_case(table) =>
            {
                Ok(())
            }
            // SQLite's own checks of the altered table (is it empty, do
            // its rows satisfy the new constraints) only read it.
            AuthAction::Select => Ok(()),
            ref other => Err(format!(
                "it does something other than add a column to {table} ({other:?})"
            )),
        },
        Target::View(view) => match ctx.action {
            AuthAction::CreateView { view_name }
                if main && view_name.eq_ignore_ascii_case(view) =>
            {
                Ok(())
            }
            AuthAction::CreateView { view_name } => {
                Err(format!("it creates view {view_name}, not {view}"))
            }
            // A view's query only reads.
            AuthAction::Select | AuthAction::Recursive => Ok(()),
            ref other => Err(format!(
                "it does something other than create a view ({other:?})"
            )),
        },
    }
}

/// The start of a statement, for messages.
pub(crate) fn excerpt(sql: &str) -> String {
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::site_id::SiteId;
    use crate::bundle::format::{SiteRef, TableDef};

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
            lacks: Vec::new(),
            local_tables: Vec::new(),
            views: Vec::new(),
            schemas: Vec::new(),
            trust: Vec::new(),
            trust_seen: None,
            sender_recipient: None,
            statements: Vec::new(),
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

    /// A header with the tracked table `loc(id, name)` and the given local
    /// tables and views.
    fn with_local(local: &[(&str, &[&str])], views: &[(&str, &str)]) -> Header {
        let mut h = header(
            "loc",
            &["id"],
            &["name"],
            &[
                "CREATE TABLE loc(id TEXT PRIMARY KEY, name TEXT)",
                "CREATE INDEX loc_name ON loc(name)",
            ],
        );
        h.local_tables = local
            .iter()
            .map(|(name, schema)| LocalTable {
                name: name.to_string(),
                schema: schema.iter().map(|s| s.to_string()).collect(),
            })
            .collect();
        h.views = views
            .iter()
            .map(|(name, sql)| ViewDef {
                name: name.to_string(),
                sql: sql.to_string(),
            })
            .collect();
        h
    }

    fn refusal(h: &Header) -> String {
        match check_schema(h) {
            Ok(statements) => panic!("accepted {statements:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn local_tables_and_views_pass_and_run_after_the_tracked_tables() -> Result<(), Error> {
        let h = with_local(
            &[
                (
                    "sessions",
                    &[
                        "CREATE TABLE sessions(sid TEXT PRIMARY KEY, user TEXT, expires INT)",
                        "CREATE INDEX sessions_expires ON sessions(expires)",
                    ],
                ),
                (
                    "counter",
                    &["CREATE TABLE counter(n INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT)"],
                ),
            ],
            &[
                // A view may read tables created by the bundle, ones it
                // lacks, and other views (views may come in any order).
                (
                    "named",
                    "CREATE VIEW named AS SELECT l.id, upper(l.name) AS n, (SELECT count(*) FROM sessions) AS s FROM loc l WHERE l.id IN (SELECT id FROM later)",
                ),
                (
                    "later",
                    "CREATE VIEW later(id) AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3) SELECT x FROM c",
                ),
                ("absent", "CREATE VIEW absent AS SELECT * FROM not_carried"),
            ],
        );
        let statements = check_schema(&h)?;
        let starts: Vec<&str> = statements.iter().map(|s| &s[..15]).collect();
        assert_eq!(
            starts,
            [
                "CREATE TABLE lo",
                "CREATE INDEX lo",
                "CREATE TABLE se",
                "CREATE INDEX se",
                "CREATE TABLE co",
                "CREATE VIEW nam",
                "CREATE VIEW lat",
                "CREATE VIEW abs",
            ]
        );
        Ok(())
    }

    #[test]
    fn a_local_table_statement_doing_anything_but_creating_that_table_is_refused() {
        let cases: &[&[&str]] = &[
            &["DROP TABLE loc"],
            &["CREATE TABLE other(id TEXT)"],
            &["CREATE TABLE sessions(id TEXT); DROP TABLE loc"],
            &["CREATE TEMP TABLE sessions(id TEXT)"],
            &["CREATE TABLE sessions AS SELECT * FROM loc"],
            &["CREATE VIEW sessions AS SELECT 1"],
            &["CREATE VIRTUAL TABLE sessions USING fts5(x)"],
            &["ATTACH '/tmp/x.db' AS sessions"],
            &["PRAGMA writable_schema = 1"],
            &[
                "CREATE TABLE sessions(id TEXT)",
                "CREATE INDEX i ON loc(name)",
            ],
            &[
                "CREATE TABLE sessions(id TEXT)",
                "CREATE TRIGGER t AFTER INSERT ON sessions BEGIN DELETE FROM loc; END",
            ],
            &[
                "CREATE TABLE sessions(id TEXT)",
                "CREATE TABLE sessions2(id TEXT)",
            ],
            &["CREATE INDEX i ON sessions(id)"],
            &[],
        ];
        for schema in cases {
            let message = refusal(&with_local(&[("sessions", schema)], &[]));
            assert!(
                message.contains("local table 'sessions' was refused"),
                "{schema:?}: {message}"
            );
        }
    }

    #[test]
    fn a_view_statement_doing_anything_but_creating_that_view_is_refused() {
        let cases = [
            "DROP TABLE loc",
            "DROP VIEW v",
            "CREATE VIEW v AS SELECT 1; DROP TABLE loc",
            "CREATE TRIGGER v AFTER INSERT ON loc BEGIN DELETE FROM loc; END",
            "CREATE VIEW v AS SELECT 1; CREATE TRIGGER t INSTEAD OF INSERT ON v BEGIN DELETE FROM loc; END",
            "CREATE TEMP VIEW v AS SELECT 1",
            "CREATE TEMPORARY VIEW v AS SELECT 1",
            "CREATE VIEW other AS SELECT 1",
            "CREATE VIEW aux.v AS SELECT 1",
            "CREATE VIEW temp.v AS SELECT 1",
            "CREATE TABLE v(x)",
            "CREATE INDEX v ON loc(name)",
            "INSERT INTO loc VALUES ('x', 'y')",
            "ATTACH '/tmp/x.db' AS v",
            "PRAGMA writable_schema = 1",
            "",
        ];
        for sql in cases {
            let message = refusal(&with_local(&[], &[("v", sql)]));
            assert!(
                message.contains("view 'v' was refused"),
                "{sql:?}: {message}"
            );
        }
    }

    #[test]
    fn names_fieldsync_or_sqlite_keep_and_repeated_names_are_refused() {
        let view = |name: &str| with_local(&[], &[(name, "CREATE VIEW x AS SELECT 1")]);
        let table = |name: &str| with_local(&[(name, &["CREATE TABLE x(a)"])], &[]);
        for (h, needle) in [
            (view("fieldsync_x"), "belong to fieldsync"),
            (view("FieldSync_Meta"), "belong to fieldsync"),
            (table("fieldsync_x"), "belong to fieldsync"),
            (view("sqlite_x"), "belong to SQLite"),
            (table("SQLITE_sequence"), "belong to SQLite"),
            (table(""), "no name"),
            (view(&"v".repeat(MAX_NAME_BYTES + 1)), "longer than"),
            (
                with_local(&[("LOC", &["CREATE TABLE LOC(a)"])], &[]),
                "another table or view of that name",
            ),
            (
                with_local(
                    &[("s", &["CREATE TABLE s(a)"])],
                    &[("S", "CREATE VIEW S AS SELECT 1")],
                ),
                "another table or view of that name",
            ),
            (
                with_local(
                    &[],
                    &[
                        ("v", "CREATE VIEW v AS SELECT 1"),
                        ("v", "CREATE VIEW IF NOT EXISTS v AS SELECT 1"),
                    ],
                ),
                "another table or view of that name",
            ),
        ] {
            let message = refusal(&h);
            assert!(message.contains(needle), "{message}");
        }
        // A tracked table too.
        let h = header(
            "fieldsync_log",
            &["id"],
            &[],
            &["CREATE TABLE fieldsync_log(id TEXT PRIMARY KEY)"],
        );
        assert!(refusal(&h).contains("belong to fieldsync"));
    }

    #[test]
    fn a_statement_over_the_size_limit_is_refused() {
        let long = format!(
            "CREATE VIEW v AS SELECT '{}'",
            "x".repeat(MAX_STATEMENT_BYTES)
        );
        let message = refusal(&with_local(&[], &[("v", &long)]));
        assert!(message.contains("longer than"), "{message}");
        assert!(message.len() < 1000, "the message repeats the statement");
    }

    #[test]
    fn statement_kinds_are_recognised_by_their_keywords() {
        assert!(Kind::Table.begins("CREATE TABLE\"t\"(x)"));
        assert!(Kind::Table.begins("  create\n\ttable t(x)"));
        assert!(Kind::View.begins("Create View [v] AS SELECT 1"));
        assert!(Kind::Index.begins("CREATE UNIQUE INDEX i ON t(x)"));
        assert!(!Kind::Table.begins("CREATE TABLEX t(x)"));
        assert!(!Kind::Table.begins("CREATE TEMP TABLE t(x)"));
        assert!(!Kind::View.begins("CREATE"));
        assert!(!Kind::View.begins("CREATE VIEWé"));
        assert!(!Kind::Index.begins("CREATE UNIQUE TABLE t(x)"));
    }

    #[test]
    fn an_export_gathers_untracked_tables_and_views_and_names_what_it_leaves_out()
    -> Result<(), Error> {
        let c = Connection::open_in_memory()?;
        c.execute_batch(
            "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT);
             CREATE TABLE sessions(sid TEXT PRIMARY KEY, expires INT);
             CREATE INDEX sessions_expires ON sessions(expires);
             CREATE TABLE fieldsync_x(k);
             CREATE VIEW fieldsync_v AS SELECT 1;
             CREATE VIEW names AS SELECT name FROM person;
             CREATE TRIGGER stamp AFTER INSERT ON person BEGIN SELECT 1; END;
             CREATE TRIGGER fieldsync_t AFTER INSERT ON person BEGIN SELECT 1; END;
             CREATE VIRTUAL TABLE search USING fts5(body);",
        )?;
        let local = local_tables(&c, &[])?;
        let names: Vec<&str> = local.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["person", "sessions"]);
        assert_eq!(local[1].schema.len(), 2);
        let views = views(&c)?;
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].name, "names");
        let warnings = not_carried(&c)?;
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("triggers") && warnings[0].contains("stamp"));
        assert!(!warnings[0].contains("fieldsync_t"));
        assert!(warnings[1].contains("search"));
        Ok(())
    }
}
