//! The demo's story, one function per scene: HQ enters the defaults, the
//! laptops are set up from one full export, the officers work and send
//! bundles, HQ imports them out of order, resolves a clash and relays, the
//! laptops meet, and a last round runs until nothing moves. Whether the
//! instances ended alike is [`super::verify`]'s part.

use std::path::PathBuf;

use fieldsync::{ExportTarget, Instance, Selection, TrackOptions};
use rusqlite::params;

use super::records::{Rec, id_of, insert, location, next_id, person, shelter, short};
use super::story::Story;
use super::{DemoError, Instances, SCHEMA, TABLES};

/// What HQ enters before anyone goes to the field, as HQ numbers it.
pub(super) struct Defaults {
    pub(super) country: Rec,
    /// Western, Southern, Eastern.
    pub(super) provinces: Vec<Rec>,
    /// Two per province; the third is Galle.
    pub(super) districts: Vec<Rec>,
    pub(super) redcross: Rec,
    pub(super) unhcr: Rec,
    pub(super) school: Rec,
}

impl Defaults {
    pub(super) fn galle(&self) -> &Rec {
        &self.districts[2]
    }
}

/// What field-1 enters in week 1, as field-1 numbers it.
pub(super) struct Field1 {
    pub(super) unawatuna: Rec,
    pub(super) habaraduwa: Rec,
    pub(super) amal: Rec,
    pub(super) nimali: Rec,
    pub(super) temple: Rec,
    /// field-1's id of the Red Cross.
    pub(super) redcross: i64,
}

/// What field-2 enters in week 1, as field-2 numbers it.
pub(super) struct Field2 {
    pub(super) ampara: Rec,
    pub(super) kalmunai: Rec,
    pub(super) ravi: Rec,
    pub(super) fathima: Rec,
    pub(super) mosque: Rec,
}

/// What field-1 enters in week 2, and the bundle it sends.
pub(super) struct Week2 {
    pub(super) boy: Rec,
    pub(super) water: Rec,
    pub(super) bundle: PathBuf,
}

/// The province HQ adds later, and its district.
pub(super) struct North {
    pub(super) northern: Rec,
    pub(super) jaffna: Rec,
}

/// Everyone the last table of the demo shows.
pub(super) struct Cast {
    pub(super) defaults: Defaults,
    pub(super) field_1: Field1,
    pub(super) field_2: Field2,
    pub(super) week_2: Week2,
    pub(super) north: North,
}

/// HQ creates its database, enters the defaults and tracks every table.
pub(super) fn hq_enters_defaults(st: &mut Story) -> Result<(Instance, Defaults), DemoError> {
    let (mut hq, _) = Instance::init(st.file("hq.db"), "hq")?;
    hq.connection().execute_batch(SCHEMA)?;
    hq.connection().execute_batch("PRAGMA foreign_keys = ON")?;
    let defaults = enter_defaults(&hq)?;
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
    Ok((hq, defaults))
}

fn enter_defaults(hq: &Instance) -> Result<Defaults, DemoError> {
    let country = location(hq, None, "L0", "Sri Lanka", "LK")?;
    let mut provinces = Vec::new();
    let mut districts = Vec::new();
    for (p, province) in ["Western", "Southern", "Eastern"].iter().enumerate() {
        let prov = location(
            hq,
            Some(country.id),
            "L1",
            province,
            &format!("LK-{}", p + 1),
        )?;
        for d in 1..=2 {
            districts.push(location(
                hq,
                Some(prov.id),
                "L2",
                &format!("{province} district {d}"),
                &format!("LK-{}-{d}", p + 1),
            )?);
        }
        provinces.push(prov);
    }
    let redcross = insert(
        hq,
        "INSERT INTO org_organisation(name, acronym, organisation_type) \
         VALUES ('Red Cross', 'RC', 'ngo')",
        [],
    )?;
    let unhcr = insert(
        hq,
        "INSERT INTO org_organisation(name, acronym, organisation_type) \
         VALUES ('UN Refugee Agency', 'UNHCR', 'un')",
        [],
    )?;
    let galle = &districts[2];
    let school = shelter(
        hq,
        "S-001",
        "Galle school",
        (galle.id, redcross.id),
        (300, 40),
    )?;
    Ok(Defaults {
        country,
        provinces,
        districts,
        redcross,
        unhcr,
        school,
    })
}

