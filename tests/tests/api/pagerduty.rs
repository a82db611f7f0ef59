//! PagerDuty end to end: the real server with a PagerDuty provider on a fake
//! PagerDuty (`catalog_ingestion::testing::pagerduty`), over the example
//! catalog with two more annotations (team-routing's PagerDuty team and
//! driver-app's integration key). Entities show their service, who is on
//! call and their incidents; a burst of queries is one upstream request;
//! failures are errors with a code; impact owners carry who is on call;
//! webhooks are signature-checked and refresh a service.

use std::path::Path;
use std::time::Duration;

use catalog_api::config::{Config, ProviderConfig};
use catalog_ingestion::PagerDutyProviderConfig;
use catalog_ingestion::testing::pagerduty::{
    Account, FakePagerDuty, incident, on_call, service, team, with_integration, with_team,
};
use catalog_store::backend_tests;
use catalog_store::testing::TestDatabase;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{TestApp, editable_examples, error_code, spawn_app, spawn_app_with};

backend_tests!(
    an_entity_shows_its_service_who_is_on_call_and_its_incidents,
    a_burst_of_queries_makes_one_on_call_request_until_the_cache_expires,
    upstream_failures_are_errors_with_a_code_not_empty_lists,
    before_the_first_read_pagerduty_fields_are_unavailable,
    impact_owners_carry_who_is_on_call,
    each_request_may_read_only_so_many_services_live,
    signed_webhooks_refresh_a_service_and_forget_its_caches,
    bad_webhooks_are_refused_and_refresh_nothing,
    the_webhook_is_off_without_a_secret,
    a_rule_judges_by_the_pagerduty_service_fact_or_is_unknown_without_it,
);

const OLD_SECRET: &str = "the PagerDuty secret being retired";
const NEW_SECRET: &str = "the PagerDuty secret taking over";

/// The fake account behind the example catalog: a service for each
/// `pagerduty.com/service-id` of the examples (shipment-tracker: PSHIP01,
/// route-optimizer: PROUTE1, billing: PBILL01, identity: PAUTH01) and
/// PDRIVE1, which driver-app reaches through its integration key
/// (`key-driver`) in [`annotated_examples`]; team PTROUTE (team-routing)
/// holds PROUTE1 and PDRIVE1. Shipping's policy has two people at level 1
/// (Ada twice, through two schedules), Bob at level 2; Routing's has
/// Linus. PSHIP01 has two open incidents and a resolved one.
pub(crate) fn example_account() -> Account {
    Account {
        services: vec![
            with_team(service("PSHIP01", "Shipment Tracker", "PPSHIP"), "PTSHIP", "Shipping Core"),
            with_team(service("PROUTE1", "Route Optimizer", "PPROUTE"), "PTROUTE", "Routing"),
            with_integration(
                with_team(service("PDRIVE1", "Driver App", "PPROUTE"), "PTROUTE", "Routing"),
                "key-driver",
            ),
            with_team(service("PBILL01", "Billing", "PPBILL"), "PTBILL", "Billing"),
            service("PAUTH01", "Identity", "PPAUTH"),
        ],
        teams: vec![team("PTSHIP", "Shipping Core"), team("PTROUTE", "Routing"), team("PTBILL", "Billing")],
        on_calls: vec![
            on_call(
                "PPSHIP",
                1,
                ("PADA", "Ada Lovelace", "ada@acme.example"),
                Some("Shipping primary"),
                Some("2026-12-01T09:00:00Z"),
            ),
            on_call(
                "PPSHIP",
                1,
                ("PADA", "Ada Lovelace", "ada@acme.example"),
                Some("Shipping weekend"),
                Some("2026-12-02T09:00:00Z"),
            ),
            on_call("PPSHIP", 1, ("PGRACE", "Grace Hopper", "grace@acme.example"), None, None),
            on_call(
                "PPSHIP",
                2,
                ("PBOB", "Bob Kahn", "bob@acme.example"),
                Some("Shipping secondary"),
                Some("2026-12-01T09:00:00Z"),
            ),
            on_call(
                "PPROUTE",
                1,
                ("PLIN", "Linus Torvalds", "linus@acme.example"),
                Some("Routing"),
                Some("2026-12-03T09:00:00Z"),
            ),
            on_call("PPBILL", 1, ("PKEN", "Ken Thompson", "ken@acme.example"), Some("Billing"), None),
        ],
        incidents: vec![
            incident("Q1", 101, "PSHIP01", "triggered", "2026-11-30T08:00:00Z"),
            incident("Q2", 102, "PSHIP01", "acknowledged", "2026-11-30T09:00:00Z"),
            incident("Q3", 103, "PSHIP01", "resolved", "2026-11-30T10:00:00Z"),
        ],
        ..Account::default()
    }
}

