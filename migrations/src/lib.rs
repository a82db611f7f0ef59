//! The catalog's schema as a sequence of migrations. Each migration is a frozen
//! fact: it never imports the store's models, so changing a model can never
//! silently change what an old migration did.
//!
//! A migration that only adds to the schema, so that the previous release's
//! reads and writes all keep working, is named `..._additive`: the previous
//! release's replicas then keep serving (and writing) through a rolling
//! upgrade (`catalog_store::ADDITIVE_SUFFIX`). Additive means: new tables,
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
        ]
    }
}
