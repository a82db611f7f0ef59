//! The HTTP surface: GraphQL over HTTP at /graphql (POST and GET), GraphiQL,
//! health, readiness and metrics. Requests pass the firewall before the parser.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{Request, Response as GraphqlResponse, ServerError, Variables};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::Router;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::auth::{Authenticator, Granted};
use crate::config::GraphqlConfig;
use crate::documents::DocumentCache;
use crate::error_code::{self, ClientError, ErrorCode, server_error};
use crate::firewall::{self, Limits};
use crate::graphql::{CatalogSchema, RequestId, StoreHandles, with_loaders};
use crate::identity::{AuthError, Principal};
use crate::metrics::{Metrics, ResponseErrors};
use crate::policy::{ReadScope, SharedScope};

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
    pub github_webhooks: Option<Arc<crate::webhooks::GithubWebhooks>>,
    /// `None` without a PagerDuty webhook secret: no /webhooks/pagerduty.
    pub pagerduty_webhooks: Option<Arc<crate::pagerduty_webhooks::PagerDutyWebhooks>>,
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
            Router::new().route("/webhooks/github", axum::routing::post(crate::webhooks::github)).with_state(webhooks),
        );
    }
    if let Some(webhooks) = state.pagerduty_webhooks.clone() {
        router = router.merge(
            Router::new()
                .route("/webhooks/pagerduty", axum::routing::post(crate::pagerduty_webhooks::pagerduty))
                .with_state(webhooks),
        );
    }
    if let Some(metrics) = metrics.clone() {
        // Outside authentication, like /healthz: scrapers carry no tokens.
        router = router.route("/metrics", get(move |headers: HeaderMap| crate::metrics::scrape(metrics, headers)));
    }
    let router =
        router.layer(DefaultBodyLimit::max(body_limit)).layer(axum::middleware::from_fn(with_request_id)).layer(cors);
    // Outermost, so that it also counts what the layers inside answer
    // themselves (CORS preflights) and times the whole request.
    let router = match metrics {
        Some(metrics) => router.layer(axum::middleware::from_fn_with_state(metrics, crate::metrics::track)),
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

/// GraphQL over WebSocket (graphql-transport-ws and the legacy graphql-ws,
/// chosen by Sec-WebSocket-Protocol) at /graphql/ws. A browser page from
/// another origin is refused (cross-site WebSocket hijacking: browsers send
/// cookies but no CORS check on upgrades), and a socket that sends nothing
/// within the init timeout is closed with 4408.
async fn graphql_ws(
    State(state): State<HttpState>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&headers, &state.allowed_origins) {
        tracing::info!(origin = ?headers.get(header::ORIGIN), "WebSocket upgrade from another origin refused");
        return (StatusCode::FORBIDDEN, "this origin may not open the catalog's WebSocket").into_response();
    }
    let Ok(permit) = state.websockets.clone().try_acquire_owned() else {
        tracing::warn!("WebSocket refused: graphql.max_websocket_connections are open");
        if let Some(metrics) = &state.metrics {
            metrics.record_limit("websocketConnections");
        }
        return (StatusCode::SERVICE_UNAVAILABLE, "too many WebSocket connections are open; retry later")
            .into_response();
    };
    let init_timeout = Duration::from_secs(state.graphql.websocket_init_timeout_seconds);
    let metrics = state.metrics.clone();
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(state.graphql.max_body_bytes)
        // tungstenite zero-fills its whole read buffer before each read, so
        // the 128 KiB default stayed resident per idle socket (measured: 148
        // KiB per idle subscriber, 27 KiB with 8 KiB). Client messages are
        // small; larger ones grow the buffer as needed.
        .read_buffer_size(WEBSOCKET_READ_BUFFER)
        .on_upgrade(move |socket| async move {
            let open = metrics.as_ref().map(|metrics| metrics.websocket_opened());
            serve_websocket(socket, state, protocol, init_timeout).await;
            drop(permit);
            drop(open);
        })
}

/// The read buffer of each WebSocket (see `graphql_ws`).
const WEBSOCKET_READ_BUFFER: usize = 8 * 1024;

