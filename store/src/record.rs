//! What the store returns: domain entities with the catalog's own bookkeeping.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use catalog_domain::{Entity, EntityRef};
use chrono::{DateTime, Utc};

use crate::body_cache::KeepIn;
use crate::error::StoreError;

/// An entity as the catalog holds it: the last good version, where it came
/// from, and the problems of its latest ingestion.
///
/// Its body stays the JSON text the row holds until a field of it is read:
/// a request that selects refs, relations or bookkeeping never decodes it,
/// and one that does decodes it once, straight into an [`Entity`]. The
/// body was validated when it was written, so reading it checks nothing
/// again and derives nothing: relations are derived only for [`raw`].
///
/// [`raw`]: StoredEntity::raw
#[derive(Clone, Debug)]
pub struct StoredEntity {
    pub id: i64,
    pub entity_ref: EntityRef,
    pub(crate) body: Body,
    pub provider: String,
    pub location: Option<String>,
    /// Problems of the latest version the source offered (empty when it was valid).
    pub errors: Vec<String>,
    /// The admission policies it breaks but was admitted with (`warn`
    /// mode, or an `enforce` policy held back): empty when none.
    pub violations: Vec<PolicyViolation>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A rule of an admission policy that an entity breaks, as the entity
/// carries it. The store keeps it as the ingestion's admission step made
/// it; `explanation` is the rule's explanation as data.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyViolation {
    pub policy: String,
    pub rule: String,
    /// `warn`, or `held-back` for an `enforce` policy that would have
    /// refused too many of its provider's entities.
    pub mode: String,
    pub message: String,
    #[serde(default)]
    pub explanation: serde_json::Value,
}

/// An entity body: its stored JSON text, decoded at most once (and then
/// kept in the store's body cache, `keep`); the entity itself (a cached
/// body, a change-log version); or not read with the row (see
/// [`TargetBodies::Skip`]), filled in from a whole read when asked for.
#[derive(Clone, Debug)]
pub(crate) enum Body {
    Text { text: Box<str>, decoded: OnceLock<Result<Arc<Entity>, String>>, keep: Option<KeepIn> },
    Decoded(Arc<Entity>),
    Unread(OnceLock<Arc<Entity>>),
}

/// Whether a read of relation targets reads their bodies. A target is
/// often wanted for its ref alone (`owner { entityRef }`), and its body is
/// most of what the database has to print and send; one read without
/// bodies is filled in by [`StoredEntity::fill_body`] from a whole read,
/// for the targets whose fields are asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetBodies {
    Read,
    Skip,
}

impl Body {
    /// A body as the row holds it, kept in `keep` once decoded.
    pub(crate) fn text(text: String, keep: Option<KeepIn>) -> Self {
        Body::Text { text: text.into_boxed_str(), decoded: OnceLock::new(), keep }
    }

    /// A body not read with its row.
    pub(crate) fn unread() -> Self {
        Body::Unread(OnceLock::new())
    }
}

impl StoredEntity {
    /// A stored entity around an entity already decoded: a version read from
    /// the change log, as of `time`, with no row of its own (id 0).
    pub fn decoded(entity_ref: EntityRef, entity: Entity, provider: String, time: DateTime<Utc>) -> Self {
        Self {
            id: 0,
            entity_ref,
            body: Body::Decoded(Arc::new(entity)),
            provider,
            location: None,
            errors: Vec::new(),
            violations: Vec::new(),
            created_at: time,
            updated_at: time,
        }
    }

    /// The entity, with metadata.uid and metadata.etag set by the catalog;
    /// its `relations` are not derived (see [`StoredEntity::raw`]). Decoded
    /// on first use; a body that does not decode (a row edited by hand) is
    /// `Corrupt`, every time it is asked for.
    pub fn entity(&self) -> Result<&Entity, StoreError> {
        self.shared().map(|entity| &**entity)
    }

    /// [`StoredEntity::entity`], shared: a body cached or filled in is the
    /// same allocation, not a copy.
    fn shared(&self) -> Result<&Arc<Entity>, StoreError> {
        let decoded = match &self.body {
            Body::Decoded(entity) => return Ok(entity),
            Body::Unread(filled) => {
                return filled.get().ok_or_else(|| StoreError::BodyNotRead { entity_ref: self.entity_ref.to_string() });
            }
            Body::Text { text, decoded, keep } => decoded.get_or_init(|| {
                let entity = Arc::new(serde_json::from_str::<Entity>(text).map_err(|error| error.to_string())?);
                if let Some(keep) = keep {
                    keep.cache.insert(self.entity_ref.as_str(), self.id, &keep.etag, entity.clone());
                }
                Ok(entity)
            }),
        };
        decoded.as_ref().map_err(|message| StoreError::Corrupt {
            entity_ref: self.entity_ref.to_string(),
            message: message.clone(),
        })
    }

    /// Whether [`StoredEntity::entity`] has a body to answer from: false for
    /// a relation target read without it, until filled in.
    pub fn has_body(&self) -> bool {
        !matches!(&self.body, Body::Unread(filled) if filled.get().is_none())
    }

    /// The entity, filling a body not read with the row from `whole`, a
    /// whole read of the same entity (a body it already has is kept).
    pub fn fill_body(&self, whole: &StoredEntity) -> Result<&Entity, StoreError> {
        match &self.body {
            Body::Unread(filled) if filled.get().is_none() && whole.entity_ref == self.entity_ref => {
                let entity = whole.shared()?;
                Ok(filled.get_or_init(|| entity.clone())).map(|entity| &**entity)
            }
            _ => self.entity(),
        }
    }

    /// The whole entity as Backstage serves it: the body with the relations
    /// its spec states.
    pub fn raw(&self) -> Result<serde_json::Value, StoreError> {
        let entity = self.entity()?;
        let corrupt = |error: serde_json::Error| StoreError::Corrupt {
            entity_ref: self.entity_ref.to_string(),
            message: error.to_string(),
        };
        let mut value = serde_json::to_value(entity).map_err(corrupt)?;
        // Where serializing an entity with them puts them: after the spec.
        let relations = entity.stated_relations();
        if let (Some(object), false) = (value.as_object_mut(), relations.is_empty()) {
            object.insert("relations".to_owned(), serde_json::to_value(relations).map_err(corrupt)?);
        }
        Ok(value)
    }
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
    /// When it was last read in full, to the hour; None before that.
    pub read_at: Option<DateTime<Utc>>,
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

/// Violations as the column holds them: null for none.
pub(crate) fn stored_violations(violations: &[PolicyViolation]) -> Option<serde_json::Value> {
    (!violations.is_empty()).then(|| serde_json::to_value(violations).unwrap_or(serde_json::Value::Null))
}
