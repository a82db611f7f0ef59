//! Stale detection: a built-in scorecard whose rules are the reasons an
//! entity may no longer be true (its owner gone or a team nobody is in,
//! deprecated but still depended on, unchanged for longer than the
//! configured days, not read by its provider for as long, claiming Kubernetes workloads or a PagerDuty service
//! that the providers do not find). Being a scorecard, it is evaluated and
//! kept current like any other (through relations, and again as time
//! passes), its results have a `since` and a history, and the `stale`
//! filter key is its failing rules. Flags only: nothing is edited.

use crate::evaluator::LoadedScorecard;
use crate::scorecard::ScorecardError;
use crate::subject::{SEEN_AT_FACT, UPDATED_AT_FACT};

/// The built-in scorecard's id.
pub const STALENESS: &str = catalog_store::STALENESS_SCORECARD;

/// What the configuration says about stale detection, and which providers
/// the server has: a reason that needs a provider's facts is left out
/// without one (it could only ever be `UNKNOWN`).
#[derive(Clone, Debug, PartialEq)]
pub struct StalenessSettings {
    /// Days without a change to its content after which an entity is stale.
    pub unchanged_days: u32,
    /// Days without a push to its repository after which an entity is stale.
    pub repository_unchanged_days: u32,
    /// Days its provider has not read its location in full after which an
    /// entity is stale (the source is failing or gone).
    pub not_seen_days: u32,
    /// The group that answers for the built-in scorecard (shown with it).
    pub owner: String,
    pub github: bool,
    pub kubernetes: bool,
    pub pagerduty: bool,
}

/// The reasons that read a provider's facts, each with whether the
/// settings have that provider.
fn provider_rules(settings: &StalenessSettings) -> String {
    let repository_hours = u64::from(settings.repository_unchanged_days) * 24;
    let mut rules = String::new();
    if settings.github {
        rules.push_str(&format!(
            r#"      - id: repository-archived
        title: Its repository is archived
        expression: fact('github.repository') == null || !fact('github.repository').archived
      - id: repository-unchanged
        title: Nothing was pushed to its repository for {days} days
        expression: >-
          fact('github.repository') == null || fact('github.repository').pushedAt == null
          || now - timestamp(fact('github.repository').pushedAt) < duration('{repository_hours}h')
"#,
            days = settings.repository_unchanged_days
        ));
    }
    if settings.kubernetes {
        rules.push_str(
            r#"      - id: no-workloads
        title: It names Kubernetes workloads that no cluster runs
        expression: >-
          !('backstage.io/kubernetes-id' in entity.metadata.annotations)
          || size(fact('kubernetes.workloads')) > 0
"#,
        );
    }
    if settings.pagerduty {
        rules.push_str(
            r#"      - id: no-pagerduty-service
        title: It names a PagerDuty service that PagerDuty does not have
        expression: >-
          !('pagerduty.com/service-id' in entity.metadata.annotations)
          || fact('pagerduty.service') != null
"#,
        );
    }
    rules
}

