//! Short write locks (issue 11, item 3; spec/merge.md, "Write
//! transactions"): an import applies a bundle in write transactions of
//! about 100 ms, so the app's saves wait at most about that long; a stop
//! between two of them (a crash, a kill) leaves a state the log and the
//! watermarks describe exactly, which `status` reports and importing the
//! bundle again completes; a bundle refused for a record far into it leaves
//! the database byte for byte as it was. The kills at random moments are in
//! `crash.rs`; the app's waits are measured in the side-by-side run.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use fieldsync::Instance;
use fieldsync::fuzzing::{
    import_interrupted, read_all, rewrite_with, signing_key, state_fingerprint,
};

use crate::util::instances::{export_to, instance};
use crate::util::*;

/// Eden-like: integer ids with a hierarchy whose children come before
/// their parents in a bundle, a text-keyed table referring to it, and a
/// keyless option table.
const SCHEMA: &str = "
    CREATE TABLE gis_location(id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT UNIQUE NOT NULL,
                              name TEXT NOT NULL, parent INTEGER REFERENCES gis_location(id));
    CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT NOT NULL,
                        location_id INTEGER REFERENCES gis_location(id));
    CREATE TABLE field_options(field_name TEXT, option_code TEXT, option_description TEXT);";

/// hq with `n` locations (with `children_first`, each pointing at the one
/// created after it, so children travel before their parents and wait for
/// the end of the bundle; otherwise at the one before), `n` people and three
/// options (two identical), all sent to field-1; field-1 with a row of its
/// own not yet stamped. Returns the bundle and field-1's database before
/// the import.
fn fixture(dir: &Path, n: usize, children_first: bool) -> Res<(Vec<u8>, std::path::PathBuf)> {
    let parent = if children_first {
        format!("parent = id + 1 WHERE id < {n}")
    } else {
        "parent = id - 1 WHERE id > 1".to_owned()
    };
    let mut hq = instance(dir, "hq", SCHEMA)?;
    hq.connection().execute_batch(&format!(
        "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {n})
         INSERT INTO gis_location(uuid, name) SELECT 'loc-' || i, 'Location ' || i FROM k;
         UPDATE gis_location SET {parent};
         INSERT INTO person SELECT 'p-' || id, 'Person ' || id, id FROM gis_location;
         INSERT INTO field_options VALUES ('status', 'ok', 'OK'), ('status', 'ok', 'OK'),
                                          ('status', 'lost', 'Lost');"
    ))?;
    let bundle = export_to(&mut hq, "field-1")?;
    let field = instance(dir, "field-1", SCHEMA)?;
    field
        .connection()
        .execute_batch("INSERT INTO person VALUES ('local-1', 'Only here', NULL);")?;
    let path = field.path().to_owned();
    drop(field);
    Ok((bundle, path))
}

/// The key of the fixture's hq, to sign a bundle edited as hq's: the
/// edits must reach the checks below the signature.
fn hq_key(dir: &Path) -> Res<fieldsync::bundle::SigningKey> {
    Ok(signing_key(&Instance::open(dir.join("hq.db"))?)?)
}

fn copy(from: &Path, to: &Path) -> Res {
    for suffix in ["-journal", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", to.display()));
    }
    std::fs::copy(from, to)?;
    Ok(())
}

fn fingerprint(db: &Path) -> Res<String> {
    let conn = rusqlite::Connection::open(db)?;
    Ok(state_fingerprint(&conn, true)?)
}

