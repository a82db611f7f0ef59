//! Request ids and the request's server span: every request gets an id (the
//! client's own `x-request-id` when sane), returned in the response and named
//! by every log line and span of the request, which continues the caller's
//! trace when it sent a W3C `traceparent`.

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;

/// The id the request-id middleware gave this request.
pub(super) fn request_id(headers: &HeaderMap) -> String {
    headers.get(REQUEST_ID).and_then(|value| value.to_str().ok()).map_or_else(new_request_id, str::to_owned)
}

pub(super) fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The header carrying a request's id, both ways.
pub(super) const REQUEST_ID: &str = "x-request-id";

/// The paths a span may be named after; anything else is named by its
/// method alone, so that span names stay a closed set.
pub(super) const ROUTES: &[&str] =
    &["/graphql", "/graphql/ws", "/healthz", "/readyz", "/metrics", "/webhooks/github", "/webhooks/pagerduty"];

/// Gives every request an id (a client's own `x-request-id` when it sent a
/// sane one) and runs it inside the request's server span, which names the
/// id (so every log line of the request carries it) and continues the
/// caller's trace when it sent a W3C `traceparent`. Returns the id in the
/// response.
pub(super) async fn with_request_id(mut request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let given = request.headers().get(REQUEST_ID).and_then(|value| value.to_str().ok()).filter(|id| {
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
    });
    let id = given.map_or_else(new_request_id, str::to_owned);
    let value = HeaderValue::from_str(&id).expect("request ids are ASCII");
    request.headers_mut().insert(REQUEST_ID, value.clone());
    // Any method token reaches here; span names keep to the standard ones.
    let method = crate::telemetry::metrics::method_label(request.method()).to_owned();
    let path = request.uri().path();
    let route = ROUTES.iter().find(|route| **route == path).copied();
    let span = tracing::info_span!(
        "request",
        otel.name = %route.map_or_else(|| method.clone(), |route| format!("{method} {route}")),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        request_id = %id,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&opentelemetry_http::HeaderExtractor(request.headers()))
    });
    // Without an exporter there is no trace to join; that is not an error.
    let _ = span.set_parent(parent);
    let mut response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response.headers_mut().insert(REQUEST_ID, value);
    response
}
