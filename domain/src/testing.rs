//! The one helper of this crate's table-driven tests: each case is an input
//! and the outcome expected of it, and every case that does not hold is
//! reported at once, so that one broken rule does not hide another.

use std::fmt::Debug;

/// Runs `parse` on each case's input and compares what it returns (`Ok(())`
/// for any success, or the error) with the outcome the case expects.
#[track_caller]
pub(crate) fn check<T, E: PartialEq + Debug>(parse: impl Fn(&str) -> Result<T, E>, cases: &[(&str, Result<(), E>)]) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(input, expected)| {
            let outcome = parse(input).map(|_| ());
            (outcome != *expected).then(|| format!("{input:?}: expected {expected:?}, got {outcome:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
