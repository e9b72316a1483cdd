//! `fieldsync check`: clean on every state the engine reaches by itself, and
//! a report naming the damage when the engine tables are changed behind its
//! back with the `sqlite3` shell.

use crate::util::*;

const SCHEMA: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT, status TEXT);
                      CREATE TABLE visit(person TEXT, day INTEGER, note, PRIMARY KEY(person, day));";

/// Three instances that exchanged inserts, updates, deletes, a re-insert and
/// a key change, all checked clean.
fn busy_world() -> Res<(World, Site, Site, Site)> {
    let w = World::new()?;
    let (hq, f1, f2) = w.three(SCHEMA)?;
    hq.sql(
        "INSERT INTO person VALUES ('p1', 'Amal', 'missing'), ('p2', 'Bo', 'found'), ('p3', 'Cy', NULL);
         INSERT INTO visit VALUES ('p1', 1, 'first'), ('p1', 2, 2.5), ('p2', 1, x'00ff');",
    )?;
    w.send(&hq, &f1)?;
    w.send(&hq, &f2)?;
    f1.sql(
        "UPDATE person SET status = 'found' WHERE id = 'p1'; DELETE FROM person WHERE id = 'p3';",
    )?;
    f2.sql(
        "UPDATE person SET name = 'Amal K.' WHERE id = 'p1'; UPDATE person SET id = 'p4' WHERE id = 'p2';",
    )?;
    w.exchange(&f1, &hq)?;
    w.exchange(&f2, &hq)?;
    hq.sql("INSERT INTO person VALUES ('p3', 'Cy again', 'back');")?;
    w.exchange(&hq, &f1)?;
    w.exchange(&hq, &f2)?;
    // Captured but not yet stamped: still consistent.
    f1.sql("INSERT INTO person VALUES ('p5', 'Dee', NULL); DELETE FROM visit WHERE day = 2;")?;
    Ok((w, hq, f1, f2))
}

fn check(site: &Site) -> Res<Out> {
    fieldsync(&[&"check", &"--db", &site.db])
}

fn check_json(site: &Site) -> Res<serde_json::Value> {
    fieldsync(&[&"check", &"--db", &site.db, &"--json"])?.json()
}

#[test]
fn check_is_clean_after_exchanges_and_changes_nothing() -> Res {
    let (_w, hq, f1, f2) = busy_world()?;
    for site in [&hq, &f1, &f2] {
        let before = site.fingerprint()?;
        let out = check(site)?.ok()?;
        assert!(out.stdout.starts_with("ok"), "{}", out.stdout);
        assert!(out.stderr.is_empty(), "{}", out.stderr);
        let json = check_json(site)?;
        assert_eq!(json["ok"], true, "{json}");
        assert_eq!(json["problems"].as_array().map(Vec::len), Some(0));
        assert_eq!(num(&json, "tables")?, 2);
        assert_eq!(site.fingerprint()?, before, "check changed {}", site.name);
    }
    assert_eq!(
        num(&check_json(&f1)?, "captured_unstamped")?,
        2,
        "the unstamped insert and delete are counted"
    );
    Ok(())
}

/// Damage `hq` with `sql` through the shell; `check` must exit 1 with one
/// summary line on stderr and list a problem of `invariant` mentioning every
/// needle on stdout.
fn damaged(sql: &str, invariant: &str, needles: &[&str]) -> Res {
    let (_w, hq, _, _) = busy_world()?;
    check(&hq)?.ok()?;
    hq.sql(sql)?;
    let out = check(&hq)?;
    assert_eq!(
        out.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let err: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(err.len(), 1, "stderr: {}", out.stderr);
    assert!(
        err[0].starts_with("fieldsync: error: database ") && err[0].contains("consistency check"),
        "{}",
        err[0]
    );
    let hit = out.stdout.lines().any(|l| {
        let l = l.to_lowercase();
        needles.iter().all(|n| l.contains(&n.to_lowercase()))
    });
    assert!(hit, "no problem line mentions {needles:?}:\n{}", out.stdout);

    let json = fieldsync(&[&"check", &"--db", &hq.db, &"--json"])?;
    assert_eq!(json.code, Some(1));
    let json = json.json()?;
    assert_eq!(json["ok"], false);
    let problems = json["problems"].as_array().ok_or("no problems array")?;
    assert!(
        problems.iter().any(|p| p["invariant"] == invariant),
        "no {invariant} problem in {json}"
    );
    Ok(())
}

#[test]
fn check_reports_a_dropped_capture_trigger() -> Res {
    damaged(
        "DROP TRIGGER fieldsync_delete_1;",
        "triggers",
        &["person", "fieldsync_delete_1", "deletes are not recorded"],
    )
}

#[test]
fn check_reports_a_changed_capture_trigger() -> Res {
    damaged(
        "DROP TRIGGER fieldsync_insert_2;
         CREATE TRIGGER fieldsync_insert_2 AFTER INSERT ON visit BEGIN SELECT 1; END;",
        "triggers",
        &["fieldsync_insert_2", "not the one fieldsync installs"],
    )
}

#[test]
fn check_reports_a_row_written_while_triggers_were_missing() -> Res {
    damaged(
        "DROP TRIGGER fieldsync_insert_1;
         INSERT INTO person VALUES ('p9', 'Uncaptured', NULL);",
        "rows",
        &["person", "'p9'", "no record of it"],
    )
}

#[test]
fn check_reports_a_deleted_row_that_is_back_without_a_trace() -> Res {
    let (_w, hq, _, _) = busy_world()?;
    hq.sql("DELETE FROM person WHERE id = 'p1';")?;
    fieldsync_ok(&[&"compact", &"--db", &hq.db])?;
    check(&hq)?.ok()?;
    hq.sql(
        "DROP TRIGGER fieldsync_insert_1;
         INSERT INTO person VALUES ('p1', 'ghost', NULL);",
    )?;
    let out = check(&hq)?;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stdout
            .contains("row ('p1') exists but the change log records it as deleted"),
        "{}",
        out.stdout
    );
    Ok(())
}

