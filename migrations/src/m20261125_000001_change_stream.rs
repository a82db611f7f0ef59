//! The change stream: what each update changed, the last version of what a
//! removal removed (so removals can be filtered by owner and tags), and an
//! index for finding the sequence at a point in time.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::json_binary_null;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ChangeLog {
    Table,
    CreatedAt,
    ChangedFields,
    PreviousBody,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(ChangeLog::Table)
                    .add_column(json_binary_null(ChangeLog::ChangedFields))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter().table(ChangeLog::Table).add_column(json_binary_null(ChangeLog::PreviousBody)).to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_change_log_created_at")
                    .table(ChangeLog::Table)
                    .col(ChangeLog::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("idx_change_log_created_at").table(ChangeLog::Table).to_owned()).await?;
        manager
            .alter_table(Table::alter().table(ChangeLog::Table).drop_column(ChangeLog::PreviousBody).to_owned())
            .await?;
        manager
            .alter_table(Table::alter().table(ChangeLog::Table).drop_column(ChangeLog::ChangedFields).to_owned())
            .await
    }
}