/// Waits for `connection_init`, authenticates its payload like an HTTP
/// request (closing with 4403 on failure, 4408 when it does not come, 4400
/// when another message comes first), then hands the socket to
/// async-graphql. While it is open its credentials are checked again every
/// `auth.recheck_seconds` (revocation; its read scope is rebuilt then too)
/// and at expiry; failing, it is closed with 4403.
async fn serve_websocket(mut socket: WebSocket, state: HttpState, protocol: GraphQLProtocol, init_timeout: Duration) {
    use futures::{SinkExt as _, StreamExt as _};
    let waited = tokio::time::timeout(init_timeout, async {
        // WebSocket pings and pongs may come first (tungstenite answers
        // pings itself); the first protocol message, text or binary, must be
        // the init. Nothing else is kept.
        while let Some(message) = socket.recv().await {
            match message {
                Ok(WsMessage::Text(text)) => return Some(text.as_bytes().to_vec()),
                Ok(WsMessage::Binary(bytes)) => return Some(bytes.to_vec()),
                Ok(WsMessage::Ping(_) | WsMessage::Pong(_)) => continue,
                Ok(WsMessage::Close(_)) | Err(_) => return None,
            }
        }
        None
    })
    .await;
    let first = match waited {
        Ok(Some(first)) => first,
        Ok(None) => return,
        Err(_) => {
            close_websocket(&mut socket, 4408, "Connection initialisation timeout").await;
            return;
        }
    };
    let Some(authorization) = init_credentials(&first) else {
        close_websocket(&mut socket, 4400, "the first message must be connection_init").await;
        return;
    };
    let access = match state.auth.authenticate_reader(authorization.as_deref(), None).await {
        Ok(access) => access,
        Err(error) => {
            tracing::info!(reason = %error, "WebSocket refused at connection_init");
            close_websocket(&mut socket, 4403, &format!("Forbidden: {error}")).await;
            return;
        }
    };
    let scope = match ReadScope::new(&state.handles.catalog, access.read_filter).await {
        Ok(scope) => scope,
        Err(error) => {
            tracing::error!(error = %error, "cannot build a read scope");
            close_websocket(&mut socket, 1011, "internal error").await;
            return;
        }
    };
    let principal = access.principal;
    let expires_at = principal.expires_at();
    let recheck_auth = state.auth.clone();
    let recheck_handles = state.handles.clone();
    let recheck_credentials = authorization.clone();
    let metrics = state.metrics.clone();
    let scope = SharedScope::new(scope);
    let recheck_scope = scope.clone();
    let executor = FirewalledExecutor {
        state: state.clone(),
        principal,
        scope,
        granted: Granted(access.granted, access.templates),
    };
    let (mut socket_sink, socket_stream) = socket.split();
    let operations = Arc::new(Operations::new(state.graphql.max_websocket_operations));
    // async-graphql writes into a channel; this task forwards to the socket
    // until the token expires or the client runs too many operations, then
    // closes it.
    let (sink, mut outgoing) = futures::channel::mpsc::channel::<WsMessage>(16);
    let finished = operations.clone();
    let too_many = operations.clone();
    let forward = async move {
        let expiry = async {
            match expires_at.and_then(|at| (at - chrono::Utc::now()).to_std().ok()) {
                Some(left) => tokio::time::sleep(left).await,
                None if expires_at.is_some() => {}
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        let mut recheck = tokio::time::interval(recheck_auth.recheck_interval());
        recheck.reset();
        loop {
            tokio::select! {
                _ = recheck.tick() => {
                    match recheck_auth.authenticate_reader(recheck_credentials.as_deref(), None).await {
                        Ok(access) => match ReadScope::new(&recheck_handles.catalog, access.read_filter).await {
                            Ok(scope) => recheck_scope.replace(scope),
                            // The previous scope stays: a database hiccup is no reason to close.
                            Err(error) => tracing::warn!(error = %error, "cannot rebuild a WebSocket's read scope"),
                        },
                        Err(error) => {
                            let frame = CloseFrame { code: 4403, reason: format!("Forbidden: {error}").into() };
                            let _ = socket_sink.send(WsMessage::Close(Some(frame))).await;
                            break;
                        }
                    }
                }
                message = outgoing.next() => match message {
                    Some(message) => {
                        finished.server_sent(&message);
                        if socket_sink.send(message).await.is_err() { break }
                    }
                    None => break,
                },
                () = too_many.exceeded.notified() => {
                    if let Some(metrics) = &metrics {
                        metrics.record_limit("websocketOperations");
                    }
                    let reason = format!("Too many operations: at most {} at once", too_many.limit);
                    let _ = socket_sink.send(WsMessage::Close(Some(CloseFrame { code: 4429, reason: reason.into() }))).await;
                    break;
                }
                () = &mut expiry => {
                    let frame = CloseFrame { code: 4403, reason: "Forbidden: the token expired".into() };
                    let _ = socket_sink.send(WsMessage::Close(Some(frame))).await;
                    break;
                }
            }
        }
    };
    // An operation over the limit never reaches async-graphql.
    let init = WsMessage::Binary(first.into());
    let stream = futures::stream::iter([Ok(init)])
        .chain(socket_stream)
        .filter(move |message| std::future::ready(operations.client_sent(message)));
    // The init was authenticated above; async-graphql's default init hook
    // just acknowledges it.
    let serve = GraphQLWebSocket::new_with_pair(sink, stream, executor, protocol).serve();
    // The client leaving ends `serve`, which drops the channel: the forwarder
    // then sends what is still queued (a final close frame, say) and stops.
    // The forwarder closing an expired socket ends `serve` instead.
    let mut forward = tokio::spawn(forward);
    tokio::select! {
        () = serve => {
            let _ = forward.await;
        }
        _ = &mut forward => {}
    }
}

async fn close_websocket(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame { code, reason: reason.to_owned().into() };
    let _ = socket.send(WsMessage::Close(Some(frame))).await;
}

/// Authenticates the payload of the first message when it is
/// `connection_init` (`{"Authorization": "Bearer ..."}`, as graphql-ws
/// clients send headers, or `{"token": "..."}`); any other first message
/// runs as anonymous, and async-graphql refuses it for lacking the init.
/// The credentials in a `connection_init` message, as an Authorization
/// header value: `None` when the message is not `connection_init`, `Some(None)`
/// when it carries none. A credential that is not a string stands for an
/// invalid one (never for none, which could mean anonymous).
#[allow(clippy::option_option)]
fn init_credentials(first: &[u8]) -> Option<Option<String>> {
    let message: serde_json::Value = serde_json::from_slice(first).ok()?;
    if message["type"] != "connection_init" {
        return None;
    }
    let payload = &message["payload"];
    let Some(given) = ["Authorization", "authorization", "token"].into_iter().find(|key| !payload[key].is_null())
    else {
        return Some(None);
    };
    let Some(value) = payload[given].as_str() else { return Some(Some("invalid".into())) };
    Some(Some(if given == "token" { format!("Bearer {value}") } else { value.to_owned() }))
}

/// The operations a WebSocket client has running, by id: a client may not
/// run more than `limit` at once (each subscription holds a buffer and a
/// task on the server).
struct Operations {
    limit: usize,
    running: std::sync::Mutex<std::collections::HashSet<String>>,
    exceeded: tokio::sync::Notify,
}

impl Operations {
    fn new(limit: usize) -> Self {
        Self { limit, running: std::sync::Mutex::default(), exceeded: tokio::sync::Notify::new() }
    }

    /// Notes a client message; false (and the socket is closed) when it
    /// starts an operation over the limit.
    fn client_sent(&self, message: &Result<WsMessage, axum::Error>) -> bool {
        // async-graphql reads binary frames as protocol messages too.
        let parsed = match message {
            Ok(WsMessage::Text(text)) => serde_json::from_str::<serde_json::Value>(text.as_str()),
            Ok(WsMessage::Binary(bytes)) => serde_json::from_slice::<serde_json::Value>(bytes),
            _ => return true,
        };
        let Ok(parsed) = parsed else { return true };
        let Some(id) = parsed["id"].as_str() else { return true };
        let mut running = self.running.lock().expect("the operations lock is never poisoned");
        match parsed["type"].as_str() {
            Some("subscribe" | "start") => {
                if running.len() >= self.limit && !running.contains(id) {
                    self.exceeded.notify_one();
                    return false;
                }
                running.insert(id.to_owned());
            }
            Some("complete" | "stop") => {
                running.remove(id);
            }
            _ => {}
        }
        true
    }

    /// Notes a server message: an operation that completed or failed is over.
    fn server_sent(&self, message: &WsMessage) {
        let WsMessage::Text(text) = message else { return };
        // Only these end an operation; events, the most frequent, are not parsed.
        let ends = ["{\"type\":\"complete\"", "{\"type\":\"error\""].iter().any(|start| text.starts_with(start));
        if !ends {
            return;
        }
        if let Ok(parsed) = serde_json::from_str::<serde_json::Value>(text.as_str())
            && let Some(id) = parsed["id"].as_str()
        {
            self.running.lock().expect("the operations lock is never poisoned").remove(id);
        }
    }
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
            Ok(upgrade) => graphql_ws(State(state), parts.headers.clone(), protocol, upgrade).await,
            Err(rejection) => rejection.into_response(),
        };
    }
    match Query::<GetParams>::from_request_parts(&mut parts, &state).await {
        Ok(query) => graphql_get(State(state), parts.headers, query).await,
        Err(error) => {
            let media = ResponseMedia::accepted(&parts.headers).unwrap_or(ResponseMedia::Json);
            let message = format!("the query string is not a GraphQL request: {}", error.body_text());
            refuse(media, ErrorCode::BadRequest, &message)
        }
    }
}

