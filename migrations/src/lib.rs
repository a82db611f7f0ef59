//! The catalog's schema as a sequence of migrations. Each migration is a frozen
//! fact: it never imports the store's models, so changing a model can never
//! silently change what an old migration did.
//!
//! A migration that only adds to the schema, so that the previous release's
//! reads and writes all keep working, is named `..._additive`: the previous
//! release's replicas then keep serving (and writing) through a rolling
//! upgrade ([`ADDITIVE_SUFFIX`]). Additive means: new tables,
//! non-unique indexes, nullable or defaulted columns; no new unique, foreign
//! key or check constraint on an existing table (the old binary's inserts
//! would fail); and the new code tolerates rows the old binary writes
//! without the new columns (or backfills them). Dropping a constraint the
//! previous release never relies on is additive too (the index rows' foreign
//! keys: the store deletes them itself). The name is recorded when
//! the migration is applied, so it can never be renamed afterwards.

use sea_orm_migration::prelude::*;

mod m20261124_000001_catalog_core;
mod m20261125_000001_change_stream;
mod m20261125_000002_catalog_state;
mod m20261125_000003_api_tokens;
mod m20261125_000004_audit_log;
mod m20261202_000001_scaffolder_tasks;
mod m20261203_000001_index_rows_without_foreign_keys_additive;
mod m20261207_000001_governance_scores_additive;
mod m20261208_000001_entity_policy_violations_additive;
mod m20261208_000002_catalog_health_history_additive;
mod m20261209_000001_review_queue_additive;
mod m20261209_000002_location_read_at_additive;

/// How a migration says older binaries may keep serving after it: its name
/// ends with this. Such a migration only adds (tables, non-unique indexes,
/// nullable or defaulted columns; no new constraint on an existing table)
/// and changes nothing an older binary reads or writes (the rule in full: this
/// crate's documentation).
/// A binary cannot learn anything else about a migration it does not know,
/// so the promise has to travel in the one thing it can read: the name
/// recorded in the migrations table.
pub const ADDITIVE_SUFFIX: &str = "_additive";

/// Every migration, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_catalog_core::Migration),
            Box::new(m20261125_000001_change_stream::Migration),
            Box::new(m20261125_000002_catalog_state::Migration),
            Box::new(m20261125_000003_api_tokens::Migration),
            Box::new(m20261125_000004_audit_log::Migration),
            Box::new(m20261202_000001_scaffolder_tasks::Migration),
            Box::new(m20261203_000001_index_rows_without_foreign_keys_additive::Migration),
            Box::new(m20261207_000001_governance_scores_additive::Migration),
            Box::new(m20261208_000001_entity_policy_violations_additive::Migration),
            Box::new(m20261208_000002_catalog_health_history_additive::Migration),
            Box::new(m20261209_000001_review_queue_additive::Migration),
            Box::new(m20261209_000002_location_read_at_additive::Migration),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every released migration's name, oldest first. A database records the
    /// names it applied: a renamed or reordered migration would look
    /// unapplied and run again. Append new ones; never edit this list.
    const RELEASED: &[&str] = &[
        "m20261124_000001_catalog_core",
        "m20261125_000001_change_stream",
        "m20261125_000002_catalog_state",
        "m20261125_000003_api_tokens",
        "m20261125_000004_audit_log",
        "m20261202_000001_scaffolder_tasks",
        "m20261203_000001_index_rows_without_foreign_keys_additive",
        "m20261207_000001_governance_scores_additive",
        "m20261208_000001_entity_policy_violations_additive",
        "m20261208_000002_catalog_health_history_additive",
        "m20261209_000001_review_queue_additive",
        "m20261209_000002_location_read_at_additive",
    ];

    fn names() -> Vec<String> {
        Migrator::migrations().iter().map(|migration| migration.name().to_owned()).collect()
    }

    #[test]
    fn released_migrations_keep_their_names_and_order() {
        let names = names();
        assert!(
            names.len() >= RELEASED.len() && names[..RELEASED.len()] == *RELEASED,
            "released migrations were renamed, removed or reordered: {names:?}"
        );
    }

    /// What an `_additive` migration's `up` may not do (the rules above):
    /// drop or rename a table or column, or add a unique constraint.
    const NOT_ADDITIVE: &[&str] = &[
        "drop table",
        "drop column",
        "drop_table",
        "drop_column",
        "rename",
        "unique_key",
        ".unique()",
        "unique index",
    ];

    #[test]
    fn additive_migrations_neither_drop_nor_rename_nor_add_unique_constraints() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for name in names().iter().filter(|name| name.ends_with(ADDITIVE_SUFFIX)) {
            let text = std::fs::read_to_string(folder.join(format!("{name}.rs"))).expect("the migration's source");
            let up = text.split("async fn down").next().unwrap_or_default().to_ascii_lowercase();
            let up = up.split_once("async fn up").map_or(up.as_str(), |(_, body)| body);
            let found: Vec<_> = NOT_ADDITIVE.iter().filter(|token| up.contains(*token)).collect();
            assert!(found.is_empty(), "{name} is named additive but its up() has {found:?}");
        }
    }
}
