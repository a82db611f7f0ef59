//! The only write path of the catalog: applying a provider's snapshot in one
//! transaction, with a change-log row for every entity that really changed.

use std::collections::{HashMap, HashSet};

use catalog_domain::{Entity, EntityRef, derive_relations};
use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect, TransactionTrait,
};
use serde_json::Value;

use crate::connection::Store;
use crate::error::StoreError;
use crate::models::{change_row, conflict_row, entity_row, facet_row, location_row, relation_row};
use crate::record::ChangeType;

/// Longest value kept in the facet index: longer values (inline API
/// definitions, for one) are neither useful facets nor useful filters.
const MAX_FACET_VALUE_CHARS: usize = 200;

/// Deepest spec path flattened into the facet index.
const MAX_FACET_DEPTH: usize = 3;

/// How many refs go into one `IN (...)` list, well under both backends' limits.
const REF_CHUNK: usize = 500;

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
}

/// A valid entity and the location it came from.
#[derive(Clone, Debug)]
pub struct SnapshotEntity {
    pub entity: Entity,
    pub location: Option<String>,
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
}

struct Existing {
    id: i64,
    etag: String,
    location: Option<String>,
    errors: Option<Value>,
}

impl Store {
    /// Applies a provider's snapshot atomically: adds new entities, updates
    /// changed ones, removes the provider's entities that are gone (except those
    /// of locations that failed to read), records invalid versions' errors on the
    /// last good version and refs claimed by another source as conflicts.
    /// Unchanged entities are not written and produce no change-log row.
    pub async fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<ApplySummary, StoreError> {
        let txn = self.db.begin().await?;
        let summary = apply(&txn, snapshot).await?;
        txn.commit().await?;
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

async fn apply(txn: &DatabaseTransaction, snapshot: &Snapshot) -> Result<ApplySummary, StoreError> {
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
        ])
        .filter(entity_row::Column::Provider.eq(provider))
        .into_tuple::<(i64, String, String, Option<String>, Option<Value>)>()
        .all(txn)
        .await?
        .into_iter()
        .map(|(id, entity_ref, etag, location, errors)| (entity_ref, Existing { id, etag, location, errors }))
        .collect();

    // Refs that another provider already holds cannot be taken.
    let new_refs: Vec<String> = snapshot
        .entities
        .iter()
        .map(|item| item.entity.entity_ref().to_string())
        .filter(|entity_ref| !existing.contains_key(entity_ref))
        .collect();
    let mut foreign: HashMap<String, (String, Option<String>)> = HashMap::new();
    for chunk in new_refs.chunks(REF_CHUNK) {
        let rows = entity_row::Entity::find()
            .select_only()
            .columns([entity_row::Column::EntityRef, entity_row::Column::Provider, entity_row::Column::LocationKey])
            .filter(entity_row::Column::EntityRef.is_in(chunk.iter().cloned()))
            .into_tuple::<(String, String, Option<String>)>()
            .all(txn)
            .await?;
        for (entity_ref, owner, location) in rows {
            foreign.insert(entity_ref, (owner, location));
        }
    }

    conflict_row::Entity::delete_many().filter(conflict_row::Column::ClaimantProvider.eq(provider)).exec(txn).await?;