/// Runs WebSocket operations through the same firewall and per-request data as
/// HTTP: the parser never sees a query the firewall refused.
#[derive(Clone)]
struct FirewalledExecutor {
    state: HttpState,
    /// Who the connection authenticated as in `connection_init`.
    principal: Principal,
    /// What it may read.
    scope: SharedScope,
    /// What it may do.
    granted: Granted,
}

impl FirewalledExecutor {
    /// The socket's loaders (caching only for queries), principal and
    /// grants, which every operation on it carries.
    fn with_request_data(&self, request: async_graphql::Request, cache: bool) -> async_graphql::Request {
        with_loaders(request, &self.state.handles.catalog, &self.scope, self.state.graphql.max_loaded_entities, cache)
            .data(self.principal.clone())
            .data(self.granted.clone())
    }

    /// The firewall's answer to a request it refuses. A query that does not
    /// parse passes: async-graphql reports the parse error itself.
    fn refused(&self, request: &mut Request) -> Option<GraphqlResponse> {
        let limits = Limits::from(&self.state.graphql);
        let operation_name = request.operation_name.clone();
        let websocket_mutations = self.state.graphql.websocket_mutations;
        let rejected = match limits.check_text(&request.query) {
            Err(rejected) => rejected,
            Ok(()) => {
                let document = request.parsed_query().ok()?;
                if !websocket_mutations
                    && selected_operation_type(document, operation_name.as_deref()) == Some(OperationType::Mutation)
                {
                    let mut error = ServerError::new(
                        "mutations over the WebSocket are off (graphql.websocket_mutations): send them with POST",
                        None,
                    );
                    set_code(&mut error, ErrorCode::BadRequest, None);
                    return Some(GraphqlResponse::from_errors(vec![error]));
                }
                limits.check_document(document).err()?
            }
        };
        tracing::info!(limit = rejected.limit_name(), "WebSocket operation refused by the firewall");
        Some(GraphqlResponse::from_errors(vec![server_error(&rejected)]))
    }

