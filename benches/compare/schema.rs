//! A delta export after an app schema change against one without
//! (spec/schema.md): HQ and a laptop set up from HQ's full export that sent
//! one bundle back (so HQ holds the laptop's schema versions); HQ changes
//! 1,000 rows and exports a delta to the laptop. Variants, interleaved:
//! no schema change (the baseline); `ALTER TABLE person ADD COLUMN extra
//! TEXT` already followed by an earlier command (`conflicts --retry`), so
//! only the schema part remains (versions, the altered table's statements);
//! the same with 20 tracked tables of which one altered, against those 20
//! without change; the first export right after the `ALTER` (it follows
//! the column: one scan of the table). Then the laptop's import of the
//! baseline's bundle against the bundle that runs the `ADD COLUMN`.

use std::fs::File;
use std::path::{Path, PathBuf};

use fieldsync::{ExportTarget, Instance, Selection};
use rusqlite::params;

use crate::fixture::{
    Figure, INSERT, Res, SCHEMA, full_bundle, id, insert_row, instance, median, time,
};

/// Rows of each of the 19 other tables of the 20-table setup.
const OTHER_ROWS: usize = 1_000;

/// Rows HQ changes before each delta export.
const CHANGED: usize = 1_000;

const ALTER: &str = "ALTER TABLE person ADD COLUMN extra TEXT";

/// The time figures' target: no more than the export without a schema
/// change, within this machine's noise.
const TARGET: Option<f64> = Some(1.1);

fn to(peer: &str) -> ExportTarget {
    ExportTarget::Peer {
        to: peer.into(),
        resend: false,
    }
}

