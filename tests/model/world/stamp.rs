//! Stamping: the model folds and numbers an instance's captured writes
//! itself, as the engine does when it exports, imports or compacts, taking
//! from the engine only the clocks its log shows.

use std::collections::BTreeSet;
use std::io::Cursor;

use fieldsync::Instance;

use crate::model::reference::{
    Captured, Change, Op, RowModel, Stamps, UNSTAMPED, Vanish, Ver, View, hlc_text,
};
use crate::model::rows::{KeyPart, RowId, cells_by_identity};
use crate::model::schema::{Kind, LOC, TABLES, bits_text};
use crate::model::world::{World, name};
use crate::util::Res;

impl World {
    /// Stamp the model's captured writes at `at` (spec/capture.md
    /// "From captured rows to changes"), with the clocks the engine gave the
    /// changes that survive; then record a delete for each row the log
    /// knows as live but the app table lacks (deleted without a trigger)
    /// among those `vanish` selects. Returns a line for the trace.
    pub(super) fn stamp(
        &mut self,
        at: usize,
        stamps: &Stamps,
        vanish: Vanish<'_>,
    ) -> Res<Option<String>> {
        let m = &mut self.models[at];
        // Consecutive updates of one row with one wall time (one statement)
        // fold into one change.
        let mut folded: Vec<Captured> = Vec::new();
        for c in std::mem::take(&mut m.pending) {
            if let Some(prev) = folded.last_mut() {
                if c.op == Op::Update
                    && prev.op == Op::Update
                    && prev.row == c.row
                    && prev.at == c.at
                {
                    prev.bits.extend(c.bits);
                    prev.after = c.after;
                    continue;
                }
            }
            folded.push(c);
        }
        let first = m.seq + 1;
        let mut made = Vec::new();
        for c in folded {
            // A table with a local key: the change is of the row the number
            // stands for, or creates a new row (spec/merge.md, "Row
            // identity"), identified by this change's number, or by the
            // row's content as the table has it now and the first copy
            // number not taken here.
            let mut numbered = false;
            let row = match c.row.local_number() {
                None => c.row.clone(),
                Some(local) => {
                    let t = c.row.table;
                    match m.ids.get(&(t, local)).cloned() {
                        Some(id) => {
                            if c.op == Op::Delete {
                                m.ids.remove(&(t, local));
                            }
                            id
                        }
                        // Never known: nothing to tell anyone.
                        None if c.op == Op::Delete => continue,
                        None => {
                            m.seq += 1;
                            // Gone again before it was stamped: the number
                            // is used up, nothing is recorded.
                            let Some(now) = m.app.get(&c.row) else {
                                continue;
                            };
                            let id = match TABLES[t].kind {
                                Kind::Content => {
                                    let sig = fieldsync::fuzzing::content_sig(now);
                                    let taken: BTreeSet<&RowId> = m.ids.values().collect();
                                    let mut copy = 0;
                                    loop {
                                        let id = RowId {
                                            table: t,
                                            key: vec![KeyPart::Content(sig, copy)],
                                        };
                                        if !taken.contains(&id) {
                                            break id;
                                        }
                                        copy += 1;
                                    }
                                }
                                _ => RowId {
                                    table: t,
                                    key: vec![KeyPart::Origin(at, m.seq)],
                                },
                            };
                            m.ids.insert((t, local), id.clone());
                            numbered = true;
                            id
                        }
                    }
                }
            };
            if !numbered {
                m.seq += 1;
            }
            let ver = Ver {
                origin: at,
                seq: m.seq,
                hlc: stamps.get(&m.seq).map_or(UNSTAMPED, |(_, h)| *h),
            };
            let state = m
                .rows
                .entry(row.clone())
                .or_insert_with(|| RowModel::new(row.cells()));
            let writes = state.local(c.op, &c.bits, ver);
            made.push((
                Change {
                    ver,
                    row,
                    cl: state.cl,
                    writes,
                    values: c.after,
                },
                Some(c.at),
            ));
        }
        // Values of changes to `loc`: references by identity.
        for (c, _) in &mut made {
            if let Some(v) = &mut c.values {
                *v = cells_by_identity(&self.sites, &m.ids, c.row.table, v);
            }
        }
        // Rows pointed at before they were stamped now have an identity.
        let ids = &m.ids;
        let pending: Vec<(usize, i64)> = self
            .pending_parent
            .iter()
            .filter(|(i, _)| *i == at)
            .copied()
            .collect();
        for p in pending {
            self.pending_parent.remove(&p);
            if let Some(id) = ids.get(&(LOC, p.1)) {
                self.ever_parent.insert(id.clone());
            }
        }
        let stamped = m.seq;

        // Rows deleted without a trigger.
        let vanished: Vec<RowId> = m
            .rows
            .iter()
            .filter(|(row, st)| st.live() && !m.has_app(row))
            .filter(|(_, st)| match vanish {
                Vanish::All => true,
                Vanish::Covered(covers) => st
                    .holders
                    .iter()
                    .flatten()
                    .any(|v| covers.get(&v.origin).is_some_and(|set| set.contains(v.seq))),
                Vanish::NotRecorded => false,
            })
            .map(|(row, _)| row.clone())
            .collect();
        let recorded: Vec<(u64, RowId, u64)> = stamps
            .range(stamped + 1..)
            .map(|(seq, (row, hlc))| (*seq, row.clone(), *hlc))
            .collect();
        let rows: BTreeSet<&RowId> = recorded.iter().map(|(_, r, _)| r).collect();
        if rows != vanished.iter().collect::<BTreeSet<_>>()
            || recorded.len() != vanished.len()
            || recorded
                .last()
                .is_some_and(|(seq, ..)| *seq != stamped + vanished.len() as u64)
        {
            return Err(format!(
                "i{at} recorded deletes of rows deleted without a trigger {:?}; the model \
                 expects {vanished:?}",
                recorded
                    .iter()
                    .map(|(s, r, _)| format!("#{s} {r:?}"))
                    .collect::<Vec<_>>()
            )
            .into());
        }
        for (seq, row, hlc) in recorded {
            let ver = Ver {
                origin: at,
                seq,
                hlc,
            };
            let state = m
                .rows
                .get_mut(&row)
                .ok_or("model inconsistency: a vanished row has no state")?;
            let writes = state.local(Op::Delete, &BTreeSet::new(), ver);
            made.push((
                Change {
                    ver,
                    row,
                    cl: state.cl,
                    writes,
                    values: None,
                },
                None,
            ));
            m.seq = seq;
        }

        // What survived (a vanished row's delete supersedes its insert).
        let held: BTreeSet<u64> = m
            .rows
            .values()
            .flat_map(|r| r.holders.iter().flatten())
            .filter(|v| v.origin == at && v.seq >= first)
            .map(|v| v.seq)
            .collect();
        for (seq, (row, _)) in stamps.range(..=stamped) {
            if !held.contains(seq) {
                return Err(format!(
                    "i{at}'s log holds its change #{seq} of {row:?}, which by the local rules \
                     was superseded while being stamped"
                )
                .into());
            }
            if made.iter().any(|(c, _)| c.ver.seq == *seq && c.row != *row) {
                return Err(format!(
                    "i{at}'s change #{seq} is of {row:?}, not the row the model says"
                )
                .into());
            }
        }
        if let Some(seq) = held.iter().find(|s| !stamps.contains_key(s)) {
            return Err(format!(
                "by the local rules i{at}'s change #{seq} holds cells, but i{at}'s log has no such change"
            )
            .into());
        }

        if made.is_empty() {
            return Ok(None);
        }

        // The clock: increasing, not before the write, past what was seen.
        let mut last = m.seen_hlc;
        let mut notes = Vec::new();
        for (c, wall) in &made {
            if c.ver.seq <= stamped && !held.contains(&c.ver.seq) {
                notes.push(format!("#{} superseded", c.ver.seq));
                continue;
            }
            let hlc = c.ver.hlc;
            let hlc_ms = (hlc >> 22) as i64 + 1_704_067_200_000;
            let wall_ms = wall.map_or(0, |w| ((w - 2_440_587.5) * 86_400_000.0).round() as i64);
            if hlc <= last || hlc_ms < wall_ms {
                return Err(format!(
                    "i{at}'s change #{} got clock {} (ms {hlc_ms}), not past {} or not at or after its write (ms {wall_ms})",
                    c.ver.seq,
                    hlc_text(hlc),
                    hlc_text(last)
                )
                .into());
            }
            last = hlc;
            notes.push(format!(
                "{:?} {:?} cl {} writes {}{}",
                c.ver,
                c.row,
                c.cl,
                bits_text(c.row.table, &c.writes),
                if wall.is_none() {
                    " (vanished row)"
                } else {
                    ""
                }
            ));
        }
        m.seen_hlc = last;
        for (c, _) in made {
            if c.ver.seq > stamped || held.contains(&c.ver.seq) {
                self.changes.push(c);
            }
        }
        Ok(Some(format!("i{at}: stamped {}", notes.join("; "))))
    }

    /// The clocks the next stamping of `at` gives its captured writes,
    /// observed on a copy of the database stamped by importing a bundle
    /// without rows, as an import stamps; and that copy's state.
    pub(super) fn stamps_of_copy(&self, at: usize) -> Res<(Stamps, View)> {
        let path = self.dir.path().join("copy.db");
        let _ = std::fs::remove_file(&path);
        // A byte copy (no transaction is open): `VACUUM INTO` would move
        // the schema cookie and may renumber the rowids of `opt`, which
        // the next stamp then matches by content (src/stamp.rs) as the
        // instance itself would not.
        std::fs::copy(self.dir.path().join(format!("{}.db", name(at))), &path)?;
        let result = (|| -> Res<(Stamps, View)> {
            let mut copy = Instance::open(&path)?;
            // The probe is an instance the copy's HQ enrolled.
            crate::util::instances::enrol_signer(&mut copy, &self.probe)?;
            copy.import(Cursor::new(&self.probe))?;
            Ok((
                self.new_stamps(copy.connection(), at)?,
                self.view_of(copy.connection())?,
            ))
        })();
        let _ = std::fs::remove_file(&path);
        result
    }
}
