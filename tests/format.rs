//! The bundle format stays readable: golden bundles of every format version
//! are kept in tests/data/ and must still inspect and import exactly (the
//! unsigned versions 1 to 3 during a migration period, spec/trust.md;
//! version 4 is signed, and `inspect` shows a valid signature).
//!
//! To write a new golden file (only when a new format version is added):
//! `FIELDSYNC_WRITE_GOLDEN=1 cargo test --test tests format::write_golden -- --ignored`.

use std::path::PathBuf;

use fieldsync::bundle::format::{LocalTable, MAX_LIST, ViewDef};
use fieldsync::bundle::{BundleReader, BundleWriter, Header, SiteRef, inspect, verify};
use fieldsync::{ExportTarget, Instance, Selection, TrackOptions, Value};

use crate::util::Res;

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

/// Since version 3: tables keyed by local numbers (identified by a uuid
/// column, and by origin), a table without a key, and integer references
/// that travel as the parent row's identity.
const SCHEMA_V3: &str = "
CREATE TABLE org(id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT NOT NULL UNIQUE, name TEXT);
CREATE TABLE unit(id INTEGER PRIMARY KEY, name TEXT,
  org INTEGER REFERENCES org(id), parent INTEGER REFERENCES unit(id));
CREATE TABLE opt(code TEXT, label TEXT);";

const ROWS_V3: &str = "
PRAGMA foreign_keys = OFF; -- the orphan's parent 99 dangles at the sender
INSERT INTO org(uuid, name) VALUES ('u-rc', 'Red Cross'), ('u-un', 'UNICEF');
INSERT INTO unit(name, org, parent) VALUES ('HQ', 2, NULL);
INSERT INTO unit(name, org, parent) VALUES ('Galle', 2, 1);
INSERT INTO unit(name, org, parent) VALUES ('Orphan', NULL, 99);
INSERT INTO opt VALUES ('mis', 'Missing'), ('fnd', 'Found'), ('fnd', 'Found');";

/// What the version-3 tables hold, by content (local ids differ).
const V3_CONTENT: [&str; 2] = [
    "SELECT u.name, o.uuid, p.name, u.parent IS NOT NULL FROM unit u \
     LEFT JOIN org o ON o.id = u.org LEFT JOIN unit p ON p.id = u.parent ORDER BY u.name",
    "SELECT code, label FROM opt ORDER BY 1, 2",
];

fn schema(version: u16) -> String {
    if version >= 3 {
        format!("{SCHEMA}{SCHEMA_V3}")
    } else {
        SCHEMA.to_owned()
    }
}

fn track(instance: &mut Instance) -> fieldsync::Result<()> {
    instance.track_with(
        &Selection::All,
        &TrackOptions {
            identity: Some("uuid".into()),
            ..TrackOptions::default()
        },
    )?;
    Ok(())
}

fn golden(version: u16) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/golden-v{version}.bundle"))
}

/// Every format version this build must still read.
const VERSIONS: [u16; 4] = [1, 2, 3, 4];

fn rows(conn: &rusqlite::Connection, sql: &str) -> rusqlite::Result<Vec<Vec<Value>>> {
    let mut stmt = conn.prepare(sql)?;
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())?
        .collect()
}

#[test]
#[ignore = "writes tests/data/golden-vN.bundle for the current version; run only when adding a format version"]
fn write_golden() -> Res {
    if std::env::var("FIELDSYNC_WRITE_GOLDEN").is_err() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (mut hq, _) = Instance::init(dir.path().join("hq.db"), "golden-hq")?;
    let version = fieldsync::bundle::format::FORMAT_VERSION;
    hq.connection().execute_batch(&schema(version))?;
    track(&mut hq)?;
    hq.connection().execute_batch(ROWS)?;
    hq.connection().execute_batch(ROWS_V3)?;
    let path = golden(version);
    std::fs::create_dir_all(path.parent().ok_or("no parent")?)?;
    hq.export_to_file(&ExportTarget::Full, &path)?;
    Ok(())
}

#[test]
fn golden_bundles_inspect_intact() -> Res {
    for version in VERSIONS {
        golden_inspects_intact(version)?;
    }
    Ok(())
}

#[test]
fn golden_bundles_import_every_value_exactly() -> Res {
    for version in VERSIONS {
        golden_imports_every_value_exactly(version)?;
    }
    Ok(())
}

