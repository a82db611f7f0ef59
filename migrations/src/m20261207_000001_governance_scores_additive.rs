//! Governance results: the scorecards the catalog applies (their source and
//! a summary), each entity's current score per scorecard with every rule's
//! result, and the history of level and rule transitions (the cursor of the
//! `scoreChanges` subscription). `failing` lists the rules an entity fails
//! as `,a,b,` for the `scores.ID.failing` filter, which reads the same on
//! both databases. New tables only.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_pk_auto, boolean, double, double_null, json_binary, string, string_null, text, timestamp_with_time_zone,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Scorecards {
    Table,
    Id,
    Version,
    Source,
    Summary,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum EntityScores {
    Table,
    Scorecard,
    EntityRef,
    Level,
    Score,
    Failing,
    Results,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ScoreChanges {
    Table,
    Sequence,
    Time,
    Scorecard,
    EntityRef,
    LevelBefore,
    Level,
    Score,
    Rules,
    Removed,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Scorecards::Table)
                    .col(string(Scorecards::Id).primary_key())
                    .col(string(Scorecards::Version))
                    .col(text(Scorecards::Source))
                    .col(json_binary(Scorecards::Summary))
                    .col(timestamp_with_time_zone(Scorecards::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(EntityScores::Table)
                    .col(string(EntityScores::Scorecard))
                    .col(string(EntityScores::EntityRef))
                    .col(string_null(EntityScores::Level))
                    .col(double(EntityScores::Score))
                    .col(text(EntityScores::Failing))
                    .col(json_binary(EntityScores::Results))
                    .col(timestamp_with_time_zone(EntityScores::UpdatedAt))
                    .primary_key(Index::create().col(EntityScores::Scorecard).col(EntityScores::EntityRef))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_entity_scores_entity_ref")
                    .table(EntityScores::Table)
                    .col(EntityScores::EntityRef)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ScoreChanges::Table)
                    .col(big_pk_auto(ScoreChanges::Sequence))
                    .col(timestamp_with_time_zone(ScoreChanges::Time))
                    .col(string(ScoreChanges::Scorecard))
                    .col(string(ScoreChanges::EntityRef))
                    .col(string_null(ScoreChanges::LevelBefore))
                    .col(string_null(ScoreChanges::Level))
                    .col(double_null(ScoreChanges::Score))
                    .col(json_binary(ScoreChanges::Rules))
                    .col(boolean(ScoreChanges::Removed))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_score_changes_entity_ref")
                    .table(ScoreChanges::Table)
                    .col(ScoreChanges::EntityRef)
                    .col(ScoreChanges::Sequence)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [ScoreChanges::Table.into_iden(), EntityScores::Table.into_iden(), Scorecards::Table.into_iden()] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
