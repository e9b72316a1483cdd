//! The seed's scenario end to end, through the real CLI and the system
//! `sqlite3` shell: a field instance set up from one file, foreign keys and
//! a location hierarchy arriving in any order, quarantine and the conflict
//! log, relaying across three instances, and `fieldsync demo`.

use std::path::{Path, PathBuf};

use fieldsync::SiteId;
use fieldsync::bundle::format::{LocalTable, SiteRef, TableDef, ViewDef};
use fieldsync::bundle::{BundleWriter, Header};
use serde_json::Value as Json;

use crate::util::*;

fn hq_with_defaults(w: &World) -> Res<Site> {
    let hq = w.site("hq", RELIEF_SCHEMA)?;
    hq.sql(
        "PRAGMA foreign_keys = ON;
         INSERT INTO location VALUES ('lk', NULL, 'L0', 'Sri Lanka');
         INSERT INTO location VALUES ('lk-s', 'lk', 'L1', 'Southern');
         INSERT INTO location VALUES ('lk-s-g', 'lk-s', 'L2', 'Galle');
         INSERT INTO shelter VALUES ('s1', 'S-001', 'lk-s-g', 40);",
    )?;
    Ok(hq)
}

#[test]
fn a_field_instance_set_up_from_a_full_export_equals_hq() -> Res {
    let w = World::new()?;
    let hq = hq_with_defaults(&w)?;
    let full = w.bundle("hq-full");
    hq.export_full(&full)?;
    let field = w.site_from("field-1", &full)?;

    // Same tables, indexes and rows.
    let schema = |s: &Site| {
        s.sql(
            "SELECT type, name, sql FROM sqlite_schema WHERE name NOT LIKE 'fieldsync%' \
             AND name NOT LIKE 'sqlite_%' ORDER BY name;",
        )
    };
    assert_eq!(schema(&field)?, schema(&hq)?);
    for table in ["location", "shelter"] {
        assert_eq!(field.rows(table)?, hq.rows(table)?, "table {table}");
    }
    assert_eq!(tracked_tables(&field.db)?, vec!["location", "shelter"]);

    // The field's app writes are captured, and its first export to HQ
    // carries only them: HQ is a known peer that has everything else.
    field.sql(
        "PRAGMA foreign_keys = ON;
         INSERT INTO location VALUES ('lk-s-g-1', 'lk-s-g', 'L3', 'Unawatuna');",
    )?;
    let file = w.bundle("field-to-hq");
    let exported = field.export_to("hq", &file)?;
    assert_eq!(num(&exported, "changes")?, 1);
    assert!(!exported["new_peer"].as_bool().unwrap_or(true));
    let imported = hq.import(&[&file])?;
    assert_eq!(num(&imported, "applied")?, 1);
    assert_eq!(hq.rows("location")?, field.rows("location")?);

    // And HQ's next export to the field carries nothing it already has.
    let back = w.bundle("hq-to-field");
    assert_eq!(num(&hq.export_to("field-1", &back)?, "changes")?, 0);
    Ok(())
}

#[test]
fn init_from_refuses_bad_input_and_changes_nothing() -> Res {
    let w = World::new()?;
    let hq = hq_with_defaults(&w)?;
    let full = w.bundle("hq-full");
    hq.export_full(&full)?;

    // A database that already has the tables.
    let existing = w.path("existing.db");
    sqlite3(&existing, RELIEF_SCHEMA)?;
    let before = db_fingerprint(&existing)?;
    let out = fieldsync(&[
        &"init",
        &"--db",
        &existing,
        &"--name",
        &"field-1",
        &"--from",
        &full,
        &"--expect-key",
        &signer_fingerprint(&full)?,
    ])?;
    assert_error(&out, 1, &["already has a table", "location"]);
    assert_eq!(db_fingerprint(&existing)?, before);

    // A delta instead of a full export: no file is left behind.
    let delta = w.bundle("delta");
    hq.export_to("someone", &delta)?;
    let new_db = w.path("new.db");
    let out = fieldsync(&[
        &"init",
        &"--db",
        &new_db,
        &"--name",
        &"field-1",
        &"--from",
        &delta,
        &"--expect-key",
        &signer_fingerprint(&delta)?,
    ])?;
    assert_error(&out, 1, &["not a full export", "--full"]);
    assert!(!new_db.exists(), "a refused setup left {new_db:?}");

    // A bundle whose schema would run other SQL is refused before any runs.
    let (victim, before) = victim(&w)?;
    for (i, sql) in [
        "DROP TABLE precious",
        "CREATE TABLE t(id TEXT PRIMARY KEY, v TEXT); DROP TABLE precious",
        "CREATE TRIGGER t AFTER INSERT ON precious BEGIN DELETE FROM precious; END",
        "CREATE TABLE precious2 AS SELECT * FROM precious",
    ]
    .iter()
    .enumerate()
    {
        let evil = w.path(&format!("evil-{i}.fsb"));
        write_bundle_with_schema(&evil, &[sql])?;
        let out = fieldsync(&[
            &"init",
            &"--db",
            &victim,
            &"--name",
            &"field-1",
            &"--from",
            &evil,
            &"--expect-key",
            &signer_fingerprint(&evil)?,
        ])?;
        assert_error(&out, 1, &["schema", "refused"]);
        assert_eq!(db_fingerprint(&victim)?, before, "after {sql}");
    }
    // A trigger smuggled after a valid CREATE TABLE, as an "index".
    let evil = w.path("evil-index.fsb");
    write_bundle_with_schema(
        &evil,
        &[
            "CREATE TABLE t(id TEXT PRIMARY KEY, v TEXT)",
            "CREATE TRIGGER x AFTER INSERT ON t BEGIN SELECT 1; END",
        ],
    )?;
    let fresh = w.path("fresh.db");
    let out = fieldsync(&[
        &"init",
        &"--db",
        &fresh,
        &"--name",
        &"field-1",
        &"--from",
        &evil,
        &"--expect-key",
        &signer_fingerprint(&evil)?,
    ])?;
    assert_error(&out, 1, &["schema", "refused"]);
    assert!(!fresh.exists());
    Ok(())
}

