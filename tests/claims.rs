//! Claims checked against facts (spec/trust.md, "Claims checked against
//! facts"; issue 13, item 5): each test builds the hostile bundle directly
//! — a real export of an enrolled (pinned) laptop gone bad, its header
//! edited and signed again with the laptop's own key — and shows that
//! `import` refuses it whole with one line, a non-zero exit, and the
//! database's content (app tables, log, clock, peers, watermarks, keys,
//! pins, statements: `.dump` of everything but a journal of refused
//! bundles) as before; then that honest exchanges still go through.

use std::path::Path;

use fieldsync::bundle::format::{OriginSeqs, SignedStatement};
use fieldsync::bundle::{
    BundleReader, BundleWriter, ColSet, Header, SeqSet, SigningKey, VersionRecord,
};
use fieldsync::fuzzing;
use fieldsync::{Instance, Value};

use crate::util::*;

const SCHEMA: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT);";

/// The largest number a header can carry (2^63 − 1).
const HUGE: u64 = i64::MAX as u64;

/// HQ with two people; field-1 and field-2 set up from HQ's bundles, every
/// instance having imported from every other (so all keys are pinned and
/// every statement held).
fn world(w: &World) -> Res<(Site, Site, Site)> {
    let hq = w.site("hq", SCHEMA)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing'), ('p2', 'Bo', NULL);")?;
    let f1 = w.site("field-1", SCHEMA)?;
    let f2 = w.site("field-2", SCHEMA)?;
    w.send(&hq, &f1)?;
    w.send(&hq, &f2)?;
    f1.sql("INSERT INTO person VALUES ('p3', 'Chen', 'missing');")?;
    w.send(&f1, &hq)?;
    w.send(&f1, &f2)?;
    w.send(&f2, &hq)?;
    w.send(&hq, &f1)?;
    Ok((hq, f1, f2))
}

