//! When each location was last read successfully (`locations.read_at`),
//! for stale detection's "not seen by its provider" reason. Written at
//! most hourly per location, so that an unchanged re-read stays nearly
//! free. A new nullable column only.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::timestamp_with_time_zone_null;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Locations {
    Table,
    ReadAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Locations::Table)
                    .add_column(timestamp_with_time_zone_null(Locations::ReadAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Locations::Table).drop_column(Locations::ReadAt).to_owned()).await
    }
}
