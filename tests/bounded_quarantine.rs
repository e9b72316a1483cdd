//! Bounded quarantine (issue 11, item 5): a later import retries only the
//! held changes something they wait for may have changed, a held change
//! can be discarded (`conflicts --discard`, `--discard-from`), and a
//! bundle that would hold more than the per-sender bound is refused.

use crate::util::*;

/// The sender lets `name` be empty; the receiver's app requires it, so
/// every row the sender leaves without a name is refused (NOT NULL).
const LAX: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT, note TEXT);
                   CREATE TABLE visit(id TEXT PRIMARY KEY, note TEXT);";
const STRICT: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT NOT NULL, note TEXT);
                      CREATE TABLE visit(id TEXT PRIMARY KEY, note TEXT);";

/// `field-1` sends `hq` `n` people without a name: all held.
fn many_held(w: &World, n: u32) -> Res<(Site, Site)> {
    let field = w.site("field-1", LAX)?;
    let hq = w.site("hq", STRICT)?;
    field.sql(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
         INSERT INTO person(id, note) SELECT printf('p-%05d', i), 'no name' FROM n;"
    ))?;
    let (_, imported) = w.send(&field, &hq)?;
    assert_eq!(num(&imported, "quarantined")?, u64::from(n));
    Ok((field, hq))
}

// Caught: every import retried the whole quarantine, so one bundle of
// NOT NULL violations slowed every later import; a later import now
// retries only held changes whose row, or what they wait for, changed.
#[test]
fn a_later_import_does_not_retry_held_changes_nothing_they_wait_for_touched() -> Res {
    let w = World::new()?;
    let (field, hq) = many_held(&w, 300)?;
    // Another table, and another row of the held rows' table.
    field.sql(
        "INSERT INTO visit VALUES ('v-1', 'first');
         INSERT INTO person VALUES ('q-1', 'Amal', NULL);",
    )?;
    let (_, imported) = w.send(&field, &hq)?;
    assert_eq!(num(&imported, "applied")?, 2);
    assert_eq!(num(&imported, "retried")?, 0, "{imported}");
    assert_eq!(num(&imported, "held")?, 300);
    // The name of one held person arrives: that entry alone is retried,
    // and applied.
    field.sql("UPDATE person SET name = 'Nimali' WHERE id = 'p-00007';")?;
    let (_, imported) = w.send(&field, &hq)?;
    assert_eq!(num(&imported, "retried")?, 1, "{imported}");
    assert_eq!(num(&imported, "held")?, 299);
    assert_eq!(
        hq.sql("SELECT name, note FROM person WHERE id = 'p-00007';")?
            .trim(),
        "Nimali|no name"
    );
    // `conflicts --retry` still retries everything.
    let out = fieldsync_ok(&[&"conflicts", &"--db", &hq.db, &"--retry", &"--json"])?.json()?;
    let retry = out.get("retry").ok_or("no retry report")?;
    assert_eq!(num(retry, "retried")?, 299);
    assert_eq!(num(retry, "held")?, 299);
    Ok(())
}

// A child held for its missing parent is retried, and applied, when the
// parent arrives in a later bundle (the bundles were imported out of order).
#[test]
fn a_held_child_is_applied_when_its_parent_arrives_in_a_later_bundle() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", RELIEF_SCHEMA)?;
    let field = w.site("field-1", RELIEF_SCHEMA)?;
    hq.sql("INSERT INTO location VALUES ('g', NULL, 'L2', 'Galle');")?;
    let first = w.bundle("parent");
    hq.export_to("field-1", &first)?;
    hq.sql("INSERT INTO shelter VALUES ('s', 'S-1', 'g', 10);")?;
    let second = w.bundle("child");
    hq.export_to("field-1", &second)?;
    let imported = field.import(&[&second])?;
    assert_eq!(num(&imported, "quarantined")?, 1);
    // An unrelated change does not wake it.
    let other = w.site("field-2", RELIEF_SCHEMA)?;
    other.sql("INSERT INTO location VALUES ('m', NULL, 'L2', 'Matara');")?;
    let (_, imported) = w.send(&other, &field)?;
    assert_eq!(num(&imported, "held")?, 1);
    let imported = field.import(&[&first])?;
    assert_eq!(num(&imported, "retried")?, 1, "{imported}");
    assert_eq!(num(&imported, "released")?, 1);
    assert_eq!(num(&imported, "held")?, 0);
    assert_eq!(field.count("SELECT count(*) FROM shelter")?, 1);
    check_clean(&field)
}

