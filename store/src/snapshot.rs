//! The only write path of the catalog's entities: applying a provider's
//! snapshot in one transaction, with a change-log row for every entity that
//! really changed, and deleting one entity by hand.

use std::collections::{HashMap, HashSet};

use catalog_domain::{Entity, EntityRef, derive_relations};
use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::{self, NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use serde_json::Value;

use crate::bulk::{self, REF_CHUNK, VALUES_CHUNK as INSERT_CHUNK};
use crate::commit::{lock_writers, notify_replicas};
use crate::error::StoreError;
use crate::handles::SnapshotWriter;
use crate::models::pending_row;
use crate::models::{change_row, conflict_row, entity_row, facet_row, location_row, relation_row};
use crate::projection::{facet_pairs, typed_columns};
use crate::record::{ChangeType, PolicyViolation};
use crate::review::{
    PendingRecord, ReviewEventKind, ReviewReason, ReviewRequest, ReviewStatus, append_events, event_row, record,
};

/// Everything one provider currently offers. Applying it makes the catalog's
/// view of that provider equal to it.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The provider's stable key (e.g. `file`); entities belong to one provider.
    pub provider: String,
    pub entities: Vec<SnapshotEntity>,
    /// Documents that named an entity but were invalid: the last good version of
    /// that entity is kept and carries these errors.
    pub invalid: Vec<InvalidEntity>,
    /// Every location read, with the outcome of the read.
    pub locations: Vec<LocationStatus>,
    /// Why the snapshot may be missing entities (a listing that failed, a
    /// page that never came): then nothing is removed, only added and
    /// updated. None: the source answered in full.
    pub incomplete: Option<String>,
    /// The share (0 to 1) of the provider's entities a complete snapshot may
    /// remove at once; past it the removals are held back (and counted in
    /// [`ApplySummary::held_back`]) while additions and updates apply. None:
    /// no limit (a forced run, or a provider that does not ask for one).
    /// Providers with fewer than [`SAFETY_VALVE_MIN_ENTITIES`] entities are
    /// not held back: a small catalog is restored by hand in a minute.
    pub max_removed_share: Option<f64>,
    /// A partial snapshot: the location-key prefixes it speaks for (one
    /// repository that a webhook named, say). Only entities, locations and
    /// claims under them may be removed; an entity held under another
    /// location of the provider stays its owner (the claim is a conflict).
    /// None: the snapshot speaks for the whole provider.
    pub covers: Option<Vec<String>>,
    /// Entities an admission policy holds for review: they join the review
    /// queue instead of the catalog (a known one keeps its stored version),
    /// unless the catalog already holds that version or, for a new one,
    /// the ref (approved meanwhile).
    pub pending: Vec<PendingEntity>,
}

impl Snapshot {
    /// Whether this snapshot speaks for what was read from `location`.
    fn covers(&self, location: Option<&str>) -> bool {
        match &self.covers {
            None => true,
            Some(prefixes) => {
                location.is_some_and(|location| prefixes.iter().any(|prefix| location.starts_with(prefix.as_str())))
            }
        }
    }
}

/// The fewest entities a provider must hold before its safety valve applies.
pub const SAFETY_VALVE_MIN_ENTITIES: usize = 10;

/// A valid entity and the location it came from.
#[derive(Clone, Debug)]
pub struct SnapshotEntity {
    pub entity: Entity,
    pub location: Option<String>,
    /// The admission policies it breaks but is admitted with; stored on its
    /// row, and written only when they differ from the stored ones.
    pub violations: Vec<PolicyViolation>,
}

impl SnapshotEntity {
    /// An entity read from `location`, with no violations yet.
    pub fn new(entity: Entity, location: Option<String>) -> Self {
        Self { entity, location, violations: Vec::new() }
    }
}

/// A snapshot entity held for review instead of applied.
#[derive(Clone, Debug)]
pub struct PendingEntity {
    pub item: SnapshotEntity,
    pub request: ReviewRequest,
}

/// A reviewer's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

/// What a decision did.
#[derive(Clone, Debug, PartialEq)]
pub enum DecisionOutcome {
    /// Recorded; an approval's apply summary (the entity written).
    Decided { record: Box<PendingRecord>, applied: Option<ApplySummary> },
    /// No such entity waits for review.
    NotQueued,
    /// The queued version is no longer the one the reviewer saw.
    Changed { current_etag: String },
    /// Another source holds the ref now: approving would be a conflict.
    Taken,
}

/// An invalid document about a known ref.
#[derive(Clone, Debug)]
pub struct InvalidEntity {
    pub entity_ref: EntityRef,
    pub location: Option<String>,
    pub errors: Vec<String>,
}

/// The outcome of reading one location.
#[derive(Clone, Debug, Default)]
pub struct LocationStatus {
    pub target: String,
    pub error: Option<String>,
    pub n_entities: usize,
    /// The read failed in a way that says nothing about the content (an I/O
    /// error, a document that would not parse): every entity the location
    /// produced before is kept. A failing source never deletes.
    pub keeps_entities: bool,
}

/// What applying a snapshot changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplySummary {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    pub unchanged: usize,
    pub invalid: usize,
    pub conflicts: usize,
    /// Rows inserted, updated or deleted in every table: zero when nothing changed.
    pub rows_written: usize,
    /// Removals not applied: the snapshot was incomplete, or it would have
    /// removed more than its `max_removed_share`.
    pub held_back: usize,
}

