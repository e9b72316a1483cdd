//! Import: replaying a bundle's records into the app's tables with the
//! merge rules of [`crate::base::merge`], together with the watermark
//! updates, in the caller's write transaction (which [`import`] takes).
//!
//! Before any record is applied the header is checked against the tracked
//! schema (table by table, column by column) and local captured changes are
//! stamped, so they are ordered before the remote clocks they had not seen.
//! Every record is validated against its header (known table, columns, change
//! numbers inside the declared ranges) before it can touch a row. Writes are
//! made with triggers and foreign-key enforcement off on this connection (see
//! [`crate::Instance`]), so they are not captured as local changes, the app's
//! own triggers do not re-run effects that the origin already replicated, and
//! rows may arrive children first.
//!
//! A record the database refuses (a UNIQUE value another row holds, NOT
//! NULL, CHECK) or that would leave a dangling reference ([`crate::catalog::foreign`])
//! is retried once the rest of the bundle is in, then quarantined
//! ([`crate::receive::settle`], [`crate::receive::quarantine`]); held
//! changes from earlier imports are retried too. Values that lose a merge
//! to a concurrent change are logged ([`crate::receive::conflicts`]).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;

use crate::base::colset::{ColSet, SENTINEL};
use crate::base::hlc::{Hlc, now_unix_ms};
use crate::base::merge::Version;
use crate::base::seqset::SeqSet;
use crate::base::site_id::SiteId;
use crate::base::value::{Value, encode_key};
use crate::bundle::format::{OriginSeqs, TableDef, VersionRecord};
use crate::bundle::reader::Signer;
use crate::bundle::{BundleReader, Header, RowRecord};
use crate::catalog::layout::Identity;
use crate::catalog::peers::{
    add_have, bind_sender, have_all, known_all, missing, record_acks, save_lacks, touch,
};
use crate::catalog::refs::RefFk;
use crate::catalog::schema::Affinity;
use crate::catalog::session::Session;
use crate::catalog::site::{meta_delete, meta_set};
use crate::catalog::store::data_version;
use crate::catalog::tracked::TrackedTable;
use crate::error::{BundleError, Error, ImportError};
use crate::receive::applier::{Applier, TableImport};
use crate::receive::apply::{Applied, apply};
use crate::receive::quarantine::{Change, Held, Reason, Refusal, held_count};
use crate::receive::waiting::Waiting;
use crate::receive::waiting::not_received as held_numbers;

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// The sender's name.
    #[serde(rename = "sender_instance")]
    pub from: String,
    /// The sender's site id.
    #[serde(rename = "sender_site")]
    pub from_site_id: String,
    /// True if it was a full export.
    pub full: bool,
    /// Row records in the bundle.
    pub changes: u64,
    /// Records that changed a row.
    pub applied: u64,
    /// Records skipped: already known or older.
    pub skipped: u64,
    /// Of the skipped, already known.
    pub known: u64,
    /// Of the skipped, older than what is here.
    pub older: u64,
    /// Records of this bundle the database refused, kept in quarantine.
    pub quarantined: u64,
    /// Changes quarantined by earlier imports tried again (those something
    /// they wait for may have changed, spec/quarantine.md).
    pub retried: u64,
    /// Changes quarantined by earlier imports that fit now and were applied.
    pub released: u64,
    /// Changes in quarantine after this import, in all.
    pub held: u64,
    /// Values that lost to a concurrent change, added to the conflict log.
    pub overwritten: u64,
    /// Records of this bundle with values for a column or table this
    /// database does not have yet, kept until it does (spec/schema.md).
    pub waiting: u64,
    /// Values kept earlier for a column or table that is here now, applied
    /// by this import (one per row).
    pub waited: u64,
    /// Per table.
    pub tables: Vec<TableImport>,
    /// Local captured changes folded into the log first.
    pub captured: u64,
    /// Change numbers now missing, per origin name, where more went missing
    /// with this import: numbers below the highest received, or that the
    /// sender said it has, not received here (a bundle was skipped, lost or
    /// overwritten). This instance's next bundle reports them, and whoever
    /// sent them sends them again.
    pub gaps: BTreeMap<String, String>,
    /// Things worth telling the operator.
    pub warnings: Vec<String>,
    /// Write transactions the import took.
    pub write_transactions: u64,
    /// The longest of them, in milliseconds: how long an app's write could
    /// have waited for this import.
    pub longest_write_ms: u64,
    /// Of the quarantined, the changes stamped further ahead of this
    /// computer's clock than the bound, held "from the future"
    /// (spec/trust.md, "The clock bound").
    pub from_the_future: u64,
}

/// What `fieldsync import` did with its files, as `--json` prints it: the
/// sums over the files (and the quarantine after the last), then each
/// file's report.
#[derive(Debug, Clone, Serialize)]
pub struct ImportSummary {
    /// Records that changed a row.
    pub applied: u64,
    /// Records skipped: already known or older.
    pub skipped: u64,
    /// Of the skipped, already known.
    pub known: u64,
    /// Of the skipped, older than what is here.
    pub older: u64,
    /// Row records in the bundles.
    pub changes: u64,
    /// Records the database refused, kept in quarantine.
    pub quarantined: u64,
    /// Changes quarantined by earlier imports tried again.
    pub retried: u64,
    /// Of those, applied now.
    pub released: u64,
    /// Values that lost to a concurrent change.
    pub overwritten: u64,
    /// Changes in quarantine after the last file.
    pub held: u64,
    /// Records with values kept for a column or table not here yet.
    pub waiting: u64,
    /// Rows applied that had waited for one.
    pub waited: u64,
    /// Write transactions in all.
    pub write_transactions: u64,
    /// The longest of them, in milliseconds.
    pub longest_write_ms: u64,
    /// Of the quarantined, the changes held "from the future".
    pub from_the_future: u64,
    /// Each file's report, in the order applied.
    pub files: Vec<FileImport>,
    /// Parts of split bundles kept until their siblings come.
    pub kept_parts: Vec<crate::receive::parts::KeptPart>,
    /// Bundles joined from their parts (and imported: in `files`).
    pub joined: Vec<crate::receive::parts::JoinedParts>,
}

/// One file of an import.
#[derive(Debug, Clone, Serialize)]
pub struct FileImport {
    /// The file as given.
    pub file: String,
    /// What its import did.
    pub report: ImportReport,
}

impl ImportSummary {
    /// The sums of `reports`, the imports of `files` in that order;
    /// `atomic`: all the files were applied in one transaction.
    pub fn new(files: &[std::path::PathBuf], reports: &[ImportReport], atomic: bool) -> Self {
        let sum = |get: fn(&ImportReport) -> u64| reports.iter().map(get).sum::<u64>();
        ImportSummary {
            applied: sum(|r| r.applied),
            skipped: sum(|r| r.skipped),
            known: sum(|r| r.known),
            older: sum(|r| r.older),
            changes: sum(|r| r.changes),
            quarantined: sum(|r| r.quarantined),
            retried: sum(|r| r.retried),
            released: sum(|r| r.released),
            overwritten: sum(|r| r.overwritten),
            held: reports.last().map(|r| r.held).unwrap_or(0),
            waiting: sum(|r| r.waiting),
            waited: sum(|r| r.waited),
            write_transactions: if atomic {
                1
            } else {
                sum(|r| r.write_transactions)
            },
            longest_write_ms: reports
                .iter()
                .map(|r| r.longest_write_ms)
                .max()
                .unwrap_or(0),
            from_the_future: sum(|r| r.from_the_future),
            kept_parts: Vec::new(),
            joined: Vec::new(),
            files: files
                .iter()
                .zip(reports)
                .map(|(f, report)| FileImport {
                    file: f.display().to_string(),
                    report: report.clone(),
                })
                .collect(),
        }
    }
}

/// What a retry of the quarantine did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetryReport {
    /// Held changes tried again.
    pub retried: u64,
    /// Held changes applied and removed from quarantine.
    pub released: u64,
    /// Changes still held.
    pub held: u64,
    /// Values that lost to a concurrent change, added to the conflict log.
    pub overwritten: u64,
    /// Of those still held, the changes from the future (stamped further
    /// ahead of this computer's clock than the bound).
    pub from_the_future: u64,
}

/// A bundle table resolved against the local catalog.
pub(crate) struct Mapped {
    /// Where its records go.
    to: MappedTo,
    /// Bundle bit → local bit (index 0 is the sentinel); `None` for a
    /// column not tracked here, whose values wait.
    bits: Vec<Option<usize>>,
    /// The bundle's column names: bundle bit `i` is `names[i - 1]`.
    names: Vec<String>,
    /// Affinity of each local key column ([`crate::catalog::keyform`]).
    key_affinity: Vec<Affinity>,
    /// Bundle bit → the table the tagged reference in that cell refers to.
    refs: Vec<Option<RefTarget>>,
}

