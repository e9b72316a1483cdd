//! End-to-end tests of the `fieldsync` command: the real binary, the system
//! `sqlite3` shell (and a Python client) writing to the app tables, and
//! several instances (hq, field-1, field-2) exchanging bundle files in a
//! temporary directory.

use std::path::Path;
use std::thread::sleep;
use std::time::Duration;

use crate::util::*;

/// The app schema most tests use.
const PERSON: &str =
    "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT, status TEXT, age INTEGER);";

/// A gap long enough that two edits get different clock readings.
const GAP: Duration = Duration::from_millis(20);

/// A `person` row as [`rows`] shows it; `"NULL"` stands for NULL.
fn person(id: &str, name: &str, status: &str, age: &str) -> Vec<String> {
    let text = |s: &str| if s == "NULL" { s.to_owned() } else { lit(s) };
    vec![lit(id), text(name), text(status), age.to_owned()]
}

// ---------------------------------------------------------------------------
// 1. Capture of shell writes
// ---------------------------------------------------------------------------

#[test]
fn shell_insert_update_delete_and_key_change_reach_another_instance() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    hq.sql(
        "INSERT INTO person VALUES ('p1', 'Amal', 'missing', 30), ('p2', 'Bo', 'found', 41), \
         ('p3', 'Cy', 'missing', NULL);",
    )?;
    let (exported, imported) = w.send(&hq, &f1)?;
    assert_eq!(num(&exported, "changes")?, 3);
    assert_eq!(num(&imported, "applied")?, 3);
    assert_eq!(f1.rows("person")?, hq.rows("person")?);

    // One column, a delete, and a primary-key change, all from the shell.
    hq.sql(
        "UPDATE person SET status = 'found' WHERE id = 'p1';
         DELETE FROM person WHERE id = 'p3';
         UPDATE person SET id = 'p2b' WHERE id = 'p2';",
    )?;
    let (exported, imported) = w.send(&hq, &f1)?;
    // p1 updated, p3 deleted, p2 deleted, p2b created.
    assert_eq!(num(&exported, "changes")?, 4, "{exported}");
    assert_eq!(num(&imported, "applied")?, 4, "{imported}");
    assert_eq!(
        f1.rows("person")?,
        vec![
            person("p1", "Amal", "found", "30"),
            person("p2b", "Bo", "found", "41"),
        ]
    );
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    Ok(())
}

// ---------------------------------------------------------------------------
// 2. Value types
// ---------------------------------------------------------------------------

const VALUES_SCHEMA: &str = "
CREATE TABLE vals(id TEXT PRIMARY KEY, v, r REAL, t TEXT, b BLOB);
CREATE TABLE comp(k1 TEXT, k2 INTEGER, k3 BLOB, v, PRIMARY KEY(k1, k2, k3));";

const VALUES_ROWS: &str = "
INSERT INTO vals VALUES
  ('null', NULL, NULL, NULL, NULL),
  ('imin', -9223372036854775808, -9223372036854775808, NULL, NULL),
  ('imax', 9223372036854775807, 9223372036854775807, NULL, NULL),
  ('zero', 0, 0, '0', X'00'),
  ('r0.1', 0.1, 0.1, NULL, NULL),
  ('r0.1+0.2', 0.1 + 0.2, 0.1 + 0.2, NULL, NULL),
  ('negzero', -0.0, -0.0, NULL, NULL),
  ('big', 1e308, 1e308, NULL, NULL),
  ('tiny', 4.9406564584124654e-324, 4.9406564584124654e-324, NULL, NULL),
  ('inf', 1e999, -1e999, NULL, NULL),
  ('int-in-real', 3, 3, NULL, NULL),
  ('emoji', '👩‍🚒🚑 ok', '👩‍🚒🚑 ok', '👩‍🚒🚑 ok', NULL),
  ('rtl', 'مرحبا بالعالم', NULL, 'שלום עולם', NULL),
  ('combining', 'e' || char(0x301) || 'a' || char(0x308), NULL, 'Zoe' || char(0x308), NULL),
  ('quote-newline', 'O''Brien' || char(10) || 'line 2', NULL, 'tab' || char(9) || 'end', NULL),
  ('empty-text', '', NULL, '', NULL),
  ('nul-text', CAST(x'610062006300' AS TEXT), NULL, CAST(x'00' AS TEXT), NULL),
  ('latin1-text', CAST(x'436166E9' AS TEXT), NULL, CAST(x'FF' AS TEXT), NULL),
  ('empty-blob', X'', NULL, NULL, X''),
  ('blob', X'00FF7F80', NULL, NULL, X'DEADBEEF00'),
  ('text-in-blob-col', 'abc', NULL, NULL, 'abc');
INSERT INTO comp VALUES
  ('a', 1, X'00', 'x'),
  ('a', 1, X'01', 'differs only in the blob'),
  ('a', -9223372036854775808, X'', 'y'),
  ('', 0, X'FF', NULL),
  ('👩‍🚒', 9223372036854775807, X'0102', 1.5),
  ('A', 1, X'00', 'case differs');";

#[test]
fn every_value_type_round_trips_exactly() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) = w.three(VALUES_SCHEMA)?;
    hq.sql(VALUES_ROWS)?;
    w.send(&hq, &f1)?;
    let want = hq.snapshot()?;
    assert_eq!(f1.snapshot()?, want);

    // What SQLite itself preserves, checked on the receiving side: the full
    // i64 range, the bits of reals, -0.0 only in a column without affinity
    // (a REAL column stores it as the integer 0), NUL inside text, and an
    // empty blob that is not NULL.
    let one = |sql: &str| query_one(&f1.db, sql);
    assert_eq!(
        one("SELECT quote(v) || ' ' || hex(ieee754_to_blob(r)) FROM vals WHERE id = 'imin'")?,
        "-9223372036854775808 C3E0000000000000"
    );
    assert_eq!(
        one("SELECT quote(v) FROM vals WHERE id = 'imax'")?,
        "9223372036854775807"
    );
    assert_eq!(
        one("SELECT hex(ieee754_to_blob(v)) FROM vals WHERE id = 'r0.1'")?,
        "3FB999999999999A"
    );
    assert_eq!(
        one(
            "SELECT hex(ieee754_to_blob(v)) || ' ' || hex(ieee754_to_blob(r)) FROM vals WHERE id = 'negzero'"
        )?,
        "8000000000000000 0000000000000000"
    );
    assert_eq!(
        one("SELECT quote(v) || ' ' || quote(r) FROM vals WHERE id = 'inf'")?,
        "Inf -Inf"
    );
    assert_eq!(
        one("SELECT typeof(v) || ' ' || typeof(r) FROM vals WHERE id = 'int-in-real'")?,
        "integer real"
    );
    assert_eq!(
        one(
            "SELECT typeof(v) || ' ' || hex(v) || ' ' || length(CAST(v AS BLOB)) FROM vals WHERE id = 'nul-text'"
        )?,
        "text 610062006300 6"
    );
    assert_eq!(
        one(
            "SELECT typeof(v) || ' ' || hex(v) || ' ' || hex(t) FROM vals WHERE id = 'latin1-text'"
        )?,
        "text 436166E9 FF"
    );
    assert_eq!(
        one(
            "SELECT quote(v) || ' ' || quote(b) || ' ' || (v IS NULL) FROM vals WHERE id = 'empty-blob'"
        )?,
        "X'' X'' 0"
    );
    assert_eq!(
        one("SELECT quote(t) || ' ' || typeof(t) FROM vals WHERE id = 'empty-text'")?,
        "'' text"
    );
    assert_eq!(
        one("SELECT typeof(b) FROM vals WHERE id = 'text-in-blob-col'")?,
        "text"
    );
    assert_eq!(
        one("SELECT count(*) FROM comp WHERE k1 = 'a' AND k2 = 1")?,
        "2"
    );

    // Changes made at field-1 come back just as exactly: NULL and the empty
    // blob swap places, a text becomes a blob with the same bytes.
    f1.sql(
        "UPDATE vals SET v = X'' WHERE id = 'null';
         UPDATE vals SET v = NULL, b = NULL WHERE id = 'empty-blob';
         UPDATE vals SET v = CAST(v AS BLOB) WHERE id = 'nul-text';
         UPDATE comp SET v = X'' WHERE k1 = 'a' AND k2 = -9223372036854775808 AND k3 = X'';
         DELETE FROM comp WHERE k1 = '' AND k2 = 0 AND k3 = X'FF';",
    )?;
    w.send(&f1, &hq)?;
    assert_eq!(hq.snapshot()?, f1.snapshot()?);
    assert_eq!(
        query_one(&hq.db, "SELECT quote(v) FROM vals WHERE id = 'null'")?,
        "X''"
    );
    assert_eq!(
        query_one(
            &hq.db,
            "SELECT quote(v) || quote(b) FROM vals WHERE id = 'empty-blob'"
        )?,
        "NULLNULL"
    );

    // A full export carries the same state to an instance that had nothing.
    let full = w.bundle("hq-full");
    hq.export_full(&full)?;
    f2.import(&[&full])?;
    assert_eq!(f2.snapshot()?, hq.snapshot()?);
    Ok(())
}

