//! The bundle format stays readable: golden bundles of every format version
//! are kept in tests/data/ and must still inspect and import exactly.
//!
//! To write a new golden file (only when a new format version is added):
//! `FIELDSYNC_WRITE_GOLDEN=1 cargo test --test format -- --ignored`.

use std::path::PathBuf;

use fieldsync::bundle::inspect;
use fieldsync::{ExportTarget, Instance, Selection, Value};

const SCHEMA: &str = "
CREATE TABLE kinds(id TEXT PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, n);
CREATE TABLE pair(a TEXT, b BLOB, v, PRIMARY KEY(a, b)) WITHOUT ROWID;";

const ROWS: &str = "
INSERT INTO kinds VALUES
  ('null', NULL, NULL, NULL, NULL, NULL),
  ('min', -9223372036854775808, 0.1, '', x'', 0),
  ('max', 9223372036854775807, 1e308, 'héllo ✓ 🚑 مرحبا', x'00ff10', 'x'),
  ('gone', 1, 1.0, 'deleted later', NULL, NULL),
  ('edited', 1, 2.5, 'before', x'01', NULL);
INSERT INTO pair VALUES ('k', x'0102', 42), ('k', x'', 'empty blob key');
DELETE FROM kinds WHERE id = 'gone';
UPDATE kinds SET t = 'after' WHERE id = 'edited';";

fn golden(version: u16) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/golden-v{version}.bundle"))
}

/// Every format version this build must still read.
const VERSIONS: [u16; 2] = [1, 2];

fn rows(conn: &rusqlite::Connection, sql: &str) -> rusqlite::Result<Vec<Vec<Value>>> {
    let mut stmt = conn.prepare(sql)?;
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())?
        .collect()
}

#[test]
#[ignore = "writes tests/data/golden-vN.bundle for the current version; run only when adding a format version"]
fn write_golden() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var("FIELDSYNC_WRITE_GOLDEN").is_err() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (mut hq, _) = Instance::init(dir.path().join("hq.db"), "golden-hq")?;
    hq.connection().execute_batch(SCHEMA)?;
    hq.track(&Selection::All)?;
    hq.connection().execute_batch(ROWS)?;
    let path = golden(fieldsync::bundle::format::FORMAT_VERSION);
    std::fs::create_dir_all(path.parent().ok_or("no parent")?)?;
    hq.export_to_file(&ExportTarget::Full, &path)?;
    Ok(())
}

#[test]
fn golden_bundles_inspect_intact() -> Result<(), Box<dyn std::error::Error>> {
    for version in VERSIONS {
        golden_inspects_intact(version)?;
    }
    Ok(())
}

#[test]
fn golden_bundles_import_every_value_exactly() -> Result<(), Box<dyn std::error::Error>> {
    for version in VERSIONS {
        golden_imports_every_value_exactly(version)?;
    }
    Ok(())
}

fn golden_inspects_intact(version: u16) -> Result<(), Box<dyn std::error::Error>> {
    let info = inspect(std::fs::File::open(golden(version))?)?;
    assert!(info.intact, "{:?}", info.problem);
    assert_eq!(info.header.sender.name, "golden-hq");
    assert!(info.header.full);
    let names: Vec<&str> = info.header.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["kinds", "pair"]);
    let end = info.end.ok_or("no end record")?;
    // 4 live kinds rows + 1 tombstone, 2 pair rows.
    assert_eq!(end.per_table, [5, 2]);
    Ok(())
}

fn golden_imports_every_value_exactly(version: u16) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (mut field, _) = Instance::init(dir.path().join("field.db"), "field")?;
    field.connection().execute_batch(SCHEMA)?;
    field.track(&Selection::All)?;
    let report = field.import_file(&golden(version))?;
    assert_eq!(report.applied, 7);

    // The same rows, written directly, must read back identically.
    let reference = rusqlite::Connection::open_in_memory()?;
    reference.execute_batch(SCHEMA)?;
    reference.execute_batch(ROWS)?;
    for sql in [
        "SELECT * FROM kinds ORDER BY id",
        "SELECT * FROM pair ORDER BY a, b",
    ] {
        assert_eq!(
            rows(field.connection(), sql)?,
            rows(&reference, sql)?,
            "v{version}: {sql}"
        );
    }
    let deleted: i64 = field.connection().query_row(
        "SELECT count(*) FROM fieldsync_log WHERE cl % 2 = 0",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(
        deleted, 1,
        "the tombstone of 'gone' travels in a full bundle"
    );
    Ok(())
}
