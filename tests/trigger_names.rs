//! The capture triggers' names (issue 11, item 4), through the real CLI and
//! the `sqlite3` shell: no two tables or columns can produce one name
//! whatever they are called, a database whose triggers carry the names an
//! older fieldsync gave them is upgraded in place by `track` (never a write
//! captured twice), and `track --all` tracks every table it can, reporting
//! each one it cannot with the reason and leaving nothing of it behind.

use std::path::Path;

use crate::util::*;

/// Captured changes of `table` waiting in `fieldsync_pending`, as
/// `(op, count)` (1 insert, 2 update, 3 delete).
fn captured(db: &Path, table: &str) -> Res<Vec<(String, String)>> {
    Ok(query(
        db,
        &format!(
            "SELECT op, count(*) FROM fieldsync_pending \
             WHERE t = (SELECT id FROM fieldsync_tables WHERE name = {}) GROUP BY op ORDER BY op;",
            lit(table)
        ),
    )?
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect())
}

/// The names of the triggers on `table` whose name starts with
/// `fieldsync_`, sorted.
fn fieldsync_triggers(db: &Path, table: &str) -> Res<Vec<String>> {
    let mut names: Vec<String> = query(
        db,
        &format!(
            "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = {} \
             AND name LIKE 'fieldsync\\_%' ESCAPE '\\';",
            lit(table)
        ),
    )?
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    names.sort();
    Ok(names)
}

/// The trigger names the rule of spec/capture.md ("Trigger names") gives a
/// table of id `id` with `cells` non-key columns, sorted.
fn current_names(id: u64, cells: usize, rekey: bool) -> Vec<String> {
    let mut names = vec![
        format!("fieldsync_insert_{id}"),
        format!("fieldsync_delete_{id}"),
    ];
    names.extend((1..=cells).map(|bit| format!("fieldsync_update_{id}_{bit}")));
    if rekey {
        names.push(format!("fieldsync_rekey_{id}"));
    }
    names.sort();
    names
}

fn table_id(db: &Path, table: &str) -> Res<u64> {
    count(
        db,
        &format!(
            "SELECT id FROM fieldsync_tables WHERE name = {};",
            lit(table)
        ),
    )
}

fn check_clean(db: &Path) -> Res {
    let out = fieldsync_ok(&[&"check", &"--db", &db])?;
    assert!(out.stdout.starts_with("ok"), "{}", out.stdout);
    Ok(())
}

/// Issue 11's reproduction: `x` has a column `y_insert` and `x_update_y`
/// exists. Both wanted the trigger `fieldsync_x_update_y_insert`, so
/// `track --all` failed with SQLite's "trigger already exists" and tracked
/// nothing. Now both are tracked, every write to either is captured once,
/// and both replicate.
#[test]
fn colliding_trigger_names_no_longer_stop_track_all() -> Res {
    let schema = "CREATE TABLE x(id TEXT PRIMARY KEY, y_insert TEXT);
                  CREATE TABLE x_update_y(id TEXT PRIMARY KEY, v TEXT);";
    let w = World::new()?;
    let hq = w.bare_site("hq", schema)?;
    let out = fieldsync_ok(&[&"track", &"--db", &hq.db, &"--all", &"--json"])?.json()?;
    assert_eq!(
        out["tracked"],
        serde_json::json!(["x", "x_update_y"]),
        "{out}"
    );
    assert_eq!(out["skipped"], serde_json::json!([]), "{out}");
    for (table, id) in [("x", 1), ("x_update_y", 2)] {
        assert_eq!(table_id(&hq.db, table)?, id);
        assert_eq!(
            fieldsync_triggers(&hq.db, table)?,
            current_names(id, 1, true)
        );
    }
    hq.sql(
        "INSERT INTO x VALUES ('a', 'one');
         UPDATE x SET y_insert = 'two' WHERE id = 'a';
         INSERT INTO x_update_y VALUES ('b', 'three');",
    )?;
    let one = |op: &str| vec![(op.to_owned(), "1".to_owned())];
    assert_eq!(
        captured(&hq.db, "x")?,
        [one("1"), one("2")].concat(),
        "x: one insert and one update"
    );
    assert_eq!(
        captured(&hq.db, "x_update_y")?,
        one("1"),
        "x_update_y: one insert"
    );
    check_clean(&hq.db)?;

    let f1 = w.site("field-1", schema)?;
    w.send(&hq, &f1)?;
    assert_eq!(f1.rows("x")?, [["'a'", "'two'"]]);
    assert_eq!(f1.rows("x_update_y")?, [["'b'", "'three'"]]);
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    check_clean(&f1.db)?;
    Ok(())
}

