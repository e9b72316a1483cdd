//! Every table of an unmodified app, through the real CLI and the system
//! `sqlite3` shell: tables keyed by local integer ids (Sahana Eden's `id` +
//! `uuid`, autoincrement ids, ids an app numbers `MAX+1`), tables without a
//! primary key (Sahana PHP's option tables), references between them
//! translated, references that cannot be followed carried as they are, and
//! what the app's `ON DELETE` says. Every outcome is checked by content on
//! every instance: the same rows, each reference pointing at the right row.

use crate::util::*;

/// Sahana Eden's shape: integer ids, a unique uuid, integer references,
/// foreign keys on in the app.
pub(crate) const EDEN: &str = "
PRAGMA foreign_keys = ON;
CREATE TABLE gis_location(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  uuid CHAR(128) NOT NULL UNIQUE,
  name TEXT NOT NULL,
  level TEXT,
  parent INTEGER REFERENCES gis_location(id) ON DELETE RESTRICT
);
CREATE TABLE org_organisation(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  uuid CHAR(128) NOT NULL UNIQUE,
  name TEXT NOT NULL
);
CREATE TABLE pr_person(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  uuid CHAR(128) NOT NULL UNIQUE,
  first_name TEXT,
  location_id INTEGER REFERENCES gis_location(id) ON DELETE RESTRICT,
  organisation_id INTEGER REFERENCES org_organisation(id) ON DELETE CASCADE
);
CREATE TABLE pr_contact(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  uuid CHAR(128) NOT NULL UNIQUE,
  person_id INTEGER REFERENCES pr_person(id) ON DELETE SET NULL,
  value TEXT
);";

/// Sahana PHP's shape (its MySQL schema translated to SQLite): text uuid
/// keys, an autoincrement table, an option table without a key, references
/// to a table the app never creates and to a column that does not exist,
/// roles the app numbers `MAX+1`.
pub(crate) const PHP: &str = "
CREATE TABLE modules(name TEXT PRIMARY KEY);
CREATE TABLE config(
  config_id INTEGER PRIMARY KEY AUTOINCREMENT,
  module_id VARCHAR(20) REFERENCES modules(module_id),
  confkey VARCHAR(50) NOT NULL,
  value TEXT
);
CREATE TABLE field_options(field_name VARCHAR(100), option_code VARCHAR(50), option_description VARCHAR(50));
CREATE TABLE incident(
  incident_id INTEGER PRIMARY KEY AUTOINCREMENT,
  parent_id INTEGER REFERENCES incident(incident_id),
  name TEXT
);
CREATE TABLE gis_features(
  feature_uuid VARCHAR(60) PRIMARY KEY,
  feature_type VARCHAR(60) REFERENCES gis_feature_type(type_id),
  incident INTEGER REFERENCES incident(incident_id)
);
CREATE TABLE sys_user_groups(group_id INT PRIMARY KEY, group_name TEXT);
CREATE TABLE sessions(session_id TEXT PRIMARY KEY, data TEXT);";

fn track(site: &Site, extra: &[&str]) -> Res<Out> {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"track", &"--db", &site.db, &"--all"];
    for a in extra {
        args.push(a);
    }
    fieldsync_ok(&args)
}

/// HQ with `schema` and `rows`, tracked with `track_args`, and two laptops
/// set up from its full export.
pub(crate) fn hq_and_laptops(
    w: &World,
    schema: &str,
    rows: &str,
    track_args: &[&str],
) -> Res<(Site, Site, Site)> {
    let hq = w.bare_site("hq", schema)?;
    hq.sql(rows)?;
    track(&hq, track_args)?;
    let full = w.bundle("hq-full");
    hq.export_full(&full)?;
    Ok((
        hq,
        w.site_from("field-1", &full)?,
        w.site_from("field-2", &full)?,
    ))
}

/// Bring all three to the same state: laptops to HQ, HQ back to both.
pub(crate) fn sync(w: &World, hq: &Site, f1: &Site, f2: &Site) -> Res {
    w.send(f1, hq)?;
    w.send(f2, hq)?;
    w.send(hq, f1)?;
    w.send(hq, f2)?;
    Ok(())
}

