//! Review end to end: a policy holds new components (and new owners) in
//! the review queue; a queued entity is in no list, count, facet or change
//! feed; the queue follows its source; a reviewer with `entity.approve`
//! approves or rejects, with an audit record, a change for an approval and
//! the decision on the `reviewEvents` subscription; a reader cannot.

use std::path::Path;

use catalog_api::auth::identity::Permission;
use catalog_store::backend_tests;
use catalog_store::testing::TestDatabase;
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code, spawn_app_with};
use crate::stream::{Protocol, Subscriber};

backend_tests!(
    new_entities_and_owner_changes_wait_for_a_reviewer_end_to_end,
    a_read_policy_hides_queued_entities_it_would_hide_once_stored,
);

pub(crate) const REVIEW: &str = r#"
id: review-new
title: New components are reviewed
appliesTo: { providers: [file], kinds: [Component] }
review: { newEntities: true, ownerChanges: true, ownerMembersMayApprove: true }
"#;

pub(crate) const ORG: &str = "apiVersion: backstage.io/v1alpha1\nkind: Group\nmetadata:\n  name: team-a\nspec:\n  type: team\n  children: []\n\
---\napiVersion: backstage.io/v1alpha1\nkind: Group\nmetadata:\n  name: team-b\nspec:\n  type: team\n  children: []\n\
---\napiVersion: backstage.io/v1alpha1\nkind: User\nmetadata:\n  name: carol\nspec:\n  memberOf: [team-a]\n";

pub(crate) fn component(name: &str, owner: &str, description: &str) -> String {
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n  description: {description}\n\
         spec:\n  type: service\n  lifecycle: production\n  owner: {owner}\n"
    )
}

pub(crate) fn write_catalog(root: &Path, components: &[String]) {
    let mut all = vec![ORG.to_owned()];
    all.extend(components.iter().cloned());
    std::fs::write(root.join("catalog-info.yaml"), all.join("---\n")).unwrap();
}

/// A catalog folder holding the review policy and `components` beside the org.
pub(crate) fn review_catalog(components: &[String]) -> tempfile::TempDir {
    let catalog = tempfile::tempdir().unwrap();
    std::fs::create_dir(catalog.path().join("policies")).unwrap();
    std::fs::write(catalog.path().join("policies/review.yaml"), REVIEW).unwrap();
    write_catalog(catalog.path(), components);
    catalog
}

async fn issue(app: &TestApp, name: &str, scopes: &[Permission]) -> String {
    catalog_api::auth::issue_token(&app.store.access_store(), name, scopes, None, "test").await.unwrap().token
}

const QUEUE: &str = "query ($status: ReviewStatus) { pendingEntities(status: $status) { entities {
    entityRef kind reason owner previousOwner policy provider status etag mayDecide updatedAt decidedBy note
    raw } hasNextPage } }";

async fn queue(app: &TestApp, token: &str, status: &str) -> Vec<Value> {
    let body = json!({"query": QUEUE, "variables": {"status": status}});
    let response = app.client.post(app.url("/graphql")).bearer_auth(token).json(&body).send().await.unwrap();
    let body: Value = response.json().await.unwrap();
    body["data"]["pendingEntities"]["entities"].as_array().cloned().unwrap_or_else(|| panic!("{body}"))
}

async fn decide(app: &TestApp, token: &str, mutation: &str, entity_ref: &str, etag: Option<&str>) -> Value {
    let query = format!(
        "mutation ($ref: String!, $etag: String) {{ {mutation}(ref: $ref, etag: $etag, note: \"looked at it\") {{
            entityRef decision decidedBy note entity {{ entityRef ... on Component {{ owner {{ entityRef }} }} }} }} }}"
    );
    let body = json!({"query": query, "variables": {"ref": entity_ref, "etag": etag}});
    let response = app.client.post(app.url("/graphql")).bearer_auth(token).json(&body).send().await.unwrap();
    response.json().await.unwrap()
}

async fn visible(app: &TestApp, token: &str) -> (Value, Value, Vec<String>) {
    let query = r#"{ entity(ref: "component:default/payments") { entityRef ... on Component { owner { entityRef } } }
        components: entities(filter: {kind: ["component"]}) { totalCount }
        changes(first: 100) { events { entityRef } } }"#;
    let (_, body) = app.post_as(token, query).await;
    let changed = body["data"]["changes"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|change| change["entityRef"].as_str().unwrap().to_owned())
        .collect();
    (body["data"]["entity"].clone(), body["data"]["components"]["totalCount"].clone(), changed)
}

async fn pending_figure(app: &TestApp, token: &str) -> Value {
    let (_, body) = app.post_as(token, "{ catalogHealth(historyLength: 0) { current { pending } } }").await;
    body["data"]["catalogHealth"]["current"]["pending"].clone()
}