/// The replication state and the app's rows: `.dump` of the whole
/// database but a journal of refused bundles (which a refusal adds to).
fn state(site: &Site) -> Res<String> {
    Ok(site
        .sql(".dump")?
        .lines()
        .filter(|l| !l.contains("fieldsync_refused"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// `import FILE` must be refused: exit 1, one line naming every needle,
/// and the state as before.
#[track_caller]
fn refused(site: &Site, file: &Path, needles: &[&str]) -> Res {
    let before = state(site)?;
    let out = fieldsync(&[&"import", &"--db", &site.db, &file])?;
    assert_error(&out, 1, needles);
    assert_eq!(
        state(site)?,
        before,
        "refusing {file:?} changed {}",
        site.name
    );
    Ok(())
}

/// A site's signing key, read from its database as a thief could.
fn key_of(site: &Site) -> Res<SigningKey> {
    Ok(fuzzing::signing_key(&Instance::open(&site.db)?)?)
}

fn header_of(bundle: &Path) -> Res<Header> {
    Ok(BundleReader::open(std::fs::File::open(bundle)?)?
        .header()
        .clone())
}

/// The header's index of the origin called `name`.
fn origin(h: &Header, name: &str) -> Res<u32> {
    Ok(h.origins
        .iter()
        .position(|o| o.name == name)
        .ok_or_else(|| format!("no origin {name}"))? as u32)
}

/// Set the numbers of origin `o` in a per-origin list.
fn set(list: &mut Vec<OriginSeqs>, o: u32, seqs: SeqSet) {
    list.retain(|x| x.origin != o);
    list.push(OriginSeqs { origin: o, seqs });
}

fn range(first: u64, last: u64) -> SeqSet {
    let mut s = SeqSet::new();
    s.insert_range(first, last);
    s
}

/// True if `s` is a statement of `site` (its bytes begin with the site id).
fn of(s: &SignedStatement, site: &fieldsync::SiteId) -> bool {
    s.statement.0.get(..16) == Some(site.as_bytes().as_slice())
}

/// The top of the statement a header carries of `site`, decoded from its
/// bytes (site id, top big-endian, …).
fn stated_top(h: &Header, site: &fieldsync::SiteId) -> Option<u64> {
    h.statements
        .iter()
        .find(|s| of(s, site))
        .and_then(|s| s.statement.0.get(16..24)?.try_into().ok())
        .map(u64::from_be_bytes)
}

/// Write `header` over the real bundle `real` (body kept), signed by `key`.
fn resigned(
    w: &World,
    label: &str,
    real: &Path,
    header: &Header,
    key: &SigningKey,
) -> Res<std::path::PathBuf> {
    let file = w.bundle(label);
    std::fs::write(
        &file,
        fuzzing::with_header(&std::fs::read(real)?, header, key)?,
    )?;
    Ok(file)
}

/// Issue 13, item 2: a header claiming HQ's changes 1…2^63−1 with no
/// change of HQ's in the body was accepted, and afterwards HQ refused every
/// bundle from the instance that took it ("claims 9223372036854775807
/// changes made on this instance"), `--resend` included.
#[test]
fn inflated_claims_are_refused_whole() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) = world(&w)?;
    f1.sql("UPDATE person SET status = 'found' WHERE id = 'p3';")?;
    let real = w.bundle("f1-to-f2");
    f1.export_to("field-2", &real)?;
    let mut h = header_of(&real)?;
    let hq_o = origin(&h, "hq")?;
    let hq_id = h.origins[hq_o as usize].id;
    let top = stated_top(&h, &hq_id).ok_or("field-1 relays no statement of hq")?;
    set(&mut h.covers, hq_o, range(1, HUGE));
    set(&mut h.seen, hq_o, range(1, HUGE));
    let file = resigned(&w, "inflated", &real, &h, &key_of(&f1)?)?;

    let line = format!("has signed no change beyond {top}");
    refused(
        &f2,
        &file,
        &[
            "the bundle from 'field-1' claims changes of 'hq' up to 9223372036854775807",
            &line,
            "check with HQ",
        ],
    )?;
    // Without hq's statement in it: field-2 holds one already.
    let mut bare = h.clone();
    bare.statements.retain(|s| !of(s, &hq_id));
    let file = resigned(&w, "inflated-bare", &real, &bare, &key_of(&f1)?)?;
    refused(
        &f2,
        &file,
        &["claims changes of 'hq' up to 9223372036854775807", &line],
    )?;
    // At HQ itself: claims of its own numbers beyond its counter.
    refused(
        &hq,
        &file,
        &["claims changes of this instance ('hq') up to 9223372036854775807"],
    )?;
    // In `lacks` too (what field-1 says exists and it has not received).
    let mut lacks = header_of(&real)?;
    set(&mut lacks.lacks, hq_o, range(top + 1, HUGE));
    let file = resigned(&w, "inflated-lacks", &real, &lacks, &key_of(&f1)?)?;
    refused(
        &f2,
        &file,
        &["up to 9223372036854775807 (in 'lacks')", &line],
    )?;

    // Unsigned (a migration period): no statement is believed, the claim
    // is bounded by what field-2 knows of hq and what the body carries.
    fieldsync_ok(&[&"trust", &"--db", &f2.db, &"--allow-unsigned-for", &"30"])?;
    let signed = fuzzing::with_header(&std::fs::read(&real)?, &h, &key_of(&f1)?)?;
    let file = w.bundle("inflated-unsigned");
    std::fs::write(&file, unsigned(&signed))?;
    refused(
        &f2,
        &file,
        &["claims change 9223372036854775807 of 'hq'", "beyond 2^53"],
    )?;
    let mut less = header_of(&real)?;
    set(&mut less.covers, hq_o, range(1, top + 1000));
    set(&mut less.seen, hq_o, range(1, top + 1000));
    let signed = fuzzing::with_header(&std::fs::read(&real)?, &less, &key_of(&f1)?)?;
    std::fs::write(&file, unsigned(&signed))?;
    let claim = format!("claims changes of 'hq' up to {}", top + 1000);
    let bound = format!("carries none beyond {top}");
    refused(&f2, &file, &[&claim, &bound])?;

    // The real bundle applies, and every exchange after it goes through:
    // field-2 to HQ, HQ to field-2, with and without --resend.
    f2.import(&[&real])?;
    assert!(
        f2.sql("SELECT status FROM person WHERE id = 'p3'")?
            .contains("found")
    );
    w.exchange(&f2, &hq)?;
    let resend = w.bundle("resend");
    fieldsync_ok(&[
        &"export",
        &"--db",
        &f2.db,
        &"--to",
        &"hq",
        &"-o",
        &resend,
        &"--resend",
    ])?;
    hq.import(&[&resend])?;
    assert_eq!(hq.snapshot()?, f2.snapshot()?);
    Ok(())
}

/// Issue 13, item 4: a bundle crediting changes to the importer's own site
/// id beyond its counter was applied, and left the importer's own changes
/// "MISSING" forever (it took itself for restored from a backup).
#[test]
fn claims_for_the_importers_own_site_beyond_its_sequence_are_refused() -> Res {
    let w = World::new()?;
    let (hq, f1, _f2) = world(&w)?;
    f1.sql("UPDATE person SET status = 'found' WHERE id = 'p1';")?;
    let real = w.bundle("f1-to-hq");
    // Plain, so the test can read and edit its header.
    f1.export_plain_to("hq", &real)?;
    let h = header_of(&real)?;
    let hq_o = origin(&h, "hq")?;
    let hq_id = h.origins[hq_o as usize].id;
    let seq = num(&hq.status()?, "local_seq")?;
    let key = key_of(&f1)?;

    // Seen beyond hq's counter.
    let mut beyond = h.clone();
    set(&mut beyond.seen, hq_o, range(1, seq + 45));
    let file = resigned(&w, "beyond", &real, &beyond, &key)?;
    let claim = format!("claims changes of this instance ('hq') up to {}", seq + 45);
    let made = format!("it has made {seq} and signed no more");
    refused(&hq, &file, &[&claim, &made, "check with HQ"])?;

    // With a statement of hq's saying so, signed by field-1's key.
    beyond.statements.retain(|s| !of(s, &hq_id));
    let mut forged = beyond.clone();
    forged
        .statements
        .push(fuzzing::statement(hq_id, "hq", seq + 45, h.created, &key));
    let file = resigned(&w, "forged-statement", &real, &forged, &key)?;
    refused(
        &hq,
        &file,
        &["statement of 'hq'", "check the fingerprint with HQ"],
    )?;
    // By a new key nobody pinned: hq's own site is pinned to hq's own key.
    let stranger = SigningKey::from_bytes(&[9; 32]);
    let mut forged = beyond.clone();
    forged.statements.push(fuzzing::statement(
        hq_id,
        "hq",
        seq + 45,
        h.created,
        &stranger,
    ));
    let file = resigned(&w, "stranger-statement", &real, &forged, &key)?;
    refused(
        &hq,
        &file,
        &["statement of 'hq'", "not by the key this instance pinned"],
    )?;

    // Nothing is missing at hq, and the real bundle applies.
    let own = hq.origin("hq")?.ok_or("no origin hq")?;
    assert_eq!(text(&own, "gaps")?, "");
    hq.import(&[&real])?;
    assert_eq!(num(&hq.status()?, "local_seq")?, seq);
    assert!(
        hq.sql("SELECT status FROM person WHERE id = 'p1'")?
            .contains("found")
    );
    Ok(())
}

/// Issue 13, item 1: a forged change numbered as HQ's change 1000, relayed
/// by a laptop, was accepted after the real ones, and on the next round
/// trip laundered into HQ itself (HQ took itself for restored from a
/// backup, marked its changes up to 1000 lost and kept the forgery as its
/// own change).
#[test]
fn a_relayer_cannot_claim_numbers_the_origin_never_signed() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) = world(&w)?;
    f1.sql("UPDATE person SET status = 'found' WHERE id = 'p3';")?;
    let real = w.bundle("f1-to-f2");
    f1.export_to("field-2", &real)?;
    let mut h = header_of(&real)?;
    let hq_o = origin(&h, "hq")?;
    let hq_id = h.origins[hq_o as usize].id;
    let top = stated_top(&h, &hq_id).ok_or("no statement of hq")?;
    let person = h
        .tables
        .iter()
        .position(|t| t.name == "person")
        .ok_or("no table person")? as u32;
    let mut covers = h
        .covers
        .iter()
        .find(|c| c.origin == hq_o)
        .map(|c| c.seqs.clone())
        .unwrap_or_default();
    covers.insert_range(1000, 1000);
    set(&mut h.covers, hq_o, covers.clone());
    let mut seen = h
        .seen
        .iter()
        .find(|c| c.origin == hq_o)
        .map(|c| c.seqs.clone())
        .unwrap_or_default();
    seen.union_with(&covers);
    set(&mut h.seen, hq_o, seen);
    // The forgery: hq's change 1000 renaming p1, the only record.
    let key = key_of(&f1)?;
    let mut writer = BundleWriter::new(Vec::new(), &h, &key)?;
    writer.write_row(
        person,
        &[Value::Text("p1".into())],
        1,
        &[VersionRecord {
            origin: hq_o,
            seq: 1000,
            hlc: h.created,
            cols: ColSet::of(&[1]),
        }],
        &[Value::Text("Forged".into())],
    )?;
    let forged = writer.finish()?.0;
    let file = w.bundle("forged-1000");
    std::fs::write(&file, &forged)?;

    let line = format!("'hq' has signed no change beyond {top}");
    refused(&f2, &file, &["claims changes of 'hq' up to 1000", &line])?;
    // The same without hq's statement, or with one field-1 signed itself.
    let mut bare = h.clone();
    bare.statements.retain(|s| !of(s, &hq_id));
    let mut alone = bare.clone();
    let file = resigned(&w, "forged-bare", &file, &bare, &key)?;
    refused(&f2, &file, &["claims changes of 'hq' up to 1000", &line])?;
    alone
        .statements
        .push(fuzzing::statement(hq_id, "hq", 1000, h.created, &key));
    let file = resigned(&w, "forged-own-statement", &file, &alone, &key)?;
    refused(
        &f2,
        &file,
        &["statement of 'hq'", "check the fingerprint with HQ"],
    )?;
    // No laundering: HQ refuses it as a claim on its own numbers.
    refused(&hq, &file, &["statement of 'hq'"])?;
    let file = resigned(&w, "forged-bare-to-hq", &file, &bare, &key)?;
    refused(
        &hq,
        &file,
        &["claims changes of this instance ('hq') up to 1000"],
    )?;

    // Honest relay goes on: the real bundle, then field-2 to HQ and back.
    f2.import(&[&real])?;
    w.exchange(&f2, &hq)?;
    assert_eq!(hq.snapshot()?, f2.snapshot()?);
    assert!(!hq.sql("SELECT name FROM person")?.contains("Forged"));
    let own = hq.origin("hq")?.ok_or("no origin hq")?;
    assert_eq!(text(&own, "gaps")?, "", "nothing of hq's own is missing");
    Ok(())
}

