//! Catalog health: the figures a dashboard draws of how true the catalog
//! is (entities by kind, owners that resolve to nothing, refs to entities
//! that do not exist, processing errors, conflicts, stale entities,
//! entities admitted with policy violations), counted in SQL in one
//! statement, and their recorded history.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::filter::STALENESS_SCORECARD;
use crate::handles::{Catalog, Maintenance, ScoreStore};
use crate::models::health_row;

/// The counts of one look at the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCounts {
    pub entities: u64,
    /// Entities per kind, lower-case.
    pub by_kind: BTreeMap<String, u64>,
    /// Entities whose `spec.owner` names no entity of the catalog.
    pub orphans: u64,
    /// Distinct refs that relations point at and no entity has.
    pub dangling_refs: u64,
    /// Entities whose source's latest version was refused (the last good
    /// version is served, with its errors).
    pub processing_errors: u64,
    /// Refs claimed by more than one source.
    pub conflicts: u64,
    /// Entities the staleness scorecard finds stale for any reason.
    pub stale: u64,
    /// Entities admitted with admission policy violations.
    pub policy_violations: u64,
    /// Entities waiting in the review queue (not in the catalog yet, or
    /// with a new owner not yet applied). Absent from recordings made
    /// before the queue existed.
    #[serde(default)]
    pub pending: u64,
}

/// One recording of the health figures.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthRecord {
    pub recorded_at: DateTime<Utc>,
    /// The figures as the recorder wrote them (the api's `catalogHealth`).
    pub figures: serde_json::Value,
}

#[derive(FromQueryResult)]
struct Counts {
    orphans: i64,
    dangling_refs: i64,
    processing_errors: i64,
    conflicts: i64,
    stale: i64,
    policy_violations: i64,
    pending: i64,
}

/// Every count but the kinds in one statement. The ref columns hold the
/// canonical lower-case text on both sides of each comparison, and
/// `entities.entity_ref` is unique, so each `NOT EXISTS` is an index probe.
/// `{staleness}` is the staleness scorecard's id (ours, not input).
const COUNTS: &str = "SELECT \
    (SELECT COUNT(*) FROM entities e WHERE e.owner_ref IS NOT NULL \
        AND NOT EXISTS (SELECT 1 FROM entities o WHERE o.entity_ref = e.owner_ref)) AS orphans, \
    (SELECT COUNT(DISTINCT r.target_ref) FROM relations r \
        WHERE NOT EXISTS (SELECT 1 FROM entities t WHERE t.entity_ref = r.target_ref)) AS dangling_refs, \
    (SELECT COUNT(*) FROM entities WHERE errors IS NOT NULL) AS processing_errors, \
    (SELECT COUNT(*) FROM conflicts) AS conflicts, \
    (SELECT COUNT(*) FROM entity_scores WHERE scorecard = '{staleness}' AND failing <> '') AS stale, \
    (SELECT COUNT(*) FROM entities WHERE violations IS NOT NULL) AS policy_violations, \
    (SELECT COUNT(*) FROM pending_entities WHERE status = 'pending') AS pending";

impl Catalog {
    /// The catalog's health counts now.
    pub async fn health_counts(&self) -> Result<HealthCounts, StoreError> {
        let sql = COUNTS.replace("{staleness}", STALENESS_SCORECARD);
        let statement = sea_orm::Statement::from_string(self.db.get_database_backend(), sql);
        let counts = Counts::find_by_statement(statement).one(&self.db).await?.unwrap_or(Counts {
            orphans: 0,
            dangling_refs: 0,
            processing_errors: 0,
            conflicts: 0,
            stale: 0,
            policy_violations: 0,
            pending: 0,
        });
        let by_kind: BTreeMap<String, u64> = self.entity_counts_by_kind().await?.into_iter().collect();
        let count = |n: i64| u64::try_from(n).unwrap_or_default();
        Ok(HealthCounts {
            entities: by_kind.values().sum(),
            by_kind,
            orphans: count(counts.orphans),
            dangling_refs: count(counts.dangling_refs),
            processing_errors: count(counts.processing_errors),
            conflicts: count(counts.conflicts),
            stale: count(counts.stale),
            policy_violations: count(counts.policy_violations),
            pending: count(counts.pending),
        })
    }
}

impl ScoreStore {
    /// Records the health figures as of `at`.
    pub async fn record_health(&self, at: DateTime<Utc>, figures: serde_json::Value) -> Result<(), StoreError> {
        let row = health_row::ActiveModel { recorded_at: Set(at), figures: Set(figures), ..Default::default() };
        health_row::Entity::insert(row).exec_without_returning(&self.db).await?;
        Ok(())
    }

    /// The latest `limit` recordings, newest first.
    pub async fn health_history(&self, limit: u64) -> Result<Vec<HealthRecord>, StoreError> {
        let rows = health_row::Entity::find()
            .order_by_desc(health_row::Column::RecordedAt)
            .order_by_desc(health_row::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(|row| HealthRecord { recorded_at: row.recorded_at, figures: row.figures }).collect())
    }

    /// When the health figures were last recorded, by any replica.
    pub async fn last_health_recording(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.health_history(1).await?.into_iter().next().map(|record| record.recorded_at))
    }
}

impl Maintenance {
    /// Deletes health recordings older than `before`; how many.
    pub async fn purge_health(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let deleted = health_row::Entity::delete_many()
            .filter(health_row::Column::RecordedAt.lt(before))
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(deleted)
    }
}
