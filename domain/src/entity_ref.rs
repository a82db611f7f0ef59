//! Entity references: `[kind:][namespace/]name`, with defaults taken from the
//! context of the field that holds them, and one canonical lower-case form.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use crate::names;
use crate::rule::Rule;

/// The namespace of an entity that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The longest canonical text of a valid reference: three parts of at most
/// 63 characters and two separators.
const MAX_REF_LENGTH: usize = 3 * names::MAX_NAME_LENGTH + 2;

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
    #[error("the reference is not in the canonical form kind:namespace/name")]
    NotCanonical,
}

fn describe(rule: Rule) -> &'static str {
    rule.describe()
}

/// A fully qualified reference to an entity. Identity is case-insensitive: the
/// reference holds its canonical form `kind:namespace/name` in lower case
/// ([`EntityRef::as_str`], what [`EntityRef::to_string`] copies), and the parts
/// are slices of it.
///
/// The text is shared: a clone costs a reference count, not three strings, so
/// walks, loaders and maps keyed by ref pass refs around without allocating.
/// Refs order by kind, then namespace, then name (not as their text would:
/// `:` and `/` sort between characters a part may hold).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EntityRef {
    text: Arc<str>,
    /// Where the kind ends: the offset of the `:`.
    colon: u32,
    /// Where the namespace ends: the offset of the `/`.
    slash: u32,
}

impl EntityRef {
    /// Builds a reference from parts that have already been validated.
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        let parts = [kind, ":", namespace, "/", name];
        let len: usize = parts.iter().map(|part| part.len()).sum();
        // Joined on the stack when it fits (a valid ref always does), so the
        // shared text is the one allocation.
        let mut buffer = [0u8; MAX_REF_LENGTH];
        let text: Arc<str> = match buffer.get_mut(..len) {
            Some(joined) => {
                let mut at = 0;
                for part in parts {
                    joined[at..at + part.len()].copy_from_slice(part.as_bytes());
                    at += part.len();
                }
                joined.make_ascii_lowercase();
                Arc::from(std::str::from_utf8(joined).expect("joined from whole strings"))
            }
            None => Arc::from(parts.concat().to_ascii_lowercase()),
        };
        Self::from_parts(text, kind.len(), kind.len() + 1 + namespace.len())
    }

    fn from_parts(text: Arc<str>, colon: usize, slash: usize) -> Self {
        let offset = |at: usize| u32::try_from(at).expect("a reference is shorter than 4 GiB");
        Self { colon: offset(colon), slash: offset(slash), text }
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

    /// A reference from the canonical text the catalog itself wrote (its
    /// database's ref columns), without checking each part's rule again:
    /// that text was a parsed `EntityRef` once. Text without the form
    /// `kind:namespace/name` is refused; text from anywhere else (a user, a
    /// provider, a file) goes through [`EntityRef::parse`].
    pub fn from_stored(text: &str) -> Result<Self, RefError> {
        let colon = text.find(':').ok_or(RefError::NotCanonical)?;
        let slash = text[colon + 1..].find('/').map(|at| colon + 1 + at).ok_or(RefError::NotCanonical)?;
        if colon == 0 || slash == colon + 1 || slash + 1 == text.len() {
            return Err(RefError::NotCanonical);
        }
        debug_assert!(
            Self::parse(text).is_ok_and(|parsed| parsed.as_str() == text),
            "stored text {text:?} is not a canonical reference"
        );
        // Lower-cased all the same: identity is the lower-case text, so
        // another case must not make another ref.
        if text.bytes().any(|byte| byte.is_ascii_uppercase()) {
            return Ok(Self::new(&text[..colon], &text[colon + 1..slash], &text[slash + 1..]));
        }
        Ok(Self::from_parts(Arc::from(text), colon, slash))
    }

    /// The canonical form, `kind:namespace/name` in lower case.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn kind(&self) -> &str {
        &self.text[..self.colon as usize]
    }

    pub fn namespace(&self) -> &str {
        &self.text[self.colon as usize + 1..self.slash as usize]
    }

    pub fn name(&self) -> &str {
        &self.text[self.slash as usize + 1..]
    }

    fn parts(&self) -> (&str, &str, &str) {
        (self.kind(), self.namespace(), self.name())
    }
}

impl Ord for EntityRef {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts().cmp(&other.parts())
    }
}

impl PartialOrd for EntityRef {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityRef")
            .field("kind", &self.kind())
            .field("namespace", &self.namespace())
            .field("name", &self.name())
            .finish()
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
        assert_eq!(entity_ref.as_str(), "component:default/checkout-service");
        assert_eq!(entity_ref, EntityRef::parse("component:default/checkout-service").unwrap());
    }

    #[test]
    fn stored_canonical_text_reads_back_as_the_ref_that_wrote_it() {
        for text in ["component:default/checkout", "Group:Payments/Team-A", "resource:ns-1/db.primary_2"] {
            let parsed = EntityRef::parse(text).unwrap();
            let stored = EntityRef::from_stored(parsed.as_str()).unwrap();
            assert_eq!(stored, parsed);
            assert_eq!(stored.parts(), parsed.parts());
            assert_eq!(stored.to_string(), parsed.to_string());
        }
    }

    #[test]
    fn parts_are_kept_apart_whatever_their_length() {
        let long = "N".repeat(300);
        for name in ["Checkout", long.as_str()] {
            let entity_ref = EntityRef::new("Component", "Default", name);
            assert_eq!(entity_ref.parts(), ("component", "default", name.to_ascii_lowercase().as_str()));
            assert_eq!(entity_ref.as_str(), format!("component:default/{}", name.to_ascii_lowercase()));
        }
    }

    #[test]
    fn stored_text_without_three_parts_is_refused() {
        check(
            EntityRef::from_stored,
            &[
                ("", Err(RefError::NotCanonical)),
                ("component", Err(RefError::NotCanonical)),
                ("component:checkout", Err(RefError::NotCanonical)),
                (":default/checkout", Err(RefError::NotCanonical)),
                ("component:/checkout", Err(RefError::NotCanonical)),
                ("component:default/", Err(RefError::NotCanonical)),
                ("component:default/checkout", Ok(())),
            ],
        );
    }

    #[test]
    fn refs_order_by_kind_then_namespace_then_name_not_by_their_text() {
        // ':' and '/' sort after digits and '-', so the text would put these
        // pairs the other way round.
        let pairs = [("a:default/x", "a1:default/x"), ("component:ab/x", "component:ab-c/x")];
        for (lower, higher) in pairs {
            let (lower, higher) = (EntityRef::parse(lower).unwrap(), EntityRef::parse(higher).unwrap());
            assert!(lower < higher, "{lower} sorts before {higher}");
            assert!(lower.as_str() > higher.as_str());
        }
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