/// Where a bundle table's records go.
enum MappedTo {
    /// This tracked table (its index in the catalog).
    Here(usize),
    /// Nowhere yet: the table is not tracked here, and its records wait
    /// ([`crate::receive::waiting`]). The table as the bundle describes it.
    Waits(TrackedTable),
}

impl Mapped {
    /// The catalog index of the table, if it is tracked here.
    fn here(&self) -> Option<usize> {
        match self.to {
            MappedTo::Here(i) => Some(i),
            MappedTo::Waits(_) => None,
        }
    }
}

/// A record split by what this instance has: the change to apply now
/// (every cell whose column is here), and what waits for a column or
/// table that is not.
pub(crate) struct Prepared {
    change: Option<Change>,
    waiting: Option<Waiting>,
}

impl Prepared {
    /// Every change number the record carries, with its clock and the key
    /// it is filed under.
    fn numbers(&self) -> Vec<(SiteId, u64, Hlc, &[u8])> {
        let mut out: Vec<(SiteId, u64, Hlc, &[u8])> = Vec::new();
        if let Some(c) = &self.change {
            out.extend(
                c.versions
                    .iter()
                    .map(|v| (v.site, v.seq, v.hlc, c.pk.as_slice())),
            );
        }
        if let Some(w) = &self.waiting {
            for (site, seq, hlc) in w.held.numbers() {
                if !out.iter().any(|(s, n, ..)| *s == site && *n == seq) {
                    out.push((site, seq, hlc, w.pk.as_slice()));
                }
            }
        }
        out
    }
}

/// The table a tagged reference refers to: its name, its identity at the
/// sender, its key length here.
type RefTarget = (String, Identity, usize);

/// The header's origins as this instance numbers them
/// (`fieldsync_sites`), and the change numbers it declares.
struct Origins {
    /// Per origin of the header, its local number and id if known here.
    local: Vec<Option<(i64, SiteId)>>,
    /// The sender's local number.
    sender: i64,
    /// The changes the bundle covers, per origin.
    covers: BTreeMap<i64, SeqSet>,
    /// The sender's seen-vector.
    seen: BTreeMap<i64, SeqSet>,
    /// What the sender says it lacks, of origins known here.
    lacks: BTreeMap<i64, SeqSet>,
}

/// Check a bundle's header against this instance before anything is
/// applied: its signer may send it ([`crate::receive::trust::admit`]), not
/// our own bundle, and every table and column it carries matches the
/// tracked schema.
pub(crate) fn preflight(
    conn: &Connection,
    s: &Session,
    header: &Header,
    signer: Signer,
) -> Result<Vec<Mapped>, Error> {
    crate::receive::trust::admit(conn, s, header, signer)?;
    crate::receive::recipients::check(conn, s, header, signer)?;
    crate::receive::claims::check(conn, s, header, signer, None)?;
    preflight_tables(conn, s, header)
}

/// [`preflight`] but for the signer, already admitted.
fn preflight_tables(conn: &Connection, s: &Session, header: &Header) -> Result<Vec<Mapped>, Error> {
    if header.sender.id == s.local {
        return Err(ImportError::FromSelf {
            name: s.name.clone(),
        }
        .into());
    }
    let refs = crate::catalog::refs::load(conn, s.catalog.tables())?;
    header
        .tables
        .iter()
        .map(|def| map_table(conn, s, def, &refs))
        .collect()
}

/// How an import takes SQLite's write lock (spec/merge.md, "Write
/// transactions").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportOptions {
    /// Aim for write transactions no longer than this (the commit
    /// included); `None` applies each bundle in one transaction.
    pub max_write: Option<Duration>,
    /// Time left between two write transactions of one import, so that an
    /// app waiting for the lock takes it (SQLite's busy handler polls at
    /// most 50 ms apart for its first ~230 ms of waiting).
    pub pause: Duration,
    /// Refuse the bundle unless it is signed by this key (a network
    /// request's bundle must be the requester's own, spec/network.md).
    pub expect_signer: Option<[u8; 32]>,
    /// How the bundle arrived, as the sync journal records it (a file by
    /// default; the network code says [`Via::Network`]).
    pub via: crate::catalog::journal::Via,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            max_write: Some(Duration::from_millis(DEFAULT_MAX_WRITE_MS)),
            pause: Duration::from_millis(PAUSE_MS),
            expect_signer: None,
            via: crate::catalog::journal::Via::File,
        }
    }
}

/// The default bound on one write transaction of an import.
pub const DEFAULT_MAX_WRITE_MS: u64 = 180;

/// The pause between two write transactions of one import: longer than the
/// longest gap between two polls of a waiting app's busy handler during
/// the first ~230 ms of its wait, so an app that waited through a whole
/// transaction gets the lock in the pause after it (spec/merge.md, "Write
/// transactions").
const PAUSE_MS: u64 = 55;

/// The least time a write transaction spends applying records, whatever
/// its commits cost, so an import always moves on.
const MIN_APPLY_MS: u64 = 10;

/// `fieldsync_meta` keys (this, a colon, the sender's site id) of imports
/// stopped between two of their write transactions: the sender's name and
/// the records applied so far.
const INTERRUPTED_KEY: &str = "import_interrupted";

/// Refuse a bundle `opts` says must be signed by another key.
pub(crate) fn check_signer_is(
    opts: &ImportOptions,
    header: &Header,
    signer: Signer,
) -> Result<(), Error> {
    let Some(expected) = opts.expect_signer else {
        return Ok(());
    };
    if signer.key.map(|k| k.to_bytes()) == Some(expected) {
        return Ok(());
    }
    Err(ImportError::NotFromRequester {
        expected: crate::catalog::keys::signing_fingerprint(&expected),
        sender: format!("{} ({})", header.sender.name, header.sender.id),
    }
    .into())
}

/// The [`INTERRUPTED_KEY`] of an import from `sender`.
fn interrupted_key(sender: &SiteId) -> String {
    format!("{INTERRUPTED_KEY}:{sender}")
}

