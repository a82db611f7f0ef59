//! Scorecards applied to the catalog and kept current: every entity they
//! apply to is evaluated once when a scorecard is new or changed, then only
//! the entities a change makes stale are evaluated again, and each result
//! is stored with the time since it has held and, when a level or a rule's
//! status moved, a transition in the history.
//!
//! Which entities a change makes stale: the changed entity itself, unless
//! the change is an update to fields none of the scorecard's rules read
//! (nor `appliesTo`); and, when a rule reads relations, every entity that
//! read it through a relation at its last evaluation (a Group deleted makes
//! each component it owned stale) and every entity that relates to it now
//! (a new dependent makes its dependency's `dependents()` stale). Results
//! that can change with time alone (an `enforceFrom` date, an expiring
//! exemption, a rule reading `now`) are evaluated again when that time
//! comes or periodically.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use catalog_domain::{EntityRef, RelationType};
use catalog_store::{
    Catalog, Change, ChangeFeed, ChangeType, ListQuery, NewScore, OrderField, ScoreStore, ScoreWrite, ScorecardRecord,
    StoreError, TargetBodies, Transition,
};
use chrono::{DateTime, Utc};

use crate::load::{Loaded, relation_type};
use crate::results::{RuleTransition, StoredResult, Summary};
use crate::rule::{Evaluation, Reads, RuleStatus};
use crate::scorecard::{Score, Scorecard, ScorecardError};
use crate::subject::FactSource;

/// Entities read per statement.
const PAGE: u64 = 500;
/// Change-log rows read per statement while catching up.
const CATCH_UP_BATCH: u64 = 1_000;
/// Past this many changes in one catch-up, evaluating everything again is
/// cheaper than following them one by one (a bulk ingestion).
const REEVALUATE_AFTER_CHANGES: usize = 20_000;

/// A scorecard with the text it was read from and a version of that text.
#[derive(Clone, Debug)]
pub struct LoadedScorecard {
    pub scorecard: Arc<Scorecard>,
    pub source: String,
    /// Changes whenever the source does.
    pub version: String,
}

impl LoadedScorecard {
    pub fn parse(source: &str) -> Result<Self, ScorecardError> {
        let scorecard = Scorecard::parse(source)?;
        Ok(LoadedScorecard { scorecard: Arc::new(scorecard), source: source.to_owned(), version: version_of(source) })
    }
}

/// A stable version of a scorecard's text (FNV-1a, 64 bits): stored with its
/// results, so a restart with the same file evaluates nothing again.
pub fn version_of(source: &str) -> String {
    let hash = source
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

/// What a pass of the evaluator did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Entity evaluations (one entity under one scorecard).
    pub evaluated: u64,
    /// Scores written or removed.
    pub written: u64,
    /// Transitions recorded.
    pub transitions: u64,
}

impl std::ops::AddAssign for Pass {
    fn add_assign(&mut self, other: Pass) {
        self.evaluated += other.evaluated;
        self.written += other.written;
        self.transitions += other.transitions;
    }
}

/// An entity's current result under one scorecard, as stored.
#[derive(Clone, Debug)]
struct Current {
    level: Option<String>,
    score: f64,
    results: Vec<StoredResult>,
    /// The entities it read through relations.
    inputs: Vec<EntityRef>,
}

/// A scorecard being applied, with its current results.
struct Applied {
    loaded: LoadedScorecard,
    current: HashMap<EntityRef, Current>,
    /// For each entity, those whose last evaluation read it through a relation.
    readers: HashMap<EntityRef, HashSet<EntityRef>>,
}

impl Applied {
    fn scorecard(&self) -> &Scorecard {
        &self.loaded.scorecard
    }

    fn forget_inputs(&mut self, entity_ref: &EntityRef) {
        let Some(current) = self.current.get(entity_ref) else { return };
        for input in &current.inputs {
            if let Some(readers) = self.readers.get_mut(input) {
                readers.remove(entity_ref);
                if readers.is_empty() {
                    self.readers.remove(input);
                }
            }
        }
    }

    fn set_current(&mut self, entity_ref: EntityRef, current: Option<Current>) {
        self.forget_inputs(&entity_ref);
        match current {
            Some(current) => {
                for input in &current.inputs {
                    self.readers.entry(input.clone()).or_default().insert(entity_ref.clone());
                }
                self.current.insert(entity_ref, current);
            }
            None => {
                self.current.remove(&entity_ref);
            }
        }
    }

