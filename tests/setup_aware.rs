//! A laptop set up from a full export (issue 11, item 2): HQ names the
//! instances it writes a full export for (`export --full --for`), so its
//! first bundle to each carries only what changed after that export, even
//! before HQ has heard from them; a laptop set up from another file (an
//! older one, or none) still gets everything it lacks once it is heard
//! from, without `--resend`; and nothing a bundle claims makes HQ skip what
//! its sender does not say it has. Through the real CLI, except the
//! crafted header, written with the public writer.

use std::io::Cursor;
use std::path::Path;

use fieldsync::SiteId;
use fieldsync::bundle::{BundleWriter, Header, Hlc, OriginSeqs, SeqSet, SiteRef};
use serde_json::Value as Json;

use crate::util::*;

const PERSON: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT, status TEXT);";

/// HQ with `n` people, tracked.
fn hq_with(w: &World, n: usize) -> Res<Site> {
    let hq = w.site("hq", PERSON)?;
    hq.sql(&format!(
        "WITH RECURSIVE i(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM i WHERE x < {n}) \
         INSERT INTO person SELECT printf('p%06d', x), 'person ' || x, 'missing' FROM i;"
    ))?;
    Ok(hq)
}

/// `export --full --for PEERS -o FILE --json` at `site`, which must succeed.
fn export_full_for(site: &Site, peers: &str, file: &Path) -> Res<Out> {
    fieldsync_ok(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &site.db,
        &"--full",
        &"--for",
        &peers,
        &"-o",
        &file,
    ])
}

/// Rows of `person` on `a` and `b` are the same.
#[track_caller]
fn same_people(a: &Site, b: &Site) -> Res {
    let (x, y) = (a.rows("person")?, b.rows("person")?);
    assert_eq!(x.len(), y.len(), "{} and {} differ in rows", a.name, b.name);
    assert!(x == y, "{} and {} hold different people", a.name, b.name);
    Ok(())
}

/// `check --db` prints `ok`.
fn check_ok(site: &Site) -> Res {
    let out = fieldsync_ok(&[&"check", &"--db", &site.db])?;
    assert!(out.stdout.starts_with("ok"), "{}", out.stdout);
    Ok(())
}

/// The entry for `peer` in `status --json`'s peers.
fn peer_of(site: &Site, peer: &str) -> Res<Json> {
    site.status()?
        .get("peers")
        .and_then(Json::as_array)
        .and_then(|ps| {
            ps.iter()
                .find(|p| p.get("instance").and_then(Json::as_str) == Some(peer))
        })
        .cloned()
        .ok_or_else(|| format!("{} has no peer {peer}", site.name).into())
}

/// The README's flow as reported: HQ exported in full, a laptop was set up
/// from that file, HQ changed one row and exported to the laptop before
/// hearing from it. The bundle carried every row again (N + 1 on a
/// 300,000-row database); named in the full export, the laptop gets the
/// one change.
#[test]
fn hq_first_export_to_a_laptop_set_up_from_its_full_export_carried_every_row_again() -> Res {
    const N: usize = 2000;
    let w = World::new()?;
    let hq = hq_with(&w, N)?;
    let full = w.bundle("hq-full");
    export_full_for(&hq, "field-1", &full)?;
    let f1 = w.site_from("field-1", &full)?;
    hq.sql("UPDATE person SET status = 'found' WHERE id = 'p000007';")?;

    let to_f1 = w.bundle("hq-to-field-1");
    let exported = hq.export_to("field-1", &to_f1)?;
    assert_eq!(num(&exported, "changes")?, 1, "{exported}");
    let imported = f1.import(&[&to_f1])?;
    assert_eq!(num(&imported, "applied")?, 1, "{imported}");
    same_people(&hq, &f1)?;
    assert_eq!(
        f1.count("SELECT count(*) FROM person WHERE status = 'found'")?,
        1
    );

    // The laptop's first bundle carries only what it did; HQ's next one
    // nothing; both stay clean.
    f1.sql("INSERT INTO person VALUES ('f1-a', 'Amal', 'missing');")?;
    let back = w.bundle("field-1-to-hq");
    assert_eq!(num(&f1.export_to("hq", &back)?, "changes")?, 1);
    hq.import(&[&back])?;
    let again = w.bundle("hq-to-field-1-again");
    assert_eq!(num(&hq.export_to("field-1", &again)?, "changes")?, 0);
    f1.import(&[&again])?;
    same_people(&hq, &f1)?;
    check_ok(&hq)?;
    check_ok(&f1)?;

    // Unnamed, a laptop set up from the same kind of file still gets
    // everything (HQ cannot know what it holds), field-1's row included:
    // the behaviour before.
    let plain = w.bundle("hq-full-plain");
    hq.export_full(&plain)?;
    w.site_from("field-9", &plain)?;
    hq.sql("UPDATE person SET status = 'safe' WHERE id = 'p000008';")?;
    let to_f9 = w.bundle("hq-to-field-9");
    assert_eq!(
        num(&hq.export_to("field-9", &to_f9)?, "changes")?,
        N as u64 + 1
    );
    Ok(())
}