/// One adversarial table: its name, its key column (none: no primary
/// key) and its other columns.
struct Adversarial {
    name: String,
    key: Option<String>,
    cells: Vec<String>,
}

fn adversarial_tables() -> Vec<Adversarial> {
    let t = |name: &str, key: Option<&str>, cells: &[&str]| Adversarial {
        name: name.to_owned(),
        key: key.map(str::to_owned),
        cells: cells.iter().map(|c| (*c).to_owned()).collect(),
    };
    vec![
        // Old names: `p` wanted fieldsync_p_update_q_rekey and
        // fieldsync_p_update_q_delete, `p_update_q` the same two.
        t("p", Some("id"), &["q_rekey", "q_delete"]),
        t("p_update_q", Some("id"), &["v"]),
        // The same, differing only in ASCII letter case (SQLite compares
        // trigger names without regard to it).
        t("a", Some("id"), &["B_INSERT"]),
        t("A_UPDATE_b", Some("id"), &["v"]),
        // Quotes, spaces and a line break, in table, key and columns.
        t(
            "we\"ird tab'le",
            Some("k ey\""),
            &["it's", "sp ace", "a\"\"b", "line\nbreak"],
        ),
        // A name shaped like the numbers the new names are made of: its old
        // names were fieldsync_1_insert and so on.
        t("1", Some("id"), &["v_1"]),
        t("insert_1", Some("id"), &["update_1_1"]),
        // LIKE's wildcards and its escape character.
        t("a%b_c\\", Some("id"), &["_", "%"]),
        // Very long names.
        t(
            &format!("long_{}", "t".repeat(1000)),
            Some(&format!("key_{}", "k".repeat(500))),
            &[&format!("col_{}", "c".repeat(1000)), "v"],
        ),
        // Unicode, and names differing only in the case of a non-ASCII
        // letter (SQLite folds only ASCII, so these are two tables and two
        // columns).
        t("Émigré", Some("id"), &["é", "É", "名前"]),
        t("émigré", Some("id"), &["v"]),
        // No primary key (rows identified by content, no rekey trigger).
        t("nokey_update_v", None, &["v", "w_insert"]),
    ]
}

fn create_sql(tables: &[Adversarial]) -> String {
    let mut sql = String::new();
    for t in tables {
        let mut cols: Vec<String> = Vec::new();
        if let Some(k) = &t.key {
            cols.push(format!("{} TEXT PRIMARY KEY", ident(k)));
        }
        cols.extend(t.cells.iter().map(|c| format!("{} TEXT", ident(c))));
        sql.push_str(&format!(
            "CREATE TABLE {}({});\n",
            ident(&t.name),
            cols.join(", ")
        ));
    }
    sql
}