#[test]
fn check_reports_a_row_live_in_the_log_but_gone_from_the_table() -> Res {
    damaged(
        "DROP TRIGGER fieldsync_delete_2; DELETE FROM visit WHERE person = 'p1' AND day = 1;",
        "rows",
        &["visit", "('p1', 1)", "missing from the table"],
    )
}

#[test]
fn check_reports_a_log_entry_of_an_unknown_origin() -> Res {
    damaged(
        "UPDATE fieldsync_log SET origin = 77
         WHERE (origin, seq) = (SELECT origin, seq FROM fieldsync_log LIMIT 1);",
        "references",
        &["origin #77", "not a known instance"],
    )
}

#[test]
fn check_reports_lost_watermarks() -> Res {
    damaged(
        "DELETE FROM fieldsync_have;",
        "watermarks",
        &["field-1", "fieldsync_have does not list"],
    )
}

#[test]
fn check_reports_a_counter_behind_the_log() -> Res {
    damaged(
        "UPDATE fieldsync_meta SET value = 1 WHERE key = 'seq';",
        "watermarks",
        &["this instance", "beyond its counter"],
    )
}

#[test]
fn check_reports_a_clock_behind_the_log() -> Res {
    damaged(
        "UPDATE fieldsync_meta SET value = 5 WHERE key = 'clock';",
        "clock",
        &["clock", "behind the newest change"],
    )
}

#[test]
fn check_reports_a_tombstone_held_by_cells() -> Res {
    damaged(
        "UPDATE fieldsync_log SET cl = cl + 1
         WHERE tbl = (SELECT id FROM fieldsync_tables WHERE name = 'visit') AND cl % 2 = 1;",
        "log_rows",
        &["visit", "is deleted", "holds cells"],
    )
}

#[test]
fn check_reports_sent_changes_this_instance_does_not_have() -> Res {
    damaged(
        "UPDATE fieldsync_peer_seqs SET sent = '1-100000' WHERE sent <> '';",
        "watermarks",
        &["is recorded as sent", "does not have"],
    )
}

#[test]
fn check_reports_a_dropped_tracked_table() -> Res {
    damaged(
        "DROP TABLE visit;",
        "schema",
        &["visit", "no longer exists"],
    )
}

#[test]
fn check_reports_file_level_corruption() -> Res {
    let (_w, hq, _, _) = busy_world()?;
    // Make the log's secondary index disagree with the table: the file stays
    // readable, but integrity_check sees the mismatch.
    hq.sql(
        "PRAGMA writable_schema = ON;
         UPDATE sqlite_schema SET sql = 'CREATE UNIQUE INDEX fieldsync_log_by_origin ON fieldsync_log(origin, cl)'
         WHERE name = 'fieldsync_log_by_origin';",
    )?;
    let out = check(&hq)?;
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    let json = check_json(&hq)?;
    let problems = json["problems"].as_array().ok_or("no problems")?;
    assert!(
        problems.iter().any(|p| p["invariant"] == "integrity"),
        "{json}"
    );
    Ok(())
}

#[test]
fn check_of_a_database_without_fieldsync_is_one_error_line() -> Res {
    let w = World::new()?;
    let db = w.path("plain.db");
    sqlite3(&db, "CREATE TABLE t(id TEXT PRIMARY KEY);")?;
    let out = fieldsync(&[&"check", &"--db", &db])?;
    assert_error(&out, 1, &["not set up for fieldsync"]);
    let out = fieldsync(&[&"check", &"--db", &w.path("missing.db")])?;
    assert_error(&out, 1, &["does not exist"]);
    Ok(())
}

#[test]
fn check_accepts_a_row_replaced_through_a_secondary_unique_index() -> Res {
    let w = World::new()?;
    let a = w.site(
        "a",
        "CREATE TABLE t(id TEXT PRIMARY KEY, code TEXT UNIQUE, v TEXT);",
    )?;
    a.sql("INSERT INTO t VALUES ('r1', 'X', 'one');")?;
    fieldsync_ok(&[&"compact", &"--db", &a.db])?;
    // Deletes r1 without a DELETE trigger: legitimate, and recorded by the
    // next stamp; meanwhile captured changes of the table wait.
    a.sql("INSERT OR REPLACE INTO t VALUES ('r2', 'X', 'two');")?;
    check(&a)?.ok()?;
    fieldsync_ok(&[&"compact", &"--db", &a.db])?;
    check(&a)?.ok()?;
    Ok(())
}

#[test]
fn check_reports_a_row_replaced_by_rowid_until_compact_records_it() -> Res {
    let w = World::new()?;
    let (a, b, _) = w.three("CREATE TABLE t(id TEXT PRIMARY KEY, v TEXT);")?;
    a.sql("INSERT INTO t(rowid, id, v) VALUES (1, 'a', 'x');")?;
    w.send(&a, &b)?;
    a.sql("INSERT OR REPLACE INTO t(rowid, id, v) VALUES (1, 'b', 'y');")?;
    check(&a)?.ok()?;
    // A delta export stamps the insert of 'b' but checks only the rows it
    // carries, so the silent deletion of 'a' is still unrecorded.
    w.send(&a, &b)?;
    let out = check(&a)?;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stdout
            .contains("row ('a') is live in the change log but missing")
            && out.stdout.contains("fieldsync compact"),
        "{}",
        out.stdout
    );
    fieldsync_ok(&[&"compact", &"--db", &a.db])?;
    check(&a)?.ok()?;
    Ok(())
}
