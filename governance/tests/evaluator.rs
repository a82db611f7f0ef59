//! Scorecards applied to a stored catalog and kept current from its change
//! log, on both databases: results stored with the time since they hold,
//! re-evaluation through relations (an owner deleted and restored), updates
//! to fields no rule reads left alone, exemptions that expire, the history
//! of transitions, a restart that finds nothing to write, and a changed
//! scorecard previewed against the results in force.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use catalog_domain::{Entity, EntityRef};
use catalog_governance::{
    Evaluator, LoadedScorecard, RuleStatus, RuleTransition, STALENESS, StalenessSettings, StoredResult, Summary,
    preview, staleness_scorecard,
};
use catalog_store::testing::one_location_snapshot;
use catalog_store::{Filter, FilterField, ListQuery, Predicate, Store, StoredScore};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;

catalog_store::backend_tests!(
    scores_follow_the_catalog_through_relations_and_time,
    a_member_leaving_or_joining_the_owner_re_evaluates_what_it_owns,
    a_restart_keeps_results_and_a_removed_scorecard_takes_its_results,
    staleness_follows_the_owner_and_the_clock_and_is_a_filter_key
);

fn entity(value: serde_json::Value) -> Entity {
    serde_json::from_value(value).unwrap()
}

fn component(name: &str, description: &str, annotations: serde_json::Value) -> Entity {
    entity(json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "description": description, "annotations": annotations},
        "spec": {"type": "service", "lifecycle": "production", "owner": "team-a"}
    }))
}

fn team() -> Entity {
    entity(json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Group",
        "metadata": {"name": "team-a"},
        "spec": {"type": "team", "children": []}
    }))
}

const OWNERSHIP: &str = r#"
id: ownership
title: Ownership
owner: group:default/platform
appliesTo: { kind: [Component] }
levels:
  - name: Owned
    rules:
      - id: owner-resolves
        title: The owner is a Group
        expression: owner() != null && owner().kind == 'Group'
"#;

const ON_CALL: &str = r#"
id: on-call
title: On call
owner: group:default/platform
appliesTo: { kind: [Component] }
levels:
  - name: Paged
    rules:
      - id: pagerduty
        title: Has a PagerDuty service
        expression: "'pagerduty.com/service-id' in entity.metadata.annotations"
exemptions:
  - rule: pagerduty
    selector: { entities: [component:default/checkout] }
    reason: moving to a new rotation
    expires: 2027-02-01
    approvedBy: user:default/alice
"#;

fn at(month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, month, day, 0, 0, 0).unwrap()
}

fn scorecards(sources: &[&str]) -> Vec<LoadedScorecard> {
    sources.iter().map(|source| LoadedScorecard::parse(source).unwrap()).collect()
}

fn component_ref(name: &str) -> EntityRef {
    EntityRef::parse(&format!("component:default/{name}")).unwrap()
}

async fn score(store: &Store, name: &str, scorecard: &str) -> Option<StoredScore> {
    let scores = store.score_store().scores_for(&[component_ref(name)]).await.unwrap();
    scores.into_iter().find(|score| score.scorecard == scorecard)
}

fn results(score: &StoredScore) -> Vec<StoredResult> {
    serde_json::from_value(score.results.clone()).unwrap()
}