/// The same query on every instance gives the same, expected answer, and
/// `fieldsync check` is clean everywhere.
fn agree(sites: &[&Site], sql: &str, expected: &str) -> Res {
    for s in sites {
        assert_eq!(s.sql(sql)?, expected, "{} for {sql}", s.name);
        fieldsync_ok(&[&"check", &"--db", &s.db])?;
    }
    Ok(())
}

pub(crate) const EDEN_ROWS: &str = "
PRAGMA foreign_keys = ON;
INSERT INTO gis_location(uuid, name, level) VALUES ('u-lk', 'Sri Lanka', 'L0');
INSERT INTO gis_location(uuid, name, level, parent) VALUES ('u-south', 'Southern', 'L1', 1);
INSERT INTO org_organisation(uuid, name) VALUES ('u-rc', 'Red Cross');";

const PEOPLE: &str = "SELECT p.uuid, p.first_name, l.uuid, l.name, pl.uuid, o.uuid
  FROM pr_person p JOIN gis_location l ON l.id = p.location_id
  LEFT JOIN gis_location pl ON pl.id = l.parent
  JOIN org_organisation o ON o.id = p.organisation_id ORDER BY p.uuid;";

// Before: `track --all` refused every Eden table ("INTEGER PRIMARY KEY ...
// not supported"), said "no table was tracked" and exited 0.
#[test]
fn eden_laptops_creating_the_same_ids_end_with_distinct_rows_and_right_references() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) = hq_and_laptops(&w, EDEN, EDEN_ROWS, &["--identity", "uuid"])?;
    // Both laptops number their new village 3 and their new person 1.
    for (f, v, p) in [(&f1, "u-v1", "u-p1"), (&f2, "u-v2", "u-p2")] {
        f.sql(&format!(
            "PRAGMA foreign_keys = ON;
             INSERT INTO gis_location(uuid, name, level, parent) VALUES ('{v}', 'Village {v}', 'L2', 2);
             INSERT INTO pr_person(uuid, first_name, location_id, organisation_id) VALUES ('{p}', 'Name {p}', 3, 1);"
        ))?;
        assert_eq!(f.sql("SELECT max(id) FROM gis_location;")?, "3\n");
    }
    sync(&w, &hq, &f1, &f2)?;
    agree(
        &[&hq, &f1, &f2],
        PEOPLE,
        "u-p1|Name u-p1|u-v1|Village u-v1|u-south|u-rc\n\
         u-p2|Name u-p2|u-v2|Village u-v2|u-south|u-rc\n",
    )?;
    // Local ids differ between instances; every reference holds.
    let at = |s: &Site, id: u32| s.sql(&format!("SELECT uuid FROM gis_location WHERE id = {id};"));
    assert_eq!(
        (at(&f1, 3)?, at(&f1, 4)?),
        ("u-v1\n".into(), "u-v2\n".into())
    );
    assert_eq!(
        (at(&f2, 3)?, at(&f2, 4)?),
        ("u-v2\n".into(), "u-v1\n".into())
    );
    for s in [&hq, &f1, &f2] {
        assert_eq!(dangling(s)?, "");
    }
    // Re-sent bundles create no duplicates.
    let again = w.bundle("again");
    fieldsync_ok(&[
        &"export",
        &"--db",
        &f1.db,
        &"--to",
        &"hq",
        &"--resend",
        &"-o",
        &again,
    ])?;
    hq.import(&[&again])?;
    assert_eq!(hq.count("SELECT count(*) FROM pr_person")?, 2);

    // Re-pointing a reference is an update of the row that travels.
    f2.sql("PRAGMA foreign_keys = ON; UPDATE pr_person SET location_id = (SELECT id FROM gis_location WHERE uuid = 'u-v1') WHERE uuid = 'u-p2';")?;
    sync(&w, &hq, &f1, &f2)?;
    agree(
        &[&hq, &f1, &f2],
        "SELECT p.uuid, l.uuid FROM pr_person p JOIN gis_location l ON l.id = p.location_id ORDER BY 1;",
        "u-p1|u-v1\nu-p2|u-v1\n",
    )?;
    Ok(())
}

