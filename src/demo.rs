//! `fieldsync demo`: the seed scenario (Sahana's synchronization module) in
//! one command, on real database files, printing each step in plain words.
//!
//! HQ enters locations and default data and exports everything; two field
//! laptops are set up from that one file; field officers add villages,
//! register people, update shelter populations (both edit the same shelter)
//! and send bundles back again and again; HQ imports them (one twice, one
//! out of order), resolves a shelter-code clash the quarantine caught,
//! updates and adds records, and relays everything; the laptops exchange
//! directly too. At the end all three databases must hold the same rows, no
//! dangling references and an empty quarantine, or the demo fails.
//!
//! The schema is `examples/sahana.sql`.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::params;

use crate::value::Value;
use crate::{Error, ExportTarget, ImportReport, Instance, Selection};

/// The schema the demo uses, shipped as plain SQL for people to read.
pub const SCHEMA: &str = include_str!("../examples/sahana.sql");

/// Tables in the order the counts are printed.
const TABLES: [&str; 5] = ["location", "organisation", "person", "shelter", "request"];

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// An engine operation failed.
    #[error(transparent)]
    Engine(#[from] Error),
    /// Writing the narration or a file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The instances did not end identical: a bug in fieldsync.
    #[error("the instances differ at the end: {0}")]
    Diverged(String),
}

impl From<rusqlite::Error> for DemoError {
    fn from(e: rusqlite::Error) -> Self {
        DemoError::Engine(e.into())
    }
}

/// Row counts per table and instance at the end.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Where the files are.
    pub dir: PathBuf,
    /// `(table, rows)` — the same on every instance.
    pub counts: Vec<(String, u64)>,
    /// Changes quarantined along the way (all released by the end).
    pub quarantined: u64,
    /// Values recorded as overwritten by concurrent edits, per instance.
    pub overwritten: Vec<(String, u64)>,
}

