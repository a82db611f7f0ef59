//! Mutations: every field is guarded (the schema is walked, so a new field
//! without a guard fails here), and refresh and delete do what they say,
//! with audit records.

use std::time::Duration;

use catalog_api::auth::identity::Permission;
use catalog_api::config::Config;
use catalog_store::backend_tests;
use catalog_store::testing::TestDatabase;
use serde_json::{Value, json};

use crate::helpers::{TestApp, editable_examples, error_code, examples_root, spawn_app_with};

backend_tests!(
    every_mutation_field_refuses_principals_without_its_permission,
    delete_entity_removes_one_entity_with_a_change_and_an_audit_record,
    refresh_reads_the_source_again_and_names_unknown_providers,
    providers_report_what_their_last_run_did,
    a_policy_hides_entities_from_mutations_as_from_queries,
);

async fn app_with(database: TestDatabase, catalog: &std::path::Path, configure: impl FnOnce(&mut Config)) -> TestApp {
    let url = database.url.clone();
    spawn_app_with(&url, catalog, Some(database), configure).await
}

async fn issue(app: &TestApp, name: &str, scopes: &[Permission]) -> String {
    catalog_api::auth::issue_token(&app.store.access_store(), name, scopes, None, "test").await.unwrap().token
}

/// A literal of a GraphQL input type, for calling a field whose arguments
/// do not matter (the guard refuses before they are used).
fn dummy_literal(type_ref: &Value) -> String {
    match type_ref["kind"].as_str() {
        Some("NON_NULL") => dummy_literal(&type_ref["ofType"]),
        Some("LIST") => format!("[{}]", dummy_literal(&type_ref["ofType"])),
        Some("SCALAR") => match type_ref["name"].as_str() {
            Some("Int") => "1".into(),
            Some("Float") => "1.0".into(),
            Some("Boolean") => "false".into(),
            _ => "\"component:default/invoice-service\"".into(),
        },
        Some("INPUT_OBJECT") if type_ref["name"] == "TaskSecretInput" => r#"{name: "token", value: "x"}"#.into(),
        Some("INPUT_OBJECT") if type_ref["name"] == "CreateTaskInput" => {
            r#"{templateRef: "template:default/rust-service"}"#.into()
        }
        _ => panic!("the schema walk needs a dummy value for {type_ref}: add one to dummy_literal"),
    }
}

fn is_required(type_ref: &Value) -> bool {
    type_ref["kind"] == "NON_NULL"
}

/// The latest change cursor and the entity count: a refused mutation changes neither.
async fn state(app: &TestApp, admin: &str) -> (Value, Value) {
    let (_, body) = app.post_as(admin, "{ entities { totalCount } changes(first: 100) { nextCursor } }").await;
    (body["data"]["entities"]["totalCount"].clone(), body["data"]["changes"]["nextCursor"].clone())
}

async fn audit_events(app: &TestApp, admin: &str) -> Vec<Value> {
    let query = "{ auditLog(first: 100) { events { principal tokenId operation targets decision result requestId } } }";
    let (_, body) = app.post_as(admin, query).await;
    body["data"]["auditLog"]["events"].as_array().cloned().unwrap_or_else(|| panic!("{body}"))
}

