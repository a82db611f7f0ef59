//! Checks on a request that run before async-graphql validates or executes
//! it. First on the raw text: async-graphql's parser recurses once per nested
//! list or object value, so a few kilobytes of `[[[[...` would overflow the
//! stack and abort the process whatever limits the schema sets; the text scan
//! is iterative and cheap, and also bounds the tokens the parser will see.
//! Then on the parsed document: aliases, fields and directives counted with
//! fragments expanded (memoised, so a chain of fragments that each spread the
//! next twice costs linear time here instead of exponential time in the
//! validator), and fragment cycles refused.

use std::collections::HashMap;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use axum::http::StatusCode;

use crate::config::GraphqlConfig;
use crate::error_code::{ClientError, ErrorCode, Limit};

/// Why a request was refused before validation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the query is {size} bytes, over the limit of {limit}")]
    QueryTooLarge { size: usize, limit: usize },
    #[error("the query nests brackets, braces or parentheses {depth} deep, over the limit of {limit}")]
    NestingTooDeep { depth: usize, limit: usize },
    #[error("the query holds more than {limit} tokens")]
    TooManyTokens { limit: usize },
    #[error("the query uses {count} aliases (fragments expanded), over the limit of {limit}")]
    TooManyAliases { count: u64, limit: usize },
    #[error("the query selects {count} fields (fragments expanded), over the limit of {limit}")]
    TooManyFields { count: u64, limit: usize },
    #[error("the query uses {count} directives (fragments expanded), over the limit of {limit}")]
    TooManyDirectives { count: u64, limit: usize },
    #[error("fragment {name} spreads itself, directly or through other fragments")]
    FragmentCycle { name: String },
}

impl Rejection {
    /// The name of the limit, for `extensions.limit` (`None` for a request
    /// that is invalid rather than too big).
    pub fn limit_name(&self) -> Option<Limit> {
        match self {
            Rejection::QueryTooLarge { .. } => Some(Limit::QueryBytes),
            Rejection::NestingTooDeep { .. } => Some(Limit::Nesting),
            Rejection::TooManyTokens { .. } => Some(Limit::Tokens),
            Rejection::TooManyAliases { .. } => Some(Limit::Aliases),
            Rejection::TooManyFields { .. } => Some(Limit::Fields),
            Rejection::TooManyDirectives { .. } => Some(Limit::Directives),
            Rejection::FragmentCycle { .. } => None,
        }
    }
}

impl ClientError for Rejection {
    fn code(&self) -> ErrorCode {
        match self {
            Rejection::FragmentCycle { .. } => ErrorCode::GraphqlValidationFailed,
            _ => ErrorCode::LimitExceeded,
        }
    }

    fn message(&self) -> String {
        self.to_string()
    }

    fn limit(&self) -> Option<Limit> {
        self.limit_name()
    }

    fn status(&self) -> StatusCode {
        match self {
            Rejection::QueryTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => self.code().status(),
        }
    }
}

/// The request limits, from the `graphql` section of the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_query_bytes: usize,
    pub max_nesting: usize,
    pub max_tokens: usize,
    pub max_aliases: usize,
    pub max_fields: usize,
    pub max_directives: usize,
}

impl From<&GraphqlConfig> for Limits {
    fn from(config: &GraphqlConfig) -> Self {
        Limits {
            max_query_bytes: config.max_query_bytes,
            max_nesting: config.max_nesting,
            max_tokens: config.max_tokens,
            max_aliases: config.max_aliases,
            max_fields: config.max_fields,
            max_directives: config.max_directives,
        }
    }
}

