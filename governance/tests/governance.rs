//! Rules and scorecards through the crate's public API: what a rule reads,
//! how its problems are located, its statuses with their explanations, and a
//! scorecard's levels, weights, staged rollout and exemptions.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use catalog_governance::{Fact, Relation, Rule, RuleStatus, Scorecard, Subject};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 2, 1, 12, 0, 0).unwrap()
}

fn service(lifecycle: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "payments", "annotations": annotations},
        "spec": {"type": "service", "lifecycle": lifecycle, "owner": "team-a"}
    })
}

#[test]
fn a_rule_knows_what_it_reads() {
    let rule = Rule::compile(
        "'pagerduty.com/service-id' in entity.metadata.annotations && entity.spec.lifecycle == 'production' \
         && owner() != null && dependents().all(d, d.spec.lifecycle != 'deprecated') \
         && !fact('github.archived') && timestamp(entity.metadata.annotations['backstage.io/reviewed']) > now - duration('720h')",
    )
    .unwrap();
    let reads = rule.reads();
    let fields: Vec<_> = reads.fields.iter().map(String::as_str).collect();
    assert_eq!(fields, ["metadata.annotations", "metadata.annotations.backstage.io/reviewed", "spec.lifecycle"]);
    assert_eq!(reads.relations.iter().copied().collect::<Vec<_>>(), [Relation::Owner, Relation::Dependents]);
    assert_eq!(reads.facts.iter().map(String::as_str).collect::<Vec<_>>(), ["github.archived"]);
    assert!(reads.now);
    assert!(!Rule::compile("entity.spec.type == 'service'").unwrap().reads().now);
}

#[test]
fn every_problem_in_a_rule_is_reported_where_it_is() {
    let problems = Rule::compile("entty.kind == 'Component' &&\n  ownr() != null").unwrap_err();
    let messages: Vec<_> = problems.iter().map(|problem| (problem.line, problem.message.as_str())).collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(messages[0].1.contains("unknown variable `entty`") && messages[0].0 == 1, "{messages:?}");
    assert!(messages[1].1.contains("unknown function `ownr`") && messages[1].0 == 2, "{messages:?}");

    let syntax = Rule::compile("entity.kind == ").unwrap_err();
    assert!(syntax[0].line == 1 && syntax[0].column > 1, "{syntax:?}");
    assert!(Rule::compile("fact(entity.kind)").unwrap_err()[0].message.contains("one name in quotes"));
    assert!(Rule::compile("owner(1) == null").unwrap_err()[0].message.contains("takes no argument"));
    let nested = "dependencies().all(a, dependents().all(b, members().all(c, c == a)))";
    assert!(Rule::compile(nested).unwrap_err()[0].message.contains("nest deeper"));
    // Standard functions and macros are known.
    Rule::compile("size(entity.metadata.name) < 64 && entity.metadata.name.matches('^[a-z-]+$')").unwrap();
    Rule::compile("has(entity.spec.system) && [1, 2].exists(x, x == 2)").unwrap();
}

