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
    LimitExceeded {
        limit: &'static str,
        message: String,
    },
    /// A change cursor older than the retained change log.
    CursorExpired {
        oldest: i64,
    },
    /// A subscriber fell too far behind; it resumes after `last_cursor`.
    SubscriberTooSlow {
        last_cursor: i64,
    },
    /// The principal may not do or see this.
    Forbidden(String),
    /// No such thing (or one the principal may not see: the two look alike).
    NotFound(String),
    /// A dependency failed in a way a retry may cure.
    Unavailable(String),
    Internal,
}

impl ApiError {
    /// The sentence the client sees.
    pub fn message(&self) -> String {
        match self {
            ApiError::BadUserInput(message) => message.clone(),
            ApiError::LimitExceeded { limit, message } => format!("{limit} limit exceeded: {message}"),
            ApiError::CursorExpired { oldest } => format!(
                "the change log no longer holds changes after this cursor (the oldest resumable cursor is {oldest}): \
                 read the current state again, then follow from its latest cursor"
            ),
            ApiError::SubscriberTooSlow { last_cursor } => format!(
                "the subscriber fell too far behind and was ended; subscribe again with after: \"{last_cursor}\""
            ),
            ApiError::Forbidden(message) | ApiError::NotFound(message) | ApiError::Unavailable(message) => {
                message.clone()
            }
            ApiError::Internal => "internal error: the request could not be completed".into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadUserInput(_) => "BAD_USER_INPUT",
            ApiError::LimitExceeded { .. } => "LIMIT_EXCEEDED",
            ApiError::CursorExpired { .. } => "CURSOR_EXPIRED",
            ApiError::SubscriberTooSlow { .. } => "SUBSCRIBER_TOO_SLOW",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Unavailable(_) => "UNAVAILABLE",
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
        let message = error.message();
        async_graphql::Error::new(message).extend_with(|_, extensions| {
            extensions.set("code", code);
            match &error {
                ApiError::LimitExceeded { limit, .. } => extensions.set("limit", *limit),
                ApiError::CursorExpired { oldest } => extensions.set("oldestCursor", oldest.to_string()),
                ApiError::SubscriberTooSlow { last_cursor } => extensions.set("lastCursor", last_cursor.to_string()),
                ApiError::BadUserInput(_)
                | ApiError::Forbidden(_)
                | ApiError::NotFound(_)
                | ApiError::Unavailable(_)
                | ApiError::Internal => {}
            }
        })
    }
}
