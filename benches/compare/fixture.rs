//! What every comparison uses: the realistic table, its rows, instances
//! made from it, and the side-by-side measuring loop.

use std::path::{Path, PathBuf};
use std::time::Instant;

use fieldsync::{ExportTarget, Instance, Selection};
use rusqlite::{Connection, params_from_iter};

pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Eight columns as a relief app keeps them: a uuid key, text, integers, a
/// real, a small blob, nullable fields.
pub const SCHEMA: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT NOT NULL, age INTEGER, \
                          status TEXT, score REAL, photo BLOB, org INTEGER, note TEXT);";

/// The same table keyed by the number SQLite gives each row, as most apps
/// key their tables (rows identified by origin, mapped in `fieldsync_ids`).
pub const INT_SCHEMA: &str = "CREATE TABLE person(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, \
                              age INTEGER, status TEXT, score REAL, photo BLOB, org INTEGER, note TEXT);";

pub const INSERT: &str = "INSERT INTO person VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A uuid-shaped key, spread over the key space like random uuids.
pub fn id(i: usize) -> String {
    let h = blake3::hash(&(i as u64).to_le_bytes());
    let b = h.as_bytes();
    let hex: String = b[..16].iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// Insert rows `from..to` with prepared statements in one transaction.
pub fn fill(conn: &Connection, from: usize, to: usize) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN")?;
    {
        let mut st = conn.prepare(INSERT)?;
        for i in from..to {
            insert_row(&mut st, i)?;
        }
    }
    conn.execute_batch("COMMIT")
}

/// Insert rows `from..to` of the integer-keyed table (row `i` numbered
/// `i + 1`) with prepared statements in one transaction.
pub fn fill_int(conn: &Connection, from: usize, to: usize) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN")?;
    {
        let mut st = conn.prepare(INSERT)?;
        for i in from..to {
            insert_keyed(&mut st, &(i as i64 + 1), i)?;
        }
    }
    conn.execute_batch("COMMIT")
}

/// Row `i`'s values.
pub fn insert_row(st: &mut rusqlite::Statement<'_>, i: usize) -> rusqlite::Result<usize> {
    insert_keyed(st, &id(i), i)
}

/// Row `i`'s values under key `key`.
pub fn insert_keyed(
    st: &mut rusqlite::Statement<'_>,
    key: &dyn rusqlite::ToSql,
    i: usize,
) -> rusqlite::Result<usize> {
    insert_person(st, &[key], i)
}

/// Person `i`'s non-key values after `first` (its key, and a parent key
/// where the table has one): every fixture's people are the same.
pub fn insert_person(
    st: &mut rusqlite::Statement<'_>,
    first: &[&dyn rusqlite::ToSql],
    i: usize,
) -> rusqlite::Result<usize> {
    let name = format!("Person {i}");
    let hash = blake3::hash(&(i as u64 + 7).to_le_bytes());
    let rest: [&dyn rusqlite::ToSql; 7] = [
        &name,
        &((i % 90) as i64),
        &if i % 3 == 0 { "missing" } else { "found" },
        &(i as f64 * 0.5),
        &&hash.as_bytes()[..16],
        &((i % 7) as i64),
        &if i % 5 == 0 {
            Some("seen at the school")
        } else {
            None
        },
    ];
    st.execute(params_from_iter(first.iter().chain(rest.iter())))
}

/// A new database file with the table (untracked).
pub fn plain(path: &Path, rows: usize) -> Res<PathBuf> {
    let _ = std::fs::remove_file(path);
    let conn = Connection::open(path)?;
    conn.execute_batch(SCHEMA)?;
    fill(&conn, 0, rows)?;
    Ok(path.to_owned())
}

/// A new instance named `name` with the table tracked and `rows` rows,
/// folded into the log.
pub fn instance(path: &Path, name: &str, rows: usize) -> Res<Instance> {
    plain(path, rows)?;
    let (mut inst, _) = Instance::init(path, name)?;
    inst.track(&Selection::All)?;
    inst.compact()?;
    Ok(inst)
}

