//! What each known kind's spec holds: one table, with one row per spec field,
//! that validation, relation derivation, the typed views (`typed_spec.rs`)
//! and the store's typed columns all read, so they can never disagree.

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

/// The table: per known kind, its API versions and spec fields, each field
/// with its name on the wire, its name in the kind's typed view
/// (`typed_spec.rs`), whether it is required, its shape (for a reference,
/// the kind a partial ref defaults to) and the relation it states.
///
/// A macro rather than a value, so that every module that derives something
/// from the table reads the same rows: `kind_table!(generator)` hands them to
/// `generator!`. This module builds [`KindSpec`]s from them (validation and
/// relation derivation read those); `typed_spec.rs` builds the typed views.
macro_rules! kind_table {
    ($generator:ident) => {
        $generator! {
            "Component" Component(ComponentSpec) CORE_API_VERSIONS {
                "type" component_type: required Text;
                "lifecycle" lifecycle: required Text;
                "owner" owner: required Reference(Some("Group")) => OwnedBy;
                "system" system: optional Reference(Some("System")) => PartOf;
                "subcomponentOf" subcomponent_of: optional Reference(Some("Component")) => PartOf;
                "providesApis" provides_apis: optional ReferenceList(Some("API")) => ProvidesApi;
                "consumesApis" consumes_apis: optional ReferenceList(Some("API")) => ConsumesApi;
                "dependsOn" depends_on: optional ReferenceList(None) => DependsOn;
                "dependencyOf" dependency_of: optional ReferenceList(None) => DependencyOf;
            }
            "API" Api(ApiSpec) CORE_API_VERSIONS {
                "type" api_type: required Text;
                "lifecycle" lifecycle: required Text;
                "owner" owner: required Reference(Some("Group")) => OwnedBy;
                "definition" definition: required Text;
                "system" system: optional Reference(Some("System")) => PartOf;
            }
            "Resource" Resource(ResourceSpec) CORE_API_VERSIONS {
                "type" resource_type: required Text;
                "owner" owner: required Reference(Some("Group")) => OwnedBy;
                "system" system: optional Reference(Some("System")) => PartOf;
                "dependsOn" depends_on: optional ReferenceList(None) => DependsOn;
                "dependencyOf" dependency_of: optional ReferenceList(None) => DependencyOf;
            }
            "System" System(SystemSpec) CORE_API_VERSIONS {
                "owner" owner: required Reference(Some("Group")) => OwnedBy;
                "domain" domain: optional Reference(Some("Domain")) => PartOf;
                "type" system_type: optional Text;
            }
            "Domain" Domain(DomainSpec) CORE_API_VERSIONS {
                "owner" owner: required Reference(Some("Group")) => OwnedBy;
                "subdomainOf" subdomain_of: optional Reference(Some("Domain")) => PartOf;
                "type" domain_type: optional Text;
            }
            "Group" Group(GroupSpec) CORE_API_VERSIONS {
                "type" group_type: required Text;
                "children" children: required ReferenceList(Some("Group")) => ParentOf;
                "parent" parent: optional Reference(Some("Group")) => ChildOf;
                "members" members: optional ReferenceList(Some("User")) => HasMember;
                "profile" profile: optional Object;
            }
            "User" User(UserSpec) CORE_API_VERSIONS {
                "memberOf" member_of: required ReferenceList(Some("Group")) => MemberOf;
                "profile" profile: optional Object;
            }
            "Location" Location(LocationSpec) CORE_API_VERSIONS {
                "type" location_type: optional Text;
                "target" target: optional Text;
                "targets" targets: optional TextList;
                "presence" presence: optional OneOf(&["required", "optional"]);
            }
            "Template" Template(TemplateSpec) TEMPLATE_API_VERSIONS {
                "type" template_type: required Text;
                "steps" steps: required ObjectList;
                "owner" owner: optional Reference(Some("Group")) => OwnedBy;
                /// One JSON Schema object or a list of form pages.
                "parameters" parameters: optional ObjectOrList;
                "output" output: optional Object;
            }
        }
    };
}
pub(crate) use kind_table;