    /// Whether `change` can alter this scorecard's result for its own entity.
    fn touched_by(&self, change: &Change) -> bool {
        if change.change_type != ChangeType::Updated {
            return true;
        }
        let reads = self.scorecard().reads();
        if !reads.relations.is_empty() {
            return true;
        }
        // What `appliesTo` looks at, besides what the rules read.
        const APPLIES_TO: [&str; 4] = ["kind", "spec.type", "spec.lifecycle", "metadata.namespace"];
        let read = |field: &str| {
            // `relations` is not among an update's changed fields.
            field.is_empty()
                || field.starts_with("relations")
                || change.changed_fields.iter().any(|changed| overlaps(field, changed))
        };
        reads.fields.iter().any(|field| read(field)) || APPLIES_TO.iter().any(|field| read(field))
    }

    fn summary(&self) -> Summary {
        let mut summary = Summary::empty(self.scorecard());
        for current in self.current.values() {
            summary.count(current.level.as_deref(), current.results.iter().map(StoredResult::counted));
        }
        summary
    }
}

/// Whether a read path and a changed path overlap: one is the other or
/// lies under it.
fn overlaps(read: &str, changed: &str) -> bool {
    let under = |path: &str, parent: &str| {
        path.len() > parent.len() && path.starts_with(parent) && path.as_bytes()[parent.len()] == b'.'
    };
    read == changed || under(read, changed) || under(changed, read)
}

/// Applies scorecards to the catalog and keeps their stored results current
/// from the change log.
pub struct Evaluator {
    catalog: Catalog,
    feed: ChangeFeed,
    scores: ScoreStore,
    applied: Vec<Applied>,
    /// The last change-log sequence followed; None before the first evaluation.
    cursor: Option<i64>,
    /// Where rules that read facts get them; None: they are `UNKNOWN`.
    facts: Option<Arc<dyn FactSource>>,
}

impl Evaluator {
    pub fn new(catalog: Catalog, feed: ChangeFeed, scores: ScoreStore) -> Self {
        Evaluator { catalog, feed, scores, applied: Vec::new(), cursor: None, facts: None }
    }

    /// Reads facts from `source`. Facts change outside the change log, so
    /// scorecards that read any are evaluated again periodically, as those
    /// that read `now` are.
    pub fn with_facts(mut self, source: Arc<dyn FactSource>) -> Self {
        self.facts = Some(source);
        self
    }

    /// Drops what it holds in memory: the next `apply` reads the stored
    /// results again and starts following the change log from its end.
    pub fn forget(&mut self) {
        self.applied.clear();
        self.cursor = None;
    }

    /// The scorecards applied.
    pub fn scorecards(&self) -> impl Iterator<Item = &LoadedScorecard> {
        self.applied.iter().map(|applied| &applied.loaded)
    }

    /// Makes `scorecards` the ones applied: a new or changed scorecard is
    /// evaluated over the whole catalog (keeping, for results that did not
    /// change, the time since they hold); an unchanged one is left as it is;
    /// with `remove_unlisted`, stored scorecards not among them are removed
    /// with their results.
    pub async fn apply(
        &mut self,
        scorecards: Vec<LoadedScorecard>,
        remove_unlisted: bool,
        now: DateTime<Utc>,
    ) -> Result<Pass, StoreError> {
        if self.cursor.is_none() {
            self.cursor = Some(self.feed.latest_sequence().await?);
        }
        let listed: HashSet<String> = scorecards.iter().map(|loaded| loaded.scorecard.id.clone()).collect();
        let stored = self.scores.scorecards().await?;
        if remove_unlisted {
            for record in stored.iter().filter(|record| !listed.contains(&record.id)) {
                tracing::info!(scorecard = %record.id, "a scorecard is no longer configured: its results are removed");
                self.scores.remove_scorecard(&record.id).await?;
            }
            self.applied.retain(|applied| listed.contains(&applied.scorecard().id));
        }
        let mut changed = Vec::new();
        for loaded in scorecards {
            let id = loaded.scorecard.id.clone();
            let position = self.applied.iter().position(|applied| applied.scorecard().id == id);
            if let Some(position) = position
                && self.applied[position].loaded.version == loaded.version
            {
                continue;
            }
            let was_stored = stored.iter().any(|record| record.id == id);
            let mut applied = Applied { loaded, current: HashMap::new(), readers: HashMap::new() };
            if was_stored {
                for score in self.scores.scores_of(&id).await? {
                    let results: Vec<StoredResult> = serde_json::from_value(score.results).unwrap_or_default();
                    applied.current.insert(
                        score.entity_ref,
                        Current { level: score.level, score: score.score, results, inputs: Vec::new() },
                    );
                }
            }
            match position {
                Some(position) => self.applied[position] = applied,
                None => self.applied.push(applied),
            }
            changed.push(id);
        }
        self.evaluate_all(&changed, now).await
    }

