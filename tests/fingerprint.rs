//! `fieldsync fingerprint` (issue 16, item 6) through the real binary: a
//! per-table content hash that is equal on two instances exactly when they
//! hold the same rows, whatever local numbers (autoincrement ids, rowids)
//! and row order each gave them; `--expect` for the phone call; `status`
//! shows it too. Before it, `check` said "ok" on databases that differed.

use std::collections::BTreeMap;

use crate::tables::{EDEN, EDEN_ROWS, PHP, hq_and_laptops, sync};
use crate::util::*;

/// `fingerprint --json`: the overall short form and each table's.
fn fingerprints(site: &Site) -> Res<(String, BTreeMap<String, String>)> {
    let v = fieldsync_ok(&[&"fingerprint", &"--db", &site.db, &"--json"])?.json()?;
    let mut tables = BTreeMap::new();
    for t in v["tables"].as_array().ok_or("no tables")? {
        tables.insert(
            text(t, "table")?.to_owned(),
            text(t, "fingerprint")?.to_owned(),
        );
        assert_eq!(num(t, "unnumbered")?, 0, "{}: {t}", site.name);
        assert_eq!(text(t, "digest")?.len(), 64, "{t}");
    }
    Ok((text(&v, "fingerprint")?.to_owned(), tables))
}

/// The tables whose fingerprints differ between two sites.
fn differing(a: &Site, b: &Site) -> Res<Vec<String>> {
    let (_, fa) = fingerprints(a)?;
    let (_, fb) = fingerprints(b)?;
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    Ok(fa
        .iter()
        .filter(|(t, f)| fb.get(*t) != Some(*f))
        .map(|(t, _)| t.clone())
        .collect())
}

#[test]
fn fingerprints_agree_on_eden_instances_whose_local_ids_differ_and_name_the_table_that_does_not()
-> Res {
    let w = World::new()?;
    let (hq, f1, f2) = hq_and_laptops(&w, EDEN, EDEN_ROWS, &["--identity", "uuid"])?;
    assert_eq!(differing(&hq, &f1)?, Vec::<String>::new());
    // Both laptops number their new village 3 and their new person 1.
    for (f, v, p) in [(&f1, "u-v1", "u-p1"), (&f2, "u-v2", "u-p2")] {
        f.sql(&format!(
            "PRAGMA foreign_keys = ON;
             INSERT INTO gis_location(uuid, name, level, parent) VALUES ('{v}', 'Village {v}', 'L2', 2);
             INSERT INTO pr_person(uuid, first_name, location_id, organisation_id) VALUES ('{p}', 'Name {p}', 3, 1);"
        ))?;
    }
    assert_eq!(differing(&hq, &f1)?, ["gis_location", "pr_person"]);
    sync(&w, &hq, &f1, &f2)?;
    // The same rows under other local ids: equal fingerprints.
    assert_eq!(
        f1.sql("SELECT id FROM gis_location WHERE uuid = 'u-v1';")?,
        "3\n"
    );
    assert_eq!(
        f2.sql("SELECT id FROM gis_location WHERE uuid = 'u-v1';")?,
        "4\n"
    );
    let (all, _) = fingerprints(&hq)?;
    for s in [&f1, &f2] {
        assert_eq!(differing(&hq, s)?, Vec::<String>::new(), "{}", s.name);
        assert_eq!(fingerprints(s)?.0, all);
    }
    // One value edited behind fieldsync's back (triggers dropped, as a
    // restore from an old copy would): `check` cannot see it, the
    // fingerprint names the table.
    let triggers = f2.sql(
        "SELECT sql || ';' FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'pr_person';",
    )?;
    for name in f2
        .sql("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'pr_person';")?
        .lines()
    {
        f2.sql(&format!("DROP TRIGGER \"{name}\";"))?;
    }
    f2.sql("UPDATE pr_person SET first_name = 'Renamed' WHERE uuid = 'u-p1';")?;
    f2.sql(&triggers)?;
    fieldsync_ok(&[&"check", &"--db", &f2.db])?;
    assert_eq!(differing(&hq, &f2)?, ["pr_person"]);
    // A reference re-pointed is a difference too, though no id changes
    // meaning the same thing here: pr_person.location_id 3 is u-v1 on f1
    // and u-v2 on f2.
    let (f1_all, _) = fingerprints(&f1)?;
    let (f2_all, _) = fingerprints(&f2)?;
    assert_ne!(f1_all, f2_all);

    // --expect, as read over the phone: case and dashes do not matter.
    let typed = all.replace('-', "").to_lowercase();
    let ok = fieldsync_ok(&[&"fingerprint", &"--db", &f1.db, &"--expect", &typed])?;
    assert!(ok.stdout.contains("matches"), "{}", ok.stdout);
    let out = fieldsync(&[&"fingerprint", &"--db", &f2.db, &"--expect", &all])?;
    assert_error(&out, 1, &["differ", &f2_all, "fieldsync fingerprint"]);
    // One table's, when one table is asked for.
    let (_, tables) = fingerprints(&hq)?;
    fieldsync_ok(&[
        &"fingerprint",
        &"--db",
        &f2.db,
        &"org_organisation",
        &"--expect",
        &tables["org_organisation"],
    ])?;
    Ok(())
}