/// Two laptops set up from the one file named for both: each gets only
/// the delta, and what one does reaches the other through HQ.
#[test]
fn two_laptops_set_up_from_one_full_export_each_get_only_the_delta() -> Res {
    let w = World::new()?;
    let hq = hq_with(&w, 300)?;
    let full = w.bundle("hq-full");
    let out = export_full_for(&hq, "field-1,field-2", &full)?;
    assert!(
        out.stdout.contains("full export for 'field-1', 'field-2'"),
        "{}",
        out.stdout
    );
    let f1 = w.site_from("field-1", &full)?;
    let f2 = w.site_from("field-2", &full)?;
    hq.sql("UPDATE person SET name = 'Kasun' WHERE id = 'p000003';")?;
    for f in [&f1, &f2] {
        let file = w.bundle(&format!("hq-to-{}", f.name));
        assert_eq!(num(&hq.export_to(&f.name, &file)?, "changes")?, 1);
        f.import(&[&file])?;
        same_people(&hq, f)?;
    }
    f1.sql("UPDATE person SET status = 'found' WHERE id = 'p000010';")?;
    w.send(&f1, &hq)?;
    let (exported, _) = w.send(&hq, &f2)?;
    assert_eq!(num(&exported, "changes")?, 1, "field-1's edit only");
    w.send(&f2, &hq)?;
    w.send(&hq, &f1)?;
    same_people(&hq, &f1)?;
    same_people(&hq, &f2)?;
    for s in [&hq, &f1, &f2] {
        check_ok(s)?;
    }
    Ok(())
}

/// A laptop set up from an older full export than the one HQ named it in
/// (or from none at all) lacks what came in between: its first bundle
/// says what it has, and HQ's next export carries the rest, without
/// `--resend`.
#[test]
fn a_laptop_set_up_from_an_older_full_export_still_converges_without_resend() -> Res {
    let w = World::new()?;
    let hq = hq_with(&w, 100)?;
    let old = w.bundle("hq-full-old");
    hq.export_full(&old)?;
    hq.sql(
        "INSERT INTO person VALUES ('late-1', 'Late One', 'missing'), ('late-2', 'Late Two', NULL);
         UPDATE person SET status = 'found' WHERE id = 'p000001';",
    )?;
    let new = w.bundle("hq-full-new");
    export_full_for(&hq, "field-1,field-2", &new)?;
    // field-1 was given the older file; field-2 was set up by hand.
    let f1 = w.site_from("field-1", &old)?;
    let f2 = w.site("field-2", PERSON)?;
    hq.sql("UPDATE person SET name = 'Renamed' WHERE id = 'p000050';")?;

    // HQ exports before hearing from either: the change after the file.
    for f in [&f1, &f2] {
        let file = w.bundle(&format!("hq-to-{}", f.name));
        assert_eq!(num(&hq.export_to(&f.name, &file)?, "changes")?, 1);
        f.import(&[&file])?;
    }
    // field-1 now knows it lacks HQ's changes in between, and says so.
    let (gaps, _) = {
        let o = f1.origin("hq")?.ok_or("field-1 does not list hq")?;
        (text(&o, "gaps")?.to_owned(), text(&o, "have")?.to_owned())
    };
    assert!(!gaps.is_empty(), "field-1 shows no gap");

    // One round trip: each laptop's bundle, then HQ's answer.
    for f in [&f1, &f2] {
        w.send(f, &hq)?;
        w.send(&hq, f)?;
        same_people(&hq, f)?;
        check_ok(f)?;
    }
    let o = f1.origin("hq")?.ok_or("field-1 does not list hq")?;
    assert_eq!(text(&o, "gaps")?, "", "{o}");
    check_ok(&hq)?;

    // A laptop that speaks first is settled by its first bundle too.
    let f3 = w.site_from("field-3", &old)?;
    let newer = w.bundle("hq-full-for-3");
    export_full_for(&hq, "field-3", &newer)?;
    let (exported, _) = w.send(&f3, &hq)?;
    assert_eq!(num(&exported, "changes")?, 0);
    let (exported, _) = w.send(&hq, &f3)?;
    assert_eq!(
        num(&exported, "changes")?,
        4,
        "the changes after the older file"
    );
    same_people(&hq, &f3)?;
    Ok(())
}