// A change made here (the operator renames the local shelter whose code
// the held one clashed with) wakes the held change at the next import,
// whatever that import brings.
#[test]
fn a_change_made_here_wakes_the_held_change_it_blocked_at_the_next_import() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", RELIEF_SCHEMA)?;
    let field = w.site("field-1", RELIEF_SCHEMA)?;
    hq.sql(
        "INSERT INTO location VALUES ('g', NULL, 'L2', 'Galle');
         INSERT INTO shelter VALUES ('s', 'S-1', 'g', 10);",
    )?;
    field.sql(
        "INSERT INTO location VALUES ('g', NULL, 'L2', 'Galle');
         INSERT INTO shelter VALUES ('t', 'S-1', 'g', 1);",
    )?;
    let (_, imported) = w.send(&hq, &field)?;
    assert_eq!(num(&imported, "quarantined")?, 1);
    field.sql("UPDATE shelter SET code = 'S-2' WHERE id = 't';")?;
    let other = w.site("field-2", RELIEF_SCHEMA)?;
    other.sql("INSERT INTO location VALUES ('m', NULL, 'L2', 'Matara');")?;
    let (_, imported) = w.send(&other, &field)?;
    assert_eq!(num(&imported, "retried")?, 1, "{imported}");
    assert_eq!(num(&imported, "held")?, 0);
    check_clean(&field)
}

/// `check` finds nothing wrong.
fn check_clean(site: &Site) -> Res {
    let out = fieldsync_ok(&[&"check", &"--db", &site.db, &"--json"])?.json()?;
    let problems = out
        .get("problems")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    assert_eq!(problems, 0, "{out}");
    Ok(())
}

/// A field of the `status --json` origin entry of `origin`.
fn origin_field(site: &Site, origin: &str, field: &str) -> Res<String> {
    let o = site
        .origin(origin)?
        .ok_or_else(|| format!("{} does not know {origin}", site.name))?;
    Ok(o.get(field)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned())
}

