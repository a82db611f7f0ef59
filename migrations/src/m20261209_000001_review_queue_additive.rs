//! The review queue (issue 25): entities an admission policy holds back
//! until someone approves them, and the log of what happened to them
//! (queued, approved, rejected, withdrawn) that `reviewEvents` follows.
//! New tables only.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_pk_auto, boolean, json_binary, json_binary_null, string, string_null, text_null, timestamp_with_time_zone,
    timestamp_with_time_zone_null,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PendingEntities {
    Table,
    Id,
    EntityRef,
    Provider,
    LocationKey,
    Body,
    Violations,
    Etag,
    Reason,
    PreviousOwner,
    OwnerRef,
    Policy,
    OwnerMayApprove,
    Status,
    QueuedAt,
    UpdatedAt,
    DecidedBy,
    DecidedAt,
    Note,
}

#[derive(DeriveIden)]
enum ReviewEvents {
    Table,
    Sequence,
    EntityRef,
    Event,
    Principal,
    Note,
    Time,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PendingEntities::Table)
                    .col(big_pk_auto(PendingEntities::Id))
                    .col(string(PendingEntities::EntityRef))
                    .col(string(PendingEntities::Provider))
                    .col(string_null(PendingEntities::LocationKey))
                    .col(json_binary(PendingEntities::Body))
                    .col(json_binary_null(PendingEntities::Violations))
                    .col(string(PendingEntities::Etag))
                    .col(string(PendingEntities::Reason))
                    .col(string_null(PendingEntities::PreviousOwner))
                    .col(string_null(PendingEntities::OwnerRef))
                    .col(string(PendingEntities::Policy))
                    .col(boolean(PendingEntities::OwnerMayApprove))
                    .col(string(PendingEntities::Status))
                    .col(timestamp_with_time_zone(PendingEntities::QueuedAt))
                    .col(timestamp_with_time_zone(PendingEntities::UpdatedAt))
                    .col(string_null(PendingEntities::DecidedBy))
                    .col(timestamp_with_time_zone_null(PendingEntities::DecidedAt))
                    .col(text_null(PendingEntities::Note))
                    .to_owned(),
            )
            .await?;
        // Not unique: two providers may offer one ref (the first queued
        // keeps it, as a ref stays with the first source that holds it).
        manager
            .create_index(
                Index::create()
                    .name("idx_pending_entities_ref")
                    .table(PendingEntities::Table)
                    .col(PendingEntities::EntityRef)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_pending_entities_provider")
                    .table(PendingEntities::Table)
                    .col(PendingEntities::Provider)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ReviewEvents::Table)
                    .col(big_pk_auto(ReviewEvents::Sequence))
                    .col(string(ReviewEvents::EntityRef))
                    .col(string(ReviewEvents::Event))
                    .col(string(ReviewEvents::Principal))
                    .col(text_null(ReviewEvents::Note))
                    .col(timestamp_with_time_zone(ReviewEvents::Time))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_review_events_time")
                    .table(ReviewEvents::Table)
                    .col(ReviewEvents::Time)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ReviewEvents::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(PendingEntities::Table).to_owned()).await
    }
}
