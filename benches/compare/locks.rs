//! Who waits while fieldsync writes: an app writing to its own database
//! while `fieldsync import` of a large full bundle runs in it, and while
//! `fieldsync export --full` runs in the app's source database, in the
//! rollback-journal (DELETE) and WAL modes. The app is two writers, each a
//! process of its own, one INSERT every ~20 ms, each its own transaction:
//! the `sqlite3` shell with `.timeout 5000`, and Python's `sqlite3` module
//! with its default 5 s timeout. Reported: the app's statements, errors,
//! lost writes and waits (against the same writers with no fieldsync
//! activity), fieldsync's longest write transaction from its `--json`
//! report, and the import's time against `import --atomic` (one write
//! transaction), all in the same run.
//!
//! Works against a binary without `--atomic` or without the
//! `write_transactions` / `longest_write_ms` report fields: its default
//! import is then the single-transaction one (run as both), and the fields
//! print as "n/r" (not reported).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use fieldsync::{Instance, Selection};
use rusqlite::Connection;
use serde_json::Value as Json;

use crate::fixture::{Figure, Res, plain};

/// The app's own table at both ends, tracked: its writes fire capture
/// triggers, as a real app's do.
const NOTES: &str = "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);";

/// Pause between one app statement's end and the next one's start.
const PACE: Duration = Duration::from_millis(20);

/// How long the writers run with no fieldsync activity (their baseline).
const ALONE: Duration = Duration::from_secs(3);

/// How long the writers get to start before fieldsync does.
const WARM_UP: Duration = Duration::from_millis(300);

/// How long a writer may take to stop once told (a statement waits at most
/// 5 s for the lock), after which it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// How long the shell may take to answer one statement before it is taken
/// for hung and killed.
const ANSWER: Duration = Duration::from_secs(30);

/// The Python writer: `python3 SCRIPT DB TAG STOPFILE LIMIT_SECS`. Inserts
/// `TAG<n>` rows with a commit each until STOPFILE exists or LIMIT_SECS
/// pass, then prints a JSON summary (`stall_ms`: the longest time between
/// two successful commits, or from the start to the first, or from the
/// last to the end).
const PYTHON: &str = r#"import json, os, sqlite3, sys, time
db, tag, stop, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
conn = sqlite3.connect(db)  # the default 5 s timeout
waits, n, ok, errors, locked = [], 0, 0, 0, 0
end = time.monotonic() + limit
last_ok = time.monotonic()
stall = 0.0
while not os.path.exists(stop) and time.monotonic() < end:
    n += 1
    start = time.monotonic()
    try:
        conn.execute("INSERT INTO notes(body) VALUES (?)", (tag + str(n),))
        conn.commit()
        ok += 1
        stall = max(stall, time.monotonic() - last_ok)
        last_ok = time.monotonic()
    except sqlite3.Error as e:
        errors += 1
        if "locked" in str(e) or "busy" in str(e):
            locked += 1
        try:
            conn.rollback()
        except sqlite3.Error:
            pass
    waits.append((time.monotonic() - start) * 1000.0)
    time.sleep(0.02)
stall = max(stall, time.monotonic() - last_ok)
conn.close()
print(json.dumps({"statements": n, "ok": ok, "errors": errors, "locked": locked,
                  "stall_ms": stall * 1000.0, "waits_ms": waits}))
"#;

const WRITERS: [&str; 2] = ["sqlite3 shell", "python sqlite3"];

#[derive(Clone, Copy, PartialEq)]
enum Journal {
    Delete,
    Wal,
}

impl Journal {
    fn pragma(self) -> &'static str {
        match self {
            Journal::Delete => "DELETE",
            Journal::Wal => "WAL",
        }
    }
}

/// What one app writer did in one run.
#[derive(Clone)]
struct AppRun {
    statements: f64,
    /// Statements that reported success.
    ok: f64,
    errors: f64,
    /// Errors that were `database is locked` / busy.
    locked: f64,
    max_ms: f64,
    p99_ms: f64,
    /// The longest time the app went without a successful commit: from
    /// its start, between two, or from the last to its end. Alone it is
    /// the pause plus a statement; against a writer holding the lock it is
    /// about as long as the lock is held (the app's view of it).
    stall_ms: f64,
    /// Succeeded statements whose row is not in the table afterwards.
    lost: f64,
}

