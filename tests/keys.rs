//! Each instance's own keys (issue 13, item 1; spec/trust.md): `init` and
//! `init --from` make them, a database of the previous engine schema gets
//! them when first opened, `fieldsync key` shows the public halves and
//! their fingerprint, and no command ever prints a private half.

use std::ffi::OsStr;
use std::path::Path;

use serde_json::Value as Json;

use crate::util::*;

const SCHEMA: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT, status TEXT);";

/// Crockford base 32, as the fingerprint uses it.
const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

fn key_json(db: &Path) -> Res<Json> {
    fieldsync_ok(&[&"key", &"--db", &db, &"--json"])?.json()
}

/// Four groups of four characters of the unambiguous alphabet.
#[track_caller]
fn assert_fingerprint_format(f: &str) {
    let groups: Vec<&str> = f.split('-').collect();
    assert_eq!(groups.len(), 4, "fingerprint {f}");
    for g in groups {
        assert_eq!(g.len(), 4, "fingerprint {f}");
        assert!(g.chars().all(|c| ALPHABET.contains(c)), "fingerprint {f}");
    }
}

/// The private halves, as stored.
fn secrets(site: &Site) -> Res<Vec<String>> {
    let rows = query(
        &site.db,
        "SELECT secret FROM fieldsync_keys ORDER BY purpose;",
    )?;
    Ok(rows.into_iter().flatten().collect())
}

#[test]
fn key_shows_the_public_keys_and_a_fingerprint_that_stays_the_same() -> Res {
    let w = World::new()?;
    let hq = w.bare_site("hq", SCHEMA)?;
    let k = key_json(&hq.db)?;
    assert_eq!(text(&k, "instance")?, "hq");
    assert_eq!(text(&k, "site")?, hq.site_id()?);
    let public = text(&k, "public_key")?;
    // Base64 of 32 bytes.
    assert_eq!(public.len(), 44, "{public}");
    assert!(public.ends_with('='), "{public}");
    assert!(text(&k, "recipient")?.starts_with("age1"), "{k}");
    assert_fingerprint_format(text(&k, "fingerprint")?);
    // Exactly these fields.
    let mut fields: Vec<&str> = k
        .as_object()
        .ok_or("key --json is not an object")?
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "fingerprint",
            "instance",
            "public_key",
            "recipient",
            "site",
            "version"
        ]
    );

    // The same on every call, and in text.
    assert_eq!(key_json(&hq.db)?, k);
    let out = fieldsync_ok(&[&"key", &"--db", &hq.db])?;
    for field in ["instance", "site", "public_key", "recipient", "fingerprint"] {
        assert!(
            out.stdout.contains(text(&k, field)?),
            "text output lacks {field}:\n{}",
            out.stdout
        );
    }
    assert!(out.stderr.is_empty(), "{}", out.stderr);

    // Another instance, other keys.
    let field = w.bare_site("field-1", SCHEMA)?;
    let other = key_json(&field.db)?;
    assert_fingerprint_format(text(&other, "fingerprint")?);
    for part in ["public_key", "recipient", "fingerprint"] {
        assert_ne!(text(&other, part)?, text(&k, part)?, "{part}");
    }
    // Running init again changes nothing.
    fieldsync_ok(&[&"init", &"--db", &hq.db, &"--name", &"hq"])?;
    assert_eq!(key_json(&hq.db)?, k);
    Ok(())
}

#[test]
fn init_from_gives_the_new_laptop_its_own_key() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", SCHEMA)?;
    hq.sql("INSERT INTO person VALUES ('p-1', 'Amal', 'missing');")?;
    let full = w.bundle("hq-full");
    hq.export_full(&full)?;
    let laptop = w.site_from("laptop-1", &full)?;
    let hq_key = key_json(&hq.db)?;
    let laptop_key = key_json(&laptop.db)?;
    assert_eq!(text(&laptop_key, "instance")?, "laptop-1");
    for part in ["public_key", "recipient", "fingerprint"] {
        assert_ne!(text(&laptop_key, part)?, text(&hq_key, part)?, "{part}");
    }
    // Neither private half travelled.
    let hq_secrets = secrets(&hq)?;
    for s in secrets(&laptop)? {
        assert!(!hq_secrets.contains(&s));
    }
    assert_eq!(count(&laptop.db, "SELECT count(*) FROM fieldsync_keys")?, 2);
    Ok(())
}

