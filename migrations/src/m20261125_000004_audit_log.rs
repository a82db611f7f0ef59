//! The audit log: who did what to the catalog, allowed or denied, appended in
//! the transaction of the change it records.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer_null, big_pk_auto, json_binary, string, string_null, text, timestamp_with_time_zone,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    Time,
    Principal,
    TokenId,
    Operation,
    Targets,
    Decision,
    Result,
    RequestId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(big_pk_auto(AuditLog::Id))
                    .col(timestamp_with_time_zone(AuditLog::Time))
                    .col(string(AuditLog::Principal))
                    .col(big_integer_null(AuditLog::TokenId))
                    .col(string(AuditLog::Operation))
                    .col(json_binary(AuditLog::Targets))
                    .col(string(AuditLog::Decision))
                    .col(text(AuditLog::Result))
                    .col(string_null(AuditLog::RequestId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("idx_audit_log_time").table(AuditLog::Table).col(AuditLog::Time).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(AuditLog::Table).to_owned()).await
    }
}
