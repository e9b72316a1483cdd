//! Export and import against SQLite doing the same work directly: a full
//! bundle imported vs the same rows inserted with prepared statements, a
//! delta of updates imported vs the same updates, a full export vs reading
//! the rows with a prepared SELECT, the bundle's size vs the gzip'd
//! `.dump`, a delta export from a small vs a large database, and many small
//! bundles vs one large one.

use std::path::Path;
use std::process::{Command, Stdio};

use fieldsync::{ExportTarget, Instance, Value};
use rusqlite::{Connection, params};

use crate::fixture::{
    Figure, INSERT, Res, empty_instance, enrol_signer, fill, full_bundle, id, insert_row, instance,
    plain, side_by_side, time,
};

fn to(peer: &str) -> ExportTarget {
    ExportTarget::Peer {
        to: peer.into(),
        resend: false,
    }
}

/// Full import and export of `n` rows, a delta of updates, and the size.
pub fn run(dir: &Path, n: usize, reps: usize) -> Res<Vec<Figure>> {
    println!("\ntransfer: {n} rows");
    let mut figures = Vec::new();
    let mut source = instance(&dir.join("source.db"), "source", n)?;
    let full = dir.join("full.bundle");
    let bytes = full_bundle(&mut source, &full)?;

    figures.push(side_by_side(
        "import a full bundle into an empty instance (vs prepared INSERTs)",
        reps,
        Some(3.0),
        |ours| {
            if ours {
                let mut inst = empty_instance(&dir.join("import.db"), "hq")?;
                enrol_signer(&mut inst, &full)?;
                time(|| {
                    inst.import_file(&full)?;
                    Ok(())
                })
            } else {
                let path = plain(&dir.join("insert.db"), 0)?;
                let conn = Connection::open(&path)?;
                time(|| Ok(fill(&conn, 0, n)?))
            }
        },
    )?);

    // A delta: half the rows get a new status and score at the source.
    let changed = n / 2;
    let populated = dir.join("populated.db");
    {
        let mut field = empty_instance(&populated, "field")?;
        enrol_signer(&mut field, &full)?;
        field.import_file(&full)?;
    }
    source.export_to_file(&to("field"), &dir.join("catch-up.bundle"))?;
    {
        let conn = source.connection();
        conn.execute_batch("BEGIN")?;
        let mut st = conn.prepare("UPDATE person SET status = ?1, score = ?2 WHERE id = ?3")?;
        for i in 0..changed {
            st.execute(params!["sheltered", i as f64 + 0.25, id(i)])?;
        }
        drop(st);
        conn.execute_batch("COMMIT")?;
    }
    let delta = dir.join("delta.bundle");
    source.export_to_file(&to("field"), &delta)?;
    let plain_full = plain(&dir.join("plain-full.db"), n)?;
    figures.push(side_by_side(
        &format!("import {changed} updates into {n} rows (vs prepared UPDATEs)"),
        reps,
        Some(3.0),
        |ours| {
            if ours {
                let copy = dir.join("populated-copy.db");
                std::fs::copy(&populated, &copy)?;
                let mut inst = Instance::open(&copy)?;
                time(|| {
                    inst.import_file(&delta)?;
                    Ok(())
                })
            } else {
                let copy = dir.join("plain-copy.db");
                std::fs::copy(&plain_full, &copy)?;
                let conn = Connection::open(&copy)?;
                time(|| {
                    conn.execute_batch("BEGIN")?;
                    let mut st =
                        conn.prepare("UPDATE person SET status = ?1, score = ?2 WHERE id = ?3")?;
                    for i in 0..changed {
                        st.execute(params!["sheltered", i as f64 + 0.25, id(i)])?;
                    }
                    drop(st);
                    conn.execute_batch("COMMIT")?;
                    Ok(())
                })
            }
        },
    )?);

    figures.push(side_by_side(
        "full export (vs reading every row with a prepared SELECT)",
        reps,
        None,
        |ours| {
            if ours {
                let out = dir.join("again.bundle");
                time(|| {
                    source.export_to_file(&ExportTarget::Full, &out)?;
                    Ok(())
                })
            } else {
                let conn = Connection::open(&plain_full)?;
                time(|| {
                    let mut st = conn.prepare("SELECT * FROM person")?;
                    let mut rows = st.query([])?;
                    let mut kept = 0usize;
                    while let Some(r) = rows.next()? {
                        let row: Vec<Value> = (0..8)
                            .map(|i| r.get::<_, Value>(i))
                            .collect::<rusqlite::Result<_>>()?;
                        kept += row.len();
                    }
                    assert_eq!(kept, 8 * n);
                    Ok(())
                })
            }
        },
    )?);

    let dump = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "sqlite3 '{}' '.dump person' | gzip -6 | wc -c",
            source.path().display()
        ))
        .stderr(Stdio::null())
        .output()?;
    match String::from_utf8_lossy(&dump.stdout).trim().parse::<f64>() {
        Ok(gz) if dump.status.success() && gz > 100.0 => {
            let fig = Figure {
                label: "full bundle size (vs sqlite3 .dump | gzip -6), MB".into(),
                baseline: gz / 1e6,
                measured: bytes as f64 / 1e6,
                unit: "MB",
                target: Some(0.9),
            };
            fig.print();
            figures.push(fig);
        }
        _ => println!("(sqlite3 or gzip missing: bundle size vs .dump skipped)"),
    }
    Ok(figures)
}