/// HQ exports everything; both laptops are set up from that one file, so
/// their id counters start equal.
pub(super) fn laptops_are_set_up(
    st: &mut Story,
    hq: &mut Instance,
) -> Result<(Instance, Instance), DemoError> {
    let full = st.file("hq-full.bundle");
    // Named for the laptops, so HQ's first bundle to each carries only
    // what changed after it, even before HQ hears from them.
    let target = ExportTarget::FullFor {
        peers: vec!["field-1".into(), "field-2".into()],
    };
    let r = hq.export_to_file(&target, &full)?;
    st.say(format!(
        "HQ exports everything to hq-full.bundle for field-1 and field-2 ({} rows, {} bytes, schema included). \
         A data carrier takes it to the field on a USB stick.",
        r.changes, r.bytes
    ))?;
    let mut set_up = |name: &str| -> Result<Instance, DemoError> {
        // The officer checks HQ's fingerprint over the phone, then HQ
        // enrols the laptop with the key its officer reads back.
        let opts = fieldsync::SetupOptions {
            expect_key: Some(hq.key()?.signing_fingerprint),
            ..Default::default()
        };
        let (f, report) = Instance::init_from(
            st.file(&format!("{name}.db")),
            name,
            std::fs::File::open(&full)?,
            &full,
            &opts,
        )?;
        let key = f.key()?;
        hq.enrol(
            name,
            &key.public_key,
            Some(&key.recipient),
            Some(&key.site_id),
        )?;
        f.connection().execute_batch("PRAGMA foreign_keys = ON")?;
        st.say(format!(
            "{name} is set up from hq-full.bundle alone: {} tables created, {} rows loaded, HQ known as a peer.",
            report.tables.len(),
            report.import.applied
        ))?;
        Ok(f)
    };
    let (f1, f2) = (set_up("field-1")?, set_up("field-2")?);
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
    Ok((f1, f2))
}

