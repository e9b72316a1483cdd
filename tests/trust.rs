//! Signed bundles (spec/trust.md, "Signed envelope" and "Trust on first
//! use"): each test builds the hostile bundle directly from a real one and
//! shows it is refused by `import` with one line saying what to check, a
//! non-zero exit, and the database byte for byte as before; and that
//! unsigned bundles of older builds are imported only during a migration
//! period.

use std::path::Path;

use fieldsync::Instance;
use fieldsync::bundle::format::{CHECKSUM_LEN, SIGNATURE_LEN};
use fieldsync::bundle::{BundleReader, BundleWriter, SiteRef, verify};
use fieldsync::fuzzing;

use crate::util::*;

const SCHEMA: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT);";

/// HQ with two people, and field-1 with the same (empty) table.
fn two(w: &World) -> Res<(Site, Site)> {
    let hq = w.site("hq", SCHEMA)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing'), ('p2', 'Bo', NULL);")?;
    let field = w.site("field-1", SCHEMA)?;
    Ok((hq, field))
}

/// Replace the first `from` in `bytes` with `to` (same length).
fn replace(bytes: &mut [u8], from: &[u8], to: &[u8]) -> Res {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .ok_or("the value is not in the bundle")?;
    bytes[at..at + to.len()].copy_from_slice(to);
    Ok(())
}

/// The attack 1: decompress a captured bundle, edit a value, and
/// seal it again with a fresh BLAKE3 checksum, keeping the sender's key and
/// signature (the attacker has no other).
fn resealed(bundle: &[u8], from: &[u8], to: &[u8]) -> Res<Vec<u8>> {
    let trailer = (CHECKSUM_LEN + SIGNATURE_LEN) as usize;
    let signed_by = &bundle[bundle.len() - SIGNATURE_LEN as usize..];
    let mut open = fuzzing::open(bundle)?;
    replace(&mut open, from, to)?;
    // `close` compresses and seals (checksum, then the harness's own
    // signature); keep its checksum, put the original key and signature
    // back.
    let mut forged = fuzzing::close(&open);
    forged.truncate(forged.len() - trailer + CHECKSUM_LEN as usize);
    forged.extend_from_slice(signed_by);
    Ok(forged)
}

/// A signed bundle turned into an unsigned one of format 3, as an older
/// fieldsync wrote them (the header and body are the same).
fn unsigned(bundle: &[u8]) -> Vec<u8> {
    let mut old = bundle[..bundle.len() - (CHECKSUM_LEN + SIGNATURE_LEN) as usize].to_vec();
    old[8..10].copy_from_slice(&3u16.to_le_bytes());
    let hash = blake3::hash(&old);
    old.extend_from_slice(hash.as_bytes());
    old
}

fn write(path: &Path, bytes: &[u8]) -> Res {
    std::fs::write(path, bytes)?;
    Ok(())
}

#[test]
fn a_resealed_bundle_is_refused() -> Res {
    let w = World::new()?;
    let (hq, field) = two(&w)?;
    let real = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &real)?;
    let forged = resealed(&std::fs::read(&real)?, b"Amal", b"Evil")?;
    // The checksum holds: only the signature tells.
    let file = w.bundle("forged");
    write(&file, &forged)?;
    field.import_refused(&[&file], &["signature", "fieldsync key"])?;
    // Also before any bundle from hq was imported (its key enrolled, its
    // site id not yet bound), and through `inspect`.
    assert_eq!(
        field.count("SELECT count(*) FROM fieldsync_pins WHERE site_id IS NOT NULL")?,
        0
    );
    let out = fieldsync(&[&"inspect", &file])?;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(out.stdout.contains("signature  FAILED"), "{}", out.stdout);
    // The real one imports and binds hq's key to hq's site id.
    field.import(&[&real])?;
    assert_eq!(field.rows("person")?.len(), 2);
    assert_eq!(
        field.count(
            "SELECT count(*) FROM fieldsync_pins WHERE name = 'hq' AND site_id IS NOT NULL"
        )?,
        1
    );
    assert!(!field.sql("SELECT name FROM person")?.contains("Evil"));
    Ok(())
}

#[test]
fn a_bundle_signed_by_another_key_for_a_pinned_site_is_refused() -> Res {
    let w = World::new()?;
    let (hq, field) = two(&w)?;
    let first = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &first)?;
    field.import(&[&first])?;
    hq.sql("UPDATE person SET status = 'found' WHERE id = 'p1';")?;
    let second = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &second)?;

    // Edited and signed again, by a key that is not hq's.
    let mut bytes = fuzzing::open(&std::fs::read(&second)?)?;
    replace(&mut bytes, b"found", b"FOUND")?;
    let file = w.bundle("re-signed");
    write(&file, &fuzzing::close(&bytes))?;
    let mut check = std::io::Cursor::new(std::fs::read(&file)?);
    assert!(
        verify(&mut check)?.key.is_some(),
        "the forgery is validly signed"
    );
    let theirs = fuzzing::fuzz_key().verifying_key().to_bytes();
    field.import_refused(
        &[&file],
        &[
            "says it is from 'hq'",
            &fieldsync::signing_fingerprint(&theirs),
            "fieldsync key",
        ],
    )?;

    // hq's own key, signing for a site id that is not hq's.
    let (hq_key, header) = {
        let hq_db = Instance::open(&hq.db)?;
        let key = fuzzing::signing_key(&hq_db)?;
        let reader = BundleReader::open(std::fs::File::open(&second)?)?;
        (key, reader.header().clone())
    };
    let stranger = SiteRef {
        id: fieldsync::SiteId::random(),
        name: "field-9".into(),
    };
    let mut impostor = header.clone();
    impostor.origins[0] = stranger.clone();
    impostor.sender = stranger;
    let bytes = BundleWriter::new(Vec::new(), &impostor, &hq_key)?
        .finish()?
        .0;
    let file = w.bundle("impostor");
    write(&file, &bytes)?;
    field.import_refused(
        &[&file],
        &["belongs to another instance ('hq')", "fieldsync key"],
    )?;

    // The real second bundle still imports.
    field.import(&[&second])?;
    assert!(
        field
            .sql("SELECT status FROM person WHERE id = 'p1'")?
            .contains("found")
    );
    Ok(())
}

