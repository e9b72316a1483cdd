//! `fieldsync import --dry-run` (issue 16 item 1) through the real binary:
//! the database file (and its `-wal`, and the directory it is in) byte for
//! byte the same afterwards, for a WAL and a rollback-journal database; the
//! preview's numbers equal what a real import on a copy then does (its
//! `--json` report and the rows `sqlite3` finds); concurrent edits with the
//! right winner both ways; quarantine (exit 3) and refusal (exit 1); the
//! JSON form; several files, one of them twice; a bundle on stdin.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;

use crate::tables::{EDEN, EDEN_ROWS, PHP};
use crate::util::*;

const PHP_ROWS: &str = "
INSERT INTO modules VALUES ('admin'), ('gis');
INSERT INTO config(module_id, confkey, value) VALUES ('admin', 'theme', 'blue'), ('gis', 'zoom', '7');
INSERT INTO field_options VALUES ('opt_status', 'mis', 'Missing'), ('opt_status', 'fnd', 'Found'),
  ('opt_status', 'fnd', 'Found'), ('opt_gender', 'm', 'Male');
INSERT INTO incident(name) VALUES ('Tsunami');
INSERT INTO gis_features VALUES ('f-1', 'point', 1), ('f-2', 'point', 1), ('f-3', 'area', 1);";

/// For each PHP table, what finds a row in both the database and a copy
/// of it (the key, or the rowid of the table without one).
const PHP_KEYS: &[(&str, &str)] = &[
    ("modules", "name"),
    ("config", "config_id"),
    ("field_options", "rowid"),
    ("incident", "incident_id"),
    ("gis_features", "feature_uuid"),
];

const EDEN_KEYS: &[(&str, &str)] = &[
    ("gis_location", "id"),
    ("org_organisation", "id"),
    ("pr_person", "id"),
    ("pr_contact", "id"),
];

/// HQ with `schema` and `rows`, tracked with `track_args`, and a laptop set
/// up from its full export.
fn hq_and_laptop(w: &World, schema: &str, rows: &str, track_args: &[&str]) -> Res<(Site, Site)> {
    let hq = w.bare_site("hq", schema)?;
    hq.sql(rows)?;
    let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"track", &"--db", &hq.db, &"--all"];
    for a in track_args {
        args.push(a);
    }
    fieldsync_ok(&args)?;
    let full = w.bundle("hq-full");
    hq.export_full(&full)?;
    let f1 = w.site_from("field-1", &full)?;
    Ok((hq, f1))
}

/// The officer's week on the PHP app: rows of every kind inserted, updated
/// and deleted.
fn php_week(f1: &Site) -> Res {
    f1.sql(
        "INSERT INTO modules VALUES ('mpr');
         INSERT INTO config(module_id, confkey, value) VALUES ('mpr', 'limit', '50');
         UPDATE config SET value = 'green' WHERE confkey = 'theme';
         INSERT INTO field_options VALUES ('opt_gender', 'f', 'Female');
         UPDATE field_options SET option_description = 'Missing person' WHERE option_code = 'mis';
         DELETE FROM field_options WHERE rowid = (SELECT max(rowid) FROM field_options WHERE option_code = 'fnd');
         INSERT INTO incident(parent_id, name) VALUES (1, 'Galle flood');
         UPDATE gis_features SET feature_type = 'line' WHERE feature_uuid = 'f-2';
         DELETE FROM gis_features WHERE feature_uuid = 'f-3';",
    )?;
    Ok(())
}

/// `import --db DB --dry-run ARGS...` (any exit).
fn dry_run(db: &Path, args: &[&dyn AsRef<OsStr>]) -> Res<Out> {
    let mut all: Vec<&dyn AsRef<OsStr>> = vec![&"import", &"--db", &db, &"--dry-run"];
    all.extend_from_slice(args);
    fieldsync(&all)
}

