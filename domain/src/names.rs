//! Identifiers with Backstage's rules, as newtypes: a value of these types is
//! always valid, so code that holds one never re-checks it.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

use crate::rule::Rule;

static KIND_PATTERN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-zA-Z][a-zA-Z0-9]*$").expect("kind pattern"));
static NAME_PATTERN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").expect("name pattern"));
static NAMESPACE_PATTERN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+(?:-[a-z0-9]+)*$").expect("namespace pattern"));
static DNS_SUBDOMAIN_PATTERN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").expect("dns subdomain pattern")
});
static TAG_PATTERN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9:+#]+(-[a-z0-9:+#]+)*$").expect("tag pattern"));

/// The longest kind, name, namespace, tag or label value Backstage accepts.
pub const MAX_NAME_LENGTH: usize = 63;
/// The longest DNS-subdomain prefix of a label or annotation key.
pub const MAX_PREFIX_LENGTH: usize = 253;

/// Checks a kind: `^[a-zA-Z][a-zA-Z0-9]*$`, 1-63 characters.
pub fn check_kind(value: &str) -> Result<(), Rule> {
    check_length(value, MAX_NAME_LENGTH, Rule::KindLength)?;
    matches(&KIND_PATTERN, value, Rule::KindPattern)
}

/// Checks an entity name: `^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`, 1-63 characters.
pub fn check_name(value: &str) -> Result<(), Rule> {
    check_length(value, MAX_NAME_LENGTH, Rule::NameLength)?;
    matches(&NAME_PATTERN, value, Rule::NamePattern)
}

/// Checks a namespace: a lower-case DNS label, 1-63 characters.
pub fn check_namespace(value: &str) -> Result<(), Rule> {
    check_length(value, MAX_NAME_LENGTH, Rule::NamespaceLength)?;
    matches(&NAMESPACE_PATTERN, value, Rule::NamespacePattern)
}

/// Checks a tag: `^[a-z0-9:+#]+(-[a-z0-9:+#]+)*$`, 1-63 characters.
pub fn check_tag(value: &str) -> Result<(), Rule> {
    check_length(value, MAX_NAME_LENGTH, Rule::TagLength)?;
    matches(&TAG_PATTERN, value, Rule::TagPattern)
}

/// Checks a label or annotation key: `[prefix/]name`, the prefix a DNS subdomain
/// of up to 253 characters and the name by the entity-name rule.
pub fn check_key(value: &str) -> Result<(), Rule> {
    let (prefix, name) = match value.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, value),
    };
    if let Some(prefix) = prefix {
        check_length(prefix, MAX_PREFIX_LENGTH, Rule::KeyPrefixLength)?;
        matches(&DNS_SUBDOMAIN_PATTERN, prefix, Rule::KeyPrefixPattern)?;
    }
    check_length(name, MAX_NAME_LENGTH, Rule::KeyNameLength)?;
    matches(&NAME_PATTERN, name, Rule::KeyNamePattern)
}

/// Checks a label value: empty, or by the entity-name rule, up to 63 characters.
pub fn check_label_value(value: &str) -> Result<(), Rule> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > MAX_NAME_LENGTH {
        return Err(Rule::LabelValueLength);
    }
    matches(&NAME_PATTERN, value, Rule::LabelValuePattern)
}

/// Checks an apiVersion: `[prefix/]version`, the prefix a DNS subdomain and the
/// version by the kind rule (Backstage's `backstage.io/v1alpha1` shape).
pub fn check_api_version(value: &str) -> Result<(), Rule> {
    let (prefix, version) = match value.split_once('/') {
        Some((prefix, version)) => (Some(prefix), version),
        None => (None, value),
    };
    if let Some(prefix) = prefix
        && (prefix.len() > MAX_PREFIX_LENGTH || !DNS_SUBDOMAIN_PATTERN.is_match(prefix))
    {
        return Err(Rule::ApiVersionPattern);
    }
    if version.is_empty() || version.len() > MAX_NAME_LENGTH || !KIND_PATTERN.is_match(version) {
        return Err(Rule::ApiVersionPattern);
    }
    Ok(())
}

fn check_length(value: &str, max: usize, rule: Rule) -> Result<(), Rule> {
    if value.is_empty() || value.len() > max { Err(rule) } else { Ok(()) }
}

fn matches(pattern: &Regex, value: &str, rule: Rule) -> Result<(), Rule> {
    if pattern.is_match(value) { Ok(()) } else { Err(rule) }
}

