//! Encryption to the recipient (spec/trust.md, "Encryption to the
//! recipient"): bundles are encrypted to the peer's key by default, once it
//! is known; a captured file shows only its outer header; a bundle for
//! another instance, a damaged one, or one whose outer header lies is
//! refused with one line and the database byte for byte as before; a full
//! export names its recipients or says `--no-encrypt`.

use std::path::Path;

use fieldsync::bundle::envelope::{ENVELOPE_PREAMBLE_LEN, OuterHeader, read_outer};

use crate::util::*;

const SCHEMA: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT);";

/// A value that must never be readable in an encrypted file.
const SECRET: &str = "Amal-Perera-Galle-missing";

/// HQ with one person, and laptops set up from its full export (which
/// cannot be encrypted: they have no key yet), each having sent HQ a first
/// bundle, so every key is known both ways.
fn deployment(w: &World, laptops: &[&str]) -> Res<(Site, Vec<Site>)> {
    let hq = w.site("hq", SCHEMA)?;
    hq.sql(&format!(
        "INSERT INTO person VALUES ('p1', '{SECRET}', 'missing');"
    ))?;
    let full = w.bundle("hq-full");
    let names = laptops.join(",");
    fieldsync_ok(&[
        &"export",
        &"--db",
        &hq.db,
        &"--full",
        &"--for",
        &names,
        &"--no-encrypt",
        &"-o",
        &full,
    ])?;
    let mut sites = Vec::new();
    for name in laptops {
        let laptop = w.site_from(name, &full)?;
        // The laptop knows HQ's key from the full export: its first bundle
        // is encrypted already.
        let first = w.bundle(&format!("{name}-first"));
        let exported = laptop.export_to("hq", &first)?;
        assert_eq!(exported["encrypted_for"], serde_json::json!(["hq"]));
        hq.import(&[&first])?;
        sites.push(laptop);
    }
    Ok((hq, sites))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn outer_of(file: &Path) -> Res<OuterHeader> {
    Ok(read_outer(&mut std::fs::File::open(file)?)?)
}

#[test]
fn an_encrypted_bundle_shows_only_its_outer_header() -> Res {
    let w = World::new()?;
    let (hq, laptops) = deployment(&w, &["field-1"])?;
    let field = &laptops[0];
    hq.sql("UPDATE person SET status = 'found-at-Galle-school' WHERE id = 'p1';")?;
    let file = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &file)?;
    // The raw file holds neither a value nor a table name.
    let raw = std::fs::read(&file)?;
    for needle in [SECRET, "found-at-Galle-school", "person", "status"] {
        assert!(!contains(&raw, needle.as_bytes()), "{needle} is readable");
    }
    // Without a database: the outer header only, and that it is encrypted.
    let out = fieldsync_ok(&[&"inspect", &file])?;
    assert!(out.stdout.contains("encrypted"), "{}", out.stdout);
    assert!(out.stdout.contains("'hq'") && out.stdout.contains("'field-1'"));
    assert!(
        out.stdout
            .contains(&format!("size       {} bytes", raw.len()))
    );
    for needle in [SECRET, "found-at-Galle-school", "person", "status"] {
        assert!(!out.stdout.contains(needle), "{}", out.stdout);
    }
    let json = fieldsync_ok(&[&"inspect", &"--json", &file])?.json()?;
    assert_eq!(json["encrypted"], true);
    assert_eq!(json["outer"]["sender_instance"], "hq");
    assert_eq!(json["outer"]["recipients"][0]["instance"], "field-1");
    assert!(json.get("tables").is_none(), "{json}");
    // With the recipient's database: everything, as for a plain bundle.
    let json = fieldsync_ok(&[&"inspect", &"--db", &field.db, &"--json", &file])?.json()?;
    assert_eq!(json["encrypted"], true);
    assert_eq!(json["checksum_ok"], true);
    assert_eq!(json["signature"], "valid");
    assert_eq!(json["tables"][0]["table"], "person");
    assert_eq!(json["outer"]["sender_instance"], "hq");
    // The sender reads its own bundle back; another database cannot.
    fieldsync_ok(&[&"inspect", &"--db", &hq.db, &file])?;
    let stranger = w.site("stranger", SCHEMA)?;
    let out = fieldsync(&[&"inspect", &"--db", &stranger.db, &file])?;
    assert_error(
        &out,
        1,
        &["encrypted for 'field-1'", "not for this instance"],
    );
    Ok(())
}

