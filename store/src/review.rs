//! The review queue: entities an admission policy holds until someone
//! approves them (new ones, or a new owner). A queued entity is not in the
//! `entities` table, so no list, count, facet, walk or change-log row sees
//! it; the queue follows its source with each snapshot (a new version stays
//! queued, one its source removes leaves), and a decision writes the
//! approved version through the snapshot path in one transaction with its
//! audit record and its review event.

use std::collections::{HashMap, HashSet};

use catalog_domain::{Entity, EntityRef};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::Value;

use crate::error::StoreError;
use crate::handles::{Catalog, Maintenance};
use crate::models::{pending_row, review_event_row};
use crate::projection::typed_columns;
use crate::record::stored_ref;

/// Why an entity waits for review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReviewReason {
    /// The catalog does not hold it yet.
    New,
    /// Its owner changes from `previous` (none: it had no owner).
    OwnerChange { previous: Option<EntityRef> },
}

impl ReviewReason {
    pub fn name(&self) -> &'static str {
        match self {
            ReviewReason::New => "new",
            ReviewReason::OwnerChange { .. } => "owner-change",
        }
    }
}

/// What the admission policy that holds an entity asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewRequest {
    pub reason: ReviewReason,
    /// The policy's id.
    pub policy: String,
    /// Whether members of the entity's owning group may decide, besides
    /// holders of the review permission.
    pub owner_may_approve: bool,
}

/// Where a queued entity stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewStatus {
    /// Waiting for a decision.
    Pending,
    /// Refused; it stays out until its source changes it (then it waits
    /// again) or removes it.
    Rejected,
}

impl ReviewStatus {
    pub fn name(self) -> &'static str {
        match self {
            ReviewStatus::Pending => "pending",
            ReviewStatus::Rejected => "rejected",
        }
    }
}

/// A queued entity as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingRecord {
    /// The queue's own id, in queueing order (the page key).
    pub id: i64,
    pub entity_ref: EntityRef,
    pub provider: String,
    pub location: Option<String>,
    /// The version its source offers now.
    pub entity: Value,
    pub etag: String,
    pub reason: ReviewReason,
    /// The owner the queued version names.
    pub owner: Option<EntityRef>,
    pub policy: String,
    pub owner_may_approve: bool,
    pub status: ReviewStatus,
    pub queued_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
}

/// What happened in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewEventKind {
    Queued,
    Approved,
    Rejected,
    /// Its source removed it, or it no longer needs review.
    Withdrawn,
}

impl ReviewEventKind {
    pub fn name(self) -> &'static str {
        match self {
            ReviewEventKind::Queued => "queued",
            ReviewEventKind::Approved => "approved",
            ReviewEventKind::Rejected => "rejected",
            ReviewEventKind::Withdrawn => "withdrawn",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Queued, Self::Approved, Self::Rejected, Self::Withdrawn].into_iter().find(|kind| kind.name() == text)
    }
}

/// One row of the review log.
#[derive(Clone, Debug, PartialEq)]
pub struct ReviewEvent {
    pub sequence: i64,
    pub entity_ref: EntityRef,
    pub event: ReviewEventKind,
    /// Who: a principal's audit label, or `provider:KEY`.
    pub principal: String,
    pub note: Option<String>,
    pub time: DateTime<Utc>,
}

/// The row's ref as stored, or the row is skipped as unreadable.
pub(crate) fn record(row: pending_row::Model) -> Option<PendingRecord> {
    let entity_ref = stored_ref(&row.entity_ref).ok()?;
    let reason = match row.reason.as_str() {
        "owner-change" => ReviewReason::OwnerChange {
            previous: row.previous_owner.as_deref().and_then(|owner| stored_ref(owner).ok()),
        },
        _ => ReviewReason::New,
    };
    let status =
        if row.status == ReviewStatus::Rejected.name() { ReviewStatus::Rejected } else { ReviewStatus::Pending };
    Some(PendingRecord {
        id: row.id,
        entity_ref,
        provider: row.provider,
        location: row.location_key,
        entity: row.body,
        etag: row.etag,
        reason,
        owner: row.owner_ref.as_deref().and_then(|owner| stored_ref(owner).ok()),
        policy: row.policy,
        owner_may_approve: row.owner_may_approve,
        status,
        queued_at: row.queued_at,
        updated_at: row.updated_at,
        decided_by: row.decided_by,
        decided_at: row.decided_at,
        note: row.note,
    })
}

pub(crate) fn event_row(
    entity_ref: &str,
    event: ReviewEventKind,
    principal: &str,
    note: Option<String>,
    now: DateTime<Utc>,
) -> review_event_row::ActiveModel {
    review_event_row::ActiveModel {
        entity_ref: Set(entity_ref.to_owned()),
        event: Set(event.name().to_owned()),
        principal: Set(principal.to_owned()),
        note: Set(note),
        time: Set(now),
        ..Default::default()
    }
}

