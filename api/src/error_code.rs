//! The one vocabulary of error codes a client can see (`extensions.code`),
//! and the one place an error is given its code on the wire.
//!
//! Every code is an [`ErrorCode`] variant with its wire name, HTTP status and
//! whether a retry may succeed; [`ErrorCode::ALL`] lists them (the metrics'
//! label set and the reference table in docs/errors.md come from it). Errors
//! become their wire shape through [`ClientError`] and [`set_code`]: nothing
//! else in the crate writes `extensions.code`, which the tests below check.

use async_graphql::{ErrorExtensionValues, ServerError};
use axum::http::StatusCode;

/// Declares a closed wire vocabulary: the enum and its `ALL` together, so
/// that `ALL` cannot miss a variant, with each variant's wire name; each
/// variant's doc comment is its meaning in the reference (docs/errors.md).
macro_rules! vocabulary {
    ($(#[doc = $type_doc:literal])* $name:ident { $($(#[doc = $doc:literal])* $variant:ident = $wire:literal,)* }) => {
        $(#[doc = $type_doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[doc = $doc])* $variant,)*
        }

        impl $name {
            /// Every value, in the order of the reference table.
            pub const ALL: &[$name] = &[$($name::$variant,)*];

            /// The wire name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)*
                }
            }

            /// The value whose wire name this is.
            pub fn from_wire(name: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|value| value.as_str() == name)
            }

            /// What the value means, for the reference table.
            fn meaning(self) -> String {
                match self {
                    $($name::$variant => {
                        let lines: &[&str] = &[$($doc,)*];
                        lines.iter().map(|line| line.trim()).collect::<Vec<_>>().join(" ")
                    })*
                }
            }
        }
    };
}