/// Exporting 100 changed rows from a small and from a large database.
pub fn delta_export(dir: &Path, small: usize, large: usize, reps: usize) -> Res<Figure> {
    println!("\ndelta export: 100 changed rows, {small} vs {large} rows in the database");
    let mut dbs = Vec::new();
    for (name, rows) in [("small", small), ("large", large)] {
        let mut inst = instance(&dir.join(format!("{name}.db")), name, rows)?;
        inst.export_to_file(&to("peer"), &dir.join(format!("{name}-all.bundle")))?;
        dbs.push(inst);
    }
    let mut round = 0usize;
    side_by_side(
        &format!("export 100 changed rows: {large} vs {small} rows"),
        reps,
        Some(1.5),
        |large_db| {
            let inst = &mut dbs[usize::from(large_db)];
            round += 1;
            let conn = inst.connection();
            conn.execute_batch("BEGIN")?;
            {
                let mut st = conn.prepare("UPDATE person SET note = ?1 WHERE id = ?2")?;
                for i in 0..100 {
                    st.execute(params![format!("round {round}"), id(i * 7)])?;
                }
            }
            conn.execute_batch("COMMIT")?;
            // A file of its own each round: export does not overwrite a
            // bundle the peer has not acknowledged.
            let out = dir.join(format!("delta-export-{round}.bundle"));
            time(|| {
                let r = inst.export_to_file(&to("peer"), &out)?;
                assert_eq!(r.changes, 100);
                Ok(())
            })
        },
    )
}

/// HQ importing `bundles` bundles of `per` new rows each vs one bundle of
/// all of them.
pub fn many_bundles(dir: &Path, bundles: usize, per: usize, reps: usize) -> Res<Figure> {
    let total = bundles * per;
    println!("\nmany bundles: {bundles} bundles of {per} changes vs one of {total}");
    let mut field = empty_instance(&dir.join("field.db"), "field")?;
    let mut files = Vec::new();
    {
        for b in 0..bundles {
            let conn = field.connection();
            conn.execute_batch("BEGIN")?;
            {
                let mut st = conn.prepare(INSERT)?;
                for i in b * per..(b + 1) * per {
                    insert_row(&mut st, i)?;
                }
            }
            conn.execute_batch("COMMIT")?;
            let file = dir.join(format!("week-{b:03}.bundle"));
            field.export_to_file(&to("hq"), &file)?;
            files.push(file);
        }
    }
    let one = dir.join("all-at-once.bundle");
    full_bundle(&mut field, &one)?;
    let one_command = side_by_side(
        &format!("import {bundles} x {per} changes in one command (vs one bundle of {total})"),
        reps,
        Some(1.2),
        |many| {
            let mut hq = empty_instance(&dir.join("hq.db"), "hq")?;
            enrol_signer(&mut hq, &one)?;
            time(|| {
                if many {
                    hq.import_all(files.iter().map(|f| Ok(std::fs::File::open(f)?)))?;
                } else {
                    hq.import_file(&one)?;
                }
                Ok(())
            })
        },
    )?;
    // The same bundles imported one command each: a commit per bundle.
    side_by_side(
        &format!("import {bundles} x {per} changes, one command each (vs one bundle)"),
        1,
        None,
        |many| {
            let mut hq = empty_instance(&dir.join("hq.db"), "hq")?;
            enrol_signer(&mut hq, &one)?;
            time(|| {
                if many {
                    for f in &files {
                        hq.import_file(f)?;
                    }
                } else {
                    hq.import_file(&one)?;
                }
                Ok(())
            })
        },
    )?;
    Ok(one_command)
}