#[test]
fn fingerprints_do_not_depend_on_row_order_rowids_or_autoincrement_ids_on_a_sahana_php_schema()
-> Res {
    let w = World::new()?;
    let rows = "INSERT INTO modules VALUES ('gis'), ('or');
        INSERT INTO field_options VALUES ('opt_status', 'act', 'Active'), ('opt_status', 'cls', 'Closed');
        INSERT INTO incident(name) VALUES ('Flood');
        INSERT INTO gis_features VALUES ('f-1', 'point', 1);";
    let (hq, f1, f2) = hq_and_laptops(&w, PHP, rows, &[])?;
    // Each laptop adds an option row, an incident and a feature pointing
    // at it: after the exchange each instance holds them in another order,
    // under other rowids and incident ids.
    for (f, code) in [(&f1, "f1"), (&f2, "f2")] {
        f.sql(&format!(
            "INSERT INTO field_options VALUES ('opt_status', '{code}', 'From {code}');
             INSERT INTO incident(name, parent_id) VALUES ('Landslide {code}', 1);
             INSERT INTO gis_features VALUES ('f-{code}', 'area', last_insert_rowid());"
        ))?;
    }
    sync(&w, &hq, &f1, &f2)?;
    let order = |s: &Site| s.sql("SELECT option_code FROM field_options ORDER BY rowid;");
    assert_ne!(order(&f1)?, order(&f2)?);
    let ids = |s: &Site| s.sql("SELECT incident_id FROM incident WHERE name = 'Landslide f1';");
    assert_ne!(ids(&f1)?, ids(&f2)?);
    let (all, _) = fingerprints(&hq)?;
    for s in [&f1, &f2] {
        assert_eq!(differing(&hq, s)?, Vec::<String>::new(), "{}", s.name);
        assert_eq!(fingerprints(s)?.0, all);
    }
    // A duplicated option row is a difference.
    hq.sql("INSERT INTO field_options VALUES ('opt_status', 'act', 'Active');")?;
    fieldsync_ok(&[&"compact", &"--db", &hq.db])?;
    assert_eq!(differing(&hq, &f1)?, ["field_options"]);
    Ok(())
}

#[test]
fn status_shows_the_fingerprints_and_rows_not_numbered_yet_are_named() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = hq_and_laptops(&w, EDEN, EDEN_ROWS, &[])?;
    let (all, tables) = fingerprints(&hq)?;
    let status = hq.status()?;
    assert_eq!(text(&status["fingerprints"], "fingerprint")?, all);
    let text_status = fieldsync_ok(&[&"status", &"--db", &hq.db])?.stdout;
    assert!(
        text_status.contains(&format!("fingerprint {all}")),
        "{text_status}"
    );
    assert!(
        text_status.contains(&tables["gis_location"]),
        "{text_status}"
    );
    assert_eq!(fingerprints(&f1)?.0, all);

    // A row the app just wrote (identity by origin: numbered when the log
    // takes it in) is hashed by its local number, and the warning says so.
    f1.sql("INSERT INTO org_organisation(uuid, name) VALUES ('u-new', 'New');")?;
    let out = fieldsync_ok(&[&"fingerprint", &"--db", &f1.db])?;
    assert!(out.stderr.contains("1 row recorded here"), "{}", out.stderr);
    assert!(out.stderr.contains("fieldsync compact"), "{}", out.stderr);
    fieldsync_ok(&[&"compact", &"--db", &f1.db])?;
    let out = fieldsync_ok(&[&"fingerprint", &"--db", &f1.db])?;
    assert_eq!(out.stderr, "");

    // A table that is not tracked: one line saying where to look.
    let out = fieldsync(&[&"fingerprint", &"--db", &hq.db, &"no_such_table"])?;
    assert_error(
        &out,
        1,
        &["no_such_table", "not tracked", "fieldsync status"],
    );
    Ok(())
}

// Found by the model test: cells were hashed with the key encoding, which
// writes an integral real as the integer, so `UPDATE item SET b = 0` on a
// 0.0 (a column without affinity; `typeof()` changes) left the fingerprint
// as it was while the row had changed.
#[test]
fn a_real_zero_and_an_integer_zero_are_different_values_to_the_fingerprint() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", "CREATE TABLE item(id TEXT PRIMARY KEY, b);")?;
    hq.sql("INSERT INTO item VALUES ('k0', 0.0);")?;
    let (real, _) = fingerprints(&hq)?;
    hq.sql("UPDATE item SET b = 0;")?;
    assert_eq!(hq.sql("SELECT typeof(b) FROM item;")?, "integer\n");
    fieldsync_ok(&[&"compact", &"--db", &hq.db])?;
    assert_ne!(fingerprints(&hq)?.0, real);
    // -0.0 and 0.0 compare equal in SQLite: the same value.
    hq.sql("UPDATE item SET b = 0.0;")?;
    assert_eq!(fingerprints(&hq)?.0, real);
    hq.sql("UPDATE item SET b = -0.0;")?;
    assert_eq!(fingerprints(&hq)?.0, real);
    Ok(())
}
