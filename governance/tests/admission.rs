//! Admission over a stored catalog, on both databases: an owner held by
//! another provider resolves through the catalog (one read for the whole
//! snapshot), a refused entity leaves the snapshot for its invalid list
//! with the policy and rule named, a policy applies only to its providers
//! and location patterns, and what is admitted with a violation is stored
//! with it.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use catalog_domain::Entity;
use catalog_governance::{Admission, Policy};
use catalog_store::testing::one_location_snapshot;
use catalog_store::{LocationStatus, Snapshot, SnapshotEntity, Store};
use chrono::Utc;
use serde_json::json;

catalog_store::backend_tests!(an_owner_from_another_provider_resolves_and_violations_are_stored);

fn entity(value: serde_json::Value) -> Entity {
    serde_json::from_value(value).unwrap()
}

fn component(name: &str, owner: &str) -> Entity {
    entity(json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {"type": "service", "lifecycle": "production", "owner": owner}
    }))
}

const POLICIES: [&str; 2] = [
    r#"
id: owned
title: Owned
mode: enforce
appliesTo: { providers: [file], locations: ["services/**"] }
rules:
  - id: owner-resolves
    ownerResolves: true
"#,
    r#"
id: systems
title: In a system
mode: warn
appliesTo: { kinds: [Component] }
rules:
  - id: has-system
    expression: system() != null
"#,
];

async fn an_owner_from_another_provider_resolves_and_violations_are_stored(store: Store) {
    let team = entity(json!({
        "apiVersion": "backstage.io/v1alpha1", "kind": "Group",
        "metadata": {"name": "team-a"}, "spec": {"type": "team", "children": []}
    }));
    store.snapshot_writer().apply_snapshot(&one_location_snapshot("org", vec![team])).await.unwrap();

    let admission = Admission::new(store.catalog(), 0.5);
    admission.set_policies(POLICIES.iter().map(|text| Policy::parse(text).unwrap()).collect());
    let item = |entity: Entity, location: &str| SnapshotEntity::new(entity, Some(location.to_owned()));
    let mut snapshot = Snapshot {
        provider: "file".into(),
        entities: vec![
            item(component("owned", "team-a"), "services/a.yaml"),
            item(component("orphan", "team-x"), "services/a.yaml"),
            // Outside the enforced policy's locations: only warned.
            item(component("elsewhere", "team-x"), "libraries/b.yaml"),
        ],
        locations: ["services/a.yaml", "libraries/b.yaml"]
            .map(|target| LocationStatus { target: target.into(), n_entities: 1, ..Default::default() })
            .into(),
        ..Default::default()
    };
    let as_read = snapshot.clone();
    let statements = store.statement_count();
    let report = admission.admit(&mut snapshot, Utc::now()).await.unwrap();
    assert_eq!(store.statement_count() - statements, 1, "one read for every owner the snapshot lacks");
    assert_eq!((report.refused, report.warned), (1, 2), "{report:?}");
    let admitted: Vec<&str> = snapshot.entities.iter().map(|item| item.entity.metadata.name.as_str()).collect();
    assert_eq!(admitted, ["owned", "elsewhere"]);
    assert_eq!(snapshot.invalid.len(), 1);
    assert_eq!(snapshot.invalid[0].entity_ref.as_str(), "component:default/orphan");
    assert!(snapshot.invalid[0].errors[0].contains(r#"admission policy "owned", rule "owner-resolves""#));
    assert!(snapshot.locations[0].error.as_deref().unwrap().contains("component:default/orphan refused"));
    assert_eq!(snapshot.locations[1].error, None);

    // The other provider's snapshot is not the owned policy's business.
    let mut other = one_location_snapshot("github", vec![component("other", "team-x")]);
    assert_eq!(admission.admit(&mut other, Utc::now()).await.unwrap().refused, 0);

    store.snapshot_writer().apply_snapshot(&snapshot).await.unwrap();
    let elsewhere = catalog_domain::EntityRef::parse("component:default/elsewhere").unwrap();
    let stored = store.catalog().entity_by_ref(&elsewhere).await.unwrap().unwrap();
    let rules: Vec<(&str, &str, &str)> = stored
        .violations
        .iter()
        .map(|violation| (violation.policy.as_str(), violation.rule.as_str(), violation.mode.as_str()))
        .collect();
    assert_eq!(rules, [("systems", "has-system", "warn")]);
    assert_eq!(stored.violations[0].explanation["expected"], "!= null", "{:?}", stored.violations[0]);

    // Applied again unchanged, nothing is written.
    let summary = store.snapshot_writer().apply_snapshot(&snapshot).await.unwrap();
    assert_eq!(summary.rows_written, 0, "{summary:?}");

    // The warn policy withdrawn: the unchanged entities lose their
    // violations, with no new version of them.
    admission.set_policies(vec![Policy::parse(POLICIES[0]).unwrap()]);
    let mut again = as_read;
    admission.admit(&mut again, Utc::now()).await.unwrap();
    let summary = store.snapshot_writer().apply_snapshot(&again).await.unwrap();
    assert_eq!((summary.updated, summary.unchanged, summary.rows_written), (0, 2, 2), "{summary:?}");
    let stored = store.catalog().entity_by_ref(&elsewhere).await.unwrap().unwrap();
    assert_eq!(stored.violations, []);
}