    /// Runs a query or mutation; its errors are not counted yet.
    async fn run(&self, mut request: Request) -> GraphqlResponse {
        if let Some(refused) = self.refused(&mut request) {
            return refused;
        }
        let request_id = new_request_id();
        let operation_name = request.operation_name.clone();
        let query = request.parsed_query().is_ok_and(|document| {
            selected_operation_type(document, operation_name.as_deref()) == Some(OperationType::Query)
        });
        let request = self.with_request_data(request, query).data(RequestId(request_id.clone()));
        with_codes(self.state.schema.execute(request).await, &request_id)
    }

    /// Counts the errors of a response sent over the socket: no HTTP
    /// response carries them to the metrics layer.
    fn counted(&self, response: GraphqlResponse) -> GraphqlResponse {
        if let Some(metrics) = &self.state.metrics {
            metrics.record_response(&response);
        }
        response
    }
}

impl async_graphql::Executor for FirewalledExecutor {
    async fn execute(&self, request: Request) -> GraphqlResponse {
        self.counted(self.run(request).await)
    }

    fn execute_stream(
        &self,
        mut request: Request,
        session_data: Option<std::sync::Arc<async_graphql::Data>>,
    ) -> futures::stream::BoxStream<'static, GraphqlResponse> {
        use futures::StreamExt as _;
        if let Some(refused) = self.refused(&mut request) {
            return futures::stream::once(std::future::ready(self.counted(refused))).boxed();
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
                let response = match tokio::time::timeout(timeout, executor.run(request)).await {
                    Ok(response) => response,
                    Err(_) => {
                        let mut error = ServerError::new("the request took longer than the server allows", None);
                        set_code(&mut error, ErrorCode::LimitExceeded, Some("timeout"));
                        GraphqlResponse::from_errors(vec![error])
                    }
                };
                executor.counted(response)
            })
            .boxed();
        }
        let request = self.with_request_data(request, false);
        let request_id = new_request_id();
        let stream = match session_data {
            Some(data) => self.state.schema.execute_stream_with_session_data(request, data).boxed(),
            None => self.state.schema.execute_stream(request).boxed(),
        };
        let executor = self.clone();
        stream.map(move |response| executor.counted(with_codes(response, &request_id))).boxed()
    }
}

