//! Model-based differential property test of the merge rules.
//!
//! `instances_match_the_model` drives 3–5 real instances (database files in a
//! temporary directory; a table with a text key and a WITHOUT ROWID table
//! with a composite text/integer key; an `INTEGER PRIMARY KEY AUTOINCREMENT`
//! table `loc` whose `parent` points at its own rows, identified by origin,
//! and a table `opt` without a key, identified by content (spec/merge.md,
//! "Row identity"); INTEGER, TEXT, BLOB, REAL, NUMERIC and untyped columns; NULL, integers, reals with -0.0 and edge values, text
//! with non-UTF-8 bytes, blobs with the empty one) through a random history:
//! app writes through SQL (`INSERT OR IGNORE` / `OR REPLACE`, updates of
//! random column subsets with NULLs and `c = c`, deletes, re-inserts,
//! primary-key changes with `UPDATE OR REPLACE`, multi-row updates,
//! `INSERT OR REPLACE` taking another row's rowid; on `loc`, inserts numbered
//! by SQLite (two instances give the same numbers to different rows),
//! renames, re-pointing `parent` at a row or NULL, deletes; on `opt`,
//! inserts of rows often identical to rows already there or elsewhere,
//! updates and deletes by rowid), delta exports with and
//! without resend, syncs, full exports, imports of pooled bundles in any
//! order (repeated, dropped, an instance's own), compactions, and wall
//! clocks running ahead or behind; then an all-pairs exchange until a round
//! applies nothing. In half the histories nothing is ever resent (no
//! `--resend` in the steps nor in the exchange): a bundle never imported is
//! lost, and must come back by itself once its receiver reports the
//! changes missing (spec/merge.md, "Watermarks").
//!
//! Beside the engine runs a reference model written from spec/merge.md and
//! spec/capture.md. It never calls `fieldsync::merge`:
//!
//! - From each SQL statement and the rows before and after it, the model
//!   predicts what capture records (row, insert/update/delete, the cells
//!   changed by the capture rule) and checks `fieldsync_pending`.
//! - When the engine stamps (export, import, compact), the model folds and
//!   numbers the captured writes itself and applies the spec's local rules
//!   (causal length; which change takes which cells); it records the delete
//!   of a row deleted without a trigger where spec/capture.md says the
//!   engine notices it. From the engine it takes only each surviving
//!   change's HLC, read from `fieldsync_log`; before an import, from a copy
//!   of the database stamped by importing a bundle without rows, so a local
//!   change the import then outranks still has its clock observed. It checks
//!   the clock rules it can: increasing, not before the write's wall time,
//!   past every clock the instance imported.
//! - For every export it predicts the bundle (rows, causal lengths, versions,
//!   values) from its own state of the sender and the change numbers the
//!   header says it covers, and checks the body against it.
//! - For every import it merges its predicted records by the spec's rules
//!   (a higher causal length wins outright, then each cell goes to the
//!   greatest rank `(hlc, site id, seq)`), predicts the applied / known /
//!   older counts, and checks them.
//! - After every operation the instance's app tables and change log must
//!   equal the model's state of that instance.
//! - Rows of `loc` and `opt` are tracked by identity (creating instance and
//!   change number; content signature when first stamped and copy
//!   number), never by local number: the model predicts the identity each
//!   stamped row gets and so `fieldsync_ids`, learns the number an import
//!   gives a row new there (checking it is free), and compares app rows and
//!   log by identity, a `loc` row's `parent` by the identity of the row it
//!   points at. The bundle must carry that identity as the reference.
//! - Which received `loc` rows the engine holds in quarantine is read from
//!   it and checked: a held row must not fit (merged, it would point at a
//!   row that is not here, or its delete would leave a row pointing at
//!   nothing), nor may held rows fit together; every other record is merged
//!   and must leave no reference dangling; a later record of a held row
//!   joins its entry; the quarantined and released counts must match. The
//!   app keeps references whole across instances (see `World::resolve`),
//!   so nothing stays held once every change has arrived.
//! - At the end every instance must hold the same tables and log, equal to
//!   the join of every change ever made, computed afresh from the list of
//!   changes: per row the greatest causal length, per cell the greatest
//!   ranked change of that causal length that wrote it, and its value.
//!
//! A failing history is shrunk, stripped of steps that do not matter, and
//! printed with what happened at each step. Failing seeds are kept in
//! `tests/model/known_bugs.proptest-regressions` ([`known_bugs`]).
//! `FIELDSYNC_MODEL_TRACE=1` prints every case's history and trace (with
//! `-- --nocapture`).
//!
//! The files, by concern: [`schema`] (the app's tables as the test names
//! them), [`rows`] (rows and their identities across instances),
//! [`history`] (the language of histories) and [`generate`] (their
//! strategies), [`reference`] (the model of the spec), [`engine`] (reading
//! an instance's tables, the SQL of app writes), [`world`] (the driver
//! playing a history on the instances and the model side by side, and
//! comparing them), [`known_bugs`] (the bugs it found: seeds and the switch
//! that steers clear of them), [`schema_changes`] (a companion property
//! test with schema changes in its histories: columns added with `ALTER
//! TABLE … ADD COLUMN`, a table added and tracked, instances that run or
//! hold received schema changes; checked at the end against its own
//! last-writer-wins reference, see that module).
//!
//! Cases: 128 by default (about 13 s of CPU in a debug build), or
//! `FIELDSYNC_PROPTEST_CASES`. The deep run:
//!
//! ```text
//! nice -n 10 env FIELDSYNC_PROPTEST_CASES=10000 cargo test --release --test tests model::
//! ```
//!
//! Run of 2026-11-26 (2 shared cores): 10,000 cases passed in 882 s. With
//! `loc` and `opt` (test profile, `FIELDSYNC_MODEL_AVOID_KNOWN_BUGS=all`,
//! 2 shared cores): 3,000 cases passed in 647 s; without avoiding any
//! (engine at 996be85, the two bugs fixed): 2,000 cases passed in 266 s.

mod engine;
mod generate;
mod history;
mod known_bugs;
mod reference;
mod rows;
mod schema;
mod schema_changes;
pub(crate) mod world;

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use crate::model::generate::history;
use crate::model::history::History;
use crate::model::known_bugs::REGRESSIONS;
use crate::model::world::World;
use crate::util::histories;

/// Seeds kept in [`REGRESSIONS`] (checked to be there: proptest would
/// quietly run without them); shrinking bounded, a case costs tens of
/// milliseconds.
fn config() -> ProptestConfig {
    assert!(
        Path::new(REGRESSIONS).is_file(),
        "the model test's seeds are not where its config says: {REGRESSIONS}"
    );
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        ..histories::config(2048)
    }
}

/// Play a history; on failure, the error and what happened.
fn check(h: &History) -> Result<(), String> {
    let mut world = World::new(h.instances, &h.skew_ms).map_err(|e| format!("setting up: {e}"))?;
    let result = world
        .play(h)
        .map_err(|e| format!("{e}\n--- what happened ---\n{}", world.trace.join("\n")));
    if std::env::var_os("FIELDSYNC_MODEL_TRACE").is_some() {
        eprintln!("=====\n{h:#?}\n{}", world.trace.join("\n"));
    }
    result
}

#[test]
fn instances_match_the_model() {
    histories::run(config(), history(), check);
}