    let mut seen: HashMap<String, Option<String>> = HashMap::new();
    for item in &snapshot.entities {
        let entity_ref = item.entity.entity_ref().to_string();
        if let Some(owner_location) = seen.get(&entity_ref) {
            record_conflict(txn, &entity_ref, provider, owner_location.clone(), provider, item.location.clone())
                .await?;
            summary.conflicts += 1;
            continue;
        }
        if let Some((owner, owner_location)) = foreign.get(&entity_ref) {
            record_conflict(txn, &entity_ref, owner, owner_location.clone(), provider, item.location.clone()).await?;
            summary.conflicts += 1;
            continue;
        }
        seen.insert(entity_ref.clone(), item.location.clone());
        let etag = item.entity.content_hash();
        match existing.get(&entity_ref) {
            None => {
                let uid = uuid::Uuid::new_v4().to_string();
                let body = stored_body(&item.entity, &uid, &etag);
                let id = insert_entity(txn, &item.entity, &body, &uid, &etag, provider, item.location.as_deref(), now)
                    .await?;
                write_index(txn, id, &item.entity).await?;
                log_change(txn, &entity_ref, ChangeType::Added, Some(&etag), Some(body), provider, now).await?;
                summary.added += 1;
            }
            Some(row) if row.etag == etag => {
                if row.location != item.location || row.errors.is_some() {
                    entity_row::Entity::update_many()
                        .col_expr(entity_row::Column::LocationKey, Expr::value(item.location.clone()))
                        .col_expr(entity_row::Column::Errors, Expr::value(Option::<Value>::None))
                        .filter(entity_row::Column::Id.eq(row.id))
                        .exec(txn)
                        .await?;
                }
                summary.unchanged += 1;
            }
            Some(row) => {
                let uid: String = entity_row::Entity::find_by_id(row.id)
                    .select_only()
                    .column(entity_row::Column::Uid)
                    .into_tuple()
                    .one(txn)
                    .await?
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let body = stored_body(&item.entity, &uid, &etag);
                let columns = typed_columns(&item.entity);
                entity_row::Entity::update_many()
                    .col_expr(entity_row::Column::Kind, Expr::value(columns.kind))
                    .col_expr(entity_row::Column::Etag, Expr::value(etag.clone()))
                    .col_expr(entity_row::Column::Body, Expr::value(body.clone()))
                    .col_expr(entity_row::Column::OwnerRef, Expr::value(columns.owner_ref))
                    .col_expr(entity_row::Column::Lifecycle, Expr::value(columns.lifecycle))
                    .col_expr(entity_row::Column::SpecType, Expr::value(columns.spec_type))
                    .col_expr(entity_row::Column::SystemRef, Expr::value(columns.system_ref))
                    .col_expr(entity_row::Column::Title, Expr::value(item.entity.metadata.title.clone()))
                    .col_expr(entity_row::Column::SearchText, Expr::value(columns.search_text))
                    .col_expr(entity_row::Column::LocationKey, Expr::value(item.location.clone()))
                    .col_expr(entity_row::Column::Errors, Expr::value(Option::<Value>::None))
                    .col_expr(entity_row::Column::UpdatedAt, Expr::value(now))
                    .filter(entity_row::Column::Id.eq(row.id))
                    .exec(txn)
                    .await?;
                clear_index(txn, row.id).await?;
                write_index(txn, row.id, &item.entity).await?;
                log_change(txn, &entity_ref, ChangeType::Updated, Some(&etag), Some(body), provider, now).await?;
                summary.updated += 1;
            }
        }
    }

    let mut invalid_refs = HashSet::new();
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
            }
        }
    }

    let failed_locations: HashSet<&str> =
        snapshot.locations.iter().filter(|status| status.keeps_entities).map(|status| status.target.as_str()).collect();
    for (entity_ref, row) in &existing {
        if seen.contains_key(entity_ref) || invalid_refs.contains(entity_ref) {
            continue;
        }
        if row.location.as_deref().is_some_and(|location| failed_locations.contains(location)) {
            continue;
        }
        clear_index(txn, row.id).await?;
        entity_row::Entity::delete_by_id(row.id).exec(txn).await?;
        log_change(txn, entity_ref, ChangeType::Removed, None, None, provider, now).await?;
        summary.removed += 1;
    }

    location_row::Entity::delete_many().filter(location_row::Column::Provider.eq(provider)).exec(txn).await?;
    let locations = snapshot.locations.iter().map(|status| location_row::ActiveModel {
        provider: Set(provider.to_owned()),
        target: Set(status.target.clone()),
        error: Set(status.error.clone()),
        n_entities: Set(i64::try_from(status.n_entities).unwrap_or(i64::MAX)),
        refreshed_at: Set(now),
        ..Default::default()
    });
    location_row::Entity::insert_many(locations).exec(txn).await?;
    Ok(summary)
}

