//! What the property tests over random histories share (`convergence`,
//! `model`): the number of cases (`FIELDSYNC_PROPTEST_CASES`), where failing
//! seeds are kept, the deliveries that end a history, and the run itself: a
//! failing history is shrunk by proptest, then stripped of the steps and
//! deliveries that do not matter, and printed with what happened. Each test
//! keeps its own history language (steps, writes) and its own checks.

use std::fmt;

use fieldsync::{Error, ImportError};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestError, TestRunner};

use super::Res;

/// `FIELDSYNC_PROPTEST_CASES`, or 128.
fn cases() -> u32 {
    match std::env::var("FIELDSYNC_PROPTEST_CASES") {
        Ok(v) => match v.trim().parse() {
            Ok(n) => n,
            Err(_) => panic!("FIELDSYNC_PROPTEST_CASES must be a number of cases, not {v:?}"),
        },
        Err(_) => 128,
    }
}

/// A property test's configuration: [`cases`] cases, failing seeds kept
/// next to the test's source file (`NAME.proptest-regressions`, with
/// `source_file` set by the test), shrinking bounded by `max_shrink_iters`
/// (a case costs tens of milliseconds).
pub fn config(max_shrink_iters: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        max_shrink_iters,
        ..ProptestConfig::default()
    }
}

/// After the history: bundle number `bundle` (modulo the pool size) is
/// imported at `at`.
#[derive(Clone)]
pub struct Delivery {
    pub bundle: usize,
    pub at: usize,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bundle #{} → i{}", self.bundle, self.at)
    }
}

/// The pooled bundle a step imports: `back` before the newest, counting
/// back modulo the pool size; `None` while the pool is empty.
pub fn pick(pool: usize, back: usize) -> Option<usize> {
    (pool > 0).then(|| pool - 1 - back % pool)
}

/// The deliveries after the history, among the `pool` bundles it made (none
/// if it made none): bundle number and the instance importing it.
pub fn delivered(deliveries: &[Delivery], pool: usize) -> Vec<(usize, usize)> {
    if pool == 0 {
        return Vec::new();
    }
    deliveries.iter().map(|d| (d.bundle % pool, d.at)).collect()
}

/// Instance `at` was handed its own bundle `b` and must have refused it with
/// `FromSelf`: the line for the trace, or what went wrong.
pub fn refused_as_own<T>(result: Result<T, Error>, at: usize, b: usize) -> Res<String> {
    match result {
        Err(Error::Import(ImportError::FromSelf { .. })) => {
            Ok(format!("i{at} ← #{b}: refused (its own bundle)"))
        }
        Err(e) => Err(format!(
            "i{at} importing its own bundle #{b} failed with {e:?}, not FromSelf"
        )
        .into()),
        Ok(_) => Err(format!("i{at} accepted its own bundle #{b}").into()),
    }
}

/// A history of steps followed by deliveries, either of which can be
/// dropped one at a time.
pub trait History: Clone + fmt::Debug {
    /// One step of the history.
    type Step;
    fn steps(&mut self) -> &mut Vec<Self::Step>;
    fn deliveries(&mut self) -> &mut Vec<Delivery>;
}

/// Drop steps and deliveries, one at a time, while the history still fails.
/// Proptest's own shrinking first removes steps and then simplifies the rest,
/// which can leave steps that its simplifying made irrelevant.
fn drop_irrelevant_steps<H: History>(mut h: H, check: fn(&H) -> Result<(), String>) -> H {
    // `|`, not `||`: every round tries both lists.
    while drop_each(&mut h, H::steps, check) | drop_each(&mut h, H::deliveries, check) {}
    h
}

/// Drop the entries of one of `h`'s lists whose removal keeps it failing,
/// from the last to the first; true if any was dropped.
fn drop_each<H: History, T>(
    h: &mut H,
    list: fn(&mut H) -> &mut Vec<T>,
    check: fn(&H) -> Result<(), String>,
) -> bool {
    let mut smaller = false;
    for i in (0..list(h).len()).rev() {
        let mut t = h.clone();
        list(&mut t).remove(i);
        if check(&t).is_err() {
            *h = t;
            smaller = true;
        }
    }
    smaller
}

/// Play the histories `histories` generates through `check` (which says
/// what went wrong and what happened); panic with a minimal failing history.
pub fn run<H: History>(
    config: ProptestConfig,
    histories: impl Strategy<Value = H>,
    check: fn(&H) -> Result<(), String>,
) {
    let mut runner = TestRunner::new(config);
    match runner.run(&histories, |h| check(&h).map_err(TestCaseError::fail)) {
        Ok(()) => {}
        Err(TestError::Fail(_, h)) => {
            let h = drop_irrelevant_steps(h, check);
            let why = match check(&h) {
                Err(e) => e,
                Ok(()) => "it passed when run again (a timing-dependent failure?)".into(),
            };
            panic!("minimal failing history: {h:#?}\n{why}\n{runner}");
        }
        Err(e) => panic!("{e}\n{runner}"),
    }
}
