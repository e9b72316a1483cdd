//! The end of the demo: the instances must hold the same rows (compared by
//! uuid, references by the uuid of the row they point at), with no
//! dangling reference, an empty quarantine and `fieldsync check` clean;
//! then the tables that show how the same records and references carry
//! different ids on each instance.

use std::collections::BTreeMap;
use std::path::Path;

use fieldsync::{Instance, Value};
use rusqlite::OptionalExtension;

use super::records::{Rec, id_of, quote_ident, short};
use super::scenes::Cast;
use super::story::Story;
use super::{DemoError, Instances, TABLES};

/// Every table holds the same rows everywhere, nothing dangles and no
/// quarantine holds anything; then the row counts.
pub(super) fn same_rows_everywhere(st: &mut Story, all: &mut Instances) -> Result<(), DemoError> {
    for table in TABLES {
        let reference = content(&all.hq, table)?;
        for (name, db) in &all.named()[1..] {
            if content(db, table)? != reference {
                return Err(DemoError::Diverged(format!(
                    "table {table} on {name} differs from hq (rows compared by uuid, references by the uuid \
                     of the row they point at)"
                )));
            }
        }
    }
    for (name, db) in all.named_mut() {
        let dangling: i64 = db.connection().query_row(
            "SELECT count(*) FROM pragma_foreign_key_check",
            [],
            |r| r.get(0),
        )?;
        if dangling > 0 {
            return Err(DemoError::Diverged(format!(
                "{name} has {dangling} dangling {}",
                if dangling == 1 {
                    "reference"
                } else {
                    "references"
                }
            )));
        }
        let held = db.conflicts(0)?.quarantined.len();
        if held > 0 {
            return Err(DemoError::Diverged(format!(
                "{name} still holds {held} {} in quarantine",
                if held == 1 { "change" } else { "changes" }
            )));
        }
    }
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
        let n: Vec<u64> = all
            .named()
            .iter()
            .map(|(_, db)| count(db, table))
            .collect::<Result<_, _>>()?;
        writeln!(
            st.out,
            "    {:<18} {:>6} {:>8} {:>8}",
            table, n[0], n[1], n[2]
        )?;
    }
    Ok(())
}

/// The point: rows with a uuid whose ids differ between instances.
pub(super) fn ids_differ(st: &mut Story, all: &Instances) -> Result<(), DemoError> {
    let (mut renumbered, mut with_uuid) = (0u64, 0u64);
    for table in TABLES {
        let maps = all
            .named()
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
    Ok(())
}

/// Some records, their ids on each instance, and where their references
/// point there: each must name the same parent row (by uuid) everywhere.
pub(super) fn show_rows(st: &mut Story, all: &Instances, cast: &Cast) -> Result<(), DemoError> {
    writeln!(
        st.out,
        "    {:<28} {:<8} {:<10} {:>4} {:>8} {:>8}",
        "row", "made on", "uuid", "hq", "field-1", "field-2"
    )?;
    for row in &shown(cast) {
        let row_ids = all
            .named()
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
        for (name, db) in all.named() {
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
    Ok(())
}

/// The rows [`show_rows`] lists.
fn shown(c: &Cast) -> [Shown<'_>; 10] {
    let (d, a, b) = (&c.defaults, &c.field_1, &c.field_2);
    [
        Shown::new("gis_location", "Unawatuna", "field-1", &a.unawatuna).points(
            "parent",
            "gis_location",
            "Galle district",
            d.galle(),
        ),
        Shown::new("gis_location", "Ampara", "field-2", &b.ampara).points(
            "parent",
            "gis_location",
            "Eastern",
            &d.provinces[2],
        ),
        Shown::new("gis_location", "Kalmunai", "field-2", &b.kalmunai).points(
            "parent",
            "gis_location",
            "Ampara",
            &b.ampara,
        ),
        Shown::new("gis_location", "Jaffna", "hq", &c.north.jaffna).points(
            "parent",
            "gis_location",
            "Northern",
            &c.north.northern,
        ),
        Shown::new("pr_person", "Amal Perera", "field-1", &a.amal).points(
            "location_id",
            "gis_location",
            "Unawatuna",
            &a.unawatuna,
        ),
        Shown::new("pr_person", "Ravi Kumar", "field-2", &b.ravi).points(
            "location_id",
            "gis_location",
            "Ampara",
            &b.ampara,
        ),
        Shown::new("pr_person", "Kasun Fernando", "field-1", &c.week_2.boy).points(
            "location_id",
            "gis_location",
            "Habaraduwa",
            &a.habaraduwa,
        ),
        Shown::new("cr_shelter", "S-101", "field-1", &a.temple).points(
            "location_id",
            "gis_location",
            "Unawatuna",
            &a.unawatuna,
        ),
        Shown::new("cr_shelter", "S-102", "field-2", &b.mosque).points(
            "location_id",
            "gis_location",
            "Kalmunai",
            &b.kalmunai,
        ),
        Shown::new("req_req", "water", "field-1", &c.week_2.water).points(
            "shelter_id",
            "cr_shelter",
            "S-101",
            &a.temple,
        ),
    ]
}

/// `fieldsync check` is clean on every instance; then where the files are.
pub(super) fn checks_pass(
    st: &mut Story,
    all: &mut Instances,
    dir: &Path,
) -> Result<(), DemoError> {
    for (name, db) in all.named_mut() {
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
