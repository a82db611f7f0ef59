//! A scorecard previewed over a stored catalog, on both databases: levels,
//! pass rates, relations read from the store, and the failures listed with
//! their explanations.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use catalog_domain::Entity;
use catalog_governance::{RuleStatus, Scorecard, preview};
use catalog_store::Store;
use catalog_store::testing::one_location_snapshot;
use chrono::{TimeZone, Utc};
use serde_json::json;

catalog_store::backend_tests!(a_preview_counts_levels_and_rules_over_the_stored_catalog);

fn entity(value: serde_json::Value) -> Entity {
    serde_json::from_value(value).unwrap()
}

fn component(name: &str, owner: &str, annotations: serde_json::Value) -> Entity {
    entity(json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"type": "service", "lifecycle": "production", "owner": owner}
    }))
}

const SCORECARD: &str = r#"
id: ownership
title: Ownership hygiene
owner: group:default/platform
appliesTo: { kind: [Component] }
levels:
  - name: Owned
    rules:
      - id: owner-resolves
        title: The owner is a Group with members
        expression: owner() != null && owner().kind == 'Group' && size(members_of_owner()) > 0
"#;

async fn a_preview_counts_levels_and_rules_over_the_stored_catalog(store: Store) {
    let team = entity(json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Group",
        "metadata": {"name": "team-a"},
        "spec": {"type": "team", "children": [], "members": ["alice"]}
    }));
    let alice = entity(json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "User",
        "metadata": {"name": "alice"},
        "spec": {"memberOf": ["team-a"]}
    }));
    let entities = vec![
        team,
        alice,
        component("payments", "team-a", json!({"pagerduty.com/service-id": "P1"})),
        component("checkout", "team-a", json!({})),
        component("orphan", "team-gone", json!({})),
    ];
    store.snapshot_writer().apply_snapshot(&one_location_snapshot("file", entities)).await.unwrap();

    // An unknown function is refused before anything is read.
    let refused = Scorecard::parse(SCORECARD).unwrap_err();
    assert!(refused.problems[0].message.contains("unknown function `members_of_owner`"), "{refused}");

    let yaml = SCORECARD.replace("size(members_of_owner()) > 0", "size(owner().spec.members) > 0")
        + r#"
  - name: On call
    rules:
      - id: pagerduty
        title: Has a PagerDuty service
        expression: "'pagerduty.com/service-id' in entity.metadata.annotations"
"#;
    let scorecard = Scorecard::parse(&yaml).unwrap();
    let now = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
    let preview = preview(&store.catalog(), &scorecard, now, &[], None).await.unwrap();
    assert_eq!(preview.evaluated, 3, "the three components, not the group or the user");
    assert_eq!(
        preview.levels,
        [(None, 1), (Some("Owned".to_owned()), 1), (Some("On call".to_owned()), 1)],
        "orphan below Owned, checkout Owned, payments On call"
    );
    let owner = &preview.rules[0];
    assert_eq!((owner.rule.as_str(), owner.pass, owner.fail), ("owner-resolves", 2, 1));
    let pagerduty = &preview.rules[1];
    assert_eq!((pagerduty.pass, pagerduty.fail), (1, 2));

    let orphan = preview.failures.iter().find(|failure| failure.entity_ref == "component:default/orphan").unwrap();
    assert_eq!(orphan.result.rule, "owner-resolves");
    assert_eq!(orphan.result.status, RuleStatus::Fail);
    let explanation = orphan.result.explanation.as_ref().unwrap();
    assert_eq!(explanation.expression, "owner() != null");
    assert_eq!(explanation.actual, serde_json::Value::Null);
    assert_eq!(preview.failures.len(), 3, "orphan twice, checkout once");
    assert_eq!(preview.moves.len(), 3, "with nothing in force, every scored entity moves");
    assert!(preview.moves.iter().all(|moved| !moved.scored_before && moved.scored));
}
