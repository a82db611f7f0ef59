//! Traces and logs of a real `catalog serve` process: spans exported over
//! OTLP/HTTP (JSON) to a receiver in the test, W3C traceparent honoured on the
//! way in and sent on to GitHub on the way out, JSON log lines carrying the
//! request id; the metrics pushed over OTLP (protobuf) as /metrics shows
//! them, periodically and at shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use catalog_store::backend_tests;
use catalog_store::testing::TestDatabase;
use serde_json::{Value, json};
use wiremock::MockServer;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, NumberDataPoint, metric, number_data_point};
use prost::Message as _;

use crate::helpers::{ServeProcess, editable_examples};
use crate::webhooks::serve_github;

backend_tests!(
    a_graphql_request_is_one_trace_under_the_callers_span_with_its_sql,
    a_webhook_sends_its_trace_on_to_github,
    json_log_lines_carry_the_request_id,
    metrics_are_pushed_over_otlp_with_the_counts_of_the_scrape,
    the_last_metrics_are_pushed_at_shutdown,
);

/// One exported span, flattened from OTLP/JSON.
#[derive(Clone, Debug)]
struct ExportedSpan {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i64,
    attributes: HashMap<String, String>,
    /// Attribute and event text, to look for values that must not be there.
    text: String,
    service: String,
}

