//! Relay paging shared by every paged field: opaque offset cursors, page
//! sizes checked against the limits, and `PageInfo`.

use async_graphql::SimpleObject;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::MAX_PAGE_SIZE;
use super::error::ApiError;
use crate::error_code::Limit;

/// Relay page information.
#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
}

pub(crate) fn offset_cursor(offset: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("offset:{offset}"))
}

pub(crate) fn decode_cursor(cursor: &str) -> Result<u64, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("offset:").and_then(|number| number.parse::<u64>().ok()))
        // Offsets reach the database as signed 64-bit integers.
        .filter(|offset| *offset < i64::MAX as u64)
        .ok_or_else(|| ApiError::BadUserInput(format!("cursor {cursor:?} is not a cursor this API issued")))
}

pub(crate) fn page_size(name: &str, value: Option<i32>) -> Result<Option<u64>, ApiError> {
    match value {
        None => Ok(None),
        Some(size) if size < 1 => Err(ApiError::BadUserInput(format!("{name} must be at least 1, got {size}"))),
        Some(size) if u64::try_from(size).unwrap_or(u64::MAX) > MAX_PAGE_SIZE => Err(ApiError::LimitExceeded {
            limit: Limit::PageSize,
            message: format!("{name} must be at most {MAX_PAGE_SIZE}, got {size}"),
        }),
        Some(size) => Ok(u64::try_from(size).ok()),
    }
}

/// A sequence-number cursor as a client sends it: a non-negative integer,
/// as a string or a number.
pub(crate) fn sequence_cursor(value: &async_graphql::Value) -> Option<i64> {
    let parsed = match value {
        async_graphql::Value::String(text) => text.parse::<i64>().ok(),
        async_graphql::Value::Number(number) => number.as_i64(),
        _ => None,
    };
    parsed.filter(|sequence| *sequence >= 0)
}