async fn scores_follow_the_catalog_through_relations_and_time(store: Store) {
    let writer = store.snapshot_writer();
    let catalog = |checkout_description: &str, with_team: bool| {
        let mut entities = vec![
            component("payments", "takes payments", json!({"pagerduty.com/service-id": "P1"})),
            component("checkout", checkout_description, json!({})),
        ];
        if with_team {
            entities.push(team());
        }
        one_location_snapshot("file", entities)
    };
    writer.apply_snapshot(&catalog("the basket", true)).await.unwrap();
    let mut evaluator = Evaluator::new(store.catalog(), store.change_feed(), store.score_store());
    let pass = evaluator.apply(scorecards(&[OWNERSHIP, ON_CALL]), true, at(1, 1)).await.unwrap();
    assert_eq!((pass.evaluated, pass.written, pass.transitions), (4, 4, 4), "two components, two scorecards");

    let payments = score(&store, "payments", "ownership").await.unwrap();
    assert_eq!(payments.level.as_deref(), Some("Owned"));
    let checkout = score(&store, "checkout", "on-call").await.unwrap();
    assert_eq!(checkout.level.as_deref(), Some("Paged"), "exempt until February");
    let result = &results(&checkout)[0];
    assert_eq!(result.status, RuleStatus::Fail);
    assert_eq!(result.exemption.as_ref().unwrap().reason, "moving to a new rotation");
    assert_eq!(
        result.explanation.as_ref().unwrap().path.as_deref(),
        Some("metadata.annotations.pagerduty.com/service-id")
    );

    // The owner deleted: both components read it, so both are evaluated again.
    writer.apply_snapshot(&catalog("the basket", false)).await.unwrap();
    let pass = evaluator.catch_up(at(1, 2)).await.unwrap();
    assert_eq!(pass.evaluated, 2, "the two components under ownership; on-call reads no relation");
    let payments = score(&store, "payments", "ownership").await.unwrap();
    assert_eq!(payments.level, None);
    let owner = &results(&payments)[0];
    assert_eq!((owner.status, owner.since), (RuleStatus::Fail, at(1, 2)));
    assert_eq!(owner.explanation.as_ref().unwrap().expression, "owner() != null");
    let on_call = score(&store, "payments", "on-call").await.unwrap();
    assert_eq!(results(&on_call)[0].since, at(1, 1), "a result that held keeps its time");
    let history =
        store.score_store().score_history(&component_ref("payments"), Some("ownership"), None, 10).await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!((history[0].level_before.as_deref(), history[0].level.as_deref()), (Some("Owned"), None));
    let moved: Vec<RuleTransition> = serde_json::from_value(history[0].rules.clone()).unwrap();
    assert_eq!(
        moved,
        [RuleTransition { rule: "owner-resolves".into(), from: Some(RuleStatus::Pass), to: Some(RuleStatus::Fail) }]
    );

    // The owner back: found through the components' edges to it, not a past read.
    writer.apply_snapshot(&catalog("the basket", true)).await.unwrap();
    let pass = evaluator.catch_up(at(1, 3)).await.unwrap();
    assert_eq!(pass.evaluated, 2);
    assert_eq!(score(&store, "checkout", "ownership").await.unwrap().level.as_deref(), Some("Owned"));

    // A field no on-call rule reads: only ownership (which reads relations) looks again.
    writer.apply_snapshot(&catalog("the shopping basket", true)).await.unwrap();
    let pass = evaluator.catch_up(at(1, 4)).await.unwrap();
    assert_eq!((pass.evaluated, pass.written), (1, 0), "checkout under ownership, unchanged");

    // Nothing moves with time until the exemption expires.
    assert_eq!(evaluator.next_boundary(at(1, 4)), Some(at(2, 1)));
    let pass = evaluator.reevaluate_timed(at(1, 4), at(1, 20)).await.unwrap();
    assert_eq!(pass.evaluated, 0);
    evaluator.reevaluate_timed(at(1, 20), at(2, 1)).await.unwrap();
    let checkout = score(&store, "checkout", "on-call").await.unwrap();
    assert_eq!(checkout.level, None, "the exemption expired by itself");
    let result = &results(&checkout)[0];
    assert_eq!((result.exemption.is_none(), result.since), (true, at(2, 1)));
    let summary: Summary =
        serde_json::from_value(store.score_store().scorecards().await.unwrap()[0].summary.clone()).unwrap();
    assert_eq!(summary.evaluated, 2);
    let rule = &summary.rules[0];
    assert_eq!((rule.rule.as_str(), rule.pass, rule.fail, rule.exempt), ("pagerduty", 1, 1, 0));
}