impl AppRun {
    fn from_waits(
        statements: u64,
        errors: u64,
        locked: u64,
        stall_ms: f64,
        mut waits: Vec<f64>,
    ) -> AppRun {
        waits.sort_by(f64::total_cmp);
        let p99 = match waits.len() {
            0 => 0.0,
            len => waits[(len * 99).div_ceil(100) - 1],
        };
        AppRun {
            statements: statements as f64,
            ok: statements.saturating_sub(errors) as f64,
            errors: errors as f64,
            locked: locked as f64,
            max_ms: waits.last().copied().unwrap_or(0.0),
            p99_ms: p99,
            stall_ms,
            lost: 0.0,
        }
    }

    fn brief(&self) -> String {
        format!(
            "{:.0} stmts, {:.0} errors ({:.0} locked), {:.0} lost, max {:.1} ms, p99 {:.1} ms, stall {:.0} ms",
            self.statements,
            self.errors,
            self.locked,
            self.lost,
            self.max_ms,
            self.p99_ms,
            self.stall_ms
        )
    }
}

/// What is there to drive the app writers and fieldsync with.
struct Ctx {
    bin: PathBuf,
    shell: bool,
    /// The Python writer's script, if python3 with sqlite3 is there.
    python: Option<PathBuf>,
    /// Longest a fieldsync command may run before it is killed.
    deadline: Duration,
    /// Whether `import` takes `--atomic`.
    atomic: bool,
    /// Whether `export` encrypts (and a full export needs `--no-encrypt`).
    encrypts: bool,
}

/// One scenario's outcome: fieldsync's time and report (none for the app
/// alone), and each writer's run (index as [`WRITERS`]; None if the writer
/// is missing or failed).
struct Run {
    secs: f64,
    report: Json,
    apps: [Option<AppRun>; 2],
}

impl Run {
    /// A top-level number of fieldsync's report; NaN if not reported.
    fn field(&self, name: &str) -> f64 {
        self.report
            .get(name)
            .and_then(Json::as_f64)
            .unwrap_or(f64::NAN)
    }

    fn brief(&self) -> String {
        let apps: Vec<String> = WRITERS
            .iter()
            .zip(&self.apps)
            .map(|(w, a)| match a {
                Some(a) => format!("{w}: {}", a.brief()),
                None => format!("{w}: -"),
            })
            .collect();
        apps.join("; ")
    }
}

/// The part: build the source and bundle once, then each journal mode.
pub fn run(dir: &Path, n: usize, reps: usize) -> Res<Vec<Figure>> {
    println!(
        "\nlocks: an app writing (every ~20 ms, 5 s busy timeout) while fieldsync imports / exports {n} rows"
    );
    let ctx = find_tools(dir, n)?;
    if !ctx.shell && ctx.python.is_none() {
        println!("(no sqlite3 shell and no python3 with sqlite3: only fieldsync's own figures)");
    }
    if !ctx.atomic {
        println!(
            "(old binary: `import --atomic` rejected; its default import IS the single-transaction one, run as both)"
        );
    }
    let source = dir.join("locks-source.db");
    app_db(&source, "source", n)?;
    let bundle = dir.join("locks.bundle");
    let mut args = vec![os("export"), os("--json"), os("--full")];
    // A full export names its recipients or says it is not encrypted (a
    // binary older than encryption knows no such option).
    if ctx.encrypts {
        args.push(os("--no-encrypt"));
    }
    args.extend([os("-o"), bundle.as_os_str(), os("--db"), source.as_os_str()]);
    let made = fieldsync(&ctx, &args)?;
    println!(
        "(source: {n} rows in person, bundle {:.1} MB, exported in {:.1} s with nothing else running)",
        std::fs::metadata(&bundle)?.len() as f64 / 1e6,
        made.0
    );
    let mut figures = Vec::new();
    for mode in [Journal::Delete, Journal::Wal] {
        figures.extend(importing(&ctx, dir, &bundle, n, reps, mode)?);
        set_journal(&source, mode)?;
        figures.extend(exporting(&ctx, dir, &source, n, reps, mode)?);
    }
    Ok(figures)
}

