//! Changes known to exist but not received (spec/merge.md, "Watermarks"):
//! gaps at the top end as well as holes, shown by `status` and reported to
//! the sender in the receiver's next bundle, which then carries them again
//! without `--resend`; what is merely in transit is not sent again; and
//! `export` refusing to overwrite a bundle file not delivered yet. Through
//! the real CLI, except the hostile headers, crafted with the public writer.

use std::io::Cursor;
use std::path::Path;

use fieldsync::bundle::{BundleWriter, Header, Hlc, OriginSeqs, SeqSet, SiteRef};
use fieldsync::fuzzing::MAX_SEQ;
use fieldsync::{ExportTarget, SiteId};
use serde_json::Value as Json;

use crate::util::instances::{export_to, import, instance};
use crate::util::*;

const PERSON: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT);";

/// What `status --json` at `site` says is missing of `origin` ("" if
/// nothing), and what it has.
fn gaps_of(site: &Site, origin: &str) -> Res<(String, String)> {
    let o = site
        .origin(origin)?
        .ok_or_else(|| format!("{} does not list origin {origin}", site.name))?;
    Ok((text(&o, "gaps")?.to_owned(), text(&o, "have")?.to_owned()))
}

/// The changes this instance has numbered (`local_seq` of `status`).
fn local_seq(site: &Site) -> Res<u64> {
    num(&site.status()?, "local_seq")
}

/// The entry for `peer` in `status --json`'s peers.
fn peer_of(site: &Site, peer: &str) -> Res<Json> {
    let status = site.status()?;
    status
        .get("peers")
        .and_then(Json::as_array)
        .and_then(|ps| {
            ps.iter()
                .find(|p| p.get("instance").and_then(Json::as_str) == Some(peer))
        })
        .cloned()
        .ok_or_else(|| format!("{} has no peer {peer}", site.name).into())
}

/// `export --to PEER -o FILE --force --json`.
fn export_forced(site: &Site, peer: &str, file: &Path) -> Res<Out> {
    fieldsync_ok(&[
        &"export", &"--db", &site.db, &"--to", &peer, &"-o", &file, &"--force",
    ])
}

/// field-1 has sent hq its first changes and heard back: both agree on
/// what hq has of field-1.
fn acquainted(w: &World) -> Res<(Site, Site, Site)> {
    let (hq, f1, f2) = w.three(PERSON)?;
    f1.sql("INSERT INTO person VALUES ('a', 'Amal'), ('b', 'Bo'), ('c', 'Cy'), ('d', 'Di');")?;
    w.exchange(&f1, &hq)?;
    Ok((hq, f1, f2))
}

/// Issue 11, item 1, as a user hit it: a second export with nothing new
/// overwrote the bundle holding change 5 with an empty one; hq imported it
/// and showed no gap, although the header said field-1 has 1-5. Only a
/// person thinking of `--resend` got change 5 back.
#[test]
fn an_overwritten_bundle_left_a_top_end_gap_nobody_saw() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = acquainted(&w)?;
    f1.sql("INSERT INTO person VALUES ('e', 'Eve');")?;
    let file = w.path("to-hq.bundle");
    assert_eq!(num(&f1.export_to("hq", &file)?, "changes")?, 1);
    let top = local_seq(&f1)?;

    // A second run with nothing new: export now refuses to overwrite the
    // file, so the empty bundle is written beside it and put in its place,
    // as the overwrite did.
    let out = fieldsync(&[&"export", &"--db", &f1.db, &"--to", &"hq", &"-o", &file])?;
    assert_error(&out, 1, &["has not acknowledged", "--force"]);
    let second = w.path("second.bundle");
    assert_eq!(num(&f1.export_to("hq", &second)?, "changes")?, 0);
    std::fs::rename(&second, &file)?;

    let imported = hq.import(&[&file])?;
    assert_eq!(num(&imported, "applied")?, 0);
    let (gaps, have) = gaps_of(&hq, "field-1")?;
    assert_eq!(
        gaps,
        top.to_string(),
        "hq shows the top-end gap (have {have})"
    );
    assert_eq!(have, format!("1-{}", top - 1));
    assert_eq!(
        imported["files"][0]["report"]["gaps"]["field-1"].as_str(),
        Some(top.to_string().as_str()),
        "the import reports it: {imported}"
    );
    let human = fieldsync_ok(&[&"status", &"--db", &hq.db])?.stdout;
    assert!(
        human.contains(&format!("MISSING {top}")),
        "status shows it:\n{human}"
    );

    // One round trip, no --resend: hq's bundle says it lacks it, and
    // field-1's next export carries it.
    w.send(&hq, &f1)?;
    assert_eq!(num(&peer_of(&f1, "hq")?, "pending_changes")?, 1);
    let (exported, imported) = w.send(&f1, &hq)?;
    assert_eq!(num(&exported, "changes")?, 1, "{exported}");
    assert_eq!(num(&imported, "applied")?, 1, "{imported}");
    assert_eq!(gaps_of(&hq, "field-1")?.0, "");
    assert_eq!(hq.rows("person")?, f1.rows("person")?);
    Ok(())
}

