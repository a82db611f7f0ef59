//! Logs and traces for the `catalog` binary: log lines on stderr (pretty for
//! people, JSON for collectors, `CATALOG_LOG_FORMAT`), and OpenTelemetry spans
//! exported over OTLP/HTTP when the standard `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) variable is set. The two have
//! their own filters: `CATALOG_LOG` keeps SQL out of the logs while
//! `CATALOG_TRACE` keeps every statement's span in the traces.
//!
//! W3C `traceparent` is read from incoming requests (`http/request_id.rs`) and written
//! into calls to GitHub, Kubernetes and PagerDuty (`catalog_http::trace`)
//! through the global propagator set here.

pub(crate) mod metrics;
pub mod otlp_metrics;

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::WithHttpConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry};

/// What the logs show unless `CATALOG_LOG` says otherwise: no per-statement
/// lines (`sea_orm`, `sqlx`), which would drown the rest.
const DEFAULT_LOG: &str =
    "info,sqlx=warn,sea_orm=warn,opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn";
/// What the traces hold unless `CATALOG_TRACE` says otherwise: the catalog's
/// own spans and one span per SQL statement (sea-orm's `tracing-spans`).
const DEFAULT_TRACE: &str =
    "warn,catalog_api=info,catalog_store=info,catalog_ingestion=info,catalog_scaffolder=info,sea_orm=info";
/// The service name when `OTEL_SERVICE_NAME` does not give one.
const SERVICE_NAME: &str = "catalog";

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines with the span context (`request{request_id=..}:`).
    Pretty,
    /// One JSON object per line: a fixed `message`, the event's fields, and
    /// the spans it happened in (the HTTP request's carries `request_id`).
    Json,
}

impl LogFormat {
    /// `CATALOG_LOG_FORMAT`: `pretty` (the default) or `json`.
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var("CATALOG_LOG_FORMAT").as_deref() {
            Err(_) | Ok("") | Ok("pretty") => Ok(Self::Pretty),
            Ok("json") => Ok(Self::Json),
            Ok(other) => anyhow::bail!("CATALOG_LOG_FORMAT must be `pretty` or `json`, not `{other}`"),
        }
    }
}

/// Keeps the span exporter alive; [`Telemetry::shutdown`] sends what is
/// still buffered before the process exits.
#[must_use = "dropping it without shutdown loses the last spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the buffered spans and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: cannot send the last spans: {error}");
        }
    }
}

/// `span` (made with `parent: None`) as a child of the current span in the
/// trace only: work that outlives the request (a webhook's re-read) shows
/// under it without keeping the request's span open until it ends.
pub(crate) fn detached_child(span: tracing::Span) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    // Without an exporter there is no trace to join.
    let _ = span.set_parent(tracing::Span::current().context());
    span
}

/// Installs the global subscriber and propagator. Must run inside the tokio
/// runtime: the exporter sends its batches through it.
pub fn init() -> anyhow::Result<Telemetry> {
    let format = LogFormat::from_env()?;
    let log_filter = filter("CATALOG_LOG", DEFAULT_LOG)?;
    let log_layer = match format {
        LogFormat::Pretty => {
            tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(log_filter).boxed()
        }
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .with_filter(log_filter)
            .boxed(),
    };
    let mut layers: Vec<Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync>> = vec![log_layer];
    let provider = if otlp_configured() {
        let provider = tracer_provider()?;
        let tracer = provider.tracer("catalog");
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter("CATALOG_TRACE", DEFAULT_TRACE)?)
                .boxed(),
        );
        Some(provider)
    } else {
        None
    };
    tracing_subscriber::registry().with(layers).try_init().context("cannot install the log subscriber")?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(Telemetry { provider })
}

fn filter(variable: &str, default: &str) -> anyhow::Result<EnvFilter> {
    match std::env::var(variable) {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::try_new(&directives).with_context(|| format!("{variable} is not a valid filter: `{directives}`"))
        }
        _ => Ok(EnvFilter::new(default)),
    }
}

/// The standard variables: any OTLP endpoint turns the export on.
fn otlp_configured() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|variable| std::env::var(variable).is_ok_and(|value| !value.trim().is_empty()))
}

fn tracer_provider() -> anyhow::Result<SdkTracerProvider> {
    let client = RuntimeClient::new().context("cannot build the OTLP HTTP client")?;
    // The builder reads the endpoint, protocol (http/protobuf by default,
    // http/json), headers, timeout and compression from the OTEL_* variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .build()
        .context("cannot build the OTLP span exporter")?;
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource()).build())
}

/// What every span and metric says of its process: `service.name`
/// (`OTEL_SERVICE_NAME`, else `OTEL_RESOURCE_ATTRIBUTES`'s, else
/// `catalog`), `service.version`, `service.instance.id` (a UUID per process
/// unless `OTEL_RESOURCE_ATTRIBUTES` names one: replicas pushing the same
/// cumulative series must not look like one process), and the rest of
/// `OTEL_RESOURCE_ATTRIBUTES`.
fn resource() -> Resource {
    use opentelemetry::{Key, KeyValue};
    let detected = Resource::builder().build();
    let named = detected
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let mut resource = Resource::builder();
    if !named {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    if detected.get(&Key::from_static_str("service.instance.id")).is_none() {
        // One id for the process: spans and metrics say the same.
        static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let instance = INSTANCE.get_or_init(|| uuid::Uuid::new_v4().to_string());
        resource = resource.with_attribute(KeyValue::new("service.instance.id", instance.clone()));
    }
    resource.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build()
}

/// [`resource`] as key-value pairs, for the metrics push (`otlp_metrics.rs`).
pub(crate) fn resource_attributes() -> Vec<(String, opentelemetry::Value)> {
    resource().iter().map(|(key, value)| (key.to_string(), value.clone())).collect()
}

/// The exporter's HTTP client: our reqwest, with each request run on the
/// tokio runtime. The SDK's batch processor exports from its own thread,
/// where reqwest alone would find no reactor.
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl RuntimeClient {
    fn new() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().context("not inside the tokio runtime")?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(Self { client, runtime })
    }
}

// async-graphql re-exports the async_trait macro the HttpClient trait is made with.
#[async_graphql::async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move {
                let request = reqwest::Request::try_from(request)?;
                let response = client.execute(request).await?;
                let mut built = Response::builder().status(response.status());
                if let Some(headers) = built.headers_mut() {
                    *headers = response.headers().clone();
                }
                // Collectors answer with small bodies (partial-success notes).
                let body = response.bytes().await?;
                Ok::<_, HttpError>(built.body(body)?)
            })
            .await?
    }
}
