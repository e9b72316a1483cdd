//! `fieldsync demo`: the seed scenario (Sahana's synchronization module) in
//! one command, on real database files, printing each step in plain words.
//!
//! The schema has Sahana Eden's shape (`examples/eden.sql`): every table is
//! numbered by the database (`id INTEGER PRIMARY KEY AUTOINCREMENT`) and
//! carries a `uuid`, and references are integer ids. HQ enters locations and
//! default data, tracks every table with `--identity uuid` and exports
//! everything; two field laptops are set up from that one file, so their id
//! counters start equal and each gives its new villages, people and shelters
//! the very ids the other gives to different ones. Field officers add
//! villages, register people, update shelter populations (both edit the same
//! shelter) and send bundles back again and again; HQ imports them (one
//! twice, one out of order), resolves a shelter-code clash the quarantine
//! caught, updates and adds records, and relays everything; the laptops
//! exchange directly too.
//!
//! At the end every instance must hold the same rows compared by uuid (by
//! content for the keyless option table), every reference must name the
//! same parent row (by its uuid) everywhere, with no dangling reference, an
//! empty quarantine and `fieldsync check` clean, or the demo fails. It then
//! prints how the same records and references carry different ids on each
//! instance.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};

use fieldsync::{Error, ExportTarget, ImportReport, Instance, Selection, TrackOptions, Value};

/// The schema the demo uses, shipped as plain SQL for people to read.
const SCHEMA: &str = include_str!("../../../examples/eden.sql");

/// Tables in the order the counts are printed.
const TABLES: [&str; 6] = [
    "gis_location",
    "org_organisation",
    "pr_person",
    "cr_shelter",
    "req_req",
    "field_options",
];

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
    /// The story did not unfold as written (the laptops' new rows did not
    /// share ids, a table was not tracked): the demo shows nothing then.
    #[error("the demo did not go as planned: {0}; please report it")]
    Premise(String),
}

impl From<rusqlite::Error> for DemoError {
    fn from(e: rusqlite::Error) -> Self {
        DemoError::Engine(e.into())
    }
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
        self.detail(line)?;
        Ok(r)
    }
}

/// A record as the database that created it numbers it, and the uuid it
/// has everywhere.
#[derive(Debug, Clone)]
struct Rec {
    id: i64,
    uuid: String,
}

/// A row the demo's last table shows, and the reference it follows.
struct Shown<'a> {
    table: &'a str,
    label: &'a str,
    made_on: &'a str,
    rec: &'a Rec,
    /// Column, parent table, the parent's label, the parent row it must
    /// point at.
    link: Option<(&'a str, &'a str, &'a str, &'a Rec)>,
}

impl<'a> Shown<'a> {
    fn new(table: &'a str, label: &'a str, made_on: &'a str, rec: &'a Rec) -> Self {
        Shown {
            table,
            label,
            made_on,
            rec,
            link: None,
        }
    }

    fn points(mut self, column: &'a str, parent: &'a str, label: &'a str, to: &'a Rec) -> Self {
        self.link = Some((column, parent, label, to));
        self
    }
}

/// Run an `INSERT` the way the app does: the database numbers the row and
/// the schema's DEFAULT gives it a uuid.
fn insert(db: &Instance, sql: &str, p: impl rusqlite::Params) -> Result<Rec, DemoError> {
    Ok(db
        .connection()
        .query_row(&format!("{sql} RETURNING id, uuid"), p, |r| {
            Ok(Rec {
                id: r.get(0)?,
                uuid: r.get(1)?,
            })
        })?)
}

/// Add a location under the location numbered `parent` in `db`.
fn location(
    db: &Instance,
    parent: Option<i64>,
    level: &str,
    name: &str,
    code: &str,
) -> Result<Rec, DemoError> {
    insert(
        db,
        "INSERT INTO gis_location(name, level, code, parent) VALUES (?1, ?2, ?3, ?4)",
        params![name, level, code, parent],
    )
}