async fn every_mutation_field_refuses_principals_without_its_permission(database: TestDatabase) {
    let app = app_with(database, &examples_root(), |_| {}).await;
    let admin = issue(&app, "admin", &[Permission::Admin]).await;
    let reader = issue(&app, "reader", &[Permission::EntityRead]).await;
    let type_ref = "kind name ofType { kind name ofType { kind name ofType { kind name } } }";
    let introspection =
        format!("{{ __schema {{ mutationType {{ fields {{ name args {{ name type {{ {type_ref} }} }} }} }} }} }}");
    let (_, schema) = app.post_as(&admin, &introspection).await;
    let fields = schema["data"]["__schema"]["mutationType"]["fields"].as_array().unwrap_or_else(|| panic!("{schema}"));
    assert!(fields.len() >= 3, "the schema has mutations to walk: {schema}");
    let before = state(&app, &admin).await;

    for field in fields {
        let name = field["name"].as_str().unwrap();
        let arguments: Vec<String> = field["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|argument| is_required(&argument["type"]))
            .map(|argument| format!("{}: {}", argument["name"].as_str().unwrap(), dummy_literal(&argument["type"])))
            .collect();
        let arguments = if arguments.is_empty() { String::new() } else { format!("({})", arguments.join(", ")) };
        let mutation = format!("mutation {{ {name}{arguments} {{ __typename }} }}");
        for (who, token) in [("anonymous", None), ("a reader", Some(reader.as_str()))] {
            let (status, body) = match token {
                Some(token) => app.post_as(token, &mutation).await,
                None => app.post(&mutation, json!({})).await,
            };
            assert_eq!(error_code(&body), "FORBIDDEN", "{name} must refuse {who} ({status}): {body}");
            assert!(body["data"].is_null() || body["data"][name].is_null(), "{body}");
        }
    }
    assert_eq!(state(&app, &admin).await, before, "refused mutations change nothing");

    // Each refusal is in the audit log, under the field's name (written in
    // the background: wait for it).
    let mut refused = Vec::new();
    for _ in 0..40 {
        refused = audit_events(&app, &admin)
            .await
            .into_iter()
            .filter(|event| event["decision"] == "DENIED" && event["principal"] == "token:reader")
            .collect();
        if refused.len() >= fields.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for field in fields {
        let name = field["name"].as_str().unwrap();
        let event = refused.iter().find(|event| event["operation"] == name);
        let event = event.unwrap_or_else(|| panic!("no refusal of {name} in the audit log: {refused:?}"));
        assert!(event["tokenId"].is_string(), "{event}");
        assert!(event["requestId"].is_string(), "{event}");
        assert!(event["result"].as_str().unwrap().contains("permission"), "{event}");
    }
}

async fn delete_entity_removes_one_entity_with_a_change_and_an_audit_record(database: TestDatabase) {
    let app = app_with(database, &examples_root(), |_| {}).await;
    let admin = issue(&app, "admin", &[Permission::Admin]).await;
    let deleter = issue(&app, "janitor", &[Permission::EntityRead, Permission::EntityDelete]).await;
    let (total_before, cursor_before) = state(&app, &admin).await;

    let delete = r#"mutation { deleteEntity(ref: "Component:invoice-service") { entityRef provider } }"#;
    let (status, body) = app.post_as(&deleter, delete).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["deleteEntity"],
        json!({"entityRef": "component:default/invoice-service", "provider": "file"}),
        "{body}"
    );
    let (_, body) = app.post_as(&deleter, r#"{ entity(ref: "component:default/invoice-service") { name } }"#).await;
    assert!(body["data"]["entity"].is_null(), "{body}");
    let (total_after, _) = state(&app, &admin).await;
    assert_eq!(total_after.as_u64().unwrap() + 1, total_before.as_u64().unwrap());

    let feed = format!(
        r#"{{ changes(after: {cursor_before}, first: 10) {{ events {{ type entityRef source entity {{ name }} }} }} }}"#
    );
    let (_, body) = app.post_as(&admin, &feed).await;
    assert_eq!(
        body["data"]["changes"]["events"],
        json!([{"type": "REMOVED", "entityRef": "component:default/invoice-service", "source": "file", "entity": null}]),
        "{body}"
    );
    let events = audit_events(&app, &admin).await;
    let deleted =
        events.iter().find(|event| event["operation"] == "entity.delete").unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(deleted["principal"], "token:janitor");
    assert_eq!(deleted["decision"], "ALLOWED");
    assert_eq!(deleted["targets"], json!(["component:default/invoice-service"]));
    assert!(deleted["requestId"].is_string());

    let (_, body) = app.post_as(&deleter, delete).await;
    assert_eq!(error_code(&body), "NOT_FOUND", "a second delete finds nothing: {body}");
    let (_, body) = app.post_as(&deleter, r#"mutation { deleteEntity(ref: "not a ref!") { entityRef } }"#).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");

    // The source still offers it: the provider's next run adds it back.
    app.ingest().await;
    let (_, body) = app.post_as(&deleter, r#"{ entity(ref: "component:default/invoice-service") { name } }"#).await;
    assert_eq!(body["data"]["entity"]["name"], "invoice-service", "{body}");
}

async fn refresh_reads_the_source_again_and_names_unknown_providers(database: TestDatabase) {
    let catalog = editable_examples();
    let app = app_with(database, catalog.path(), |_| {}).await;
    let refresher = issue(&app, "refresher", &[Permission::EntityRead, Permission::EntityRefresh]).await;
    let admin = issue(&app, "admin", &[Permission::Admin]).await;

    let file = catalog.path().join("systems/billing.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = text.replace("Creates and serves invoices.", "Creates, serves and archives invoices.");
    assert_ne!(edited, text);
    std::fs::write(&file, edited).unwrap();

    let refresh = r#"mutation { refreshEntity(ref: "component:default/invoice-service") {
        provider added updated removed unchanged invalid conflicts locationErrors entity { name description } } }"#;
    let (status, body) = app.post_as(&refresher, refresh).await;
    assert_eq!(status, 200, "{body}");
    let payload = &body["data"]["refreshEntity"];
    assert_eq!(payload["provider"], "file");
    assert_eq!(
        (payload["added"].as_u64(), payload["updated"].as_u64(), payload["removed"].as_u64()),
        (Some(0), Some(1), Some(0))
    );
    assert!(payload["unchanged"].as_u64().unwrap() > 10, "{payload}");
    assert_eq!(payload["entity"]["description"], "Creates, serves and archives invoices.");

    // Nothing changed since: a provider refresh writes nothing.
    let (_, body) = app
        .post_as(&refresher, r#"mutation { refreshProvider(name: "file") { provider updated entity { name } } }"#)
        .await;
    assert_eq!(body["data"]["refreshProvider"], json!({"provider": "file", "updated": 0, "entity": null}), "{body}");

    let forced = r#"mutation { refreshProvider(name: "file", force: true) { provider heldBack } }"#;
    let (_, body) = app.post_as(&refresher, forced).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "forcing removals needs entity.delete too: {body}");
    let (_, body) = app.post_as(&admin, forced).await;
    assert_eq!(body["data"]["refreshProvider"], json!({"provider": "file", "heldBack": 0}), "{body}");
    let (_, body) = app.post_as(&refresher, r#"mutation { refreshProvider(name: "github") { provider } }"#).await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("\"github\"") && message.contains("file"), "names the configured providers: {message}");
    let (_, body) =
        app.post_as(&refresher, r#"mutation { refreshEntity(ref: "component:default/nope") { provider } }"#).await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");

    // Refreshes are recorded when requested (their changes under the
    // provider's snapshot.apply); the refused force too, in the background.
    let mut events = Vec::new();
    for _ in 0..40 {
        events = audit_events(&app, &admin).await;
        if events.iter().any(|event| event["decision"] == "DENIED" && event["principal"] == "token:refresher") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let of_refresher = |decision: &str| -> Vec<(String, String)> {
        events
            .iter()
            .filter(|event| event["principal"] == "token:refresher" && event["decision"] == decision)
            .map(|event| {
                (event["operation"].as_str().unwrap().to_owned(), event["result"].as_str().unwrap().to_owned())
            })
            .collect()
    };
    let requested = |operation: &str| (operation.to_owned(), "requested".to_owned());
    assert_eq!(
        of_refresher("ALLOWED"),
        vec![requested("provider.refresh"), requested("entity.refresh")],
        "newest first"
    );
    let denied = of_refresher("DENIED");
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].0, "refreshProvider");
    assert!(denied[0].1.contains("entity.delete"), "{denied:?}");
}

async fn a_policy_hides_entities_from_mutations_as_from_queries(database: TestDatabase) {
    let app = app_with(database, &examples_root(), |config| {
        config.auth.anonymous_read = false;
        config.auth.policy = serde_json::from_value(json!([
            {"subjects": ["token:components"], "permissions": ["entity.read", "entity.delete", "entity.refresh"],
             "conditions": {"kinds": ["Component"]}},
        ]))
        .unwrap();
    })
    .await;
    let scopes = [Permission::EntityRead, Permission::EntityDelete, Permission::EntityRefresh];
    let limited = issue(&app, "components", &scopes).await;
    let (_, body) = app.post_as(&limited, r#"mutation { refreshProvider(name: "file") { provider } }"#).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "a provider run concerns entities hidden from it: {body}");
    let refresh =
        r#"mutation { refreshEntity(ref: "component:default/invoice-service") { provider updated entity { name } } }"#;
    let (_, body) = app.post_as(&limited, refresh).await;
    assert_eq!(
        body["data"]["refreshEntity"],
        json!({"provider": "file", "updated": null, "entity": {"name": "invoice-service"}}),
        "whole-provider counts are withheld: {body}"
    );
    for mutation in [
        r#"mutation { deleteEntity(ref: "group:default/team-billing") { entityRef } }"#,
        r#"mutation { refreshEntity(ref: "group:default/team-billing") { provider } }"#,
    ] {
        let (_, body) = app.post_as(&limited, mutation).await;
        assert_eq!(error_code(&body), "NOT_FOUND", "a hidden entity looks absent: {body}");
        assert_eq!(body["errors"][0]["message"], "no entity group:default/team-billing");
    }
    let (_, body) = app
        .post_as(&limited, r#"mutation { deleteEntity(ref: "component:default/invoice-service") { entityRef } }"#)
        .await;
    assert_eq!(body["data"]["deleteEntity"]["entityRef"], "component:default/invoice-service", "{body}");
}

async fn providers_report_what_their_last_run_did(database: TestDatabase) {
    let catalog = editable_examples();
    let app = app_with(database, catalog.path(), |_| {}).await;
    let admin = issue(&app, "admin", &[Permission::Admin]).await;
    let query = "{ entities { totalCount } providers { name type lastRunAt lastSuccessAt lastError entityCount
        locationErrorCount lastAdded lastHeldBack nextRunAt } }";
    let (_, body) = app.post_as(&admin, query).await;
    let file = &body["data"]["providers"][0];
    assert_eq!((file["name"].as_str(), file["type"].as_str()), (Some("file"), Some("file")), "{body}");
    assert_eq!(file["entityCount"], body["data"]["entities"]["totalCount"]);
    assert!(file["lastAdded"].as_u64().unwrap() > 10, "the first run added the examples: {file}");
    assert!(file["lastRunAt"].is_string() && file["lastSuccessAt"] == file["lastRunAt"], "{file}");
    assert!(file["lastError"].is_null() && file["nextRunAt"].is_null(), "not scheduled in tests: {file}");

    std::fs::write(catalog.path().join("systems/billing.yaml"), "kind: [unclosed").unwrap();
    let (_, body) = app.post_as(&admin, r#"mutation { refreshProvider(name: "file") { locationErrors } }"#).await;
    assert_eq!(body["data"]["refreshProvider"]["locationErrors"], 1, "{body}");
    let (_, body) = app.post_as(&admin, query).await;
    let file = &body["data"]["providers"][0];
    assert_eq!(file["locationErrorCount"], 1, "{file}");
    assert_eq!(file["lastHeldBack"], 0, "an unparsable file keeps its entities without holding removals: {file}");
}
