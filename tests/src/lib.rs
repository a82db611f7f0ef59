//! End-to-end tests live in `tests/api/`: one test binary that starts the real
//! server on a random port over a fresh database per test.