#[test]
fn an_unsigned_bundle_is_refused_unless_allowed() -> Res {
    let w = World::new()?;
    let (hq, field) = two(&w)?;
    let real = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &real)?;
    let old = w.bundle("unsigned");
    write(&old, &unsigned(&std::fs::read(&real)?))?;
    field.import_refused(&[&old], &["unsigned", "--allow-unsigned-for 30"])?;

    // Out of range: refused, nothing changed.
    let before = field.fingerprint()?;
    for days in ["0", "91"] {
        let out = fieldsync(&[&"trust", &"--db", &field.db, &"--allow-unsigned-for", &days])?;
        assert_error(&out, 1, &["1 to 90 days"]);
    }
    assert_eq!(field.fingerprint()?, before);

    fieldsync_ok(&[&"trust", &"--db", &field.db, &"--allow-unsigned-for", &"30"])?;
    field.import(&[&old])?;
    assert_eq!(field.rows("person")?.len(), 2);
    // Unsigned bundles bind nothing.
    assert_eq!(
        field.count("SELECT count(*) FROM fieldsync_pins WHERE site_id IS NOT NULL")?,
        0
    );

    // `init --from` an unsigned full export: refused, the file not made,
    // unless --allow-unsigned.
    let full = w.bundle("full");
    hq.export_full(&full)?;
    let old_full = w.bundle("unsigned-full");
    write(&old_full, &unsigned(&std::fs::read(&full)?))?;
    let laptop = w.path("laptop.db");
    let out = fieldsync(&[
        &"init", &"--db", &laptop, &"--name", &"laptop", &"--from", &old_full,
    ])?;
    assert_error(&out, 1, &["unsigned", "--allow-unsigned"]);
    assert!(!laptop.exists());
    fieldsync_ok(&[
        &"init",
        &"--db",
        &laptop,
        &"--name",
        &"laptop",
        &"--from",
        &old_full,
        &"--allow-unsigned",
    ])?;
    assert_eq!(rows(&laptop, "person")?.len(), 2);
    // The leave was for that file only.
    assert_eq!(
        count(
            &laptop,
            "SELECT count(*) FROM fieldsync_meta WHERE key = 'accept_unsigned_until'"
        )?,
        0
    );
    // A signed full export pins its signer.
    let signed_laptop = w.site_from("laptop-2", &full)?;
    assert_eq!(
        signed_laptop.count("SELECT count(*) FROM fieldsync_pins WHERE name = 'hq'")?,
        1
    );
    Ok(())
}

#[test]
fn a_truncated_trailer_is_refused() -> Res {
    let w = World::new()?;
    let (hq, field) = two(&w)?;
    let real = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &real)?;
    let bytes = std::fs::read(&real)?;
    for cut in [1usize, 64, 96, 128] {
        let file = w.bundle("cut");
        write(&file, &bytes[..bytes.len() - cut])?;
        // The trailer is read at a fixed place from the end: a cut moves
        // it, and the signature no longer holds.
        field.import_refused(&[&file], &["signature", "not copied completely"])?;
    }
    // Shorter than any trailer.
    let file = w.bundle("stub");
    write(&file, &bytes[..20])?;
    field.import_refused(&[&file], &["truncated"])?;
    field.import(&[&real])?;
    Ok(())
}

#[test]
fn inspect_shows_the_signer_and_a_valid_signature() -> Res {
    let w = World::new()?;
    let (hq, _) = two(&w)?;
    let real = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &real)?;
    let hq_db = Instance::open(&hq.db)?;
    let key = hq_db.key()?;
    let out = fieldsync_ok(&[&"inspect", &real])?;
    assert!(
        out.stdout.contains(&key.signing_fingerprint),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(&key.public_key), "{}", out.stdout);
    assert!(out.stdout.contains("signature  valid"), "{}", out.stdout);
    let json = fieldsync_ok(&[&"inspect", &real, &"--json"])?.json()?;
    assert_eq!(text(&json, "signature")?, "valid");
    assert_eq!(text(&json, "signer_fingerprint")?, key.signing_fingerprint);
    assert_eq!(num(&json, "format_version")?, 4);
    // `fieldsync key` shows the same short fingerprint.
    let shown = fieldsync_ok(&[&"key", &"--db", &hq.db])?;
    assert!(
        shown.stdout.contains(&key.signing_fingerprint),
        "{}",
        shown.stdout
    );
    Ok(())
}
