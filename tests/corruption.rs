//! Corruption sweep: a small real bundle (two tables, a few rows, an update,
//! a delete and an insert) damaged at every byte and cut at every length.
//!
//! - As damaged, every variant must be refused (the signature over the
//!   checksum, the checksum, or an earlier check catches it: a flipped byte
//!   in the signed trailer, or a cut that moves it, fails the signature) and the database must be exactly as before, engine
//!   tables included; a sample goes through the CLI, which must say so in
//!   one line on stderr and exit 1.
//! - With the checksum recomputed and signed again after the damage (by
//!   the fuzz harness's key, which the target database has not pinned for
//!   anyone), the header and body
//!   decoders and the merge see it: a variant may then be refused or
//!   applied, but never panic, and if applied the database passes
//!   `PRAGMA integrity_check` and `fieldsync check` and a second import
//!   applies nothing ([`fieldsync::fuzzing::ImportTarget`]).
//!
//! Each test prints its counts (`cargo test --test tests corruption:: -- --nocapture`).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use fieldsync::fuzzing::{self, ImportTarget, Outcome};
use fieldsync::{BundleError, Error, Instance, Selection};

use crate::util::instances::export_to;
use crate::util::*;

const SCHEMA: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT);
                      CREATE TABLE visit(person TEXT, day INTEGER, note, PRIMARY KEY(person, day));";

/// The receiver's database (closed) and a delta bundle for it from hq.
fn setup(dir: &Path) -> Res<(PathBuf, Vec<u8>)> {
    let (mut hq, _) = Instance::init(dir.join("hq.db"), "hq")?;
    hq.connection().execute_batch(SCHEMA)?;
    hq.connection().execute_batch(
        "INSERT INTO person VALUES ('p1', 'Amal', 'missing'), ('p2', 'Bo', 'found'), ('p3', 'Cy', NULL);
         INSERT INTO visit VALUES ('p1', 1, 'first'), ('p2', 1, 2.5);",
    )?;
    hq.track(&Selection::All)?;
    let (mut field, _) = Instance::init(dir.join("field-1.db"), "field-1")?;
    field.connection().execute_batch(SCHEMA)?;
    field.track(&Selection::All)?;
    fieldsync::fuzzing::enrol_each_other(&mut hq, &mut field)?;
    field.import(Cursor::new(export_to(&mut hq, "field-1")?))?;
    field
        .connection()
        .execute_batch("UPDATE person SET status = 'seen' WHERE id = 'p3';")?;
    hq.import(Cursor::new(export_to(&mut field, "hq")?))?;
    hq.connection().execute_batch(
        "UPDATE person SET status = 'found' WHERE id = 'p1';
         DELETE FROM person WHERE id = 'p2';
         INSERT INTO visit VALUES ('p3', 7, x'00ff');",
    )?;
    let bundle = export_to(&mut hq, "field-1")?;
    let path = field.path().to_owned();
    Ok((path, bundle))
}

/// Every table of the database, engine tables and schema included.
fn fingerprint(i: &Instance) -> Res<String> {
    Ok(fuzzing::state_fingerprint(i.connection(), false)?)
}

/// Every damaged variant of `bundle`, labelled: each byte XOR 0x01 and XOR
/// 0xFF, then every proper prefix.
fn variants(bundle: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..bundle.len() {
        for mask in [0x01u8, 0xff] {
            let mut v = bundle.to_vec();
            v[i] ^= mask;
            out.push((format!("byte {i} ^ {mask:#04x}"), v));
        }
    }
    for len in 0..bundle.len() {
        out.push((format!("first {len} bytes"), bundle[..len].to_vec()));
    }
    out
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::Bundle(BundleError::ChecksumMismatch) => "checksum mismatch",
        Error::Bundle(BundleError::SignatureInvalid) => "signature fails",
        Error::Bundle(BundleError::Truncated) => "truncated",
        Error::Bundle(BundleError::NotABundle) => "not a bundle",
        Error::Bundle(BundleError::LineEndingsMangled) => "line endings mangled",
        Error::Bundle(BundleError::NewerFormat { .. }) => "newer format",
        Error::Bundle(BundleError::Malformed { .. }) => "malformed",
        Error::Bundle(_) => "other bundle error",
        Error::Import(_) => "import refused",
        Error::Trust(_) => "signer refused",
        _ => "other error",
    }
}

#[test]
fn every_flipped_or_truncated_byte_is_refused_and_changes_nothing() -> Res {
    let dir = tempfile::tempdir()?;
    let (db, bundle) = setup(dir.path())?;
    let mut field = Instance::open(&db)?;
    let before = fingerprint(&field)?;
    let all = variants(&bundle);
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    for (label, v) in &all {
        match field.import(Cursor::new(v)) {
            Ok(r) => panic!("{label}: a damaged bundle was imported: {r:?}"),
            Err(e) => *kinds.entry(kind(&e)).or_default() += 1,
        }
        assert_eq!(fingerprint(&field)?, before, "{label} changed the database");
    }
    assert_eq!(kinds.values().sum::<u64>(), all.len() as u64);
    eprintln!(
        "bundle of {} bytes: {} flipped and {} truncated variants, all refused: {kinds:?}",
        bundle.len(),
        2 * bundle.len(),
        bundle.len()
    );
    // The undamaged bundle does import.
    assert!(field.import(Cursor::new(&bundle))?.applied > 0);
    Ok(())
}

#[test]
fn a_sample_of_damaged_bundles_is_refused_by_the_cli_in_one_line() -> Res {
    let dir = tempfile::tempdir()?;
    let (db, bundle) = setup(dir.path())?;
    let all = variants(&bundle);
    let before = db_fingerprint(&db)?;
    let file = dir.path().join("damaged.fsb");
    // About 40 variants spread over every region of the file.
    let step = (all.len() / 40).max(1);
    let mut n = 0;
    for (label, v) in all.iter().step_by(step) {
        std::fs::write(&file, v)?;
        let out = fieldsync(&[&"import", &"--db", &db, &file])?;
        assert_error(&out, 1, &["cannot import"]);
        // Nothing but its row in the journal of refused bundles.
        assert_eq!(
            db_fingerprint(&db)?.without_journal(),
            before.without_journal(),
            "{label} changed the database"
        );
        n += 1;
        assert_eq!(
            count(&db, "SELECT count(*) FROM fieldsync_refused")?,
            n,
            "{label} was not journaled"
        );
    }
    eprintln!("{n} damaged bundles refused by the CLI");
    Ok(())
}

#[test]
fn resealed_damage_is_refused_or_applied_consistently() -> Res {
    let dir = tempfile::tempdir()?;
    let (db, bundle) = setup(dir.path())?;
    let target = ImportTarget::from_database(&dir.path().join("work"), &db)?;
    let mut applied = BTreeMap::<&str, u64>::new();
    let mut rejected = BTreeMap::<&str, u64>::new();
    for (label, v) in variants(&bundle) {
        let what = if label.starts_with("first") {
            "truncated"
        } else {
            "flipped"
        };
        let mut v = v;
        fuzzing::reseal(&mut v);
        match target.run(&v) {
            Outcome::Applied(_) => *applied.entry(what).or_default() += 1,
            Outcome::Rejected(_) => *rejected.entry(what).or_default() += 1,
        }
    }
    eprintln!("resealed variants: applied {applied:?}, refused {rejected:?}");
    assert!(
        applied.values().sum::<u64>() > 0,
        "no resealed variant applied: the sweep did not reach the merge"
    );
    Ok(())
}