/// The app writing at the receiver: alone, during `import --atomic`, and
/// during the default (bounded) import; a fresh receiver for each.
fn importing(
    ctx: &Ctx,
    dir: &Path,
    bundle: &Path,
    n: usize,
    reps: usize,
    mode: Journal,
) -> Res<Vec<Figure>> {
    let m = mode.pragma();
    println!("\nlocks, {m} journal: importing {n} rows while the app writes");
    let receiver = dir.join(format!("locks-receiver-{}.db", m.to_lowercase()));
    let (mut alone, mut atomic, mut bounded) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        let fresh = || -> Res<()> {
            app_db(&receiver, "hq", 0)?;
            // The receiver enrolled the source, as HQ enrols its laptops.
            crate::fixture::enrol_signer(&mut Instance::open(&receiver)?, bundle)?;
            set_journal(&receiver, mode)
        };
        fresh()?;
        let a = scenario(ctx, &receiver, &format!("alone{rep}"), None)?;
        println!(
            "  run {}: app alone {:.1} s: {}",
            rep + 1,
            a.secs,
            a.brief()
        );
        alone.push(a);
        for (is_atomic, runs) in [(true, &mut atomic), (false, &mut bounded)] {
            fresh()?;
            let mut args = vec![os("import"), os("--json")];
            if is_atomic && ctx.atomic {
                args.push(os("--atomic"));
            }
            args.extend([os("--db"), receiver.as_os_str(), bundle.as_os_str()]);
            let tag = format!("{}{rep}", if is_atomic { "atomic" } else { "bounded" });
            let r = scenario(ctx, &receiver, &tag, Some(&args))?;
            let applied = r.field("applied");
            if applied != n as f64 {
                println!("  (import applied {applied} of {n} rows)");
            }
            println!(
                "  run {}: import{} {:.2} s, {} write transaction(s), longest {} ms: {}",
                rep + 1,
                if is_atomic { " --atomic" } else { "" },
                r.secs,
                shown(r.field("write_transactions")),
                shown(r.field("longest_write_ms")),
                r.brief()
            );
            runs.push(r);
        }
    }
    let mut figs = vec![
        figure(
            format!("locks {m}: import {n} rows while the app writes (vs --atomic)"),
            median(atomic.iter().map(|r| r.secs)),
            median(bounded.iter().map(|r| r.secs)),
            "s",
            Some(1.3),
        ),
        figure(
            format!("locks {m}: fieldsync's longest write transaction, import (vs --atomic)"),
            median(atomic.iter().map(|r| r.field("longest_write_ms"))),
            median(bounded.iter().map(|r| r.field("longest_write_ms"))),
            "ms",
            Some(200.0),
        ),
        figure(
            format!("locks {m}: fieldsync's write transactions, import (vs --atomic)"),
            median(atomic.iter().map(|r| r.field("write_transactions"))),
            median(bounded.iter().map(|r| r.field("write_transactions"))),
            "n",
            None,
        ),
    ];
    for (w, name) in WRITERS.iter().enumerate() {
        if alone.iter().all(|r| r.apps[w].is_none()) {
            continue;
        }
        let app = |runs: &[Run], get: fn(&AppRun) -> f64| -> Vec<f64> {
            runs.iter()
                .map(|r| r.apps[w].as_ref().map_or(f64::NAN, get))
                .collect()
        };
        figs.extend([
            figure(
                format!("locks {m}: app statements while importing, {name} (vs --atomic)"),
                median(app(&atomic, |a| a.statements)),
                median(app(&bounded, |a| a.statements)),
                "n",
                None,
            ),
            figure(
                format!("locks {m}: app errors while importing, {name} (vs --atomic), worst run"),
                worst(app(&atomic, |a| a.errors)),
                worst(app(&bounded, |a| a.errors)),
                "n",
                Some(0.0),
            ),
            figure(
                format!(
                    "locks {m}: app lost writes while importing, {name} (vs --atomic), worst run"
                ),
                worst(app(&atomic, |a| a.lost)),
                worst(app(&bounded, |a| a.lost)),
                "n",
                Some(0.0),
            ),
            figure(
                format!("locks {m}: app longest wait while importing, {name} (vs app alone)"),
                median(app(&alone, |a| a.max_ms)),
                median(app(&bounded, |a| a.max_ms)),
                "ms",
                None,
            ),
            figure(
                format!("locks {m}: app p99 wait while importing, {name} (vs app alone)"),
                median(app(&alone, |a| a.p99_ms)),
                median(app(&bounded, |a| a.p99_ms)),
                "ms",
                None,
            ),
            figure(
                format!("locks {m}: app longest wait during --atomic, {name} (vs app alone)"),
                median(app(&alone, |a| a.max_ms)),
                median(app(&atomic, |a| a.max_ms)),
                "ms",
                None,
            ),
            figure(
                format!(
                    "locks {m}: app longest time without a commit while importing, {name} (vs app alone)"
                ),
                median(app(&alone, |a| a.stall_ms)),
                median(app(&bounded, |a| a.stall_ms)),
                "ms",
                None,
            ),
            figure(
                format!(
                    "locks {m}: app longest time without a commit during --atomic, {name} (vs app alone)"
                ),
                median(app(&alone, |a| a.stall_ms)),
                median(app(&atomic, |a| a.stall_ms)),
                "ms",
                None,
            ),
        ]);
    }
    Ok(figs)
}