#[test]
fn hq_and_a_laptop_exchange_encrypted_bundles_by_default() -> Res {
    let w = World::new()?;
    let (hq, laptops) = deployment(&w, &["field-1"])?;
    let field = &laptops[0];
    field.sql("INSERT INTO person VALUES ('p2', 'Bilal Khan', 'missing');")?;
    hq.sql("UPDATE person SET status = 'found' WHERE id = 'p1';")?;
    for (from, to) in [(field, &hq), (&hq, field)] {
        let file = w.bundle(&format!("{}-to-{}", from.name, to.name));
        let exported = from.export_to(&to.name, &file)?;
        assert_eq!(exported["encrypted_for"], serde_json::json!([to.name]));
        assert_eq!(outer_of(&file)?.sender.name, from.name);
        let raw = std::fs::read(&file)?;
        assert!(!contains(&raw, b"person"));
        let imported = to.import(&[&file])?;
        assert_eq!(
            imported["files"][0]["report"]["sender_instance"],
            from.name.as_str()
        );
    }
    assert_eq!(hq.rows("person")?, field.rows("person")?);
    assert_eq!(hq.rows("person")?.len(), 2);
    // The text output says so.
    let file = w.bundle("again");
    let out = fieldsync_ok(&[
        &"export", &"--db", &hq.db, &"--to", &"field-1", &"-o", &file,
    ])?;
    assert!(
        out.stdout.contains("encrypted for 'field-1'"),
        "{}",
        out.stdout
    );
    // And --no-encrypt writes a plain signed bundle, which imports too.
    let plain = w.bundle("plain");
    let exported = hq.export_plain_to("field-1", &plain)?;
    assert_eq!(exported["encrypted_for"], serde_json::json!([]));
    assert!(contains(&std::fs::read(&plain)?, b"person"));
    field.import(&[&plain])?;
    Ok(())
}

#[test]
fn an_export_to_a_peer_whose_key_is_unknown_is_refused() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", SCHEMA)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', NULL);")?;
    let before = hq.fingerprint()?;
    let file = w.bundle("hq-to-field-9");
    let out = fieldsync(&[
        &"export", &"--db", &hq.db, &"--to", &"field-9", &"-o", &file,
    ])?;
    assert_error(
        &out,
        1,
        &[
            "'field-9'",
            "key is not known",
            "import a bundle",
            "--no-encrypt",
        ],
    );
    assert!(!file.exists());
    assert_eq!(hq.fingerprint()?, before, "the refused export changed hq");
    Ok(())
}

#[test]
fn a_bundle_for_another_recipient_is_refused() -> Res {
    let w = World::new()?;
    let (hq, laptops) = deployment(&w, &["field-1", "field-2"])?;
    let file = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &file)?;
    laptops[1].import_refused(
        &[&file],
        &[
            "encrypted for 'field-1'",
            "not for this instance ('field-2')",
        ],
    )?;
    // The outer header naming field-2 does not help: the age stream is
    // not encrypted to its key.
    let mut forged = outer_of(&file)?;
    forged.recipients[0] = fieldsync::bundle::SiteRef {
        id: fieldsync::SiteId(laptops[1].site_id()?.parse()?),
        name: "field-2".into(),
    };
    let lying = w.bundle("lying-recipient");
    rewrite_outer(&file, &forged, &lying)?;
    laptops[1].import_refused(
        &[&lying],
        &[
            "encrypted for 'field-2'",
            "not for this instance ('field-2')",
        ],
    )?;
    Ok(())
}

/// Write `file` again to `to` with another outer header.
fn rewrite_outer(file: &Path, outer: &OuterHeader, to: &Path) -> Res {
    let raw = std::fs::read(file)?;
    let olen = u32::from_le_bytes(raw[10..14].try_into()?) as usize;
    let age = &raw[ENVELOPE_PREAMBLE_LEN as usize + olen..];
    let header = rmp_serde::to_vec_named(outer)?;
    let mut out = raw[..10].to_vec();
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(age);
    std::fs::write(to, out)?;
    Ok(())
}