#[test]
fn a_database_of_engine_schema_6_gets_its_keys_when_opened() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", SCHEMA)?;
    hq.sql("INSERT INTO person VALUES ('p-1', 'Amal', 'missing');")?;
    // As the previous fieldsync left it: no key table, schema 6.
    hq.sql(
        "DROP TABLE fieldsync_keys;
         UPDATE fieldsync_meta SET value = 6 WHERE key = 'schema';",
    )?;
    // Any command opens it; nothing alarming is said.
    let out = fieldsync_ok(&[&"status", &"--db", &hq.db])?;
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    for word in ["key", "damaged", "warning", "error"] {
        assert!(
            !out.stdout.to_lowercase().contains(word),
            "status says {word:?}:\n{}",
            out.stdout
        );
    }
    assert_eq!(
        query_one(
            &hq.db,
            "SELECT value FROM fieldsync_meta WHERE key = 'schema';"
        )?,
        "10"
    );
    assert_eq!(count(&hq.db, "SELECT count(*) FROM fieldsync_keys")?, 2);
    let k = key_json(&hq.db)?;
    assert_fingerprint_format(text(&k, "fingerprint")?);
    assert_eq!(key_json(&hq.db)?, k, "made once, then kept");
    fieldsync_ok(&[&"check", &"--db", &hq.db])?;
    // And it still replicates.
    let field = w.site("field-1", SCHEMA)?;
    w.send(&hq, &field)?;
    assert_eq!(count(&field.db, "SELECT count(*) FROM person")?, 1);

    // The same from schema 6 with the table made but empty (as a 6 opened
    // by this fieldsync's DDL would be).
    field.sql(
        "DELETE FROM fieldsync_keys;
         UPDATE fieldsync_meta SET value = 6 WHERE key = 'schema';",
    )?;
    let out = fieldsync_ok(&[&"key", &"--db", &field.db, &"--json"])?;
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    assert_fingerprint_format(text(&out.json()?, "fingerprint")?);
    Ok(())
}

#[test]
fn damaged_or_missing_keys_are_reported_not_replaced() -> Res {
    let w = World::new()?;
    let hq = w.bare_site("hq", SCHEMA)?;
    let field = w.bare_site("field-1", SCHEMA)?;
    let theirs = text(&key_json(&field.db)?, "public_key")?.to_owned();
    hq.sql(&format!(
        "UPDATE fieldsync_keys SET public = '{theirs}' WHERE purpose = 'sign';"
    ))?;
    let out = fieldsync(&[&"key", &"--db", &hq.db])?;
    assert_error(&out, 1, &["keys are damaged", "does not match", "backup"]);

    // At the current engine schema, keys that vanished are not silently
    // replaced by new ones (a new identity would not match what peers
    // pinned).
    field.sql("DELETE FROM fieldsync_keys;")?;
    let out = fieldsync(&[&"key", &"--db", &field.db])?;
    assert_error(&out, 1, &["keys are damaged", "no 'sign' key"]);
    assert_eq!(count(&field.db, "SELECT count(*) FROM fieldsync_keys")?, 0);

    let out = fieldsync(&[&"key", &"--db", &w.path("nowhere.db")])?;
    assert_error(&out, 1, &["does not exist"]);
    Ok(())
}

#[test]
fn no_command_prints_a_private_key() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", SCHEMA)?;
    hq.sql("INSERT INTO person VALUES ('p-1', 'Amal', 'missing');")?;
    let field = w.site("field-1", SCHEMA)?;
    let full = w.bundle("hq-full");
    hq.export_full(&full)?;
    let (_, _) = w.send(&hq, &field)?;
    let delta = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &delta)?;
    let hidden = secrets(&hq)?;
    assert_eq!(hidden.len(), 2);
    assert!(hidden.iter().any(|s| s.starts_with("AGE-SECRET-KEY-1")));

    let runs: Vec<Vec<&dyn AsRef<OsStr>>> = vec![
        vec![&"key", &"--db", &hq.db],
        vec![&"key", &"--db", &hq.db, &"--json"],
        vec![&"status", &"--db", &hq.db],
        vec![&"status", &"--db", &hq.db, &"--json"],
        vec![&"check", &"--db", &hq.db, &"--json"],
        vec![&"conflicts", &"--db", &hq.db, &"--json"],
        vec![&"schema", &"--db", &hq.db, &"--json"],
        vec![&"inspect", &full],
        vec![&"inspect", &full, &"--json"],
        vec![&"inspect", &delta, &"--json"],
    ];
    for args in runs {
        let out = fieldsync_ok(&args)?;
        let printed = format!("{}{}", out.stdout, out.stderr);
        for secret in &hidden {
            assert!(
                !printed.contains(secret.as_str()),
                "a private key in the output of {:?}",
                args.iter().map(|a| a.as_ref()).collect::<Vec<_>>()
            );
        }
        assert!(!printed.contains("AGE-SECRET-KEY"));
    }
    Ok(())
}