impl ApplySummary {
    /// Whether the snapshot wrote change-log rows.
    pub fn changed(&self) -> bool {
        self.added + self.updated + self.removed > 0
    }

    /// Adds another apply's counts (a provider that applies one snapshot per scope).
    pub fn absorb(&mut self, other: &ApplySummary) {
        self.added += other.added;
        self.updated += other.updated;
        self.removed += other.removed;
        self.unchanged += other.unchanged;
        self.invalid += other.invalid;
        self.conflicts += other.conflicts;
        self.rows_written += other.rows_written;
        self.held_back += other.held_back;
    }
}

struct Existing {
    id: i64,
    etag: String,
    location: Option<String>,
    errors: Option<Value>,
    uid: String,
    violations: Option<Value>,
    owner_ref: Option<String>,
}

impl SnapshotWriter {
    /// Applies a provider's snapshot atomically: adds new entities, updates
    /// changed ones, removes the provider's entities that are gone (except those
    /// of locations that failed to read), records invalid versions' errors on the
    /// last good version and refs claimed by another source as conflicts.
    /// Unchanged entities are not written and produce no change-log row.
    pub async fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<ApplySummary, StoreError> {
        let _writing = self.writer.lock().await;
        let txn = self.db.begin().await?;
        let summary = apply(&txn, snapshot, Scope::Provider).await?;
        if summary.changed() {
            let entry = crate::audit::AuditEntry {
                principal: format!("provider:{}", snapshot.provider),
                token_id: None,
                operation: "snapshot.apply".into(),
                targets: vec![snapshot.provider.clone()],
                decision: crate::audit::AuditDecision::Allowed,
                result: format!("{} added, {} updated, {} removed", summary.added, summary.updated, summary.removed),
                request_id: None,
            };
            crate::audit::append(&txn, &entry).await?;
        }
        txn.commit().await?;
        if summary.changed() {
            self.announce_commit();
        }
        if summary.rows_written >= ANALYZE_AFTER_ROWS {
            crate::connection::refresh_statistics(&self.db).await?;
        }
        tracing::info!(
            provider = %snapshot.provider,
            added = summary.added,
            updated = summary.updated,
            removed = summary.removed,
            unchanged = summary.unchanged,
            invalid = summary.invalid,
            conflicts = summary.conflicts,
            "snapshot applied"
        );
        Ok(summary)
    }
}

/// An entity removed by hand (`deleteEntity`), as it was.
#[derive(Clone, Debug, PartialEq)]
pub struct DeletedEntity {
    pub entity_ref: EntityRef,
    /// The provider that held it; it adds the entity back at its next run
    /// if the entity is still in its source.
    pub provider: String,
    pub body: Value,
}

impl SnapshotWriter {
    /// Removes one entity, whichever provider holds it: the change log gets
    /// a REMOVED row (attributed to that provider, as the source of the
    /// version that ends) and `audit` is appended in the same transaction.
    /// None when no such entity exists (nothing is written then).
    pub async fn delete_entity(
        &self,
        deleted_ref: &EntityRef,
        audit: &crate::audit::AuditEntry,
    ) -> Result<Option<DeletedEntity>, StoreError> {
        let entity_ref = deleted_ref.to_string();
        let entity_ref = entity_ref.as_str();
        let _writing = self.writer.lock().await;
        let txn = self.db.begin().await?;
        lock_writers(&txn).await?;
        let Some((id, provider, body)) = entity_row::Entity::find()
            .select_only()
            .columns([entity_row::Column::Id, entity_row::Column::Provider, entity_row::Column::Body])
            .filter(entity_row::Column::EntityRef.eq(entity_ref))
            .into_tuple::<(i64, String, Value)>()
            .one(&txn)
            .await?
        else {
            return Ok(None);
        };
        clear_index(&txn, &[id]).await?;
        entity_row::Entity::delete_by_id(id).exec(&txn).await?;
        let mut removal = change(entity_ref, ChangeType::Removed, None, &provider, Utc::now());
        removal.previous_body = Set(Some(body.clone()));
        bulk::insert_changes(&txn, &mut [removal]).await?;
        crate::audit::append(&txn, audit).await?;
        notify_replicas(&txn).await?;
        txn.commit().await?;
        self.announce_commit();
        tracing::info!(entity_ref, provider = %provider, "entity deleted");
        Ok(Some(DeletedEntity { entity_ref: deleted_ref.clone(), provider, body }))
    }
}

/// An entity to write, with everything its rows need.
struct Pending<'a> {
    entity_ref: String,
    item: &'a SnapshotEntity,
    uid: String,
    etag: String,
}

impl Pending<'_> {
    /// The body as stored; built per write chunk, never for the whole snapshot.
    fn body(&self) -> Value {
        stored_body(&self.item.entity, &self.uid, &self.etag)
    }
}

/// Rows written by one snapshot after which the planner's statistics are
/// refreshed. Without this, PostgreSQL plans the first queries after a bulk
/// load from empty-table estimates (measured: a facet over 100,000 entities
/// took 1.8 s before ANALYZE and 0.1 s after).
const ANALYZE_AFTER_ROWS: usize = 10_000;

/// Entities per write chunk.
const WRITE_CHUNK: usize = 2_000;

/// What a snapshot speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Its provider: the review queue and conflicts follow it.
    Provider,
    /// One approved entity: nothing else of its provider changes.
    Approval,
}