// A received row must get a local id the app's own later inserts never
// reuse, with AUTOINCREMENT (sqlite_sequence) and with plain max(rowid)+1.
#[test]
fn received_rows_get_local_ids_the_app_never_reuses() -> Res {
    let schema = "CREATE TABLE a(id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);
                  CREATE TABLE b(id INTEGER PRIMARY KEY, v TEXT);";
    let w = World::new()?;
    let hq = w.site("hq", schema)?;
    let f1 = w.site("field-1", schema)?;
    hq.sql("INSERT INTO a(v) VALUES ('hq-a1'), ('hq-a2'); INSERT INTO b(v) VALUES ('hq-b1'), ('hq-b2');")?;
    f1.sql("INSERT INTO a(v) VALUES ('f-a1'); INSERT INTO b(v) VALUES ('f-b1');")?;
    w.send(&hq, &f1)?;
    // The app then inserts as usual: new ids, no clash.
    f1.sql("INSERT INTO a(v) VALUES ('f-a2'); INSERT INTO b(v) VALUES ('f-b2');")?;
    assert_eq!(
        f1.sql("SELECT id, v FROM a ORDER BY id; SELECT id, v FROM b ORDER BY id;")?,
        "1|f-a1\n2|hq-a1\n3|hq-a2\n4|f-a2\n1|f-b1\n2|hq-b1\n3|hq-b2\n4|f-b2\n"
    );
    assert_eq!(
        f1.sql("SELECT seq FROM sqlite_sequence WHERE name = 'a';")?,
        "4\n"
    );
    w.exchange(&f1, &hq)?;
    agree(
        &[&hq, &f1],
        "SELECT v FROM a ORDER BY v; SELECT v FROM b ORDER BY v;",
        "f-a1\nf-a2\nhq-a1\nhq-a2\nf-b1\nf-b2\nhq-b1\nhq-b2\n",
    )?;
    Ok(())
}

// A hierarchy keyed by integers arriving children first (the quarantine
// waits for the parent), then both laptops' subtrees merged.
#[test]
fn an_integer_keyed_hierarchy_arrives_in_any_order() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) = hq_and_laptops(
        &w,
        PHP,
        "INSERT INTO incident(name) VALUES ('Tsunami');",
        &["--except", "sessions"],
    )?;
    f1.sql(
        "INSERT INTO incident(parent_id, name) VALUES (1, 'Galle');
         INSERT INTO incident(parent_id, name) VALUES (2, 'Unawatuna');",
    )?;
    // Week 1's bundle goes missing for a while; week 2's child comes first.
    let week1 = w.bundle("week1");
    f1.export_to("hq", &week1)?;
    f1.sql("INSERT INTO incident(parent_id, name) VALUES (3, 'Unawatuna beach');")?;
    let week2 = w.bundle("week2");
    f1.export_to("hq", &week2)?;
    let imported = hq.import(&[&week2])?;
    assert_eq!(num(&imported, "quarantined")?, 1, "{imported}");
    let imported = hq.import(&[&week1])?;
    assert_eq!(num(&imported, "released")?, 1, "{imported}");
    f2.sql("INSERT INTO incident(parent_id, name) VALUES (1, 'Matara');")?;
    sync(&w, &hq, &f1, &f2)?;
    agree(
        &[&hq, &f1, &f2],
        "SELECT c.name, p.name FROM incident c LEFT JOIN incident p ON p.incident_id = c.parent_id ORDER BY 1;",
        "Galle|Tsunami\nMatara|Tsunami\nTsunami|\nUnawatuna|Galle\nUnawatuna beach|Unawatuna\n",
    )?;
    for s in [&hq, &f1, &f2] {
        // (The whole-database check stops at config's reference to a
        // column that does not exist: "foreign key mismatch".)
        assert_eq!(s.sql("PRAGMA foreign_key_check(incident);")?, "");
        assert!(held(s)?.is_empty());
    }
    Ok(())
}

