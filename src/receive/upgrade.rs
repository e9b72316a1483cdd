//! Schema upgrades carried by bundles: when the sender's app added a column
//! or a table, its bundle carries the table's statements (`CREATE TABLE`,
//! then its `CREATE INDEX` statements, see [`crate::send::setup::table_schema`]).
//! This module owns working out the *additive* difference between those
//! statements and the table here, as statements that are safe to run:
//! [`plan_table`] creates a table that is missing, adds the columns and
//! indexes the sender has and this instance lacks, and only reports every
//! other difference (dropped, renamed or retyped columns, another key),
//! which a bundle never applies ([`crate::receive::schema_changes`] runs or
//! holds the plan).
//!
//! A bundle is hostile until checked. Its statements are compiled and run on
//! a private in-memory database under the authorizer of
//! [`crate::send::setup`] (only creating that table and indexes on it), and
//! every `ALTER TABLE … ADD COLUMN` derived from them is run first on a copy
//! of the table here, under an authorizer that allows only altering that
//! table, and must give the column exactly the sender's type, `NOT NULL`,
//! default, collation and foreign key. Nothing runs on the real database
//! here: the caller runs the plan.
//!
//! What SQLite's pragmas do not show is not carried to an added column: a
//! column's `CHECK` constraint and a foreign key's `DEFERRABLE` clause.

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension};

use crate::bundle::format::TableDef;
use crate::catalog::schema::quote_ident;
use crate::error::Error;
use crate::send::setup::{Kind, Scratch, Target, check_created_table, excerpt, usable_name};

/// What a bundle's schema statements for one table would change here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TablePlan {
    /// Statements to run on the real database, in order, each already checked.
    pub run: Vec<String>,
    /// The table does not exist here: `run` creates it (CREATE TABLE, then its CREATE INDEX statements).
    pub creates_table: bool,
    /// Columns `run` adds (ALTER TABLE ... ADD COLUMN), in the bundle table's column order.
    pub added_columns: Vec<String>,
    /// Indexes `run` creates on an existing table.
    pub added_indexes: Vec<String>,
    /// Differences that are not additive and are never applied from a
    /// bundle, one line each (e.g. "column 'x' is here but not in the
    /// sender's table (dropped or renamed there?)", "column 'age' is INTEGER
    /// here and TEXT at the sender", "the primary key differs: (id) here,
    /// (id, kind) at the sender", "column 'c' is UNIQUE at the sender: ALTER
    /// TABLE cannot add it; add it by hand").
    pub not_applied: Vec<String>,
}

/// A table's foreign key as far as one column is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ForeignKey {
    /// The column refers to nothing.
    None,
    /// A single-column foreign key: `REFERENCES table(to)`.
    Single {
        table: String,
        /// `None`: the parent's primary key.
        to: Option<String>,
        on_update: String,
        on_delete: String,
    },
    /// The column is part of a foreign key of several columns, which a
    /// column constraint cannot express.
    Several,
}

/// A column as SQLite describes it (`pragma_table_xinfo` and friends).
#[derive(Debug, Clone)]
struct ColumnInfo {
    name: String,
    decl_type: String,
    not_null: bool,
    /// The default's text, as `pragma_table_xinfo` gives it.
    default: Option<String>,
    /// Position in the primary key, from 1; 0 if not in it.
    pk: i64,
    generated: bool,
    /// The collation the column compares with; `None` if SQLite would not say.
    collation: Option<String>,
    /// The column is in a `UNIQUE` constraint.
    unique: bool,
    foreign_key: ForeignKey,
}