/// The example catalog with team-routing linked to PagerDuty team PTROUTE
/// and driver-app to its service by integration key.
pub(crate) fn annotated_examples() -> tempfile::TempDir {
    let directory = editable_examples();
    let edit = |file: &str, from: &str, to: &str| {
        let path = directory.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} holds {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    };
    edit(
        "org/groups.yaml",
        "  name: team-routing\n",
        "  name: team-routing\n  annotations:\n    pagerduty.com/team-id: PTROUTE\n",
    );
    edit(
        "systems/shipping.yaml",
        "    github.com/project-slug: acme/driver-app\n",
        "    github.com/project-slug: acme/driver-app\n    pagerduty.com/integration-key: key-driver\n",
    );
    directory
}

fn provider(fake: &FakePagerDuty) -> PagerDutyProviderConfig {
    PagerDutyProviderConfig {
        api_base_url: fake.uri(),
        token_variable: "CATALOG_TEST_PAGERDUTY_TOKEN_UNSET".into(),
        ..PagerDutyProviderConfig::default()
    }
}

/// A server over the annotated examples with a PagerDuty provider on
/// `fake`, adjusted by `configure`.
async fn app_on(
    database: TestDatabase,
    catalog: &Path,
    fake: &FakePagerDuty,
    configure: impl FnOnce(&mut Config, &mut PagerDutyProviderConfig),
) -> TestApp {
    let url = database.url.clone();
    let mut pagerduty = provider(fake);
    spawn_app_with(&url, catalog, Some(database), move |config: &mut Config| {
        config.webhooks.max_body_bytes = 8 * 1024;
        configure(config, &mut pagerduty);
        config.ingestion.providers.push(ProviderConfig::PagerDuty(pagerduty));
    })
    .await
}

const SERVICE: &str = "pagerDuty { id name htmlUrl status escalationPolicy { id name } teams { id name }
    onCall { userName email schedule level until serviceId serviceName } openIncidentCount
    incidents(first: 5) { id number title status urgency createdAt htmlUrl } }";

