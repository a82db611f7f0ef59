//! Admission: the policies checked on a provider's snapshot before it is
//! applied. An entity that breaks an `enforce` policy leaves the snapshot
//! for its invalid list (refused with an error naming the policy and rule;
//! a known entity keeps its last good version); one that breaks a `warn`
//! policy stays and carries the violation. A policy that would refuse more
//! than its share of the snapshot is held back, as a mass deletion is:
//! its violations are carried as warnings and reported, so that a wrong
//! policy cannot empty the catalog.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use catalog_domain::EntityRef;
use catalog_store::{
    Catalog, InvalidEntity, PendingEntity, PolicyViolation, ReviewReason, ReviewRequest, SAFETY_VALVE_MIN_ENTITIES,
    Snapshot, StoreError, StoredEntity,
};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::explain::Explanation;
use crate::load::relation_type;
use crate::policy::{Mode, Policy};
use crate::rule::{Evaluation, Reads, RuleOutcome};
use crate::subject::{Relation, Subject};

/// The share of a snapshot an `enforce` policy may refuse when its file
/// does not say (`maxRefusedShare`).
pub const DEFAULT_MAX_REFUSED_SHARE: f64 = 0.2;

/// The admission policies in force, checked on snapshots.
#[derive(Debug)]
pub struct Admission {
    policies: RwLock<Arc<Vec<Policy>>>,
    catalog: Catalog,
    max_refused_share: f64,
}

/// An `enforce` policy held back on one snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldBack {
    pub policy: String,
    /// How many of the snapshot's entities it would have refused.
    pub would_refuse: usize,
    pub of: usize,
}

/// What admission did to one snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdmissionReport {
    /// Entities refused (moved to the snapshot's invalid list).
    pub refused: usize,
    /// Entities admitted with violations.
    pub warned: usize,
    pub held_back: Vec<HeldBack>,
    /// Admitted entities held in the review queue instead (new, or with a
    /// new owner).
    pub queued: usize,
}

impl Admission {
    /// No policies until [`Admission::set_policies`]; `max_refused_share`
    /// for policies that do not set their own.
    pub fn new(catalog: Catalog, max_refused_share: f64) -> Self {
        Self { policies: RwLock::new(Arc::new(Vec::new())), catalog, max_refused_share }
    }