/// The staleness scorecard for `settings`; an error names a bad setting
/// (an owner that is not an entity ref).
pub fn staleness_scorecard(settings: &StalenessSettings) -> Result<LoadedScorecard, ScorecardError> {
    let hours = u64::from(settings.unchanged_days) * 24;
    let source = format!(
        r#"# Built in: the configuration's governance.staleness.
id: {STALENESS}
title: Staleness
owner: "{owner}"
description: Reasons an entity may no longer be true. Flags only; the source of truth is never edited.
appliesTo:
  kind: [Component, API, Resource, System]
levels:
  - name: Fresh
    rules:
      - id: owner-missing
        title: Its owner is not in the catalog
        expression: owner() != null
      - id: owner-without-members
        title: Its owner is a group nobody is in
        expression: owner() == null || owner().kind != 'Group' || size(members(owner())) > 0
      - id: deprecated-but-depended-on
        title: It is deprecated and something still depends on it
        expression: >-
          !has(entity.spec.lifecycle) || entity.spec.lifecycle != 'deprecated' || size(dependents()) == 0
      - id: unchanged
        title: Its source has not changed for {days} days
        expression: now - timestamp(fact('{UPDATED_AT_FACT}')) < duration('{hours}h')
      - id: not-seen
        title: Its provider has not read it for {not_seen_days} days
        expression: >-
          fact('{SEEN_AT_FACT}') == null || now - timestamp(fact('{SEEN_AT_FACT}')) < duration('{not_seen_hours}h')
{providers}"#,
        owner = settings.owner.replace(['"', '\\'], ""),
        days = settings.unchanged_days,
        not_seen_days = settings.not_seen_days,
        not_seen_hours = u64::from(settings.not_seen_days) * 24,
        providers = provider_rules(settings),
    );
    LoadedScorecard::parse(&source)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};
    use serde_json::json;

    use super::*;
    use crate::rule::RuleStatus;
    use crate::subject::{Fact, Relation, Subject};

    fn settings() -> StalenessSettings {
        StalenessSettings {
            unchanged_days: 30,
            repository_unchanged_days: 90,
            not_seen_days: 7,
            owner: "group:default/platform".to_owned(),
            github: true,
            kubernetes: true,
            pagerduty: true,
        }
    }

    fn failing(subject: &Subject) -> Vec<(String, RuleStatus)> {
        let loaded = staleness_scorecard(&settings()).unwrap();
        let score = loaded.scorecard.evaluate(subject).unwrap();
        score
            .rules
            .into_iter()
            .filter(|result| result.status != RuleStatus::Pass)
            .map(|result| (result.rule, result.status))
            .collect()
    }

    fn updated(days_ago: i64) -> Fact {
        let now = Utc::now();
        Fact { value: json!((now - Duration::days(days_ago)).to_rfc3339()), observed_at: now, ttl: Duration::days(1) }
    }

    #[test]
    fn each_reason_is_a_rule_that_fails_on_its_own() {
        let team = json!({"kind": "Group", "metadata": {"name": "team-a"}});
        let alice = json!({"kind": "User", "metadata": {"name": "alice"}});
        let fresh = Subject::new(
            json!({"kind": "Component", "metadata": {"name": "api"}, "spec": {"lifecycle": "production"}}),
            Utc::now(),
        )
        .with_related(Relation::Owner, vec![team.clone()])
        .with_nested(Relation::Members, "group:default/team-a", vec![alice])
        .with_fact(UPDATED_AT_FACT, updated(3))
        .with_fact(SEEN_AT_FACT, updated(0))
        // On no repository the GitHub providers list: not stale for it.
        .with_fact("github.repository", Fact { value: json!(null), observed_at: Utc::now(), ttl: Duration::hours(1) });
        assert_eq!(failing(&fresh), []);

        let mut old = fresh.clone();
        old.facts.insert(UPDATED_AT_FACT.to_owned(), updated(45));
        assert_eq!(failing(&old), [("unchanged".to_owned(), RuleStatus::Fail)]);

        // Its provider has not read it for longer than allowed (its source
        // failing or gone); with no read on record, nothing to say.
        let unseen = fresh.clone().with_fact(SEEN_AT_FACT, updated(10));
        assert_eq!(failing(&unseen), [("not-seen".to_owned(), RuleStatus::Fail)]);
        let unrecorded = fresh
            .clone()
            .with_fact(SEEN_AT_FACT, Fact { value: json!(null), observed_at: Utc::now(), ttl: Duration::zero() });
        assert_eq!(failing(&unrecorded), []);

        let mut orphan = fresh.clone();
        orphan.related.clear();
        assert_eq!(failing(&orphan), [("owner-missing".to_owned(), RuleStatus::Fail)]);

        let mut empty_team = fresh.clone();
        empty_team.nested.clear();
        assert_eq!(failing(&empty_team), [("owner-without-members".to_owned(), RuleStatus::Fail)]);

        let mut deprecated = fresh.clone();
        deprecated.entity["spec"]["lifecycle"] = json!("deprecated");
        assert_eq!(failing(&deprecated), []);
        let deprecated = deprecated.with_related(Relation::Dependents, vec![json!({"kind": "Component"})]);
        assert_eq!(failing(&deprecated), [("deprecated-but-depended-on".to_owned(), RuleStatus::Fail)]);

        // Claimed workloads: none found is stale, no Kubernetes view is unknown.
        let mut claims = fresh.clone();
        claims.entity["metadata"]["annotations"] = json!({"backstage.io/kubernetes-id": "api"});
        assert_eq!(failing(&claims), [("no-workloads".to_owned(), RuleStatus::Unknown)]);
        let claims = claims.with_fact(
            "kubernetes.workloads",
            Fact { value: json!([]), observed_at: Utc::now(), ttl: Duration::hours(1) },
        );
        assert_eq!(failing(&claims), [("no-workloads".to_owned(), RuleStatus::Fail)]);

        // Its repository: archived, or no push for longer than allowed.
        let repository = |archived: bool, pushed_days_ago: i64| Fact {
            value: json!({"fullName": "acme/api", "archived": archived,
                          "pushedAt": (Utc::now() - Duration::days(pushed_days_ago)).to_rfc3339()}),
            observed_at: Utc::now(),
            ttl: Duration::hours(1),
        };
        let on_github = fresh.clone().with_fact("github.repository", repository(false, 10));
        assert_eq!(failing(&on_github), []);
        let archived = fresh.clone().with_fact("github.repository", repository(true, 10));
        assert_eq!(failing(&archived), [("repository-archived".to_owned(), RuleStatus::Fail)]);
        let quiet = fresh.clone().with_fact("github.repository", repository(false, 100));
        assert_eq!(failing(&quiet), [("repository-unchanged".to_owned(), RuleStatus::Fail)]);
    }

    #[test]
    fn reasons_that_need_a_provider_are_left_out_without_it() {
        let without = StalenessSettings { github: false, kubernetes: false, pagerduty: false, ..settings() };
        let loaded = staleness_scorecard(&without).unwrap();
        let rules: Vec<&str> = loaded.scorecard.rules().map(|(_, rule, _)| rule.id.as_str()).collect();
        assert_eq!(
            rules,
            ["owner-missing", "owner-without-members", "deprecated-but-depended-on", "unchanged", "not-seen"]
        );
    }
}