/// Change numbers of `origin` in `field-1`'s log, and those its
/// watermark says it has.
fn logged_and_had(db: &Path, origin: &str) -> Res<(BTreeSet<u64>, String)> {
    let logged = query(
        db,
        &format!(
            "SELECT DISTINCT l.seq FROM fieldsync_log l JOIN fieldsync_sites s ON s.id = l.origin
             WHERE s.name = {}",
            lit(origin)
        ),
    )?
    .into_iter()
    .map(|r| r[0].parse::<u64>())
    .collect::<Result<BTreeSet<u64>, _>>()?;
    let status = fieldsync_ok(&[&"status", &"--db", &db, &"--json"])?.json()?;
    let have = status["origins"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["instance"] == origin)
        .map(|o| o["have"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    Ok((logged, have))
}

/// "1-3,5" as numbers.
fn numbers(set: &str) -> Res<BTreeSet<u64>> {
    let mut out = BTreeSet::new();
    for part in set.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        for k in a.trim().parse::<u64>()?..=b.trim().parse::<u64>()? {
            out.insert(k);
        }
    }
    Ok(out)
}

#[test]
fn an_import_stopped_between_any_two_write_transactions_is_exact_and_a_retry_completes_it() -> Res {
    let dir = tempfile::tempdir()?;
    let (bundle, template) = fixture(dir.path(), 60, true)?;
    let work = dir.path().join("work.db");

    // The reference: the same import, uninterrupted.
    copy(&template, &work)?;
    let report = Instance::open(&work)?.import(std::io::Cursor::new(&bundle))?;
    assert_eq!(report.applied, 60 + 60 + 3, "{report:?}");
    let after = fingerprint(&work)?;

    let per_step = 17;
    let mut stopped = 0;
    for k in 1.. {
        copy(&template, &work)?;
        let mut db = Instance::open(&work)?;
        if import_interrupted(&mut db, &bundle, per_step, k)?.is_some() {
            break;
        }
        stopped += 1;
        let check = db.check()?;
        assert!(check.ok, "stopped after {k} transactions: {check:?}");
        let status = db.status()?;
        let interrupted = status
            .interrupted_import
            .ok_or("status does not report the interrupted import")?;
        assert_eq!(interrupted.from, "hq");
        // Exactly what was applied counts as received: every change of hq
        // in the log, and nothing more (no change is subsumed here).
        let (logged, have) = logged_and_had(&work, "hq")?;
        assert_eq!(
            numbers(&have)?,
            logged,
            "stopped after {k} transactions: the watermark is not what the log holds"
        );
        // The app's own row was stamped by the first transaction.
        assert_eq!(status.captured_unstamped, 0);
        drop(db);

        let mut db = Instance::open(&work)?;
        db.import(std::io::Cursor::new(&bundle))?;
        drop(db);
        assert_eq!(
            fingerprint(&work)?,
            after,
            "stopped after {k} transactions, then imported again"
        );
        let status = fieldsync_ok(&[&"status", &"--db", &work, &"--json"])?.json()?;
        assert!(status.get("interrupted_import").is_none(), "{status}");
    }
    assert!(stopped >= 5, "only {stopped} stops: the steps are too long");
    Ok(())
}

#[test]
fn a_bundle_refused_for_its_last_record_leaves_the_database_byte_identical() -> Res {
    let dir = tempfile::tempdir()?;
    let (bundle, template) = fixture(dir.path(), 60, true)?;
    let mut decoded = read_all(&bundle, u64::MAX)?;
    let last = decoded.records.last_mut().ok_or("no records")?;
    last.cl = 0;
    let bad = rewrite_with(&decoded, &hq_key(dir.path())?)?;
    let before = db_fingerprint(&template)?;
    let mut db = Instance::open(&template)?;
    let err = match import_interrupted(&mut db, &bad, 1, usize::MAX) {
        Ok(r) => return Err(format!("a record with causal length 0 was accepted: {r:?}").into()),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("causal length"), "{err}");
    drop(db);
    assert_eq!(db_fingerprint(&template)?, before);

    // Through the CLI: one line, exit 1, nothing changed but the journal
    // of refused bundles, which records it.
    let file = dir.path().join("bad.fsb");
    std::fs::write(&file, &bad)?;
    let out = fieldsync(&[&"import", &"--max-lock-ms", &"1", &"--db", &template, &file])?;
    assert_error(&out, 1, &["causal length"]);
    assert_eq!(
        db_fingerprint(&template)?.without_journal(),
        before.without_journal()
    );
    assert_eq!(
        count(&template, "SELECT count(*) FROM fieldsync_refused")?,
        1
    );
    Ok(())
}

#[test]
fn import_reports_its_write_transactions_and_atomic_takes_one() -> Res {
    let dir = tempfile::tempdir()?;
    let (bundle, template) = fixture(dir.path(), 3000, false)?;
    let file = dir.path().join("to-field-1.fsb");
    std::fs::write(&file, &bundle)?;
    let work = dir.path().join("work.db");

    copy(&template, &work)?;
    let short = fieldsync_ok(&[
        &"import",
        &"--json",
        &"--max-lock-ms",
        &"1",
        &"--db",
        &work,
        &file,
    ])?
    .json()?;
    let report = &short["files"][0]["report"];
    assert!(num(report, "write_transactions")? > 1, "{short}");
    assert_eq!(num(&short, "applied")?, 6003);
    let stepped = fingerprint(&work)?;

    copy(&template, &work)?;
    let atomic =
        fieldsync_ok(&[&"import", &"--json", &"--atomic", &"--db", &work, &file])?.json()?;
    assert_eq!(num(&atomic["files"][0]["report"], "write_transactions")?, 1);
    assert_eq!(fingerprint(&work)?, stepped, "both ways end in one state");

    let out = fieldsync(&[
        &"import",
        &"--atomic",
        &"--max-lock-ms",
        &"5",
        &"--db",
        &work,
        &file,
    ])?;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let out = fieldsync(&[&"import", &"--max-lock-ms", &"0", &"--db", &work, &file])?;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    Ok(())
}

/// The app: the sqlite3 shell with a 1 s busy timeout, one autocommit
/// INSERT after another, printing after each. The same import with
/// `--atomic` (one transaction, as every import was before) makes it fail
/// with "database is locked".
#[test]
fn an_app_with_a_busy_timeout_keeps_writing_while_a_large_import_runs() -> Res {
    let dir = tempfile::tempdir()?;
    let (bundle, template) = fixture(dir.path(), 40000, false)?;
    let file = dir.path().join("to-field-1.fsb");
    std::fs::write(&file, &bundle)?;
    let writes = 150;
    let mut script = String::from(".timeout 1000\n");
    for k in 0..writes {
        script.push_str(&format!(
            "INSERT INTO person VALUES ('app-{k}', 'app {k}', NULL);\nSELECT 'committed {k}';\n.shell sleep 0.01\n"
        ));
    }
    let mut app = Command::new(SQLITE3)
        .arg("-batch")
        .arg("-bail")
        .arg(&template)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = app.stdin.take().ok_or("no stdin")?;
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(script.as_bytes());
    });
    let imported = fieldsync_ok(&[&"import", &"--json", &"--db", &template, &file])?.json()?;
    let out = app.wait_with_output()?;
    feeder.join().map_err(|_| "feeder thread panicked")?;
    assert!(
        out.status.success(),
        "the app failed while the import ran: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("committed"))
            .count(),
        writes
    );
    assert_eq!(num(&imported, "applied")?, 80003, "{imported}");
    assert_eq!(
        count(
            &template,
            "SELECT count(*) FROM person WHERE id LIKE 'app-%'"
        )?,
        writes as u64
    );
    // Every app row is captured for the next export to hq.
    let out = dir.path().join("to-hq.fsb");
    let sent = fieldsync_ok(&[
        &"export", &"--db", &template, &"--to", &"hq", &"-o", &out, &"--json",
    ])?
    .json()?;
    assert_eq!(num(&sent, "changes")?, writes as u64 + 1, "{sent}");
    Ok(())
}

