//! Crash safety: the real `fieldsync` binary killed with SIGKILL at many
//! moments of an import or an export of a bundle large enough to take a
//! while, then:
//!
//! - the database opens, `PRAGMA integrity_check` and `fieldsync check` are
//!   clean (`check` exits 0);
//! - its state (every table, fieldsync's included; only the stored clock and
//!   the last import/export times left out) is exactly the state before or
//!   the state after an uninterrupted run, or (an import, which commits in
//!   short write transactions) one between two of them, which `status`
//!   reports as an interrupted import, or (an export) one where its first
//!   write transaction stamped and planned and its last did not record the
//!   bundle as sent, with no bundle file;
//! - running the command again ends in exactly the state of an
//!   uninterrupted run; an export's file is either absent or whole.
//!
//! And with an app (the `sqlite3` shell, busy timeout set) writing to the
//! database while the import runs and is killed: every write the app saw
//! committed is there afterwards, and is captured for the next export.
//!
//! Kill moments are spread over the duration of an uninterrupted run,
//! measured first; nothing is asserted about timing, and the test prints how
//! many kills landed before, during (state before) and after the commit.
//! Every other import runs with the database in WAL mode.
//! `FIELDSYNC_CRASH_POINTS` sets the number of moments per command (default
//! 20); `FIELDSYNC_CRASH_ROWS` the rows per table (default 40,000).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use fieldsync::fuzzing::state_fingerprint;

use crate::util::*;

const SCHEMA: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT, age INTEGER);
                      CREATE TABLE visit(person TEXT, day INTEGER, note, PRIMARY KEY(person, day));";

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn points() -> usize {
    env_num("FIELDSYNC_CRASH_POINTS", 20).max(1)
}

/// Remove a database and its journal.
fn remove_db(db: &Path) -> Res {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        match fs::remove_file(PathBuf::from(p)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

fn copy_db(from: &Path, to: &Path) -> Res {
    remove_db(to)?;
    fs::copy(from, to)?;
    Ok(())
}

/// The state of a database, times left out (see the module documentation).
fn state(db: &Path) -> Res<String> {
    let conn = rusqlite::Connection::open(db)?;
    Ok(state_fingerprint(&conn, true)?)
}

/// Everything the tests start from, built once per test.
struct Fixture {
    dir: tempfile::TempDir,
    /// hq with its rows tracked but not yet stamped (export stamps them).
    hq: PathBuf,
    /// field-1 before the import, with local rows not yet stamped.
    field: PathBuf,
    /// The same in WAL mode.
    field_wal: PathBuf,
    /// hq's bundle for field-1.
    bundle: PathBuf,
}

fn fixture() -> Res<Fixture> {
    let dir = tempfile::tempdir()?;
    let rows = env_num("FIELDSYNC_CRASH_ROWS", 40_000);
    let hq = dir.path().join("hq-template.db");
    sqlite3(
        &hq,
        &format!(
            "{SCHEMA}
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
             INSERT INTO person SELECT 'p-' || i, 'name ' || i, 'missing', i % 90 FROM n;
             INSERT INTO visit SELECT id, 1, 'first visit of ' || id FROM person;"
        ),
    )?;
    fieldsync_ok(&[&"init", &"--db", &hq, &"--name", &"hq"])?;
    fieldsync_ok(&[&"track", &"--db", &hq, &"--all"])?;

    // field-1 has rows of its own, some with keys hq also has, captured but
    // not stamped: the import stamps them in the same transaction.
    let field = dir.path().join("field-template.db");
    sqlite3(&field, SCHEMA)?;
    fieldsync_ok(&[&"init", &"--db", &field, &"--name", &"field-1"])?;
    fieldsync_ok(&[&"track", &"--db", &field, &"--all"])?;
    enrol_dbs(&hq, &field)?;
    sqlite3(
        &field,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
         INSERT INTO person SELECT 'p-' || (i * 7), 'local ' || i, 'found', NULL FROM n;
         INSERT INTO person VALUES ('local-1', 'Only here', NULL, 3);",
    )?;

    let field_wal = dir.path().join("field-wal-template.db");
    copy_db(&field, &field_wal)?;
    sqlite3(&field_wal, "PRAGMA journal_mode = WAL;")?;

    let bundle = dir.path().join("hq-to-field-1.fsb");
    let hq_copy = dir.path().join("hq-bundle-maker.db");
    copy_db(&hq, &hq_copy)?;
    fieldsync_ok(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq_copy,
        &"--to",
        &"field-1",
        &"-o",
        &bundle,
    ])?;
    Ok(Fixture {
        dir,
        hq,
        field,
        field_wal,
        bundle,
    })
}

/// Start the binary with `args`, wait `delay`, SIGKILL it if it is still
/// running. True if it had finished by itself.
fn run_and_kill(args: &[&dyn AsRef<OsStr>], delay: Duration) -> Res<bool> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldsync"))
        .args(args.iter().map(|a| a.as_ref()))
        .env_remove("FIELDSYNC_DB")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    sleep(delay);
    let finished = child.try_wait()?.is_some();
    if !finished {
        child.kill()?; // SIGKILL
    }
    child.wait()?;
    Ok(finished)
}

