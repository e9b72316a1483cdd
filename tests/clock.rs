//! A clock that cannot be dragged, and the journal of refused bundles
//! (spec/trust.md, "The clock bound" and "Journal of refused bundles"),
//! through the CLI: a properly signed bundle whose changes are stamped ten
//! years ahead (its sender's clock set forward with the `sqlite3` shell) is
//! partly held "from the future" without moving the importer's clock or
//! spreading; `status` and `check` warn about clocks far apart; every
//! refused bundle leaves one row in `fieldsync_refused`, listed by
//! `conflicts`, and nothing else.

use fieldsync::bundle::Hlc;
use serde_json::Value as Json;

use crate::util::*;

const SCHEMA: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT);";

const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Set an instance's clock `ms` ahead of the wall clock, as a laptop whose
/// date is wrong (or a forger) would have it: its next changes are stamped
/// there.
fn set_clock_ahead(site: &Site, ms: i64) -> Res {
    let hlc = Hlc::from_unix_ms(now_ms() + ms).0 as i64;
    site.sql(&format!(
        "UPDATE fieldsync_meta SET value = {hlc} WHERE key = 'clock';"
    ))?;
    Ok(())
}

/// The instance's clock (unix ms).
fn clock_ms(site: &Site) -> Res<i64> {
    let v: u64 = site
        .sql("SELECT value FROM fieldsync_meta WHERE key = 'clock';")?
        .trim()
        .parse()?;
    Ok(Hlc(v).unix_ms())
}

/// The newest stamp in an instance's change log (unix ms).
fn newest_logged_ms(site: &Site) -> Res<i64> {
    let v: i64 = site
        .sql("SELECT coalesce(max(hlc), 0) FROM fieldsync_log;")?
        .trim()
        .parse()?;
    Ok(Hlc(v as u64).unix_ms())
}

/// `conflicts --json`.
fn conflicts(site: &Site) -> Res<Json> {
    fieldsync_ok(&[&"conflicts", &"--db", &site.db, &"--json"])?.json()
}

fn status_of(site: &Site, id: &str) -> Res<String> {
    Ok(site
        .sql(&format!("SELECT status FROM person WHERE id = '{id}';"))?
        .trim()
        .to_owned())
}

