//! Helpers for the integration tests: they drive the real `fieldsync` binary
//! and the system `sqlite3` shell as separate processes, the way an operator
//! or an app would, on instances living in one temporary directory.
//!
//! Every helper returns a `Result` so a test can use `?`; commands that are
//! expected to succeed return an error carrying their stderr when they do not.

// Each test crate that includes this module uses a different subset of it.
#![allow(dead_code)]

use std::cell::Cell;
use std::collections::hash_map::DefaultHasher;
use std::error::Error;
use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value as Json;

/// Result type of the tests and helpers.
pub type Res<T = ()> = Result<T, Box<dyn Error>>;

/// The system SQLite shell, as a user would run it.
pub const SQLITE3: &str = "/usr/bin/sqlite3";

/// Column separator in query output (ASCII unit separator).
const COL_SEP: &str = "\u{1f}";
/// Row separator in query output (ASCII record separator), so values that
/// contain a newline do not split a row.
const ROW_SEP: &str = "\u{1e}";

/// What a finished process printed and how it exited.
#[derive(Debug, Clone)]
pub struct Out {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Out {
    /// True if the process exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Standard output parsed as one JSON value.
    pub fn json(&self) -> Res<Json> {
        serde_json::from_str(self.stdout.trim()).map_err(|e| {
            format!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
            .into()
        })
    }

