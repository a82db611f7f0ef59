//! GET /metrics: a known sequence of requests moves each counter by exactly
//! what it should, over HTTP and WebSocket, and nothing a client sent ever
//! becomes a label.

use std::time::Duration;

use catalog_store::backend_tests;
use catalog_store::testing::TestDatabase;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::helpers::{TestApp, editable_examples, error_code, examples_root, spawn_app_with};

/// Sent in operation names, aliases and paths; must never reach the scrape.
const MARKER: &str = "zqxMetricsMarker4417";

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One series of a scrape: its name, its labels (sorted) and its value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// A parsed text exposition (OpenMetrics or Prometheus 0.0.4).
#[derive(Debug)]
struct Scrape(Vec<Sample>);

impl Scrape {
    /// Parses `name{label="value",...} value` lines; comments are skipped.
    /// Panics on a line it cannot read, so a malformed exposition fails.
    fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text.lines().filter(|line| !line.is_empty() && !line.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
            let (name, labels) = match series.split_once('{') {
                None => (series, Vec::new()),
                Some((name, rest)) => {
                    let inside = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                    let mut labels: Vec<(String, String)> = inside
                        .split(',')
                        .filter(|pair| !pair.is_empty())
                        .map(|pair| {
                            let (key, quoted) = pair.split_once('=').unwrap_or_else(|| panic!("bad label: {line}"));
                            let value = quoted.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                            (key.to_owned(), value.unwrap_or_else(|| panic!("unquoted label: {line}")).to_owned())
                        })
                        .collect();
                    labels.sort();
                    (name, labels)
                }
            };
            samples.push(Sample { name: name.to_owned(), labels, value });
        }
        Scrape(samples)
    }

    /// The value of the series with exactly these labels; 0 when absent
    /// (a counter not yet incremented has no series).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut wanted: Vec<(String, String)> =
            labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        wanted.sort();
        self.0.iter().find(|sample| sample.name == name && sample.labels == wanted).map_or(0.0, |sample| sample.value)
    }

    /// The sum over every series of a name.
    fn total(&self, name: &str) -> f64 {
        self.0.iter().filter(|sample| sample.name == name).map(|sample| sample.value).sum()
    }

    /// Every value a label takes in the series of a name.
    fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .0
            .iter()
            .filter(|sample| sample.name == name)
            .flat_map(|sample| sample.labels.iter().filter(|(key, _)| key == label).map(|(_, value)| value.clone()))
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

/// GET /metrics with the OpenMetrics Accept header Prometheus sends: the raw
/// text and its parse.
async fn scrape(app: &TestApp) -> (String, Scrape) {
    let response = app
        .client
        .get(app.url("/metrics"))
        .header("accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], OPENMETRICS);
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "an OpenMetrics exposition ends with # EOF: {text}");
    let parsed = Scrape::parse(&text);
    (text, parsed)
}

fn aliases(count: usize) -> String {
    let fields: String = (0..count).map(|n| format!("{MARKER}{n}: __typename ")).collect();
    format!("query {MARKER}Aliases {{ {fields} }}")
}

const LIMITS: &str = "catalog_limit_rejections_total";
const ERRORS: &str = "catalog_graphql_errors_total";
const REQUESTS: &str = "catalog_http_requests_total";
const SOCKETS: &str = "catalog_websocket_connections";