/// Make `to` a copy of the closed database `from`.
fn copy(from: &Path, to: &Path) -> Res<()> {
    for suffix in ["-journal", "-wal", "-shm"] {
        let mut p = to.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    std::fs::copy(from, to)?;
    Ok(())
}

/// HQ with `person` (`n` rows) and `others` more tables of the same shape
/// (`OTHER_ROWS` rows each), all tracked; a laptop set up from HQ's full
/// export; the laptop's first bundle imported at HQ. Both closed: their
/// files are the templates each run copies.
fn pair(dir: &Path, tag: &str, n: usize, others: usize) -> Res<(PathBuf, PathBuf)> {
    let hq_path = dir.join(format!("schema-{tag}-hq.db"));
    let mut hq = instance(&hq_path, "hq", n)?;
    if others > 0 {
        let names: Vec<String> = (1..=others).map(|k| format!("person_{k:02}")).collect();
        let conn = hq.connection();
        for (k, name) in names.iter().enumerate() {
            conn.execute_batch(&SCHEMA.replace("person", name))?;
            conn.execute_batch("BEGIN")?;
            {
                let mut st = conn.prepare(&INSERT.replace("person", name))?;
                let from = n + k * OTHER_ROWS;
                for i in from..from + OTHER_ROWS {
                    insert_row(&mut st, i)?;
                }
            }
            conn.execute_batch("COMMIT")?;
        }
        hq.track(&Selection::Named(names))?;
        hq.compact()?;
    }
    let full = dir.join(format!("schema-{tag}-full.bundle"));
    full_bundle(&mut hq, &full)?;
    let laptop_path = dir.join(format!("schema-{tag}-laptop.db"));
    let _ = std::fs::remove_file(&laptop_path);
    let opts = fieldsync::SetupOptions {
        expect_key: Some(hq.key()?.signing_fingerprint),
        ..Default::default()
    };
    let (mut laptop, _) =
        Instance::init_from(&laptop_path, "laptop", File::open(&full)?, &full, &opts)?;
    let key = laptop.key()?;
    hq.enrol(
        "laptop",
        &key.public_key,
        Some(&key.recipient),
        Some(&key.site_id),
    )?;
    let back = dir.join(format!("schema-{tag}-back.bundle"));
    laptop.export_to_file(&to("hq"), &back)?;
    hq.import_file(&back)?;
    // HQ holds the laptop's reported versions, equal to its own: a delta
    // without a schema change carries no statement.
    for t in hq.schema()?.tables {
        let laptop = t.peers.iter().find(|p| p.peer == "laptop");
        if !laptop.is_some_and(|p| p.reported && Some(&p.version) == t.version.as_ref()) {
            return Err(format!("HQ does not hold the laptop's version of {}", t.table).into());
        }
    }
    Ok((hq_path, laptop_path))
}

/// A copy of HQ's template `from` at `to` after the app's `ALTER`, followed
/// by `conflicts --retry` (which exports nothing) when `follow` is set.
fn altered(from: &Path, to: &Path, follow: bool) -> Res<()> {
    copy(from, to)?;
    let mut hq = Instance::open(to)?;
    hq.connection().execute_batch(ALTER)?;
    if follow {
        let took = time(|| {
            hq.retry_quarantine()?;
            Ok(())
        })?;
        println!("(following the ALTER alone, `conflicts --retry`: {took:.3} s)");
        // Followed: `person`'s version here is no longer the laptop's.
        let person = hq
            .schema()?
            .tables
            .into_iter()
            .find(|t| t.table == "person");
        if !person.is_some_and(|t| {
            t.peers
                .iter()
                .all(|p| Some(&p.version) != t.version.as_ref())
        }) {
            return Err("the ALTER was not followed".into());
        }
    }
    Ok(())
}

/// One measured export: HQ's template copied, `CHANGED` rows spread over
/// `person` given a new note (not timed), then the delta to the laptop.
/// Time and bundle size.
fn export(dir: &Path, template: &Path, n: usize, round: usize, out: &Path) -> Res<(f64, f64)> {
    let path = dir.join("schema-run-hq.db");
    copy(template, &path)?;
    let mut hq = Instance::open(&path)?;
    {
        let conn = hq.connection();
        conn.execute_batch("BEGIN")?;
        let mut st = conn.prepare("UPDATE person SET note = ?1 WHERE id = ?2")?;
        let step = (n / CHANGED).max(1);
        for i in 0..CHANGED.min(n) {
            st.execute(params![format!("round {round}"), id(i * step)])?;
        }
        drop(st);
        conn.execute_batch("COMMIT")?;
    }
    let _ = std::fs::remove_file(out);
    let mut bytes = 0;
    let took = time(|| {
        let r = hq.export_to_file(&to("laptop"), out)?;
        if r.changes != CHANGED.min(n) as u64 {
            return Err(format!("delta carried {} changes", r.changes).into());
        }
        bytes = r.bytes;
        Ok(())
    })?;
    Ok((took, bytes as f64 / 1e3))
}

/// One measured import of `bundle` into a copy of the laptop's template;
/// `column` says whether the bundle adds `person.extra` there.
fn import(dir: &Path, template: &Path, bundle: &Path, column: bool) -> Res<f64> {
    let path = dir.join("schema-run-laptop.db");
    copy(template, &path)?;
    let mut laptop = Instance::open(&path)?;
    let mut report = None;
    let took = time(|| {
        report = Some(laptop.import_file(bundle)?);
        Ok(())
    })?;
    let r = report.expect("imported");
    let has = laptop
        .connection()
        .prepare("SELECT extra FROM person")
        .is_ok();
    if r.applied != CHANGED as u64 || r.waiting != 0 || r.quarantined != 0 || has != column {
        return Err(format!(
            "import applied {}, waiting {}, quarantined {}, person.extra {}",
            r.applied,
            r.waiting,
            r.quarantined,
            if has { "present" } else { "missing" }
        )
        .into());
    }
    Ok(took)
}

/// The figures, at `n` rows in `person`.
pub fn run(dir: &Path, n: usize, reps: usize) -> Res<Vec<Figure>> {
    let others = 19;
    println!(
        "\nschema change: delta export of {CHANGED} changed rows of {n} to a laptop that reported its schema; \
         baseline: the same export without a schema change"
    );
    let (hq, laptop) = pair(dir, "one", n, 0)?;
    let (hq20, _) = pair(dir, "twenty", n, others)?;
    let followed = dir.join("schema-one-followed.db");
    altered(&hq, &followed, true)?;
    let followed20 = dir.join("schema-twenty-followed.db");
    altered(&hq20, &followed20, true)?;
    let fresh = dir.join("schema-one-altered.db");
    altered(&hq, &fresh, false)?;
    let variants = [
        ("none", &hq),
        ("followed", &followed),
        ("fresh", &fresh),
        ("none20", &hq20),
        ("followed20", &followed20),
    ];
    let mut times = vec![Vec::new(); variants.len()];
    let mut sizes = vec![Vec::new(); variants.len()];
    let (mut import_none, mut import_fresh) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        for (v, (name, template)) in variants.iter().enumerate() {
            let out = dir.join(format!("schema-{name}.bundle"));
            let (t, kb) = export(dir, template, n, rep, &out)?;
            times[v].push(t);
            sizes[v].push(kb);
        }
        import_none.push(import(
            dir,
            &laptop,
            &dir.join("schema-none.bundle"),
            false,
        )?);
        import_fresh.push(import(
            dir,
            &laptop,
            &dir.join("schema-fresh.bundle"),
            true,
        )?);
    }
    let t: Vec<f64> = times.into_iter().map(median).collect();
    let s: Vec<f64> = sizes.into_iter().map(median).collect();
    let figure = |label: String, base: usize, ours: usize, target: Option<f64>| {
        [
            Figure {
                label,
                baseline: t[base],
                measured: t[ours],
                unit: "s",
                target,
            },
            Figure {
                label: "  its bundle size".into(),
                baseline: s[base],
                measured: s[ours],
                unit: "KB",
                target: None,
            },
        ]
    };
    let mut figures = Vec::new();
    figures.extend(figure(
        format!("delta export {CHANGED}/{n} rows, ALTER followed earlier (vs none)"),
        0,
        1,
        TARGET,
    ));
    figures.extend(figure(
        format!(
            "  the same, {} tables, 1 altered (vs 20, none altered)",
            others + 1
        ),
        3,
        4,
        TARGET,
    ));
    figures.extend(figure(
        format!("  {} tables, no change (vs 1 table, no change)", others + 1),
        0,
        3,
        None,
    ));
    figures.extend(figure(
        format!("first delta export {CHANGED}/{n} right after ALTER (vs none)"),
        0,
        2,
        TARGET,
    ));
    figures.push(Figure {
        label: "laptop imports it, runs ADD COLUMN (vs the none bundle)".into(),
        baseline: median(import_none),
        measured: median(import_fresh),
        unit: "s",
        target: None,
    });
    for f in &figures {
        f.print();
    }
    Ok(figures)
}
