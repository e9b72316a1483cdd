//! Split bundles (issue 16, item 2) through the real binary: `export
//! --max-size` cuts a bundle into e-mail-sized parts, each checked on its
//! own; `import` takes them in any order and over several runs, keeping a
//! part until its siblings come, and applies the bundle once; `init --from`
//! takes the parts of a full export; a damaged or forged part is refused
//! with the database as it was (spec/bundle.md, "Split bundles").

use std::path::{Path, PathBuf};

use crate::tables::{EDEN, EDEN_ROWS};
use crate::util::*;

/// Rows enough for a bundle of several hundred KiB (random text does not
/// compress).
const MANY: &str = "
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 6000)
INSERT INTO gis_location(uuid, name, level, parent)
  SELECT 'u-gen-' || i, hex(randomblob(48)), 'L3', 2 FROM c;";

/// `export ... --max-size SIZE -o FILE --json`: the parts written.
fn export_parts(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Res<Vec<PathBuf>> {
    let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"export", &"--json"];
    all.extend_from_slice(args);
    let v = fieldsync_ok(&all)?.json()?;
    Ok(v["parts"]
        .as_array()
        .ok_or("no parts")?
        .iter()
        .filter_map(|p| p["file"].as_str().map(PathBuf::from))
        .collect())
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect()
}

/// HQ and a laptop (Eden's shape), the laptop's many new rows exported to
/// HQ unencrypted in parts of at most 100 KiB.
fn laptop_week_in_parts(w: &World) -> Res<(Site, Site, Vec<PathBuf>)> {
    let hq = w.site("hq", EDEN)?;
    let f1 = w.site("field-1", EDEN)?;
    f1.sql(&format!("{EDEN_ROWS}{MANY}"))?;
    let parts = export_parts(&[
        &"--db",
        &f1.db,
        &"--to",
        &"hq",
        &"--no-encrypt",
        &"--max-size",
        &"100KiB",
        &"-o",
        &w.path("a.bundle"),
    ])?;
    Ok((hq, f1, parts))
}

/// `import --json` of `files`, which must succeed.
fn import(site: &Site, files: &[&PathBuf]) -> Res<serde_json::Value> {
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    site.import(&paths)
}

#[test]
fn parts_imported_in_shuffled_order_over_several_runs_apply_the_bundle_once() -> Res {
    let w = World::new()?;
    let hq = w.bare_site("hq", EDEN)?;
    hq.sql(&format!("{EDEN_ROWS}{MANY}"))?;
    fieldsync_ok(&[&"track", &"--db", &hq.db, &"--all", &"--identity", &"uuid"])?;

    // HQ's full export in parts; a laptop is set up from them, given in
    // shuffled order.
    let full = w.path("hq-full.bundle");
    let parts = export_parts(&[
        &"--db",
        &hq.db,
        &"--full",
        &"--for",
        &"field-1",
        &"--no-encrypt",
        &"--max-size",
        &"128KiB",
        &"-o",
        &full,
    ])?;
    assert!(parts.len() >= 3, "{parts:?}");
    assert_eq!(
        names(&parts)[0],
        format!("hq-full.part1of{}.bundle", parts.len())
    );
    assert!(!full.exists(), "the whole bundle is removed once cut");
    for p in &parts {
        assert!(std::fs::metadata(p)?.len() <= 128 * 1024, "{}", p.display());
    }
    let key = hq.key()?;
    let f1 = Site {
        name: "field-1".into(),
        db: w.path("field-1.db"),
    };
    let mut init: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"init",
        &"--db",
        &f1.db,
        &"--name",
        &"field-1",
        &"--expect-key",
    ];
    let fp = text(&key, "fingerprint")?.to_owned();
    init.push(&fp);
    init.push(&"--from");
    for p in parts.iter().rev() {
        init.push(p);
    }
    // One part short: refused, naming what is missing, nothing created.
    let out = fieldsync(&init[..init.len() - 1])?;
    assert_error(&out, 1, &["part", "missing", "--from"]);
    assert!(!f1.db.exists());
    let out = fieldsync_ok(&init)?;
    assert!(out.stdout.contains("6003 rows"), "{}", out.stdout);
    w.enrol_everywhere(&f1)?;
    assert_eq!(f1.snapshot()?, hq.snapshot()?);

    // The laptop's week of work goes back in parts, over three runs, out of
    // order, with a part sent twice.
    f1.sql(
        "UPDATE gis_location SET name = 'renamed ' || name;
         INSERT INTO org_organisation(uuid, name) VALUES ('u-new', 'New NGO');",
    )?;
    let week = w.path("week1.bundle");
    let parts = export_parts(&[
        &"--db",
        &f1.db,
        &"--to",
        &"hq",
        &"--max-size",
        &"100KiB",
        &"-o",
        &week,
    ])?;
    let n = parts.len();
    assert!(n >= 3, "{parts:?}");
    let before = hq.fingerprint()?;
    let first = import(&hq, &[&parts[n - 1], &parts[0]])?;
    assert_eq!(num(&first, "applied")?, 0);
    let kept = first["kept_parts"].as_array().ok_or("no kept_parts")?;
    assert_eq!(kept.len(), 2, "{first}");
    assert_eq!(
        hq.fingerprint()?,
        before,
        "kept parts do not touch the database"
    );
    assert!(w.path("hq.db.fieldsync-parts").is_dir());
    // The same part again: still waiting, nothing applied.
    let again = import(&hq, &[&parts[0]])?;
    assert_eq!(num(&again, "applied")?, 0);
    assert_eq!(hq.fingerprint()?, before);
    let rest: Vec<&PathBuf> = parts[1..n - 1].iter().rev().collect();
    let done = import(&hq, &rest)?;
    assert!(num(&done, "applied")? > 0, "{done}");
    assert_eq!(done["joined"].as_array().map(Vec::len), Some(1), "{done}");
    assert_eq!(hq.snapshot()?, f1.snapshot()?);
    assert_eq!(
        hq.count("SELECT count(*) FROM org_organisation WHERE uuid = 'u-new'")?,
        1
    );
    assert!(
        !w.path("hq.db.fieldsync-parts").exists(),
        "parts removed once applied"
    );
    // Every part imported again: joined again, applied as already known.
    let all: Vec<&PathBuf> = parts.iter().collect();
    let replay = import(&hq, &all)?;
    assert_eq!(num(&replay, "applied")?, 0, "{replay}");
    assert_eq!(hq.snapshot()?, f1.snapshot()?);
    fieldsync_ok(&[&"check", &"--db", &hq.db])?;
    Ok(())
}

