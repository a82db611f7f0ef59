//! What the store returns: domain entities with the catalog's own bookkeeping.

use std::collections::HashMap;

use catalog_domain::{Entity, EntityRef};
use chrono::{DateTime, Utc};

use crate::error::StoreError;

/// An entity as the catalog holds it: the last good version, where it came
/// from, and the problems of its latest ingestion.
#[derive(Clone, Debug)]
pub struct StoredEntity {
    pub id: i64,
    pub entity_ref: EntityRef,
    /// The entity with metadata.uid and metadata.etag set by the catalog.
    pub entity: Entity,
    pub provider: String,
    pub location: Option<String>,
    /// Problems of the latest version the source offered (empty when it was valid).
    pub errors: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What [`crate::Catalog::related_entities`] found: edges as (source ref,
/// relation type, target id) in source, type and target-ref order (the
/// refs' text order), and each target once.
#[derive(Debug, Default)]
pub struct Related {
    pub edges: Vec<(EntityRef, catalog_domain::RelationType, i64)>,
    pub targets: std::collections::HashMap<i64, StoredEntity>,
}

/// One edge of the catalog graph as stored, with whether its target exists.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoredRelation {
    pub source_ref: EntityRef,
    pub relation_type: catalog_domain::RelationType,
    pub target_ref: EntityRef,
}

/// A location a provider read, with the outcome of its last read.
#[derive(Clone, Debug)]
pub struct LocationRecord {
    pub id: i64,
    pub provider: String,
    pub target: String,
    pub error: Option<String>,
    pub n_entities: i64,
    /// When the outcome of reading it last changed (an unchanged re-read writes nothing).
    pub updated_at: DateTime<Utc>,
}

/// Two sources claimed the same ref: the owner keeps it, the claimant is refused.
#[derive(Clone, Debug)]
pub struct ConflictRecord {
    pub entity_ref: EntityRef,
    pub owner_provider: String,
    pub owner_location: Option<String>,
    pub claimant_provider: String,
    pub claimant_location: Option<String>,
    pub detected_at: DateTime<Utc>,
}

/// A ref the store itself wrote, read back from a ref column: text that is
/// not one is a corrupt row.
pub(crate) fn stored_ref(text: &str) -> Result<EntityRef, StoreError> {
    EntityRef::from_stored(text)
        .map_err(|error| StoreError::Corrupt { entity_ref: text.to_owned(), message: error.to_string() })
}

/// Refs as the text their column holds, to bind.
pub(crate) fn texts(refs: &[EntityRef]) -> Vec<String> {
    refs.iter().map(ToString::to_string).collect()
}

/// Refs by their text, to answer with the refs asked about rather than
/// build each again from a row.
pub(crate) fn by_text(refs: &[EntityRef]) -> HashMap<&str, &EntityRef> {
    refs.iter().map(|entity_ref| (entity_ref.as_str(), entity_ref)).collect()
}

/// The asked ref a row names (a row the statement selected by those refs).
pub(crate) fn asked_ref(asked: &HashMap<&str, &EntityRef>, text: &str) -> Result<EntityRef, StoreError> {
    match asked.get(text) {
        Some(entity_ref) => Ok((*entity_ref).clone()),
        None => stored_ref(text),
    }
}

/// What happened to an entity, as recorded in the change log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Updated,
    Removed,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "added",
            ChangeType::Updated => "updated",
            ChangeType::Removed => "removed",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "added" => Some(ChangeType::Added),
            "updated" => Some(ChangeType::Updated),
            "removed" => Some(ChangeType::Removed),
            _ => None,
        }
    }
}

/// One row of the change log.
#[derive(Clone, Debug)]
pub struct Change {
    pub sequence: i64,
    pub time: DateTime<Utc>,
    pub entity_ref: EntityRef,
    pub change_type: ChangeType,
    /// The entity after the change; `None` when it was removed.
    pub entity: Option<serde_json::Value>,
    /// For a removal, the last version of the removed entity.
    pub previous: Option<serde_json::Value>,
    /// The field paths an update changed; empty for additions and removals.
    pub changed_fields: Vec<String>,
    pub provider: String,
}

impl Change {
    /// The version to match filters against: the entity after the change, or
    /// for a removal the version it removed.
    pub fn latest_version(&self) -> Option<&serde_json::Value> {
        self.entity.as_ref().or(self.previous.as_ref())
    }
}

/// The values of one field with how many matching entities have each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facet {
    pub field: String,
    pub values: Vec<(String, u64)>,
}