/// A bundle lost on the way is recovered by the next round trip alone;
/// the recovery is sent once, not again at every export until the peer
/// has answered.
#[test]
fn a_lost_bundle_is_sent_again_after_one_round_trip_without_resend() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = acquainted(&w)?;
    f1.sql("INSERT INTO person VALUES ('x', 'Xu'), ('y', 'Yo');")?;
    let lost = w.bundle("lost");
    assert_eq!(num(&f1.export_to("hq", &lost)?, "changes")?, 2);
    std::fs::remove_file(&lost)?;

    // field-1 writes again before hearing from hq: nothing new, the lost
    // bundle's changes count as in transit.
    let (exported, _) = w.send(&f1, &hq)?;
    assert_eq!(num(&exported, "changes")?, 0);
    let top = local_seq(&f1)?;
    assert_eq!(
        gaps_of(&hq, "field-1")?.0,
        format!("{}-{top}", top - 1),
        "hq knows they exist"
    );

    w.send(&hq, &f1)?;
    let file = w.bundle("again");
    assert_eq!(num(&f1.export_to("hq", &file)?, "changes")?, 2);
    // Sent again; until hq answers, they are in transit once more.
    let (exported, _) = w.send(&f1, &hq)?;
    assert_eq!(num(&exported, "changes")?, 0, "answered once: {exported}");
    hq.import(&[&file])?;
    assert_eq!(gaps_of(&hq, "field-1")?.0, "");
    assert_eq!(hq.rows("person")?, f1.rows("person")?);

    // Settled: nothing more goes either way.
    w.send(&hq, &f1)?;
    let (exported, _) = w.send(&f1, &hq)?;
    assert_eq!(num(&exported, "changes")?, 0);
    assert_eq!(num(&peer_of(&f1, "hq")?, "unacknowledged")?, 0);
    Ok(())
}

/// A bundle on its way is not sent again when the peer's bundle, written
/// before it arrived, does not know of its changes.
#[test]
fn a_bundle_in_transit_is_not_sent_again() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = acquainted(&w)?;
    f1.sql("INSERT INTO person VALUES ('t', 'Tam');")?;
    let on_the_way = w.bundle("in-transit");
    assert_eq!(num(&f1.export_to("hq", &on_the_way)?, "changes")?, 1);

    // hq writes to field-1 before the bundle arrives.
    w.send(&hq, &f1)?;
    assert_eq!(gaps_of(&f1, "field-1")?.0, "");
    let f1_peer = peer_of(&f1, "hq")?;
    assert_eq!(num(&f1_peer, "pending_changes")?, 0, "{f1_peer}");
    assert_eq!(num(&f1_peer, "unacknowledged")?, 1, "{f1_peer}");
    let (exported, _) = w.send(&f1, &hq)?;
    assert_eq!(num(&exported, "changes")?, 0, "not sent again: {exported}");

    // It arrives after all.
    let imported = hq.import(&[&on_the_way])?;
    assert_eq!(num(&imported, "applied")?, 1);
    assert_eq!(gaps_of(&hq, "field-1")?.0, "");
    w.send(&hq, &f1)?;
    let (exported, _) = w.send(&f1, &hq)?;
    assert_eq!(num(&exported, "changes")?, 0);
    Ok(())
}

