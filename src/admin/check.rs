//! `check`: a read-only consistency check of fieldsync's own state in a
//! database, against the invariants spec/merge.md ("Invariants") and
//! spec/capture.md state.
//!
//! It reads everything in one read transaction and changes nothing. What it
//! finds is a list of [`Problem`]s, each a sentence naming the table, row
//! key, origin or peer at fault; a clean database has none. A check that
//! cannot even run on some part (a value of the wrong type, a missing
//! engine table) is itself reported as a problem of that part, so a damaged
//! database yields a report, not an error; only a busy database or an
//! unreadable file is an error.
//!
//! The invariants, by [`Invariant`]:
//!
//! - the file passes `PRAGMA integrity_check`;
//! - the engine tables can be read (identity, clock, sites, catalog);
//! - every tracked table exists with the key and columns recorded for it,
//!   and carries exactly the capture triggers fieldsync installs (each
//!   under its current name or, with the text it had then, under the name
//!   an older fieldsync gave it, never both);
//! - every row state in the log is well formed;
//! - app rows and log agree: a row in a tracked table is live in the log
//!   (odd causal length), a row the log records as deleted is not in the
//!   table, and a row live in the log is in the table, except for keys
//!   whose captured changes wait in `fieldsync_pending`;
//! - every log entry names a known origin and a tracked table;
//! - watermarks: what the instance has from each origin covers every change
//!   of that origin in the log, and what was sent to a peer is within what
//!   the instance has;
//! - captured changes belong to tracked tables;
//! - the clock is not behind any change in the log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use rusqlite::{Connection, Transaction};
use serde::Serialize;

use crate::base::colset::{ColSet, SENTINEL};
use crate::base::hex;
use crate::base::hlc::Hlc;
use crate::base::seqset::{MAX_SEQ, SeqSet};
use crate::base::value::{Value, decode_key, encode_key, key_literal};
use crate::catalog::schema::quote_ident;
use crate::catalog::session::Session;
use crate::catalog::site::Sites;
use crate::catalog::tracked::{TrackedTable, check_table_live};
use crate::error::{CheckError, Error, TrackError};
use crate::local::capture::Fires;

/// Problems listed per invariant; the rest are only counted.
pub const LISTED_PER_INVARIANT: u64 = 20;

/// Which invariant a problem breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Invariant {
    /// `PRAGMA integrity_check` reports the file intact.
    Integrity,
    /// The engine tables can be read: identity, clock, sites, catalog.
    Engine,
    /// Every tracked table exists with its recorded key and columns.
    Schema,
    /// Every tracked table has exactly the capture triggers fieldsync installs.
    Triggers,
    /// Each row's entries in the log form a valid row state.
    LogRows,
    /// App rows and the log agree on which rows exist.
    Rows,
    /// Log entries name known origins and tracked tables.
    References,
    /// What the instance has, and what it sent, cover the log.
    Watermarks,
    /// Captured changes belong to tracked tables.
    Pending,
    /// The clock and the change counter are not behind the log.
    Clock,
}

/// One broken invariant, said as a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Which invariant.
    pub invariant: Invariant,
    /// What is wrong, naming table, key, origin or peer.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What `check` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// True if no invariant is broken.
    pub ok: bool,
    /// The problems, at most `LISTED_PER_INVARIANT` per invariant.
    pub problems: Vec<Problem>,
    /// Further problems found but not listed.
    pub omitted: u64,
    /// Tracked tables checked.
    pub tables: u64,
    /// App rows checked.
    pub rows: u64,
    /// Change-log entries checked.
    pub log_entries: u64,
    /// Captured changes not yet folded into the log.
    pub captured_unstamped: u64,
    /// Known instances (this one included).
    pub origins: u64,
    /// Known peers.
    pub peers: u64,
    /// What is not broken but needs a person: the clock far ahead of this
    /// computer's, or far behind a peer's (spec/trust.md, "The clock
    /// bound"). One line each, with what to do; `ok` stays true.
    pub warnings: Vec<String>,
}

impl CheckReport {
    /// Number of problems found, listed or not.
    pub fn count(&self) -> u64 {
        self.problems.len() as u64 + self.omitted
    }

    /// The report if clean, otherwise [`Error::Check`] summarising it.
    pub fn into_result(self, path: PathBuf) -> Result<CheckReport, Error> {
        match self.problems.first() {
            None => Ok(self),
            Some(first) => Err(CheckError::Inconsistent {
                path,
                count: self.count(),
                first: first.message.clone(),
            }
            .into()),
        }
    }
}

#[derive(Default)]
struct Collector {
    report: CheckReport,
    per: HashMap<Invariant, u64>,
}

