//! The JSON vocabulary (spec/json.md): every command's `--json` report,
//! produced through the real CLI on realistic databases (a Sahana-PHP-like
//! app with text uuid keys and a keyless option table, an Eden-like one
//! with integer ids and a uuid), is checked against its JSON Schema under
//! spec/json/; every subcommand `fieldsync --help` lists has a schema (or is
//! one of the few that print no report); and one instance shows the same
//! `instance` and `site` strings in every report that names it.
//!
//! To cover a new command: add its row to [`SCHEMAS`], write
//! spec/json/NAME.schema.json, and run it with [`Reports::json`] in one of
//! the scenarios below (or a new one called from
//! [`every_report_matches_its_schema`]).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value as Json;

use crate::tables::{EDEN, EDEN_ROWS};
use crate::util::net::Served;
use crate::util::*;

/// Every subcommand that prints a report, and the schema file (under
/// spec/json/) its `--json` output is checked against.
const SCHEMAS: &[(&str, &str)] = &[
    ("init", "init"),
    ("track", "track"),
    ("export", "export"),
    ("import", "import"),
    ("status", "status"),
    ("inspect", "inspect"),
    ("conflicts", "conflicts"),
    ("check", "check"),
    ("compact", "compact"),
    ("schema", "schema"),
    ("key", "key"),
    ("trust", "trust"),
    ("revoke", "revoke"),
    ("serve", "serve"),
    ("sync", "sync"),
    ("push", "sync"),
    ("pull", "sync"),
    ("peer", "peer"),
    ("journal", "journal"),
    ("fingerprint", "fingerprint"),
];

/// Subcommands that print no JSON report: `demo` refuses `--json`, the
/// other two produce a file's text, and `help` is clap's.
const NO_REPORT: &[&str] = &["demo", "completions", "man", "help"];

/// The directory of the schema files.
fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/json")
}

/// The JSON reports printed in a run, by subcommand.
#[derive(Default)]
struct Reports {
    seen: Vec<(String, Json)>,
}

impl Reports {
    /// Run `fieldsync ARGS --json` (the subcommand first in `args`), expect
    /// exit status `code`, and keep the report it printed on stdout.
    fn json_with(&mut self, code: i32, args: &[&dyn AsRef<OsStr>]) -> Res<Json> {
        let mut all: Vec<&dyn AsRef<OsStr>> = args.to_vec();
        all.push(&"--json");
        let out = fieldsync(&all)?;
        assert_eq!(
            out.code,
            Some(code),
            "fieldsync {:?}\nstdout:\n{}\nstderr:\n{}",
            args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
            out.stdout,
            out.stderr
        );
        self.keep(args, &out.stdout)
    }

    /// [`Reports::json_with`] expecting success.
    fn json(&mut self, args: &[&dyn AsRef<OsStr>]) -> Res<Json> {
        self.json_with(0, args)
    }

    /// `fieldsync ARGS --json` with `stdin` as its standard input.
    fn json_stdin(&mut self, args: &[&dyn AsRef<OsStr>], stdin: Stdio, code: i32) -> Res<Json> {
        let out = Command::new(env!("CARGO_BIN_EXE_fieldsync"))
            .args(args.iter().map(|a| a.as_ref()))
            .arg("--json")
            .env_remove("FIELDSYNC_DB")
            .stdin(stdin)
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(code),
            "stdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.keep(args, &stdout)
    }