pub(crate) async fn apply(
    txn: &DatabaseTransaction,
    snapshot: &Snapshot,
    scope: Scope,
) -> Result<ApplySummary, StoreError> {
    lock_writers(txn).await?;
    let provider = snapshot.provider.as_str();
    let now = Utc::now();
    let mut summary = ApplySummary::default();

    let existing: HashMap<String, Existing> = entity_row::Entity::find()
        .select_only()
        .columns([
            entity_row::Column::Id,
            entity_row::Column::EntityRef,
            entity_row::Column::Etag,
            entity_row::Column::LocationKey,
            entity_row::Column::Errors,
            entity_row::Column::Uid,
            entity_row::Column::Violations,
            entity_row::Column::OwnerRef,
        ])
        .filter(entity_row::Column::Provider.eq(provider))
        .into_tuple::<(i64, String, String, Option<String>, Option<Value>, String, Option<Value>, Option<String>)>()
        .all(txn)
        .await?
        .into_iter()
        .map(|(id, entity_ref, etag, location, errors, uid, violations, owner_ref)| {
            (entity_ref, Existing { id, etag, location, errors, uid, violations, owner_ref })
        })
        .collect();

    // An entity held for review goes the ordinary way when the catalog
    // already holds that version. A new one the catalog holds meanwhile
    // (approved since admission looked) goes the ordinary way with the
    // same owner, and waits as an owner change with another.
    let mut items: Vec<&SnapshotEntity> = snapshot.entities.iter().collect();
    let mut queued: Vec<(&SnapshotEntity, ReviewRequest)> = Vec::new();
    for pending in &snapshot.pending {
        let entity = &pending.item.entity;
        match existing.get(&entity.entity_ref().to_string()) {
            Some(row) if row.etag == entity.content_hash() => items.push(&pending.item),
            Some(row) if pending.request.reason == ReviewReason::New => {
                if typed_columns(entity).owner_ref == row.owner_ref {
                    items.push(&pending.item);
                } else {
                    let previous = row.owner_ref.as_deref().and_then(|owner| EntityRef::from_stored(owner).ok());
                    let reason = ReviewReason::OwnerChange { previous };
                    queued.push((&pending.item, ReviewRequest { reason, ..pending.request.clone() }));
                }
            }
            _ => queued.push((&pending.item, pending.request.clone())),
        }
    }

    // Refs that another provider already holds cannot be taken.
    let new_refs: Vec<String> = items
        .iter()
        .copied()
        .chain(queued.iter().map(|(item, _)| *item))
        .map(|item| item.entity.entity_ref().to_string())
        .filter(|entity_ref| !existing.contains_key(entity_ref))
        .collect();
    let mut foreign: HashMap<String, (String, Option<String>)> = HashMap::new();
    for chunk in new_refs.chunks(REF_CHUNK) {
        let rows = entity_row::Entity::find()
            .select_only()
            .columns([entity_row::Column::EntityRef, entity_row::Column::Provider, entity_row::Column::LocationKey])
            .filter(bulk::one_of(txn.get_database_backend(), entity_row::Column::EntityRef, chunk.iter().cloned()))
            .into_tuple::<(String, String, Option<String>)>()
            .all(txn)
            .await?;
        for (entity_ref, owner, location) in rows {
            foreign.insert(entity_ref, (owner, location));
        }
    }
    // A held entity another provider holds is a conflict, not a review.
    queued.retain(|(item, _)| {
        let taken = foreign.contains_key(&item.entity.entity_ref().to_string());
        if taken {
            items.push(item);
        }
        !taken
    });

    let mut seen: HashMap<String, Option<String>> = HashMap::new();
    let mut conflicts: Vec<ConflictClaim> = Vec::new();
    let mut inserts: Vec<Pending> = Vec::new();
    let mut updates: Vec<(i64, Pending)> = Vec::new();
    let mut moves: Vec<(i64, Option<String>)> = Vec::new();
    // Unchanged entities whose violations changed (a policy did), by row id.
    let mut violations: Vec<(i64, Option<Value>)> = Vec::new();
    for &item in &items {
        let entity_ref = item.entity.entity_ref().to_string();
        if let Some(owner_location) = seen.get(&entity_ref) {
            conflicts.push(ConflictClaim::new(&entity_ref, provider, owner_location.clone(), provider, &item.location));
            continue;
        }
        if let Some((owner, owner_location)) = foreign.get(&entity_ref) {
            conflicts.push(ConflictClaim::new(&entity_ref, owner, owner_location.clone(), provider, &item.location));
            continue;
        }
        // A partial snapshot cannot tell whether the other location still
        // declares the entity, so its holder keeps it.
        if let Some(row) = existing.get(&entity_ref)
            && !snapshot.covers(row.location.as_deref())
        {
            conflicts.push(ConflictClaim::new(&entity_ref, provider, row.location.clone(), provider, &item.location));
            continue;
        }
        seen.insert(entity_ref.clone(), item.location.clone());
        let etag = item.entity.content_hash();
        match existing.get(&entity_ref) {
            None => {
                let uid = uuid::Uuid::new_v4().to_string();
                inserts.push(Pending { entity_ref, item, uid, etag });
            }
            Some(row) if row.etag == etag => {
                // Inserts and updates write their violations with the row.
                let stored = crate::record::stored_violations(&item.violations);
                if row.violations != stored {
                    violations.push((row.id, stored));
                }
                if row.location != item.location || row.errors.is_some() {
                    moves.push((row.id, item.location.clone()));
                }
                summary.unchanged += 1;
            }
            Some(row) => {
                updates.push((row.id, Pending { entity_ref, item, uid: row.uid.clone(), etag }));
            }
        }
    }
    summary.conflicts = conflicts.len();
    summary.added = inserts.len();
    summary.updated = updates.len();
    summary.rows_written += sync_conflicts(txn, snapshot, &conflicts, scope).await?;

    for (id, location) in &moves {
        entity_row::Entity::update_many()
            .col_expr(entity_row::Column::LocationKey, Expr::value(location.clone()))
            .col_expr(entity_row::Column::Errors, Expr::value(Option::<Value>::None))
            .filter(entity_row::Column::Id.eq(*id))
            .exec(txn)
            .await?;
        summary.rows_written += 1;
    }

    // Refs whose stored version stays: invalid new versions, and new
    // owners waiting for review.
    let mut invalid_refs: HashSet<String> =
        queued.iter().map(|(item, _)| item.entity.entity_ref().to_string()).collect();
    for item in &snapshot.invalid {
        let entity_ref = item.entity_ref.to_string();
        invalid_refs.insert(entity_ref.clone());
        summary.invalid += 1;
        if seen.contains_key(&entity_ref) {
            continue;
        }
        if let Some(row) = existing.get(&entity_ref) {
            let errors = Value::from(item.errors.clone());
            if row.errors.as_ref() != Some(&errors) {
                entity_row::Entity::update_many()
                    .col_expr(entity_row::Column::Errors, Expr::value(Some(errors)))
                    .filter(entity_row::Column::Id.eq(row.id))
                    .exec(txn)
                    .await?;
                summary.rows_written += 1;
            }
        }
    }

    let failed_locations: HashSet<&str> =
        snapshot.locations.iter().filter(|status| status.keeps_entities).map(|status| status.target.as_str()).collect();
    // When any location failed, what it would have led to is unknown (a
    // Location file that cannot be read hides the files it lists), so only
    // entities of locations that were read may go.
    let listed_locations: HashSet<&str> = snapshot.locations.iter().map(|status| status.target.as_str()).collect();
    let keep_unlisted = !failed_locations.is_empty();
    // Whether what the snapshot holds speaks for what was read from
    // `location` before.
    let speaks_for = |location: Option<&str>| {
        snapshot.covers(location)
            && !location.is_some_and(|location| failed_locations.contains(location))
            && (!keep_unlisted || location.is_some_and(|location| listed_locations.contains(location)))
    };
    // An approval speaks for its one entity only.
    let removed: Vec<(&String, i64)> = existing
        .iter()
        .filter(|_| scope == Scope::Provider)
        .filter(|(entity_ref, _)| !seen.contains_key(*entity_ref) && !invalid_refs.contains(*entity_ref))
        .filter(|(_, row)| speaks_for(row.location.as_deref()))
        .map(|(entity_ref, row)| (entity_ref, row.id))
        .collect();
    let removed = if let Some(reason) = &snapshot.incomplete {
        if !removed.is_empty() {
            tracing::warn!(provider, held_back = removed.len(), reason = %reason, "incomplete snapshot: nothing removed");
        }
        summary.held_back = removed.len();
        Vec::new()
    } else if let Some(share) = snapshot.max_removed_share
        && existing.len() >= SAFETY_VALVE_MIN_ENTITIES
        && removed.len() as f64 > share * existing.len() as f64
    {
        tracing::warn!(
            provider,
            held_back = removed.len(),
            existing = existing.len(),
            share,
            "snapshot would remove too much: removals held back until forced"
        );
        summary.held_back = removed.len();
        Vec::new()
    } else {
        removed
    };
    summary.removed = removed.len();

    if scope == Scope::Provider {
        // The queue loses what the catalog would: nothing when removals
        // are held back (a rejection survives a source's glitch), and an
        // entry admitted now in any case.
        let admitted: HashSet<String> = seen.keys().cloned().collect();
        let removals = snapshot.incomplete.is_none() && summary.held_back == 0;
        let removable = |location: Option<&str>| removals && speaks_for(location);
        let queued: Vec<(&Entity, Option<&str>, &ReviewRequest, &[PolicyViolation])> = queued
            .iter()
            .map(|(item, request)| (&item.entity, item.location.as_deref(), request, item.violations.as_slice()))
            .collect();
        summary.rows_written += crate::review::sync_queue(txn, provider, &queued, &admitted, removable, now).await?;
    }

    let removed_ids: Vec<i64> = removed.iter().map(|(_, id)| *id).collect();
    let mut last_versions = bodies_by_id(txn, &removed_ids).await?;
    let stale_ids: Vec<i64> = updates.iter().map(|(id, _)| *id).chain(removed.iter().map(|(_, id)| *id)).collect();
    summary.rows_written += clear_index(txn, &stale_ids).await?;
    for chunk in removed.chunks(INSERT_CHUNK) {
        let ids = chunk.iter().map(|(_, id)| *id);
        summary.rows_written +=
            entity_row::Entity::delete_many().filter(entity_row::Column::Id.is_in(ids)).exec(txn).await?.rows_affected
                as usize;
    }
    let mut removals: Vec<change_row::ActiveModel> = removed
        .iter()
        .map(|(entity_ref, id)| {
            let mut row = change(entity_ref, ChangeType::Removed, None, provider, now);
            row.previous_body = Set(last_versions.remove(id));
            row
        })
        .collect();
    bulk::insert_changes(txn, &mut removals).await?;
    summary.rows_written += removals.len();

    summary.rows_written += write_inserts(txn, &inserts, provider, now).await?;

    for chunk in updates.chunks(WRITE_CHUNK) {
        let mut changes = Vec::with_capacity(chunk.len());
        let ids: Vec<i64> = chunk.iter().map(|(id, _)| *id).collect();
        let previous = bodies_by_id(txn, &ids).await?;
        for (id, pending) in chunk {
            let body = pending.body();
            let changed = previous.get(id).map(|old| catalog_domain::changed_paths(old, &body)).unwrap_or_default();
            // The same row an insert writes, but the ref, uid and creation time stay.
            let mut row = entity_active_model(pending, body.clone(), provider, now);
            row.entity_ref = NotSet;
            row.uid = NotSet;
            row.provider = NotSet;
            row.created_at = NotSet;
            entity_row::Entity::update_many().set(row).filter(entity_row::Column::Id.eq(*id)).exec(txn).await?;
            let mut change_row = change(&pending.entity_ref, ChangeType::Updated, Some((pending, body)), provider, now);
            change_row.changed_fields = Set(Some(Value::from(changed)));
            changes.push(change_row);
        }
        let mut index = IndexRows::default();
        for (id, pending) in chunk {
            index.add(*id, &pending.item.entity);
        }
        summary.rows_written += chunk.len() + index.write(txn).await?;
        bulk::insert_changes(txn, &mut changes).await?;
        summary.rows_written += changes.len();
    }

    // Violations are no part of the body (a policy changes them, not the
    // source): no change-log row, and readers read the column as it is.
    for (id, stored) in violations {
        entity_row::Entity::update_many()
            .col_expr(entity_row::Column::Violations, Expr::value(stored))
            .filter(entity_row::Column::Id.eq(id))
            .exec(txn)
            .await?;
        summary.rows_written += 1;
    }

    // An incomplete snapshot may not list every location: the rows of those
    // it does not list stay, like their entities.
    let drop_unlisted = snapshot.incomplete.is_none();
    summary.rows_written += sync_locations(txn, snapshot, drop_unlisted, now).await?;
    if summary.changed() {
        notify_replicas(txn).await?;
    }
    Ok(summary)
}