/// Week 1 on field-1. The officer picks district and organisation from
/// the app's lists, which show the laptop's own ids.
pub(super) fn field_1_week_1(
    st: &mut Story,
    f1: &Instance,
    d: &Defaults,
) -> Result<Field1, DemoError> {
    let galle_f1 = id_of(f1, "gis_location", &d.galle().uuid)?;
    let rc_f1 = id_of(f1, "org_organisation", &d.redcross.uuid)?;
    let unawatuna = location(f1, Some(galle_f1), "L3", "Unawatuna", "LK-2-1-01")?;
    let habaraduwa = location(f1, Some(galle_f1), "L3", "Habaraduwa", "LK-2-1-02")?;
    let amal = person(f1, ("Amal", "Perera"), 34, "missing", unawatuna.id, rc_f1)?;
    let nimali = person(f1, ("Nimali", "Silva"), 8, "missing", habaraduwa.id, rc_f1)?;
    let temple = shelter(
        f1,
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
    Ok(Field1 {
        unawatuna,
        habaraduwa,
        amal,
        nimali,
        temple,
        redcross: rc_f1,
    })
}

/// Week 1 on field-2, without talking to field-1: its new rows get the
/// very ids field-1 gave to others.
pub(super) fn field_2_week_1(
    st: &mut Story,
    f2: &Instance,
    d: &Defaults,
) -> Result<Field2, DemoError> {
    let eastern_f2 = id_of(f2, "gis_location", &d.provinces[2].uuid)?;
    let unhcr_f2 = id_of(f2, "org_organisation", &d.unhcr.uuid)?;
    let ampara = location(f2, Some(eastern_f2), "L2", "Ampara", "LK-3-3")?;
    let kalmunai = location(f2, Some(ampara.id), "L3", "Kalmunai", "LK-3-3-01")?;
    let ravi = person(f2, ("Ravi", "Kumar"), 51, "missing", ampara.id, unhcr_f2)?;
    let fathima = person(f2, ("Fathima", "Rizvi"), 27, "found", kalmunai.id, unhcr_f2)?;
    let mosque = shelter(
        f2,
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
    Ok(Field2 {
        ampara,
        kalmunai,
        ravi,
        fathima,
        mosque,
    })
}

/// The point of the story so far: the same ids name different records.
pub(super) fn same_ids_name_different_records(
    st: &mut Story,
    a: &Field1,
    b: &Field2,
) -> Result<(), DemoError> {
    let pairs = [
        ("gis_location", &a.unawatuna, &b.ampara),
        ("gis_location", &a.habaraduwa, &b.kalmunai),
        ("pr_person", &a.amal, &b.ravi),
        ("pr_person", &a.nimali, &b.fathima),
        ("cr_shelter", &a.temple, &b.mosque),
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
        a.unawatuna.id,
        a.amal.id,
        a.temple.id,
        short(&a.temple.uuid),
        short(&b.mosque.uuid)
    ))?;
    Ok(())
}

/// Week 2: field-1 sends again before HQ got week 1.
pub(super) fn field_1_week_2(
    st: &mut Story,
    f1: &mut Instance,
    a: &Field1,
) -> Result<Week2, DemoError> {
    f1.connection().execute(
        "UPDATE pr_person SET missing_status = 'found', comments = 'at S-101', \
         modified_on = CURRENT_TIMESTAMP WHERE id = ?1",
        params![a.amal.id],
    )?;
    let boy = person(
        f1,
        ("Kasun", "Fernando"),
        12,
        "missing",
        a.habaraduwa.id,
        a.redcross,
    )?;
    let water = insert(
        f1,
        "INSERT INTO req_req(shelter_id, item, quantity, priority) \
         VALUES (?1, 'drinking water (l)', 500, 'high')",
        params![a.temple.id],
    )?;
    st.say(format!(
        "field-1, week 2: Amal Perera is found, a boy is reported missing in Habaraduwa (pr_person {}), \
         S-101 asks for water (req_req {}, shelter_id {}).",
        boy.id, water.id, a.temple.id
    ))?;
    let bundle = st.export(f1, "hq", "field-1-week2.bundle")?;
    Ok(Week2 { boy, water, bundle })
}

/// HQ imports out of order, one file twice, and looks at the conflicts.
pub(super) fn hq_imports(
    st: &mut Story,
    hq: &mut Instance,
    [f1_w2, f2_w1, f1_w1]: [&PathBuf; 3],
) -> Result<(), DemoError> {
    st.say("HQ imports field-1's week-2 bundle first (the week-1 stick is late):")?;
    st.import(hq, f1_w2)?;
    for q in hq.conflicts(0)?.quarantined {
        st.detail(format!(
            "held: {} row {}: {} ({})",
            q.table, q.key, q.reason, q.detail
        ))?;
    }
    st.say("then field-2's bundle, and the same file again by mistake:")?;
    st.import(hq, f2_w1)?;
    let again = st.import(hq, f2_w1)?;
    if again.applied != 0 {
        return Err(DemoError::Diverged(
            "re-importing a bundle applied changes".into(),
        ));
    }
    st.say("then field-1's week-1 bundle arrives:")?;
    st.import(hq, f1_w1)?;

    let conflicts = hq.conflicts(10)?;
    st.say(format!(
        "HQ looks at `fieldsync conflicts`: {} {} in quarantine, {} overwritten {}.",
        conflicts.quarantined.len(),
        if conflicts.quarantined.len() == 1 {
            "change"
        } else {
            "changes"
        },
        conflicts.overwritten_total,
        if conflicts.overwritten_total == 1 {
            "value"
        } else {
            "values"
        }
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
    Ok(())
}

/// The administrator resolves the clash: the S-101 HQ has (field-2's)
/// gets a code of its own, so field-1's fits. HQ finds it by its uuid:
/// HQ's id for it is not field-2's.
pub(super) fn hq_resolves_the_clash(
    st: &mut Story,
    hq: &mut Instance,
    mosque: &Rec,
) -> Result<(), DemoError> {
    let mosque_hq = id_of(hq, "cr_shelter", &mosque.uuid)?;
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
    Ok(())
}

/// HQ updates and inserts, then relays everything to both laptops.
pub(super) fn hq_relays(
    st: &mut Story,
    all: &mut Instances,
    d: &Defaults,
) -> Result<North, DemoError> {
    let Instances { hq, f1, f2 } = all;
    hq.connection().execute(
        "UPDATE cr_shelter SET capacity = 400, modified_on = CURRENT_TIMESTAMP WHERE id = ?1",
        params![d.school.id],
    )?;
    let northern = location(hq, Some(d.country.id), "L1", "Northern", "LK-4")?;
    let jaffna = location(hq, Some(northern.id), "L2", "Jaffna", "LK-4-1")?;
    st.say(format!(
        "HQ raises S-001's capacity to 400 and adds the Northern province (gis_location {}) with the district \
         Jaffna ({}).",
        northern.id, jaffna.id
    ))?;
    st.say("HQ sends each laptop what it lacks, including the other laptop's work (relayed with its origin):")?;
    let to_f1 = st.export(hq, "field-1", "hq-to-field-1.bundle")?;
    let to_f2 = st.export(hq, "field-2", "hq-to-field-2.bundle")?;
    st.import(f1, &to_f1)?;
    st.import(f2, &to_f2)?;
    Ok(North { northern, jaffna })
}

/// The laptops meet: field-2 passes its changes straight to field-1.
pub(super) fn laptops_meet(
    st: &mut Story,
    all: &mut Instances,
    boy: &Rec,
) -> Result<(), DemoError> {
    let Instances { f1, f2, .. } = all;
    let boy_f2 = id_of(f2, "pr_person", &boy.uuid)?;
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
    let direct = st.export(f2, "field-1", "field-2-to-field-1.bundle")?;
    st.import(f1, &direct)?;
    Ok(())
}

/// Rounds through HQ until nothing moves (at most three).
pub(super) fn last_round(st: &mut Story, all: &mut Instances) -> Result<(), DemoError> {
    let Instances { hq, f1, f2 } = all;
    st.say("A last round through HQ:")?;
    for round in 0..3 {
        let a = st.export(f1, "hq", &format!("field-1-final{round}.bundle"))?;
        let b = st.export(f2, "hq", &format!("field-2-final{round}.bundle"))?;
        let ra = st.import(hq, &a)?;
        let rb = st.import(hq, &b)?;
        let c = st.export(hq, "field-1", &format!("hq-final{round}-1.bundle"))?;
        let d = st.export(hq, "field-2", &format!("hq-final{round}-2.bundle"))?;
        let rc = st.import(f1, &c)?;
        let rd = st.import(f2, &d)?;
        if ra.applied + rb.applied + rc.applied + rd.applied == 0 {
            break;
        }
    }
    Ok(())
}