#[test]
fn text_key_with_embedded_nul_round_trips() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three("CREATE TABLE k(id TEXT PRIMARY KEY, v);")?;
    hq.sql(
        "INSERT INTO k VALUES (CAST(x'610062' AS TEXT), 'with nul'), ('a', 'plain a'), \
         (CAST(x'6100' AS TEXT), 'a then nul');",
    )?;
    w.send(&hq, &f1)?;
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    hq.sql("UPDATE k SET v = 'changed' WHERE id = CAST(x'610062' AS TEXT);")?;
    w.send(&hq, &f1)?;
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    assert_eq!(f1.count("SELECT count(*) FROM k")?, 3);
    Ok(())
}

// Capture compared old and new values with `IS NOT` alone, which treats 1
// and 1.0 (and -0.0 and 0.0) as equal: an edit that only changed the storage
// class, or the sign of a zero, in a column without type affinity was not
// recorded, and the instances ended up holding different values.
#[test]
fn update_changing_only_the_storage_class_is_replicated() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three("CREATE TABLE m(id TEXT PRIMARY KEY, v);")?;
    hq.sql("INSERT INTO m VALUES ('a', 1), ('b', -0.0), ('c', '1'), ('d', x'31');")?;
    w.send(&hq, &f1)?;
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    hq.sql(
        "UPDATE m SET v = 1.0 WHERE id = 'a'; UPDATE m SET v = 1 WHERE id = 'c'; \
         UPDATE m SET v = '1' WHERE id = 'd'; UPDATE m SET v = 0.0 WHERE id = 'b';",
    )?;
    w.send(&hq, &f1)?;
    assert_eq!(
        f1.snapshot()?,
        hq.snapshot()?,
        "field-1 kept the old storage class"
    );
    Ok(())
}

// Capture compares old and new values with `IS NOT`, which uses the column's
// collation: in a COLLATE NOCASE column, correcting 'amal' to 'Amal' is not
// recorded, so the correction never reaches the other instances.
#[test]
fn case_only_edit_in_nocase_column_is_replicated() -> Res {
    let w = World::new()?;
    let (hq, f1, _) =
        w.three("CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT COLLATE NOCASE);")?;
    hq.sql("INSERT INTO person VALUES ('p1', 'amal');")?;
    w.send(&hq, &f1)?;
    hq.sql("UPDATE person SET name = 'Amal' WHERE id = 'p1';")?;
    let (exported, _) = w.send(&hq, &f1)?;
    assert_eq!(
        f1.rows("person")?,
        vec![vec![lit("p1"), lit("Amal")]],
        "the case correction was not exported: {exported}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 3. Idempotence
// ---------------------------------------------------------------------------

#[test]
fn reimporting_a_bundle_applies_nothing_the_second_time() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing', 30), ('p2', 'Bo', NULL, NULL);")?;
    let b = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &b)?;
    let first = f1.import(&[&b])?;
    assert_eq!(num(&first, "applied")?, 2);
    let snap = f1.snapshot()?;
    let second = f1.import(&[&b])?;
    assert_eq!(num(&second, "applied")?, 0, "{second}");
    assert_eq!(num(&second, "skipped")?, 2, "{second}");
    assert_eq!(num(&second, "known")?, 2, "{second}");
    assert_eq!(f1.snapshot()?, snap);
    // The same file twice on one command line.
    let twice = f1.import(&[&b, &b])?;
    assert_eq!(num(&twice, "applied")?, 0, "{twice}");
    assert_eq!(f1.snapshot()?, snap);
    Ok(())
}

#[test]
fn overlapping_resend_bundles_create_no_duplicates() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) = w.three(PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing', 30), ('p2', 'Bo', NULL, NULL);")?;
    let old = w.bundle("hq-to-field-1-old");
    assert_eq!(num(&hq.export_to("field-1", &old)?, "changes")?, 2);
    // The bundle is "lost"; more changes are made; everything unacknowledged
    // is sent again.
    hq.sql(
        "UPDATE person SET status = 'found' WHERE id = 'p1';
         INSERT INTO person VALUES ('p3', 'Cy', 'missing', 5);",
    )?;
    let new = w.bundle("hq-to-field-1-resend");
    let resent = fieldsync_ok(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--to",
        &"field-1",
        &"--resend",
        &"-o",
        &new,
        &"--json",
    ])?
    .json()?;
    assert_eq!(num(&resent, "changes")?, 3, "{resent}");

    // Old then new at field-1.
    f1.import(&[&old])?;
    f1.import(&[&new])?;
    assert_eq!(f1.count("SELECT count(*) FROM person")?, 3);
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    // Both again: nothing new.
    let again = f1.import(&[&old, &new])?;
    assert_eq!(num(&again, "applied")?, 0, "{again}");
    assert_eq!(f1.snapshot()?, hq.snapshot()?);

    // New then old at field-2 (a bundle may be imported by any instance).
    f2.import(&[&new])?;
    let late = f2.import(&[&old])?;
    assert_eq!(num(&late, "applied")?, 0, "{late}");
    assert_eq!(f2.count("SELECT count(*) FROM person")?, 3);
    assert_eq!(f2.snapshot()?, hq.snapshot()?);
    Ok(())
}

// ---------------------------------------------------------------------------
// 4. and 5. Concurrent edits
// ---------------------------------------------------------------------------

#[test]
fn concurrent_edits_of_different_columns_both_survive() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing', 30);")?;
    w.exchange(&hq, &f1)?;
    // Neither has seen the other's edit.
    hq.sql("UPDATE person SET status = 'found' WHERE id = 'p1';")?;
    f1.sql("UPDATE person SET name = 'Amal Haddad', age = 31 WHERE id = 'p1';")?;
    w.cross(&hq, &f1)?;
    let want = vec![person("p1", "Amal Haddad", "found", "31")];
    assert_eq!(hq.rows("person")?, want);
    assert_eq!(f1.rows("person")?, want);
    Ok(())
}

#[test]
fn same_column_edits_the_later_edit_wins_on_both_sides() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    hq.sql(
        "INSERT INTO person VALUES ('p1', 'Amal', 'missing', 30), ('p2', 'Bo', 'missing', 40);",
    )?;
    w.exchange(&hq, &f1)?;
    // p1: hq first, field-1 later. p2: field-1 first, hq later.
    hq.sql("UPDATE person SET status = 'hq says found' WHERE id = 'p1';")?;
    sleep(GAP);
    f1.sql("UPDATE person SET status = 'field-1 says dead' WHERE id = 'p1';")?;
    sleep(GAP);
    f1.sql("UPDATE person SET status = 'field-1 says found' WHERE id = 'p2';")?;
    sleep(GAP);
    hq.sql("UPDATE person SET status = 'hq says transferred' WHERE id = 'p2';")?;
    w.cross(&hq, &f1)?;
    let want = vec![
        person("p1", "Amal", "field-1 says dead", "30"),
        person("p2", "Bo", "hq says transferred", "40"),
    ];
    assert_eq!(hq.rows("person")?, want);
    assert_eq!(f1.rows("person")?, want);
    Ok(())
}

#[test]
fn same_key_inserted_on_two_instances_converges() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing', NULL);")?;
    sleep(GAP);
    f1.sql("INSERT INTO person VALUES ('p1', 'Amal H.', NULL, 30);")?;
    w.cross(&hq, &f1)?;
    assert_eq!(hq.snapshot()?, f1.snapshot()?);
    assert_eq!(hq.count("SELECT count(*) FROM person")?, 1);
    Ok(())
}

// ---------------------------------------------------------------------------
// 6. and 7. Deletes
// ---------------------------------------------------------------------------

#[test]
fn delete_propagates_and_a_reinsert_of_the_key_comes_back_everywhere() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) = w.three(PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing', 30), ('p2', 'Bo', NULL, NULL);")?;
    w.send(&hq, &f1)?;
    w.send(&hq, &f2)?;
    hq.sql("DELETE FROM person WHERE id = 'p1';")?;
    let (_, imported) = w.send(&hq, &f1)?;
    assert_eq!(num(&imported, "applied")?, 1);
    w.send(&hq, &f2)?;
    for s in [&hq, &f1, &f2] {
        assert_eq!(s.rows("person")?, vec![person("p2", "Bo", "NULL", "NULL")]);
    }
    // field-1 records the person again under the same key.
    f1.sql("INSERT INTO person VALUES ('p1', 'Amal', 'found', 30);")?;
    w.send(&f1, &hq)?;
    w.send(&hq, &f2)?;
    let want = vec![
        person("p1", "Amal", "found", "30"),
        person("p2", "Bo", "NULL", "NULL"),
    ];
    for s in [&hq, &f1, &f2] {
        assert_eq!(s.rows("person")?, want, "at {}", s.name);
    }
    // And a second delete and re-insert cycle, this time from hq.
    hq.sql("DELETE FROM person WHERE id = 'p1';")?;
    w.send(&hq, &f1)?;
    assert_eq!(f1.count("SELECT count(*) FROM person WHERE id = 'p1'")?, 0);
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'moved', 31);")?;
    w.send(&hq, &f1)?;
    w.send(&hq, &f2)?;
    for s in [&hq, &f1, &f2] {
        assert_eq!(
            s.rows("person")?[0],
            person("p1", "Amal", "moved", "31"),
            "at {}",
            s.name
        );
    }
    Ok(())
}