/// How long an uninterrupted run of `args` takes (to spread kill moments).
fn timed(args: &[&dyn AsRef<OsStr>]) -> Res<Duration> {
    let start = Instant::now();
    fieldsync_ok(args)?;
    Ok(start.elapsed())
}

/// The k-th of n kill moments: spread over 0..1.2 × the run's duration, so
/// a few land after it finished.
fn moment(k: usize, n: usize, run: Duration) -> Duration {
    run.mul_f64(1.2 * (k as f64 + 0.5) / n as f64)
}

/// `fieldsync check` must pass; it is also the first process to open the
/// database after the kill, so it rolls back what the kill left.
fn check_clean(db: &Path, when: &str) -> Res {
    let out = fieldsync(&[&"check", &"--db", &db])?;
    assert!(
        out.success(),
        "{when}: check failed ({:?})\n{}\n{}",
        out.code,
        out.stdout,
        out.stderr
    );
    Ok(())
}

/// True if a kill left a rollback journal: it struck inside the write
/// transaction.
fn hot_journal(db: &Path) -> bool {
    // (In WAL mode there is no such journal; those runs are not counted.)
    let mut p = db.as_os_str().to_owned();
    p.push("-journal");
    fs::metadata(PathBuf::from(p)).is_ok_and(|m| m.len() > 0)
}

#[derive(Debug, Default)]
struct Tally {
    finished: usize,
    mid_transaction: usize,
    before: usize,
    after: usize,
    /// Between two write transactions of one import.
    between: usize,
}

#[test]
fn import_killed_at_any_moment_leaves_before_or_after_and_a_retry_completes() -> Res {
    let f = fixture()?;
    let work = f.dir.path().join("field-work.db");
    let before = state(&f.field)?;
    // The reference: an uninterrupted import.
    copy_db(&f.field, &work)?;
    let run = timed(&[
        &"import",
        &"--max-lock-ms",
        &"20",
        &"--db",
        &work,
        &f.bundle,
    ])?;
    check_clean(&work, "after an uninterrupted import")?;
    let after = state(&work)?;
    assert_ne!(before, after);

    assert_eq!(state(&f.field_wal)?, before);
    let n = points();
    let mut tally = Tally::default();
    for k in 0..n {
        // Every other run with the database in WAL mode.
        let wal = k % 2 == 1;
        copy_db(if wal { &f.field_wal } else { &f.field }, &work)?;
        let delay = moment(k, n, run);
        let when = format!(
            "import killed after {delay:?}{}",
            if wal { " (WAL)" } else { "" }
        );
        // Short write transactions, so that kills land between them too.
        if run_and_kill(
            &[
                &"import",
                &"--max-lock-ms",
                &"20",
                &"--db",
                &work,
                &f.bundle,
            ],
            delay,
        )? {
            tally.finished += 1;
        }
        tally.mid_transaction += usize::from(hot_journal(&work));
        check_clean(&work, &when)?;
        let now = state(&work)?;
        if now == before {
            tally.before += 1;
        } else if now == after {
            tally.after += 1;
        } else {
            // Between two of the import's write transactions: status says
            // so, and importing again completes it (below).
            let status = fieldsync_ok(&[&"status", &"--db", &work, &"--json"])?.json()?;
            assert!(
                status["interrupted_import"].is_object(),
                "{when}: the state is neither before nor after, and status knows of no interrupted import:\n{now}\nbefore:\n{before}\nafter:\n{after}"
            );
            tally.between += 1;
        }
        fieldsync_ok(&[&"import", &"--db", &work, &f.bundle])?;
        assert_eq!(state(&work)?, after, "{when}: importing again");
    }
    eprintln!(
        "import ({run:?} uninterrupted), {n} kill moments, every other one in WAL mode: {} inside a write \
         transaction (rollback-journal runs); {} left the state before, {} between two write transactions, \
         {} after ({} had finished by itself)",
        tally.mid_transaction, tally.before, tally.between, tally.after, tally.finished
    );
    Ok(())
}

