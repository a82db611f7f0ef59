//! The rules an entity can break, each with a stable code. Its own module
//! because identifiers (`names.rs`, `entity_ref.rs`) report them as well as
//! validation does.

use std::fmt;

/// A rule an entity can break. The code is stable: clients and tests match on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    DocumentNotObject,
    UnknownRootKey,
    Required,
    WrongType,
    ApiVersionPattern,
    ApiVersionForKind,
    KindLength,
    KindPattern,
    NameLength,
    NamePattern,
    NamespaceLength,
    NamespacePattern,
    TagLength,
    TagPattern,
    KeyPrefixLength,
    KeyPrefixPattern,
    KeyNameLength,
    KeyNamePattern,
    LabelValueLength,
    LabelValuePattern,
    LinkUrl,
    ReferenceSyntax,
    ReferenceKindRequired,
    EnumValue,
}

impl Rule {
    /// The stable machine-readable code of the rule.
    pub fn code(self) -> &'static str {
        match self {
            Rule::DocumentNotObject => "document.object",
            Rule::UnknownRootKey => "root.known-keys",
            Rule::Required => "required",
            Rule::WrongType => "type",
            Rule::ApiVersionPattern => "apiVersion.pattern",
            Rule::ApiVersionForKind => "apiVersion.kind",
            Rule::KindLength => "kind.length",
            Rule::KindPattern => "kind.pattern",
            Rule::NameLength => "name.length",
            Rule::NamePattern => "name.pattern",
            Rule::NamespaceLength => "namespace.length",
            Rule::NamespacePattern => "namespace.pattern",
            Rule::TagLength => "tag.length",
            Rule::TagPattern => "tag.pattern",
            Rule::KeyPrefixLength => "key.prefix-length",
            Rule::KeyPrefixPattern => "key.prefix-pattern",
            Rule::KeyNameLength => "key.name-length",
            Rule::KeyNamePattern => "key.name-pattern",
            Rule::LabelValueLength => "label-value.length",
            Rule::LabelValuePattern => "label-value.pattern",
            Rule::LinkUrl => "link.url",
            Rule::ReferenceSyntax => "reference.syntax",
            Rule::ReferenceKindRequired => "reference.kind-required",
            Rule::EnumValue => "enum",
        }
    }

    /// The rule as a sentence a person can act on.
    pub fn describe(self) -> &'static str {
        match self {
            Rule::DocumentNotObject => "a document must be a mapping with apiVersion, kind, metadata and spec",
            Rule::UnknownRootKey => "only apiVersion, kind, metadata and spec are accepted at the top level",
            Rule::Required => "is required",
            Rule::WrongType => "has the wrong type",
            Rule::ApiVersionPattern => "must look like [prefix/]version, e.g. backstage.io/v1alpha1",
            Rule::ApiVersionForKind => "is not an apiVersion this kind accepts",
            Rule::KindLength => "must be 1-63 characters",
            Rule::KindPattern => "must match ^[a-zA-Z][a-zA-Z0-9]*$",
            Rule::NameLength => "must be 1-63 characters",
            Rule::NamePattern => "must match ^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$",
            Rule::NamespaceLength => "must be 1-63 characters",
            Rule::NamespacePattern => "must be a lower-case DNS label (^[a-z0-9]+(-[a-z0-9]+)*$)",
            Rule::TagLength => "must be 1-63 characters",
            Rule::TagPattern => "must match ^[a-z0-9:+#]+(-[a-z0-9:+#]+)*$",
            Rule::KeyPrefixLength => "prefix must be 1-253 characters",
            Rule::KeyPrefixPattern => "prefix must be a lower-case DNS subdomain",
            Rule::KeyNameLength => "name part must be 1-63 characters",
            Rule::KeyNamePattern => "name part must match ^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$",
            Rule::LabelValueLength => "must be at most 63 characters",
            Rule::LabelValuePattern => "must be empty or match ^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$",
            Rule::LinkUrl => "must be an absolute URL",
            Rule::ReferenceSyntax => "must be an entity reference [kind:][namespace/]name",
            Rule::ReferenceKindRequired => "must be kind-qualified, e.g. component:name or resource:name",
            Rule::EnumValue => "is not one of the accepted values",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
