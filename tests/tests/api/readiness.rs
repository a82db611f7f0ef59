//! /readyz and startup against the database's migrations: a server that does
//! not migrate on start waits, unready, until `catalog migrate` has run; a
//! database migrated by a newer binary is refused at startup and makes a
//! running server unready, unless the newer migrations are all additive (a
//! rolling upgrade, whose old replicas keep serving).

use std::time::Duration;

use catalog_api::app::Application;
use catalog_api::config::Config;
use catalog_store::backend_tests;
use catalog_store::testing::TestDatabase;
use catalog_store::{SchemaStatus, Store};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::oneshot;

use crate::helpers::{TestApp, examples_root, query_graphql};

/// A migration no binary of today knows, as a newer binary would record it.
const FUTURE_MIGRATION: &str = "m20991231_000001_from_the_future";
/// A newer binary's migration that only adds to the schema.
const FUTURE_ADDITIVE: &str = "m20991230_000001_new_index_additive";

/// The configuration of a replica over `url` that leaves migrating to
/// `catalog migrate`, ingesting the example catalog once it may.
fn waiting_config(url: &str) -> Config {
    let mut config = Config::default();
    config.server.port = 0;
    config.database.url = url.to_owned();
    config.database.migrate_on_start = false;
    config.ingestion.enabled = true;
    config.ingestion.watch = false;
    config.ingestion.interval_seconds = 1;
    config.ingestion.providers = vec![
        serde_json::from_value(
            json!({"type": "file", "paths": [examples_root().join("catalog-info.yaml").display().to_string()]}),
        )
        .unwrap(),
    ];
    config
}

async fn record_future_migration(store: &Store) {
    store.record_migration_for_tests(FUTURE_MIGRATION).await;
}

backend_tests!(an_older_binary_starts_and_serves_on_a_schema_a_newer_one_only_expanded);

