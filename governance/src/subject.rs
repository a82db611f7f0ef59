//! What one evaluation sees: the entity, what it relates to, the facts
//! providers hold about it, and the clock. The caller fills only what the
//! rules read ([`crate::Reads`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::Value;

/// What an entity relates to, as a rule reads it: one function each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Relation {
    /// `owner()`: the entity `spec.owner` resolves to, or `null`.
    Owner,
    /// `system()`: the entity `spec.system` resolves to, or `null`.
    System,
    /// `dependencies()`: what it depends on (`dependsOn`).
    Dependencies,
    /// `dependents()`: what depends on it (`dependencyOf`).
    Dependents,
    /// `members()`: a Group's members (`hasMember`).
    Members,
}

impl Relation {
    pub const ALL: [Relation; 5] =
        [Relation::Owner, Relation::System, Relation::Dependencies, Relation::Dependents, Relation::Members];

    /// The CEL function that reads it.
    pub fn function(self) -> &'static str {
        match self {
            Relation::Owner => "owner",
            Relation::System => "system",
            Relation::Dependencies => "dependencies",
            Relation::Dependents => "dependents",
            Relation::Members => "members",
        }
    }

    /// Whether the function answers one entity (or `null`) rather than a list.
    pub(crate) fn is_single(self) -> bool {
        matches!(self, Relation::Owner | Relation::System)
    }

    pub(crate) fn of_function(name: &str) -> Option<Relation> {
        Relation::ALL.into_iter().find(|relation| relation.function() == name)
    }
}

/// `fact('name')`: a fact's value; missing or expired, the rule is `UNKNOWN`.
pub const FACT_FUNCTION: &str = "fact";

/// A fact the catalog itself holds about every stored entity: when its
/// content last changed (RFC 3339), as `fact('catalog.updatedAt')` reads it
/// (stale detection's `unchanged`).
pub const UPDATED_AT_FACT: &str = "catalog.updatedAt";

/// The other fact the catalog holds: when the entity's location was last
/// read in full by its provider (RFC 3339, to the hour), null when no read
/// is on record (stale detection's `not-seen`).
pub const SEEN_AT_FACT: &str = "catalog.seenAt";

/// A fact a provider holds about an entity (a PagerDuty service, a
/// repository's `archived` flag), with when it was observed and how long it
/// stays true enough to judge by.
#[derive(Clone, Debug, PartialEq)]
pub struct Fact {
    pub value: Value,
    pub observed_at: DateTime<Utc>,
    pub ttl: Duration,
}

impl Fact {
    /// Whether the fact can still be judged by at `now`.
    pub fn is_current(&self, now: DateTime<Utc>) -> bool {
        now - self.observed_at <= self.ttl
    }
}

/// Where facts come from: the providers' in-memory views, asked for the
/// facts a scorecard's rules read about one entity. A fact the source does
/// not know (its provider is not configured or has not read yet) is left
/// out, which makes the rules that need it `UNKNOWN`.
pub trait FactSource: Send + Sync {
    fn facts(&self, entity: &Value, names: &std::collections::BTreeSet<String>) -> BTreeMap<String, Fact>;
}

/// One entity as its rules see it.
#[derive(Clone, Debug, Default)]
pub struct Subject {
    /// The entity's envelope (apiVersion, kind, metadata, spec, relations).
    pub entity: Value,
    /// The envelopes of the entities it relates to, per relation; a relation
    /// absent here reads as none (an unresolved owner is `null`).
    pub related: BTreeMap<Relation, Vec<Value>>,
    /// What the related entities relate to, for a rule that calls a relation
    /// function on one (`members(owner())`): per relation, by the related
    /// entity's ref (`group:default/team-a`, lower-case).
    pub nested: BTreeMap<Relation, BTreeMap<String, Vec<Value>>>,
    /// Facts by name (`github.archived`, `pagerduty.service`).
    pub facts: BTreeMap<String, Fact>,
    pub now: DateTime<Utc>,
}

impl Subject {
    pub fn new(entity: Value, now: DateTime<Utc>) -> Self {
        Self { entity, related: BTreeMap::new(), nested: BTreeMap::new(), facts: BTreeMap::new(), now }
    }

    pub fn with_related(mut self, relation: Relation, entities: Vec<Value>) -> Self {
        self.related.insert(relation, entities);
        self
    }

    /// What the related entity `of` (its ref) relates to through `relation`.
    pub fn with_nested(mut self, relation: Relation, of: &str, entities: Vec<Value>) -> Self {
        self.nested.entry(relation).or_default().insert(of.to_ascii_lowercase(), entities);
        self
    }

    pub fn with_fact(mut self, name: &str, fact: Fact) -> Self {
        self.facts.insert(name.to_owned(), fact);
        self
    }

    /// The entity's `kind:namespace/name`, lowercased, for exemptions and
    /// messages; empty when the envelope lacks a kind or name.
    pub fn entity_ref(&self) -> String {
        ref_of(&self.entity)
    }
}

/// An envelope's `kind:namespace/name`, lower-case; empty without a kind or name.
pub(crate) fn ref_of(entity: &Value) -> String {
    let text = |pointer: &str| entity.pointer(pointer).and_then(Value::as_str).unwrap_or_default();
    let namespace = Some(text("/metadata/namespace")).filter(|namespace| !namespace.is_empty()).unwrap_or("default");
    let (kind, name) = (text("/kind"), text("/metadata/name"));
    if kind.is_empty() || name.is_empty() {
        return String::new();
    }
    format!("{kind}:{namespace}/{name}").to_ascii_lowercase()
}
