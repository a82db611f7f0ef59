//! The HTTP surface: GraphQL over HTTP at /graphql (POST and GET), GraphiQL,
//! health and readiness. Requests pass the firewall before the parser.

use std::time::Duration;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::http::GraphiQLSource;
use async_graphql::{Request, Response as GraphqlResponse, ServerError, Variables};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use catalog_store::Store;
use serde::Deserialize;

use crate::config::GraphqlConfig;
use crate::firewall;
use crate::graphql::{CatalogSchema, with_loaders, with_subscription_loaders};

#[derive(Clone)]
pub(crate) struct HttpState {
    pub schema: CatalogSchema,
    pub store: Store,
    pub graphql: GraphqlConfig,
    pub request_timeout: Duration,
}

pub(crate) fn router(state: HttpState) -> Router {
    let body_limit = state.graphql.max_body_bytes;
    Router::new()
        .route("/graphql", get(graphql_get_or_upgrade).post(graphql_post))
        .route("/graphql/ws", get(graphql_ws))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// GraphQL over WebSocket (graphql-transport-ws and the legacy graphql-ws,
/// chosen by Sec-WebSocket-Protocol) at /graphql/ws.
async fn graphql_ws(State(state): State<HttpState>, protocol: GraphQLProtocol, upgrade: WebSocketUpgrade) -> Response {
    let executor = FirewalledExecutor { state: state.clone() };
    upgrade.protocols(ALL_WEBSOCKET_PROTOCOLS).max_message_size(state.graphql.max_body_bytes).on_upgrade(
        move |stream| {
            GraphQLWebSocket::new(stream, executor, protocol)
                // The seam for authentication (the API security issue): the
                // connection_init payload will be checked like HTTP credentials.
                .on_connection_init(|_payload| async { Ok(async_graphql::Data::default()) })
                .serve()
        },
    )
}

/// GET /graphql: a WebSocket upgrade goes to the subscription endpoint, anything
/// else is a query over GET (or GraphiQL).
async fn graphql_get_or_upgrade(State(state): State<HttpState>, request: axum::extract::Request) -> Response {
    use axum::extract::FromRequestParts as _;
    let (mut parts, _body) = request.into_parts();
    let wants_websocket = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    if wants_websocket {
        let protocol = match GraphQLProtocol::from_request_parts(&mut parts, &state).await {
            Ok(protocol) => protocol,
            Err(rejection) => return rejection.into_response(),
        };
        return match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            Ok(upgrade) => graphql_ws(State(state), protocol, upgrade).await,
            Err(rejection) => rejection.into_response(),
        };
    }
    match Query::<GetParams>::from_request_parts(&mut parts, &state).await {
        Ok(query) => graphql_get(State(state), parts.headers, query).await,
        Err(rejection) => rejection.into_response(),
    }
}

/// Runs WebSocket operations through the same firewall and per-request data as
/// HTTP: the parser never sees a query the firewall refused.
#[derive(Clone)]
struct FirewalledExecutor {
    state: HttpState,
}

impl FirewalledExecutor {
    fn refused(&self, request: &Request) -> Option<GraphqlResponse> {
        let graphql = &self.state.graphql;
        let rejected = firewall::check_query(&request.query, graphql.max_query_bytes, graphql.max_nesting).err()?;
        tracing::info!(limit = rejected.limit_name(), "subscription refused before parsing");
        let mut error = ServerError::new(rejected.to_string(), None);
        set_code(&mut error, "LIMIT_EXCEEDED", Some(rejected.limit_name()));
        Some(GraphqlResponse::from_errors(vec![error]))
    }
}

impl async_graphql::Executor for FirewalledExecutor {
    async fn execute(&self, request: Request) -> GraphqlResponse {
        if let Some(refused) = self.refused(&request) {
            return refused;
        }
        let request = with_loaders(request, &self.state.store);
        with_codes(self.state.schema.execute(request).await)
    }

    fn execute_stream(
        &self,
        mut request: Request,
        session_data: Option<std::sync::Arc<async_graphql::Data>>,
    ) -> futures::stream::BoxStream<'static, GraphqlResponse> {
        use futures::StreamExt as _;
        if let Some(refused) = self.refused(&request) {
            return futures::stream::once(async move { refused }).boxed();
        }
        // Queries and mutations sent over the socket get the HTTP timeout;
        // only subscriptions live on.
        let is_subscription = request.parsed_query().is_ok_and(|document| {
            document
                .operations
                .iter()
                .all(|(_, operation)| operation.node.ty == async_graphql::parser::types::OperationType::Subscription)
        });
        if !is_subscription {
            let executor = self.clone();
            let timeout = self.state.request_timeout;
            return futures::stream::once(async move {
                match tokio::time::timeout(timeout, executor.execute(request)).await {
                    Ok(response) => response,
                    Err(_) => {
                        let mut error = ServerError::new("the request took longer than the server allows", None);
                        set_code(&mut error, "LIMIT_EXCEEDED", Some("timeout"));
                        GraphqlResponse::from_errors(vec![error])
                    }
                }
            })
            .boxed();
        }
        let request = with_subscription_loaders(request, &self.state.store);
        match session_data {
            Some(data) => self.state.schema.execute_stream_with_session_data(request, data).map(with_codes).boxed(),
            None => self.state.schema.execute_stream(request).map(with_codes).boxed(),
        }
    }
}

