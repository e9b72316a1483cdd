//! Capture and stamping, checked through the library: what the triggers
//! record and how it lands in the change log.

use fieldsync::{ExportTarget, Instance};

use crate::util::Res;
use crate::util::instances::instance;

fn log_entries(inst: &Instance) -> rusqlite::Result<i64> {
    inst.connection()
        .query_row("SELECT count(*) FROM fieldsync_log", [], |r| r.get(0))
}

/// One UPDATE of several columns fires one trigger per column; stamping
/// folds them back into a single change, so the log does not grow a version
/// per column.
#[test]
fn one_update_of_several_columns_is_one_change() -> Res {
    let dir = tempfile::tempdir()?;
    let mut hq = instance(
        dir.path(),
        "hq",
        "CREATE TABLE p(id TEXT PRIMARY KEY, a, b, c);",
    )?;
    hq.connection()
        .execute("INSERT INTO p VALUES ('k', 1, 2, 3)", [])?;
    hq.compact()?;
    assert_eq!(log_entries(&hq)?, 1);
    hq.connection()
        .execute("UPDATE p SET a = 10, b = 20 WHERE id = 'k'", [])?;
    let pending: i64 =
        hq.connection()
            .query_row("SELECT count(*) FROM fieldsync_pending", [], |r| r.get(0))?;
    assert_eq!(pending, 2, "one trigger per changed column");
    hq.compact()?;
    assert_eq!(
        log_entries(&hq)?,
        2,
        "the insert (keeps c and the row) and one update (a, b)"
    );
    let mut bundle = Vec::new();
    let report = hq.export(&ExportTarget::Full, &mut bundle)?;
    assert_eq!(report.versions, 2);
    Ok(())
}

/// An UPDATE that sets columns to the values they hold records nothing.
#[test]
fn an_update_that_changes_nothing_records_nothing() -> Res {
    let dir = tempfile::tempdir()?;
    let mut hq = instance(
        dir.path(),
        "hq",
        "CREATE TABLE p(id TEXT PRIMARY KEY, a, b TEXT COLLATE NOCASE);",
    )?;
    hq.connection()
        .execute("INSERT INTO p VALUES ('k', 1, 'x')", [])?;
    hq.compact()?;
    hq.connection()
        .execute("UPDATE p SET a = 1, b = 'x' WHERE id = 'k'", [])?;
    assert_eq!(hq.captured_unstamped()?, 0);
    // A case-only edit in a NOCASE column is a change.
    hq.connection()
        .execute("UPDATE p SET b = 'X' WHERE id = 'k'", [])?;
    assert_eq!(hq.captured_unstamped()?, 1);
    Ok(())
}