/// The stored bodies of entity rows by id. One statement per 5,000 ids.
async fn bodies_by_id(txn: &DatabaseTransaction, ids: &[i64]) -> Result<HashMap<i64, Value>, StoreError> {
    let mut bodies = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(REF_CHUNK) {
        let rows = entity_row::Entity::find()
            .select_only()
            .columns([entity_row::Column::Id, entity_row::Column::Body])
            .filter(entity_row::Column::Id.is_in(chunk.iter().copied()))
            .into_tuple::<(i64, Value)>()
            .all(txn)
            .await?;
        bodies.extend(rows);
    }
    Ok(bodies)
}

/// The body as served: the author's entity with the catalog's uid and etag.
fn stored_body(entity: &Entity, uid: &str, etag: &str) -> Value {
    let mut entity = entity.clone();
    entity.metadata.uid = Some(uid.to_owned());
    entity.metadata.etag = Some(etag.to_owned());
    serde_json::to_value(&entity).unwrap_or(Value::Null)
}

fn entity_active_model(
    pending: &Pending,
    body: Value,
    provider: &str,
    now: chrono::DateTime<Utc>,
) -> entity_row::ActiveModel {
    let entity = &pending.item.entity;
    let columns = typed_columns(entity);
    entity_row::ActiveModel {
        entity_ref: Set(pending.entity_ref.clone()),
        kind: Set(columns.kind),
        namespace: Set(columns.namespace),
        name: Set(columns.name),
        uid: Set(pending.uid.clone()),
        etag: Set(pending.etag.clone()),
        body: Set(body),
        owner_ref: Set(columns.owner_ref),
        lifecycle: Set(columns.lifecycle),
        spec_type: Set(columns.spec_type),
        system_ref: Set(columns.system_ref),
        title: Set(entity.metadata.title.clone()),
        search_text: Set(columns.search_text),
        provider: Set(provider.to_owned()),
        location_key: Set(pending.item.location.clone()),
        errors: Set(None),
        violations: Set(crate::record::stored_violations(&pending.item.violations)),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
}

/// Deletes the relation and facet rows of entities; returns the rows deleted.
async fn clear_index(txn: &DatabaseTransaction, ids: &[i64]) -> Result<usize, StoreError> {
    let mut n_rows = 0;
    for chunk in ids.chunks(INSERT_CHUNK) {
        n_rows += relation_row::Entity::delete_many()
            .filter(relation_row::Column::OriginId.is_in(chunk.iter().copied()))
            .exec(txn)
            .await?
            .rows_affected;
        n_rows += facet_row::Entity::delete_many()
            .filter(facet_row::Column::EntityId.is_in(chunk.iter().copied()))
            .exec(txn)
            .await?
            .rows_affected;
    }
    Ok(n_rows as usize)
}

/// The relation edges (both directions) and facet rows of some entities.
#[derive(Default)]
struct IndexRows {
    relations: Vec<relation_row::ActiveModel>,
    facets: Vec<facet_row::ActiveModel>,
}

impl IndexRows {
    fn add(&mut self, id: i64, entity: &Entity) {
        self.relations.extend(derive_relations(entity).into_iter().map(|edge| relation_row::ActiveModel {
            origin_id: Set(id),
            source_ref: Set(edge.source.to_string()),
            relation_type: Set(edge.relation_type.as_str().to_owned()),
            target_ref: Set(edge.target.to_string()),
            ..Default::default()
        }));
        self.facets.extend(facet_pairs(entity).into_iter().map(|(key, value)| facet_row::ActiveModel {
            entity_id: Set(id),
            key: Set(key),
            value: Set(value),
            ..Default::default()
        }));
    }

    /// Replaces the placeholder ids rows were added with (positions in a
    /// chunk, before its entities had ids) by the real ones.
    fn assign_ids(&mut self, ids: &[i64]) {
        let real = |placeholder: &mut ActiveValue<i64>| {
            if let ActiveValue::Set(position) = placeholder {
                *placeholder = Set(ids[*position as usize]);
            }
        };
        self.relations.iter_mut().for_each(|row| real(&mut row.origin_id));
        self.facets.iter_mut().for_each(|row| real(&mut row.entity_id));
    }

    /// Writes the rows in multi-row inserts; returns the rows written.
    async fn write(mut self, txn: &DatabaseTransaction) -> Result<usize, StoreError> {
        bulk::insert_relations(txn, &mut self.relations).await?;
        bulk::insert_facets(txn, &mut self.facets).await?;
        Ok(self.relations.len() + self.facets.len())
    }
}

/// The rows one write chunk of new entities inserts, built before the
/// entities have ids.
struct InsertChunk<'a> {
    pending: &'a [Pending<'a>],
    entities: Vec<entity_row::ActiveModel>,
    index: IndexRows,
    changes: Vec<change_row::ActiveModel>,
}