/// A database holding an app table `precious` with one row, which a hostile
/// bundle must leave alone; and its fingerprint.
fn victim(w: &World) -> Res<(PathBuf, Fingerprint)> {
    let victim = w.path("victim.db");
    sqlite3(
        &victim,
        "CREATE TABLE precious(x); INSERT INTO precious VALUES (1);",
    )?;
    let before = db_fingerprint(&victim)?;
    Ok((victim, before))
}

/// A full bundle from "mallory" for table `t(id, v)` with these schema
/// statements, local tables and views, and no rows, written with the
/// library's writer.
fn write_full_bundle(
    path: &Path,
    schema: &[&str],
    local_tables: Vec<LocalTable>,
    views: Vec<ViewDef>,
) -> Res {
    let header = Header {
        sender: SiteRef {
            id: SiteId::random(),
            name: "mallory".into(),
        },
        created: 1,
        full: true,
        recipient: None,
        origins: Vec::new(),
        tables: vec![TableDef {
            name: "t".into(),
            key: vec!["id".into()],
            cells: vec!["v".into()],
            schema: schema.iter().map(|s| s.to_string()).collect(),
            ..TableDef::default()
        }],
        covers: Vec::new(),
        seen: Vec::new(),
        lost: Default::default(),
        lacks: Vec::new(),
        trust: Vec::new(),
        trust_seen: None,
        local_tables,
        schemas: Vec::new(),
        sender_recipient: None,
        statements: Vec::new(),
        views,
    };
    let file = std::fs::File::create(path)?;
    let writer = BundleWriter::new(
        file,
        &header,
        &fieldsync::fuzzing::key_for(&header.sender.id),
    )?;
    writer.finish()?;
    Ok(())
}

/// A full bundle for table `t(id, v)` with the given schema statements.
fn write_bundle_with_schema(path: &Path, schema: &[&str]) -> Res {
    write_full_bundle(path, schema, Vec::new(), Vec::new())
}

#[test]
fn a_four_level_hierarchy_written_children_first_imports_whole_with_foreign_keys_on() -> Res {
    let w = World::new()?;
    let (hq, field, _) = w.three(RELIEF_SCHEMA)?;
    // Keys sort children before parents, so the bundle carries every child
    // before its parent; the app writes them with foreign keys on.
    field.sql(
        "PRAGMA foreign_keys = ON;
         INSERT INTO location VALUES ('z', NULL, 'L0', 'Country');
         INSERT INTO location VALUES ('y', 'z', 'L1', 'Province');
         INSERT INTO location VALUES ('x', 'y', 'L2', 'District');
         INSERT INTO location VALUES ('w', 'x', 'L3', 'Village');
         INSERT INTO shelter VALUES ('a', 'S-1', 'w', 10);",
    )?;
    let (_, imported) = w.send(&field, &hq)?;
    assert_eq!(num(&imported, "applied")?, 5);
    assert_eq!(num(&imported, "quarantined")?, 0);
    assert_eq!(hq.count("SELECT count(*) FROM location")?, 4);
    assert_eq!(dangling(&hq)?, "");
    assert!(held(&hq)?.is_empty());
    assert_eq!(hq.rows("location")?, field.rows("location")?);
    // The app goes on with foreign keys on: the references hold for SQLite.
    hq.sql("PRAGMA foreign_keys = ON; INSERT INTO location VALUES ('v', 'w', 'L3', 'Hamlet');")?;
    Ok(())
}

#[test]
fn an_orphan_is_quarantined_then_applied_when_its_parent_arrives() -> Res {
    let w = World::new()?;
    let (hq, field, _) = w.three(RELIEF_SCHEMA)?;
    field.sql(
        "PRAGMA foreign_keys = ON;
         INSERT INTO location VALUES ('d', NULL, 'L2', 'District');",
    )?;
    let first = w.bundle("district");
    field.export_to("hq", &first)?;
    field.sql(
        "PRAGMA foreign_keys = ON;
         INSERT INTO location VALUES ('v', 'd', 'L3', 'Village');
         INSERT INTO shelter VALUES ('s', 'S-9', 'v', 3);",
    )?;
    let second = w.bundle("village");
    field.export_to("hq", &second)?;

    // The second bundle arrives first: its rows have no parent here.
    let imported = hq.import(&[&second])?;
    assert_eq!(num(&imported, "quarantined")?, 2);
    assert_eq!(num(&imported, "applied")?, 0);
    assert_eq!(hq.count("SELECT count(*) FROM location")?, 0);
    assert_eq!(dangling(&hq)?, "");
    let list = held(&hq)?;
    assert_eq!(list.len(), 2);
    assert!(
        list.iter().all(|h| h["reason"] == "missing parent"),
        "{list:?}"
    );
    assert!(
        list.iter()
            .any(|h| h["table"] == "location" && h["key"] == serde_json::json!({"id": "v"}))
    );
    // Status counts them and shows their numbers as held, not as missing.
    let status = hq.status()?;
    assert_eq!(num(&status, "quarantined")?, 2);
    let origin = hq.origin("field-1")?.ok_or("hq does not know field-1")?;
    assert_eq!(text_of(&origin, "quarantined"), "2-3");
    assert_eq!(text_of(&origin, "gaps"), "1");
    // The text listing names the row and why.
    let text = fieldsync_ok(&[&"conflicts", &"--db", &hq.db])?.stdout;
    assert!(
        text.contains("location row 'v'") && text.contains("missing parent"),
        "{text}"
    );

    // The parent arrives: both held changes are applied.
    let imported = hq.import(&[&first])?;
    assert_eq!(num(&imported, "applied")?, 1);
    assert_eq!(num(&imported, "released")?, 2);
    assert!(held(&hq)?.is_empty());
    assert_eq!(dangling(&hq)?, "");
    assert_eq!(hq.rows("location")?, field.rows("location")?);
    assert_eq!(hq.rows("shelter")?, field.rows("shelter")?);

    // Once applied, they are received: nothing is missing or sent again.
    let origin = hq.origin("field-1")?.ok_or("hq does not know field-1")?;
    assert_eq!(text_of(&origin, "gaps"), "");
    let again = w.bundle("again");
    assert_eq!(num(&field.export_to("hq", &again)?, "changes")?, 0);
    Ok(())
}

