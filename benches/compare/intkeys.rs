//! Integer keys against text keys: the same rows, with one reference each,
//! keyed by `INTEGER PRIMARY KEY` (rows identified by origin and mapped in
//! `fieldsync_ids`, references translated to the parent row's identity on
//! export and back to a local number on import) and by uuid text (keys and
//! references travel as they are). Full import and full export of each,
//! into and from instances set up the same way; the text-keyed run is the
//! baseline.

use std::path::Path;
use std::time::Instant;

use fieldsync::{ExportTarget, Instance, Selection};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params};

use crate::capture::Keys;
use crate::fixture::{Figure, Res, enrol_signer, id, insert_person, median, side_by_side, time};

/// A parent table and a child table whose every row points at a parent.
fn schema(keys: Keys) -> &'static str {
    match keys {
        Keys::Text => {
            "CREATE TABLE parent(id TEXT PRIMARY KEY, name TEXT NOT NULL, village TEXT, size INTEGER);
             CREATE TABLE child(id TEXT PRIMARY KEY, parent TEXT REFERENCES parent(id), name TEXT NOT NULL, \
             age INTEGER, status TEXT, score REAL, photo BLOB, org INTEGER, note TEXT);"
        }
        Keys::Int => {
            "CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT NOT NULL, village TEXT, size INTEGER);
             CREATE TABLE child(id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent(id), name TEXT NOT NULL, \
             age INTEGER, status TEXT, score REAL, photo BLOB, org INTEGER, note TEXT);"
        }
    }
}

fn tag(keys: Keys) -> &'static str {
    match keys {
        Keys::Text => "text",
        Keys::Int => "int",
    }
}

fn parent_key(keys: Keys, j: usize) -> SqlValue {
    match keys {
        Keys::Text => SqlValue::Text(id(1_000_000_000 + j)),
        Keys::Int => SqlValue::Integer(j as i64 + 1),
    }
}

fn child_key(keys: Keys, i: usize) -> SqlValue {
    match keys {
        Keys::Text => SqlValue::Text(id(i)),
        Keys::Int => SqlValue::Integer(i as i64 + 1),
    }
}

/// The parent child `i` points at: spread over all parents.
fn parent_of(i: usize, parents: usize) -> usize {
    (i * 7919) % parents
}

/// Insert `parents` parents, then `n` children, in one transaction.
fn fill(conn: &Connection, keys: Keys, n: usize, parents: usize) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN")?;
    {
        let mut st = conn.prepare("INSERT INTO parent VALUES (?1, ?2, ?3, ?4)")?;
        for j in 0..parents {
            st.execute(params![
                parent_key(keys, j),
                format!("Household {j}"),
                format!("Village {}", j % 50),
                (j % 8) as i64
            ])?;
        }
        let mut st =
            conn.prepare("INSERT INTO child VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")?;
        for i in 0..n {
            insert_person(
                &mut st,
                &[
                    &child_key(keys, i),
                    &parent_key(keys, parent_of(i, parents)),
                ],
                i,
            )?;
        }
    }
    conn.execute_batch("COMMIT")
}

/// A new database with the two tables, empty and untracked.
fn plain(path: &Path, keys: Keys) -> Res<Connection> {
    let _ = std::fs::remove_file(path);
    let conn = Connection::open(path)?;
    conn.execute_batch(schema(keys))?;
    Ok(conn)
}

/// A new instance with the two tables tracked and no rows.
fn empty(path: &Path, keys: Keys, name: &str) -> Res<Instance> {
    drop(plain(path, keys)?);
    let (mut inst, _) = Instance::init(path, name)?;
    inst.track(&Selection::All)?;
    Ok(inst)
}

/// Every child is there and points at the parent it pointed at at the
/// source (checked by the parent's name).
fn verify(conn: &Connection, n: usize, parents: usize) -> Res<()> {
    let (children, good): (i64, i64) = conn.query_row(
        "SELECT count(*), sum(p.name = 'Household ' || ((CAST(substr(c.name, 8) AS INTEGER) * 7919) % ?1)) \
         FROM child AS c LEFT JOIN parent AS p ON p.id = c.parent",
        [parents as i64],
        |r| Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0))),
    )?;
    if children as usize != n || good as usize != n {
        return Err(format!(
            "imported {children} children, {good} pointing at the right parent; expected {n}"
        )
        .into());
    }
    Ok(())
}