pub(crate) async fn append_events(
    txn: &DatabaseTransaction,
    events: Vec<review_event_row::ActiveModel>,
) -> Result<usize, StoreError> {
    let n_rows = events.len();
    for chunk in events.chunks(crate::bulk::VALUES_CHUNK) {
        review_event_row::Entity::insert_many(chunk.to_vec()).exec_without_returning(txn).await?;
    }
    Ok(n_rows)
}

/// Makes the provider's queue follow a snapshot: `queued` are its entities
/// that wait (inserted, or updated to the version offered now; a rejected
/// one waits again only once its source changes it), and a row of the
/// provider not among them leaves the queue when `removable` says the
/// snapshot speaks for its location. Returns the rows written.
pub(crate) async fn sync_queue(
    txn: &DatabaseTransaction,
    provider: &str,
    queued: &[(&Entity, Option<&str>, &ReviewRequest, &[crate::record::PolicyViolation])],
    admitted: &HashSet<String>,
    removable: impl Fn(Option<&str>) -> bool,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let principal = format!("provider:{provider}");
    let recorded: HashMap<String, pending_row::Model> = pending_row::Entity::find()
        .filter(pending_row::Column::Provider.eq(provider))
        .all(txn)
        .await?
        .into_iter()
        .map(|row| (row.entity_ref.clone(), row))
        .collect();
    if queued.is_empty() && recorded.is_empty() {
        return Ok(0);
    }
    // A ref another provider has queued stays that provider's request (as
    // a ref stays with the first source that holds it).
    let fresh: Vec<String> = queued
        .iter()
        .map(|(entity, ..)| entity.entity_ref().to_string())
        .filter(|entity_ref| !recorded.contains_key(entity_ref))
        .collect();
    let mut elsewhere: HashSet<String> = HashSet::new();
    for chunk in fresh.chunks(crate::bulk::REF_CHUNK) {
        let rows = pending_row::Entity::find()
            .select_only()
            .column(pending_row::Column::EntityRef)
            .filter(pending_row::Column::Provider.ne(provider))
            .filter(crate::bulk::one_of(
                txn.get_database_backend(),
                pending_row::Column::EntityRef,
                chunk.iter().cloned(),
            ))
            .into_tuple::<String>()
            .all(txn)
            .await?;
        elsewhere.extend(rows);
    }
    let mut n_rows = 0;
    let mut events = Vec::new();
    let mut inserts = Vec::new();
    let mut current = HashSet::new();
    for &(entity, location, request, violations) in queued {
        let location = location.map(str::to_owned);
        let violations = crate::record::stored_violations(violations);
        let entity_ref = entity.entity_ref().to_string();
        if !current.insert(entity_ref.clone()) {
            continue;
        }
        let etag = entity.content_hash();
        let previous_owner = match &request.reason {
            ReviewReason::OwnerChange { previous } => previous.as_ref().map(ToString::to_string),
            ReviewReason::New => None,
        };
        let owner_ref = typed_columns(entity).owner_ref;
        let body = serde_json::to_value(entity).unwrap_or(Value::Null);
        match recorded.get(&entity_ref) {
            Some(row) if row.etag == etag && row.status == ReviewStatus::Rejected.name() => {}
            Some(row)
                if row.etag == etag
                    && row.location_key == location
                    && row.reason == request.reason.name()
                    && row.previous_owner == previous_owner
                    && row.policy == request.policy
                    && row.owner_may_approve == request.owner_may_approve
                    && row.violations == violations => {}
            Some(row) => {
                let again = row.status == ReviewStatus::Rejected.name();
                let mut update = pending_row::Entity::update_many()
                    .col_expr(pending_row::Column::Body, Expr::value(body))
                    .col_expr(pending_row::Column::Violations, Expr::value(violations))
                    .col_expr(pending_row::Column::Etag, Expr::value(etag))
                    .col_expr(pending_row::Column::LocationKey, Expr::value(location.clone()))
                    .col_expr(pending_row::Column::Reason, Expr::value(request.reason.name()))
                    .col_expr(pending_row::Column::PreviousOwner, Expr::value(previous_owner))
                    .col_expr(pending_row::Column::OwnerRef, Expr::value(owner_ref))
                    .col_expr(pending_row::Column::Policy, Expr::value(request.policy.clone()))
                    .col_expr(pending_row::Column::OwnerMayApprove, Expr::value(request.owner_may_approve))
                    .col_expr(pending_row::Column::UpdatedAt, Expr::value(now));
                if again {
                    // A new version after a rejection is a new request.
                    update = update
                        .col_expr(pending_row::Column::Status, Expr::value(ReviewStatus::Pending.name()))
                        .col_expr(pending_row::Column::DecidedBy, Expr::value(Option::<String>::None))
                        .col_expr(pending_row::Column::DecidedAt, Expr::value(Option::<DateTime<Utc>>::None))
                        .col_expr(pending_row::Column::Note, Expr::value(Option::<String>::None));
                    events.push(event_row(
                        &entity_ref,
                        ReviewEventKind::Queued,
                        &principal,
                        Some("a new version after its rejection".into()),
                        now,
                    ));
                }
                update.filter(pending_row::Column::Id.eq(row.id)).exec(txn).await?;
                n_rows += 1;
            }
            None if elsewhere.contains(&entity_ref) => {}
            None => {
                events.push(event_row(&entity_ref, ReviewEventKind::Queued, &principal, None, now));
                inserts.push(pending_row::ActiveModel {
                    entity_ref: Set(entity_ref),
                    provider: Set(provider.to_owned()),
                    location_key: Set(location.clone()),
                    body: Set(body),
                    violations: Set(violations),
                    etag: Set(etag),
                    reason: Set(request.reason.name().to_owned()),
                    previous_owner: Set(previous_owner),
                    owner_ref: Set(owner_ref),
                    policy: Set(request.policy.clone()),
                    owner_may_approve: Set(request.owner_may_approve),
                    status: Set(ReviewStatus::Pending.name().to_owned()),
                    queued_at: Set(now),
                    updated_at: Set(now),
                    ..Default::default()
                });
            }
        }
    }
    for chunk in inserts.chunks(crate::bulk::VALUES_CHUNK / 4) {
        n_rows += chunk.len();
        pending_row::Entity::insert_many(chunk.to_vec()).exec_without_returning(txn).await?;
    }
    // Admitted now: its entry goes whatever the snapshot speaks for (an
    // entry left would let a later approval write its stale version).
    let gone: Vec<&pending_row::Model> = recorded
        .values()
        .filter(|row| {
            !current.contains(&row.entity_ref)
                && (admitted.contains(&row.entity_ref) || removable(row.location_key.as_deref()))
        })
        .collect();
    for row in &gone {
        let note =
            if admitted.contains(&row.entity_ref) { "admitted without review" } else { "removed from its source" };
        events.push(event_row(&row.entity_ref, ReviewEventKind::Withdrawn, &principal, Some(note.into()), now));
    }
    for chunk in gone.chunks(crate::bulk::REF_CHUNK) {
        n_rows += pending_row::Entity::delete_many()
            .filter(pending_row::Column::Id.is_in(chunk.iter().map(|row| row.id)))
            .exec(txn)
            .await?
            .rows_affected as usize;
    }
    n_rows += append_events(txn, events).await?;
    Ok(n_rows)
}

