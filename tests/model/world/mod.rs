//! The driver: a [`World`] of 3–5 real instances with the model beside
//! them, playing a history step by step and checking every instance against
//! its model after each operation, then all of them against the join of
//! every change ever made. Its operations, by concern: app writes
//! ([`writes`]), stamping ([`stamp`]), exports, imports and compaction
//! ([`exchange`]).

mod exchange;
mod stamp;
mod writes;

use std::collections::{BTreeMap, BTreeSet};

use fieldsync::fuzzing::decode_key;
use fieldsync::merge::ColSet;
use fieldsync::{ExportTarget, Instance, Selection, Value};
use rusqlite::Connection;

use crate::model::engine::{check_catalog, read_held, read_ids, read_tables, table_index};
use crate::model::history::{History, Step};
use crate::model::known_bugs::avoid_known_bug;
use crate::model::reference::{
    Change, Holders, InstModel, Rank, Rec, Stamps, Tables, Ver, View, diff,
};
use crate::model::rows::{Ids, RowId, app_by_identity, row_from};
use crate::model::schema::{SCHEMA, TABLES, bit_name};
use crate::util::Res;
use crate::util::histories;

pub(super) struct Bundle {
    pub(super) sender: usize,
    pub(super) what: String,
    pub(super) bytes: Vec<u8>,
    /// The records the model predicts (and checked the body against).
    pub(super) records: BTreeMap<RowId, Rec>,
}

pub(super) struct World {
    pub(super) instances: Vec<Instance>,
    pub(super) sites: Vec<[u8; 16]>,
    pub(super) models: Vec<InstModel>,
    /// Every change that survived stamping, anywhere.
    pub(super) changes: Vec<Change>,
    pub(super) pool: Vec<Bundle>,
    pub(super) trace: Vec<String>,
    pub(super) skew_ms: Vec<i64>,
    /// A bundle without rows from an instance outside the world.
    pub(super) probe: Vec<u8>,
    /// The app's foreign-key discipline, kept across instances (see
    /// [`World::resolve`]): `loc` rows some change ever pointed at (by
    /// identity; by instance and local number while not stamped), and
    /// those deleted somewhere, which no new change may point at.
    pub(super) ever_parent: BTreeSet<RowId>,
    pub(super) pending_parent: BTreeSet<(usize, i64)>,
    pub(super) doomed: BTreeSet<RowId>,
    // Declared last, so it is dropped (and the files removed) last.
    pub(super) dir: tempfile::TempDir,
}

/// Enrol every instance at every other (a deployment whose HQ enrolled
/// everyone).
pub(crate) fn enrol_all(instances: &mut [Instance]) -> Res {
    for i in 0..instances.len() {
        for j in i + 1..instances.len() {
            let (a, b) = instances.split_at_mut(j);
            fieldsync::fuzzing::enrol_each_other(&mut a[i], &mut b[0])?;
        }
    }
    Ok(())
}

pub(super) fn name(i: usize) -> String {
    format!("i{i}")
}

impl World {
    pub(super) fn new(n: usize, skew_ms: &[i64]) -> Res<World> {
        let dir = tempfile::tempdir()?;
        let mut instances = Vec::with_capacity(n);
        let mut sites = Vec::with_capacity(n);
        for i in 0..n {
            let (mut inst, _) =
                Instance::init(dir.path().join(format!("{}.db", name(i))), &name(i))?;
            inst.connection().execute_batch(SCHEMA)?;
            // Durability is not under test; fsync would dominate the run time.
            inst.connection()
                .execute_batch("PRAGMA synchronous = OFF")?;
            inst.track(&Selection::All)?;
            // The model is spec/merge.md's last-writer-wins under skewed
            // clocks (up to 2 hours ahead): the clock bound, which holds
            // changes further ahead "from the future", is tested on its own
            // (tests/clock.rs), so here it is wider than any skew.
            inst.set_max_clock_ahead_ms(86_400_000)?;
            // Known engine bug (see `avoid_known_bug`): the first stamp
            // after `track` records writes to `opt` at its own time.
            if avoid_known_bug("first-stamp") {
                inst.compact()?;
            }
            check_catalog(inst.connection())?;
            sites.push(*inst.site_id()?.as_bytes());
            instances.push(inst);
        }
        enrol_all(&mut instances)?;
        let mut probe = Vec::new();
        {
            let (mut p, _) = Instance::init(dir.path().join("probe.db"), "probe")?;
            p.connection().execute_batch(SCHEMA)?;
            p.track(&Selection::All)?;
            p.export(&ExportTarget::Full, &mut probe)?;
        }
        Ok(World {
            probe,
            instances,
            sites,
            models: (0..n).map(|_| InstModel::default()).collect(),
            skew_ms: skew_ms.to_vec(),
            changes: Vec::new(),
            pool: Vec::new(),
            trace: Vec::new(),
            ever_parent: BTreeSet::new(),
            pending_parent: BTreeSet::new(),
            doomed: BTreeSet::new(),
            dir,
        })
    }

