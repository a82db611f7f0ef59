//! One span per GraphQL query or mutation, named by its type and the
//! request's `operationName` (never the document or the variables' values),
//! and the per-operation latency histogram behind `/metrics`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest,
};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{Response, ServerResult, Variables};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tracing::Instrument as _;

/// Operation names are the client's: the first this many distinct ones get
/// their own series, later ones are counted as `other`, so a client sending
/// random names cannot grow the series without bound.
const MAX_OPERATION_NAMES: usize = 200;
/// Longer names are counted as `other`.
const MAX_OPERATION_NAME_LENGTH: usize = 64;
const OTHER: &str = "other";
const ANONYMOUS: &str = "anonymous";
const DURATION_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    /// query or mutation; `unknown` when refused before execution (parse or
    /// validation).
    r#type: &'static str,
    operation: String,
}

/// Request counts and latencies per operation (a histogram counts too).
#[derive(Debug)]
pub struct OperationMetrics {
    duration: Family<OperationLabels, Histogram>,
    names: Mutex<HashSet<String>>,
}

impl Default for OperationMetrics {
    fn default() -> Self {
        Self { duration: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)), names: Mutex::default() }
    }
}

impl OperationMetrics {
    /// Adds the family to a registry (`catalog_graphql_operation_duration_seconds`).
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "graphql_operation_duration",
            "Time to execute a GraphQL query or mutation (parse to response), by type and operationName",
            Unit::Seconds,
            self.duration.clone(),
        );
    }

    fn label(&self, name: Option<&str>) -> String {
        let Some(name) = name.filter(|name| !name.is_empty()) else { return ANONYMOUS.to_owned() };
        if name.len() > MAX_OPERATION_NAME_LENGTH || name == OTHER || name == ANONYMOUS {
            return OTHER.to_owned();
        }
        let mut names = self.names.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if names.contains(name) || (names.len() < MAX_OPERATION_NAMES && names.insert(name.to_owned())) {
            name.to_owned()
        } else {
            OTHER.to_owned()
        }
    }

    fn observe(&self, kind: &'static str, name: Option<&str>, seconds: f64) {
        let labels = OperationLabels { r#type: kind, operation: self.label(name) };
        self.duration.get_or_create(&labels).observe(seconds);
    }
}

/// The schema extension: a span around each query or mutation, and its
/// duration in [`OperationMetrics`] when metrics are on.
pub(crate) struct OperationTracing {
    pub(crate) metrics: Option<Arc<OperationMetrics>>,
}

impl ExtensionFactory for OperationTracing {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OperationExtension { metrics: self.metrics.clone(), state: Mutex::default() })
    }
}

#[derive(Default)]
struct State {
    /// The document's operations by name (`None`: its one anonymous operation).
    operations: HashMap<Option<String>, OperationType>,
    /// What was executed: type and operation name.
    executed: Option<(&'static str, Option<String>)>,
}

/// One per request (the factory makes a new one each time).
struct OperationExtension {
    metrics: Option<Arc<OperationMetrics>>,
    state: Mutex<State>,
}

impl OperationExtension {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn span_name(name: Option<&str>) -> &str {
    match name {
        None => ANONYMOUS,
        Some(name) if name.len() > MAX_OPERATION_NAME_LENGTH => OTHER,
        Some(name) => name,
    }
}

fn type_name(ty: OperationType) -> &'static str {
    match ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for OperationExtension {
    /// Queries and mutations only: a subscription never calls this hook.
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let response = next.run(ctx).await;
        if let Some(metrics) = &self.metrics {
            let (kind, name) = self.state().executed.take().unwrap_or(("unknown", None));
            metrics.observe(kind, name.as_deref(), started.elapsed().as_secs_f64());
        }
        response
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        self.state().operations = match &document.operations {
            DocumentOperations::Single(operation) => HashMap::from([(None, operation.node.ty)]),
            DocumentOperations::Multiple(operations) => {
                operations.iter().map(|(name, operation)| (Some(name.to_string()), operation.node.ty)).collect()
            }
        };
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let span = {
            let mut state = self.state();
            // Without an operationName, the document's only operation runs
            // (named or not); that name is the operation's.
            let executed = match operation_name {
                Some(name) => state.operations.get_key_value(&Some(name.to_owned())),
                None if state.operations.len() == 1 => state.operations.iter().next(),
                None => None,
            };
            let (name, ty) = executed.map_or((None, OperationType::Query), |(name, ty)| (name.clone(), *ty));
            let kind = type_name(ty);
            // Named when it opens: an exported span's name cannot change later.
            let span = tracing::info_span!(
                "graphql",
                // Names over the metrics' length cap are `other` here too:
                // a collector indexes span names.
                otel.name = %format!("{kind} {}", span_name(name.as_deref())),
                graphql.operation.type = kind,
                graphql.operation.name = name.as_deref(),
                graphql.errors = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            state.executed = Some((kind, name));
            span
        };
        let response = next.run(ctx, operation_name).instrument(span.clone()).await;
        if !response.errors.is_empty() {
            span.record("graphql.errors", response.errors.len());
            span.record("otel.status_code", "ERROR");
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_beyond_the_cap_become_other() {
        let metrics = OperationMetrics::default();
        assert_eq!(metrics.label(None), ANONYMOUS);
        assert_eq!(metrics.label(Some(&"x".repeat(65))), OTHER);
        for n in 0..MAX_OPERATION_NAMES {
            assert_eq!(metrics.label(Some(&format!("Op{n}"))), format!("Op{n}"));
        }
        assert_eq!(metrics.label(Some("OneTooMany")), OTHER);
        // Names seen before the cap keep their series.
        assert_eq!(metrics.label(Some("Op7")), "Op7");
    }
}