#[test]
fn a_change_from_the_future_is_held_and_the_clock_does_not_move() -> Res {
    let w = World::new()?;
    let (hq, field, other) = w.three(SCHEMA)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing');")?;
    w.send(&hq, &field)?;
    w.send(&hq, &other)?;
    w.send(&field, &hq)?;

    // field-1 records a person at the right time, then its date jumps ten
    // years ahead and it edits p1: one bundle, signed by field-1's own key,
    // with one honest change and one from the future.
    field.sql("INSERT INTO person VALUES ('p4', 'Dana', 'safe');")?;
    fieldsync_ok(&[&"compact", &"--db", &field.db])?;
    set_clock_ahead(&field, 3650 * DAY_MS)?;
    field.sql("UPDATE person SET status = 'dead' WHERE id = 'p1';")?;
    let attack = w.bundle("field-1-to-hq");
    field.export_to("hq", &attack)?;

    let out = fieldsync(&[&"import", &"--db", &hq.db, &attack])?;
    // Applied, but a change is held in quarantine ("from the future").
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    // One line says how many, from whom, how far ahead and what to check.
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("ahead of this computer's clock"))
        .ok_or_else(|| format!("no line about the future: {}", out.stderr))?;
    for needle in [
        "1 change from 'field-1'",
        "days ahead",
        "held until then",
        "check the date on field-1",
    ] {
        assert!(line.contains(needle), "{needle:?} not in {line:?}");
    }
    assert!(
        line.contains("3649 days") || line.contains("3650 days"),
        "{line}"
    );
    // Everything else in the bundle applied; the future value did not win.
    assert_eq!(status_of(&hq, "p4")?, "safe");
    assert_eq!(status_of(&hq, "p1")?, "missing");
    // The clock did not jump: neither the stored clock nor the next bundle's
    // `created`.
    assert!(clock_ms(&hq)? < now_ms() + 3_600_000, "hq's clock moved");
    let held = conflicts(&hq)?;
    let quarantined = held["quarantined"].as_array().ok_or("no quarantine")?;
    assert_eq!(quarantined.len(), 1, "{held}");
    assert_eq!(quarantined[0]["reason"], "from the future");
    assert_eq!(quarantined[0]["sender_instance"], "field-1");
    let id = quarantined[0]["id"].as_i64().ok_or("no id")?;
    // The held change is not counted as received: hq still lacks it.
    let origin = hq.origin("field-1")?.ok_or("no origin field-1")?;
    assert_ne!(origin["quarantined"], "", "{origin}");

    // `status` warns that a peer's clock is far ahead, and says it in JSON.
    let st = fieldsync(&[&"status", &"--db", &hq.db, &"--json"])?;
    assert_eq!(st.code, Some(0), "{}", st.stderr);
    assert!(
        st.stderr.contains("'field-1' showed a clock of"),
        "{}",
        st.stderr
    );
    let json = st.json()?;
    assert_eq!(json["clock"]["held_from_the_future"], 1);
    assert_eq!(json["clock"]["seen"][0]["instance"], "field-1");

    // A real edit at hq wins, and hq's next bundle to a third instance
    // carries neither the future value nor a future clock.
    hq.sql("UPDATE person SET status = 'found' WHERE id = 'p1';")?;
    let to_other = w.bundle("hq-to-field-2");
    hq.export_to("field-2", &to_other)?;
    let inspected = fieldsync_ok(&[&"inspect", &to_other, &"--json"])?.json()?;
    let created = inspected["created_at"].as_str().ok_or("no created_at")?;
    let year_now = chrono::Utc::now().format("%Y").to_string();
    assert!(created.starts_with(&year_now), "created {created}");
    other.import(&[&to_other])?;
    assert_eq!(status_of(&other, "p1")?, "found");
    assert_eq!(status_of(&other, "p4")?, "safe");
    assert!(newest_logged_ms(&other)? < now_ms() + 3_600_000);
    assert!(clock_ms(&other)? < now_ms() + 3_600_000);
    // A retry leaves it held: the wall clock is not there yet.
    fieldsync_ok(&[&"conflicts", &"--db", &hq.db, &"--retry"])?;
    assert_eq!(status_of(&hq, "p1")?, "found");
    assert_eq!(held_count(&hq)?, 1);

    // An administrator decides the change is right (hq's own date is the
    // wrong one): it applies (its stamp is the newest), and hq's clock
    // moves past it, so an edit made afterwards wins over it there. Its
    // stamps are then ten years ahead of field-2's clock, whose date is
    // right: there they are held in turn, and do not drag field-2's clock.
    let applied = fieldsync(&[&"conflicts", &"--db", &hq.db, &"--apply", &id.to_string()])?;
    assert_eq!(applied.code, Some(0), "{}", applied.stderr);
    assert!(
        applied
            .stdout
            .contains(&format!("applied held change #{id}")),
        "{}",
        applied.stdout
    );
    assert_eq!(status_of(&hq, "p1")?, "dead");
    assert_eq!(held_count(&hq)?, 0);
    assert!(clock_ms(&hq)? > now_ms() + 3000 * DAY_MS);
    hq.sql("UPDATE person SET status = 'found again' WHERE id = 'p1';")?;
    w.send(&hq, &other)?;
    assert_eq!(status_of(&hq, "p1")?, "found again");
    assert_eq!(status_of(&other, "p1")?, "found");
    assert_eq!(held_count(&other)?, 1);
    assert!(clock_ms(&other)? < now_ms() + 3_600_000);
    // `check` is clean, and warns that hq's clock now runs ahead.
    let checked = fieldsync(&[&"check", &"--db", &hq.db])?;
    assert_eq!(
        checked.code,
        Some(0),
        "{}{}",
        checked.stdout,
        checked.stderr
    );
    assert!(
        checked.stderr.contains("ahead of this computer's clock"),
        "{}",
        checked.stderr
    );
    // Applying a number not held says so.
    let none = fieldsync(&[&"conflicts", &"--db", &hq.db, &"--apply", &"999"])?;
    assert_error(&none, 1, &["holds no change #999"]);
    Ok(())
}

