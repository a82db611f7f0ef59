//! async-graphql's own errors (parse, recursion and directive limits,
//! validation, the depth and complexity limits, argument coercion) given
//! their [`ErrorCode`] by the rule that raised them, never by their wording.
//!
//! async-graphql's errors carry no type or code, so each is decided by where
//! it comes from: the phase that raised it (`operations.rs` calls in here
//! from its gate's parse and validation hooks, and after execution), the rule checked again here when one phase has several, and, in
//! execution, whether it is located at an argument (coercing an argument is
//! the only thing that fails there before a resolver runs). The depth and
//! complexity limits are enforced here, on the figures validation computes,
//! so that their errors are ours from the start.

use std::collections::HashSet;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Pos, Positioned, ServerError, ValidationResult};

use crate::error_code::{ErrorCode, Limit, set_code};

/// How deep selection sets may nest, fragments expanded, before validation
/// (async-graphql's `limit_recursive_depth`, which bounds its own recursion).
pub(crate) const MAX_RECURSIVE_DEPTH: usize = 64;

/// How many directives one field may carry (async-graphql's `limit_directives`).
pub(crate) const MAX_FIELD_DIRECTIVES: usize = 50;

/// The limits checked on what validation computes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ValidationLimits {
    /// `graphql.max_depth`.
    pub max_depth: usize,
    /// `graphql.max_complexity`.
    pub max_complexity: usize,
}

impl ValidationLimits {
    /// Validation's outcome with the limits applied: the complexity first,
    /// then the depth, as async-graphql checked them. A document that does
    /// not validate reports its validation errors.
    pub(crate) fn check(
        self,
        validated: Result<ValidationResult, Vec<ServerError>>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let figures = validated.map_err(|mut errors| {
            errors.iter_mut().for_each(|error| code_if_none(error, ErrorCode::GraphqlValidationFailed, None));
            errors
        })?;
        if figures.complexity > self.max_complexity {
            return Err(vec![limit_error("Query is too complex.", Limit::Complexity)]);
        }
        if figures.depth > self.max_depth {
            return Err(vec![limit_error("Query is nested too deep.", Limit::Depth)]);
        }
        Ok(figures)
    }
}

fn limit_error(message: &str, limit: Limit) -> ServerError {
    let mut error = ServerError::new(message, None);
    set_code(error.extensions.get_or_insert_with(Default::default), ErrorCode::LimitExceeded, Some(limit));
    error
}

fn code_if_none(error: &mut ServerError, code: ErrorCode, limit: Option<Limit>) {
    if ErrorCode::of(error).is_none() {
        set_code(error.extensions.get_or_insert_with(Default::default), code, limit);
    }
}

/// Codes an error of the parse phase. The phase parses the query when it
/// came unparsed, then checks the recursion depth and each field's
/// directives; the text is parsed again here (errors are rare) to tell
/// which rule failed.
pub(crate) fn code_parse_error(error: &mut ServerError, query: &str) {
    let (code, limit) = match async_graphql::parser::parse_query(query) {
        // Over the WebSocket, the only path that leaves parsing to
        // async-graphql: answered as a validation failure, as it always was.
        Err(_) => (ErrorCode::GraphqlValidationFailed, None),
        Ok(document) if recursion_too_deep(&document) => (ErrorCode::LimitExceeded, Some(Limit::Depth)),
        Ok(document) if field_directives_over_limit(&document) => (ErrorCode::LimitExceeded, Some(Limit::Directives)),
        Ok(_) => (ErrorCode::GraphqlValidationFailed, None),
    };
    code_if_none(error, code, limit);
}

/// async-graphql's recursion check: selection sets (fields', fragments' and
/// spreads') nesting deeper than [`MAX_RECURSIVE_DEPTH`].
fn recursion_too_deep(document: &ExecutableDocument) -> bool {
    fn too_deep(document: &ExecutableDocument, set: &SelectionSet, depth: usize) -> bool {
        if depth > MAX_RECURSIVE_DEPTH {
            return true;
        }
        set.items.iter().any(|item| match &item.node {
            Selection::Field(field) => {
                let inner = &field.node.selection_set.node;
                !inner.items.is_empty() && too_deep(document, inner, depth + 1)
            }
            Selection::FragmentSpread(spread) => document
                .fragments
                .get(&spread.node.fragment_name.node)
                .is_some_and(|fragment| too_deep(document, &fragment.node.selection_set.node, depth + 1)),
            Selection::InlineFragment(fragment) => too_deep(document, &fragment.node.selection_set.node, depth + 1),
        })
    }
    document.operations.iter().any(|(_, operation)| too_deep(document, &operation.node.selection_set.node, 0))
}

/// async-graphql's directive check: a field with more than
/// [`MAX_FIELD_DIRECTIVES`] directives.
fn field_directives_over_limit(document: &ExecutableDocument) -> bool {
    fn over(set: &SelectionSet) -> bool {
        set.items.iter().any(|item| match &item.node {
            Selection::Field(field) => {
                field.node.directives.len() > MAX_FIELD_DIRECTIVES || over(&field.node.selection_set.node)
            }
            Selection::FragmentSpread(_) => false,
            Selection::InlineFragment(fragment) => over(&fragment.node.selection_set.node),
        })
    }
    document.operations.iter().any(|(_, operation)| over(&operation.node.selection_set.node))
        || document.fragments.values().any(|fragment| over(&fragment.node.selection_set.node))
}