/// A new directory under the system's temporary directory.
pub fn new_dir() -> Result<PathBuf, std::io::Error> {
    let dir = std::env::temp_dir().join(format!(
        "fieldsync-demo-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

struct Story<'a> {
    dir: PathBuf,
    out: &'a mut dyn Write,
    step: u32,
    quarantined: u64,
}

impl Story<'_> {
    fn say(&mut self, text: impl fmt::Display) -> Result<(), DemoError> {
        self.step += 1;
        writeln!(self.out, "{:>2}. {text}", self.step)?;
        Ok(())
    }

    fn detail(&mut self, text: impl fmt::Display) -> Result<(), DemoError> {
        writeln!(self.out, "    {text}")?;
        Ok(())
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Export from `from` to `to` into `name`; returns the file.
    fn export(&mut self, from: &mut Instance, to: &str, name: &str) -> Result<PathBuf, DemoError> {
        let path = self.file(name);
        let r = from.export_to_file(
            &ExportTarget::Peer {
                to: to.into(),
                resend: false,
            },
            &path,
        )?;
        let who = from.name()?;
        self.detail(format!(
            "{who} → {name}: {} changed rows for {to} ({} bytes)",
            r.changes, r.bytes
        ))?;
        Ok(path)
    }

    fn import(&mut self, into: &mut Instance, file: &Path) -> Result<ImportReport, DemoError> {
        let r = into.import_file(file)?;
        let who = into.name()?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut line = format!(
            "{who} ← {name}: {} applied, {} already known, {} older",
            r.applied, r.known, r.older
        );
        if r.quarantined > 0 {
            line.push_str(&format!(", {} quarantined", r.quarantined));
        }
        if r.released > 0 {
            line.push_str(&format!(", {} released from quarantine", r.released));
        }
        if r.overwritten > 0 {
            line.push_str(&format!(", {} concurrent value(s) lost", r.overwritten));
        }
        if !r.gaps.is_empty() {
            let gaps: Vec<String> = r.gaps.iter().map(|(o, g)| format!("{o} #{g}")).collect();
            line.push_str(&format!(" — still missing {}", gaps.join(", ")));
        }
        self.quarantined += r.quarantined;
        self.detail(line)?;
        Ok(r)
    }
}

fn id(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Add a location under `parent`.
fn location(
    db: &Instance,
    parent: Option<&str>,
    level: &str,
    name: &str,
    code: &str,
) -> Result<String, DemoError> {
    let id = id("loc");
    db.connection().execute(
        "INSERT INTO location(id, parent, level, name, code) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, parent, level, name, code],
    )?;
    Ok(id)
}

fn person(
    db: &Instance,
    name: (&str, &str),
    age: i64,
    status: &str,
    at: &str,
    org: &str,
) -> Result<String, DemoError> {
    let id = id("per");
    db.connection().execute(
        "INSERT INTO person(id, first_name, last_name, age, status, location, reported_by) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![id, name.0, name.1, age, status, at, org],
    )?;
    Ok(id)
}

fn count(db: &Instance, table: &str) -> Result<u64, DemoError> {
    let n: i64 = db
        .connection()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
    Ok(n as u64)
}

/// Every row of a table, in key order.
fn rows(db: &Instance, table: &str) -> Result<Vec<Vec<Value>>, DemoError> {
    let mut stmt = db
        .connection()
        .prepare(&format!("SELECT * FROM {table} ORDER BY id"))?;
    let n = stmt.column_count();
    let rows = stmt
        .query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())?
        .collect::<rusqlite::Result<Vec<Vec<Value>>>>()?;
    Ok(rows)
}

/// Play the scenario in `dir` (which must not hold earlier demo files),
/// narrating to `out`.
pub fn run(dir: &Path, out: &mut dyn Write) -> Result<DemoReport, DemoError> {
    std::fs::create_dir_all(dir)?;
    for name in ["hq.db", "field-1.db", "field-2.db"] {
        if dir.join(name).exists() {
            return Err(DemoError::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} already holds a demo ({name}); give another --dir or remove it",
                    dir.display()
                ),
            )));
        }
    }
    let mut st = Story {
        dir: dir.to_owned(),
        out,
        step: 0,
        quarantined: 0,
    };
    writeln!(
        st.out,
        "fieldsync demo: an HQ and two field laptops, exchanging files (in {})\n",
        dir.display()
    )?;

    // --- HQ enters the defaults --------------------------------------------
    let (mut hq, _) = Instance::init(st.file("hq.db"), "hq")?;
    hq.connection().execute_batch(SCHEMA)?;
    hq.connection().execute_batch("PRAGMA foreign_keys = ON")?;
    let country = location(&hq, None, "L0", "Sri Lanka", "LK")?;
    let mut districts = Vec::new();
    for (p, province) in ["Western", "Southern", "Eastern"].iter().enumerate() {
        let pid = location(
            &hq,
            Some(&country),
            "L1",
            province,
            &format!("LK-{}", p + 1),
        )?;
        for d in 1..=2 {
            districts.push(location(
                &hq,
                Some(&pid),
                "L2",
                &format!("{province} district {d}"),
                &format!("LK-{}-{d}", p + 1),
            )?);
        }
    }
    let (redcross, unhcr) = (id("org"), id("org"));
    hq.connection().execute(
        "INSERT INTO organisation VALUES (?1, 'Red Cross', 'RC', 'ngo'), (?2, 'UN Refugee Agency', 'UNHCR', 'un')",
        params![redcross, unhcr],
    )?;
    let school = id("shl");
    hq.connection().execute(
        "INSERT INTO shelter(id, code, name, location, organisation, capacity, population) \
         VALUES (?1, 'S-001', 'Galle school', ?2, ?3, 300, 40)",
        params![school, districts[2], redcross],
    )?;
    hq.track(&Selection::All)?;
    st.say(
        "HQ creates its database (hq.db, schema in examples/sahana.sql) and enters the defaults: \
         1 country, 3 provinces, 6 districts, 2 organisations, the shelter S-001.",
    )?;

    let full = st.file("hq-full.bundle");
    let r = hq.export_to_file(&ExportTarget::Full, &full)?;
    st.say(format!(
        "HQ exports everything to hq-full.bundle ({} rows, {} bytes, schema included). \
         A data carrier takes it to the field on a USB stick.",
        r.changes, r.bytes
    ))?;

    // --- Field laptops are set up from the one file ------------------------
    let mut fields = Vec::new();
    for name in ["field-1", "field-2"] {
        let (f, report) = Instance::init_from(
            st.file(&format!("{name}.db")),
            name,
            std::fs::File::open(&full)?,
            &full,
        )?;
        f.connection().execute_batch("PRAGMA foreign_keys = ON")?;
        st.say(format!(
            "{name} is set up from hq-full.bundle alone: {} tables created, {} rows loaded, HQ known as a peer.",
            report.tables.len(),
            report.import.applied
        ))?;
        fields.push(f);
    }
    let (mut f1, mut f2) = {
        let mut it = fields.into_iter();
        match (it.next(), it.next()) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(DemoError::Diverged("field instances missing".into())),
        }
    };

    // --- Week 1 in the field ------------------------------------------------
    let v1 = location(&f1, Some(&districts[2]), "L3", "Unawatuna", "LK-2-1-01")?;
    let v2 = location(&f1, Some(&districts[2]), "L3", "Habaraduwa", "LK-2-1-02")?;
    let amal = person(&f1, ("Amal", "Perera"), 34, "missing", &v1, &redcross)?;
    person(&f1, ("Nimali", "Silva"), 8, "missing", &v2, &redcross)?;
    let f1_camp = id("shl");
    f1.connection().execute(
        "INSERT INTO shelter(id, code, name, location, organisation, capacity, population) \
         VALUES (?1, 'S-101', 'Unawatuna temple', ?2, ?3, 80, 25)",
        params![f1_camp, v1, redcross],
    )?;
    f1.connection().execute(
        "UPDATE shelter SET population = 120 WHERE code = 'S-001'",
        [],
    )?;
    st.say(
        "field-1 adds 2 villages, registers 2 missing people, opens shelter S-101 and counts 120 people in S-001.",
    )?;

    let v3 = location(&f2, Some(&districts[4]), "L3", "Kalmunai", "LK-3-1-01")?;
    let v4 = location(&f2, Some(&v3), "L3", "Kalmunai north", "LK-3-1-02")?;
    person(&f2, ("Ravi", "Kumar"), 51, "missing", &v3, &unhcr)?;
    person(&f2, ("Fathima", "Rizvi"), 27, "found", &v4, &unhcr)?;
    let f2_camp = id("shl");
    f2.connection().execute(
        "INSERT INTO shelter(id, code, name, location, organisation, capacity, population) \
         VALUES (?1, 'S-101', 'Kalmunai mosque', ?2, ?3, 150, 60)",
        params![f2_camp, v3, unhcr],
    )?;
    // Later than field-1's count: this one wins at every instance.
    std::thread::sleep(std::time::Duration::from_millis(5));
    f2.connection().execute(
        "UPDATE shelter SET population = 135 WHERE code = 'S-001'",
        [],
    )?;
    st.say(
        "field-2, without talking to field-1, adds 2 villages, registers 2 people, opens a shelter \
         it also calls S-101, and counts 135 people in S-001 a little later.",
    )?;

    st.say("Both officers send their first bundle to HQ.")?;
    let f1_w1 = st.export(&mut f1, "hq", "field-1-week1.bundle")?;
    let f2_w1 = st.export(&mut f2, "hq", "field-2-week1.bundle")?;

    // --- Week 2: field-1 sends again before HQ got week 1 -------------------
    f1.connection().execute(
        "UPDATE person SET status = 'found', note = 'at S-101' WHERE id = ?1",
        params![amal],
    )?;
    let boy = person(&f1, ("Kasun", "Fernando"), 12, "missing", &v2, &redcross)?;
    f1.connection().execute(
        "INSERT INTO request VALUES (?1, ?2, 'drinking water (l)', 500, 'high', 'open')",
        params![id("req"), f1_camp],
    )?;
    st.say(
        "field-1, week 2: Amal Perera is found, a boy is reported missing, S-101 asks for water.",
    )?;
    let f1_w2 = st.export(&mut f1, "hq", "field-1-week2.bundle")?;

    // --- HQ imports: out of order, one twice --------------------------------
    st.say("HQ imports field-1's week-2 bundle first (the week-1 stick is late):")?;
    st.import(&mut hq, &f1_w2)?;
    st.say("then field-2's bundle, and the same file again by mistake:")?;
    st.import(&mut hq, &f2_w1)?;
    let again = st.import(&mut hq, &f2_w1)?;
    if again.applied != 0 {
        return Err(DemoError::Diverged(
            "re-importing a bundle applied changes".into(),
        ));
    }
    st.say("then field-1's week-1 bundle arrives:")?;
    st.import(&mut hq, &f1_w1)?;

    let conflicts = hq.conflicts(10)?;
    st.say(format!(
        "HQ looks at `fieldsync conflicts`: {} change(s) in quarantine, {} overwritten value(s).",
        conflicts.quarantined.len(),
        conflicts.overwritten_total
    ))?;
    for q in &conflicts.quarantined {
        st.detail(format!(
            "held: {} row {} from {}: {} ({})",
            q.table, q.key, q.sender, q.reason, q.detail
        ))?;
    }
    for o in &conflicts.overwritten {
        st.detail(format!(
            "overwritten: {}.{} = {} by {} lost to {} by {}",
            o.table, o.column, o.lost_value, o.lost_site, o.won_value, o.won_site
        ))?;
    }

    // The administrator resolves the clash: the S-101 HQ has (field-2's)
    // gets a code of its own, so field-1's fits.
    hq.connection().execute(
        "UPDATE shelter SET code = 'S-102' WHERE id = ?1",
        params![f2_camp],
    )?;
    let retried = hq.retry_quarantine()?;
    st.say(format!(
        "The HQ administrator gives field-2's shelter the code S-102 and retries: {} applied, {} still held.",
        retried.released, retried.held
    ))?;

    // --- HQ updates and inserts, then relays --------------------------------
    hq.connection().execute(
        "UPDATE shelter SET capacity = 400 WHERE id = ?1",
        params![school],
    )?;
    let new_district = location(&hq, Some(&country), "L1", "Northern", "LK-4")?;
    location(
        &hq,
        Some(&new_district),
        "L2",
        "Northern district 1",
        "LK-4-1",
    )?;
    st.say("HQ raises S-001's capacity to 400 and adds the Northern province with a district.")?;
    st.say("HQ sends each laptop what it lacks, including the other laptop's work (relayed with its origin):")?;
    let to_f1 = st.export(&mut hq, "field-1", "hq-to-field-1.bundle")?;
    let to_f2 = st.export(&mut hq, "field-2", "hq-to-field-2.bundle")?;
    st.import(&mut f1, &to_f1)?;
    st.import(&mut f2, &to_f2)?;

    // --- The laptops meet -----------------------------------------------------
    f2.connection().execute(
        "UPDATE person SET status = 'found', note = 'seen by field-2' WHERE id = ?1",
        params![boy],
    )?;
    st.say("Later the two officers meet; field-2 has found the missing boy and passes its changes straight to field-1:")?;
    let direct = st.export(&mut f2, "field-1", "field-2-to-field-1.bundle")?;
    st.import(&mut f1, &direct)?;

    // --- Final round until nothing moves --------------------------------------
    st.say("A last round through HQ:")?;
    for round in 0..3 {
        let a = st.export(&mut f1, "hq", &format!("field-1-final{round}.bundle"))?;
        let b = st.export(&mut f2, "hq", &format!("field-2-final{round}.bundle"))?;
        let ra = st.import(&mut hq, &a)?;
        let rb = st.import(&mut hq, &b)?;
        let c = st.export(&mut hq, "field-1", &format!("hq-final{round}-1.bundle"))?;
        let d = st.export(&mut hq, "field-2", &format!("hq-final{round}-2.bundle"))?;
        let rc = st.import(&mut f1, &c)?;
        let rd = st.import(&mut f2, &d)?;
        if ra.applied + rb.applied + rc.applied + rd.applied == 0 {
            break;
        }
    }

    // --- Check -----------------------------------------------------------------
    let instances = [("hq", &hq), ("field-1", &f1), ("field-2", &f2)];
    for table in TABLES {
        let reference = rows(&hq, table)?;
        for (name, db) in &instances[1..] {
            if rows(db, table)? != reference {
                return Err(DemoError::Diverged(format!(
                    "table {table} on {name} differs from hq"
                )));
            }
        }
    }
    for (name, db) in &instances {
        let dangling: i64 = db.connection().query_row(
            "SELECT count(*) FROM pragma_foreign_key_check",
            [],
            |r| r.get(0),
        )?;
        if dangling > 0 {
            return Err(DemoError::Diverged(format!(
                "{name} has {dangling} dangling reference(s)"
            )));
        }
        let held = crate::quarantine::held_count(db.connection())?;
        if held > 0 {
            return Err(DemoError::Diverged(format!(
                "{name} still holds {held} change(s) in quarantine"
            )));
        }
    }
    let mut counts = Vec::new();
    writeln!(
        st.out,
        "\nAll three databases hold the same data, with no dangling references:\n"
    )?;
    writeln!(
        st.out,
        "    {:<14} {:>6} {:>8} {:>8}",
        "table", "hq", "field-1", "field-2"
    )?;
    for table in TABLES {
        let n: Vec<u64> = instances
            .iter()
            .map(|(_, db)| count(db, table))
            .collect::<Result<_, _>>()?;
        writeln!(
            st.out,
            "    {:<14} {:>6} {:>8} {:>8}",
            table, n[0], n[1], n[2]
        )?;
        counts.push((table.to_owned(), n[0]));
    }
    let mut overwritten = Vec::new();
    for (name, db) in [("hq", &mut hq), ("field-1", &mut f1), ("field-2", &mut f2)] {
        overwritten.push((name.to_owned(), db.conflicts(0)?.overwritten_total));
    }
    writeln!(
        st.out,
        "\nThe databases and bundles are in {}. Try:\n    fieldsync status --db {}\n    fieldsync conflicts --db {}",
        dir.display(),
        dir.join("hq.db").display(),
        dir.join("hq.db").display()
    )?;
    Ok(DemoReport {
        dir: dir.to_owned(),
        counts,
        quarantined: st.quarantined,
        overwritten,
    })
}