/// Tables and columns named to collide under the old names, in letter
/// case, with quotes, spaces, line breaks, LIKE wildcards, 1000-character
/// names and Unicode: every one is tracked, gets exactly the triggers the
/// naming rule gives, captures each write once (an insert, an update of
/// each column, a key change, a delete) and replicates.
#[test]
fn adversarial_table_and_column_names_are_tracked_and_captured_once() -> Res {
    let tables = adversarial_tables();
    let schema = create_sql(&tables);
    let w = World::new()?;
    let hq = w.bare_site("hq", &schema)?;
    let out = fieldsync_ok(&[&"track", &"--db", &hq.db, &"--all", &"--json"])?.json()?;
    let tracked: Vec<&str> = out["tracked"]
        .as_array()
        .ok_or("no tracked list")?
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(tracked, names, "{out}");
    assert_eq!(out["skipped"], serde_json::json!([]), "{out}");
    let all_triggers = count(
        &hq.db,
        "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger';",
    )?;
    let mut expected_total = 0;
    for t in &tables {
        let id = table_id(&hq.db, &t.name)?;
        let expected = current_names(id, t.cells.len(), t.key.is_some());
        expected_total += expected.len() as u64;
        assert_eq!(fieldsync_triggers(&hq.db, &t.name)?, expected, "{}", t.name);
    }
    assert_eq!(all_triggers, expected_total, "no other trigger appeared");
    check_clean(&hq.db)?;
    fieldsync_ok(&[&"compact", &"--db", &hq.db])?;

    for t in &tables {
        let name = ident(&t.name);
        let mut cols: Vec<String> = t.key.iter().cloned().collect();
        cols.extend(t.cells.iter().cloned());
        let list = cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
        let values = (0..cols.len())
            .map(|i| lit(&format!("v{i}")))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sql = format!("INSERT INTO {name}({list}) VALUES ({values});\n");
        for c in &t.cells {
            sql.push_str(&format!("UPDATE {name} SET {} = 'changed';\n", ident(c)));
        }
        if let Some(k) = &t.key {
            sql.push_str(&format!("UPDATE {name} SET {} = 'rekeyed';\n", ident(k)));
        }
        sql.push_str(&format!("DELETE FROM {name};\n"));
        // The row that replicates.
        sql.push_str(&format!("INSERT INTO {name}({list}) VALUES ({values});\n"));
        hq.sql(&sql)?;
        let n = |x: usize| x.to_string();
        let rekeys = usize::from(t.key.is_some());
        assert_eq!(
            captured(&hq.db, &t.name)?,
            [
                ("1".to_owned(), n(2 + rekeys)),
                ("2".to_owned(), n(t.cells.len())),
                ("3".to_owned(), n(1 + rekeys)),
            ],
            "each write to {:?} captured once",
            t.name
        );
        // Each update recorded its own column's bit.
        let bits: Vec<String> = query(
            &hq.db,
            &format!(
                "SELECT m0 FROM fieldsync_pending WHERE op = 2 AND t = {} ORDER BY id;",
                table_id(&hq.db, &t.name)?
            ),
        )?
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
        let expected: Vec<String> = (1..=t.cells.len())
            .map(|b| (1u64 << b).to_string())
            .collect();
        assert_eq!(bits, expected, "{:?}", t.name);
    }
    check_clean(&hq.db)?;

    let f1 = w.site("field-1", &schema)?;
    w.send(&hq, &f1)?;
    assert_eq!(f1.snapshot()?, hq.snapshot()?);
    for t in &tables {
        assert_eq!(f1.rows(&t.name)?.len(), 1, "{:?}", t.name);
    }
    check_clean(&f1.db)?;
    check_clean(&hq.db)?;
    Ok(())
}

/// The fixture, made by fieldsync at commit 19d144b: every capture trigger
/// under its old name (17), and the app's own trigger on `person`.
fn legacy_db(w: &World) -> Res<std::path::PathBuf> {
    let sql = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/legacy-trigger-names.sql"),
    )?;
    let db = w.path("legacy.db");
    sqlite3(&db, &sql)?;
    Ok(db)
}

/// The legacy fixture's tables, each with its id, its number of non-key
/// columns and whether it has a key.
const LEGACY_TABLES: [(&str, u64, usize, bool); 4] = [
    ("person", 1, 2, true),
    ("place", 2, 1, true),
    ("visit \"log\"", 3, 1, true),
    ("option", 4, 2, false),
];

