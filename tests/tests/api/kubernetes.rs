//! The Kubernetes provider end to end: a server watching a fake API server
//! (list and watch on the wire) answers `kubernetes` on the entity that
//! claims a workload, lists the provider's scopes, and keeps answering from
//! memory while the cluster is gone.

use catalog_ingestion::testing::kubernetes::{FakeKubernetes, deployment};
use catalog_store::backend_tests;
use catalog_store::testing::TestDatabase;
use serde_json::json;

use crate::helpers::{examples_root, spawn_app_with};

async fn an_entity_shows_its_workloads_and_the_provider_its_scopes(database: TestDatabase) {
    let fake = FakeKubernetes::start().await;
    fake.apply(deployment("billing", "invoice-service", json!({"backstage.io/kubernetes-id": "invoice-service"}), 2));
    fake.apply(deployment("billing", "invoice-worker", json!({"backstage.io/kubernetes-id": "invoice-service"}), 1));
    fake.apply(deployment("tools", "grafana", json!({"app": "grafana"}), 1));
    let url = database.url.clone();
    let app = spawn_app_with(&url, &examples_root(), Some(database), |config| {
        config.ingestion.providers.push(
            serde_json::from_value(json!({
                "type": "kubernetes",
                "clusters": [{"name": "prod", "url": fake.url()}],
                "kinds": ["Deployment"],
                "default_owner": "group:default/team-platform-dx",
            }))
            .unwrap(),
        );
    })
    .await;

    let query = r#"{
        invoice: entity(ref: "component:default/invoice-service") {
            kubernetes { name workloads { kind namespace name replicas { desired ready available } images
                conditions { type status reason } lastChange } }
        }
        grafana: entity(ref: "component:default/grafana_tools_prod") {
            ... on Component { owner { name } }
            kubernetes(first: 5) { name workloads { name } }
        }
        providers { name type entityCount scopes { name complete entityCount lastError } }
    }"#;
    let body = app.query(query, json!({})).await;
    let clusters = &body["invoice"]["kubernetes"];
    assert_eq!(clusters.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(clusters[0]["name"], "prod");
    let workloads = &clusters[0]["workloads"];
    assert_eq!(workloads[0]["name"], "invoice-service", "{body}");
    assert_eq!(workloads[1]["name"], "invoice-worker", "{body}");
    assert_eq!(workloads[0]["kind"], "DEPLOYMENT");
    assert_eq!(workloads[0]["replicas"], json!({"desired": 3, "ready": 2, "available": 2}));
    assert_eq!(workloads[0]["images"], json!(["registry.example.com/invoice-service:1.4.2"]));
    assert_eq!(
        workloads[0]["conditions"][0],
        json!({"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"})
    );
    assert_eq!(workloads[0]["lastChange"], "2026-01-05T10:01:00+00:00");
    assert_eq!(body["grafana"]["owner"]["name"], "team-platform-dx", "an unclaimed workload is a component: {body}");
    assert_eq!(body["grafana"]["kubernetes"][0]["workloads"][0]["name"], "grafana");
    let kubernetes = &body["providers"][1];
    assert_eq!((kubernetes["name"].as_str(), kubernetes["type"].as_str()), (Some("kubernetes"), Some("kubernetes")));
    assert_eq!(kubernetes["entityCount"], 1, "the claimed workloads made no entity: {body}");
    assert_eq!(
        kubernetes["scopes"],
        json!([{"name": "kubernetes:prod:deployment", "complete": true, "entityCount": 1, "lastError": null}])
    );

    // The cluster goes away: the answer comes from memory, unchanged.
    drop(fake);
    let again = app.query(query, json!({})).await;
    assert_eq!(again["invoice"], body["invoice"]);

    let (status, refused) = app
        .post(r#"{ entity(ref: "component:default/invoice-service") { kubernetes(first: 0) { name } } }"#, json!({}))
        .await;
    assert_eq!(
        (status, refused["errors"][0]["extensions"]["code"].as_str()),
        (200, Some("BAD_USER_INPUT")),
        "{refused}"
    );
}

backend_tests!(an_entity_shows_its_workloads_and_the_provider_its_scopes);