/// A rolling upgrade's old replica restarting (or rolled back to) after the
/// new binary applied an additive migration: it starts, migrating on start
/// or not, and serves the catalog.
async fn an_older_binary_starts_and_serves_on_a_schema_a_newer_one_only_expanded(database: TestDatabase) {
    database.store.record_migration_for_tests(FUTURE_ADDITIVE).await;
    for migrate_on_start in [true, false] {
        let mut config = waiting_config(&database.url);
        config.database.migrate_on_start = migrate_on_start;
        let application = Application::build(config).await.unwrap_or_else(|error| panic!("{error:#}"));
        assert_eq!(application.schema_status(), &SchemaStatus::Compatible(vec![FUTURE_ADDITIVE.to_owned()]));
        let address = application.address();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(application.run_until(async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let (status, reason) = get(&client, format!("http://{address}/readyz")).await;
        assert_eq!(status, 200, "{reason}");
        assert!(reason.contains(FUTURE_ADDITIVE), "says why it serves: {reason}");
        let body = query_graphql(&client, address, "{ entities(first: 1) { totalCount } }", json!({})).await;
        assert!(body["entities"]["totalCount"].is_u64(), "{body}");
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}

/// GET a path: the status and the body's text.
async fn get(client: &reqwest::Client, url: String) -> (u16, String) {
    let response = client.get(url).send().await.expect("the server answers");
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Polls `url` until it answers `status` (within ten seconds): the body.
async fn eventually(client: &reqwest::Client, url: String, status: u16) -> String {
    let mut last = (0, String::new());
    for _ in 0..200 {
        last = get(client, url.clone()).await;
        if last.0 == status {
            return last.1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered {status}; last {last:?}");
}

backend_tests!(unmigrated: a_server_that_does_not_migrate_on_start_is_unready_until_migrated);

async fn a_server_that_does_not_migrate_on_start_is_unready_until_migrated(database: TestDatabase) {
    let application = Application::build(waiting_config(&database.url)).await.expect("it starts, waiting");
    assert!(matches!(application.schema_status(), SchemaStatus::Pending(_)), "{:?}", application.schema_status());
    let address = application.address();
    let (_shutdown, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{address}{path}");

    assert_eq!(get(&client, url("/healthz")).await.0, 200, "alive while waiting");
    let (status, reason) = get(&client, url("/readyz")).await;
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("pending") && reason.contains("catalog migrate"), "{reason}");
    assert!(reason.contains(&Store::newest_migration()), "names what is pending: {reason}");
    let graphql = client.post(url("/graphql")).json(&json!({"query": "{ ingestionLeader }"})).send().await.unwrap();
    assert_eq!(graphql.status().as_u16(), 503, "nothing is served before the schema exists");

    // A client that connected to the waiting server but has not sent its
    // request yet when the full server takes over still gets an answer.
    let mut early = tokio::net::TcpStream::connect(address).await.unwrap();
    // What `catalog migrate` does, from another process's pool.
    Store::connect(&database.url).await.unwrap().migrate().await.unwrap();
    assert_eq!(eventually(&client, url("/readyz"), 200).await, "ready");
    early
        .write_all(format!("GET /readyz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    early.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 "), "the early connection was answered: {answer:?}");
    // Fully started: GraphQL answers and the scheduled ingestion runs.
    for attempt in 0.. {
        let data = query_graphql(&client, address, "{ entities { totalCount } }", json!({})).await;
        if data["entities"]["totalCount"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(attempt < 200, "the example catalog was never ingested");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!server.is_finished());
}

backend_tests!(unmigrated: a_waiting_server_stops_when_a_newer_binary_migrates_the_database);

async fn a_waiting_server_stops_when_a_newer_binary_migrates_the_database(database: TestDatabase) {
    let application = Application::build(waiting_config(&database.url)).await.expect("it starts, waiting");
    let (_shutdown, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until(async move {
        let _ = stopped.await;
    }));
    // A newer binary's migration table, holding only migrations this one
    // does not know.
    database
        .store
        .execute_unprepared_for_tests("CREATE TABLE seaql_migrations (version VARCHAR PRIMARY KEY, applied_at BIGINT)")
        .await
        .unwrap();
    record_future_migration(&database.store).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the waiting server stops")
        .expect("it does not panic");
    let message = format!("{:#}", outcome.expect_err("it stops with an error"));
    assert!(message.contains(FUTURE_MIGRATION) && message.contains("upgrade the catalog binary"), "{message}");
}

backend_tests!(startup_refuses_a_database_migrated_by_a_newer_binary);

async fn startup_refuses_a_database_migrated_by_a_newer_binary(database: TestDatabase) {
    record_future_migration(&database.store).await;
    for migrate_on_start in [true, false] {
        let mut config = waiting_config(&database.url);
        config.database.migrate_on_start = migrate_on_start;
        let Err(error) = Application::build(config).await else {
            panic!("started on a newer schema (migrate_on_start: {migrate_on_start})");
        };
        let message = format!("{error:#}");
        assert!(message.contains(FUTURE_MIGRATION), "{message}");
        assert!(message.contains("newer version") && message.contains("upgrade the catalog binary"), "{message}");
    }
}

backend_tests!(readyz_is_unready_while_the_schema_is_newer_than_the_binary);

async fn readyz_is_unready_while_the_schema_is_newer_than_the_binary(app: TestApp) {
    assert_eq!(get(&app.client, app.url("/readyz")).await, (200, "ready".to_owned()));
    record_future_migration(&app.store).await;
    let (status, reason) = get(&app.client, app.url("/readyz")).await;
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains(FUTURE_MIGRATION) && reason.contains("upgrade the catalog binary"), "{reason}");
    // A rolled-back upgrade (the newer migration undone) makes it ready again.
    app.store
        .execute_unprepared_for_tests(&format!("DELETE FROM seaql_migrations WHERE version = '{FUTURE_MIGRATION}'"))
        .await
        .unwrap();
    assert_eq!(get(&app.client, app.url("/readyz")).await, (200, "ready".to_owned()));
}