    pub(super) fn rank(&self, v: &Ver) -> Rank {
        (v.hlc, self.sites[v.origin], v.seq)
    }

    pub(super) fn origin_of(&self, site: &[u8]) -> Res<usize> {
        self.sites
            .iter()
            .position(|s| s[..] == *site)
            .ok_or_else(|| format!("unknown site id {site:02x?}").into())
    }

    pub(super) fn view_of(&self, conn: &Connection) -> Res<View> {
        let app = app_by_identity(
            &self.sites,
            &read_tables(conn)?,
            &read_ids(conn, &self.sites)?,
        );
        let mut log: BTreeMap<RowId, (u64, Holders)> = BTreeMap::new();
        let mut stmt = conn.prepare(
            "SELECT t.name, l.pk, s.site_id, l.seq, l.cl, l.hlc, l.cols \
             FROM fieldsync_log AS l \
             JOIN fieldsync_sites AS s ON s.id = l.origin \
             JOIN fieldsync_tables AS t ON t.id = l.tbl",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let table_name: String = r.get(0)?;
            let table = table_index(&table_name)?;
            let key = decode_key(&r.get::<_, Vec<u8>>(1)?)?;
            let row = row_from(&self.sites, table, &key)?;
            let origin = self.origin_of(&r.get::<_, Vec<u8>>(2)?)?;
            let seq = r.get::<_, i64>(3)? as u64;
            let cl = r.get::<_, i64>(4)? as u64;
            let hlc = r.get::<_, i64>(5)? as u64;
            let cols = ColSet::from_bytes(&r.get::<_, Vec<u8>>(6)?)?;
            let entry = log.entry(row.clone()).or_insert((cl, Holders::new()));
            if entry.0 != cl {
                return Err(format!(
                    "the log has two causal lengths for {row:?}: {} and {cl}",
                    entry.0
                )
                .into());
            }
            entry.1.insert((origin, seq), (hlc, cols.iter().collect()));
        }
        Ok(View { app, log })
    }

    pub(super) fn model_view(&self, at: usize) -> View {
        let m = &self.models[at];
        View {
            app: app_by_identity(&self.sites, &m.app, &m.ids),
            log: m
                .rows
                .iter()
                .filter(|(_, r)| r.cl > 0)
                .map(|(row, r)| (row.clone(), (r.cl, r.holders())))
                .collect(),
        }
    }