/// Run `cmd` with `input` piped to it; a command that exits before
/// reading it (a refusal) is no error.
fn answered(mut cmd: std::process::Command, input: &str) -> Res<Out> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child.wait_with_output()?;
    Ok(Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The ids of the held entries.
fn held_ids(site: &Site) -> Res<Vec<u64>> {
    held(site)?.iter().map(|q| num(q, "id")).collect()
}

// There was no way to drop a held change. `--discard ID` without a
// terminal and without `--yes` is refused in one line (an answer piped in
// does not count); with `--yes` the change is recorded with its values,
// dropped, and counted as received, so `check` stays clean and no gap
// remains.
#[test]
fn a_held_change_is_discarded_by_id_only_with_yes_and_its_values_are_recorded() -> Res {
    let w = World::new()?;
    let (field, hq) = many_held(&w, 3)?;
    let entries = held(&hq)?;
    let entry = entries.first().ok_or("nothing held")?;
    let first = num(entry, "id")?.to_string();
    let key = entry["key"].clone();
    let before = hq.fingerprint()?;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fieldsync"));
    cmd.args(["conflicts", "--db"])
        .arg(&hq.db)
        .args(["--discard", &first]);
    let out = answered(cmd, "y\n")?;
    assert_error(&out, 1, &["--yes", "1 held change"]);
    assert_eq!(
        hq.fingerprint()?,
        before,
        "a refused discard changed the database"
    );

    let out = fieldsync_ok(&[
        &"conflicts",
        &"--db",
        &hq.db,
        &"--discard",
        &first,
        &"--yes",
        &"--json",
    ])?
    .json()?;
    let now = out
        .get("discarded_now")
        .and_then(serde_json::Value::as_array)
        .ok_or("no discarded_now")?;
    assert_eq!(now.len(), 1);
    assert_eq!(held_ids(&hq)?.len(), 2);
    // Listed by `conflicts`, with its values and numbers.
    let out = fieldsync_ok(&[&"conflicts", &"--db", &hq.db, &"--json"])?.json()?;
    let listed = out
        .get("discarded")
        .and_then(serde_json::Value::as_array)
        .ok_or("no discarded list")?;
    assert_eq!(listed.len(), 1);
    let d = &listed[0];
    assert_eq!(text(d, "table")?, "person");
    assert_eq!(d["key"], key);
    assert_eq!(text(d, "reason")?, "not null");
    assert_eq!(text(d, "sender_instance")?, "field-1");
    assert!(text(d, "values")?.contains("note = 'no name'"), "{d}");
    assert!(text(d, "change_numbers")?.starts_with("field-1#"), "{d}");
    assert!(text(d, "discarded_at")?.ends_with('Z'), "{d}");
    let shown = fieldsync_ok(&[&"conflicts", &"--db", &hq.db])?.stdout;
    assert!(
        shown.contains("discarded: 1 held change dropped"),
        "{shown}"
    );
    assert!(shown.contains("note = 'no name'"), "{shown}");
    // Received and dropped: not missing, not held, not asked for again.
    let number = text(d, "change_numbers")?
        .trim_start_matches("field-1#")
        .to_owned();
    assert_eq!(origin_field(&hq, "field-1", "have")?, number);
    assert_eq!(origin_field(&hq, "field-1", "gaps")?, "");
    check_clean(&hq)?;
    // A later change from the sender still flows.
    field.sql("INSERT INTO visit VALUES ('v-1', 'first');")?;
    let (_, imported) = w.send(&field, &hq)?;
    assert_eq!(num(&imported, "applied")?, 1);
    check_clean(&hq)
}

// `--discard-from SENDER --yes` drops every change held from that sender.
#[test]
fn every_change_held_from_a_sender_is_discarded_with_discard_from() -> Res {
    let w = World::new()?;
    let (_field, hq) = many_held(&w, 4)?;
    let out = fieldsync(&[&"conflicts", &"--db", &hq.db, &"--discard-from", &"field-1"])?;
    assert_error(&out, 1, &["--yes", "4 held change"]);
    let out = fieldsync_ok(&[
        &"conflicts",
        &"--db",
        &hq.db,
        &"--discard-from",
        &"field-1",
        &"--yes",
    ])?;
    assert!(
        out.stdout.contains("discarded 4 held changes"),
        "{}",
        out.stdout
    );
    assert!(held_ids(&hq)?.is_empty());
    assert_eq!(origin_field(&hq, "field-1", "quarantined")?, "");
    assert_eq!(origin_field(&hq, "field-1", "gaps")?, "");
    // Nothing left to discard: one line saying where to look.
    let out = fieldsync(&[
        &"conflicts",
        &"--db",
        &hq.db,
        &"--discard-from",
        &"field-1",
        &"--yes",
    ])?;
    assert_error(
        &out,
        1,
        &["no change from 'field-1'", "fieldsync conflicts"],
    );
    check_clean(&hq)
}

// One file could grow the database without limit (50,000 NOT NULL
// violations, 14 MB). A bundle that would hold more of its sender's
// changes than the bound (`fieldsync_meta.max_held_per_sender`, default
// 10,000) is refused, the database byte-identical.
#[test]
fn a_bundle_beyond_the_bound_on_held_changes_is_refused_leaving_the_database_as_it_was() -> Res {
    let w = World::new()?;
    let field = w.site("field-1", LAX)?;
    let hq = w.site("hq", STRICT)?;
    hq.sql("INSERT INTO fieldsync_meta VALUES ('max_held_per_sender', 5);")?;
    field.sql(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 6)
         INSERT INTO person(id, note) SELECT printf('p-%05d', i), 'no name' FROM n;",
    )?;
    let file = w.bundle("too-many");
    field.export_to("hq", &file)?;
    hq.import_refused(
        &[&file],
        &[
            "field-1",
            "6",
            "limit of 5",
            "--discard-from field-1",
            "max_held_per_sender",
        ],
    )?;
    // Within the bound, it is imported.
    hq.sql("UPDATE fieldsync_meta SET value = 6 WHERE key = 'max_held_per_sender';")?;
    let imported = hq.import(&[&file])?;
    assert_eq!(num(&imported, "quarantined")?, 6);
    check_clean(&hq)
}