impl Limits {
    /// Checks size, lexical nesting and the token count, ignoring brackets
    /// inside strings, block strings and comments.
    pub fn check_text(&self, query: &str) -> Result<(), Rejection> {
        if query.len() > self.max_query_bytes {
            return Err(Rejection::QueryTooLarge { size: query.len(), limit: self.max_query_bytes });
        }
        let bytes = query.as_bytes();
        let mut depth = 0usize;
        let mut tokens = 0usize;
        let mut index = 0;
        while index < bytes.len() {
            let byte = bytes[index];
            // Whitespace, commas and comments are not tokens.
            let is_ignored = byte.is_ascii_whitespace() || byte == b',' || byte == b'#';
            if !is_ignored {
                tokens += 1;
                if tokens > self.max_tokens {
                    return Err(Rejection::TooManyTokens { limit: self.max_tokens });
                }
            }
            match byte {
                // GraphQL ends a comment at a line feed or a bare carriage return.
                b'#' => {
                    while index < bytes.len() && bytes[index] != b'\n' && bytes[index] != b'\r' {
                        index += 1;
                    }
                }
                b'"' if bytes[index..].starts_with(b"\"\"\"") => {
                    index += 3;
                    while index < bytes.len() && !bytes[index..].starts_with(b"\"\"\"") {
                        index += if bytes[index..].starts_with(b"\\\"\"\"") { 4 } else { 1 };
                    }
                    index += 2;
                }
                b'"' => {
                    index += 1;
                    while index < bytes.len() && bytes[index] != b'"' && bytes[index] != b'\n' {
                        index += if bytes[index] == b'\\' { 2 } else { 1 };
                    }
                }
                b'[' | b'{' | b'(' => {
                    depth += 1;
                    if depth > self.max_nesting {
                        return Err(Rejection::NestingTooDeep { depth, limit: self.max_nesting });
                    }
                }
                b']' | b'}' | b')' => depth = depth.saturating_sub(1),
                // A name or number (or `...`) is one token however long.
                byte if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'.' || byte == b'-' => {
                    while index + 1 < bytes.len() && is_word_byte(bytes[index + 1]) {
                        index += 1;
                    }
                }
                _ => {}
            }
            index += 1;
        }
        Ok(())
    }

    /// Counts aliases, fields and directives over every operation with its
    /// fragments expanded, and refuses fragment cycles.
    pub fn check_document(&self, document: &ExecutableDocument) -> Result<(), Rejection> {
        let mut counter = Counter { document, done: HashMap::new(), in_progress: Vec::new() };
        let mut total = Counts::default();
        for (_, operation) in document.operations.iter() {
            let operation = &operation.node;
            total = total.plus(counter.selection_set(&operation.selection_set.node)?);
            total.directives = total.directives.saturating_add(operation.directives.len() as u64);
        }
        if total.aliases > self.max_aliases as u64 {
            return Err(Rejection::TooManyAliases { count: total.aliases, limit: self.max_aliases });
        }
        if total.fields > self.max_fields as u64 {
            return Err(Rejection::TooManyFields { count: total.fields, limit: self.max_fields });
        }
        if total.directives > self.max_directives as u64 {
            return Err(Rejection::TooManyDirectives { count: total.directives, limit: self.max_directives });
        }
        Ok(())
    }
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'.' || byte == b'+' || byte == b'-'
}

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    aliases: u64,
    fields: u64,
    directives: u64,
}

impl Counts {
    fn plus(self, other: Counts) -> Counts {
        Counts {
            aliases: self.aliases.saturating_add(other.aliases),
            fields: self.fields.saturating_add(other.fields),
            directives: self.directives.saturating_add(other.directives),
        }
    }
}

/// Expands fragments once each: the counts of a fragment are memoised.
struct Counter<'a> {
    document: &'a ExecutableDocument,
    done: HashMap<&'a str, Counts>,
    in_progress: Vec<&'a str>,
}

