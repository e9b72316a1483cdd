//! Bounded quarantine (issue 11, item 5): a later import retries only the
//! held changes something they wait for may have changed, a held change
//! can be discarded (`conflicts --discard`, `--discard-from`), and a
//! bundle that would hold more than the per-sender bound is refused.

use crate::util::*;

/// The sender lets `name` be empty; the receiver's app requires it, so
/// every row the sender leaves without a name is refused (NOT NULL).
const LAX: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT, note TEXT);
                   CREATE TABLE visit(id TEXT PRIMARY KEY, note TEXT);";
const STRICT: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT NOT NULL, note TEXT);
                      CREATE TABLE visit(id TEXT PRIMARY KEY, note TEXT);";

/// `field-1` sends `hq` `n` people without a name: all held.
fn many_held(w: &World, n: u32) -> Res<(Site, Site)> {
    let field = w.site("field-1", LAX)?;
    let hq = w.site("hq", STRICT)?;
    field.sql(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
         INSERT INTO person(id, note) SELECT printf('p-%05d', i), 'no name' FROM n;"
    ))?;
    let (_, imported) = w.send(&field, &hq)?;
    assert_eq!(num(&imported, "quarantined")?, u64::from(n));
    Ok((field, hq))
}

// Caught: every import retried the whole quarantine, so one bundle of
// NOT NULL violations slowed every later import; a later import now
// retries only held changes whose row, or what they wait for, changed.
#[test]
fn a_later_import_does_not_retry_held_changes_nothing_they_wait_for_touched() -> Res {
    let w = World::new()?;
    let (field, hq) = many_held(&w, 300)?;
    // Another table, and another row of the held rows' table.
    field.sql(
        "INSERT INTO visit VALUES ('v-1', 'first');
         INSERT INTO person VALUES ('q-1', 'Amal', NULL);",
    )?;
    let (_, imported) = w.send(&field, &hq)?;
    assert_eq!(num(&imported, "applied")?, 2);
    assert_eq!(num(&imported, "retried")?, 0, "{imported}");
    assert_eq!(num(&imported, "held")?, 300);
    // The name of one held person arrives: that entry alone is retried,
    // and applied.
    field.sql("UPDATE person SET name = 'Nimali' WHERE id = 'p-00007';")?;
    let (_, imported) = w.send(&field, &hq)?;
    assert_eq!(num(&imported, "retried")?, 1, "{imported}");
    assert_eq!(num(&imported, "held")?, 299);
    assert_eq!(
        hq.sql("SELECT name, note FROM person WHERE id = 'p-00007';")?.trim(),
        "Nimali|no name"
    );
    // `conflicts --retry` still retries everything.
    let out = fieldsync_ok(&[&"conflicts", &"--db", &hq.db, &"--retry", &"--json"])?.json()?;
    let retry = out.get("retry").ok_or("no retry report")?;
    assert_eq!(num(retry, "retried")?, 299);
    assert_eq!(num(retry, "held")?, 299);
    Ok(())
}

// A child held for its missing parent is retried, and applied, when the
// parent arrives in a later bundle (the bundles were imported out of order).
#[test]
fn a_held_child_is_applied_when_its_parent_arrives_in_a_later_bundle() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", RELIEF_SCHEMA)?;
    let field = w.site("field-1", RELIEF_SCHEMA)?;
    hq.sql("INSERT INTO location VALUES ('g', NULL, 'L2', 'Galle');")?;
    let first = w.bundle("parent");
    hq.export_to("field-1", &first)?;
    hq.sql("INSERT INTO shelter VALUES ('s', 'S-1', 'g', 10);")?;
    let second = w.bundle("child");
    hq.export_to("field-1", &second)?;
    let imported = field.import(&[&second])?;
    assert_eq!(num(&imported, "quarantined")?, 1);
    // An unrelated change does not wake it.
    let other = w.site("field-2", RELIEF_SCHEMA)?;
    other.sql("INSERT INTO location VALUES ('m', NULL, 'L2', 'Matara');")?;
    let (_, imported) = w.send(&other, &field)?;
    assert_eq!(num(&imported, "held")?, 1);
    let imported = field.import(&[&first])?;
    assert_eq!(num(&imported, "retried")?, 1, "{imported}");
    assert_eq!(num(&imported, "released")?, 1);
    assert_eq!(num(&imported, "held")?, 0);
    assert_eq!(field.count("SELECT count(*) FROM shelter")?, 1);
    check_clean(&field)
}

// A change made here (the operator renames the local shelter whose code
// the held one clashed with) wakes the held change at the next import,
// whatever that import brings.
#[test]
fn a_change_made_here_wakes_the_held_change_it_blocked_at_the_next_import() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", RELIEF_SCHEMA)?;
    let field = w.site("field-1", RELIEF_SCHEMA)?;
    hq.sql(
        "INSERT INTO location VALUES ('g', NULL, 'L2', 'Galle');
         INSERT INTO shelter VALUES ('s', 'S-1', 'g', 10);",
    )?;
    field.sql(
        "INSERT INTO location VALUES ('g', NULL, 'L2', 'Galle');
         INSERT INTO shelter VALUES ('t', 'S-1', 'g', 1);",
    )?;
    let (_, imported) = w.send(&hq, &field)?;
    assert_eq!(num(&imported, "quarantined")?, 1);
    field.sql("UPDATE shelter SET code = 'S-2' WHERE id = 't';")?;
    let other = w.site("field-2", RELIEF_SCHEMA)?;
    other.sql("INSERT INTO location VALUES ('m', NULL, 'L2', 'Matara');")?;
    let (_, imported) = w.send(&other, &field)?;
    assert_eq!(num(&imported, "retried")?, 1, "{imported}");
    assert_eq!(num(&imported, "held")?, 0);
    check_clean(&field)
}

/// `check` finds nothing wrong.
fn check_clean(site: &Site) -> Res {
    let out = fieldsync_ok(&[&"check", &"--db", &site.db, &"--json"])?.json()?;
    let problems = out
        .get("problems")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    assert_eq!(problems, 0, "{out}");
    Ok(())
}
