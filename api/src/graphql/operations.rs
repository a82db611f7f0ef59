//! How the transports run the schema: each operation gated (parsed and
//! validated, async-graphql's own errors coded, the depth and complexity
//! limits applied) before it executes, then executed in one span named by
//! its type and `operationName` (never the document or the variables'
//! values), its duration in the per-operation latency histogram behind
//! `/metrics`, and its argument errors coded.
//!
//! The executing schema has no extension: with one, async-graphql builds a
//! `ResolveInfo` (a registry lookup by type and field name) and a boxed
//! future for every resolved field and list item, about a tenth of a batch
//! of 100 entities' time (`bench/results/README.md`). Its hooks are needed
//! only before execution, so they live on a second schema over the same
//! roots, the gate, whose extension stops each request once it validated.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{
    Data, ObjectType, Request, Response, Schema, SchemaBuilder, ServerError, ServerResult, SubscriptionType,
    ValidationMode, ValidationResult, Variables,
};
use futures::StreamExt as _;
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

/// A schema as the transports run it: `gate` checks, `schema` executes.
/// Both are built over the same roots with the same options, so a document
/// the gate passed is one the executing schema accepts.
pub struct GatedSchema<Q, M, S> {
    schema: Schema<Q, M, S>,
    gate: Schema<Q, M, S>,
    metrics: Option<Arc<OperationMetrics>>,
}

impl<Q, M, S> Clone for GatedSchema<Q, M, S> {
    fn clone(&self) -> Self {
        Self { schema: self.schema.clone(), gate: self.gate.clone(), metrics: self.metrics.clone() }
    }
}