// Sahana PHP's option table has no primary key: track skipped it, so the
// default data the seed's HQ sends never reached the field.
#[test]
fn option_tables_without_a_key_keep_duplicates_updates_and_survive_vacuum() -> Res {
    let w = World::new()?;
    let defaults = "INSERT INTO field_options VALUES
        ('opt_status', 'mis', 'Missing'), ('opt_status', 'fnd', 'Found'), ('opt_status', 'fnd', 'Found'),
        ('opt_gender', 'm', 'Male'), ('opt_gender', 'f', 'Female');";
    let (hq, f1, f2) = hq_and_laptops(&w, PHP, defaults, &["--except", "sessions"])?;
    let all =
        "SELECT field_name, option_code, option_description FROM field_options ORDER BY 1, 2, 3;";
    // Identical duplicate rows keep their count.
    agree(
        &[&hq, &f1, &f2],
        "SELECT count(*) FROM field_options;",
        "5\n",
    )?;
    // Two officers edit different columns of one row: an update, both kept.
    f1.sql(
        "UPDATE field_options SET option_description = 'Missing person' WHERE option_code = 'mis';",
    )?;
    f2.sql("UPDATE field_options SET field_name = 'opt_state' WHERE option_code = 'mis';")?;
    // The same new option added on both laptops is one row.
    for f in [&f1, &f2] {
        f.sql("INSERT INTO field_options VALUES ('opt_status', 'inj', 'Injured');")?;
    }
    // One of the two identical rows deleted.
    f2.sql("DELETE FROM field_options WHERE rowid = (SELECT max(rowid) FROM field_options WHERE option_code = 'fnd');")?;
    sync(&w, &hq, &f1, &f2)?;
    let expected = "opt_gender|f|Female\nopt_gender|m|Male\nopt_state|mis|Missing person\n\
                    opt_status|fnd|Found\nopt_status|inj|Injured\n";
    agree(&[&hq, &f1, &f2], all, expected)?;

    // VACUUM renumbers the rowids of a table without a key or index; edits
    // made just before and after it still replicate, with no duplicate.
    f1.sql(
        "DELETE FROM field_options WHERE option_code = 'm';
         UPDATE field_options SET option_description = 'Woman' WHERE option_code = 'f';",
    )?;
    f1.sql("VACUUM;")?;
    f1.sql("INSERT INTO field_options VALUES ('opt_gender', 'x', 'Other');")?;
    f1.sql(
        "UPDATE field_options SET option_description = 'Found alive' WHERE option_code = 'fnd';",
    )?;
    sync(&w, &hq, &f1, &f2)?;
    let expected = "opt_gender|f|Woman\nopt_gender|x|Other\nopt_state|mis|Missing person\n\
                    opt_status|fnd|Found alive\nopt_status|inj|Injured\n";
    agree(&[&hq, &f1, &f2], all, expected)?;
    f2.sql("VACUUM;")?;
    fieldsync_ok(&[&"compact", &"--db", &f2.db])?;
    agree(&[&f2], all, expected)?;
    Ok(())
}

// config.module_id REFERENCES modules(module_id), a column that does not
// exist: every import that checked it failed whole with "no such column".
#[test]
fn references_that_cannot_be_followed_are_carried_as_they_are() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) = hq_and_laptops(
        &w,
        PHP,
        "INSERT INTO modules VALUES ('admin');
         INSERT INTO config(module_id, confkey, value) VALUES ('admin', 'theme', 'default');
         INSERT INTO gis_features VALUES ('g1', 'point', NULL);",
        &["--except", "sessions"],
    )?;
    f1.sql(
        "INSERT INTO config(module_id, confkey, value) VALUES ('gis', 'zoom', '7');
         INSERT INTO gis_features VALUES ('g2', 'polygon', NULL);",
    )?;
    sync(&w, &hq, &f1, &f2)?;
    agree(
        &[&hq, &f1, &f2],
        "SELECT module_id, confkey, value FROM config ORDER BY 2; SELECT * FROM gis_features ORDER BY 1;",
        "admin|theme|default\ngis|zoom|7\ng1|point|\ng2|polygon|\n",
    )?;
    // The sessions table is local: not tracked, its rows stay home.
    hq.sql("INSERT INTO sessions VALUES ('s1', 'secret');")?;
    assert!(!tracked_tables(&hq.db)?.contains(&"sessions".to_owned()));
    let file = w.bundle("hq-to-field-1");
    let exported = hq.export_to("field-1", &file)?;
    assert_eq!(num(&exported, "changes")?, 0, "{exported}");
    // The laptops have the table, empty, as the app expects.
    assert_eq!(f1.count("SELECT count(*) FROM sessions")?, 0);
    Ok(())
}