fn text_of(v: &Json, key: &str) -> String {
    v.get(key)
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_unique_clash_between_two_instances_is_quarantined_listed_and_resolved() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) = w.three(RELIEF_SCHEMA)?;
    hq.sql("INSERT INTO location VALUES ('g', NULL, 'L2', 'Galle');")?;
    w.send(&hq, &f1)?;
    w.send(&hq, &f2)?;
    // Two officers register the same shelter code for two different shelters.
    f1.sql("INSERT INTO shelter VALUES ('s-a', 'S-101', 'g', 25);")?;
    f2.sql("INSERT INTO shelter VALUES ('s-b', 'S-101', 'g', 60);")?;
    w.send(&f1, &hq)?;
    let (_, imported) = w.send(&f2, &hq)?;
    assert_eq!(num(&imported, "quarantined")?, 1);
    let list = held(&hq)?;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["reason"], "unique");
    assert_eq!(list[0]["key"], serde_json::json!({"id": "s-b"}));
    assert_eq!(list[0]["sender_instance"], "field-2");
    let detail = text_of(&list[0], "detail");
    assert!(
        detail.contains("S-101") && detail.contains("'s-a'"),
        "{detail}"
    );
    assert_eq!(hq.count("SELECT count(*) FROM shelter")?, 1);

    // Re-sending the same bundle does not duplicate the held entry.
    let resent = w.bundle("resend");
    fieldsync_ok(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &f2.db,
        &"--to",
        &"hq",
        &"--resend",
        &"-o",
        &resent,
    ])?;
    hq.import(&[&resent])?;
    assert_eq!(held(&hq)?.len(), 1);

    // The administrator gives field-1's shelter another code and retries.
    hq.sql("UPDATE shelter SET code = 'S-101A' WHERE id = 's-a';")?;
    let retried = fieldsync_ok(&[&"conflicts", &"--db", &hq.db, &"--retry", &"--json"])?.json()?;
    assert_eq!(retried["retry"]["released"], 1);
    assert!(held(&hq)?.is_empty());
    assert_eq!(hq.count("SELECT count(*) FROM shelter")?, 2);

    // Everyone converges: field-1 clashes too until HQ's rename reaches it
    // with field-2's shelter.
    for _ in 0..2 {
        for f in [&f1, &f2] {
            w.exchange(&hq, f)?;
        }
    }
    for s in [&f1, &f2] {
        assert_eq!(s.rows("shelter")?, hq.rows("shelter")?, "{}", s.name);
        assert!(held(s)?.is_empty(), "{} still holds changes", s.name);
    }
    Ok(())
}

#[test]
fn a_child_of_a_location_deleted_at_hq_is_kept_in_quarantine_on_both_sides() -> Res {
    let w = World::new()?;
    let (hq, field, _) = w.three(RELIEF_SCHEMA)?;
    hq.sql("INSERT INTO location VALUES ('old', NULL, 'L2', 'Merged district');")?;
    w.send(&hq, &field)?;
    // HQ deletes the district while the officer adds a village under it.
    hq.sql("DELETE FROM location WHERE id = 'old';")?;
    field.sql(
        "PRAGMA foreign_keys = ON; INSERT INTO location VALUES ('vil', 'old', 'L3', 'Village');",
    )?;
    w.exchange(&field, &hq)?;

    // At HQ the village waits for its parent; at the field the delete waits
    // for its child. Nothing dangles and nothing is lost.
    let at_hq = held(&hq)?;
    assert_eq!(at_hq.len(), 1, "{at_hq:?}");
    assert_eq!(at_hq[0]["reason"], "missing parent");
    let at_field = held(&field)?;
    assert_eq!(at_field.len(), 1, "{at_field:?}");
    assert_eq!(at_field[0]["reason"], "still referenced");
    assert_eq!(dangling(&hq)?, "");
    assert_eq!(dangling(&field)?, "");
    assert_eq!(field.count("SELECT count(*) FROM location")?, 2);

    // The officer moves the village to a district that exists: everything fits.
    hq.sql("INSERT INTO location VALUES ('new', NULL, 'L2', 'New district');")?;
    w.send(&hq, &field)?;
    field.sql("UPDATE location SET parent = 'new' WHERE id = 'vil';")?;
    w.exchange(&field, &hq)?;
    w.exchange(&hq, &field)?;
    assert!(held(&hq)?.is_empty(), "{:?}", held(&hq)?);
    assert!(held(&field)?.is_empty(), "{:?}", held(&field)?);
    assert_eq!(hq.rows("location")?, field.rows("location")?);
    assert_eq!(
        hq.count("SELECT count(*) FROM location WHERE id = 'old'")?,
        0
    );
    Ok(())
}

