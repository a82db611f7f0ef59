//! Scaffolder tasks and their events: what a task was asked to do (never its
//! secrets), who runs it, where it stands, and every event in order (the
//! cursor of the `taskEvents` subscription).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_pk_auto, boolean, integer, json_binary, json_binary_null, string, string_null, text_null,
    timestamp_with_time_zone, timestamp_with_time_zone_null,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ScaffolderTasks {
    Table,
    Id,
    TemplateRef,
    Status,
    Parameters,
    DryRun,
    CreatedBy,
    IdempotencyKey,
    CreatedAt,
    UpdatedAt,
    ClaimedBy,
    HeartbeatAt,
    NextStep,
    StepOutputs,
    Output,
    Error,
    CancelRequested,
}

#[derive(DeriveIden)]
enum ScaffolderTaskEvents {
    Table,
    Id,
    TaskId,
    CreatedAt,
    Body,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ScaffolderTasks::Table)
                    .col(string(ScaffolderTasks::Id).primary_key())
                    .col(string(ScaffolderTasks::TemplateRef))
                    .col(string(ScaffolderTasks::Status))
                    .col(json_binary(ScaffolderTasks::Parameters))
                    .col(boolean(ScaffolderTasks::DryRun))
                    .col(string(ScaffolderTasks::CreatedBy))
                    .col(string_null(ScaffolderTasks::IdempotencyKey))
                    .col(timestamp_with_time_zone(ScaffolderTasks::CreatedAt))
                    .col(timestamp_with_time_zone(ScaffolderTasks::UpdatedAt))
                    .col(string_null(ScaffolderTasks::ClaimedBy))
                    .col(timestamp_with_time_zone_null(ScaffolderTasks::HeartbeatAt))
                    .col(integer(ScaffolderTasks::NextStep))
                    .col(json_binary(ScaffolderTasks::StepOutputs))
                    .col(json_binary_null(ScaffolderTasks::Output))
                    .col(text_null(ScaffolderTasks::Error))
                    .col(boolean(ScaffolderTasks::CancelRequested))
                    .to_owned(),
            )
            .await?;
        // One task per (creator, idempotency key); NULL keys never collide.
        manager
            .create_index(
                Index::create()
                    .name("idx_scaffolder_tasks_idempotency")
                    .table(ScaffolderTasks::Table)
                    .col(ScaffolderTasks::CreatedBy)
                    .col(ScaffolderTasks::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_scaffolder_tasks_created_at")
                    .table(ScaffolderTasks::Table)
                    .col(ScaffolderTasks::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ScaffolderTaskEvents::Table)
                    .col(big_pk_auto(ScaffolderTaskEvents::Id))
                    .col(string(ScaffolderTaskEvents::TaskId))
                    .col(timestamp_with_time_zone(ScaffolderTaskEvents::CreatedAt))
                    .col(json_binary(ScaffolderTaskEvents::Body))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_scaffolder_task_events_task")
                    .table(ScaffolderTaskEvents::Table)
                    .col(ScaffolderTaskEvents::TaskId)
                    .col(ScaffolderTaskEvents::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ScaffolderTaskEvents::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(ScaffolderTasks::Table).to_owned()).await
    }
}
