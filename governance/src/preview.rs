//! A scorecard evaluated over the stored catalog without storing anything
//! (`catalog scorecard check FILE`): how many entities reach each level,
//! each rule's pass rate, and the failures with their explanations, so a
//! pull request that adds or changes a scorecard can show its effect.

use std::collections::{BTreeMap, BTreeSet};

use catalog_store::{Catalog, ListQuery, OrderField, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::load::Loaded;
use crate::rule::RuleStatus;
use crate::scorecard::{RuleResult, Scorecard};
use crate::subject::Relation;

/// Entities read per statement.
const PAGE: u64 = 500;
/// Failures listed in full; the rest are counted.
pub const MAX_LISTED_FAILURES: usize = 100;

/// One rule's results over the catalog.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleSummary {
    pub rule: String,
    pub level: String,
    pub enforced: bool,
    pub pass: u64,
    pub fail: u64,
    pub unknown: u64,
    pub error: u64,
    /// Results that did not pass but an exemption covers.
    pub exempt: u64,
}

impl RuleSummary {
    /// Counts one entity's result.
    pub(crate) fn count(&mut self, status: RuleStatus, enforced: bool, exempt: bool) {
        self.enforced = enforced;
        let counted = match status {
            RuleStatus::Pass => &mut self.pass,
            RuleStatus::Fail => &mut self.fail,
            RuleStatus::Unknown => &mut self.unknown,
            RuleStatus::Error => &mut self.error,
        };
        *counted += 1;
        if status != RuleStatus::Pass && exempt {
            self.exempt += 1;
        }
    }
}

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
}

/// Evaluates `scorecard` over every stored entity it applies to, at `now`.
/// Relations are read only when a rule reads them; facts are not stored
/// yet, so a rule that needs one is `UNKNOWN`.
pub async fn preview(catalog: &Catalog, scorecard: &Scorecard, now: DateTime<Utc>) -> Result<Preview, StoreError> {
    let relations: BTreeSet<Relation> =
        scorecard.rules().flat_map(|(_, _, rule)| rule.reads().relations.iter().copied()).collect();
    let mut levels: BTreeMap<Option<String>, u64> = BTreeMap::new();
    let mut rules: Vec<RuleSummary> = scorecard
        .rules()
        .map(|(level, definition, _)| RuleSummary {
            rule: definition.id.clone(),
            level: level.to_owned(),
            ..Default::default()
        })
        .collect();
    let (mut evaluated, mut failures, mut more_failures) = (0, Vec::new(), 0);
    let mut offset = 0;
    loop {
        let query = ListQuery { order: OrderField::Name, offset, limit: PAGE, ..Default::default() };
        let page = catalog.list_entities(&query).await?;
        offset += PAGE;
        let subjects = crate::load::subjects(catalog, &page.entities, &relations, now, |subject| {
            scorecard.applies_to.matches(subject)
        })
        .await?;
        for Loaded { entity_ref, subject, .. } in &subjects {
            let Some(score) = scorecard.evaluate(subject) else { continue };
            evaluated += 1;
            *levels.entry(score.level.clone()).or_default() += 1;
            for (summary, result) in rules.iter_mut().zip(score.rules) {
                summary.count(result.status, result.enforced, result.exemption.is_some());
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
    let ordered = std::iter::once(None)
        .chain(scorecard.levels().map(|level| Some(level.to_owned())))
        .map(|level| {
            let count = levels.get(&level).copied().unwrap_or_default();
            (level, count)
        })
        .collect();
    Ok(Preview { scorecard: scorecard.id.clone(), evaluated, levels: ordered, rules, failures, more_failures })
}