/// `export` refuses to overwrite a bundle file whose changes its recipient
/// has not acknowledged, in one line saying what to do; `--force` does,
/// says so, and carries them again. A file acknowledged, or not a bundle,
/// is replaced as before; a received bundle not imported is protected too.
#[test]
fn export_refuses_to_overwrite_an_undelivered_bundle_unless_forced() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = acquainted(&w)?;
    f1.sql("INSERT INTO person VALUES ('e', 'Eve');")?;
    let file = w.path("to-hq.bundle");
    f1.export_to("hq", &file)?;
    let bytes = std::fs::read(&file)?;

    let out = fieldsync(&[&"export", &"--db", &f1.db, &"--to", &"hq", &"-o", &file])?;
    assert_error(
        &out,
        1,
        &["to-hq.bundle", "'hq' has not acknowledged", "--force"],
    );
    assert_eq!(std::fs::read(&file)?, bytes, "the file is untouched");

    let out = export_forced(&f1, "hq", &file)?;
    assert!(out.stderr.contains("overwrote"), "{}", out.stderr);
    assert!(out.stdout.contains("1 change ("), "{}", out.stdout);
    assert_eq!(num(&hq.import(&[&file])?, "applied")?, 1);

    // Acknowledged (hq's bundle came back): replaced without a word.
    w.send(&hq, &f1)?;
    let out = fieldsync_ok(&[&"export", &"--db", &f1.db, &"--to", &"hq", &"-o", &file])?;
    assert!(!out.stderr.contains("overwrote"), "{}", out.stderr);

    // Not a bundle: replaced as before.
    let notes = w.path("notes.txt");
    std::fs::write(&notes, "not a bundle")?;
    fieldsync_ok(&[&"export", &"--db", &f1.db, &"--to", &"hq", &"-o", &notes])?;

    // A bundle received here and not imported yet.
    hq.sql("INSERT INTO person VALUES ('h', 'Hal');")?;
    let received = w.path("from-hq.bundle");
    hq.export_to("field-1", &received)?;
    let out = fieldsync(&[&"export", &"--db", &f1.db, &"--to", &"hq", &"-o", &received])?;
    assert_error(&out, 1, &["this instance has not acknowledged", "--force"]);
    f1.import(&[&received])?;
    fieldsync_ok(&[&"export", &"--db", &f1.db, &"--to", &"hq", &"-o", &received])?;

    // A full export replaces one of its own: it holds all the old one did.
    let full = w.path("hq-full.bundle");
    hq.export_full(&full)?;
    hq.sql("INSERT INTO person VALUES ('i', 'Ida');")?;
    hq.export_full(&full)?;

    // A damaged header is not trusted either way.
    let mut broken = std::fs::read(&received)?;
    broken.truncate(20);
    std::fs::write(&received, &broken)?;
    let out = fieldsync(&[&"export", &"--db", &f1.db, &"--to", &"hq", &"-o", &received])?;
    assert_error(&out, 1, &["cannot be read", "--force"]);
    export_forced(&f1, "hq", &received)?;
    Ok(())
}