/// hq deletes a row while field-1 (later, by the clock) updates it; the
/// bundles are imported with hq's first (`hq_first`) or field-1's first.
fn delete_vs_update(hq_first: bool) -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing', 30), ('p2', 'Bo', NULL, NULL);")?;
    w.exchange(&hq, &f1)?;
    hq.sql("DELETE FROM person WHERE id = 'p1';")?;
    sleep(GAP);
    f1.sql("UPDATE person SET status = 'found' WHERE id = 'p1';")?;
    if hq_first {
        w.send(&hq, &f1)?;
        w.send(&f1, &hq)?;
    } else {
        w.send(&f1, &hq)?;
        w.send(&hq, &f1)?;
    }
    // Once more both ways: nothing may flip back.
    w.exchange(&hq, &f1)?;
    assert_eq!(hq.snapshot()?, f1.snapshot()?);
    // The delete wins over the concurrent update (higher causal length),
    // even though the update was made later.
    let want = vec![person("p2", "Bo", "NULL", "NULL")];
    assert_eq!(hq.rows("person")?, want);
    assert_eq!(f1.rows("person")?, want);
    Ok(())
}

#[test]
fn delete_vs_concurrent_update_converges_delete_first() -> Res {
    delete_vs_update(true)
}

#[test]
fn delete_vs_concurrent_update_converges_update_first() -> Res {
    delete_vs_update(false)
}

// ---------------------------------------------------------------------------
// 8. to 10. What an export carries
// ---------------------------------------------------------------------------

fn inspect_json(file: &Path) -> Res<serde_json::Value> {
    fieldsync_ok(&[&"inspect", &file, &"--json"])?.json()
}

#[test]
fn incremental_export_after_an_ack_is_small() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    let mut inserts = String::from("BEGIN;");
    for i in 0..50 {
        inserts.push_str(&format!(
            "INSERT INTO person VALUES ('p{i}', 'name {i}', 'missing', {i});"
        ));
    }
    inserts.push_str("COMMIT;");
    hq.sql(&inserts)?;
    let (first, _) = w.send(&hq, &f1)?;
    assert_eq!(num(&first, "changes")?, 50);
    // field-1 answers, acknowledging what it got.
    w.send(&f1, &hq)?;

    for resend in [false, true] {
        let b = w.bundle("hq-to-field-1-empty");
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"export",
            &"--no-encrypt",
            &"--db",
            &hq.db,
            &"--to",
            &"field-1",
            &"-o",
            &b,
            &"--json",
        ];
        if resend {
            args.push(&"--resend");
        }
        let report = fieldsync_ok(&args)?.json()?;
        assert_eq!(num(&report, "changes")?, 0, "resend={resend}: {report}");
        let info = inspect_json(&b)?;
        assert_eq!(num(&info, "changes")?, 0, "{info}");
        assert_eq!(text(&info, "sender_instance")?, "hq");
        assert_eq!(info.get("full"), Some(&serde_json::Value::Bool(false)));
    }

    hq.sql("INSERT INTO person VALUES ('new', 'Newcomer', 'missing', NULL);")?;
    let b = w.bundle("hq-to-field-1-one");
    let report = hq.export_plain_to("field-1", &b)?;
    assert_eq!(num(&report, "changes")?, 1, "{report}");
    let info = inspect_json(&b)?;
    assert_eq!(num(&info, "changes")?, 1, "{info}");
    assert_eq!(text(&info, "sender_site")?, hq.site_id()?);
    let imported = f1.import(&[&b])?;
    assert_eq!(num(&imported, "applied")?, 1);
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    Ok(())
}

#[test]
fn no_echo_to_origin_but_relayed_to_others() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) = w.three(PERSON)?;
    // Everyone has met everyone's hq.
    w.exchange(&hq, &f1)?;
    w.exchange(&hq, &f2)?;
    f1.sql("INSERT INTO person VALUES ('f1-a', 'From field', 'missing', 9);")?;
    w.send(&f1, &hq)?;
    let (back, _) = w.send(&hq, &f1)?;
    assert_eq!(
        num(&back, "changes")?,
        0,
        "hq echoed field-1's change: {back}"
    );
    let (onward, imported) = w.send(&hq, &f2)?;
    assert_eq!(num(&onward, "changes")?, 1, "{onward}");
    assert_eq!(num(&imported, "applied")?, 1);
    assert_eq!(
        f2.rows("person")?,
        vec![person("f1-a", "From field", "missing", "9")]
    );
    Ok(())
}

#[test]
fn relay_keeps_the_origin_and_never_duplicates() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) = w.three(PERSON)?;
    f1.sql("INSERT INTO person VALUES ('f1-a', 'A', 'missing', 1), ('f1-b', 'B', 'found', 2);")?;
    w.send(&f1, &hq)?;
    w.send(&hq, &f2)?;
    assert_eq!(f2.snapshot()?, f1.snapshot()?);
    let origin = f2
        .origin("field-1")?
        .ok_or("field-2's status does not list field-1 as an origin")?;
    assert_eq!(text(&origin, "site")?, f1.site_id()?);
    assert_eq!(text(&origin, "have")?, "1-2");
    assert_eq!(text(&origin, "gaps")?, "");

    // field-2 meets field-1 directly: nothing of field-1's goes back to it.
    let (exported, imported) = w.send(&f2, &f1)?;
    assert_eq!(num(&exported, "changes")?, 0, "{exported}");
    assert_eq!(num(&imported, "applied")?, 0, "{imported}");
    assert_eq!(f1.count("SELECT count(*) FROM person")?, 2);
    // field-2's bundle acknowledged field-1's changes, so field-1 sends none
    // of them to field-2.
    let (exported, imported) = w.send(&f1, &f2)?;
    assert_eq!(num(&exported, "changes")?, 0, "{exported}");
    assert_eq!(num(&imported, "applied")?, 0, "{imported}");
    assert_eq!(f2.count("SELECT count(*) FROM person")?, 2);
    assert_eq!(f2.snapshot()?, f1.snapshot()?);
    Ok(())
}

// ---------------------------------------------------------------------------
// 11. Damaged bundles
// ---------------------------------------------------------------------------

#[test]
fn corrupt_and_truncated_bundles_are_rejected_and_change_nothing() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    let mut inserts = String::from("BEGIN;");
    for i in 0..40 {
        inserts.push_str(&format!(
            "INSERT INTO person VALUES ('p{i}', 'name {i}', 'status {i}', {i});"
        ));
    }
    inserts.push_str("COMMIT;");
    hq.sql(&inserts)?;
    let good = w.bundle("good");
    hq.export_to("field-1", &good)?;
    let bytes = std::fs::read(&good)?;
    assert!(bytes.len() > 100, "bundle unexpectedly small");

    let variant = |name: &str, content: &[u8]| -> Res<std::path::PathBuf> {
        let p = w.path(name);
        std::fs::write(&p, content)?;
        Ok(p)
    };
    let mut flipped = bytes.clone();
    let mid = bytes.len() / 2;
    flipped[mid] ^= 0x01;
    let mut newer = bytes.clone();
    newer[8..10].copy_from_slice(&(fieldsync::bundle::format::FORMAT_VERSION + 1).to_le_bytes());
    let mut crlf = bytes[..4].to_vec();
    crlf.push(b'\n');
    crlf.extend_from_slice(&bytes[6..]);

    let cases: Vec<(&str, std::path::PathBuf, Vec<&str>)> = vec![
        (
            "byte flipped in the middle",
            variant("flipped.fsb", &flipped)?,
            vec!["corrupt"],
        ),
        (
            "truncated to half",
            variant("half.fsb", &bytes[..bytes.len() / 2])?,
            vec!["half.fsb"],
        ),
        (
            "truncated to 5 bytes",
            variant("five.fsb", &bytes[..5])?,
            vec!["truncated"],
        ),
        (
            "empty file",
            variant("empty.fsb", b"")?,
            vec!["not a fieldsync bundle"],
        ),
        (
            "text file",
            variant(
                "notes.txt",
                b"Dear HQ,\r\nplease find the data attached.\r\n",
            )?,
            vec!["not a fieldsync bundle"],
        ),
        (
            "a newer format version",
            variant("newer.fsb", &newer)?,
            vec!["newer", "upgrade"],
        ),
        (
            "CR LF converted to LF",
            variant("crlf.fsb", &crlf)?,
            vec!["line endings"],
        ),
        (
            "missing file",
            w.path("no-such-bundle.fsb"),
            vec!["no-such-bundle.fsb"],
        ),
    ];
    for (_, file, needles) in &cases {
        f1.import_refused(&[file], needles)?;
    }
    // The half file is reported as truncated, corrupt or not completely
    // copied (its signed trailer is read at a fixed place from the end),
    // not as something else.
    let out = fieldsync(&[&"import", &"--db", &f1.db, &cases[1].1])?;
    let line = out.stderr.to_lowercase();
    assert!(
        line.contains("truncated")
            || line.contains("corrupt")
            || line.contains("not copied completely"),
        "{line}"
    );

    // A good bundle followed by a corrupt one: all are checked first, so
    // nothing at all is applied.
    f1.import_refused(&[&good, &cases[0].1], &["flipped.fsb"])?;
    assert_eq!(f1.count("SELECT count(*) FROM person")?, 0);

    // inspect says the flipped file is damaged (exit 1) without panicking.
    let out = fieldsync(&[&"inspect", &cases[0].1])?;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);

    // The good bundle itself is fine.
    let imported = f1.import(&[&good])?;
    assert_eq!(num(&imported, "applied")?, 40);
    Ok(())
}

