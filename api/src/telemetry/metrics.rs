//! Prometheus metrics at `GET /metrics`: HTTP requests and their durations,
//! GraphQL errors by code, requests refused by a limit, open WebSockets, and
//! the providers' runs, durations, last successes and entities. This
//! is how operators see the API's limits at work (each rejection is a metric)
//! without reading logs; it holds counts only, never entity data.
//!
//! Every label value comes from a closed list below or from the
//! configuration (provider keys and scopes), never from the client (no
//! paths, queries or refs), so the number of series stays bounded whatever
//! clients send. The one exception, operation names, is capped
//! (`graphql/operations.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;

use async_graphql::Response as GraphqlResponse;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use catalog_ingestion::Engine;

use crate::error_code::{ErrorCode, Limit};
use crate::graphql::OperationMetrics;
use crate::hub::ChangeHub;
use crate::webhooks::WebhookResult;
use catalog_store::{Catalog, ChangeFeed, PoolMonitor, PoolUsage, TaskStore};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The label value standing for anything outside a closed list.
const OTHER: &str = "other";

/// Request durations from 0.5 ms (a cached lookup) to 10 s (a third of the
/// default request timeout); slower requests land in `+Inf`.
const DURATION_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    provider: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    provider: String,
    scope: String,
}

/// What the metrics count in the primary database at each scrape.
pub(crate) struct CatalogReads {
    pub catalog: Catalog,
    pub tasks: TaskStore,
    pub change_feed: ChangeFeed,
    pub scores: catalog_store::ScoreStore,
}

/// The connection pools the metrics report.
pub(crate) struct CatalogPools {
    pub primary: PoolMonitor,
    /// The read replica's, when there is one.
    pub replica: Option<PoolMonitor>,
}

/// Entities per provider scope, as last counted.
type EntityCounts = Arc<Mutex<HashMap<String, u64>>>;

/// The providers' health, read from the engine at each scrape, and their
/// entity counts, read from the store just before (a collector cannot wait);
/// the change hub's and the connection pool's state, read as they are.
struct ProviderCollector {
    engine: Engine,
    /// The primary's pool, and the read replica's beside it.
    pools: CatalogPools,
    hub: Arc<ChangeHub>,
    entities: EntityCounts,
    catalog: Arc<Mutex<CatalogCounts>>,
}

impl std::fmt::Debug for ProviderCollector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ProviderCollector").finish_non_exhaustive()
    }
}

