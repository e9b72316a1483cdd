//! What the changes of one import (or one retry) share while they are
//! applied ([`Applier`]): the followed foreign keys, cached SQL, counts per
//! table, and in a joint pass the reference checks left to make once every
//! change is written ([`PostCheck`]). Merging is [`crate::receive::apply`]'s,
//! writing [`crate::receive::write`]'s, settling refusals
//! [`crate::receive::settle`]'s; all three work on this state.

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::Connection;

use crate::base::colset::ColSet;
use crate::base::hlc::{Hlc, now_unix_ms};
use crate::base::merge::Verdict;
use crate::base::seqset::SeqSet;
use crate::base::site_id::SiteId;
use crate::base::value::Value;
use crate::catalog::foreign::ForeignKeys;
use crate::catalog::peers::have_all;
use crate::catalog::session::Session;
use crate::error::Error;
use crate::receive::quarantine::Change;

/// Counts for one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableImport {
    /// Table name.
    pub table: String,
    /// Records that changed the row.
    pub applied: u64,
    /// Records already known here.
    pub known: u64,
    /// Records older than what is here.
    pub older: u64,
    /// Records the database refused, now in quarantine.
    pub quarantined: u64,
    /// Records with values for columns (or a table) not here, kept until
    /// they are.
    pub waiting: u64,
}

/// State shared by the changes of one import (or one retry).
pub(crate) struct Applier {
    pub(super) fks: ForeignKeys,
    /// Per catalog table, its non-key columns that children point at.
    pub(super) referenced: Vec<Vec<String>>,
    /// Per catalog table: SQLite numbers a new row's local key itself (a
    /// rowid), so an insert leaves it out.
    pub(super) local_auto: Vec<bool>,
    pub(super) sql_cache: HashMap<(i64, ColSet, bool), String>,
    /// What this instance had before, to tell a change never received from
    /// one it already merged.
    pub(super) have_before: BTreeMap<i64, SeqSet>,
    pub(super) sender: String,
    pub(super) now_ms: i64,
    /// Per catalog table.
    pub(super) counts: Vec<TableImport>,
    /// Quarantine entries written while reading the bundle, and whether
    /// each was new (rather than joined to an older entry).
    pub(super) spilled: HashMap<i64, bool>,
    /// The tables with a held change when the import began.
    held_tables: HashSet<String>,
    /// Rows changed since the held changes waiting for them were last
    /// looked up (spec/quarantine.md, "What a held change waits for").
    pub(super) touched: Vec<(usize, Vec<u8>)>,
    /// Quarantine entries taken into this settling.
    pub(super) loaded: HashSet<i64>,
    /// Retry every held change, not only those woken.
    pub(super) retry_all: bool,
    /// Held changes from earlier imports tried again.
    pub(super) retried: u64,
    /// Held changes from earlier imports applied now, and their numbers.
    pub(super) released: u64,
    pub(super) released_numbers: BTreeMap<i64, SeqSet>,
    /// Values added to the conflict log.
    pub(super) overwritten: u64,
    /// In a joint pass: the checks to make once every change is written,
    /// each with the entry it belongs to.
    pub(super) joint: Option<Vec<(usize, PostCheck)>>,
    /// The entry being applied in a joint pass.
    pub(super) current: usize,
    /// Changes stamped after this are held "from the future" (spec/trust.md,
    /// "The clock bound"); `None` while an entry an administrator accepted
    /// is applied.
    pub(super) future_limit: Option<Hlc>,
    /// Quarantine entries an administrator applies whatever their clock
    /// (`fieldsync conflicts --apply ID`), taken into the settling.
    pub(crate) accepted: HashSet<i64>,
    /// The newest stamp of the changes applied: the clock moves past it.
    pub(super) applied_max: Hlc,
    /// Changes of the bundle being imported held "from the future", and
    /// the furthest ahead of them (its stamp and origin).
    pub(super) future_held: u64,
    pub(super) future_furthest: Option<(Hlc, SiteId)>,
    /// Revoked instances, by site id: the last change number of each kept
    /// (spec/trust.md, "Revocation"), its name and when it was revoked.
    pub(super) revoked: HashMap<SiteId, (u64, String, i64)>,
}

