//! What each known kind's spec holds: one table per kind that drives both
//! validation and relation derivation, so the two can never disagree.

use crate::relation::RelationType;

/// The shape a spec field must have.
#[derive(Clone, Copy, Debug)]
pub enum FieldShape {
    Text,
    OneOf(&'static [&'static str]),
    TextList,
    Object,
    ObjectList,
    ObjectOrList,
    /// An entity reference with the kind it defaults to (`None`: must be kind-qualified).
    Reference(Option<&'static str>),
    ReferenceList(Option<&'static str>),
}

/// One field of a kind's spec.
#[derive(Clone, Copy, Debug)]
pub struct SpecField {
    pub name: &'static str,
    pub required: bool,
    pub shape: FieldShape,
    /// The relation the field states, from this entity to the referenced one.
    pub relation: Option<RelationType>,
}

/// The rules of one kind.
#[derive(Debug)]
pub struct KindSpec {
    pub kind: &'static str,
    pub api_versions: &'static [&'static str],
    pub fields: &'static [SpecField],
}

const CORE_API_VERSIONS: &[&str] = &["backstage.io/v1alpha1", "backstage.io/v1beta1"];
const TEMPLATE_API_VERSIONS: &[&str] = &["scaffolder.backstage.io/v1beta3"];

const fn field(name: &'static str, required: bool, shape: FieldShape) -> SpecField {
    SpecField { name, required, shape, relation: None }
}

const fn reference(name: &'static str, required: bool, shape: FieldShape, relation: RelationType) -> SpecField {
    SpecField { name, required, shape, relation: Some(relation) }
}

use FieldShape::{Object, ObjectList, ObjectOrList, OneOf, Reference, ReferenceList, Text, TextList};
use RelationType::{
    ChildOf, ConsumesApi, DependencyOf, DependsOn, HasMember, MemberOf, OwnedBy, ParentOf, PartOf, ProvidesApi,
};

static KIND_SPECS: &[KindSpec] = &[
    KindSpec {
        kind: "Component",
        api_versions: CORE_API_VERSIONS,
        fields: &[
            field("type", true, Text),
            field("lifecycle", true, Text),
            reference("owner", true, Reference(Some("Group")), OwnedBy),
            reference("system", false, Reference(Some("System")), PartOf),
            reference("subcomponentOf", false, Reference(Some("Component")), PartOf),
            reference("providesApis", false, ReferenceList(Some("API")), ProvidesApi),
            reference("consumesApis", false, ReferenceList(Some("API")), ConsumesApi),
            reference("dependsOn", false, ReferenceList(None), DependsOn),
            reference("dependencyOf", false, ReferenceList(None), DependencyOf),
        ],
    },
    KindSpec {
        kind: "API",
        api_versions: CORE_API_VERSIONS,
        fields: &[
            field("type", true, Text),
            field("lifecycle", true, Text),
            reference("owner", true, Reference(Some("Group")), OwnedBy),
            field("definition", true, Text),
            reference("system", false, Reference(Some("System")), PartOf),
        ],
    },
    KindSpec {
        kind: "Resource",
        api_versions: CORE_API_VERSIONS,
        fields: &[
            field("type", true, Text),
            reference("owner", true, Reference(Some("Group")), OwnedBy),
            reference("system", false, Reference(Some("System")), PartOf),
            reference("dependsOn", false, ReferenceList(None), DependsOn),
            reference("dependencyOf", false, ReferenceList(None), DependencyOf),
        ],
    },
    KindSpec {
        kind: "System",
        api_versions: CORE_API_VERSIONS,
        fields: &[
            reference("owner", true, Reference(Some("Group")), OwnedBy),
            reference("domain", false, Reference(Some("Domain")), PartOf),
            field("type", false, Text),
        ],
    },
    KindSpec {
        kind: "Domain",
        api_versions: CORE_API_VERSIONS,
        fields: &[
            reference("owner", true, Reference(Some("Group")), OwnedBy),
            reference("subdomainOf", false, Reference(Some("Domain")), PartOf),
            field("type", false, Text),
        ],
    },
    KindSpec {
        kind: "Group",
        api_versions: CORE_API_VERSIONS,
        fields: &[
            field("type", true, Text),
            reference("children", true, ReferenceList(Some("Group")), ParentOf),
            reference("parent", false, Reference(Some("Group")), ChildOf),
            reference("members", false, ReferenceList(Some("User")), HasMember),
            field("profile", false, Object),
        ],
    },
    KindSpec {
        kind: "User",
        api_versions: CORE_API_VERSIONS,
        fields: &[reference("memberOf", true, ReferenceList(Some("Group")), MemberOf), field("profile", false, Object)],
    },
    KindSpec {
        kind: "Location",
        api_versions: CORE_API_VERSIONS,
        fields: &[
            field("type", false, Text),
            field("target", false, Text),
            field("targets", false, TextList),
            field("presence", false, OneOf(&["required", "optional"])),
        ],
    },
    KindSpec {
        kind: "Template",
        api_versions: TEMPLATE_API_VERSIONS,
        fields: &[
            field("type", true, Text),
            field("steps", true, ObjectList),
            reference("owner", false, Reference(Some("Group")), OwnedBy),
            field("parameters", false, ObjectOrList),
            field("output", false, Object),
        ],
    },
];

/// The rules of a known kind, matched case-insensitively; `None` for other kinds,
/// which pass through with envelope validation only.
pub fn kind_spec(kind: &str) -> Option<&'static KindSpec> {
    KIND_SPECS.iter().find(|spec| spec.kind.eq_ignore_ascii_case(kind))
}

/// Every known kind, in the canonical spelling.
pub fn known_kinds() -> impl Iterator<Item = &'static str> {
    KIND_SPECS.iter().map(|spec| spec.kind)
}
