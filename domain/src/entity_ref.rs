//! Entity references: `[kind:][namespace/]name`, with defaults taken from the
//! context of the field that holds them, and one canonical lower-case form.

use std::fmt;

use crate::names;
use crate::rule::Rule;

/// The namespace of an entity that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Why a string is not an entity reference.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("the reference is empty")]
    Empty,
    #[error("the reference has no kind and this field has no default kind")]
    KindRequired,
    #[error("kind {0}")]
    Kind(&'static str),
    #[error("namespace {0}")]
    Namespace(&'static str),
    #[error("name {0}")]
    Name(&'static str),
}

fn describe(rule: Rule) -> &'static str {
    rule.describe()
}

/// A fully qualified reference to an entity. Identity is case-insensitive: the
/// parts are kept lower-case, and [`EntityRef::to_string`] is the canonical form
/// `kind:namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityRef {
    kind: String,
    namespace: String,
    name: String,
}

impl EntityRef {
    /// Builds a reference from parts that have already been validated.
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.to_ascii_lowercase(),
            namespace: namespace.to_ascii_lowercase(),
            name: name.to_ascii_lowercase(),
        }
    }

    /// Parses a fully qualified or partial reference. The kind is split at the
    /// first `:`, the namespace at the first `/` after it; missing parts take
    /// `default_kind` and `default_namespace`.
    pub fn parse_with_defaults(
        text: &str,
        default_kind: Option<&str>,
        default_namespace: &str,
    ) -> Result<Self, RefError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(RefError::Empty);
        }
        let (kind, rest) = match text.split_once(':') {
            Some((kind, rest)) => (Some(kind), rest),
            None => (None, text),
        };
        let (namespace, name) = match rest.split_once('/') {
            Some((namespace, name)) => (Some(namespace), name),
            None => (None, rest),
        };
        let kind = kind.or(default_kind).ok_or(RefError::KindRequired)?;
        names::check_kind(kind).map_err(|rule| RefError::Kind(describe(rule)))?;
        let namespace = namespace.unwrap_or(default_namespace);
        // References are case-insensitive, so a namespace written in capitals still names the lower-case one.
        names::check_namespace(&namespace.to_ascii_lowercase()).map_err(|rule| RefError::Namespace(describe(rule)))?;
        names::check_name(name).map_err(|rule| RefError::Name(describe(rule)))?;
        Ok(Self::new(kind, namespace, name))
    }

    /// Parses a reference that names its kind, defaulting only the namespace.
    pub fn parse(text: &str) -> Result<Self, RefError> {
        Self::parse_with_defaults(text, None, DEFAULT_NAMESPACE)
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.kind, self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::check;

    #[test]
    fn a_full_reference_parses_into_its_three_parts() {
        let entity_ref = EntityRef::parse("component:payments/checkout").unwrap();
        assert_eq!(entity_ref.kind(), "component");
        assert_eq!(entity_ref.namespace(), "payments");
        assert_eq!(entity_ref.name(), "checkout");
    }

    #[test]
    fn the_canonical_form_is_lower_case_kind_namespace_and_name() {
        let entity_ref = EntityRef::parse("Component:Default/Checkout-Service").unwrap();
        assert_eq!(entity_ref.to_string(), "component:default/checkout-service");
        assert_eq!(entity_ref, EntityRef::parse("component:default/checkout-service").unwrap());
    }

    #[test]
    fn a_missing_kind_takes_the_fields_default() {
        let owner = EntityRef::parse_with_defaults("team-a", Some("Group"), "default").unwrap();
        assert_eq!(owner.to_string(), "group:default/team-a");
    }

    #[test]
    fn a_missing_namespace_takes_the_referring_entitys_namespace() {
        let owner = EntityRef::parse_with_defaults("team-a", Some("Group"), "payments").unwrap();
        assert_eq!(owner.to_string(), "group:payments/team-a");
        let explicit = EntityRef::parse_with_defaults("ops/team-b", Some("Group"), "payments").unwrap();
        assert_eq!(explicit.to_string(), "group:ops/team-b");
    }

    #[test]
    fn a_field_without_a_default_kind_needs_a_qualified_reference() {
        check(
            |input| EntityRef::parse_with_defaults(input, None, "default"),
            &[("database", Err(RefError::KindRequired)), ("resource:database", Ok(()))],
        );
    }

    #[test]
    fn the_kind_is_split_at_the_first_colon_and_the_namespace_at_the_first_slash() {
        // A second colon or slash lands in the name, which then breaks the name rule.
        let name_pattern = Err(RefError::Name(Rule::NamePattern.describe()));
        check(EntityRef::parse, &[("component:default/a:b", name_pattern.clone()), ("component:a/b/c", name_pattern)]);
    }

    #[test]
    fn each_part_must_follow_its_rule() {
        check(
            EntityRef::parse,
            &[
                ("", Err(RefError::Empty)),
                ("compo-nent:x", Err(RefError::Kind(Rule::KindPattern.describe()))),
                ("component:bad_ns/x", Err(RefError::Namespace(Rule::NamespacePattern.describe()))),
                ("component:-x", Err(RefError::Name(Rule::NamePattern.describe()))),
            ],
        );
    }
}
