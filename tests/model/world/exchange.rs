//! Exports, imports and compaction: each bundle's body checked against the
//! records the model predicts from its own state of the sender; each import
//! merged by the model, its counts, the local numbers it gives and what it
//! holds in quarantine checked.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;

use fieldsync::bundle::BundleReader;
use fieldsync::bundle::SeqSet;
use fieldsync::{ExportTarget, Value};

use crate::model::engine::{read_held, read_ids, table_index, untag};
use crate::model::reference::{
    Change, Holders, Op, Rec, RowModel, UNSTAMPED, Vanish, Ver, Verdict, Verdicts, combine, diff,
    hlc_text, merge_mapped, merge_record,
};
use crate::model::rows::{RowId, identity_of, row_from};
use crate::model::schema::{LOC, LOC_PARENT, TABLES, mapped};
use crate::model::world::{Bundle, World};
use crate::util::Res;
use crate::util::histories;

impl World {
    pub(super) fn export(&mut self, from: usize, target: &ExportTarget) -> Res<usize> {
        let mut bytes = Vec::new();
        self.instances[from]
            .export(target, &mut bytes)
            .map_err(|e| format!("i{from}: export {target:?} failed: {e}"))?;
        let mut reader = BundleReader::open(Cursor::new(&bytes))?;
        let header = reader.header().clone();
        let mut covers: BTreeMap<usize, SeqSet> = BTreeMap::new();
        for c in &header.covers {
            let site = header.origins[c.origin as usize].id;
            covers
                .entry(self.origin_of(site.as_bytes())?)
                .or_default()
                .union_with(&c.seqs);
        }
        let stamps = self.new_stamps(self.instances[from].connection(), from)?;
        let vanish = match target {
            ExportTarget::Full | ExportTarget::FullFor { .. } => Vanish::All,
            ExportTarget::Peer { .. } | ExportTarget::Acknowledge { .. } => {
                Vanish::Covered(&covers)
            }
        };
        if let Some(t) = self.stamp(from, &stamps, vanish)? {
            self.trace.push(t);
        }
        let what = match target {
            ExportTarget::Full | ExportTarget::FullFor { .. } => format!("i{from} full"),
            ExportTarget::Peer { to, resend } => {
                format!("i{from} → {to}{}", if *resend { " (resend)" } else { "" })
            }
            ExportTarget::Acknowledge { to } => format!("i{from} → {to} (acknowledgement)"),
        };
        self.check_state(from, &format!("after export {what}"))?;

        // What the bundle must carry: every row holding a covered change,
        // with the covered changes and the values of their cells.
        let model = &self.models[from];
        let mut expected: BTreeMap<RowId, Rec> = BTreeMap::new();
        for (row, state) in &model.rows {
            let versions: Holders = state
                .holders()
                .into_iter()
                .filter(|((o, s), _)| covers.get(o).is_some_and(|set| set.contains(*s)))
                .collect();
            if versions.is_empty() {
                continue;
            }
            let mut values = BTreeMap::new();
            let app_row = model.app_row(&self.sites, row);
            for &b in versions.values().flat_map(|(_, bits)| bits) {
                if b > 0 {
                    let app = app_row.as_ref().ok_or_else(|| {
                        format!("model inconsistency: {row:?} lives at i{from} but has no app row")
                    })?;
                    values.insert(b, app[b - 1].clone());
                }
            }
            expected.insert(
                row.clone(),
                Rec {
                    cl: state.cl,
                    versions,
                    values,
                },
            );
        }
        let mut actual: BTreeMap<RowId, Rec> = BTreeMap::new();
        while let Some(rec) = reader.next_row()? {
            let def = &header.tables[rec.table as usize];
            let table = table_index(&def.name)?;
            let local_bit = |b: usize| -> Res<usize> {
                if b == 0 {
                    return Ok(0);
                }
                let name = &def.cells[b - 1];
                TABLES[table]
                    .cells
                    .iter()
                    .position(|c| c == name)
                    .map(|i| i + 1)
                    .ok_or_else(|| format!("the bundle names column {name}").into())
            };
            let mut versions = Holders::new();
            let mut carried = Vec::new();
            for v in &rec.versions {
                let origin = self.origin_of(header.origins[v.origin as usize].id.as_bytes())?;
                let bits = v.cols.iter().map(local_bit).collect::<Res<BTreeSet<_>>>()?;
                carried.extend(v.cols.iter().filter(|&b| b > 0));
                versions.insert((origin, v.seq), (v.hlc, bits));
            }
            carried.sort_unstable();
            if carried.len() != rec.values.len() {
                return Err(format!(
                    "a record of the bundle has {} values for {} cells",
                    rec.values.len(),
                    carried.len()
                )
                .into());
            }
            let values = carried
                .iter()
                .map(|&b| local_bit(b))
                .zip(rec.values.iter().cloned())
                .map(|(b, v)| {
                    let b = b?;
                    // A reference to a `loc` row travels as its identity.
                    if table == LOC && b == LOC_PARENT {
                        return Ok((b, untag(&v)?));
                    }
                    Ok((b, v))
                })
                .collect::<Res<BTreeMap<_, _>>>()?;
            let row = row_from(&self.sites, table, &rec.key)?;
            actual.insert(
                row,
                Rec {
                    cl: rec.cl,
                    versions,
                    values,
                },
            );
        }
        reader.finish()?;
        if actual != expected {
            let mut lines = Vec::new();
            let rows: BTreeSet<&RowId> = actual.keys().chain(expected.keys()).collect();
            for row in rows {
                let (a, e) = (actual.get(row), expected.get(row));
                if a != e {
                    let text = |r: Option<&Rec>| r.map_or("nothing".into(), |r| r.text(row));
                    lines.push(format!("  carries {}\n  expected {}", text(a), text(e)));
                }
            }
            return Err(format!(
                "export {what}: the bundle differs from what the model predicts from i{from}'s state \
                 and the covered change numbers:\n{}",
                lines.join("\n")
            )
            .into());
        }
        let n = self.pool.len();
        let covers_text: Vec<String> = covers
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(o, s)| format!("i{o}: {s}"))
            .collect();
        self.trace.push(format!(
            "bundle #{n} = {what}: covers {{{}}}, {} row(s)",
            covers_text.join(", "),
            expected.len()
        ));
        for (row, rec) in &expected {
            self.trace.push(format!("    {}", rec.text(row)));
        }
        self.pool.push(Bundle {
            sender: from,
            what,
            bytes,
            records: expected,
        });
        Ok(n)
    }

    pub(super) fn compact(&mut self, at: usize) -> Res<()> {
        let r = self.instances[at]
            .compact()
            .map_err(|e| format!("i{at}: compact failed: {e}"))?;
        let stamps = self.new_stamps(self.instances[at].connection(), at)?;
        if let Some(t) = self.stamp(at, &stamps, Vanish::All)? {
            self.trace.push(t);
        }
        self.trace.push(format!(
            "i{at}: compact: {} captured, {} vanished",
            r.captured, r.vanished
        ));
        self.check_state(at, "after compact")
    }

    /// Import pooled bundle `b` at `at`; returns the applied count (`None`:
    /// refused as the instance's own).
    pub(super) fn import(&mut self, b: usize, at: usize) -> Res<Option<u64>> {
        self.import_stopped(b, at, None)
    }

    /// [`import`](Self::import); with `stop`, the engine's import first
    /// stops after one write transaction of that many records (as a crash
    /// between two would), is checked, then runs again: the end must be the
    /// model's one import. Its counts then split between the two runs (a
    /// record the first applied is known to the second).
    pub(super) fn import_stopped(
        &mut self,
        b: usize,
        at: usize,
        stop: Option<u64>,
    ) -> Res<Option<u64>> {
        if self.pool[b].sender == at {
            let result = self.instances[at].import(Cursor::new(&self.pool[b].bytes));
            let refused = histories::refused_as_own(result, at, b)?;
            self.trace.push(refused);
            return Ok(None);
        }
        let h0: BTreeSet<RowId> = self.models[at].held.keys().cloned().collect();
        // Captured writes are stamped first; their clocks, seen on a copy.
        let captured = self.models[at].pending.len() as u64;
        if captured > 0 {
            let (stamps, copy) = self.stamps_of_copy(at)?;
            if let Some(t) = self.stamp(at, &stamps, Vanish::NotRecorded)? {
                self.trace.push(t);
            }
            let model = self.model_view(at);
            if copy != model {
                return Err(format!(
                    "i{at} stamped (on a copy, before importing #{b}) differs from the model:\n{}",
                    diff("engine", &copy, "model", &model)
                )
                .into());
            }
        }
        if let Some(records) = stop {
            let done = fieldsync::fuzzing::import_interrupted(
                &mut self.instances[at],
                &self.pool[b].bytes,
                records,
                1,
            )
            .map_err(|e| format!("i{at} failed to start importing bundle #{b}: {e}"))?;
            // (A row deleted without a trigger is a broken "Rows" invariant
            // until something records the delete; the model has such rows.)
            let check = self.instances[at].check()?;
            let problems: Vec<_> = (check.problems.iter())
                .filter(|p| p.invariant != fieldsync::Invariant::Rows)
                .collect();
            if !problems.is_empty() {
                return Err(format!(
                    "i{at} stopped importing #{b} after {records} record(s): check fails: {problems:?}"
                )
                .into());
            }
            self.trace.push(format!(
                "i{at}: importing #{b} stopped after {records} record(s){}",
                if done.is_none() {
                    ""
                } else {
                    " (it had ended)"
                }
            ));
        }
        let report = self.instances[at]
            .import(Cursor::new(&self.pool[b].bytes))
            .map_err(|e| {
                format!(
                    "i{at} failed to import bundle #{b} ({}): {e} [{e:?}]",
                    self.pool[b].what
                )
            })?;
        // Stopped, the first run stamped them.
        if report.captured != captured && !(stop.is_some() && report.captured == 0) {
            return Err(format!(
                "i{at} stamped {} captured row(s) on import, not the {captured} the model knows of",
                report.captured
            )
            .into());
        }
        let mut counts = Verdicts::default();
        let mut notes = Vec::new();
        let mut max_hlc = 0;
        let records = self.pool[b].records.clone();
        // Deletes the import records for rows deleted without a trigger, as
        // the log shows them (those a new era superseded at once are gone).
        let mut vanish_log = self.new_stamps(self.instances[at].connection(), at)?;
        let seq_before = self.models[at].seq;
        let seen_before = self.models[at].seen_hlc;
        let sites = self.sites.clone();
        let rank = move |v: &Ver| (v.hlc, sites[v.origin], v.seq);
        // Rows of tables with a local key: which the engine holds in
        // quarantine now is read from it, and checked below (check_held).
        let h1 = read_held(self.instances[at].connection(), &self.sites)?;
        let mut touched: BTreeMap<RowId, Option<Vec<Value>>> = BTreeMap::new();
        let mut fresh: BTreeSet<RowId> = BTreeSet::new();
        for (row, rec) in records.iter().filter(|(row, _)| mapped(row.table)) {
            max_hlc = rec
                .versions
                .values()
                .map(|(h, _)| *h)
                .fold(max_hlc, u64::max);
            let m = &mut self.models[at];
            // A row with a held change: the record joins it (and a record
            // the database refuses starts an entry).
            if h0.contains(row) || h1.contains(row) {
                let entry = match m.held.remove(row) {
                    Some(old) => combine(&old, rec, &rank),
                    None => rec.clone(),
                };
                m.held.insert(row.clone(), entry);
                fresh.insert(row.clone());
                continue;
            }
            let verdict = merge_mapped(&self.sites, m, row, rec, &rank, &mut touched);
            counts.add(verdict);
            if verdict != Verdict::Known {
                notes.push(format!("{row:?} {verdict:?}"));
            }
        }
        // Held entries: applied now, or still held.
        let mut released = 0u64;
        let mut quarantined = 0u64;
        let entries: BTreeSet<RowId> = h0.union(&fresh).cloned().collect();
        if let Some(row) = h1.iter().find(|r| !entries.contains(r)) {
            return Err(format!("i{at} holds {row:?}, which #{b} did not bring").into());
        }
        for row in &entries {
            if h1.contains(row) {
                if fresh.contains(row) {
                    quarantined += 1;
                    notes.push(format!("{row:?} held"));
                }
                continue;
            }
            let m = &mut self.models[at];
            let Some(entry) = m.held.remove(row) else {
                continue;
            };
            let verdict = merge_mapped(&self.sites, m, row, &entry, &rank, &mut touched);
            // A record of this bundle counts by its verdict; an entry held
            // by an earlier import counts as released (both, if the record
            // joined it).
            if fresh.contains(row) {
                match verdict {
                    Verdict::Applied => counts.applied += 1,
                    Verdict::Known => counts.known += 1,
                    Verdict::Older => counts.older += 1,
                }
            }
            if h0.contains(row) {
                released += 1;
            }
            notes.push(format!("{row:?} {verdict:?} (was held)"));
        }
        self.bind_mapped(at, touched)?;
        for (row, rec) in records.iter().filter(|(row, _)| !mapped(row.table)) {
            let m = &mut self.models[at];
            let state = m
                .rows
                .entry(row.clone())
                .or_insert_with(|| RowModel::new(row.cells()));
            let mut app = m.app.remove(row);
            let mut trial = (state.clone(), app.clone());
            let mut verdict = merge_record(&mut trial.0, &mut trial.1, rec, &rank);
            if state.live() && app.is_none() && trial.1.is_some() {
                // The import would write a row the log knows as live but
                // the table lacks: it records the row's delete first, then
                // merges the record against it (spec/merge.md, step 4).
                m.seq += 1;
                let logged = vanish_log
                    .iter()
                    .find(|(_, (r, _))| r == row)
                    .map(|(seq, (_, hlc))| (*seq, *hlc));
                let ver = match logged {
                    Some((seq, hlc)) => {
                        vanish_log.remove(&seq);
                        Ver {
                            origin: at,
                            seq,
                            hlc,
                        }
                    }
                    // Superseded by the record at once; never seen again.
                    None => Ver {
                        origin: at,
                        seq: u64::MAX - m.seq,
                        hlc: UNSTAMPED,
                    },
                };
                let writes = state.local(Op::Delete, &BTreeSet::new(), ver);
                notes.push(match logged {
                    Some(_) => format!("{row:?} vanished here: delete {ver:?} first"),
                    None => format!("{row:?} vanished here: delete it first (superseded)"),
                });
                if logged.is_some() {
                    if ver.hlc <= seen_before {
                        return Err(format!(
                            "i{at}'s delete {ver:?} of vanished {row:?} is not stamped past {}",
                            hlc_text(seen_before)
                        )
                        .into());
                    }
                    self.changes.push(Change {
                        ver,
                        row: row.clone(),
                        cl: state.cl,
                        writes,
                        values: None,
                    });
                }
                app = None;
                verdict = merge_record(state, &mut app, rec, &rank);
            } else {
                *state = trial.0;
                app = trial.1;
            }
            let m = &mut self.models[at];
            if let Some(a) = app {
                m.app.insert(row.clone(), a);
            }
            max_hlc = rec
                .versions
                .values()
                .map(|(h, _)| *h)
                .fold(max_hlc, u64::max);
            counts.add(verdict);
            if verdict != Verdict::Known {
                notes.push(format!("{row:?} {verdict:?}"));
            }
        }
        let m = &mut self.models[at];
        if let Some((seq, (row, _))) = vanish_log.iter().next() {
            return Err(format!(
                "i{at} recorded change #{seq} of {row:?} while importing #{b}; the model expects none"
            )
            .into());
        }
        if m.seq > seq_before {
            // The numbers the engine used, in its order of the records.
            let logged: Vec<u64> = self
                .changes
                .iter()
                .filter(|c| c.ver.origin == at && c.ver.seq > seq_before)
                .map(|c| c.ver.seq)
                .collect();
            if logged.iter().any(|&s| s > m.seq) {
                return Err(format!(
                    "i{at} numbered its deletes of vanished rows {logged:?}, beyond #{}",
                    m.seq
                )
                .into());
            }
        }
        m.seen_hlc = m.seen_hlc.max(max_hlc);
        let got = Verdicts {
            applied: report.applied,
            known: report.known,
            older: report.older,
        };
        if (report.quarantined, report.released, report.held)
            != (quarantined, released, h1.len() as u64)
        {
            return Err(format!(
                "i{at} importing #{b}: the engine quarantined {}, released {}, holds {}; \
                 the model says {quarantined}, {released}, {}",
                report.quarantined,
                report.released,
                report.held,
                h1.len()
            )
            .into());
        }
        self.trace.push(format!(
            "i{at} ← #{b}: applied {}, known {}, older {} [{}]",
            got.applied,
            got.known,
            got.older,
            notes.join(", ")
        ));
        // (A record the first run applied is known to the second, or older
        // if it also carried a cell that loses here.)
        let split = |g: &Verdicts, c: &Verdicts| {
            g.applied + g.known + g.older == c.applied + c.known + c.older && g.applied <= c.applied
        };
        if got != counts && !(stop.is_some() && split(&got, &counts)) {
            return Err(format!(
                "i{at} importing #{b}: the engine counts {got:?}, the model {counts:?}"
            )
            .into());
        }
        self.check_state(at, &format!("after importing #{b}"))?;
        self.check_held(at)
            .map_err(|e| format!("i{at} after importing #{b}: {e}"))?;
        Ok(Some(report.applied + report.released))
    }

    /// After an import: rows of tables with a local key that the merge
    /// created get the local number the engine gave them (checked to be
    /// free), deleted ones lose theirs, and the app rows are written with
    /// references as local numbers.
    fn bind_mapped(&mut self, at: usize, touched: BTreeMap<RowId, Option<Vec<Value>>>) -> Res<()> {
        let engine_ids = read_ids(self.instances[at].connection(), &self.sites)?;
        let sites = &self.sites;
        let m = &mut self.models[at];
        let mut writes = Vec::new();
        // Deleted rows first: a row new here may take the number one of
        // them had (a rowid is max + 1).
        let (gone, touched): (Vec<_>, Vec<_>) = touched.into_iter().partition(|(_, a)| a.is_none());
        for (row, app) in gone.into_iter().chain(touched) {
            let t = row.table;
            match (app, m.local_of(&row)) {
                (Some(cells), Some(l)) => writes.push((l, row, cells)),
                (Some(cells), None) => {
                    let Some((&(_, l), _)) = engine_ids.iter().find(|(_, r)| **r == row) else {
                        return Err(format!(
                            "i{at} has no local number for {row:?}, which the model says arrived live"
                        )
                        .into());
                    };
                    if m.ids.contains_key(&(t, l)) || m.app.contains_key(&RowId::local(t, l)) {
                        return Err(format!(
                            "i{at} numbered the new {row:?} {l}, the number of another row"
                        )
                        .into());
                    }
                    m.ids.insert((t, l), row.clone());
                    writes.push((l, row, cells));
                }
                (None, Some(l)) => {
                    m.ids.remove(&(t, l));
                    m.app.remove(&RowId::local(t, l));
                }
                (None, None) => {}
            }
        }
        for (l, row, mut cells) in writes {
            if row.table == LOC {
                if let Value::Blob(gid) = &cells[LOC_PARENT - 1] {
                    let parent = identity_of(sites, LOC, gid)?;
                    let Some(p) = m.local_of(&parent) else {
                        return Err(format!(
                            "i{at}: {row:?} arrived pointing at {parent:?}, which is not here, \
                             and was not held in quarantine"
                        )
                        .into());
                    };
                    cells[LOC_PARENT - 1] = Value::Integer(p);
                }
            }
            m.app.insert(RowId::local(row.table, l), cells);
        }
        Ok(())
    }

    /// What the engine holds in quarantine must not fit (spec/quarantine.md):
    /// merged into the instance's state, a held row would point at a row
    /// that is not here, or its delete would leave a row pointing at
    /// nothing; and no set of held rows fits together either (two new rows
    /// pointing at each other).
    fn check_held(&self, at: usize) -> Res<()> {
        let m = &self.models[at];
        if m.held.is_empty() {
            return Ok(());
        }
        // Each entry's outcome: live pointing at (Some) a row or at
        // nothing, or deleted (None).
        let mut outcome: BTreeMap<&RowId, Option<Option<RowId>>> = BTreeMap::new();
        for (row, rec) in &m.held {
            let mut state = m
                .rows
                .get(row)
                .cloned()
                .unwrap_or_else(|| RowModel::new(row.cells()));
            let mut app = m.app_row(&self.sites, row);
            merge_record(&mut state, &mut app, rec, &|v: &Ver| self.rank(v));
            let result = match (&app, state.live()) {
                (Some(cells), true) if row.table == LOC => match &cells[LOC_PARENT - 1] {
                    Value::Blob(gid) => Some(Some(identity_of(&self.sites, LOC, gid)?)),
                    _ => Some(None),
                },
                (_, true) => Some(None),
                (_, false) => None,
            };
            outcome.insert(row, result);
        }
        // Does `row` fit with the rows of `group` applied too?
        let fits = |row: &RowId, group: &BTreeSet<&RowId>| -> bool {
            let live = |r: &RowId| match outcome.get(r) {
                Some(o) if group.contains(r) => o.is_some(),
                _ => m.local_of(r).is_some(),
            };
            match &outcome[row] {
                Some(None) => true,
                Some(Some(parent)) => parent == row || live(parent),
                None => {
                    let Some(local) = m.local_of(row) else {
                        return true;
                    };
                    let here = m.app.iter().any(|(r, cells)| {
                        r.table == LOC
                            && cells[LOC_PARENT - 1] == Value::Integer(local)
                            && r.local_number()
                                .and_then(|l| m.ids.get(&(LOC, l)))
                                .is_none_or(|child| !group.contains(child))
                    });
                    let held = group
                        .iter()
                        .any(|r| matches!(&outcome[r], Some(Some(p)) if p == row));
                    !here && !held
                }
            }
        };
        for row in m.held.keys() {
            if fits(row, &BTreeSet::from([row])) {
                return Err(format!(
                    "the engine holds {row:?} in quarantine, but it fits: {}",
                    m.held[row].text(row)
                )
                .into());
            }
        }
        let mut group: BTreeSet<&RowId> = m.held.keys().collect();
        loop {
            let keep: BTreeSet<&RowId> =
                group.iter().copied().filter(|r| fits(r, &group)).collect();
            if keep.len() == group.len() {
                break;
            }
            group = keep;
        }
        if !group.is_empty() {
            return Err(
                format!("the engine holds {group:?} in quarantine, but together they fit").into(),
            );
        }
        Ok(())
    }
}