/// Every file in the directory of `db`, with the BLAKE3 of the database
/// and of its `-wal` (the `-shm` is shared memory readers write to; only
/// its presence counts).
fn files_beside(db: &Path) -> Res<Vec<(String, String)>> {
    let dir = db.parent().ok_or("no directory")?;
    let name = db
        .file_name()
        .ok_or("no file name")?
        .to_string_lossy()
        .into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let hash = if file == name || file == format!("{name}-wal") {
            blake3::hash(&std::fs::read(entry.path())?)
                .to_hex()
                .to_string()
        } else {
            String::new()
        };
        out.push((file, hash));
    }
    out.sort();
    Ok(out)
}

/// A copy of a database file (closed, so the file alone is all of it).
fn copy_db(w: &World, db: &Path, name: &str) -> Res<PathBuf> {
    let copy = w.path(name);
    std::fs::copy(db, &copy)?;
    Ok(copy)
}

/// Per table, rows inserted, updated and deleted between `before` and
/// `after` (two databases), as `sqlite3` finds them by `key`.
fn row_changes(
    before: &Path,
    after: &Path,
    keys: &[(&str, &str)],
) -> Res<Vec<(String, u64, u64, u64)>> {
    let mut out = Vec::new();
    for (table, key) in keys {
        let sql = format!(
            "ATTACH {} AS o;
             SELECT (SELECT count(*) FROM main.{table} WHERE {key} NOT IN (SELECT {key} FROM o.{table})),
                    (SELECT count(*) FROM (SELECT {key} AS k, * FROM o.{table} EXCEPT SELECT {key} AS k, * FROM main.{table})
                       WHERE k IN (SELECT {key} FROM main.{table})),
                    (SELECT count(*) FROM o.{table} WHERE {key} NOT IN (SELECT {key} FROM main.{table}));",
            lit(&before.display().to_string())
        );
        let line = sqlite3(after, &sql)?;
        let n: Vec<u64> = line
            .trim()
            .split('|')
            .map(|x| x.parse::<u64>())
            .collect::<Result<_, _>>()?;
        if n.iter().any(|&x| x > 0) {
            out.push((table.to_string(), n[0], n[1], n[2]));
        }
    }
    Ok(out)
}

/// The preview's per-table counts, in the same form.
fn preview_changes(preview: &Json) -> Res<Vec<(String, u64, u64, u64)>> {
    let mut out = Vec::new();
    for t in preview["tables"].as_array().ok_or("no tables")? {
        out.push((
            text(t, "table")?.to_owned(),
            num(t, "inserted")?,
            num(t, "updated")?,
            num(t, "deleted")?,
        ));
    }
    out.sort();
    Ok(out)
}

/// An import report without what depends on timing, with the database
/// `from` named `to` in its messages.
fn comparable(report: &Json, from: &Path, to: &Path) -> Res<Json> {
    let text = report
        .to_string()
        .replace(&from.display().to_string(), &to.display().to_string());
    let mut r: Json = serde_json::from_str(&text)?;
    if let Some(o) = r.as_object_mut() {
        o.remove("longest_write_ms");
        o.remove("write_transactions");
    }
    Ok(r)
}

/// The dry run's reports equal the real import's, file by file, and its
/// per-table counts equal the rows the real import changed; the database
/// `db` is unchanged. The real import runs on a copy of it.
fn preview_matches_import(
    w: &World,
    db: &Path,
    files: &[&Path],
    keys: &[(&str, &str)],
) -> Res<Json> {
    let before = files_beside(db)?;
    let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"--json"];
    for f in files {
        args.push(f);
    }
    let out = dry_run(db, &args)?;
    assert!(matches!(out.code, Some(0) | Some(3)), "{out:?}");
    let preview = out.json()?;
    assert_eq!(files_beside(db)?, before, "the dry run changed the files");

    let copy = copy_db(w, db, "real-import.db")?;
    let original = copy_db(w, db, "before-import.db")?;
    let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"import", &"--db", &copy, &"--json"];
    for f in files {
        args.push(f);
    }
    let real = fieldsync(&args)?;
    assert_eq!(real.code, out.code, "{real:?}");
    let real = real.json()?;
    let previewed = preview["files"].as_array().ok_or("no files")?;
    let imported = real["files"].as_array().ok_or("no files")?;
    assert_eq!(previewed.len(), imported.len());
    for (p, r) in previewed.iter().zip(imported) {
        assert_eq!(
            comparable(&p["report"], db, db)?,
            comparable(&r["report"], &copy, db)?
        );
    }
    assert_eq!(num(&preview, "quarantined")?, num(&real, "quarantined")?);
    let mut expected = row_changes(&original, &copy, keys)?;
    expected.sort();
    assert_eq!(preview_changes(&preview)?, expected, "{preview:#}");
    for f in [copy, original] {
        std::fs::remove_file(f)?;
    }
    Ok(preview)
}

