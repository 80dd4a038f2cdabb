//! The property-test runner behind every `fuzz <target>` test of the workspace
//! (the ingest decoder, the cursor parser, the classifier and the normaliser):
//! one definition of the case count and the `N passed, N failed` line CI reads.
//! Only with the `testing` feature, which only dev-dependencies turn on.

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::cell::Cell;
use std::io::Write;

/// Runs the property `test` on inputs from `strategy`, as many as
/// `PROPTEST_CASES` says (proptest's default, 256, when unset;
/// `PROPTEST_CASES=100000` is the long run), prints
/// `fuzz <target>: N passed, N failed`, and fails with the smallest failing
/// input proptest finds.
pub fn fuzz<S>(target: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    let cases = config.cases;
    let passed = Cell::new(0u32);
    let failing = Cell::new(false);
    let result = TestRunner::new(config).run(&strategy, |input| {
        let outcome = test(input);
        match (&outcome, failing.get()) {
            (Ok(()), false) => passed.set(passed.get() + 1),
            (Err(_), _) => failing.set(true),
            _ => {}
        }
        outcome
    });
    let line = match &result {
        Ok(()) => format!("fuzz {target}: {cases} passed, 0 failed"),
        Err(_) => format!("fuzz {target}: {} passed, 1 failed", passed.get()),
    };
    // Past the harness's capture, so the count shows in every run.
    let _ = writeln!(std::io::stderr(), "{line}");
    if let Err(e) = result {
        panic!("{target}: {e}");
    }
}