async fn a_restart_keeps_results_and_a_removed_scorecard_takes_its_results(store: Store) {
    let entities = vec![component("payments", "takes payments", json!({}))];
    store.snapshot_writer().apply_snapshot(&one_location_snapshot("file", entities)).await.unwrap();
    let mut first = Evaluator::new(store.catalog(), store.change_feed(), store.score_store());
    first.apply(scorecards(&[OWNERSHIP, ON_CALL]), true, at(1, 1)).await.unwrap();

    let mut second = Evaluator::new(store.catalog(), store.change_feed(), store.score_store());
    let pass = second.apply(scorecards(&[OWNERSHIP, ON_CALL]), true, at(1, 5)).await.unwrap();
    assert_eq!((pass.evaluated, pass.written, pass.transitions), (2, 0, 0), "the stored results still hold");
    let on_call = score(&store, "payments", "on-call").await.unwrap();
    assert_eq!(results(&on_call)[0].since, at(1, 1));

    // The change previewed against the results in force, storing nothing.
    let changed = OWNERSHIP.replace("owner() != null && owner().kind == 'Group'", "owner() == null");
    let stored = store.score_store().scores_of("ownership").await.unwrap();
    let candidate = LoadedScorecard::parse(&changed).unwrap();
    let preview = preview(&store.catalog(), &candidate.scorecard, at(1, 6), &stored, None).await.unwrap();
    assert_eq!(preview.moves.len(), 1);
    let moved = &preview.moves[0];
    assert_eq!((moved.level_before.as_deref(), moved.level.as_deref()), (None, Some("Owned")));
    assert_eq!(
        moved.rules,
        [RuleTransition { rule: "owner-resolves".into(), from: Some(RuleStatus::Fail), to: Some(RuleStatus::Pass) }]
    );
    assert_eq!(score(&store, "payments", "ownership").await.unwrap().level, None, "a preview stores nothing");

    // A changed rule is evaluated again; a scorecard no longer listed goes with its results.
    let pass = second.apply(scorecards(&[&changed]), true, at(1, 6)).await.unwrap();
    assert_eq!((pass.evaluated, pass.transitions), (1, 1));
    assert!(score(&store, "payments", "on-call").await.is_none());
    let ids: Vec<String> =
        store.score_store().scorecards().await.unwrap().into_iter().map(|record| record.id).collect();
    assert_eq!(ids, ["ownership"]);
    assert_eq!(score(&store, "payments", "ownership").await.unwrap().level.as_deref(), Some("Owned"));

    // Retention takes the history, never the current scores.
    let history = |store: Store| async move {
        store.score_store().score_history(&component_ref("payments"), None, None, 100).await.unwrap().len()
    };
    assert!(history(store.clone()).await > 0);
    let kept = store.maintenance().purge_score_changes(Utc::now() - chrono::Duration::days(1)).await.unwrap();
    assert_eq!(kept, 0, "nothing is a day old");
    let purged = store.maintenance().purge_score_changes(Utc::now() + chrono::Duration::seconds(1)).await.unwrap();
    assert!(purged > 0);
    assert_eq!(history(store.clone()).await, 0);
    assert!(score(&store, "payments", "ownership").await.is_some());
}

fn user(name: &str, groups: &[&str]) -> Entity {
    entity(json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "User",
        "metadata": {"name": name},
        "spec": {"memberOf": groups}
    }))
}

const STAFFED: &str = r#"
id: staffed
title: Staffed
owner: group:default/platform
appliesTo: { kind: [Component] }
levels:
  - name: Staffed
    rules:
      - id: owner-has-members
        title: The owner is a Group with at least one member
        expression: owner() != null && owner().kind == 'Group' && size(members(owner())) > 0
"#;

async fn a_member_leaving_or_joining_the_owner_re_evaluates_what_it_owns(store: Store) {
    let writer = store.snapshot_writer();
    let catalog = |members: &[&str]| {
        let mut entities = vec![team(), component("payments", "takes payments", json!({}))];
        entities.push(user("alice", members));
        one_location_snapshot("file", entities)
    };
    writer.apply_snapshot(&catalog(&["team-a"])).await.unwrap();
    let mut evaluator = Evaluator::new(store.catalog(), store.change_feed(), store.score_store());
    evaluator.apply(scorecards(&[STAFFED]), true, at(1, 1)).await.unwrap();
    assert_eq!(score(&store, "payments", "staffed").await.unwrap().level.as_deref(), Some("Staffed"));

    // Alice leaves: the component read her through its owner's members.
    writer.apply_snapshot(&catalog(&[])).await.unwrap();
    let pass = evaluator.catch_up(at(1, 2)).await.unwrap();
    assert_eq!(pass.evaluated, 1, "the component, not the user");
    let payments = score(&store, "payments", "staffed").await.unwrap();
    assert_eq!(payments.level, None);
    assert_eq!(results(&payments)[0].explanation.as_ref().unwrap().expression, "size(members(owner())) > 0");

    // Alice joins again: found two hops away (her group, then what it owns).
    writer.apply_snapshot(&catalog(&["team-a"])).await.unwrap();
    evaluator.catch_up(at(1, 3)).await.unwrap();
    assert_eq!(score(&store, "payments", "staffed").await.unwrap().level.as_deref(), Some("Staffed"));
}