    /// Evaluates again every scorecard whose results can have changed with
    /// time alone since `since`: an `enforceFrom` or an exemption's expiry
    /// passed, or a rule reads `now` or a fact.
    pub async fn reevaluate_timed(&mut self, since: DateTime<Utc>, now: DateTime<Utc>) -> Result<Pass, StoreError> {
        let due: Vec<String> = self
            .applied
            .iter()
            .filter(|applied| {
                let reads = applied.scorecard().reads();
                reads.now
                    || !reads.facts.is_empty()
                    || applied.scorecard().next_boundary(since).is_some_and(|boundary| boundary <= now)
            })
            .map(|applied| applied.scorecard().id.clone())
            .collect();
        self.evaluate_all(&due, now).await
    }

    /// The next time after `now` when a scorecard's results change with
    /// time alone, if one is known.
    pub fn next_boundary(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.applied.iter().filter_map(|applied| applied.scorecard().next_boundary(now)).min()
    }

    /// Evaluates again the entities the changes committed since the last
    /// pass make stale, and stores what moved.
    pub async fn catch_up(&mut self, now: DateTime<Utc>) -> Result<Pass, StoreError> {
        let Some(mut cursor) = self.cursor else { return Ok(Pass::default()) };
        if self.applied.is_empty() {
            self.cursor = Some(self.feed.latest_sequence().await?);
            return Ok(Pass::default());
        }
        if self.feed.purged_through().await? > cursor {
            // Changes were purged before this evaluator read them.
            return self.evaluate_everything(now).await;
        }
        let mut changes = Vec::new();
        loop {
            let batch = self.feed.changes_after(cursor, CATCH_UP_BATCH).await?;
            let Some(last) = batch.last() else { break };
            cursor = last.sequence;
            changes.extend(batch);
            if changes.len() > REEVALUATE_AFTER_CHANGES {
                return self.evaluate_everything(now).await;
            }
        }
        let mut pass = Pass::default();
        if changes.is_empty() {
            return Ok(pass);
        }
        let changed: Vec<EntityRef> =
            changes.iter().map(|change| change.entity_ref.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        for index in 0..self.applied.len() {
            let stale = self.stale(index, &changes, &changed).await?;
            pass += self.evaluate_refs(index, stale, now).await?;
        }
        self.cursor = Some(cursor);
        Ok(pass)
    }

    async fn evaluate_everything(&mut self, now: DateTime<Utc>) -> Result<Pass, StoreError> {
        self.cursor = Some(self.feed.latest_sequence().await?);
        let all: Vec<String> = self.applied.iter().map(|applied| applied.scorecard().id.clone()).collect();
        self.evaluate_all(&all, now).await
    }

    /// The entities `changes` make stale under the scorecard at `index`.
    async fn stale(
        &self,
        index: usize,
        changes: &[Change],
        changed: &[EntityRef],
    ) -> Result<Vec<EntityRef>, StoreError> {
        let applied = &self.applied[index];
        let mut stale: HashSet<EntityRef> = HashSet::new();
        for change in changes {
            if applied.touched_by(change) {
                stale.insert(change.entity_ref.clone());
            }
        }
        let relations = &applied.scorecard().reads().relations;
        if !relations.is_empty() {
            for entity_ref in changed {
                if let Some(readers) = applied.readers.get(entity_ref) {
                    stale.extend(readers.iter().cloned());
                }
            }
            // Who relates to a changed entity now: its edges the other way,
            // and for nested reads (`members(owner())`) two hops the other way.
            let inverse: Vec<RelationType> =
                relations.iter().map(|&relation| relation_type(relation).reverse()).collect();
            let mut reached: Vec<EntityRef> = changed.to_vec();
            let nested = &applied.scorecard().reads().nested;
            if !nested.is_empty() {
                let inner: Vec<RelationType> =
                    nested.iter().map(|&relation| relation_type(relation).reverse()).collect();
                let first = self.catalog.related_entities(changed, &inner, TargetBodies::Skip).await?;
                reached.extend(first.targets.values().map(|target| target.entity_ref.clone()));
            }
            let related = self.catalog.related_entities(&reached, &inverse, TargetBodies::Skip).await?;
            for target in related.targets.values() {
                stale.insert(target.entity_ref.clone());
            }
        }
        let mut stale: Vec<EntityRef> = stale.into_iter().collect();
        stale.sort();
        Ok(stale)
    }

    /// Evaluates the scorecards `ids` over every entity, page by page.
    async fn evaluate_all(&mut self, ids: &[String], now: DateTime<Utc>) -> Result<Pass, StoreError> {
        let indices: Vec<usize> =
            (0..self.applied.len()).filter(|&index| ids.contains(&self.applied[index].scorecard().id)).collect();
        let mut pass = Pass::default();
        if indices.is_empty() {
            return Ok(pass);
        }
        let mut seen: Vec<HashSet<EntityRef>> = vec![HashSet::new(); indices.len()];
        // One subject per entity for every scorecard: its envelope, related
        // entities and facts read once, and converted to CEL once.
        let scorecards: Vec<Arc<Scorecard>> =
            indices.iter().map(|&index| self.applied[index].loaded.scorecard.clone()).collect();
        let reads = Reads::union(scorecards.iter().map(|scorecard| scorecard.reads()));
        let mut offset = 0;
        loop {
            let query = ListQuery { order: OrderField::Name, offset, limit: PAGE, ..Default::default() };
            let page = self.catalog.list_entities(&query).await?;
            offset += PAGE;
            let loaded =
                crate::load::subjects(&self.catalog, &page.entities, &reads, self.facts.as_deref(), now, |subject| {
                    scorecards.iter().any(|scorecard| scorecard.applies_to.matches(subject))
                })
                .await?;
            let mut writes = Vec::new();
            for Loaded { entity_ref, subject, inputs } in loaded {
                let evaluation = Evaluation::new(&subject, &reads);
                for (position, (&index, scorecard)) in indices.iter().zip(&scorecards).enumerate() {
                    let Some(score) = scorecard.evaluate_in(&subject, &evaluation) else { continue };
                    seen[position].insert(entity_ref.clone());
                    pass.evaluated += 1;
                    // What this scorecard's rules read, not the other scorecards'.
                    let read: Vec<EntityRef> = inputs
                        .iter()
                        .filter(|input| input.read_by(scorecard.reads()))
                        .map(|input| input.entity_ref.clone())
                        .collect();
                    pass += self.settle(index, entity_ref.clone(), Some((score, read)), now, &mut writes);
                }
            }
            self.write(writes).await?;
            if offset >= page.total_count {
                break;
            }
        }
        let mut writes = Vec::new();
        for (position, &index) in indices.iter().enumerate() {
            let gone: Vec<EntityRef> = self.applied[index]
                .current
                .keys()
                .filter(|entity_ref| !seen[position].contains(*entity_ref))
                .cloned()
                .collect();
            for entity_ref in gone {
                pass += self.settle(index, entity_ref, None, now, &mut writes);
            }
        }
        self.write(writes).await?;
        for &index in &indices {
            self.put_scorecard(index, now).await?;
        }
        Ok(pass)
    }

    /// Evaluates `refs` again under the scorecard at `index`.
    async fn evaluate_refs(
        &mut self,
        index: usize,
        refs: Vec<EntityRef>,
        now: DateTime<Utc>,
    ) -> Result<Pass, StoreError> {
        let mut pass = Pass::default();
        if refs.is_empty() {
            return Ok(pass);
        }
        for chunk in refs.chunks(PAGE as usize) {
            let found = self.catalog.entities_by_refs(chunk).await?;
            let loaded = self.load(index, found.values(), now).await?;
            let evaluated: HashSet<EntityRef> = loaded.iter().map(|loaded| loaded.entity_ref.clone()).collect();
            let mut writes = Vec::new();
            pass += self.settle_all(index, loaded, now, &mut writes);
            for entity_ref in chunk.iter().filter(|entity_ref| !evaluated.contains(*entity_ref)) {
                pass += self.settle(index, entity_ref.clone(), None, now, &mut writes);
            }
            self.write(writes).await?;
        }
        // The summary counts every current result: recounted only when one moved.
        if pass.written > 0 {
            self.put_scorecard(index, now).await?;
        }
        Ok(pass)
    }

    async fn load<'e>(
        &self,
        index: usize,
        entities: impl IntoIterator<Item = &'e catalog_store::StoredEntity>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Loaded>, StoreError> {
        let scorecard = self.applied[index].scorecard();
        crate::load::subjects(&self.catalog, entities, scorecard.reads(), self.facts.as_deref(), now, |subject| {
            scorecard.applies_to.matches(subject)
        })
        .await
    }

