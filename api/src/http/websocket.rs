//! GraphQL over WebSocket at /graphql/ws (and upgrades of GET /graphql):
//! the origin check and connection cap, `connection_init` authentication and
//! re-checks, the per-socket operation limit, and the executor that runs
//! every operation through the same firewall as HTTP.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::parser::types::OperationType;
use async_graphql::{Request, Response as GraphqlResponse, ServerError};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::Granted;
use crate::auth::identity::Principal;
use crate::auth::policy::{ReadScope, SharedScope};
use crate::error_code::{ErrorCode, Limit, server_error};
use crate::graphql::{RequestId, with_loaders};
use crate::http::firewall::Limits;

use super::request_id::new_request_id;
use super::response::{set_code, with_codes};
use super::{HttpState, origin_allowed, selected_operation_type};

/// GraphQL over WebSocket (graphql-transport-ws and the legacy graphql-ws,
/// chosen by Sec-WebSocket-Protocol) at /graphql/ws. A browser page from
/// another origin is refused (cross-site WebSocket hijacking: browsers send
/// cookies but no CORS check on upgrades), and a socket that sends nothing
/// within the init timeout is closed with 4408.
pub(super) async fn graphql_ws(
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
            metrics.record_limit(Limit::WebsocketConnections);
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
pub(super) const WEBSOCKET_READ_BUFFER: usize = 8 * 1024;

/// Waits for `connection_init`, authenticates its payload like an HTTP
/// request (closing with 4403 on failure, 4408 when it does not come, 4400
/// when another message comes first), then hands the socket to
/// async-graphql. While it is open its credentials are checked again every
/// `auth.recheck_seconds` (revocation; its read scope is rebuilt then too)
/// and at expiry; failing, it is closed with 4403.
pub(super) async fn serve_websocket(
    mut socket: WebSocket,
    state: HttpState,
    protocol: GraphQLProtocol,
    init_timeout: Duration,
) {
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
                        metrics.record_limit(Limit::WebsocketOperations);
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

pub(super) async fn close_websocket(socket: &mut WebSocket, code: u16, reason: &str) {
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
pub(super) fn init_credentials(first: &[u8]) -> Option<Option<String>> {
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
pub(super) struct Operations {
    limit: usize,
    running: parking_lot::Mutex<std::collections::HashSet<String>>,
    exceeded: tokio::sync::Notify,
}

impl Operations {
    fn new(limit: usize) -> Self {
        Self { limit, running: parking_lot::Mutex::default(), exceeded: tokio::sync::Notify::new() }
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
        let mut running = self.running.lock();
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
            self.running.lock().remove(id);
        }
    }
}

/// Runs WebSocket operations through the same firewall and per-request data as
/// HTTP: the parser never sees a query the firewall refused.
#[derive(Clone)]
pub(super) struct FirewalledExecutor {
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
        with_loaders(request, &self.state.handles, &self.scope, self.state.graphql.max_loaded_entities, cache)
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
        tracing::info!(limit = rejected.limit_name().map(Limit::as_str), "WebSocket operation refused by the firewall");
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
                        set_code(&mut error, ErrorCode::LimitExceeded, Some(Limit::Timeout));
                        GraphqlResponse::from_errors(vec![error])
                    }
                };
                executor.counted(response)
            })
            .boxed();
        }
        let request = self.with_request_data(request, false);
        let request_id = new_request_id();
        let stream = self.state.schema.execute_stream(request, session_data);
        let executor = self.clone();
        stream.map(move |response| executor.counted(with_codes(response, &request_id))).boxed()
    }
}
