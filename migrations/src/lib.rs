//! The catalog's schema as a sequence of migrations. Each migration is a frozen
//! fact: it never imports the store's models, so changing a model can never
//! silently change what an old migration did.

use sea_orm_migration::prelude::*;

mod m20261124_000001_catalog_core;
mod m20261125_000001_change_stream;
mod m20261125_000002_catalog_state;
mod m20261125_000003_api_tokens;
mod m20261125_000004_audit_log;
mod m20261202_000001_scaffolder_tasks;

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
        ]
    }
}