// ---------------------------------------------------------------------------
// 12. Bad input
// ---------------------------------------------------------------------------

#[test]
fn import_into_a_missing_database_fails_and_creates_nothing() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', NULL, NULL);")?;
    let b = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &b)?;
    let missing = w.path("nowhere.db");
    let out = fieldsync(&[&"import", &"--db", &missing, &b])?;
    assert_error(&out, 1, &["nowhere.db", "does not exist"]);
    assert!(!missing.exists(), "import created the database file");
    let out = fieldsync(&[&"status", &"--db", &missing])?;
    assert_error(&out, 1, &["does not exist"]);
    assert!(!missing.exists(), "status created the database file");
    Ok(())
}

#[test]
fn import_into_a_database_without_init_fails_and_changes_nothing() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', NULL, NULL);")?;
    let b = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &b)?;
    let plain = w.path("plain.db");
    sqlite3(&plain, PERSON)?;
    let before = db_fingerprint(&plain)?;
    let out = fieldsync(&[&"import", &"--db", &plain, &b])?;
    assert_error(&out, 1, &["plain.db", "init"]);
    assert_eq!(db_fingerprint(&plain)?, before);
    Ok(())
}

#[test]
fn importing_a_bundle_from_the_same_instance_fails() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', NULL, NULL);")?;
    let b = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &b)?;
    hq.import_refused(&[&b], &["this instance"])?;
    Ok(())
}

#[test]
fn rows_of_a_table_the_receiver_does_not_track_wait_until_it_does() -> Res {
    let w = World::new()?;
    let hq = w.site(
        "hq",
        "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT);
         CREATE TABLE visit(id TEXT PRIMARY KEY, person TEXT, note TEXT);",
    )?;
    hq.sql(
        "INSERT INTO person VALUES ('p1', 'Amal'); INSERT INTO visit VALUES ('v1', 'p1', 'ok');",
    )?;
    // field-1 has the table but does not track it; field-2 lacks it. Both
    // were set up by hand, so a schema change from a bundle is held.
    let f1 = w.bare_site(
        "field-1",
        "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT);
         CREATE TABLE visit(id TEXT PRIMARY KEY, person TEXT, note TEXT);",
    )?;
    fieldsync_ok(&[&"track", &"--db", &f1.db, &"person"])?;
    let f2 = w.site(
        "field-2",
        "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT);",
    )?;
    let b = w.bundle("hq-full");
    hq.export_full(&b)?;
    for s in [&f1, &f2] {
        let out = fieldsync_ok(&[&"import", &"--db", &s.db, &b])?;
        assert!(out.stderr.contains("table 'visit'"), "{}", out.stderr);
        assert_eq!(s.rows("person")?, vec![vec!["'p1'", "'Amal'"]]);
        // The visit waits: not received, so hq's numbers for it are missing.
        let status = s.status()?;
        assert_eq!(status["waiting"][0]["table"], "visit", "{status}");
    }
    // field-1 tracks the table; the next import applies what waited.
    fieldsync_ok(&[&"track", &"--db", &f1.db, &"visit"])?;
    // field-2 runs the held schema change, which creates and tracks it.
    let out = fieldsync_ok(&[&"schema", &"--db", &f2.db, &"--apply"])?;
    assert!(out.stdout.contains("new table"), "{}", out.stdout);
    for s in [&f1, &f2] {
        w.send(&hq, s)?;
        assert_eq!(s.rows("visit")?, vec![vec!["'v1'", "'p1'", "'ok'"]]);
        assert_eq!(s.count("SELECT count(*) FROM fieldsync_waiting")?, 0);
        fieldsync_ok(&[&"check", &"--db", &s.db])?;
    }
    Ok(())
}

#[test]
fn a_bundle_missing_a_column_the_receiver_has_applies_and_leaves_that_column_alone() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", PERSON)?;
    let f1 = w.site(
        "field-1",
        "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT, status TEXT, age INTEGER, village TEXT);",
    )?;
    f1.sql("INSERT INTO person VALUES ('p1', 'A', NULL, NULL, 'North');")?;
    w.send(&f1, &hq)?;
    hq.sql("UPDATE person SET name = 'Amal' WHERE id = 'p1'; INSERT INTO person VALUES ('p2', 'Bo', NULL, NULL);")?;
    let b = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &b)?;
    let out = fieldsync_ok(&[&"import", &"--db", &f1.db, &b])?;
    // hq's table lacks the column: said once, never applied.
    assert!(out.stderr.contains("'village'"), "{}", out.stderr);
    assert_eq!(
        f1.rows("person")?,
        vec![
            vec!["'p1'", "'Amal'", "NULL", "NULL", "'North'"],
            vec!["'p2'", "'Bo'", "NULL", "NULL", "NULL"]
        ]
    );
    fieldsync_ok(&[&"check", &"--db", &f1.db])?;
    Ok(())
}

#[test]
fn init_again_with_another_name_fails_and_with_the_same_name_is_a_noop() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', NULL, NULL);")?;
    let before = hq.fingerprint()?;
    let out = fieldsync(&[&"init", &"--db", &hq.db, &"--name", &"field-9"])?;
    assert_error(&out, 1, &["already initialised", "'hq'", "field-9"]);
    assert_eq!(hq.fingerprint()?, before);
    let out = fieldsync_ok(&[&"init", &"--db", &hq.db, &"--name", &"hq"])?;
    assert!(out.stdout.contains("nothing changed"), "{}", out.stdout);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    assert_eq!(hq.fingerprint()?, before);
    Ok(())
}

// track refused tables without a primary key and tables keyed by INTEGER
// PRIMARY KEY, and `track --all` on such a database said "no table was
// tracked" with exit status 0.
#[test]
fn tracking_tables_without_a_usable_key_fails_and_says_why() -> Res {
    let w = World::new()?;
    let s = w.bare_site(
        "hq",
        "CREATE TABLE nokey(a TEXT, b TEXT);
         CREATE TABLE counter(id INTEGER PRIMARY KEY, v TEXT);
         CREATE TABLE good(id TEXT PRIMARY KEY, v TEXT);
         CREATE TABLE nocase(code TEXT COLLATE NOCASE PRIMARY KEY, v TEXT);
         CREATE TABLE pair(a INT, b INT, v TEXT, PRIMARY KEY(a, b));
         INSERT INTO nokey VALUES ('x', 'y'); INSERT INTO counter(v) VALUES ('z');",
    )?;
    let before = s.fingerprint()?;
    let out = fieldsync(&[&"track", &"--db", &s.db, &"nocase"])?;
    assert_error(&out, 1, &["'nocase'", "COLLATE NOCASE"]);
    assert_eq!(s.fingerprint()?, before);
    let out = fieldsync(&[&"track", &"--db", &s.db, &"--local-key", &"pair", &"pair"])?;
    assert_error(&out, 1, &["'pair'", "composite key", "without --local-key"]);
    assert_eq!(s.fingerprint()?, before);
    let out = fieldsync(&[&"track", &"--db", &s.db, &"--identity", &"v", &"counter"])?;
    assert_error(&out, 1, &["'v'", "'counter'", "UNIQUE"]);
    assert_eq!(s.fingerprint()?, before);
    // One bad table in a list: nothing is tracked.
    let out = fieldsync(&[&"track", &"--db", &s.db, &"good", &"nocase"])?;
    assert_error(&out, 1, &["'nocase'"]);
    assert_eq!(s.fingerprint()?, before);
    let out = fieldsync(&[&"track", &"--db", &s.db, &"nosuch"])?;
    assert_error(&out, 1, &["'nosuch'", "does not exist"]);
    assert_eq!(s.fingerprint()?, before);

    // --all tracks every table it can, says how rows of tables without a
    // usable key are identified, which it skipped and why, and warns of
    // integer keys the app may number itself.
    let out = fieldsync_ok(&[&"track", &"--db", &s.db, &"--all"])?;
    assert!(out.stdout.contains("tracking good\n"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("tracking nokey (rows identified by their content"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("tracking counter (rows identified by the instance that created them"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("skipped nocase:") && l.contains("COLLATE NOCASE")),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("--local-key pair"), "{}", out.stderr);
    assert_eq!(
        tracked_tables(&s.db)?,
        ["counter", "good", "nokey", "pair"].map(String::from)
    );
    // The JSON form lists them too.
    let report = fieldsync_ok(&[&"track", &"--db", &s.db, &"--all", &"--json"])?.json()?;
    let skipped = report
        .get("skipped")
        .and_then(serde_json::Value::as_array)
        .ok_or("no skipped list")?;
    assert_eq!(skipped.len(), 1, "{report}");

    // Nothing trackable at all: an error that says why and what to do.
    let t = w.bare_site(
        "t",
        "CREATE TABLE only(code TEXT COLLATE NOCASE PRIMARY KEY);",
    )?;
    let out = fieldsync(&[&"track", &"--db", &t.db, &"--all"])?;
    assert_error(&out, 1, &["no table was tracked", "only", "COLLATE NOCASE"]);
    let e = w.bare_site("e", "")?;
    let out = fieldsync(&[&"track", &"--db", &e.db, &"--all"])?;
    assert_error(
        &out,
        1,
        &["no table was tracked", "create the app's tables first"],
    );
    Ok(())
}

#[test]
fn export_without_a_target_fails_with_a_clear_message() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', NULL, NULL);")?;
    let before = hq.fingerprint()?;
    let b = w.path("out.fsb");
    let out = fieldsync(&[&"export", &"--no-encrypt", &"--db", &hq.db, &"-o", &b])?;
    assert_error(&out, 2, &["--to"]);
    assert_eq!(hq.fingerprint()?, before);
    assert!(!b.exists());
    // Both at once is a mistake too.
    let out = fieldsync(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--to",
        &"field-1",
        &"--full",
        &"-o",
        &b,
    ])?;
    assert_error(&out, 2, &["--full"]);
    assert_eq!(hq.fingerprint()?, before);
    assert!(!b.exists());
    Ok(())
}

