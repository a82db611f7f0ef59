//! The schema's extension: one span per GraphQL query or mutation, named by
//! its type and the request's `operationName` (never the document or the
//! variables' values), the per-operation latency histogram behind
//! `/metrics`, and the hooks that code async-graphql's own errors by the
//! phase that raised them (`framework_errors.rs`). One extension does both
//! because each extension costs a boxed future per resolved field.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest, NextSubscribe,
    NextValidation,
};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Variables};
use futures::stream::BoxStream;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tracing::Instrument as _;

use super::framework_errors::{self, ArgumentPositions, ValidationLimits};

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
    /// `metrics.operation_names`: when set, the only names with series of
    /// their own, and `names` stays empty.
    allowed: HashSet<String>,
}

/// Whether `name` can be an operation's label: a GraphQL name within the
/// length cap, and not one of the labels that stand for many operations.
pub(crate) fn is_operation_label(name: &str) -> bool {
    let mut characters = name.chars();
    characters.next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && characters.all(|character| character.is_ascii_alphanumeric() || character == '_')
        && name.len() <= MAX_OPERATION_NAME_LENGTH
        && name != OTHER
        && name != ANONYMOUS
}

impl OperationMetrics {
    /// `allowed` empty: the first [`MAX_OPERATION_NAMES`] names seen.
    pub(crate) fn new(allowed: &[String]) -> Self {
        Self {
            duration: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            names: Mutex::default(),
            allowed: allowed.iter().cloned().collect(),
        }
    }

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
        if !self.allowed.is_empty() {
            return if self.allowed.contains(name) { name.to_owned() } else { OTHER.to_owned() };
        }
        let mut names = self.names.lock();
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

/// The schema extension: a span around each query or mutation, its
/// duration in [`OperationMetrics`] when metrics are on, the depth and
/// complexity limits, and codes for async-graphql's own errors.
pub(crate) struct OperationTracing {
    pub(crate) metrics: Option<Arc<OperationMetrics>>,
    pub(crate) limits: ValidationLimits,
}

impl ExtensionFactory for OperationTracing {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OperationExtension {
            metrics: self.metrics.clone(),
            limits: self.limits,
            state: Mutex::default(),
            arguments: Arc::default(),
        })
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
    limits: ValidationLimits,
    state: Mutex<State>,
    /// The parsed document's argument positions; shared with a
    /// subscription's stream, which outlives the hooks' borrows.
    arguments: Arc<Mutex<ArgumentPositions>>,
}

impl OperationExtension {
    fn state(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }
}

/// Observes the operation's duration when dropped: after its response, or
/// when `request_timeout` drops the request's future half-way (a slow
/// operation would otherwise be missing from its own latency histogram).
struct Timed<'a> {
    extension: &'a OperationExtension,
    started: Instant,
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        if let Some(metrics) = &self.extension.metrics {
            let (kind, name) = self.extension.state().executed.take().unwrap_or(("unknown", None));
            metrics.observe(kind, name.as_deref(), self.started.elapsed().as_secs_f64());
        }
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
    /// A subscription's events: codes for their argument errors, as
    /// `execute` gives a query's.
    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        use futures::StreamExt as _;
        let arguments = Arc::clone(&self.arguments);
        next.run(
            ctx,
            stream
                .map(move |mut response| {
                    code_argument_errors(&arguments, &mut response);
                    response
                })
                .boxed(),
        )
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        self.limits.check(next.run(ctx).await)
    }

    /// Queries and mutations only: a subscription never calls this hook.
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let _timed = Timed { extension: self, started: Instant::now() };
        next.run(ctx).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await.map_err(|mut error| {
            framework_errors::code_parse_error(&mut error, query);
            error
        })?;
        *self.arguments.lock() = ArgumentPositions::of(&document);
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
        let mut response = next.run(ctx, operation_name).instrument(span.clone()).await;
        if !response.errors.is_empty() {
            code_argument_errors(&self.arguments, &mut response);
            span.record("graphql.errors", response.errors.len());
            span.record("otel.status_code", "ERROR");
        }
        response
    }
}

fn code_argument_errors(arguments: &Mutex<ArgumentPositions>, response: &mut Response) {
    if !response.errors.is_empty() {
        arguments.lock().code_argument_errors(&mut response.errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_beyond_the_cap_become_other() {
        let metrics = OperationMetrics::new(&[]);
        assert_eq!(metrics.label(None), ANONYMOUS);
        assert_eq!(metrics.label(Some(&"x".repeat(65))), OTHER);
        for n in 0..MAX_OPERATION_NAMES {
            assert_eq!(metrics.label(Some(&format!("Op{n}"))), format!("Op{n}"));
        }
        assert_eq!(metrics.label(Some("OneTooMany")), OTHER);
        // Names seen before the cap keep their series.
        assert_eq!(metrics.label(Some("Op7")), "Op7");
    }

    #[test]
    fn with_an_allow_list_only_its_names_get_series() {
        let metrics = OperationMetrics::new(&["EntityPage".to_owned(), "OwnedBy".to_owned()]);
        assert_eq!(metrics.label(Some("EntityPage")), "EntityPage");
        for n in 0..2 * MAX_OPERATION_NAMES {
            assert_eq!(metrics.label(Some(&format!("Junk{n}"))), OTHER, "no first-come slots");
        }
        assert_eq!(metrics.label(Some("OwnedBy")), "OwnedBy", "junk cannot crowd out a listed name");
        assert_eq!(metrics.label(None), ANONYMOUS);
    }

    #[test]
    fn operation_labels_are_graphql_names_within_the_cap() {
        assert!(is_operation_label("EntityPage") && is_operation_label("_private2"));
        for bad in ["", "2fast", "has space", "other", "anonymous", &"x".repeat(65)] {
            assert!(!is_operation_label(bad), "{bad:?}");
        }
    }

    struct Slow;

    #[async_graphql::Object]
    impl Slow {
        async fn slow(&self) -> bool {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            true
        }
    }

    fn count(metrics: &OperationMetrics, kind: &'static str, operation: &str) -> u64 {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let series = format!("graphql_operation_duration_seconds_count{{type=\"{kind}\",operation=\"{operation}\"}}");
        text.lines().find_map(|line| line.strip_prefix(&series)).map_or(0, |value| value.trim().parse().unwrap())
    }

    #[tokio::test]
    async fn an_operation_cut_off_by_the_request_timeout_is_still_timed() {
        let metrics = Arc::new(OperationMetrics::new(&[]));
        let schema = async_graphql::Schema::build(Slow, async_graphql::EmptyMutation, async_graphql::EmptySubscription)
            .extension(OperationTracing {
                metrics: Some(Arc::clone(&metrics)),
                limits: ValidationLimits { max_depth: 16, max_complexity: 10_000 },
            })
            .finish();
        let request = async_graphql::Request::new("query SlowOne { slow }");
        let cut = tokio::time::timeout(std::time::Duration::from_millis(50), schema.execute(request)).await;
        assert!(cut.is_err(), "the resolver outlasts the timeout");
        assert_eq!(count(&metrics, "query", "SlowOne"), 1, "the cut-off operation is in its histogram");
        // A completed operation is timed once, not once more on the drop.
        let response = schema.execute("query Quick { __typename }").await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        assert_eq!(count(&metrics, "query", "Quick"), 1);
    }
}
