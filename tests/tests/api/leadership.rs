//! With several replicas on one PostgreSQL database exactly one runs the
//! providers' schedule, and another takes over when it goes. SQLite's one
//! process always leads.

use std::time::Duration;

use catalog_store::backend_tests;
use catalog_store::testing::TestDatabase;
use serde_json::json;

use crate::helpers::{ServeProcess, TestApp, editable_examples, examples_root, query_graphql, spawn_app_with};

backend_tests!(exactly_one_replica_leads_ingestion_and_another_takes_over);

/// Two `catalog serve` processes on one PostgreSQL, both with ingestion on:
/// exactly one leads the schedule, and both serve the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_elect_one_ingesting_leader_and_both_serve() {
    let Some(database) = TestDatabase::postgres().await else { return };
    let catalog = editable_examples();
    let first = ServeProcess::start(&database.url, catalog.path(), true).await;
    let second = ServeProcess::start(&database.url, catalog.path(), true).await;
    let servers = [&first, &second];
    let mut leading = Vec::new();
    for _ in 0..100 {
        leading.clear();
        for server in servers {
            let data = query_graphql(&server.client, server.address, "{ ingestionLeader }", json!({})).await;
            leading.push(data["ingestionLeader"].as_bool().unwrap());
        }
        if leading.iter().filter(|leads| **leads).count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(leading.iter().filter(|leads| **leads).count(), 1, "exactly one process leads: {leading:?}");
    for server in servers {
        let data = query_graphql(&server.client, server.address, "{ entities { totalCount } }", json!({})).await;
        assert!(data["entities"]["totalCount"].as_u64().unwrap() > 50, "{data}");
    }
}

async fn replica(url: &str) -> TestApp {
    spawn_app_with(url, &examples_root(), None, |config| {
        config.ingestion.enabled = true;
        config.ingestion.watch = false;
        config.ingestion.interval_seconds = 1;
    })
    .await
}

async fn leads(app: &TestApp) -> bool {
    app.query("{ ingestionLeader }", json!({})).await["ingestionLeader"].as_bool().unwrap()
}

/// The replicas' answers once one of them leads (within five seconds).
async fn settled(apps: &[&TestApp]) -> Vec<bool> {
    for _ in 0..100 {
        let mut answers = Vec::new();
        for app in apps {
            answers.push(leads(app).await);
        }
        if answers.contains(&true) {
            return answers;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no replica took the lead within five seconds");
}

async fn exactly_one_replica_leads_ingestion_and_another_takes_over(database: TestDatabase) {
    let url = database.url.clone();
    let first = replica(&url).await;
    if !url.starts_with("postgres") {
        assert_eq!(settled(&[&first]).await, vec![true], "SQLite's one process leads");
        return;
    }
    let second = replica(&url).await;
    let answers = settled(&[&first, &second]).await;
    assert_eq!(answers.iter().filter(|leading| **leading).count(), 1, "{answers:?}");
    // Over several ticks, the lead stays where it is.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!((leads(&first).await, leads(&second).await), (answers[0], answers[1]));
    }
    let survivor = if answers[0] {
        drop(first);
        second
    } else {
        drop(second);
        first
    };
    assert_eq!(settled(&[&survivor]).await, vec![true], "the other replica takes over");
    drop(database);
}