// Without --to or --full, clap answers first with "the following required
// arguments were not provided: --to <PEER>", which does not mention --full;
// the clearer message in src/main.rs ("say who the bundle is for with --to
// PEER, or use --full for everything") is never reached.
#[test]
fn export_without_a_target_mentions_both_to_and_full() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", PERSON)?;
    let out = fieldsync(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"-o",
        &w.path("out.fsb"),
    ])?;
    assert!(out.code == Some(1) || out.code == Some(2), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("--to") && out.stderr.contains("--full"),
        "the message does not offer both choices: {}",
        out.stderr
    );
    Ok(())
}

#[test]
fn export_to_self_or_an_invalid_peer_name_fails() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", PERSON)?;
    let before = hq.fingerprint()?;
    let b = w.path("out.fsb");
    let out = fieldsync(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--to",
        &"hq",
        &"-o",
        &b,
    ])?;
    assert_error(&out, 1, &["'hq'", "itself"]);
    let out = fieldsync(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--to",
        &"field 1; rm -rf",
        &"-o",
        &b,
    ])?;
    assert_error(&out, 1, &["not allowed"]);
    assert_eq!(hq.fingerprint()?, before);
    assert!(!b.exists());
    Ok(())
}

// ---------------------------------------------------------------------------
// 13. Unknown peer notice
// ---------------------------------------------------------------------------

#[test]
fn export_to_a_never_seen_peer_lists_the_known_peers() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) = w.three(PERSON)?;
    w.exchange(&hq, &f1)?;
    w.exchange(&hq, &f2)?;
    let b = w.path("typo.fsb");
    let out = fieldsync_ok(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--to",
        &"feild-1",
        &"-o",
        &b,
    ])?;
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(lines[0].contains("'feild-1'"), "{}", lines[0]);
    assert!(lines[0].contains("new peer"), "{}", lines[0]);
    assert!(
        lines[0].contains("field-1") && lines[0].contains("field-2"),
        "the notice does not list the known peers: {}",
        lines[0]
    );
    assert!(b.exists());
    // A peer already known gets no notice.
    let b2 = w.path("ok.fsb");
    let out = fieldsync_ok(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--to",
        &"field-1",
        &"-o",
        &b2,
    ])?;
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    Ok(())
}

// ---------------------------------------------------------------------------
// 14. Gaps
// ---------------------------------------------------------------------------

/// hq writes rows 1-3 and exports bundle A to field-1, then rows 4-5 and
/// bundle B; field-1 has imported neither.
fn two_bundles(w: &World) -> Res<(Site, Site, std::path::PathBuf, std::path::PathBuf)> {
    let hq = w.site("hq", PERSON)?;
    let f1 = w.site("field-1", PERSON)?;
    hq.sql(
        "INSERT INTO person VALUES ('p1', 'A', NULL, 1), ('p2', 'B', NULL, 2), ('p3', 'C', NULL, 3);",
    )?;
    let a = w.bundle("A");
    assert_eq!(num(&hq.export_to("field-1", &a)?, "changes")?, 3);
    hq.sql("INSERT INTO person VALUES ('p4', 'D', NULL, 4), ('p5', 'E', NULL, 5);")?;
    let b = w.bundle("B");
    assert_eq!(num(&hq.export_to("field-1", &b)?, "changes")?, 2);
    Ok((hq, f1, a, b))
}

#[test]
fn a_skipped_bundle_shows_as_a_gap_until_it_is_imported() -> Res {
    let w = World::new()?;
    let (hq, f1, a, b) = two_bundles(&w)?;
    let out = fieldsync_ok(&[&"import", &"--db", &f1.db, &b])?;
    assert!(out.stdout.contains("2 applied"), "{}", out.stdout);
    assert!(
        out.stderr.contains("warning:") && out.stderr.contains("have not arrived"),
        "no warning about the missing changes: {}",
        out.stderr
    );
    assert_eq!(f1.count("SELECT count(*) FROM person")?, 2);
    let origin = f1.origin("hq")?.ok_or("no origin hq")?;
    assert_ne!(text(&origin, "gaps")?, "", "{origin}");
    assert_eq!(text(&origin, "gaps")?, "1-3", "{origin}");

    let imported = f1.import(&[&a])?;
    assert_eq!(num(&imported, "applied")?, 3);
    let origin = f1.origin("hq")?.ok_or("no origin hq")?;
    assert_eq!(text(&origin, "gaps")?, "", "{origin}");
    assert_eq!(text(&origin, "have")?, "1-5", "{origin}");
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    Ok(())
}

#[test]
fn a_reported_hole_is_sent_again_automatically() -> Res {
    let w = World::new()?;
    let (hq, f1, _a, b) = two_bundles(&w)?;
    f1.import(&[&b])?;
    // field-1 answers; its bundle tells hq what it has (4-5, not 1-3).
    w.send(&f1, &hq)?;
    let (again, imported) = w.send(&hq, &f1)?;
    assert_eq!(num(&again, "changes")?, 3, "{again}");
    assert_eq!(num(&imported, "applied")?, 3, "{imported}");
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    let origin = f1.origin("hq")?.ok_or("no origin hq")?;
    assert_eq!(text(&origin, "gaps")?, "", "{origin}");
    Ok(())
}

// ---------------------------------------------------------------------------
// 15. Compaction
// ---------------------------------------------------------------------------