/// A new empty instance with the table tracked.
pub fn empty_instance(path: &Path, name: &str) -> Res<Instance> {
    instance(path, name, 0)
}

/// Enrol at `inst` whoever signed the (unencrypted) bundle `bundle`, as the
/// HQ of a deployment enrols its laptops: the benches measure imports, not
/// refusals. Done outside the timed part.
pub fn enrol_signer(inst: &mut Instance, bundle: &Path) -> Res<()> {
    fieldsync::fuzzing::enrol_signer(inst, std::fs::File::open(bundle)?)?;
    Ok(())
}

/// Enrol `a` and `b` at each other.
pub fn enrol_each_other(a: &mut Instance, b: &mut Instance) -> Res<()> {
    Ok(fieldsync::fuzzing::enrol_each_other(a, b)?)
}

/// Full export of an instance to `out`.
pub fn full_bundle(inst: &mut Instance, out: &Path) -> Res<u64> {
    Ok(inst.export_to_file(&ExportTarget::Full, out)?.bytes)
}

/// Time one run of `f` in seconds.
pub fn time(f: impl FnOnce() -> Res<()>) -> Res<f64> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed().as_secs_f64())
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One line of the results table.
pub struct Figure {
    pub label: String,
    pub baseline: f64,
    pub measured: f64,
    pub unit: &'static str,
    pub target: Option<f64>,
}

impl Figure {
    pub fn ratio(&self) -> f64 {
        self.measured / self.baseline
    }

    /// Targets in MiB, ms and counts (`n`) bound the measured value itself;
    /// the others bound the ratio.
    fn absolute(&self) -> bool {
        matches!(self.unit, "MiB" | "ms" | "n")
    }

    /// None without a target, or when the figure was not reported (NaN).
    pub fn met(&self) -> Option<bool> {
        if self.measured.is_nan() {
            return None;
        }
        self.target.map(|t| {
            if self.absolute() {
                self.measured <= t
            } else {
                self.ratio() <= t
            }
        })
    }

    /// A value as its unit reads best; NaN is a figure not reported.
    fn cell(&self, v: f64) -> String {
        match self.unit {
            _ if v.is_nan() => "n/r".to_owned(),
            "n" => format!("{v:.0}"),
            "ms" => format!("{v:.1}"),
            _ => format!("{v:.4}"),
        }
    }

    pub fn print(&self) {
        let bound = |t: f64| match self.unit {
            "n" if t == 0.0 => "= 0".to_owned(),
            "n" => format!("<= {t:.0}"),
            "MiB" | "ms" => format!("<= {t:.0} {}", self.unit),
            _ => format!("<= {t:.1}"),
        };
        let verdict = match (self.target, self.met()) {
            (Some(t), Some(true)) => format!("{} ok", bound(t)),
            (Some(t), Some(false)) => format!("{} MISSED", bound(t)),
            (Some(t), None) => format!("{} not reported", bound(t)),
            _ => String::new(),
        };
        let ratio = self.ratio();
        let ratio = if ratio.is_finite() {
            format!("{ratio:.2}x")
        } else {
            "-".to_owned()
        };
        println!(
            "{:<52} {:>11} {:>11} {:<3} {ratio:>8}  {verdict}",
            self.label,
            self.cell(self.baseline),
            self.cell(self.measured),
            self.unit,
        );
    }
}

pub fn header() {
    println!(
        "{:<52} {:>11} {:>11} {:<3} {:>8}  target",
        "figure", "baseline", "fieldsync", "", "ratio"
    );
}

/// Measure the baseline and fieldsync alternately, `reps` times each, and
/// print both medians and their ratio.
pub fn side_by_side(
    label: &str,
    reps: usize,
    target: Option<f64>,
    mut run: impl FnMut(bool) -> Res<f64>,
) -> Res<Figure> {
    let (mut base, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        base.push(run(false)?);
        ours.push(run(true)?);
    }
    let fig = Figure {
        label: label.to_owned(),
        baseline: median(base),
        measured: median(ours),
        unit: "s",
        target,
    };
    fig.print();
    Ok(fig)
}
