//! With several replicas on one PostgreSQL database exactly one runs the
//! providers' schedule, and another takes over when it goes. SQLite's one
//! process always leads.

use std::time::Duration;

use catalog_store::testing::TestDatabase;
use serde_json::json;

use crate::helpers::{TestApp, database_tests, examples_root, spawn_app_with};

database_tests!(exactly_one_replica_leads_ingestion_and_another_takes_over);

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