/// The body as served: the author's entity with the catalog's uid and etag.
fn stored_body(entity: &Entity, uid: &str, etag: &str) -> Value {
    let mut entity = entity.clone();
    entity.metadata.uid = Some(uid.to_owned());
    entity.metadata.etag = Some(etag.to_owned());
    serde_json::to_value(&entity).unwrap_or(Value::Null)
}

struct TypedColumns {
    kind: String,
    owner_ref: Option<String>,
    lifecycle: Option<String>,
    spec_type: Option<String>,
    system_ref: Option<String>,
    search_text: String,
}

/// The filter columns, lower-cased: Backstage compares these case-insensitively.
fn typed_columns(entity: &Entity) -> TypedColumns {
    let namespace = entity.metadata.namespace.as_str();
    let reference = |field: &str, default_kind: &str| {
        entity
            .spec_str(field)
            .and_then(|text| EntityRef::parse_with_defaults(text, Some(default_kind), namespace).ok())
            .map(|entity_ref| entity_ref.to_string())
    };
    let search_text =
        [Some(entity.metadata.name.as_str()), entity.metadata.title.as_deref(), entity.metadata.description.as_deref()]
            .into_iter()
            .flatten()
            .chain(entity.metadata.tags.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
    TypedColumns {
        kind: entity.kind.to_ascii_lowercase(),
        owner_ref: reference("owner", "Group"),
        lifecycle: entity.spec_str("lifecycle").map(str::to_lowercase),
        spec_type: entity.spec_str("type").map(str::to_lowercase),
        system_ref: reference("system", "System"),
        search_text,
    }
}

#[allow(clippy::too_many_arguments)]
async fn insert_entity(
    txn: &DatabaseTransaction,
    entity: &Entity,
    body: &Value,
    uid: &str,
    etag: &str,
    provider: &str,
    location: Option<&str>,
    now: chrono::DateTime<Utc>,
) -> Result<i64, StoreError> {
    let columns = typed_columns(entity);
    let row = entity_row::ActiveModel {
        entity_ref: Set(entity.entity_ref().to_string()),
        kind: Set(columns.kind),
        namespace: Set(entity.metadata.namespace.to_ascii_lowercase()),
        name: Set(entity.metadata.name.to_ascii_lowercase()),
        uid: Set(uid.to_owned()),
        etag: Set(etag.to_owned()),
        body: Set(body.clone()),
        owner_ref: Set(columns.owner_ref),
        lifecycle: Set(columns.lifecycle),
        spec_type: Set(columns.spec_type),
        system_ref: Set(columns.system_ref),
        title: Set(entity.metadata.title.clone()),
        search_text: Set(columns.search_text),
        provider: Set(provider.to_owned()),
        location_key: Set(location.map(str::to_owned)),
        errors: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    };
    Ok(entity_row::Entity::insert(row).exec(txn).await?.last_insert_id)
}

async fn clear_index(txn: &DatabaseTransaction, id: i64) -> Result<(), StoreError> {
    relation_row::Entity::delete_many().filter(relation_row::Column::OriginId.eq(id)).exec(txn).await?;
    facet_row::Entity::delete_many().filter(facet_row::Column::EntityId.eq(id)).exec(txn).await?;
    Ok(())
}

/// Writes the entity's relation edges (both directions) and facet rows.
async fn write_index(txn: &DatabaseTransaction, id: i64, entity: &Entity) -> Result<(), StoreError> {
    let relations = derive_relations(entity).into_iter().map(|edge| relation_row::ActiveModel {
        origin_id: Set(id),
        source_ref: Set(edge.source.to_string()),
        relation_type: Set(edge.relation_type.as_str().to_owned()),
        target_ref: Set(edge.target.to_string()),
        ..Default::default()
    });
    relation_row::Entity::insert_many(relations).exec(txn).await?;
    let facets = facet_pairs(entity).into_iter().map(|(key, value)| facet_row::ActiveModel {
        entity_id: Set(id),
        key: Set(key),
        value: Set(value),
        ..Default::default()
    });
    facet_row::Entity::insert_many(facets).exec(txn).await?;
    Ok(())
}

/// The (key, value) pairs of the facet index: kind, namespace, name, tags,
/// labels, annotations and scalar spec fields, keyed by their dotted path.
pub(crate) fn facet_pairs(entity: &Entity) -> Vec<(String, String)> {
    let metadata = &entity.metadata;
    let mut pairs = vec![
        ("kind".to_owned(), entity.kind.clone()),
        ("metadata.namespace".to_owned(), metadata.namespace.clone()),
        ("metadata.name".to_owned(), metadata.name.clone()),
    ];
    pairs.extend(metadata.tags.iter().map(|tag| ("metadata.tags".to_owned(), tag.clone())));
    pairs.extend(metadata.labels.iter().map(|(key, value)| (format!("metadata.labels.{key}"), value.clone())));
    pairs
        .extend(metadata.annotations.iter().map(|(key, value)| (format!("metadata.annotations.{key}"), value.clone())));
    for (key, value) in &entity.spec {
        flatten(&format!("spec.{key}"), value, 1, &mut pairs);
    }
    pairs.retain(|(_, value)| value.chars().count() <= MAX_FACET_VALUE_CHARS);
    pairs.sort();
    pairs.dedup();
    pairs
}

fn flatten(path: &str, value: &Value, depth: usize, pairs: &mut Vec<(String, String)>) {
    match value {
        Value::String(text) => pairs.push((path.to_owned(), text.clone())),
        Value::Bool(flag) => pairs.push((path.to_owned(), flag.to_string())),
        Value::Number(number) => pairs.push((path.to_owned(), number.to_string())),
        Value::Array(items) => {
            for item in items {
                if !item.is_array() && !item.is_object() {
                    flatten(path, item, depth, pairs);
                }
            }
        }
        Value::Object(map) if depth < MAX_FACET_DEPTH => {
            for (key, value) in map {
                flatten(&format!("{path}.{key}"), value, depth + 1, pairs);
            }
        }
        Value::Object(_) | Value::Null => {}
    }
}

async fn log_change(
    txn: &DatabaseTransaction,
    entity_ref: &str,
    change_type: ChangeType,
    etag: Option<&str>,
    body: Option<Value>,
    provider: &str,
    now: chrono::DateTime<Utc>,
) -> Result<(), StoreError> {
    let row = change_row::ActiveModel {
        created_at: Set(now),
        entity_ref: Set(entity_ref.to_owned()),
        change_type: Set(change_type.as_str().to_owned()),
        etag: Set(etag.map(str::to_owned)),
        body: Set(body),
        provider: Set(provider.to_owned()),
        ..Default::default()
    };
    change_row::Entity::insert(row).exec(txn).await?;
    Ok(())
}

async fn record_conflict(
    txn: &DatabaseTransaction,
    entity_ref: &str,
    owner: &str,
    owner_location: Option<String>,
    claimant: &str,
    claimant_location: Option<String>,
) -> Result<(), StoreError> {
    tracing::warn!(entity_ref, owner, claimant, "entity claimed by two sources");
    let row = conflict_row::ActiveModel {
        entity_ref: Set(entity_ref.to_owned()),
        owner_provider: Set(owner.to_owned()),
        owner_location: Set(owner_location),
        claimant_provider: Set(claimant.to_owned()),
        claimant_location: Set(claimant_location),
        detected_at: Set(Utc::now()),
        ..Default::default()
    };
    conflict_row::Entity::insert(row)
        .on_conflict_do_nothing_on([conflict_row::Column::EntityRef, conflict_row::Column::ClaimantProvider])
        .exec(txn)
        .await?;
    Ok(())
}
