//! Governance end to end: the server evaluates the example scorecards over
//! the example catalog, answers scores, summaries, rollups and previews, and
//! sends level and rule transitions to a WebSocket subscriber when a
//! catalog file changes; a broken scorecard file leaves the previous
//! version applying.

use std::path::Path;
use std::time::Duration;

use catalog_store::backend_tests;
use catalog_store::testing::TestDatabase;
use serde_json::{Value, json};

use crate::helpers::{TestApp, editable_examples, spawn_app_with};
use crate::stream::{Protocol, Subscriber};

backend_tests!(scorecards_are_evaluated_served_and_followed_end_to_end);

/// Polls until `done` holds for the scorecards' summaries, for up to 30 s.
async fn scorecards_until(app: &TestApp, done: impl Fn(&Value) -> bool) -> Value {
    let query = "{ scorecards { id version levels { name rules { id reads { relations } } } summary { evaluated levels { level entities } rules { rule pass fail exempt passRate } } } }";
    for _ in 0..300 {
        let data = app.query(query, json!({})).await;
        if done(&data["scorecards"]) {
            return data["scorecards"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the scorecards never reached the expected state");
}

fn by_id<'v>(scorecards: &'v Value, id: &str) -> &'v Value {
    scorecards.as_array().unwrap().iter().find(|scorecard| scorecard["id"] == id).unwrap()
}

fn set_owner(catalog: &Path, from: &str, to: &str) {
    let path = catalog.join("systems/shipping.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let block = format!("  lifecycle: production\n  owner: {from}\n  system: shipping-platform\n  providesApis");
    assert!(text.contains(&block), "the shipment tracker's owner line is as expected");
    std::fs::write(&path, text.replace(&block, &block.replace(from, to))).unwrap();
}

const SCORES: &str = r#"query ($scorecard: String) {
    entity(ref: "component:default/shipment-tracker") {
        scores(scorecard: $scorecard) {
            scorecard level score
            rules { rule level status enforced exempt since explanation { expression path expected actual } }
        }
        scoreHistory(scorecard: $scorecard) { transitions { levelBefore level score rules { rule from to } } nextCursor }
    } }"#;

async fn scorecards_are_evaluated_served_and_followed_end_to_end(database: TestDatabase) {
    let catalog = editable_examples();
    let root = catalog.path().to_owned();
    // The example `enforce` policy would refuse the dangling owner this
    // test gives a component (tests/tests/api/admission.rs tests that).
    std::fs::remove_dir_all(root.join("policies")).unwrap();
    let app = spawn_app_with(&database.url.clone(), catalog.path(), Some(database), |config| {
        config.governance.enabled = true;
        config.governance.reload_seconds = 1;
    })
    .await;

    // Both example scorecards and the built-in staleness one, evaluated over the catalog.
    let scorecards = scorecards_until(&app, |scorecards| {
        scorecards.as_array().is_some_and(|list| {
            list.len() == 3 && list.iter().all(|scorecard| scorecard["summary"]["evaluated"].as_u64() > Some(0))
        })
    })
    .await;
    let readiness = by_id(&scorecards, "production-readiness");
    let levels: Vec<&str> =
        readiness["levels"].as_array().unwrap().iter().map(|level| level["name"].as_str().unwrap()).collect();
    assert_eq!(levels, ["Bronze", "Silver", "Gold"]);
    assert_eq!(readiness["levels"][0]["rules"][0]["reads"]["relations"], json!(["owner"]));
    let summary = &readiness["summary"];
    let counted: u64 =
        summary["levels"].as_array().unwrap().iter().map(|level| level["entities"].as_u64().unwrap()).sum();
    assert_eq!(counted, summary["evaluated"].as_u64().unwrap(), "every entity is at one level: {summary}");
    let described = summary["rules"].as_array().unwrap().iter().find(|rule| rule["rule"] == "described").unwrap();
    assert_eq!(described["exempt"], 1, "the event bus's exemption: {described}");

    // The shipment tracker passes everything enforced: Gold, with the staged rule shown but not counted.
    let data = app.query(SCORES, json!({"scorecard": "production-readiness"})).await;
    let score = &data["entity"]["scores"][0];
    assert_eq!((score["level"].as_str(), score["score"].as_f64()), (Some("Gold"), Some(100.0)), "{score}");
    let staged = score["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|rule| rule["rule"] == "not-depended-on-when-deprecated")
        .unwrap();
    assert_eq!(staged["enforced"], false);

    // Filter keys and facets over the stored results.
    let by_level = app
        .query(
            r#"{ gold: entities(filter: { kind: ["Component"], fields: [{ key: "scores.production-readiness.level", in: ["Gold"] }] }, first: 100) { totalCount nodes { entityRef } }
                 below: entities(filter: { fields: [{ key: "scores.production-readiness.level", equals: "" }] }) { totalCount }
                 unscored: entities(filter: { kind: ["Component"], fields: [{ key: "scores.production-readiness.level", exists: false }] }) { totalCount }
                 facets(fields: ["scores.production-readiness.level"]) { values { value count } } }"#,
            json!({}),
        )
        .await;
    let gold: Vec<&str> =
        by_level["gold"]["nodes"].as_array().unwrap().iter().map(|node| node["entityRef"].as_str().unwrap()).collect();
    assert!(gold.contains(&"component:default/shipment-tracker"), "{by_level}");
    let facet = by_level["facets"][0]["values"].as_array().unwrap();
    let faceted: u64 = facet.iter().map(|value| value["count"].as_u64().unwrap()).sum();
    assert_eq!(faceted, summary["evaluated"].as_u64().unwrap(), "{facet:?}");
    let gold_facet = facet.iter().find(|value| value["value"] == "Gold").unwrap();
    assert_eq!(gold_facet["count"], by_level["gold"]["totalCount"]);
    let below = facet.iter().find(|value| value["value"] == "").map_or(0, |value| value["count"].as_u64().unwrap());
    assert_eq!(by_level["below"]["totalCount"].as_u64().unwrap(), below);
    assert!(by_level["unscored"]["totalCount"].as_u64().unwrap() > 0, "libraries and websites are not services");

    // A department's rollup counts what its teams own.
    let rollup = app
        .query(
            r#"{ entity(ref: "group:default/engineering-logistics") { ... on Group {
                scorecardRollup(scorecard: "production-readiness") { groups evaluated levels { level entities } }
                direct: scorecardRollup(scorecard: "production-readiness", includeSubgroups: false) { evaluated }
                unknown: scorecardRollup(scorecard: "no-such-scorecard") { evaluated } } } }"#,
            json!({}),
        )
        .await;
    let group = &rollup["entity"];
    assert!(group["scorecardRollup"]["groups"].as_u64().unwrap() >= 3, "{group}");
    assert!(group["scorecardRollup"]["evaluated"].as_u64().unwrap() >= 1, "{group}");
    assert_eq!(group["direct"]["evaluated"], 0, "the department itself owns no service");
    assert_eq!(group["unknown"], Value::Null);

    // A level change reaches a subscriber: the owner no longer resolves.
    let mut subscriber = Subscriber::connect(app.address, "/graphql/ws", Protocol::TransportWs).await;
    subscriber
        .subscribe(
            r#"subscription { scoreChanges(scorecards: ["production-readiness"], refs: ["component:default/shipment-tracker"]) {
                cursor scorecard entityRef levelBefore level rules { rule from to } removed } }"#,
            json!({}),
        )
        .await;
    // Subscribed before the change: let the subscription read its starting cursor.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_change = chrono::Utc::now();
    set_owner(&root, "team-shipping-core", "team-gone");
    app.ingest().await;
    let event = subscriber.data().await["scoreChanges"].clone();
    assert_eq!((event["levelBefore"].as_str(), event["level"].as_str()), (Some("Gold"), None), "{event}");
    assert_eq!(event["rules"], json!([{"rule": "owned", "from": "PASS", "to": "FAIL"}]));

    let data = app.query(SCORES, json!({"scorecard": "production-readiness"})).await;
    let owned = &data["entity"]["scores"][0]["rules"][0];
    assert_eq!(owned["status"], "FAIL");
    assert_eq!(owned["explanation"]["expression"], "owner() != null");
    let failing = app
        .query(
            r#"{ entities(filter: { fields: [{ key: "scores.production-readiness.failing", equals: "owned" }] }) { nodes { entityRef } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(failing["entities"]["nodes"], json!([{"entityRef": "component:default/shipment-tracker"}]));

    // Its owner gone, it is stale for that reason, and the `stale` key finds it.
    let query = r#"{ entity(ref: "component:default/shipment-tracker") { staleness { stale since reasons { reason since explanation { expression } } } }
        entities(filter: { fields: [{ key: "stale", equals: "owner-missing" }] }) { nodes { entityRef } } }"#;
    let mut stale = app.query(query, json!({})).await;
    for _ in 0..50 {
        // The staleness result and its filter key are one row, written once
        // the evaluator has followed the change: wait for both to show it.
        if stale["entity"]["staleness"]["stale"] == true
            && stale["entities"]["nodes"].as_array().is_some_and(|nodes| !nodes.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stale = app.query(query, json!({})).await;
    }
    let staleness = &stale["entity"]["staleness"];
    assert_eq!(staleness["stale"], true, "{stale}");
    assert_eq!(staleness["reasons"][0]["reason"], "owner-missing", "{stale}");
    assert_eq!(staleness["since"], staleness["reasons"][0]["since"]);
    assert_eq!(stale["entities"]["nodes"], json!([{"entityRef": "component:default/shipment-tracker"}]));
    let history = &data["entity"]["scoreHistory"]["transitions"];
    assert_eq!(history.as_array().unwrap().len(), 2, "first evaluated, then failed: {history}");
    assert_eq!(history[0]["levelBefore"], "Gold");

    // As of before the change: Gold, the owner rule passing, with the
    // score of then; before its first evaluation, not scored at all.
    let past = app
        .query(
            r#"query ($time: DateTime!) { entity(ref: "component:default/shipment-tracker") {
                then: scoresAsOf(time: $time, scorecard: "production-readiness") { scorecard level score rules { rule status } }
                early: scoresAsOf(time: "2000-01-01T00:00:00Z") { scorecard } } }"#,
            json!({"time": before_change.to_rfc3339()}),
        )
        .await;
    let then = &past["entity"]["then"][0];
    assert_eq!((then["scorecard"].as_str(), then["level"].as_str()), (Some("production-readiness"), Some("Gold")));
    let owned_then = then["rules"].as_array().unwrap().iter().find(|rule| rule["rule"] == "owned").unwrap();
    assert_eq!(owned_then["status"], "PASS", "{past}");
    assert_eq!(then["score"].as_f64(), history[1]["score"].as_f64(), "the score its first evaluation recorded");
    assert_eq!(past["entity"]["early"], json!([]), "{past}");

    // A preview against the scorecard in force, and a broken one refused with its problems.
    let changed = std::fs::read_to_string(root.join("scorecards/production-readiness.yaml"))
        .unwrap()
        .replace("expression: owner() != null && owner().kind == 'Group'", "expression: \"true\"");
    let preview = app
        .query(
            "query ($yaml: String!) { previewScorecard(yaml: $yaml) { problems { at } preview { replaces moves { entityRef levelBefore level rules { rule from to } } moreMoves } } }",
            json!({"yaml": changed}),
        )
        .await;
    let preview = &preview["previewScorecard"]["preview"];
    assert_eq!(preview["replaces"], true);
    let moved = preview["moves"]
        .as_array()
        .unwrap()
        .iter()
        .find(|moved| moved["entityRef"] == "component:default/shipment-tracker");
    assert_eq!(moved.unwrap()["level"], "Gold", "{preview}");
    let broken = app
        .query(
            "query ($yaml: String!) { previewScorecard(yaml: $yaml) { problems { at line column message } preview { replaces } } }",
            json!({"yaml": changed.replace("expression: \"true\"", "expression: owner() ==")}),
        )
        .await;
    let problems = &broken["previewScorecard"]["problems"];
    assert_eq!(problems[0]["at"], "levels[0].rules[0].expression", "{problems}");
    assert_eq!(broken["previewScorecard"]["preview"], Value::Null);

    // A broken file on disk keeps its previous version applying.
    let version = by_id(&scorecards, "ownership-hygiene")["version"].clone();
    std::fs::write(root.join("scorecards/ownership-hygiene.yaml"), "id: ownership-hygiene\nlevels: [").unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let scorecards =
        scorecards_until(&app, |scorecards| scorecards.as_array().is_some_and(|list| list.len() == 3)).await;
    assert_eq!(by_id(&scorecards, "ownership-hygiene")["version"], version);
}
