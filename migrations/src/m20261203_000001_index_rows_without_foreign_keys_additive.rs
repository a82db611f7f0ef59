//! Drops the foreign keys from `relations` and `entity_facets` to `entities`
//! on PostgreSQL. Every snapshot inserts about twenty index rows per entity,
//! and each one's foreign-key check cost as much again as its insert: copying
//! one cold load's 666,000 relation rows took 9.6 s with the key and 6.7 s
//! without, its 1.26 million facet rows 15.9 s and 9.4 s. The store deletes
//! an entity's index rows itself, in the transaction that deletes or rewrites
//! the entity, and no release has relied on the cascade: the previous
//! release's replicas keep working, hence `_additive`. A store test checks
//! that no index row outlives its entity. SQLite keeps its keys: its checks
//! run in-process and dropping one means rebuilding the table.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const KEYS: [(&str, &str, &str); 2] =
    [("relations", "fk_relations_origin", "origin_id"), ("entity_facets", "fk_entity_facets_entity", "entity_id")];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm_migration::sea_orm::DatabaseBackend::Postgres {
            return Ok(());
        }
        for (table, key, _) in KEYS {
            manager.get_connection().execute_unprepared(&format!("ALTER TABLE {table} DROP CONSTRAINT {key}")).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm_migration::sea_orm::DatabaseBackend::Postgres {
            return Ok(());
        }
        for (table, key, column) in KEYS {
            manager
                .get_connection()
                .execute_unprepared(&format!(
                    "ALTER TABLE {table} ADD CONSTRAINT {key} FOREIGN KEY ({column}) \
                     REFERENCES entities (id) ON DELETE CASCADE"
                ))
                .await?;
        }
        Ok(())
    }
}