/// The app writing into the source database: alone, and during a full
/// export of it.
fn exporting(
    ctx: &Ctx,
    dir: &Path,
    source: &Path,
    n: usize,
    reps: usize,
    mode: Journal,
) -> Res<Vec<Figure>> {
    let m = mode.pragma();
    println!("\nlocks, {m} journal: a full export of {n} rows while the app writes");
    let out = dir.join("locks-export.bundle");
    let (mut alone, mut export) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let a = scenario(ctx, source, &format!("{m}-alone{rep}"), None)?;
        println!(
            "  run {}: app alone {:.1} s: {}",
            rep + 1,
            a.secs,
            a.brief()
        );
        alone.push(a);
        let _ = std::fs::remove_file(&out);
        let args = [
            os("export"),
            os("--json"),
            os("--full"),
            // (`--json` twice is harmless for a binary older than encryption.)
            os(if ctx.encrypts {
                "--no-encrypt"
            } else {
                "--json"
            }),
            os("-o"),
            out.as_os_str(),
            os("--db"),
            source.as_os_str(),
        ];
        let r = scenario(ctx, source, &format!("{m}-export{rep}"), Some(&args))?;
        println!(
            "  run {}: export {:.2} s, {} write transaction(s), longest {} ms: {}",
            rep + 1,
            r.secs,
            shown(r.field("write_transactions")),
            shown(r.field("longest_write_ms")),
            r.brief()
        );
        export.push(r);
    }
    let mut figs = vec![figure(
        format!(
            "locks {m}: fieldsync's longest write transaction, full export (vs its whole time)"
        ),
        median(export.iter().map(|r| r.secs * 1000.0)),
        median(export.iter().map(|r| r.field("longest_write_ms"))),
        "ms",
        Some(200.0),
    )];
    for (w, name) in WRITERS.iter().enumerate() {
        if alone.iter().all(|r| r.apps[w].is_none()) {
            continue;
        }
        let app = |runs: &[Run], get: fn(&AppRun) -> f64| -> Vec<f64> {
            runs.iter()
                .map(|r| r.apps[w].as_ref().map_or(f64::NAN, get))
                .collect()
        };
        figs.extend([
            figure(
                format!("locks {m}: app errors while exporting, {name} (vs app alone), worst run"),
                worst(app(&alone, |a| a.errors)),
                worst(app(&export, |a| a.errors)),
                "n",
                Some(0.0),
            ),
            figure(
                format!(
                    "locks {m}: app lost writes while exporting, {name} (vs app alone), worst run"
                ),
                worst(app(&alone, |a| a.lost)),
                worst(app(&export, |a| a.lost)),
                "n",
                Some(0.0),
            ),
            figure(
                format!("locks {m}: app longest wait while exporting, {name} (vs app alone)"),
                median(app(&alone, |a| a.max_ms)),
                median(app(&export, |a| a.max_ms)),
                "ms",
                None,
            ),
            figure(
                format!("locks {m}: app p99 wait while exporting, {name} (vs app alone)"),
                median(app(&alone, |a| a.p99_ms)),
                median(app(&export, |a| a.p99_ms)),
                "ms",
                None,
            ),
            figure(
                format!(
                    "locks {m}: app longest time without a commit while exporting, {name} (vs app alone)"
                ),
                median(app(&alone, |a| a.stall_ms)),
                median(app(&export, |a| a.stall_ms)),
                "ms",
                None,
            ),
        ]);
    }
    Ok(figs)
}

