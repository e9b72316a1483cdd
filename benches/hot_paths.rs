//! Criterion benchmarks of the hot paths, each on the realistic 8-column
//! table: capture of inserts, updates and deletes (tracked vs untracked),
//! full export, import into an empty instance, and bundle encode/decode in
//! memory. Ratios against SQLite itself are printed by the comparison run
//! (`cargo bench --bench compare`); these track each path over time.
//!
//! Run: `cargo bench --bench hot_paths`

use std::io::Cursor;
use std::path::Path;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use fieldsync::bundle::SeqSet;
use fieldsync::bundle::format::VersionRecord;
use fieldsync::bundle::{BundleReader, BundleWriter, Header, OriginSeqs, SiteRef, TableDef};
use fieldsync::merge::ColSet;
use fieldsync::{ExportTarget, Instance, Selection, SiteId, Value};
use rusqlite::{Connection, params};

const SCHEMA: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT NOT NULL, age INTEGER, \
                      status TEXT, score REAL, photo BLOB, org INTEGER, note TEXT);";
const ROWS: usize = 2_000;

fn id(i: usize) -> String {
    let h = blake3::hash(&(i as u64).to_le_bytes());
    h.to_hex()[..32].to_string()
}

fn insert(conn: &Connection, from: usize, to: usize) -> rusqlite::Result<()> {
    let mut st =
        conn.prepare_cached("INSERT INTO person VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?;
    for i in from..to {
        st.execute(params![
            id(i),
            format!("Person {i}"),
            (i % 90) as i64,
            "missing",
            i as f64 * 0.5,
            &[i as u8; 16][..],
            (i % 7) as i64,
            if i % 5 == 0 { Some("note") } else { None }
        ])?;
    }
    Ok(())
}

/// The instance the transfer benches export from, opened again (to enrol
/// it at a destination).
fn src_key_holder(dir: &Path) -> Instance {
    Instance::open(dir.join("src.db")).expect("open")
}

fn db(dir: &Path, name: &str, tracked: bool, rows: usize) -> Connection {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let conn = Connection::open(&path).expect("open");
    conn.execute_batch(SCHEMA).expect("schema");
    conn.execute_batch("BEGIN").expect("begin");
    insert(&conn, 0, rows).expect("rows");
    conn.execute_batch("COMMIT").expect("commit");
    if tracked {
        // Named after its file: two instances of one name would each take
        // the other for an impostor.
        let instance_name = name.trim_end_matches(".db");
        let (mut inst, _) = Instance::init(&path, instance_name).expect("init");
        inst.track(&Selection::All).expect("track");
        inst.compact().expect("compact");
    }
    conn
}

fn capture(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("capture");
    for tracked in [false, true] {
        let label = if tracked { "tracked" } else { "plain" };
        g.bench_function(format!("insert {ROWS} rows, {label}"), |b| {
            b.iter_batched(
                || db(dir.path(), "c.db", tracked, 0),
                |conn| {
                    conn.execute_batch("BEGIN").expect("begin");
                    insert(&conn, 0, ROWS).expect("insert");
                    conn.execute_batch("COMMIT").expect("commit");
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function(format!("update 1 column of {ROWS} rows, {label}"), |b| {
            b.iter_batched(
                || db(dir.path(), "c.db", tracked, ROWS),
                |conn| {
                    conn.execute_batch("BEGIN").expect("begin");
                    let mut st = conn
                        .prepare("UPDATE person SET status = 'found' WHERE id = ?1")
                        .expect("prepare");
                    for i in 0..ROWS {
                        st.execute([id(i)]).expect("update");
                    }
                    drop(st);
                    conn.execute_batch("COMMIT").expect("commit");
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function(format!("delete {ROWS} rows, {label}"), |b| {
            b.iter_batched(
                || db(dir.path(), "c.db", tracked, ROWS),
                |conn| {
                    conn.execute_batch("BEGIN").expect("begin");
                    let mut st = conn
                        .prepare("DELETE FROM person WHERE id = ?1")
                        .expect("prepare");
                    for i in 0..ROWS {
                        st.execute([id(i)]).expect("delete");
                    }
                    drop(st);
                    conn.execute_batch("COMMIT").expect("commit");
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn transfer(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(db(dir.path(), "src.db", true, ROWS));
    let mut src = Instance::open(dir.path().join("src.db")).expect("open");
    let mut bundle = Vec::new();
    src.export(&ExportTarget::Full, &mut bundle)
        .expect("export");
    let mut g = c.benchmark_group("transfer");
    g.bench_function(format!("full export of {ROWS} rows"), |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(bundle.len());
            src.export(&ExportTarget::Full, &mut out).expect("export");
            out
        })
    });
    g.bench_function(format!("import {ROWS} rows into an empty instance"), |b| {
        b.iter_batched(
            || {
                drop(db(dir.path(), "dst.db", true, 0));
                let mut dst = Instance::open(dir.path().join("dst.db")).expect("open");
                // The destination enrolled the source, as HQ enrols its laptops.
                fieldsync::fuzzing::enrol_each_other(&mut src_key_holder(dir.path()), &mut dst)
                    .expect("enrol");
                dst
            },
            |mut dst| dst.import(Cursor::new(&bundle)).expect("import"),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// In-memory rows shaped like the person table.
fn records() -> Vec<(Vec<Value>, Vec<VersionRecord>, Vec<Value>)> {
    (0..ROWS)
        .map(|i| {
            (
                vec![Value::text(id(i))],
                vec![VersionRecord {
                    origin: 0,
                    seq: i as u64 + 1,
                    hlc: (1u64 << 40) + ((i as u64) << 22),
                    cols: ColSet::full_row(7),
                }],
                vec![
                    Value::text(format!("Person {i}")),
                    Value::Integer((i % 90) as i64),
                    Value::text("missing"),
                    Value::Real(i as f64 * 0.5),
                    Value::Blob(vec![i as u8; 16]),
                    Value::Integer((i % 7) as i64),
                    Value::Null,
                ],
            )
        })
        .collect()
}

fn header() -> Header {
    let site = SiteRef {
        id: SiteId::random(),
        name: "hq".into(),
    };
    Header {
        sender: site.clone(),
        created: 1 << 50,
        full: true,
        recipient: None,
        origins: vec![site],
        tables: vec![TableDef {
            name: "person".into(),
            key: vec!["id".into()],
            cells: ["name", "age", "status", "score", "photo", "org", "note"]
                .map(String::from)
                .to_vec(),
            schema: Vec::new(),
            ..TableDef::default()
        }],
        covers: vec![OriginSeqs {
            origin: 0,
            seqs: SeqSet::range(1, ROWS as u64),
        }],
        seen: vec![OriginSeqs {
            origin: 0,
            seqs: SeqSet::range(1, ROWS as u64),
        }],
        lost: SeqSet::new(),
        lacks: Vec::new(),
        trust: Vec::new(),
        trust_seen: None,
        local_tables: Vec::new(),
        views: Vec::new(),
        schemas: Vec::new(),
        sender_recipient: None,
        statements: Vec::new(),
    }
}

fn encode(h: &Header, rows: &[(Vec<Value>, Vec<VersionRecord>, Vec<Value>)]) -> Vec<u8> {
    let mut w = BundleWriter::new(Vec::new(), h, &fieldsync::fuzzing::fuzz_key()).expect("writer");
    for (key, versions, values) in rows {
        w.write_row(0, key, 1, versions, values).expect("row");
    }
    w.finish().expect("finish").0
}

fn codec(c: &mut Criterion) {
    let rows = records();
    let h = header();
    let bytes = encode(&h, &rows);
    let mut g = c.benchmark_group("bundle");
    g.bench_function(format!("encode {ROWS} rows"), |b| {
        b.iter(|| encode(&h, &rows))
    });
    g.bench_function(format!("decode {ROWS} rows"), |b| {
        b.iter(|| {
            let mut r = BundleReader::open(Cursor::new(&bytes)).expect("open");
            let mut n = 0;
            while r.next_row().expect("row").is_some() {
                n += 1;
            }
            r.finish().expect("finish");
            n
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = capture, transfer, codec
}
criterion_main!(benches);
