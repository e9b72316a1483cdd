//! Enrolment, anchor and revocation (spec/trust.md, "Enrolment, anchor,
//! revocation"), through the CLI as a deployment uses it: HQ made with
//! `init`, laptops set up from its full export with `--expect-key`, HQ
//! enrolling them, its records reaching the laptops in its bundles. Each
//! attack of issue 13 that enrolment answers is built directly and refused
//! with one line, a non-zero exit and the database as before.

use std::path::Path;
use std::process::Command;

use crate::util::*;

const SCHEMA: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT);";

/// HQ with two people and every table tracked, enrolling nobody yet.
fn hq(w: &World) -> Res<Site> {
    let hq = w.stranger("hq", SCHEMA)?;
    fieldsync_ok(&[&"track", &"--db", &hq.db, &"--all"])?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing'), ('p2', 'Bo', NULL);")?;
    Ok(hq)
}

/// The fingerprint line of `fieldsync key` (both keys), as HQ reads it
/// over the phone.
fn fingerprint_of(site: &Site) -> Res<String> {
    Ok(text(&site.key()?, "fingerprint")?.to_owned())
}

/// A laptop set up from HQ's full export, the officer having checked HQ's
/// fingerprint, but not yet enrolled at HQ.
fn laptop(w: &World, name: &str, full: &Path, expect: &str) -> Res<Site> {
    let db = w.path(&format!("{name}.db"));
    fieldsync_ok(&[
        &"init",
        &"--db",
        &db,
        &"--name",
        &name,
        &"--from",
        &full,
        &"--expect-key",
        &expect,
    ])?;
    Ok(Site {
        name: name.to_owned(),
        db,
    })
}

/// HQ enrols a laptop it set up itself: `key --json | trust --stdin`.
fn enrol_piped(hq: &Site, laptop: &Site) -> Res<Out> {
    let key = fieldsync_ok(&[&"key", &"--db", &laptop.db, &"--json"])?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fieldsync"));
    cmd.args(["trust", "--db"])
        .arg(&hq.db)
        .arg("--stdin")
        .env_remove("FIELDSYNC_DB");
    run_with_input(cmd, &key.stdout)?.ok()
}

/// HQ, its full export, and field-1 and field-2 set up from it; neither
/// enrolled yet.
fn deployment(w: &World) -> Res<(Site, Site, Site)> {
    let hq = hq(w)?;
    let full = w.bundle("hq-full");
    hq.export_full(&full)?;
    let signing = signer_fingerprint(&full)?;
    let f1 = laptop(w, "field-1", &full, &signing)?;
    let f2 = laptop(w, "field-2", &full, &signing)?;
    Ok((hq, f1, f2))
}

#[test]
fn a_bundle_signed_by_an_unknown_key_is_refused() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = deployment(&w)?;
    f1.sql("INSERT INTO person VALUES ('f1', 'Chen', 'found');")?;
    let from_f1 = w.bundle("field-1-to-hq");
    // Unencrypted, so the test can read its signer without HQ's key.
    f1.export_plain_to("hq", &from_f1)?;
    let f1_signing = signer_fingerprint(&from_f1)?;
    // HQ has not enrolled field-1: refused, saying how to enrol it.
    hq.import_refused(
        &[&from_f1],
        &[
            "does not know",
            &f1_signing,
            "fieldsync trust --db",
            "check this fingerprint",
        ],
    )?;
    // Enrolled by the values its officer reads out: the command shows the
    // fingerprint to read back, the same `fieldsync key` shows there.
    let key = f1.key()?;
    let out = fieldsync_ok(&[
        &"trust",
        &"--db",
        &hq.db,
        &"field-1",
        &text(&key, "public_key")?,
        &text(&key, "recipient")?,
    ])?;
    assert!(out.stdout.contains(&fingerprint_of(&f1)?), "{}", out.stdout);
    hq.import(&[&from_f1])?;
    assert_eq!(hq.rows("person")?.len(), 3);
    // A key that is not base64 of 32 bytes, a non-ASCII name: refused.
    let out = fieldsync(&[&"trust", &"--db", &hq.db, &"field-3", &"not-a-key"])?;
    assert_error(&out, 1, &["public key", "fieldsync key"]);
    let out = fieldsync(&[&"trust", &"--db", &hq.db, &"һq", &text(&key, "public_key")?])?;
    assert_error(&out, 1, &["ASCII"]);
    Ok(())
}