/// `--for` with a name HQ has not heard of is the normal case (the laptop
/// does not exist yet): it becomes a peer and a note says so. A misspelt
/// name costs only size: the real laptop, unnamed, gets everything. A name
/// that cannot be a peer is refused in one line, and `--for` needs `--full`.
#[test]
fn an_unknown_name_in_for_becomes_a_peer_and_a_misspelt_one_only_costs_size() -> Res {
    let w = World::new()?;
    let hq = hq_with(&w, 50)?;
    let full = w.bundle("hq-full");
    let out = fieldsync_ok(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--full",
        &"--for",
        &"field-1",
        &"--for",
        &"feild-2",
        &"-o",
        &full,
    ])?;
    assert!(
        out.stderr.contains("new peers field-1, feild-2"),
        "{}",
        out.stderr
    );
    let peer = peer_of(&hq, "feild-2")?;
    assert_eq!(peer.get("site"), Some(&Json::Null), "{peer}");
    assert_eq!(num(&peer, "pending_changes")?, 0, "{peer}");

    let f2 = w.site_from("field-2", &full)?;
    let to_f2 = w.bundle("hq-to-field-2");
    let out = fieldsync_ok(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--to",
        &"field-2",
        &"-o",
        &to_f2,
    ])?;
    assert!(out.stderr.contains("--for field-2"), "{}", out.stderr);
    assert!(out.stdout.contains("50 changes"), "{}", out.stdout);
    f2.import(&[&to_f2])?;
    same_people(&hq, &f2)?;

    // Names that cannot be a peer: this instance, or not a name at all.
    let x = w.bundle("x");
    for bad in ["hq", "field 1!"] {
        let out = fieldsync(&[
            &"export",
            &"--no-encrypt",
            &"--db",
            &hq.db,
            &"--full",
            &"--for",
            &bad,
            &"-o",
            &x,
        ])?;
        assert_error(&out, 1, &[bad]);
        assert!(!x.exists(), "a refused export left {}", x.display());
    }
    let out = fieldsync(&[
        &"export",
        &"--no-encrypt",
        &"--db",
        &hq.db,
        &"--to",
        &"field-2",
        &"--for",
        &"field-1",
        &"-o",
        &x,
    ])?;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    Ok(())
}

/// Bundles are hostile until checked. A bundle "from field-1" that calls
/// itself a full export and names no holdings of HQ's (no setup, a forged
/// or garbage claim) does not make HQ believe field-1 was set up from
/// HQ's file: what its seen-vector leaves out goes to it. Nor does a
/// stranger using field-1's name: the real field-1 still gets everything.
#[test]
fn a_bundle_claiming_a_setup_it_does_not_hold_gets_what_it_lacks() -> Res {
    let w = World::new()?;
    let hq = hq_with(&w, 40)?;
    let full = w.bundle("hq-full");
    export_full_for(&hq, "field-1,field-2", &full)?;
    // field-1 exists (by hand, empty), never set up from the file.
    let f1 = w.site("field-1", PERSON)?;
    let mut lib_hq = fieldsync::Instance::open(&hq.db)?;
    let f1_ref = SiteRef {
        id: fieldsync::Instance::open(&f1.db)?.site_id()?,
        name: "field-1".into(),
    };
    let hq_ref = SiteRef {
        id: lib_hq.site_id()?,
        name: "hq".into(),
    };
    let header = Header {
        sender: f1_ref.clone(),
        created: Hlc::from_unix_ms(fieldsync::fuzzing::now_unix_ms()).0,
        full: true,
        recipient: Some("hq".into()),
        origins: vec![f1_ref, hq_ref.clone()],
        tables: vec![],
        covers: vec![],
        seen: vec![],
        lost: Default::default(),
        lacks: vec![],
        trust: Vec::new(),
        trust_seen: None,
        local_tables: vec![],
        schemas: Vec::new(),
        sender_recipient: None,
        statements: Vec::new(),
        views: vec![],
    };
    let crafted = BundleWriter::new(
        Vec::new(),
        &header,
        &fieldsync::fuzzing::signing_key(&fieldsync::Instance::open(&f1.db)?)?,
    )?
    .finish()?
    .0;
    lib_hq.import(Cursor::new(&crafted))?;
    let to_f1 = w.bundle("hq-to-field-1");
    assert_eq!(num(&hq.export_to("field-1", &to_f1)?, "changes")?, 40);
    f1.import(&[&to_f1])?;
    same_people(&hq, &f1)?;

    // A stranger sends a bundle under field-2's name saying it has all of
    // HQ's changes: exports to that stranger skip them, but the real
    // field-2 is another instance, and is asked for by site id.
    let stranger = SiteRef {
        id: SiteId::random(),
        name: "field-2".into(),
    };
    let forged = Header {
        sender: stranger.clone(),
        origins: vec![stranger, hq_ref],
        seen: vec![OriginSeqs {
            origin: 1,
            seqs: SeqSet::range(1, 40),
        }],
        full: false,
        ..header
    };
    let crafted = BundleWriter::new(
        Vec::new(),
        &forged,
        &fieldsync::fuzzing::key_for(&forged.sender.id),
    )?
    .finish()?
    .0;
    // Since enrolment, HQ does not even take it: its key is not enrolled.
    match lib_hq.import(Cursor::new(&crafted)) {
        Err(fieldsync::Error::Trust(fieldsync::TrustError::NotEnrolled { .. })) => {}
        other => return Err(format!("the stranger's bundle was not refused: {other:?}").into()),
    }
    let f2 = w.site("field-2", PERSON)?;
    f2.sql("INSERT INTO person VALUES ('f2-a', 'Bo', NULL);")?;
    w.send(&f2, &hq)?;
    // Its claims were never recorded: the real field-2, by name, gets all.
    let to_real = w.bundle("hq-to-real-field-2");
    assert_eq!(num(&hq.export_to("field-2", &to_real)?, "changes")?, 40);
    f2.import(&[&to_real])?;
    same_people(&hq, &f2)?;
    Ok(())
}