    /// Keep one line of JSON printed by the subcommand `args[0]`.
    fn keep(&mut self, args: &[&dyn AsRef<OsStr>], stdout: &str) -> Res<Json> {
        let command = args[0].as_ref().to_string_lossy().into_owned();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "`{command} --json` prints one line:\n{stdout}"
        );
        let value: Json = serde_json::from_str(lines[0])
            .map_err(|e| format!("`{command} --json` printed no JSON ({e}):\n{stdout}"))?;
        self.seen.push((command, value.clone()));
        Ok(value)
    }

    /// Check every report kept against its command's schema, and that every
    /// command of [`SCHEMAS`] printed at least one.
    fn validate(&self) -> Res {
        let mut validators = BTreeMap::new();
        for (command, file) in SCHEMAS {
            let path = schema_dir().join(format!("{file}.schema.json"));
            let schema: Json = serde_json::from_str(&std::fs::read_to_string(&path)?)
                .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
            let validator = jsonschema::draft202012::new(&schema)
                .map_err(|e| format!("{} is not a valid schema: {e}", path.display()))?;
            validators.insert(*command, validator);
        }
        let mut problems = Vec::new();
        for (command, report) in &self.seen {
            let Some(validator) = validators.get(command.as_str()) else {
                problems.push(format!("`{command}` printed JSON but has no schema"));
                continue;
            };
            for error in validator.iter_errors(report) {
                problems.push(format!(
                    "`{command} --json` at {}: {error}\n  in {report}",
                    error.instance_path()
                ));
            }
        }
        for (command, _) in SCHEMAS {
            if !self.seen.iter().any(|(c, _)| c == command) {
                problems.push(format!("`{command} --json` was never run by this test"));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        Ok(())
    }
}

/// The subcommands `fieldsync --help` lists.
fn subcommands() -> Res<Vec<String>> {
    let help = fieldsync_ok(&[&"--help"])?.stdout;
    let listed = help
        .split("Commands:")
        .nth(1)
        .ok_or("`fieldsync --help` lists no commands")?;
    Ok(listed
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| {
            // A command's line: two spaces, its name, its summary; a
            // summary's continuation lines are indented further.
            let name = l.strip_prefix("  ")?;
            if name.starts_with(' ') {
                return None;
            }
            name.split_whitespace().next().map(str::to_owned)
        })
        .collect())
}

// A command added to the CLI without a JSON schema (and a row in SCHEMAS)
// fails here.
#[test]
fn every_subcommand_has_a_json_schema() -> Res {
    let commands = subcommands()?;
    assert!(
        commands.len() > 10,
        "too few commands read from --help: {commands:?}"
    );
    for command in &commands {
        if NO_REPORT.contains(&command.as_str()) {
            continue;
        }
        let Some((_, file)) = SCHEMAS.iter().find(|(c, _)| c == command) else {
            panic!("`fieldsync {command}` has no row in SCHEMAS (tests/json.rs) and no schema");
        };
        let path = schema_dir().join(format!("{file}.schema.json"));
        assert!(path.exists(), "{} is missing", path.display());
    }
    for (command, _) in SCHEMAS {
        assert!(
            commands.contains(&command.to_string()),
            "SCHEMAS names `{command}`, which `fieldsync --help` does not list"
        );
    }
    Ok(())
}

/// A Sahana-PHP-like app (tests/tables.rs's PHP shape) with its people,
/// keyed by text uuids, and a code each person has alone.
const PHP_PEOPLE: &str = "
CREATE TABLE modules(name TEXT PRIMARY KEY);
CREATE TABLE field_options(field_name VARCHAR(100), option_code VARCHAR(50), option_description VARCHAR(50));
CREATE TABLE incident(
  incident_id INTEGER PRIMARY KEY AUTOINCREMENT,
  parent_id INTEGER REFERENCES incident(incident_id),
  name TEXT
);
CREATE TABLE person_uuid(
  p_uuid VARCHAR(60) PRIMARY KEY,
  full_name TEXT NOT NULL,
  code TEXT UNIQUE,
  status TEXT
);
CREATE TABLE sessions(session_id TEXT PRIMARY KEY, data TEXT);
CREATE VIEW missing AS SELECT p_uuid, full_name FROM person_uuid WHERE status = 'missing';";