/// An OTLP/HTTP receiver keeping every span (JSON encoding) and metrics
/// request (protobuf, the default encoding) it is sent.
struct Receiver {
    address: SocketAddr,
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

impl Receiver {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<ExportedSpan>>> = Arc::default();
        let metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>> = Arc::default();
        let kept = Arc::clone(&spans);
        let kept_metrics = Arc::clone(&metrics);
        let app = axum::Router::new()
            .route(
                "/v1/traces",
                axum::routing::post(move |body: axum::body::Bytes| {
                    let kept = Arc::clone(&kept);
                    async move {
                        let request: Value = serde_json::from_slice(&body).expect("the exporter sends OTLP/JSON");
                        kept.lock().unwrap().extend(flatten(&request));
                        axum::Json(json!({}))
                    }
                }),
            )
            .route(
                "/v1/metrics",
                axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let kept = Arc::clone(&kept_metrics);
                    async move {
                        assert_eq!(headers["content-type"], "application/x-protobuf");
                        let request = ExportMetricsServiceRequest::decode(body).expect("OTLP protobuf");
                        kept.lock().unwrap().push(request);
                        // An empty ExportMetricsServiceResponse.
                        ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { address, spans, metrics }
    }

    /// The first metrics request for which `done` holds (at most 20 s).
    async fn metrics_until(&self, done: impl Fn(&ExportMetricsServiceRequest) -> bool) -> ExportMetricsServiceRequest {
        let started = std::time::Instant::now();
        loop {
            if let Some(request) = self.metrics.lock().unwrap().iter().find(|request| done(request)) {
                return request.clone();
            }
            assert!(started.elapsed() < Duration::from_secs(20), "no such metrics pushed within 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The variables that point a `catalog` process's exporter here.
    fn configure(&self, command: &mut std::process::Command) {
        command
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", self.address))
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
            .env("OTEL_SERVICE_NAME", "catalog-under-test")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    }

    /// The spans of one trace, once `done` holds for them (at most 20 s).
    async fn trace(&self, trace_id: &str, done: impl Fn(&[ExportedSpan]) -> bool) -> Vec<ExportedSpan> {
        let started = std::time::Instant::now();
        loop {
            let spans: Vec<ExportedSpan> =
                self.spans.lock().unwrap().iter().filter(|span| span.trace_id == trace_id).cloned().collect();
            if done(&spans) {
                return spans;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "trace {trace_id} incomplete after 20 s: {spans:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// OTLP/JSON's `AnyValue` as text.
fn any_value(value: &Value) -> String {
    let value = value.get("value").unwrap_or(value);
    for key in ["stringValue", "intValue", "boolValue", "doubleValue"] {
        if let Some(scalar) = value.get(key) {
            return scalar.as_str().map_or_else(|| scalar.to_string(), str::to_owned);
        }
    }
    value.to_string()
}

fn attributes(list: &Value) -> HashMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|attribute| (attribute["key"].as_str().unwrap_or_default().to_owned(), any_value(&attribute["value"])))
        .collect()
}

fn flatten(request: &Value) -> Vec<ExportedSpan> {
    let mut spans = Vec::new();
    for resource in request["resourceSpans"].as_array().into_iter().flatten() {
        let service = attributes(&resource["resource"]["attributes"]).remove("service.name").unwrap_or_default();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let text = format!("{} {}", span["attributes"], span["events"]);
                spans.push(ExportedSpan {
                    trace_id: span["traceId"].as_str().unwrap_or_default().to_owned(),
                    span_id: span["spanId"].as_str().unwrap_or_default().to_owned(),
                    parent_span_id: span["parentSpanId"].as_str().unwrap_or_default().to_owned(),
                    name: span["name"].as_str().unwrap_or_default().to_owned(),
                    kind: span["kind"].as_i64().unwrap_or_default(),
                    attributes: attributes(&span["attributes"]),
                    text,
                    service: service.clone(),
                });
            }
        }
    }
    spans
}

/// Whether `span` is `ancestor` or lies under it.
fn descends_from(spans: &[ExportedSpan], span: &ExportedSpan, ancestor: &ExportedSpan) -> bool {
    let mut current = span;
    for _ in 0..64 {
        if current.span_id == ancestor.span_id {
            return true;
        }
        match spans.iter().find(|parent| parent.span_id == current.parent_span_id) {
            Some(parent) => current = parent,
            None => return false,
        }
    }
    false
}

/// A fresh W3C trace id and parent span id for a caller's traceparent.
fn caller_trace() -> (String, String, String) {
    let trace_id = uuid_hex();
    let parent = uuid_hex()[..16].to_owned();
    let header = format!("00-{trace_id}-{parent}-01");
    (trace_id, parent, header)
}

fn uuid_hex() -> String {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

const SQL_SYSTEM: [(&str, &str); 2] = [("sqlite", "sqlite"), ("postgres", "postgresql")];

/// A named query whose variable's value must appear in no span; the spans
/// form one tree under the caller's span: the server span, the operation
/// span (type and name), and the SQL statements (text without values) under
/// the operation, loaders included.
async fn a_graphql_request_is_one_trace_under_the_callers_span_with_its_sql(database: TestDatabase) {
    let receiver = Receiver::start().await;
    let catalog = editable_examples();
    let server =
        ServeProcess::start_with(&database.url, catalog.path(), true, |command| receiver.configure(command)).await;
    let (trace_id, caller_span, traceparent) = caller_trace();
    // The owner comes with the entity; its parent group is reached through
    // the relation loader, in a task of its own.
    let query = "query OwnerOfOne($ref: String!) { entity(ref: $ref) { entityRef \
                 ... on Component { owner { entityRef ... on Group { parent { entityRef } } } } } }";
    let response = server
        .client
        .post(format!("http://{}/graphql", server.address))
        .header("traceparent", &traceparent)
        .json(
            &json!({"query": query, "operationName": "OwnerOfOne", "variables": {"ref": "component:route-optimizer"}}),
        )
        .send()
        .await
        .unwrap();
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["entity"]["owner"]["entityRef"], "group:default/team-routing", "{body}");

    let system = SQL_SYSTEM.iter().find(|(prefix, _)| database.url.starts_with(prefix)).unwrap().1;
    let spans = receiver
        .trace(&trace_id, |spans| {
            // The server span ends last: wait for it too.
            spans.iter().any(|span| span.name == "POST /graphql")
                && spans.iter().any(|span| span.name == "query OwnerOfOne")
                && spans.iter().any(|span| span.name.starts_with("loader.related"))
                && spans.iter().filter(|span| span.attributes.get("db.system").is_some_and(|db| db == system)).count()
                    >= 2
        })
        .await;

    let server_span = spans.iter().find(|span| span.name == "POST /graphql").expect("a server span");
    assert_eq!(server_span.parent_span_id, caller_span, "the server span continues the caller's");
    assert_eq!(server_span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(server_span.attributes["http.response.status_code"], "200");
    assert_eq!(server_span.attributes["request_id"], request_id);
    assert_eq!(server_span.service, "catalog-under-test");

    let operation = spans.iter().find(|span| span.name == "query OwnerOfOne").unwrap();
    assert_eq!(operation.attributes["graphql.operation.type"], "query");
    assert_eq!(operation.attributes["graphql.operation.name"], "OwnerOfOne");
    assert!(descends_from(&spans, operation, server_span), "{spans:#?}");

    let loader = spans.iter().find(|span| span.name.starts_with("loader.related")).unwrap();
    assert!(descends_from(&spans, loader, operation), "the loader's batch stays in the operation: {spans:#?}");
    let statements: Vec<&ExportedSpan> =
        spans.iter().filter(|span| span.attributes.get("db.system").is_some_and(|db| db == system)).collect();
    for statement in &statements {
        assert!(descends_from(&spans, statement, operation), "{statement:#?} is outside the operation");
        assert_eq!(statement.kind, 3, "SPAN_KIND_CLIENT");
    }
    assert!(
        statements.iter().any(|statement| descends_from(&spans, statement, loader)),
        "the loader's statement is under the loader: {spans:#?}"
    );
    assert!(
        statements.iter().any(|span| span.attributes.get("db.statement").is_some_and(|sql| sql.contains("SELECT"))),
        "statements carry their SQL text: {statements:#?}"
    );
    for span in &spans {
        assert!(!span.text.contains("route-optimizer"), "a variable's value leaked into {span:#?}");
    }
}

/// A signed GitHub webhook sent with a traceparent: the re-read it starts
/// calls GitHub with the same trace, and its spans hang under the request.
async fn a_webhook_sends_its_trace_on_to_github(database: TestDatabase) {
    const SECRET: &str = "a webhook secret for the telemetry test";
    let receiver = Receiver::start().await;
    let github = MockServer::start().await;
    serve_github(&github, None).await;
    let catalog = editable_examples();
    let providers = json!([
        {"type": "file", "paths": [catalog.path().join("catalog-info.yaml").display().to_string()]},
        {"type": "github", "organization": "acme", "api_base_url": github.uri(),
         "token_variable": "CATALOG_TEST_GITHUB_TOKEN_UNSET"},
    ]);
    let server = ServeProcess::start_with(&database.url, catalog.path(), true, |command| {
        receiver.configure(command);
        command.env("CATALOG_INGESTION__PROVIDERS", providers.to_string());
        command.env("CATALOG_WEBHOOKS__GITHUB_SECRET", SECRET);
    })
    .await;

    let body = serde_json::to_vec(&json!({
        "ref": "refs/heads/main", "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        "repository": {"id": 1, "name": "payments", "full_name": "acme/payments", "owner": {"login": "acme"},
                       "html_url": "https://github.example/acme/payments", "default_branch": "main"},
        "organization": {"login": "acme"}, "sender": {"login": "octocat"},
        "commits": [{"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "added": [], "modified": ["catalog-info.yaml"],
                     "removed": []}],
    }))
    .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let signature: String = ring::hmac::sign(&key, &body).as_ref().iter().map(|byte| format!("{byte:02x}")).collect();
    let (trace_id, _, traceparent) = caller_trace();
    let response = server
        .client
        .post(format!("http://{}/webhooks/github", server.address))
        .header("x-github-event", "push")
        .header("x-github-delivery", "telemetry-1")
        .header("x-hub-signature-256", format!("sha256={signature}"))
        .header("content-type", "application/json")
        .header("traceparent", &traceparent)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());

    // GitHub sees the caller's trace on the re-read's calls.
    let started = std::time::Instant::now();
    loop {
        let requests = github.received_requests().await.unwrap_or_default();
        let traced = requests.iter().any(|request| {
            request
                .headers
                .get("traceparent")
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.split('-').nth(1) == Some(trace_id.as_str()))
        });
        if traced {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no GitHub call carried trace {trace_id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spans = receiver
        .trace(&trace_id, |spans| {
            ["POST /webhooks/github", "webhook.refresh", "provider.refresh"]
                .iter()
                .all(|name| spans.iter().any(|span| span.name == *name))
        })
        .await;
    let request = spans.iter().find(|span| span.name == "POST /webhooks/github").expect("the server span");
    let refresh = spans.iter().find(|span| span.name == "provider.refresh").unwrap();
    assert!(descends_from(&spans, refresh, request), "{spans:#?}");
    assert_eq!(refresh.attributes["provider"], "github");
}

/// With `CATALOG_LOG_FORMAT=json` every stderr line is a JSON object, and a
/// line logged while serving a request names the request's id.
async fn json_log_lines_carry_the_request_id(database: TestDatabase) {
    let logs = tempfile::NamedTempFile::new().unwrap();
    let catalog = editable_examples();
    let stderr = logs.reopen().unwrap();
    let server = ServeProcess::start_with(&database.url, catalog.path(), true, |command| {
        command.env("CATALOG_LOG_FORMAT", "json").stderr(stderr);
    })
    .await;
    // A query the firewall refuses (40 aliases, over the default 30) is
    // logged while the request is served.
    let response = server
        .client
        .post(format!("http://{}/graphql", server.address))
        .header("x-request-id", "telemetry-json-log-1")
        .json(&json!({"query": format!("{{ {} }}", "a: __typename ".repeat(40))}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "telemetry-json-log-1");
    drop(server);

    let text = std::fs::read_to_string(logs.path()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}")))
        .collect();
    assert!(lines.iter().any(|line| line["fields"]["message"] == "serving GraphQL at /graphql"), "{text}");
    let refused = lines
        .iter()
        .find(|line| line["fields"]["message"] == "query refused by the firewall")
        .unwrap_or_else(|| panic!("no refusal logged: {text}"));
    let spans = refused["spans"].as_array().expect("the spans of the line");
    assert!(
        spans.iter().any(|span| span["request_id"] == "telemetry-json-log-1"),
        "the line names the request id: {refused}"
    );
}

/// The metric called `name` in an OTLP metrics request.
fn pushed_metric<'a>(request: &'a ExportMetricsServiceRequest, name: &str) -> Option<&'a Metric> {
    request
        .resource_metrics
        .iter()
        .flat_map(|resource| &resource.scope_metrics)
        .flat_map(|scope| &scope.metrics)
        .find(|metric| metric.name == name)
}

fn has_attribute(attributes: &[KeyValue], key: &str, expected: &str) -> bool {
    attributes.iter().any(|attribute| {
        attribute.key == key
            && matches!(&attribute.value, Some(value) if value.value == Some(any_value::Value::StringValue(expected.to_owned())))
    })
}

fn integer(point: &NumberDataPoint) -> i64 {
    match point.value {
        Some(number_data_point::Value::AsInt(value)) => value,
        other => panic!("not an integer: {other:?}"),
    }
}

/// How many `query <name>` operations a pushed request has counted.
fn operations_counted(request: &ExportMetricsServiceRequest, name: &str) -> u64 {
    let Some(Metric { data: Some(metric::Data::Histogram(histogram)), .. }) =
        pushed_metric(request, "catalog_graphql_operation_duration_seconds")
    else {
        return 0;
    };
    histogram
        .data_points
        .iter()
        .filter(|point| has_attribute(&point.attributes, "operation", name))
        .map(|point| point.count)
        .sum()
}

/// `catalog_entities{kind="component"}` in a pushed request, when it is a
/// gauge with that point.
fn component_count(request: &ExportMetricsServiceRequest) -> Option<i64> {
    let Some(Metric { data: Some(metric::Data::Gauge(entities)), .. }) = pushed_metric(request, "catalog_entities")
    else {
        return None;
    };
    entities.data_points.iter().find(|point| has_attribute(&point.attributes, "kind", "component")).map(integer)
}

/// The value `GET /metrics` shows for one series, e.g. `catalog_entities{kind="component"}`.
async fn scraped(server: &ServeProcess, series: &str) -> i64 {
    let text =
        server.client.get(format!("http://{}/metrics", server.address)).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|line| line.starts_with(series)).unwrap_or_else(|| panic!("no {series} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

async fn run_probe(server: &ServeProcess, times: usize) {
    for _ in 0..times {
        let query = r#"query MetricsProbe { entity(ref: "component:route-optimizer") { entityRef } }"#;
        let response = server
            .client
            .post(format!("http://{}/graphql", server.address))
            .json(&json!({"query": query, "operationName": "MetricsProbe"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}

/// With an OTLP endpoint set, the registry behind /metrics is pushed every
/// OTEL_METRIC_EXPORT_INTERVAL as OTLP protobuf: counters as monotonic
/// cumulative sums, gauges with the values the scrape shows, histograms
/// with each operation's count, under the service's resource.
async fn metrics_are_pushed_over_otlp_with_the_counts_of_the_scrape(database: TestDatabase) {
    let receiver = Receiver::start().await;
    let catalog = editable_examples();
    let server = ServeProcess::start_with(&database.url, catalog.path(), true, |command| {
        receiver.configure(command);
        // The signal's own protocol wins over the general one (JSON for the spans).
        command.env("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf").env("OTEL_METRIC_EXPORT_INTERVAL", "200");
    })
    .await;
    run_probe(&server, 3).await;
    let components = scraped(&server, r#"catalog_entities{kind="component"}"#).await;
    assert!(components > 0);

    // A push whose counts the database could not give (a busy test server
    // refusing connections) carries none; the next one does.
    let request = receiver
        .metrics_until(|request| operations_counted(request, "MetricsProbe") == 3 && component_count(request).is_some())
        .await;
    let resource = request.resource_metrics[0].resource.as_ref().unwrap();
    assert!(has_attribute(&resource.attributes, "service.name", "catalog-under-test"), "{resource:?}");
    assert!(
        resource.attributes.iter().any(|attribute| attribute.key == "service.instance.id"),
        "replicas' series stay apart: {resource:?}"
    );

    let Some(metric::Data::Sum(requests)) = &pushed_metric(&request, "catalog_http_requests").unwrap().data else {
        panic!("catalog_http_requests is a sum")
    };
    assert!(requests.is_monotonic);
    assert_eq!(requests.aggregation_temporality, 2, "cumulative, as Prometheus counts");
    let answered: i64 = requests
        .data_points
        .iter()
        .filter(|point| {
            has_attribute(&point.attributes, "method", "POST") && has_attribute(&point.attributes, "status", "200")
        })
        .map(integer)
        .sum();
    assert!(answered >= 3, "the three probes at least: {requests:?}");

    assert_eq!(component_count(&request), Some(components), "the push and the scrape agree");
    assert_eq!(pushed_metric(&request, "catalog_http_request_duration_seconds").unwrap().unit, "s");
}

/// Requests served after the last periodic push still reach the collector:
/// SIGTERM pushes once more before the process exits.
async fn the_last_metrics_are_pushed_at_shutdown(database: TestDatabase) {
    let receiver = Receiver::start().await;
    let catalog = editable_examples();
    let mut server = ServeProcess::start_with(&database.url, catalog.path(), true, |command| {
        receiver.configure(command);
        command
            .env("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")
            .env("OTEL_METRIC_EXPORT_INTERVAL", "3600000");
    })
    .await;
    run_probe(&server, 2).await;
    assert!(receiver.metrics.lock().unwrap().is_empty(), "nothing pushed before the interval");
    let status = server.terminate().await;
    assert!(status.success(), "catalog serve exits cleanly on SIGTERM: {status:?}");
    let pushed = receiver.metrics.lock().unwrap().clone();
    assert_eq!(pushed.len(), 1, "one push, at shutdown");
    assert_eq!(operations_counted(&pushed[0], "MetricsProbe"), 2);
}
