//! The HTTP surface: GraphQL over HTTP at /graphql (POST and GET), GraphiQL,
//! health, readiness and metrics. Requests pass the firewall before the parser.

pub(crate) mod documents;
pub(crate) mod firewall;
mod graphql_http;
mod request_id;
mod response;
mod websocket;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::parser::types::{ExecutableDocument, OperationType};
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::Response;
use axum::routing::get;

use crate::auth::Authenticator;
use crate::config::GraphqlConfig;
use crate::graphql::{CatalogSchema, StoreHandles};
use crate::http::documents::DocumentCache;
use crate::telemetry::metrics::Metrics;

use graphql_http::{graphql_get_or_upgrade, graphql_post};
use request_id::{REQUEST_ID, with_request_id};
use websocket::graphql_ws;

#[derive(Clone)]
pub(crate) struct HttpState {
    pub auth: Arc<Authenticator>,
    /// One permit per open WebSocket (`graphql.max_websocket_connections`).
    pub websockets: Arc<tokio::sync::Semaphore>,
    /// Origins (besides the server's own) whose pages may call the API.
    pub allowed_origins: Vec<String>,
    pub schema: CatalogSchema,
    /// The primary's store handles: mutations and WebSocket operations read them.
    pub handles: Arc<StoreHandles>,
    /// The read replica's (`database.read_url`): queries over HTTP read them.
    pub reader: Option<Arc<StoreHandles>>,
    /// What /readyz checks.
    pub readiness: crate::readiness::Readiness,
    pub graphql: GraphqlConfig,
    /// Parsed documents of recent queries, shared by every HTTP request.
    pub documents: Arc<DocumentCache>,
    pub request_timeout: Duration,
    /// `None` when `metrics.enabled` is off: no /metrics, nothing counted.
    pub metrics: Option<Arc<Metrics>>,
    /// `None` without a webhook secret: no /webhooks/github.
    pub github_webhooks: Option<Arc<crate::webhooks::github::GithubWebhooks>>,
    /// `None` without a PagerDuty webhook secret: no /webhooks/pagerduty.
    pub pagerduty_webhooks: Option<Arc<crate::webhooks::pagerduty::PagerDutyWebhooks>>,
}

pub(crate) fn router(state: HttpState) -> Router {
    let body_limit = state.graphql.max_body_bytes;
    let cors = cors_layer(&state.allowed_origins);
    let metrics = state.metrics.clone();
    let mut router = Router::new()
        .route("/graphql", get(graphql_get_or_upgrade).post(graphql_post))
        .route("/graphql/ws", get(graphql_ws))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    if let Some(webhooks) = state.github_webhooks.clone() {
        // Its own body limit and its own authentication (the signature).
        router = router.merge(
            Router::new()
                .route("/webhooks/github", axum::routing::post(crate::webhooks::github::github))
                .with_state(webhooks),
        );
    }
    if let Some(webhooks) = state.pagerduty_webhooks.clone() {
        router = router.merge(
            Router::new()
                .route("/webhooks/pagerduty", axum::routing::post(crate::webhooks::pagerduty::pagerduty))
                .with_state(webhooks),
        );
    }
    if let Some(metrics) = metrics.clone() {
        // Outside authentication, like /healthz: scrapers carry no tokens.
        router = router
            .route("/metrics", get(move |headers: HeaderMap| crate::telemetry::metrics::scrape(metrics, headers)));
    }
    let router =
        router.layer(DefaultBodyLimit::max(body_limit)).layer(axum::middleware::from_fn(with_request_id)).layer(cors);
    // Outermost, so that it also counts what the layers inside answer
    // themselves (CORS preflights) and times the whole request.
    let router = match metrics {
        Some(metrics) => router.layer(axum::middleware::from_fn_with_state(metrics, crate::telemetry::metrics::track)),
        None => router,
    };
    router.with_state(state)
}

/// CORS for the configured origins only; with none, no CORS headers at all,
/// so browsers keep other sites' pages from reading responses.
fn cors_layer(allowed: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = allowed.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()).collect();
    if origins.is_empty() {
        return CorsLayer::new();
    }
    let allow_origin =
        if allowed.iter().any(|origin| origin == "*") { AllowOrigin::any() } else { AllowOrigin::list(origins) };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::AUTHORIZATION,
            CSRF_HEADER.parse().expect("a header name"),
        ])
        .expose_headers([REQUEST_ID.parse::<header::HeaderName>().expect("a header name")])
        .max_age(Duration::from_secs(600))
}

/// The header a GET must carry when `graphql.require_csrf_header` is on: a
/// cross-site page cannot add it without a CORS preflight.
const CSRF_HEADER: &str = "x-catalog-csrf";

async fn readyz(State(state): State<HttpState>) -> Response {
    state.readiness.check().await
}

/// Whether a request's Origin (when it has one) is the server's own or one
/// the configuration allows. Clients outside browsers send no Origin.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|value| value.to_str().ok()) else { return true };
    if allowed.iter().any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

/// The type of the operation a request runs; `None` when the name is unknown
/// or missing among several operations.
fn selected_operation_type(document: &ExecutableDocument, name: Option<&str>) -> Option<OperationType> {
    crate::graphql::selected_operation(document, name).map(|(_, ty)| ty)
}