impl Collector {
    fn add(&mut self, invariant: Invariant, message: String) {
        let n = self.per.entry(invariant).or_default();
        *n += 1;
        if *n <= LISTED_PER_INVARIANT {
            self.report.problems.push(Problem { invariant, message });
        } else {
            self.report.omitted += 1;
        }
    }

    /// Turn a failure to check a part into a problem of that part; only a
    /// busy database stops the check.
    fn attempt(
        &mut self,
        invariant: Invariant,
        what: &str,
        r: Result<(), Error>,
    ) -> Result<(), Error> {
        match r {
            Ok(()) => Ok(()),
            Err(e @ Error::Busy { .. }) => Err(e),
            Err(e) => {
                self.add(invariant, format!("{what} could not be checked: {e}"));
                Ok(())
            }
        }
    }

    fn finish(mut self) -> CheckReport {
        self.report.ok = self.report.problems.is_empty();
        self.report
    }
}

/// Check every invariant. Reads only, in one transaction so the parts
/// agree.
pub(crate) fn check(tx: &Transaction<'_>) -> Result<CheckReport, Error> {
    let mut c = Collector::default();
    let r = integrity(tx, &mut c);
    c.attempt(Invariant::Integrity, "the file's integrity", r)?;
    let s = match Session::load(tx) {
        Ok(s) => s,
        Err(e @ Error::Busy { .. }) => return Err(e),
        Err(e) => {
            c.add(
                Invariant::Engine,
                format!("fieldsync's own tables cannot be read: {e}"),
            );
            return Ok(c.finish());
        }
    };
    c.report.origins = s.sites.all().len() as u64;
    for t in s.catalog.tables() {
        c.report.tables += 1;
        if !table_shape_ok(tx, t, &mut c)? {
            continue;
        }
        let r = triggers(tx, t, &mut c);
        c.attempt(
            Invariant::Triggers,
            &format!("the triggers of table '{}'", t.name),
            r,
        )?;
        let r = rows(tx, &s.sites, t, &mut c);
        c.attempt(
            Invariant::Rows,
            &format!("the rows of table '{}'", t.name),
            r,
        )?;
    }
    let r = references(tx, &mut c);
    c.attempt(Invariant::References, "the change log's references", r)?;
    let r = watermarks(tx, &s, &mut c);
    c.attempt(Invariant::Watermarks, "the watermarks", r)?;
    let r = pending(tx, &mut c);
    c.attempt(Invariant::Pending, "the captured changes", r)?;
    let r = clock(tx, &s, &mut c);
    c.attempt(Invariant::Clock, "the clock", r)?;
    // The clock's warnings, unless the clock is broken already (a clock
    // behind the log is also behind what peers showed: said once).
    if !c.per.contains_key(&Invariant::Clock) {
        if let Ok(clock) = crate::admin::clock::clock_status(tx) {
            c.report.warnings = clock.warnings;
        }
    }
    Ok(c.finish())
}

fn integrity(conn: &Connection, c: &mut Collector) -> Result<(), Error> {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let lines = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if lines != ["ok"] {
        for line in lines {
            c.add(
                Invariant::Integrity,
                format!("PRAGMA integrity_check: {line}"),
            );
        }
    }
    Ok(())
}

/// False if the table cannot be checked further (it is gone or reshaped).
fn table_shape_ok(conn: &Connection, t: &TrackedTable, c: &mut Collector) -> Result<bool, Error> {
    match check_table_live(conn, t) {
        // A new column not followed yet is the app evolving, not damage:
        // export and import say to run `track`.
        Ok(()) | Err(Error::Track(TrackError::SchemaChanged { .. })) => Ok(true),
        Err(e @ Error::Busy { .. }) => Err(e),
        Err(e) => {
            c.add(
                Invariant::Schema,
                format!("tracked table '{}': {e}", t.name),
            );
            Ok(false)
        }
    }
}