/// An instance restored from a backup still learns which of its numbers
/// it lost, from its own statement that a peer carries back, and gets them
/// back; its relay through a laptop keeps the statements flowing.
#[test]
fn a_restored_instance_learns_its_lost_numbers_from_its_own_statement() -> Res {
    let w = World::new()?;
    let (hq, f1, f2) = world(&w)?;
    let backup = w.path("hq-backup.db");
    std::fs::copy(&hq.db, &backup)?;
    hq.sql("INSERT INTO person VALUES ('p4', 'Dana', 'missing'); UPDATE person SET name = 'Amal P.' WHERE id = 'p1';")?;
    w.send(&hq, &f1)?;
    // field-1 relays hq's changes (and hq's statement) to field-2.
    w.send(&f1, &f2)?;
    assert_eq!(f2.snapshot()?, f1.snapshot()?);
    let seq = num(&hq.status()?, "local_seq")?;

    // HQ's disk dies; it is restored from the backup.
    std::fs::copy(&backup, &hq.db)?;
    assert!(num(&hq.status()?, "local_seq")? < seq);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (_, report) = w.send(&f2, &hq)?;
    let warnings = report.to_string();
    assert!(warnings.contains("backup"), "{warnings}");
    assert_eq!(num(&hq.status()?, "local_seq")?, seq);
    // The lost changes come back.
    w.send(&hq, &f2)?;
    w.send(&f2, &hq)?;
    assert_eq!(hq.snapshot()?, f2.snapshot()?);
    assert!(
        hq.sql("SELECT name FROM person WHERE id = 'p4'")?
            .contains("Dana")
    );
    Ok(())
}

/// A signed bundle turned into an unsigned one of format 3, as an older
/// fieldsync wrote them.
fn unsigned(bundle: &[u8]) -> Vec<u8> {
    use fieldsync::bundle::format::{CHECKSUM_LEN, SIGNATURE_LEN};
    let mut old = bundle[..bundle.len() - (CHECKSUM_LEN + SIGNATURE_LEN) as usize].to_vec();
    old[8..10].copy_from_slice(&3u16.to_le_bytes());
    let hash = blake3::hash(&old);
    old.extend_from_slice(hash.as_bytes());
    old
}