#[test]
fn compaction_folds_100k_updates_into_a_small_log() -> Res {
    const ROWS: usize = 100;
    const ROUNDS: usize = 1000; // × ROWS = 100,000 row updates
    const CELLS: u64 = 2;
    let w = World::new()?;
    let hq = w.site(
        "hq",
        "CREATE TABLE gauge(id TEXT PRIMARY KEY, a INTEGER, b TEXT);",
    )?;
    let f1 = w.site(
        "field-1",
        "CREATE TABLE gauge(id TEXT PRIMARY KEY, a INTEGER, b TEXT);",
    )?;
    hq.sql(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) \
         INSERT INTO gauge SELECT 'g' || i, 0, '' FROM n;"
    ))?;
    let mut script = String::from("BEGIN;\n");
    for round in 0..ROUNDS {
        if round % 3 == 2 {
            script.push_str(&format!("UPDATE gauge SET b = 'r{round}';\n"));
        } else {
            script.push_str("UPDATE gauge SET a = a + 1;\n");
        }
    }
    script.push_str("COMMIT;\n");
    hq.sql(&script)?;
    assert_eq!(
        hq.count("SELECT count(*) FROM fieldsync_pending")?,
        (ROWS + ROWS * ROUNDS) as u64
    );

    let report = fieldsync_ok(&[&"compact", &"--db", &hq.db, &"--json"])?.json()?;
    assert_eq!(
        num(&report, "captured")?,
        (ROWS + ROWS * ROUNDS) as u64,
        "{report}"
    );
    let log = hq.count("SELECT count(*) FROM fieldsync_log")?;
    assert!(
        log <= ROWS as u64 * (CELLS + 1),
        "the change log holds {log} entries for {ROWS} rows"
    );
    assert_eq!(num(&report, "log_entries")?, log);
    assert_eq!(hq.count("SELECT count(*) FROM fieldsync_pending")?, 0);

    // The folded log still carries the final values.
    let (exported, _) = w.send(&hq, &f1)?;
    assert_eq!(num(&exported, "changes")?, ROWS as u64);
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    assert_eq!(
        query_one(&f1.db, "SELECT min(a) || ' ' || max(a) FROM gauge")?,
        "667 667"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 16. and 17. The app keeps working
// ---------------------------------------------------------------------------

const FK_SCHEMA: &str = "
PRAGMA foreign_keys = ON;
CREATE TABLE household(id TEXT PRIMARY KEY, village TEXT NOT NULL);
CREATE TABLE member(
  id TEXT PRIMARY KEY,
  household TEXT NOT NULL REFERENCES household(id) ON DELETE CASCADE,
  name TEXT NOT NULL);";

#[test]
fn foreign_keys_keep_working_and_parent_and_child_arrive_together() -> Res {
    let w = World::new()?;
    let hq = w.bare_site("hq", FK_SCHEMA)?;
    let f1 = w.bare_site("field-1", FK_SCHEMA)?;
    // Child table first, so a bundle lists children before their parents.
    for s in [&hq, &f1] {
        fieldsync_ok(&[&"track", &"--db", &s.db, &"member", &"household"])?;
    }
    hq.sql(
        "PRAGMA foreign_keys = ON;
         INSERT INTO household VALUES ('h1', 'North'), ('h2', 'South');
         INSERT INTO member VALUES ('m1', 'h1', 'Amal'), ('m2', 'h1', 'Bo'), ('m3', 'h2', 'Cy');",
    )?;
    // The app's constraints still hold with the triggers installed.
    let refused = sqlite3_raw(
        &hq.db,
        "PRAGMA foreign_keys = ON; INSERT INTO member VALUES ('m9', 'nowhere', 'X');",
    )?;
    assert!(
        !refused.success() && refused.stderr.contains("FOREIGN KEY"),
        "{refused:?}"
    );

    let (_, imported) = w.send(&hq, &f1)?;
    assert_eq!(num(&imported, "applied")?, 5, "{imported}");
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    assert_eq!(f1.sql("PRAGMA foreign_key_check;")?, "");

    // field-1's app goes on writing with foreign keys on.
    f1.sql(
        "PRAGMA foreign_keys = ON;
         INSERT INTO member VALUES ('m4', 'h2', 'Dee');
         UPDATE household SET village = 'South-East' WHERE id = 'h2';",
    )?;
    w.send(&f1, &hq)?;
    assert_eq!(hq.snapshot()?, f1.snapshot()?);

    // A cascading delete at hq removes the children everywhere.
    hq.sql("PRAGMA foreign_keys = ON; DELETE FROM household WHERE id = 'h1';")?;
    assert_eq!(hq.count("SELECT count(*) FROM member")?, 2);
    w.send(&hq, &f1)?;
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    assert_eq!(f1.sql("PRAGMA foreign_key_check;")?, "");
    Ok(())
}

#[test]
fn python_sqlite3_client_writes_are_captured() -> Res {
    let w = World::new()?;
    let (hq, f1, _) =
        w.three("CREATE TABLE reading(id TEXT PRIMARY KEY, value REAL, raw BLOB, note TEXT);")?;
    let script = r#"
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
con.execute("INSERT INTO reading VALUES (?, ?, ?, ?)", ("r1", 0.1, b"", "Zoë"))
con.execute("INSERT INTO reading VALUES (?, ?, ?, ?)", ("r2", 2.5, None, None))
con.execute("INSERT INTO reading VALUES (?, ?, ?, ?)", ("r3", -1.0, b"\x00\x01", "gone"))
con.commit()
con.execute("UPDATE reading SET note = ? WHERE id = ?", ("checked", "r2"))
con.execute("DELETE FROM reading WHERE id = ?", ("r3",))
con.commit()
con.close()
"#;
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("python3 not found: skipping the Python client test");
        return Ok(());
    }
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&hq.db)
        .output()?;
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (exported, _) = w.send(&hq, &f1)?;
    assert_eq!(num(&exported, "changes")?, 3, "{exported}");
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    assert_eq!(
        f1.rows("reading")?,
        vec![
            vec![lit("r1"), "0.1".into(), "X''".into(), lit("Zoë")],
            vec![lit("r2"), "2.5".into(), "NULL".into(), lit("checked")],
        ]
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Beyond the list: more shapes of app, and the bugs they expose
// ---------------------------------------------------------------------------

// When INSERT OR REPLACE removes a *different* row that conflicts on a UNIQUE
// column, SQLite fires no DELETE trigger (recursive triggers are off), so the
// removal is never captured. The receiver still has the old row, and every
// later bundle carrying the new row fails there with a UNIQUE violation, so
// that instance can import nothing from the sender any more.
#[test]
fn insert_or_replace_that_removes_a_conflicting_row_is_replicated() -> Res {
    let schema = "CREATE TABLE person(id TEXT PRIMARY KEY, email TEXT UNIQUE, name TEXT);";
    let w = World::new()?;
    let (hq, f1, _) = w.three(schema)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'a@example.org', 'Amal');")?;
    w.send(&hq, &f1)?;
    hq.sql("INSERT OR REPLACE INTO person VALUES ('p2', 'a@example.org', 'Amal (new record)');")?;
    assert_eq!(hq.count("SELECT count(*) FROM person")?, 1);
    let b = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &b)?;
    let out = fieldsync(&[&"import", &"--db", &f1.db, &b])?;
    assert!(
        out.success(),
        "field-1 cannot import hq's bundle: {}",
        out.stderr
    );
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    Ok(())
}

// A rowid table with a composite key lets the key columns hold NULL. Such a
// row is captured but dropped when the change is stamped (`null_keys` is
// counted and never reported). spec/merge.md says these rows are not
// replicated, but nothing tells the operator: the row silently never reaches
// any other instance. Refusing such tables at `track` (unless the key columns
// are NOT NULL), or a warning at export, would pass this.
#[test]
fn row_with_null_in_a_key_column_is_reported_not_silently_dropped() -> Res {
    let w = World::new()?;
    let schema =
        "CREATE TABLE visit(household TEXT, day TEXT, note TEXT, PRIMARY KEY(household, day));";
    let hq = w.bare_site("hq", schema)?;
    let f1 = w.site("field-1", schema)?;
    let track = fieldsync_ok(&[&"track", &"--db", &hq.db, &"--all"])?;
    if tracked_tables(&hq.db)?.is_empty() {
        // Refused at track time, with a reason: acceptable.
        assert!(track.stdout.contains("skipped visit"), "{}", track.stdout);
        return Ok(());
    }
    hq.sql("INSERT INTO visit VALUES ('h1', NULL, 'day unknown'), ('h1', '2024-05-01', 'ok');")?;
    let b = w.bundle("hq-to-field-1");
    let out = fieldsync_ok(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--to",
        &"field-1",
        &"-o",
        &b,
    ])?;
    f1.import(&[&b])?;
    let arrived = f1.count("SELECT count(*) FROM visit")? == 2;
    let warned = out.stderr.to_lowercase().contains("null");
    assert!(
        arrived || warned,
        "the row with a NULL key neither arrived nor was reported; export said:\n{}{}",
        out.stdout,
        out.stderr
    );
    Ok(())
}

// An I/O error is printed twice in the one error line, e.g.
// "cannot export to nodir/x.fsb: No such file or directory (os error 2): No
// such file or directory (os error 2)": `Error::Io` both displays and
// exposes as source the same io::Error, and the CLI prints the whole chain.
#[test]
fn io_error_messages_are_not_repeated() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", PERSON)?;
    let out = fieldsync(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--to",
        &"field-1",
        &"-o",
        &w.path("no-such-dir/x.fsb"),
    ])?;
    assert_error(&out, 1, &["no-such-dir", "does not exist"]);
    assert!(
        out.stderr.matches("os error").count() <= 1,
        "the cause is repeated: {}",
        out.stderr
    );
    let dir = w.path("a-directory");
    std::fs::create_dir(&dir)?;
    let out = fieldsync(&[&"import", &"--db", &hq.db, &dir])?;
    assert_error(&out, 1, &["a-directory"]);
    assert_eq!(
        out.stderr.matches("os error").count(),
        1,
        "the cause is repeated: {}",
        out.stderr
    );
    Ok(())
}

// Importing bundle B without A warns "changes 1-3 from 'hq' have not arrived
// ...; the next export from 'hq' to this instance will include them". It
// does not: hq learns of the hole only from a bundle field-1 sends back
// (README: "re-sent automatically once a later bundle reveals it"), so an
// export hq makes before such a reply carries nothing. An officer who does
// what the warning says waits for data that never comes. Fixing either the
// wording (say to send a bundle to 'hq' first) or the export passes this.
#[test]
fn gap_warning_does_not_promise_what_the_next_export_does_not_do() -> Res {
    let w = World::new()?;
    let (hq, f1, _a, b) = two_bundles(&w)?;
    let out = fieldsync_ok(&[&"import", &"--db", &f1.db, &b])?;
    assert!(out.stderr.contains("have not arrived"), "{}", out.stderr);
    let promised = out
        .stderr
        .contains("the next export from 'hq' to this instance will include them");
    let (next, _) = w.send(&hq, &f1)?;
    if promised {
        assert_eq!(
            num(&next, "changes")?,
            3,
            "the warning promised that hq's next export would include the missing \
             changes, but it did not: {next}"
        );
        assert_eq!(f1.snapshot()?, hq.snapshot()?);
    }
    Ok(())
}

