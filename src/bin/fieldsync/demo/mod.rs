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
//!
//! [`run`] reads as the story's table of contents: [`scenes`] plays each
//! scene, [`story`] narrates and exchanges the bundles, [`records`] enters
//! and finds rows as the app does, [`verify`] checks and shows the end. It
//! uses only the library's public face (`fieldsync::{Instance, …}`) and
//! the app's own SQL.

mod records;
mod scenes;
mod story;
mod verify;

use std::io::Write;
use std::path::{Path, PathBuf};

use fieldsync::{Error, Instance};

use scenes::Cast;
use story::Story;

/// The schema the demo uses, shipped as plain SQL for people to read.
const SCHEMA: &str = include_str!("../../../../examples/eden.sql");

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

/// The story's three instances.
struct Instances {
    hq: Instance,
    f1: Instance,
    f2: Instance,
}

impl Instances {
    fn named(&self) -> [(&'static str, &Instance); 3] {
        [
            ("hq", &self.hq),
            ("field-1", &self.f1),
            ("field-2", &self.f2),
        ]
    }

    fn named_mut(&mut self) -> [(&'static str, &mut Instance); 3] {
        [
            ("hq", &mut self.hq),
            ("field-1", &mut self.f1),
            ("field-2", &mut self.f2),
        ]
    }
}

/// Play the scenario in `dir` (which must not hold earlier demo files),
/// narrating to `out`.
pub fn run(dir: &Path, out: &mut dyn Write) -> Result<(), DemoError> {
    let mut st = Story::begin(dir, out)?;
    let (mut hq, defaults) = scenes::hq_enters_defaults(&mut st)?;
    let (mut f1, mut f2) = scenes::laptops_are_set_up(&mut st, &mut hq)?;
    let field_1 = scenes::field_1_week_1(&mut st, &f1, &defaults)?;
    let field_2 = scenes::field_2_week_1(&mut st, &f2, &defaults)?;
    scenes::same_ids_name_different_records(&mut st, &field_1, &field_2)?;

    st.say("Both officers send their first bundle to HQ.")?;
    let f1_w1 = st.export(&mut f1, "hq", "field-1-week1.bundle")?;
    let f2_w1 = st.export(&mut f2, "hq", "field-2-week1.bundle")?;
    let week_2 = scenes::field_1_week_2(&mut st, &mut f1, &field_1)?;
    scenes::hq_imports(&mut st, &mut hq, [&week_2.bundle, &f2_w1, &f1_w1])?;
    scenes::hq_resolves_the_clash(&mut st, &mut hq, &field_2.mosque)?;

    let mut all = Instances { hq, f1, f2 };
    let north = scenes::hq_relays(&mut st, &mut all, &defaults)?;
    scenes::laptops_meet(&mut st, &mut all, &week_2.boy)?;
    scenes::last_round(&mut st, &mut all)?;

    verify::same_rows_everywhere(&mut st, &mut all)?;
    verify::ids_differ(&mut st, &all)?;
    let cast = Cast {
        defaults,
        field_1,
        field_2,
        week_2,
        north,
    };
    verify::show_rows(&mut st, &all, &cast)?;
    verify::checks_pass(&mut st, &mut all, dir)
}