#[test]
fn concurrent_edits_of_one_shelter_are_logged_with_what_lost() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) = w.three(RELIEF_SCHEMA)?;
    hq.sql(
        "INSERT INTO location VALUES ('g', NULL, 'L2', 'Galle');
         INSERT INTO shelter VALUES ('s1', 'S-001', 'g', 40);",
    )?;
    w.send(&hq, &f1)?;
    w.send(&hq, &f2)?;
    f1.sql("UPDATE shelter SET population = 120 WHERE id = 's1';")?;
    std::thread::sleep(std::time::Duration::from_millis(5));
    f2.sql("UPDATE shelter SET population = 135 WHERE id = 's1';")?;
    w.send(&f1, &hq)?;
    let (_, imported) = w.send(&f2, &hq)?;
    assert_eq!(num(&imported, "overwritten")?, 1);
    assert_eq!(hq.sql("SELECT population FROM shelter;")?.trim(), "135");
    let lost = overwritten(&hq)?;
    assert_eq!(lost.len(), 1, "{lost:?}");
    let e = &lost[0];
    assert_eq!(e["table"], "shelter");
    assert_eq!(e["key"], serde_json::json!({"id": "s1"}));
    assert_eq!(e["column"], "population");
    assert_eq!(e["loser_instance"], "field-1");
    assert_eq!(e["winner_instance"], "field-2");
    assert_eq!(e["reason"], "later edit");
    assert!(
        e["lost_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{e}"
    );

    // A normal update made after seeing the value is not a conflict.
    w.send(&hq, &f1)?;
    f1.sql("UPDATE shelter SET population = 150 WHERE id = 's1';")?;
    w.send(&f1, &hq)?;
    assert_eq!(overwritten(&hq)?.len(), 1);

    // The late value also shows at the instance where it lost.
    w.send(&hq, &f2)?;
    w.send(&f1, &f2)?;
    assert_eq!(f2.sql("SELECT population FROM shelter;")?.trim(), "150");
    Ok(())
}

#[test]
fn changes_relay_through_hq_keeping_their_origin_and_laptops_then_exchange_directly() -> Res {
    let w = World::new()?;
    let (hq, a, b) = w.three(RELIEF_SCHEMA)?;
    a.sql("INSERT INTO location VALUES ('a1', NULL, 'L2', 'From A');")?;
    w.send(&a, &hq)?;
    let (_, imported) = w.send(&hq, &b)?;
    assert_eq!(num(&imported, "applied")?, 1);
    assert_eq!(b.rows("location")?, a.rows("location")?);
    // B holds A's change as A's, not HQ's.
    let origin = b
        .origin("field-1")?
        .ok_or("field-2 does not know field-1")?;
    assert_eq!(text_of(&origin, "have"), "1");

    // A and B meet: B sends what A lacks and nothing A already has is applied twice.
    b.sql("INSERT INTO location VALUES ('b1', NULL, 'L2', 'From B');")?;
    let (_, imported) = w.send(&b, &a)?;
    assert_eq!(num(&imported, "applied")?, 1);
    let (_, back) = w.send(&a, &b)?;
    assert_eq!(num(&back, "applied")?, 0);
    // HQ gets B's change from both routes without a duplicate.
    w.send(&a, &hq)?;
    w.send(&b, &hq)?;
    assert_eq!(hq.count("SELECT count(*) FROM location")?, 2);
    for s in [&a, &b] {
        assert_eq!(s.rows("location")?, hq.rows("location")?);
    }
    Ok(())
}