/// A database whose triggers an older fieldsync named after its tables and
/// columns: `check` accepts them (they capture exactly the same writes),
/// and the next `track`, even of one table, gives every tracked table its
/// triggers under the current names, dropping the old ones, so each write
/// is then captured exactly once; the app's own trigger is left alone.
#[test]
fn track_renames_triggers_an_older_fieldsync_named_in_place() -> Res {
    let w = World::new()?;
    let db = legacy_db(&w)?;
    let old = count(
        &db,
        "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND name LIKE 'fieldsync\\_%' ESCAPE '\\';",
    )?;
    assert_eq!(old, 17);
    check_clean(&db)?;

    let out = fieldsync_ok(&[&"track", &"--db", &db, &"person", &"--json"])?.json()?;
    assert_eq!(
        out["renamed"],
        serde_json::json!(["person", "place", "visit \"log\"", "option"]),
        "{out}"
    );
    assert_eq!(out["already"], serde_json::json!(["person"]), "{out}");
    let mut total = 0;
    for (table, id, cells, keyed) in LEGACY_TABLES {
        let expected = current_names(id, cells, keyed);
        total += expected.len() as u64;
        assert_eq!(fieldsync_triggers(&db, table)?, expected, "{table}");
    }
    assert_eq!(total, 17, "as many triggers as before, none doubled");
    assert_eq!(
        query_one(
            &db,
            "SELECT group_concat(name) FROM sqlite_schema WHERE type = 'trigger' \
             AND name NOT LIKE 'fieldsync\\_%' ESCAPE '\\';"
        )?,
        "audit_person"
    );
    check_clean(&db)?;

    // Each write captured once, on every table.
    fieldsync_ok(&[&"compact", &"--db", &db])?;
    sqlite3(
        &db,
        "INSERT INTO person VALUES ('p3', 'Kasun', NULL);
         UPDATE person SET status = 'safe' WHERE id = 'p3';
         DELETE FROM person WHERE id = 'p2';
         INSERT INTO place(uuid, name) VALUES ('u-3', 'Matara');
         UPDATE place SET name = 'Matara town' WHERE uuid = 'u-3';
         INSERT INTO \"visit \"\"log\"\"\" VALUES ('p3', 1, 'x');
         UPDATE \"visit \"\"log\"\"\" SET \"the note\" = 'y' WHERE person = 'p3';
         INSERT INTO option VALUES ('level', 'L1');
         UPDATE option SET value = 'L2' WHERE label = 'level';",
    )?;
    let one = |op: &str| (op.to_owned(), "1".to_owned());
    assert_eq!(captured(&db, "person")?, [one("1"), one("2"), one("3")]);
    for (table, ..) in &LEGACY_TABLES[1..] {
        assert_eq!(captured(&db, table)?, [one("1"), one("2")], "{table}");
    }
    check_clean(&db)?;

    // Nothing left to rename.
    let out = fieldsync_ok(&[
        &"track",
        &"--db",
        &db,
        &"--all",
        &"--except",
        &"audit",
        &"--json",
    ])?
    .json()?;
    assert_eq!(out["renamed"], serde_json::json!([]), "{out}");
    check_clean(&db)?;
    Ok(())
}

/// One trigger under both its old and its new name records each write
/// twice: `check` says so, and `track` drops the old one.
#[test]
fn a_trigger_under_both_its_old_and_new_name_is_reported_and_removed() -> Res {
    let w = World::new()?;
    let site = w.site("hq", "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT);")?;
    site.sql(
        "CREATE TRIGGER \"fieldsync_person_insert\" AFTER INSERT ON \"person\" BEGIN \
         INSERT INTO fieldsync_pending(t, op, at, k0) VALUES (1, 1, julianday(), NEW.\"id\"); END;",
    )?;
    let out = fieldsync(&[&"check", &"--db", &site.db])?;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("'fieldsync_insert_1' and 'fieldsync_person_insert'")
            && out.stdout.contains("recorded twice"),
        "{}",
        out.stdout
    );
    let out = fieldsync_ok(&[&"track", &"--db", &site.db, &"person", &"--json"])?.json()?;
    assert_eq!(out["renamed"], serde_json::json!(["person"]), "{out}");
    assert_eq!(
        fieldsync_triggers(&site.db, "person")?,
        current_names(1, 1, true)
    );
    fieldsync_ok(&[&"compact", &"--db", &site.db])?;
    site.sql("INSERT INTO person VALUES ('p1', 'Amal');")?;
    assert_eq!(
        captured(&site.db, "person")?,
        [("1".to_owned(), "1".to_owned())]
    );
    check_clean(&site.db)?;
    Ok(())
}