macro_rules! checked_newtype {
    ($(#[$doc:meta])* $type:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $type(String);

        impl $type {
            /// Accepts the value if it follows the rule, naming the rule if not.
            pub fn parse(value: impl Into<String>) -> Result<Self, Rule> {
                let value = value.into();
                $check(&value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $type {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

checked_newtype!(
    /// An entity kind such as `Component`. Compared case-insensitively through [`crate::EntityRef`].
    Kind,
    check_kind
);
checked_newtype!(
    /// An entity name such as `payments-service`.
    EntityName,
    check_name
);
checked_newtype!(
    /// A namespace such as `default`: a lower-case DNS label.
    Namespace,
    check_namespace
);
checked_newtype!(
    /// A tag such as `java` or `c++`.
    Tag,
    check_tag
);
checked_newtype!(
    /// A label or annotation key such as `backstage.io/techdocs-ref`.
    MetadataKey,
    check_key
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::check;

    #[test]
    fn a_kind_starts_with_a_letter_and_holds_only_letters_and_digits() {
        check(
            |input| Kind::parse(input),
            &[
                ("Component", Ok(())),
                ("MyKind2", Ok(())),
                ("2Kind", Err(Rule::KindPattern)),
                ("My-Kind", Err(Rule::KindPattern)),
            ],
        );
    }

    #[test]
    fn a_kind_is_one_to_sixty_three_characters() {
        check(
            |input| Kind::parse(input),
            &[
                ("", Err(Rule::KindLength)),
                ("K".repeat(63).as_str(), Ok(())),
                ("K".repeat(64).as_str(), Err(Rule::KindLength)),
            ],
        );
    }

    #[test]
    fn a_name_may_hold_dashes_dots_and_underscores_inside_but_not_at_its_ends() {
        check(
            |input| EntityName::parse(input),
            &[
                ("a", Ok(())),
                ("Payments_Service.v2-x", Ok(())),
                ("-leading", Err(Rule::NamePattern)),
                ("trailing.", Err(Rule::NamePattern)),
                ("has space", Err(Rule::NamePattern)),
                ("slash/name", Err(Rule::NamePattern)),
            ],
        );
    }

    #[test]
    fn a_name_is_one_to_sixty_three_characters() {
        check(
            |input| EntityName::parse(input),
            &[
                ("", Err(Rule::NameLength)),
                ("n".repeat(63).as_str(), Ok(())),
                ("n".repeat(64).as_str(), Err(Rule::NameLength)),
            ],
        );
    }

    #[test]
    fn a_namespace_is_a_lower_case_dns_label() {
        check(
            |input| Namespace::parse(input),
            &[
                ("default", Ok(())),
                ("team-a1", Ok(())),
                ("Default", Err(Rule::NamespacePattern)),
                ("team_a", Err(Rule::NamespacePattern)),
                ("-x", Err(Rule::NamespacePattern)),
                ("x".repeat(64).as_str(), Err(Rule::NamespaceLength)),
            ],
        );
    }

    #[test]
    fn a_tag_is_lower_case_words_joined_by_single_dashes() {
        check(
            |input| Tag::parse(input),
            &[
                ("java", Ok(())),
                ("c++", Ok(())),
                ("c#", Ok(())),
                ("tier:1", Ok(())),
                ("data-pipeline", Ok(())),
                ("Java", Err(Rule::TagPattern)),
                ("double--dash", Err(Rule::TagPattern)),
                ("under_score", Err(Rule::TagPattern)),
                ("t".repeat(64).as_str(), Err(Rule::TagLength)),
            ],
        );
    }

    #[test]
    fn a_key_may_carry_a_dns_subdomain_prefix() {
        check(
            |input| MetadataKey::parse(input),
            &[
                ("backstage.io/techdocs-ref", Ok(())),
                ("simple", Ok(())),
                ("Bad_Prefix/name", Err(Rule::KeyPrefixPattern)),
                (format!("{}/name", "a".repeat(254)).as_str(), Err(Rule::KeyPrefixLength)),
                ("example.com/", Err(Rule::KeyNameLength)),
                ("example.com/-bad", Err(Rule::KeyNamePattern)),
            ],
        );
    }

    #[test]
    fn a_label_value_is_empty_or_follows_the_name_rule() {
        check(
            check_label_value,
            &[
                ("", Ok(())),
                ("production", Ok(())),
                ("has space", Err(Rule::LabelValuePattern)),
                ("v".repeat(64).as_str(), Err(Rule::LabelValueLength)),
            ],
        );
    }

    #[test]
    fn an_api_version_is_an_optional_prefix_and_a_version() {
        check(
            check_api_version,
            &[
                ("backstage.io/v1alpha1", Ok(())),
                ("scaffolder.backstage.io/v1beta3", Ok(())),
                ("v1", Ok(())),
                ("backstage.io/", Err(Rule::ApiVersionPattern)),
                ("Bad_/v1", Err(Rule::ApiVersionPattern)),
            ],
        );
    }
}