async fn every_rejection_error_and_request_is_counted_by_label(database: TestDatabase) {
    let url = database.url.clone();
    let app = spawn_app_with(&url, &examples_root(), Some(database), |_| {}).await;
    let (_, before) = scrape(&app).await;
    let mut n_requests = 1; // The scrape above counts itself once it has answered.
    let mut n_posts = 0;

    // Without the OpenMetrics Accept header (curl): the Prometheus text format.
    let plain = app.client.get(app.url("/metrics")).send().await.unwrap();
    n_requests += 1;
    assert_eq!(plain.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let plain = Scrape::parse(&plain.text().await.unwrap());
    assert!(plain.total(REQUESTS) >= 1.0, "{plain:?}");

    // A body over graphql.max_body_bytes, on a connection of its own: the
    // server closes a connection after refusing a body unread.
    let oversized = format!(r#"{{"query": "{{ __typename }}", "x": "{}"}}"#, "x".repeat(300 * 1024));
    let response = reqwest::Client::new()
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body(oversized)
        .send()
        .await
        .unwrap();
    (n_requests, n_posts) = (n_requests + 1, n_posts + 1);
    assert_eq!(response.status(), 413);

    let (status, body) = app.post(&aliases(40), json!({})).await;
    (n_requests, n_posts) = (n_requests + 1, n_posts + 1);
    assert_eq!((status, body["errors"][0]["extensions"]["limit"].as_str()), (400, Some("aliases")), "{body}");

    let (_, body) =
        app.post(&format!("query {MARKER}Page {{ entities(first: 101) {{ totalCount }} }}"), json!({})).await;
    (n_requests, n_posts) = (n_requests + 1, n_posts + 1);
    assert_eq!(body["errors"][0]["extensions"]["limit"], "pageSize", "{body}");

    // async-graphql's own depth limit, which graphql/framework_errors.rs gives its code.
    let mut selection = String::from("name");
    for _ in 0..18 {
        selection = format!("name ... on Group {{ parent {{ {selection} }} }}");
    }
    let (_, body) =
        app.post(&format!("{{ entity(ref: \"group:team-shipping-core\") {{ {selection} }} }}"), json!({})).await;
    (n_requests, n_posts) = (n_requests + 1, n_posts + 1);
    assert_eq!(body["errors"][0]["extensions"]["limit"], "depth", "{body}");

    let data = app.query(&format!("query {MARKER}Fine {{ {MARKER}: entities {{ totalCount }} }}"), json!({})).await;
    (n_requests, n_posts) = (n_requests + 1, n_posts + 1);
    assert!(data[MARKER]["totalCount"].as_u64().unwrap() > 0);

    let (_, body) = app.post(&format!("{{ {MARKER}: entities(first: 0) {{ totalCount }} }}"), json!({})).await;
    (n_requests, n_posts) = (n_requests + 1, n_posts + 1);
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");

    let (_, body) = app.post(&format!("{{ {MARKER}Unknown }}"), json!({})).await;
    (n_requests, n_posts) = (n_requests + 1, n_posts + 1);
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");

    let missing = app.client.get(app.url(&format!("/{MARKER}"))).send().await.unwrap();
    n_requests += 1;
    assert_eq!(missing.status(), 404);

    // The same firewall over the WebSocket, counted the same way; the
    // upgrade is one HTTP request (101).
    let mut request = format!("ws://{}/graphql/ws", app.address).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("the WebSocket upgrade succeeds");
    n_requests += 1;
    for message in [
        json!({"type": "connection_init", "payload": {}}),
        json!({"id": "1", "type": "subscribe", "payload": {"query": aliases(40)}}),
    ] {
        socket.send(Message::Text(message.to_string().into())).await.unwrap();
    }
    let mut refused = Value::Null;
    while refused.is_null() {
        let next = tokio::time::timeout(Duration::from_secs(15), socket.next()).await.expect("an answer within 15 s");
        if let Some(Ok(Message::Text(text))) = next {
            let message: Value = serde_json::from_str(&text).unwrap();
            if message["id"] == "1" {
                refused = message;
            }
        }
    }
    let errors = if refused["type"] == "error" { &refused["payload"] } else { &refused["payload"]["errors"] };
    assert_eq!(errors[0]["extensions"]["limit"], "aliases", "{refused}");
    let (_, open) = scrape(&app).await;
    n_requests += 1;
    assert_eq!(open.value(SOCKETS, &[]) - before.value(SOCKETS, &[]), 1.0, "{open:?}");
    socket.close(None).await.unwrap();

    let (text, after) = scrape(&app).await;
    let delta = |name: &str, labels: &[(&str, &str)]| after.value(name, labels) - before.value(name, labels);
    let total = |name: &str| after.total(name) - before.total(name);

    assert_eq!(delta(LIMITS, &[("limit", "bodyBytes")]), 1.0, "{text}");
    assert_eq!(delta(LIMITS, &[("limit", "aliases")]), 2.0, "one over HTTP, one over the WebSocket: {text}");
    assert_eq!(delta(LIMITS, &[("limit", "pageSize")]), 1.0, "{text}");
    assert_eq!(delta(LIMITS, &[("limit", "depth")]), 1.0, "{text}");
    assert_eq!(total(LIMITS), 5.0, "no other limit moved: {text}");

    assert_eq!(delta(ERRORS, &[("code", "LIMIT_EXCEEDED")]), 5.0, "{text}");
    assert_eq!(delta(ERRORS, &[("code", "BAD_USER_INPUT")]), 1.0, "{text}");
    assert_eq!(delta(ERRORS, &[("code", "GRAPHQL_VALIDATION_FAILED")]), 1.0, "{text}");
    assert_eq!(total(ERRORS), 7.0, "no other error: {text}");

    assert_eq!(total(REQUESTS), f64::from(n_requests), "{text}");
    assert_eq!(delta(REQUESTS, &[("method", "POST"), ("status", "413")]), 1.0, "{text}");
    assert_eq!(delta(REQUESTS, &[("method", "GET"), ("status", "404")]), 1.0, "{text}");
    assert_eq!(delta(REQUESTS, &[("method", "GET"), ("status", "101")]), 1.0, "{text}");
    assert_eq!(delta(REQUESTS, &[("method", "GET"), ("status", "200")]), 3.0, "three scrapes: {text}");
    let durations = "catalog_http_request_duration_seconds_count";
    assert_eq!(delta(durations, &[("method", "POST")]), f64::from(n_posts), "{text}");
    let slowest = "catalog_http_request_duration_seconds_bucket";
    assert_eq!(
        after.value(slowest, &[("method", "POST"), ("le", "+Inf")]),
        after.value(durations, &[("method", "POST")])
    );

    // Operation names are the one label clients choose (capped in number);
    // a query refused before execution has no name and no type.
    let operations = "catalog_graphql_operation_duration_seconds_count";
    let fine = format!("{MARKER}Fine");
    let page = format!("{MARKER}Page");
    assert_eq!(delta(operations, &[("type", "query"), ("operation", fine.as_str())]), 1.0, "{text}");
    assert_eq!(delta(operations, &[("type", "query"), ("operation", page.as_str())]), 1.0, "{text}");
    assert_eq!(delta(operations, &[("type", "query"), ("operation", "anonymous")]), 1.0, "first: 0: {text}");
    assert_eq!(delta(operations, &[("type", "unknown"), ("operation", "anonymous")]), 2.0, "depth, validation: {text}");
    assert_eq!(total(operations), 5.0, "the firewall's refusals never reach the schema: {text}");
    let buckets = "catalog_graphql_operation_duration_seconds_bucket";
    let all = [("type", "query"), ("operation", fine.as_str()), ("le", "+Inf")];
    assert_eq!(after.value(buckets, &all), 1.0, "{text}");
    let text: String =
        text.lines().filter(|line| !line.contains("catalog_graphql_operation_duration")).collect::<Vec<_>>().join("\n");
    assert!(!text.contains(MARKER), "a client-supplied string became part of the metrics: {text}");
    assert!(!text.to_ascii_lowercase().contains(&MARKER.to_ascii_lowercase()), "{text}");
    for (name, label) in [(LIMITS, "limit"), (ERRORS, "code"), (REQUESTS, "method")] {
        for value in after.label_values(name, label) {
            assert!(value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}{{{label}={value:?}}}");
        }
    }

    // The socket's count goes when the server has seen it close.
    let mut closed = after;
    for _ in 0..100 {
        if closed.value(SOCKETS, &[]) == before.value(SOCKETS, &[]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        closed = scrape(&app).await.1;
    }
    assert_eq!(closed.value(SOCKETS, &[]), before.value(SOCKETS, &[]), "{closed:?}");
}

async fn metrics_are_not_served_when_disabled(database: TestDatabase) {
    let url = database.url.clone();
    let app = spawn_app_with(&url, &examples_root(), Some(database), |config| config.metrics.enabled = false).await;
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    // The API itself is unaffected.
    let data = app.query("{ entities { totalCount } }", json!({})).await;
    assert!(data["entities"]["totalCount"].as_u64().unwrap() > 0);
}

async fn provider_runs_entities_and_leadership_are_scraped(database: TestDatabase) {
    let catalog = editable_examples();
    let url = database.url.clone();
    let app = spawn_app_with(&url, catalog.path(), Some(database), |_| {}).await;
    let total = app.query("{ entities { totalCount } }", json!({})).await["entities"]["totalCount"].as_f64().unwrap();
    let (text, first) = scrape(&app).await;
    let runs = "catalog_provider_runs_total";
    assert_eq!(first.value(runs, &[("provider", "file"), ("result", "complete")]), 1.0, "{text}");
    assert_eq!(first.value(runs, &[("provider", "file"), ("result", "incomplete")]), 0.0);
    assert_eq!(first.value("catalog_provider_entities", &[("provider", "file"), ("scope", "file")]), total);
    let success = first.value("catalog_provider_last_success_timestamp_seconds", &[("provider", "file")]);
    assert!(success > 1.7e9, "a Unix time: {success}");
    assert!(first.value("catalog_provider_last_run_duration_seconds", &[("provider", "file")]) > 0.0);
    assert_eq!(first.value("catalog_ingestion_leader", &[]), 0.0, "the schedule is off in tests: {text}");
    let components = app.query(r#"{ entities(filter: {kind: ["component"]}) { totalCount } }"#, json!({})).await;
    let components = components["entities"]["totalCount"].as_f64().unwrap();
    assert_eq!(first.value("catalog_entities", &[("kind", "component")]), components, "{text}");
    assert_eq!(first.value("catalog_entities", &[("kind", "template")]), 2.0);
    assert_eq!(first.value("catalog_scaffolder_tasks", &[("status", "completed")]), 0.0);

    // A dry run completes: it is counted.
    let author = catalog_api::auth::issue_token(
        &app.store.access_store(),
        "author",
        &[
            catalog_api::auth::identity::Permission::EntityRead,
            catalog_api::auth::identity::Permission::TemplateExecute,
        ],
        None,
        "test",
    )
    .await
    .unwrap()
    .token;
    let create = r#"mutation { createTask(input: {templateRef: "docs-site", dryRun: true,
        values: {name: "handbook", owner: "team-a", repoUrl: "github.com?owner=acme&repo=handbook"}}) { id } }"#;
    let (_, body) = app.post_as(&author, create).await;
    assert!(body["data"]["createTask"]["id"].is_string(), "{body}");
    let mut completed = 0.0;
    for _ in 0..100 {
        completed = scrape(&app).await.1.value("catalog_scaffolder_tasks", &[("status", "completed")]);
        if completed == 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(completed, 1.0, "the dry run is counted as completed");

    // A file that no longer parses: the run keeps its entities and counts as incomplete.
    std::fs::write(catalog.path().join("systems/billing.yaml"), "kind: [unclosed").unwrap();
    app.ingest().await;
    let (_, second) = scrape(&app).await;
    assert_eq!(second.value(runs, &[("provider", "file"), ("result", "incomplete")]), 1.0);
    assert_eq!(second.value(runs, &[("provider", "file"), ("result", "complete")]), 1.0);
    assert_eq!(second.value("catalog_provider_last_success_timestamp_seconds", &[("provider", "file")]), success);
    assert_eq!(second.value("catalog_provider_entities", &[("provider", "file"), ("scope", "file")]), total);
}

backend_tests!(
    every_rejection_error_and_request_is_counted_by_label,
    metrics_are_not_served_when_disabled,
    provider_runs_entities_and_leadership_are_scraped,
);