// The database file, its WAL and the directory are byte for byte the same
// after a dry run: a WAL database with an app connection open (its changes
// still in the `-wal`), the same closed (no `-wal`), and a rollback-journal
// database. The copy in the temporary directory is gone afterwards.
#[test]
fn a_dry_run_leaves_the_database_and_its_directory_byte_identical() -> Res {
    let w = World::new()?;
    let (hq, f1) = hq_and_laptop(&w, PHP, PHP_ROWS, &["--except", "sessions"])?;
    php_week(&f1)?;
    let week = w.bundle("field-1-week");
    f1.export_to("hq", &week)?;
    let tmp = tempfile::tempdir()?;
    let preview = |db: &Path| -> Res<Out> {
        let out = Command::new(env!("CARGO_BIN_EXE_fieldsync"))
            .args([OsStr::new("import"), OsStr::new("--db")])
            .arg(db)
            .args([OsStr::new("--dry-run"), OsStr::new("--json")])
            .arg(&week)
            .env("TMPDIR", tmp.path())
            .env_remove("FIELDSYNC_DB")
            .output()?;
        Ok(Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    };

    // Rollback journal (sqlite3's default).
    assert_eq!(hq.sql("PRAGMA journal_mode;")?.trim(), "delete");
    let before = files_beside(&hq.db)?;
    let out = preview(&hq.db)?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(num(&out.json()?, "inserted")? > 0);
    assert_eq!(files_beside(&hq.db)?, before);
    assert_eq!(std::fs::read_dir(tmp.path())?.count(), 0, "a copy was left");

    // WAL, closed: no `-wal` beside it, and none made.
    hq.sql("PRAGMA journal_mode = WAL;")?;
    let before = files_beside(&hq.db)?;
    assert!(
        !before.iter().any(|(f, _)| f.ends_with("-wal")),
        "{before:?}"
    );
    let out = preview(&hq.db)?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(files_beside(&hq.db)?, before);

    // WAL with the app's connection open and its last write in the `-wal`:
    // the preview sees that write, and neither file changes.
    let app = rusqlite::Connection::open(&hq.db)?;
    app.execute_batch(
        "PRAGMA foreign_keys = OFF; PRAGMA wal_autocheckpoint = 0;
         UPDATE gis_features SET feature_type = 'polygon' WHERE feature_uuid = 'f-1';",
    )?;
    let before = files_beside(&hq.db)?;
    assert!(
        before.iter().any(|(f, _)| f.ends_with("-wal")),
        "{before:?}"
    );
    let out = preview(&hq.db)?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(files_beside(&hq.db)?, before);
    let json = out.json()?;
    // f-1 is not in the bundle; f-2 is, over the app's latest state.
    let features = json["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["table"] == "gis_features"))
        .ok_or("no gis_features")?;
    assert_eq!(num(features, "updated")?, 1, "{features}");
    assert_eq!(num(features, "deleted")?, 1, "{features}");
    drop(app);
    assert_eq!(std::fs::read_dir(tmp.path())?.count(), 0, "a copy was left");
    // The real import still does everything the preview said.
    hq.import(&[&week])?;
    assert_eq!(
        hq.sql("SELECT feature_type FROM gis_features WHERE feature_uuid = 'f-2';")?,
        "line\n"
    );
    Ok(())
}

// The preview's numbers, per table, are what a real import on a copy
// does: the PHP shape (text uuid keys, an option table without a key,
// AUTOINCREMENT ids) and the Eden shape (integer ids with a uuid identity,
// foreign keys on).
#[test]
fn the_previews_numbers_are_what_a_real_import_does() -> Res {
    let w = World::new()?;
    let (hq, f1) = hq_and_laptop(&w, PHP, PHP_ROWS, &["--except", "sessions"])?;
    php_week(&f1)?;
    let week = w.bundle("field-1-week");
    f1.export_to("hq", &week)?;
    let preview = preview_matches_import(&w, &hq.db, &[&week], PHP_KEYS)?;
    // Each kind of change in each kind of table.
    let changes = preview_changes(&preview)?;
    for expected in [
        ("config", 1, 1, 0),
        ("field_options", 1, 1, 1),
        ("gis_features", 0, 1, 1),
        ("incident", 1, 0, 0),
        ("modules", 1, 0, 0),
    ] {
        assert!(
            changes.contains(&(expected.0.to_owned(), expected.1, expected.2, expected.3)),
            "{expected:?} not in {changes:?}"
        );
    }
    // An update names its column, old and new value, and the row's key.
    let features = preview["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["table"] == "gis_features"))
        .ok_or("no gis_features")?;
    assert_eq!(
        features["columns"],
        serde_json::json!([{"column": "feature_type", "updated": 1}])
    );
    let update = features["rows"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["change"] == "update"))
        .ok_or("no update")?;
    assert_eq!(update["key"], serde_json::json!({"feature_uuid": "f-2"}));
    assert_eq!(
        update["columns"],
        serde_json::json!([{"column": "feature_type", "old": "point", "new": "line"}])
    );

    // Eden: new rows get ids here, references follow.
    let w = World::new()?;
    let (hq, f1) = hq_and_laptop(&w, EDEN, EDEN_ROWS, &["--identity", "uuid"])?;
    f1.sql(
        "PRAGMA foreign_keys = ON;
         INSERT INTO gis_location(uuid, name, level, parent) VALUES ('u-v1', 'Unawatuna', 'L2', 2);
         INSERT INTO pr_person(uuid, first_name, location_id, organisation_id) VALUES ('u-p1', 'Amal', 3, 1);
         UPDATE org_organisation SET name = 'Red Cross LK' WHERE uuid = 'u-rc';",
    )?;
    let week = w.bundle("field-1-week");
    f1.export_to("hq", &week)?;
    // HQ made a village of its own meanwhile: field-1's gets id 4 here.
    hq.sql("PRAGMA foreign_keys = ON; INSERT INTO gis_location(uuid, name, level, parent) VALUES ('u-hq', 'Galle', 'L2', 2);")?;
    let preview = preview_matches_import(&w, &hq.db, &[&week], EDEN_KEYS)?;
    let people = preview["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["table"] == "pr_person"))
        .ok_or("no pr_person")?;
    let row = &people["rows"][0];
    assert_eq!(row["change"], "insert");
    assert_eq!(row["key"], serde_json::json!({"uuid": "u-p1"}));
    let location = row["columns"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["column"] == "location_id"))
        .ok_or("no location_id")?;
    assert_eq!(location["new"], 4, "{row}");
    Ok(())
}

// An officer's edit here newer than the incoming one keeps its value (the
// incoming one is ignored); one older is replaced. The preview names both
// with the right winner, and the real import agrees.
#[test]
fn concurrent_edits_are_shown_with_the_winner_the_import_picks() -> Res {
    let w = World::new()?;
    let (hq, f1) = hq_and_laptop(&w, PHP, PHP_ROWS, &["--except", "sessions"])?;
    let pause = || std::thread::sleep(std::time::Duration::from_millis(30));
    // HQ edits f-1 first; field-1 then edits f-1 and f-2; HQ then edits f-2.
    hq.sql("UPDATE gis_features SET feature_type = 'hq-old' WHERE feature_uuid = 'f-1';")?;
    fieldsync_ok(&[&"compact", &"--db", &hq.db])?;
    pause();
    f1.sql("UPDATE gis_features SET feature_type = 'field' WHERE feature_uuid IN ('f-1', 'f-2');")?;
    fieldsync_ok(&[&"compact", &"--db", &f1.db])?;
    pause();
    hq.sql("UPDATE gis_features SET feature_type = 'hq-new' WHERE feature_uuid = 'f-2';")?;
    fieldsync_ok(&[&"compact", &"--db", &hq.db])?;
    let week = w.bundle("field-1-week");
    f1.export_to("hq", &week)?;

    let out = dry_run(&hq.db, &[&week])?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.starts_with("dry run:"), "{}", out.stdout);
    assert!(
        out.stdout.contains("your value 'hq-old' in column feature_type of row 'f-1' would be replaced by 'field' (newer, from field-1)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("their value 'field' in column feature_type of row 'f-2' (from field-1) would be ignored: your edit ('hq-new') is newer"),
        "{}",
        out.stdout
    );
    let preview = preview_matches_import(&w, &hq.db, &[&week], PHP_KEYS)?;
    assert_eq!(num(&preview, "incoming_wins")?, 1);
    assert_eq!(num(&preview, "local_wins")?, 1);
    let winners: Vec<(String, String)> = preview["conflicts"]
        .as_array()
        .ok_or("no conflicts")?
        .iter()
        .map(|c| (c["key"].to_string(), c["winner"].to_string()))
        .collect();
    assert_eq!(
        winners,
        [
            (
                r#"{"feature_uuid":"f-1"}"#.to_owned(),
                "\"incoming\"".to_owned()
            ),
            (
                r#"{"feature_uuid":"f-2"}"#.to_owned(),
                "\"local\"".to_owned()
            )
        ]
    );
    // The real import: f-1 takes field-1's value, f-2 keeps HQ's.
    hq.import(&[&week])?;
    assert_eq!(
        hq.sql("SELECT feature_uuid, feature_type FROM gis_features WHERE feature_uuid IN ('f-1', 'f-2') ORDER BY 1;")?,
        "f-1|field\nf-2|hq-new\n"
    );
    Ok(())
}

const PERSON: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT, status TEXT);";
const PERSON_CHECKED: &str =
    "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT, status TEXT CHECK(status <> 'bad'));";

// A change the database would refuse (a CHECK constraint) would be held:
// the preview says so with the reason and exits 3, as the import does.
#[test]
fn a_change_that_would_be_quarantined_exits_3_with_the_reason() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", PERSON_CHECKED)?;
    let f1 = w.site("field-1", PERSON)?;
    f1.sql("INSERT INTO person VALUES ('p-1', 'Amal', 'bad'), ('p-2', 'Bilal', 'missing');")?;
    let week = w.bundle("field-1-week");
    f1.export_to("hq", &week)?;
    let before = files_beside(&hq.db)?;
    let out = dry_run(&hq.db, &[&week])?;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(
        out.stdout.contains("1 change would be held in quarantine"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("person 'p-1' (field-1): check"),
        "{}",
        out.stdout
    );
    assert_eq!(files_beside(&hq.db)?, before);
    let preview = preview_matches_import(&w, &hq.db, &[&week], &[("person", "id")])?;
    assert_eq!(num(&preview, "quarantined")?, 1);
    assert_eq!(preview["held"][0]["reason"], "check");
    assert_eq!(preview["held"][0]["key"], serde_json::json!({"id": "p-1"}));
    assert_eq!(num(&preview, "inserted")?, 1);
    Ok(())
}

// A bundle from an instance nobody enrolled would be refused: the preview
// says so for that file, goes on with the others, exits 1, and the
// database (its journal of refused bundles too) is unchanged.
#[test]
fn a_bundle_from_an_unenrolled_instance_would_be_refused() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", PERSON)?;
    let f1 = w.site("field-1", PERSON)?;
    let stranger = w.stranger("stranger", PERSON)?;
    fieldsync_ok(&[&"track", &"--db", &stranger.db, &"--all"])?;
    stranger.sql("INSERT INTO person VALUES ('p-9', 'Mallory', 'safe');")?;
    let theirs = w.bundle("stranger");
    stranger.export_plain_to("hq", &theirs)?;
    f1.sql("INSERT INTO person VALUES ('p-1', 'Amal', 'missing');")?;
    let ours = w.bundle("field-1");
    f1.export_to("hq", &ours)?;

    let before = files_beside(&hq.db)?;
    let out = dry_run(&hq.db, &[&theirs, &ours])?;
    assert_eq!(out.code, Some(1), "{out:?}");
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("would be refused"))
        .ok_or_else(|| format!("no refusal: {}", out.stdout))?;
    assert!(line.contains("stranger"), "{line}");
    assert!(line.contains("fieldsync trust --db"), "{line}");
    assert!(
        !line.contains("fieldsync-preview"),
        "the copy is named: {line}"
    );
    assert!(out.stdout.contains("1 inserted"), "{}", out.stdout);
    assert_eq!(files_beside(&hq.db)?, before);
    assert_eq!(hq.count("SELECT count(*) FROM fieldsync_refused")?, 0);
    let json = dry_run(&hq.db, &[&"--json", &theirs])?;
    assert_eq!(json.code, Some(1));
    let json = json.json()?;
    assert_eq!(num(&json, "refused")?, 1);
    assert!(json["files"][0]["refused"].is_string(), "{json}");
    // The real import refuses it too.
    hq.import_refused(&[&theirs], &["stranger"])?;
    Ok(())
}

