//! Capture overhead: the same writes into a tracked and an untracked copy
//! of one table, through prepared statements (one transaction and
//! autocommit) and through the system `sqlite3` shell; then the deferred
//! part, folding what the triggers recorded into the log. Run once with the
//! table keyed by uuid text and once keyed by `INTEGER PRIMARY KEY
//! AUTOINCREMENT` (rows identified by origin, mapped in `fieldsync_ids`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fieldsync::{Instance, Selection};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params};

use crate::fixture::{Figure, INT_SCHEMA, Res, SCHEMA, fill, fill_int, id, median, side_by_side};

/// How the table is keyed.
#[derive(Clone, Copy, PartialEq)]
pub enum Keys {
    /// `id TEXT PRIMARY KEY` holding uuids (the app gives the key).
    Text,
    /// `id INTEGER PRIMARY KEY AUTOINCREMENT` (SQLite numbers rows; new
    /// rows leave `id` out).
    Int,
}

impl Keys {
    fn schema(self) -> &'static str {
        match self {
            Keys::Text => SCHEMA,
            Keys::Int => INT_SCHEMA,
        }
    }

    /// The key of row `i` as SQL finds it.
    fn key(self, i: usize) -> SqlValue {
        match self {
            Keys::Text => SqlValue::Text(id(i)),
            Keys::Int => SqlValue::Integer(i as i64 + 1),
        }
    }

    /// Row `i`'s key as an SQL literal.
    fn literal(self, i: usize) -> String {
        match self {
            Keys::Text => format!("'{}'", id(i)),
            Keys::Int => (i + 1).to_string(),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Keys::Text => "",
            Keys::Int => " int key:",
        }
    }
}

/// A fresh database with the table, tracked or not.
fn fresh(dir: &Path, keys: Keys, tracked: bool, rows: usize) -> Res<std::path::PathBuf> {
    let path = dir.join(if tracked { "tracked.db" } else { "plain.db" });
    let _ = std::fs::remove_file(&path);
    let conn = Connection::open(&path)?;
    conn.execute_batch(keys.schema())?;
    match keys {
        Keys::Text => fill(&conn, 0, rows)?,
        Keys::Int => fill_int(&conn, 0, rows)?,
    }
    drop(conn);
    if tracked {
        let (mut inst, _) = Instance::init(&path, "bench")?;
        inst.track(&Selection::All)?;
        inst.compact()?;
    }
    Ok(path)
}

#[derive(Clone, Copy, PartialEq)]
enum Work {
    Insert,
    UpdateOne,
    UpdateAll,
    Delete,
}

impl Work {
    fn label(self) -> &'static str {
        match self {
            Work::Insert => "insert",
            Work::UpdateOne => "update 1 column",
            Work::UpdateAll => "update all columns (ORM), 1 changed",
            Work::Delete => "delete",
        }
    }
    fn prefill(self, n: usize) -> usize {
        if self == Work::Insert { 0 } else { n }
    }
}

fn run_prepared(
    path: &Path,
    keys: Keys,
    work: Work,
    n: usize,
    one_tx: bool,
) -> rusqlite::Result<Duration> {
    let conn = Connection::open(path)?;
    let start = Instant::now();
    if one_tx {
        conn.execute_batch("BEGIN")?;
    }
    match work {
        Work::Insert if keys == Keys::Int => {
            // As an app does: SQLite numbers the row.
            let mut st = conn.prepare(
                "INSERT INTO person(name, age, status, score, photo, org, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for _ in 0..n {
                st.execute(params![
                    "Name",
                    30i64,
                    "missing",
                    1.5f64,
                    &[7u8; 16][..],
                    3i64,
                    Option::<&str>::None
                ])?;
            }
        }
        Work::Insert => {
            let mut st =
                conn.prepare("INSERT INTO person VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?;
            for i in 0..n {
                st.execute(params![
                    id(i),
                    "Name",
                    30i64,
                    "missing",
                    1.5f64,
                    &[7u8; 16][..],
                    3i64,
                    Option::<&str>::None
                ])?;
            }
        }
        Work::UpdateOne => {
            let mut st = conn.prepare("UPDATE person SET status = ?1 WHERE id = ?2")?;
            for i in 0..n {
                st.execute(params!["found", keys.key(i)])?;
            }
        }
        Work::UpdateAll => {
            let mut st = conn.prepare(
                "UPDATE person SET name = ?1, age = ?2, status = ?3, score = ?4, photo = ?5, org = ?6, note = ?7 WHERE id = ?8",
            )?;
            for i in 0..n {
                st.execute(params![
                    format!("Person {i}"),
                    (i % 90) as i64,
                    "found",
                    i as f64 * 0.5,
                    &[i as u8; 16][..],
                    (i % 7) as i64,
                    if i % 2 == 0 { None } else { Some("note") },
                    keys.key(i)
                ])?;
            }
        }
        Work::Delete => {
            let mut st = conn.prepare("DELETE FROM person WHERE id = ?1")?;
            for i in 0..n {
                st.execute(params![keys.key(i)])?;
            }
        }
    }
    if one_tx {
        conn.execute_batch("COMMIT")?;
    }
    Ok(start.elapsed())
}

fn shell_script(keys: Keys, work: Work, n: usize) -> String {
    let mut s = String::from("BEGIN;\n");
    for i in 0..n {
        let k = keys.literal(i);
        match work {
            Work::Insert if keys == Keys::Int => s.push_str(
                "INSERT INTO person(name, age, status, score, photo, org, note) VALUES ('Name', 30, 'missing', 1.5, x'07070707070707070707070707070707', 3, NULL);\n",
            ),
            Work::Insert => s.push_str(&format!(
                "INSERT INTO person VALUES ({k}, 'Name', 30, 'missing', 1.5, x'07070707070707070707070707070707', 3, NULL);\n"
            )),
            Work::UpdateOne => s.push_str(&format!("UPDATE person SET status = 'found' WHERE id = {k};\n")),
            Work::UpdateAll => s.push_str(&format!(
                "UPDATE person SET name = 'Person {i}', age = {}, status = 'found', score = {:?}, photo = x'{}', org = {}, note = {} WHERE id = {k};\n",
                i % 90,
                i as f64 * 0.5,
                format!("{:02x}", i as u8).repeat(16),
                i % 7,
                if i % 2 == 0 { "NULL" } else { "'note'" }
            )),
            Work::Delete => s.push_str(&format!("DELETE FROM person WHERE id = {k};\n")),
        }
    }
    s.push_str("COMMIT;\n");
    s
}

fn run_shell(path: &Path, script: &Path) -> std::io::Result<Duration> {
    let start = Instant::now();
    let status = Command::new("sqlite3")
        .arg(path)
        .stdin(std::fs::File::open(script)?)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other("sqlite3 failed"));
    }
    Ok(start.elapsed())
}

