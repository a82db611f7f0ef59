//! Catalog health end to end: `catalogHealth` counts what the catalog
//! holds (entities, orphans, dangling refs, entities with policy
//! violations, stale entities, each scorecard rule's coverage), follows a
//! change at the next look, records its history, and the same counts are
//! Prometheus gauges.

use std::time::Duration;

use catalog_store::backend_tests;
use catalog_store::testing::TestDatabase;
use serde_json::{Value, json};

use crate::helpers::{TestApp, editable_examples, error_code, spawn_app_with};

backend_tests!(catalog_health_counts_follows_and_records_the_catalog);

const HEALTH: &str = "{ catalogHealth(historyLength: 10) {
    current { time entities byKind { kind entities } orphans danglingRefs processingErrors conflicts stale
              policyViolations ruleCoverage { scorecard rule applicable passing passRate } providersInError }
    history { time entities orphans danglingRefs } } }";

async fn catalog_health(app: &TestApp) -> Value {
    app.query(HEALTH, json!({})).await["catalogHealth"].clone()
}

/// Polls until `done` holds for `catalogHealth`, for up to 20 s.
async fn health_until(app: &TestApp, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let health = catalog_health(app).await;
        if done(&health) {
            return health;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("catalogHealth never reached the expected state: {}", catalog_health(app).await);
}

async fn catalog_health_counts_follows_and_records_the_catalog(database: TestDatabase) {
    let catalog = editable_examples();
    let root = catalog.path().to_owned();
    let app = spawn_app_with(&database.url.clone(), catalog.path(), Some(database), |config| {
        config.governance.enabled = true;
        config.governance.health_record_seconds = 1;
    })
    .await;

    // Once every scorecard has evaluated (the built-in staleness one too).
    let health = health_until(&app, |health| {
        let coverage = health["current"]["ruleCoverage"].as_array().cloned().unwrap_or_default();
        ["production-readiness", "ownership-hygiene", "staleness"].iter().all(|scorecard| {
            coverage.iter().any(|rule| rule["scorecard"] == *scorecard && rule["applicable"].as_u64() > Some(0))
        })
    })
    .await;
    let current = &health["current"];
    let listed =
        app.query("{ entities(first: 100) { totalCount nodes { policyViolations { rule } } } }", json!({})).await;
    assert_eq!(current["entities"], listed["entities"]["totalCount"], "{current}");
    let by_kind: u64 =
        current["byKind"].as_array().unwrap().iter().map(|kind| kind["entities"].as_u64().unwrap()).sum();
    assert_eq!(Some(by_kind), current["entities"].as_u64());
    let violating = listed["entities"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|node| !node["policyViolations"].as_array().unwrap().is_empty())
        .count();
    assert!(violating > 0, "the example warn policy flags some production services");
    assert_eq!(current["policyViolations"].as_u64(), Some(violating as u64));
    for rule in current["ruleCoverage"].as_array().unwrap() {
        assert!(rule["passing"].as_u64() <= rule["applicable"].as_u64(), "{rule}");
    }
    assert_eq!(current["providersInError"], json!([]));
    let (orphans, dangling) = (current["orphans"].as_u64().unwrap(), current["danglingRefs"].as_u64().unwrap());

    // A domain whose owner is nowhere (no admission policy covers Domains):
    // one more orphan and one more dangling ref; staleness does not apply
    // to Domains, so the stale count stays.
    let stale = current["stale"].as_u64().unwrap();
    let domains = root.join("domains.yaml");
    let mut text = std::fs::read_to_string(&domains).unwrap();
    text.push_str(
        "---\napiVersion: backstage.io/v1alpha1\nkind: Domain\nmetadata:\n  name: abandoned\nspec:\n  owner: team-long-gone\n",
    );
    std::fs::write(&domains, text).unwrap();
    app.ingest().await;
    let current = catalog_health(&app).await["current"].clone();
    assert_eq!(current["orphans"].as_u64(), Some(orphans + 1), "{current}");
    assert_eq!(current["danglingRefs"].as_u64(), Some(dangling + 1), "{current}");
    assert_eq!(current["stale"].as_u64(), Some(stale), "{current}");

    // Recorded every second: the newest recording catches up with the change.
    let health = health_until(&app, |health| {
        health["history"]
            .as_array()
            .is_some_and(|history| history.len() >= 2 && history[0]["orphans"].as_u64() == Some(orphans + 1))
    })
    .await;
    let history = health["history"].as_array().unwrap();
    assert!(history[0]["time"].as_str() > history[1]["time"].as_str(), "newest first: {history:?}");

    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = format!("catalog_health{{figure=\"orphans\"}} {}", orphans + 1);
    assert!(metrics.contains(&line), "{line} in {metrics}");
    let coverage = health["current"]["ruleCoverage"].as_array().unwrap();
    let described = coverage.iter().find(|rule| rule["rule"] == "described").unwrap();
    let line = format!(
        "catalog_rule_pass_ratio{{scorecard=\"production-readiness\",rule=\"described\"}} {}",
        described["passRate"]
    );
    assert!(metrics.contains(&line), "{line} in {metrics}");

    let (_, refused) = app.post("{ catalogHealth(historyLength: 5000) { current { entities } } }", json!({})).await;
    assert_eq!(error_code(&refused), "BAD_USER_INPUT", "{refused}");
    assert!(refused["errors"][0]["message"].as_str().unwrap().contains("historyLength"), "{refused}");
}