#[test]
fn a_failure_says_which_part_failed_where_it_looked_and_what_it_found() {
    let rule = Rule::compile(
        "entity.spec.lifecycle == 'production' && 'pagerduty.com/service-id' in entity.metadata.annotations",
    )
    .unwrap();
    let passing = Subject::new(service("production", json!({"pagerduty.com/service-id": "P123"})), now());
    assert_eq!(rule.evaluate(&passing).status, RuleStatus::Pass);
    assert_eq!(rule.evaluate(&passing).explanation, None);

    let outcome = rule.evaluate(&Subject::new(service("production", json!({})), now()));
    assert_eq!(outcome.status, RuleStatus::Fail);
    let explanation = outcome.explanation.unwrap();
    assert_eq!(explanation.expression, "'pagerduty.com/service-id' in entity.metadata.annotations");
    assert_eq!(explanation.path.as_deref(), Some("metadata.annotations.pagerduty.com/service-id"));
    assert_eq!(explanation.expected, "present");
    assert_eq!(explanation.actual, Value::Null);

    let explanation = rule.evaluate(&Subject::new(service("experimental", json!({})), now())).explanation.unwrap();
    assert_eq!(explanation.expression, "entity.spec.lifecycle == 'production'");
    assert_eq!(explanation.path.as_deref(), Some("spec.lifecycle"));
    assert_eq!(explanation.expected, r#"== "production""#);
    assert_eq!(explanation.actual, json!("experimental"));

    let named = Rule::compile("size(entity.metadata.tags) >= 0 && entity.metadata.name.matches('^[a-z]+$')").unwrap();
    let mut capitalised = service("production", json!({}));
    capitalised["metadata"]["name"] = json!("Payments");
    let explanation = named.evaluate(&Subject::new(capitalised, now())).explanation.unwrap();
    assert_eq!(explanation.expression, "entity.metadata.name.matches('^[a-z]+$')");
    assert_eq!((explanation.path.as_deref(), explanation.actual), (Some("metadata.name"), json!("Payments")));

    let has = Rule::compile("has(entity.spec.system)").unwrap();
    let explanation = has.evaluate(&Subject::new(service("production", json!({})), now())).explanation.unwrap();
    assert_eq!((explanation.path.as_deref(), explanation.expected.as_str()), (Some("spec.system"), "present"));
}

#[test]
fn relations_are_read_through_functions() {
    let rule = Rule::compile("owner() != null && size(owner().spec.members) > 0").unwrap();
    let alone = Subject::new(service("production", json!({})), now());
    let outcome = rule.evaluate(&alone);
    assert_eq!(outcome.status, RuleStatus::Fail);
    assert_eq!(outcome.explanation.unwrap().actual, Value::Null, "no owner resolved");

    let team = json!({"kind": "Group", "metadata": {"name": "team-a"}, "spec": {"members": ["alice"]}});
    let owned = alone.clone().with_related(Relation::Owner, vec![team]);
    assert_eq!(rule.evaluate(&owned).status, RuleStatus::Pass);

    let dependents = Rule::compile("dependents().all(d, d.spec.lifecycle != 'deprecated')").unwrap();
    let old = json!({"kind": "Component", "metadata": {"name": "old"}, "spec": {"lifecycle": "deprecated"}});
    let depended = alone.with_related(Relation::Dependents, vec![old]);
    assert_eq!(dependents.evaluate(&depended).status, RuleStatus::Fail);
}

#[test]
fn a_related_entity_s_relations_are_read_by_giving_it_to_the_function() {
    let rule = Rule::compile("owner() != null && size(members(owner())) > 0").unwrap();
    assert_eq!(rule.reads().relations.iter().copied().collect::<Vec<_>>(), [Relation::Owner]);
    assert_eq!(rule.reads().nested.iter().copied().collect::<Vec<_>>(), [Relation::Members]);
    let team = json!({"kind": "Group", "metadata": {"name": "Team-A"}, "spec": {}});
    let alice = json!({"kind": "User", "metadata": {"name": "alice"}, "spec": {}});
    let owned = Subject::new(service("production", json!({})), now()).with_related(Relation::Owner, vec![team]);
    let outcome = rule.evaluate(&owned);
    assert_eq!(outcome.status, RuleStatus::Fail, "a team without members");
    assert_eq!(outcome.explanation.unwrap().expression, "size(members(owner())) > 0");
    let staffed = owned.with_nested(Relation::Members, "group:default/team-a", vec![alice]);
    assert_eq!(rule.evaluate(&staffed).status, RuleStatus::Pass);
    // No owner: the nested call sees null and answers an empty list, not an error.
    let alone = Subject::new(service("production", json!({})), now());
    let nested_only = Rule::compile("size(members(owner())) == 0").unwrap();
    assert_eq!(nested_only.evaluate(&alone).status, RuleStatus::Pass);

    let problems = Rule::compile("members(owner(), system()) == []").unwrap_err();
    assert!(problems[0].message.contains("takes no argument"), "{problems:?}");
    assert!(Rule::compile("owner().members() == []").is_err(), "not a method");
}

#[test]
fn a_missing_or_expired_fact_is_unknown_not_failed() {
    let rule = Rule::compile("!fact('github.archived')").unwrap();
    let subject = Subject::new(service("production", json!({})), now());
    let outcome = rule.evaluate(&subject);
    assert_eq!(outcome.status, RuleStatus::Unknown);
    assert_eq!(outcome.explanation.unwrap().path.as_deref(), Some("facts.github.archived"));

    let fact = |value: bool, age_hours: i64| Fact {
        value: json!(value),
        observed_at: now() - Duration::hours(age_hours),
        ttl: Duration::hours(24),
    };
    let stale = subject.clone().with_fact("github.archived", fact(false, 48));
    assert_eq!(rule.evaluate(&stale).status, RuleStatus::Unknown);
    let current = subject.clone().with_fact("github.archived", fact(false, 1));
    assert_eq!(rule.evaluate(&current).status, RuleStatus::Pass);
    let archived = subject.clone().with_fact("github.archived", fact(true, 1));
    assert_eq!(rule.evaluate(&archived).status, RuleStatus::Fail);

    // Decided without the fact: CEL's `||` absorbs the error.
    assert_eq!(Rule::compile("fact('github.archived') || true").unwrap().evaluate(&subject).status, RuleStatus::Pass);
}

#[test]
fn a_rule_that_does_not_give_a_boolean_is_an_error() {
    let outcome =
        Rule::compile("entity.metadata.name").unwrap().evaluate(&Subject::new(service("x", json!({})), now()));
    assert_eq!(outcome.status, RuleStatus::Error);
    assert!(outcome.explanation.unwrap().actual.as_str().unwrap().contains("must give a boolean"));
}

const READINESS: &str = r#"
id: production-readiness
title: Production readiness
owner: group:default/platform
appliesTo:
  kind: [Component]
  type: [service]
levels:
  - name: Bronze
    rules:
      - id: has-owner
        title: Has an owner
        expression: has(entity.spec.owner)
        weight: 3
  - name: Silver
    rules:
      - id: on-call
        title: Has a PagerDuty service
        expression: "'pagerduty.com/service-id' in entity.metadata.annotations"
      - id: runbook
        title: Links a runbook
        expression: "'runbook' in entity.metadata.annotations"
        enforceFrom: 2027-06-01
exemptions:
  - rule: on-call
    selector:
      entities: [component:default/payments]
    reason: Paged through the legacy rota until the migration
    expires: 2027-03-01
    approvedBy: user:default/alice
"#;

#[test]
fn a_scorecard_gives_a_level_a_score_and_each_rule_result() {
    let scorecard = Scorecard::parse(READINESS).unwrap();
    assert_eq!(scorecard.levels().collect::<Vec<_>>(), ["Bronze", "Silver"]);

    let other =
        json!({"kind": "Component", "metadata": {"name": "checkout"}, "spec": {"type": "service", "owner": "team-a"}});
    let score = scorecard.evaluate(&Subject::new(other, now())).unwrap();
    assert_eq!(score.level.as_deref(), Some("Bronze"));
    // on-call fails (weight 1); the runbook rule is not enforced yet and does not count.
    assert_eq!(score.score, 75.0);
    let runbook = score.rules.iter().find(|result| result.rule == "runbook").unwrap();
    assert!(!runbook.enforced);
    assert_eq!(runbook.status, RuleStatus::Fail, "shown before it counts");

    // The exemption lifts payments to Silver until it expires.
    let payments = Subject::new(service("production", json!({})), now());
    let score = scorecard.evaluate(&payments).unwrap();
    assert_eq!(score.level.as_deref(), Some("Silver"));
    let on_call = score.rules.iter().find(|result| result.rule == "on-call").unwrap();
    assert_eq!(on_call.status, RuleStatus::Fail);
    assert_eq!(on_call.exemption.as_ref().unwrap().approved_by, "user:default/alice");
    let later = Subject { now: Utc.with_ymd_and_hms(2027, 3, 1, 0, 0, 0).unwrap(), ..payments.clone() };
    assert_eq!(scorecard.evaluate(&later).unwrap().level.as_deref(), Some("Bronze"), "expired: applies no more");

    // From its enforceFrom date the runbook rule counts.
    let june = Subject { now: Utc.with_ymd_and_hms(2027, 6, 1, 0, 0, 0).unwrap(), ..payments };
    let score = scorecard.evaluate(&june).unwrap();
    assert_eq!(score.score, 60.0);

    let api = json!({"kind": "API", "metadata": {"name": "payments-api"}, "spec": {"type": "openapi"}});
    assert!(scorecard.evaluate(&Subject::new(api, now())).is_none(), "appliesTo leaves it out");
}

#[test]
fn a_scorecard_file_with_problems_is_refused_with_every_one_located() {
    let broken = READINESS
        .replace("has(entity.spec.owner)", "has(entity.spec.owner) &&")
        .replace("id: runbook", "id: on-call")
        .replace("expires: 2027-03-01", "expires: next spring")
        .replace("weight: 3", "weight: 0");
    let error = Scorecard::parse(&broken).unwrap_err();
    let places: Vec<_> = error.problems.iter().map(|problem| problem.at.as_str()).collect();
    assert_eq!(
        places,
        [
            "levels[0].rules[0].weight",
            "levels[0].rules[0].expression",
            "levels[1].rules[1].id",
            "exemptions[0].expires"
        ],
        "{error}"
    );
    let unknown = Scorecard::parse(&READINESS.replace("appliesTo:", "appliesTwo:")).unwrap_err();
    assert!(unknown.to_string().contains("unknown field `appliesTwo`"), "{unknown}");
    let missing_rule = Scorecard::parse(&READINESS.replace("rule: on-call", "rule: paging")).unwrap_err();
    assert_eq!(missing_rule.problems[0].at, "exemptions[0].rule");
}