impl Applier {
    pub fn new(conn: &Connection, s: &Session, sender: &str) -> Result<Applier, Error> {
        let tables = s.catalog.tables();
        let fks = ForeignKeys::load(conn, tables)?;
        let referenced = tables.iter().map(|t| fks.referenced_columns(t)).collect();
        let now_ms = now_unix_ms();
        let local_auto = tables
            .iter()
            .map(|t| crate::catalog::identity::local_is_rowid(conn, t))
            .collect::<Result<_, _>>()?;
        Ok(Applier {
            fks,
            referenced,
            local_auto,
            sql_cache: HashMap::new(),
            have_before: have_all(conn, s)?,
            sender: sender.to_owned(),
            now_ms,
            counts: tables
                .iter()
                .map(|t| TableImport {
                    table: t.name.clone(),
                    ..TableImport::default()
                })
                .collect(),
            spilled: HashMap::new(),
            held_tables: crate::receive::quarantine::distinct_tables(conn, "fieldsync_quarantine")?,
            touched: Vec::new(),
            loaded: HashSet::new(),
            retry_all: false,
            retried: 0,
            released: 0,
            released_numbers: BTreeMap::new(),
            overwritten: 0,
            joint: None,
            current: 0,
            future_limit: Some(crate::catalog::clocks::future_limit(conn, now_ms)?),
            accepted: HashSet::new(),
            applied_max: Hlc::default(),
            future_held: 0,
            future_furthest: None,
            revoked: crate::catalog::keyring::Keyring::load(conn)?
                .pins
                .into_iter()
                .filter_map(|p| {
                    let at = p.revoked_at?;
                    Some((p.site_id?, (p.keep_through.unwrap_or(0), p.name, at)))
                })
                .collect(),
        })
    }

    /// True if the row has a change in quarantine: a new change of it must
    /// join that entry rather than be applied alone (a later edit of a row
    /// whose insert is held would otherwise create a partial row).
    pub fn is_held(&self, conn: &Connection, s: &Session, c: &Change) -> Result<bool, Error> {
        let table = &s.catalog.tables()[c.table].name;
        if !self.held_tables.contains(table) {
            return Ok(false);
        }
        Ok(crate::receive::quarantine::entry_of(conn, table, &c.pk)?.is_some())
    }

    /// Look again at which tables have a held change (between two write
    /// transactions of an import, another may have held some).
    pub fn refresh_held_tables(&mut self, conn: &Connection) -> Result<(), Error> {
        self.held_tables =
            crate::receive::quarantine::distinct_tables(conn, "fieldsync_quarantine")?;
        Ok(())
    }

    /// True if some change was held when the import began: only then do
    /// the rows it changes need noting, to wake held changes waiting on them.
    pub fn notes_touched(&self) -> bool {
        !self.held_tables.is_empty()
    }

    /// Drop the statements made for the tables' old columns (the app's
    /// schema was followed between two transactions of an import).
    pub fn forget_sql(&mut self) {
        self.sql_cache.clear();
    }

    pub fn count(&mut self, table: usize, verdict: Verdict) {
        let c = &mut self.counts[table];
        match verdict {
            Verdict::Applied => c.applied += 1,
            Verdict::Known => c.known += 1,
            Verdict::Older => c.older += 1,
        }
    }
}

/// A reference check a joint pass makes after all its changes are written.
pub(crate) enum PostCheck {
    /// The row's own references.
    Row { table: usize, refs: RowRefs },
    /// A reference to a row not written yet when its own row was (two new
    /// rows pointing at each other): written as NULL, resolved now.
    Resolve {
        table: usize,
        key: Vec<Value>,
        column: String,
        parent: String,
        value: Value,
    },
    /// Children of a table whose referenced columns changed (`None`: a
    /// row was deleted).
    Children {
        table: usize,
        columns: Option<Vec<String>>,
    },
}

/// The references of a written row to check.
pub(crate) struct RowRefs {
    /// The row's SQL key.
    pub(super) key: Vec<Value>,
    /// The columns written (`None` for a new row).
    pub(super) written: Option<Vec<String>>,
    /// Those not to check (dangling at the sender).
    pub(super) unchecked: Vec<String>,
}