async fn readyz(State(state): State<HttpState>) -> Response {
    state.readiness.check().await
}

/// The JSON body of a GraphQL-over-HTTP request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestBody {
    query: String,
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<serde_json::Value>,
    #[serde(default)]
    extensions: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParams {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
}

async fn graphql_post(State(state): State<HttpState>, headers: HeaderMap, body: axum::body::Body) -> Response {
    let Some(media) = ResponseMedia::accepted(&headers) else { return not_acceptable() };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if media_type != "application/json" && media_type != "application/graphql-response+json" {
        return rejection(
            media,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BadRequest,
            None,
            "POST /graphql needs Content-Type: application/json",
        );
    }
    let limit = state.graphql.max_body_bytes;
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => {
            let message = format!("the body is over the limit of {limit} bytes (or was cut off)");
            return rejection(
                media,
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::LimitExceeded,
                Some("bodyBytes"),
                &message,
            );
        }
    };
    if body.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'[') {
        return refuse(media, ErrorCode::BadRequest, "batched requests are not supported");
    }
    let request: RequestBody = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return refuse(media, ErrorCode::BadRequest, &format!("the body is not a GraphQL request: {error}"));
        }
    };
    for (name, value) in [("variables", &request.variables), ("extensions", &request.extensions)] {
        if value.as_ref().is_some_and(|value| !value.is_object() && !value.is_null()) {
            let message = format!("{name} must be a JSON object");
            return refuse(media, ErrorCode::BadRequest, &message);
        }
    }
    let request = GraphqlHttpRequest {
        query: request.query,
        operation_name: request.operation_name,
        variables: request.variables,
        method: Method::POST,
    };
    execute(&state, &headers, media, request).await
}

