//! schema.graphql at the repository root must be what the code generates.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

#[test]
fn the_committed_schema_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = catalog_api::graphql::sdl();
    assert!(
        committed == generated,
        "schema.graphql is out of date; regenerate it with:\n    cargo run -p catalog-api -- schema > schema.graphql"
    );
}