/// Builds [`KIND_SPECS`] from the table's rows.
macro_rules! kind_specs {
    ($(
        $kind:literal $variant:ident($view:ident) $versions:ident {
            $(
                $(#[$doc:meta])*
                $wire:literal $rust:ident: $presence:ident $shape:ident $(($($argument:tt)*))? $(=> $relation:ident)?;
            )*
        }
    )*) => {
        const KIND_SPECS: &[KindSpec] = &[$(
            KindSpec {
                kind: $kind,
                api_versions: $versions,
                fields: &[$(
                    SpecField {
                        name: $wire,
                        required: presence!($presence),
                        shape: FieldShape::$shape $(($($argument)*))?,
                        relation: relation!($($relation)?),
                    },
                )*],
            },
        )*];
    };
}

macro_rules! presence {
    (required) => {
        true
    };
    (optional) => {
        false
    };
}

macro_rules! relation {
    () => {
        None
    };
    ($relation:ident) => {
        Some(RelationType::$relation)
    };
}

kind_table!(kind_specs);

/// The rules of a known kind, matched case-insensitively; `None` for other kinds,
/// which pass through with envelope validation only.
pub fn kind_spec(kind: &str) -> Option<&'static KindSpec> {
    KIND_SPECS.iter().find(|spec| spec.kind.eq_ignore_ascii_case(kind))
}

impl KindSpec {
    /// One field of the kind's spec, by its name on the wire.
    pub fn field(&self, name: &str) -> Option<&'static SpecField> {
        // Every KindSpec is one of KIND_SPECS, so its fields are 'static.
        self.fields.iter().find(|field| field.name == name)
    }
}

impl FieldShape {
    /// For a reference or a list of them, the kind a partial ref defaults to.
    pub const fn default_kind(self) -> Option<&'static str> {
        match self {
            FieldShape::Reference(default_kind) | FieldShape::ReferenceList(default_kind) => default_kind,
            _ => None,
        }
    }
}

/// The field `name` of the known kind `kind` (spelled as in the table).
/// Meant for constants (`const { spec::field("Component", "system") }`), so
/// that naming a field the table does not have fails the build.
pub const fn field(kind: &str, name: &str) -> &'static SpecField {
    let mut at = 0;
    while at < KIND_SPECS.len() {
        let kind_spec = &KIND_SPECS[at];
        if same(kind_spec.kind, kind) {
            let mut position = 0;
            while position < kind_spec.fields.len() {
                if same(kind_spec.fields[position].name, name) {
                    return &kind_spec.fields[position];
                }
                position += 1;
            }
        }
        at += 1;
    }
    panic!("no such field in the kind table");
}

/// The relation the field `name` of `kind` states, from this entity to the
/// one it names; for constants, like [`field`].
pub const fn relation(kind: &str, name: &str) -> RelationType {
    match field(kind, name).relation {
        Some(relation_type) => relation_type,
        None => panic!("the field states no relation"),
    }
}

/// The kind a partial ref in the spec field `name` defaults to, whatever the
/// kind of the entity: the same in every known kind that has the field
/// (checked below when compiling), and also applied to the field in kinds
/// the table does not know (the typed `owner` and `system` columns).
pub const fn default_kind(name: &str) -> Option<&'static str> {
    let mut found: Option<Option<&'static str>> = None;
    let mut at = 0;
    while at < KIND_SPECS.len() {
        let fields = KIND_SPECS[at].fields;
        let mut position = 0;
        while position < fields.len() {
            if same(fields[position].name, name) {
                let default_kind = fields[position].shape.default_kind();
                match found {
                    None => found = Some(default_kind),
                    Some(earlier) => {
                        assert!(same_kind(earlier, default_kind), "kinds disagree on a field's default kind")
                    }
                }
            }
            position += 1;
        }
        at += 1;
    }
    match found {
        Some(default_kind) => default_kind,
        None => None,
    }
}

/// Every field name agrees on its default kind across kinds.
const _: () = {
    let mut at = 0;
    while at < KIND_SPECS.len() {
        let fields = KIND_SPECS[at].fields;
        let mut position = 0;
        while position < fields.len() {
            default_kind(fields[position].name);
            position += 1;
        }
        at += 1;
    }
};

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut at = 0;
    while at < a.len() {
        if a[at] != b[at] {
            return false;
        }
        at += 1;
    }
    true
}

const fn same_kind(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Every known kind, in the canonical spelling.
pub fn known_kinds() -> impl Iterator<Item = &'static str> {
    KIND_SPECS.iter().map(|spec| spec.kind)
}
