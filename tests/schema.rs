//! App upgrades while the sync goes on (spec/schema.md): tracking follows
//! the app's own `ALTER TABLE` and table rebuilds, additive schema changes
//! travel in bundles (run as they come at a laptop set up with `init
//! --from`, held elsewhere until `fieldsync schema --apply`), and instances
//! on different versions keep exchanging, the values for what the receiver
//! lacks waiting until it has it. One test per worked example of the spec,
//! through the real CLI and the system `sqlite3` shell, on apps shaped like
//! Sahana PHP (text uuid keys, a keyless option table, autoincrement ids, a
//! reference to a table never created) and Sahana Eden (integer ids with a
//! uuid, integer references, foreign keys on). Crafted bundles are written
//! with the library's public reader and writer.

use std::fs::File;
use std::path::Path;

use fieldsync::bundle::reader::read_header_only;
use fieldsync::bundle::{BundleReader, BundleWriter, Header};
use serde_json::Value as Json;

use crate::tables::{EDEN, EDEN_ROWS, PHP};
use crate::util::*;

/// Sahana PHP's shape ([`PHP`]) plus its people, keyed by text uuids.
const PEOPLE: &str = "
CREATE TABLE person_uuid(p_uuid VARCHAR(60) PRIMARY KEY, full_name VARCHAR(100), family_name VARCHAR(100));
INSERT INTO person_uuid VALUES ('lk-1', 'Amal Perera', 'Perera'), ('lk-2', 'Bilal Khan', 'Khan');
INSERT INTO modules VALUES ('mpr'), ('admin');
INSERT INTO config(module_id, confkey, value) VALUES ('mpr', 'mpr_pages', '10');
INSERT INTO field_options VALUES ('opt_status', 'mis', 'Missing'), ('opt_status', 'ali', 'Alive');
INSERT INTO gis_features VALUES ('f-1', 'point', NULL);";

/// HQ set up by hand (so it holds received schema changes): the Sahana
/// PHP app with people, every table but the sessions tracked.
fn php_hq(w: &World) -> Res<Site> {
    let hq = w.bare_site("hq", &format!("{PHP}{PEOPLE}"))?;
    fieldsync_ok(&[
        &"track",
        &"--db",
        &hq.db,
        &"--all",
        &"--except",
        &"sessions",
    ])?;
    Ok(hq)
}

/// HQ set up by hand with Sahana Eden's tables (rows found by `uuid`) and
/// one person.
fn eden_hq(w: &World) -> Res<Site> {
    let hq = w.bare_site("hq", EDEN)?;
    hq.sql(&format!(
        "{EDEN_ROWS}
         INSERT INTO pr_person(uuid, first_name, location_id, organisation_id)
           VALUES ('u-p1', 'Amal', 2, 1);"
    ))?;
    fieldsync_ok(&[&"track", &"--db", &hq.db, &"--all", &"--identity", &"uuid"])?;
    Ok(hq)
}

/// A laptop set up with `init --from` HQ's `export --full --for NAME`.
fn laptop(w: &World, hq: &Site, name: &str) -> Res<Site> {
    let full = w.bundle(&format!("hq-full-for-{name}"));
    fieldsync_ok(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--full",
        &"--for",
        &name,
        &"-o",
        &full,
    ])?;
    w.site_from(name, &full)
}

/// `fieldsync check` is clean.
#[track_caller]
fn check_ok(site: &Site) -> Res {
    let out = fieldsync_ok(&[&"check", &"--db", &site.db])?;
    assert!(
        out.stdout.starts_with("ok"),
        "{}: {}",
        site.name,
        out.stdout
    );
    Ok(())
}

/// `fieldsync schema --json`.
fn schema_report(site: &Site) -> Res<Json> {
    fieldsync_ok(&[&"schema", &"--db", &site.db, &"--json"])?.json()
}

/// The schema changes received and not run, from `fieldsync schema --json`.
fn held_changes(site: &Site) -> Res<Vec<Json>> {
    Ok(schema_report(site)?["held"]
        .as_array()
        .cloned()
        .ok_or("schema --json has no held list")?)
}

/// The app's own objects (fieldsync's and SQLite's left out), sorted.
fn app_objects(site: &Site) -> Res<String> {
    site.sql(
        "SELECT type || ' ' || name || ': ' || ifnull(sql, '') FROM sqlite_schema \
         WHERE name NOT LIKE 'fieldsync%' AND name NOT LIKE 'sqlite%' ORDER BY type, name;",
    )
}

/// A table's columns as `PRAGMA table_info` describes them (name, type,
/// NOT NULL, default, key position).
fn columns_of(site: &Site, table: &str) -> Res<String> {
    site.sql(&format!(
        "SELECT name, type, \"notnull\", quote(dflt_value), pk FROM pragma_table_info('{table}') ORDER BY name;"
    ))
}

/// The header of a bundle file.
fn header_of(file: &Path) -> Res<Header> {
    Ok(read_header_only(&mut File::open(file)?)?)
}

/// The tables of a bundle whose definition carries schema statements.
fn tables_with_statements(file: &Path) -> Res<Vec<String>> {
    Ok(header_of(file)?
        .tables
        .iter()
        .filter(|t| !t.schema.is_empty())
        .map(|t| t.name.clone())
        .collect())
}

/// Copy a bundle, giving `table` these schema statements (the rows as
/// they were), written with the library's reader and writer.
fn with_statements(
    from: &Path,
    to: &Path,
    table: &str,
    statements: &[&str],
    key: &fieldsync::bundle::SigningKey,
) -> Res {
    let mut reader = BundleReader::open(File::open(from)?)?;
    let mut header = reader.header().clone();
    let def = (header.tables.iter_mut())
        .find(|t| t.name == table)
        .ok_or_else(|| format!("the bundle has no table {table}"))?;
    def.schema = statements.iter().map(|s| s.to_string()).collect();
    let mut writer = BundleWriter::new(File::create(to)?, &header, key)?;
    while let Some(r) = reader.next_row()? {
        writer.write_row(r.table, &r.key, r.cl, &r.versions, &r.values)?;
    }
    writer.finish()?;
    Ok(())
}