vocabulary! {
    /// A code a client sees in `extensions.code`.
    ErrorCode {
        /// The HTTP request is not one the GraphQL endpoint takes: a body that is
        /// not a GraphQL request, a batch, a missing `query`, variables that are
        /// not an object, a mutation over GET (405) or over a WebSocket that does
        /// not allow them, a content type other than JSON (415), an Accept header
        /// without a JSON type (406), a GET without the CSRF header.
        BadRequest = "BAD_REQUEST",
        /// The query is not GraphQL.
        GraphqlParseFailed = "GRAPHQL_PARSE_FAILED",
        /// The query does not validate against the schema: an unknown field or
        /// argument, a fragment cycle, an unknown or missing operation name.
        GraphqlValidationFailed = "GRAPHQL_VALIDATION_FAILED",
        /// An argument or variable has a value the field refuses (a page size
        /// under 1, a cursor that is not one, a malformed ref).
        BadUserInput = "BAD_USER_INPUT",
        /// A request limit was hit; `extensions.limit` names it. Limits checked
        /// before execution refuse the whole request (413 for the body and query
        /// size, 503 for the request timeout); a field that hits one fails alone,
        /// in a 200 response.
        LimitExceeded = "LIMIT_EXCEEDED",
        /// No credentials, or credentials that are not valid (malformed, unknown,
        /// revoked or expired).
        Unauthenticated = "UNAUTHENTICATED",
        /// Valid credentials that do not allow this request (a scope the token
        /// lacks, a field or entity the principal may not use).
        Forbidden = "FORBIDDEN",
        /// No such thing, or one the principal may not see: the two look alike.
        NotFound = "NOT_FOUND",
        /// The change cursor is older than the retained change log;
        /// `extensions.oldestCursor` is the oldest resumable one. Read the current
        /// state again, then follow from its latest cursor.
        CursorExpired = "CURSOR_EXPIRED",
        /// The subscriber fell further behind than the server buffers and was
        /// ended; subscribe again with `after: extensions.lastCursor`.
        SubscriberTooSlow = "SUBSCRIBER_TOO_SLOW",
        /// A scaffolder template or task's parameters are invalid;
        /// `extensions.problems` lists each problem with its path and rule.
        ValidationFailed = "VALIDATION_FAILED",
        /// A dependency failed in a way a retry may cure (a provider run that
        /// could not complete).
        Unavailable = "UNAVAILABLE",
        /// The server failed. The client sees a generic message and
        /// `extensions.requestId`; the details are logged under that id, never
        /// sent. A request refused as a whole because credentials could not be
        /// checked is 503.
        Internal = "INTERNAL",
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

vocabulary! {
    /// A limit a refusal names in `extensions.limit` (with the code
    /// `LIMIT_EXCEEDED`), and the `limit` label of
    /// `catalog_limit_rejections_total`.
    Limit {
        /// Aliases in one query (`graphql.max_aliases`).
        Aliases = "aliases",
        /// The request body (`graphql.max_body_bytes`); 413.
        BodyBytes = "bodyBytes",
        /// The query's complexity (`graphql.max_complexity`).
        Complexity = "complexity",
        /// The query's depth (`graphql.max_depth`), or the parser's recursion.
        Depth = "depth",
        /// Directives in one query (`graphql.max_directives`) or on one field.
        Directives = "directives",
        /// Fields one `facets` call counts (20).
        FacetFields = "facetFields",
        /// Fields in one query (`graphql.max_fields`).
        Fields = "fields",
        /// Nesting of one entity filter.
        FilterDepth = "filterDepth",
        /// Terms in one entity filter.
        FilterTerms = "filterTerms",
        /// Values in one filter list.
        FilterValues = "filterValues",
        /// Entities one graph answer may hold.
        GraphNodes = "graphNodes",
        /// IDs one `nodes` call may ask for (500).
        Ids = "ids",
        /// Entities one request may load (`graphql.max_loaded_entities`).
        LoadedEntities = "loadedEntities",
        /// Nesting of lists and objects in the query text (`graphql.max_nesting`).
        Nesting = "nesting",
        /// A page's `first` or `last`.
        PageSize = "pageSize",
        /// PagerDuty lookups one request may make.
        PagerDutyLookups = "pagerDutyLookups",
        /// Paths one `paths` call may return.
        Paths = "paths",
        /// The query text (`graphql.max_query_bytes`); 413.
        QueryBytes = "queryBytes",
        /// Refs one call may ask for (500).
        Refs = "refs",
        /// Characters in one search.
        SearchChars = "searchChars",
        /// Words in one search.
        SearchWords = "searchWords",
        /// The size of one scaffolder task secret.
        TaskSecretBytes = "taskSecretBytes",
        /// Secrets one scaffolder task may carry.
        TaskSecrets = "taskSecrets",
        /// The request's time (`server.request_timeout_seconds`); 503.
        Timeout = "timeout",
        /// Tokens in the query text (`graphql.max_tokens`).
        Tokens = "tokens",
        /// The depth of one graph traversal (32).
        TraversalDepth = "traversalDepth",
        /// The YAML one `validateEntity` call may send.
        ValidateBytes = "validateBytes",
        /// Graph walks one request may run (20).
        Walks = "walks",
        /// Open WebSockets (`graphql.max_websocket_connections`); the upgrade is
        /// refused with 503.
        WebsocketConnections = "websocketConnections",
        /// Operations one WebSocket may run at once
        /// (`graphql.max_websocket_operations`); the socket is closed with 4429.
        WebsocketOperations = "websocketOperations",
    }
}

impl ErrorCode {
    /// The HTTP status of a response this error refuses as a whole, before
    /// execution. An error a field raises during execution travels in a 200
    /// response with whatever the other fields produced (GraphQL over HTTP),
    /// so the codes only fields raise are 200. Some errors are more precise
    /// than their code ([`ClientError::status`]).
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::GraphqlParseFailed
            | ErrorCode::GraphqlValidationFailed
            | ErrorCode::LimitExceeded => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::BadUserInput
            | ErrorCode::NotFound
            | ErrorCode::CursorExpired
            | ErrorCode::SubscriberTooSlow
            | ErrorCode::ValidationFailed
            | ErrorCode::Unavailable => StatusCode::OK,
        }
    }

    /// Whether sending the same request again later may succeed.
    pub fn retryable(self) -> bool {
        match self {
            // The cause passes: a provider run, a database restart, a slow
            // subscriber that resumes from its last cursor.
            ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::SubscriberTooSlow => true,
            ErrorCode::BadRequest
            | ErrorCode::GraphqlParseFailed
            | ErrorCode::GraphqlValidationFailed
            | ErrorCode::BadUserInput
            | ErrorCode::LimitExceeded
            | ErrorCode::Unauthenticated
            | ErrorCode::Forbidden
            | ErrorCode::NotFound
            | ErrorCode::CursorExpired
            | ErrorCode::ValidationFailed => false,
        }
    }

    /// The code an error carries, if any.
    pub(crate) fn of(error: &ServerError) -> Option<ErrorCode> {
        match error.extensions.as_ref()?.get("code")? {
            async_graphql::Value::String(name) => ErrorCode::from_wire(name),
            _ => None,
        }
    }
}

/// An error a client may see, as the wire knows it: its code, the sentence
/// shown, the limit it hit and the status of a response it refuses whole.
pub(crate) trait ClientError {
    fn code(&self) -> ErrorCode;

    /// The sentence the client sees.
    fn message(&self) -> String;