/// Entities whose rows are built between two looks at the writer (see
/// [`write_inserts`]): a few milliseconds of work.
const BUILD_SLICE: usize = 100;

impl<'a> InsertChunk<'a> {
    async fn build(pending: &'a [Pending<'a>], provider: &str, now: chrono::DateTime<Utc>) -> Self {
        let mut chunk = InsertChunk {
            pending,
            entities: Vec::with_capacity(pending.len()),
            index: IndexRows::default(),
            changes: Vec::with_capacity(pending.len()),
        };
        for (position, item) in pending.iter().enumerate() {
            let body = item.body();
            chunk.changes.push(change(&item.entity_ref, ChangeType::Added, Some((item, body.clone())), provider, now));
            chunk.entities.push(entity_active_model(item, body, provider, now));
            chunk.index.add(position as i64, &item.item.entity);
            if position % BUILD_SLICE == BUILD_SLICE - 1 {
                tokio::task::yield_now().await;
            }
        }
        chunk
    }

    async fn write(mut self, txn: &DatabaseTransaction) -> Result<usize, StoreError> {
        let found = bulk::insert_entities(txn, &mut self.entities).await?;
        let ids = self
            .pending
            .iter()
            .map(|item| {
                found.get(&item.entity_ref).copied().ok_or_else(|| StoreError::Corrupt {
                    entity_ref: item.entity_ref.clone(),
                    message: "the inserted row was not found".into(),
                })
            })
            .collect::<Result<Vec<i64>, _>>()?;
        self.index.assign_ids(&ids);
        let mut n_rows = self.entities.len() + self.index.write(txn).await?;
        bulk::insert_changes(txn, &mut self.changes).await?;
        n_rows += self.changes.len();
        Ok(n_rows)
    }
}