/// Every line of a command's warnings (JSON `warnings`) that mentions
/// `needle`.
fn warnings_about(report: &Json, needle: &str) -> Vec<String> {
    report["warnings"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter_map(Json::as_str)
                .filter(|w| w.contains(needle))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The report of the one file an `import --json` read (its top level
/// sums the files' counts).
fn file_report(import: &Json) -> Res<Json> {
    let files = import["files"]
        .as_array()
        .ok_or("import --json has no files")?;
    match files.as_slice() {
        [one] => Ok(one["report"].clone()),
        _ => Err(format!("expected one file in {import}").into()),
    }
}

/// The app's tables and indexes by name, and each table's columns: what
/// two instances must agree on (SQLite keeps the text of an `ALTER TABLE`
/// as written, so the statements themselves may differ in quoting).
fn app_shape(site: &Site) -> Res<String> {
    let mut out = site.sql(
        "SELECT type || ' ' || name || ' on ' || tbl_name FROM sqlite_schema \
         WHERE name NOT LIKE 'fieldsync%' AND name NOT LIKE 'sqlite%' ORDER BY type, name;",
    )?;
    for t in site
        .sql(
            "SELECT name FROM sqlite_schema WHERE type = 'table' \
         AND name NOT LIKE 'fieldsync%' AND name NOT LIKE 'sqlite%' ORDER BY name;",
        )?
        .lines()
    {
        out.push_str(&format!("{t}:\n{}", columns_of(site, t)?));
    }
    Ok(out)
}

/// `export --to PEER -o FILE` in words, which must succeed.
fn export_text(site: &Site, peer: &str, file: &Path) -> Res<Out> {
    fieldsync_ok(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &site.db,
        &"--to",
        &peer,
        &"-o",
        &file,
    ])
}

// ---------------------------------------------------------------------------

/// spec/schema.md, "Old laptop → new HQ" and "New HQ → old laptop": HQ
/// adds a column and a new tracked table; the laptop, still on the old
/// version, keeps editing and sending, and every one of its changes is
/// received without `--resend`; then HQ's bundle brings the laptop the new
/// column, its values and the new table.
#[test]
fn hq_adds_a_column_and_a_table_and_an_old_laptop_keeps_sending_without_resend() -> Res {
    let w = World::new()?;
    let hq = php_hq(&w)?;
    let f1 = laptop(&w, &hq, "field-1")?;

    // The app is upgraded at HQ.
    hq.sql(
        "ALTER TABLE person_uuid ADD COLUMN phone VARCHAR(20);
         UPDATE person_uuid SET phone = '077-111' WHERE p_uuid = 'lk-1';
         CREATE TABLE village(v_uuid VARCHAR(60) PRIMARY KEY, name TEXT NOT NULL, person VARCHAR(60) REFERENCES person_uuid(p_uuid));
         INSERT INTO village VALUES ('v-1', 'Galle Fort', 'lk-1');",
    )?;
    let tracked = fieldsync_ok(&[&"track", &"--db", &hq.db, &"village"])?;
    let said = format!("{}{}", tracked.stdout, tracked.stderr);
    assert!(
        said.contains("'phone'") && said.contains("replicated from now on"),
        "track did not say it follows the new column: {said}"
    );
    let to_f1 = w.bundle("hq-upgraded-to-field-1");
    hq.export_plain_to("field-1", &to_f1)?;

    // Meanwhile the laptop, on the old version, keeps working and sending.
    f1.sql(
        "UPDATE person_uuid SET full_name = 'Bilal A. Khan' WHERE p_uuid = 'lk-2';
         INSERT INTO person_uuid VALUES ('lk-3', 'Chandra Silva', 'Silva');
         INSERT INTO config(module_id, confkey, value) VALUES ('admin', 'theme', 'green');
         INSERT INTO field_options VALUES ('opt_status', 'dec', 'Deceased');",
    )?;
    let (sent, got) = w.send(&f1, &hq)?;
    assert_eq!(num(&sent, "changes")?, 4, "{sent}");
    assert_eq!(num(&got, "applied")?, 4, "{got}");
    assert_eq!(num(&file_report(&got)?, "waiting")?, 0, "{got}");
    f1.sql(
        "UPDATE person_uuid SET full_name = 'Amal S. Perera' WHERE p_uuid = 'lk-1';
         DELETE FROM field_options WHERE option_code = 'ali';",
    )?;
    let (sent, got) = w.send(&f1, &hq)?;
    assert_eq!(num(&sent, "changes")?, 2, "{sent}");
    assert_eq!(num(&got, "applied")?, 2, "{got}");

    // Every edit is at HQ; HQ's phone was not touched by the old rows; the
    // laptop's new person has no phone.
    assert_eq!(
        hq.sql("SELECT p_uuid, full_name, quote(phone) FROM person_uuid ORDER BY p_uuid;")?,
        "lk-1|Amal S. Perera|'077-111'\nlk-2|Bilal A. Khan|NULL\nlk-3|Chandra Silva|NULL\n"
    );
    assert_eq!(
        hq.sql("SELECT option_code FROM field_options ORDER BY option_code;")?,
        "dec\nmis\n"
    );
    assert_eq!(
        hq.count("SELECT count(*) FROM config WHERE confkey = 'theme' AND value = 'green'")?,
        1
    );
    let o = hq.origin("field-1")?.ok_or("hq does not list field-1")?;
    assert_eq!(text(&o, "gaps")?, "", "{o}");

    // The laptop imports HQ's bundle: the column, its value, the new table.
    let got = f1.import(&[&to_f1])?;
    assert_eq!(num(&file_report(&got)?, "waiting")?, 0, "{got}");
    assert_eq!(
        columns_of(&f1, "person_uuid")?,
        columns_of(&hq, "person_uuid")?
    );
    assert_eq!(columns_of(&f1, "village")?, columns_of(&hq, "village")?);
    assert_eq!(app_shape(&f1)?, app_shape(&hq)?);
    assert_eq!(
        f1.sql("SELECT name FROM fieldsync_tables WHERE name = 'village';")?,
        "village\n",
        "the new table is tracked at the laptop"
    );
    assert_eq!(f1.snapshot()?, hq.snapshot()?);

    // One more round: nothing is pending either way, nothing is resent.
    w.send(&f1, &hq)?;
    let (sent, _) = w.send(&hq, &f1)?;
    assert_eq!(num(&sent, "changes")?, 0, "{sent}");
    let (sent, _) = w.send(&f1, &hq)?;
    assert_eq!(num(&sent, "changes")?, 0, "{sent}");
    for s in [&hq, &f1] {
        let peer = if s.name == "hq" { "field-1" } else { "hq" };
        let status = s.status()?;
        let p = (status["peers"].as_array().ok_or("no peers")?.iter())
            .find(|p| p["instance"] == peer)
            .ok_or("peer missing")?;
        assert_eq!(num(p, "pending_changes")?, 0, "{}: {p}", s.name);
        assert_eq!(num(p, "unacknowledged")?, 0, "{}: {p}", s.name);
    }
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    assert!(held_changes(&f1)?.is_empty());
    check_ok(&hq)?;
    check_ok(&f1)?;
    Ok(())
}

/// spec/schema.md, "Old laptop → new HQ", on Sahana Eden's tables: the
/// old laptop's bundles never overwrite HQ's value in the new column, even
/// when its edit of the row is later, and a person it creates gets the
/// column's default at HQ; references stay right with foreign keys on.
#[test]
fn an_old_eden_laptop_never_overwrites_hq_s_new_column_and_its_new_rows_get_the_default() -> Res {
    let w = World::new()?;
    let hq = eden_hq(&w)?;
    let f1 = laptop(&w, &hq, "field-1")?;
    hq.sql(
        "ALTER TABLE pr_person ADD COLUMN nationality VARCHAR(2) DEFAULT 'lk';
         UPDATE pr_person SET nationality = 'in' WHERE uuid = 'u-p1';",
    )?;
    // Its next command follows the column and records the value.
    let to_f1 = w.bundle("hq-to-field-1");
    let exported = hq.export_plain_to("field-1", &to_f1)?;
    assert_eq!(
        warnings_about(&exported, "nationality").len(),
        1,
        "{exported}"
    );
    assert_eq!(num(&exported, "changes")?, 1, "{exported}");

    // The laptop edits the same person later, and adds one.
    f1.sql(
        "PRAGMA foreign_keys = ON;
         UPDATE pr_person SET first_name = 'Amali' WHERE uuid = 'u-p1';
         INSERT INTO pr_person(uuid, first_name, location_id, organisation_id)
           VALUES ('u-p2', 'Bo', 2, 1);",
    )?;
    w.send(&f1, &hq)?;
    assert_eq!(
        hq.sql(
            "SELECT p.uuid, p.first_name, p.nationality, l.uuid, o.uuid FROM pr_person p \
             JOIN gis_location l ON l.id = p.location_id \
             JOIN org_organisation o ON o.id = p.organisation_id ORDER BY p.uuid;"
        )?,
        "u-p1|Amali|in|u-south|u-rc\nu-p2|Bo|lk|u-south|u-rc\n"
    );
    assert_eq!(dangling(&hq)?, "");

    // Then the laptop takes the upgrade and both hold the same.
    f1.import(&[&to_f1])?;
    w.send(&hq, &f1)?;
    assert_eq!(
        f1.sql("SELECT uuid, first_name, nationality FROM pr_person ORDER BY uuid;")?,
        "u-p1|Amali|in\nu-p2|Bo|lk\n"
    );
    assert_eq!(columns_of(&f1, "pr_person")?, columns_of(&hq, "pr_person")?);
    assert_eq!(dangling(&f1)?, "");
    check_ok(&hq)?;
    check_ok(&f1)?;
    Ok(())
}

/// spec/schema.md, "New HQ → old laptop", set to hold: the import applies
/// the columns both have, the new column's values wait (listed by
/// `schema` and `status`), and `schema --apply` adds the column and
/// applies them with HQ's clocks: a later local value, or a later value
/// from another instance, still wins over them; a row deleted here stays
/// deleted.
#[test]
fn a_laptop_set_to_hold_lists_the_change_and_schema_apply_uses_the_original_clocks() -> Res {
    let w = World::new()?;
    let hq = php_hq(&w)?;
    hq.sql("INSERT INTO person_uuid VALUES ('lk-3', 'Chandra Silva', 'Silva');")?;
    let f1 = laptop(&w, &hq, "field-1")?;
    let f2 = laptop(&w, &hq, "field-2")?;
    let out = fieldsync_ok(&[&"schema", &"--db", &f1.db, &"--auto", &"off"])?;
    assert!(
        out.stdout.contains("held until `--apply`"),
        "{}",
        out.stdout
    );
    assert_eq!(text(&f1.status()?, "schema_mode")?, "hold");

    hq.sql(
        "ALTER TABLE person_uuid ADD COLUMN phone TEXT;
         UPDATE person_uuid SET phone = 'hq-' || p_uuid;
         UPDATE person_uuid SET full_name = 'Amal P.' WHERE p_uuid = 'lk-1';",
    )?;
    let fp_before = app_objects(&f1)?;
    let (_, got) = w.send(&hq, &f1)?;
    assert_eq!(num(&file_report(&got)?, "waiting")?, 3, "{got}");
    // The common column applied; no column added.
    assert_eq!(
        f1.sql("SELECT full_name FROM person_uuid WHERE p_uuid = 'lk-1';")?,
        "Amal P.\n"
    );
    assert_eq!(app_objects(&f1)?, fp_before);
    let held = held_changes(&f1)?;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["table"], "person_uuid");
    assert_eq!(held[0]["status"], "held");
    assert_eq!(held[0]["sender_instance"], "hq");
    assert!(
        held[0]["statements"].to_string().contains("phone"),
        "{held:?}"
    );
    let report = schema_report(&f1)?;
    assert_eq!(
        report["waiting"],
        serde_json::json!([{"table": "person_uuid", "columns": ["phone"], "rows": 3}])
    );
    let words = fieldsync_ok(&[&"schema", &"--db", &f1.db])?.stdout;
    assert!(words.contains("HELD from 'hq'"), "{words}");
    assert!(words.contains("--apply"), "{words}");
    assert!(
        words.contains("waiting: 3 rows of values for column 'person_uuid.phone'"),
        "{words}"
    );
    let status = f1.status()?;
    assert_eq!(num(&status, "schema_held")?, 1, "{status}");
    assert_eq!(status["waiting"], report["waiting"]);
    let words = fieldsync_ok(&[&"status", &"--db", &f1.db])?.stdout;
    assert!(words.contains("waiting"), "{words}");
    assert!(
        words.contains("1 received schema change not run here"),
        "{words}"
    );
    // `check` accepts the change applied only in part.
    check_ok(&f1)?;

    // field-2 (set up the same way, running changes as they come) takes the
    // column and edits lk-2's phone after HQ did; its bundle reaches
    // field-1 only after field-1 applied HQ's values.
    let (_, got) = w.send(&hq, &f2)?;
    assert_eq!(num(&file_report(&got)?, "waiting")?, 0, "{got}");
    f2.sql("UPDATE person_uuid SET phone = 'f2-lk-2' WHERE p_uuid = 'lk-2';")?;
    let from_f2 = w.bundle("field-2-to-field-1");
    f2.export_plain_to("field-1", &from_f2)?;

    // At field-1, lk-3 is deleted before the change is applied.
    f1.sql("DELETE FROM person_uuid WHERE p_uuid = 'lk-3';")?;
    let out = fieldsync_ok(&[&"schema", &"--db", &f1.db, &"--apply"])?;
    assert!(out.stdout.contains("phone"), "{}", out.stdout);
    assert_eq!(
        columns_of(&f1, "person_uuid")?,
        columns_of(&hq, "person_uuid")?
    );
    assert_eq!(
        f1.sql("SELECT p_uuid, phone FROM person_uuid ORDER BY p_uuid;")?,
        "lk-1|hq-lk-1\nlk-2|hq-lk-2\n"
    );
    let report = schema_report(&f1)?;
    assert_eq!(report["waiting"], serde_json::json!([]), "{report}");
    assert!(
        !(report["held"].as_array().into_iter().flatten())
            .any(|h| h["status"] == "held" || h["status"] == "failed"),
        "{report}"
    );

    // A later value from field-2 beats HQ's applied value (had it been
    // stamped when applied, it would win); a later local edit wins too.
    f1.import(&[&from_f2])?;
    f1.sql("UPDATE person_uuid SET phone = 'f1-lk-1' WHERE p_uuid = 'lk-1';")?;
    assert_eq!(
        f1.sql("SELECT p_uuid, phone FROM person_uuid ORDER BY p_uuid;")?,
        "lk-1|f1-lk-1\nlk-2|f2-lk-2\n"
    );
    // Everyone converges on that.
    w.send(&f1, &hq)?;
    w.send(&f2, &hq)?;
    w.send(&hq, &f1)?;
    w.send(&hq, &f2)?;
    assert_eq!(
        hq.sql("SELECT p_uuid, phone FROM person_uuid ORDER BY p_uuid;")?,
        "lk-1|f1-lk-1\nlk-2|f2-lk-2\n"
    );
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    assert_eq!(f2.snapshot()?, hq.snapshot()?);
    for s in [&hq, &f1, &f2] {
        check_ok(s)?;
    }
    Ok(())
}

/// spec/schema.md, "A laptop that skips two upgrades": HQ's bundle after
/// version 2 is lost; the one after version 3 brings both upgrades in one
/// import. An older bundle of HQ's (version 2) imported afterwards applies
/// its rows and changes no schema.
#[test]
fn a_laptop_that_skips_two_upgrades_ends_identical() -> Res {
    let w = World::new()?;
    let hq = php_hq(&w)?;
    let f1 = laptop(&w, &hq, "field-1")?;
    hq.sql(
        "ALTER TABLE person_uuid ADD COLUMN phone TEXT;
         UPDATE person_uuid SET phone = '077-' || p_uuid;",
    )?;
    let v2 = w.bundle("hq-v2-to-field-1");
    hq.export_plain_to("field-1", &v2)?;
    hq.sql(
        "CREATE TABLE village(v_uuid VARCHAR(60) PRIMARY KEY, name TEXT);
         CREATE INDEX village_name ON village(name);
         INSERT INTO village VALUES ('v-1', 'Galle'), ('v-2', 'Matara');
         ALTER TABLE person_uuid ADD COLUMN email TEXT;
         UPDATE person_uuid SET email = p_uuid || '@example.org' WHERE p_uuid = 'lk-2';",
    )?;
    fieldsync_ok(&[&"track", &"--db", &hq.db, &"village"])?;
    let v3 = w.bundle("hq-v3-to-field-1");
    hq.export_plain_to("field-1", &v3)?;
    assert_eq!(
        tables_with_statements(&v3)?,
        ["person_uuid", "village"],
        "the delta carries the two changed tables"
    );

    f1.import(&[&v3])?;
    assert_eq!(
        columns_of(&f1, "person_uuid")?,
        columns_of(&hq, "person_uuid")?
    );
    assert_eq!(app_shape(&f1)?, app_shape(&hq)?);
    assert_eq!(
        f1.sql("SELECT name FROM village ORDER BY v_uuid;")?,
        "Galle\nMatara\n"
    );
    assert_eq!(
        f1.sql("SELECT quote(email) FROM person_uuid ORDER BY p_uuid;")?,
        "NULL\n'lk-2@example.org'\n"
    );

    // The lost bundle turns up: its rows apply, its older table is reported
    // as not additive and nothing of the schema changes.
    let objects = app_objects(&f1)?;
    f1.import(&[&v2])?;
    assert_eq!(app_objects(&f1)?, objects);
    let held = held_changes(&f1)?;
    let person: Vec<&Json> = held
        .iter()
        .filter(|h| h["table"] == "person_uuid")
        .collect();
    assert_eq!(person.len(), 1, "{held:?}");
    assert_eq!(person[0]["status"], "not applied", "{held:?}");
    assert!(
        person[0]["why"].as_str().unwrap_or("").contains("email"),
        "{held:?}"
    );

    w.send(&f1, &hq)?;
    w.send(&hq, &f1)?;
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    assert_eq!(
        f1.sql("SELECT phone FROM person_uuid ORDER BY p_uuid;")?,
        "077-lk-1\n077-lk-2\n"
    );
    check_ok(&hq)?;
    check_ok(&f1)?;
    Ok(())
}

/// spec/schema.md, "Two instances add the same column independently":
/// equal versions need no statement; the values merge cell by cell, last
/// writer wins.
#[test]
fn two_instances_adding_the_same_column_merge_its_values_last_writer_wins() -> Res {
    let w = World::new()?;
    let hq = php_hq(&w)?;
    let f1 = laptop(&w, &hq, "field-1")?;
    // Each gets the same migration and fills phones, the laptop last.
    for s in [&hq, &f1] {
        s.sql("ALTER TABLE person_uuid ADD COLUMN phone TEXT;")?;
    }
    hq.sql("UPDATE person_uuid SET phone = 'hq-1' WHERE p_uuid = 'lk-1';")?;
    hq.sql("UPDATE person_uuid SET phone = 'hq-2' WHERE p_uuid = 'lk-2';")?;
    std::thread::sleep(std::time::Duration::from_millis(5));
    f1.sql("UPDATE person_uuid SET phone = 'f1-1' WHERE p_uuid = 'lk-1';")?;
    let objects = app_objects(&hq)?;
    assert_eq!(app_objects(&f1)?, objects);

    w.cross(&hq, &f1)?;
    w.cross(&hq, &f1)?;
    for s in [&hq, &f1] {
        assert_eq!(
            s.sql("SELECT p_uuid, phone FROM person_uuid ORDER BY p_uuid;")?,
            "lk-1|f1-1\nlk-2|hq-2\n",
            "{}",
            s.name
        );
        assert_eq!(app_objects(s)?, objects, "{}", s.name);
        let held = held_changes(s)?;
        assert!(held.is_empty(), "{}: {held:?}", s.name);
        check_ok(s)?;
    }
    // The versions are equal: no statement travels either way.
    for (from, to) in [(&hq, &f1), (&f1, &hq)] {
        let file = w.bundle(&format!("{}-to-{}-settled", from.name, to.name));
        from.export_plain_to(&to.name, &file)?;
        assert_eq!(
            tables_with_statements(&file)?,
            Vec::<String>::new(),
            "{}",
            from.name
        );
    }
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    Ok(())
}

/// spec/schema.md, "A column added with a DEFAULT": no row travels for
/// it, both end with the default, a changed value travels as one update,
/// and a person the laptop created before the upgrade gets the default.
#[test]
fn a_column_added_with_a_default_sends_no_rows_and_both_end_with_the_default() -> Res {
    let w = World::new()?;
    let hq = php_hq(&w)?;
    let f1 = laptop(&w, &hq, "field-1")?;
    f1.sql("INSERT INTO person_uuid VALUES ('lk-3', 'Chandra Silva', 'Silva');")?;
    hq.sql("ALTER TABLE person_uuid ADD COLUMN status TEXT DEFAULT 'active';")?;
    let to_f1 = w.bundle("hq-to-field-1");
    let exported = hq.export_plain_to("field-1", &to_f1)?;
    assert_eq!(num(&exported, "changes")?, 0, "{exported}");
    assert_eq!(tables_with_statements(&to_f1)?, ["person_uuid"]);
    let got = f1.import(&[&to_f1])?;
    assert_eq!(num(&got, "changes")?, 0, "{got}");
    assert_eq!(
        f1.sql("SELECT p_uuid, status FROM person_uuid ORDER BY p_uuid;")?,
        "lk-1|active\nlk-2|active\nlk-3|active\n"
    );
    assert_eq!(
        columns_of(&f1, "person_uuid")?,
        columns_of(&hq, "person_uuid")?
    );

    // The laptop's person, created before the upgrade, gets the default.
    w.send(&f1, &hq)?;
    assert_eq!(
        hq.sql("SELECT status FROM person_uuid WHERE p_uuid = 'lk-3';")?,
        "active\n"
    );
    hq.sql("UPDATE person_uuid SET status = 'closed' WHERE p_uuid = 'lk-2';")?;
    let (exported, _) = w.send(&hq, &f1)?;
    assert_eq!(num(&exported, "changes")?, 1, "{exported}");
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    check_ok(&hq)?;
    check_ok(&f1)?;
    Ok(())
}

/// HQ's migration rebuilds `person_uuid` with a NOT NULL column without a
/// default (create new, copy, drop, rename) and adds a person before
/// fieldsync next runs.
fn rebuild_with_code(hq: &Site) -> Res {
    hq.sql(
        "PRAGMA foreign_keys = OFF;
         BEGIN;
         CREATE TABLE person_uuid_new(p_uuid VARCHAR(60) PRIMARY KEY, full_name VARCHAR(100),
           family_name VARCHAR(100), code TEXT NOT NULL);
         INSERT INTO person_uuid_new SELECT p_uuid, full_name, family_name, 'C-' || p_uuid FROM person_uuid;
         DROP TABLE person_uuid;
         ALTER TABLE person_uuid_new RENAME TO person_uuid;
         COMMIT;
         INSERT INTO person_uuid VALUES ('lk-3', 'Chandra Silva', 'Silva', 'C-lk-3');
         UPDATE person_uuid SET full_name = 'Amal P.' WHERE p_uuid = 'lk-1';",
    )?;
    Ok(())
}

/// spec/schema.md, "A NOT NULL column without a default": HQ follows its
/// rebuild (the person added after it travels); at the laptop the ADD
/// COLUMN fails, the import goes on for the other columns, the change is
/// listed as failed, and once the operator gives the column a default,
/// `schema --apply` applies the codes.
#[test]
fn a_not_null_column_from_a_rebuild_fails_at_the_laptop_until_fixed_by_hand() -> Res {
    let w = World::new()?;
    let hq = php_hq(&w)?;
    let f1 = laptop(&w, &hq, "field-1")?;
    rebuild_with_code(&hq)?;
    let to_f1 = w.bundle("hq-to-field-1");
    let exported = hq.export_plain_to("field-1", &to_f1)?;
    let rebuilt = warnings_about(&exported, "capture triggers");
    assert_eq!(rebuilt.len(), 1, "{exported}");
    assert!(rebuilt[0].contains("1 row added"), "{rebuilt:?}");
    assert_eq!(warnings_about(&exported, "'code'").len(), 1, "{exported}");
    check_ok(&hq)?;

    let objects = app_objects(&f1)?;
    let got = f1.import(&[&to_f1])?;
    assert_eq!(
        app_objects(&f1)?,
        objects,
        "nothing of the failed plan stays"
    );
    assert_eq!(num(&file_report(&got)?, "waiting")?, 3, "{got}");
    // The person added after the rebuild arrived. The edit of lk-1 made
    // between the rebuild and fieldsync following it cannot be told from
    // the value it replaced: it goes out with that cell's next change
    // (spec/schema.md, as the notice says).
    assert_eq!(
        f1.sql("SELECT p_uuid, full_name FROM person_uuid ORDER BY p_uuid;")?,
        "lk-1|Amal Perera\nlk-2|Bilal Khan\nlk-3|Chandra Silva\n"
    );
    assert!(
        rebuilt[0].contains("go out with their next change"),
        "{rebuilt:?}"
    );
    let changes = held_changes(&f1)?;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["status"], "failed", "{changes:?}");
    let why = changes[0]["why"].as_str().unwrap_or("").to_owned();
    assert!(why.to_uppercase().contains("NOT NULL"), "{why}");
    assert!(!why.contains('\n'), "{why}");
    let words = fieldsync_ok(&[&"schema", &"--db", &f1.db])?.stdout;
    assert!(words.contains("FAILED from 'hq'"), "{words}");
    assert_eq!(num(&f1.status()?, "schema_held")?, 1);

    // Other columns keep flowing both ways meanwhile.
    f1.sql("UPDATE person_uuid SET family_name = 'Khan-Ali' WHERE p_uuid = 'lk-2';")?;
    w.send(&f1, &hq)?;
    assert_eq!(
        hq.sql("SELECT family_name, code FROM person_uuid WHERE p_uuid = 'lk-2';")?,
        "Khan-Ali|C-lk-2\n"
    );

    // A person the laptop adds meanwhile reaches HQ without a code: HQ's
    // NOT NULL refuses it, and it waits in HQ's quarantine.
    f1.sql("INSERT INTO person_uuid VALUES ('lk-4', 'Dilani Fernando', 'Fernando');")?;
    w.send(&f1, &hq)?;
    assert_eq!(held(&hq)?.len(), 1, "{:?}", held(&hq)?);
    assert_eq!(
        hq.count("SELECT count(*) FROM person_uuid WHERE p_uuid = 'lk-4'")?,
        0
    );

    // The operator gives the column a default by hand, then applies.
    f1.sql("ALTER TABLE person_uuid ADD COLUMN code TEXT NOT NULL DEFAULT '';")?;
    fieldsync_ok(&[&"schema", &"--db", &f1.db, &"--apply"])?;
    assert_eq!(
        f1.sql("SELECT p_uuid, code FROM person_uuid ORDER BY p_uuid;")?,
        "lk-1|C-lk-1\nlk-2|C-lk-2\nlk-3|C-lk-3\nlk-4|\n"
    );
    assert_eq!(schema_report(&f1)?["waiting"], serde_json::json!([]));
    // The laptop's person gets a code: it travels, and HQ releases it.
    f1.sql("UPDATE person_uuid SET code = 'C-lk-4' WHERE p_uuid = 'lk-4';")?;
    w.send(&f1, &hq)?;
    assert!(held(&hq)?.is_empty(), "{:?}", held(&hq)?);
    assert_eq!(
        hq.sql("SELECT code FROM person_uuid WHERE p_uuid = 'lk-4';")?,
        "C-lk-4\n"
    );
    hq.sql("UPDATE person_uuid SET full_name = 'Amal Perera-Silva' WHERE p_uuid = 'lk-1';")?;
    w.send(&hq, &f1)?;
    w.send(&f1, &hq)?;
    assert_eq!(
        f1.sql("SELECT full_name FROM person_uuid WHERE p_uuid = 'lk-1';")?,
        "Amal Perera-Silva\n"
    );
    assert_eq!(f1.rows("person_uuid")?, hq.rows("person_uuid")?);
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    check_ok(&hq)?;
    check_ok(&f1)?;
    Ok(())
}