    /// `extensions.limit`, for [`ErrorCode::LimitExceeded`].
    fn limit(&self) -> Option<Limit> {
        None
    }

    fn status(&self) -> StatusCode {
        self.code().status()
    }
}

/// The GraphQL error of a [`ClientError`].
pub(crate) fn server_error(error: &dyn ClientError) -> ServerError {
    let mut server_error = ServerError::new(error.message(), None);
    set_code(server_error.extensions.get_or_insert_with(Default::default), error.code(), error.limit());
    server_error
}

/// Writes `extensions.code` (and `extensions.limit`): the only place either
/// is written.
pub(crate) fn set_code(extensions: &mut ErrorExtensionValues, code: ErrorCode, limit: Option<Limit>) {
    extensions.set("code", code.as_str());
    if let Some(limit) = limit {
        extensions.set("limit", limit.as_str());
    }
}

/// The reference table of docs/errors.md.
pub fn reference_table() -> String {
    let mut table = String::from("| Code | HTTP status | Retryable | Meaning |\n| --- | --- | --- | --- |\n");
    for code in ErrorCode::ALL {
        let retryable = if code.retryable() { "yes" } else { "no" };
        table.push_str(&format!(
            "| `{}` | {} | {retryable} | {} |\n",
            code.as_str(),
            code.status().as_u16(),
            code.meaning()
        ));
    }
    table.push_str("\nThe limits a `LIMIT_EXCEEDED` error names in `extensions.limit`:\n\n");
    table.push_str("| Limit | What it bounds |\n| --- | --- |\n");
    for limit in Limit::ALL {
        table.push_str(&format!("| `{}` | {} |\n", limit.as_str(), limit.meaning()));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/errors.md");
    const TABLE_START: &str = "<!-- generated from ErrorCode::ALL: start -->\n";
    const TABLE_END: &str = "<!-- generated from ErrorCode::ALL: end -->";

    #[test]
    fn the_reference_table_is_what_the_codes_generate() {
        let text = std::fs::read_to_string(REFERENCE).unwrap();
        let (before, rest) = text.split_once(TABLE_START).expect("docs/errors.md holds the start marker");
        let (committed, after) = rest.split_once(TABLE_END).expect("docs/errors.md holds the end marker");
        let generated = reference_table();
        if committed != generated && std::env::var_os("UPDATE_ERROR_REFERENCE").is_some() {
            std::fs::write(REFERENCE, format!("{before}{TABLE_START}{generated}{TABLE_END}{after}")).unwrap();
            return;
        }
        assert!(
            committed == generated,
            "docs/errors.md's table of codes is out of date; regenerate it with:\n    \
             UPDATE_ERROR_REFERENCE=1 cargo test -p catalog-api --lib error_code"
        );
    }

    #[test]
    fn every_code_round_trips_through_the_wire() {
        for &code in ErrorCode::ALL {
            let name = code.as_str();
            assert!(name.len() >= 6 && name.bytes().all(|byte| byte.is_ascii_uppercase() || byte == b'_'), "{name}");
            assert_eq!(ErrorCode::from_wire(name), Some(code), "{name} is one code's name");
            let mut error = ServerError::new("message", None);
            set_code(error.extensions.get_or_insert_with(Default::default), code, None);
            assert_eq!(ErrorCode::of(&error), Some(code));
        }
        assert_eq!(ErrorCode::from_wire("NOT_A_CODE"), None);
    }

    /// The crate's sources, each with its name.
    fn sources() -> Vec<(String, String)> {
        fn walk(directory: &std::path::Path, files: &mut Vec<(String, String)>) {
            for entry in std::fs::read_dir(directory).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, files);
                } else if path.extension().is_some_and(|extension| extension == "rs") {
                    files.push((path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
        let mut files = Vec::new();
        walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
        files
    }

    /// A code can reach the wire only through [`set_code`], which takes an
    /// [`ErrorCode`]: no other file writes the `code` extension or spells a
    /// code's wire name.
    #[test]
    fn codes_reach_the_wire_only_through_error_code() {
        let mut offenders = Vec::new();
        for (path, text) in sources() {
            if path.ends_with("error_code.rs") {
                continue;
            }
            if text.contains(r#""code""#) {
                offenders.push(format!("{path} writes or reads \"code\" itself"));
            }
            for code in ErrorCode::ALL {
                if text.contains(&format!("\"{}\"", code.as_str())) {
                    offenders.push(format!("{path} spells {} as a string", code.as_str()));
                }
            }
        }
        assert!(offenders.is_empty(), "use ErrorCode and set_code:\n{}", offenders.join("\n"));
    }
}
