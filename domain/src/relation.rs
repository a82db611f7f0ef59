//! Relations between entities: the well-known pairs, and the edges of the
//! catalog graph. Which spec field states which relation is `spec.rs`; the
//! derivation itself is `derivation.rs`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::entity_ref::EntityRef;

/// The relation types Backstage defines, each with its reverse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RelationType {
    OwnedBy,
    OwnerOf,
    PartOf,
    HasPart,
    DependsOn,
    DependencyOf,
    ProvidesApi,
    ApiProvidedBy,
    ConsumesApi,
    ApiConsumedBy,
    MemberOf,
    HasMember,
    ChildOf,
    ParentOf,
}

impl RelationType {
    pub const ALL: [RelationType; 14] = [
        RelationType::OwnedBy,
        RelationType::OwnerOf,
        RelationType::PartOf,
        RelationType::HasPart,
        RelationType::DependsOn,
        RelationType::DependencyOf,
        RelationType::ProvidesApi,
        RelationType::ApiProvidedBy,
        RelationType::ConsumesApi,
        RelationType::ApiConsumedBy,
        RelationType::MemberOf,
        RelationType::HasMember,
        RelationType::ChildOf,
        RelationType::ParentOf,
    ];

    /// The name Backstage uses on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RelationType::OwnedBy => "ownedBy",
            RelationType::OwnerOf => "ownerOf",
            RelationType::PartOf => "partOf",
            RelationType::HasPart => "hasPart",
            RelationType::DependsOn => "dependsOn",
            RelationType::DependencyOf => "dependencyOf",
            RelationType::ProvidesApi => "providesApi",
            RelationType::ApiProvidedBy => "apiProvidedBy",
            RelationType::ConsumesApi => "consumesApi",
            RelationType::ApiConsumedBy => "apiConsumedBy",
            RelationType::MemberOf => "memberOf",
            RelationType::HasMember => "hasMember",
            RelationType::ChildOf => "childOf",
            RelationType::ParentOf => "parentOf",
        }
    }

    /// The same edge seen from the other end.
    pub fn reverse(self) -> RelationType {
        match self {
            RelationType::OwnedBy => RelationType::OwnerOf,
            RelationType::OwnerOf => RelationType::OwnedBy,
            RelationType::PartOf => RelationType::HasPart,
            RelationType::HasPart => RelationType::PartOf,
            RelationType::DependsOn => RelationType::DependencyOf,
            RelationType::DependencyOf => RelationType::DependsOn,
            RelationType::ProvidesApi => RelationType::ApiProvidedBy,
            RelationType::ApiProvidedBy => RelationType::ProvidesApi,
            RelationType::ConsumesApi => RelationType::ApiConsumedBy,
            RelationType::ApiConsumedBy => RelationType::ConsumesApi,
            RelationType::MemberOf => RelationType::HasMember,
            RelationType::HasMember => RelationType::MemberOf,
            RelationType::ChildOf => RelationType::ParentOf,
            RelationType::ParentOf => RelationType::ChildOf,
        }
    }
}

impl fmt::Display for RelationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RelationType {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RelationType::ALL
            .into_iter()
            .find(|relation_type| relation_type.as_str() == text)
            .ok_or_else(|| format!("unknown relation type {text:?}"))
    }
}

/// An outgoing relation as it appears in an entity's `relations` list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relation {
    #[serde(rename = "type")]
    pub relation_type: RelationType,
    pub target_ref: String,
}

/// One directed edge of the catalog graph.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelationEdge {
    pub source: EntityRef,
    pub relation_type: RelationType,
    pub target: EntityRef,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_relation_type_reverses_to_its_pair() {
        for relation_type in RelationType::ALL {
            assert_eq!(relation_type.reverse().reverse(), relation_type);
            assert_ne!(relation_type.reverse(), relation_type);
            assert_eq!(relation_type.as_str().parse::<RelationType>().unwrap(), relation_type);
        }
    }
}