/// hq relays field-2's changes to field-1; that bundle is lost and the
/// next one says hq has them. field-1, which had never heard of field-2,
/// shows the gap and gets them after one round trip.
#[test]
fn a_relayed_origins_top_end_gap_is_shown_and_recovered() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) = acquainted(&w)?;
    f2.sql("INSERT INTO person VALUES ('n', 'Nimali'), ('m', 'Mo');")?;
    w.send(&f2, &hq)?;
    let lost = w.bundle("relay-lost");
    assert_eq!(num(&hq.export_to("field-1", &lost)?, "changes")?, 2);
    std::fs::remove_file(&lost)?;
    let (exported, _) = w.send(&hq, &f1)?;
    assert_eq!(num(&exported, "changes")?, 0);
    let top = local_seq(&f2)?;
    let (gaps, have) = gaps_of(&f1, "field-2")?;
    assert_eq!(gaps, format!("1-{top}"));
    assert_eq!(have, "");

    w.send(&f1, &hq)?;
    let (exported, imported) = w.send(&hq, &f1)?;
    assert_eq!(num(&exported, "changes")?, 2, "{exported}");
    assert_eq!(num(&imported, "applied")?, 2, "{imported}");
    assert_eq!(
        gaps_of(&f1, "field-2")?,
        (String::new(), format!("1-{top}"))
    );
    assert_eq!(f1.rows("person")?, hq.rows("person")?);
    Ok(())
}

/// A sender claiming absurd holdings: numbers beyond the largest, above
/// 2^53, or beyond what their origin made are refused whole (they were
/// once believed, and cost a line of status for ever); a claim to lack
/// everything of the receiver's never makes it send its whole log again
/// and again.
#[test]
fn hostile_headers_claiming_huge_holdings_are_bounded() -> Res {
    let dir = tempfile::tempdir()?;
    let mut hq = instance(dir.path(), "hq", PERSON)?;
    let mut f1 = instance(dir.path(), "field-1", PERSON)?;
    for i in 0..50 {
        hq.connection()
            .execute("INSERT INTO person VALUES (?1, 'x')", [format!("p{i}")])?;
    }
    let to_f1 = export_to(&mut hq, "field-1")?;
    import(&mut f1, &to_f1)?;
    import(&mut hq, &export_to(&mut f1, "hq")?)?;

    let f1_ref = SiteRef {
        id: f1.site_id()?,
        name: "field-1".into(),
    };
    // The real field-1's key: the claims must reach the checks below the
    // signature.
    let f1_key = fieldsync::fuzzing::signing_key(&f1)?;
    let hq_ref = SiteRef {
        id: hq.site_id()?,
        name: "hq".into(),
    };
    let stranger = SiteRef {
        id: SiteId::random(),
        name: "stranger".into(),
    };
    let set = |origin: u32, a: u64, b: u64| OriginSeqs {
        origin,
        seqs: SeqSet::range(a, b),
    };
    // "field-1" (the real one's id) says: I have a stranger's 1..MAX_SEQ
    // and hq's 1-10, and I lack every other change of hq's.
    let header = Header {
        sender: f1_ref.clone(),
        created: Hlc::from_unix_ms(fieldsync::fuzzing::now_unix_ms() + 1000).0,
        full: false,
        recipient: Some("hq".into()),
        origins: vec![f1_ref.clone(), hq_ref.clone(), stranger.clone()],
        tables: vec![],
        covers: vec![],
        seen: vec![set(1, 1, 10), set(2, 1, MAX_SEQ)],
        lost: Default::default(),
        lacks: vec![set(1, 11, MAX_SEQ)],
        trust: Vec::new(),
        trust_seen: None,
        local_tables: vec![],
        schemas: Vec::new(),
        sender_recipient: None,
        statements: Vec::new(),
        views: vec![],
    };
    // Claims beyond what an origin signed, or above 2^53, refuse the
    // bundle whole (spec/trust.md, "Claims checked against facts"): the
    // stranger's numbers, and hq's own beyond its counter.
    let crafted = BundleWriter::new(Vec::new(), &header, &f1_key)?.finish()?.0;
    let err = hq.import(Cursor::new(&crafted)).err().ok_or("accepted")?;
    assert!(err.to_string().contains("beyond 2^53"), "{err}");
    assert!(hq.status()?.origins.iter().all(|o| o.name != "stranger"));
    let own = Header {
        seen: vec![set(1, 1, 10)],
        ..header.clone()
    };
    let crafted = BundleWriter::new(Vec::new(), &own, &f1_key)?.finish()?.0;
    let err = hq.import(Cursor::new(&crafted)).err().ok_or("accepted")?;
    assert!(
        err.to_string()
            .contains("claims changes of this instance ('hq') up to"),
        "{err}"
    );
    // What a sender lacks of hq's, within what hq made, is believed.
    let header = Header {
        seen: vec![set(1, 1, 10)],
        lacks: vec![set(1, 11, 50)],
        ..header
    };
    let crafted = BundleWriter::new(Vec::new(), &header, &f1_key)?.finish()?.0;
    hq.import(Cursor::new(&crafted))?;

    // hq's own changes it reports lacking: sent once more, then not again
    // until another bundle of field-1's asks.
    let sent = |hq: &mut fieldsync::Instance| -> Res<u64> {
        let mut b = Vec::new();
        let r = hq.export(
            &ExportTarget::Peer {
                to: "field-1".into(),
                resend: false,
            },
            &mut b,
        )?;
        Ok(r.changes)
    };
    assert_eq!(sent(&mut hq)?, 40, "what it lacks, of what was sent");
    assert_eq!(sent(&mut hq)?, 0);
    assert_eq!(sent(&mut hq)?, 0);

    // A header that both has and lacks a number, or lacks one beyond the
    // largest, is refused as malformed.
    let both = Header {
        seen: vec![set(1, 1, 10)],
        lacks: vec![set(1, 5, 6)],
        ..header.clone()
    };
    let crafted = BundleWriter::new(Vec::new(), &both, &f1_key)?.finish()?.0;
    let err = hq.import(Cursor::new(&crafted)).err().ok_or("accepted")?;
    assert!(err.to_string().contains("both has and lacks"), "{err}");
    let beyond = Header {
        lacks: vec![set(1, MAX_SEQ, MAX_SEQ)],
        seen: vec![set(1, 1, 10)],
        ..header
    };
    let mut crafted = BundleWriter::new(Vec::new(), &beyond, &f1_key)?.finish()?.0;
    let mut from = vec![0xcf];
    from.extend_from_slice(&MAX_SEQ.to_be_bytes());
    let at = crafted
        .windows(from.len())
        .position(|x| x == from.as_slice())
        .ok_or("MAX_SEQ not found")?;
    crafted[at + 1..at + 9].copy_from_slice(&u64::MAX.to_be_bytes());
    fieldsync::fuzzing::reseal_with(&mut crafted, &f1_key);
    assert!(hq.import(Cursor::new(&crafted)).is_err());
    Ok(())
}