const PHP_ROWS: &str = "
INSERT INTO modules VALUES ('mpr'), ('gis');
INSERT INTO field_options VALUES ('opt_status', 'ali', 'Alive'), ('opt_status', 'mis', 'Missing');
INSERT INTO incident(name) VALUES ('Tsunami');
INSERT INTO person_uuid VALUES ('hq-1', 'Nimal Perera', 'C-1', 'missing');";

// Every report of a Sahana-PHP-like deployment (HQ and two laptops set up
// from its full export, a quarantined change, an overwritten value, the
// trust and schema commands, a network sync) and of an Eden-like one is
// checked against its schema.
#[test]
fn every_report_matches_its_schema() -> Res {
    let mut r = Reports::default();
    php_deployment(&mut r)?;
    eden_deployment(&mut r)?;
    r.validate()
}

fn php_deployment(r: &mut Reports) -> Res {
    let w = World::new()?;
    let hq_db = w.path("hq.db");
    sqlite3(&hq_db, PHP_PEOPLE)?;
    sqlite3(&hq_db, PHP_ROWS)?;
    r.json(&[&"init", &"--db", &hq_db, &"--name", &"hq"])?;
    // Again: nothing changes, and it says so.
    let again = r.json(&[&"init", &"--db", &hq_db, &"--name", &"hq"])?;
    assert_eq!(again["created"], false);
    let tracked = r.json(&[
        &"track",
        &"--db",
        &hq_db,
        &"--all",
        &"--except",
        &"sessions",
    ])?;
    assert!(
        tracked["skipped"].as_array().is_some_and(|s| s.is_empty())
            || tracked["skipped"][0]["table"].is_string()
    );
    let hq = Site {
        name: "hq".into(),
        db: hq_db.clone(),
    };
    w.enrol_everywhere(&hq)?;

    let full = w.bundle("hq-full");
    r.json(&[
        &"export",
        &"--db",
        &hq_db,
        &"--full",
        &"--for",
        &"field-1,field-2",
        &"--no-encrypt",
        &"-o",
        &full,
    ])?;
    let inspected = r.json(&[&"inspect", &full])?;
    let signer = text(&inspected, "signer_fingerprint")?.to_owned();
    let mut laptops = Vec::new();
    for name in ["field-1", "field-2"] {
        let db = w.path(&format!("{name}.db"));
        let set_up = r.json(&[
            &"init",
            &"--db",
            &db,
            &"--name",
            &name,
            &"--from",
            &full,
            &"--expect-key",
            &signer,
        ])?;
        assert_eq!(set_up["sender_instance"], "hq");
        let site = Site {
            name: name.into(),
            db,
        };
        // HQ enrols the laptop from its `key --json`, piped as in README.md.
        let key = r.json(&[&"key", &"--db", &site.db])?;
        let mut trust = Command::new(env!("CARGO_BIN_EXE_fieldsync"));
        trust
            .args(["trust", "--json", "--stdin", "--db"])
            .arg(&hq_db);
        let enrolled = run_with_input(trust, &key.to_string())?.ok()?;
        r.keep(&[&"trust"], &enrolled.stdout)?;
        w.enrol_everywhere(&site)?;
        laptops.push(site);
    }
    let (f1, f2) = (&laptops[0], &laptops[1]);

    // Both laptops give a new person the code C-2 (HQ keeps the second in
    // quarantine), and both edit Nimal's status (one value is overwritten).
    f1.sql(
        "INSERT INTO person_uuid VALUES ('f1-1', 'Amal', 'C-2', 'missing');
            UPDATE person_uuid SET status = 'found' WHERE p_uuid = 'hq-1';",
    )?;
    f2.sql(
        "INSERT INTO person_uuid VALUES ('f2-1', 'Kamal', 'C-2', 'missing');
            UPDATE person_uuid SET status = 'safe' WHERE p_uuid = 'hq-1';
            INSERT INTO field_options VALUES ('opt_status', 'inj', 'Injured');",
    )?;
    let from_f1 = w.bundle("f1-to-hq");
    let from_f2 = w.bundle("f2-to-hq");
    r.json(&[&"export", &"--db", &f1.db, &"--to", &"hq", &"-o", &from_f1])?;
    r.json(&[&"export", &"--db", &f2.db, &"--to", &"hq", &"-o", &from_f2])?;
    // Encrypted: without the recipient's database only the outer header.
    let outer = r.json(&[&"inspect", &from_f1])?;
    assert_eq!(outer["encrypted"], true);
    r.json(&[&"inspect", &"--db", &hq_db, &from_f1])?;
    // What the two imports would do (the second holds a change and
    // overwrites a value: exit 3), then the real ones.
    let preview = r.json_with(
        3,
        &[&"import", &"--db", &hq_db, &"--dry-run", &from_f1, &from_f2],
    )?;
    assert_eq!(
        preview["held"][0]["key"],
        serde_json::json!({"p_uuid": "f2-1"})
    );
    let imported = r.json(&[&"import", &"--db", &hq_db, &from_f1])?;
    // From stdin, holding a change in quarantine: exit 3.
    let file = std::fs::File::open(&from_f2)?;
    r.json_stdin(&[&"import", &"--db", &hq_db, &"-"], Stdio::from(file), 3)?;

    let conflicts = r.json(&[&"conflicts", &"--db", &hq_db])?;
    assert_eq!(
        conflicts["quarantined"][0]["key"],
        serde_json::json!({"p_uuid": "f2-1"}),
        "{conflicts}"
    );
    assert_eq!(conflicts["overwritten"][0]["key"]["p_uuid"], "hq-1");
    let id = conflicts["quarantined"][0]["id"]
        .as_i64()
        .ok_or("no quarantined id")?;
    r.json(&[&"conflicts", &"--db", &hq_db, &"--retry"])?;
    r.json(&[&"conflicts", &"--db", &hq_db, &"--apply", &id.to_string()])?;
    let discarded = r.json(&[
        &"conflicts",
        &"--db",
        &hq_db,
        &"--discard",
        &id.to_string(),
        &"--yes",
    ])?;
    assert_eq!(discarded["discarded_now"][0]["key"]["p_uuid"], "f2-1");

    let status = r.json(&[&"status", &"--db", &hq_db])?;
    let journal = r.json(&[&"journal", &"--db", &hq_db])?;
    same_names(f1, &imported, &status, &journal)?;
    r.json(&[&"status", &"--db", &f1.db])?;
    r.json(&[&"compact", &"--db", &hq_db])?;
    r.json(&[&"check", &"--db", &hq_db])?;
    r.json(&[&"fingerprint", &"--db", &hq_db])?;
    r.json(&[&"fingerprint", &"--db", &hq_db, &"person_uuid"])?;

    // A week too large for one e-mail: in parts, the first kept, then the
    // rest joined and applied; a part inspected.
    f1.sql(
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1500)
         INSERT INTO person_uuid SELECT 'g-' || i, hex(randomblob(40)), 'G-' || i, 'missing' FROM c;",
    )?;
    let week = w.bundle("f1-week");
    let cut = r.json(&[
        &"export",
        &"--db",
        &f1.db,
        &"--to",
        &"hq",
        &"--max-size",
        &"64KiB",
        &"-o",
        &week,
    ])?;
    let parts: Vec<String> = cut["parts"]
        .as_array()
        .ok_or("no parts")?
        .iter()
        .filter_map(|p| p["file"].as_str().map(str::to_owned))
        .collect();
    assert!(parts.len() >= 2, "{cut}");
    r.json(&[&"inspect", &parts[0]])?;
    let kept = r.json(&[&"import", &"--db", &hq_db, &parts[0]])?;
    assert_eq!(kept["kept_parts"][0]["part"], 1, "{kept}");
    let mut rest: Vec<&dyn AsRef<OsStr>> = vec![&"import", &"--db", &hq_db];
    for p in &parts[1..] {
        rest.push(p);
    }
    let joined = r.json(&rest)?;
    assert_eq!(joined["joined"][0]["parts"], parts.len(), "{joined}");

    // A schema change at HQ, held at a laptop until --apply.
    hq.sql("ALTER TABLE person_uuid ADD COLUMN phone TEXT;")?;
    r.json(&[&"track", &"--db", &hq_db, &"person_uuid"])?;
    let to_f1 = w.bundle("hq-to-f1");
    r.json(&[
        &"export", &"--db", &hq_db, &"--to", &"field-1", &"-o", &to_f1,
    ])?;
    r.json(&[&"schema", &"--db", &f1.db, &"--auto", &"off"])?;
    r.json(&[&"import", &"--db", &f1.db, &to_f1])?;
    r.json(&[&"schema", &"--db", &f1.db])?;
    r.json(&[&"schema", &"--db", &f1.db, &"--apply"])?;
    r.json(&[&"status", &"--db", &f1.db])?;

    // Trust: the list and each setting.
    r.json(&[&"trust", &"--db", &hq_db, &"--list"])?;
    r.json(&[&"trust", &"--db", &f1.db, &"--anchor", &"hq"])?;
    r.json(&[&"trust", &"--db", &hq_db, &"--allow-unsigned-for", &"7"])?;
    r.json(&[&"trust", &"--db", &hq_db, &"--max-clock-ahead", &"2h"])?;
    let k2 = f2.key()?;
    r.json(&[
        &"trust",
        &"--db",
        &f1.db,
        &"field-2",
        &text(&k2, "public_key")?,
        &text(&k2, "recipient")?,
    ])?;

    // The network: serve HQ, remember it at a laptop, sync, push, pull.
    let served = Served::start(&hq_db, &[])?;
    r.keep(&[&"serve"], &served.startup.to_string())?;
    r.json(&[&"peer", &"add", &"--db", &f1.db, &"hq", &served.url])?;
    r.json(&[&"peer", &"list", &"--db", &f1.db])?;
    f1.sql("UPDATE person_uuid SET full_name = 'Amal Silva' WHERE p_uuid = 'f1-1';")?;
    r.json(&[&"sync", &"--db", &f1.db])?;
    r.json(&[&"push", &"--db", &f1.db])?;
    r.json(&[&"pull", &"--db", &f1.db, &served.url])?;
    r.json(&[&"peer", &"remove", &"--db", &f1.db, &"hq"])?;
    r.json(&[&"peer", &"list", &"--db", &f1.db])?;
    drop(served);
    r.json(&[&"journal", &"--db", &f1.db])?;

    // A problem for check: a capture trigger dropped by hand.
    let trigger = query_one(
        &f2.db,
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'person_uuid' LIMIT 1",
    )?;
    f2.sql(&format!("DROP TRIGGER \"{trigger}\";"))?;
    let check = r.json_with(1, &[&"check", &"--db", &f2.db])?;
    assert_eq!(check["ok"], false);
    r.json(&[&"revoke", &"--db", &hq_db, &"field-2"])?;
    r.json(&[&"revoke", &"--db", &hq_db, &"field-2"])?;
    r.json(&[&"trust", &"--db", &hq_db, &"--list"])?;
    Ok(())
}

