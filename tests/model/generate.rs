//! The proptest strategies that generate histories: values chosen to meet
//! in one cell (1, 1.0, '1', X'31'; 0.0 and -0.0; '' and X'' and NULL),
//! writes on each table, steps, and the prologue every instance starts with
//! (the app's default `opt` rows, shared rows and a `loc` hierarchy).

use fieldsync::Value;
use proptest::collection::vec;
use proptest::prelude::*;

use crate::model::history::{History, Set, Step, Write};
use crate::model::rows::RowId;
use crate::model::schema::{OPT, TABLES};
use crate::util::histories::Delivery;

const MAX_INSTANCES: usize = 5;

pub(super) fn value() -> impl Strategy<Value = Value> {
    // Mostly values that SQLite calls equal or that look alike but are not
    // the same (1, 1.0, '1', X'31'; 0.0 and -0.0; '' and X'' and NULL), so
    // they meet in one cell; then edge values; now and then anything.
    let small = prop::sample::select(vec![
        Value::Null,
        Value::Integer(0),
        Value::Integer(1),
        Value::Real(0.0),
        Value::Real(-0.0),
        Value::Real(1.0),
        Value::text(""),
        Value::text("1"),
        Value::text("a"),
        Value::Blob(Vec::new()),
        Value::Blob(b"1".to_vec()),
    ]);
    let edge = prop::sample::select(vec![
        Value::Integer(i64::MIN),
        Value::Integer(i64::MAX),
        Value::Integer(-1),
        Value::Real(f64::MAX),
        Value::Real(f64::MIN),
        Value::Real(f64::MIN_POSITIVE),
        Value::Real(-5e-324),
        Value::Real(f64::INFINITY),
        Value::Real(f64::NEG_INFINITY),
        Value::Real(9_007_199_254_740_993.0),
        Value::Real(9.223_372_036_854_776e18),
        Value::Real(0.1),
        Value::text("héllo"),
        // Not UTF-8: SQLite keeps the bytes, so must fieldsync.
        Value::Text(vec![0xff, 0x00, 0x80]),
        Value::Blob(vec![0]),
        Value::Blob(vec![0xff, 0xfe, 0xfd]),
    ]);
    let any_value = prop_oneof![
        any::<i64>().prop_map(Value::Integer),
        any::<f64>()
            .prop_filter("SQLite stores NaN as NULL", |r| !r.is_nan())
            .prop_map(Value::Real),
        vec(any::<u8>(), 0..4).prop_map(Value::Text),
        vec(any::<u8>(), 0..4).prop_map(Value::Blob),
    ];
    prop_oneof![6 => small, 2 => edge, 1 => any_value]
}

fn row_of(table: usize) -> BoxedStrategy<RowId> {
    if table == 0 {
        prop::sample::select(vec![&b"k0"[..], b"k1", b"k\xff"])
            .prop_map(RowId::item)
            .boxed()
    } else {
        prop::sample::select(vec![("a", 1), ("a", 2), ("b", 1)])
            .prop_map(|(x, y)| RowId::link(x, y))
            .boxed()
    }
}

/// A SET list: some cells, each a new value or `c = c`.
fn set_of(table: usize, at_least_one: bool) -> BoxedStrategy<Vec<Set>> {
    let n = TABLES[table].cells.len();
    (
        vec(
            proptest::option::of(proptest::option::weighted(0.9, value())),
            n,
        ),
        0..n,
    )
        .prop_map(move |(choice, first)| {
            let mut set: Vec<Set> = choice
                .into_iter()
                .enumerate()
                .filter_map(|(cell, v)| v.map(|value| Set { cell, value }))
                .collect();
            if set.is_empty() && at_least_one {
                set.push(Set {
                    cell: first,
                    value: None,
                });
            }
            set
        })
        .boxed()
}

