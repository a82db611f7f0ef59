//! A read replica (`database.read_url`): queries read it, mutations and
//! their own reads use the primary. Two PostgreSQL databases stand for the
//! primary and a replica that has not caught up yet: the replica lacks one
//! entity, so every answer shows which database it came from.

use catalog_api::auth::identity::Permission;
use catalog_api::auth::issue_token;
use catalog_domain::EntityRef;
use catalog_store::testing::TestDatabase;
use serde_json::json;

use crate::helpers::{editable_examples, examples_root, spawn_app_on, spawn_app_with};

const MISSING: &str = "component:default/route-optimizer";

/// The example catalog without route-optimizer's document.
fn catalog_without_route_optimizer() -> tempfile::TempDir {
    let catalog = editable_examples();
    let file = catalog.path().join("systems/shipping.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let documents: Vec<&str> = text.split("\n---\n").collect();
    let kept: Vec<&str> =
        documents.iter().copied().filter(|document| !document.contains("name: route-optimizer\n")).collect();
    assert_eq!(kept.len() + 1, documents.len(), "one document names route-optimizer");
    std::fs::write(&file, kept.join("\n---\n")).unwrap();
    catalog
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_read_the_replica_and_mutations_the_primary() {
    let Some(primary) = TestDatabase::postgres().await else { return };
    let Some(replica) = TestDatabase::postgres().await else { return };
    let behind = catalog_without_route_optimizer();
    drop(spawn_app_on(&replica.url, behind.path(), None).await);
    let replica_url = replica.url.clone();
    let url = primary.url.clone();
    let app = spawn_app_with(&url, &examples_root(), Some(primary), |config| {
        config.database.read_url = replica_url;
    })
    .await;
    assert!(
        app.store.catalog().entity_by_ref(&EntityRef::parse(MISSING).unwrap()).await.unwrap().is_some(),
        "the primary holds it"
    );

    // Queries, over POST and GET, answer from the replica.
    let query = format!(r#"{{ entity(ref: "{MISSING}") {{ entityRef }} entities {{ totalCount }} }}"#);
    let data = app.query(&query, json!({})).await;
    assert!(data["entity"].is_null(), "the replica does not have it yet: {data}");
    let on_replica = data["entities"]["totalCount"].as_u64().unwrap();
    let response = app.client.get(app.url("/graphql")).query(&[("query", &query)]).send().await.unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["data"]["entity"].is_null(), "{body}");
    assert_eq!(body["data"]["entities"]["totalCount"].as_u64(), Some(on_replica));

    // A mutation reads and writes the primary: it finds the entity the
    // replica lacks, and deletes it there.
    let token = issue_token(
        &app.store.access_store(),
        "replicas",
        &[Permission::EntityRead, Permission::EntityDelete],
        None,
        "test",
    )
    .await
    .unwrap()
    .token;
    let (status, body) =
        app.post_as(&token, &format!(r#"mutation {{ deleteEntity(ref: "{MISSING}") {{ entityRef }} }}"#)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["deleteEntity"]["entityRef"], MISSING, "{body}");
    assert!(
        app.store.catalog().entity_by_ref(&EntityRef::parse(MISSING).unwrap()).await.unwrap().is_none(),
        "deleted on the primary"
    );
    let data = app.query("{ entities { totalCount } }", json!({})).await;
    assert_eq!(data["entities"]["totalCount"].as_u64(), Some(on_replica), "the replica is untouched");

    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "both databases answer");
    drop(replica);
}

#[tokio::test]
async fn a_read_replica_needs_postgresql() {
    let database = TestDatabase::sqlite().await;
    let mut config = catalog_api::config::Config::default();
    config.server.port = 0;
    config.database.url = database.url.clone();
    config.database.read_url = "postgres://postgres@127.0.0.1:5432/postgres".into();
    let error = match catalog_api::app::Application::build(config).await {
        Ok(_) => panic!("a SQLite primary with a read replica starts"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("database.read_url") && error.contains("PostgreSQL"), "{error}");
}