/// The capture triggers of a table against those `track` would install
/// now. A trigger under the name an older fieldsync gave it (from table
/// and column names) with that fieldsync's text for it is the same trigger:
/// it captures the same writes, and the next `track` renames it. Both names
/// at once would capture each write twice.
fn triggers(conn: &Connection, t: &TrackedTable, c: &mut Collector) -> Result<(), Error> {
    let expected = crate::local::capture::expected_triggers(conn, t)?;
    let mut stmt = conn.prepare_cached(
        "SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ?1 COLLATE NOCASE \
         AND name LIKE 'fieldsync\\_%' ESCAPE '\\'",
    )?;
    let existing: Vec<(String, Option<String>)> = stmt
        .query_map([&t.name], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let found = |name: &str| {
        existing
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, sql)| sql.as_deref())
    };
    let remedy = format!(
        "`fieldsync track --db {} {}` reinstalls the triggers",
        crate::catalog::store::db_arg(conn),
        quote_arg(&t.name)
    );
    for trigger in &expected {
        let name = &trigger.name;
        let records = what_trigger_records(&trigger.fires);
        match (found(name), found(&trigger.legacy_name)) {
            (None, None) => c.add(
                Invariant::Triggers,
                format!(
                    "table '{}' lacks the capture trigger '{name}', so {records} are not recorded; {remedy} \
                     (writes made meanwhile were not captured)",
                    t.name,
                ),
            ),
            (Some(_), Some(_)) => c.add(
                Invariant::Triggers,
                format!(
                    "table '{}' has two capture triggers for {records}, '{name}' and '{}' (the name an older \
                     fieldsync gave it), so each is recorded twice; {remedy}",
                    t.name, trigger.legacy_name
                ),
            ),
            (Some(sql), None) if sql != Some(trigger.sql.as_str()) => c.add(
                Invariant::Triggers,
                format!(
                    "the capture trigger '{name}' of table '{}' is not the one fieldsync installs; {remedy}",
                    t.name
                ),
            ),
            (None, Some(sql)) if sql != Some(trigger.legacy_sql.as_str()) => c.add(
                Invariant::Triggers,
                format!(
                    "the capture trigger '{}' of table '{}' is not the one fieldsync installs; {remedy}",
                    trigger.legacy_name, t.name
                ),
            ),
            _ => {}
        }
    }
    for (name, _) in &existing {
        let known = expected.iter().any(|trigger| {
            name.eq_ignore_ascii_case(&trigger.name)
                || name.eq_ignore_ascii_case(&trigger.legacy_name)
        });
        if !known {
            c.add(
                Invariant::Triggers,
                format!(
                    "table '{}' has a trigger '{name}' named like fieldsync's that fieldsync does not install",
                    t.name
                ),
            );
        }
    }
    Ok(())
}

fn what_trigger_records(fires: &Fires) -> String {
    match fires {
        Fires::Insert => "its inserts".to_owned(),
        Fires::Delete => "its deletes".to_owned(),
        Fires::Rekey => "changes of its key".to_owned(),
        Fires::Update { column, .. } => format!("updates of its column '{column}'"),
    }
}

fn quote_arg(name: &str) -> String {
    if name
        .chars()
        .all(|ch| ch.is_alphanumeric() || "-_.".contains(ch))
    {
        name.to_owned()
    } else {
        format!("'{}'", name.replace('\'', "'\\''"))
    }
}

/// One entry of a row in the log, as stored.
struct LogEntry {
    origin: i64,
    seq: i64,
    cl: i64,
    cols: Vec<u8>,
}

/// One row's entries in the log.
struct LogRow {
    pk: Vec<u8>,
    entries: Vec<LogEntry>,
}

/// What the log says of a well-formed row: its causal length, odd while
/// the row exists.
#[derive(Debug, Clone, Copy)]
struct InLog {
    cl: i64,
}

impl InLog {
    fn live(self) -> bool {
        self.cl % 2 == 1
    }
}

/// The well-formed rows of a table in the log, by key.
type LogStates = HashMap<Vec<u8>, InLog>;

/// The keys an app table holds.
#[derive(Default)]
struct AppRows {
    /// Rows by identity (as the log keys them).
    present: HashSet<Vec<u8>>,
    /// For tables keyed by local numbers, the local numbers (encoded).
    locals: HashSet<Vec<u8>>,
}

/// Check each row state of a table in the log, then compare it with the app
/// table.
fn rows(
    conn: &Connection,
    sites: &Sites,
    t: &TrackedTable,
    c: &mut Collector,
) -> Result<(), Error> {
    let states = log_states(conn, sites, t, c)?;
    // A table without a key after a schema change or VACUUM (which may
    // renumber its rowids): the next stamp maps its rows again by content,
    // so its rows cannot be compared with the map until then.
    if t.identity == crate::catalog::layout::Identity::Content {
        let saved: Option<i64> = crate::catalog::site::meta_get(conn, "schema_cookie")?;
        if saved != Some(crate::local::stamp::schema_cookie(conn)?) {
            return Ok(());
        }
    }
    let waiting = waiting_keys(conn, t)?;
    let app = app_rows(conn, t, c, &states, &waiting)?;
    if t.identity.mapped() {
        identity_map(conn, t, c, &states, &app, waiting.is_empty())?;
    }
    // A row live in the log but gone from the table: unless captured
    // changes of this table wait (an `INSERT OR REPLACE` deletes without a
    // trigger, and the next stamp records it), that deletion was lost.
    if waiting.is_empty() {
        missing_rows(t, c, &states, &app);
    }
    Ok(())
}