// A row whose reference already dangles at its sender (written with foreign
// keys off) was held in quarantine at every receiver, forever; and a local
// number naming no row at its sender, written as it was, later named
// another row at the receiver and travelled on as a real reference.
#[test]
fn a_reference_dangling_at_its_sender_arrives_as_it_is() -> Res {
    let w = World::new()?;
    let (hq, f1, _f2) = hq_and_laptops(&w, EDEN, EDEN_ROWS, &["--identity", "uuid"])?;
    f1.sql(
        "INSERT INTO pr_person(uuid, first_name, location_id, organisation_id) VALUES ('u-lost', 'Lost', 99, 1);
         INSERT INTO gis_location(uuid, name, level, parent) VALUES ('u-x', 'Nowhere', 'L2', 42);",
    )?;
    let (_, imported) = w.send(&f1, &hq)?;
    assert_eq!(num(&imported, "quarantined")?, 0, "{imported}");
    assert_eq!(num(&imported, "applied")?, 2, "{imported}");
    // A local number that names no row at the sender means nothing here
    // (here it could name another row): NULL. The reference that held
    // travels as the row it names.
    assert_eq!(
        hq.sql("SELECT location_id IS NULL, o.uuid FROM pr_person p JOIN org_organisation o ON o.id = p.organisation_id WHERE p.uuid = 'u-lost';")?,
        "1|u-rc\n"
    );
    assert_eq!(
        hq.sql("SELECT parent IS NULL FROM gis_location WHERE uuid = 'u-x';")?,
        "1\n"
    );
    assert!(held(&hq)?.is_empty());
    Ok(())
}

// Apps that number rows MAX(id)+1 in an INT (not INTEGER) key: two laptops'
// new roles silently merged into one row.
#[test]
fn app_numbered_int_keys_warn_and_stay_apart_with_local_key() -> Res {
    let w = World::new()?;
    let schema = "CREATE TABLE sys_user_groups(group_id INT PRIMARY KEY, group_name TEXT);
                  INSERT INTO sys_user_groups VALUES (1, 'admin');";
    let hq = w.bare_site("hq", schema)?;
    let out = fieldsync_ok(&[&"track", &"--db", &hq.db, &"--all"])?;
    assert!(
        out.stderr.contains("warning") && out.stderr.contains("--local-key sys_user_groups"),
        "{}",
        out.stderr
    );
    let w = World::new()?;
    let (hq, f1, f2) = hq_and_laptops(&w, schema, "", &["--local-key", "sys_user_groups"])?;
    for (f, name) in [(&f1, "field"), (&f2, "medic")] {
        f.sql(&format!(
            "INSERT INTO sys_user_groups VALUES ((SELECT max(group_id) + 1 FROM sys_user_groups), '{name}');"
        ))?;
    }
    sync(&w, &hq, &f1, &f2)?;
    agree(
        &[&hq, &f1, &f2],
        "SELECT group_name FROM sys_user_groups ORDER BY 1;",
        "admin\nfield\nmedic\n",
    )?;
    // The app's next role still gets a free number.
    hq.sql("INSERT INTO sys_user_groups VALUES ((SELECT max(group_id) + 1 FROM sys_user_groups), 'viewer');")?;
    assert_eq!(
        hq.count("SELECT count(DISTINCT group_id) FROM sys_user_groups")?,
        4
    );
    Ok(())
}