/// Full import and export of `n` children (and `n / 10` parents) keyed by
/// integers against the same keyed by text.
pub fn run(dir: &Path, n: usize, reps: usize) -> Res<Vec<Figure>> {
    let parents = (n / 10).max(1);
    println!(
        "\ninteger vs text keys: {n} child rows with one reference each to {parents} parent rows; baseline: the same rows keyed by text"
    );
    let mut figures = Vec::new();
    let both = [Keys::Text, Keys::Int];
    // The sources: the app inserts the rows after `track`; stamping (the
    // part that gives integer-keyed rows their identity) is timed once.
    let mut sources = Vec::new();
    let mut bundles = Vec::new();
    for keys in both {
        let path = dir.join(format!("refs-{}-source.db", tag(keys)));
        let mut inst = empty(&path, keys, &format!("source-{}", tag(keys)))?;
        fill(inst.connection(), keys, n, parents)?;
        let start = Instant::now();
        inst.compact()?;
        println!(
            "(stamping {} captured inserts, {} keys: {:.3} s)",
            n + parents,
            tag(keys),
            start.elapsed().as_secs_f64()
        );
        let bundle = dir.join(format!("refs-{}.bundle", tag(keys)));
        let bytes = inst.export_to_file(&ExportTarget::Full, &bundle)?.bytes;
        sources.push(inst);
        bundles.push((bundle, bytes));
    }

    // Import, interleaved: the rows inserted with prepared statements into
    // the plain tables (context), then imported, text keys then int keys.
    let mut inserted = [Vec::new(), Vec::new()];
    let mut imported = [Vec::new(), Vec::new()];
    for rep in 0..reps {
        for (k, keys) in both.into_iter().enumerate() {
            let conn = plain(&dir.join(format!("refs-{}-plain.db", tag(keys))), keys)?;
            inserted[k].push(time(|| Ok(fill(&conn, keys, n, parents)?))?);
            drop(conn);
            let path = dir.join(format!("refs-{}-import.db", tag(keys)));
            let mut inst = empty(&path, keys, "hq")?;
            enrol_signer(&mut inst, &bundles[k].0)?;
            let mut quarantined = 0;
            imported[k].push(time(|| {
                quarantined = inst.import_file(&bundles[k].0)?.quarantined;
                Ok(())
            })?);
            if quarantined != 0 {
                return Err(format!("{quarantined} changes quarantined").into());
            }
            if rep == 0 {
                verify(inst.connection(), n, parents)?;
            }
        }
    }
    let [text_insert, int_insert] = inserted.map(median);
    let [text_import, int_import] = imported.map(median);
    for fig in [
        Figure {
            label: format!(
                "import full bundle, {n} rows + {parents} parents, 1 ref each: int keys (vs text keys)"
            ),
            baseline: text_import,
            measured: int_import,
            unit: "s",
            target: Some(1.3),
        },
        Figure {
            label: "  the same, text keys (vs prepared INSERTs of the rows)".into(),
            baseline: text_insert,
            measured: text_import,
            unit: "s",
            target: None,
        },
        Figure {
            label: "  the same, int keys (vs prepared INSERTs of the rows)".into(),
            baseline: int_insert,
            measured: int_import,
            unit: "s",
            target: None,
        },
    ] {
        fig.print();
        figures.push(fig);
    }

    figures.push(side_by_side(
        &format!("full export, {n} rows + {parents} parents, 1 ref each: int keys (vs text keys)"),
        reps,
        None,
        |int| {
            let k = usize::from(int);
            let out = dir.join("refs-again.bundle");
            // The other source's file is not this one's to replace: export
            // refuses to overwrite a bundle not yet delivered.
            let _ = std::fs::remove_file(&out);
            let inst = &mut sources[k];
            time(|| {
                inst.export_to_file(&ExportTarget::Full, &out)?;
                Ok(())
            })
        },
    )?);
    let fig = Figure {
        label: "  full bundle size, int keys (vs text keys), MB".into(),
        baseline: bundles[0].1 as f64 / 1e6,
        measured: bundles[1].1 as f64 / 1e6,
        unit: "MB",
        target: None,
    };
    fig.print();
    figures.push(fig);
    Ok(figures)
}