/// Found by the golden demo when imports began measuring gaps from their
/// start: a bundle whose every change is held (an update of a row whose
/// insert was in an earlier bundle not imported yet) did not report the
/// earlier bundle's changes as missing, because the held numbers above them
/// already made them a hole when the gaps were compared.
#[test]
fn a_bundle_whose_changes_are_all_held_still_reports_the_gap_below_them() -> Res {
    let w = World::new()?;
    let schema = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT);";
    let hq = w.site("hq", schema)?;
    let f1 = w.site("field-1", schema)?;
    f1.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing');")?;
    let first = w.bundle("week-1");
    f1.export_to("hq", &first)?;
    f1.sql("UPDATE person SET status = 'found' WHERE id = 'p1';")?;
    let second = w.bundle("week-2");
    f1.export_to("hq", &second)?;

    let out = fieldsync(&[&"import", &"--db", &hq.db, &second])?;
    assert_eq!(out.code, Some(3), "held in quarantine: {out:?}");
    assert!(out.stdout.contains("1 quarantined"), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("changes 1 from 'field-1' have not arrived"),
        "{}",
        out.stderr
    );
    assert_eq!(gaps_of(&hq, "field-1")?.0, "1");
    // The late bundle fills the gap and releases the held update.
    let imported = hq.import(&[&first])?;
    assert_eq!(num(&imported, "released")?, 1, "{imported}");
    assert_eq!(gaps_of(&hq, "field-1")?.0, "");
    assert_eq!(
        query_one(&hq.db, "SELECT status FROM person WHERE id = 'p1'")?,
        "found"
    );
    Ok(())
}