fn held_count(site: &Site) -> Res<u64> {
    site.count("SELECT count(*) FROM fieldsync_quarantine")
}

#[test]
fn a_change_from_the_future_applies_once_the_clock_gets_there() -> Res {
    let w = World::new()?;
    let (hq, field) = (w.site("hq", SCHEMA)?, w.site("field-1", SCHEMA)?);
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing');")?;
    w.send(&hq, &field)?;
    set_clock_ahead(&field, 3 * 3_600_000)?;
    field.sql("UPDATE person SET status = 'found' WHERE id = 'p1';")?;
    let bundle = w.bundle("field-1-to-hq");
    field.export_to("hq", &bundle)?;
    hq.import(&[&bundle])?;
    assert_eq!(status_of(&hq, "p1")?, "missing");
    assert_eq!(held_count(&hq)?, 1);
    // The bound widened to a day stands for the wall clock moving on by
    // three hours: the next export applies the held change first.
    fieldsync_ok(&[&"trust", &"--db", &hq.db, &"--max-clock-ahead", &"1d"])?;
    let out = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &out)?;
    assert_eq!(status_of(&hq, "p1")?, "found");
    assert_eq!(held_count(&hq)?, 0);
    // Received now: its number joined "have" (no gap is left).
    let origin = hq.origin("field-1")?.ok_or("no origin field-1")?;
    assert_eq!(origin["quarantined"], "", "{origin}");
    assert_eq!(origin["gaps"], "", "{origin}");
    fieldsync_ok(&[&"check", &"--db", &hq.db])?;
    Ok(())
}

#[test]
fn a_bundle_written_in_the_future_does_not_move_the_clock() -> Res {
    let w = World::new()?;
    let (hq, field) = (w.site("hq", SCHEMA)?, w.site("field-1", SCHEMA)?);
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing');")?;
    // Its change is stamped now; only the bundle's `created` is ahead.
    fieldsync_ok(&[&"compact", &"--db", &hq.db])?;
    set_clock_ahead(&hq, 400 * DAY_MS)?;
    let bundle = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &bundle)?;
    let out = fieldsync(&[&"import", &"--db", &field.db, &bundle])?;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("says it was written") && out.stderr.contains("check the date on hq"),
        "{}",
        out.stderr
    );
    assert_eq!(status_of(&field, "p1")?, "missing");
    assert!(clock_ms(&field)? < now_ms() + 3_600_000);
    Ok(())
}