#[test]
fn wide_table_with_more_than_64_columns_replicates_every_column() -> Res {
    let cols: Vec<String> = (1..=70).map(|i| format!("c{i} INTEGER")).collect();
    let schema = format!(
        "CREATE TABLE wide(id TEXT PRIMARY KEY, {});",
        cols.join(", ")
    );
    let w = World::new()?;
    let (hq, f1, _) = w.three(&schema)?;
    hq.sql("INSERT INTO wide(id, c1, c70) VALUES ('w1', 1, 70), ('w2', NULL, NULL);")?;
    w.send(&hq, &f1)?;
    // Columns on both sides of each 64-bit mask word boundary.
    hq.sql("UPDATE wide SET c62 = 62, c63 = 63, c64 = 64, c65 = 65 WHERE id = 'w1';")?;
    f1.sql("UPDATE wide SET c2 = 2, c66 = 66, c70 = 700 WHERE id = 'w2';")?;
    w.exchange(&hq, &f1)?;
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    assert_eq!(
        query_one(
            &f1.db,
            "SELECT c62 || c63 || c64 || c65 || c70 FROM wide WHERE id = 'w1'"
        )?,
        "6263646570"
    );
    assert_eq!(
        query_one(
            &hq.db,
            "SELECT c2 || ' ' || c66 || ' ' || c70 FROM wide WHERE id = 'w2'"
        )?,
        "2 66 700"
    );
    Ok(())
}

#[test]
fn odd_table_and_column_names_replicate() -> Res {
    let schema = r#"
CREATE TABLE "Field ""Notes""" ("key col" TEXT, "order" INTEGER, "it's" TEXT, "select" BLOB,
  PRIMARY KEY("key col", "order"));
CREATE TABLE "group"(id TEXT PRIMARY KEY, "from" TEXT);"#;
    let w = World::new()?;
    let (hq, f1, _) = w.three(schema)?;
    assert_eq!(tracked_tables(&hq.db)?.len(), 2);
    hq.sql(
        r#"INSERT INTO "Field ""Notes""" VALUES ('k 1', 1, 'x''y', X'00'), ('k"2', 2, NULL, NULL);
           INSERT INTO "group" VALUES ('g1', 'hq');"#,
    )?;
    w.send(&hq, &f1)?;
    hq.sql(
        r#"UPDATE "Field ""Notes""" SET "it's" = 'z' WHERE "key col" = 'k 1';
           UPDATE "Field ""Notes""" SET "order" = 3 WHERE "key col" = 'k"2';
           DELETE FROM "group";"#,
    )?;
    w.send(&hq, &f1)?;
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    assert_eq!(f1.count(r#"SELECT count(*) FROM "group""#)?, 0);
    Ok(())
}

#[test]
fn columns_in_a_different_order_at_the_receiver_are_matched_by_name() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", PERSON)?;
    let f1 = w.site(
        "field-1",
        "CREATE TABLE person(age INTEGER, status TEXT, id TEXT PRIMARY KEY, name TEXT);",
    )?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing', 30);")?;
    w.send(&hq, &f1)?;
    f1.sql("UPDATE person SET status = 'found' WHERE id = 'p1';")?;
    w.send(&f1, &hq)?;
    assert_eq!(
        query_one(&f1.db, "SELECT id || name || status || age FROM person")?,
        "p1Amalfound30"
    );
    assert_eq!(
        query_one(&hq.db, "SELECT id || name || status || age FROM person")?,
        "p1Amalfound30"
    );
    Ok(())
}

#[test]
fn app_triggers_do_not_run_again_on_import() -> Res {
    let schema = "
CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT);
CREATE TABLE audit(id TEXT PRIMARY KEY, what TEXT);
CREATE TRIGGER person_audit AFTER INSERT ON person BEGIN
  INSERT INTO audit VALUES (lower(hex(randomblob(8))), 'added ' || NEW.id);
END;";
    let w = World::new()?;
    let (hq, f1, _) = w.three(schema)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal'), ('p2', 'Bo');")?;
    w.send(&hq, &f1)?;
    // The audit rows hq's trigger wrote arrive; field-1's trigger adds none.
    assert_eq!(f1.count("SELECT count(*) FROM audit")?, 2);
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    // The trigger still works for field-1's own writes.
    f1.sql("INSERT INTO person VALUES ('p3', 'Cy');")?;
    assert_eq!(f1.count("SELECT count(*) FROM audit")?, 3);
    w.send(&f1, &hq)?;
    assert_eq!(hq.snapshot()?, f1.snapshot()?);
    Ok(())
}

#[test]
fn rows_present_before_tracking_are_exported() -> Res {
    let schema = "
CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT);
CREATE TABLE code(n INTEGER PRIMARY KEY, label TEXT) WITHOUT ROWID;";
    let w = World::new()?;
    let hq = w.bare_site("hq", schema)?;
    hq.sql(
        "INSERT INTO person VALUES ('p1', 'Amal'), ('p2', 'Bo');
         INSERT INTO code VALUES (1, 'one'), (-5, 'minus five');",
    )?;
    let out = fieldsync_ok(&[&"track", &"--db", &hq.db, &"--all"])?;
    assert!(out.stdout.contains("4 existing rows"), "{}", out.stdout);
    let f1 = w.site("field-1", schema)?;
    let (exported, _) = w.send(&hq, &f1)?;
    assert_eq!(num(&exported, "changes")?, 4);
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    // Tracking again records nothing new and says so.
    let out = fieldsync_ok(&[&"track", &"--db", &hq.db, &"--all"])?;
    assert!(
        out.stdout.contains("already tracked: person"),
        "{}",
        out.stdout
    );
    assert_eq!(hq.snapshot()?, f1.snapshot()?);
    assert_eq!(hq.count("SELECT count(*) FROM fieldsync_pending")?, 0);
    Ok(())
}

#[test]
fn key_only_table_replicates_inserts_and_deletes() -> Res {
    let w = World::new()?;
    let (hq, f1, _) =
        w.three("CREATE TABLE tag(person TEXT, tag TEXT, PRIMARY KEY(person, tag));")?;
    hq.sql("INSERT INTO tag VALUES ('p1', 'urgent'), ('p1', 'child'), ('p2', 'urgent');")?;
    w.send(&hq, &f1)?;
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    hq.sql(
        "DELETE FROM tag WHERE tag = 'urgent'; UPDATE tag SET tag = 'minor' WHERE tag = 'child';",
    )?;
    w.send(&hq, &f1)?;
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    f1.sql("INSERT INTO tag VALUES ('p1', 'urgent');")?;
    w.send(&f1, &hq)?;
    assert_eq!(hq.snapshot()?, f1.snapshot()?);
    assert_eq!(hq.count("SELECT count(*) FROM tag")?, 2);
    Ok(())
}

#[test]
fn a_new_column_is_followed_without_track_and_waits_at_an_old_instance_until_it_upgrades() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', NULL, NULL);")?;
    w.send(&hq, &f1)?;
    // The app is upgraded at hq first: the next export follows the column.
    hq.sql("ALTER TABLE person ADD COLUMN village TEXT;")?;
    hq.sql("INSERT INTO person VALUES ('p2', 'Bo', NULL, NULL, 'South');")?;
    let b = w.bundle("hq-to-field-1");
    let out = fieldsync_ok(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--to",
        &"field-1",
        &"-o",
        &b,
    ])?;
    assert!(
        out.stderr.contains("new column 'village'"),
        "{}",
        out.stderr
    );
    // field-1 (set up by hand: it holds schema changes) is not upgraded
    // yet: it applies what it has and keeps the village waiting.
    let imported = f1.import(&[&b])?;
    assert_eq!(num(&imported, "waiting")?, 1, "{imported}");
    assert_eq!(f1.rows("person")?.len(), 2);
    // Its upgrade comes: the next import applies the value that waited.
    f1.sql("ALTER TABLE person ADD COLUMN village TEXT;")?;
    w.send(&hq, &f1)?;
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    fieldsync_ok(&[&"check", &"--db", &f1.db])?;
    Ok(())
}

// An app upgrade that adds a column and fills it (ALTER TABLE, then UPDATE)
// before `fieldsync track` follows the column: the UPDATE ran under the old
// triggers, which do not look at the new column, and `track` does not record
// the values the new column already holds. Those values never leave hq.
#[test]
fn values_written_to_a_new_column_before_track_are_replicated() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', NULL, NULL);")?;
    w.send(&hq, &f1)?;
    for s in [&hq, &f1] {
        s.sql("ALTER TABLE person ADD COLUMN village TEXT;")?;
    }
    hq.sql("UPDATE person SET village = 'North' WHERE id = 'p1';")?;
    for s in [&hq, &f1] {
        fieldsync_ok(&[&"track", &"--db", &s.db, &"person"])?;
    }
    let (exported, _) = w.send(&hq, &f1)?;
    assert_eq!(
        f1.rows("person")?,
        hq.rows("person")?,
        "the migrated value did not travel: {exported}"
    );
    Ok(())
}

#[test]
fn a_reinitialised_instance_reusing_a_name_is_reached_by_site_id() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', NULL, NULL), ('p2', 'Bo', NULL, NULL);")?;
    w.exchange(&hq, &f1)?;
    // The laptop is replaced: a new database under the same name.
    std::fs::remove_file(&f1.db)?;
    let f1 = w.site("field-1", PERSON)?;
    w.send(&f1, &hq)?;
    let b = w.path("ambiguous.fsb");
    let out = fieldsync(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--to",
        &"field-1",
        &"-o",
        &b,
    ])?;
    assert_error(&out, 1, &["more than one", "field-1", "site id"]);
    let id = f1.site_id()?;
    let b = w.bundle("hq-to-new-field-1");
    let exported = hq.export_to(&id, &b)?;
    assert_eq!(num(&exported, "changes")?, 2, "{exported}");
    f1.import(&[&b])?;
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    Ok(())
}

