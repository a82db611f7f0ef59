//! Admission policies end to end: files on disk, a provider run through the
//! real engine, the results read over GraphQL. An `enforce` policy refuses a
//! new entity (never stored) and keeps a known one at its last good version
//! with the error naming the rule; a `warn` policy admits with the
//! violation on the entity, cleared when the entity is fixed; a policy that
//! would refuse too much of a snapshot is held back and reported.

use std::path::Path;

use catalog_store::backend_tests;
use catalog_store::testing::TestDatabase;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_with};

backend_tests!(admission_policies_refuse_warn_and_hold_back_end_to_end);

const ENFORCED: &str = r#"
id: basics
title: Basics
mode: enforce
appliesTo: { providers: [file], kinds: [Component] }
rules:
  - id: owner-resolves
    ownerResolves: true
  - id: has-slug
    requiredAnnotations: [github.com/project-slug]
"#;

const WARNED: &str = r#"
id: described
title: Described
mode: warn
appliesTo: { kinds: [Component] }
rules:
  - id: description
    expression: has(entity.metadata.description) && entity.metadata.description != ''
"#;

/// A component document; `slug` adds the annotation `basics` requires.
fn component(name: &str, owner: &str, slug: bool, description: Option<&str>) -> String {
    let annotations =
        if slug { format!("\n  annotations:\n    github.com/project-slug: acme/{name}") } else { String::new() };
    let description = description.map(|text| format!("\n  description: {text}")).unwrap_or_default();
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}{description}{annotations}\n\
         spec:\n  type: service\n  lifecycle: production\n  owner: {owner}\n"
    )
}

const TEAM: &str =
    "apiVersion: backstage.io/v1alpha1\nkind: Group\nmetadata:\n  name: team-a\nspec:\n  type: team\n  children: []\n";

fn write_catalog(root: &Path, documents: &[String]) {
    let mut all = vec![TEAM.to_owned()];
    all.extend(documents.iter().cloned());
    std::fs::write(root.join("catalog-info.yaml"), all.join("---\n")).unwrap();
}

async fn entity(app: &TestApp, entity_ref: &str) -> Value {
    let query = r#"query ($ref: String!) { entity(ref: $ref) {
        entityRef processingErrors annotations { key value }
        policyViolations { policy rule mode message explanation { path expected actual } } } }"#;
    app.query(query, json!({"ref": entity_ref})).await["entity"].clone()
}

async fn file_provider(app: &TestApp) -> Value {
    let query = "{ providers { name lastRefused lastAdmittedWithViolations heldBackPolicies } }";
    let data = app.query(query, json!({})).await;
    data["providers"].as_array().unwrap().iter().find(|provider| provider["name"] == "file").unwrap().clone()
}

async fn admission_policies_refuse_warn_and_hold_back_end_to_end(database: TestDatabase) {
    let catalog = tempfile::tempdir().unwrap();
    let root = catalog.path();
    std::fs::create_dir(root.join("policies")).unwrap();
    std::fs::write(root.join("policies/basics.yaml"), ENFORCED).unwrap();
    std::fs::write(root.join("policies/described.yaml"), WARNED).unwrap();
    // The owner is in the same file: admission resolves it from the snapshot.
    write_catalog(root, &[component("payments", "team-a", true, Some("Takes payments"))]);
    let app = spawn_app_with(&database.url.clone(), root, Some(database), |config| {
        config.governance.enabled = true;
    })
    .await;
    let payments = entity(&app, "component:default/payments").await;
    assert_eq!(payments["policyViolations"], json!([]), "{payments}");

    // A new entity that breaks the enforced policy is refused, naming the
    // rule; one that breaks only the warned one is admitted with it; a known
    // one that now breaks the enforced policy keeps its last good version.
    write_catalog(
        root,
        &[
            component("payments", "team-a", false, Some("Takes payments")),
            component("orphan", "team-nobody", true, Some("Nobody owns it")),
            component("ledger", "team-a", true, None),
        ],
    );
    let run = app.engine.run_provider("file").await.unwrap().unwrap();
    assert_eq!(run.summary.added, 1, "only the ledger is added: {:?}", run.summary);
    assert_eq!(entity(&app, "component:default/orphan").await, Value::Null);
    let locations = app.query("{ locations { target error } }", json!({})).await;
    let error = locations["locations"][0]["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("component:default/orphan refused") && error.contains(r#"rule "owner-resolves""#),
        "{error}"
    );

    let payments = entity(&app, "component:default/payments").await;
    let errors = payments["processingErrors"].to_string();
    assert!(errors.contains(r#"rule \"has-slug\""#) && errors.contains("github.com/project-slug"), "{errors}");
    assert!(payments["annotations"].to_string().contains("acme/payments"), "the last good version stays: {payments}");

    let ledger = entity(&app, "component:default/ledger").await;
    let violations = ledger["policyViolations"].as_array().unwrap();
    assert_eq!(violations.len(), 1, "{ledger}");
    assert_eq!(
        (violations[0]["policy"].as_str(), violations[0]["rule"].as_str()),
        (Some("described"), Some("description"))
    );
    assert_eq!(violations[0]["mode"], "warn");
    assert_eq!(violations[0]["explanation"]["path"], "metadata.description", "{ledger}");
    let provider = file_provider(&app).await;
    assert_eq!((provider["lastRefused"].as_u64(), provider["lastAdmittedWithViolations"].as_u64()), (Some(2), Some(1)));

    // Fixed at the source, the entities carry nothing any more.
    write_catalog(
        root,
        &[
            component("payments", "team-a", true, Some("Takes payments")),
            component("ledger", "team-a", true, Some("Keeps the books")),
        ],
    );
    app.engine.run_provider("file").await.unwrap().unwrap();
    assert_eq!(entity(&app, "component:default/ledger").await["policyViolations"], json!([]));
    assert_eq!(entity(&app, "component:default/payments").await["processingErrors"], json!([]));

    // A policy that would refuse most of the provider's entities (a typo
    // in an annotation key, say) is held back: they are admitted carrying
    // its violations, and the provider reports it.
    let mut documents: Vec<String> =
        (0..12).map(|index| component(&format!("service-{index}"), "team-a", false, Some("A service"))).collect();
    documents.push(component("payments", "team-a", true, Some("Takes payments")));
    write_catalog(root, &documents);
    let run = app.engine.run_provider("file").await.unwrap().unwrap();
    assert_eq!(run.summary.added, 12, "{:?}", run.summary);
    let provider = file_provider(&app).await;
    assert_eq!(provider["heldBackPolicies"], json!(["basics: 12 of 14 entities"]), "{provider}");
    assert_eq!(provider["lastRefused"], 0);
    let held = entity(&app, "component:default/service-3").await;
    assert_eq!(held["policyViolations"][0]["mode"], "held-back", "{held}");
    assert_eq!(held["policyViolations"][0]["rule"], "has-slug", "{held}");
}