fn golden_inspects_intact(version: u16) -> Res {
    let info = inspect(std::fs::File::open(golden(version))?)?;
    assert!(info.intact, "{:?}", info.problem);
    assert_eq!(info.version, version);
    // Signed from version 4 on.
    assert_eq!(info.signer.is_some(), version >= 4);
    assert_eq!(info.signature_valid, version >= 4);
    assert_eq!(info.header.sender.name, "golden-hq");
    assert!(info.header.full);
    let names: Vec<&str> = info.header.tables.iter().map(|t| t.name.as_str()).collect();
    // Written before full exports carried local tables and views.
    assert!(info.header.local_tables.is_empty() && info.header.views.is_empty());
    let end = info.end.ok_or("no end record")?;
    if version >= 3 {
        assert_eq!(names, ["kinds", "pair", "org", "unit", "opt"]);
        // 4 live kinds rows + 1 tombstone, 2 pair rows, 2 orgs, 3 units, 3 options.
        assert_eq!(end.per_table, [5, 2, 2, 3, 3]);
    } else {
        assert_eq!(names, ["kinds", "pair"]);
        // 4 live kinds rows + 1 tombstone, 2 pair rows.
        assert_eq!(end.per_table, [5, 2]);
    }
    Ok(())
}

fn golden_imports_every_value_exactly(version: u16) -> Res {
    let dir = tempfile::tempdir()?;
    let (mut field, _) = Instance::init(dir.path().join("field.db"), "field")?;
    field.connection().execute_batch(&schema(3))?;
    // Rows the field instance numbers itself, so received rows get others.
    field
        .connection()
        .execute_batch("INSERT INTO unit(name) VALUES ('local');")?;
    track(&mut field)?;
    if version < 4 {
        // Unsigned: refused, unless in a migration period.
        let refused = field
            .import_file(&golden(version))
            .err()
            .map(|e| e.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("--allow-unsigned-for")),
            "v{version}: {refused:?}"
        );
        field.allow_unsigned_for(1)?;
    } else {
        // The golden instance is one HQ enrolled.
        crate::util::instances::enrol_signer(&mut field, &std::fs::read(golden(version))?)?;
    }
    let report = field.import_file(&golden(version))?;
    assert_eq!(report.applied, if version >= 3 { 15 } else { 7 });
    if version >= 3 {
        let reference = rusqlite::Connection::open_in_memory()?;
        reference.execute_batch(&schema(3))?;
        reference.execute_batch(ROWS_V3)?;
        reference.execute_batch("INSERT INTO unit(name) VALUES ('local');")?;
        // A local number naming no row at the sender arrives as NULL.
        reference.execute_batch("UPDATE unit SET parent = NULL WHERE name = 'Orphan';")?;
        for sql in V3_CONTENT {
            assert_eq!(
                rows(field.connection(), sql)?,
                rows(&reference, sql)?,
                "v{version}: {sql}"
            );
        }
    }

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

/// A full header with one local table (of `schema_len` statements) and one
/// view, written as a bundle without rows.
fn bundle_with_local(schema_len: usize) -> Res<(Header, Vec<u8>)> {
    let site = SiteRef {
        id: fieldsync::SiteId::random(),
        name: "hq".into(),
    };
    let header = Header {
        sender: site,
        created: 1,
        full: true,
        recipient: None,
        origins: Vec::new(),
        tables: Vec::new(),
        covers: Vec::new(),
        seen: Vec::new(),
        lost: Default::default(),
        lacks: Vec::new(),
        trust: Vec::new(),
        trust_seen: None,
        local_tables: vec![LocalTable {
            name: "sessions".into(),
            schema: vec!["CREATE TABLE sessions(id)".into(); schema_len],
        }],
        schemas: Vec::new(),
        sender_recipient: None,
        statements: Vec::new(),
        views: vec![ViewDef {
            name: "v".into(),
            sql: "CREATE VIEW v AS SELECT 1".into(),
        }],
    };
    let (bytes, _) = BundleWriter::new(
        Vec::new(),
        &header,
        &fieldsync::fuzzing::key_for(&header.sender.id),
    )?
    .finish()?;
    Ok((header, bytes))
}

#[test]
fn local_tables_and_views_read_back_and_their_lists_are_bounded() -> Res {
    let (header, bytes) = bundle_with_local(2)?;
    let mut file = std::io::Cursor::new(bytes);
    verify(&mut file)?;
    assert_eq!(BundleReader::open(file)?.header(), &header);

    let (_, bytes) = bundle_with_local(MAX_LIST + 1)?;
    let mut file = std::io::Cursor::new(bytes);
    verify(&mut file)?;
    match BundleReader::open(file) {
        Ok(_) => panic!("a local table of {} statements was read", MAX_LIST + 1),
        Err(e) => assert!(e.to_string().contains("at most"), "{e}"),
    }
    Ok(())
}