#[test]
fn the_demo_runs_to_the_end() -> Res {
    let w = World::new()?;
    let dir = w.path("demo");
    let out = fieldsync_ok(&[&"demo", &"--dir", &dir])?;
    for needle in [
        "All three databases hold the same rows",
        "have different ids on different instances",
    ] {
        assert!(out.stdout.contains(needle), "{needle}: {}", out.stdout);
    }
    let sites: Vec<Site> = ["hq", "field-1", "field-2"]
        .iter()
        .map(|name| Site {
            name: (*name).into(),
            db: dir.join(format!("{name}.db")),
        })
        .collect();
    let [hq, f1, f2] = sites.as_slice() else {
        return Err("three sites".into());
    };

    // The laptops gave the same ids to different records.
    let id_of = |s: &Site, code: &str| {
        s.count(&format!(
            "SELECT id FROM gis_location WHERE code = '{code}'"
        ))
    };
    // (Unawatuna was field-1's first new location, Ampara field-2's.)
    assert_eq!(id_of(f1, "LK-2-1-01")?, id_of(f2, "LK-3-3")?);
    assert_ne!(id_of(f1, "LK-2-1-01")?, id_of(f2, "LK-2-1-01")?);
    assert_eq!(
        f1.count("SELECT id FROM cr_shelter WHERE name = 'Unawatuna temple'")?,
        f2.count("SELECT id FROM cr_shelter WHERE name = 'Kalmunai mosque'")?
    );

    // Every instance holds the same rows by uuid, each reference naming
    // the same parent row (by uuid), while local ids differ.
    let by_uuid = [
        "SELECT c.uuid, c.name, c.level, c.code, p.uuid FROM gis_location c \
         LEFT JOIN gis_location p ON p.id = c.parent ORDER BY c.uuid;",
        "SELECT c.uuid, c.first_name, c.missing_status, c.comments, l.uuid, o.uuid FROM pr_person c \
         LEFT JOIN gis_location l ON l.id = c.location_id \
         LEFT JOIN org_organisation o ON o.id = c.organisation_id ORDER BY c.uuid;",
        "SELECT c.uuid, c.code, c.capacity, c.population, l.uuid, o.uuid FROM cr_shelter c \
         LEFT JOIN gis_location l ON l.id = c.location_id \
         LEFT JOIN org_organisation o ON o.id = c.organisation_id ORDER BY c.uuid;",
        "SELECT c.uuid, c.item, s.uuid FROM req_req c \
         LEFT JOIN cr_shelter s ON s.id = c.shelter_id ORDER BY c.uuid;",
        "SELECT * FROM field_options ORDER BY 1, 2, 3;",
    ];
    for sql in by_uuid {
        let reference = hq.sql(sql)?;
        assert!(!reference.is_empty(), "{sql}");
        for s in [f1, f2] {
            assert_eq!(s.sql(sql)?, reference, "{} {sql}", s.name);
        }
    }
    let ids = |s: &Site| s.sql("SELECT uuid, id FROM gis_location ORDER BY uuid;");
    assert_ne!(ids(f1)?, ids(f2)?);
    assert_ne!(ids(hq)?, ids(f1)?);
    for s in [hq, f1, f2] {
        // Nothing points nowhere, nothing is held, the engine's state holds.
        assert_eq!(dangling(s)?, "", "{}", s.name);
        assert!(held(s)?.is_empty(), "{}", s.name);
        fieldsync_ok(&[&"check", &"--db", &s.db])?;
        assert_eq!(
            s.sql("SELECT code, capacity, population FROM cr_shelter ORDER BY code;")?,
            "S-001|400|135\nS-101|80|25\nS-102|150|60\n",
            "{}",
            s.name
        );
        assert_eq!(
            s.sql(
                "SELECT first_name, missing_status FROM pr_person \
                 WHERE last_name IN ('Perera', 'Fernando') ORDER BY 1;"
            )?,
            "Amal|found\nKasun|found\n",
            "{}",
            s.name
        );
        assert_eq!(
            s.sql("SELECT s.code FROM req_req r JOIN cr_shelter s ON s.id = r.shelter_id;")?,
            "S-101\n",
            "{}",
            s.name
        );
    }
    // The two laptops' counts of S-001 met at HQ: the later one won.
    let conflicts = overwritten(hq)?;
    assert!(
        conflicts.iter().any(|c| c["column"] == "population"),
        "{conflicts:?}"
    );
    // Running it again into the same directory is refused plainly.
    let again = fieldsync(&[&"demo", &"--dir", &dir])?;
    assert_error(&again, 1, &["already holds a demo"]);
    Ok(())
}

#[test]
fn two_new_rows_pointing_at_each_other_are_applied_together() -> Res {
    let schema = "
        CREATE TABLE team(id TEXT PRIMARY KEY, lead TEXT REFERENCES member(id), name TEXT);
        CREATE TABLE member(id TEXT PRIMARY KEY, team TEXT REFERENCES team(id), name TEXT);";
    let w = World::new()?;
    let (hq, field, _) = w.three(schema)?;
    field.sql(
        "PRAGMA foreign_keys = ON;
         INSERT INTO team VALUES ('t1', NULL, 'Water');
         INSERT INTO member VALUES ('m1', 't1', 'Amal');
         UPDATE team SET lead = 'm1' WHERE id = 't1';",
    )?;
    let (_, imported) = w.send(&field, &hq)?;
    // Each row alone points at a row not yet there; together they fit.
    assert_eq!(num(&imported, "applied")?, 2, "{imported}");
    assert_eq!(num(&imported, "quarantined")?, 0);
    assert_eq!(dangling(&hq)?, "");
    assert_eq!(hq.rows("team")?, field.rows("team")?);
    assert_eq!(hq.rows("member")?, field.rows("member")?);
    Ok(())
}

#[test]
fn a_renamed_code_and_its_cascaded_children_are_applied_together() -> Res {
    let schema = "
        CREATE TABLE site(id TEXT PRIMARY KEY, code TEXT NOT NULL UNIQUE, name TEXT);
        CREATE TABLE visit(id TEXT PRIMARY KEY,
          site_code TEXT REFERENCES site(code) ON UPDATE CASCADE, note TEXT);";
    let w = World::new()?;
    let (hq, field, _) = w.three(schema)?;
    hq.sql(
        "PRAGMA foreign_keys = ON;
         INSERT INTO site VALUES ('s1', 'A', 'Galle school');
         INSERT INTO visit VALUES ('v1', 'A', 'first visit');",
    )?;
    w.send(&hq, &field)?;
    // HQ renames the code; SQLite cascades it to the visit.
    hq.sql("PRAGMA foreign_keys = ON; UPDATE site SET code = 'B' WHERE id = 's1';")?;
    assert_eq!(hq.sql("SELECT site_code FROM visit;")?.trim(), "B");
    let (_, imported) = w.send(&hq, &field)?;
    assert_eq!(num(&imported, "quarantined")?, 0, "{imported}");
    assert_eq!(field.rows("site")?, hq.rows("site")?);
    assert_eq!(field.rows("visit")?, hq.rows("visit")?);
    assert_eq!(dangling(&field)?, "");
    Ok(())
}

