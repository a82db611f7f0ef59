//! Subjects read from the store: stored entities made [`Subject`]s with the
//! related entities their scorecards' rules read, in one statement per
//! batch. Shared by the preview and the evaluator, so both see an entity the
//! same way.

use std::collections::{BTreeMap, BTreeSet};

use catalog_domain::{EntityRef, RelationType};
use catalog_store::{Catalog, StoreError, StoredEntity, TargetBodies};
use chrono::{DateTime, Utc};

use crate::rule::Reads;
use crate::subject::{Fact, FactSource, Relation, SEEN_AT_FACT, Subject, UPDATED_AT_FACT};

/// One entity ready for its rules, with the refs it read through relations
/// (a change to one of them makes its results stale).
pub(crate) struct Loaded {
    pub entity_ref: EntityRef,
    pub subject: Subject,
    pub inputs: Vec<Input>,
}

/// An entity a subject's rules may read: through which relation, and
/// whether as a related entity's relation (`members(owner())`).
#[derive(Clone, Debug)]
pub(crate) struct Input {
    pub relation: Relation,
    pub nested: bool,
    pub entity_ref: EntityRef,
}

impl Input {
    /// Whether rules reading `reads` read it.
    pub fn read_by(&self, reads: &Reads) -> bool {
        if self.nested { reads.nested.contains(&self.relation) } else { reads.relations.contains(&self.relation) }
    }
}

/// Related envelopes by relation function, as a [`Subject`] holds them.
type Related = BTreeMap<Relation, Vec<serde_json::Value>>;

/// The store's relation for each relation function.
pub(crate) fn relation_type(relation: Relation) -> RelationType {
    match relation {
        Relation::Owner => RelationType::OwnedBy,
        Relation::System => RelationType::PartOf,
        Relation::Dependencies => RelationType::DependsOn,
        Relation::Dependents => RelationType::DependencyOf,
        Relation::Members => RelationType::HasMember,
    }
}

/// `entities` as subjects at `now`, those `keep` accepts, with what they
/// relate to through the relations `reads` names (read only when there are
/// any), for its nested reads what those related entities relate to, and
/// the facts it reads from `facts` (none without a source).
pub(crate) async fn subjects(
    catalog: &Catalog,
    entities: impl IntoIterator<Item = &StoredEntity>,
    reads: &Reads,
    facts: Option<&dyn FactSource>,
    now: DateTime<Utc>,
    keep: impl Fn(&Subject) -> bool,
) -> Result<Vec<Loaded>, StoreError> {
    let relations = &reads.relations;
    let entities: Vec<&StoredEntity> = entities.into_iter().collect();
    // The catalog's other fact: when each entity's location was last read
    // in full. One read for the batch, only when a rule asks.
    let read_at = if reads.facts.contains(SEEN_AT_FACT) {
        let locations: Vec<(String, String)> =
            entities.iter().filter_map(|stored| Some((stored.provider.clone(), stored.location.clone()?))).collect();
        catalog.locations_read_at(&locations).await?
    } else {
        Default::default()
    };
    let mut loaded = Vec::new();
    for stored in entities {
        let mut subject = Subject::new(stored.raw()?, now);
        if keep(&subject) {
            if let Some(source) = facts.filter(|_| !reads.facts.is_empty()) {
                subject.facts = source.facts(&subject.entity, &reads.facts);
            }
            if reads.facts.contains(UPDATED_AT_FACT) {
                // The catalog's own fact: current whenever it is read.
                let value = serde_json::Value::String(stored.updated_at.to_rfc3339());
                subject.facts.insert(
                    UPDATED_AT_FACT.to_owned(),
                    Fact { value, observed_at: now, ttl: chrono::Duration::zero() },
                );
            }
            if reads.facts.contains(SEEN_AT_FACT) {
                // Null for an entity whose location has no full read on
                // record (a provider without locations): nothing to say.
                let seen = stored
                    .location
                    .as_ref()
                    .and_then(|location| read_at.get(&(stored.provider.clone(), location.clone())));
                let value = seen.map_or(serde_json::Value::Null, |at| serde_json::Value::String(at.to_rfc3339()));
                subject
                    .facts
                    .insert(SEEN_AT_FACT.to_owned(), Fact { value, observed_at: now, ttl: chrono::Duration::zero() });
            }
            loaded.push(Loaded { entity_ref: stored.entity_ref.clone(), subject, inputs: Vec::new() });
        }
    }
    if relations.is_empty() || loaded.is_empty() {
        return Ok(loaded);
    }
    let types: Vec<RelationType> = relations.iter().map(|&relation| relation_type(relation)).collect();
    let sources: Vec<EntityRef> = loaded.iter().map(|loaded| loaded.entity_ref.clone()).collect();
    let related = catalog.related_entities(&sources, &types, TargetBodies::Read).await?;
    let mut by_source: BTreeMap<&EntityRef, (Related, Vec<Input>)> = BTreeMap::new();
    for (source, found_type, target) in &related.edges {
        let Some(relation) = relations.iter().copied().find(|&relation| relation_type(relation) == *found_type) else {
            continue;
        };
        let Some(target) = related.targets.get(target) else { continue };
        let (by_relation, inputs) = by_source.entry(source).or_default();
        by_relation.entry(relation).or_default().push(target.raw()?);
        inputs.push(Input { relation, nested: false, entity_ref: target.entity_ref.clone() });
    }
    for loaded in &mut loaded {
        if let Some((related, inputs)) = by_source.remove(&loaded.entity_ref) {
            loaded.subject.related = related;
            loaded.inputs = inputs;
        }
    }
    if !reads.nested.is_empty() {
        add_nested(catalog, &mut loaded, &reads.nested).await?;
    }
    Ok(loaded)
}

/// What the subjects' related entities relate to through `nested`, one
/// statement for all of them; the entities read so become inputs too.
async fn add_nested(catalog: &Catalog, loaded: &mut [Loaded], nested: &BTreeSet<Relation>) -> Result<(), StoreError> {
    let mut sources: Vec<EntityRef> =
        loaded.iter().flat_map(|loaded| loaded.inputs.iter().map(|input| input.entity_ref.clone())).collect();
    sources.sort();
    sources.dedup();
    if sources.is_empty() {
        return Ok(());
    }
    let types: Vec<RelationType> = nested.iter().map(|&relation| relation_type(relation)).collect();
    let related = catalog.related_entities(&sources, &types, TargetBodies::Read).await?;
    let mut by_source: BTreeMap<(&EntityRef, Relation), Vec<&StoredEntity>> = BTreeMap::new();
    for (source, found_type, target) in &related.edges {
        let relation = nested.iter().copied().find(|&relation| relation_type(relation) == *found_type);
        if let (Some(relation), Some(target)) = (relation, related.targets.get(target)) {
            by_source.entry((source, relation)).or_default().push(target);
        }
    }
    for loaded in loaded.iter_mut() {
        let mut reached = Vec::new();
        for input in &loaded.inputs {
            for &relation in nested {
                let Some(targets) = by_source.get(&(&input.entity_ref, relation)) else { continue };
                let envelopes = targets.iter().map(|target| target.raw()).collect::<Result<Vec<_>, _>>()?;
                reached.extend(targets.iter().map(|target| Input {
                    relation,
                    nested: true,
                    entity_ref: target.entity_ref.clone(),
                }));
                loaded
                    .subject
                    .nested
                    .entry(relation)
                    .or_default()
                    .insert(input.entity_ref.as_str().to_owned(), envelopes);
            }
        }
        loaded.inputs.extend(reached);
    }
    Ok(())
}