/// Inserts new entities with their index and change-log rows; returns the
/// rows written. Writes go in chunks so that memory holds a few chunks' rows,
/// not the snapshot's (100,000 entities carry millions of index rows), and
/// the next chunk's rows are built while the database writes the current
/// one (about 5% of a cold load: bench/results/README.md). Both run on this task (the builder yields every
/// [`BUILD_SLICE`] entities), so nothing needs to own the snapshot.
async fn write_inserts(
    txn: &DatabaseTransaction,
    inserts: &[Pending<'_>],
    provider: &str,
    now: chrono::DateTime<Utc>,
) -> Result<usize, StoreError> {
    let (built, mut to_write) = tokio::sync::mpsc::channel(1);
    let build = async move {
        for pending in inserts.chunks(WRITE_CHUNK) {
            if built.send(InsertChunk::build(pending, provider, now).await).await.is_err() {
                break;
            }
        }
    };
    // Owning the receiver, a failed write drops it and so stops the builder.
    let write = async move {
        let mut n_rows = 0;
        while let Some(chunk) = to_write.recv().await {
            n_rows += chunk.write(txn).await?;
        }
        Ok::<_, StoreError>(n_rows)
    };
    let ((), written) = tokio::join!(build, write);
    written
}

fn change(
    entity_ref: &str,
    change_type: ChangeType,
    written: Option<(&Pending, Value)>,
    provider: &str,
    now: chrono::DateTime<Utc>,
) -> change_row::ActiveModel {
    let (etag, body) = match written {
        Some((pending, body)) => (Some(pending.etag.clone()), Some(body)),
        None => (None, None),
    };
    change_row::ActiveModel {
        created_at: Set(now),
        entity_ref: Set(entity_ref.to_owned()),
        change_type: Set(change_type.as_str().to_owned()),
        etag: Set(etag),
        body: Set(body),
        provider: Set(provider.to_owned()),
        changed_fields: Set(None),
        previous_body: Set(None),
        ..Default::default()
    }
}

/// A refused claim on a ref another source (or an earlier location) holds.
struct ConflictClaim {
    entity_ref: String,
    owner: String,
    owner_location: Option<String>,
    claimant: String,
    claimant_location: Option<String>,
}

impl ConflictClaim {
    fn new(
        entity_ref: &str,
        owner: &str,
        owner_location: Option<String>,
        claimant: &str,
        location: &Option<String>,
    ) -> Self {
        tracing::warn!(entity_ref, owner, claimant, "entity claimed by two sources");
        Self {
            entity_ref: entity_ref.to_owned(),
            owner: owner.to_owned(),
            owner_location,
            claimant: claimant.to_owned(),
            claimant_location: location.clone(),
        }
    }
}

/// Makes the provider's recorded claims equal to `claims`, writing only what
/// differs; returns the rows written.
async fn sync_conflicts(
    txn: &DatabaseTransaction,
    snapshot: &Snapshot,
    claims: &[ConflictClaim],
    scope: Scope,
) -> Result<usize, StoreError> {
    let provider = snapshot.provider.as_str();
    let recorded: HashMap<String, conflict_row::Model> = conflict_row::Entity::find()
        .filter(conflict_row::Column::ClaimantProvider.eq(provider))
        .all(txn)
        .await?
        .into_iter()
        .map(|row| (row.entity_ref.clone(), row))
        .collect();
    let mut n_rows = 0;
    let mut current = HashSet::new();
    for claim in claims {
        if !current.insert(claim.entity_ref.as_str()) {
            continue;
        }
        let same = recorded.get(&claim.entity_ref).is_some_and(|row| {
            row.owner_provider == claim.owner
                && row.owner_location == claim.owner_location
                && row.claimant_location == claim.claimant_location
        });
        if same {
            continue;
        }
        if let Some(row) = recorded.get(&claim.entity_ref) {
            conflict_row::Entity::delete_by_id(row.id).exec(txn).await?;
        }
        let row = conflict_row::ActiveModel {
            entity_ref: Set(claim.entity_ref.clone()),
            owner_provider: Set(claim.owner.clone()),
            owner_location: Set(claim.owner_location.clone()),
            claimant_provider: Set(claim.claimant.clone()),
            claimant_location: Set(claim.claimant_location.clone()),
            detected_at: Set(Utc::now()),
            ..Default::default()
        };
        conflict_row::Entity::insert(row).exec_without_returning(txn).await?;
        n_rows += 1;
    }
    if scope == Scope::Approval {
        return Ok(n_rows);
    }
    let stale: Vec<i64> = recorded
        .values()
        .filter(|row| !current.contains(row.entity_ref.as_str()) && snapshot.covers(row.claimant_location.as_deref()))
        .map(|row| row.id)
        .collect();
    if !stale.is_empty() {
        n_rows += conflict_row::Entity::delete_many()
            .filter(conflict_row::Column::Id.is_in(stale))
            .exec(txn)
            .await?
            .rows_affected as usize;
    }
    Ok(n_rows)
}

/// Makes the provider's location rows equal to `statuses`, writing only rows
/// whose outcome changed; returns the rows written.
async fn sync_locations(
    txn: &DatabaseTransaction,
    snapshot: &Snapshot,
    drop_unlisted: bool,
    now: chrono::DateTime<Utc>,
) -> Result<usize, StoreError> {
    let (provider, statuses) = (snapshot.provider.as_str(), &snapshot.locations);
    let recorded: HashMap<String, location_row::Model> = location_row::Entity::find()
        .filter(location_row::Column::Provider.eq(provider))
        .all(txn)
        .await?
        .into_iter()
        .map(|row| (row.target.clone(), row))
        .collect();
    let mut n_rows = 0;
    let mut inserts = Vec::new();
    let mut current = HashSet::new();
    // Locations read in full whose `read_at` is due again (stale
    // detection's "not seen"): hourly is precise enough for a threshold in
    // days and keeps an unchanged re-read from writing every row.
    let mut seen: Vec<i64> = Vec::new();
    for status in statuses {
        if !current.insert(status.target.as_str()) {
            continue;
        }
        // Read in full: not a failure that keeps its entities, and not an
        // error that found nothing (a repository gone, say).
        let read = !status.keeps_entities && (status.error.is_none() || status.n_entities > 0);
        if read
            && let Some(row) = recorded.get(&status.target)
            && row.read_at.is_none_or(|read_at| now - read_at >= chrono::Duration::hours(1))
        {
            seen.push(row.id);
        }
        let n_entities = i64::try_from(status.n_entities).unwrap_or(i64::MAX);
        match recorded.get(&status.target) {
            Some(row) if row.error == status.error && row.n_entities == n_entities => {}
            Some(row) => {
                location_row::Entity::update_many()
                    .col_expr(location_row::Column::Error, Expr::value(status.error.clone()))
                    .col_expr(location_row::Column::NEntities, Expr::value(n_entities))
                    .col_expr(location_row::Column::UpdatedAt, Expr::value(now))
                    .filter(location_row::Column::Id.eq(row.id))
                    .exec(txn)
                    .await?;
                n_rows += 1;
            }
            None => inserts.push(location_row::ActiveModel {
                provider: Set(provider.to_owned()),
                target: Set(status.target.clone()),
                error: Set(status.error.clone()),
                n_entities: Set(n_entities),
                updated_at: Set(now),
                read_at: Set(read.then_some(now)),
                ..Default::default()
            }),
        }
    }
    n_rows += inserts.len();
    for chunk in inserts.chunks(INSERT_CHUNK) {
        location_row::Entity::insert_many(chunk.iter().cloned()).exec_without_returning(txn).await?;
    }
    // Bookkeeping, not a change: not counted in the rows written.
    for chunk in seen.chunks(REF_CHUNK) {
        location_row::Entity::update_many()
            .col_expr(location_row::Column::ReadAt, Expr::value(Some(now)))
            .filter(location_row::Column::Id.is_in(chunk.iter().copied()))
            .exec(txn)
            .await?;
    }
    let stale: Vec<i64> = recorded
        .values()
        .filter(|row| drop_unlisted && !current.contains(row.target.as_str()) && snapshot.covers(Some(&row.target)))
        .map(|row| row.id)
        .collect();
    for chunk in stale.chunks(INSERT_CHUNK) {
        n_rows += location_row::Entity::delete_many()
            .filter(location_row::Column::Id.is_in(chunk.iter().copied()))
            .exec(txn)
            .await?
            .rows_affected as usize;
    }
    Ok(n_rows)
}

impl SnapshotWriter {
    /// Approves or rejects a queued entity, with `audit` and a review event
    /// in the same transaction. An approval writes the queued version as
    /// its provider would (an add, or an update for a new owner) and takes
    /// it off the queue; a rejection keeps it out until its source changes
    /// it. With `expected_etag`, the decision applies only to that version.
    pub async fn decide(
        &self,
        entity_ref: &EntityRef,
        decision: Decision,
        expected_etag: Option<&str>,
        note: Option<String>,
        audit: &crate::audit::AuditEntry,
    ) -> Result<DecisionOutcome, StoreError> {
        let _writing = self.writer.lock().await;
        let txn = self.db.begin().await?;
        crate::commit::lock_writers(&txn).await?;
        let Some(row) = pending_row::Entity::find()
            .filter(pending_row::Column::EntityRef.eq(entity_ref.to_string()))
            .order_by_asc(pending_row::Column::Id)
            .one(&txn)
            .await?
        else {
            return Ok(DecisionOutcome::NotQueued);
        };
        if let Some(expected) = expected_etag
            && expected != row.etag
        {
            return Ok(DecisionOutcome::Changed { current_etag: row.etag });
        }
        let now = Utc::now();
        let (event, applied) = match decision {
            Decision::Approve => {
                let entity: Entity = serde_json::from_value(row.body.clone()).map_err(|error| StoreError::Corrupt {
                    entity_ref: row.entity_ref.clone(),
                    message: error.to_string(),
                })?;
                let snapshot = Snapshot {
                    provider: row.provider.clone(),
                    entities: vec![SnapshotEntity {
                        violations: row
                            .violations
                            .clone()
                            .and_then(|violations| serde_json::from_value(violations).ok())
                            .unwrap_or_default(),
                        ..SnapshotEntity::new(entity, row.location_key.clone())
                    }],
                    incomplete: Some("one approved entity".into()),
                    ..Default::default()
                };
                let applied = apply(&txn, &snapshot, Scope::Approval).await?;
                if applied.conflicts > 0 {
                    return Ok(DecisionOutcome::Taken);
                }
                pending_row::Entity::delete_by_id(row.id).exec(&txn).await?;
                (ReviewEventKind::Approved, Some(applied))
            }
            Decision::Reject => {
                pending_row::Entity::update_many()
                    .col_expr(pending_row::Column::Status, Expr::value(ReviewStatus::Rejected.name()))
                    .col_expr(pending_row::Column::DecidedBy, Expr::value(audit.principal.clone()))
                    .col_expr(pending_row::Column::DecidedAt, Expr::value(now))
                    .col_expr(pending_row::Column::Note, Expr::value(note.clone()))
                    .filter(pending_row::Column::Id.eq(row.id))
                    .exec(&txn)
                    .await?;
                (ReviewEventKind::Rejected, None)
            }
        };
        append_events(&txn, vec![event_row(&row.entity_ref, event, &audit.principal, note.clone(), now)]).await?;
        crate::audit::append(&txn, audit).await?;
        txn.commit().await?;
        if applied.as_ref().is_some_and(ApplySummary::changed) {
            self.announce_commit();
        }
        let mut row = row;
        row.status = match decision {
            Decision::Approve => row.status,
            Decision::Reject => ReviewStatus::Rejected.name().to_owned(),
        };
        row.decided_by = Some(audit.principal.clone());
        row.decided_at = Some(now);
        row.note = note;
        let record = record(row).ok_or_else(|| StoreError::Corrupt {
            entity_ref: entity_ref.to_string(),
            message: "an unreadable queued row".into(),
        })?;
        tracing::info!(entity_ref = %entity_ref, decision = event.name(), principal = %audit.principal, "review decided");
        Ok(DecisionOutcome::Decided { record: Box::new(record), applied })
    }
}