    /// Fail unless the process exited with 0.
    pub fn ok(self) -> Res<Out> {
        if self.success() {
            Ok(self)
        } else {
            Err(format!(
                "command failed with {:?}\nstdout:\n{}\nstderr:\n{}",
                self.code, self.stdout, self.stderr
            )
            .into())
        }
    }
}

/// Run the real `fieldsync` binary with `args`.
pub fn fieldsync(args: &[&dyn AsRef<OsStr>]) -> Res<Out> {
    let out = Command::new(env!("CARGO_BIN_EXE_fieldsync"))
        .args(args.iter().map(|a| a.as_ref()))
        .env_remove("FIELDSYNC_DB")
        .stdin(Stdio::null())
        .output()?;
    Ok(Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Run `fieldsync` and fail unless it exits with 0.
pub fn fieldsync_ok(args: &[&dyn AsRef<OsStr>]) -> Res<Out> {
    fieldsync(args)?.ok()
}

/// Run a program with `input` on its standard input.
pub fn run_with_input(mut cmd: Command, input: &str) -> Res<Out> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    {
        let mut stdin = child.stdin.take().ok_or("no stdin pipe")?;
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok(Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Run SQL through the `sqlite3` shell (stopping at the first error) and
/// return what it printed and how it exited.
pub fn sqlite3_raw(db: &Path, sql: &str) -> Res<Out> {
    let mut cmd = Command::new(SQLITE3);
    cmd.arg("-batch").arg("-bail").arg(db);
    run_with_input(cmd, sql)
}

/// Run SQL through the `sqlite3` shell; fail on any SQL error.
pub fn sqlite3(db: &Path, sql: &str) -> Res<String> {
    let out = sqlite3_raw(db, sql)?;
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
    Ok(out.stdout)
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
    let out = run_with_input(cmd, sql)?;
    if !out.success() || !out.stderr.trim().is_empty() {
        return Err(format!(
            "sqlite3 {} failed ({:?}): {}\nSQL:\n{sql}",
            db.display(),
            out.code,
            out.stderr.trim()
        )
        .into());
    }
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

/// A number from a JSON object.
pub fn num(v: &Json, key: &str) -> Res<u64> {
    v.get(key)
        .and_then(Json::as_u64)
        .ok_or_else(|| format!("no number {key:?} in {v}").into())
}

/// A string from a JSON object.
pub fn text<'a>(v: &'a Json, key: &str) -> Res<&'a str> {
    v.get(key)
        .and_then(Json::as_str)
        .ok_or_else(|| format!("no string {key:?} in {v}").into())
}

/// Check a failed command: the exit code, exactly one line on stderr starting
/// with `fieldsync: error:` and containing every needle (case-insensitive),
/// nothing on stdout, and no panic.
#[track_caller]
pub fn assert_error(out: &Out, code: i32, needles: &[&str]) {
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        out.code,
        Some(code),
        "exit code; stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        !out.stderr.contains("panicked") && !out.stderr.contains("RUST_BACKTRACE"),
        "panic: {}",
        out.stderr
    );
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one stderr line, got:\n{}",
        out.stderr
    );
    assert!(
        lines[0].starts_with("fieldsync: error: "),
        "stderr line does not start with `fieldsync: error: `: {}",
        lines[0]
    );
    let lower = lines[0].to_lowercase();
    for n in needles {
        assert!(
            lower.contains(&n.to_lowercase()),
            "error line does not mention {n:?}: {}",
            lines[0]
        );
    }
    assert!(
        out.stdout.trim().is_empty(),
        "a failed command printed on stdout: {}",
        out.stdout
    );
}

/// One instance: a database file with fieldsync set up in it.
#[derive(Debug, Clone)]
pub struct Site {
    /// Its instance name.
    pub name: String,
    /// Its database file.
    pub db: PathBuf,
}

impl Site {
    /// Run SQL on it through the `sqlite3` shell.
    pub fn sql(&self, sql: &str) -> Res<String> {
        sqlite3(&self.db, sql)
    }

    /// Rows of a table as `quote()` strings, ordered by key.
    pub fn rows(&self, table: &str) -> Res<Vec<Vec<String>>> {
        rows(&self.db, table)
    }

    /// Rows of a table shown exactly, ordered by key.
    pub fn rows_exact(&self, table: &str) -> Res<Vec<Vec<String>>> {
        rows_exact(&self.db, table)
    }

    /// [`snapshot`] of its database.
    pub fn snapshot(&self) -> Res<String> {
        snapshot(&self.db)
    }

    /// [`db_fingerprint`] of its database.
    pub fn fingerprint(&self) -> Res<Fingerprint> {
        db_fingerprint(&self.db)
    }

    /// A count from a query on its database.
    pub fn count(&self, sql: &str) -> Res<u64> {
        count(&self.db, sql)
    }

    /// `export --to PEER -o FILE --json`, which must succeed.
    pub fn export_to(&self, peer: &str, file: &Path) -> Res<Json> {
        fieldsync_ok(&[
            &"export", &"--db", &self.db, &"--to", &peer, &"-o", &file, &"--json",
        ])?
        .json()
    }

    /// `import FILE... --json`, which must succeed.
    pub fn import(&self, files: &[&Path]) -> Res<Json> {
        let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"import", &"--db", &self.db, &"--json"];
        for f in files {
            args.push(f);
        }
        fieldsync_ok(&args)?.json()
    }

    /// `status --json`, which must succeed.
    pub fn status(&self) -> Res<Json> {
        fieldsync_ok(&[&"status", &"--db", &self.db, &"--json"])?.json()
    }

    /// Its site id, from `status --json`.
    pub fn site_id(&self) -> Res<String> {
        Ok(text(&self.status()?, "site_id")?.to_owned())
    }

    /// The `origins` entry of `status --json` with this name, if any.
    pub fn origin(&self, name: &str) -> Res<Option<Json>> {
        let status = self.status()?;
        let origins = status
            .get("origins")
            .and_then(Json::as_array)
            .ok_or("status has no origins array")?;
        Ok(origins
            .iter()
            .find(|o| o.get("name").and_then(Json::as_str) == Some(name))
            .cloned())
    }
}

/// A temporary directory holding instances and bundle files.
pub struct World {
    dir: tempfile::TempDir,
    bundles: Cell<u32>,
}

impl World {
    /// A new empty directory.
    pub fn new() -> Res<World> {
        Ok(World {
            dir: tempfile::tempdir()?,
            bundles: Cell::new(0),
        })
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A fresh bundle file name, labelled for readable failures.
    pub fn bundle(&self, label: &str) -> PathBuf {
        let n = self.bundles.get() + 1;
        self.bundles.set(n);
        self.path(&format!("{n:03}-{label}.fsb"))
    }

    /// Create `NAME.db` with the app schema, `init` it and `track --all`.
    pub fn site(&self, name: &str, schema: &str) -> Res<Site> {
        let site = self.bare_site(name, schema)?;
        fieldsync_ok(&[&"track", &"--db", &site.db, &"--all"])?;
        Ok(site)
    }

    /// Create `NAME.db` with the app schema and `init` it, tracking nothing.
    pub fn bare_site(&self, name: &str, schema: &str) -> Res<Site> {
        let db = self.path(&format!("{name}.db"));
        sqlite3(&db, schema)?;
        fieldsync_ok(&[&"init", &"--db", &db, &"--name", &name])?;
        Ok(Site {
            name: name.to_owned(),
            db,
        })
    }

    /// The usual three instances with the same schema, every table tracked.
    pub fn three(&self, schema: &str) -> Res<(Site, Site, Site)> {
        Ok((
            self.site("hq", schema)?,
            self.site("field-1", schema)?,
            self.site("field-2", schema)?,
        ))
    }

    /// Export from `from` to `to` and import the bundle at `to`. Returns the
    /// export's and the import's JSON.
    pub fn send(&self, from: &Site, to: &Site) -> Res<(Json, Json)> {
        let file = self.bundle(&format!("{}-to-{}", from.name, to.name));
        let exported = from.export_to(&to.name, &file)?;
        let imported = to.import(&[&file])?;
        Ok((exported, imported))
    }

    /// Both ways, `a` first: afterwards each has the other's changes and
    /// acknowledgements.
    pub fn exchange(&self, a: &Site, b: &Site) -> Res {
        self.send(a, b)?;
        self.send(b, a)?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Foreign keys, quarantine and the conflict log (scenario and regression tests)
// ---------------------------------------------------------------------------

/// A location hierarchy and the rows that point into it, as a relief app
/// keeps them; the app runs with foreign keys on.
pub const RELIEF_SCHEMA: &str = "
PRAGMA foreign_keys = ON;
CREATE TABLE location(
  id TEXT PRIMARY KEY,
  parent TEXT REFERENCES location(id),
  level TEXT NOT NULL,
  name TEXT NOT NULL
);
CREATE INDEX location_parent ON location(parent);
CREATE TABLE shelter(
  id TEXT PRIMARY KEY,
  code TEXT NOT NULL UNIQUE,
  location TEXT NOT NULL REFERENCES location(id),
  population INTEGER NOT NULL DEFAULT 0 CHECK (population >= 0)
);";

/// `PRAGMA foreign_key_check` output (empty when every reference holds).
pub fn dangling(site: &Site) -> Res<String> {
    site.sql("PRAGMA foreign_key_check;")
}

pub fn held(site: &Site) -> Res<Vec<Json>> {
    let out = fieldsync_ok(&[&"conflicts", &"--db", &site.db, &"--json"])?.json()?;
    Ok(out
        .get("quarantined")
        .and_then(Json::as_array)
        .cloned()
        .ok_or("conflicts --json has no quarantined list")?)
}

pub fn overwritten(site: &Site) -> Res<Vec<Json>> {
    let out = fieldsync_ok(&[&"conflicts", &"--db", &site.db, &"--json"])?.json()?;
    Ok(out
        .get("overwritten")
        .and_then(Json::as_array)
        .cloned()
        .ok_or("conflicts --json has no overwritten list")?)
}