// A delete from HQ met children the origin never knew: held forever, though
// the app's schema says ON DELETE CASCADE / SET NULL.
#[test]
fn deletes_follow_the_schemas_on_delete_actions_for_local_children() -> Res {
    let w = World::new()?;
    let rows = format!(
        "{EDEN_ROWS}
         INSERT INTO org_organisation(uuid, name) VALUES ('u-un', 'UNICEF');
         INSERT INTO pr_person(uuid, first_name, location_id, organisation_id) VALUES ('u-p0', 'Zara', 2, 2);"
    );
    let (hq, f1, f2) = hq_and_laptops(&w, EDEN, &rows, &["--identity", "uuid"])?;
    // field-1 registers a person with UNICEF, and a contact for Zara;
    // field-2 a person in the Southern province.
    f1.sql(
        "PRAGMA foreign_keys = ON;
         INSERT INTO pr_person(uuid, first_name, location_id, organisation_id) VALUES ('u-p1', 'Amal', 2, 2);
         INSERT INTO pr_contact(uuid, person_id, value) VALUES ('u-c1', 1, '077 123');",
    )?;
    f2.sql(
        "PRAGMA foreign_keys = ON;
         INSERT INTO pr_person(uuid, first_name, location_id, organisation_id) VALUES ('u-p2', 'Bilal', 2, 1);",
    )?;
    // Meanwhile HQ removes UNICEF (its person Zara cascades away) and tries
    // to remove the province, which its own schema refuses while people
    // live there; it removes Zara's location from her first.
    hq.sql("PRAGMA foreign_keys = ON; DELETE FROM org_organisation WHERE uuid = 'u-un';")?;
    assert_eq!(hq.count("SELECT count(*) FROM pr_person")?, 0);
    hq.sql("PRAGMA foreign_keys = ON; DELETE FROM gis_location WHERE uuid = 'u-south';")?;
    // HQ's deletes reach the laptops: CASCADE removes field-1's Amal (and
    // SET NULL empties the contact of Zara, who cascaded away); RESTRICT
    // holds the province's delete at field-2, where Bilal lives in it.
    w.send(&hq, &f1)?;
    w.send(&hq, &f2)?;
    assert_eq!(f1.count("SELECT count(*) FROM pr_person")?, 0);
    assert_eq!(
        f1.sql("SELECT uuid, person_id IS NULL FROM pr_contact;")?,
        "u-c1|1\n"
    );
    let held2 = held(&f2)?;
    assert_eq!(held2.len(), 1, "{held2:?}");
    assert!(
        held2[0].to_string().contains("still referenced"),
        "{held2:?}"
    );
    // The cascaded changes are field-1's own and replicate.
    sync(&w, &hq, &f1, &f2)?;
    for s in [&hq, &f1, &f2] {
        assert_eq!(dangling(s)?, "", "{}", s.name);
        fieldsync_ok(&[&"check", &"--db", &s.db])?;
    }
    agree(
        &[&hq, &f1],
        "SELECT uuid, person_id IS NULL FROM pr_contact;",
        "u-c1|1\n",
    )?;
    Ok(())
}

// A keyless row's identity came from its values as stored, so two laptops'
// rows (3, 'urgent'), each pointing at its own person 3, were taken for one
// row and one laptop's tag ended on the other's person.
#[test]
fn keyless_rows_pointing_at_local_ids_are_told_apart_by_what_they_point_at() -> Res {
    let schema = "CREATE TABLE person(id INTEGER PRIMARY KEY, name TEXT);
                  CREATE TABLE person_tag(person INTEGER REFERENCES person(id), tag TEXT);";
    let w = World::new()?;
    let (hq, f1, f2) =
        hq_and_laptops(&w, schema, "INSERT INTO person(name) VALUES ('Zara');", &[])?;
    for (f, name) in [(&f1, "Amal"), (&f2, "Bilal")] {
        f.sql(&format!(
            "INSERT INTO person(name) VALUES ('{name}');
             INSERT INTO person_tag VALUES (2, 'urgent'), (1, 'seen');"
        ))?;
    }
    sync(&w, &hq, &f1, &f2)?;
    agree(
        &[&hq, &f1, &f2],
        "SELECT p.name, t.tag FROM person_tag t JOIN person p ON p.id = t.person ORDER BY 1, 2;",
        "Amal|urgent\nBilal|urgent\nZara|seen\n",
    )?;
    Ok(())
}