async fn pager_duty(app: &TestApp, entity_ref: &str, selection: &str) -> (Value, Value) {
    let query = format!(r#"{{ entity(ref: "{entity_ref}") {{ {selection} }} }}"#);
    let (status, body) = app.post(&query, json!({})).await;
    assert_eq!(status, 200, "{body}");
    (body["data"]["entity"].clone(), body)
}

async fn an_entity_shows_its_service_who_is_on_call_and_its_incidents(database: TestDatabase) {
    let fake = FakePagerDuty::start(example_account()).await;
    let catalog = annotated_examples();
    let app = app_on(database, catalog.path(), &fake, |_, _| {}).await;

    let tracker = app
        .query(&format!(r#"{{ entity(ref: "component:default/shipment-tracker") {{ {SERVICE} }} }}"#), json!({}))
        .await;
    let service = &tracker["entity"]["pagerDuty"];
    assert_eq!(
        (service["id"].as_str(), service["name"].as_str(), service["status"].as_str()),
        (Some("PSHIP01"), Some("Shipment Tracker"), Some("active"))
    );
    assert_eq!(service["htmlUrl"], "https://acme.pagerduty.com/service-directory/PSHIP01");
    assert_eq!(service["escalationPolicy"], json!({"id": "PPSHIP", "name": "Shipment Tracker policy"}));
    assert_eq!(service["teams"], json!([{"id": "PTSHIP", "name": "Shipping Core"}]));
    assert_eq!(
        service["onCall"],
        json!([
            {"userName": "Ada Lovelace", "email": "ada@acme.example", "schedule": "Shipping weekend", "level": 1,
             "until": "2026-12-02T09:00:00+00:00", "serviceId": "PSHIP01", "serviceName": "Shipment Tracker"},
            {"userName": "Grace Hopper", "email": "grace@acme.example", "schedule": null, "level": 1,
             "until": null, "serviceId": "PSHIP01", "serviceName": "Shipment Tracker"},
        ]),
        "the lowest level only, Ada once"
    );
    assert_eq!(service["openIncidentCount"], 2);
    let incidents = service["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 2, "the resolved one is not open");
    assert_eq!(
        incidents[0],
        json!({"id": "Q2", "number": 102, "title": "Incident 102", "status": "acknowledged", "urgency": "low",
               "createdAt": "2026-11-30T09:00:00+00:00", "htmlUrl": "https://acme.pagerduty.com/incidents/Q2"})
    );

    let (driver, _) = pager_duty(&app, "component:default/driver-app", "pagerDuty { id name }").await;
    assert_eq!(driver["pagerDuty"], json!({"id": "PDRIVE1", "name": "Driver App"}), "through the integration key");
    let (library, _) = pager_duty(&app, "component:default/label-printer-lib", "pagerDuty { id }").await;
    assert_eq!(library["pagerDuty"], Value::Null, "no annotation, no service");
    let (routing, _) =
        pager_duty(&app, "group:default/team-routing", "... on Group { pagerDutyServices { id } }").await;
    assert_eq!(routing["pagerDutyServices"], json!([{"id": "PDRIVE1"}, {"id": "PROUTE1"}]), "by name");
    let (billing, _) =
        pager_duty(&app, "group:default/team-billing", "... on Group { pagerDutyServices { id } }").await;
    assert_eq!(billing["pagerDutyServices"], json!([]), "no team-id annotation");
}

async fn a_burst_of_queries_makes_one_on_call_request_until_the_cache_expires(database: TestDatabase) {
    let mut account = example_account();
    account.live_latency = Duration::from_millis(200);
    let fake = FakePagerDuty::start(account).await;
    let catalog = annotated_examples();
    let app = app_on(database, catalog.path(), &fake, |_, pagerduty| pagerduty.oncall_cache_seconds = 1).await;
    let query = r#"{ entity(ref: "component:default/shipment-tracker") { pagerDuty { onCall { userName } } } }"#;
    let answers = futures::future::join_all((0..12).map(|_| app.query(query, json!({})))).await;
    for answer in &answers {
        assert_eq!(answer["entity"]["pagerDuty"]["onCall"][0]["userName"], "Ada Lovelace");
    }
    assert_eq!(fake.requests_to("/oncalls").await.len(), 1, "twelve queries, one upstream request");
    app.query(query, json!({})).await;
    assert_eq!(fake.requests_to("/oncalls").await.len(), 1, "still cached");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    app.query(query, json!({})).await;
    assert_eq!(fake.requests_to("/oncalls").await.len(), 2, "asked again after oncall_cache_seconds");
}

async fn upstream_failures_are_errors_with_a_code_not_empty_lists(database: TestDatabase) {
    let fake = FakePagerDuty::start(example_account()).await;
    let catalog = annotated_examples();
    let app = app_on(database, catalog.path(), &fake, |_, _| {}).await;
    Mock::given(method("GET")).and(path("/oncalls")).respond_with(ResponseTemplate::new(503)).mount(&fake.server).await;
    Mock::given(method("GET"))
        .and(path("/incidents"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"error": {"message": "Unauthorized", "code": 2006}})),
        )
        .mount(&fake.server)
        .await;

    let (entity, body) =
        pager_duty(&app, "component:default/shipment-tracker", "name pagerDuty { name onCall { userName } }").await;
    assert_eq!(error_code(&body), "UNAVAILABLE", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("PagerDuty is unavailable"), "{message}");
    assert!(!message.contains(&fake.uri()), "the upstream URL stays in the log: {message}");
    assert_eq!(body["errors"][0]["path"], json!(["entity", "pagerDuty", "onCall"]));
    assert!(entity["pagerDuty"]["onCall"].is_null(), "no empty list pretends nobody is on call: {entity}");

    let (_, body) = pager_duty(&app, "component:default/shipment-tracker", "pagerDuty { openIncidentCount }").await;
    assert_eq!(error_code(&body), "UNAVAILABLE", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("API key"), "{body}");
    // Served from the directory, not live: still there.
    let (entity, body) = pager_duty(&app, "component:default/shipment-tracker", "pagerDuty { name }").await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(entity["pagerDuty"]["name"], "Shipment Tracker");
}

async fn before_the_first_read_pagerduty_fields_are_unavailable(database: TestDatabase) {
    let fake = FakePagerDuty::start(example_account()).await;
    Mock::given(method("GET"))
        .and(path("/services"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&fake.server)
        .await;
    let catalog = annotated_examples();
    let app = app_on(database, catalog.path(), &fake, |_, _| {}).await;
    let (entity, body) = pager_duty(&app, "component:default/shipment-tracker", "name pagerDuty { name }").await;
    assert_eq!(error_code(&body), "UNAVAILABLE", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("has not been read yet"), "{body}");
    assert_eq!(entity["pagerDuty"], Value::Null);
    let (entity, body) = pager_duty(&app, "component:default/label-printer-lib", "pagerDuty { name }").await;
    assert!(body.get("errors").is_none() && entity["pagerDuty"].is_null(), "unmapped entities need no PagerDuty");
    let providers = app.query("{ providers { name lastError } }", json!({})).await;
    assert!(providers["providers"][1]["lastError"].as_str().unwrap().contains("500"), "{providers}");
}

async fn impact_owners_carry_who_is_on_call(database: TestDatabase) {
    let fake = FakePagerDuty::start(example_account()).await;
    let catalog = annotated_examples();
    let app = app_on(database, catalog.path(), &fake, |_, _| {}).await;
    let query = r#"{ impact(ref: "resource:routing-cache") { owners { ownerRef count
        onCall { userName level serviceId } } } }"#;
    let data = app.query(query, json!({})).await;
    let owners = data["impact"]["owners"].as_array().unwrap();
    let on_call_of = |owner: &str| {
        owners.iter().find(|item| item["ownerRef"] == owner).map(|item| item["onCall"].clone()).unwrap_or_default()
    };
    assert_eq!(
        on_call_of("group:default/team-routing"),
        json!([
            {"userName": "Linus Torvalds", "level": 1, "serviceId": "PDRIVE1"},
            {"userName": "Linus Torvalds", "level": 1, "serviceId": "PROUTE1"},
        ]),
        "its team's services and its impacted components' ({owners:?})"
    );
    assert_eq!(
        on_call_of("group:default/team-shipping-core"),
        json!([
            {"userName": "Ada Lovelace", "level": 1, "serviceId": "PSHIP01"},
            {"userName": "Grace Hopper", "level": 1, "serviceId": "PSHIP01"},
        ]),
        "shipment-tracker is impacted: {owners:?}"
    );
    assert_eq!(fake.requests_to("/oncalls").await.len(), 2, "one per escalation policy, however many owners");
}