fn write_for(table: usize) -> BoxedStrategy<Write> {
    let n = TABLES[table].cells.len();
    let rows = row_of(table);
    prop_oneof![
        3 => (rows.clone(), vec(value(), n), any::<bool>())
            .prop_map(|(row, values, replace)| Write::Insert { row, values, replace }),
        4 => (rows.clone(), set_of(table, true)).prop_map(|(row, set)| Write::Update { row, set }),
        2 => rows.clone().prop_map(|row| Write::Delete { row }),
        1 => (rows.clone(), vec(value(), n)).prop_map(|(row, values)| Write::Reinsert { row, values }),
        2 => (rows.clone(), rows, set_of(table, false))
            .prop_map(|(from, to, set)| Write::Rekey { from, to, set }),
        1 => set_of(table, true).prop_map(move |set| Write::UpdateAll { table, set }),
    ]
    .boxed()
}

/// Writes on `item`, which has a rowid: those of every table, and an
/// `INSERT OR REPLACE` that takes another row's rowid.
fn item_write() -> BoxedStrategy<Write> {
    let rows = row_of(0);
    let n = TABLES[0].cells.len();
    prop_oneof![
        14 => write_for(0),
        1 => (rows.clone(), rows, vec(value(), n))
            .prop_map(|(row, from, values)| Write::ReplaceRowid { row, from, values }),
    ]
    .boxed()
}

/// Writes on `loc` (integer key numbered by SQLite, a self-reference).
fn loc_name() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        Value::Null,
        Value::text("a"),
        Value::text("b"),
        Value::text("c"),
    ])
}

fn loc_write() -> BoxedStrategy<Write> {
    let name = loc_name;
    let pick = || 0..8usize;
    prop_oneof![
        3 => (name(), proptest::option::weighted(0.7, pick()))
            .prop_map(|(name, parent)| Write::LocInsert { name, parent }),
        2 => (pick(), name()).prop_map(|(pick, name)| Write::LocRename { pick, name }),
        3 => (pick(), proptest::option::weighted(0.8, pick()))
            .prop_map(|(pick, parent)| Write::LocRepoint { pick, parent }),
        2 => pick().prop_map(|pick| Write::LocDelete { pick }),
    ]
    .boxed()
}

/// Writes on `opt` (no primary key): few distinct values, so identical
/// rows are inserted on one instance and on several.
fn opt_value() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![Value::Null, Value::text("x"), Value::text("y")])
}

fn opt_write() -> BoxedStrategy<Write> {
    let v = opt_value;
    let pick = || 0..8usize;
    let n = TABLES[OPT].cells.len();
    prop_oneof![
        3 => vec(v(), n).prop_map(|values| Write::OptInsert { values }),
        1 => pick().prop_map(|pick| Write::OptCopy { pick }),
        3 => (pick(), set_of(OPT, true)).prop_map(|(pick, set)| Write::OptUpdate { pick, set }),
        2 => pick().prop_map(|pick| Write::OptDelete { pick }),
    ]
    .boxed()
}

pub(super) fn write() -> impl Strategy<Value = Write> {
    prop_oneof![3 => item_write(), 1 => write_for(1), 2 => loc_write(), 2 => opt_write()]
}

/// A step with instance numbers below `MAX_INSTANCES`; [`history`] brings
/// them below the case's instance count.
pub(super) fn step() -> impl Strategy<Value = Step> {
    let i = 0..MAX_INSTANCES;
    prop_oneof![
        6 => (i.clone(), write()).prop_map(|(at, write)| Step::Write { at, write }),
        2 => (i.clone(), 1..MAX_INSTANCES, any::<bool>())
            .prop_map(|(from, off, resend)| Step::Export { from, to: off, resend }),
        2 => (i.clone(), 1..MAX_INSTANCES).prop_map(|(from, off)| Step::Sync { from, to: off }),
        1 => (i.clone(), 1..MAX_INSTANCES, any::<bool>())
            .prop_map(|(client, off, pull)| Step::NetSync { client, server: off, pull }),
        1 => i.clone().prop_map(|from| Step::ExportFull { from }),
        1 => i.clone().prop_map(|at| Step::Compact { at }),
        3 => (i.clone(), 0..4usize).prop_map(|(at, back)| Step::Import { at, back }),
        1 => (i, 0..4usize, 1..4u64)
            .prop_map(|(at, back, records)| Step::ImportStopped { at, back, records }),
    ]
}