// Six names for an instance (`name`, `site_name`, `from`, `sender`,
// `won_site`, `peer`) made reports hard to join: one instance now shows the
// same `instance` and `site` in its own `status` and `key`, and in the
// `import`, `status` and `journal` of the instance that received its bundle.
#[test]
fn one_instance_has_the_same_instance_and_site_in_every_report() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", RELIEF_SCHEMA)?;
    let f1 = w.site("field-1", RELIEF_SCHEMA)?;
    f1.sql("INSERT INTO location VALUES ('L0', NULL, 'country', 'Ruritania');")?;
    let file = w.bundle("f1-to-hq");
    f1.export_to("hq", &file)?;
    let imported = hq.import(&[&file])?;
    let status = hq.status()?;
    let journal = fieldsync_ok(&[&"journal", &"--db", &hq.db, &"--json"])?.json()?;
    same_names(&f1, &imported, &status, &journal)
}

/// Field-1 as its own `status` and `key` show it, and as HQ's import,
/// status and journal name it, has the same `instance` and `site`.
fn same_names(f1: &Site, imported: &Json, hq_status: &Json, hq_journal: &Json) -> Res {
    let status = f1.status()?;
    let key = f1.key()?;
    let report = &imported["files"][0]["report"];
    let name = text(&status, "instance")?;
    let site = text(&status, "site")?;
    assert_eq!(name, "field-1");
    assert_eq!(key["instance"], name);
    assert_eq!(key["site"], site);
    assert_eq!(report["sender_instance"], name, "{imported}");
    assert_eq!(report["sender_site"], site, "{imported}");
    let origin = hq_status["origins"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["instance"] == name))
        .ok_or("HQ's status has no origin field-1")?;
    assert_eq!(origin["site"], site);
    let peer = hq_status["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["instance"] == name))
        .ok_or("HQ's status has no peer field-1")?;
    assert_eq!(peer["site"], site);
    let entries = hq_journal["entries"]
        .as_array()
        .ok_or("no journal entries")?;
    assert!(
        entries
            .iter()
            .any(|e| e["kind"] == "import" && e["instance"] == name),
        "{hq_journal}"
    );
    Ok(())
}