#[test]
fn export_killed_at_any_moment_leaves_before_or_after_and_no_partial_bundle() -> Res {
    let f = fixture()?;
    let work = f.dir.path().join("hq-work.db");
    let out = f.dir.path().join("out").join("to-field-1.fsb");
    fs::create_dir_all(out.parent().ok_or("no parent")?)?;
    let before = state(&f.hq)?;
    copy_db(&f.hq, &work)?;
    let args: [&dyn AsRef<OsStr>; 8] = [
        &"export",
        &"--no-encrypt",
        &"--db",
        &work,
        &"--to",
        &"field-1",
        &"-o",
        &out,
    ];
    let run = timed(&args)?;
    check_clean(&work, "after an uninterrupted export")?;
    let after = state(&work)?;
    let changes = inspect_changes(&out)?;
    assert!(changes > 0);

    let n = points();
    let mut tally = Tally::default();
    let mut not_renamed = 0;
    let mut leftovers = 0;
    for k in 0..n {
        copy_db(&f.hq, &work)?;
        fs::remove_dir_all(out.parent().ok_or("no parent")?)?;
        fs::create_dir_all(out.parent().ok_or("no parent")?)?;
        let delay = moment(k, n, run);
        let when = format!("export killed after {delay:?}");
        if run_and_kill(&args, delay)? {
            tally.finished += 1;
        }
        tally.mid_transaction += usize::from(hot_journal(&work));
        check_clean(&work, &when)?;
        let now = state(&work)?;
        let temps: Vec<PathBuf> = fs::read_dir(out.parent().ok_or("no parent")?)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        let temps: Vec<PathBuf> = temps.into_iter().filter(|p| p != &out).collect();
        if now == after {
            tally.after += 1;
            if out.exists() {
                assert_eq!(inspect_changes(&out)?, changes, "{when}: the bundle");
            } else {
                // Killed between the commit and the rename: the complete
                // file is there under its temporary name.
                not_renamed += 1;
                assert_eq!(temps.len(), 1, "{when}: {temps:?}");
                assert_eq!(
                    inspect_changes(&temps[0])?,
                    changes,
                    "{when}: the temporary bundle"
                );
            }
        } else {
            // Before the export, or between its first write transaction
            // (stamped and planned) and its last (sent): no bundle, and
            // exporting again ends as an uninterrupted export does.
            let was = if now == before {
                tally.before += 1;
                "before"
            } else {
                tally.between += 1;
                "neither before nor after"
            };
            assert!(
                !out.exists(),
                "{when}: a bundle file exists though the export did not record it as sent"
            );
            leftovers += temps.len();
            fieldsync_ok(&args)?;
            assert_eq!(
                state(&work)?,
                after,
                "{when}: the state was {was}:\n{now}\nbefore:\n{before}\nafter:\n{after}\nand exporting again did not end as after"
            );
            assert_eq!(inspect_changes(&out)?, changes, "{when}: exporting again");
        }
    }
    eprintln!(
        "export ({run:?} uninterrupted), {n} kill moments: {} inside a write transaction; {} left the state \
         before, {} stamped and planned but not sent ({leftovers} temporary files left behind in all), {} after \
         ({not_renamed} of them before the rename; {} had finished by itself)",
        tally.mid_transaction, tally.before, tally.between, tally.after, tally.finished
    );
    Ok(())
}

/// The number of changes in a bundle, which must be intact.
fn inspect_changes(file: &Path) -> Res<u64> {
    let json = fieldsync_ok(&[&"inspect", &file, &"--json"])?.json()?;
    assert_eq!(
        json["checksum_ok"],
        true,
        "{} is not intact: {json}",
        file.display()
    );
    num(&json, "changes")
}