    fn settle_all(
        &mut self,
        index: usize,
        loaded: Vec<Loaded>,
        now: DateTime<Utc>,
        writes: &mut Vec<ScoreWrite>,
    ) -> Pass {
        let mut pass = Pass::default();
        for Loaded { entity_ref, subject, inputs } in loaded {
            let score = self.applied[index].scorecard().evaluate(&subject);
            pass.evaluated += 1;
            let read = inputs.into_iter().map(|input| input.entity_ref).collect();
            pass += self.settle(index, entity_ref, score.map(|score| (score, read)), now, writes);
        }
        pass
    }

    /// Compares a new result with the current one: the time since each rule's
    /// status holds carries over; a write when anything differs, with a
    /// transition when the level or a status moved.
    fn settle(
        &mut self,
        index: usize,
        entity_ref: EntityRef,
        score: Option<(Score, Vec<EntityRef>)>,
        now: DateTime<Utc>,
        writes: &mut Vec<ScoreWrite>,
    ) -> Pass {
        let applied = &mut self.applied[index];
        let previous = applied.current.get(&entity_ref);
        let scorecard = applied.scorecard().id.clone();
        let mut pass = Pass::default();
        let Some((score, inputs)) = score else {
            let Some(previous) = previous else { return pass };
            let rules: Vec<RuleTransition> = previous
                .results
                .iter()
                .map(|result| RuleTransition { rule: result.rule.clone(), from: Some(result.status), to: None })
                .collect();
            writes.push(ScoreWrite {
                scorecard,
                entity_ref: entity_ref.clone(),
                score: None,
                transition: Some(Transition {
                    level_before: previous.level.clone(),
                    rules: serde_json::to_value(rules).unwrap_or_default(),
                }),
            });
            applied.set_current(entity_ref, None);
            return Pass { written: 1, transitions: 1, ..pass };
        };
        let results: Vec<StoredResult> = score
            .rules
            .into_iter()
            .map(|result| {
                let held = previous.and_then(|previous| previous.results.iter().find(|old| old.rule == result.rule));
                let since = held
                    .filter(|old| {
                        old.status == result.status
                            && old.enforced == result.enforced
                            && old.exemption.is_some() == result.exemption.is_some()
                    })
                    .map_or(now, |old| old.since);
                StoredResult {
                    rule: result.rule,
                    level: result.level,
                    status: result.status,
                    enforced: result.enforced,
                    exemption: result.exemption,
                    explanation: result.explanation,
                    since,
                }
            })
            .collect();
        let moved: Vec<RuleTransition> = results
            .iter()
            .filter_map(|result| {
                let from = previous
                    .and_then(|previous| previous.results.iter().find(|old| old.rule == result.rule))
                    .map(|old| old.status);
                (from != Some(result.status)).then(|| RuleTransition {
                    rule: result.rule.clone(),
                    from,
                    to: Some(result.status),
                })
            })
            .collect();
        let level_moved = previous.is_none_or(|previous| previous.level != score.level);
        let rewritten = previous
            .is_none_or(|previous| previous.results != results || previous.score.to_bits() != score.score.to_bits());
        let transition = (level_moved || !moved.is_empty()).then(|| Transition {
            level_before: previous.and_then(|previous| previous.level.clone()),
            rules: serde_json::to_value(&moved).unwrap_or_default(),
        });
        if rewritten || transition.is_some() {
            pass.written += 1;
            pass.transitions += u64::from(transition.is_some());
            writes.push(ScoreWrite {
                scorecard,
                entity_ref: entity_ref.clone(),
                score: Some(NewScore {
                    level: score.level.clone(),
                    score: score.score,
                    failing: results
                        .iter()
                        .filter(|result| result.status != RuleStatus::Pass && result.exemption.is_none())
                        .map(|result| result.rule.clone())
                        .collect(),
                    results: serde_json::to_value(&results).unwrap_or_default(),
                }),
                transition,
            });
        }
        applied.set_current(entity_ref, Some(Current { level: score.level, score: score.score, results, inputs }));
        pass
    }

    async fn write(&self, writes: Vec<ScoreWrite>) -> Result<(), StoreError> {
        self.scores.write_scores(&writes).await?;
        Ok(())
    }

    async fn put_scorecard(&self, index: usize, now: DateTime<Utc>) -> Result<(), StoreError> {
        let applied = &self.applied[index];
        self.scores
            .put_scorecard(&ScorecardRecord {
                id: applied.scorecard().id.clone(),
                version: applied.loaded.version.clone(),
                source: applied.loaded.source.clone(),
                summary: serde_json::to_value(applied.summary()).unwrap_or_default(),
                updated_at: now,
            })
            .await
    }
}