/// Read a table's entries in the log row by row, checking each row state;
/// the well-formed ones are returned.
fn log_states(
    conn: &Connection,
    sites: &Sites,
    t: &TrackedTable,
    c: &mut Collector,
) -> Result<LogStates, Error> {
    let mut states = LogStates::new();
    let mut stmt = conn.prepare_cached(
        "SELECT pk, origin, seq, cl, cols FROM fieldsync_log WHERE tbl = ?1 ORDER BY pk",
    )?;
    let mut q = stmt.query([t.id])?;
    let mut current: Option<LogRow> = None;
    while let Some(r) = q.next()? {
        c.report.log_entries += 1;
        let pk: Vec<u8> = r.get(0)?;
        let entry = LogEntry {
            origin: r.get(1)?,
            seq: r.get(2)?,
            cl: r.get(3)?,
            cols: r.get(4)?,
        };
        match current.as_mut() {
            Some(row) if row.pk == pk => row.entries.push(entry),
            _ => {
                if let Some(done) = current.take() {
                    log_row(sites, t, done, c, &mut states);
                }
                current = Some(LogRow {
                    pk,
                    entries: vec![entry],
                });
            }
        }
    }
    if let Some(done) = current.take() {
        log_row(sites, t, done, c, &mut states);
    }
    Ok(states)
}