// A database of engine schema 3 (no record of what held changes wait for)
// opens, gains the new tables, and its first import retries every held
// change, recording what each waits for; later imports retry only those
// woken.
#[test]
fn a_quarantine_from_engine_schema_3_is_migrated_and_retried_once_in_full() -> Res {
    let w = World::new()?;
    let (field, hq) = many_held(&w, 3)?;
    hq.sql(
        "DROP TABLE fieldsync_quarantine_waits;
         DROP TABLE fieldsync_discarded;
         DROP TABLE fieldsync_assumed;
         ALTER TABLE fieldsync_quarantine DROP COLUMN seqs;
         DELETE FROM fieldsync_meta WHERE key IN ('held_mark', 'held_schema');
         UPDATE fieldsync_meta SET value = 3 WHERE key = 'schema';",
    )?;
    field.sql("INSERT INTO visit VALUES ('v-1', 'first');")?;
    let (_, imported) = w.send(&field, &hq)?;
    assert_eq!(num(&imported, "retried")?, 3, "{imported}");
    // Entries from before the seqs column still count as held, not had.
    let quarantined = hq
        .origin("field-1")?
        .and_then(|o| o.get("quarantined").cloned())
        .ok_or("no origin field-1")?;
    assert_eq!(quarantined, "1-3");
    // Upgraded to the current engine schema, with the tables added since.
    assert_eq!(
        hq.sql("SELECT value FROM fieldsync_meta WHERE key = 'schema';")?
            .trim(),
        "10"
    );
    for table in [
        "fieldsync_assumed",
        "fieldsync_waiting",
        "fieldsync_peer_schema",
        "fieldsync_schema_held",
        "fieldsync_clocks",
        "fieldsync_refused",
        "fieldsync_statements",
        "fieldsync_journal",
    ] {
        assert_eq!(
            hq.count(&format!(
                "SELECT count(*) FROM sqlite_schema WHERE name = '{table}'"
            ))?,
            1,
            "{table}"
        );
    }
    field.sql("INSERT INTO visit VALUES ('v-2', 'second');")?;
    let (_, imported) = w.send(&field, &hq)?;
    assert_eq!(num(&imported, "retried")?, 0, "{imported}");
    assert_eq!(num(&imported, "held")?, 3);
    check_clean(&hq)
}

// When in doubt, retry: any schema change since the quarantine was last
// settled (here an index the app added) makes the next import retry every
// held change, and the one after only those woken.
#[test]
fn a_schema_change_makes_the_next_import_retry_every_held_change() -> Res {
    let w = World::new()?;
    let (field, hq) = many_held(&w, 3)?;
    hq.sql("CREATE INDEX person_note ON person(note);")?;
    field.sql("INSERT INTO visit VALUES ('v-1', 'first');")?;
    let (_, imported) = w.send(&field, &hq)?;
    assert_eq!(num(&imported, "retried")?, 3, "{imported}");
    field.sql("INSERT INTO visit VALUES ('v-2', 'second');")?;
    let (_, imported) = w.send(&field, &hq)?;
    assert_eq!(num(&imported, "retried")?, 0, "{imported}");
    Ok(())
}