#[test]
fn enrolments_travel_from_hq_to_the_laptops() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) = deployment(&w)?;
    let out = enrol_piped(&hq, &f1)?;
    assert!(out.stdout.contains("travels"), "{}", out.stdout);
    enrol_piped(&hq, &f2)?;
    // field-1 hands field-2 a bundle directly (a stick between laptops):
    // field-2 has not heard of field-1's enrolment yet.
    f1.sql("INSERT INTO person VALUES ('f1', 'Chen', 'found');")?;
    let direct = w.bundle("field-1-to-field-2");
    f1.export_to("field-2", &direct)?;
    f2.import_refused(
        &[&direct],
        &["does not know", "import a newer bundle from HQ"],
    )?;
    // HQ's next bundle to field-2 carries HQ's signed enrolments.
    let from_hq = w.bundle("hq-to-field-2");
    hq.export_to("field-2", &from_hq)?;
    f2.import(&[&from_hq])?;
    f2.import(&[&direct])?;
    assert_eq!(f2.rows("person")?.len(), 3);
    let list = fieldsync_ok(&[&"trust", &"--db", &f2.db, &"--list", &"--json"])?.json()?;
    assert_eq!(list["anchor"], "hq");
    let names: Vec<&str> = list["instances"]
        .as_array()
        .ok_or("no instances")?
        .iter()
        .filter_map(|i| i["instance"].as_str())
        .collect();
    assert!(
        names.contains(&"field-1") && names.contains(&"hq"),
        "{names:?}"
    );
    // HQ sends a record once: its next bundle to field-2 carries none.
    let again = w.bundle("hq-to-field-2-again");
    hq.export_to("field-2", &again)?;
    let back = w.bundle("field-2-to-hq");
    f2.export_to("hq", &back)?;
    hq.import(&[&back])?;
    let third = w.bundle("hq-to-field-2-third");
    hq.export_to("field-2", &third)?;
    assert!(
        std::fs::metadata(&third)?.len() < std::fs::metadata(&from_hq)?.len(),
        "records acknowledged by field-2 are not sent again"
    );
    Ok(())
}

#[test]
fn an_impostor_named_hq_is_refused() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = deployment(&w)?;
    // Someone sets up an instance called "hq" of their own and hands
    // field-1 a bundle from it.
    let fake_db = w.path("impostor/hq.db");
    std::fs::create_dir_all(fake_db.parent().ok_or("no parent")?)?;
    sqlite3(&fake_db, SCHEMA)?;
    fieldsync_ok(&[&"init", &"--db", &fake_db, &"--name", &"hq"])?;
    fieldsync_ok(&[&"track", &"--db", &fake_db, &"--all"])?;
    sqlite3(
        &fake_db,
        "INSERT INTO person VALUES ('p1', 'Evil', 'dead');",
    )?;
    let forged = w.bundle("impostor-to-field-1");
    fieldsync_ok(&[
        &"export",
        &"--db",
        &fake_db,
        &"--to",
        &"field-1",
        &"--no-encrypt",
        &"-o",
        &forged,
    ])?;
    f1.import_refused(
        &[&forged],
        &[
            "says it is from 'hq'",
            "belongs to another instance",
            "fieldsync key",
        ],
    )?;
    // The same at HQ itself, for its own name.
    hq.import_refused(&[&forged], &["from 'hq'"])?;
    // A look-alike name cannot be made at all.
    let out = fieldsync(&[&"init", &"--db", &w.path("cyr.db"), &"--name", &"һq"])?;
    assert_error(&out, 1, &["ASCII"]);
    Ok(())
}

#[test]
fn init_from_refuses_a_file_not_signed_by_the_expected_key() -> Res {
    let w = World::new()?;
    let hq = hq(&w)?;
    let full = w.bundle("hq-full");
    hq.export_full(&full)?;
    let other = w.stranger("other", SCHEMA)?;
    // Without --expect-key (no terminal): refused, showing the fingerprint
    // to check and the option to give it; no file made.
    let db = w.path("field-1.db");
    let out = fieldsync(&[
        &"init", &"--db", &db, &"--name", &"field-1", &"--from", &full,
    ])?;
    assert_error(&out, 1, &["--expect-key", &fingerprint_of(&hq)?]);
    assert!(!db.exists());
    // Another instance's fingerprint: refused, naming both.
    let wrong = fingerprint_of(&other)?;
    let out = fieldsync(&[
        &"init",
        &"--db",
        &db,
        &"--name",
        &"field-1",
        &"--from",
        &full,
        &"--expect-key",
        &wrong,
    ])?;
    assert_error(
        &out,
        1,
        &["not", &wrong, "get the full export from your HQ again"],
    );
    assert!(!db.exists());
    // HQ's own, typed in lower case without dashes: set up, HQ its anchor.
    let typed = signer_fingerprint(&full)?.replace('-', "").to_lowercase();
    fieldsync_ok(&[
        &"init",
        &"--db",
        &db,
        &"--name",
        &"field-1",
        &"--from",
        &full,
        &"--expect-key",
        &typed,
    ])?;
    let list = fieldsync_ok(&[&"trust", &"--db", &db, &"--list", &"--json"])?.json()?;
    assert_eq!(list["anchor"], "hq");
    Ok(())
}

