//! Received values waiting for a column or a table this database does not
//! have yet: the sender runs a newer version of the app (spec/schema.md,
//! "Mixed versions").
//!
//! An import applies a record for every column both sides have; the values
//! of the columns this side lacks, and every record of a table it lacks,
//! are kept in `fieldsync_waiting`, one entry per row, by column name, with
//! the changes (origin, number, clock) they came with. Once the column or
//! table exists and is tracked here ([`crate::local::follow`], a received
//! schema change, the app's own upgrade), the next import, `conflicts
//! --retry` or `schema --apply` applies them with their original clocks,
//! through the same merge as any change.
//!
//! Like a held change, a waiting one is not received: its change numbers
//! stay out of `fieldsync_have` until every part of it is applied, so this
//! instance never relays a change it holds only part of, and the sender
//! offers it again. [`waiting_numbers`] is the set to leave out.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::base::value::encode_key;
use crate::catalog::layout::Identity;
use crate::catalog::session::Session;
use crate::catalog::site::{Sites, meta_get, meta_set};
use crate::catalog::tracked::TrackedTable;
use crate::error::{Error, SiteError};
use crate::receive::quarantine::{Change, Held};

/// What of one received row waits here.
#[derive(Debug, Clone)]
pub(crate) struct Waiting {
    /// The table, as the bundle names it.
    pub table: String,
    /// How the sender identifies its rows.
    pub identity: Identity,
    /// The row's key as it arrived (as stored here, if the table is here).
    pub pk: Vec<u8>,
    /// The values and their versions, by column name.
    pub held: Held,
    /// The columns it waits for; empty: the whole table.
    pub waits: Vec<String>,
}

/// One line of what waits, for `status` and `conflicts`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WaitingSummary {
    /// The table.
    pub table: String,
    /// The columns waited for; empty: the table itself.
    pub columns: Vec<String>,
    /// Rows with values waiting.
    pub rows: u64,
}

impl WaitingSummary {
    /// What the values wait for, in words: `table 'village'` or `column
    /// 'person.phone'`.
    pub fn waits_for(&self) -> String {
        if self.columns.is_empty() {
            format!("table '{}'", self.table)
        } else {
            format!("column '{}.{}'", self.table, self.columns.join(", "))
        }
    }
}

/// Keep what of a row waits, joined with what already waits of it.
pub(crate) fn keep(conn: &Connection, w: &Waiting, sender: &str, now_ms: i64) -> Result<(), Error> {
    let existing: Option<(i64, Vec<u8>, String)> = conn
        .prepare_cached(
            "SELECT id, record, waits FROM fieldsync_waiting WHERE tbl = ?1 AND pk = ?2",
        )?
        .query_row(params![w.table, w.pk], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let (held, waits) = match existing {
        Some((id, record, waits)) => {
            let old = decode(&record)?;
            let joined = old.join(&w.held).unwrap_or_else(|| w.held.clone());
            conn.execute("DELETE FROM fieldsync_waiting WHERE id = ?1", [id])?;
            let mut all: Vec<String> = split(&waits);
            for c in &w.waits {
                if !all.iter().any(|a| a.eq_ignore_ascii_case(c)) {
                    all.push(c.clone());
                }
            }
            (joined, all)
        }
        None => (w.held.clone(), w.waits.clone()),
    };
    conn.prepare_cached(
        "INSERT INTO fieldsync_waiting(tbl, pk, key, identity, waits, sender, first_at, record, seqs) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        w.table,
        w.pk,
        held.key_literal(),
        w.identity.as_str(),
        waits.join(","),
        sender,
        now_ms,
        encode(&held)?,
        held.seqs()
    ])?;
    Ok(())
}

fn split(waits: &str) -> Vec<String> {
    waits
        .split(',')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

fn encode(held: &Held) -> Result<Vec<u8>, Error> {
    rmp_serde::to_vec_named(held).map_err(|e| {
        SiteError::Damaged {
            detail: format!("a waiting change could not be encoded: {e}"),
        }
        .into()
    })
}

fn decode(record: &[u8]) -> Result<Held, Error> {
    rmp_serde::from_slice(record).map_err(|e| {
        SiteError::Damaged {
            detail: format!("fieldsync_waiting holds a record that does not decode: {e}"),
        }
        .into()
    })
}

/// The change numbers of waiting values, per origin: not received yet.
pub(crate) fn waiting_numbers(
    conn: &Connection,
    sites: &Sites,
) -> Result<BTreeMap<i64, Vec<u64>>, Error> {
    let mut numbers: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
    let mut stmt = conn.prepare_cached("SELECT seqs FROM fieldsync_waiting")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        crate::receive::quarantine::add_seqs(r.get_ref(0)?.as_blob()?, sites, &mut numbers);
    }
    Ok(numbers)
}

