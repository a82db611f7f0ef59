//! The history of the catalog's health figures (`catalogHealth { history }`):
//! one row per recording, the figures as JSON so that a figure added later
//! needs no migration. A new table only.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_pk_auto, json_binary, timestamp_with_time_zone};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CatalogHealth {
    Table,
    Id,
    RecordedAt,
    Figures,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CatalogHealth::Table)
                    .col(big_pk_auto(CatalogHealth::Id))
                    .col(timestamp_with_time_zone(CatalogHealth::RecordedAt))
                    .col(json_binary(CatalogHealth::Figures))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_catalog_health_recorded_at")
                    .table(CatalogHealth::Table)
                    .col(CatalogHealth::RecordedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(CatalogHealth::Table).to_owned()).await
    }
}