// `--dry-run --json` is one object in the shared vocabulary: `version` 1
// first, the instance, the files with their reports, per table the counts
// and rows keyed by column; a bundle on stdin works as a file does.
#[test]
fn the_json_preview_has_the_documented_fields_and_stdin_works() -> Res {
    let w = World::new()?;
    let (hq, f1) = hq_and_laptop(&w, PHP, PHP_ROWS, &["--except", "sessions"])?;
    php_week(&f1)?;
    let week = w.bundle("field-1-week");
    f1.export_to("hq", &week)?;
    let out = dry_run(&hq.db, &[&"--json", &week])?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.starts_with("{\"version\":1,\"instance\":\"hq\""),
        "{}",
        out.stdout
    );
    let json = out.json()?;
    assert_eq!(json["dry_run"], true);
    for key in [
        "inserted",
        "updated",
        "deleted",
        "quarantined",
        "refused",
        "incoming_wins",
        "local_wins",
        "not_listed",
    ] {
        num(&json, key)?;
    }
    for key in ["files", "tables", "conflicts", "held"] {
        assert!(json[key].is_array(), "{key} in {json}");
    }
    assert_eq!(text(&json["files"][0], "file")?, week.display().to_string());
    num(&json["files"][0]["report"], "applied")?;
    for t in json["tables"].as_array().ok_or("no tables")? {
        text(t, "table")?;
        assert!(t["columns"].is_array() && t["rows"].is_array(), "{t}");
        for r in t["rows"].as_array().ok_or("no rows")? {
            assert!(r["key"].is_object(), "{r}");
            assert!(
                ["insert", "update", "delete"].contains(&text(r, "change")?),
                "{r}"
            );
        }
    }
    // --limit 1: counts stay, one row listed per table.
    let limited = dry_run(&hq.db, &[&"--json", &"--limit", &"1", &week])?.json()?;
    assert_eq!(limited["inserted"], json["inserted"]);
    let options = limited["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["table"] == "field_options"))
        .ok_or("no field_options")?;
    assert_eq!(options["rows"].as_array().map(Vec::len), Some(1));
    assert_eq!(num(options, "not_listed")?, 2);

    // stdin, in the system's temporary directory: nothing beside the database.
    let before = files_beside(&hq.db)?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fieldsync"));
    cmd.args(["import", "--db"])
        .arg(&hq.db)
        .args(["--dry-run", "--json", "-"])
        .env_remove("FIELDSYNC_DB");
    let bytes = std::fs::read(&week)?;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        child.stdin.take().ok_or("no stdin")?.write_all(&bytes)?;
    }
    let out = child.wait_with_output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let piped: Json = serde_json::from_slice(&out.stdout)?;
    assert_eq!(piped["files"][0]["file"], "-");
    assert_eq!(piped["tables"], json["tables"]);
    assert_eq!(files_beside(&hq.db)?, before);
    Ok(())
}

