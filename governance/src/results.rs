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

/// An entity's standing under one scorecard at a past time, rebuilt from
/// its current result and the transitions recorded since.
#[derive(Clone, Debug, PartialEq)]
pub struct PastScore {
    pub scorecard: String,
    pub level: Option<String>,
    /// None when the history no longer says (its transitions purged).
    pub score: Option<f64>,
    /// Each rule's status then, in the current result's order, then rules
    /// removed since.
    pub rules: Vec<(String, RuleStatus)>,
}

/// The standing at `at` under `scorecard`, from the current result (None:
/// the scorecard does not apply now) and its transitions newest first
/// (`history`, at least those after `at` and the last one before it).
/// A level or status is what the first transition after `at` moved from,
/// or the current one when nothing moved since; None when the entity was
/// not scored then (first evaluated later, or removed before).
pub fn score_as_of(
    scorecard: &str,
    current: Option<&catalog_store::StoredScore>,
    history: &[catalog_store::ScoreChange],
    at: DateTime<Utc>,
) -> Option<PastScore> {
    let after: Vec<&catalog_store::ScoreChange> =
        history.iter().rev().filter(|change| change.scorecard == scorecard && change.time > at).collect();
    let before = history.iter().find(|change| change.scorecard == scorecard && change.time <= at);
    let transitions = |change: &catalog_store::ScoreChange| -> Vec<RuleTransition> {
        serde_json::from_value(change.rules.clone()).unwrap_or_default()
    };
    let Some(first_after) = after.first() else {
        let current = current?;
        let results: Vec<StoredResult> = serde_json::from_value(current.results.clone()).unwrap_or_default();
        return Some(PastScore {
            scorecard: scorecard.to_owned(),
            level: current.level.clone(),
            score: Some(current.score),
            rules: results.into_iter().map(|result| (result.rule, result.status)).collect(),
        });
    };
    // Scored then: the last transition before says so. Without one (none
    // yet, or purged), a first later transition that moved every rule it
    // names from nothing was the first evaluation.
    let scored = match before {
        Some(change) => !change.removed,
        None => {
            let first_rules = transitions(first_after);
            first_after.removed
                || first_after.level_before.is_some()
                || first_rules.is_empty()
                || first_rules.iter().any(|transition| transition.from.is_some())
        }
    };
    if !scored {
        return None;
    }
    // First mention after `at` wins: what the rule moved from.
    let mut then: Vec<(String, Option<RuleStatus>)> = Vec::new();
    for change in &after {
        for transition in transitions(change) {
            if !then.iter().any(|(rule, _)| *rule == transition.rule) {
                then.push((transition.rule, transition.from));
            }
        }
    }
    let mut rules: Vec<(String, RuleStatus)> = Vec::new();
    if let Some(current) = current {
        let results: Vec<StoredResult> = serde_json::from_value(current.results.clone()).unwrap_or_default();
        for result in results {
            match then.iter().find(|(rule, _)| *rule == result.rule) {
                Some((_, Some(status))) => rules.push((result.rule, *status)),
                Some((_, None)) => {}
                None => rules.push((result.rule, result.status)),
            }
        }
    }
    for (rule, status) in &then {
        if let Some(status) = status
            && !rules.iter().any(|(known, _)| known == rule)
        {
            rules.push((rule.clone(), *status));
        }
    }
    Some(PastScore {
        scorecard: scorecard.to_owned(),
        level: first_after.level_before.clone(),
        score: before.filter(|change| !change.removed).and_then(|change| change.score),
        rules,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use serde_json::json;

    use super::*;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, day, 12, 0, 0).unwrap()
    }

    fn change(
        sequence: i64,
        day: u32,
        level_before: Option<&str>,
        level: Option<&str>,
        score: Option<f64>,
        rules: serde_json::Value,
    ) -> catalog_store::ScoreChange {
        catalog_store::ScoreChange {
            sequence,
            time: at(day),
            scorecard: "ready".into(),
            entity_ref: catalog_domain::EntityRef::parse("component:default/a").unwrap(),
            level_before: level_before.map(str::to_owned),
            level: level.map(str::to_owned),
            score,
            rules,
            removed: score.is_none(),
        }
    }

    fn current(level: Option<&str>, score: f64, rules: &[(&str, &str)]) -> catalog_store::StoredScore {
        let results: Vec<serde_json::Value> = rules
            .iter()
            .map(|(rule, status)| {
                json!({"rule": rule, "level": "Bronze", "status": status, "enforced": true,
                       "exemption": null, "explanation": null, "since": at(1)})
            })
            .collect();
        catalog_store::StoredScore {
            scorecard: "ready".into(),
            entity_ref: catalog_domain::EntityRef::parse("component:default/a").unwrap(),
            level: level.map(str::to_owned),
            score,
            results: serde_json::Value::from(results),
            updated_at: at(9),
        }
    }

    #[test]
    fn a_past_standing_is_what_the_first_later_transition_moved_from() {
        // Day 1: first evaluated, Bronze (owner passes, docs fail). Day 5:
        // docs pass, Silver. Day 8: a new rule `on-call` appears, failing.
        let history = vec![
            change(
                3,
                8,
                Some("Silver"),
                Some("Silver"),
                Some(66.0),
                json!([{"rule": "on-call", "from": null, "to": "FAIL"}]),
            ),
            change(
                2,
                5,
                Some("Bronze"),
                Some("Silver"),
                Some(100.0),
                json!([{"rule": "docs", "from": "FAIL", "to": "PASS"}]),
            ),
            change(
                1,
                1,
                None,
                Some("Bronze"),
                Some(50.0),
                json!([
                {"rule": "owner", "from": null, "to": "PASS"}, {"rule": "docs", "from": null, "to": "FAIL"}]),
            ),
        ];
        let now = current(Some("Silver"), 66.0, &[("owner", "PASS"), ("docs", "PASS"), ("on-call", "FAIL")]);
        let then = |day: u32| score_as_of("ready", Some(&now), &history, at(day) + Duration::hours(1));

        let day3 = then(3).unwrap();
        assert_eq!((day3.level.as_deref(), day3.score), (Some("Bronze"), Some(50.0)));
        assert_eq!(day3.rules, [("owner".to_owned(), RuleStatus::Pass), ("docs".to_owned(), RuleStatus::Fail)]);
        let day6 = then(6).unwrap();
        assert_eq!((day6.level.as_deref(), day6.score), (Some("Silver"), Some(100.0)));
        assert_eq!(day6.rules.len(), 2, "on-call did not exist yet: {:?}", day6.rules);
        assert_eq!(then(9).unwrap().rules.len(), 3, "nothing moved since: the current result");
        // Before the first evaluation it was not scored.
        assert_eq!(score_as_of("ready", Some(&now), &history, at(1) - Duration::hours(1)), None);
        // With the older transitions purged, the level and rules are known but not the score.
        let purged = &history[..2];
        let day3 = score_as_of("ready", Some(&now), purged, at(3)).unwrap();
        assert_eq!((day3.level.as_deref(), day3.score), (Some("Bronze"), None));
    }

    #[test]
    fn a_rule_added_below_the_first_level_is_no_first_evaluation() {
        // Scored below the first level on day 1; a new rule on day 5 moves
        // from nothing while the level stays null.
        let history = vec![
            change(2, 5, None, None, Some(0.0), json!([{"rule": "new", "from": null, "to": "FAIL"}])),
            change(1, 1, None, None, Some(0.0), json!([{"rule": "owner", "from": null, "to": "FAIL"}])),
        ];
        let now = current(None, 0.0, &[("owner", "FAIL"), ("new", "FAIL")]);
        let day3 = score_as_of("ready", Some(&now), &history, at(3)).unwrap();
        assert_eq!((day3.level, day3.score), (None, Some(0.0)));
        assert_eq!(day3.rules, [("owner".to_owned(), RuleStatus::Fail)]);
    }

    #[test]
    fn a_scorecard_removed_since_shows_what_it_held_then() {
        let history = vec![
            change(
                2,
                5,
                Some("Bronze"),
                None,
                None,
                json!([
                {"rule": "owner", "from": "PASS", "to": null}, {"rule": "docs", "from": "FAIL", "to": null}]),
            ),
            change(
                1,
                1,
                None,
                Some("Bronze"),
                Some(50.0),
                json!([
                {"rule": "owner", "from": null, "to": "PASS"}, {"rule": "docs", "from": null, "to": "FAIL"}]),
            ),
        ];
        let day3 = score_as_of("ready", None, &history, at(3)).unwrap();
        assert_eq!((day3.level.as_deref(), day3.score), (Some("Bronze"), Some(50.0)));
        assert_eq!(day3.rules, [("owner".to_owned(), RuleStatus::Pass), ("docs".to_owned(), RuleStatus::Fail)]);
        assert_eq!(score_as_of("ready", None, &history, at(6)), None, "removed by then");
    }
}
