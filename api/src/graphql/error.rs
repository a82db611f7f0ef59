//! The API's one error type and its mapping to GraphQL errors with a stable
//! `extensions.code`.

use async_graphql::ErrorExtensions;
use catalog_store::StoreError;

/// An error a client sees. Internal causes are logged, never shown.
///
/// Deliberately not `Display`: async-graphql converts any `Display` error into a
/// GraphQL error without a code, so this type goes through the one `From` below.
#[derive(Clone, Debug)]
pub enum ApiError {
    BadUserInput(String),
    LimitExceeded { limit: &'static str, message: String },
    Internal,
}

impl ApiError {
    /// The sentence the client sees.
    pub fn message(&self) -> String {
        match self {
            ApiError::BadUserInput(message) => message.clone(),
            ApiError::LimitExceeded { limit, message } => format!("{limit} limit exceeded: {message}"),
            ApiError::Internal => "internal error: the request could not be completed".into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadUserInput(_) => "BAD_USER_INPUT",
            ApiError::LimitExceeded { .. } => "LIMIT_EXCEEDED",
            ApiError::Internal => "INTERNAL",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!(error = %error, "store call failed");
        ApiError::Internal
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        let code = error.code();
        let limit = match &error {
            ApiError::LimitExceeded { limit, .. } => Some(*limit),
            _ => None,
        };
        async_graphql::Error::new(error.message()).extend_with(|_, extensions| {
            extensions.set("code", code);
            if let Some(limit) = limit {
                extensions.set("limit", limit);
            }
        })
    }
}
