//! How a GraphQL response leaves over HTTP: the media type negotiated from
//! Accept (GraphQL over HTTP), the status of request errors, and the error
//! codes given (and internal errors masked) on the way out.

use async_graphql::{Response as GraphqlResponse, ServerError};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::identity::AuthError;
use crate::error_code::{self, ClientError, ErrorCode, Limit, server_error};
use crate::http::firewall;
use crate::telemetry::metrics::ResponseErrors;

/// The media type a response is written in, from the request's Accept
/// header (GraphQL over HTTP): `application/graphql-response+json` when the
/// client accepts it, `application/json` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ResponseMedia {
    GraphqlResponseJson,
    Json,
}

impl ResponseMedia {
    /// `None` when the client accepts neither (406).
    pub(super) fn accepted(headers: &HeaderMap) -> Option<ResponseMedia> {
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

    pub(super) fn content_type(self) -> &'static str {
        match self {
            ResponseMedia::GraphqlResponseJson => "application/graphql-response+json",
            ResponseMedia::Json => "application/json",
        }
    }

    /// The status of a request error (parse or validation failure): 400 in
    /// the GraphQL media type; 200 in plain JSON, which older clients read as
    /// "look at errors".
    pub(super) fn request_error_status(self) -> StatusCode {
        match self {
            ResponseMedia::GraphqlResponseJson => StatusCode::BAD_REQUEST,
            ResponseMedia::Json => StatusCode::OK,
        }
    }
}

pub(super) fn not_acceptable() -> Response {
    let message = "accept application/graphql-response+json or application/json";
    rejection(ResponseMedia::Json, StatusCode::NOT_ACCEPTABLE, ErrorCode::BadRequest, None, message)
}

pub(super) fn auth_rejection(media: ResponseMedia, error: &AuthError, sent_credentials: bool) -> Response {
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

pub(super) fn firewall_rejection(media: ResponseMedia, rejected: &firewall::Rejection) -> Response {
    tracing::info!(limit = rejected.limit_name().map(Limit::as_str), "query refused by the firewall");
    client_error_response(media, rejected)
}

/// Gives a code to the errors that reach here without one, and masks the
/// internal ones: the client gets a generic message and the request id,
/// the log gets the details. Every error our code raises carries its code,
/// and async-graphql's are coded by the phase that raised them
/// (`graphql/framework_errors.rs`); what is left is either a request error
/// raised before execution (no path: an unknown or missing operation name)
/// or a resolver's error that escaped [`ErrorCode`], a bug.
pub(super) fn with_codes(mut response: GraphqlResponse, request_id: &str) -> GraphqlResponse {
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

pub(super) fn set_code(error: &mut ServerError, code: ErrorCode, limit: Option<Limit>) {
    error_code::set_code(error.extensions.get_or_insert_with(Default::default), code, limit);
}

/// A response refusing the whole request with one error, at its code's status.
pub(super) fn refuse(media: ResponseMedia, code: ErrorCode, message: &str) -> Response {
    rejection(media, code.status(), code, None, message)
}

/// A response refusing the whole request with one error, at a status more
/// precise than its code's.
pub(super) fn rejection(
    media: ResponseMedia,
    status: StatusCode,
    code: ErrorCode,
    limit: Option<Limit>,
    message: &str,
) -> Response {
    let mut error = ServerError::new(message, None);
    set_code(&mut error, code, limit);
    json_response(media, status, &GraphqlResponse::from_errors(vec![error]))
}

/// A response refusing the whole request with `error`, at its status.
pub(super) fn client_error_response(media: ResponseMedia, error: &dyn ClientError) -> Response {
    json_response(media, error.status(), &GraphqlResponse::from_errors(vec![server_error(error)]))
}

/// The response body in the negotiated media type. A response without data
/// (a request error) has no `data` entry at all, as GraphQL over HTTP asks.
/// Every GraphQL response over HTTP leaves here, so here its errors are
/// handed to the metrics layer.
pub(super) fn json_response(media: ResponseMedia, status: StatusCode, response: &GraphqlResponse) -> Response {
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
