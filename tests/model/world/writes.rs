//! App writes on an instance: a write made concrete against the rows it has
//! (references kept whole, as an app with foreign keys would), run as SQL,
//! and what capture recorded checked against the model's prediction.

use std::collections::{BTreeMap, BTreeSet};

use fieldsync::Value;

use crate::model::engine::{read_tables, stmt_sql, table_ids};
use crate::model::history::{Plan, Resolved, Set, Write};
use crate::model::known_bugs::avoid_known_bug;
use crate::model::reference::{Captured, Op, View, captured_text, diff, predict};
use crate::model::rows::{RowId, show};
use crate::model::schema::{LOC, LOC_PARENT, OPT, TABLES};
use crate::model::world::World;
use crate::util::Res;

impl World {
    /// Make a write on a table with a local key concrete on instance `at`
    /// (rows picked by position among those it has, in local-number order).
    ///
    /// References stay whole as with an app running with foreign keys on,
    /// and more: a `loc` row is deleted only if no change anywhere ever
    /// pointed at it, and once deleted anywhere no new change points at it
    /// (it may still be live elsewhere). A delete made concurrently with a
    /// reference to the row made elsewhere is refused on both sides
    /// (spec/quarantine.md: still referenced here, missing parent there)
    /// and held until one of the rows is edited again: the instances do not
    /// converge (spec/merge.md, "Consequences, and what is still open").
    /// The model does not go there.
    fn resolve(&self, at: usize, w: &Write) -> Plan {
        let m = &self.models[at];
        let rows = |t: usize| -> Vec<i64> {
            m.app
                .keys()
                .filter(|r| r.table == t)
                .filter_map(RowId::local_number)
                .collect()
        };
        let pick = |list: &[i64], k: usize| -> Option<i64> {
            (!list.is_empty()).then(|| list[k % list.len()])
        };
        let locs = rows(LOC);
        let identity = |l: i64| m.ids.get(&(LOC, l));
        let pointable: Vec<i64> = locs
            .iter()
            .copied()
            .filter(|&l| identity(l).is_none_or(|id| !self.doomed.contains(id)))
            .collect();
        let parent = |p: &Option<usize>| p.and_then(|p| pick(&pointable, p));
        // Known engine bug (see `avoid_known_bug`): rows new at the
        // receiver pointing at each other never arrive.
        let no_cycles = avoid_known_bug("cycles");
        let reaches = |from: i64, to: i64| -> bool {
            let mut at = Some(from);
            let mut steps = 0;
            while let Some(l) = at {
                if l == to {
                    return true;
                }
                steps += 1;
                if steps > 100 {
                    return true;
                }
                at = match m.app.get(&RowId::local(LOC, l)).map(|c| &c[LOC_PARENT - 1]) {
                    Some(Value::Integer(p)) => Some(*p),
                    _ => None,
                };
            }
            false
        };
        let int = |l: Option<i64>| l.map_or(Value::Null, Value::Integer);
        let opts = rows(OPT);
        let update = |row: RowId, set: Vec<Set>, points_at: Option<i64>| Plan::Do {
            stmt: Resolved::Update { row, set },
            points_at,
            deletes: None,
        };
        match w {
            Write::LocInsert { name, parent: p } => {
                let p = parent(p);
                Plan::Do {
                    stmt: Resolved::Insert {
                        table: LOC,
                        values: vec![name.clone(), int(p)],
                    },
                    points_at: p,
                    deletes: None,
                }
            }
            Write::LocRename { pick: k, name } => match pick(&locs, *k) {
                None => Plan::Nothing,
                Some(l) => update(
                    RowId::local(LOC, l),
                    vec![Set {
                        cell: 0,
                        value: Some(name.clone()),
                    }],
                    None,
                ),
            },
            Write::LocRepoint { pick: k, parent: p } => match pick(&locs, *k) {
                None => Plan::Nothing,
                Some(l) => {
                    let mut p = parent(p);
                    if no_cycles && p.is_some_and(|p| p != l && reaches(p, l)) {
                        p = None;
                    }
                    update(
                        RowId::local(LOC, l),
                        vec![Set {
                            cell: LOC_PARENT - 1,
                            value: Some(int(p)),
                        }],
                        p,
                    )
                }
            },
            Write::LocDelete { pick: k } => {
                let deletable: Vec<i64> = locs
                    .iter()
                    .copied()
                    .filter(|&l| {
                        !self.pending_parent.contains(&(at, l))
                            && identity(l).is_none_or(|id| !self.ever_parent.contains(id))
                            && !m.app.iter().any(|(r, c)| {
                                r.table == LOC && c[LOC_PARENT - 1] == Value::Integer(l)
                            })
                    })
                    .collect();
                match pick(&deletable, *k) {
                    None => Plan::Nothing,
                    Some(l) => Plan::Do {
                        stmt: Resolved::Delete {
                            row: RowId::local(LOC, l),
                        },
                        points_at: None,
                        deletes: Some(l),
                    },
                }
            }
            Write::OptInsert { values } => Plan::Do {
                stmt: Resolved::Insert {
                    table: OPT,
                    values: values.clone(),
                },
                points_at: None,
                deletes: None,
            },
            Write::OptCopy { pick: k } => {
                match pick(&opts, *k).and_then(|l| m.app.get(&RowId::local(OPT, l))) {
                    None => Plan::Nothing,
                    Some(values) => Plan::Do {
                        stmt: Resolved::Insert {
                            table: OPT,
                            values: values.clone(),
                        },
                        points_at: None,
                        deletes: None,
                    },
                }
            }
            Write::OptUpdate { pick: k, set } => match pick(&opts, *k) {
                None => Plan::Nothing,
                Some(l) => update(RowId::local(OPT, l), set.clone(), None),
            },
            Write::OptDelete { pick: k } => match pick(&opts, *k) {
                None => Plan::Nothing,
                Some(l) => Plan::Do {
                    stmt: Resolved::Delete {
                        row: RowId::local(OPT, l),
                    },
                    points_at: None,
                    deletes: None,
                },
            },
            _ => Plan::Key,
        }
    }