impl ColumnInfo {
    fn named(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// Plan the additive change `def.schema` (non-empty) makes to table
/// `def.name` here. The inner error is the one-line reason the bundle's
/// statements are refused (not `CREATE TABLE` first and `CREATE INDEX`
/// after, creating or touching anything but that table and indexes on it,
/// not compiling, a name fieldsync or SQLite keeps, too long, a table that
/// is not the one the bundle's rows describe). Nothing is executed on
/// `conn`: it is only read.
///
/// A column added `NOT NULL` without a default, or with a default that is
/// not a constant (an expression in parentheses), or with `REFERENCES` and
/// a default other than NULL while foreign keys are enforced, is still
/// planned: SQLite adds it to an empty table and refuses it on a table with
/// rows when the real statement runs, and the caller handles that failure.
/// Likewise a new `UNIQUE` index fails on rows that break it.
pub(crate) fn plan_table(
    conn: &Connection,
    def: &TableDef,
) -> Result<Result<TablePlan, String>, Error> {
    let refuse = |detail: String| {
        format!(
            "the schema of table '{}' was refused: {detail}",
            excerpt(&def.name)
        )
    };
    if let Err(why) = usable_name(&def.name, &mut HashSet::new()) {
        return Ok(Err(refuse(why)));
    }
    if def.schema.is_empty() {
        return Ok(Err(refuse(
            "it comes without a CREATE TABLE statement".into(),
        )));
    }
    // The sender's table, built from the bundle's statements on a private
    // database; the new indexes of each statement are remembered.
    let scratch = Scratch::new()?;
    let mut indexes: Vec<(String, String)> = Vec::new();
    for (i, sql) in def.schema.iter().enumerate() {
        let kind = if i == 0 { Kind::Table } else { Kind::Index };
        let before = index_names(&scratch.conn)?;
        let what = format!("statement {}", i + 1);
        if let Err(why) = scratch.run(sql, kind, &what, Target::Table(def.name.clone())) {
            return Ok(Err(refuse(why)));
        }
        if i > 0 {
            for name in index_names(&scratch.conn)? {
                if !before.contains(&name) {
                    indexes.push((name, sql.clone()));
                }
            }
        }
    }
    if let Err(why) = check_created_table(&scratch, def) {
        return Ok(Err(refuse(why)));
    }

    let here: Option<(String, String)> = conn
        .query_row(
            "SELECT name, type FROM pragma_table_list \
             WHERE schema = 'main' AND name = ?1 COLLATE NOCASE",
            [&def.name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match here {
        None => plan_new_table(conn, def, &indexes, refuse),
        Some((_, kind)) if kind != "table" => Ok(Err(refuse(format!(
            "there is a {kind} of that name here, not a table"
        )))),
        Some((local, _)) => plan_existing_table(conn, &scratch, def, &local, &indexes).map(Ok),
    }
}

/// The table is not here: create it as the bundle says, unless a name it
/// creates is taken.
fn plan_new_table(
    conn: &Connection,
    def: &TableDef,
    indexes: &[(String, String)],
    refuse: impl Fn(String) -> String,
) -> Result<Result<TablePlan, String>, Error> {
    if let Some((kind, _)) = schema_object(conn, &def.name)? {
        return Ok(Err(refuse(format!("there is a {kind} of that name here"))));
    }
    for (index, _) in indexes {
        if let Some((kind, table)) = schema_object(conn, index)? {
            return Ok(Err(refuse(format!(
                "it creates index {}, but there is a {kind} of that name here (on {})",
                excerpt(index),
                excerpt(&table)
            ))));
        }
    }
    Ok(Ok(TablePlan {
        run: def.schema.clone(),
        creates_table: true,
        ..TablePlan::default()
    }))
}

/// The table is here as `local`: add what the sender's table (on
/// `scratch`) has and it lacks, report the rest.
fn plan_existing_table(
    conn: &Connection,
    scratch: &Scratch,
    def: &TableDef,
    local: &str,
    indexes: &[(String, String)],
) -> Result<TablePlan, Error> {
    let here = columns(conn, local)?;
    let there = columns(&scratch.conn, &def.name)?;
    let mut plan = TablePlan::default();

    let key = |cols: &[ColumnInfo]| {
        let mut key: Vec<&ColumnInfo> = cols.iter().filter(|c| c.pk > 0).collect();
        key.sort_by_key(|c| c.pk);
        key.iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (key_here, key_there) = (key(&here), key(&there));
    if !key_here.eq_ignore_ascii_case(&key_there) {
        plan.not_applied.push(format!(
            "the primary key differs: ({key_here}) here, ({key_there}) at the sender"
        ));
    }
    for (what, flag) in [("WITHOUT ROWID", "wr"), ("STRICT", "strict")] {
        let (h, t) = (
            table_flag(conn, local, flag)?,
            table_flag(&scratch.conn, &def.name, flag)?,
        );
        if h != t {
            let side = |b: bool| if b { "is" } else { "is not" };
            plan.not_applied.push(format!(
                "the table {} {what} here and {} at the sender",
                side(h),
                side(t)
            ));
        }
    }
    for h in &here {
        if !there.iter().any(|t| t.named(&h.name)) {
            plan.not_applied.push(format!(
                "column '{}' is here but not in the sender's table (dropped or renamed there?)",
                h.name
            ));
        }
    }
    let mut missing = Vec::new();
    for t in &there {
        match here.iter().find(|h| h.named(&t.name)) {
            Some(h) if !h.decl_type.eq_ignore_ascii_case(&t.decl_type) => {
                plan.not_applied.push(format!(
                    "column '{}' is {} here and {} at the sender",
                    t.name,
                    type_name(&h.decl_type),
                    type_name(&t.decl_type)
                ));
            }
            Some(h) => {
                let differ = differences(h, t, false);
                if !differ.is_empty() {
                    plan.not_applied.push(format!(
                        "column '{}' differs from the sender's: {}",
                        t.name,
                        differ.join("; ")
                    ));
                }
            }
            None => missing.push(t),
        }
    }

    // A copy of the table here, to check each derived statement on.
    let copy = match local_copy(conn, local)? {
        Ok(copy) => copy,
        Err(why) => {
            if !missing.is_empty() || !indexes.is_empty() {
                plan.not_applied.push(format!(
                    "the table here could not be copied to check the sender's columns and indexes on, \
                     so none was added: {why}"
                ));
            }
            return Ok(plan);
        }
    };

    for t in missing {
        let cannot = if t.pk > 0 {
            Some("is part of the sender's primary key")
        } else if t.generated {
            Some("is generated at the sender")
        } else if t.unique {
            Some("is UNIQUE at the sender")
        } else if t.foreign_key == ForeignKey::Several {
            Some("is part of a foreign key of several columns at the sender")
        } else {
            None
        };
        if let Some(why) = cannot {
            plan.not_applied.push(format!(
                "column '{}' {why}: ALTER TABLE cannot add it; add it by hand",
                t.name
            ));
            continue;
        }
        let sql = add_column(local, t);
        match check_add_column(&copy, local, &sql, t)? {
            Ok(()) => {
                plan.run.push(sql);
                plan.added_columns.push(t.name.clone());
            }
            Err(why) => plan.not_applied.push(format!(
                "column '{}' cannot be added as the sender has it: {why}",
                t.name
            )),
        }
    }

    for (index, sql) in indexes {
        match schema_object(conn, index)? {
            Some((kind, table)) if kind == "index" && table.eq_ignore_ascii_case(local) => {}
            Some((kind, table)) => plan.not_applied.push(format!(
                "index '{index}' of the sender is not created: there is a {kind} of that name here (on {table})"
            )),
            None => {
                // On the copy, which has the columns added: an index on a
                // column that is not here and not added does not compile.
                match copy.run(
                    sql,
                    Kind::Index,
                    "the statement",
                    Target::Table(local.to_owned()),
                ) {
                    Ok(()) => {
                        plan.run.push(sql.clone());
                        plan.added_indexes.push(index.clone());
                    }
                    Err(why) => plan.not_applied.push(format!(
                        "index '{index}' of the sender is not created: {why}"
                    )),
                }
            }
        }
    }
    Ok(plan)
}

/// A declared type for messages.
fn type_name(decl_type: &str) -> &str {
    if decl_type.is_empty() {
        "without a type"
    } else {
        decl_type
    }
}

/// The `ALTER TABLE … ADD COLUMN` that gives table `local` the column `c`.
fn add_column(local: &str, c: &ColumnInfo) -> String {
    let mut sql = format!(
        "ALTER TABLE {} ADD COLUMN {}",
        quote_ident(local),
        quote_ident(&c.name)
    );
    if !c.decl_type.is_empty() {
        sql.push(' ');
        sql.push_str(&c.decl_type);
    }
    if let Some(coll) = &c.collation
        && !coll.eq_ignore_ascii_case("BINARY")
    {
        sql.push_str(" COLLATE ");
        sql.push_str(&quote_ident(coll));
    }
    if c.not_null {
        sql.push_str(" NOT NULL");
    }
    if let Some(default) = &c.default {
        if is_plain_literal(default) {
            sql.push_str(&format!(" DEFAULT {default}"));
        } else {
            sql.push_str(&format!(" DEFAULT ({default})"));
        }
    }
    if let ForeignKey::Single {
        table,
        to,
        on_update,
        on_delete,
    } = &c.foreign_key
    {
        sql.push_str(" REFERENCES ");
        sql.push_str(&quote_ident(table));
        if let Some(to) = to {
            sql.push_str(&format!("({})", quote_ident(to)));
        }
        if let Some(action) = fk_action(on_delete) {
            sql.push_str(&format!(" ON DELETE {action}"));
        }
        if let Some(action) = fk_action(on_update) {
            sql.push_str(&format!(" ON UPDATE {action}"));
        }
    }
    sql
}

/// A foreign key action to spell out (`None` for the default, NO ACTION).
/// Only the actions SQLite knows are written; anything else would not
/// match the sender's column when checked.
fn fk_action(action: &str) -> Option<&'static str> {
    const ACTIONS: [&str; 4] = ["CASCADE", "SET NULL", "SET DEFAULT", "RESTRICT"];
    ACTIONS
        .into_iter()
        .find(|a| a.eq_ignore_ascii_case(action.trim()))
}

/// Whether a default's text is a literal that `DEFAULT` takes without
/// parentheses: a number, a string, a blob, NULL, TRUE, FALSE or
/// CURRENT_TIME/DATE/TIMESTAMP.
fn is_plain_literal(s: &str) -> bool {
    let t = s.trim();
    let upper = t.to_ascii_uppercase();
    if matches!(
        upper.as_str(),
        "NULL" | "TRUE" | "FALSE" | "CURRENT_TIME" | "CURRENT_DATE" | "CURRENT_TIMESTAMP"
    ) {
        return true;
    }
    let quoted = |t: &str| {
        t.len() >= 2
            && t.starts_with('\'')
            && t.ends_with('\'')
            && !t[1..t.len() - 1].replace("''", "").contains('\'')
    };
    if quoted(t) {
        return true;
    }
    if (t.starts_with("x'") || t.starts_with("X'")) && quoted(&t[1..]) {
        return t[2..t.len() - 1].bytes().all(|b| b.is_ascii_hexdigit());
    }
    let n = t.strip_prefix(['+', '-']).unwrap_or(t);
    if let Some(hex) = n.strip_prefix("0x").or_else(|| n.strip_prefix("0X")) {
        return !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    is_decimal(n)
}

/// `digits [. digits] [e [+-] digits]`, with a digit before or after the point.
fn is_decimal(n: &str) -> bool {
    let (mantissa, exponent) = match n.find(['e', 'E']) {
        Some(i) => (&n[..i], Some(&n[i + 1..])),
        None => (n, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((a, b)) => (a, b),
        None => (mantissa, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

/// Run `sql` on the copy of the table here and check the column it adds is
/// the sender's `want`. Whatever the outcome, the copy keeps the column
/// only if it matches (so later indexes are checked against what will be
/// there).
fn check_add_column(
    copy: &Scratch,
    local: &str,
    sql: &str,
    want: &ColumnInfo,
) -> Result<Result<(), String>, Error> {
    copy.conn.execute_batch("SAVEPOINT add_column")?;
    let outcome = match copy.run(
        sql,
        Kind::AddColumn,
        "the derived statement",
        Target::Alter(local.to_owned()),
    ) {
        Err(why) => Err(why),
        Ok(()) => {
            let got = columns(&copy.conn, local)?;
            match got.iter().find(|c| c.named(&want.name)) {
                None => Err("the column did not appear".to_owned()),
                Some(got) => same_column(got, want),
            }
        }
    };
    if outcome.is_err() {
        copy.conn.execute_batch("ROLLBACK TO add_column")?;
    }
    copy.conn.execute_batch("RELEASE add_column")?;
    Ok(outcome)
}

/// Whether the added column `got` is the sender's `want`; the error says
/// how they differ.
fn same_column(got: &ColumnInfo, want: &ColumnInfo) -> Result<(), String> {
    let mut differ = differences(got, want, true);
    if got.pk != 0 {
        differ.push("a primary key here".to_owned());
    }
    if differ.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "ALTER TABLE would make it differ: {}",
            differ.join("; ")
        ))
    }
}

/// How column `here` differs from the sender's `there` (besides its
/// position in the primary key), each as "… here, … at the sender". An
/// unknown collation counts as a difference only if `strict`.
fn differences(here: &ColumnInfo, there: &ColumnInfo, strict: bool) -> Vec<String> {
    let mut differ = Vec::new();
    let side = |what: String, h: String, t: String| format!("{what}{h} here, {t} at the sender");
    if !here.decl_type.eq_ignore_ascii_case(&there.decl_type) {
        differ.push(side(
            "type ".into(),
            type_name(&here.decl_type).into(),
            type_name(&there.decl_type).into(),
        ));
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    if here.not_null != there.not_null {
        differ.push(side(
            "NOT NULL ".into(),
            yes_no(here.not_null),
            yes_no(there.not_null),
        ));
    }
    if here.default != there.default {
        let d = |c: &ColumnInfo| c.default.clone().unwrap_or_else(|| "none".into());
        differ.push(side("default ".into(), d(here), d(there)));
    }
    match (&here.collation, &there.collation) {
        (Some(h), Some(t)) if !h.eq_ignore_ascii_case(t) => {
            differ.push(side("collation ".into(), h.clone(), t.clone()));
        }
        (Some(_), Some(_)) => {}
        _ if strict => differ.push("collation unknown".into()),
        _ => {}
    }
    if !same_foreign_key(&here.foreign_key, &there.foreign_key) {
        differ.push(side(
            "foreign key ".into(),
            describe(&here.foreign_key),
            describe(&there.foreign_key),
        ));
    }
    if here.unique != there.unique {
        differ.push(side(
            "UNIQUE ".into(),
            yes_no(here.unique),
            yes_no(there.unique),
        ));
    }
    if here.generated != there.generated {
        differ.push(side(
            "generated ".into(),
            yes_no(here.generated),
            yes_no(there.generated),
        ));
    }
    differ
}

/// Whether two columns refer to the same parent, with the same actions.
fn same_foreign_key(a: &ForeignKey, b: &ForeignKey) -> bool {
    match (a, b) {
        (
            ForeignKey::Single {
                table: t1,
                to: c1,
                on_update: u1,
                on_delete: d1,
            },
            ForeignKey::Single {
                table: t2,
                to: c2,
                on_update: u2,
                on_delete: d2,
            },
        ) => {
            t1.eq_ignore_ascii_case(t2)
                && match (c1, c2) {
                    (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                    (None, None) => true,
                    _ => false,
                }
                && u1.eq_ignore_ascii_case(u2)
                && d1.eq_ignore_ascii_case(d2)
        }
        (ForeignKey::None, ForeignKey::None) | (ForeignKey::Several, ForeignKey::Several) => true,
        _ => false,
    }
}

/// A column's foreign key, for messages.
fn describe(fk: &ForeignKey) -> String {
    match fk {
        ForeignKey::None => "none".into(),
        ForeignKey::Several => "one of several columns".into(),
        ForeignKey::Single {
            table,
            to,
            on_update,
            on_delete,
        } => format!(
            "REFERENCES {table}{} ON DELETE {on_delete} ON UPDATE {on_update}",
            to.as_ref().map(|c| format!("({c})")).unwrap_or_default()
        ),
    }
}

/// A private copy of table `local` (its `CREATE TABLE` only), to check the
/// planned statements on. The inner error says why it could not be made.
fn local_copy(conn: &Connection, local: &str) -> Result<Result<Scratch, String>, Error> {
    let sql: Option<Option<String>> = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
            [local],
            |r| r.get(0),
        )
        .optional()?;
    let Some(Some(sql)) = sql else {
        return Ok(Err(
            "its CREATE TABLE statement is not in sqlite_schema".into()
        ));
    };
    let copy = Scratch::new()?;
    // The statement comes from this database, yet it runs under the same
    // discipline as a bundle's: it may only create that table.
    Ok(copy
        .run(
            &sql,
            Kind::Table,
            "its CREATE TABLE statement",
            Target::Table(local.to_owned()),
        )
        .map(|()| copy))
}

/// Whether table `table` has this flag of `pragma_table_list` (`wr`: it is
/// WITHOUT ROWID, `strict`: it is STRICT).
fn table_flag(conn: &Connection, table: &str, flag: &str) -> Result<bool, Error> {
    let column = if flag == "wr" { "wr" } else { "strict" };
    let set: Option<bool> = conn
        .query_row(
            &format!(
                "SELECT {column} FROM pragma_table_list \
                 WHERE schema = 'main' AND name = ?1 COLLATE NOCASE"
            ),
            [table],
            |r| r.get(0),
        )
        .optional()?;
    Ok(set.unwrap_or(false))
}

/// The named indexes (not SQLite's automatic ones) in `conn`'s main schema.
fn index_names(conn: &Connection) -> Result<HashSet<String>, Error> {
    let mut stmt =
        conn.prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL")?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<HashSet<_>>>()?;
    Ok(names)
}

/// The type of the object of that name in the main schema (compared as
/// SQLite does, ignoring case), with the table it belongs to.
fn schema_object(conn: &Connection, name: &str) -> Result<Option<(String, String)>, Error> {
    let found = conn
        .query_row(
            "SELECT type, tbl_name FROM sqlite_schema WHERE name = ?1 COLLATE NOCASE",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(found)
}

/// The columns of table `table` in the main schema, in order, without
/// hidden columns of virtual tables (generated columns are kept and marked).
fn columns(conn: &Connection, table: &str) -> Result<Vec<ColumnInfo>, Error> {
    let mut stmt = conn.prepare(
        "SELECT name, type, \"notnull\", dflt_value, pk, hidden \
         FROM pragma_table_xinfo(?1, 'main') WHERE hidden <> 1 ORDER BY cid",
    )?;
    let mut cols = stmt
        .query_map([table], |r| {
            let hidden: i64 = r.get(5)?;
            Ok(ColumnInfo {
                name: r.get(0)?,
                decl_type: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                not_null: r.get(2)?,
                default: r.get(3)?,
                pk: r.get(4)?,
                generated: hidden == 2 || hidden == 3,
                collation: None,
                unique: false,
                foreign_key: ForeignKey::None,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;

    // Columns in a UNIQUE constraint.
    let mut unique = HashSet::new();
    let mut stmt = conn.prepare(
        "SELECT lower(ii.name) FROM pragma_index_list(?1, 'main') AS il, \
         pragma_index_info(il.name, 'main') AS ii \
         WHERE il.origin = 'u' AND ii.name IS NOT NULL",
    )?;
    for name in stmt.query_map([table], |r| r.get::<_, String>(0))? {
        unique.insert(name?);
    }

    // Foreign keys, by their id.
    let mut stmt = conn.prepare(
        "SELECT id, \"table\", \"from\", \"to\", on_update, on_delete, \
         (SELECT count(*) FROM pragma_foreign_key_list(?1, 'main') AS g WHERE g.id = f.id) \
         FROM pragma_foreign_key_list(?1, 'main') AS f",
    )?;
    let fks = stmt
        .query_map([table], |r| {
            Ok((
                r.get::<_, String>(2)?,
                r.get::<_, i64>(6)?,
                ForeignKey::Single {
                    table: r.get(1)?,
                    to: r.get(3)?,
                    on_update: r.get(4)?,
                    on_delete: r.get(5)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;

    for c in &mut cols {
        c.unique = unique.contains(&c.name.to_ascii_lowercase());
        c.collation = conn
            .column_metadata(Some("main"), table, c.name.as_str())
            .ok()
            .and_then(|m| m.1)
            .map(|s| s.to_string_lossy().into_owned());
        for (from, count, fk) in &fks {
            if from.eq_ignore_ascii_case(&c.name) {
                c.foreign_key = if *count == 1 && c.foreign_key == ForeignKey::None {
                    fk.clone()
                } else {
                    ForeignKey::Several
                };
            }
        }
    }
    Ok(cols)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::layout::Identity;
    use crate::catalog::schema::table_shape;

    /// A bundle's table `name` with these statements; its key and cells are
    /// those the statements create (or `id` and none if they create nothing).
    fn def(name: &str, schema: &[&str]) -> TableDef {
        let (mut key, mut cells) = (vec!["id".to_owned()], Vec::new());
        if let Ok(c) = Connection::open_in_memory()
            && schema.iter().all(|s| c.execute_batch(s).is_ok())
            && let Ok(shape) = table_shape(&c, name)
        {
            key = shape.key_columns().iter().map(|c| c.name.clone()).collect();
            cells = shape
                .cell_columns()
                .iter()
                .map(|c| c.name.clone())
                .collect();
        }
        TableDef {
            name: name.into(),
            key,
            cells,
            schema: schema.iter().map(|s| s.to_string()).collect(),
            identity: Identity::Key,
            refs: vec![],
        }
    }

    fn db(sql: &str) -> Connection {
        let c = Connection::open_in_memory().expect("in-memory database");
        c.execute_batch(sql).expect("setup");
        c
    }

    fn schema_version(c: &Connection) -> i64 {
        c.query_row("PRAGMA schema_version", [], |r| r.get(0))
            .expect("schema_version")
    }

    /// The plan, checking that making it wrote nothing.
    fn outcome(c: &Connection, d: &TableDef) -> Result<TablePlan, String> {
        let before = schema_version(c);
        let plan = plan_table(c, d).expect("database error");
        assert_eq!(schema_version(c), before, "planning changed the schema");
        plan
    }

    fn plan(c: &Connection, d: &TableDef) -> TablePlan {
        match outcome(c, d) {
            Ok(plan) => plan,
            Err(why) => panic!("refused: {why}"),
        }
    }

    /// Run the plan, then the table here must hash as the bundle's does.
    fn apply_and_compare(c: &Connection, d: &TableDef, p: &TablePlan) {
        for sql in &p.run {
            c.execute_batch(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let sender = db(&d.schema.join(";\n"));
        let want = crate::catalog::schema::schema_version(&sender, &d.name).expect("hash");
        assert!(want.is_some());
        assert_eq!(
            crate::catalog::schema::schema_version(c, &d.name).expect("hash"),
            want
        );
    }

    const HERE: &str = "CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT);
         INSERT INTO t VALUES ('a', 'x'), ('b', 'y');";

    #[test]
    fn a_missing_table_is_created_with_its_indexes_after_it() {
        let c = db("CREATE TABLE other(x)");
        let d = def(
            "loc",
            &[
                "CREATE TABLE loc(id TEXT PRIMARY KEY, parent TEXT, name TEXT NOT NULL)",
                "CREATE INDEX loc_parent ON loc(parent)",
                "CREATE UNIQUE INDEX loc_name ON loc(parent, lower(name))",
            ],
        );
        let p = plan(&c, &d);
        assert!(p.creates_table);
        assert_eq!(p.run, d.schema);
        assert!(p.added_columns.is_empty() && p.added_indexes.is_empty());
        assert!(p.not_applied.is_empty());
        apply_and_compare(&c, &d, &p);
        assert_eq!(index_names(&c).expect("indexes").len(), 2);
    }

    #[test]
    fn a_missing_table_whose_names_are_taken_here_is_refused() {
        let d = def(
            "loc",
            &[
                "CREATE TABLE loc(id TEXT PRIMARY KEY, name TEXT)",
                "CREATE INDEX loc_name ON loc(name)",
            ],
        );
        let c = db("CREATE TABLE other(x); CREATE INDEX LOC_NAME ON other(x)");
        let why = outcome(&c, &d).expect_err("accepted");
        assert!(why.contains("loc_name"), "{why}");
        let c = db("CREATE TABLE other(x); CREATE VIEW loc AS SELECT 1");
        let why = outcome(&c, &d).expect_err("accepted");
        assert!(why.contains("view"), "{why}");
    }

    #[test]
    fn the_same_table_plans_nothing() {
        let c = db(&format!("{HERE} CREATE INDEX t_name ON t(name);"));
        let d = def(
            "T",
            &[
                "CREATE TABLE T(ID text PRIMARY KEY, Name text)",
                "CREATE INDEX t_name ON T(Name)",
            ],
        );
        assert_eq!(plan(&c, &d), TablePlan::default());
    }

    #[test]
    fn a_plain_column_is_added() {
        let c = db(HERE);
        let d = def(
            "t",
            &["CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT, note TEXT, n)"],
        );
        let p = plan(&c, &d);
        assert_eq!(
            p.run,
            [
                "ALTER TABLE \"t\" ADD COLUMN \"note\" TEXT",
                "ALTER TABLE \"t\" ADD COLUMN \"n\""
            ]
        );
        assert_eq!(p.added_columns, ["note", "n"]);
        assert!(!p.creates_table && p.not_applied.is_empty());
        apply_and_compare(&c, &d, &p);
    }

    #[test]
    fn defaults_are_carried_literal_or_in_parentheses() {
        // An expression default is not constant: SQLite adds it only to an
        // empty table, so this one has no rows.
        let c = db("CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT)");
        let d = def(
            "t",
            &[
                "CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT, a TEXT DEFAULT 'x', \
               b INT DEFAULT -1, c TEXT DEFAULT (lower('X' || 'Y')), d REAL DEFAULT 1.5e3, \
               e BLOB DEFAULT x'00ff', f TEXT DEFAULT 'it''s')",
            ],
        );
        let p = plan(&c, &d);
        assert_eq!(
            p.run,
            [
                "ALTER TABLE \"t\" ADD COLUMN \"a\" TEXT DEFAULT 'x'",
                "ALTER TABLE \"t\" ADD COLUMN \"b\" INT DEFAULT -1",
                "ALTER TABLE \"t\" ADD COLUMN \"c\" TEXT DEFAULT (lower('X' || 'Y'))",
                "ALTER TABLE \"t\" ADD COLUMN \"d\" REAL DEFAULT 1.5e3",
                "ALTER TABLE \"t\" ADD COLUMN \"e\" BLOB DEFAULT x'00ff'",
                "ALTER TABLE \"t\" ADD COLUMN \"f\" TEXT DEFAULT 'it''s'",
            ]
        );
        assert!(p.not_applied.is_empty(), "{:?}", p.not_applied);
        apply_and_compare(&c, &d, &p);
        c.execute("INSERT INTO t(id) VALUES ('k')", [])
            .expect("insert");
        let row: (String, i64, String, f64, Vec<u8>, String) = c
            .query_row("SELECT a, b, c, d, e, f FROM t", [], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .expect("row");
        assert_eq!(
            row,
            (
                "x".into(),
                -1,
                "xy".into(),
                1500.0,
                vec![0, 255],
                "it's".into()
            )
        );
    }

    #[test]
    fn not_null_columns_are_added_with_or_without_a_default() {
        let c = db(HERE);
        let d = def(
            "t",
            &["CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT, n INTEGER NOT NULL DEFAULT 0)"],
        );
        let p = plan(&c, &d);
        assert_eq!(
            p.run,
            ["ALTER TABLE \"t\" ADD COLUMN \"n\" INTEGER NOT NULL DEFAULT 0"]
        );
        apply_and_compare(&c, &d, &p);

        // Without a default: planned, and SQLite refuses it on rows.
        let c = db(HERE);
        let d = def(
            "t",
            &["CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT, n INTEGER NOT NULL)"],
        );
        let p = plan(&c, &d);
        assert_eq!(p.added_columns, ["n"]);
        assert!(c.execute_batch(&p.run[0]).is_err());
        let empty = db("CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT)");
        apply_and_compare(&empty, &d, &p);
    }

    #[test]
    fn a_collation_is_carried() -> Result<(), Error> {
        let c = db(HERE);
        let d = def(
            "t",
            &["CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT, tag TEXT COLLATE nocase)"],
        );
        let p = plan(&c, &d);
        assert_eq!(
            p.run,
            ["ALTER TABLE \"t\" ADD COLUMN \"tag\" TEXT COLLATE \"nocase\""]
        );
        apply_and_compare(&c, &d, &p);
        let (_, coll, ..) = c.column_metadata(Some("main"), "t", "tag")?;
        assert_eq!(
            coll.as_deref().and_then(|s| s.to_str().ok()),
            Some("nocase")
        );
        Ok(())
    }

    #[test]
    fn a_reference_is_carried() -> Result<(), Error> {
        let c = db(&format!("CREATE TABLE parent(id TEXT PRIMARY KEY); {HERE}"));
        let d = def(
            "t",
            &["CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT, \
               p TEXT REFERENCES parent(id) ON DELETE CASCADE, \
               q TEXT REFERENCES parent ON UPDATE SET NULL)"],
        );
        let p = plan(&c, &d);
        assert_eq!(
            p.run,
            [
                "ALTER TABLE \"t\" ADD COLUMN \"p\" TEXT REFERENCES \"parent\"(\"id\") ON DELETE CASCADE",
                "ALTER TABLE \"t\" ADD COLUMN \"q\" TEXT REFERENCES \"parent\" ON UPDATE SET NULL",
            ]
        );
        apply_and_compare(&c, &d, &p);
        let fk: (String, String, String) = c.query_row(
            "SELECT \"table\", \"to\", on_delete FROM pragma_foreign_key_list('t') WHERE \"from\" = 'p'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        assert_eq!(fk, ("parent".into(), "id".into(), "CASCADE".into()));
        Ok(())
    }

    #[test]
    fn indexes_are_added_after_the_columns_they_need() {
        let c = db(&format!(
            "{HERE} CREATE INDEX t_name ON t(name); CREATE TABLE other(x); CREATE INDEX o_x ON other(x);"
        ));
        let d = def(
            "t",
            &[
                "CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT, kind TEXT, code TEXT UNIQUE)",
                "CREATE INDEX t_kind ON t(kind, lower(name))",
                "CREATE INDEX t_name ON t(name)",
                "CREATE INDEX o_x ON t(name, kind)",
                "CREATE INDEX t_code ON t(code)",
            ],
        );
        let p = plan(&c, &d);
        assert_eq!(
            p.run,
            [
                "ALTER TABLE \"t\" ADD COLUMN \"kind\" TEXT",
                "CREATE INDEX t_kind ON t(kind, lower(name))",
            ]
        );
        assert_eq!(p.added_columns, ["kind"]);
        assert_eq!(p.added_indexes, ["t_kind"]);
        let lines = p.not_applied.join("\n");
        assert_eq!(p.not_applied.len(), 3, "{lines}");
        assert!(lines.contains("'code' is UNIQUE at the sender"), "{lines}");
        assert!(lines.contains("index 'o_x'"), "{lines}");
        assert!(lines.contains("index 't_code'"), "{lines}");
        for sql in &p.run {
            c.execute_batch(sql).expect("run");
        }
    }

    #[test]
    fn what_alter_table_cannot_add_is_not_applied() {
        let c = db(HERE);
        let d = def(
            "t",
            &[
                "CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT, code TEXT UNIQUE, \
               up TEXT AS (upper(name)), a INT, b INT, FOREIGN KEY (a, b) REFERENCES p(x, y))",
            ],
        );
        let p = plan(&c, &d);
        assert!(p.run.is_empty(), "{:?}", p.run);
        let lines = p.not_applied.join("\n");
        assert_eq!(p.not_applied.len(), 4, "{lines}");
        assert!(lines.contains("column 'code' is UNIQUE at the sender: ALTER TABLE cannot add it"));
        assert!(lines.contains("column 'up' is generated"));
        assert!(lines.contains("column 'a' is part of a foreign key of several columns"));
    }

    #[test]
    fn dropped_retyped_and_rekeyed_columns_are_not_applied() {
        let c = db("CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT, age INTEGER, old TEXT)");
        let d = def(
            "t",
            &["CREATE TABLE t(id TEXT, kind TEXT, name TEXT, age TEXT, PRIMARY KEY (id, kind))"],
        );
        let p = plan(&c, &d);
        assert!(p.run.is_empty(), "{:?}", p.run);
        assert_eq!(
            p.not_applied,
            [
                "the primary key differs: (id) here, (id, kind) at the sender",
                "column 'old' is here but not in the sender's table (dropped or renamed there?)",
                "column 'age' is INTEGER here and TEXT at the sender",
                "column 'kind' is part of the sender's primary key: ALTER TABLE cannot add it; add it by hand",
            ]
        );
    }

    #[test]
    fn statements_doing_anything_else_are_refused() {
        let c = db(HERE);
        let table = "CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT)";
        let cases: &[&[&str]] = &[
            &[
                table,
                "CREATE TRIGGER x AFTER INSERT ON t BEGIN DELETE FROM t; END",
            ],
            &["DROP TABLE t"],
            &[table, "DROP TABLE t"],
            &["CREATE TABLE other(id TEXT PRIMARY KEY, name TEXT)"],
            &[&format!("{table}; DROP TABLE t")],
            &[table, "CREATE INDEX i ON t(name); CREATE INDEX j ON t(id)"],
            &["CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT"],
            &["CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT, FOREIGN KEY (zz) REFERENCES p)"],
            &["CREATE TABLE t AS SELECT 'a' AS id, 'b' AS name"],
            &["CREATE TEMP TABLE t(id TEXT PRIMARY KEY, name TEXT)"],
            &[table, "CREATE INDEX i ON other(name)"],
            &[table, "CREATE INDEX i ON t(missing)"],
            &[table, "CREATE VIEW v AS SELECT 1"],
            &[table, "PRAGMA writable_schema = 1"],
            &[table, "ALTER TABLE t ADD COLUMN x"],
            &["garbage"],
            &[],
        ];
        for schema in cases {
            let mut d = def("t", &[table]);
            d.schema = schema.iter().map(|s| s.to_string()).collect();
            let why = match outcome(&c, &d) {
                Ok(p) => panic!("accepted {schema:?}: {p:?}"),
                Err(why) => why,
            };
            assert!(why.contains("table 't'"), "{schema:?}: {why}");
            assert!(!why.contains('\n'), "{why}");
        }
        // A table other than the one the rows describe.
        let mut d = def("t", &[table]);
        d.cells = vec!["other".into()];
        assert!(outcome(&c, &d).is_err());
        // Names fieldsync and SQLite keep.
        for name in ["fieldsync_t", "FieldSync_x", "sqlite_t"] {
            let d = def(
                name,
                &[&format!("CREATE TABLE {name}(id TEXT PRIMARY KEY)")],
            );
            let why = outcome(&c, &d).expect_err("accepted");
            assert!(why.contains("belong to"), "{why}");
        }
    }

    #[test]
    fn other_differences_of_a_column_or_table_are_reported() {
        let c = db("CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT 'a', tag TEXT)");
        let d = def(
            "t",
            &["CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT, tag TEXT COLLATE NOCASE) STRICT"],
        );
        let p = plan(&c, &d);
        assert!(p.run.is_empty());
        assert_eq!(
            p.not_applied,
            [
                "the table is not STRICT here and is at the sender",
                // A STRICT table's key is NOT NULL.
                "column 'id' differs from the sender's: NOT NULL no here, yes at the sender",
                "column 'name' differs from the sender's: NOT NULL yes here, no at the sender; \
                 default 'a' here, none at the sender",
                "column 'tag' differs from the sender's: collation BINARY here, NOCASE at the sender",
            ]
        );
    }

    #[test]
    fn a_column_that_does_not_come_out_as_the_sender_has_it_is_left_off_the_copy()
    -> Result<(), Error> {
        let c = db(HERE);
        let copy = local_copy(&c, "t")?.expect("copy");
        let sender = db("CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT, x TEXT COLLATE NOCASE)");
        let want = columns(&sender, "t")?
            .into_iter()
            .find(|c| c.name == "x")
            .expect("x");
        let why = check_add_column(&copy, "t", "ALTER TABLE t ADD COLUMN x TEXT", &want)?
            .expect_err("accepted");
        assert!(
            why.contains("collation BINARY here, NOCASE at the sender"),
            "{why}"
        );
        assert_eq!(columns(&copy.conn, "t")?.len(), 2);
        // Refused by the authorizer: it alters another table.
        let why = check_add_column(&copy, "other", "ALTER TABLE t ADD COLUMN x TEXT", &want)?
            .expect_err("accepted");
        assert!(why.contains("add a column to other"), "{why}");
        check_add_column(&copy, "t", &add_column("t", &want), &want)?.expect("refused");
        assert_eq!(columns(&copy.conn, "t")?.len(), 3);
        Ok(())
    }

    #[test]
    fn schema_hash_ignores_column_order_and_case() -> Result<(), Error> {
        let a = db("CREATE TABLE t(id TEXT PRIMARY KEY, name text, n INT)");
        let b = db("CREATE TABLE T(N int, Name TEXT, ID TEXT PRIMARY KEY)");
        let other = db("CREATE TABLE t(id TEXT PRIMARY KEY, name INT, n INT)");
        let h = crate::catalog::schema::schema_version(&a, "t")?;
        assert_eq!(h.as_ref().map(String::len), Some(16));
        assert_eq!(h, crate::catalog::schema::schema_version(&b, "t")?);
        assert_ne!(h, crate::catalog::schema::schema_version(&other, "t")?);
        assert_eq!(crate::catalog::schema::schema_version(&a, "missing")?, None);
        Ok(())
    }

    #[test]
    fn literals_are_recognised() {
        for s in [
            "1",
            "-1",
            "+2.5",
            ".5",
            "1e10",
            "1.5E-3",
            "0x1F",
            "'a''b'",
            "x'00'",
            "NULL",
            "true",
            "current_timestamp",
        ] {
            assert!(is_plain_literal(s), "{s}");
        }
        for s in [
            "",
            "-",
            "'a' || 'b'",
            "1 + 2",
            "lower('x')",
            "x'0g'",
            "e5",
            "1e",
            "'",
            "0x",
        ] {
            assert!(!is_plain_literal(s), "{s}");
        }
    }
}