/// `track --all` on tables of which some cannot be tracked: a table whose
/// 1996-column key does not fit `fieldsync_pending` (SQLite's column
/// limit, met half way through adding key columns), a table whose trigger
/// name an app trigger holds (met half way through installing triggers),
/// a virtual table and a table named with fieldsync's prefix. Before, the
/// first SQLite error ended the run and nothing was tracked. Now each is
/// reported with the reason, nothing of it is left behind (catalog rows,
/// pending columns, triggers, captured rows), and the others are tracked.
#[test]
fn track_all_reports_each_table_it_cannot_track_and_tracks_the_others() -> Res {
    let wide_cols = (0..1996)
        .map(|i| format!("c{i} INT"))
        .collect::<Vec<_>>()
        .join(", ");
    let wide_key = (0..1996)
        .map(|i| format!("c{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let schema = format!(
        "CREATE TABLE a(id TEXT PRIMARY KEY, v TEXT);
         CREATE TABLE wide({wide_cols}, PRIMARY KEY({wide_key}));
         INSERT INTO wide(c0) VALUES (1);
         CREATE TABLE z(id TEXT PRIMARY KEY, v TEXT);
         CREATE VIRTUAL TABLE docs USING rtree(id, x0, x1);
         CREATE TABLE fieldsync_notes(id TEXT PRIMARY KEY);
         CREATE TABLE log(at TEXT);
         INSERT INTO a VALUES ('a1', 'x');
         INSERT INTO z VALUES ('z1', 'y');"
    );
    let w = World::new()?;
    let hq = w.bare_site("hq", &schema)?;
    let out = fieldsync_ok(&[
        &"track",
        &"--db",
        &hq.db,
        &"--all",
        &"--except",
        &"log",
        &"--json",
    ])?
    .json()?;
    assert_eq!(out["tracked"], serde_json::json!(["a", "z"]), "{out}");
    let skipped = skipped_of(&out)?;
    let reason = |t: &str| {
        skipped
            .iter()
            .find(|(n, _)| n == t)
            .map(|(_, why)| why.clone())
            .unwrap_or_default()
    };
    assert_eq!(skipped.len(), 3, "{out}");
    assert!(reason("wide").contains("too many columns"), "{out}");
    assert!(reason("docs").contains("virtual table"), "{out}");
    assert!(reason("fieldsync_notes").contains("fieldsync_"), "{out}");
    assert_eq!(tracked_tables(&hq.db)?, ["a", "z"]);
    assert_eq!(
        count(
            &hq.db,
            "SELECT count(*) FROM pragma_table_info('fieldsync_pending');"
        )?,
        6,
        "no key column of wide's was left in fieldsync_pending"
    );
    assert_eq!(fieldsync_triggers(&hq.db, "wide")?, Vec::<String>::new());
    assert_eq!(
        count(&hq.db, "SELECT count(*) FROM fieldsync_pending;")?,
        2,
        "the rows of a and z, none of wide's"
    );
    check_clean(&hq.db)?;

    // An app trigger holding the name a capture trigger needs (here the
    // delete trigger of the next table tracked, id 3): that table is
    // refused after its first triggers were made, and none of them stays.
    hq.sql(
        "CREATE TABLE b(id TEXT PRIMARY KEY, v TEXT);
         CREATE TRIGGER fieldsync_delete_3 AFTER INSERT ON log BEGIN SELECT 1; END;",
    )?;
    // (wide is left out here: adding 1995 columns one by one takes seconds.)
    let out = fieldsync_ok(&[
        &"track",
        &"--db",
        &hq.db,
        &"--all",
        &"--except",
        &"log",
        &"wide",
        &"--json",
    ])?
    .json()?;
    assert_eq!(out["already"], serde_json::json!(["a", "z"]), "{out}");
    assert_eq!(out["tracked"], serde_json::json!([]), "{out}");
    let skipped = skipped_of(&out)?;
    let b = skipped
        .iter()
        .find(|(n, _)| n == "b")
        .ok_or("b is not reported")?;
    assert!(
        b.1.contains("fieldsync_delete_3") && b.1.contains("'log'"),
        "{}",
        b.1
    );
    assert_eq!(fieldsync_triggers(&hq.db, "b")?, Vec::<String>::new());
    assert_eq!(tracked_tables(&hq.db)?, ["a", "z"]);
    check_clean(&hq.db)?;

    // Named, the same table is an error, and nothing changes.
    let before = hq.fingerprint()?;
    let out = fieldsync(&[&"track", &"--db", &hq.db, &"a", &"b"])?;
    assert_error(&out, 1, &["fieldsync_delete_3", "log"]);
    assert_eq!(hq.fingerprint()?, before);
    Ok(())
}

/// `track --json`'s `skipped`: each table with the reason it was skipped.
fn skipped_of(out: &serde_json::Value) -> Res<Vec<(String, String)>> {
    let list = out["skipped"].as_array().ok_or("no skipped list")?;
    list.iter()
        .map(|s| {
            let table = s["table"].as_str().ok_or("a skipped table has no table")?;
            let reason = s["reason"]
                .as_str()
                .ok_or("a skipped table has no reason")?;
            Ok((table.to_owned(), reason.to_owned()))
        })
        .collect()
}
