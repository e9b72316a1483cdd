//! Schema changes in random histories (spec/schema.md): instances add
//! columns (`ALTER TABLE … ADD COLUMN`, from a small fixed set, so two
//! instances may add the same column independently) and a table (`note`,
//! tracked with `Selection::Named`) while they write and exchange bundles;
//! most instances run received schema changes (`apply`), some hold them
//! (`hold`) and run them with `apply_schema` at a random step and at the end.
//!
//! The detailed model ([`super::world`]) checks capture, the log and every
//! bundle against a fixed schema; this companion keeps its own small
//! reference, written from spec/schema.md and spec/merge.md's last writer
//! wins, and checks the end of the history: after an all-pairs exchange
//! (held changes applied) every instance has every column and table added
//! anywhere, tracked, nothing held nor waiting, and every cell holds the
//! value of the latest write of it anywhere, or the column's declared
//! default if no write touched it (a row that existed before the column was
//! added, or one created where the column was missing).
//!
//! To know which write is the latest without modelling stamping, each
//! write gets its own wall time (`fieldsync_pending.at`, set by the test:
//! step `k` is 10 ms after step `k - 1`, an hour ahead of the real clock so
//! it is above every clock seen) and is stamped at once (`compact`): every
//! change's HLC is its write's time. Writes are updates and inserts of fresh
//! keys with values unique to the write (so every write changes what it
//! sets, and no value equals a default); no deletes, so causal lengths
//! stay 1 and the merge is last writer wins per cell. An insert writes
//! every column its instance has (those not given hold their default).
//!
//! Cases: an eighth of `FIELDSYNC_PROPTEST_CASES` (16 by default, 4–8 s
//! in a debug build on 2 shared cores, against 29 s for the 128 cases of
//! `instances_match_the_model`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use fieldsync::{ExportTarget, Instance, SchemaMode, Selection, Value};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use rusqlite::Connection;

use crate::model::schema::SCHEMA;
use crate::util::Res;
use crate::util::histories::{self, Delivery};

const MAX_INSTANCES: usize = 4;

/// The seeds of every failure this test found, replayed first.
const REGRESSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/model/schema_changes.proptest-regressions"
);

/// The tables written: the model's two keyed tables and the table added.
const TABLES: [&str; 3] = ["item", "link", "note"];
const NOTE: usize = 2;

/// The columns an instance may add to `item` or `link`.
const EXTRA: [(&str, &str); 2] = [("extra1", "TEXT"), ("extra2", "INTEGER DEFAULT 7")];

/// The table an instance may add.
const NOTE_SQL: &str = "CREATE TABLE note(id TEXT PRIMARY KEY, body TEXT)";

/// The non-key columns the writes set, before any is added.
fn base_cells(table: usize) -> &'static [&'static str] {
    match table {
        0 => &["i", "t"],
        1 => &["note", "w"],
        _ => &["body"],
    }
}

fn key_cols(table: usize) -> &'static [&'static str] {
    match table {
        1 => &["x", "y"],
        _ => &["id"],
    }
}

#[derive(Clone, Debug)]
enum Write {
    /// A row with a fresh key (made from the step's number); `cells` picks
    /// the columns given a value (a bit per column the instance has).
    Insert { table: usize, cells: u8 },
    /// An update of the `pick`-th row here of the columns `cells` picks.
    Update {
        table: usize,
        pick: usize,
        cells: u8,
    },
}

#[derive(Clone)]
enum Step {
    Write { at: usize, write: Write },
    AddColumn { at: usize, table: usize, col: usize },
    AddTable { at: usize },
    Export { from: usize, to: usize },
    Sync { from: usize, to: usize },
    ExportFull { from: usize },
    Import { at: usize, back: usize },
    ApplySchema { at: usize },
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Write { at, write } => write!(f, "i{at}: {write:?}"),
            Step::AddColumn { at, table, col } => write!(
                f,
                "i{at}: ALTER TABLE {} ADD COLUMN {} {}",
                TABLES[*table], EXTRA[*col].0, EXTRA[*col].1
            ),
            Step::AddTable { at } => write!(f, "i{at}: {NOTE_SQL}, track it"),
            Step::Export { from, to } => write!(f, "i{from} → i{to}: export"),
            Step::Sync { from, to } => write!(f, "i{from} → i{to}: export, imported"),
            Step::ExportFull { from } => write!(f, "i{from}: export full"),
            Step::Import { at, back } => {
                write!(f, "i{at}: import the bundle {back} before the newest")
            }
            Step::ApplySchema { at } => write!(f, "i{at}: apply_schema"),
        }
    }
}