    /// Replaces the policies in force (a reload of their files).
    pub fn set_policies(&self, policies: Vec<Policy>) {
        *self.policies.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policies);
    }

    pub fn policies(&self) -> Arc<Vec<Policy>> {
        Arc::clone(&self.policies.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Checks the snapshot's entities against the policies that apply to
    /// them, refusing and annotating in place. Reads the catalog once, for
    /// the owners and systems the rules read that the snapshot lacks.
    pub async fn admit(&self, snapshot: &mut Snapshot, now: DateTime<Utc>) -> Result<AdmissionReport, StoreError> {
        let policies = self.policies();
        let applicable: Vec<Vec<&Policy>> = snapshot
            .entities
            .iter()
            .map(|item| {
                policies
                    .iter()
                    .filter(|policy| policy.applies(&snapshot.provider, item.location.as_deref(), &item.entity.kind))
                    .collect()
            })
            .collect();
        if applicable.iter().all(Vec::is_empty) {
            return Ok(AdmissionReport::default());
        }
        let reads = Reads::union(policies.iter().map(Policy::reads));
        let (related, envelopes) = self.related(snapshot, &applicable, &reads).await?;

        // Per entity: its violations, each with whether it refuses. The
        // entity is converted to CEL once for every policy that applies.
        let mut found: Vec<Vec<(&Policy, PolicyViolation)>> = Vec::with_capacity(snapshot.entities.len());
        for (index, item) in snapshot.entities.iter().enumerate() {
            let mut violations = Vec::new();
            if !applicable[index].is_empty() {
                let mut subject = Subject::new(serde_json::to_value(&item.entity).unwrap_or(Value::Null), now);
                for (relation, target) in related.get(&index).into_iter().flatten() {
                    subject.related.entry(*relation).or_default().push(envelopes[*target].clone());
                }
                let evaluation = Evaluation::new(&subject, &reads);
                for policy in &applicable[index] {
                    for (rule, outcome) in policy.violations_in(&evaluation) {
                        violations.push((*policy, violation(policy, &rule.id, outcome)));
                    }
                }
            }
            found.push(violations);
        }

        let total = snapshot.entities.len();
        let mut report = AdmissionReport::default();
        let mut held: Vec<&str> = Vec::new();
        for policy in policies.iter().filter(|policy| policy.mode == Mode::Enforce) {
            let would_refuse = found
                .iter()
                .filter(|violations| violations.iter().any(|(breached, _)| breached.id == policy.id))
                .count();
            let share = policy.max_refused_share.unwrap_or(self.max_refused_share);
            if total >= SAFETY_VALVE_MIN_ENTITIES && would_refuse as f64 > share * total as f64 {
                tracing::warn!(
                    provider = %snapshot.provider,
                    policy = %policy.id,
                    would_refuse,
                    of = total,
                    share,
                    "an admission policy would refuse too much of a snapshot: held back, its violations only warn"
                );
                held.push(&policy.id);
                report.held_back.push(HeldBack { policy: policy.id.clone(), would_refuse, of: total });
            }
        }

        let entities = std::mem::take(&mut snapshot.entities);
        for (mut item, violations) in entities.into_iter().zip(found) {
            let mut refusals = Vec::new();
            for (policy, mut violation) in violations {
                let held_back = held.contains(&policy.id.as_str());
                if policy.mode == Mode::Enforce && !held_back {
                    refusals.push(violation.message);
                    continue;
                }
                if held_back {
                    violation.mode = "held-back".to_owned();
                }
                item.violations.push(violation);
            }
            if refusals.is_empty() {
                report.warned += usize::from(!item.violations.is_empty());
                snapshot.entities.push(item);
                continue;
            }
            report.refused += 1;
            let entity_ref = item.entity.entity_ref();
            if let Some(status) =
                snapshot.locations.iter_mut().find(|status| item.location.as_deref() == Some(status.target.as_str()))
            {
                let problem = format!("{entity_ref} refused: {}", refusals.join("; "));
                status.error = Some(match status.error.take() {
                    Some(earlier) => format!("{earlier}\n{problem}"),
                    None => problem,
                });
            }
            snapshot.invalid.push(InvalidEntity { entity_ref, location: item.location, errors: refusals });
        }
        report.queued = self.hold_for_review(snapshot, &policies).await?;
        Ok(report)
    }

    /// Moves the admitted entities a review policy holds (the first that
    /// applies) to the snapshot's pending list: new ones, or known ones
    /// whose owner changes, as the policy asks. One catalog read, for
    /// whether each exists and its owner.
    async fn hold_for_review(&self, snapshot: &mut Snapshot, policies: &[Policy]) -> Result<usize, StoreError> {
        let provider = snapshot.provider.as_str();
        let chosen: Vec<Option<&Policy>> = snapshot
            .entities
            .iter()
            .map(|item| {
                policies.iter().find(|policy| {
                    policy.review.is_some() && policy.applies(provider, item.location.as_deref(), &item.entity.kind)
                })
            })
            .collect();
        if chosen.iter().all(Option::is_none) {
            return Ok(0);
        }
        let refs: Vec<EntityRef> = snapshot
            .entities
            .iter()
            .zip(&chosen)
            .filter(|(_, policy)| policy.is_some())
            .map(|(item, _)| item.entity.entity_ref())
            .collect();
        let stored = self.catalog.owners_of(&refs).await?;
        let mut queued = 0;
        for (item, policy) in std::mem::take(&mut snapshot.entities).into_iter().zip(chosen) {
            let Some((policy, review)) = policy.and_then(|policy| Some((policy, policy.review.as_ref()?))) else {
                snapshot.entities.push(item);
                continue;
            };
            let reason = match stored.get(&item.entity.entity_ref()) {
                None if review.new_entities => Some(ReviewReason::New),
                Some(previous) if review.owner_changes && catalog_store::owner_column(&item.entity) != *previous => {
                    Some(ReviewReason::OwnerChange { previous: previous.clone() })
                }
                _ => None,
            };
            match reason {
                Some(reason) => {
                    queued += 1;
                    let request = ReviewRequest {
                        reason,
                        policy: policy.id.clone(),
                        owner_may_approve: review.owner_members_may_approve,
                    };
                    snapshot.pending.push(PendingEntity { item, request });
                }
                None => snapshot.entities.push(item),
            }
        }
        Ok(queued)
    }

    /// For each entity a policy checks (by index), the owner and system
    /// its rules read, as positions in the envelopes returned beside: from
    /// the snapshot itself when it holds them (a team and its service in
    /// one file), from the catalog otherwise. Each related entity is made
    /// an envelope once, however many entities name it.
    async fn related(
        &self,
        snapshot: &Snapshot,
        applicable: &[Vec<&Policy>],
        reads: &Reads,
    ) -> Result<(HashMap<usize, Vec<(Relation, usize)>>, Vec<Value>), StoreError> {
        let mut targets: Vec<(usize, Relation, EntityRef)> = Vec::new();
        for (index, item) in snapshot.entities.iter().enumerate() {
            if applicable[index].is_empty() {
                continue;
            }
            for stated in item.entity.stated_relations() {
                // A policy reads owner() and system() at most (`Policy::parse`).
                let read =
                    reads.relations.iter().copied().find(|&relation| relation_type(relation) == stated.relation_type);
                let Some(relation) = read else { continue };
                if let Ok(target) = EntityRef::parse(&stated.target_ref) {
                    targets.push((index, relation, target));
                }
            }
        }
        if targets.is_empty() {
            return Ok((HashMap::new(), Vec::new()));
        }
        let in_snapshot: HashMap<EntityRef, usize> =
            snapshot.entities.iter().enumerate().map(|(index, item)| (item.entity.entity_ref(), index)).collect();
        let mut missing: Vec<EntityRef> = targets
            .iter()
            .map(|(_, _, target)| target)
            .filter(|target| !in_snapshot.contains_key(*target))
            .cloned()
            .collect();
        missing.sort();
        missing.dedup();
        let stored: HashMap<EntityRef, StoredEntity> =
            if missing.is_empty() { HashMap::new() } else { self.catalog.entities_by_refs(&missing).await? };
        let mut related: HashMap<usize, Vec<(Relation, usize)>> = HashMap::new();
        let mut envelopes: Vec<Value> = Vec::new();
        let mut made: HashMap<EntityRef, Option<usize>> = HashMap::new();
        for (index, relation, target) in targets {
            let position = match made.get(&target) {
                Some(position) => *position,
                None => {
                    let envelope = match (in_snapshot.get(&target), stored.get(&target)) {
                        (Some(&position), _) => serde_json::to_value(&snapshot.entities[position].entity).ok(),
                        (None, Some(stored)) => Some(stored.raw()?),
                        (None, None) => None,
                    };
                    let position = envelope.map(|envelope| {
                        envelopes.push(envelope);
                        envelopes.len() - 1
                    });
                    made.insert(target, position);
                    position
                }
            };
            if let Some(position) = position {
                related.entry(index).or_default().push((relation, position));
            }
        }
        Ok((related, envelopes))
    }
}

/// A broken rule as the entity carries it, or as its refusal says it.
fn violation(policy: &Policy, rule: &str, outcome: RuleOutcome) -> PolicyViolation {
    let mode = match policy.mode {
        Mode::Warn => "warn",
        Mode::Enforce => "enforce",
    };
    let why = outcome.explanation.as_ref().map(describe).unwrap_or_default();
    PolicyViolation {
        policy: policy.id.clone(),
        rule: rule.to_owned(),
        mode: mode.to_owned(),
        message: format!("admission policy {:?}, rule {rule:?}: {why}", policy.id),
        explanation: outcome
            .explanation
            .and_then(|explanation| serde_json::to_value(explanation).ok())
            .unwrap_or_default(),
    }
}

/// `PATH: expected E, found A`, or the expression in place of a path.
fn describe(explanation: &Explanation) -> String {
    let at = explanation.path.as_deref().unwrap_or(&explanation.expression);
    format!("{at}: expected {}, found {}", explanation.expected, explanation.actual)
}