async fn graphql_get(State(state): State<HttpState>, headers: HeaderMap, Query(params): Query<GetParams>) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if params.query.is_none() && wants_html && state.graphql.graphiql_enabled {
        return Html(GraphiQLSource::build().endpoint("/graphql").title("Catalog GraphiQL").finish()).into_response();
    }
    let Some(media) = ResponseMedia::accepted(&headers) else { return not_acceptable() };
    if state.graphql.require_csrf_header && !headers.contains_key(CSRF_HEADER) {
        let message = format!("GET requests need the {CSRF_HEADER} header (any value); or POST with application/json");
        return refuse(media, ErrorCode::BadRequest, &message);
    }
    let Some(query) = params.query else {
        return refuse(media, ErrorCode::BadRequest, "the query parameter is missing");
    };
    let variables = match params.variables.as_deref().map(serde_json::from_str::<serde_json::Value>).transpose() {
        Ok(variables) if variables.as_ref().is_none_or(|value| value.is_object() || value.is_null()) => variables,
        Ok(_) => {
            return refuse(media, ErrorCode::BadRequest, "variables must be a JSON object");
        }
        Err(error) => {
            return refuse(media, ErrorCode::BadRequest, &format!("variables are not JSON: {error}"));
        }
    };
    let request = GraphqlHttpRequest { query, operation_name: params.operation_name, variables, method: Method::GET };
    execute(&state, &headers, media, request).await
}

/// A GraphQL request as it arrived over HTTP.
struct GraphqlHttpRequest {
    query: String,
    operation_name: Option<String>,
    variables: Option<serde_json::Value>,
    method: Method,
}

/// The media type a response is written in, from the request's Accept
/// header (GraphQL over HTTP): `application/graphql-response+json` when the
/// client accepts it, `application/json` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResponseMedia {
    GraphqlResponseJson,
    Json,
}

