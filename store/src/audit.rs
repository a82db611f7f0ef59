//! The audit log: an append-only record of who changed the catalog (or tried
//! to and was refused). Rows that record a change are written in that
//! change's transaction, so a change is never committed unrecorded. Nothing
//! here updates a row; the only deletion is the retention purge, which
//! records itself.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};

use crate::error::StoreError;
use crate::handles::{AccessStore, Maintenance};
use crate::models::audit_row;

/// Whether the operation was allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditDecision {
    Allowed,
    Denied,
}

impl AuditDecision {
    fn as_str(self) -> &'static str {
        match self {
            AuditDecision::Allowed => "allowed",
            AuditDecision::Denied => "denied",
        }
    }

    fn parse(text: &str) -> AuditDecision {
        if text == "denied" { AuditDecision::Denied } else { AuditDecision::Allowed }
    }
}

/// One audit record. Callers never put secrets in it: principals are names
/// (`token:NAME`, `sub:SUBJECT`, `provider:KEY`, `cli`), never credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub principal: String,
    pub token_id: Option<i64>,
    /// What was attempted, e.g. `snapshot.apply`, `token.create`, `request`.
    pub operation: String,
    /// What it was applied to (refs, provider keys, token names).
    pub targets: Vec<String>,
    pub decision: AuditDecision,
    /// `ok`, a summary of what changed, or why it was refused.
    pub result: String,
    pub request_id: Option<String>,
}

/// A stored audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub time: DateTime<Utc>,
    pub entry: AuditEntry,
}

/// Appends `entry` on `db` (a connection or the transaction of the change).
pub(crate) async fn append(db: &impl ConnectionTrait, entry: &AuditEntry) -> Result<(), StoreError> {
    audit_row::ActiveModel {
        time: Set(Utc::now()),
        principal: Set(entry.principal.clone()),
        token_id: Set(entry.token_id),
        operation: Set(entry.operation.clone()),
        targets: Set(serde_json::json!(entry.targets)),
        decision: Set(entry.decision.as_str().to_owned()),
        result: Set(entry.result.clone()),
        request_id: Set(entry.request_id.clone()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}

impl AccessStore {
    /// Appends an entry that records no change of its own (a refused request).
    pub async fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        append(&self.db, entry).await
    }
}

impl Maintenance {
    /// Deletes the records older than `before` and appends one that says so,
    /// in one transaction: the log shows where its history was cut. Returns
    /// how many records were deleted.
    pub async fn purge_audit(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let txn = self.db.begin().await?;
        let n_deleted =
            audit_row::Entity::delete_many().filter(audit_row::Column::Time.lt(before)).exec(&txn).await?.rows_affected;
        if n_deleted > 0 {
            let entry = AuditEntry {
                principal: "catalog".into(),
                token_id: None,
                operation: "audit.purge".into(),
                targets: Vec::new(),
                decision: AuditDecision::Allowed,
                result: format!("{n_deleted} records older than {} deleted", before.to_rfc3339()),
                request_id: None,
            };
            append(&txn, &entry).await?;
        }
        txn.commit().await?;
        Ok(n_deleted)
    }
}

impl AccessStore {
    /// Audit records newest first, older than `before` (an id) when given.
    pub async fn audit_records(
        &self,
        before: Option<i64>,
        decision: Option<AuditDecision>,
        limit: u64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut query = audit_row::Entity::find();
        if let Some(before) = before {
            query = query.filter(audit_row::Column::Id.lt(before));
        }
        if let Some(decision) = decision {
            query = query.filter(audit_row::Column::Decision.eq(decision.as_str()));
        }
        let rows = query.order_by_desc(audit_row::Column::Id).limit(limit).all(&self.db).await?;
        Ok(rows
            .into_iter()
            .map(|row| AuditRecord {
                id: row.id,
                time: row.time,
                entry: AuditEntry {
                    principal: row.principal,
                    token_id: row.token_id,
                    operation: row.operation,
                    targets: row
                        .targets
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|target| target.as_str().map(str::to_owned))
                        .collect(),
                    decision: AuditDecision::parse(&row.decision),
                    result: row.result,
                    request_id: row.request_id,
                },
            })
            .collect())
    }
}