/// Interrupted imports: per sender, its name and the records applied.
pub(crate) fn interrupted(conn: &Connection) -> Result<Vec<(String, u64)>, Error> {
    let mut stmt =
        conn.prepare("SELECT value FROM fieldsync_meta WHERE key LIKE ?1 ORDER BY key")?;
    let rows = stmt.query_map([format!("{INTERRUPTED_KEY}:%")], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for text in rows {
        let text = text?;
        let (from, applied) = text.rsplit_once('\t').unwrap_or((text.as_str(), "0"));
        out.push((from.to_owned(), applied.parse().unwrap_or(0)));
    }
    Ok(out)
}

/// Apply one bundle (already checksum-verified and checked by
/// [`check_records`]) in write transactions of about
/// `opts.max_write` each, with a pause between them. Each commit leaves a
/// state the log and the watermarks describe exactly; a crash between two
/// leaves it, and importing the bundle again completes it.
/// `checked` are the tracked tables [`check_records`] checked the records
/// against. `steps` can fix the records per transaction and end the import
/// after a number of transactions, as a crash between them would (tests
/// only). `on_finish` runs in the last transaction, before its commit,
/// with the report (the sync journal's row is written there).
pub(crate) fn import_in_steps<R: Read>(
    conn: &mut Connection,
    reader: BundleReader<R>,
    checked: &[TrackedTable],
    opts: &ImportOptions,
    steps: &Steps,
    on_finish: &dyn Fn(&Transaction<'_>, &ImportReport) -> Result<(), Error>,
) -> Result<Option<ImportReport>, Error> {
    // In WAL mode a commit that fills the log past its bound also copies it
    // into the database (a checkpoint) before it returns; the import checks
    // point in its pauses instead, so its transactions stay short.
    let autocheckpoint: i64 = conn.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
    let result = apply_in_steps(conn, reader, checked, opts, steps, on_finish);
    let restored = conn.execute_batch(&format!("PRAGMA wal_autocheckpoint = {autocheckpoint}"));
    let out = result?;
    restored?;
    Ok(out)
}

fn apply_in_steps<R: Read>(
    conn: &mut Connection,
    reader: BundleReader<R>,
    checked: &[TrackedTable],
    opts: &ImportOptions,
    steps: &Steps,
    on_finish: &dyn Fn(&Transaction<'_>, &ImportReport) -> Result<(), Error>,
) -> Result<Option<ImportReport>, Error> {
    let stop_after = steps.stop_after;
    let mut importing: Option<Importing<R>> = None;
    let mut reader = Some(reader);
    let mut longest = Duration::ZERO;
    let mut commit_cost = Duration::ZERO;
    let mut transactions = 0u64;
    let mut committed_at = 0i64;
    loop {
        if stop_after.is_some_and(|n| transactions as usize >= n) {
            return Ok(None);
        }
        if transactions > 0 {
            make_way(conn, opts.pause, committed_at)?;
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let began = Instant::now();
        let mut s = Session::load(&tx)?;
        let imp = match (importing.as_mut(), reader.take()) {
            (Some(imp), _) => {
                imp.resume(&tx, &mut s)?;
                imp
            }
            (None, Some(r)) => {
                // As the records were checked against.
                if s.catalog.tables() != checked {
                    return Err(ImportError::TrackedChanged {
                        db: crate::catalog::store::db_arg(&tx),
                    }
                    .into());
                }
                importing.insert(Importing::begin(&tx, &mut s, r)?)
            }
            (None, None) => unreachable!("the reader is taken by the first transaction"),
        };
        let deadline = opts.max_write.map(|bound| {
            let apply = bound
                .saturating_sub(commit_cost)
                .max(Duration::from_millis(MIN_APPLY_MS));
            began + apply
        });
        let read_all = imp.apply_until(&tx, &mut s, deadline, steps.records)?;
        transactions += 1;
        if read_all {
            let Some(imp) = importing.take() else {
                unreachable!("an import in progress")
            };
            let mut report = imp.finish(&tx, &mut s)?;
            on_finish(&tx, &report)?;
            tx.commit()?;
            longest = longest.max(began.elapsed());
            report.write_transactions = transactions;
            report.longest_write_ms = longest.as_millis() as u64;
            return Ok(Some(report));
        }
        imp.pause_point(&tx, &mut s)?;
        let committing = Instant::now();
        tx.commit()?;
        commit_cost = committing.elapsed();
        longest = longest.max(began.elapsed());
        committed_at = data_version(conn)?;
    }
}

/// How an import in steps is cut, for tests: `records` per write
/// transaction instead of a time bound, and a stop after `stop_after`
/// transactions, as a crash between two would leave it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Steps {
    pub records: Option<u64>,
    pub stop_after: Option<usize>,
}

/// Pauses an import adds while other connections keep committing, before
/// it takes the lock again anyway.
const MAX_EXTRA_PAUSES: u32 = 2;

/// Between two write transactions of an import: pause; while another
/// connection committed during the last pause (several writers were
/// waiting, and one of them went), pause again, up to
/// [`MAX_EXTRA_PAUSES`] more, so the others go too; then wait for the
/// lock to be free. `committed_at` is [`data_version`] right after the
/// import's commit.
fn make_way(conn: &Connection, pause: Duration, mut committed_at: i64) -> Result<(), Error> {
    let began = Instant::now();
    // WAL mode: copy the log into the database without blocking anyone (a
    // no-op in rollback-journal mode).
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
    std::thread::sleep(pause.saturating_sub(began.elapsed()));
    for _ in 0..MAX_EXTRA_PAUSES {
        let now = data_version(conn)?;
        if now == committed_at {
            break;
        }
        committed_at = now;
        std::thread::sleep(pause);
    }
    take_turn(conn, pause)
}

/// Wait, between two write transactions of an import, until no other
/// connection holds the write lock: look again `pause` later rather than
/// through SQLite's busy handler, whose first polls come a few milliseconds
/// apart and would win the lock back from every other waiting writer. The
/// transaction that follows waits through the busy handler as usual (if a
/// writer came in between, or after the busy timeout here).
fn take_turn(conn: &Connection, pause: Duration) -> Result<(), Error> {
    let busy = Duration::from_secs(crate::error::BUSY_TIMEOUT_SECS);
    let give_up = Instant::now() + busy;
    conn.busy_timeout(Duration::ZERO)?;
    let probed = loop {
        match conn.execute_batch("BEGIN IMMEDIATE") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && Instant::now() < give_up =>
            {
                std::thread::sleep(pause.max(Duration::from_millis(1)));
            }
            other => break other,
        }
    };
    // The probe holds nothing: an empty transaction rolls back at once.
    let ended = if conn.is_autocommit() {
        Ok(())
    } else {
        conn.execute_batch("ROLLBACK")
    };
    conn.busy_timeout(busy)?;
    ended?;
    match probed {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DatabaseBusy =>
        {
            Ok(())
        }
        other => Ok(other?),
    }
}

/// Apply one bundle (already checksum-verified) in the caller's write
/// transaction: all of it or, on an error, nothing.
pub(crate) fn import<R: Read>(
    tx: &Transaction,
    s: &mut Session,
    reader: BundleReader<R>,
) -> Result<ImportReport, Error> {
    let began = Instant::now();
    let mut imp = Importing::begin(tx, s, reader)?;
    imp.apply_until(tx, s, None, None)?;
    let mut report = imp.finish(tx, s)?;
    report.write_transactions = 1;
    report.longest_write_ms = began.elapsed().as_millis() as u64;
    Ok(report)
}

/// Check every record of a bundle against its header and this instance's
/// tables before any is applied, reading only: an import in several write
/// transactions must not commit part of a bundle it would then refuse.
pub(crate) fn check_records<R: Read>(
    conn: &Connection,
    s: &Session,
    mut reader: BundleReader<R>,
) -> Result<(), Error> {
    let header = reader.header().clone();
    let signer = reader.signer();
    let mapped = preflight(conn, s, &header, signer)?;
    let mut body = crate::receive::claims::BodyTops::new();
    let origins = dry_origins(s, &header);
    // Key affinities are converted by SQLite itself, on a private database.
    let scratch = Connection::open_in_memory()?;
    // A change number the bundle gives twice, or that the log here holds
    // for another row or with another clock, fails the import where it is
    // met (spec/merge.md, "Restored instances"): found here, before any
    // transaction commits.
    let mut numbers: HashMap<SiteId, Vec<u64>> = HashMap::new();
    let mut logged =
        conn.prepare_cached("SELECT pk, hlc FROM fieldsync_log WHERE origin = ?1 AND seq = ?2")?;
    // As the import will know itself once it has noticed a restore from a
    // backup (notice_own_restore, which refuses absurd claims first).
    let claimed = [&origins.covers, &origins.seen]
        .map(|numbers| numbers.get(&s.local_idx))
        .into_iter()
        .flatten()
        .map(SeqSet::max)
        .max()
        .unwrap_or(0);
    let own = (s.local, s.seq.max(claimed));
    let reused = |site: &SiteId, seq: u64| -> Error {
        ImportError::SequenceReused {
            origin: s.sites.name_of(site),
            seq,
        }
        .into()
    };
    while let Some(rec) = reader.next_row()? {
        let prepared = prepare(&scratch, rec, &mapped, s.catalog.tables(), &origins, own)?;
        for (site, seq, hlc, pk) in prepared.numbers() {
            numbers.entry(site).or_default().push(seq);
            let top = body.entry(site).or_default();
            *top = (*top).max(seq);
            let Some(origin) = s.sites.idx_of(&site) else {
                continue;
            };
            let here: Option<(Vec<u8>, i64)> = logged
                .query_row(rusqlite::params![origin, seq as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            if here.is_some_and(|(logged_pk, logged_hlc)| {
                logged_pk != pk || Hlc::from_sql(logged_hlc) != hlc
            }) {
                return Err(reused(&site, seq));
            }
        }
    }
    reader.finish()?;
    crate::receive::claims::check(conn, s, &header, signer, Some(&body))?;
    for (site, mut seqs) in numbers {
        seqs.sort_unstable();
        if let Some(w) = seqs.windows(2).find(|w| w[0] == w[1]) {
            return Err(reused(&site, w[0]));
        }
    }
    Ok(())
}

/// An import under way: what carries over from one of its write
/// transactions to the next.
struct Importing<R: Read> {
    reader: BundleReader<R>,
    header: Header,
    mapped: Vec<Mapped>,
    /// The tracked tables when the import began: they must not change
    /// under it.
    tables: Vec<TrackedTable>,
    origins: Origins,
    ap: Applier,
    /// Records refused, to be retried once the rest of the bundle is in:
    /// rows arrive in key order, so a child may come before its parent, or
    /// a row may need a UNIQUE value another row of the bundle frees.
    refused: Vec<(Change, Refusal)>,
    refused_bytes: usize,
    /// The latest clock seen per origin, to name a machine whose clock is
    /// ahead.
    latest: HashMap<SiteId, Hlc>,
    warnings: Vec<String>,
    captured: u64,
    /// Change numbers merged since the last commit, per origin: they join
    /// "have" with it.
    received: BTreeMap<i64, Vec<u64>>,
    /// Records merged so far.
    merged: u64,
    /// Of those, the ones committed by earlier transactions.
    committed: u64,
    /// What was known to be missing when the import began, to report the
    /// gaps it reveals.
    missing_before: BTreeMap<i64, SeqSet>,
    /// Per table of the header, records with values kept waiting.
    waiting: Vec<u64>,
    /// The highest change number of each origin the body carried, for the
    /// claims only the body can bound ([`crate::receive::claims`]).
    body: crate::receive::claims::BodyTops,
}

impl<R: Read> Importing<R> {
    /// The first write transaction: check the header, fold local captured
    /// changes into the log (so they are ordered before the remote clocks
    /// they had not seen), learn the origins.
    fn begin(tx: &Transaction, s: &mut Session, reader: BundleReader<R>) -> Result<Self, Error> {
        let header = reader.header().clone();
        // Who signed it, first: a first contact is pinned in this
        // transaction, so a refused import pins nothing.
        let admission = crate::receive::trust::admit(tx, s, &header, reader.signer())?;
        crate::receive::trust::settle(tx, admission)?;
        // Its encryption key, recorded with the pin (bundles back are
        // encrypted to it).
        if let Some(recipient) = crate::receive::recipients::check(tx, s, &header, reader.signer())?
        {
            crate::receive::recipients::record(tx, &header, &recipient)?;
        }
        // What it claims, against what the origins signed: before anything
        // of it is learnt or recorded.
        let facts = crate::receive::claims::check(tx, s, &header, reader.signer(), None)?;
        crate::receive::claims::record(tx, &facts)?;
        let followed = crate::local::follow::follow_schema(tx, s)?;
        // The schema changes the bundle brings, before its tables are mapped.
        let received =
            crate::receive::schema_changes::receive(tx, s, &header.tables, &header.sender.name)?;
        let mapped = preflight_tables(tx, s, &header)?;
        let mut stamped = crate::local::stamp::stamp_pending(tx, s)?;
        stamped.absorb(followed.stamped);
        stamped.absorb(received.stamped);
        let origins = learn_origins(tx, s, &header)?;
        let mut warnings = followed.notices;
        warnings.extend(received.notices);
        warnings.extend(stamped.warnings());
        notice_own_restore(s, &origins, &header.sender.name, &mut warnings)?;
        let missing_before = missing_now(tx, s)?;
        let mut ap = Applier::new(tx, s, &header.sender.name)?;
        // An import stopped between two transactions did not note which held
        // changes its records woke: this one retries them all.
        if !interrupted(tx)?.is_empty() {
            ap.retry_all = true;
        }
        let mut latest = HashMap::new();
        latest.insert(header.sender.id, Hlc(header.created));
        let header_tables = header.tables.len();
        Ok(Importing {
            reader,
            tables: s.catalog.tables().to_vec(),
            header,
            mapped,
            origins,
            ap,
            refused: Vec::new(),
            refused_bytes: 0,
            latest,
            warnings,
            captured: stamped.captured,
            received: BTreeMap::new(),
            merged: 0,
            committed: 0,
            missing_before,
            waiting: vec![0; header_tables],
            body: crate::receive::claims::BodyTops::new(),
        })
    }

    /// A later write transaction: the app may have written since the last
    /// one, so its captured changes are stamped first; the tracked tables
    /// must be as they were.
    fn resume(&mut self, tx: &Transaction, s: &mut Session) -> Result<(), Error> {
        if s.catalog.tables() != self.tables.as_slice() {
            return Err(ImportError::TrackedChanged {
                db: crate::catalog::store::db_arg(tx),
            }
            .into());
        }
        // The app may have been upgraded meanwhile.
        let followed = crate::local::follow::follow_schema(tx, s)?;
        self.captured += followed.stamped.captured;
        self.warnings.extend(followed.stamped.warnings());
        self.warnings.extend(followed.notices);
        if followed.changed {
            self.tables = s.catalog.tables().to_vec();
            self.mapped = preflight_tables(tx, s, &self.header)?;
            self.ap.forget_sql();
        }
        // Another import may have held changes meanwhile.
        self.ap.refresh_held_tables(tx)?;
        let stamped = crate::local::stamp::stamp_pending(tx, s)?;
        self.captured += stamped.captured;
        self.warnings.extend(stamped.warnings());
        Ok(())
    }

    /// Apply records in order until `deadline`; true once every record is
    /// read. Past a memory budget refused records wait in the quarantine
    /// table instead of memory.
    fn apply_until(
        &mut self,
        tx: &Transaction,
        s: &mut Session,
        deadline: Option<Instant>,
        records: Option<u64>,
    ) -> Result<bool, Error> {
        let mut done = 0u64;
        loop {
            let due = match records {
                Some(n) => done >= n.max(1),
                None => done > 0 && deadline.is_some_and(|d| Instant::now() >= d),
            };
            if due {
                return Ok(false);
            }
            done += 1;
            let Some(rec) = self.reader.next_row()? else {
                return Ok(true);
            };
            let own = (s.local, s.seq);
            let t = rec.table as usize;
            let prepared = prepare(
                tx,
                rec,
                &self.mapped,
                s.catalog.tables(),
                &self.origins,
                own,
            )?;
            for (site, seq, hlc, _) in prepared.numbers() {
                let e = self.latest.entry(site).or_default();
                *e = (*e).max(hlc);
                let top = self.body.entry(site).or_default();
                *top = (*top).max(seq);
            }
            // What waits for a column or table is kept, and its numbers are
            // not received until it is applied.
            let mut waits_for: Vec<(SiteId, u64)> = Vec::new();
            if let Some(w) = &prepared.waiting {
                crate::receive::waiting::keep(tx, w, &self.header.sender.name, now_unix_ms())?;
                if let Some(n) = self.waiting.get_mut(t) {
                    *n += 1;
                }
                waits_for = w
                    .held
                    .numbers()
                    .into_iter()
                    .map(|(s, n, _)| (s, n))
                    .collect();
            }
            let Some(change) = prepared.change else {
                continue;
            };
            // A row with a change in quarantine takes the new change into that
            // entry: applied alone it could leave a partial row.
            let applied = if self.ap.is_held(tx, s, &change)? {
                Applied::Refused(Refusal {
                    reason: Reason::Other,
                    detail: "waits with the change held for this row".into(),
                })
            } else {
                apply(tx, s, &mut self.ap, &change, Some(&self.origins.seen))?
            };
            match applied {
                Applied::Merged(verdict) => {
                    self.ap.count(change.table, verdict);
                    self.merged += 1;
                    for v in &change.versions {
                        if waits_for.contains(&(v.site, v.seq)) {
                            continue;
                        }
                        if let Some(idx) = s.sites.idx_of(&v.site) {
                            self.received.entry(idx).or_default().push(v.seq);
                        }
                    }
                }
                Applied::Refused(refusal) if self.refused_bytes < MAX_DEFERRED_BYTES => {
                    self.refused_bytes += change.size();
                    self.refused.push((change, refusal));
                }
                Applied::Refused(refusal) => self.ap.spill(tx, s, &change, &refusal)?,
            }
        }
    }

    /// Before a commit that is not the last: what was merged joins "have",
    /// the clock moves past what arrived, and the import is marked as under
    /// way, so a crash before the next transaction leaves a state that says
    /// exactly what was applied.
    fn pause_point(&mut self, tx: &Transaction, s: &mut Session) -> Result<(), Error> {
        // Records spilled to the quarantine (past the memory budget) are
        // held once this commits: never beyond the per-sender bound.
        let spilled = self.ap.counts.iter().map(|c| c.quarantined).sum();
        within_bound(tx, &self.header.sender.name, spilled, self.committed)?;
        for (origin, numbers) in std::mem::take(&mut self.received) {
            let set = SeqSet::from_numbers(numbers);
            if origin == s.local_idx {
                s.lost = s.lost.minus(&set);
            } else {
                add_have(tx, origin, &set)?;
            }
        }
        observe_clocks(tx, s, &self.latest, self.ap.applied_max)?;
        meta_set(
            tx,
            &interrupted_key(&self.header.sender.id),
            format!("{}\t{}", self.header.sender.name, self.merged),
        )?;
        self.committed = self.merged;
        s.save(tx)?;
        Ok(())
    }

    /// The last write transaction: retry what was refused, check the
    /// quarantine bound, record the watermarks.
    fn finish(self, tx: &Transaction, s: &mut Session) -> Result<ImportReport, Error> {
        let Importing {
            reader,
            header,
            mapped,
            origins,
            mut ap,
            refused,
            latest,
            mut warnings,
            captured,
            received: _,
            missing_before,
            committed,
            waiting,
            body,
            ..
        } = self;
        // What this transaction merged (`received`, left out above) is in
        // what the bundle covers, which record_watermarks adds to "have".
        let signer = reader.signer();
        let end = reader.finish()?;
        // The claims only the body bounds (origins no statement is known
        // of). The statements this bundle carried are held by now, which
        // bounds nothing more than they did.
        crate::receive::claims::check(tx, s, &header, signer, Some(&body))?;
        let mut refused = refused;
        let waited = retry_waiting(tx, s, &mut ap, &mut refused, false)?;
        ap.settle(tx, s, refused, Some(&origins.seen))?;
        let added = ap.counts.iter().map(|c| c.quarantined).sum();
        within_bound(tx, &header.sender.name, added, committed)?;
        observe_clocks(tx, s, &latest, ap.applied_max)?;
        future_notices(s, &ap, &header, &mut warnings);
        meta_delete(tx, &interrupted_key(&header.sender.id))?;

        let tables: Vec<TableImport> = mapped
            .iter()
            .zip(&waiting)
            .map(|(m, &waits)| {
                let mut counts = match &m.to {
                    MappedTo::Here(i) => ap.counts[*i].clone(),
                    MappedTo::Waits(t) => TableImport {
                        table: t.name.clone(),
                        ..TableImport::default()
                    },
                };
                counts.waiting = waits;
                counts
            })
            .collect();
        let waiting: u64 = waiting.iter().sum();
        if waiting > 0 {
            warnings.push(waiting_notice(tx, &header, &mapped)?);
        }
        let quarantined: u64 = tables.iter().map(|c| c.quarantined).sum();
        // Those held from the future have a line of their own.
        if quarantined > ap.future_held {
            let n = quarantined - ap.future_held;
            let (held, them, they) = if n == 1 {
                (
                    "1 change could not be applied yet and is",
                    "it",
                    "It is retried when something it waits",
                )
            } else {
                (
                    "changes could not be applied yet and are",
                    "them",
                    "They are retried when something they wait",
                )
            };
            let held = if n == 1 {
                held.to_owned()
            } else {
                format!("{n} {held}")
            };
            warnings.push(format!(
                "{held} kept in quarantine; `fieldsync conflicts --db {}` lists {them} and why. {they} for changes",
                crate::catalog::store::db_arg(tx)
            ));
        }
        let report = ImportReport {
            from: header.sender.name.clone(),
            from_site_id: header.sender.id.to_string(),
            full: header.full,
            changes: end.rows,
            applied: tables.iter().map(|c| c.applied).sum(),
            known: tables.iter().map(|c| c.known).sum(),
            older: tables.iter().map(|c| c.older).sum(),
            quarantined,
            retried: ap.retried,
            released: ap.released,
            held: held_count(tx)?,
            overwritten: ap.overwritten,
            waiting,
            waited,
            tables,
            captured,
            warnings,
            from_the_future: ap.future_held,
            ..ImportReport::default()
        };
        let released = std::mem::take(&mut ap.released_numbers);
        record_watermarks(tx, s, &header, &origins, &released, &missing_before, report)
    }
}

/// Apply the values kept for a column or table that is here now
/// ([`crate::receive::waiting`]), with their own clocks; those the database
/// refuses join `refused`, to be settled with the rest. `all`: look at
/// every entry, not only after a schema change. Returns how many applied.
fn retry_waiting(
    tx: &Transaction,
    s: &mut Session,
    ap: &mut Applier,
    refused: &mut Vec<(Change, Refusal)>,
    all: bool,
) -> Result<u64, Error> {
    let mut applied_now = 0;
    for change in crate::receive::waiting::take_ready(tx, s, all)? {
        let applied = if ap.is_held(tx, s, &change)? {
            Applied::Refused(Refusal {
                reason: Reason::Other,
                detail: "waits with the change held for this row".into(),
            })
        } else {
            apply(tx, s, ap, &change, None)?
        };
        match applied {
            Applied::Merged(verdict) => {
                ap.count(change.table, verdict);
                applied_now += 1;
                for v in &change.versions {
                    if let Some(idx) = s.sites.idx_of(&v.site) {
                        ap.released_numbers
                            .entry(idx)
                            .or_default()
                            .insert_range(v.seq, v.seq);
                    }
                }
            }
            Applied::Refused(refusal) => refused.push((change, refusal)),
        }
    }
    Ok(applied_now)
}

/// What an import says when some of its values wait: which tables and
/// columns, and what makes them arrive.
fn waiting_notice(conn: &Connection, header: &Header, mapped: &[Mapped]) -> Result<String, Error> {
    let mut what: Vec<String> = Vec::new();
    for (def, m) in header.tables.iter().zip(mapped) {
        match &m.to {
            MappedTo::Waits(_) => what.push(format!("table '{}'", def.name)),
            MappedTo::Here(_) => {
                for (i, c) in def.cells.iter().enumerate() {
                    if m.bits.get(i + 1).is_some_and(Option::is_none) {
                        what.push(format!("column '{}.{c}'", def.name));
                    }
                }
            }
        }
    }
    Ok(format!(
        "'{}' runs a newer version of the app: values for {} that this database does not have are kept and \
         applied once it has them (`fieldsync schema --db {}` shows the schema changes received)",
        header.sender.name,
        what.join(", "),
        crate::catalog::store::db_arg(conn)
    ))
}

/// The per-sender bound on held changes (spec/quarantine.md), saying what
/// an import in several write transactions keeps when it is reached
/// (`committed`: records merged by its earlier transactions).
fn within_bound(tx: &Transaction, sender: &str, added: u64, committed: u64) -> Result<(), Error> {
    match crate::receive::quarantine::within_bound(tx, sender, added) {
        Err(Error::Import(ImportError::TooManyHeld {
            sender,
            held,
            limit,
            db,
            ..
        })) if committed > 0 => Err(ImportError::TooManyHeld {
            sender,
            held,
            limit,
            kept: format!(
                "the {committed} changes applied by its earlier write transactions are kept (with any it \
                 held then, within the limit); the others were not imported"
            ),
            db,
        }
        .into()),
        other => other,
    }
}

/// [`learn_origins`] without writing: origins not known here get numbers
/// no site has (negative), which is all the checks of a record need.
fn dry_origins(s: &Session, header: &Header) -> Origins {
    let local: Vec<Option<(i64, SiteId)>> = header
        .origins
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let idx = if o.id == s.local {
                s.local_idx
            } else {
                s.sites.idx_of(&o.id).unwrap_or(-(i as i64) - 1)
            };
            Some((idx, o.id))
        })
        .collect();
    let by_local = |lists: &[OriginSeqs]| by_local_number(&local, lists);
    Origins {
        covers: by_local(&header.covers),
        seen: by_local(&header.seen),
        lacks: BTreeMap::new(),
        local,
        sender: 0,
    }
}

/// Per-origin lists of a header keyed by the origins' local numbers
/// (`local`, by header index); origins not numbered here are left out.
fn by_local_number(local: &[Option<(i64, SiteId)>], lists: &[OriginSeqs]) -> BTreeMap<i64, SeqSet> {
    let mut out: BTreeMap<i64, SeqSet> = BTreeMap::new();
    for x in lists {
        if let Some(Some((idx, _))) = local.get(x.origin as usize) {
            out.entry(*idx).or_default().union_with(&x.seqs);
        }
    }
    out
}

/// Learn of the sender and of the origins whose changes the bundle covers
/// or the sender says it has (a relayed origin whose bundle was lost is
/// known to exist, and its changes missing); an origin only listed costs
/// nothing and is not kept. Our own entry is never renamed by a bundle.
fn learn_origins(conn: &Connection, s: &mut Session, header: &Header) -> Result<Origins, Error> {
    let covered: std::collections::HashSet<u32> = header
        .covers
        .iter()
        .chain(&header.seen)
        .filter(|c| !c.seqs.is_empty())
        .map(|c| c.origin)
        .collect();
    let mut local: Vec<Option<(i64, SiteId)>> = Vec::with_capacity(header.origins.len());
    for (i, o) in header.origins.iter().enumerate() {
        let idx = if o.id == s.local {
            Some(s.local_idx)
        } else if covered.contains(&(i as u32)) || o.id == header.sender.id {
            Some(s.sites.intern(conn, o.id, &o.name)?)
        } else {
            s.sites.idx_of(&o.id)
        };
        local.push(idx.map(|idx| (idx, o.id)));
    }
    let sender = s
        .sites
        .intern(conn, header.sender.id, &header.sender.name)?;
    let by_local = |lists: &[OriginSeqs]| by_local_number(&local, lists);
    Ok(Origins {
        covers: by_local(&header.covers),
        seen: by_local(&header.seen),
        lacks: by_local(&header.lacks),
        local,
        sender,
    })
}

/// Move our clock past the newest clock the bundle carried within the
/// clock bound (its `created` included), and past every change applied
/// (a held change released now may be newer); remember each origin's
/// newest clock, believed or not, for `status` and `check`. A clock beyond
/// the bound moves nothing: its changes are held "from the future"
/// (spec/trust.md, "The clock bound").
fn observe_clocks(
    conn: &Connection,
    s: &mut Session,
    latest: &HashMap<SiteId, Hlc>,
    applied_max: Hlc,
) -> Result<(), Error> {
    let now = now_unix_ms();
    let limit = crate::catalog::clocks::future_limit(conn, now)?;
    let believed = latest
        .values()
        .copied()
        .filter(|h| *h <= limit)
        .max()
        .unwrap_or_default();
    s.clock.observe(believed.max(applied_max), now)?;
    for (site, hlc) in latest {
        if let Some(idx) = s.sites.idx_of(site).filter(|i| *i != s.local_idx) {
            crate::catalog::clocks::record_seen(conn, idx, *hlc, now)?;
        }
    }
    Ok(())
}

/// What an import says of the changes it held from the future, and of a
/// bundle written (its `created`) beyond the clock bound.
fn future_notices(s: &Session, ap: &Applier, header: &Header, warnings: &mut Vec<String>) {
    let now = now_unix_ms();
    let name = |site: &SiteId| s.sites.name_of(site);
    if let Some((hlc, origin)) = ap.future_furthest {
        let n = ap.future_held;
        let who = name(&origin);
        let changes = if n == 1 { "change" } else { "changes" };
        let are = if n == 1 { "is" } else { "are" };
        warnings.push(format!(
            "{n} {changes} from '{who}' {are} stamped up to {} ahead of this computer's clock; held until then \
             (`fieldsync conflicts` lists them) — check the date on {who}",
            crate::base::hlc::span(hlc.unix_ms() - now)
        ));
    } else if ap
        .future_limit
        .is_some_and(|limit| Hlc(header.created) > limit)
    {
        let who = &header.sender.name;
        warnings.push(format!(
            "the bundle from '{who}' says it was written {} ahead of this computer's clock; this instance's clock \
             was not moved there — check the date on {who}",
            crate::base::hlc::span(Hlc(header.created).unix_ms() - now)
        ));
    }
}

/// Retry every held change now (`fieldsync conflicts --retry`), with the
/// import connection settings.
pub(crate) fn retry_held(tx: &Transaction, s: &mut Session) -> Result<RetryReport, Error> {
    retry(tx, s, Retrying::All)
}

/// What a retry of the quarantine takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retrying {
    /// Every held change (`fieldsync conflicts --retry`).
    All,
    /// Only those held from the future whose time has come (before an
    /// export); nothing if there are none.
    DueFromTheFuture,
    /// One entry, applied whatever its clock says (`fieldsync conflicts
    /// --apply ID`, an administrator's decision): the clock moves past it.
    Accept(i64),
}

/// Retry held changes as `which` says, with the import connection
/// settings.
pub(crate) fn retry(
    tx: &Transaction,
    s: &mut Session,
    which: Retrying,
) -> Result<RetryReport, Error> {
    if which == Retrying::DueFromTheFuture {
        let limit = crate::catalog::clocks::future_limit(tx, now_unix_ms())?;
        if crate::receive::quarantine::due_from_the_future(tx, limit)?
            .0
            .is_empty()
        {
            return Ok(RetryReport::default());
        }
    }
    crate::local::follow::follow_schema(tx, s)?;
    crate::local::stamp::stamp_pending(tx, s)?;
    let mut ap = Applier::new(tx, s, "")?;
    let mut refused = Vec::new();
    let mut waited = 0;
    match which {
        Retrying::All => {
            ap.retry_all = true;
            waited = retry_waiting(tx, s, &mut ap, &mut refused, true)?;
        }
        // The settling takes those whose time has come.
        Retrying::DueFromTheFuture => {}
        Retrying::Accept(id) => {
            if crate::receive::quarantine::load_ids(tx, s.catalog.tables(), [id])?.is_empty() {
                return Err(ImportError::NotHeld {
                    what: format!("change #{id}"),
                    db: crate::catalog::store::db_arg(tx),
                }
                .into());
            }
            ap.accepted.insert(id);
        }
    }
    ap.settle(tx, s, refused, None)?;
    for (origin, set) in &ap.released_numbers {
        if *origin == s.local_idx {
            s.lost = s.lost.minus(set);
        } else {
            add_have(tx, *origin, set)?;
        }
    }
    let now = now_unix_ms();
    s.clock.observe(ap.applied_max, now)?;
    s.save(tx)?;
    let limit = crate::catalog::clocks::future_limit(tx, now)?;
    Ok(RetryReport {
        retried: ap.retried,
        released: ap.released + waited,
        held: held_count(tx)?,
        overwritten: ap.overwritten,
        from_the_future: crate::receive::quarantine::due_from_the_future(tx, limit)?.1,
    })
}

/// Most bytes of records held back in memory for a retry within one
/// import: past this, refused records wait in the quarantine table.
const MAX_DEFERRED_BYTES: usize = 64 << 20;

/// Largest causal length accepted from a bundle; local deletes and
/// re-inserts add one at a time, so this never runs out.
const MAX_CL: u64 = 1 << 62;

/// Check a record against its header: known table, well-formed key, change
/// numbers inside the declared ranges, disjoint cells, one value per cell;
/// then split it into what applies here and what waits for a column or a
/// table this instance does not have (spec/schema.md, "Mixed versions").
/// `own` is this instance and the last number it has given a change.
fn prepare(
    conn: &Connection,
    rec: RowRecord,
    mapped: &[Mapped],
    tables: &[TrackedTable],
    origins: &Origins,
    own: (SiteId, u64),
) -> Result<Prepared, Error> {
    let m = mapped
        .get(rec.table as usize)
        .ok_or_else(|| malformed(format!("table #{} is not in the header", rec.table)))?;
    let table = match &m.to {
        MappedTo::Here(i) => &tables[*i],
        MappedTo::Waits(described) => described,
    };
    check_key(table, &rec, own)?;
    if rec.versions.is_empty() {
        return Err(bad_record(table, "has no versions"));
    }
    if rec.cl == 0 || rec.cl > MAX_CL {
        let cl = rec.cl;
        return Err(bad_record(
            table,
            &format!("has causal length {cl}, outside 1..=2^62"),
        ));
    }
    let versions = versions(m, table, &rec, origins)?;
    let cells = cells(m, table, &rec.versions, rec.values)?;
    let key = match m.to {
        MappedTo::Here(_) if !table.identity.mapped() => {
            crate::catalog::keyform::stored_key(conn, &m.key_affinity, &rec.key)?
        }
        _ => rec.key,
    };
    // The key as this table stores it, so the log finds the row the table
    // holds (crate::catalog::keyform).
    let pk = encode_key(&key);
    let name = |bit: usize| m.names[bit - 1].clone();
    let waiting_versions: Vec<_> = versions
        .iter()
        .filter(|(_, missing)| !missing.is_empty() || m.here().is_none())
        .map(|(v, missing)| {
            let mut cols: Vec<String> = missing.iter().map(|&b| name(b)).collect();
            if m.here().is_none() {
                cols = v.cols.iter().filter(|&b| b != SENTINEL).map(name).collect();
            }
            let row = m.here().is_none() && v.cols.contains(SENTINEL);
            (v.site, v.seq, v.hlc, row, cols)
        })
        .collect();
    let waiting = (!waiting_versions.is_empty()).then(|| {
        let missing: Vec<String> = cells.missing.iter().map(|(b, _)| name(*b)).collect();
        Waiting {
            table: table.name.clone(),
            identity: table.identity,
            pk: pk.clone(),
            held: Held::new(
                key.clone(),
                rec.cl,
                waiting_versions,
                cells
                    .missing
                    .iter()
                    .map(|(b, v)| (name(*b), v.clone()))
                    .collect(),
                cells
                    .missing_refs
                    .iter()
                    .map(|(b, p)| (name(*b), p.clone()))
                    .collect(),
            ),
            waits: if m.here().is_some() {
                missing
            } else {
                Vec::new()
            },
        }
    });
    let change = match m.to {
        MappedTo::Here(i) => {
            let versions: Vec<Version> = versions
                .into_iter()
                .map(|(v, _)| v)
                .filter(|v| !v.cols.is_empty())
                .collect();
            (!versions.is_empty()).then(|| Change {
                table: i,
                pk,
                key,
                cl: rec.cl,
                versions,
                values: cells.values,
                refs: cells.refs,
            })
        }
        MappedTo::Waits(_) => None,
    };
    Ok(Prepared { change, waiting })
}

/// A record's key: well formed for its table, and not a row said to be
/// created here by a change this instance has not numbered yet (its own
/// later row would take the same identity).
fn check_key(table: &TrackedTable, rec: &RowRecord, own: (SiteId, u64)) -> Result<(), Error> {
    // SQLite stores a NaN as NULL: a key holding one is no key either.
    let null_like =
        |v: &Value| matches!(v, Value::Null) || matches!(v, Value::Real(r) if r.is_nan());
    let well_formed = if table.identity.mapped() {
        crate::catalog::identity::valid_gid(table.identity, &rec.key)
    } else {
        rec.key.len() == table.key.len() && !rec.key.iter().any(null_like)
    };
    if !well_formed {
        return Err(bad_record(table, "has a malformed key"));
    }
    // A valid origin identity is 24 bytes: the site, then its number.
    if let (Identity::Origin, [Value::Blob(b)]) = (table.identity, rec.key.as_slice()) {
        let site = SiteId::from_slice(&b[..16]);
        let seq = <[u8; 8]>::try_from(&b[16..]).map(u64::from_be_bytes);
        if site == Some(own.0) && seq.is_ok_and(|n| n > own.1) {
            return Err(bad_record(
                table,
                "claims a row created on this instance by a change it has not made",
            ));
        }
    }
    Ok(())
}

/// A record's versions with local bits, each with the bundle bits of the
/// columns not tracked here: each change inside the ranges the header
/// declares, listed once, with cells of its own (only the row itself for a
/// delete).
fn versions(
    m: &Mapped,
    table: &TrackedTable,
    rec: &RowRecord,
    origins: &Origins,
) -> Result<Vec<(Version, Vec<usize>)>, Error> {
    let mut versions: Vec<(Version, Vec<usize>)> = Vec::with_capacity(rec.versions.len());
    let mut all_cells = ColSet::new();
    for v in &rec.versions {
        let Some(&Some((idx, site))) = origins.local.get(v.origin as usize) else {
            return Err(malformed(format!(
                "a change of origin #{} lies outside the ranges the header declares",
                v.origin
            )));
        };
        if v.seq == 0
            || v.seq > i64::MAX as u64
            || !origins
                .covers
                .get(&idx)
                .is_some_and(|set| set.contains(v.seq))
        {
            return Err(malformed(format!(
                "change {site}#{} lies outside the ranges the header declares",
                v.seq
            )));
        }
        let mut cols = ColSet::new();
        let mut missing = Vec::new();
        for bit in v.cols.iter() {
            match m.bits.get(bit) {
                Some(Some(local)) => cols.insert(*local),
                Some(None) => missing.push(bit),
                None => {
                    return Err(bad_record(
                        table,
                        &format!("names column #{bit}, which the header does not list"),
                    ));
                }
            }
        }
        // One change listed twice (with two clocks, the merge would keep
        // one and a re-import refuse the other as a reused number).
        let repeated = versions
            .iter()
            .any(|(x, _)| x.site == site && x.seq == v.seq);
        if v.cols.is_empty()
            || repeated
            || all_cells.intersects(&v.cols)
            || (rec.cl % 2 == 0 && v.cols != ColSet::of(&[SENTINEL]))
        {
            return Err(bad_record(table, "has inconsistent versions"));
        }
        all_cells.union_with(&v.cols);
        versions.push((
            Version {
                site,
                seq: v.seq,
                hlc: Hlc(v.hlc),
                cols,
            },
            missing,
        ));
    }
    Ok(versions)
}

/// A record's cells, by local bit; the values of columns not tracked
/// here, by bundle bit.
struct Cells {
    /// One value per cell its versions write.
    values: Vec<(usize, Value)>,
    /// The cells holding tagged references, with the table each refers to.
    refs: Vec<(usize, String)>,
    /// Values of columns not here, by bundle bit.
    missing: Vec<(usize, Value)>,
    /// Those holding tagged references, by bundle bit.
    missing_refs: Vec<(usize, String)>,
}

/// A record's values keyed by local bit. Tagged references must decode
/// before anything is believed of them.
fn cells(
    m: &Mapped,
    table: &TrackedTable,
    versions: &[VersionRecord],
    values: Vec<Value>,
) -> Result<Cells, Error> {
    // Values arrive in ascending bundle-bit order.
    let mut bundle_bits: Vec<usize> = versions
        .iter()
        .flat_map(|v| v.cols.iter())
        .filter(|&b| b != SENTINEL)
        .collect();
    bundle_bits.sort_unstable();
    if bundle_bits.len() != values.len() {
        let (values, cells) = (values.len(), bundle_bits.len());
        return Err(bad_record(
            table,
            &format!("has {values} values for {cells} cells"),
        ));
    }
    let mut out = Cells {
        values: Vec::with_capacity(values.len()),
        refs: Vec::new(),
        missing: Vec::new(),
        missing_refs: Vec::new(),
    };
    for (&b, v) in bundle_bits.iter().zip(values) {
        let parent = match m.refs.get(b) {
            Some(Some((parent, identity, key_len))) => {
                crate::catalog::refs::decode(&v, *identity, *key_len).map_err(|why| {
                    malformed(format!("a record of table '{}': {why}", table.name))
                })?;
                Some(parent.clone())
            }
            _ => None,
        };
        let here = match m.to {
            MappedTo::Here(_) => m.bits.get(b).copied().flatten(),
            MappedTo::Waits(_) => None,
        };
        match here {
            Some(local) => {
                if let Some(p) = parent {
                    out.refs.push((local, p));
                }
                out.values.push((local, v));
            }
            None => {
                if let Some(p) = parent {
                    out.missing_refs.push((b, p));
                }
                out.missing.push((b, v));
            }
        }
    }
    out.values.sort_by_key(|(b, _)| *b);
    Ok(out)
}

fn malformed(detail: String) -> Error {
    BundleError::Malformed { detail }.into()
}

/// A record of `table` that is not what its header declares.
fn bad_record(table: &TrackedTable, what: &str) -> Error {
    malformed(format!("a record of table '{}' {what}", table.name))
}

/// The most changes of ours a peer may hold beyond our counter (a restore
/// from a backup); a bundle claiming more is refused rather than trusted to
/// push our numbering towards its limit.
const MAX_RESTORE_JUMP: u64 = 1 << 40;

/// If another instance has changes of ours numbered beyond our counter, this
/// database was restored from a backup (or copied): numbering continues above
/// them so no number is used twice, and the ones missing here are recorded as
/// lost, so they show as gaps and peers send them back.
fn notice_own_restore(
    s: &mut Session,
    origins: &Origins,
    sender: &str,
    warnings: &mut Vec<String>,
) -> Result<(), Error> {
    let claimed = [&origins.covers, &origins.seen]
        .map(|numbers| numbers.get(&s.local_idx))
        .into_iter()
        .flatten()
        .map(SeqSet::max)
        .max()
        .unwrap_or(0);
    if claimed > s.seq.saturating_add(MAX_RESTORE_JUMP) {
        return Err(malformed(format!(
            "'{sender}' claims {claimed} changes made on this instance, which has made {}",
            s.seq
        )));
    }
    if claimed > s.seq {
        s.lost.insert_range(s.seq + 1, claimed);
        warnings.push(format!(
            "'{sender}' has changes #{}-#{claimed} made on this instance that this database does not: it was \
             probably restored from a backup or copied. New changes are numbered from #{}; the missing ones \
             come back with the next exports to this instance",
            s.seq + 1,
            claimed + 1
        ));
        s.seq = claimed;
    }
    Ok(())
}

/// What is known to exist and was not received (held changes are
/// received), per origin.
fn missing_now(conn: &Connection, s: &Session) -> Result<BTreeMap<i64, SeqSet>, Error> {
    let mut have = have_all(conn, s)?;
    for (origin, set) in held_numbers(conn, &s.sites)? {
        have.entry(origin).or_default().union_with(&set);
    }
    Ok(missing(s, &known_all(conn)?, &have))
}

/// Record what the bundle covered and what its sender acknowledged; note
/// gaps that appeared since the import began (`missing_before`).
fn record_watermarks(
    conn: &Connection,
    s: &mut Session,
    header: &Header,
    origins: &Origins,
    released: &BTreeMap<i64, SeqSet>,
    missing_before: &BTreeMap<i64, SeqSet>,
    mut report: ImportReport,
) -> Result<ImportReport, Error> {
    let (covers, seen) = (&origins.covers, &origins.seen);
    // Held changes are not received yet: their numbers stay out of "have"
    // (and show as missing to the sender) until they are applied.
    let held = held_numbers(conn, &s.sites)?;
    let empty = SeqSet::new();
    for (origin, set) in covers.iter().chain(released) {
        let set = set.minus(held.get(origin).unwrap_or(&empty));
        if *origin == s.local_idx {
            // Our own changes sent back to us: no longer missing.
            s.lost = s.lost.minus(&set);
        } else {
            add_have(conn, *origin, &set)?;
        }
    }
    let peer = bind_sender(conn, origins.sender, &header.sender.name)?;
    if !header.schemas.is_empty() {
        let versions: Vec<(String, String)> = (header.schemas.iter())
            .map(|v| (v.name.clone(), v.version.to_ascii_lowercase()))
            .collect();
        crate::catalog::peers::save_peer_schema(conn, peer.id, &versions, true)?;
    }
    crate::catalog::keyring::save_trust_seen(conn, peer.id, header.trust_seen)?;
    let lost = record_acks(
        conn,
        peer.id,
        header.created,
        seen,
        &origins.lacks,
        &header.lost,
    )?;
    // What is known to exist and was not received, holes and top end alike:
    // reported if it grew, and told to every peer by the next bundles.
    let missing_after = missing_now(conn, s)?;
    for (origin, gaps) in &missing_after {
        let old = missing_before.get(origin).unwrap_or(&empty);
        if !gaps.minus(old).is_empty() {
            report.gaps.insert(s.sites.label(*origin), gaps.to_string());
        }
    }
    save_lacks(conn, &missing_after)?;
    if lost > 0 {
        report.warnings.push(format!(
            "'{}' no longer has {lost} changes it had acknowledged (was it restored from a backup?); \
             the next export to it sends them again",
            header.sender.name
        ));
    }
    touch(conn, peer.id, true, now_unix_ms())?;
    s.save(conn)?;
    report.skipped = report.known + report.older;
    Ok(report)
}

/// Resolve a table of the bundle against the local catalog, column by
/// column. A table not tracked here, and columns not tracked here, are
/// mapped to nothing: their values wait (spec/schema.md, "Mixed versions").
fn map_table(
    conn: &Connection,
    s: &Session,
    def: &TableDef,
    local_refs: &[Vec<RefFk>],
) -> Result<Mapped, Error> {
    let Some(local) = s.catalog.by_name(&def.name) else {
        usable_table_name(&def.name)?;
        distinct_columns(def)?;
        let bits = (0..=def.cells.len()).map(Some).collect();
        let refs = map_refs(s, def, def.cells.len() + 1, &|_| false)?;
        return Ok(Mapped {
            to: MappedTo::Waits(crate::receive::waiting::described(def)),
            bits,
            names: def.cells.clone(),
            key_affinity: Vec::new(),
            refs,
        });
    };
    let bits = map_columns(local, def)?;
    let table = s
        .catalog
        .tables()
        .iter()
        .position(|t| t.id == local.id)
        .ok_or_else(|| {
            malformed(format!(
                "table '{}' is missing from the catalog",
                local.name
            ))
        })?;
    let key_affinity = crate::catalog::keyform::key_affinities(conn, local)?;
    let refs = map_refs(s, def, bits.len(), &|bit| bits[bit].is_some())?;
    check_translated(
        local,
        def,
        &refs,
        local_refs.get(table).map_or(&[], Vec::as_slice),
    )?;
    Ok(Mapped {
        to: MappedTo::Here(table),
        bits,
        names: def.cells.clone(),
        key_affinity,
        refs,
    })
}

/// A table name a bundle may make this instance keep values for: what
/// a bundle may create (spec/bundle.md), so waiting values never name
/// fieldsync's or SQLite's own tables.
fn usable_table_name(name: &str) -> Result<(), Error> {
    crate::send::setup::usable_name(name, &mut std::collections::HashSet::new()).map_err(|why| {
        malformed(format!(
            "the header names a table '{}' no instance can have: {why}",
            crate::send::setup::excerpt(name)
        ))
    })
}

/// The bundle table's identity, key and columns against the tracked
/// table's: bundle bit → local bit (index 0 is the sentinel), `None` for a
/// column not tracked here. A column tracked here that the bundle lacks is
/// simply not written (the sender's app does not have it yet).
fn map_columns(local: &TrackedTable, def: &TableDef) -> Result<Vec<Option<usize>>, Error> {
    if def.identity != local.identity {
        return Err(ImportError::IdentityMismatch {
            table: local.name.clone(),
            theirs: def.identity.as_str().to_owned(),
            ours: local.identity.as_str().to_owned(),
        }
        .into());
    }
    if def.key != local.key {
        let column = def
            .key
            .iter()
            .zip(local.key.iter())
            .find(|(a, b)| a != b)
            .map(|(a, _)| a.as_str());
        let column = column
            .or_else(|| def.key.get(local.key.len()).map(String::as_str))
            .or_else(|| local.key.get(def.key.len()).map(String::as_str));
        return Err(ImportError::SchemaMismatch {
            table: local.name.clone(),
            column: column.unwrap_or("").to_owned(),
            detail: format!(
                "is not where the keys differ: bundle key ({}) vs local key ({})",
                def.key.join(", "),
                local.key.join(", ")
            ),
        }
        .into());
    }
    distinct_columns(def)?;
    let mut bits = vec![Some(SENTINEL)];
    for c in &def.cells {
        bits.push(local.bit_of(c));
    }
    Ok(bits)
}

/// A bundle table names each of its columns once (its key included):
/// values are matched with columns by name.
fn distinct_columns(def: &TableDef) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::new();
    for c in def.key.iter().chain(&def.cells) {
        if !seen.insert(c.to_ascii_lowercase()) {
            return Err(malformed(format!(
                "table '{}' lists column '{c}' twice",
                def.name.chars().take(64).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// Bundle bit → the table the tagged reference in that cell refers to,
/// for a table of `bits` bits. `here(bit)`: the cell's column is tracked
/// here; a reference in a column that is not only has to decode (its
/// values wait, and are checked again when they are applied).
fn map_refs(
    s: &Session,
    def: &TableDef,
    bits: usize,
    here: &dyn Fn(usize) -> bool,
) -> Result<Vec<Option<RefTarget>>, Error> {
    let mut refs = vec![None; bits];
    for r in &def.refs {
        let mut positions = Vec::new();
        for c in &r.cells {
            let Some(i) = def.cells.iter().position(|x| x == c) else {
                return Err(malformed(format!(
                    "table '{}' lists reference column '{c}', which is not among its columns",
                    def.name
                )));
            };
            positions.push(i + 1);
        }
        let parent = s.catalog.by_name(&r.parent);
        // A reference that travels as the parent row's identity can only be
        // followed if this instance identifies that table's rows the same way.
        let followed_here = positions.iter().any(|&b| here(b));
        if followed_here
            && r.identity != Identity::Key
            && parent.is_none_or(|p| p.identity != r.identity)
        {
            return Err(ImportError::IdentityMismatch {
                table: r.parent.clone(),
                theirs: r.identity.as_str().to_owned(),
                ours: parent
                    .map_or("untracked", |p| p.identity.as_str())
                    .to_owned(),
            }
            .into());
        }
        let key_len = match parent {
            Some(p) if p.identity == r.identity => p.key_len(),
            // Identities travel as one value (a blob, or the column's).
            _ if r.identity != Identity::Key => 1,
            _ => 0,
        };
        for b in positions {
            refs[b] = Some((r.parent.clone(), r.identity, key_len));
        }
    }
    Ok(refs)
}

/// A column that refers here to a row's local number must arrive as the
/// row it names; a plain value from the sender would name another row.
fn check_translated(
    local: &TrackedTable,
    def: &TableDef,
    refs: &[Option<RefTarget>],
    local_refs: &[RefFk],
) -> Result<(), Error> {
    for fk in local_refs {
        for (column, translated) in fk.columns.iter().zip(&fk.translate) {
            let Some(i) = def
                .cells
                .iter()
                .position(|c| c.eq_ignore_ascii_case(column))
            else {
                continue;
            };
            let tagged_as_row = refs[i + 1]
                .as_ref()
                .is_some_and(|(_, identity, _)| *identity != Identity::Key);
            if *translated && !tagged_as_row {
                return Err(ImportError::ReferenceNotTranslated {
                    table: local.name.clone(),
                    column: column.clone(),
                    parent: fk.parent.name.clone(),
                }
                .into());
            }
        }
    }
    Ok(())
}