/// spec/schema.md: "`held` and `failed` ones also [listed] by `fieldsync
/// conflicts`".
#[test]
fn conflicts_lists_a_failed_schema_change() -> Res {
    let w = World::new()?;
    let hq = php_hq(&w)?;
    let f1 = laptop(&w, &hq, "field-1")?;
    rebuild_with_code(&hq)?;
    w.send(&hq, &f1)?;
    assert_eq!(held_changes(&f1)?[0]["status"], "failed");
    let words = fieldsync_ok(&[&"conflicts", &"--db", &f1.db])?.stdout;
    assert!(
        words.contains("person_uuid") && words.to_lowercase().contains("code"),
        "conflicts does not list the failed schema change:\n{words}"
    );
    let json = fieldsync_ok(&[&"conflicts", &"--db", &f1.db, &"--json"])?.json()?;
    assert!(json.to_string().contains("failed"), "{json}");
    Ok(())
}

/// spec/schema.md, "What the receiver does with them", step 1: a schema
/// statement that is not additive (or not SQL) is refused with a one-line
/// reason, nothing of it runs, and the bundle's rows are applied.
#[test]
fn crafted_schema_statements_are_refused_and_the_rows_still_apply() -> Res {
    let w = World::new()?;
    let hq = php_hq(&w)?;
    let full = w.bundle("hq-full");
    fieldsync_ok(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--full",
        &"--for",
        &"field-1",
        &"-o",
        &full,
    ])?;
    hq.sql("UPDATE person_uuid SET full_name = 'Amal P.' WHERE p_uuid = 'lk-1';")?;
    let delta = w.bundle("hq-to-field-1");
    hq.export_plain_to("field-1", &delta)?;
    // The crafted copies are signed as hq's: the statements must reach the
    // checks below the signature.
    let hq_key = fieldsync::fuzzing::signing_key(&fieldsync::Instance::open(&hq.db)?)?;
    let cases: [(&str, &[&str]); 6] = [
        ("drop", &["DROP TABLE person_uuid"]),
        (
            "trigger",
            &[
                "CREATE TABLE person_uuid(p_uuid VARCHAR(60) PRIMARY KEY, full_name VARCHAR(100), \
                 family_name VARCHAR(100), phone TEXT)",
                "CREATE TRIGGER evil AFTER INSERT ON person_uuid BEGIN DELETE FROM config; END",
            ],
        ),
        (
            "other-table",
            &["CREATE TABLE config(config_id INTEGER PRIMARY KEY, evil TEXT)"],
        ),
        (
            "two-statements",
            &[
                "CREATE TABLE person_uuid(p_uuid VARCHAR(60) PRIMARY KEY, full_name VARCHAR(100), \
                 family_name VARCHAR(100), phone TEXT); DROP TABLE config",
            ],
        ),
        (
            "garbage",
            &["CREATE TABLE person_uuid(p_uuid PRIMARY KEY, (((("],
        ),
        (
            "own-tables",
            &[
                "CREATE TABLE person_uuid(p_uuid VARCHAR(60) PRIMARY KEY, full_name VARCHAR(100), \
               family_name VARCHAR(100), phone TEXT REFERENCES fieldsync_meta(key))",
            ],
        ),
    ];
    for (label, statements) in cases {
        let file = w.path(&format!("crafted-{label}.fsb"));
        with_statements(&delta, &file, "person_uuid", statements, &hq_key)?;
        let f = w.site_from(&format!("field-{label}"), &full)?;
        let objects = app_objects(&f)?;
        let tables_before = f.sql("SELECT type, name, sql FROM sqlite_schema ORDER BY name;")?;
        let got = f.import(&[&file])?;
        assert_eq!(
            f.sql("SELECT type, name, sql FROM sqlite_schema ORDER BY name;")?,
            tables_before,
            "{label}: the schema changed"
        );
        assert_eq!(app_objects(&f)?, objects, "{label}");
        assert_eq!(num(&got, "applied")?, 1, "{label}: {got}");
        assert_eq!(
            f.sql("SELECT full_name FROM person_uuid WHERE p_uuid = 'lk-1';")?,
            "Amal P.\n",
            "{label}"
        );
        let held = held_changes(&f)?;
        assert_eq!(held.len(), 1, "{label}: {held:?}");
        assert_eq!(held[0]["status"], "refused", "{label}: {held:?}");
        let why = held[0]["why"].as_str().unwrap_or("");
        assert!(!why.is_empty() && !why.contains('\n'), "{label}: {why:?}");
        let said = file_report(&got)?["warnings"].to_string();
        assert!(said.contains("person_uuid"), "{label}: {got}");
        assert_eq!(
            f.count("SELECT count(*) FROM config")?,
            1,
            "{label}: config touched"
        );
        check_ok(&f)?;
    }
    Ok(())
}