/// Where a document's argument values are: async-graphql locates an
/// argument it cannot coerce there, and a resolver's own error at its field.
#[derive(Debug, Default)]
pub(crate) struct ArgumentPositions(HashSet<Pos>);

impl ArgumentPositions {
    pub(crate) fn of(document: &ExecutableDocument) -> Self {
        fn collect(set: &SelectionSet, positions: &mut HashSet<Pos>) {
            for item in &set.items {
                match &item.node {
                    Selection::Field(field) => {
                        positions.extend(field.node.arguments.iter().map(|(_, value): &(_, Positioned<_>)| value.pos));
                        collect(&field.node.selection_set.node, positions);
                    }
                    Selection::FragmentSpread(_) => {}
                    Selection::InlineFragment(fragment) => collect(&fragment.node.selection_set.node, positions),
                }
            }
        }
        let mut positions = HashSet::new();
        for (_, operation) in document.operations.iter() {
            collect(&operation.node.selection_set.node, &mut positions);
        }
        for fragment in document.fragments.values() {
            collect(&fragment.node.selection_set.node, &mut positions);
        }
        Self(positions)
    }

    /// Codes the errors of execution that came from coercing an argument
    /// (a value its type's parser or validator refused: the client's
    /// mistake). The others without a code are left to the HTTP layer,
    /// which masks them as internal.
    pub(crate) fn code_argument_errors(&self, errors: &mut [ServerError]) {
        for error in errors {
            if error.locations.first().is_some_and(|pos| self.0.contains(pos)) {
                code_if_none(error, ErrorCode::BadUserInput, None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(query: &str) -> ExecutableDocument {
        async_graphql::parser::parse_query(query).unwrap()
    }

    /// Each fragment selects a field and spreads the next: two levels each
    /// (the parser's own recursion limit refuses deep nesting written out).
    fn fragment_chain(n_fragments: usize) -> String {
        let mut query = String::from("{ ...f0 }\n");
        for n in 0..n_fragments {
            query.push_str(&format!("fragment f{n} on Q {{ a {{ ...f{next} }} }}\n", next = n + 1));
        }
        query.push_str(&format!("fragment f{n_fragments} on Q {{ a }}"));
        query
    }

    #[test]
    fn a_selection_nested_past_the_recursion_limit_is_a_depth_limit() {
        assert!(!recursion_too_deep(&document(&fragment_chain(MAX_RECURSIVE_DEPTH / 2 - 1))));
        let deep = fragment_chain(MAX_RECURSIVE_DEPTH / 2 + 1);
        assert!(recursion_too_deep(&document(&deep)));
        let mut error = ServerError::new("whatever async-graphql says", None);
        code_parse_error(&mut error, &deep);
        assert_eq!(ErrorCode::of(&error), Some(ErrorCode::LimitExceeded));
    }

    #[test]
    fn too_many_directives_on_one_field_is_a_directive_limit() {
        let query = format!("{{ a{} }}", " @skip(if: false)".repeat(MAX_FIELD_DIRECTIVES + 1));
        let mut error = ServerError::new("whatever async-graphql says", None);
        code_parse_error(&mut error, &query);
        assert_eq!(ErrorCode::of(&error), Some(ErrorCode::LimitExceeded));
        let limit = error.extensions.as_ref().and_then(|extensions| extensions.get("limit")).cloned();
        assert_eq!(limit, Some(async_graphql::Value::from("directives")));
    }

    #[test]
    fn text_that_does_not_parse_is_a_validation_failure_over_the_websocket() {
        let mut error = ServerError::new("whatever async-graphql says", None);
        code_parse_error(&mut error, "{ a(");
        assert_eq!(ErrorCode::of(&error), Some(ErrorCode::GraphqlValidationFailed));
    }

    #[test]
    fn limits_apply_to_what_validation_computes_complexity_first() {
        let limits = ValidationLimits { max_depth: 3, max_complexity: 10 };
        let figures = |complexity, depth| Ok(ValidationResult { cache_control: Default::default(), complexity, depth });
        let code_and_message = |result: Result<ValidationResult, Vec<ServerError>>| {
            let errors = result.unwrap_err();
            (ErrorCode::of(&errors[0]), errors[0].message.clone())
        };
        assert!(limits.check(figures(10, 3)).is_ok());
        assert_eq!(
            code_and_message(limits.check(figures(11, 4))),
            (Some(ErrorCode::LimitExceeded), "Query is too complex.".to_owned())
        );
        assert_eq!(
            code_and_message(limits.check(figures(10, 4))),
            (Some(ErrorCode::LimitExceeded), "Query is nested too deep.".to_owned())
        );
        let invalid = Err(vec![ServerError::new("Unknown field", None)]);
        assert_eq!(code_and_message(limits.check(invalid)).0, Some(ErrorCode::GraphqlValidationFailed));
    }

    #[test]
    fn an_error_at_an_argument_is_bad_input_and_one_at_a_field_is_not() {
        let query = "{ entities(first: 5000000000) { totalCount } }";
        let positions = ArgumentPositions::of(&document(query));
        let at_argument = ServerError::new("x", Some(Pos { line: 1, column: 19 }));
        let at_field = ServerError::new("x", Some(Pos { line: 1, column: 3 }));
        let mut errors = vec![at_argument, at_field];
        positions.code_argument_errors(&mut errors);
        assert_eq!(ErrorCode::of(&errors[0]), Some(ErrorCode::BadUserInput));
        assert_eq!(ErrorCode::of(&errors[1]), None);
    }
}