async fn each_request_may_read_only_so_many_services_live(database: TestDatabase) {
    let fake = FakePagerDuty::start(example_account()).await;
    let catalog = annotated_examples();
    let app = app_on(database, catalog.path(), &fake, |_, _| {}).await;
    let alias = |index: usize| {
        format!(
            r#"a{index}: entity(ref: "component:default/shipment-tracker") {{
                pagerDuty {{ onCall {{ userName }} openIncidentCount incidents {{ id }} }} }}"#
        )
    };
    let within: Vec<String> = (0..16).map(alias).collect();
    let data = app.query(&format!("{{ {} }}", within.join(" ")), json!({})).await;
    assert_eq!(data["a15"]["pagerDuty"]["openIncidentCount"], 2, "48 lookups pass");
    let over: Vec<String> = (0..17).map(alias).collect();
    let (_, body) = app.post(&format!("{{ {} }}", over.join(" ")), json!({})).await;
    assert_eq!(error_code(&body), "LIMIT_EXCEEDED", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["limit"], "pagerDutyLookups");
}

fn sign(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let hex: String = ring::hmac::sign(&key, body).as_ref().iter().map(|byte| format!("{byte:02x}")).collect();
    format!("v1={hex}")
}

/// POSTs a delivery: the status and JSON body.
async fn deliver(app: &TestApp, body: &[u8], signature: Option<&str>) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url("/webhooks/pagerduty"))
        .header("content-type", "application/json")
        .header("user-agent", "PagerDuty-Webhook/V3.0")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-pagerduty-signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A v3 event as PagerDuty delivers it.