#[test]
fn a_revoked_sender_is_refused_everywhere_the_revocation_reaches() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) = deployment(&w)?;
    enrol_piped(&hq, &f1)?;
    enrol_piped(&hq, &f2)?;
    // field-1 works, and reaches HQ and field-2 through HQ.
    f1.sql("INSERT INTO person VALUES ('f1', 'Chen', 'found');")?;
    w.send(&f1, &hq)?;
    w.send(&hq, &f2)?;
    // field-1 is stolen; HQ revokes it.
    let out = fieldsync_ok(&[&"revoke", &"--db", &hq.db, &"field-1"])?;
    assert!(out.stdout.contains("Revoked 'field-1'"), "{}", out.stdout);
    let again = fieldsync_ok(&[&"revoke", &"--db", &hq.db, &"field-1"])?;
    assert!(again.stdout.contains("already revoked"), "{}", again.stdout);
    // The thief's next bundles: refused at HQ at once…
    f1.sql("UPDATE person SET status = 'dead' WHERE id = 'p1';")?;
    let to_hq = w.bundle("stolen-to-hq");
    f1.export_to("hq", &to_hq)?;
    hq.import_refused(&[&to_hq], &["'field-1' was revoked", "--list"])?;
    // …and at field-2 once HQ's bundle carrying the revocation arrives.
    let to_f2 = w.bundle("stolen-to-field-2");
    f1.export_to("field-2", &to_f2)?;
    w.send(&hq, &f2)?;
    f2.import_refused(&[&to_f2], &["'field-1' was revoked", "by HQ"])?;
    // What it sent before stays, and is listed.
    assert_eq!(
        hq.sql("SELECT status FROM person WHERE id = 'p1'")?.trim(),
        "missing"
    );
    assert_eq!(f2.rows("person")?.len(), 3);
    let list = fieldsync_ok(&[&"trust", &"--db", &hq.db, &"--list"])?;
    assert!(list.stdout.contains("REVOKED"), "{}", list.stdout);
    let json = fieldsync_ok(&[&"trust", &"--db", &hq.db, &"--list", &"--json"])?.json()?;
    let f1_entry = json["instances"]
        .as_array()
        .ok_or("no instances")?
        .iter()
        .find(|i| i["instance"] == "field-1")
        .ok_or("field-1 not listed")?
        .clone();
    assert_eq!(f1_entry["changes"], 1);
    assert_eq!(f1_entry["keep_through"], 1);
    // Revoking an unknown name says where to look.
    let out = fieldsync(&[&"revoke", &"--db", &hq.db, &"field-9"])?;
    assert_error(&out, 1, &["no instance called 'field-9'", "--list"]);
    Ok(())
}

#[test]
fn a_revoked_instances_later_changes_relayed_by_another_are_held() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) = deployment(&w)?;
    enrol_piped(&hq, &f1)?;
    enrol_piped(&hq, &f2)?;
    f1.sql("INSERT INTO person VALUES ('f1', 'Chen', 'found');")?;
    w.send(&f1, &hq)?;
    w.send(&hq, &f2)?;
    fieldsync_ok(&[&"revoke", &"--db", &hq.db, &"field-1"])?;
    // The thief hands field-2 a bundle before the revocation reaches it:
    // field-2 takes it, and relays field-1's change to HQ.
    f1.sql("UPDATE person SET status = 'dead' WHERE id = 'p1';")?;
    w.send(&f1, &f2)?;
    f2.sql("INSERT INTO person VALUES ('f2', 'Dee', NULL);")?;
    w.send(&f2, &hq)?;
    // HQ applies field-2's own change, not the revoked instance's later one.
    assert_eq!(
        hq.sql("SELECT status FROM person WHERE id = 'p1'")?.trim(),
        "missing"
    );
    assert_eq!(hq.count("SELECT count(*) FROM person WHERE id = 'f2'")?, 1);
    let conflicts = fieldsync_ok(&[&"conflicts", &"--db", &hq.db, &"--json"])?.json()?;
    let held = conflicts["quarantined"]
        .as_array()
        .ok_or("no quarantine list")?;
    assert!(
        held.iter()
            .any(|q| q["reason"] == "from a revoked instance" && q["sender_instance"] == "field-2"),
        "{held:?}"
    );
    // A retry does not let it in; HQ's bundle then tells field-2.
    fieldsync_ok(&[&"conflicts", &"--db", &hq.db, &"--retry"])?;
    assert_eq!(
        hq.sql("SELECT status FROM person WHERE id = 'p1'")?.trim(),
        "missing"
    );
    w.send(&hq, &f2)?;
    let list = fieldsync_ok(&[&"trust", &"--db", &f2.db, &"--list"])?;
    assert!(list.stdout.contains("REVOKED"), "{}", list.stdout);
    Ok(())
}