/// How many entities wait and how many were rejected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub pending: u64,
    pub rejected: u64,
}

impl Catalog {
    /// The queue in queueing order after the id `after`, `status` only
    /// when given.
    pub async fn review_queue(
        &self,
        status: Option<ReviewStatus>,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Vec<PendingRecord>, StoreError> {
        let mut query = pending_row::Entity::find().order_by_asc(pending_row::Column::Id);
        if let Some(status) = status {
            query = query.filter(pending_row::Column::Status.eq(status.name()));
        }
        if let Some(after) = after {
            query = query.filter(pending_row::Column::Id.gt(after));
        }
        Ok(query.limit(limit).all(&self.db).await?.into_iter().filter_map(record).collect())
    }

    /// One queued entity.
    pub async fn queued(&self, entity_ref: &EntityRef) -> Result<Option<PendingRecord>, StoreError> {
        let row = pending_row::Entity::find()
            .filter(pending_row::Column::EntityRef.eq(entity_ref.to_string()))
            .order_by_asc(pending_row::Column::Id)
            .one(&self.db)
            .await?;
        Ok(row.and_then(record))
    }

    pub async fn queue_counts(&self) -> Result<QueueCounts, StoreError> {
        let count = |status: ReviewStatus| {
            pending_row::Entity::find().filter(pending_row::Column::Status.eq(status.name())).count(&self.db)
        };
        Ok(QueueCounts { pending: count(ReviewStatus::Pending).await?, rejected: count(ReviewStatus::Rejected).await? })
    }

    /// The review log after `after`, oldest first.
    pub async fn review_events_after(&self, after: i64, limit: u64) -> Result<Vec<ReviewEvent>, StoreError> {
        let rows = review_event_row::Entity::find()
            .filter(review_event_row::Column::Sequence.gt(after))
            .order_by_asc(review_event_row::Column::Sequence)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                Some(ReviewEvent {
                    sequence: row.sequence,
                    entity_ref: stored_ref(&row.entity_ref).ok()?,
                    event: ReviewEventKind::parse(&row.event)?,
                    principal: row.principal,
                    note: row.note,
                    time: row.time,
                })
            })
            .collect())
    }

    pub async fn latest_review_sequence(&self) -> Result<i64, StoreError> {
        let newest = review_event_row::Entity::find()
            .select_only()
            .column_as(review_event_row::Column::Sequence.max(), "newest")
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await?
            .flatten();
        Ok(newest.unwrap_or_default())
    }
}

impl Maintenance {
    /// Deletes review events older than `before` (the change log's
    /// retention); the queue itself is kept.
    pub async fn purge_review_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(review_event_row::Entity::delete_many()
            .filter(review_event_row::Column::Time.lt(before))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}
