//! Checks on the raw query text that run before the GraphQL parser sees it.
//! async-graphql's parser recurses once per nested list or object value, so a
//! few kilobytes of `[[[[...` would overflow the stack and abort the process
//! whatever limits the schema sets; this scan is iterative and cheap.

/// Why a query was refused before parsing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the query is {size} bytes, over the limit of {limit}")]
    QueryTooLarge { size: usize, limit: usize },
    #[error("the query nests brackets, braces or parentheses {depth} deep, over the limit of {limit}")]
    NestingTooDeep { depth: usize, limit: usize },
}

impl Rejection {
    /// The name of the limit, for `extensions.limit`.
    pub fn limit_name(&self) -> &'static str {
        match self {
            Rejection::QueryTooLarge { .. } => "queryBytes",
            Rejection::NestingTooDeep { .. } => "nesting",
        }
    }
}

/// Checks size and lexical nesting, ignoring brackets inside strings, block
/// strings and comments.
pub fn check_query(query: &str, max_bytes: usize, max_nesting: usize) -> Result<(), Rejection> {
    if query.len() > max_bytes {
        return Err(Rejection::QueryTooLarge { size: query.len(), limit: max_bytes });
    }
    let bytes = query.as_bytes();
    let mut depth = 0usize;
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
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
                if depth > max_nesting {
                    return Err(Rejection::NestingTooDeep { depth, limit: max_nesting });
                }
            }
            b']' | b'}' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        index += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_normal_query_passes() {
        assert_eq!(
            check_query("{ entity(ref: \"a\") { name ... on Component { owner { name } } } }", 1000, 10),
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
        assert!(matches!(check_query(&query, 1 << 20, 40), Err(Rejection::NestingTooDeep { depth: 41, .. })));
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let brackets = "[".repeat(100);
        let query = format!("# {brackets}\n{{ validateEntity(yaml: \"{brackets}\\\"{brackets}\") {{ valid }} }}");
        assert_eq!(check_query(&query, 1 << 20, 5), Ok(()));
        let block = format!("{{ validateEntity(yaml: \"\"\"{brackets}\"\"\") {{ valid }} }}");
        assert_eq!(check_query(&block, 1 << 20, 5), Ok(()));
    }

    #[test]
    fn a_comment_ended_by_a_carriage_return_does_not_hide_brackets() {
        let query = format!(
            "{{ entities(filter: {{kind: #\r{}\"a\"{}}}) {{ totalCount }} }}",
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(matches!(check_query(&query, 1 << 20, 40), Err(Rejection::NestingTooDeep { .. })));
    }

    #[test]
    fn an_oversized_query_is_refused() {
        assert!(matches!(check_query(&"a".repeat(11), 10, 5), Err(Rejection::QueryTooLarge { size: 11, limit: 10 })));
    }
}
