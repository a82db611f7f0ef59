//! GraphQL over HTTP at /graphql: POST with a JSON body, GET with a query
//! string (queries only, behind the CSRF header when configured), GraphiQL
//! for browsers, and the one path a request takes from authentication and
//! the firewall through the document cache to execution.

use std::sync::Arc;

use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::OperationType;
use async_graphql::{Request, Response as GraphqlResponse, Variables};
use async_graphql_axum::GraphQLProtocol;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use crate::auth::Granted;
use crate::auth::policy::{ReadScope, SharedScope};
use crate::error_code::{ErrorCode, Limit};
use crate::graphql::{RequestId, with_loaders};
use crate::http::documents::DocumentCache;
use crate::http::firewall::Limits;

use super::request_id::request_id;
use super::response::{
    ResponseMedia, auth_rejection, firewall_rejection, json_response, not_acceptable, refuse, rejection, set_code,
    with_codes,
};
use super::websocket::graphql_ws;
use super::{CSRF_HEADER, HttpState, selected_operation_type};

/// The JSON body of a GraphQL-over-HTTP request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RequestBody {
    query: String,
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<serde_json::Value>,
    #[serde(default)]
    extensions: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GetParams {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
}

pub(super) async fn graphql_post(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
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
                Some(Limit::BodyBytes),
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

pub(super) async fn graphql_get(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(params): Query<GetParams>,
) -> Response {
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

/// GET /graphql: a WebSocket upgrade goes to the subscription endpoint, anything
/// else is a query over GET (or GraphiQL).
pub(super) async fn graphql_get_or_upgrade(
    State(state): State<HttpState>,
    request: axum::extract::Request,
) -> Response {
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

/// A GraphQL request as it arrived over HTTP.
pub(super) struct GraphqlHttpRequest {
    query: String,
    operation_name: Option<String>,
    variables: Option<serde_json::Value>,
    method: Method,
}

pub(super) async fn execute(
    state: &HttpState,
    headers: &HeaderMap,
    media: ResponseMedia,
    http: GraphqlHttpRequest,
) -> Response {
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
    let request = with_loaders(request, handles, &SharedScope::new(scope), state.graphql.max_loaded_entities, cache)
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
                Some(Limit::Timeout),
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