/// The capture figures for a table keyed as `keys`: `n` rows per run,
/// `reps` repetitions.
pub fn run(dir: &Path, keys: Keys, n: usize, reps: usize) -> Res<Vec<Figure>> {
    let n_auto = (n / 25).max(200);
    let shell = Command::new("sqlite3")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success());
    let keyed = match keys {
        Keys::Text => "id TEXT PRIMARY KEY (uuids)",
        Keys::Int => "id INTEGER PRIMARY KEY AUTOINCREMENT",
    };
    println!(
        "\ncapture overhead, {keyed}: {n} rows per run ({n_auto} in autocommit); baseline: the same table untracked"
    );
    let mut figures = Vec::new();
    let works = [Work::Insert, Work::UpdateOne, Work::UpdateAll, Work::Delete];
    for (mode, one_tx) in [("prepared, one tx", true), ("prepared, autocommit", false)] {
        for work in works {
            let count = if one_tx { n } else { n_auto };
            let target = (one_tx && matches!(work, Work::Insert | Work::UpdateOne)).then_some(2.0);
            figures.push(side_by_side(
                &format!("capture:{} {} ({mode})", keys.label(), work.label()),
                reps,
                target,
                |tracked| {
                    let path = fresh(dir, keys, tracked, work.prefill(count))?;
                    Ok(run_prepared(&path, keys, work, count, one_tx)?.as_secs_f64())
                },
            )?);
        }
    }
    if shell.is_some() {
        let script = dir.join("script.sql");
        for work in works {
            std::fs::write(&script, shell_script(keys, work, n))?;
            let target = matches!(work, Work::Insert | Work::UpdateOne).then_some(2.0);
            figures.push(side_by_side(
                &format!("capture:{} {} (sqlite3 shell)", keys.label(), work.label()),
                reps,
                target,
                |tracked| {
                    let path = fresh(dir, keys, tracked, work.prefill(n))?;
                    Ok(run_shell(&path, &script)?.as_secs_f64())
                },
            )?);
        }
    } else {
        println!("(the sqlite3 shell is not installed: shell figures skipped)");
    }
    // The deferred part: folding what the triggers recorded into the log,
    // which export/import/compact do off the app's write path (for integer
    // keys this is also where each new row gets its identity).
    let mut fold = Vec::new();
    for _ in 0..reps {
        let path = fresh(dir, keys, true, 0)?;
        run_prepared(&path, keys, Work::Insert, n, true)?;
        let mut inst = Instance::open(&path)?;
        let start = Instant::now();
        inst.compact()?;
        fold.push(start.elapsed().as_secs_f64());
    }
    let f = median(fold);
    println!(
        "fold {n} captured inserts into the log (compact), {keyed}: {f:.4} s, {:.2} µs per change",
        f * 1e6 / n as f64
    );
    Ok(figures)
}

/// The deferred part for both keyings: folding `n` captured inserts into
/// the log, integer keys (each new row also gets its identity in
/// `fieldsync_ids`) against text keys, interleaved.
pub fn fold(dir: &Path, n: usize, reps: usize) -> Res<Figure> {
    println!("\nfolding {n} captured inserts into the log (compact): integer keys vs text keys");
    side_by_side(
        &format!("fold {n} captured inserts: int key (vs text key)"),
        reps,
        None,
        |int| {
            let keys = if int { Keys::Int } else { Keys::Text };
            let path = fresh(dir, keys, true, 0)?;
            run_prepared(&path, keys, Work::Insert, n, true)?;
            let mut inst = Instance::open(&path)?;
            let start = Instant::now();
            inst.compact()?;
            Ok(start.elapsed().as_secs_f64())
        },
    )
}