#[test]
fn a_mismatching_outer_header_is_refused() -> Res {
    let w = World::new()?;
    let (hq, laptops) = deployment(&w, &["field-1", "field-2"])?;
    laptops[1].sql("INSERT INTO person VALUES ('p9', 'Nimali', 'missing');")?;
    let real = w.bundle("field-2-to-hq");
    laptops[1].export_to("hq", &real)?;
    // The outer header says field-1 sent it; the signed bundle inside says
    // field-2.
    let mut forged = outer_of(&real)?;
    forged.sender = fieldsync::bundle::SiteRef {
        id: fieldsync::SiteId(laptops[0].site_id()?.parse()?),
        name: "field-1".into(),
    };
    let lying = w.bundle("lying-sender");
    rewrite_outer(&real, &forged, &lying)?;
    hq.import_refused(
        &[&lying],
        &["outside it is from 'field-1'", "inside is from 'field-2'"],
    )?;
    let out = fieldsync(&[&"inspect", &"--db", &hq.db, &lying])?;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stdout.contains("inside is from 'field-2'"),
        "{}",
        out.stdout
    );
    // The real one imports.
    hq.import(&[&real])?;
    Ok(())
}

#[test]
fn a_corrupted_or_truncated_encrypted_bundle_is_refused() -> Res {
    let w = World::new()?;
    let (hq, laptops) = deployment(&w, &["field-1"])?;
    let field = &laptops[0];
    // Enough rows for a payload of several 64 KiB chunks.
    hq.sql(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
         INSERT INTO person SELECT 'q' || i, hex(randomblob(8)) || ' ' || i, NULL FROM n;",
    )?;
    let file = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &file)?;
    let raw = std::fs::read(&file)?;
    let olen = u32::from_le_bytes(raw[10..14].try_into()?) as usize;
    let age = ENVELOPE_PREAMBLE_LEN as usize + olen;
    let bad = w.bundle("bad");
    // Flipped bytes: the outer header, the age header, the first and the
    // last chunk of the payload.
    for at in [9, 12, 20, age + 5, age + 150, raw.len() / 2, raw.len() - 1] {
        let mut b = raw.clone();
        b[at] ^= 0x01;
        std::fs::write(&bad, &b)?;
        let out = fieldsync(&[&"import", &"--db", &field.db, &bad])?;
        assert_eq!(out.code, Some(1), "flip at {at}: {}", out.stdout);
        assert_eq!(
            out.stderr.lines().count(),
            1,
            "flip at {at}: {}",
            out.stderr
        );
    }
    field.import_refused(&[&bad], &["damaged or truncated", "copy it again"])?;
    // Cut short anywhere.
    // (Fewer than the 8 bytes of the magic is "not a bundle".)
    for len in [9, 13, age - 1, age + 40, raw.len() / 2, raw.len() - 1] {
        std::fs::write(&bad, &raw[..len])?;
        field.import_refused(&[&bad], &["copy it again"])?;
    }
    // The intact file imports.
    field.import(&[&file])?;
    Ok(())
}

#[test]
fn a_full_export_needs_for_or_no_encrypt() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", SCHEMA)?;
    let before = hq.fingerprint()?;
    let file = w.bundle("full");
    let out = fieldsync(&[&"export", &"--db", &hq.db, &"--full", &"-o", &file])?;
    assert_error(&out, 1, &["--for", "--no-encrypt"]);
    assert!(!file.exists());
    // Named for a laptop not set up yet: its key is not known.
    let out = fieldsync(&[
        &"export", &"--db", &hq.db, &"--full", &"--for", &"field-1", &"-o", &file,
    ])?;
    assert_error(&out, 1, &["'field-1'", "--no-encrypt"]);
    assert!(!file.exists());
    assert_eq!(hq.fingerprint()?, before);
    // An encrypted full export cannot set up a new laptop.
    let w = World::new()?;
    let (hq, _) = deployment(&w, &["lap"])?;
    let sealed = w.bundle("hq-full-sealed");
    fieldsync_ok(&[
        &"export", &"--db", &hq.db, &"--full", &"--for", &"lap", &"-o", &sealed,
    ])?;
    let db = w.path("new.db");
    let out = fieldsync(&[&"init", &"--db", &db, &"--name", &"new", &"--from", &sealed])?;
    assert_error(&out, 1, &["encrypted", "--no-encrypt"]);
    assert!(!db.exists());
    Ok(())
}