fn person(
    db: &Instance,
    name: (&str, &str),
    age: i64,
    status: &str,
    location_id: i64,
    organisation_id: i64,
) -> Result<Rec, DemoError> {
    insert(
        db,
        "INSERT INTO pr_person(first_name, last_name, age, missing_status, location_id, organisation_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![name.0, name.1, age, status, location_id, organisation_id],
    )
}

/// Open a shelter: code, name, location, organisation, capacity, population.
fn shelter(
    db: &Instance,
    code: &str,
    name: &str,
    place: (i64, i64),
    counts: (i64, i64),
) -> Result<Rec, DemoError> {
    insert(
        db,
        "INSERT INTO cr_shelter(code, name, location_id, organisation_id, capacity, population) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![code, name, place.0, place.1, counts.0, counts.1],
    )
}

/// The id `db` gives the record known everywhere as `uuid` (what the app
/// finds when an officer picks the record from a list).
fn id_of(db: &Instance, table: &str, uuid: &str) -> Result<i64, DemoError> {
    let id = db
        .connection()
        .query_row(
            &format!("SELECT id FROM {} WHERE uuid = ?1", quote_ident(table)),
            [uuid],
            |r| r.get(0),
        )
        .optional()?;
    match id {
        Some(id) => Ok(id),
        None => Err(DemoError::Diverged(format!(
            "{} has no {table} row with uuid {uuid}",
            db.name()?
        ))),
    }
}

/// The next id SQLite's AUTOINCREMENT gives in `table` of `db`.
fn next_id(db: &Instance, table: &str) -> Result<i64, DemoError> {
    let seq: Option<i64> = db
        .connection()
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = ?1",
            [table],
            |r| r.get(0),
        )
        .optional()?;
    Ok(seq.unwrap_or(0) + 1)
}

/// A uuid, shortened for printing.
fn short(uuid: &str) -> String {
    let hex = uuid.strip_prefix("urn:uuid:").unwrap_or(uuid);
    format!("{}…", hex.get(..8).unwrap_or(hex))
}