/// The app: the sqlite3 shell with a busy timeout, inserting rows and
/// updating the previous one, one autocommit statement at a time, printing
/// after each what it saw committed.
fn app_script(writes: usize) -> String {
    let mut s = String::from(".timeout 60000\n");
    for k in 0..writes {
        s.push_str(&format!(
            "INSERT INTO person VALUES ('app-{k}', 'app {k}', 'new', {k});\nSELECT 'committed insert {k}';\n"
        ));
        if k > 0 {
            s.push_str(&format!(
                "UPDATE person SET status = 'updated' WHERE id = 'app-{}';\nSELECT 'committed update {}';\n",
                k - 1,
                k - 1
            ));
        }
        s.push_str(".shell sleep 0.003\n");
    }
    s
}

#[test]
fn app_writes_during_a_killed_import_are_kept_and_captured() -> Res {
    let f = fixture()?;
    let work = f.dir.path().join("field-app.db");
    copy_db(&f.field, &work)?;
    let run = timed(&[&"import", &"--db", &work, &f.bundle])?;
    let reference = f.dir.path().join("field-reference.db");
    fs::rename(&work, &reference)?;
    let app_rows = "SELECT * FROM person WHERE id NOT LIKE 'app-%' ORDER BY id; SELECT * FROM visit ORDER BY 1, 2;";
    let reference_rows = sqlite3(&reference, app_rows)?;

    let n = (points() / 4).max(3);
    let writes = 60;
    for k in 0..n {
        copy_db(&f.field, &work)?;
        let delay = moment(k, n, run);
        let when = format!("import killed after {delay:?} while the app wrote");
        let mut app = Command::new(SQLITE3)
            .arg("-batch")
            .arg("-bail")
            .arg(&work)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let script = app_script(writes);
        let mut stdin = app.stdin.take().ok_or("no stdin")?;
        let feeder = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(script.as_bytes());
        });
        run_and_kill(&[&"import", &"--db", &work, &f.bundle], delay)?;
        let out = app.wait_with_output()?;
        feeder.join().map_err(|_| "feeder thread panicked")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{when}: the app failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let inserted = stdout
            .lines()
            .filter(|l| l.starts_with("committed insert"))
            .count();
        let updated = stdout
            .lines()
            .filter(|l| l.starts_with("committed update"))
            .count();
        assert_eq!(
            (inserted, updated),
            (writes, writes - 1),
            "{when}: {stdout}"
        );

        check_clean(&work, &when)?;
        let expect_app = |db: &Path| -> Res {
            let rows = query(
                db,
                "SELECT id, status FROM person WHERE id LIKE 'app-%' ORDER BY age;",
            )?;
            assert_eq!(rows.len(), writes, "{when}: app rows");
            for (i, r) in rows.iter().enumerate() {
                let status = if i + 1 < writes { "updated" } else { "new" };
                assert_eq!(r, &vec![format!("app-{i}"), status.to_owned()], "{when}");
            }
            Ok(())
        };
        expect_app(&work)?;

        fieldsync_ok(&[&"import", &"--db", &work, &f.bundle])?;
        check_clean(&work, &format!("{when}, imported again"))?;
        expect_app(&work)?;
        assert_eq!(
            sqlite3(&work, app_rows)?,
            reference_rows,
            "{when}: the bundle's rows differ from an uninterrupted import"
        );
        // Imported again, everything captured is stamped into the log, and
        // `check` (clean above) proves every app row is live in it.
        assert_eq!(
            count(&work, "SELECT count(*) FROM fieldsync_pending;")?,
            0,
            "{when}"
        );
        if k + 1 == n {
            // And the app's writes reach another instance.
            let other = f.dir.path().join("field-2.db");
            sqlite3(&other, SCHEMA)?;
            fieldsync_ok(&[&"init", &"--db", &other, &"--name", &"field-2"])?;
            fieldsync_ok(&[&"track", &"--db", &other, &"--all"])?;
            // field-2 knows field-1 and hq, whose statements field-1 relays.
            enrol_dbs(&work, &other)?;
            enrol_dbs(&f.hq, &other)?;
            let b = f.dir.path().join("field-1-to-field-2.fsb");
            fieldsync_ok(&[
                &"export",
                &"--no-encrypt",
                &"--db",
                &work,
                &"--to",
                &"field-2",
                &"-o",
                &b,
            ])?;
            fieldsync_ok(&[&"import", &"--db", &other, &b])?;
            expect_app(&other)?;
        }
    }
    eprintln!(
        "app writer: {n} kill moments, {writes} inserts and {} updates kept each time",
        writes - 1
    );
    Ok(())
}