#[derive(Clone, Debug)]
struct History {
    instances: usize,
    /// Per instance: holds received schema changes (else runs them).
    hold: Vec<bool>,
    steps: Vec<Step>,
    deliveries: Vec<Delivery>,
    resend_free: bool,
}

impl histories::History for History {
    type Step = Step;
    fn steps(&mut self) -> &mut Vec<Step> {
        &mut self.steps
    }
    fn deliveries(&mut self) -> &mut Vec<Delivery> {
        &mut self.deliveries
    }
}

fn write() -> impl Strategy<Value = Write> {
    let table = prop::sample::select(vec![0usize, 0, 1, NOTE]);
    prop_oneof![
        2 => (table.clone(), any::<u8>()).prop_map(|(table, cells)| Write::Insert { table, cells }),
        3 => (table, 0..8usize, 1..=u8::MAX)
            .prop_map(|(table, pick, cells)| Write::Update { table, pick, cells }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let i = 0..MAX_INSTANCES;
    let off = 1..MAX_INSTANCES;
    prop_oneof![
        6 => (i.clone(), write()).prop_map(|(at, write)| Step::Write { at, write }),
        2 => (i.clone(), 0..2usize, 0..EXTRA.len())
            .prop_map(|(at, table, col)| Step::AddColumn { at, table, col }),
        1 => i.clone().prop_map(|at| Step::AddTable { at }),
        2 => (i.clone(), off.clone()).prop_map(|(from, to)| Step::Export { from, to }),
        2 => (i.clone(), off).prop_map(|(from, to)| Step::Sync { from, to }),
        1 => i.clone().prop_map(|from| Step::ExportFull { from }),
        3 => (i.clone(), 0..4usize).prop_map(|(at, back)| Step::Import { at, back }),
        1 => i.prop_map(|at| Step::ApplySchema { at }),
    ]
}

fn history() -> impl Strategy<Value = History> {
    (
        3..=MAX_INSTANCES,
        vec(proptest::bool::weighted(0.3), MAX_INSTANCES),
        vec((prop::sample::select(vec![0usize, 1]), any::<u8>()), 0..4),
        vec(step(), 1..40),
        vec((0..40usize, 0..MAX_INSTANCES), 0..8),
        any::<bool>(),
    )
        .prop_map(|(n, mut hold, initial, steps, deliveries, resend_free)| {
            hold.truncate(n);
            // Rows every instance starts with, shared by a full export.
            let mut prologue: Vec<Step> = initial
                .into_iter()
                .map(|(table, cells)| Step::Write {
                    at: 0,
                    write: Write::Insert { table, cells },
                })
                .collect();
            if !prologue.is_empty() {
                prologue.push(Step::ExportFull { from: 0 });
                prologue.extend((1..n).map(|at| Step::Import { at, back: 0 }));
            }
            let peer = |from: usize, off: usize| (from % n + 1 + (off - 1) % (n - 1)) % n;
            let steps = prologue
                .into_iter()
                .chain(steps)
                .map(|s| match s {
                    Step::Write { at, write } => Step::Write { at: at % n, write },
                    Step::AddColumn { at, table, col } => Step::AddColumn {
                        at: at % n,
                        table,
                        col,
                    },
                    Step::AddTable { at } => Step::AddTable { at: at % n },
                    Step::Export { from, to } => Step::Export {
                        from: from % n,
                        to: peer(from, to),
                    },
                    Step::Sync { from, to } => Step::Sync {
                        from: from % n,
                        to: peer(from, to),
                    },
                    Step::ExportFull { from } => Step::ExportFull { from: from % n },
                    Step::Import { at, back } => Step::Import { at: at % n, back },
                    Step::ApplySchema { at } => Step::ApplySchema { at: at % n },
                })
                .collect();
            let deliveries = deliveries
                .into_iter()
                .map(|(bundle, at)| Delivery { bundle, at: at % n })
                .collect();
            History {
                instances: n,
                hold,
                steps,
                deliveries,
                resend_free,
            }
        })
}

/// A row: table and key values (as text: `Value` has no order).
type RowKey = (usize, String);

/// Rows of a table: key as text → key values and non-key column → value.
type Rows = BTreeMap<String, (Vec<Value>, BTreeMap<String, Value>)>;

fn key_text(key: &[Value]) -> String {
    format!("{key:?}")
}

/// Per row, per column: the time of the latest write of it and its value.
type Written = BTreeMap<RowKey, (Vec<Value>, BTreeMap<String, (i64, Value)>)>;

/// A column as `PRAGMA table_info` gives it: name, declared type, default.
#[derive(Clone, PartialEq, Eq, Debug, PartialOrd, Ord)]
struct Column {
    name: String,
    decl: String,
    default: Option<String>,
}

fn columns(conn: &Connection, table: &str) -> Res<Vec<(Column, bool)>> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let cols = stmt
        .query_map([], |r| {
            Ok((
                Column {
                    name: r.get(1)?,
                    decl: r.get(2)?,
                    default: r.get(4)?,
                },
                r.get::<_, i64>(5)? > 0,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(cols)
}

/// The non-key columns the writes may set that `table` has at `conn`.
fn writable(conn: &Connection, table: usize) -> Res<Vec<Column>> {
    Ok(columns(conn, TABLES[table])?
        .into_iter()
        .filter(|(c, pk)| {
            !pk && (base_cells(table).contains(&c.name.as_str())
                || EXTRA.iter().any(|(e, _)| *e == c.name))
        })
        .map(|(c, _)| c)
        .collect())
}

/// The value a column's declared default gives (the test's defaults only).
fn default_of(c: &Column) -> Value {
    match c.default.as_deref() {
        None => Value::Null,
        Some("7") => Value::Integer(7),
        Some(other) => Value::text(other),
    }
}

/// A value unique to step `k` and column `c`, of the column's affinity.
fn value_for(k: usize, c: usize, col: &Column) -> Value {
    let n = (1000 * (k + 1) + c) as i64;
    let decl = col.decl.to_ascii_uppercase();
    if decl.starts_with("INTEGER") {
        Value::Integer(n)
    } else if decl.starts_with("REAL") {
        Value::Real(n as f64 + 0.5)
    } else {
        Value::text(format!("v{n}"))
    }
}

fn has_table(conn: &Connection, table: &str) -> Res<bool> {
    Ok(conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get::<_, i64>(0),
    )? > 0)
}

fn tracked(conn: &Connection, table: &str) -> Res<bool> {
    Ok(conn.query_row(
        "SELECT count(*) FROM fieldsync_tables WHERE name = ?1",
        [table],
        |r| r.get::<_, i64>(0),
    )? > 0)
}

/// Every row of `table` at `conn`: key → non-key column → value.
fn read_rows(conn: &Connection, table: usize) -> Res<Rows> {
    let mut out = Rows::new();
    if !has_table(conn, TABLES[table])? {
        return Ok(out);
    }
    let keys = key_cols(table);
    let cells = writable(conn, table)?;
    let names: Vec<&str> = keys
        .iter()
        .copied()
        .chain(cells.iter().map(|c| c.name.as_str()))
        .collect();
    let mut stmt = conn.prepare(&format!(
        "SELECT {} FROM {}",
        names.join(", "),
        TABLES[table]
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let key = (0..keys.len())
            .map(|i| r.get::<_, Value>(i))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut vals = BTreeMap::new();
        for (i, c) in cells.iter().enumerate() {
            vals.insert(c.name.clone(), r.get::<_, Value>(keys.len() + i)?);
        }
        out.insert(key_text(&key), (key, vals));
    }
    Ok(out)
}

/// Julian day of a Unix time in milliseconds, as `fieldsync_pending.at`.
fn julian(unix_ms: i64) -> f64 {
    unix_ms as f64 / 86_400_000.0 + 2_440_587.5
}

struct Bundle {
    what: String,
    bytes: Vec<u8>,
}

struct World {
    instances: Vec<Instance>,
    hold: Vec<bool>,
    pool: Vec<Bundle>,
    written: Written,
    /// Wall time of step 0.
    t0: i64,
    trace: Vec<String>,
    _dir: tempfile::TempDir,
}

impl World {
    fn new(h: &History) -> Res<World> {
        let dir = tempfile::tempdir()?;
        let mut instances = Vec::new();
        for i in 0..h.instances {
            let (mut inst, _) =
                Instance::init(dir.path().join(format!("i{i}.db")), &format!("i{i}"))?;
            inst.connection().execute_batch(SCHEMA)?;
            inst.connection()
                .execute_batch("PRAGMA synchronous = OFF")?;
            inst.track(&Selection::All)?;
            // Writes are stamped an hour ahead (below): within the clock
            // bound, which is tested on its own (tests/clock.rs).
            inst.set_max_clock_ahead_ms(86_400_000)?;
            let mode = if h.hold[i] {
                SchemaMode::Hold
            } else {
                SchemaMode::Apply
            };
            inst.set_schema_mode(mode)?;
            instances.push(inst);
        }
        crate::model::world::enrol_all(&mut instances)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        Ok(World {
            instances,
            hold: h.hold.clone(),
            pool: Vec::new(),
            written: Written::new(),
            t0: now + 3_600_000,
            trace: Vec::new(),
            _dir: dir,
        })
    }

    fn write(&mut self, k: usize, at: usize, w: &Write) -> Res<()> {
        let time = self.t0 + 10 * k as i64;
        let table = match w {
            Write::Insert { table, .. } | Write::Update { table, .. } => *table,
        };
        let conn = self.instances[at].connection();
        if !has_table(conn, TABLES[table])? {
            self.trace
                .push(format!("i{at}: no table {}", TABLES[table]));
            return Ok(());
        }
        let cols = writable(conn, table)?;
        let picked = |mask: u8| -> Vec<usize> {
            (0..cols.len())
                .filter(|i| mask & (1 << (i % 8)) != 0)
                .collect()
        };
        let last: i64 = conn.query_row(
            "SELECT coalesce(max(id), 0) FROM fieldsync_pending",
            [],
            |r| r.get(0),
        )?;
        let (key, sets) = match w {
            Write::Insert { cells, .. } => {
                let key: Vec<Value> = match table {
                    1 => vec![Value::text(format!("r{k}")), Value::Integer(k as i64)],
                    NOTE => vec![Value::text(format!("n{k}"))],
                    _ => vec![Value::text(format!("r{k}"))],
                };
                let given = picked(*cells);
                // Every column it has: given a value, or its default.
                let sets: Vec<(String, Value)> = cols
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let v = if given.contains(&i) {
                            value_for(k, i, c)
                        } else {
                            default_of(c)
                        };
                        (c.name.clone(), v)
                    })
                    .collect();
                let names: Vec<&str> = key_cols(table)
                    .iter()
                    .copied()
                    .chain(given.iter().map(|&i| cols[i].name.as_str()))
                    .collect();
                let mut params = key.clone();
                params.extend(given.iter().map(|&i| sets[i].1.clone()));
                let marks: Vec<String> = (1..=params.len()).map(|i| format!("?{i}")).collect();
                let sql = format!(
                    "INSERT INTO {}({}) VALUES ({})",
                    TABLES[table],
                    names.join(", "),
                    marks.join(", ")
                );
                conn.execute(&sql, rusqlite::params_from_iter(params.iter()))?;
                self.trace.push(format!("i{at} @{k}: {sql} {params:?}"));
                (key, sets)
            }
            Write::Update { pick, cells, .. } => {
                let rows = read_rows(conn, table)?;
                if rows.is_empty() {
                    self.trace
                        .push(format!("i{at}: no row of {} to update", TABLES[table]));
                    return Ok(());
                }
                let key = rows
                    .values()
                    .nth(pick % rows.len())
                    .map(|(k, _)| k.clone())
                    .unwrap_or_default();
                let mut given = picked(*cells);
                if given.is_empty() {
                    given.push(*cells as usize % cols.len());
                }
                let sets: Vec<(String, Value)> = given
                    .iter()
                    .map(|&i| (cols[i].name.clone(), value_for(k, i, &cols[i])))
                    .collect();
                let assign: Vec<String> = sets
                    .iter()
                    .enumerate()
                    .map(|(i, (c, _))| format!("{c} = ?{}", i + 1))
                    .collect();
                let pred: Vec<String> = key_cols(table)
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{c} = ?{}", sets.len() + i + 1))
                    .collect();
                let mut params: Vec<Value> = sets.iter().map(|(_, v)| v.clone()).collect();
                params.extend(key.iter().cloned());
                let sql = format!(
                    "UPDATE {} SET {} WHERE {}",
                    TABLES[table],
                    assign.join(", "),
                    pred.join(" AND ")
                );
                conn.execute(&sql, rusqlite::params_from_iter(params.iter()))?;
                self.trace.push(format!("i{at} @{k}: {sql} {params:?}"));
                (key, sets)
            }
        };
        // The write's own wall time, then stamped at once: its HLC is
        // that time (above every clock seen, step times being 10 ms apart).
        conn.execute(
            "UPDATE fieldsync_pending SET at = ?1 WHERE id > ?2",
            rusqlite::params![julian(time), last],
        )?;
        self.instances[at].compact()?;
        let row = self
            .written
            .entry((table, key_text(&key)))
            .or_insert_with(|| (key.clone(), BTreeMap::new()));
        for (c, v) in sets {
            row.1.insert(c, (time, v));
        }
        Ok(())
    }

    fn add_column(&mut self, at: usize, table: usize, col: usize) -> Res<()> {
        let conn = self.instances[at].connection();
        let (name, decl) = EXTRA[col];
        if columns(conn, TABLES[table])?
            .iter()
            .any(|(c, _)| c.name == name)
        {
            self.trace
                .push(format!("i{at}: {} already has {name}", TABLES[table]));
            return Ok(());
        }
        conn.execute_batch(&format!(
            "ALTER TABLE {} ADD COLUMN {name} {decl}",
            TABLES[table]
        ))?;
        // `track` follows the schema first (spec/schema.md).
        let report = self.instances[at].track(&Selection::Named(vec![TABLES[table].into()]))?;
        self.trace.push(format!(
            "i{at}: ALTER TABLE {} ADD COLUMN {name} {decl}; track: {:?}",
            TABLES[table], report.warnings
        ));
        Ok(())
    }

    fn add_table(&mut self, at: usize) -> Res<()> {
        let conn = self.instances[at].connection();
        if has_table(conn, "note")? {
            self.trace.push(format!("i{at}: note is already here"));
            return Ok(());
        }
        conn.execute_batch(NOTE_SQL)?;
        self.instances[at].track(&Selection::Named(vec!["note".into()]))?;
        self.trace.push(format!("i{at}: {NOTE_SQL}; tracked"));
        Ok(())
    }

    fn export(&mut self, from: usize, target: &ExportTarget) -> Res<usize> {
        let mut bytes = Vec::new();
        let report = self.instances[from].export(target, &mut bytes)?;
        let what = match target {
            ExportTarget::Full => format!("i{from} full"),
            ExportTarget::Peer { to, .. } => format!("i{from} → {to}"),
            _ => format!("i{from}"),
        };
        self.trace.push(format!(
            "#{}: {what}: {} record(s)",
            self.pool.len(),
            report.changes
        ));
        self.pool.push(Bundle { what, bytes });
        Ok(self.pool.len() - 1)
    }

    /// Records applied (and released from waiting), or `None` if refused as
    /// the instance's own bundle.
    fn import(&mut self, b: usize, at: usize) -> Res<u64> {
        let result = self.instances[at].import(std::io::Cursor::new(&self.pool[b].bytes));
        if self.pool[b].what.starts_with(&format!("i{at} ")) {
            let line = histories::refused_as_own(result, at, b)?;
            self.trace.push(line);
            return Ok(0);
        }
        let r = result.map_err(|e| format!("i{at} importing #{b} ({}): {e}", self.pool[b].what))?;
        self.trace.push(format!(
            "i{at} ← #{b} ({}): applied {}, skipped {}, quarantined {}, released {}, waiting {}, waited {}, warnings {:?}",
            self.pool[b].what,
            r.applied,
            r.skipped,
            r.quarantined,
            r.released,
            r.waiting,
            r.waited,
            r.warnings
        ));
        Ok(r.applied + r.released + r.waited)
    }

    /// `apply_schema` at `at`; true if it had something to do.
    fn apply_schema(&mut self, at: usize) -> Res<bool> {
        let before = self.instances[at].schema()?;
        let pending = before
            .held
            .iter()
            .any(|h| h.status == "held" || h.status == "failed")
            || !before.waiting.is_empty();
        let report = self.instances[at].apply_schema()?;
        self.trace
            .push(format!("i{at}: apply_schema: {:?}", report.applied));
        Ok(pending)
    }

    fn play(&mut self, h: &History) -> Res<()> {
        let n = h.instances;
        for (k, step) in h.steps.iter().enumerate() {
            match step {
                Step::Write { at, write } => self.write(k, *at, write)?,
                Step::AddColumn { at, table, col } => self.add_column(*at, *table, *col)?,
                Step::AddTable { at } => self.add_table(*at)?,
                Step::Export { from, to } => {
                    self.export(
                        *from,
                        &ExportTarget::Peer {
                            to: format!("i{to}"),
                            resend: false,
                        },
                    )?;
                }
                Step::Sync { from, to } => {
                    let b = self.export(
                        *from,
                        &ExportTarget::Peer {
                            to: format!("i{to}"),
                            resend: false,
                        },
                    )?;
                    self.import(b, *to)?;
                }
                Step::ExportFull { from } => {
                    self.export(*from, &ExportTarget::Full)?;
                }
                Step::Import { at, back } => match histories::pick(self.pool.len(), *back) {
                    Some(b) => {
                        self.import(b, *at)?;
                    }
                    None => self.trace.push(format!("i{at}: no bundle to import yet")),
                },
                Step::ApplySchema { at } => {
                    self.apply_schema(*at)?;
                }
            }
        }
        self.trace.push("-- deliveries --".into());
        for (b, at) in histories::delivered(&h.deliveries, self.pool.len()) {
            self.import(b, at)?;
        }

        // Every pair until a round applies nothing and nothing is held or
        // waiting; instances that hold schema changes run them after each
        // round.
        let rounds = if h.resend_free { 10 } else { 6 };
        let mut quiet = false;
        for round in 1..=rounds {
            self.trace.push(format!("-- exchange round {round} --"));
            let mut busy = false;
            for from in 0..n {
                for to in (0..n).filter(|&to| to != from) {
                    let b = self.export(
                        from,
                        &ExportTarget::Peer {
                            to: format!("i{to}"),
                            resend: !h.resend_free,
                        },
                    )?;
                    busy |= self.import(b, to)? > 0;
                }
            }
            for at in 0..n {
                if self.hold[at] {
                    busy |= self.apply_schema(at)?;
                }
            }
            for i in &mut self.instances {
                let s = i.status()?;
                busy |= s.origins.iter().any(|o| !o.gaps.is_empty());
            }
            if !busy {
                quiet = true;
                break;
            }
        }
        if !quiet {
            return Err(format!("still busy after {rounds} all-pairs exchange rounds").into());
        }
        self.check_end(h)
    }

    fn check_end(&mut self, h: &History) -> Res<()> {
        let n = h.instances;
        // Nothing held nor waiting.
        for at in 0..n {
            let s = self.instances[at].schema()?;
            let held: Vec<_> = s
                .held
                .iter()
                .filter(|c| c.status == "held" || c.status == "failed")
                .map(|c| format!("{} {}: {}", c.table, c.status, c.why))
                .collect();
            if !held.is_empty() || !s.waiting.is_empty() {
                return Err(format!(
                    "after the exchange i{at} holds schema changes {held:?}, values waiting {:?}",
                    s.waiting
                )
                .into());
            }
        }
        // Every column and table added anywhere is everywhere, tracked.
        let mut schema: Vec<BTreeSet<Column>> = vec![BTreeSet::new(); TABLES.len()];
        for at in 0..n {
            let conn = self.instances[at].connection();
            for t in 0..TABLES.len() {
                if has_table(conn, TABLES[t])? {
                    schema[t].extend(writable(conn, t)?);
                }
            }
        }
        for at in 0..n {
            let conn = self.instances[at].connection();
            for t in 0..TABLES.len() {
                if schema[t].is_empty() {
                    continue;
                }
                if !tracked(conn, TABLES[t])? {
                    return Err(
                        format!("after the exchange i{at} does not track {}", TABLES[t]).into(),
                    );
                }
                let here: BTreeSet<Column> = writable(conn, t)?.into_iter().collect();
                if here != schema[t] {
                    return Err(format!(
                        "after the exchange i{at}'s {} has columns {here:?}, others add up to {:?}",
                        TABLES[t], schema[t]
                    )
                    .into());
                }
                let cells: BTreeSet<String> = {
                    let mut stmt = conn.prepare(
                        "SELECT c.name FROM fieldsync_columns AS c \
                         JOIN fieldsync_tables AS t ON t.id = c.tbl \
                         WHERE t.name = ?1 AND c.role = 'cell'",
                    )?;
                    stmt.query_map([TABLES[t]], |r| r.get::<_, String>(0))?
                        .collect::<rusqlite::Result<_>>()?
                };
                for c in &schema[t] {
                    if !cells.contains(&c.name) {
                        return Err(format!(
                            "after the exchange i{at} does not track {}.{} (tracks {cells:?})",
                            TABLES[t], c.name
                        )
                        .into());
                    }
                }
            }
        }
        // Every cell: the latest write of it, else its default.
        for t in 0..TABLES.len() {
            let mut expected = Rows::new();
            for ((table, key), (values, cols)) in &self.written {
                if *table != t {
                    continue;
                }
                let row = schema[t]
                    .iter()
                    .map(|c| {
                        let v = cols
                            .get(&c.name)
                            .map_or_else(|| default_of(c), |(_, v)| v.clone());
                        (c.name.clone(), v)
                    })
                    .collect();
                expected.insert(key.clone(), (values.clone(), row));
            }
            for at in 0..n {
                let real = read_rows(self.instances[at].connection(), t)?;
                if real != expected {
                    let mut lines = Vec::new();
                    for key in real.keys().chain(expected.keys()).collect::<BTreeSet<_>>() {
                        let (r, e) = (real.get(key), expected.get(key));
                        if r != e {
                            lines.push(format!("  {key:?}: engine {r:?}, model {e:?}"));
                        }
                    }
                    return Err(format!(
                        "after the exchange i{at}'s {} differs from the model:\n{}",
                        TABLES[t],
                        lines.join("\n")
                    )
                    .into());
                }
            }
        }
        self.trace.push(format!(
            "-- all {n} instances agree with the model ({} rows written) --",
            self.written.len()
        ));
        Ok(())
    }
}

fn check(h: &History) -> Result<(), String> {
    let mut world = World::new(h).map_err(|e| format!("setting up: {e}"))?;
    let result = world
        .play(h)
        .map_err(|e| format!("{e}\n--- what happened ---\n{}", world.trace.join("\n")));
    if std::env::var_os("FIELDSYNC_MODEL_TRACE").is_some() {
        eprintln!("=====\n{h:#?}\n{}", world.trace.join("\n"));
    }
    result
}

fn config() -> ProptestConfig {
    assert!(
        Path::new(REGRESSIONS).is_file(),
        "the schema-change test's seeds are not where its config says: {REGRESSIONS}"
    );
    let base = histories::config(1024);
    ProptestConfig {
        cases: (base.cases / 8).max(1),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        ..base
    }
}

#[test]
fn instances_follow_schema_changes_and_match_the_model() {
    histories::run(config(), history(), check);
}