fn event(event_type: &str, service_id: &str) -> Vec<u8> {
    let data = if event_type.starts_with("incident.") {
        json!({"id": "Q9", "type": "incident", "number": 109, "status": "triggered", "title": "Incident 109",
               "html_url": "https://acme.pagerduty.com/incidents/Q9",
               "service": {"id": service_id, "type": "service_reference", "summary": service_id}})
    } else {
        json!({"id": service_id, "type": "service", "summary": "Shipment Tracker", "name": "Shipment Tracker",
               "html_url": format!("https://acme.pagerduty.com/service-directory/{service_id}")})
    };
    json!({"event": {"id": "01DEN1HNLBC1VITR8ZF8TU5GX6", "event_type": event_type, "resource_type": event_type.split('.').next(),
           "occurred_at": "2026-11-30T10:00:00.000Z", "agent": null, "client": null, "data": data}})
    .to_string()
    .into_bytes()
}

async fn secured_app(database: TestDatabase, fake: &FakePagerDuty, catalog: &Path) -> TestApp {
    app_on(database, catalog, fake, |config, _| {
        config.webhooks.pagerduty_secrets = vec![OLD_SECRET.into(), NEW_SECRET.into()];
    })
    .await
}

/// Polls until the query's answer satisfies `done` (refreshes run in the background).
async fn eventually(app: &TestApp, query: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut data = Value::Null;
    for _ in 0..100 {
        data = app.query(query, json!({})).await;
        if done(&data) {
            return data;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    data
}

async fn signed_webhooks_refresh_a_service_and_forget_its_caches(database: TestDatabase) {
    let fake = FakePagerDuty::start(example_account()).await;
    let catalog = annotated_examples();
    let app = secured_app(database, &fake, catalog.path()).await;
    let name = r#"{ entity(ref: "component:default/shipment-tracker") { pagerDuty { name status } } }"#;

    fake.update(|account| {
        account.services[0]["name"] = json!("Shipment Tracker v2");
        account.services[0]["status"] = json!("critical");
    });
    let updated = event("service.updated", "PSHIP01");
    let (status, body) = deliver(&app, &updated, Some(&sign(NEW_SECRET, &updated))).await;
    assert_eq!((status, &body), (202, &json!({"status": "accepted", "service": "PSHIP01"})));
    let data = eventually(&app, name, |data| data["entity"]["pagerDuty"]["name"] == "Shipment Tracker v2").await;
    assert_eq!(data["entity"]["pagerDuty"], json!({"name": "Shipment Tracker v2", "status": "critical"}));

    // During a rotation PagerDuty signs with both secrets; either may be ours.
    let count = r#"{ entity(ref: "component:default/shipment-tracker") { pagerDuty { openIncidentCount } } }"#;
    assert_eq!(app.query(count, json!({})).await["entity"]["pagerDuty"]["openIncidentCount"], 2);
    fake.update(|account| account.incidents.push(incident("Q9", 109, "PSHIP01", "triggered", "2026-11-30T12:00:00Z")));
    assert_eq!(app.query(count, json!({})).await["entity"]["pagerDuty"]["openIncidentCount"], 2, "cached");
    let triggered = event("incident.triggered", "PSHIP01");
    let rotated = format!("{},{}", sign("a secret we do not have", &triggered), sign(OLD_SECRET, &triggered));
    let service_reads = fake.requests_to("/services/PSHIP01").await.len();
    let (status, _) = deliver(&app, &triggered, Some(&rotated)).await;
    assert_eq!(status, 202);
    let data = eventually(&app, count, |data| data["entity"]["pagerDuty"]["openIncidentCount"] == 3).await;
    assert_eq!(data["entity"]["pagerDuty"]["openIncidentCount"], 3, "the incident event forgot the cached count");
    assert_eq!(
        fake.requests_to("/services/PSHIP01").await.len(),
        service_reads,
        "an incident event re-reads no service"
    );

    let ping = br#"{"event": {"id": "01", "event_type": "pagey.ping", "resource_type": "pagey", "data": {}}}"#;
    let (status, body) = deliver(&app, ping, Some(&sign(NEW_SECRET, ping))).await;
    assert_eq!((status, body["status"].as_str()), (202, Some("ignored")));
}

async fn bad_webhooks_are_refused_and_refresh_nothing(database: TestDatabase) {
    let fake = FakePagerDuty::start(example_account()).await;
    let catalog = annotated_examples();
    let app = secured_app(database, &fake, catalog.path()).await;
    fake.update(|account| account.services[0]["name"] = json!("Renamed"));
    let updated = event("service.updated", "PSHIP01");

    let (status, _) = deliver(&app, &updated, None).await;
    assert_eq!(status, 400, "no signature");
    let (status, _) = deliver(&app, &updated, Some("sha256=0123")).await;
    assert_eq!(status, 400, "not v1=");
    let (status, _) = deliver(&app, &updated, Some("v1=0123")).await;
    assert_eq!(status, 400, "not 64 hex digits");
    let (status, body) = deliver(&app, &updated, Some(&sign("a secret we do not have", &updated))).await;
    assert_eq!(status, 401, "{body}");
    let other = event("service.updated", "PROUTE1");
    let (status, _) = deliver(&app, &updated, Some(&sign(NEW_SECRET, &other))).await;
    assert_eq!(status, 401, "another body's signature");
    let garbage = b"{not json";
    let (status, _) = deliver(&app, garbage, Some(&sign("a secret we do not have", garbage))).await;
    assert_eq!(status, 401, "the signature is checked before the body is parsed");
    let (status, _) = deliver(&app, garbage, Some(&sign(NEW_SECRET, garbage))).await;
    assert_eq!(status, 400, "signed but not JSON");
    let traversal = event("service.updated", "../escalation_policies");
    let (status, _) = deliver(&app, &traversal, Some(&sign(NEW_SECRET, &traversal))).await;
    assert_eq!(status, 400, "a service id that is not one never reaches a URL");
    let mut huge = updated.clone();
    huge.extend(vec![b' '; 9 * 1024]);
    let (status, _) = deliver(&app, &huge, Some(&sign(NEW_SECRET, &huge))).await;
    assert_eq!(status, 413);

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(fake.requests_to("/services/PSHIP01").await.is_empty(), "no refused delivery refreshed anything");
    let (entity, _) = pager_duty(&app, "component:default/shipment-tracker", "pagerDuty { name }").await;
    assert_eq!(entity["pagerDuty"]["name"], "Shipment Tracker");
}

async fn the_webhook_is_off_without_a_secret(database: TestDatabase) {
    let app = spawn_app(database).await;
    let body = event("service.updated", "PSHIP01");
    let (status, _) = deliver(&app, &body, Some(&sign(NEW_SECRET, &body))).await;
    assert_eq!(status, 404);
}

/// A scorecard over two components with one rule on the PagerDuty fact.
const FACT_SCORECARD: &str = r#"
id: paged
title: Paged
owner: group:default/team-platform-dx
appliesTo: { entities: [component:default/shipment-tracker, component:default/label-printer-lib] }
levels:
  - name: Paged
    rules:
      - id: active-service
        title: Maps to an active PagerDuty service
        expression: fact('pagerduty.service') != null && fact('pagerduty.service').status == 'active'
"#;

const PREVIEW: &str = "query ($yaml: String!) { previewScorecard(yaml: $yaml) { preview {
    summary { rules { rule pass fail unknown } } failures { entityRef status explanation { path } } } } }";