// Sahana Eden's shape: integer ids, rows identified by uuid, so keys in
// the conflict reports are the uuid.
fn eden_deployment(r: &mut Reports) -> Res {
    let w = World::new()?;
    let hq = w.bare_site("hq", EDEN)?;
    hq.sql(EDEN_ROWS)?;
    r.json(&[&"track", &"--db", &hq.db, &"--all", &"--identity", &"uuid"])?;
    let full = w.bundle("hq-full");
    r.json(&[
        &"export",
        &"--db",
        &hq.db,
        &"--full",
        &"--for",
        &"field-1",
        &"--no-encrypt",
        &"-o",
        &full,
    ])?;
    r.json(&[&"inspect", &full])?;
    let f1 = w.site_from("field-1", &full)?;
    f1.sql("PRAGMA foreign_keys = ON;
            INSERT INTO gis_location(uuid, name, level, parent) VALUES ('u-galle', 'Galle', 'L2', 2);
            UPDATE gis_location SET name = 'Southern Province' WHERE uuid = 'u-south';")?;
    hq.sql("UPDATE gis_location SET name = 'South' WHERE uuid = 'u-south';")?;
    let to_hq = w.bundle("f1-to-hq");
    r.json(&[&"export", &"--db", &f1.db, &"--to", &"hq", &"-o", &to_hq])?;
    r.json(&[&"import", &"--db", &hq.db, &to_hq])?;
    let to_f1 = w.bundle("hq-to-f1");
    r.json(&[
        &"export", &"--db", &hq.db, &"--to", &"field-1", &"-o", &to_f1,
    ])?;
    r.json(&[&"import", &"--db", &f1.db, &to_f1])?;
    let conflicts = r.json(&[&"conflicts", &"--db", &f1.db])?;
    let conflicts_hq = r.json(&[&"conflicts", &"--db", &hq.db])?;
    let keys: Vec<&Json> = [&conflicts, &conflicts_hq]
        .iter()
        .flat_map(|c| c["overwritten"].as_array().into_iter().flatten())
        .map(|o| &o["key"])
        .collect();
    assert!(
        keys.iter()
            .any(|k| **k == serde_json::json!({"uuid": "u-south"})),
        "{keys:?}"
    );
    r.json(&[&"status", &"--db", &hq.db])?;
    r.json(&[&"schema", &"--db", &hq.db])?;
    r.json(&[&"check", &"--db", &f1.db])?;
    r.json(&[&"journal", &"--db", &f1.db, &"--limit", &"3"])?;
    Ok(())
}