// Review: the receiver cascaded a delete onto a child the deleting instance
// knew and kept (its app deletes with foreign keys off), and sent that
// delete back; and a SET NULL on a NOT NULL column failed the whole import,
// and so every import from that peer after it.
#[test]
fn a_cascade_spares_children_the_origin_kept_and_never_fails_an_import() -> Res {
    let schema = "CREATE TABLE org(id INTEGER PRIMARY KEY, name TEXT);
                  CREATE TABLE person(id INTEGER PRIMARY KEY, name TEXT,
                    org INTEGER REFERENCES org(id) ON DELETE CASCADE);
                  CREATE TABLE badge(id INTEGER PRIMARY KEY,
                    person INTEGER NOT NULL REFERENCES person(id) ON DELETE SET NULL);";
    let w = World::new()?;
    let (hq, f1, _f2) = hq_and_laptops(
        &w,
        schema,
        "INSERT INTO org(name) VALUES ('RC'); INSERT INTO person(name, org) VALUES ('Ann', 1);",
        &[],
    )?;
    // HQ's app deletes the organisation with foreign keys off: Ann stays.
    hq.sql("DELETE FROM org;")?;
    let (_, imported) = w.send(&hq, &f1)?;
    assert_eq!(num(&imported, "quarantined")?, 1, "{imported}");
    assert_eq!(f1.sql("SELECT name FROM person;")?, "Ann\n");
    // A badge of field-1's own on Bob, whom HQ deletes: SET NULL cannot
    // empty a NOT NULL column, so the delete is held; the import succeeds.
    hq.sql("INSERT INTO person(name) VALUES ('Bob');")?;
    w.send(&hq, &f1)?;
    f1.sql("INSERT INTO badge(person) VALUES ((SELECT id FROM person WHERE name = 'Bob'));")?;
    hq.sql("DELETE FROM person WHERE name = 'Bob';")?;
    let (_, imported) = w.send(&hq, &f1)?;
    assert_eq!(num(&imported, "quarantined")?, 1, "{imported}");
    assert_eq!(f1.sql("SELECT name FROM person ORDER BY 1;")?, "Ann\nBob\n");
    fieldsync_ok(&[&"check", &"--db", &f1.db])?;
    Ok(())
}

// Review: an instance that does not track the referenced table sent plain
// local numbers, which the receiver (tracking both) wrote as they were: a
// reference to whatever row had that number there.
#[test]
fn plain_local_numbers_for_a_translated_column_are_refused() -> Res {
    let schema = "CREATE TABLE p(id INTEGER PRIMARY KEY, name TEXT);
                  CREATE TABLE c(id TEXT PRIMARY KEY, pid INTEGER REFERENCES p(id));";
    let w = World::new()?;
    let a = w.bare_site("a", schema)?;
    fieldsync_ok(&[&"track", &"--db", &a.db, &"c"])?;
    let b = w.site("b", schema)?;
    a.sql("INSERT INTO p(name) VALUES ('at a'); INSERT INTO c VALUES ('c1', 1);")?;
    b.sql("INSERT INTO p(name) VALUES ('at b');")?;
    let file = w.bundle("a-to-b");
    a.export_to("b", &file)?;
    b.import_refused(
        &[&file],
        &["column 'pid' of table 'c'", "track 'p' the same way"],
    )?;
    Ok(())
}

