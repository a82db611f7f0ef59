//! A scorecard evaluated over the stored catalog without storing anything
//! (`catalog scorecard check FILE`): how many entities reach each level,
//! each rule's pass rate, and the failures with their explanations, so a
//! pull request that adds or changes a scorecard can show its effect.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use catalog_store::{Catalog, ListQuery, OrderField, StoreError, StoredScore};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::load::Loaded;
use crate::results::{RuleSummary, RuleTransition, StoredResult, Summary};
use crate::rule::RuleStatus;
use crate::scorecard::{RuleResult, Scorecard};
use crate::subject::FactSource;

/// Entities read per statement.
const PAGE: u64 = 500;
/// Failures listed in full; the rest are counted.
pub const MAX_LISTED_FAILURES: usize = 100;

/// A failing result with its entity.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub entity_ref: String,
    pub result: RuleResult,
}

/// What a scorecard would say about the catalog.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    pub scorecard: String,
    /// Entities the scorecard applies to.
    pub evaluated: u64,
    /// Entities per level, lowest first, with those below the first level
    /// under `None`.
    pub levels: Vec<(Option<String>, u64)>,
    pub rules: Vec<RuleSummary>,
    /// The first [`MAX_LISTED_FAILURES`] results that neither pass nor are
    /// exempt, by entity ref.
    pub failures: Vec<Failure>,
    pub more_failures: u64,
    /// Against the stored results of the scorecard with its id (the one in
    /// force): the first [`MAX_LISTED_FAILURES`] entities whose level or a
    /// rule's status would change, by entity ref.
    pub moves: Vec<Move>,
    pub more_moves: u64,
}

/// An entity whose level or rules the previewed scorecard would change.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Move {
    pub entity_ref: String,
    /// Whether the scorecard in force applies to it (a level below the first
    /// is `None` too).
    pub scored_before: bool,
    pub level_before: Option<String>,
    /// Whether the previewed scorecard applies to it.
    pub scored: bool,
    pub level: Option<String>,
    /// Rules whose status would change (a rule new or gone: `None` on its side).
    pub rules: Vec<RuleTransition>,
}

/// The stored results of the scorecard in force, per entity: level and each
/// rule's status.
type Baseline = HashMap<String, (Option<String>, BTreeMap<String, RuleStatus>)>;

fn baseline(stored: &[StoredScore]) -> Baseline {
    stored
        .iter()
        .map(|score| {
            let results: Vec<StoredResult> = serde_json::from_value(score.results.clone()).unwrap_or_default();
            let statuses = results.into_iter().map(|result| (result.rule, result.status)).collect();
            (score.entity_ref.as_str().to_owned(), (score.level.clone(), statuses))
        })
        .collect()
}

/// The move of one entity from its stored results to `now`, if anything moves.
fn moved(
    entity_ref: &str,
    before: Option<(Option<String>, BTreeMap<String, RuleStatus>)>,
    now: Option<(Option<String>, BTreeMap<String, RuleStatus>)>,
) -> Option<Move> {
    let (scored_before, scored) = (before.is_some(), now.is_some());
    let (level_before, statuses_before) = before.unwrap_or_default();
    let (level, statuses) = now.unwrap_or_default();
    let names: BTreeSet<&String> = statuses_before.keys().chain(statuses.keys()).collect();
    let rules: Vec<RuleTransition> = names
        .into_iter()
        .filter_map(|rule| {
            let (from, to) = (statuses_before.get(rule).copied(), statuses.get(rule).copied());
            (from != to).then(|| RuleTransition { rule: rule.clone(), from, to })
        })
        .collect();
    (scored_before != scored || level_before != level || !rules.is_empty()).then(|| Move {
        entity_ref: entity_ref.to_owned(),
        scored_before,
        level_before,
        scored,
        level,
        rules,
    })
}

/// Evaluates `scorecard` over every stored entity it applies to, at `now`.
/// Relations are read only when a rule reads them; facts come from
/// `facts` (without one, a rule that needs a fact is `UNKNOWN`).
/// `stored`: the results of the scorecard in force with the same id (empty
/// for a new one), which the moves are counted against.
pub async fn preview(
    catalog: &Catalog,
    scorecard: &Scorecard,
    now: DateTime<Utc>,
    stored: &[StoredScore],
    facts: Option<&dyn FactSource>,
) -> Result<Preview, StoreError> {
    let mut baseline = baseline(stored);
    let (mut moves, mut more_moves) = (Vec::new(), 0);
    let mut record = |entity_ref: &str, before, now| {
        if let Some(found) = moved(entity_ref, before, now) {
            if moves.len() < MAX_LISTED_FAILURES {
                moves.push(found);
            } else {
                more_moves += 1;
            }
        }
    };
    let mut summary = Summary::empty(scorecard);
    let (mut failures, mut more_failures) = (Vec::new(), 0);
    let mut offset = 0;
    loop {
        let query = ListQuery { order: OrderField::Name, offset, limit: PAGE, ..Default::default() };
        let page = catalog.list_entities(&query).await?;
        offset += PAGE;
        let subjects = crate::load::subjects(catalog, &page.entities, scorecard.reads(), facts, now, |subject| {
            scorecard.applies_to.matches(subject)
        })
        .await?;
        for Loaded { entity_ref, subject, .. } in &subjects {
            let Some(score) = scorecard.evaluate(subject) else { continue };
            let statuses = score.rules.iter().map(|result| (result.rule.clone(), result.status)).collect();
            record(entity_ref.as_str(), baseline.remove(entity_ref.as_str()), Some((score.level.clone(), statuses)));
            summary.count(
                score.level.as_deref(),
                score
                    .rules
                    .iter()
                    .map(|result| (result.rule.as_str(), result.status, result.enforced, result.exemption.is_some())),
            );
            for result in score.rules {
                if result.status != RuleStatus::Pass && result.exemption.is_none() {
                    if failures.len() < MAX_LISTED_FAILURES {
                        failures.push(Failure { entity_ref: entity_ref.as_str().to_owned(), result });
                    } else {
                        more_failures += 1;
                    }
                }
            }
        }
        if offset >= page.total_count {
            break;
        }
    }
    // What the scorecard in force scores and the previewed one no longer does.
    let mut gone: Vec<_> = baseline.into_iter().collect();
    gone.sort_by(|left, right| left.0.cmp(&right.0));
    for (entity_ref, before) in gone {
        record(&entity_ref, Some(before), None);
    }
    Ok(Preview {
        scorecard: scorecard.id.clone(),
        evaluated: summary.evaluated,
        levels: summary.levels.into_iter().map(|count| (count.level, count.entities)).collect(),
        rules: summary.rules,
        failures,
        more_failures,
        moves,
        more_moves,
    })
}