fn figure(
    label: String,
    baseline: f64,
    measured: f64,
    unit: &'static str,
    target: Option<f64>,
) -> Figure {
    let f = Figure {
        label,
        baseline,
        measured,
        unit,
        target,
    };
    f.print();
    f
}

/// The median; NaN if any value is (not reported) or there are none.
fn median(v: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = v.into_iter().collect();
    if v.is_empty() || v.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The largest; NaN if any value is (not reported) or there are none.
fn worst(v: impl IntoIterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.into_iter().collect();
    if v.is_empty() || v.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    v.into_iter().fold(f64::NEG_INFINITY, f64::max)
}

fn shown(v: f64) -> String {
    if v.is_nan() {
        "n/r".to_owned()
    } else {
        format!("{v:.0}")
    }
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The fieldsync binary, the writers that can run here, and whether
/// `import` takes `--atomic`.
fn find_tools(dir: &Path, n: usize) -> Res<Ctx> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_fieldsync"));
    let quiet = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let shell = quiet("sqlite3", &["-version"]);
    if !shell {
        println!("(no sqlite3 shell: its writer is skipped)");
    }
    let python = if quiet("python3", &["-c", "import sqlite3"]) {
        let script = dir.join("locks-writer.py");
        std::fs::write(&script, PYTHON)?;
        Some(script)
    } else {
        println!("(no python3 with its sqlite3 module: its writer is skipped)");
        None
    };
    let help = Command::new(&bin)
        .args(["import", "--help"])
        .stdin(Stdio::null())
        .output()?;
    let atomic = String::from_utf8_lossy(&help.stdout).contains("--atomic");
    let export_help = Command::new(&bin)
        .args(["export", "--help"])
        .stdin(Stdio::null())
        .output()?;
    let encrypts = String::from_utf8_lossy(&export_help.stdout).contains("--no-encrypt");
    Ok(Ctx {
        bin,
        shell,
        python,
        // 2 minutes, and 200 µs a row: 1M rows take about 11 s alone.
        deadline: Duration::from_secs(120) + Duration::from_micros(200 * n as u64),
        atomic,
        encrypts,
    })
}

/// A new database at `path` as the app has it: `person` with `rows` rows
/// and the app's own `notes`, both tracked by a new instance named `name`,
/// captured rows folded into the log; rollback journal.
fn app_db(path: &Path, name: &str, rows: usize) -> Res<()> {
    for suffix in ["-journal", "-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(side);
    }
    plain(path, rows)?;
    Connection::open(path)?.execute_batch(NOTES)?;
    let (mut inst, _) = Instance::init(path, name)?;
    let tracked = inst.track(&Selection::All)?;
    if !tracked.skipped.is_empty() {
        return Err(format!("track skipped {:?}", tracked.skipped).into());
    }
    inst.compact()?;
    Ok(())
}

/// Put the database in `mode`, as the app would once before.
fn set_journal(path: &Path, mode: Journal) -> Res<()> {
    let conn = Connection::open(path)?;
    let now: String =
        conn.query_row(&format!("PRAGMA journal_mode={}", mode.pragma()), [], |r| {
            r.get(0)
        })?;
    if !now.eq_ignore_ascii_case(mode.pragma()) {
        return Err(format!("journal mode {now}, wanted {}", mode.pragma()).into());
    }
    Ok(())
}

/// Run the app writers on `db` while `command` runs fieldsync (or for
/// [`ALONE`] with none), then stop them and count their rows.
fn scenario(ctx: &Ctx, db: &Path, tag: &str, command: Option<&[&OsStr]>) -> Res<Run> {
    let writers = Writers::start(ctx, db, tag)?;
    thread::sleep(WARM_UP);
    let ran = match command {
        Some(args) => fieldsync(ctx, args),
        None => {
            // With no writer there is nothing to wait for.
            if ctx.shell || ctx.python.is_some() {
                thread::sleep(ALONE);
            }
            Ok((ALONE.as_secs_f64(), Json::Null))
        }
    };
    // Stopped whether or not fieldsync succeeded, so nothing is left behind.
    let apps = writers.finish(db);
    let (secs, report) = ran?;
    Ok(Run {
        secs,
        report,
        apps: apps?,
    })
}

/// Run the fieldsync command with `args`: its wall time and its JSON
/// report (null if it printed none). Killed past the deadline.
fn fieldsync(ctx: &Ctx, args: &[&OsStr]) -> Res<(f64, Json)> {
    let start = Instant::now();
    let mut child = Command::new(&ctx.bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = wait_until(&mut child, ctx.deadline);
    let secs = start.elapsed().as_secs_f64();
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    match status {
        Some(s) if s.success() => Ok((secs, serde_json::from_str(&out).unwrap_or(Json::Null))),
        Some(s) => Err(format!("fieldsync {args:?} failed ({s}): {}", err.trim()).into()),
        None => Err(format!(
            "fieldsync {args:?} still running after {:?}: killed",
            ctx.deadline
        )
        .into()),
    }
}

/// Read all of a child's pipe on a thread of its own.
fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

/// Wait for `child` at most `limit`; past it, kill it and return None.
fn wait_until(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < end => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The app writers running on one database.
struct Writers {
    stop: Arc<AtomicBool>,
    shell: Option<JoinHandle<Result<AppRun, String>>>,
    python: Option<(Child, PathBuf, JoinHandle<String>, JoinHandle<String>)>,
    /// The prefix of each writer's row bodies.
    tags: [String; 2],
}

impl Writers {
    fn start(ctx: &Ctx, db: &Path, tag: &str) -> Res<Writers> {
        let tags = [format!("{tag}-shell-"), format!("{tag}-py-")];
        // A writer runs at most this long even if never told to stop.
        let limit = ctx.deadline + Duration::from_secs(60);
        let stop = Arc::new(AtomicBool::new(false));
        let python = match &ctx.python {
            Some(script) => {
                let stop_file = db.with_extension("stop");
                let _ = std::fs::remove_file(&stop_file);
                let mut child = Command::new("python3")
                    .arg(script)
                    .arg(db)
                    .arg(&tags[1])
                    .arg(&stop_file)
                    .arg(limit.as_secs().to_string())
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()?;
                let out = drain(child.stdout.take());
                let err = drain(child.stderr.take());
                Some((child, stop_file, out, err))
            }
            None => None,
        };
        let shell = ctx.shell.then(|| {
            let (db, tag, stop) = (db.to_owned(), tags[0].clone(), stop.clone());
            thread::spawn(move || shell_writer(&db, &tag, &stop, limit))
        });
        Ok(Writers {
            stop,
            shell,
            python,
            tags,
        })
    }

    /// Stop the writers, collect what each did, and count the rows each
    /// committed that are not in `db`.
    fn finish(self, db: &Path) -> Res<[Option<AppRun>; 2]> {
        self.stop.store(true, Ordering::Relaxed);
        let python = self.python.map(|(mut child, stop_file, out, err)| {
            let _ = std::fs::write(&stop_file, b"stop");
            let status = wait_until(&mut child, STOP_GRACE);
            let (out, err) = (
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default(),
            );
            let _ = std::fs::remove_file(&stop_file);
            match status {
                Some(s) if s.success() => python_summary(&out),
                Some(s) => Err(format!("python writer failed ({s}): {}", err.trim())),
                None => Err("python writer did not stop: killed".to_owned()),
            }
        });
        let shell = self.shell.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err("shell writer panicked".into()))
        });
        let conn = Connection::open(db)?;
        let mut apps = [None, None];
        for (w, run) in [shell, python].into_iter().enumerate() {
            match run {
                Some(Ok(mut a)) => {
                    let present: i64 = conn.query_row(
                        "SELECT count(*) FROM notes WHERE substr(body, 1, length(?1)) = ?1",
                        [&self.tags[w]],
                        |r| r.get(0),
                    )?;
                    let present = present as f64;
                    if present > a.ok {
                        println!(
                            "  ({}: {present} rows present, {} statements reported success)",
                            WRITERS[w], a.ok
                        );
                    }
                    a.lost = (a.ok - present).max(0.0);
                    apps[w] = Some(a);
                }
                Some(Err(e)) => println!("  ({} writer: {e})", WRITERS[w]),
                None => {}
            }
        }
        Ok(apps)
    }
}