impl ResponseMedia {
    /// `None` when the client accepts neither (406).
    fn accepted(headers: &HeaderMap) -> Option<ResponseMedia> {
        let Some(accept) = headers.get(header::ACCEPT).and_then(|value| value.to_str().ok()) else {
            return Some(ResponseMedia::Json);
        };
        let ranges: Vec<String> = accept
            .split(',')
            .map(|range| range.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
            .collect();
        if ranges.iter().any(|range| range == "application/graphql-response+json") {
            Some(ResponseMedia::GraphqlResponseJson)
        } else if ranges.iter().any(|range| matches!(range.as_str(), "application/json" | "application/*" | "*/*" | ""))
        {
            Some(ResponseMedia::Json)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            ResponseMedia::GraphqlResponseJson => "application/graphql-response+json",
            ResponseMedia::Json => "application/json",
        }
    }

    /// The status of a request error (parse or validation failure): 400 in
    /// the GraphQL media type; 200 in plain JSON, which older clients read as
    /// "look at errors".
    fn request_error_status(self) -> StatusCode {
        match self {
            ResponseMedia::GraphqlResponseJson => StatusCode::BAD_REQUEST,
            ResponseMedia::Json => StatusCode::OK,
        }
    }
}

fn not_acceptable() -> Response {
    let message = "accept application/graphql-response+json or application/json";
    rejection(ResponseMedia::Json, StatusCode::NOT_ACCEPTABLE, ErrorCode::BadRequest, None, message)
}

async fn execute(state: &HttpState, headers: &HeaderMap, media: ResponseMedia, http: GraphqlHttpRequest) -> Response {
    // A header that is not text cannot be a bearer token.
    let authorization = headers.get(header::AUTHORIZATION).map(|value| value.to_str().unwrap_or("\u{0}"));
    let request_id = request_id(headers);
    let access = match state.auth.authenticate_reader(authorization, Some(&request_id)).await {
        Ok(access) => access,
        Err(error) => return auth_rejection(media, &error, authorization.is_some()),
    };
    let limits = Limits::from(&state.graphql);
    if let Err(rejected) = limits.check_text(&http.query) {
        return firewall_rejection(media, &rejected);
    }
    let cached = state.documents.get(&http.query);
    let uncached_query = (cached.is_none() && DocumentCache::keeps(&http.query)).then(|| http.query.clone());
    let mut request = Request::new(http.query);
    if let Some(document) = cached {
        request.set_parsed_query(document);
    }
    if let Some(operation_name) = http.operation_name.clone() {
        request = request.operation_name(operation_name);
    }
    if let Some(variables) = http.variables {
        request = request.variables(Variables::from_json(variables));
    }
    // Parsing here, after the text checks, tells a parse failure apart from a
    // validation failure without reading error messages.
    let document = match request.parsed_query() {
        Ok(document) => document,
        Err(error) => {
            let mut response = GraphqlResponse::from_errors(vec![error]);
            set_code(&mut response.errors[0], ErrorCode::GraphqlParseFailed, None);
            return json_response(media, media.request_error_status(), &response);
        }
    };
    if let Err(rejected) = limits.check_document(document) {
        return firewall_rejection(media, &rejected);
    }
    if let Some(query) = uncached_query {
        state.documents.insert(query, document);
    }
    // Queries read the replica when there is one; a mutation reads and
    // writes the primary, so it sees its own writes (and what it checks
    // before writing is current).
    // An unknown or ambiguous operation name counts as a query: validation reports it.
    let operation = selected_operation_type(document, http.operation_name.as_deref());
    let handles = match &state.reader {
        Some(reader) if operation != Some(OperationType::Mutation) => reader,
        _ => &state.handles,
    };
    if http.method == Method::GET && operation.is_some_and(|ty| ty != OperationType::Query) {
        let mut response = rejection(
            media,
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::BadRequest,
            None,
            "GET runs queries only: send mutations and subscriptions with POST (or over the WebSocket)",
        );
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let scope = match ReadScope::new(&handles.catalog, access.read_filter).await {
        Ok(scope) => scope,
        Err(error) => {
            tracing::error!(request_id, error = %error, "cannot build a read scope");
            return refuse(media, ErrorCode::Internal, "internal error");
        }
    };
    let cache = operation == Some(OperationType::Query);
    let request =
        with_loaders(request, &handles.catalog, &SharedScope::new(scope), state.graphql.max_loaded_entities, cache)
            .data(Arc::clone(handles))
            .data(access.principal)
            .data(Granted(access.granted, access.templates))
            .data(RequestId(request_id.clone()));
    let response = match tokio::time::timeout(state.request_timeout, state.schema.execute(request)).await {
        Ok(response) => response,
        Err(_) => {
            return rejection(
                media,
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::LimitExceeded,
                Some("timeout"),
                "the request took longer than the server allows",
            );
        }
    };
    let response = with_codes(response, &request_id);
    // No data at all means the request never executed: validation or
    // variable coercion failed.
    let status = if response.data == async_graphql::Value::Null && !response.errors.is_empty() {
        media.request_error_status()
    } else {
        StatusCode::OK
    };
    json_response(media, status, &response)
}

/// The type of the operation a request runs; `None` when the name is unknown
/// or missing among several operations.
fn selected_operation_type(document: &ExecutableDocument, name: Option<&str>) -> Option<OperationType> {
    use async_graphql::parser::types::DocumentOperations;
    let operation = match (&document.operations, name) {
        (DocumentOperations::Single(operation), _) => Some(operation),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name),
        (DocumentOperations::Multiple(operations), None) => {
            operations.values().next().filter(|_| operations.len() == 1)
        }
    };
    operation.map(|operation| operation.node.ty)
}

fn auth_rejection(media: ResponseMedia, error: &AuthError, sent_credentials: bool) -> Response {
    let mut response = client_error_response(media, error);
    if response.status() == StatusCode::UNAUTHORIZED {
        let challenge = if sent_credentials {
            r#"Bearer realm="catalog", error="invalid_token""#
        } else {
            r#"Bearer realm="catalog""#
        };
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    response
}

fn firewall_rejection(media: ResponseMedia, rejected: &firewall::Rejection) -> Response {
    tracing::info!(limit = rejected.limit_name(), "query refused by the firewall");
    client_error_response(media, rejected)
}

/// The id the request-id middleware gave this request.
fn request_id(headers: &HeaderMap) -> String {
    headers.get(REQUEST_ID).and_then(|value| value.to_str().ok()).map_or_else(new_request_id, str::to_owned)
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The header carrying a request's id, both ways.
const REQUEST_ID: &str = "x-request-id";

/// The paths a span may be named after; anything else is named by its
/// method alone, so that span names stay a closed set.
const ROUTES: &[&str] =
    &["/graphql", "/graphql/ws", "/healthz", "/readyz", "/metrics", "/webhooks/github", "/webhooks/pagerduty"];

/// Gives every request an id (a client's own `x-request-id` when it sent a
/// sane one) and runs it inside the request's server span, which names the
/// id (so every log line of the request carries it) and continues the
/// caller's trace when it sent a W3C `traceparent`. Returns the id in the
/// response.
async fn with_request_id(mut request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let given = request.headers().get(REQUEST_ID).and_then(|value| value.to_str().ok()).filter(|id| {
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
    });
    let id = given.map_or_else(new_request_id, str::to_owned);
    let value = HeaderValue::from_str(&id).expect("request ids are ASCII");
    request.headers_mut().insert(REQUEST_ID, value.clone());
    // Any method token reaches here; span names keep to the standard ones.
    let method = crate::metrics::method_label(request.method()).to_owned();
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

/// Gives a code to the errors that reach here without one, and masks the
/// internal ones: the client gets a generic message and the request id,
/// the log gets the details. Every error our code raises carries its code,
/// and async-graphql's are coded by the phase that raised them
/// (`graphql/framework_errors.rs`); what is left is either a request error
/// raised before execution (no path: an unknown or missing operation name)
/// or a resolver's error that escaped [`ErrorCode`], a bug.
fn with_codes(mut response: GraphqlResponse, request_id: &str) -> GraphqlResponse {
    for error in &mut response.errors {
        let code = match ErrorCode::of(error) {
            Some(ErrorCode::Internal) => {
                error.extensions.get_or_insert_with(Default::default).set("requestId", request_id);
                continue;
            }
            Some(_) => continue,
            None if error.path.is_empty() => ErrorCode::GraphqlValidationFailed,
            None => {
                tracing::error!(request_id, message = %error.message, path = ?error.path, "resolver failed");
                error.message = format!("internal error: the request could not be completed (request id {request_id})");
                error.extensions.get_or_insert_with(Default::default).set("requestId", request_id);
                ErrorCode::Internal
            }
        };
        set_code(error, code, None);
    }
    response
}

fn set_code(error: &mut ServerError, code: ErrorCode, limit: Option<&str>) {
    error_code::set_code(error.extensions.get_or_insert_with(Default::default), code, limit);
}

/// A response refusing the whole request with one error, at its code's status.
fn refuse(media: ResponseMedia, code: ErrorCode, message: &str) -> Response {
    rejection(media, code.status(), code, None, message)
}

/// A response refusing the whole request with one error, at a status more
/// precise than its code's.
fn rejection(
    media: ResponseMedia,
    status: StatusCode,
    code: ErrorCode,
    limit: Option<&str>,
    message: &str,
) -> Response {
    let mut error = ServerError::new(message, None);
    set_code(&mut error, code, limit);
    json_response(media, status, &GraphqlResponse::from_errors(vec![error]))
}

/// A response refusing the whole request with `error`, at its status.
fn client_error_response(media: ResponseMedia, error: &dyn ClientError) -> Response {
    json_response(media, error.status(), &GraphqlResponse::from_errors(vec![server_error(error)]))
}

/// The response body in the negotiated media type. A response without data
/// (a request error) has no `data` entry at all, as GraphQL over HTTP asks.
/// Every GraphQL response over HTTP leaves here, so here its errors are
/// handed to the metrics layer.
fn json_response(media: ResponseMedia, status: StatusCode, response: &GraphqlResponse) -> Response {
    let mut body = serde_json::to_value(response).unwrap_or_default();
    if response.data == async_graphql::Value::Null
        && let Some(object) = body.as_object_mut()
    {
        object.remove("data");
    }
    let body =
        serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"errors\":[{\"message\":\"internal error\"}]}".to_vec());
    let errors = (!response.errors.is_empty()).then(|| ResponseErrors::of(response));
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(media.content_type()));
    if let Some(errors) = errors {
        response.extensions_mut().insert(errors);
    }
    response
}