/// spec/schema.md, "Tracking follows the schema", on Sahana Eden's tables:
/// an `ADD COLUMN` and an update of only that column before any fieldsync
/// command is carried by the next export with no `track`; a changed key, or
/// a dropped table, is refused, saying what to do, and the database is left
/// as it was.
#[test]
fn tracking_follows_an_added_column_and_refuses_a_changed_key_or_a_dropped_table() -> Res {
    let w = World::new()?;
    let hq = eden_hq(&w)?;
    let f1 = laptop(&w, &hq, "field-1")?;
    hq.sql(
        "ALTER TABLE pr_person ADD COLUMN phone TEXT;
         UPDATE pr_person SET phone = '077-1' WHERE uuid = 'u-p1';",
    )?;
    let to_f1 = w.bundle("hq-to-field-1");
    let out = export_text(&hq, "field-1", &to_f1)?;
    let notices: Vec<&str> = (out.stderr.lines())
        .filter(|l| l.contains("'phone'"))
        .collect();
    assert_eq!(notices.len(), 1, "{}", out.stderr);
    assert!(out.stdout.contains("1 change"), "{}", out.stdout);
    f1.import(&[&to_f1])?;
    assert_eq!(
        f1.sql("SELECT uuid, phone FROM pr_person;")?,
        "u-p1|077-1\n"
    );
    // The notice is given once: the next command has nothing to follow.
    let again = w.bundle("hq-to-field-1-again");
    let out = export_text(&hq, "field-1", &again)?;
    assert!(!out.stderr.contains("'phone'"), "{}", out.stderr);

    // The app rebuilds gis_location keyed by its uuid.
    hq.sql(
        "PRAGMA foreign_keys = OFF;
         BEGIN;
         CREATE TABLE gis_location_new(uuid CHAR(128) PRIMARY KEY, id INTEGER UNIQUE, name TEXT NOT NULL,
           level TEXT, parent INTEGER);
         INSERT INTO gis_location_new SELECT uuid, id, name, level, parent FROM gis_location;
         DROP TABLE gis_location;
         ALTER TABLE gis_location_new RENAME TO gis_location;
         COMMIT;",
    )?;
    let before = hq.fingerprint()?;
    let x = w.path("refused.fsb");
    let out = fieldsync(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--to",
        &"field-1",
        &"-o",
        &x,
    ])?;
    assert_error(
        &out,
        1,
        &["'gis_location'", "key", "changed", "put the key back"],
    );
    assert!(!x.exists(), "a refused export left a file");
    assert_eq!(hq.fingerprint()?, before);
    let out = fieldsync(&[&"track", &"--db", &hq.db, &"--all"])?;
    assert_error(&out, 1, &["gis_location", "key"]);
    assert_eq!(hq.fingerprint()?, before);

    // A tracked table dropped by the app is refused, naming it.
    f1.sql("DROP TABLE pr_contact;")?;
    let before = f1.fingerprint()?;
    let out = fieldsync(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &f1.db,
        &"--to",
        &"hq",
        &"-o",
        &x,
    ])?;
    assert_error(&out, 1, &["'pr_contact'", "no longer exists"]);
    assert!(!x.exists(), "a refused export left a file");
    assert_eq!(f1.fingerprint()?, before);
    Ok(())
}