fn python_summary(out: &str) -> Result<AppRun, String> {
    let j: Json = serde_json::from_str(out.trim())
        .map_err(|e| format!("python writer printed no summary ({e}): {out}"))?;
    let num = |k: &str| j.get(k).and_then(Json::as_u64).unwrap_or(0);
    let waits = j
        .get("waits_ms")
        .and_then(Json::as_array)
        .map(|v| v.iter().filter_map(Json::as_f64).collect())
        .unwrap_or_default();
    let stall = j.get("stall_ms").and_then(Json::as_f64).unwrap_or(f64::NAN);
    let mut a = AppRun::from_waits(
        num("statements"),
        num("errors"),
        num("locked"),
        stall,
        waits,
    );
    a.ok = num("ok") as f64;
    Ok(a)
}

/// The shell writer: `sqlite3 DB` fed one INSERT at a time on stdin, each
/// followed by `SELECT 'done-<n>', total_changes();`, whose echo on stdout
/// ends the wait for that statement; the INSERT failed if the count of
/// changes did not grow. The shell's error lines on stderr say which
/// failures were `database is locked`.
fn shell_writer(
    db: &Path,
    tag: &str,
    stop: &AtomicBool,
    limit: Duration,
) -> Result<AppRun, String> {
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start sqlite3: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(l) = line else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let complaints = thread::spawn(move || {
        let mut locked = 0u64;
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(l) = line else { break };
            let lower = l.to_lowercase();
            if lower.contains("locked") || lower.contains("busy") {
                locked += 1;
            } else if lines.len() < 3 {
                lines.push(l);
            }
        }
        (locked, lines)
    });
    let end = Instant::now() + limit;
    let mut waits = Vec::new();
    let (mut n, mut errors, mut changes) = (0u64, 0u64, 0i64);
    let (mut last_ok, mut stall) = (Instant::now(), Duration::ZERO);
    let mut trouble = None;
    if let Err(e) = writeln!(stdin, ".timeout 5000") {
        trouble = Some(format!("cannot write to sqlite3: {e}"));
    }
    while trouble.is_none() && !stop.load(Ordering::Relaxed) && Instant::now() < end {
        n += 1;
        let start = Instant::now();
        let sent = write!(
            stdin,
            "INSERT INTO notes(body) VALUES ('{tag}{n}');\nSELECT 'done-{n}', total_changes();\n"
        )
        .and_then(|()| stdin.flush());
        if let Err(e) = sent {
            trouble = Some(format!("cannot write to sqlite3: {e}"));
            break;
        }
        let want = format!("done-{n}|");
        loop {
            match rx.recv_timeout(ANSWER) {
                Ok(l) if l.starts_with(&want) => {
                    let now: i64 = l[want.len()..].trim().parse().unwrap_or(changes);
                    if now > changes {
                        stall = stall.max(last_ok.elapsed());
                        last_ok = Instant::now();
                    } else {
                        errors += 1;
                    }
                    changes = now;
                    break;
                }
                Ok(_) => {}
                Err(_) => {
                    trouble = Some(format!(
                        "sqlite3 did not answer statement {n} within {ANSWER:?}"
                    ));
                    break;
                }
            }
        }
        if trouble.is_none() {
            waits.push(start.elapsed().as_secs_f64() * 1000.0);
            thread::sleep(PACE);
        }
    }
    stall = stall.max(last_ok.elapsed());
    drop(stdin);
    if wait_until(&mut child, STOP_GRACE).is_none() && trouble.is_none() {
        trouble = Some("sqlite3 did not exit: killed".into());
    }
    let _ = reader.join();
    let (locked, others) = complaints.join().unwrap_or_default();
    if !others.is_empty() {
        println!("  (sqlite3 shell writer errors: {others:?})");
    }
    match trouble {
        Some(t) => Err(t),
        None => Ok(AppRun::from_waits(
            n,
            errors,
            locked,
            stall.as_secs_f64() * 1000.0,
            waits,
        )),
    }
}