/// A small deterministic pseudo-random sequence (no timing, no flakiness).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[test]
fn three_instances_converge_after_interleaved_edits_and_exchanges() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) =
        w.three("CREATE TABLE item(id TEXT PRIMARY KEY, a TEXT, b INTEGER, c BLOB);")?;
    let sites = [&hq, &f1, &f2];
    let mut rng = Lcg(0x5eed);
    for round in 0..8 {
        for (si, s) in sites.iter().enumerate() {
            let mut sql = String::from("BEGIN;\n");
            for op in 0..4 {
                let k = format!("k{}", rng.next(8));
                let v = format!("{}-r{round}-{op}", s.name);
                sql.push_str(&match rng.next(6) {
                    0 => format!(
                        "INSERT OR IGNORE INTO item VALUES ('{k}', '{v}', {round}, X'{si:02x}');\n"
                    ),
                    1 => format!("UPDATE item SET a = '{v}' WHERE id = '{k}';\n"),
                    2 => format!(
                        "UPDATE item SET b = {}, c = NULL WHERE id = '{k}';\n",
                        rng.next(100)
                    ),
                    3 => format!("DELETE FROM item WHERE id = '{k}';\n"),
                    4 => {
                        let to = format!("k{}", rng.next(8));
                        format!(
                            "UPDATE item SET id = '{to}' WHERE id = '{k}' \
                             AND NOT EXISTS (SELECT 1 FROM item WHERE id = '{to}');\n"
                        )
                    }
                    _ => format!("INSERT INTO item VALUES ('{v}', '{v}', NULL, X'');\n"),
                });
            }
            sql.push_str("COMMIT;\n");
            s.sql(&sql)?;
        }
        for _ in 0..2 {
            let from = rng.next(3) as usize;
            let to = (from + 1 + rng.next(2) as usize) % 3;
            w.send(sites[from], sites[to])?;
        }
    }
    for _ in 0..2 {
        w.exchange(&hq, &f1)?;
        w.exchange(&hq, &f2)?;
        w.exchange(&f1, &f2)?;
    }
    let want = hq.snapshot()?;
    assert_eq!(f1.snapshot()?, want);
    assert_eq!(f2.snapshot()?, want);
    // Settled: another round applies nothing anywhere.
    for (from, to) in [
        (&hq, &f1),
        (&f1, &f2),
        (&f2, &hq),
        (&hq, &f2),
        (&f2, &f1),
        (&f1, &hq),
    ] {
        let (exported, imported) = w.send(from, to)?;
        assert_eq!(
            num(&imported, "applied")?,
            0,
            "{} -> {}: {exported}",
            from.name,
            to.name
        );
    }
    Ok(())
}

#[test]
fn human_readable_output_of_every_command() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', NULL, NULL);")?;
    let b = w.bundle("hq-to-field-1");
    let out = fieldsync_ok(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--to",
        &"field-1",
        &"-o",
        &b,
    ])?;
    assert!(out.stdout.contains("1 change ("), "{}", out.stdout);
    let out = fieldsync_ok(&[&"inspect", &b])?;
    assert!(out.stdout.contains("checksum   ok"), "{}", out.stdout);
    assert!(out.stdout.contains("'hq'"), "{}", out.stdout);
    let out = fieldsync_ok(&[&"import", &"--db", &f1.db, &b])?;
    assert!(out.stdout.contains("1 applied"), "{}", out.stdout);
    // --db may come from the environment.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fieldsync"))
        .arg("status")
        .env("FIELDSYNC_DB", &f1.db)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("field-1"), "{stdout}");
    assert!(stdout.contains("hq"), "{stdout}");
    let out = fieldsync_ok(&[&"compact", &"--db", &hq.db])?;
    assert!(out.stdout.contains("change log"), "{}", out.stdout);
    let out = fieldsync_ok(&[&"--help"])?;
    assert!(out.stdout.contains("export"), "{}", out.stdout);
    let out = fieldsync(&[&"frobnicate"])?;
    assert_error(&out, 2, &["frobnicate"]);
    Ok(())
}

#[test]
fn an_edit_made_after_importing_from_a_clock_ahead_instance_still_wins() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    // hq's clock runs 50 minutes ahead, within the clock bound (further
    // ahead, its change would be held "from the future", tests/clock.rs):
    // its captured change carries that time.
    hq.sql(
        "INSERT INTO person VALUES ('p1', 'Amal', 'missing', 30);
         UPDATE fieldsync_pending SET at = julianday('now', '+50 minutes');",
    )?;
    let b = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &b)?;
    let out = fieldsync_ok(&[&"import", &"--db", &f1.db, &b])?;
    assert!(!out.stderr.contains("held"), "{}", out.stderr);
    // field-1 edits the record after seeing hq's version: its edit must win
    // although its wall clock is 50 minutes behind hq's.
    f1.sql("UPDATE person SET status = 'found' WHERE id = 'p1';")?;
    w.send(&f1, &hq)?;
    let want = vec![person("p1", "Amal", "found", "30")];
    assert_eq!(hq.rows("person")?, want);
    assert_eq!(f1.rows("person")?, want);
    Ok(())
}

#[test]
fn a_failed_export_does_not_count_as_sent() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', NULL, NULL);")?;
    // The output path is a directory: the bundle cannot be written.
    let dir = w.path("usb-stick");
    std::fs::create_dir(&dir)?;
    let out = fieldsync(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--to",
        &"field-1",
        &"-o",
        &dir,
    ])?;
    assert_error(&out, 1, &["usb-stick"]);
    let leftovers: Vec<_> = std::fs::read_dir(w.path(""))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // The next export still carries the change.
    let (exported, imported) = w.send(&hq, &f1)?;
    assert_eq!(num(&exported, "changes")?, 1, "{exported}");
    assert_eq!(num(&imported, "applied")?, 1);
    Ok(())
}

/// `export -o PATH` writes beside PATH and renames the file over it once
/// committed. Over a device or a pipe that replaced the device with a plain
/// file (`-o /dev/null` run as root broke the machine's /dev/null).
#[test]
fn exporting_onto_a_pipe_is_refused_and_leaves_the_pipe_alone() -> Res {
    use std::os::unix::fs::FileTypeExt;
    let w = World::new()?;
    let (hq, _, _) = w.three(PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', NULL, NULL);")?;
    let pipe = w.path("pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&pipe)
            .status()?
            .success()
    );
    let before = hq.fingerprint()?;
    let out = fieldsync(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--full",
        &"-o",
        &pipe,
    ])?;
    assert_error(&out, 1, &["is not a regular file", "give a file name"]);
    assert!(std::fs::metadata(&pipe)?.file_type().is_fifo());
    assert_eq!(hq.fingerprint()?, before);
    Ok(())
}

#[test]
fn large_blob_and_text_values_round_trip() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three("CREATE TABLE doc(id TEXT PRIMARY KEY, body TEXT, scan BLOB);")?;
    hq.sql(
        "INSERT INTO doc VALUES ('d1', printf('%.*c', 1000000, 'x') || '✓', randomblob(4000000));
         INSERT INTO doc VALUES ('d2', NULL, zeroblob(3000000));",
    )?;
    w.send(&hq, &f1)?;
    let differing = query_one(
        &hq.db,
        &format!(
            "ATTACH {} AS other; \
             SELECT count(*) FROM doc AS a LEFT JOIN other.doc AS b USING (id) \
             WHERE b.id IS NULL OR a.body IS NOT b.body OR a.scan IS NOT b.scan \
               OR typeof(a.body) <> typeof(b.body) OR typeof(a.scan) <> typeof(b.scan);",
            lit(&f1.db.to_string_lossy())
        ),
    )?;
    assert_eq!(differing, "0");
    assert_eq!(
        query_one(
            &f1.db,
            "SELECT length(body) || ' ' || length(scan) FROM doc WHERE id = 'd1'"
        )?,
        "1000001 4000000"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Waiting for the app's write lock
// ---------------------------------------------------------------------------

/// An import started while the app holds the write lock waits for it (busy
/// timeout) instead of failing, and then applies everything.
#[test]
fn import_waits_for_an_app_holding_the_write_lock() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', NULL, NULL);")?;
    let bundle = w.bundle("locked");
    hq.export_to("field-1", &bundle)?;
    // The "app": a connection holding a write transaction for a while.
    let app = rusqlite::Connection::open(&f1.db)?;
    app.execute_batch("BEGIN IMMEDIATE; INSERT INTO person VALUES ('p2', 'Bilal', NULL, NULL);")?;
    let holder = std::thread::spawn(move || -> rusqlite::Result<()> {
        // Keep the lock while the import below starts and has to wait.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        app.execute_batch("COMMIT")
    });
    let out = fieldsync(&[&"import", &"--db", &f1.db, &bundle])?;
    holder.join().map_err(|_| "lock holder panicked")??;
    assert!(
        out.success(),
        "import failed instead of waiting: {}",
        out.stderr
    );
    assert_eq!(
        f1.count("SELECT count(*) FROM person")?,
        2,
        "both the app's row and the imported one"
    );
    Ok(())
}