// A key made of another table's local numbers names different rows on
// different instances; track said nothing about it.
#[test]
fn a_key_made_of_local_numbers_is_warned_about() -> Res {
    let w = World::new()?;
    let s = w.bare_site(
        "hq",
        "CREATE TABLE person(id INTEGER PRIMARY KEY, name TEXT);
         CREATE TABLE person_lang(person INTEGER REFERENCES person(id), lang TEXT,
                                  PRIMARY KEY(person, lang));",
    )?;
    let out = track(&s, &[])?;
    assert!(
        out.stderr
            .contains("the key of table 'person_lang' includes person"),
        "{}",
        out.stderr
    );
    Ok(())
}

// A column added to a table without a key changes every row's content
// signature (how its rows are found again after SQLite renumbers them): a
// VACUUM after the upgrade must not take every row for a new one, and a
// migration that rebuilds the table (renumbering its rows) must not either.
#[test]
fn an_upgraded_option_table_without_a_key_keeps_its_rows_through_vacuum_and_rebuild() -> Res {
    let w = World::new()?;
    let defaults = "INSERT INTO field_options VALUES
        ('opt_status', 'mis', 'Missing'), ('opt_status', 'fnd', 'Found'), ('opt_status', 'fnd', 'Found'),
        ('opt_gender', 'm', 'Male'), ('opt_gender', 'f', 'Female');
        DELETE FROM field_options WHERE option_code = 'm';";
    let (hq, f1, f2) = hq_and_laptops(&w, PHP, defaults, &["--except", "sessions"])?;
    let all = "SELECT field_name, option_code, option_description, ifnull(sort, '-') \
               FROM field_options ORDER BY 1, 2, 3;";
    // HQ's upgrade adds a column with a default; the laptops get it from
    // HQ's bundles (they were set up from its file).
    hq.sql("ALTER TABLE field_options ADD COLUMN sort INTEGER DEFAULT 0;")?;
    hq.sql("UPDATE field_options SET sort = 5 WHERE option_code = 'f';")?;
    sync(&w, &hq, &f1, &f2)?;
    let expected = "opt_gender|f|Female|5\nopt_status|fnd|Found|0\nopt_status|fnd|Found|0\n\
                    opt_status|mis|Missing|0\n";
    agree(&[&hq, &f1, &f2], all, expected)?;
    // VACUUM renumbers the rows (a hole was left by the delete).
    for s in [&hq, &f1] {
        s.sql("VACUUM;")?;
    }
    f1.sql("UPDATE field_options SET option_description = 'Lost' WHERE option_code = 'mis';")?;
    sync(&w, &hq, &f1, &f2)?;
    let expected = "opt_gender|f|Female|5\nopt_status|fnd|Found|0\nopt_status|fnd|Found|0\n\
                    opt_status|mis|Lost|0\n";
    agree(&[&hq, &f1, &f2], all, expected)?;
    // A migration at field-2 rebuilds the table with one more column; the
    // copy renumbers the rows. Then an officer edits a row.
    f2.sql(
        "CREATE TABLE fo_new(field_name VARCHAR(100), option_code VARCHAR(50), option_description VARCHAR(50), \
           sort INTEGER DEFAULT 0, hint TEXT);
         INSERT INTO fo_new(field_name, option_code, option_description, sort)
           SELECT field_name, option_code, option_description, sort FROM field_options ORDER BY option_code DESC;
         DROP TABLE field_options;
         ALTER TABLE fo_new RENAME TO field_options;
         UPDATE field_options SET hint = 'ask twice' WHERE option_code = 'mis';",
    )?;
    let out = fieldsync_ok(&[
        &"export",
        &"--db",
        &f2.db,
        &"--to",
        &"hq",
        &"-o",
        &w.path("f2.fsb"),
    ])?;
    assert!(
        out.stderr.contains("lost its capture triggers"),
        "{}",
        out.stderr
    );
    fieldsync_ok(&[&"import", &"--db", &hq.db, &w.path("f2.fsb")])?;
    let at_hq = hq.sql("SELECT count(*), sum(option_code = 'mis') FROM field_options;")?;
    assert_eq!(at_hq, "4|1\n", "no row came twice");
    fieldsync_ok(&[&"check", &"--db", &f2.db])?;
    fieldsync_ok(&[&"check", &"--db", &hq.db])?;
    Ok(())
}