/// A row every instance starts with (inserted at i0, shared by a full
/// export), so concurrent edits of one row happen from the first step.
fn initial_row() -> impl Strategy<Value = Write> {
    let n = |t: usize| TABLES[t].cells.len();
    prop_oneof![
        (row_of(0), vec(value(), n(0))),
        (row_of(1), vec(value(), n(1))),
    ]
    .prop_map(|(row, values)| Write::Insert {
        row,
        values,
        replace: true,
    })
}

pub(super) fn history() -> impl Strategy<Value = History> {
    (
        3..=MAX_INSTANCES,
        vec(initial_row(), 0..6),
        vec(step(), 1..64),
        vec((0..64usize, 0..MAX_INSTANCES), 0..16),
        vec(
            prop::sample::select(vec![0i64, 0, 0, 3, -3, 2_000, -2_000, 7_200_000]),
            MAX_INSTANCES,
        ),
        vec(vec(opt_value(), TABLES[OPT].cells.len()), 0..3),
        vec(
            (loc_name(), proptest::option::weighted(0.7, 0..8usize)),
            0..5,
        ),
        // Last, so the seeds kept from before it still give the same
        // histories.
        any::<bool>(),
    )
        .prop_map(
            |(n, mut initial, steps, deliveries, mut skew_ms, defaults, locs, resend_free)| {
                // A hierarchy every instance starts with.
                initial.extend(
                    locs.into_iter()
                        .map(|(name, parent)| Write::LocInsert { name, parent }),
                );
                skew_ms.truncate(n);
                // The app's default rows of `opt`, installed on every instance
                // before they meet: identical rows, one row everywhere.
                let mut prologue: Vec<Step> = (0..n)
                    .flat_map(|at| {
                        defaults.iter().map(move |values| Step::Write {
                            at,
                            write: Write::OptInsert {
                                values: values.clone(),
                            },
                        })
                    })
                    .collect();
                if !initial.is_empty() {
                    prologue.extend(
                        initial
                            .into_iter()
                            .map(|write| Step::Write { at: 0, write }),
                    );
                    prologue.push(Step::ExportFull { from: 0 });
                    prologue.extend((1..n).map(|at| Step::Import { at, back: 0 }));
                }
                let steps = prologue
                    .into_iter()
                    .chain(steps)
                    .map(|s| match s {
                        Step::Write { at, write } => Step::Write { at: at % n, write },
                        // `to` holds an offset 1.. from `from`, never `from` itself.
                        Step::Export { from, to, resend } => Step::Export {
                            from: from % n,
                            to: (from % n + 1 + (to - 1) % (n - 1)) % n,
                            resend,
                        },
                        Step::Sync { from, to } => Step::Sync {
                            from: from % n,
                            to: (from % n + 1 + (to - 1) % (n - 1)) % n,
                        },
                        Step::NetSync {
                            client,
                            server,
                            pull,
                        } => Step::NetSync {
                            client: client % n,
                            server: (client % n + 1 + (server - 1) % (n - 1)) % n,
                            pull,
                        },
                        Step::ExportFull { from } => Step::ExportFull { from: from % n },
                        Step::Compact { at } => Step::Compact { at: at % n },
                        Step::Import { at, back } => Step::Import { at: at % n, back },
                        Step::ImportStopped { at, back, records } => Step::ImportStopped {
                            at: at % n,
                            back,
                            records,
                        },
                    })
                    .collect();
                let deliveries = deliveries
                    .into_iter()
                    .map(|(bundle, at)| Delivery { bundle, at: at % n })
                    .collect();
                History {
                    instances: n,
                    skew_ms,
                    steps,
                    deliveries,
                    resend_free,
                }
            },
        )
}
