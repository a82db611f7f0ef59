//! W3C trace context on calls to the sources (GitHub, Kubernetes,
//! PagerDuty): the current span's context as `traceparent`, so a trace shows
//! which run or webhook made which call. The binary installs the propagator
//! and the span exporter; without them nothing is added.

use opentelemetry_http::HeaderInjector;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Adds the current span's `traceparent` (and `tracestate`) to `headers`.
pub fn inject(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}
