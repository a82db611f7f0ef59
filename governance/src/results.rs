//! What evaluations produce, as they are stored and shown: each rule's
//! result with the time since it holds, the transitions of a level or a
//! rule, and a scorecard's counts over the catalog.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::explain::Explanation;
use crate::rule::RuleStatus;
use crate::scorecard::Exemption;

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