// Several files, one of them twice: the second time it is all known, and
// the numbers are those of a real import of the same list, one file after
// the other and with --atomic.
#[test]
fn several_files_one_of_them_twice_preview_as_they_import() -> Res {
    let w = World::new()?;
    let (hq, f1) = hq_and_laptop(&w, PHP, PHP_ROWS, &["--except", "sessions"])?;
    php_week(&f1)?;
    let week1 = w.bundle("field-1-week1");
    f1.export_to("hq", &week1)?;
    f1.sql(
        "UPDATE incident SET name = 'Galle floods' WHERE name = 'Galle flood';
            DELETE FROM modules WHERE name = 'mpr';",
    )?;
    let week2 = w.bundle("field-1-week2");
    f1.export_to("hq", &week2)?;
    let preview = preview_matches_import(&w, &hq.db, &[&week1, &week2, &week1], PHP_KEYS)?;
    let third = &preview["files"][2]["report"];
    assert_eq!(num(third, "applied")?, 0);
    // Known, or older than what week 2 brought.
    assert_eq!(
        num(third, "known")? + num(third, "older")?,
        num(third, "changes")?
    );
    // The module added in week 1 and deleted in week 2 is no change at all.
    assert!(
        !preview["tables"]
            .as_array()
            .ok_or("no tables")?
            .iter()
            .any(|t| t["table"] == "modules"),
        "{preview}"
    );

    let before = files_beside(&hq.db)?;
    let atomic = dry_run(&hq.db, &[&"--json", &"--atomic", &week1, &week2, &week1])?;
    assert_eq!(atomic.code, Some(0), "{atomic:?}");
    assert_eq!(atomic.json()?["tables"], preview["tables"]);
    assert_eq!(files_beside(&hq.db)?, before);
    Ok(())
}

