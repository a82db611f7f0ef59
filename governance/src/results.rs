//! What evaluations produce, as they are stored and shown: each rule's
//! result with the time since it holds, the transitions of a level or a
//! rule, and a scorecard's counts over the catalog.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::explain::Explanation;
use crate::rule::RuleStatus;
use crate::scorecard::{Exemption, Scorecard};

/// One rule's stored result: what an entity's `scores` show.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredResult {
    pub rule: String,
    pub level: String,
    pub status: RuleStatus,
    pub enforced: bool,
    pub exemption: Option<Exemption>,
    pub explanation: Option<Explanation>,
    /// Since when this status (and exemption, and enforcement) has held.
    pub since: DateTime<Utc>,
}

/// A rule whose status changed in a transition; `None` before the first
/// evaluation or after the last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleTransition {
    pub rule: String,
    pub from: Option<RuleStatus>,
    pub to: Option<RuleStatus>,
}

/// Entities at one level (`None`: below the first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LevelCount {
    pub level: Option<String>,
    pub entities: u64,
}

/// A scorecard's results over the catalog, stored with it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Entities it applies to.
    pub evaluated: u64,
    /// Lowest first, starting with those below the first level.
    pub levels: Vec<LevelCount>,
    pub rules: Vec<RuleSummary>,
}

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
    pub fn count(&mut self, status: RuleStatus, enforced: bool, exempt: bool) {
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

impl Summary {
    /// Nothing counted yet: every level of `scorecard` (lowest first, after
    /// the entities below the first) and every rule at zero.
    pub fn empty(scorecard: &Scorecard) -> Summary {
        let levels = std::iter::once(None)
            .chain(scorecard.levels().map(|level| Some(level.to_owned())))
            .map(|level| LevelCount { level, entities: 0 })
            .collect();
        let rules = scorecard
            .rules()
            .map(|(level, definition, _)| RuleSummary {
                rule: definition.id.clone(),
                level: level.to_owned(),
                ..Default::default()
            })
            .collect();
        Summary { evaluated: 0, levels, rules }
    }

    /// Counts one entity: its level, and each rule's status (by rule id).
    pub fn count<'r>(
        &mut self,
        level: Option<&str>,
        results: impl IntoIterator<Item = (&'r str, RuleStatus, bool, bool)>,
    ) {
        self.evaluated += 1;
        if let Some(count) = self.levels.iter_mut().find(|count| count.level.as_deref() == level) {
            count.entities += 1;
        }
        for (rule, status, enforced, exempt) in results {
            if let Some(summary) = self.rules.iter_mut().find(|summary| summary.rule == rule) {
                summary.count(status, enforced, exempt);
            }
        }
    }
}

impl StoredResult {
    /// What [`Summary::count`] counts of it.
    pub fn counted(&self) -> (&str, RuleStatus, bool, bool) {
        (&self.rule, self.status, self.enforced, self.exemption.is_some())
    }
}