#[test]
fn a_damaged_or_forged_part_is_refused_and_the_database_is_unchanged() -> Res {
    let w = World::new()?;
    let (hq, f1, a) = laptop_week_in_parts(&w)?;
    // One byte flipped in transit.
    let mut bytes = std::fs::read(&a[1])?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    let damaged = w.path("damaged.part2.bundle");
    std::fs::write(&damaged, &bytes)?;
    let before = hq.fingerprint()?;
    let out = fieldsync(&[&"import", &"--db", &hq.db, &a[0], &damaged])?;
    assert_error(
        &out,
        1,
        &["damaged part", "checksum", "ask for this part again"],
    );
    assert_eq!(hq.fingerprint()?, before);
    // Cut short.
    std::fs::write(&damaged, &bytes[..mid])?;
    let out = fieldsync(&[&"import", &"--db", &hq.db, &damaged])?;
    assert_error(&out, 1, &["damaged part", "cut short"]);
    assert_eq!(hq.fingerprint()?, before);

    // Part 1 kept; a part 2 altered near its end (its checksum then fails)
    // is refused, and part 1 stays kept.
    let kept = hq.import(&[&a[0]])?;
    assert_eq!(kept["kept_parts"].as_array().map(Vec::len), Some(1));
    let mut forged = std::fs::read(&a[1])?;
    let last = forged.len() - 40;
    forged[last] ^= 1;
    std::fs::write(&damaged, &forged)?;
    let out = fieldsync(&[&"import", &"--db", &hq.db, &damaged])?;
    assert_error(&out, 1, &["damaged part"]);
    assert_eq!(hq.fingerprint()?, before);
    // The real parts still join.
    let rest: Vec<&Path> = a[1..].iter().map(|p| p.as_path()).collect();
    hq.import(&rest)?;
    assert_eq!(hq.snapshot()?, f1.snapshot()?);
    Ok(())
}