impl<'a> Counter<'a> {
    fn selection_set(&mut self, set: &'a SelectionSet) -> Result<Counts, Rejection> {
        let mut counts = Counts::default();
        for item in &set.items {
            let item_counts = match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let own = Counts {
                        aliases: u64::from(field.alias.is_some()),
                        fields: 1,
                        directives: field.directives.len() as u64,
                    };
                    own.plus(self.selection_set(&field.selection_set.node)?)
                }
                Selection::InlineFragment(fragment) => {
                    let fragment = &fragment.node;
                    let own = Counts { directives: fragment.directives.len() as u64, ..Counts::default() };
                    own.plus(self.selection_set(&fragment.selection_set.node)?)
                }
                Selection::FragmentSpread(spread) => {
                    let spread = &spread.node;
                    let own = Counts { directives: spread.directives.len() as u64, ..Counts::default() };
                    own.plus(self.fragment(spread.fragment_name.node.as_str())?)
                }
            };
            counts = counts.plus(item_counts);
        }
        Ok(counts)
    }

    fn fragment(&mut self, name: &str) -> Result<Counts, Rejection> {
        // An unknown fragment counts nothing here; validation reports it.
        let Some((name, definition)) = self.document.fragments.get_key_value(name) else {
            return Ok(Counts::default());
        };
        let name = name.as_str();
        if let Some(counts) = self.done.get(name) {
            return Ok(*counts);
        }
        if self.in_progress.contains(&name) {
            return Err(Rejection::FragmentCycle { name: name.to_owned() });
        }
        self.in_progress.push(name);
        let definition = &definition.node;
        let own = Counts { directives: definition.directives.len() as u64, ..Counts::default() };
        let counts = own.plus(self.selection_set(&definition.selection_set.node)?);
        self.in_progress.pop();
        self.done.insert(name, counts);
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_limits(max_query_bytes: usize, max_nesting: usize) -> Limits {
        Limits { max_query_bytes, max_nesting, ..Limits::from(&GraphqlConfig::default()) }
    }

    fn check(query: &str) -> Result<(), Rejection> {
        let limits = Limits::from(&GraphqlConfig::default());
        limits.check_text(query)?;
        limits.check_document(&async_graphql::parser::parse_query(query).unwrap())
    }

    #[test]
    fn a_thousand_aliases_are_refused_whatever_they_select() {
        let aliases: String = (0..1000).map(|n| format!("a{n}: __typename ")).collect();
        let query = format!("{{ {aliases} }}");
        let limits =
            Limits { max_tokens: 100_000, max_query_bytes: 1 << 20, ..Limits::from(&GraphqlConfig::default()) };
        let rejected = limits.check_document(&async_graphql::parser::parse_query(&query).unwrap());
        assert!(matches!(rejected, Err(Rejection::TooManyAliases { count: 1000, .. })), "{rejected:?}");
        assert!(matches!(check(&query), Err(Rejection::TooManyTokens { .. })));
    }

    #[test]
    fn fragments_are_counted_expanded_in_linear_time() {
        // Each fragment spreads the next twice: 2^40 fields once expanded.
        let mut query = String::from("{ ...f0 }\n");
        for n in 0..40 {
            query.push_str(&format!("fragment f{n} on Query {{ ...f{next} ...f{next} }}\n", next = n + 1));
        }
        query.push_str("fragment f40 on Query { __typename }");
        let started = std::time::Instant::now();
        assert!(matches!(check(&query), Err(Rejection::TooManyFields { .. })));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn fragment_cycles_are_refused() {
        let query = "{ ...a } fragment a on Query { ...b } fragment b on Query { __typename ...a }";
        assert!(matches!(check(query), Err(Rejection::FragmentCycle { .. })));
    }

    #[test]
    fn directives_are_counted() {
        let directives = " @skip(if: false)".repeat(60);
        let query = format!("{{ __typename{directives} }}");
        assert!(matches!(check(&query), Err(Rejection::TooManyDirectives { count: 60, .. })));
    }

    #[test]
    fn tokens_are_counted_without_comments_strings_or_commas() {
        let limits = Limits { max_tokens: 8, ..Limits::from(&GraphqlConfig::default()) };
        assert_eq!(limits.check_text("{ a(x: \"long string with words\") } # many words in a comment, , ,"), Ok(()));
        assert_eq!(limits.check_text("{ a b c d e f g h }"), Err(Rejection::TooManyTokens { limit: 8 }));
    }

    #[test]
    fn a_normal_query_passes() {
        assert_eq!(
            text_limits(1000, 10).check_text("{ entity(ref: \"a\") { name ... on Component { owner { name } } } }"),
            Ok(())
        );
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let query = format!(
            "{{ entities(filter: {{ kind: {}\"a\"{} }}) {{ totalCount }} }}",
            "[".repeat(2000),
            "]".repeat(2000)
        );
        assert!(matches!(
            text_limits(1 << 20, 40).check_text(&query),
            Err(Rejection::NestingTooDeep { depth: 41, .. })
        ));
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let brackets = "[".repeat(100);
        let query = format!("# {brackets}\n{{ validateEntity(yaml: \"{brackets}\\\"{brackets}\") {{ valid }} }}");
        assert_eq!(text_limits(1 << 20, 5).check_text(&query), Ok(()));
        let block = format!("{{ validateEntity(yaml: \"\"\"{brackets}\"\"\") {{ valid }} }}");
        assert_eq!(text_limits(1 << 20, 5).check_text(&block), Ok(()));
    }

    #[test]
    fn a_comment_ended_by_a_carriage_return_does_not_hide_brackets() {
        let query = format!(
            "{{ entities(filter: {{kind: #\r{}\"a\"{}}}) {{ totalCount }} }}",
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(matches!(text_limits(1 << 20, 40).check_text(&query), Err(Rejection::NestingTooDeep { .. })));
    }

    #[test]
    fn an_oversized_query_is_refused() {
        assert!(matches!(
            text_limits(10, 5).check_text(&"a".repeat(11)),
            Err(Rejection::QueryTooLarge { size: 11, limit: 10 })
        ));
    }
}