#[test]
fn app_writes_between_two_write_transactions_of_an_import_win_and_are_sent() -> Res {
    let dir = tempfile::tempdir()?;
    let (bundle, template) = fixture(dir.path(), 60, false)?;
    let mut db = Instance::open(&template)?;
    assert!(import_interrupted(&mut db, &bundle, 100, 1)?.is_none());
    drop(db);
    // Between the two: the app edits a person the import already wrote
    // (p-1: rows arrive in key order) and one it has not reached yet.
    let written = count(&template, "SELECT count(*) FROM person WHERE id = 'p-1'")?;
    assert_eq!(written, 1, "p-1 should be in the first transaction");
    sqlite3(
        &template,
        "UPDATE person SET name = 'edited here' WHERE id = 'p-1';
         INSERT INTO person VALUES ('p-9', 'made here first', NULL);",
    )?;
    let mut db = Instance::open(&template)?;
    let report = db.import(std::io::Cursor::new(&bundle))?;
    drop(db);
    assert!(report.captured >= 2, "{report:?}");
    // The app's edits are later than the bundle's: they stay.
    assert_eq!(
        query_one(&template, "SELECT name FROM person WHERE id = 'p-1'")?,
        "edited here"
    );
    assert_eq!(
        query_one(&template, "SELECT name FROM person WHERE id = 'p-9'")?,
        "made here first"
    );
    let out = dir.path().join("to-hq.fsb");
    let sent = fieldsync_ok(&[
        &"export", &"--db", &template, &"--to", &"hq", &"-o", &out, &"--json",
    ])?
    .json()?;
    assert_eq!(num(&sent, "changes")?, 3, "local-1, p-1 and p-9: {sent}");
    Ok(())
}

