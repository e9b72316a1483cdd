//! The system `sqlite3` shell, run as a user or an app would: SQL scripts,
//! queries split into rows and cells, rows shown exactly, and the snapshot
//! and fingerprint that tell whether two databases (or one database before
//! and after a command) hold the same thing.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::process::Command;

use super::Res;
use super::cli::{Out, run_with_input};

/// The system SQLite shell, as a user would run it.
pub const SQLITE3: &str = "/usr/bin/sqlite3";

/// Column separator in query output (ASCII unit separator).
const COL_SEP: &str = "\u{1f}";
/// Row separator in query output (ASCII record separator), so values that
/// contain a newline do not split a row.
const ROW_SEP: &str = "\u{1e}";

/// Run SQL through the `sqlite3` shell (stopping at the first error) and
/// return what it printed and how it exited.
pub fn sqlite3_raw(db: &Path, sql: &str) -> Res<Out> {
    let mut cmd = Command::new(SQLITE3);
    cmd.arg("-batch").arg("-bail").arg(db);
    run_with_input(cmd, sql)
}

/// Run SQL through the `sqlite3` shell; fail on any SQL error.
pub fn sqlite3(db: &Path, sql: &str) -> Res<String> {
    Ok(succeeded(db, sql, sqlite3_raw(db, sql)?)?.stdout)
}

/// The shell's output, or an error if it failed or printed an error.
fn succeeded(db: &Path, sql: &str, out: Out) -> Res<Out> {
    if !out.success() || !out.stderr.trim().is_empty() {
        return Err(format!(
            "sqlite3 {} failed ({:?}): {}\nSQL:\n{}",
            db.display(),
            out.code,
            out.stderr.trim(),
            abbreviate(sql)
        )
        .into());
    }
    Ok(out)
}

fn abbreviate(s: &str) -> String {
    if s.len() <= 2000 {
        s.to_owned()
    } else {
        let mut end = 2000;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &s[..end], s.len())
    }
}

/// Run a query through the `sqlite3` shell and split its output into rows of
/// columns (separators that cannot occur in the tests' values, so a value
/// holding a newline stays one cell).
pub fn query(db: &Path, sql: &str) -> Res<Vec<Vec<String>>> {
    let mut cmd = Command::new(SQLITE3);
    cmd.arg("-batch")
        .arg("-bail")
        .arg("-list")
        .arg("-noheader")
        .arg("-separator")
        .arg(COL_SEP)
        .arg("-newline")
        .arg(ROW_SEP)
        .arg(db);
    let out = succeeded(db, sql, run_with_input(cmd, sql)?)?;
    Ok(out
        .stdout
        .split(ROW_SEP)
        .filter(|r| !r.is_empty())
        .map(|r| r.split(COL_SEP).map(str::to_owned).collect())
        .collect())
}

/// The single value a query returns.
pub fn query_one(db: &Path, sql: &str) -> Res<String> {
    let rows = query(db, sql)?;
    match rows.as_slice() {
        [row] if row.len() == 1 => Ok(row[0].clone()),
        _ => Err(format!("expected one value from {sql}, got {rows:?}").into()),
    }
}

/// A count from a query.
pub fn count(db: &Path, sql: &str) -> Res<u64> {
    Ok(query_one(db, sql)?.trim().parse()?)
}

/// Quote an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quote an SQL string literal.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The expression showing a column exactly: `quote()`, plus the IEEE bits of
/// a REAL (quote() prints -0.0 as 0.0) and the bytes of a TEXT (quote()
/// stops at an embedded NUL).
pub fn exact(col: &str) -> String {
    let c = ident(col);
    format!(
        "CASE typeof({c}) \
           WHEN 'real' THEN quote({c}) || ' bits=' || hex(ieee754_to_blob({c})) \
           WHEN 'text' THEN quote({c}) || ' hex=' || hex({c}) \
           ELSE quote({c}) END"
    )
}

/// Columns of a table in declaration order, and its key columns in key order.
pub fn columns(db: &Path, table: &str) -> Res<(Vec<String>, Vec<String>)> {
    let rows = query(
        db,
        &format!(
            "SELECT name, pk FROM pragma_table_info({}) ORDER BY cid;",
            lit(table)
        ),
    )?;
    if rows.is_empty() {
        return Err(format!("table {table} has no columns in {}", db.display()).into());
    }
    let cols: Vec<String> = rows.iter().map(|r| r[0].clone()).collect();
    let mut keys: Vec<(u32, String)> = Vec::new();
    for r in &rows {
        let pos: u32 = r
            .get(1)
            .ok_or("pragma_table_info row without pk")?
            .parse()?;
        if pos > 0 {
            keys.push((pos, r[0].clone()));
        }
    }
    keys.sort();
    Ok((cols, keys.into_iter().map(|(_, k)| k).collect()))
}

fn table_rows(db: &Path, table: &str, cell: fn(&str) -> String) -> Res<Vec<Vec<String>>> {
    let (cols, keys) = columns(db, table)?;
    let select = cols.iter().map(|c| cell(c)).collect::<Vec<_>>().join(", ");
    let order = if keys.is_empty() {
        cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ")
    } else {
        keys.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ")
    };
    query(
        db,
        &format!("SELECT {select} FROM {} ORDER BY {order};", ident(table)),
    )
}

/// Every row of a table, ordered by key, each cell as `quote(col)`.
pub fn rows(db: &Path, table: &str) -> Res<Vec<Vec<String>>> {
    table_rows(db, table, |c| format!("quote({})", ident(c)))
}

/// Every row of a table, ordered by key, each cell shown by [`exact`].
pub fn rows_exact(db: &Path, table: &str) -> Res<Vec<Vec<String>>> {
    table_rows(db, table, exact)
}

/// Names of the tables fieldsync tracks in a database.
pub fn tracked_tables(db: &Path) -> Res<Vec<String>> {
    Ok(
        query(db, "SELECT name FROM fieldsync_tables ORDER BY name;")?
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect(),
    )
}

/// Every tracked app table, ordered by key, each cell shown exactly: equal
/// snapshots mean two instances hold the same data.
pub fn snapshot(db: &Path) -> Res<String> {
    let mut out = String::new();
    for t in tracked_tables(db)? {
        out.push_str(&format!("table {t}\n"));
        for r in rows_exact(db, &t)? {
            out.push_str("  ");
            out.push_str(&r.join(" | "));
            out.push('\n');
        }
    }
    Ok(out)
}

/// What a database is, to prove a failed command left it alone: whether the
/// file exists, a hash of its bytes, and its `.dump`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    exists: bool,
    len: u64,
    hash: u64,
    dump: String,
}

impl Fingerprint {
    /// The same without the journal of refused bundles (`fieldsync_refused`,
    /// the one thing a refused import writes): its `.dump` less the
    /// journal's rows; the file's bytes are left out.
    pub fn without_journal(&self) -> (bool, String) {
        let dump = self
            .dump
            .lines()
            .filter(|l| !l.starts_with("INSERT INTO fieldsync_refused"))
            .collect::<Vec<_>>()
            .join("\n");
        (self.exists, dump)
    }
}

/// The [`Fingerprint`] of a database file (or of its absence).
pub fn db_fingerprint(db: &Path) -> Res<Fingerprint> {
    if !db.exists() {
        return Ok(Fingerprint {
            exists: false,
            len: 0,
            hash: 0,
            dump: String::new(),
        });
    }
    let bytes = std::fs::read(db)?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    Ok(Fingerprint {
        exists: true,
        len: bytes.len() as u64,
        hash: h.finish(),
        dump: sqlite3(db, ".dump")?,
    })
}
