//! Side-by-side cost of capture: the same writes into a tracked and an
//! untracked copy of one table, in the same process run, interleaved, with
//! the median of several repetitions and the ratio printed. Writes go through
//! prepared statements (rusqlite) and through the system `sqlite3` shell.
//!
//! Run: `cargo bench --bench capture_overhead`
//! Scale: `FIELDSYNC_BENCH_N=50000 FIELDSYNC_BENCH_REPS=5` (defaults).
//! The figures in spec/capture.md come from this program.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fieldsync::{Instance, Selection};
use rusqlite::{Connection, params};

const SCHEMA: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT NOT NULL, age INTEGER, status TEXT, \
                      score REAL, photo BLOB, org INTEGER, note TEXT);";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn id(i: usize) -> String {
    // uuid-shaped, spread over the key space like random uuids
    let h = blake3::hash(&(i as u64).to_le_bytes());
    let b = h.as_bytes();
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-4{:01x}{:02x}-a{:01x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0],
        b[1],
        b[2],
        b[3],
        b[4],
        b[5],
        b[6] & 15,
        b[7],
        b[8] & 15,
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A fresh database with the table, tracked or not.
fn fresh(dir: &Path, tracked: bool, rows: usize) -> Res<PathBuf> {
    let path = dir.join(if tracked { "tracked.db" } else { "plain.db" });
    let _ = std::fs::remove_file(&path);
    let conn = Connection::open(&path)?;
    conn.execute_batch(SCHEMA)?;
    fill(&conn, rows)?;
    drop(conn);
    if tracked {
        let (mut inst, _) = Instance::init(&path, "bench")?;
        inst.track(&Selection::All)?;
        inst.compact()?;
    }
    Ok(path)
}

fn fill(conn: &Connection, rows: usize) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN")?;
    {
        let mut st = conn.prepare("INSERT INTO person VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?;
        for i in 0..rows {
            st.execute(params![
                id(i),
                format!("Person {i}"),
                (i % 90) as i64,
                "missing",
                i as f64 * 0.5,
                &[i as u8; 16][..],
                (i % 7) as i64,
                if i % 2 == 0 { None } else { Some("note") }
            ])?;
        }
    }
    conn.execute_batch("COMMIT")
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

fn run_prepared(path: &Path, work: Work, n: usize, one_tx: bool) -> rusqlite::Result<Duration> {
    let conn = Connection::open(path)?;
    let start = Instant::now();
    if one_tx {
        conn.execute_batch("BEGIN")?;
    }
    match work {
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
                st.execute(params!["found", id(i)])?;
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
                    id(i)
                ])?;
            }
        }
        Work::Delete => {
            let mut st = conn.prepare("DELETE FROM person WHERE id = ?1")?;
            for i in 0..n {
                st.execute(params![id(i)])?;
            }
        }
    }
    if one_tx {
        conn.execute_batch("COMMIT")?;
    }
    Ok(start.elapsed())
}

fn shell_script(work: Work, n: usize) -> String {
    let mut s = String::from("BEGIN;\n");
    for i in 0..n {
        let k = id(i);
        match work {
            Work::Insert => s.push_str(&format!(
                "INSERT INTO person VALUES ('{k}', 'Name', 30, 'missing', 1.5, x'07070707070707070707070707070707', 3, NULL);\n"
            )),
            Work::UpdateOne => s.push_str(&format!("UPDATE person SET status = 'found' WHERE id = '{k}';\n")),
            Work::UpdateAll => s.push_str(&format!(
                "UPDATE person SET name = 'Person {i}', age = {}, status = 'found', score = {:?}, photo = x'{}', org = {}, note = {} WHERE id = '{k}';\n",
                i % 90,
                i as f64 * 0.5,
                format!("{:02x}", i as u8).repeat(16),
                i % 7,
                if i % 2 == 0 { "NULL" } else { "'note'" }
            )),
            Work::Delete => s.push_str(&format!("DELETE FROM person WHERE id = '{k}';\n")),
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

/// Measure the untracked and the tracked run alternately, `reps` times
/// each, and print both medians and their ratio.
fn side_by_side(label: &str, reps: usize, mut run: impl FnMut(bool) -> Res<f64>) -> Res<()> {
    let (mut plain, mut tracked) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        plain.push(run(false)?);
        tracked.push(run(true)?);
    }
    let (p, t) = (median(plain), median(tracked));
    println!("{label:<40} {p:>11.4} {t:>11.4} {:>6.2}x", t / p);
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n = env_usize("FIELDSYNC_BENCH_N", 50_000);
    let reps = env_usize("FIELDSYNC_BENCH_REPS", 5).max(1);
    let n_auto = (n / 25).max(200);
    let dir = tempfile::tempdir()?;
    let shell = Command::new("sqlite3")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success());
    println!(
        "capture overhead: {n} rows per run ({n_auto} in autocommit), {reps} repetitions, median; SQLite (rusqlite) {}, shell {}",
        rusqlite::version(),
        shell
            .as_ref()
            .map(|o| String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .unwrap_or("?")
                .to_owned())
            .unwrap_or_else(|| "not found".into())
    );
    println!(
        "{:<40} {:>11} {:>11} {:>7}",
        "workload", "plain s", "tracked s", "ratio"
    );
    let works = [Work::Insert, Work::UpdateOne, Work::UpdateAll, Work::Delete];
    for (mode, one_tx) in [("prepared, one tx", true), ("prepared, autocommit", false)] {
        for work in works {
            let count = if one_tx { n } else { n_auto };
            side_by_side(&format!("{} ({mode})", work.label()), reps, |tracked| {
                let path = fresh(dir.path(), tracked, work.prefill(count))?;
                Ok(run_prepared(&path, work, count, one_tx)?.as_secs_f64())
            })?;
        }
    }
    if shell.is_some() {
        let script = dir.path().join("script.sql");
        for work in works {
            std::fs::write(&script, shell_script(work, n))?;
            side_by_side(
                &format!("{} (sqlite3 shell, one tx)", work.label()),
                reps,
                |tracked| {
                    let path = fresh(dir.path(), tracked, work.prefill(n))?;
                    Ok(run_shell(&path, &script)?.as_secs_f64())
                },
            )?;
        }
    }
    // The deferred part: folding what the triggers recorded into the log,
    // which export/import/compact do off the app's write path.
    let mut fold = Vec::new();
    for _ in 0..reps {
        let path = fresh(dir.path(), true, 0)?;
        run_prepared(&path, Work::Insert, n, true)?;
        let mut inst = Instance::open(&path)?;
        let start = Instant::now();
        inst.compact()?;
        fold.push(start.elapsed().as_secs_f64());
    }
    let f = median(fold);
    println!(
        "fold {n} captured inserts into the log (compact): {f:.4} s, {:.2} µs per change",
        f * 1e6 / n as f64
    );
    Ok(())
}