#[test]
fn max_size_is_checked_and_a_bundle_that_fits_stays_one_file() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", EDEN)?;
    hq.sql(EDEN_ROWS)?;
    // Fits: one file, no parts.
    let small = w.path("small.bundle");
    let parts = export_parts(&[
        &"--db",
        &hq.db,
        &"--full",
        &"--no-encrypt",
        &"--max-size",
        &"10MB",
        &"-o",
        &small,
    ])?;
    assert!(parts.is_empty());
    assert!(small.is_file());
    for (size, needles) in [
        ("1000", &["too small", "64KiB"][..]),
        ("ten", &["not a size", "10MB"][..]),
    ] {
        let out = fieldsync(&[
            &"export",
            &"--db",
            &hq.db,
            &"--full",
            &"--no-encrypt",
            &"--max-size",
            &size,
            &"-o",
            &w.path("x.bundle"),
        ])?;
        assert_ne!(out.code, Some(0), "{out:?}");
        for n in needles {
            assert!(out.stderr.contains(n), "{n}: {}", out.stderr);
        }
    }
    let out = fieldsync(&[
        &"export",
        &"--db",
        &hq.db,
        &"--full",
        &"--no-encrypt",
        &"--max-size",
        &"1MB",
        &"-o",
        &"-",
    ])?;
    assert_error(&out, 1, &["--max-size", "stdout"]);
    // Parts of an earlier bundle under the name: refused unless --force.
    hq.sql(MANY)?;
    let big = w.path("big.bundle");
    let args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"--db",
        &hq.db,
        &"--full",
        &"--no-encrypt",
        &"--max-size",
        &"100KiB",
        &"-o",
        &big,
    ];
    let first = export_parts(&args)?;
    let out = fieldsync(&[
        &"export",
        &"--db",
        &hq.db,
        &"--full",
        &"--no-encrypt",
        &"--max-size",
        &"100KiB",
        &"-o",
        &big,
    ])?;
    assert_error(&out, 1, &["part of an earlier bundle", "--force"]);
    let mut forced = args.clone();
    forced.push(&"--force");
    let second = export_parts(&forced)?;
    assert_eq!(names(&first), names(&second));
    // inspect on a part says what it is.
    let out = fieldsync_ok(&[&"inspect", &second[0]])?;
    assert!(out.stdout.contains("part 1 of"), "{}", out.stdout);
    assert!(out.stdout.contains("big.bundle"), "{}", out.stdout);
    // A part where a whole bundle is needed: one line saying what to do.
    let out = fieldsync(&[
        &"init",
        &"--db",
        &w.path("n.db"),
        &"--name",
        &"n",
        &"--from",
        &second[0],
        &"--expect-key",
        &"X",
    ])?;
    assert_error(&out, 1, &["missing", "give every part"]);
    Ok(())
}

/// Part `path` with one byte of its piece changed and its checksum made
/// again, as someone who knows the format can: the checksum holds, the
/// bundle it joins into does not.
fn forge(path: &Path, to: &Path) -> Res {
    let mut bytes = std::fs::read(path)?;
    let body = bytes.len() - 32;
    bytes[body - 10] ^= 1;
    let mut hasher = blake3::Hasher::new_derive_key("fieldsync 2026-11-30 bundle part v1");
    hasher.update(&bytes[..body]);
    let sum = *hasher.finalize().as_bytes();
    bytes[body..].copy_from_slice(&sum);
    std::fs::write(to, bytes)?;
    Ok(())
}

#[test]
fn a_forged_part_with_a_good_checksum_never_joins_and_clashes_with_the_real_one() -> Res {
    let w = World::new()?;
    let (hq, f1, a) = laptop_week_in_parts(&w)?;
    let forged = w.path("forged.bundle");
    forge(&a[1], &forged)?;
    let before = hq.fingerprint()?;
    // The forged part kept first, then the real one: they clash.
    hq.import(&[&forged])?;
    let out = fieldsync(&[&"import", &"--db", &hq.db, &a[1]])?;
    assert_error(&out, 1, &["part 2", "different part 2", "forged"]);
    // With every other part the forged one joins into a bundle that is not
    // the one named: refused, the kept parts dropped, the database as it was.
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"import", &"--db", &hq.db];
    for (i, p) in a.iter().enumerate() {
        if i != 1 {
            args.push(p);
        }
    }
    let out = fieldsync(&args)?;
    assert_error(&out, 1, &["do not make the bundle", "ask the sender"]);
    assert_eq!(hq.fingerprint()?, before);
    // The real parts now go through.
    let all: Vec<&Path> = a.iter().map(|p| p.as_path()).collect();
    hq.import(&all)?;
    assert_eq!(hq.snapshot()?, f1.snapshot()?);
    Ok(())
}

#[test]
fn a_dry_run_of_parts_joins_them_without_keeping_anything() -> Res {
    let w = World::new()?;
    let (hq, _, a) = laptop_week_in_parts(&w)?;
    let before = hq.fingerprint()?;
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"import", &"--db", &hq.db, &"--dry-run", &"--json"];
    for p in a.iter().rev() {
        args.push(p);
    }
    let v = fieldsync_ok(&args)?.json()?;
    let text = v.to_string();
    assert!(text.contains("joined from"), "{text}");
    assert!(
        text.contains("6003") || text.contains("\"inserted\":6003"),
        "{text}"
    );
    assert_eq!(hq.fingerprint()?, before);
    assert!(
        !w.path("hq.db.fieldsync-parts").exists(),
        "a preview keeps nothing"
    );
    // One part short: said on stderr, nothing previewed, nothing kept.
    let out = fieldsync(&args[..args.len() - 1])?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("not in the preview"), "{}", out.stderr);
    assert!(!w.path("hq.db.fieldsync-parts").exists());
    assert_eq!(hq.fingerprint()?, before);
    Ok(())
}