async fn new_entities_and_owner_changes_wait_for_a_reviewer_end_to_end(database: TestDatabase) {
    let catalog = review_catalog(&[component("payments", "team-a", "Takes payments")]);
    let root = catalog.path();
    let app = spawn_app_with(&database.url.clone(), root, Some(database), |config| {
        config.governance.enabled = true;
    })
    .await;
    let admin = issue(&app, "admin", &[Permission::Admin]).await;
    let reviewer = issue(&app, "reviewer", &[Permission::EntityRead, Permission::EntityApprove]).await;
    let reader = issue(&app, "reader", &[Permission::EntityRead]).await;
    let mut subscriber =
        Subscriber::connect_with(app.address, "/graphql/ws", Protocol::TransportWs, None, json!({"token": reviewer}))
            .await;
    subscriber
        .subscribe("subscription { reviewEvents(after: \"0\") { cursor entityRef event principal note } }", json!({}))
        .await;

    // Queued: the groups and the user are in, the component is not, and no
    // change, count or lookup shows it.
    let (entity, components, changed) = visible(&app, &admin).await;
    assert_eq!((entity, components), (Value::Null, json!(0)));
    assert!(changed.contains(&"group:default/team-a".to_owned()), "{changed:?}");
    assert!(!changed.contains(&"component:default/payments".to_owned()), "{changed:?}");
    assert_eq!(pending_figure(&app, &admin).await, json!(1));
    let (_, body) = app.post_as(&admin, "{ providers { name lastQueued lastAdded } }").await;
    assert_eq!(body["data"]["providers"][0], json!({"name": "file", "lastQueued": 1, "lastAdded": 3}), "{body}");
    let queued = subscriber.data().await["reviewEvents"].clone();
    assert_eq!(
        (queued["entityRef"].as_str(), queued["event"].as_str()),
        (Some("component:default/payments"), Some("QUEUED"))
    );
    assert_eq!(queued["principal"], "provider:file");

    let waiting = queue(&app, &reviewer, "PENDING").await;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    let entry = &waiting[0];
    assert_eq!(
        (entry["reason"].as_str(), entry["owner"].as_str(), entry["policy"].as_str(), entry["mayDecide"].as_bool()),
        (Some("NEW"), Some("group:default/team-a"), Some("review-new"), Some(true)),
        "{entry}"
    );
    assert_eq!(entry["raw"]["metadata"]["description"], "Takes payments");
    // A reader neither sees the queue nor decides.
    assert_eq!(queue(&app, &reader, "PENDING").await, Vec::<Value>::new());
    let refused = decide(&app, &reader, "approveEntity", "component:default/payments", None).await;
    assert_eq!(error_code(&refused), "FORBIDDEN", "{refused}");

    // Its source changes it: it stays queued, with the new version.
    let first_etag = entry["etag"].as_str().unwrap().to_owned();
    write_catalog(root, &[component("payments", "team-a", "Takes and refunds payments")]);
    app.engine.run_provider("file").await.unwrap().unwrap();
    let waiting = queue(&app, &reviewer, "PENDING").await;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0]["raw"]["metadata"]["description"], "Takes and refunds payments");
    assert_ne!(waiting[0]["etag"].as_str(), Some(first_etag.as_str()));
    assert_eq!(visible(&app, &admin).await.0, Value::Null);

    // Approving the version reviewed before is refused; the current one is written.
    let stale = decide(&app, &reviewer, "approveEntity", "component:default/payments", Some(&first_etag)).await;
    assert_eq!(error_code(&stale), "BAD_USER_INPUT", "{stale}");
    assert!(stale["errors"][0]["message"].as_str().unwrap().contains("etag"), "{stale}");
    let etag = waiting[0]["etag"].as_str().unwrap();
    let approved = decide(&app, &reviewer, "approveEntity", "component:default/payments", Some(etag)).await;
    let payload = &approved["data"]["approveEntity"];
    assert_eq!(
        (payload["decision"].as_str(), payload["decidedBy"].as_str(), payload["note"].as_str()),
        (Some("APPROVED"), Some("token:reviewer"), Some("looked at it")),
        "{approved}"
    );
    assert_eq!(payload["entity"]["entityRef"], "component:default/payments");
    let (entity, components, changed) = visible(&app, &admin).await;
    assert_eq!((entity["entityRef"].as_str(), components), (Some("component:default/payments"), json!(1)));
    assert!(changed.contains(&"component:default/payments".to_owned()), "an approval is a change: {changed:?}");
    let event = subscriber.data().await["reviewEvents"].clone();
    assert_eq!((event["event"].as_str(), event["principal"].as_str()), (Some("APPROVED"), Some("token:reviewer")));
    assert_eq!(event["note"], "looked at it");
    assert_eq!(pending_figure(&app, &admin).await, json!(0));
    // The next run finds it known: nothing is queued again.
    app.engine.run_provider("file").await.unwrap().unwrap();
    assert_eq!(queue(&app, &reviewer, "PENDING").await, Vec::<Value>::new());

    // A new owner waits; the catalog keeps the current one. Rejected, it
    // stays out, and another run does not queue it again.
    write_catalog(root, &[component("payments", "team-b", "Takes and refunds payments")]);
    app.engine.run_provider("file").await.unwrap().unwrap();
    let waiting = queue(&app, &reviewer, "PENDING").await;
    assert_eq!(
        (waiting[0]["reason"].as_str(), waiting[0]["previousOwner"].as_str(), waiting[0]["owner"].as_str()),
        (Some("OWNER_CHANGE"), Some("group:default/team-a"), Some("group:default/team-b")),
        "{waiting:?}"
    );
    assert_eq!(visible(&app, &admin).await.0["owner"]["entityRef"], "group:default/team-a");
    assert_eq!(subscriber.data().await["reviewEvents"]["event"], "QUEUED");
    let rejected = decide(&app, &reviewer, "rejectEntity", "component:default/payments", None).await;
    assert_eq!(rejected["data"]["rejectEntity"]["decision"], "REJECTED", "{rejected}");
    assert_eq!(rejected["data"]["rejectEntity"]["entity"]["owner"]["entityRef"], "group:default/team-a");
    assert_eq!(subscriber.data().await["reviewEvents"]["event"], "REJECTED");
    app.engine.run_provider("file").await.unwrap().unwrap();
    assert_eq!(queue(&app, &reviewer, "PENDING").await, Vec::<Value>::new());
    let kept = queue(&app, &reviewer, "REJECTED").await;
    assert_eq!((kept.len(), kept[0]["decidedBy"].as_str()), (1, Some("token:reviewer")), "{kept:?}");
    assert_eq!(visible(&app, &admin).await.0["owner"]["entityRef"], "group:default/team-a");

    // A queued entity its source removes leaves the queue.
    write_catalog(
        root,
        &[component("payments", "team-b", "Takes and refunds payments"), component("ledger", "team-a", "Books")],
    );
    app.engine.run_provider("file").await.unwrap().unwrap();
    assert_eq!(subscriber.data().await["reviewEvents"]["entityRef"], "component:default/ledger");
    write_catalog(root, &[component("payments", "team-b", "Takes and refunds payments")]);
    app.engine.run_provider("file").await.unwrap().unwrap();
    let withdrawn = subscriber.data().await["reviewEvents"].clone();
    assert_eq!(
        (withdrawn["entityRef"].as_str(), withdrawn["event"].as_str(), withdrawn["note"].as_str()),
        (Some("component:default/ledger"), Some("WITHDRAWN"), Some("removed from its source"))
    );
    assert_eq!(queue(&app, &reviewer, "PENDING").await, Vec::<Value>::new());

    // Both decisions are in the audit log under the reviewer.
    let (_, body) =
        app.post_as(&admin, "{ auditLog(first: 100) { events { principal operation targets decision } } }").await;
    let events = body["data"]["auditLog"]["events"].as_array().unwrap_or_else(|| panic!("{body}"));
    for operation in ["entity.approve", "entity.reject"] {
        assert!(
            events.iter().any(|event| event["operation"] == operation
                && event["principal"] == "token:reviewer"
                && event["decision"] == "ALLOWED"
                && event["targets"] == json!(["component:default/payments"])),
            "{operation} is audited: {events:?}"
        );
    }
}