/// The change numbers received and not applied yet, per origin: those of
/// held changes (quarantine) and of changes with values waiting here.
pub fn not_received(
    conn: &Connection,
    sites: &Sites,
) -> Result<BTreeMap<i64, crate::base::seqset::SeqSet>, Error> {
    let mut out = crate::receive::quarantine::held_numbers(conn, sites)?;
    for (origin, seqs) in waiting_numbers(conn, sites)? {
        out.entry(origin)
            .or_default()
            .union_with(&crate::base::seqset::SeqSet::from_numbers(seqs));
    }
    Ok(out)
}

/// What waits, per table and the columns it waits for.
pub fn summary(conn: &Connection) -> Result<Vec<WaitingSummary>, Error> {
    let mut stmt = conn.prepare(
        "SELECT tbl, waits, count(*) FROM fieldsync_waiting GROUP BY tbl, waits ORDER BY tbl, waits",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok(WaitingSummary {
                table: r.get(0)?,
                columns: split(&r.get::<_, String>(1)?),
                rows: r.get::<_, i64>(2)? as u64,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // Entries waiting for several columns are counted under each.
    let mut out: Vec<WaitingSummary> = Vec::new();
    for row in rows {
        if row.columns.is_empty() {
            out.push(row);
            continue;
        }
        for c in &row.columns {
            match out
                .iter_mut()
                .find(|o| o.table == row.table && o.columns.len() == 1 && &o.columns[0] == c)
            {
                Some(o) => o.rows += row.rows,
                None => out.push(WaitingSummary {
                    table: row.table.clone(),
                    columns: vec![c.clone()],
                    rows: row.rows,
                }),
            }
        }
    }
    Ok(out)
}

/// The `fieldsync_meta` key holding the schema cookie waiting values were
/// last tried at.
const TRIED_KEY: &str = "waiting_schema";

/// Waiting values that can be applied now, each as a change against the
/// catalog, taken out of the store; what of an entry still waits is put
/// back. Only looked at when the schema changed since the last time (or
/// `all`).
pub(crate) fn take_ready(conn: &Connection, s: &Session, all: bool) -> Result<Vec<Change>, Error> {
    let cookie = crate::local::stamp::schema_cookie(conn)?;
    if !all && meta_get::<i64>(conn, TRIED_KEY)? == Some(cookie) {
        return Ok(Vec::new());
    }
    let entries: Vec<(i64, String, String, String, Vec<u8>, i64)> = conn
        .prepare(
            "SELECT id, tbl, identity, sender, record, first_at FROM fieldsync_waiting ORDER BY id",
        )?
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::new();
    // Key affinities are converted by SQLite itself, on a private database.
    let scratch = Connection::open_in_memory()?;
    for (id, tbl, identity, sender, record, first_at) in entries {
        let Some(table_idx) =
            (s.catalog.tables().iter()).position(|t| t.name.eq_ignore_ascii_case(&tbl))
        else {
            continue;
        };
        let table = &s.catalog.tables()[table_idx];
        // Rows identified otherwise here than at the sender cannot be found.
        if Identity::parse(Some(&identity)) != Some(table.identity) {
            continue;
        }
        let held = decode(&record)?;
        let (ready, rest) = held.split_for(table);
        let Some(ready) = ready else {
            continue;
        };
        let mut change =
            ready
                .to_change(table_idx, table)
                .map_err(|detail| SiteError::Damaged {
                    detail: format!("a waiting change of table '{tbl}': {detail}"),
                })?;
        if !table.identity.mapped() {
            // Stored as this table keeps its key (the table may not have
            // existed when the values arrived).
            let affinity = crate::catalog::keyform::key_affinities(conn, table)?;
            change.key = crate::catalog::keyform::stored_key(&scratch, &affinity, &change.key)?;
            change.pk = encode_key(&change.key);
        }
        conn.execute("DELETE FROM fieldsync_waiting WHERE id = ?1", [id])?;
        if let Some(rest) = rest {
            let waits: Vec<String> = rest
                .column_names()
                .into_iter()
                .filter(|c| table.bit_of(c).is_none())
                .collect();
            let w = Waiting {
                table: tbl.clone(),
                identity: table.identity,
                pk: change.pk.clone(),
                held: rest,
                waits,
            };
            keep(conn, &w, &sender, first_at)?;
        }
        out.push(change);
    }
    meta_set(conn, TRIED_KEY, cookie)?;
    Ok(out)
}

/// A table as a bundle describes it, for a table not tracked here: enough
/// to check its records and name their columns.
pub(crate) fn described(def: &crate::bundle::format::TableDef) -> TrackedTable {
    TrackedTable {
        id: -1,
        name: def.name.clone(),
        key: def.key.clone(),
        cells: def.cells.clone(),
        identity: def.identity,
        local: None,
    }
}