/// spec/schema.md, "Schema changes travel": a delta after a schema change
/// carries the statements of the changed table only, with every table's
/// version in the header; the same statements are not sent again before
/// the peer reports, nor after it reported the new version; a peer that
/// reports it still has the old one gets them again.
#[test]
fn a_delta_carries_the_changed_table_s_schema_until_the_peer_reports_it() -> Res {
    let w = World::new()?;
    let hq = php_hq(&w)?;
    let f1 = laptop(&w, &hq, "field-1")?;
    let f2 = laptop(&w, &hq, "field-2")?;
    fieldsync_ok(&[&"schema", &"--db", &f2.db, &"--auto", &"off"])?;
    let before = header_of(&{
        let b = w.bundle("hq-to-field-1-before");
        hq.export_plain_to("field-1", &b)?;
        b
    })?;
    assert_eq!(
        before
            .tables
            .iter()
            .filter(|t| !t.schema.is_empty())
            .count(),
        0
    );

    hq.sql(
        "ALTER TABLE person_uuid ADD COLUMN phone TEXT;
         CREATE INDEX person_uuid_phone ON person_uuid(phone);",
    )?;
    let h1 = w.bundle("hq-to-field-1");
    hq.export_plain_to("field-1", &h1)?;
    let header = header_of(&h1)?;
    assert_eq!(tables_with_statements(&h1)?, ["person_uuid"]);
    let person = (header.tables.iter())
        .find(|t| t.name == "person_uuid")
        .ok_or("no person_uuid")?;
    assert!(
        person.schema[0].starts_with("CREATE TABLE"),
        "{:?}",
        person.schema
    );
    assert!(
        person
            .schema
            .iter()
            .any(|s| s.contains("person_uuid_phone")),
        "{:?}",
        person.schema
    );
    // Every tracked table's version is listed; person_uuid's changed.
    let version = |h: &Header, t: &str| {
        h.schemas
            .iter()
            .find(|s| s.name == t)
            .map(|s| s.version.clone())
    };
    assert_eq!(header.schemas.len(), 7, "{:?}", header.schemas);
    assert_ne!(
        version(&header, "person_uuid"),
        version(&before, "person_uuid")
    );
    assert_eq!(version(&header, "config"), version(&before, "config"));
    let here = hq.status()?;
    let table = (here["tables"].as_array().ok_or("no tables")?.iter())
        .find(|t| t["table"] == "person_uuid")
        .ok_or("no person_uuid in status")?
        .clone();
    assert_eq!(
        table["version"].as_str(),
        version(&header, "person_uuid").as_deref()
    );

    // Sent once: not again before field-1 reports.
    let h2 = w.bundle("hq-to-field-1-again");
    hq.export_plain_to("field-1", &h2)?;
    assert!(tables_with_statements(&h2)?.is_empty());
    f1.import(&[&h1, &h2])?;
    w.send(&f1, &hq)?;
    let h3 = w.bundle("hq-to-field-1-after-report");
    hq.export_plain_to("field-1", &h3)?;
    assert!(tables_with_statements(&h3)?.is_empty());

    // field-2 holds the change and reports the old version: HQ sends the
    // statements again.
    w.send(&hq, &f2)?;
    assert_eq!(held_changes(&f2)?.len(), 1);
    w.send(&f2, &hq)?;
    let again = w.bundle("hq-to-field-2-again");
    hq.export_plain_to("field-2", &again)?;
    assert_eq!(tables_with_statements(&again)?, ["person_uuid"]);
    check_ok(&hq)?;
    check_ok(&f1)?;
    Ok(())
}

