//! The admission policies' violations an entity was admitted with (`warn`
//! mode): a JSON list on its row, null when it has none. A new nullable
//! column only: the previous release's replicas neither read nor write it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::json_binary_null;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Entities {
    Table,
    Violations,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(Entities::Table).add_column(json_binary_null(Entities::Violations)).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Entities::Table).drop_column(Entities::Violations).to_owned()).await
    }
}