/// Found by review: a change number given twice in one bundle (its sender
/// restored from an old backup numbers two changes alike) failed the
/// import only where the second was met, after earlier write transactions
/// had committed the first, and every retry failed there again.
#[test]
fn a_change_number_reused_late_in_a_bundle_is_refused_before_anything_is_applied() -> Res {
    let dir = tempfile::tempdir()?;
    let (bundle, template) = fixture(dir.path(), 60, false)?;
    let mut decoded = read_all(&bundle, u64::MAX)?;
    let first = decoded.records[0].versions[0].clone();
    let last = decoded.records.last_mut().ok_or("no records")?;
    last.versions[0].origin = first.origin;
    last.versions[0].seq = first.seq;
    let bad = rewrite_with(&decoded, &hq_key(dir.path())?)?;
    let before = db_fingerprint(&template)?;
    let mut db = Instance::open(&template)?;
    let err = match import_interrupted(&mut db, &bad, 1, usize::MAX) {
        Ok(r) => return Err(format!("a reused change number was accepted: {r:?}").into()),
        Err(e) => e.to_string(),
    };
    drop(db);
    assert!(err.contains("already here"), "{err}");
    assert_eq!(db_fingerprint(&template)?, before);

    // A number the log here already holds for another row: the same.
    let mut db = Instance::open(&template)?;
    db.import(std::io::Cursor::new(&bundle))?;
    drop(db);
    let mut decoded = read_all(&bundle, u64::MAX)?;
    let n = decoded.records.len();
    let seq = decoded.records[0].versions[0].seq;
    decoded.records[n - 1].versions[0].seq = seq;
    // Only the log here holds the number now.
    decoded.records.remove(0);
    let bad = rewrite_with(&decoded, &hq_key(dir.path())?)?;
    let before = db_fingerprint(&template)?;
    let mut db = Instance::open(&template)?;
    let err = match import_interrupted(&mut db, &bad, 1, usize::MAX) {
        Ok(r) => {
            return Err(
                format!("a change number held here for another row was accepted: {r:?}").into(),
            );
        }
        Err(e) => e.to_string(),
    };
    drop(db);
    assert!(err.contains("already here"), "{err}");
    assert_eq!(db_fingerprint(&template)?, before);
    Ok(())
}