fn count(db: &Instance, table: &str) -> Result<u64, DemoError> {
    let n: i64 = db.connection().query_row(
        &format!("SELECT count(*) FROM {}", quote_ident(table)),
        [],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

/// Every row of a table as it means the same on every instance, in a fixed
/// order: without its `id`, each reference replaced by the uuid of the row
/// it points at (or left as is if the parent table has no uuid). A table
/// without a uuid column is compared by its whole content.
fn content(db: &Instance, table: &str) -> Result<Vec<Vec<Value>>, DemoError> {
    let conn = db.connection();
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?
        .query_map([table], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let has_uuid = |t: &str| -> Result<bool, DemoError> {
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM pragma_table_info(?1) WHERE name = 'uuid'",
            [t],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    };
    let keyed = has_uuid(table)?;
    // (from, parent table, to) of every single-column reference.
    let refs: Vec<(String, String, Option<String>)> = conn
        .prepare(r#"SELECT "from", "table", "to" FROM pragma_foreign_key_list(?1)"#)?
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut exprs = Vec::new();
    for col in &columns {
        if keyed && col == "id" {
            continue;
        }
        let reference = refs.iter().find(|(from, ..)| from == col);
        match reference {
            Some((from, parent, to)) if has_uuid(parent)? => exprs.push(format!(
                "(SELECT p.uuid FROM {} AS p WHERE p.{} = c.{})",
                quote_ident(parent),
                // No column named: the parent's primary key, `id` here.
                quote_ident(to.as_deref().unwrap_or("id")),
                quote_ident(from)
            )),
            _ => exprs.push(format!("c.{}", quote_ident(col))),
        }
    }
    let order = (1..=exprs.len())
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {} FROM {} AS c ORDER BY {order}",
        exprs.join(", "),
        quote_ident(table)
    );
    let mut stmt = conn.prepare(&sql)?;
    let n = stmt.column_count();
    let rows = stmt
        .query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())?
        .collect::<rusqlite::Result<Vec<Vec<Value>>>>()?;
    Ok(rows)
}

/// `uuid → id` of every row of a table.
fn ids(db: &Instance, table: &str) -> Result<BTreeMap<String, i64>, DemoError> {
    Ok(db
        .connection()
        .prepare(&format!("SELECT uuid, id FROM {}", quote_ident(table)))?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?)
}

/// The value of reference `column` of the row `uuid` in `table` of `db`,
/// and the uuid of the row of `parent` it points at there.
fn reference(
    db: &Instance,
    table: &str,
    column: &str,
    parent: &str,
    uuid: &str,
) -> Result<(i64, Option<String>), DemoError> {
    let sql = format!(
        "SELECT c.{col}, p.uuid FROM {t} AS c LEFT JOIN {p} AS p ON p.id = c.{col} WHERE c.uuid = ?1",
        col = quote_ident(column),
        t = quote_ident(table),
        p = quote_ident(parent)
    );
    let found = db
        .connection()
        .query_row(&sql, [uuid], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match found {
        Some(v) => Ok(v),
        None => Err(DemoError::Diverged(format!(
            "{} has no {table} row with uuid {uuid}",
            db.name()?
        ))),
    }
}

/// Play the scenario in `dir` (which must not hold earlier demo files),
/// narrating to `out`.
pub fn run(dir: &Path, out: &mut dyn Write) -> Result<(), DemoError> {
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
    let mut provinces = Vec::new();
    let mut districts = Vec::new();
    for (p, province) in ["Western", "Southern", "Eastern"].iter().enumerate() {
        let prov = location(
            &hq,
            Some(country.id),
            "L1",
            province,
            &format!("LK-{}", p + 1),
        )?;
        for d in 1..=2 {
            districts.push(location(
                &hq,
                Some(prov.id),
                "L2",
                &format!("{province} district {d}"),
                &format!("LK-{}-{d}", p + 1),
            )?);
        }
        provinces.push(prov);
    }
    let redcross = insert(
        &hq,
        "INSERT INTO org_organisation(name, acronym, organisation_type) \
         VALUES ('Red Cross', 'RC', 'ngo')",
        [],
    )?;
    let unhcr = insert(
        &hq,
        "INSERT INTO org_organisation(name, acronym, organisation_type) \
         VALUES ('UN Refugee Agency', 'UNHCR', 'un')",
        [],
    )?;
    let galle = &districts[2];
    let school = shelter(
        &hq,
        "S-001",
        "Galle school",
        (galle.id, redcross.id),
        (300, 40),
    )?;
    let tracked = hq.track_with(
        &Selection::All,
        &TrackOptions {
            identity: Some("uuid".into()),
            ..TrackOptions::default()
        },
    )?;
    if !tracked.skipped.is_empty() || tracked.tracked.len() != TABLES.len() {
        return Err(DemoError::Premise(format!(
            "`track --all --identity uuid` tracked {:?} and skipped {:?}",
            tracked.tracked, tracked.skipped
        )));
    }
    st.say(
        "HQ creates its database (hq.db, schema in examples/eden.sql, with the form options) and \
         enters the defaults: 1 country, 3 provinces, 6 districts, 2 organisations, the shelter S-001. \
         Every table but field_options is numbered by `id INTEGER PRIMARY KEY AUTOINCREMENT` and has a \
         uuid; HQ tracks them all with `fieldsync track --all --identity uuid`:",
    )?;
    for t in &tracked.identities {
        st.detail(format!("{}: rows identified {}", t.table, t.by))?;
    }

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
            _ => return Err(DemoError::Premise("the field instances are missing".into())),
        }
    };
    let mut counters = Vec::new();
    for table in ["gis_location", "pr_person", "cr_shelter"] {
        let (a, b) = (next_id(&f1, table)?, next_id(&f2, table)?);
        if a != b {
            return Err(DemoError::Premise(format!(
                "the laptops' next {table} ids differ ({a} and {b}) right after setup"
            )));
        }
        counters.push(format!("{table} {a}"));
    }
    st.detail(format!(
        "Both laptops will number their next rows alike: {}.",
        counters.join(", ")
    ))?;

    // --- Week 1 in the field ------------------------------------------------
    // Each officer picks district and organisation from the app's lists,
    // which show the laptop's own ids.
    let galle_f1 = id_of(&f1, "gis_location", &galle.uuid)?;
    let rc_f1 = id_of(&f1, "org_organisation", &redcross.uuid)?;
    let unawatuna = location(&f1, Some(galle_f1), "L3", "Unawatuna", "LK-2-1-01")?;
    let habaraduwa = location(&f1, Some(galle_f1), "L3", "Habaraduwa", "LK-2-1-02")?;
    let amal = person(&f1, ("Amal", "Perera"), 34, "missing", unawatuna.id, rc_f1)?;
    let nimali = person(&f1, ("Nimali", "Silva"), 8, "missing", habaraduwa.id, rc_f1)?;
    let temple = shelter(
        &f1,
        "S-101",
        "Unawatuna temple",
        (unawatuna.id, rc_f1),
        (80, 25),
    )?;
    f1.connection().execute(
        "UPDATE cr_shelter SET population = 120, modified_on = CURRENT_TIMESTAMP WHERE code = 'S-001'",
        [],
    )?;
    st.say(format!(
        "field-1 adds the villages Unawatuna (gis_location {}) and Habaraduwa ({}) to Galle district, \
         registers Amal Perera (pr_person {}, location_id {}) and Nimali Silva ({}, location_id {}) as missing, \
         opens shelter S-101 (cr_shelter {}) and counts 120 people in S-001.",
        unawatuna.id, habaraduwa.id, amal.id, unawatuna.id, nimali.id, habaraduwa.id, temple.id
    ))?;

    let eastern_f2 = id_of(&f2, "gis_location", &provinces[2].uuid)?;
    let unhcr_f2 = id_of(&f2, "org_organisation", &unhcr.uuid)?;
    let ampara = location(&f2, Some(eastern_f2), "L2", "Ampara", "LK-3-3")?;
    let kalmunai = location(&f2, Some(ampara.id), "L3", "Kalmunai", "LK-3-3-01")?;
    let ravi = person(&f2, ("Ravi", "Kumar"), 51, "missing", ampara.id, unhcr_f2)?;
    let fathima = person(
        &f2,
        ("Fathima", "Rizvi"),
        27,
        "found",
        kalmunai.id,
        unhcr_f2,
    )?;
    let mosque = shelter(
        &f2,
        "S-101",
        "Kalmunai mosque",
        (kalmunai.id, unhcr_f2),
        (150, 60),
    )?;
    // Later than field-1's count: this one wins at every instance.
    std::thread::sleep(std::time::Duration::from_millis(5));
    f2.connection().execute(
        "UPDATE cr_shelter SET population = 135, modified_on = CURRENT_TIMESTAMP WHERE code = 'S-001'",
        [],
    )?;
    st.say(format!(
        "field-2, without talking to field-1, adds the district Ampara (gis_location {}) with the village \
         Kalmunai ({}, parent {}), registers Ravi Kumar (pr_person {}, location_id {}) and Fathima Rizvi \
         ({}, location_id {}), opens a shelter it also calls S-101 (cr_shelter {}), and counts 135 people \
         in S-001 a little later.",
        ampara.id, kalmunai.id, ampara.id, ravi.id, ampara.id, fathima.id, kalmunai.id, mosque.id
    ))?;
    let pairs = [
        ("gis_location", &unawatuna, &ampara),
        ("gis_location", &habaraduwa, &kalmunai),
        ("pr_person", &amal, &ravi),
        ("pr_person", &nimali, &fathima),
        ("cr_shelter", &temple, &mosque),
    ];
    for (table, a, b) in pairs {
        if a.id != b.id {
            return Err(DemoError::Premise(format!(
                "field-1 and field-2 numbered their new {table} rows {} and {}, not alike",
                a.id, b.id
            )));
        }
    }
    st.detail(format!(
        "The same ids now name different records: gis_location {} is Unawatuna on field-1 and Ampara on \
         field-2, pr_person {} is Amal Perera on one and Ravi Kumar on the other, cr_shelter {} is two \
         shelters. Their uuids differ ({} and {} for the two shelters); fieldsync knows rows by them.",
        unawatuna.id,
        amal.id,
        temple.id,
        short(&temple.uuid),
        short(&mosque.uuid)
    ))?;

    st.say("Both officers send their first bundle to HQ.")?;
    let f1_w1 = st.export(&mut f1, "hq", "field-1-week1.bundle")?;
    let f2_w1 = st.export(&mut f2, "hq", "field-2-week1.bundle")?;

    // --- Week 2: field-1 sends again before HQ got week 1 -------------------
    f1.connection().execute(
        "UPDATE pr_person SET missing_status = 'found', comments = 'at S-101', \
         modified_on = CURRENT_TIMESTAMP WHERE id = ?1",
        params![amal.id],
    )?;
    let boy = person(
        &f1,
        ("Kasun", "Fernando"),
        12,
        "missing",
        habaraduwa.id,
        rc_f1,
    )?;
    let water = insert(
        &f1,
        "INSERT INTO req_req(shelter_id, item, quantity, priority) \
         VALUES (?1, 'drinking water (l)', 500, 'high')",
        params![temple.id],
    )?;
    st.say(format!(
        "field-1, week 2: Amal Perera is found, a boy is reported missing in Habaraduwa (pr_person {}), \
         S-101 asks for water (req_req {}, shelter_id {}).",
        boy.id, water.id, temple.id
    ))?;
    let f1_w2 = st.export(&mut f1, "hq", "field-1-week2.bundle")?;

    // --- HQ imports: out of order, one twice --------------------------------
    st.say("HQ imports field-1's week-2 bundle first (the week-1 stick is late):")?;
    st.import(&mut hq, &f1_w2)?;
    for q in hq.conflicts(0)?.quarantined {
        st.detail(format!(
            "held: {} row {}: {} ({})",
            q.table, q.key, q.reason, q.detail
        ))?;
    }
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
    // gets a code of its own, so field-1's fits. HQ finds it by its uuid:
    // HQ's id for it is not field-2's.
    let mosque_hq = id_of(&hq, "cr_shelter", &mosque.uuid)?;
    hq.connection().execute(
        "UPDATE cr_shelter SET code = 'S-102', modified_on = CURRENT_TIMESTAMP WHERE id = ?1",
        params![mosque_hq],
    )?;
    let retried = hq.retry_quarantine()?;
    st.say(format!(
        "The HQ administrator gives field-2's shelter (cr_shelter {mosque_hq} at HQ, {} on field-2) the code \
         S-102 and retries: {} applied, {} still held.",
        mosque.id, retried.released, retried.held
    ))?;

    // --- HQ updates and inserts, then relays --------------------------------
    hq.connection().execute(
        "UPDATE cr_shelter SET capacity = 400, modified_on = CURRENT_TIMESTAMP WHERE id = ?1",
        params![school.id],
    )?;
    let northern = location(&hq, Some(country.id), "L1", "Northern", "LK-4")?;
    let jaffna = location(&hq, Some(northern.id), "L2", "Jaffna", "LK-4-1")?;
    st.say(format!(
        "HQ raises S-001's capacity to 400 and adds the Northern province (gis_location {}) with the district \
         Jaffna ({}).",
        northern.id, jaffna.id
    ))?;
    st.say("HQ sends each laptop what it lacks, including the other laptop's work (relayed with its origin):")?;
    let to_f1 = st.export(&mut hq, "field-1", "hq-to-field-1.bundle")?;
    let to_f2 = st.export(&mut hq, "field-2", "hq-to-field-2.bundle")?;
    st.import(&mut f1, &to_f1)?;
    st.import(&mut f2, &to_f2)?;

    // --- The laptops meet -----------------------------------------------------
    let boy_f2 = id_of(&f2, "pr_person", &boy.uuid)?;
    f2.connection().execute(
        "UPDATE pr_person SET missing_status = 'found', comments = 'seen by field-2', \
         modified_on = CURRENT_TIMESTAMP WHERE id = ?1",
        params![boy_f2],
    )?;
    st.say(format!(
        "Later the two officers meet; field-2 has found the missing boy (pr_person {boy_f2} on field-2, {} on \
         field-1) and passes its changes straight to field-1:",
        boy.id
    ))?;
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
        let reference = content(&hq, table)?;
        for (name, db) in &instances[1..] {
            if content(db, table)? != reference {
                return Err(DemoError::Diverged(format!(
                    "table {table} on {name} differs from hq (rows compared by uuid, references by the uuid \
                     of the row they point at)"
                )));
            }
        }
    }
    // `conflicts` needs the instance to itself.
    for (name, db) in [("hq", &mut hq), ("field-1", &mut f1), ("field-2", &mut f2)] {
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
        let held = db.conflicts(0)?.quarantined.len();
        if held > 0 {
            return Err(DemoError::Diverged(format!(
                "{name} still holds {held} change(s) in quarantine"
            )));
        }
    }
    let instances = [("hq", &hq), ("field-1", &f1), ("field-2", &f2)];
    writeln!(
        st.out,
        "\nAll three databases hold the same rows (compared by uuid), every reference points at the same \
         row everywhere, none dangles, and no quarantine holds anything:\n"
    )?;
    writeln!(
        st.out,
        "    {:<18} {:>6} {:>8} {:>8}",
        "table", "hq", "field-1", "field-2"
    )?;
    for table in TABLES {
        let n: Vec<u64> = instances
            .iter()
            .map(|(_, db)| count(db, table))
            .collect::<Result<_, _>>()?;
        writeln!(
            st.out,
            "    {:<18} {:>6} {:>8} {:>8}",
            table, n[0], n[1], n[2]
        )?;
    }

    // --- The point: ids differ, uuids and references agree ---------------------
    let (mut renumbered, mut with_uuid) = (0u64, 0u64);
    for table in TABLES {
        let maps = instances
            .iter()
            .map(|(_, db)| {
                let has_uuid: i64 = db.connection().query_row(
                    "SELECT count(*) FROM pragma_table_info(?1) WHERE name = 'uuid'",
                    [table],
                    |r| r.get(0),
                )?;
                if has_uuid > 0 {
                    ids(db, table)
                } else {
                    Ok(BTreeMap::new())
                }
            })
            .collect::<Result<Vec<_>, DemoError>>()?;
        for (uuid, id) in &maps[0] {
            with_uuid += 1;
            if maps[1..].iter().any(|m| m.get(uuid) != Some(id)) {
                renumbered += 1;
            }
        }
    }
    if renumbered == 0 {
        return Err(DemoError::Premise(
            "every row ended with the same id on every instance".into(),
        ));
    }
    writeln!(
        st.out,
        "\n{renumbered} of the {with_uuid} rows with a uuid have different ids on different instances. \
         Some of them, and where their references point:\n"
    )?;
    writeln!(
        st.out,
        "    {:<28} {:<8} {:<10} {:>4} {:>8} {:>8}",
        "row", "made on", "uuid", "hq", "field-1", "field-2"
    )?;
    let shown = [
        Shown::new("gis_location", "Unawatuna", "field-1", &unawatuna).points(
            "parent",
            "gis_location",
            "Galle district",
            galle,
        ),
        Shown::new("gis_location", "Ampara", "field-2", &ampara).points(
            "parent",
            "gis_location",
            "Eastern",
            &provinces[2],
        ),
        Shown::new("gis_location", "Kalmunai", "field-2", &kalmunai).points(
            "parent",
            "gis_location",
            "Ampara",
            &ampara,
        ),
        Shown::new("gis_location", "Jaffna", "hq", &jaffna).points(
            "parent",
            "gis_location",
            "Northern",
            &northern,
        ),
        Shown::new("pr_person", "Amal Perera", "field-1", &amal).points(
            "location_id",
            "gis_location",
            "Unawatuna",
            &unawatuna,
        ),
        Shown::new("pr_person", "Ravi Kumar", "field-2", &ravi).points(
            "location_id",
            "gis_location",
            "Ampara",
            &ampara,
        ),
        Shown::new("pr_person", "Kasun Fernando", "field-1", &boy).points(
            "location_id",
            "gis_location",
            "Habaraduwa",
            &habaraduwa,
        ),
        Shown::new("cr_shelter", "S-101", "field-1", &temple).points(
            "location_id",
            "gis_location",
            "Unawatuna",
            &unawatuna,
        ),
        Shown::new("cr_shelter", "S-102", "field-2", &mosque).points(
            "location_id",
            "gis_location",
            "Kalmunai",
            &kalmunai,
        ),
        Shown::new("req_req", "water", "field-1", &water).points(
            "shelter_id",
            "cr_shelter",
            "S-101",
            &temple,
        ),
    ];
    for row in &shown {
        let row_ids = instances
            .iter()
            .map(|(_, db)| id_of(db, row.table, &row.rec.uuid))
            .collect::<Result<Vec<_>, _>>()?;
        writeln!(
            st.out,
            "    {:<28} {:<8} {:<10} {:>4} {:>8} {:>8}",
            format!("{} {}", row.table, row.label),
            row.made_on,
            short(&row.rec.uuid),
            row_ids[0],
            row_ids[1],
            row_ids[2]
        )?;
        let Some((column, parent, parent_label, target)) = row.link else {
            continue;
        };
        let mut values = Vec::new();
        for (name, db) in &instances {
            let (value, points_at) = reference(db, row.table, column, parent, &row.rec.uuid)?;
            if points_at.as_deref() != Some(target.uuid.as_str()) {
                return Err(DemoError::Diverged(format!(
                    "on {name}, {} {} has {column} = {value}, which is not {parent_label} ({})",
                    row.table, row.label, target.uuid
                )));
            }
            values.push(value);
        }
        writeln!(
            st.out,
            "      .{:<26} {:<8} {:<10} {:>4} {:>8} {:>8}",
            format!("{column} → {parent_label}"),
            "",
            short(&target.uuid),
            values[0],
            values[1],
            values[2]
        )?;
    }

    writeln!(
        st.out,
        "\nEach row and each reference holds its own instance's numbers, and names the same row (by uuid) \
         everywhere: fieldsync sent identities, not ids."
    )?;

    for (name, db) in [("hq", &mut hq), ("field-1", &mut f1), ("field-2", &mut f2)] {
        let check = db.check()?;
        if let Some(problem) = check.problems.first() {
            return Err(DemoError::Diverged(format!(
                "`fieldsync check` fails on {name}: {}",
                problem.message
            )));
        }
    }
    writeln!(
        st.out,
        "\nThe databases and bundles are in {}. Try:\n    fieldsync status --db {}\n    fieldsync conflicts --db {}",
        dir.display(),
        dir.join("hq.db").display(),
        dir.join("hq.db").display()
    )?;
    Ok(())
}

/// An SQL identifier, quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