// init --from refused a schema whose table referenced a table the bundle
// lacks (Sahana PHP's gis_features -> gis_feature_type, which the app never
// creates), and advised tracking a table that does not exist.
#[test]
fn init_from_sets_up_tables_referencing_integer_keyed_and_missing_tables() -> Res {
    let w = World::new()?;
    let hq = w.bare_site(
        "hq",
        "CREATE TABLE org(n INTEGER PRIMARY KEY, name TEXT);
         CREATE TABLE person(id TEXT PRIMARY KEY, org INTEGER REFERENCES org(n));
         CREATE TABLE gis_features(id TEXT PRIMARY KEY, kind TEXT REFERENCES gis_feature_type(id));
         INSERT INTO org(name) VALUES ('Red Cross'), ('UNICEF');
         INSERT INTO person VALUES ('p1', 2);
         INSERT INTO gis_features VALUES ('f1', 'point');",
    )?;
    fieldsync_ok(&[&"track", &"--db", &hq.db, &"--all"])?;
    let full = w.bundle("hq-full");
    hq.export_full(&full)?;
    let field = w.site_from("field-1", &full)?;
    let sql = "SELECT p.id, o.name FROM person p JOIN org o ON o.n = p.org";
    assert_eq!(field.sql(sql)?, hq.sql(sql)?);
    assert_eq!(field.sql("SELECT * FROM gis_features")?, "f1|point\n");
    Ok(())
}

/// Run `fieldsync ARGS` under `script`, which gives it a terminal; `None`
/// if `script` is not installed.
fn on_a_terminal(args: &str) -> Res<Option<String>> {
    let bin = env!("CARGO_BIN_EXE_fieldsync");
    let out = match std::process::Command::new("script")
        .args(["-qec", &format!("{bin} {args}"), "/dev/null"])
        .output()
    {
        Ok(out) => out,
        Err(_) => return Ok(None),
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}

#[test]
fn large_transfers_show_progress_on_a_terminal_and_nothing_otherwise() -> Res {
    let w = World::new()?;
    let hq = w.site(
        "hq",
        "CREATE TABLE blob(id INTEGER NOT NULL PRIMARY KEY, data BLOB) WITHOUT ROWID;",
    )?;
    // Incompressible rows, so the bundle passes the 4 MiB a bar waits for.
    hq.sql(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 120000)
         INSERT INTO blob SELECT i, randomblob(40) FROM n;",
    )?;
    let full = w.bundle("hq-full");
    let exported = hq.export_full(&full)?;
    assert_eq!(exported.stderr, "", "no terminal: nothing but the result");
    let quiet = w.path("quiet.db");
    let set_up = fieldsync_ok(&[
        &"init",
        &"--db",
        &quiet,
        &"--name",
        &"q",
        &"--from",
        &full,
        &"--expect-key",
        &signer_fingerprint(&full)?,
    ])?;
    assert_eq!(set_up.stderr, "");

    let db = w.path("shown.db");
    let Some(shown) = on_a_terminal(&format!(
        "init --db {} --name field-1 --from {} --expect-key {}",
        db.display(),
        full.display(),
        signer_fingerprint(&full)?
    ))?
    else {
        eprintln!("`script` is not installed: terminal progress not checked");
        return Ok(());
    };
    assert!(
        shown.contains("applying") && shown.contains("MiB"),
        "{shown}"
    );
    let db2 = w.path("json.db");
    let Some(json) = on_a_terminal(&format!(
        "init --db {} --name field-2 --from {} --json --expect-key {}",
        db2.display(),
        full.display(),
        signer_fingerprint(&full)?
    ))?
    else {
        return Ok(());
    };
    assert!(!json.contains("applying"), "{json}");
    let value: Json = serde_json::from_str(json.trim())?;
    assert_eq!(value["import"]["applied"], 120000);
    Ok(())
}

/// A Sahana-PHP-like app: text uuid keys, a keyless option table, an
/// autoincrement config table, a sessions table each instance keeps for
/// itself, and a view.
const SAHANA_PHP_SCHEMA: &str = "
    CREATE TABLE person_uuid(p_uuid VARCHAR(60) PRIMARY KEY, full_name VARCHAR(100), family_name VARCHAR(100));
    CREATE TABLE person_status(p_uuid VARCHAR(60) PRIMARY KEY REFERENCES person_uuid(p_uuid),
        opt_status VARCHAR(10), updated TEXT);
    CREATE INDEX person_status_opt ON person_status(opt_status);
    CREATE TABLE field_options(field_name VARCHAR(100), option_code VARCHAR(10), option_description VARCHAR(50));
    CREATE TABLE config(config_id INTEGER PRIMARY KEY AUTOINCREMENT, module_id VARCHAR(20),
        confkey VARCHAR(50) NOT NULL, value TEXT);
    CREATE TABLE sessions(session_id VARCHAR(64) PRIMARY KEY, sess_key VARCHAR(64),
        expiry BIGINT, data TEXT);
    CREATE INDEX sessions_expiry ON sessions(expiry);
    CREATE VIEW missing_people AS
        SELECT p.p_uuid, p.full_name, s.opt_status FROM person_uuid p
        JOIN person_status s USING (p_uuid) WHERE s.opt_status = 'mis';
    INSERT INTO person_uuid VALUES ('lk-1', 'Amal Perera', 'Perera'), ('lk-2', 'Bilal Khan', 'Khan');
    INSERT INTO person_status VALUES ('lk-1', 'mis', '2024-01-01'), ('lk-2', 'ali', '2024-01-02');
    INSERT INTO field_options VALUES ('opt_status', 'mis', 'Missing'), ('opt_status', 'ali', 'Alive'),
        ('opt_gender', 'f', 'Female');
    INSERT INTO config(module_id, confkey, value) VALUES ('mpr', 'mpr_pages', '10'), ('admin', 'theme', 'default');
    INSERT INTO sessions VALUES ('s-hq-1', 'k', 1700000000, 'user=admin');";