/// A reviewer whose reads a policy limits to groups neither sees nor
/// decides about a queued component; one without limits does.
async fn a_read_policy_hides_queued_entities_it_would_hide_once_stored(database: TestDatabase) {
    let catalog = review_catalog(&[component("payments", "team-a", "Takes payments")]);
    let root = catalog.path();
    let app = spawn_app_with(&database.url.clone(), root, Some(database), |config| {
        config.governance.enabled = true;
        config.auth.policy = serde_json::from_value(json!([
            {"subjects": ["token:groups-only"], "permissions": ["entity.read", "entity.approve"],
             "conditions": {"kinds": ["Group"]}},
            {"subjects": ["token:everything"], "permissions": ["entity.read", "entity.approve"]},
        ]))
        .unwrap();
    })
    .await;
    let scopes = [Permission::EntityRead, Permission::EntityApprove];
    let limited = issue(&app, "groups-only", &scopes).await;
    let full = issue(&app, "everything", &scopes).await;
    assert_eq!(queue(&app, &full, "PENDING").await.len(), 1);
    assert_eq!(queue(&app, &limited, "PENDING").await, Vec::<Value>::new());
    let refused = decide(&app, &limited, "approveEntity", "component:default/payments", None).await;
    assert_eq!(error_code(&refused), "FORBIDDEN", "{refused}");
    let approved = decide(&app, &full, "approveEntity", "component:default/payments", None).await;
    assert_eq!(approved["data"]["approveEntity"]["decision"], "APPROVED", "{approved}");
}