    pub(super) fn write(&mut self, at: usize, w: &Write) -> Res<()> {
        let plan = self.resolve(at, w);
        let stmts = match &plan {
            Plan::Key => w.statements(),
            Plan::Nothing => {
                self.trace.push(format!("i{at}: {w:?}  [no row to pick]"));
                return Ok(());
            }
            Plan::Do { stmt, .. } => vec![stmt.statement()],
        };
        let mut notes = Vec::new();
        for stmt in stmts {
            let conn = self.instances[at].connection();
            let before = read_tables(conn)?;
            if before != self.models[at].app {
                return Err(format!(
                    "i{at}'s app tables changed behind the model's back:\n{}",
                    diff(
                        "engine",
                        &View {
                            app: before,
                            log: BTreeMap::new()
                        },
                        "model",
                        &View {
                            app: self.models[at].app.clone(),
                            log: BTreeMap::new()
                        }
                    )
                )
                .into());
            }
            let (sql, params) = stmt_sql(&stmt);
            let last: i64 = conn.query_row(
                "SELECT coalesce(max(id), 0) FROM fieldsync_pending",
                [],
                |r| r.get(0),
            )?;
            let n = conn.execute(&sql, rusqlite::params_from_iter(params.iter()))?;
            if self.skew_ms[at] != 0 {
                conn.execute(
                    "UPDATE fieldsync_pending SET at = at + ?1 WHERE id > ?2",
                    rusqlite::params![self.skew_ms[at] as f64 / 86_400_000.0, last],
                )?;
            }
            let after = read_tables(conn)?;
            let mut predicted = predict(&stmt, &before, &after)?;
            let observed = self.read_pending(at)?;
            let mut got: Vec<(RowId, Op, BTreeSet<usize>)> = observed
                .iter()
                .map(|c| (c.row.clone(), c.op, c.bits.clone()))
                .collect();
            predicted.sort();
            got.sort();
            if predicted != got {
                return Err(format!(
                    "i{at}: `{sql}` was captured as {} but the capture rules say {}",
                    captured_text(&got),
                    captured_text(&predicted)
                )
                .into());
            }
            let m = &mut self.models[at];
            for mut c in observed {
                c.after = after.get(&c.row).cloned();
                m.pending.push(c);
            }
            m.app = after;
            if matches!(plan, Plan::Do { .. }) {
                let params: Vec<String> = params.iter().map(show).collect();
                notes.push(format!("`{sql}` ({})", params.join(", ")));
            }
            notes.push(format!("{n} row(s), captured {}", captured_text(&got)));
        }
        if let Plan::Do {
            points_at, deletes, ..
        } = &plan
        {
            let ids = &self.models[at].ids;
            if let Some(l) = points_at {
                match ids.get(&(LOC, *l)) {
                    Some(id) => self.ever_parent.insert(id.clone()),
                    None => self.pending_parent.insert((at, *l)),
                };
            }
            if let Some(l) = deletes {
                if let Some(id) = ids.get(&(LOC, *l)) {
                    self.doomed.insert(id.clone());
                }
            }
        }
        self.trace
            .push(format!("i{at}: {w:?}  [{}]", notes.join("; ")));
        Ok(())
    }

    /// The captured rows beyond those the model already has, in capture
    /// order; checks that those it has are still there.
    fn read_pending(&self, at: usize) -> Res<Vec<Captured>> {
        let conn = self.instances[at].connection();
        let ids = table_ids(conn)?;
        let mut stmt =
            conn.prepare("SELECT t, op, at, k0, k1, m0 FROM fieldsync_pending ORDER BY id")?;
        let mut rows = stmt.query([])?;
        let mut all = Vec::new();
        while let Some(r) = rows.next()? {
            let t: i64 = r.get(0)?;
            let table = *ids
                .get(&t)
                .ok_or_else(|| format!("fieldsync_pending names table #{t}"))?;
            let op = match r.get::<_, i64>(1)? {
                1 => Op::Insert,
                2 => Op::Update,
                3 => Op::Delete,
                other => return Err(format!("fieldsync_pending has op {other}").into()),
            };
            let key: Vec<Value> = (0..TABLES[table].key.len())
                .map(|i| r.get::<_, Value>(3 + i))
                .collect::<rusqlite::Result<_>>()?;
            let mask = r.get::<_, Option<i64>>(5)?.unwrap_or(0) as u64;
            all.push(Captured {
                row: RowId::from_values(table, &key)?,
                op,
                bits: (0..64).filter(|b| mask & (1 << b) != 0).collect(),
                at: r.get(2)?,
                after: None,
            });
        }
        let known = &self.models[at].pending;
        let same = |a: &Captured, b: &Captured| a.row == b.row && a.op == b.op && a.bits == b.bits;
        if all.len() < known.len() || !known.iter().zip(&all).all(|(a, b)| same(a, b)) {
            return Err(format!(
                "i{at}: fieldsync_pending no longer holds the {} captured row(s) the model expects",
                known.len()
            )
            .into());
        }
        Ok(all.split_off(known.len()))
    }
}
