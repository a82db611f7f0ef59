//! The resolvers' one error type and its mapping to GraphQL errors, whose
//! `extensions.code` is an [`ErrorCode`].

use async_graphql::ErrorExtensions;
use catalog_store::StoreError;

use crate::error_code::{ErrorCode, Limit, set_code};

/// An error a client sees. Internal causes are logged, never shown.
///
/// Deliberately not `Display`: async-graphql converts any `Display` error into a
/// GraphQL error without a code, so this type goes through the one `From` below.
#[derive(Clone, Debug)]
pub enum ApiError {
    BadUserInput(String),
    LimitExceeded {
        limit: Limit,
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

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadUserInput(_) => ErrorCode::BadUserInput,
            ApiError::LimitExceeded { .. } => ErrorCode::LimitExceeded,
            ApiError::CursorExpired { .. } => ErrorCode::CursorExpired,
            ApiError::SubscriberTooSlow { .. } => ErrorCode::SubscriberTooSlow,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Internal => ErrorCode::Internal,
        }
    }

    fn limit(&self) -> Option<Limit> {
        match self {
            ApiError::LimitExceeded { limit, .. } => Some(*limit),
            _ => None,
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
        let message = error.message();
        async_graphql::Error::new(message).extend_with(|_, extensions| {
            set_code(extensions, error.code(), error.limit());
            match &error {
                ApiError::CursorExpired { oldest } => extensions.set("oldestCursor", oldest.to_string()),
                ApiError::SubscriberTooSlow { last_cursor } => extensions.set("lastCursor", last_cursor.to_string()),
                ApiError::BadUserInput(_)
                | ApiError::LimitExceeded { .. }
                | ApiError::Forbidden(_)
                | ApiError::NotFound(_)
                | ApiError::Unavailable(_)
                | ApiError::Internal => {}
            }
        })
    }
}