#[test]
fn a_full_export_for_two_laptops_is_read_by_both() -> Res {
    let w = World::new()?;
    let (hq, laptops) = deployment(&w, &["field-1", "field-2"])?;
    hq.sql("INSERT INTO person VALUES ('p5', 'Chen Wei', 'missing');")?;
    let full = w.bundle("hq-full-for-both");
    let out = fieldsync_ok(&[
        &"export",
        &"--db",
        &hq.db,
        &"--full",
        &"--for",
        &"field-1,field-2",
        &"-o",
        &full,
        &"--json",
    ])?
    .json()?;
    assert_eq!(
        out["encrypted_for"],
        serde_json::json!(["field-1", "field-2"])
    );
    let names: Vec<String> = outer_of(&full)?
        .recipients
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["field-1", "field-2"]);
    for laptop in &laptops {
        laptop.import(&[&full])?;
        assert_eq!(laptop.rows("person")?, hq.rows("person")?);
    }
    let stranger = w.site("field-3", SCHEMA)?;
    stranger.import_refused(&[&full], &["encrypted for 'field-1', 'field-2'"])?;
    Ok(())
}

#[test]
fn an_engine_schema_8_database_gets_the_keyring_with_recipients() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", SCHEMA)?;
    // fieldsync_pins as engine schema 8 made it: by site id, first use.
    hq.sql(
        "DROP TABLE fieldsync_pins; \
         CREATE TABLE fieldsync_pins(site_id BLOB PRIMARY KEY, public_key BLOB NOT NULL UNIQUE, \
                                     name TEXT NOT NULL, first_seen INTEGER NOT NULL); \
         INSERT INTO fieldsync_pins VALUES (x'00112233445566778899aabbccddeeff', \
                                            zeroblob(32), 'field-1', 1); \
         UPDATE fieldsync_meta SET value = 8 WHERE key = 'schema';",
    )?;
    fieldsync_ok(&[&"status", &"--db", &hq.db])?;
    for column in ["recipient", "role", "revoked_at"] {
        assert_eq!(
            hq.count(&format!(
                "SELECT count(*) FROM pragma_table_info('fieldsync_pins') WHERE name = '{column}'"
            ))?,
            1,
            "{column}"
        );
    }
    assert_eq!(
        hq.count(
            "SELECT count(*) FROM fieldsync_pins WHERE name = 'field-1' AND role = 'first use' \
             AND site_id = x'00112233445566778899aabbccddeeff' AND recipient IS NULL"
        )?,
        1
    );
    Ok(())
}

// A bundle signed by the pinned key of its sender but carrying another
// encryption key (an instance lying about its own key, or a forger holding
// its signing key): refused like a key that differs from the pin, and HQ
// keeps encrypting to the key it recorded.
#[test]
fn a_sender_recipient_differing_from_the_recorded_one_is_refused() -> Res {
    let w = World::new()?;
    let (hq, laptops) = deployment(&w, &["field-1"])?;
    let field = &laptops[0];
    field.sql("INSERT INTO person VALUES ('p7', 'Gita', NULL);")?;
    let real = w.bundle("field-1-plain");
    field.export_plain_to("hq", &real)?;
    let mut decoded = fieldsync::fuzzing::read_all(&std::fs::read(&real)?, u64::MAX)?;
    let recorded = decoded.header.sender_recipient.clone();
    assert!(recorded.is_some());
    let stranger = w.site("stranger", SCHEMA)?;
    let other = fieldsync_ok(&[&"key", &"--db", &stranger.db, &"--json"])?.json()?;
    decoded.header.sender_recipient = Some(text(&other, "recipient")?.to_owned());
    let key = fieldsync::fuzzing::signing_key(&fieldsync::Instance::open(&field.db)?)?;
    let forged = w.bundle("field-1-other-recipient");
    std::fs::write(&forged, fieldsync::fuzzing::rewrite_with(&decoded, &key)?)?;
    hq.import_refused(&[&forged], &["'field-1'", "encryption key", "fingerprint"])?;
    // Unchanged: the real one imports, and HQ's next bundle is for field-1's key.
    hq.import(&[&real])?;
    let back = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &back)?;
    field.import(&[&back])?;
    Ok(())
}