    /// The instance must hold exactly what the model says.
    pub(super) fn check_state(&self, at: usize, when: &str) -> Res<()> {
        let real = self.view_of(self.instances[at].connection())?;
        let model = self.model_view(at);
        if real != model {
            return Err(format!(
                "i{at} {when} differs from the model:\n{}",
                diff("engine", &real, "model", &model)
            )
            .into());
        }
        // The identity map and the quarantine.
        let conn = self.instances[at].connection();
        let ids = read_ids(conn, &self.sites)?;
        let m = &self.models[at];
        if ids != m.ids {
            let show = |ids: &Ids| -> String {
                ids.iter()
                    .map(|((t, l), r)| format!("{} {l} = {r:?}", TABLES[*t].name))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(format!(
                "i{at} {when}: fieldsync_ids is {{{}}}, the model says {{{}}}",
                show(&ids),
                show(&m.ids)
            )
            .into());
        }
        let held = read_held(conn, &self.sites)?;
        if held.iter().ne(m.held.keys()) {
            return Err(format!(
                "i{at} {when}: quarantine holds {held:?}, the model {:?}",
                m.held.keys().collect::<Vec<_>>()
            )
            .into());
        }
        self.check_fingerprints(at, when)?;
        // The model's own invariant: a row in the app table lives (a live
        // row may be missing: deleted without a trigger, not yet noticed).
        for (row, r) in &self.models[at].rows {
            if !r.live() && self.models[at].has_app(row) {
                return Err(format!(
                    "model inconsistency at i{at}: {row:?} has cl {} but is in the app table",
                    r.cl
                )
                .into());
            }
        }
        Ok(())
    }

    /// `fingerprint` against the model (spec/merge.md, "Fingerprints"): a
    /// table's fingerprint at `at` equals its fingerprint at another
    /// instance exactly when the model says both hold the same rows, by
    /// identity. Tables with rows not numbered yet are skipped: those are
    /// hashed by their local number.
    fn check_fingerprints(&self, at: usize, when: &str) -> Res<()> {
        let mine = self.instances[at].fingerprints(&[])?;
        let rows_of = |app: &Tables, t: usize| -> Vec<(RowId, Vec<Value>)> {
            (app.iter())
                .filter(|(row, _)| row.table == t)
                .map(|(r, c)| (r.clone(), c.clone()))
                .collect()
        };
        let my_app = self.model_view(at).app;
        for other in 0..self.instances.len() {
            if other == at {
                continue;
            }
            let theirs = self.instances[other].fingerprints(&[])?;
            let their_app = self.model_view(other).app;
            for (a, b) in mine.tables.iter().zip(&theirs.tables) {
                if a.unnumbered > 0 || b.unnumbered > 0 {
                    continue;
                }
                let t = table_index(&a.table)?;
                let same = rows_of(&my_app, t) == rows_of(&their_app, t);
                if (a.digest == b.digest) != same {
                    return Err(format!(
                        "i{at} {when}: the fingerprints of {} at i{at} and i{other} are {} and {}, but the model says their rows are {}",
                        a.table,
                        a.fingerprint,
                        b.fingerprint,
                        if same { "the same" } else { "different" }
                    )
                    .into());
                }
            }
        }
        Ok(())
    }

    /// The changes of `at` numbered after the model's counter, as the log at
    /// `conn` (the instance or a stamped copy) shows them: row and clock.
    pub(super) fn new_stamps(&self, conn: &Connection, at: usize) -> Res<Stamps> {
        let mut stmt = conn.prepare(
            "SELECT l.seq, t.name, l.pk, l.hlc FROM fieldsync_log AS l \
             JOIN fieldsync_sites AS s ON s.id = l.origin \
             JOIN fieldsync_tables AS t ON t.id = l.tbl \
             WHERE s.site_id = ?1 AND l.seq > ?2",
        )?;
        let mut rows = stmt.query(rusqlite::params![
            &self.sites[at][..],
            self.models[at].seq as i64
        ])?;
        let mut out = Stamps::new();
        while let Some(r) = rows.next()? {
            let table = table_index(&r.get::<_, String>(1)?)?;
            let key = decode_key(&r.get::<_, Vec<u8>>(2)?)?;
            out.insert(
                r.get::<_, i64>(0)? as u64,
                (
                    row_from(&self.sites, table, &key)?,
                    r.get::<_, i64>(3)? as u64,
                ),
            );
        }
        Ok(out)
    }

    /// True if no instance's `status` shows a change missing.
    fn nobody_misses_anything(&mut self) -> Res<bool> {
        for i in &mut self.instances {
            if i.status()?.origins.iter().any(|o| !o.gaps.is_empty()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub(super) fn play(&mut self, h: &History) -> Res<()> {
        let n = h.instances;
        for step in &h.steps {
            match step {
                Step::Write { at, write } => self.write(*at, write)?,
                Step::Export { from, to, resend } => {
                    let target = ExportTarget::Peer {
                        to: name(*to),
                        resend: *resend && !h.resend_free,
                    };
                    self.export(*from, &target)?;
                }
                Step::Sync { from, to } => {
                    let target = ExportTarget::Peer {
                        to: name(*to),
                        resend: false,
                    };
                    let b = self.export(*from, &target)?;
                    self.import(b, *to)?;
                }
                Step::NetSync {
                    client,
                    server,
                    pull,
                } => {
                    let ours = if *pull {
                        ExportTarget::Acknowledge { to: name(*server) }
                    } else {
                        ExportTarget::Peer {
                            to: name(*server),
                            resend: true,
                        }
                    };
                    let b = self.export(*client, &ours)?;
                    self.import(b, *server)?;
                    let answer = ExportTarget::Peer {
                        to: name(*client),
                        resend: true,
                    };
                    let b = self.export(*server, &answer)?;
                    self.import(b, *client)?;
                }
                Step::ExportFull { from } => {
                    self.export(*from, &ExportTarget::Full)?;
                }
                Step::Compact { at } => self.compact(*at)?,
                Step::Import { at, back } => match histories::pick(self.pool.len(), *back) {
                    Some(b) => {
                        self.import(b, *at)?;
                    }
                    None => self.trace.push(format!("i{at}: no bundle to import yet")),
                },
                Step::ImportStopped { at, back, records } => {
                    match histories::pick(self.pool.len(), *back) {
                        Some(b) => {
                            self.import_stopped(b, *at, Some(*records))?;
                        }
                        None => self.trace.push(format!("i{at}: no bundle to import yet")),
                    }
                }
            }
        }
        self.trace.push("-- deliveries --".into());
        for (b, at) in histories::delivered(&h.deliveries, self.pool.len()) {
            self.import(b, at)?;
        }

        // A row deleted without a trigger and not otherwise changed reaches
        // peers only after a compact or full export (spec/capture.md): an
        // instance holding one is compacted first.
        for at in 0..n {
            let m = &self.models[at];
            if m.rows
                .iter()
                .any(|(row, st)| st.live() && !m.app.contains_key(row))
            {
                self.compact(at)?;
            }
        }

        // Every pair, resending what is not acknowledged, until a round
        // applies nothing. Without resend, bundles that were never
        // imported come back only once their receivers have reported them
        // missing: until a round carries nothing and nobody misses
        // anything, which takes a few more rounds.
        let mut quiet = false;
        let rounds = if h.resend_free { 8 } else { 4 };
        for round in 1..=rounds {
            self.trace.push(format!("-- exchange round {round} --"));
            let mut applied = 0;
            let mut carried = 0;
            for from in 0..n {
                for to in (0..n).filter(|&to| to != from) {
                    let target = ExportTarget::Peer {
                        to: name(to),
                        resend: !h.resend_free,
                    };
                    let b = self.export(from, &target)?;
                    carried += self.pool[b].records.len();
                    applied += self.import(b, to)?.unwrap_or(0);
                }
            }
            let settled = !h.resend_free || (carried == 0 && self.nobody_misses_anything()?);
            if applied == 0 && settled {
                quiet = true;
                break;
            }
        }
        if !quiet {
            return Err(format!(
                "still applying or missing changes after {rounds} all-pairs exchange rounds"
            )
            .into());
        }
        for at in 0..n {
            if !self.models[at].held.is_empty() {
                return Err(format!(
                    "after the exchange i{at} still holds {:?} in quarantine",
                    self.models[at].held.keys().collect::<Vec<_>>()
                )
                .into());
            }
        }

        // (a) Every instance holds the same.
        let views: Vec<View> = (0..n)
            .map(|at| self.view_of(self.instances[at].connection()))
            .collect::<Res<_>>()?;
        for at in 1..n {
            if views[at] != views[0] {
                return Err(format!(
                    "after the exchange i0 and i{at} differ:\n{}",
                    diff("i0", &views[0], &format!("i{at}"), &views[at])
                )
                .into());
            }
        }
        // (b) That is the join of every change ever made.
        let join = self.join()?;
        if views[0] != join {
            return Err(format!(
                "the instances agree, but not with the join of all changes:\n{}",
                diff("instances", &views[0], "join", &join)
            )
            .into());
        }
        self.trace.push(format!(
            "-- all {n} instances agree with the join of {} changes --",
            self.changes.len()
        ));
        Ok(())
    }

    /// The state every instance must reach: per row the greatest causal
    /// length of any change; at it, per cell, the greatest-ranked change
    /// that wrote the cell, and that change's value.
    pub(super) fn join(&self) -> Res<View> {
        let mut by_row: BTreeMap<&RowId, Vec<&Change>> = BTreeMap::new();
        for c in &self.changes {
            by_row.entry(&c.row).or_default().push(c);
        }
        let mut view = View {
            app: Tables::new(),
            log: BTreeMap::new(),
        };
        for (row, changes) in by_row {
            let Some(cl) = changes.iter().map(|c| c.cl).max() else {
                continue;
            };
            let mut holders = Holders::new();
            let mut values = vec![Value::Null; row.cells()];
            for bit in 0..=row.cells() {
                let winner = changes
                    .iter()
                    .filter(|c| c.cl == cl && c.writes.contains(&bit))
                    .max_by_key(|c| self.rank(&c.ver));
                let Some(w) = winner else {
                    if cl % 2 == 1 || bit == 0 {
                        return Err(format!(
                            "model inconsistency: no change of {row:?} at cl {cl} wrote {}",
                            bit_name(row.table, bit)
                        )
                        .into());
                    }
                    continue;
                };
                holders
                    .entry((w.ver.origin, w.ver.seq))
                    .or_insert_with(|| (w.ver.hlc, BTreeSet::new()))
                    .1
                    .insert(bit);
                if bit > 0 {
                    let v = w.values.as_ref().ok_or_else(|| {
                        format!(
                            "model inconsistency: {:?} wrote cells but has no values",
                            w.ver
                        )
                    })?;
                    values[bit - 1] = v[bit - 1].clone();
                }
            }
            if cl % 2 == 1 {
                view.app.insert(row.clone(), values);
            }
            view.log.insert(row.clone(), (cl, holders));
        }
        Ok(view)
    }
}