fn stale(store_names: &catalog_store::EntityPage) -> Vec<String> {
    store_names.entities.iter().map(|stored| stored.entity_ref.to_string()).collect()
}

async fn staleness_follows_the_owner_and_the_clock_and_is_a_filter_key(store: Store) {
    let writer = store.snapshot_writer();
    let with_team = |team_too: bool| {
        let mut entities = vec![component("payments", "takes payments", json!({}))];
        if team_too {
            entities.push(team());
        }
        one_location_snapshot("file", entities)
    };
    writer.apply_snapshot(&with_team(true)).await.unwrap();
    // No provider with facts: only the catalog's own reasons apply.
    let settings = StalenessSettings {
        unchanged_days: 30,
        repository_unchanged_days: 90,
        not_seen_days: 30,
        owner: "group:default/platform".into(),
        github: false,
        kubernetes: false,
        pagerduty: false,
    };
    let mut evaluator = Evaluator::new(store.catalog(), store.change_feed(), store.score_store());
    let now = Utc::now();
    evaluator.apply(vec![staleness_scorecard(&settings).unwrap()], true, now).await.unwrap();
    let failing = |score: &StoredScore| -> Vec<String> {
        results(score)
            .into_iter()
            .filter(|result| result.status == RuleStatus::Fail)
            .map(|result| result.rule)
            .collect()
    };
    let payments = score(&store, "payments", STALENESS).await.unwrap();
    assert_eq!(failing(&payments), ["owner-without-members"], "team-a has no members");

    let query = |filter: Filter| ListQuery { filter: Some(filter), limit: 10, ..Default::default() };
    let stale_key = |predicate: Predicate| Filter::Field { field: FilterField::from_key("stale"), predicate };
    let page = store.catalog().list_entities(&query(stale_key(Predicate::Exists(true)))).await.unwrap();
    assert_eq!(stale(&page), ["component:default/payments"]);
    let page = store.catalog().list_entities(&query(stale_key(Predicate::In(vec!["unchanged".into()])))).await.unwrap();
    assert_eq!(stale(&page), Vec::<String>::new());

    // The owner gone: evaluated again through the relation.
    writer.apply_snapshot(&with_team(false)).await.unwrap();
    evaluator.catch_up(now).await.unwrap();
    let payments = score(&store, "payments", STALENESS).await.unwrap();
    assert_eq!(failing(&payments), ["owner-missing"]);

    // Forty days on, unchanged since it was stored and its location not
    // read since (as far as this clock knows): the clock alone makes it
    // stale for both reasons.
    let later = now + chrono::Duration::days(40);
    evaluator.reevaluate_timed(now, later).await.unwrap();
    let payments = score(&store, "payments", STALENESS).await.unwrap();
    assert_eq!(failing(&payments), ["owner-missing", "unchanged", "not-seen"]);
    let not_seen = results(&payments).into_iter().find(|result| result.rule == "not-seen").unwrap();
    assert_eq!(not_seen.explanation.unwrap().path.as_deref(), Some("facts.catalog.seenAt"));
    let unchanged = results(&payments).into_iter().find(|result| result.rule == "unchanged").unwrap();
    assert_eq!(unchanged.since, later);
    assert_eq!(unchanged.explanation.unwrap().path.as_deref(), Some("facts.catalog.updatedAt"));
    let page = store.catalog().list_entities(&query(stale_key(Predicate::In(vec!["unchanged".into()])))).await.unwrap();
    assert_eq!(stale(&page), ["component:default/payments"]);
}