/// Keys with captured changes waiting, which the next stamp reconciles
/// (for tables keyed by local numbers, the local number), encoded.
fn waiting_keys(conn: &Connection, t: &TrackedTable) -> Result<HashSet<Vec<u8>>, Error> {
    let n = t.sql_key_len();
    let key_cols = (0..n)
        .map(|i| format!("k{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut waiting = HashSet::new();
    let mut stmt = conn.prepare(&format!(
        "SELECT {key_cols} FROM fieldsync_pending WHERE t = ?1"
    ))?;
    let mut q = stmt.query([t.id])?;
    while let Some(r) = q.next()? {
        waiting.insert(encode_key(&key_of(r, n)?));
    }
    Ok(waiting)
}

/// The first `n` columns of a result row, as a key.
fn key_of(r: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<Vec<Value>> {
    (0..n).map(|i| r.get_ref(i).map(Value::from_ref)).collect()
}

/// Compare each row of the app table with the log: a row there must be
/// live in the log, unless captured changes of it wait.
fn app_rows(
    conn: &Connection,
    t: &TrackedTable,
    c: &mut Collector,
    states: &LogStates,
    waiting: &HashSet<Vec<u8>>,
) -> Result<AppRows, Error> {
    let n = t.sql_key_len();
    let table_keys = t
        .sql_key()
        .iter()
        .map(|k| quote_ident(k))
        .collect::<Vec<_>>()
        .join(", ");
    let mut stmt = conn.prepare(&format!(
        "SELECT {table_keys} FROM {}",
        quote_ident(&t.name)
    ))?;
    let mut q = stmt.query([])?;
    let mut app = AppRows::default();
    while let Some(r) = q.next()? {
        c.report.rows += 1;
        let key = key_of(r, n)?;
        if key.contains(&Value::Null) {
            // Not replicated, by design (track and stamp warn about them).
            continue;
        }
        let sql_key = encode_key(&key);
        let pk = if t.identity.mapped() {
            app.locals.insert(sql_key.clone());
            match crate::catalog::identity::gid_of(conn, t.id, &key[0])? {
                Some(gid) => gid,
                None if waiting.contains(&sql_key) => continue,
                None => {
                    c.add(
                        Invariant::Rows,
                        format!(
                            "table '{}' row {} ({}) exists but fieldsync_ids gives it no identity and no \
                             captured change of it is waiting: its insert was not captured",
                            t.name,
                            t.sql_key()[0],
                            key_literal(&key)
                        ),
                    );
                    continue;
                }
            }
        } else {
            sql_key.clone()
        };
        if !waiting.contains(&sql_key) {
            app_row_in_log(t, c, states.get(&pk).copied(), &key);
        }
        app.present.insert(pk);
    }
    Ok(app)
}

/// A row the app table holds, and what the log says of it.
fn app_row_in_log(t: &TrackedTable, c: &mut Collector, state: Option<InLog>, key: &[Value]) {
    match state {
        None => c.add(
            Invariant::Rows,
            format!(
                "table '{}' row ({}) exists but the change log has no record of it and no captured \
                 change of it is waiting: its insert was not captured",
                t.name,
                key_literal(key)
            ),
        ),
        Some(state) if !state.live() => c.add(
            Invariant::Rows,
            format!(
                "table '{}' row ({}) exists but the change log records it as deleted (causal length {})",
                t.name,
                key_literal(key),
                state.cl
            ),
        ),
        Some(_) => {}
    }
}

/// The identity map names only rows the log holds as live and, unless
/// captured changes wait (`settled`), the table holds.
fn identity_map(
    conn: &Connection,
    t: &TrackedTable,
    c: &mut Collector,
    states: &LogStates,
    app: &AppRows,
    settled: bool,
) -> Result<(), Error> {
    let mut stmt = conn.prepare("SELECT gid, local FROM fieldsync_ids WHERE tbl = ?1")?;
    let mut q = stmt.query([t.id])?;
    while let Some(r) = q.next()? {
        let gid: Vec<u8> = r.get(0)?;
        let local: Value = r.get(1)?;
        let shown = decode_key(&gid)
            .map(|k| key_literal(&k))
            .unwrap_or_else(|_| hex(&gid));
        if !states.get(&gid).is_some_and(|s| s.live()) {
            c.add(
                Invariant::Rows,
                format!(
                    "table '{}': fieldsync_ids maps row ({shown}) to {} {local}, but the change log \
                     does not hold that row as live",
                    t.name,
                    t.sql_key()[0]
                ),
            );
        }
        if settled
            && !app
                .locals
                .contains(&encode_key(std::slice::from_ref(&local)))
        {
            c.add(
                Invariant::Rows,
                format!(
                    "table '{}': fieldsync_ids maps row ({shown}) to {} {local}, which the table does not have",
                    t.name,
                    t.sql_key()[0]
                ),
            );
        }
    }
    Ok(())
}

/// Rows live in the log but missing from the table, in key order.
fn missing_rows(t: &TrackedTable, c: &mut Collector, states: &LogStates, app: &AppRows) {
    let mut missing: Vec<&Vec<u8>> = states
        .iter()
        .filter(|(pk, state)| state.live() && !app.present.contains(*pk))
        .map(|(pk, _)| pk)
        .collect();
    missing.sort();
    for pk in missing {
        let key = decode_key(pk)
            .map(|k| key_literal(&k))
            .unwrap_or_else(|_| "?".into());
        c.add(
            Invariant::Rows,
            format!(
                "table '{}' row ({key}) is live in the change log but missing from the table; if it was \
                 deleted without a trigger (INSERT OR REPLACE), `fieldsync compact` records the deletion",
                t.name
            ),
        );
    }
}

/// Check one row state; record it if it is well formed.
fn log_row(
    sites: &Sites,
    t: &TrackedTable,
    row: LogRow,
    c: &mut Collector,
    states: &mut LogStates,
) {
    let Some(key) = log_key(t, &row.pk, c) else {
        return;
    };
    let name = format!("table '{}' row ({})", t.name, key_literal(&key));
    if encode_key(&key) != row.pk {
        c.add(
            Invariant::LogRows,
            format!("{name}: its key is not stored in canonical form in the change log"),
        );
    }
    let cls: Vec<i64> = row.entries.iter().map(|e| e.cl).collect();
    let cl = cls[0];
    if cls.iter().any(|&x| x != cl) {
        c.add(
            Invariant::LogRows,
            format!("{name} has change-log entries at different causal lengths {cls:?}"),
        );
        return;
    }
    if cl < 1 {
        c.add(
            Invariant::LogRows,
            format!("{name} has causal length {cl} in the change log"),
        );
        return;
    }
    let state = InLog { cl };
    log_entries(sites, t, &name, state, &row.entries, c);
    if !state.live() && row.entries.len() != 1 {
        c.add(
            Invariant::LogRows,
            format!(
                "{name} is deleted (causal length {cl}) but {} changes hold it, not one",
                row.entries.len()
            ),
        );
    }
    states.insert(row.pk, state);
}

/// The key a row is logged under, if it is a key of the table.
fn log_key(t: &TrackedTable, pk: &[u8], c: &mut Collector) -> Option<Vec<Value>> {
    match decode_key(pk) {
        Ok(k)
            if k.len() == t.key_len()
                && !k.contains(&Value::Null)
                && (!t.identity.mapped()
                    || crate::catalog::identity::valid_gid(t.identity, &k)) =>
        {
            Some(k)
        }
        _ => {
            c.add(
                Invariant::LogRows,
                format!(
                    "the change log holds a key of table '{}' that is not a key of it (bytes {})",
                    t.name,
                    hex(pk)
                ),
            );
            None
        }
    }
}

/// The cells of one row's changes: each well formed, within the table,
/// held by one change only, and none but the sentinel in a deleted row.
fn log_entries(
    sites: &Sites,
    t: &TrackedTable,
    name: &str,
    state: InLog,
    entries: &[LogEntry],
    c: &mut Collector,
) {
    let cl = state.cl;
    let mut all = ColSet::new();
    for e in entries {
        let change = format!("change #{} of {}", e.seq, sites.shown(e.origin));
        let cols = match ColSet::from_bytes(&e.cols) {
            Ok(c) => c,
            Err(err) => {
                c.add(
                    Invariant::LogRows,
                    format!("{name}: {change} has a malformed cell set ({err})"),
                );
                continue;
            }
        };
        if cols.is_empty() {
            c.add(
                Invariant::LogRows,
                format!("{name}: {change} holds no cell yet is still in the change log"),
            );
        }
        if cols.max_bit().is_some_and(|b| b > t.cells.len()) {
            c.add(
                Invariant::LogRows,
                format!("{name}: {change} holds a cell the table does not have"),
            );
        }
        if all.intersects(&cols) {
            c.add(
                Invariant::LogRows,
                format!("{name}: {change} holds a cell another change also holds"),
            );
        }
        if !state.live() && cols != ColSet::of(&[SENTINEL]) {
            c.add(
                Invariant::LogRows,
                format!("{name} is deleted (causal length {cl}) but {change} holds cells"),
            );
        }
        all.union_with(&cols);
    }
}

fn references(conn: &Connection, c: &mut Collector) -> Result<(), Error> {
    report_counts(
        conn,
        c,
        Invariant::References,
        "SELECT origin, count(*) FROM fieldsync_log \
         WHERE origin NOT IN (SELECT id FROM fieldsync_sites) GROUP BY origin",
        |origin, n| {
            format!(
                "{n} change-log entries name origin #{origin}, which is not a known instance (fieldsync_sites)"
            )
        },
    )?;
    report_counts(
        conn,
        c,
        Invariant::References,
        "SELECT tbl, count(*) FROM fieldsync_log \
         WHERE tbl NOT IN (SELECT id FROM fieldsync_tables) GROUP BY tbl",
        |tbl, n| format!("{n} change-log entries belong to table #{tbl}, which is not tracked"),
    )
}

/// One problem for each (number, count) pair that `sql`, a `SELECT x,
/// count(*) … GROUP BY x` of rows naming something unknown, returns.
fn report_counts(
    conn: &Connection,
    c: &mut Collector,
    invariant: Invariant,
    sql: &str,
    say: impl Fn(i64, i64) -> String,
) -> Result<(), Error> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (x, n) in rows {
        c.add(invariant, say(x, n));
    }
    Ok(())
}

/// Up to five numbers of a set, for a message.
fn sample(set: &SeqSet) -> String {
    let mut shown = SeqSet::new();
    let mut left = 5u64;
    for &(a, b) in set.ranges() {
        if left == 0 {
            break;
        }
        let n = (b - a + 1).min(left);
        shown.insert_range(a, a + n - 1);
        left -= n;
    }
    if shown.len() < set.len() {
        format!("{shown},…")
    } else {
        shown.to_string()
    }
}

fn watermarks(conn: &Connection, s: &Session, c: &mut Collector) -> Result<(), Error> {
    let have = have_sets(conn, s, c)?;
    log_within_have(conn, s, c, &have)?;
    let peers = peer_names(conn, s, c)?;
    c.report.peers = peers.len() as u64;
    sent_within_have(conn, s, c, &have, &peers)?;
    assumed_readable(conn, s, c, &peers)?;
    lacks_readable(conn, s, c)
}

/// What full exports named for peers count as sent to them until they are
/// heard from: of known peers and origins, and readable.
fn assumed_readable(
    conn: &Connection,
    s: &Session,
    c: &mut Collector,
    peers: &HashMap<i64, String>,
) -> Result<(), Error> {
    let mut stmt = conn.prepare("SELECT peer, origin, seqs FROM fieldsync_assumed")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (peer, origin, seqs) in rows {
        let Some(peer_name) = peers.get(&peer) else {
            c.add(
                Invariant::Watermarks,
                format!("fieldsync_assumed refers to peer #{peer}, which is not known"),
            );
            continue;
        };
        if s.sites.get(origin).is_none() {
            c.add(
                Invariant::Watermarks,
                format!(
                    "what a full export gave peer '{peer_name}' refers to origin #{origin}, which is not a known instance"
                ),
            );
        } else if let Err(e) = seqs.parse::<SeqSet>() {
            c.add(
                Invariant::Watermarks,
                format!(
                    "what a full export gave peer '{peer_name}' of {} is unreadable: {e}",
                    s.sites.shown(origin)
                ),
            );
        }
    }
    Ok(())
}

/// What this instance lacks, and what each peer reported lacking: of known
/// peers and origins, and readable.
fn lacks_readable(conn: &Connection, s: &Session, c: &mut Collector) -> Result<(), Error> {
    let mut stmt = conn.prepare(
        "SELECT NULL, origin, seqs FROM fieldsync_lacks \
         UNION ALL SELECT peer, origin, lacks FROM fieldsync_peer_seqs",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, Option<i64>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (peer, origin, seqs) in rows {
        let whose = match peer {
            None => "this instance".to_owned(),
            Some(p) => format!("peer #{p}"),
        };
        if s.sites.get(origin).is_none() {
            c.add(
                Invariant::Watermarks,
                format!(
                    "what {whose} lacks refers to origin #{origin}, which is not a known instance"
                ),
            );
        } else if let Err(e) = seqs.parse::<SeqSet>() {
            c.add(
                Invariant::Watermarks,
                format!(
                    "what {whose} lacks of {} is unreadable: {e}",
                    s.sites.shown(origin)
                ),
            );
        }
    }
    Ok(())
}

/// What this instance has, per origin (its own changes: its counter less
/// those it lost), each set readable and of a known origin.
fn have_sets(
    conn: &Connection,
    s: &Session,
    c: &mut Collector,
) -> Result<BTreeMap<i64, SeqSet>, Error> {
    let mut have: BTreeMap<i64, SeqSet> = BTreeMap::new();
    let mut stmt = conn.prepare("SELECT origin, seqs FROM fieldsync_have")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (origin, text) in rows {
        if s.sites.get(origin).is_none() {
            c.add(
                Invariant::Watermarks,
                format!("fieldsync_have lists origin #{origin}, which is not a known instance"),
            );
        }
        match text.parse::<SeqSet>() {
            Ok(set) => {
                if origin != s.local_idx {
                    have.insert(origin, set);
                }
            }
            Err(e) => c.add(
                Invariant::Watermarks,
                format!(
                    "what this instance has from {} is unreadable: {e}",
                    &s.sites.shown(origin)
                ),
            ),
        }
    }
    if s.lost.max() > s.seq {
        c.add(
            Invariant::Watermarks,
            format!(
                "this instance records its changes {} as lost, beyond its counter #{}",
                s.lost.minus(&SeqSet::range(1, s.seq)),
                s.seq
            ),
        );
    }
    have.insert(s.local_idx, SeqSet::range(1, s.seq).minus(&s.lost));
    Ok(have)
}

/// Every change in the log is within what the instance has.
fn log_within_have(
    conn: &Connection,
    s: &Session,
    c: &mut Collector,
    have: &BTreeMap<i64, SeqSet>,
) -> Result<(), Error> {
    let mut beyond: BTreeMap<i64, SeqSet> = BTreeMap::new();
    // A change applied in part, the rest waiting for a column or table, is
    // in the log and not received yet (spec/schema.md).
    let partial: BTreeMap<i64, SeqSet> = crate::receive::waiting::waiting_numbers(conn, &s.sites)?
        .into_iter()
        .map(|(o, seqs)| (o, SeqSet::from_numbers(seqs)))
        .collect();
    let mut stmt = conn.prepare("SELECT origin, seq FROM fieldsync_log ORDER BY origin, seq")?;
    let mut q = stmt.query([])?;
    let empty = SeqSet::new();
    while let Some(r) = q.next()? {
        let origin: i64 = r.get(0)?;
        let seq: i64 = r.get(1)?;
        if s.sites.get(origin).is_none() {
            continue; // reported under References
        }
        let held = have.get(&origin).unwrap_or(&empty);
        if seq < 1 {
            c.add(
                Invariant::Watermarks,
                format!(
                    "the change log holds change #{seq} of {}, which is not a change number",
                    &s.sites.shown(origin)
                ),
            );
        } else if !held.contains(seq as u64)
            && !partial.get(&origin).is_some_and(|p| p.contains(seq as u64))
        {
            beyond
                .entry(origin)
                .or_default()
                .insert_range(seq as u64, seq as u64);
        }
    }
    for (origin, set) in beyond.iter().filter(|(_, set)| !set.is_empty()) {
        let message = if *origin == s.local_idx {
            format!(
                "the change log holds {} of this instance (#{}) beyond its counter #{} or recorded \
                 as lost: a number could be handed out twice",
                crate::error::count(set.len(), "change", "changes"),
                sample(set),
                s.seq
            )
        } else {
            format!(
                "the change log holds {} of {} (#{}) that fieldsync_have does not list as received",
                crate::error::count(set.len(), "change", "changes"),
                &s.sites.shown(*origin),
                sample(set)
            )
        };
        c.add(Invariant::Watermarks, message);
    }
    Ok(())
}

/// The peers by id, each bound to a known instance (if bound) and with a
/// readable record of what it lost.
fn peer_names(
    conn: &Connection,
    s: &Session,
    c: &mut Collector,
) -> Result<HashMap<i64, String>, Error> {
    let mut peers: HashMap<i64, String> = HashMap::new();
    let mut stmt = conn.prepare("SELECT id, name, site, lost FROM fieldsync_peers")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (id, name, site, lost) in rows {
        if let Some(site) = site.filter(|site| s.sites.get(*site).is_none()) {
            c.add(
                Invariant::Watermarks,
                format!("peer '{name}' is bound to instance #{site}, which is not known"),
            );
        }
        if let Err(e) = lost.parse::<SeqSet>() {
            c.add(
                Invariant::Watermarks,
                format!("what peer '{name}' reported lost is unreadable: {e}"),
            );
        }
        peers.insert(id, name);
    }
    Ok(peers)
}

/// Each peer's watermarks: of known peers and origins, readable, and
/// nothing recorded as sent that this instance does not have.
fn sent_within_have(
    conn: &Connection,
    s: &Session,
    c: &mut Collector,
    have: &BTreeMap<i64, SeqSet>,
    peers: &HashMap<i64, String>,
) -> Result<(), Error> {
    let mut stmt = conn.prepare("SELECT peer, origin, acked, sent FROM fieldsync_peer_seqs")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (peer, origin, acked, sent) in rows {
        let Some(peer_name) = peers.get(&peer) else {
            c.add(
                Invariant::Watermarks,
                format!("fieldsync_peer_seqs refers to peer #{peer}, which is not known"),
            );
            continue;
        };
        if s.sites.get(origin).is_none() {
            c.add(
                Invariant::Watermarks,
                format!(
                    "the watermarks of peer '{peer_name}' refer to origin #{origin}, which is not a known instance"
                ),
            );
            continue;
        }
        let origin_name = &s.sites.shown(origin);
        if let Err(e) = acked.parse::<SeqSet>() {
            c.add(
                Invariant::Watermarks,
                format!("what peer '{peer_name}' acknowledged of {origin_name} is unreadable: {e}"),
            );
        }
        match sent.parse::<SeqSet>() {
            Err(e) => c.add(
                Invariant::Watermarks,
                format!("what was sent to peer '{peer_name}' of {origin_name} is unreadable: {e}"),
            ),
            Ok(sent) => {
                let extra = sent.minus(have.get(&origin).unwrap_or(&SeqSet::new()));
                if !extra.is_empty() {
                    c.add(
                        Invariant::Watermarks,
                        format!(
                            "peer '{peer_name}' is recorded as sent {} #{} of {origin_name}, which this \
                             instance does not have",
                            if extra.len() == 1 { "change" } else { "changes" },
                            sample(&extra)
                        ),
                    );
                }
            }
        }
    }
    Ok(())
}

fn pending(conn: &Connection, c: &mut Collector) -> Result<(), Error> {
    c.report.captured_unstamped = crate::local::capture::pending_count(conn)?;
    report_counts(
        conn,
        c,
        Invariant::Pending,
        "SELECT t, count(*) FROM fieldsync_pending \
         WHERE t NOT IN (SELECT id FROM fieldsync_tables) GROUP BY t",
        |t, n| {
            format!(
                "{} to table #{t}, which is not tracked; {} be dropped",
                crate::error::count(
                    n as u64,
                    "captured change belongs",
                    "captured changes belong"
                ),
                if n == 1 { "it would" } else { "they would" }
            )
        },
    )?;
    let bad: i64 = conn.query_row(
        "SELECT count(*) FROM fieldsync_pending WHERE op NOT IN (1, 2, 3)",
        [],
        |r| r.get(0),
    )?;
    if bad > 0 {
        c.add(
            Invariant::Pending,
            format!(
                "{} an unknown operation code",
                crate::error::count(bad as u64, "captured change has", "captured changes have")
            ),
        );
    }
    Ok(())
}

fn clock(conn: &Connection, s: &Session, c: &mut Collector) -> Result<(), Error> {
    if s.seq > MAX_SEQ {
        c.add(
            Invariant::Clock,
            "this instance's change counter is negative".to_owned(),
        );
    }
    let mut stmt = conn.prepare("SELECT hlc FROM fieldsync_log")?;
    let newest = stmt
        .query_map([], |r| r.get::<_, i64>(0))?
        .try_fold(Hlc::default(), |m, h| h.map(|h| m.max(Hlc::from_sql(h))))?;
    // The stored value: the session's clock already moved past it.
    let stored = Hlc::from_sql(crate::catalog::site::meta_require(conn, "clock")?);
    if newest > stored {
        c.add(
            Invariant::Clock,
            format!(
                "the clock ({stored}) is behind the newest change in the log ({newest}): new changes could \
                 rank below changes already here"
            ),
        );
    }
    Ok(())
}