/// The app's objects in `sqlite3 DB .schema`, fieldsync's own left out,
/// sorted (a laptop creates them in another order).
fn app_schema(site: &Site) -> Res<Vec<String>> {
    let out = site.sql(".schema")?;
    let mut objects: Vec<String> = out
        .split(";\n")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .filter(|s| {
            let name = s
                .split_whitespace()
                .find(|w| {
                    !matches!(
                        w.to_ascii_uppercase().as_str(),
                        "CREATE"
                            | "UNIQUE"
                            | "TABLE"
                            | "INDEX"
                            | "VIEW"
                            | "TRIGGER"
                            | "IF"
                            | "NOT"
                            | "EXISTS"
                    )
                })
                .unwrap_or_default()
                .trim_matches(|c| c == '"' || c == '[' || c == ']' || c == '`');
            !name.starts_with("fieldsync_")
        })
        .collect();
    objects.sort();
    Ok(objects)
}

#[test]
fn init_from_creates_untracked_tables_empty_and_the_views_of_a_sahana_php_like_app() -> Res {
    let w = World::new()?;
    let hq = w.bare_site("hq", SAHANA_PHP_SCHEMA)?;
    fieldsync_ok(&[
        &"track",
        &"--db",
        &hq.db,
        &"--all",
        &"--except",
        &"sessions",
    ])?;
    let full = w.bundle("hq-full");
    hq.export_full(&full)?;

    let inspected = fieldsync_ok(&[&"inspect", &full, &"--json"])?.json()?;
    assert_eq!(inspected["local_tables"], serde_json::json!(["sessions"]));
    assert_eq!(inspected["views"], serde_json::json!(["missing_people"]));

    let db = w.path("field.db");
    let out = fieldsync_ok(&[
        &"init",
        &"--db",
        &db,
        &"--name",
        &"field-1",
        &"--from",
        &full,
        &"--expect-key",
        &signer_fingerprint(&full)?,
    ])?;
    assert!(
        out.stdout.contains(
            "Created empty, as they are local to each instance (not tracked at 'hq'): sessions."
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Created views: missing_people."),
        "{}",
        out.stdout
    );
    let field = Site {
        name: "field-1".into(),
        db,
    };
    enrol_dbs(&hq.db, &field.db)?;

    // Every app object HQ has, and nothing else.
    assert_eq!(app_schema(&field)?, app_schema(&hq)?);
    assert!(
        app_schema(&field)?
            .iter()
            .any(|s| s.starts_with("CREATE INDEX sessions_expiry")),
        "{:?}",
        app_schema(&field)?
    );
    // The tracked tables' rows, no sessions, and the view works.
    for table in ["person_uuid", "person_status"] {
        assert_eq!(field.rows(table)?, hq.rows(table)?, "table {table}");
    }
    let options = "SELECT * FROM field_options ORDER BY 1, 2";
    assert_eq!(field.sql(options)?, hq.sql(options)?);
    let config = "SELECT module_id, confkey, value FROM config ORDER BY confkey";
    assert_eq!(field.sql(config)?, hq.sql(config)?);
    assert_eq!(field.count("SELECT count(*) FROM sessions")?, 0);
    let view = "SELECT * FROM missing_people";
    assert_eq!(field.sql(view)?, "lk-1|Amal Perera|mis\n");
    assert_eq!(
        tracked_tables(&field.db)?,
        vec!["config", "field_options", "person_status", "person_uuid"]
    );
    fieldsync_ok(&[&"check", &"--db", &field.db])?;

    // The app runs on the laptop: it logs in (sessions), adds a config
    // entry and a person; only the tracked rows travel back.
    field.sql(
        "INSERT INTO sessions VALUES ('s-field-1', 'k', 1700000100, 'user=officer');
         INSERT INTO config(module_id, confkey, value) VALUES ('mpr', 'mpr_field', '1');
         INSERT INTO person_uuid VALUES ('lk-3', 'Chen Wei', 'Chen');
         INSERT INTO person_status VALUES ('lk-3', 'mis', '2024-02-01');",
    )?;
    let back = w.bundle("field-to-hq");
    let exported = field.export_to("hq", &back)?;
    assert_eq!(num(&exported, "changes")?, 3, "{exported}");
    hq.import(&[&back])?;
    assert_eq!(field.sql(view)?, hq.sql(view)?);
    assert_eq!(field.sql(config)?, hq.sql(config)?);
    assert_eq!(
        hq.sql("SELECT session_id FROM sessions")?,
        "s-hq-1\n",
        "a session travelled"
    );
    Ok(())
}

#[test]
fn init_from_reports_local_tables_and_views_in_json() -> Res {
    let w = World::new()?;
    let hq = w.bare_site("hq", SAHANA_PHP_SCHEMA)?;
    fieldsync_ok(&[&"track", &"--db", &hq.db, &"--all", &"--except", &"sess*"])?;
    let full = w.bundle("hq-full");
    hq.export_full(&full)?;
    let db = w.path("field.db");
    let report = fieldsync_ok(&[
        &"init",
        &"--db",
        &db,
        &"--name",
        &"field-1",
        &"--from",
        &full,
        &"--expect-key",
        &signer_fingerprint(&full)?,
        &"--json",
    ])?
    .json()?;
    assert_eq!(report["local_tables"], serde_json::json!(["sessions"]));
    assert_eq!(report["views"], serde_json::json!(["missing_people"]));
    assert_eq!(report["tables"].as_array().map(Vec::len), Some(4));
    Ok(())
}

#[test]
fn export_full_warns_that_the_apps_triggers_are_not_carried() -> Res {
    let w = World::new()?;
    let hq = w.bare_site(
        "hq",
        "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT, updated TEXT);
         CREATE TRIGGER person_touch AFTER UPDATE OF name ON person
           BEGIN UPDATE person SET updated = 'now' WHERE id = NEW.id; END;",
    )?;
    fieldsync_ok(&[&"track", &"--db", &hq.db, &"--all"])?;
    let full = w.bundle("hq-full");
    let out = hq.export_full(&full)?;
    assert!(
        out.stderr
            .contains("warning: the app's triggers are not in the full export")
            && out.stderr.contains("person_touch"),
        "{}",
        out.stderr
    );
    let db = w.path("field.db");
    fieldsync_ok(&[
        &"init",
        &"--db",
        &db,
        &"--name",
        &"field-1",
        &"--from",
        &full,
        &"--expect-key",
        &signer_fingerprint(&full)?,
    ])?;
    let app_triggers = "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' \
                        AND name NOT LIKE 'fieldsync%'";
    assert_eq!(count(&db, app_triggers)?, 0);
    // A delta export says nothing of it.
    let delta = w.bundle("delta");
    let out = fieldsync_ok(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--to",
        &"field-1",
        &"-o",
        &delta,
    ])?;
    assert!(!out.stderr.contains("triggers"), "{}", out.stderr);
    Ok(())
}