async fn a_rule_judges_by_the_pagerduty_service_fact_or_is_unknown_without_it(database: TestDatabase) {
    let fake = FakePagerDuty::start(example_account()).await;
    let catalog = annotated_examples();
    let app = app_on(database, catalog.path(), &fake, |_, _| {}).await;
    let data = app.query(PREVIEW, json!({"yaml": FACT_SCORECARD})).await;
    let preview = &data["previewScorecard"]["preview"];
    assert_eq!(preview["summary"]["rules"][0], json!({"rule": "active-service", "pass": 1, "fail": 1, "unknown": 0}));
    assert_eq!(
        preview["failures"],
        json!([{"entityRef": "component:default/label-printer-lib", "status": "FAIL",
                "explanation": {"path": "facts.pagerduty.service"}}]),
        "no annotation: the fact is known and null"
    );

    // Without a PagerDuty provider nobody knows: unknown, not failed.
    let other = editable_examples();
    let url = TestDatabase::sqlite().await;
    let without = spawn_app_with(&url.url.clone(), other.path(), Some(url), |_| {}).await;
    let data = without.query(PREVIEW, json!({"yaml": FACT_SCORECARD})).await;
    let rules = &data["previewScorecard"]["preview"]["summary"]["rules"][0];
    assert_eq!((rules["pass"].as_u64(), rules["unknown"].as_u64()), (Some(0), Some(2)), "{data}");
}
