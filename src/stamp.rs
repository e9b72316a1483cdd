//! Stamping: folding captured changes (`fieldsync_pending`) into the change
//! log, each with an HLC and a sequence number of this instance.
//!
//! This runs at the start of every export, import and compact, inside their
//! write transaction, so the app's writes never pay for it. Changes are
//! stamped in capture order with the wall time the trigger recorded, so a
//! change keeps the time it was made (not the time it was exported), and
//! local changes made before an import are stamped before the import's
//! remote clocks are observed. Rows are folded in memory chunk by chunk, so
//! a thousand edits of one cell become one log entry.

use std::collections::HashMap;

use rusqlite::Connection;

use crate::capture::op;
use crate::colset::ColSet;
use crate::error::Error;
use crate::hlc::julian_day_to_unix_ms;
use crate::log::{load_row, save_row};
use crate::merge::RowState;
use crate::session::Session;
use crate::store::column_names;
use crate::value::{Value, encode_key};

/// Captured changes folded per chunk (bounds memory).
const CHUNK: i64 = 20_000;

/// What a stamping pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StampReport {
    /// Captured row changes read from `fieldsync_pending`.
    pub captured: u64,
    /// Of those, changes with a NULL in a key column, which cannot be
    /// replicated (no instance could find the row again).
    pub null_keys: u64,
}

/// Fold every pending captured change into the log.
pub fn stamp_pending(conn: &Connection, s: &mut Session) -> Result<StampReport, Error> {
    let mut report = StampReport::default();
    let columns = column_names(conn, "fieldsync_pending")?;
    let pos = |name: &str| columns.iter().position(|c| c == name);
    let key_pos: Vec<usize> = (0..).map_while(|i| pos(&format!("k{i}"))).collect();
    let mask_pos: Vec<usize> = (0..).map_while(|i| pos(&format!("m{i}"))).collect();
    let (Some(id_pos), Some(t_pos), Some(op_pos), Some(at_pos)) =
        (pos("id"), pos("t"), pos("op"), pos("at"))
    else {
        return Err(crate::error::SiteError::Damaged {
            detail: "fieldsync_pending is missing a column".into(),
        }
        .into());
    };
    let mut last_id = 0i64;
    loop {
        let mut stmt = conn
            .prepare_cached("SELECT * FROM fieldsync_pending WHERE id > ?1 ORDER BY id LIMIT ?2")?;
        let mut rows = stmt.query([last_id, CHUNK])?;
        // Rows touched in this chunk: state as loaded, state now.
        let mut touched: HashMap<(i64, Vec<u8>), (RowState, RowState)> = HashMap::new();
        let mut order: Vec<(i64, Vec<u8>)> = Vec::new();
        let mut n = 0;
        while let Some(r) = rows.next()? {
            n += 1;
            report.captured += 1;
            last_id = r.get(id_pos)?;
            let t: i64 = r.get(t_pos)?;
            let Some(table) = s.catalog.by_id(t) else {
                continue;
            };
            let mut key = Vec::with_capacity(table.key.len());
            for &p in key_pos.iter().take(table.key.len()) {
                key.push(Value::from_ref(r.get_ref(p)?));
            }
            if key.len() != table.key.len() || key.contains(&Value::Null) {
                report.null_keys += 1;
                continue;
            }
            let pk = encode_key(&key);
            let slot = (t, pk);
            if !touched.contains_key(&slot) {
                let loaded = load_row(conn, &s.sites, t, &slot.1)?;
                touched.insert(slot.clone(), (loaded.clone(), loaded));
                order.push(slot.clone());
            }
            let Some((_, state)) = touched.get_mut(&slot) else {
                continue;
            };
            let at: f64 = r.get(at_pos)?;
            let hlc = s.clock.stamp(julian_day_to_unix_ms(at))?;
            s.seq += 1;
            let cells = table.cells.len();
            match r.get::<_, i64>(op_pos)? {
                op::INSERT => state.local_insert(s.local, s.seq, hlc, cells),
                op::UPDATE => {
                    let mut words = Vec::with_capacity(mask_pos.len());
                    for &p in &mask_pos {
                        words.push(r.get::<_, Option<i64>>(p)?.unwrap_or(0));
                    }
                    let changed = ColSet::from_words(&words);
                    state.local_update(s.local, s.seq, hlc, &changed, cells);
                }
                op::DELETE => state.local_delete(s.local, s.seq, hlc),
                _ => {}
            }
        }
        drop(rows);
        for slot in &order {
            if let Some((before, after)) = touched.get(slot) {
                save_row(conn, &s.sites, slot.0, &slot.1, before, after)?;
            }
        }
        if n < CHUNK {
            break;
        }
    }
    if report.captured > 0 {
        conn.execute("DELETE FROM fieldsync_pending WHERE id <= ?1", [last_id])?;
    }
    Ok(report)
}