#[test]
fn status_warns_when_the_clock_is_ahead() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", SCHEMA)?;
    let st = fieldsync(&[&"status", &"--db", &hq.db, &"--json"])?;
    assert!(!st.stderr.contains("warning"), "{}", st.stderr);
    assert_eq!(st.json()?["clock"]["warnings"], serde_json::json!([]));

    set_clock_ahead(&hq, 2 * DAY_MS + 60_000)?;
    let st = fieldsync(&[&"status", &"--db", &hq.db])?;
    assert_eq!(st.code, Some(0));
    let warning = "this instance's clock is at";
    assert_eq!(st.stderr.matches(warning).count(), 1, "{}", st.stderr);
    assert!(
        st.stderr.contains("2 days ahead of this computer's clock"),
        "{}",
        st.stderr
    );
    assert!(st.stdout.contains("clock "), "{}", st.stdout);
    let json = fieldsync(&[&"status", &"--db", &hq.db, &"--json"])?.json()?;
    assert!(
        json["clock"]["ahead_of_wall_ms"]
            .as_i64()
            .ok_or("no ahead")?
            > DAY_MS
    );
    assert_eq!(json["clock"]["max_clock_ahead_ms"], 3_600_000);
    assert_eq!(json["clock"]["warnings"].as_array().map(Vec::len), Some(1));
    // `check`: not a broken invariant, a warning.
    let checked = fieldsync(&[&"check", &"--db", &hq.db, &"--json"])?;
    assert_eq!(checked.code, Some(0), "{}", checked.stderr);
    assert!(checked.stderr.contains(warning), "{}", checked.stderr);
    assert_eq!(
        checked.json()?["warnings"].as_array().map(Vec::len),
        Some(1)
    );
    // A wider bound: nothing to say.
    let trust = fieldsync_ok(&[
        &"trust",
        &"--db",
        &hq.db,
        &"--max-clock-ahead",
        &"3d",
        &"--json",
    ])?;
    assert_eq!(trust.json()?["max_clock_ahead_ms"], 3 * DAY_MS);
    let st = fieldsync(&[&"status", &"--db", &hq.db])?;
    assert!(!st.stderr.contains(warning), "{}", st.stderr);
    // Out of range, or not a duration: one line, nothing changed.
    let out = fieldsync(&[&"trust", &"--db", &hq.db, &"--max-clock-ahead", &"90d"])?;
    assert_error(&out, 1, &["1 minute to 30 days"]);
    let out = fieldsync(&[&"trust", &"--db", &hq.db, &"--max-clock-ahead", &"soon"])?;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    Ok(())
}

#[test]
fn a_refused_bundle_is_journaled_and_nothing_else_changes() -> Res {
    let w = World::new()?;
    let (hq, field) = (w.site("hq", SCHEMA)?, w.site("field-1", SCHEMA)?);
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing');")?;
    let real = w.bundle("hq-to-field-1");
    hq.export_to("field-1", &real)?;
    // A byte of the signature changed: refused before its header is read.
    let mut bytes = std::fs::read(&real)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let damaged = w.bundle("damaged");
    std::fs::write(&damaged, &bytes)?;
    field.import_refused(&[&damaged], &["signature"])?;
    // Its own bundle, sent back to it: the signature holds, so the journal
    // names the sender the header claims.
    hq.import_refused(&[&real], &["exported by this instance"])?;

    let c = conflicts(&field)?;
    assert_eq!(c["refused_total"], 1, "{c}");
    let row = &c["refused"][0];
    assert_eq!(row["file"], damaged.display().to_string());
    assert_eq!(row["bytes"], bytes.len() as u64);
    assert_eq!(row["blake3"], blake3::hash(&bytes).to_hex().to_string());
    let signed = fieldsync_ok(&[&"inspect", &real, &"--json"])?.json()?;
    assert_eq!(row["signer_fingerprint"], signed["signer_fingerprint"]);
    assert!(row["signer_fingerprint"].is_string(), "{row}");
    assert_eq!(row["claimed_sender_instance"], Json::Null);
    assert!(
        row["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("bundle: ")),
        "{row}"
    );
    let mine = conflicts(&hq)?;
    assert_eq!(mine["refused"][0]["claimed_sender_instance"], "hq");
    assert_eq!(mine["refused"][0]["reason"], "import: from self");
    let text = fieldsync_ok(&[&"conflicts", &"--db", &field.db])?;
    assert!(
        text.stdout.contains("refused bundles: 1 recorded") && text.stdout.contains("damaged"),
        "{}",
        text.stdout
    );
    // A file that is not there is not a refused bundle.
    let missing = w.path("missing.fsb");
    let out = fieldsync(&[&"import", &"--db", &field.db, &missing])?;
    assert_eq!(out.code, Some(1));
    assert_eq!(field.count("SELECT count(*) FROM fieldsync_refused")?, 1);
    // The real bundle still imports.
    field.import(&[&real])?;
    assert_eq!(status_of(&field, "p1")?, "missing");
    Ok(())
}