async fn readyz(State(state): State<HttpState>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

/// The JSON body of a GraphQL-over-HTTP request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestBody {
    query: String,
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParams {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
}

async fn graphql_post(State(state): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if media_type != "application/json" && media_type != "application/graphql-response+json" {
        return rejection(
            &headers,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "BAD_REQUEST",
            None,
            "POST /graphql needs Content-Type: application/json",
        );
    }
    if body.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'[') {
        return rejection(&headers, StatusCode::BAD_REQUEST, "BAD_REQUEST", None, "batched requests are not supported");
    }
    let request: RequestBody = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return rejection(
                &headers,
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                None,
                &format!("the body is not a GraphQL request: {error}"),
            );
        }
    };
    execute(&state, &headers, request.query, request.operation_name, request.variables).await
}

async fn graphql_get(State(state): State<HttpState>, headers: HeaderMap, Query(params): Query<GetParams>) -> Response {
    let Some(query) = params.query else {
        let wants_html = headers
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"));
        if wants_html && state.graphql.graphiql_enabled {
            return Html(GraphiQLSource::build().endpoint("/graphql").title("Catalog GraphiQL").finish())
                .into_response();
        }
        return rejection(&headers, StatusCode::BAD_REQUEST, "BAD_REQUEST", None, "the query parameter is missing");
    };
    let variables = match params.variables.as_deref().map(serde_json::from_str::<serde_json::Value>).transpose() {
        Ok(variables) => variables,
        Err(error) => {
            return rejection(
                &headers,
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                None,
                &format!("variables are not JSON: {error}"),
            );
        }
    };
    execute(&state, &headers, query, params.operation_name, variables).await
}

async fn execute(
    state: &HttpState,
    headers: &HeaderMap,
    query: String,
    operation_name: Option<String>,
    variables: Option<serde_json::Value>,
) -> Response {
    if let Err(rejected) = firewall::check_query(&query, state.graphql.max_query_bytes, state.graphql.max_nesting) {
        let status = match rejected {
            firewall::Rejection::QueryTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            firewall::Rejection::NestingTooDeep { .. } => StatusCode::BAD_REQUEST,
        };
        tracing::info!(limit = rejected.limit_name(), "query refused before parsing");
        return rejection(headers, status, "LIMIT_EXCEEDED", Some(rejected.limit_name()), &rejected.to_string());
    }
    let mut request = Request::new(query);
    if let Some(operation_name) = operation_name {
        request = request.operation_name(operation_name);
    }
    if let Some(variables) = variables {
        request = request.variables(Variables::from_json(variables));
    }
    // Parsing here, after the firewall, tells a parse failure apart from a
    // validation failure without reading error messages.
    if let Err(error) = request.parsed_query() {
        let mut response = GraphqlResponse::from_errors(vec![error]);
        set_code(&mut response.errors[0], "GRAPHQL_PARSE_FAILED", None);
        return json_response(headers, StatusCode::BAD_REQUEST, &response);
    }
    let request = with_loaders(request, &state.store);
    let response = match tokio::time::timeout(state.request_timeout, state.schema.execute(request)).await {
        Ok(response) => response,
        Err(_) => {
            return rejection(
                headers,
                StatusCode::SERVICE_UNAVAILABLE,
                "LIMIT_EXCEEDED",
                Some("timeout"),
                "the request took longer than the server allows",
            );
        }
    };
    json_response(headers, StatusCode::OK, &with_codes(response))
}

/// Errors raised by async-graphql itself (parse, validation, depth and
/// complexity limits) carry no code: give them one.
fn with_codes(mut response: GraphqlResponse) -> GraphqlResponse {
    for error in &mut response.errors {
        let has_code = error.extensions.as_ref().is_some_and(|extensions| extensions.get("code").is_some());
        if has_code {
            continue;
        }
        let message = error.message.to_ascii_lowercase();
        let (code, limit) = if message.contains("too complex") {
            ("LIMIT_EXCEEDED", Some("complexity"))
        } else if message.contains("nested too deep") || message.contains("recursion depth") {
            ("LIMIT_EXCEEDED", Some("depth"))
        } else if message.contains("directives") && message.contains("limit") {
            ("LIMIT_EXCEEDED", Some("directives"))
        } else if error.path.is_empty() {
            ("GRAPHQL_VALIDATION_FAILED", None)
        } else {
            ("INTERNAL", None)
        };
        set_code(error, code, limit);
    }
    response
}

fn set_code(error: &mut ServerError, code: &str, limit: Option<&str>) {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    extensions.set("code", code);
    if let Some(limit) = limit {
        extensions.set("limit", limit);
    }
}

fn rejection(headers: &HeaderMap, status: StatusCode, code: &str, limit: Option<&str>, message: &str) -> Response {
    let mut error = ServerError::new(message, None);
    set_code(&mut error, code, limit);
    json_response(headers, status, &GraphqlResponse::from_errors(vec![error]))
}

/// Answers in application/graphql-response+json when the client accepts it,
/// and in application/json otherwise.
fn json_response(headers: &HeaderMap, status: StatusCode, response: &GraphqlResponse) -> Response {
    let accepts_graphql_json = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("application/graphql-response+json"));
    let content_type = if accepts_graphql_json { "application/graphql-response+json" } else { "application/json" };
    let body =
        serde_json::to_vec(response).unwrap_or_else(|_| b"{\"errors\":[{\"message\":\"internal error\"}]}".to_vec());
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
