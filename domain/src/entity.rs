//! The Backstage entity envelope as it is stored and served: every known field
//! typed, every unknown metadata field kept in `extra`, the spec kept whole.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::entity_ref::{DEFAULT_NAMESPACE, EntityRef};
use crate::relation::Relation;

/// A catalog entity. Deserialize it only through [`crate::validate`], which checks
/// the rules first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entity {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub spec: Map<String, Value>,
    /// Output only: derived from the spec, never taken from input.
    #[serde(default, skip_deserializing, skip_serializing_if = "Vec::is_empty")]
    pub relations: Vec<Relation>,
    /// Output only: processing results attached by the catalog.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

/// The metadata block. Fields the catalog does not know are kept in `extra`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}

/// A link shown on the entity's page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub link_type: Option<String>,
}

impl Entity {
    /// The canonical reference of this entity.
    pub fn entity_ref(&self) -> EntityRef {
        EntityRef::new(&self.kind, &self.metadata.namespace, &self.metadata.name)
    }

    /// A content hash of what the author wrote (kind, metadata except uid and
    /// etag, spec). Two ingestions of the same content give the same etag, so an
    /// unchanged entity is never rewritten.
    pub fn content_hash(&self) -> String {
        let mut metadata = self.metadata.clone();
        metadata.uid = None;
        metadata.etag = None;
        let content = serde_json::json!({
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": metadata,
            "spec": self.spec,
        });
        let digest = Sha256::digest(content.to_string().as_bytes());
        digest.iter().take(16).map(|byte| format!("{byte:02x}")).collect()
    }

    /// A spec field as text, when it is one.
    pub fn spec_str(&self, field: &str) -> Option<&str> {
        self.spec.get(field).and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entity(description: &str) -> Entity {
        crate::validate(&json!({
            "apiVersion": "backstage.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": "a", "description": description, "custom": {"kept": true}},
            "spec": {"type": "service", "lifecycle": "production", "owner": "team-a", "x-extra": 1}
        }))
        .unwrap()
    }

    #[test]
    fn unknown_metadata_and_spec_fields_are_kept() {
        let entity = entity("d");
        assert_eq!(entity.metadata.extra["custom"], json!({"kept": true}));
        assert_eq!(entity.spec["x-extra"], json!(1));
        let round_trip = serde_json::to_value(&entity).unwrap();
        assert_eq!(round_trip["metadata"]["custom"], json!({"kept": true}));
    }

    #[test]
    fn the_content_hash_changes_with_content_and_ignores_uid_and_etag() {
        let mut first = entity("one");
        let second = entity("two");
        assert_ne!(first.content_hash(), second.content_hash());
        let before = first.content_hash();
        first.metadata.uid = Some("u".into());
        first.metadata.etag = Some("e".into());
        assert_eq!(before, first.content_hash());
    }

    #[test]
    fn a_missing_namespace_is_the_default_namespace() {
        assert_eq!(entity("d").entity_ref().to_string(), "component:default/a");
    }
}