// A database of engine schema 9 (no sync journal yet) would be upgraded by
// any command that opens it as an instance: the dry run upgrades only its
// copy, and the file stays byte for byte the same, still at schema 9.
#[test]
fn a_dry_run_on_an_older_engine_schema_upgrades_only_the_copy() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", PERSON)?;
    let f1 = w.site("field-1", PERSON)?;
    f1.sql("INSERT INTO person VALUES ('p-1', 'Amal', 'missing');")?;
    let week = w.bundle("field-1-week");
    f1.export_to("hq", &week)?;
    hq.sql(
        "DROP TABLE fieldsync_journal;
         UPDATE fieldsync_meta SET value = 9 WHERE key = 'schema';",
    )?;
    let before = files_beside(&hq.db)?;
    let out = dry_run(&hq.db, &[&"--json", &week])?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(num(&out.json()?, "inserted")?, 1);
    assert_eq!(files_beside(&hq.db)?, before);
    assert_eq!(
        hq.count("SELECT value FROM fieldsync_meta WHERE key = 'schema'")?,
        9
    );
    Ok(())
}

// The import report's warnings in a preview named the temporary copy
// (`fieldsync conflicts --db /tmp/fieldsync-preview-…/preview.db`), a
// database the user cannot open: they name the database given.
#[test]
fn a_previews_warnings_name_the_database_not_the_copy() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", PERSON_CHECKED)?;
    let f1 = w.site("field-1", PERSON)?;
    f1.sql("INSERT INTO person VALUES ('p-1', 'Amal', 'bad');")?;
    let week = w.bundle("field-1-week");
    f1.export_to("hq", &week)?;
    let out = dry_run(&hq.db, &[&"--json", &week])?;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(!out.stdout.contains("fieldsync-preview"), "{}", out.stdout);
    assert!(!out.stderr.contains("fieldsync-preview"), "{}", out.stderr);
    let warning = out
        .stderr
        .lines()
        .find(|l| l.contains("fieldsync conflicts --db"))
        .ok_or_else(|| format!("no warning: {}", out.stderr))?;
    assert!(warning.contains(&hq.db.display().to_string()), "{warning}");
    Ok(())
}