/// Counts read from the store at each scrape for the collector.
#[derive(Debug, Default)]
struct CatalogCounts {
    kinds: HashMap<String, u64>,
    tasks: HashMap<&'static str, u64>,
    /// Changes retained in the log, and its newest sequence.
    change_log: Option<(u64, i64)>,
    /// The catalog's health counts (`catalogHealth`).
    health: Option<catalog_store::HealthCounts>,
    /// Each scorecard rule's coverage.
    rule_coverage: Vec<crate::health::RuleCoverage>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    source: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolNameLabels {
    pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FigureLabels {
    figure: &'static str,
}

/// Bounded by the configured scorecards' rules.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    scorecard: String,
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

impl Collector for ProviderCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let health = self.engine.health();
        let provider = |key: &str| ProviderLabels { provider: key.to_owned() };
        {
            let help =
                "Provider runs since the process started, by outcome: complete, incomplete (nothing removed) or failed";
            let mut family = encoder.encode_descriptor("provider_runs", help, None, MetricType::Counter)?;
            for health in &health {
                for (result, n) in [
                    ("complete", health.runs_complete),
                    ("incomplete", health.runs_incomplete),
                    ("failed", health.runs_failed),
                ] {
                    let labels = RunLabels { provider: health.key.clone(), result };
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let help = "How long each provider's last run took, read and apply";
            let mut family = encoder.encode_descriptor(
                "provider_last_run_duration",
                help,
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            for health in &health {
                if let Some(duration) = health.last_duration {
                    ConstGauge::new(duration.as_secs_f64()).encode(family.encode_family(&provider(&health.key))?)?;
                }
            }
        }
        {
            let help = "When each provider's last complete run started (alert on its age)";
            let mut family = encoder.encode_descriptor(
                "provider_last_success_timestamp",
                help,
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            for health in &health {
                if let Some(at) = health.last_success_at {
                    ConstGauge::new(at.timestamp() as f64).encode(family.encode_family(&provider(&health.key))?)?;
                }
            }
        }
        {
            let help = "Entities each provider holds, per scope";
            let entities = self.entities.lock();
            let mut family = encoder.encode_descriptor("provider_entities", help, None, MetricType::Gauge)?;
            for health in &health {
                for scope in &health.scopes {
                    let n = entities.get(&scope.name).copied().unwrap_or_default();
                    let labels = ScopeLabels { provider: health.key.clone(), scope: scope.name.clone() };
                    ConstGauge::new(n as i64).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let counts = self.catalog.lock();
        {
            let mut family =
                encoder.encode_descriptor("entities", "Entities in the catalog, by kind", None, MetricType::Gauge)?;
            let mut kinds: Vec<(&String, &u64)> = counts.kinds.iter().collect();
            kinds.sort();
            for (kind, n) in kinds {
                ConstGauge::new(*n as i64).encode(family.encode_family(&KindLabels { kind: kind.clone() })?)?;
            }
        }
        {
            let help = "Scaffolder tasks, by status (open, processing, completed, failed, cancelled)";
            let mut family = encoder.encode_descriptor("scaffolder_tasks", help, None, MetricType::Gauge)?;
            for status in ["open", "processing", "completed", "failed", "cancelled"] {
                let n = counts.tasks.get(status).copied().unwrap_or_default();
                ConstGauge::new(n as i64).encode(family.encode_family(&StatusLabels { status })?)?;
            }
        }
        if let Some(health) = &counts.health {
            let help = "Catalog health, by figure: orphans (owner unresolved), dangling_refs, processing_errors, \
                        conflicts, stale, policy_violations (entities admitted with them), pending (waiting for review)";
            let mut family = encoder.encode_descriptor("health", help, None, MetricType::Gauge)?;
            for (figure, n) in [
                ("orphans", health.orphans),
                ("dangling_refs", health.dangling_refs),
                ("processing_errors", health.processing_errors),
                ("conflicts", health.conflicts),
                ("stale", health.stale),
                ("policy_violations", health.policy_violations),
                ("pending", health.pending),
            ] {
                ConstGauge::new(n as i64).encode(family.encode_family(&FigureLabels { figure })?)?;
            }
        }
        {
            let help = "Each scorecard rule's pass rate: entities passing it (or exempt) over those it applies to";
            let mut family = encoder.encode_descriptor("rule_pass_ratio", help, None, MetricType::Gauge)?;
            for coverage in counts.rule_coverage.iter().filter(|coverage| coverage.applicable > 0) {
                let labels = RuleLabels { scorecard: coverage.scorecard.clone(), rule: coverage.rule.clone() };
                let ratio = coverage.passing as f64 / coverage.applicable as f64;
                ConstGauge::new(ratio).encode(family.encode_family(&labels)?)?;
            }
        }
        if let Some((rows, newest)) = counts.change_log {
            let gauge = ConstGauge::new(rows as i64);
            let help =
                "Changes the change log retains (subscriptions resume from them; purged after changes.retention_days)";
            gauge.encode(encoder.encode_descriptor("change_log_rows", help, None, gauge.metric_type())?)?;
            let gauge = ConstGauge::new(newest);
            let help = "The newest change-log sequence number";
            gauge.encode(encoder.encode_descriptor("change_log_sequence", help, None, gauge.metric_type())?)?;
            // Read after the log: a change committed in between shows as no lag, not a negative one.
            let gauge = ConstGauge::new((newest - self.hub.sequence()).max(0));
            let help = "How far (in change-log sequence numbers, which may have gaps) this process's subscribers are behind the log";
            gauge.encode(encoder.encode_descriptor("change_hub_lag", help, None, gauge.metric_type())?)?;
        }
        drop(counts);
        let subscriptions = ConstGauge::new(self.hub.subscribers() as i64);
        let help = "Live catalogChanges subscriptions in this process";
        subscriptions.encode(encoder.encode_descriptor("subscriptions", help, None, subscriptions.metric_type())?)?;
        let (delivered, dropped) = self.hub.deliveries();
        let counter = ConstCounter::new(delivered);
        let help = "Change events sent to subscribers";
        counter.encode(encoder.encode_descriptor("change_events_delivered", help, None, counter.metric_type())?)?;
        let counter = ConstCounter::new(dropped);
        let help = "Changes subscribers missed by falling further behind than the buffer (each such subscription ends with SUBSCRIBER_TOO_SLOW)";
        counter.encode(encoder.encode_descriptor("change_events_dropped", help, None, counter.metric_type())?)?;
        let pools: Vec<(&'static str, PoolUsage)> = std::iter::once(("primary", self.pools.primary.pool_usage()))
            .chain(self.pools.replica.iter().map(|replica| ("replica", replica.pool_usage())))
            .collect();
        {
            let help = "Database connections of this process's pools (primary, replica), busy or idle";
            let mut family = encoder.encode_descriptor("database_connections", help, None, MetricType::Gauge)?;
            for (pool, usage) in &pools {
                for (state, n) in [("busy", usage.open.saturating_sub(usage.idle)), ("idle", usage.idle)] {
                    ConstGauge::new(i64::from(n)).encode(family.encode_family(&PoolLabels { pool, state })?)?;
                }
            }
        }
        {
            let help = "The most connections each pool opens";
            let mut family = encoder.encode_descriptor("database_connections_max", help, None, MetricType::Gauge)?;
            for (pool, usage) in &pools {
                ConstGauge::new(i64::from(usage.max)).encode(family.encode_family(&PoolNameLabels { pool })?)?;
            }
        }
        let leader = ConstGauge::new(i64::from(self.engine.is_leading()));
        let help = "1 while this process runs the ingestion schedule (one replica leads)";
        leader.encode(encoder.encode_descriptor("ingestion_leader", help, None, leader.metric_type())?)?;
        Ok(())
    }
}

/// The registry and the metric families the server updates; one per process.
pub(crate) struct Metrics {
    registry: Registry,
    limit_rejections: Family<LimitLabels, Counter>,
    graphql_errors: Family<CodeLabels, Counter>,
    http_requests: Family<RequestLabels, Counter>,
    http_request_duration: Family<MethodLabels, Histogram>,
    webhook_deliveries: Family<WebhookLabels, Counter>,
    websocket_connections: Gauge,
    /// Where the provider collector's entity counts come from.
    provider_entities: Option<(CatalogReads, EntityCounts)>,
    catalog_counts: Arc<Mutex<CatalogCounts>>,
    operations: Arc<OperationMetrics>,
    /// When the counters started: the start of every cumulative OTLP point.
    started_at: SystemTime,
}

impl Metrics {
    /// `operation_names`: `metrics.operation_names`.
    pub(crate) fn new(operation_names: &[String]) -> Self {
        let limit_rejections = Family::<LimitLabels, Counter>::default();
        let graphql_errors = Family::<CodeLabels, Counter>::default();
        let http_requests = Family::<RequestLabels, Counter>::default();
        let http_request_duration =
            Family::<MethodLabels, Histogram>::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        let websocket_connections = Gauge::default();
        let webhook_deliveries = Family::<WebhookLabels, Counter>::default();
        // prometheus-client appends `_total` to counters and the unit to
        // names registered with one (it panics on `_total` in debug builds).
        let mut registry = Registry::with_prefix("catalog");
        registry.register(
            "limit_rejections",
            "Requests refused (in whole or in part) with LIMIT_EXCEEDED, by the limit they hit",
            limit_rejections.clone(),
        );
        registry.register("graphql_errors", "GraphQL errors in responses, by extensions.code", graphql_errors.clone());
        registry.register("http_requests", "HTTP requests answered, by method and status", http_requests.clone());
        registry.register_with_unit(
            "http_request_duration",
            "Time from receiving an HTTP request to sending its response headers",
            Unit::Seconds,
            http_request_duration.clone(),
        );
        registry.register("websocket_connections", "Open GraphQL WebSockets", websocket_connections.clone());
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by source and result: accepted, duplicate, ignored (nothing to re-read), refused or failed",
            webhook_deliveries.clone(),
        );
        let operations = Arc::new(OperationMetrics::new(operation_names));
        operations.register(&mut registry);
        Self {
            registry,
            limit_rejections,
            graphql_errors,
            http_requests,
            http_request_duration,
            webhook_deliveries,
            websocket_connections,
            provider_entities: None,
            catalog_counts: Arc::default(),
            operations,
            started_at: SystemTime::now(),
        }
    }

    /// The per-operation family, which the schema's extension feeds.
    pub(crate) fn operations(&self) -> Arc<OperationMetrics> {
        Arc::clone(&self.operations)
    }

    /// Adds the families read at each scrape: the providers' (from `engine`,
    /// their entity counts from `store`), the catalog's counts and change
    /// log (`store`), the subscriptions' (`hub`) and the connection pool's.
    pub(crate) fn with_catalog(
        mut self,
        engine: Engine,
        reads: CatalogReads,
        pools: CatalogPools,
        hub: Arc<ChangeHub>,
    ) -> Self {
        let entities = Arc::default();
        let catalog = Arc::clone(&self.catalog_counts);
        self.registry.register_collector(Box::new(ProviderCollector {
            engine,
            pools,
            hub,
            entities: Arc::clone(&entities),
            catalog,
        }));
        self.provider_entities = Some((reads, entities));
        self
    }

    /// Counts each error of a response by code, and the response once per
    /// limit it hit: a request refused twice for its page size is one
    /// refused request.
    pub(crate) fn record_errors(&self, errors: &ResponseErrors) {
        let mut limits: Vec<&'static str> = Vec::new();
        for &(code, limit) in &errors.0 {
            self.graphql_errors.get_or_create(&CodeLabels { code: code_label(code) }).inc();
            if code == Some(ErrorCode::LimitExceeded) && !limits.contains(&limit) {
                limits.push(limit);
                self.limit_rejections.get_or_create(&LimitLabels { limit }).inc();
            }
        }
    }

    /// Counts a refusal that is not a GraphQL response: a WebSocket refused
    /// or closed for a connection or operation limit.
    pub(crate) fn record_limit(&self, limit: Limit) {
        self.limit_rejections.get_or_create(&LimitLabels { limit: limit.as_str() }).inc();
    }

    /// Counts the errors of a response that no HTTP response carries (a
    /// WebSocket message).
    pub(crate) fn record_response(&self, response: &GraphqlResponse) {
        if !response.errors.is_empty() {
            self.record_errors(&ResponseErrors::of(response));
        }
    }

    /// Counts a WebSocket as open until the returned guard drops.
    pub(crate) fn websocket_opened(&self) -> OpenWebsocket {
        self.websocket_connections.inc();
        OpenWebsocket(self.websocket_connections.clone())
    }

    pub(crate) fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// Reads the counts the collector reports from the store (a collector
    /// cannot wait for the database). On an error the last counts stay: the
    /// metrics still answer while the database is away.
    pub(crate) async fn refresh(&self) {
        let Some((reads, entities)) = &self.provider_entities else { return };
        match reads.catalog.entity_counts_by_provider().await {
            Ok(counts) => *entities.lock() = counts,
            Err(error) => tracing::warn!(%error, "cannot count the providers' entities for the metrics"),
        }
        match (
            reads.catalog.entity_counts_by_kind().await,
            reads.tasks.task_counts_by_status().await,
            reads.change_feed.change_log_size().await,
        ) {
            (Ok(kinds), Ok(tasks), Ok(change_log)) => {
                // One statement of index probes and a scan of the relations
                // (measured: bench/results/README.md); a failure leaves the
                // last figures.
                let health = reads.catalog.health_counts().await;
                let coverage = crate::health::rule_coverage(&reads.scores).await;
                let mut counts = self.catalog_counts.lock();
                match (health, coverage) {
                    (Ok(health), Ok(coverage)) => {
                        counts.health = Some(health);
                        counts.rule_coverage = coverage;
                    }
                    (Err(error), _) | (_, Err(error)) => {
                        tracing::warn!(%error, "cannot count the catalog's health for the metrics");
                    }
                }
                counts.kinds = kinds;
                counts.tasks = tasks.into_iter().map(|(status, n)| (status.as_str(), n)).collect();
                counts.change_log = Some(change_log);
            }
            (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => {
                tracing::warn!(%error, "cannot count entities, tasks and changes for the metrics");
            }
        }
    }

    /// The registry in the OpenMetrics text format.
    pub(crate) fn openmetrics(&self) -> Result<String, std::fmt::Error> {
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &self.registry)?;
        Ok(body)
    }

    /// The registry in the OpenMetrics text format when the scraper accepts
    /// it (Prometheus does), the Prometheus 0.0.4 text format otherwise.
    fn encode(&self, headers: &HeaderMap) -> Result<(String, &'static str), std::fmt::Error> {
        let accept = headers.get(header::ACCEPT).and_then(|value| value.to_str().ok()).unwrap_or_default();
        if accept.contains("application/openmetrics-text") {
            Ok((self.openmetrics()?, OPENMETRICS_CONTENT_TYPE))
        } else {
            let mut body = String::new();
            prometheus_client::encoding::prometheus_text::encode(&mut body, &self.registry)?;
            Ok((body, prometheus_client::encoding::prometheus_text::CONTENT_TYPE))
        }
    }
}

const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Holds one count of `catalog_websocket_connections` for an open socket;
/// dropping it (however the socket's task ends) gives the count back.
pub(crate) struct OpenWebsocket(Gauge);

impl Drop for OpenWebsocket {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The errors of a GraphQL response as label values: (code, limit), the
/// limit being `other` for errors that are not LIMIT_EXCEEDED. Handlers put
/// it in their HTTP response's extensions so that [`track`] counts it
/// without parsing the body again.
#[derive(Clone, Debug, Default)]
pub(crate) struct ResponseErrors(Vec<(Option<ErrorCode>, &'static str)>);

impl ResponseErrors {
    pub(crate) fn of(response: &GraphqlResponse) -> Self {
        let limit = |error: &async_graphql::ServerError| -> Option<String> {
            match error.extensions.as_ref()?.get("limit")? {
                async_graphql::Value::String(value) => Some(value.clone()),
                _ => None,
            }
        };
        Self(response.errors.iter().map(|error| (ErrorCode::of(error), limit_label(limit(error).as_deref()))).collect())
    }
}

/// The code labels are [`ErrorCode::ALL`]. `http/response.rs` gives every error a
/// code before it leaves (`with_codes`, `rejection`): an error without one
/// would be a bug, counted as `other`.
fn code_label(code: Option<ErrorCode>) -> &'static str {
    code.map_or(OTHER, ErrorCode::as_str)
}

/// The limit labels are [`Limit::ALL`]; anything else a response carries is `other`.
fn limit_label(limit: Option<&str>) -> &'static str {
    limit.and_then(Limit::from_wire).map_or(OTHER, Limit::as_str)
}

/// Clients may send any method token; only the standard ones become labels.
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => OTHER,
    }
}

/// The middleware counting and timing every HTTP request, and counting the
/// GraphQL errors its response carries ([`ResponseErrors`]).
pub(crate) async fn track(
    State(metrics): State<Arc<Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = method_label(request.method());
    let webhook = match request.uri().path() {
        "/webhooks/github" => Some("github"),
        "/webhooks/pagerduty" => Some("pagerduty"),
        _ => None,
    };
    let started = Instant::now();
    let response = next.run(request).await;
    if let (Some(source), Some(WebhookResult(result))) = (webhook, response.extensions().get::<WebhookResult>()) {
        metrics.webhook_deliveries.get_or_create(&WebhookLabels { source, result }).inc();
    }
    metrics.http_request_duration.get_or_create(&MethodLabels { method }).observe(started.elapsed().as_secs_f64());
    metrics.http_requests.get_or_create(&RequestLabels { method, status: response.status().as_u16() }).inc();
    if let Some(errors) = response.extensions().get::<ResponseErrors>() {
        metrics.record_errors(errors);
    }
    response
}

/// `GET /metrics`. Unauthenticated, as scrapers expect: it holds counts only.
pub(crate) async fn scrape(metrics: Arc<Metrics>, headers: HeaderMap) -> Response {
    metrics.refresh().await;
    match metrics.encode(&headers) {
        Ok((body, content_type)) => {
            let mut response = body.into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        Err(error) => {
            tracing::error!(error = %error, "cannot encode the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_become_other() {
        assert_eq!(code_label(ErrorCode::from_wire("select * from entities")), OTHER);
        assert_eq!(code_label(None), OTHER);
        assert_eq!(limit_label(Some("component:default/secret")), OTHER);
        assert_eq!(method_label(&Method::from_bytes(b"PROPFIND").unwrap()), OTHER);
    }

    #[test]
    fn a_response_counts_each_error_and_each_limit_once() {
        let metrics = Metrics::new(&[]);
        let limit = Some(ErrorCode::LimitExceeded);
        let errors = ResponseErrors(vec![
            (limit, "pageSize"),
            (limit, "pageSize"),
            (limit, "walks"),
            (Some(ErrorCode::BadUserInput), OTHER),
        ]);
        metrics.record_errors(&errors);
        let count = |code: ErrorCode| metrics.graphql_errors.get_or_create(&CodeLabels { code: code.as_str() }).get();
        assert_eq!(count(ErrorCode::LimitExceeded), 3);
        assert_eq!(count(ErrorCode::BadUserInput), 1);
        assert_eq!(metrics.limit_rejections.get_or_create(&LimitLabels { limit: Limit::PageSize.as_str() }).get(), 1);
        assert_eq!(metrics.limit_rejections.get_or_create(&LimitLabels { limit: Limit::Walks.as_str() }).get(), 1);
    }
}