/// A full bundle for table `t(id, v)` carrying these local tables and views.
fn write_bundle_with_local(path: &Path, local: &[(&str, &[&str])], views: &[(&str, &str)]) -> Res {
    write_full_bundle(
        path,
        &["CREATE TABLE t(id TEXT PRIMARY KEY, v TEXT)"],
        local
            .iter()
            .map(|(name, schema)| LocalTable {
                name: name.to_string(),
                schema: schema.iter().map(|s| s.to_string()).collect(),
            })
            .collect(),
        views
            .iter()
            .map(|(name, sql)| ViewDef {
                name: name.to_string(),
                sql: sql.to_string(),
            })
            .collect(),
    )
}

#[test]
fn hostile_local_tables_and_views_are_refused_and_leave_nothing_behind() -> Res {
    let w = World::new()?;
    let (victim, before) = victim(&w)?;
    type Case<'a> = (
        &'a [(&'a str, &'a [&'a str])],
        &'a [(&'a str, &'a str)],
        &'a str,
    );
    let cases: &[Case] = &[
        // A view that is really a DROP.
        (&[], &[("v", "DROP TABLE precious")], "view 'v' was refused"),
        // A view followed by another statement.
        (
            &[],
            &[("v", "CREATE VIEW v AS SELECT 1; DROP TABLE precious")],
            "view 'v' was refused",
        ),
        // A trigger posing as a view.
        (
            &[],
            &[(
                "v",
                "CREATE TRIGGER v AFTER INSERT ON precious BEGIN DELETE FROM precious; END",
            )],
            "view 'v' was refused",
        ),
        // A view named like an engine table.
        (
            &[],
            &[("fieldsync_x", "CREATE VIEW fieldsync_x AS SELECT 1")],
            "belong to fieldsync",
        ),
        // A temporary view.
        (
            &[],
            &[("v", "CREATE TEMP VIEW v AS SELECT 1")],
            "view 'v' was refused",
        ),
        // A local table statement creating another table.
        (
            &[("sessions", &["CREATE TABLE precious2(x)"])],
            &[],
            "local table 'sessions' was refused",
        ),
        // A trigger smuggled in as a local table's index.
        (
            &[(
                "sessions",
                &[
                    "CREATE TABLE sessions(id TEXT)",
                    "CREATE TRIGGER s AFTER INSERT ON t BEGIN DELETE FROM precious; END",
                ],
            )],
            &[],
            "local table 'sessions' was refused",
        ),
        // A local table named like SQLite's own.
        (
            &[(
                "sqlite_stat1",
                &["CREATE TABLE sqlite_stat1(tbl, idx, stat)"],
            )],
            &[],
            "belong to SQLite",
        ),
        // A local table that is the tracked table again.
        (
            &[("T", &["CREATE TABLE T(id TEXT PRIMARY KEY, v TEXT)"])],
            &[],
            "another table or view of that name",
        ),
    ];
    for (i, (local, views, needle)) in cases.iter().enumerate() {
        let evil = w.path(&format!("evil-{i}.fsb"));
        write_bundle_with_local(&evil, local, views)?;
        let out = fieldsync(&[
            &"init",
            &"--db",
            &victim,
            &"--name",
            &"field-1",
            &"--from",
            &evil,
            &"--expect-key",
            &signer_fingerprint(&evil)?,
        ])?;
        assert_error(&out, 1, &[needle, "nothing was changed"]);
        assert_eq!(db_fingerprint(&victim)?, before, "case {i}");
        let fresh = w.path(&format!("fresh-{i}.db"));
        let out = fieldsync(&[
            &"init",
            &"--db",
            &fresh,
            &"--name",
            &"field-1",
            &"--from",
            &evil,
            &"--expect-key",
            &signer_fingerprint(&evil)?,
        ])?;
        assert_error(&out, 1, &[needle]);
        assert!(!fresh.exists(), "case {i} left {fresh:?}");
    }

    // A database that already has an object of a local table's or view's
    // name is left alone.
    for (i, (local, views)) in [
        (
            &[("precious", &["CREATE TABLE precious(x)"][..])][..],
            &[][..],
        ),
        (&[], &[("precious", "CREATE VIEW precious AS SELECT 1")][..]),
    ]
    .iter()
    .enumerate()
    {
        let bundle = w.path(&format!("taken-{i}.fsb"));
        write_bundle_with_local(&bundle, local, views)?;
        let out = fieldsync(&[
            &"init",
            &"--db",
            &victim,
            &"--name",
            &"field-1",
            &"--from",
            &bundle,
            &"--expect-key",
            &signer_fingerprint(&bundle)?,
        ])?;
        assert_error(&out, 1, &["already has a table named 'precious'"]);
        assert_eq!(db_fingerprint(&victim)?, before);
    }
    Ok(())
}