/// spec/schema.md: "`fieldsync inspect` shows a bundle's versions and which
/// tables carry statements".
#[test]
fn inspect_shows_schema_versions_and_which_tables_carry_statements() -> Res {
    let w = World::new()?;
    let hq = php_hq(&w)?;
    laptop(&w, &hq, "field-1")?;
    hq.sql("ALTER TABLE person_uuid ADD COLUMN phone TEXT;")?;
    let b = w.bundle("hq-to-field-1");
    hq.export_plain_to("field-1", &b)?;
    let version = (header_of(&b)?.schemas.iter())
        .find(|s| s.name == "person_uuid")
        .map(|s| s.version.clone())
        .ok_or("no version")?;
    let json = fieldsync_ok(&[&"inspect", &b, &"--json"])?.json()?;
    assert!(json.to_string().contains(&version), "{json}");
    assert_eq!(
        json["tables"][0]["schema"][0]
            .as_str()
            .map(|s| s.starts_with("CREATE TABLE")),
        Some(true),
        "{json}"
    );
    let words = fieldsync_ok(&[&"inspect", &b])?.stdout;
    assert!(words.contains(&version), "{words}");
    assert!(words.contains("with its schema"), "{words}");
    Ok(())
}

/// spec/schema.md, "Tracking follows the schema": an app migration that
/// rebuilds a table without one of its columns. The column stops being
/// tracked (its bit is taken out of the log, the other cells renumbered),
/// the rows written between the rebuild and the next export still go out,
/// and the laptop, whose table keeps the column, keeps its values and hears
/// of the difference once, as not applied.
#[test]
fn a_rebuild_that_drops_a_column_stops_tracking_it_and_the_laptop_keeps_its_values() -> Res {
    let w = World::new()?;
    let hq = php_hq(&w)?;
    let f1 = laptop(&w, &hq, "field-1")?;
    // Both edit the column about to go, and another.
    hq.sql(
        "UPDATE person_uuid SET family_name = 'P.', full_name = 'Amal P.' WHERE p_uuid = 'lk-1';",
    )?;
    w.exchange(&hq, &f1)?;
    // HQ's migration drops family_name; a person is added right after.
    hq.sql(
        "CREATE TABLE person_new(p_uuid VARCHAR(60) PRIMARY KEY, full_name VARCHAR(100));
         INSERT INTO person_new SELECT p_uuid, full_name FROM person_uuid;
         DROP TABLE person_uuid;
         ALTER TABLE person_new RENAME TO person_uuid;
         INSERT INTO person_uuid VALUES ('lk-3', 'Chen Li');
         DELETE FROM person_uuid WHERE p_uuid = 'lk-2';",
    )?;
    let b = w.bundle("hq-to-field-1");
    let out = export_text(&hq, "field-1", &b)?;
    assert!(
        out.stderr.contains("'family_name' no longer exists"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("lost its capture triggers"),
        "{}",
        out.stderr
    );
    check_ok(&hq)?;
    let imported = f1.import(&[&b])?;
    assert!(
        warnings_about(&file_report(&imported)?, "family_name").len() == 1,
        "{imported}"
    );
    assert_eq!(
        f1.sql("SELECT p_uuid, full_name, ifnull(family_name, '-') FROM person_uuid ORDER BY 1;")?,
        "lk-1|Amal P.|P.\nlk-3|Chen Li|-\n"
    );
    // The laptop keeps editing the column HQ dropped: nothing of it reaches
    // HQ, and its other edits do.
    f1.sql(
        "UPDATE person_uuid SET family_name = 'Li', full_name = 'Chen L.' WHERE p_uuid = 'lk-3';",
    )?;
    w.send(&f1, &hq)?;
    assert_eq!(
        hq.sql("SELECT full_name FROM person_uuid WHERE p_uuid = 'lk-3';")?,
        "Chen L.\n"
    );
    check_ok(&hq)?;
    check_ok(&f1)?;
    Ok(())
}

/// spec/schema.md, "Two instances add the same column independently", with
/// different declared types: the versions differ, HQ's bundles carry the
/// statements, the laptop reports the difference and changes nothing, and
/// the values flow both ways (columns match by name).
#[test]
fn the_same_column_added_with_another_type_is_reported_and_its_values_still_flow() -> Res {
    let w = World::new()?;
    let hq = php_hq(&w)?;
    let f1 = laptop(&w, &hq, "field-1")?;
    hq.sql("ALTER TABLE person_uuid ADD COLUMN phone TEXT;")?;
    f1.sql("ALTER TABLE person_uuid ADD COLUMN phone VARCHAR(20);")?;
    hq.sql("UPDATE person_uuid SET phone = '555' WHERE p_uuid = 'lk-1';")?;
    f1.sql("UPDATE person_uuid SET phone = '777' WHERE p_uuid = 'lk-2';")?;
    let b = w.bundle("hq-to-field-1");
    hq.export_plain_to("field-1", &b)?;
    assert_eq!(tables_with_statements(&b)?, ["person_uuid"]);
    let before = columns_of(&f1, "person_uuid")?;
    let imported = f1.import(&[&b])?;
    assert_eq!(
        warnings_about(
            &file_report(&imported)?,
            "VARCHAR(20) here and TEXT at the sender"
        )
        .len(),
        1,
        "{imported}"
    );
    assert_eq!(columns_of(&f1, "person_uuid")?, before);
    assert_eq!(held_changes(&f1)?[0]["status"], "not applied");
    w.send(&f1, &hq)?;
    for s in [&hq, &f1] {
        assert_eq!(
            s.sql("SELECT p_uuid, ifnull(phone, '-') FROM person_uuid ORDER BY 1;")?,
            "lk-1|555\nlk-2|777\n",
            "{}",
            s.name
        );
        check_ok(s)?;
    }
    Ok(())
}

/// Column names compare as SQLite compares them, without regard to case: a
/// column HQ's upgrade calls `Phone` is the laptop's `phone`. Before, the
/// import took it for a column the laptop lacks, and its values waited for
/// ever.
#[test]
fn a_column_spelled_in_another_case_is_the_same_column() -> Res {
    let w = World::new()?;
    let hq = w.site(
        "hq",
        "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT, Phone TEXT);
         INSERT INTO person VALUES ('p1', 'Amal', '555');",
    )?;
    let f1 = w.site(
        "field-1",
        "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT, phone TEXT);",
    )?;
    let (_, imported) = w.send(&hq, &f1)?;
    assert_eq!(num(&imported, "waiting")?, 0, "{imported}");
    assert_eq!(
        f1.sql("SELECT id, name, phone FROM person;")?,
        "p1|Amal|555\n"
    );
    f1.sql("UPDATE person SET phone = '777' WHERE id = 'p1';")?;
    w.send(&f1, &hq)?;
    assert_eq!(hq.sql("SELECT Phone FROM person;")?, "777\n");
    check_ok(&hq)?;
    check_ok(&f1)?;
    Ok(())
}