impl<Q, M, S> GatedSchema<Q, M, S>
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
    S: SubscriptionType + 'static,
{
    /// `build` returns a builder over the roots with the options both
    /// schemas share (data is only the executing schema's).
    pub(crate) fn new(
        build: impl Fn() -> SchemaBuilder<Q, M, S>,
        data: impl FnOnce(SchemaBuilder<Q, M, S>) -> SchemaBuilder<Q, M, S>,
        limits: ValidationLimits,
        metrics: Option<Arc<OperationMetrics>>,
    ) -> Self {
        let gate = build().extension(Gate(Arc::new(GateExtension { limits }))).finish();
        // The gate validated in full; what is left to check here is cheap
        // (fragment cycles, uploads).
        let schema = data(build()).validation_mode(ValidationMode::Fast).finish();
        Self { schema, gate, metrics }
    }

    /// Runs a query or mutation (a subscription sent here is refused, as
    /// async-graphql refuses it on this transport).
    pub async fn execute(&self, mut request: Request) -> Response {
        let mut timed = Timed { metrics: self.metrics.as_deref(), started: Instant::now(), executed: None };
        if let Some(refused) = self.gate(&mut request).await {
            return refused;
        }
        let operation_name = request.operation_name.take();
        let (arguments, kind, name) = match request.parsed_query() {
            Ok(document) => {
                let (name, ty) = selected_operation(document, operation_name.as_deref())
                    .map_or((None, OperationType::Query), |(name, ty)| (name.map(str::to_owned), ty));
                (ArgumentPositions::of(document), type_name(ty), name)
            }
            Err(error) => return Response::from_errors(vec![error]),
        };
        request.operation_name = operation_name;
        // Named when it opens: an exported span's name cannot change later.
        let span = tracing::info_span!(
            "graphql",
            // Names over the metrics' length cap are `other` here too: a
            // collector indexes span names.
            otel.name = %format!("{kind} {}", span_name(name.as_deref())),
            graphql.operation.type = kind,
            graphql.operation.name = name.as_deref(),
            graphql.errors = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        timed.executed = Some((kind, name));
        let mut response = self.schema.execute(request).instrument(span.clone()).await;
        if !response.errors.is_empty() {
            arguments.code_argument_errors(&mut response.errors);
            span.record("graphql.errors", response.errors.len());
            span.record("otel.status_code", "ERROR");
        }
        response
    }

    /// Runs a subscription (or, over the WebSocket, any operation) as a
    /// stream of responses.
    pub fn execute_stream(
        &self,
        mut request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        let this = self.clone();
        futures::stream::once(async move {
            if let Some(refused) = this.gate(&mut request).await {
                return futures::stream::once(std::future::ready(refused)).boxed();
            }
            let arguments = request.parsed_query().map(ArgumentPositions::of).unwrap_or_default();
            let stream = match session_data {
                Some(data) => this.schema.execute_stream_with_session_data(request, data),
                None => this.schema.execute_stream(request),
            };
            stream
                .map(move |mut response| {
                    arguments.code_argument_errors(&mut response.errors);
                    response
                })
                .boxed()
        })
        .flatten()
        .boxed()
    }

    /// The gate's answer when it refuses the request (coded errors), `None`
    /// when the request may execute. The request keeps its parsed document.
    async fn gate(&self, request: &mut Request) -> Option<Response> {
        let mut gated = Request::new(request.query.clone()).variables(request.variables.clone());
        gated.operation_name.clone_from(&request.operation_name);
        // A query that does not parse goes to the gate unparsed, whose
        // parse hook codes the error.
        if let Ok(document) = request.parsed_query() {
            gated.set_parsed_query(document.clone());
        }
        let response = self.gate.execute(gated).await;
        (!response.errors.is_empty()).then_some(response)
    }
}

/// The operation a request runs: the named one, or the document's only
/// one. Its name (`None` when anonymous) and type; `None` when there is no
/// such operation (validation reports it).
pub(crate) fn selected_operation<'d>(
    document: &'d ExecutableDocument,
    name: Option<&str>,
) -> Option<(Option<&'d str>, OperationType)> {
    match (&document.operations, name) {
        // A single operation in async-graphql's parse is an anonymous one.
        (DocumentOperations::Single(operation), _) => Some((None, operation.node.ty)),
        (DocumentOperations::Multiple(operations), Some(name)) => {
            operations.get_key_value(name).map(|(name, operation)| (Some(name.as_str()), operation.node.ty))
        }
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.iter().next().map(|(name, operation)| (Some(name.as_str()), operation.node.ty))
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// Observes the operation's duration when dropped: after its response, or
/// when `request_timeout` drops the request's future half-way (a slow
/// operation would otherwise be missing from its own latency histogram).
struct Timed<'a> {
    metrics: Option<&'a OperationMetrics>,
    started: Instant,
    /// What was executed: type and operation name; `None` when refused
    /// before execution.
    executed: Option<(&'static str, Option<String>)>,
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        if let Some(metrics) = self.metrics {
            let (kind, name) = self.executed.take().unwrap_or(("unknown", None));
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

/// The gate's extension: stateless, so every request shares one.
struct Gate(Arc<GateExtension>);

impl ExtensionFactory for Gate {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::clone(&self.0) as Arc<dyn Extension>
    }
}

struct GateExtension {
    limits: ValidationLimits,
}

#[async_graphql::async_trait::async_trait]
impl Extension for GateExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables).await.map_err(|mut error| {
            framework_errors::code_parse_error(&mut error, query);
            error
        })
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        self.limits.check(next.run(ctx).await)
    }

    /// The request passed: the executing schema runs it, not the gate.
    async fn execute(
        &self,
        _ctx: &ExtensionContext<'_>,
        _operation_name: Option<&str>,
        _next: NextExecute<'_>,
    ) -> Response {
        Response::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_code::ErrorCode;

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

    fn slow_schema(
        metrics: Option<Arc<OperationMetrics>>,
        limits: ValidationLimits,
    ) -> GatedSchema<Slow, async_graphql::EmptyMutation, async_graphql::EmptySubscription> {
        GatedSchema::new(
            || Schema::build(Slow, async_graphql::EmptyMutation, async_graphql::EmptySubscription),
            |builder| builder,
            limits,
            metrics,
        )
    }

    const LIMITS: ValidationLimits = ValidationLimits { max_depth: 16, max_complexity: 10_000 };

    #[tokio::test]
    async fn an_operation_cut_off_by_the_request_timeout_is_still_timed() {
        let metrics = Arc::new(OperationMetrics::new(&[]));
        let schema = slow_schema(Some(Arc::clone(&metrics)), LIMITS);
        let request = Request::new("query SlowOne { slow }");
        let cut = tokio::time::timeout(std::time::Duration::from_millis(50), schema.execute(request)).await;
        assert!(cut.is_err(), "the resolver outlasts the timeout");
        assert_eq!(count(&metrics, "query", "SlowOne"), 1, "the cut-off operation is in its histogram");
        // A completed operation is timed once, not once more on the drop.
        let response = schema.execute(Request::new("query Quick { __typename }")).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        assert_eq!(count(&metrics, "query", "Quick"), 1);
    }

    #[tokio::test]
    async fn the_gate_refuses_before_anything_executes() {
        let metrics = Arc::new(OperationMetrics::new(&[]));
        let schema = slow_schema(Some(Arc::clone(&metrics)), ValidationLimits { max_depth: 16, max_complexity: 0 });
        // Executed, `slow` would outlast the timeout.
        let run = schema.execute(Request::new("query TooComplex { slow }"));
        let response = tokio::time::timeout(std::time::Duration::from_secs(5), run).await.expect("refused at once");
        assert_eq!(response.errors.len(), 1, "{:?}", response.errors);
        assert_eq!(ErrorCode::of(&response.errors[0]), Some(ErrorCode::LimitExceeded));
        assert_eq!(count(&metrics, "unknown", "anonymous"), 1, "a refused request has no operation type");
        assert_eq!(count(&metrics, "query", "TooComplex"), 0);

        let schema = slow_schema(None, LIMITS);
        let response = schema.execute(Request::new("{ slow(unknown: 1) }")).await;
        assert_eq!(ErrorCode::of(&response.errors[0]), Some(ErrorCode::GraphqlValidationFailed));
        let response = schema.execute(Request::new("{ slow ")).await;
        assert_eq!(ErrorCode::of(&response.errors[0]), Some(ErrorCode::GraphqlValidationFailed), "unparsed text");
    }

    #[tokio::test]
    async fn a_passed_operation_runs_on_the_schema_with_its_data() {
        struct Greeting;
        #[async_graphql::Object]
        impl Greeting {
            async fn greeting(&self, ctx: &async_graphql::Context<'_>) -> String {
                ctx.data_unchecked::<String>().clone()
            }
        }
        let schema = GatedSchema::new(
            || Schema::build(Greeting, async_graphql::EmptyMutation, async_graphql::EmptySubscription),
            |builder| builder.data("hello".to_owned()),
            LIMITS,
            None,
        );
        let response = schema.execute(Request::new("{ greeting }")).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        assert_eq!(response.data.to_string(), r#"{greeting: "hello"}"#);
        let mut stream = schema.execute_stream(Request::new("{ greeting }"), None);
        let streamed = stream.next().await.expect("one response");
        assert_eq!(streamed.data, response.data);
    }
}
