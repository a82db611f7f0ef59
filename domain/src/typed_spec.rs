//! Typed views of the specs of the known kinds, built from the kind table
//! (`spec.rs`): one struct per kind, one field per row, typed by the row's
//! shape. The entity keeps its spec as JSON so that unknown fields survive;
//! these views read it after validation has checked its shape, and keep
//! unknown fields in `extra`.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::entity::Entity;
use crate::spec::kind_table;

/// An entity's spec that does not read as its kind's. Only an entity that
/// did not come through validation can have one.
#[derive(Debug, thiserror::Error)]
#[error("{kind} spec: {source}")]
pub struct SpecError {
    pub kind: String,
    pub source: serde_json::Error,
}

/// Builds one typed view per kind of the table (`spec.rs`), the
/// [`TypedSpec`] enum over them and [`Entity::typed_spec`].
macro_rules! typed_views {
    ($(
        $kind:literal $variant:ident($view:ident) $versions:ident {
            $(
                $(#[$doc:meta])*
                $wire:literal $rust:ident: $presence:ident $shape:ident $(($($argument:tt)*))? $(=> $relation:ident)?;
            )*
        }
    )*) => {
        $(
            view_struct!(@fields $kind $view [] $($(#[$doc])* $wire $rust: $presence $shape;)*);
        )*

        /// The spec of an entity, typed by its kind.
        #[derive(Clone, Debug, PartialEq)]
        pub enum TypedSpec {
            $($variant($view),)*
            /// A kind without a typed spec.
            Other(Map<String, Value>),
        }

        impl Entity {
            /// The spec typed by kind. Fails only for an entity that did not come
            /// through validation; the message names the kind and the problem.
            pub fn typed_spec(&self) -> Result<TypedSpec, SpecError> {
                fn read<T: for<'de> Deserialize<'de>>(entity: &Entity) -> Result<T, SpecError> {
                    serde_json::from_value(Value::Object(entity.spec.clone()))
                        .map_err(|source| SpecError { kind: entity.kind.clone(), source })
                }
                $(
                    if self.kind.eq_ignore_ascii_case($kind) {
                        return Ok(TypedSpec::$variant(read(self)?));
                    }
                )*
                Ok(TypedSpec::Other(self.spec.clone()))
            }
        }
    };
}

/// One kind's view, its fields gathered one row at a time: whether a field
/// is required decides both its type and whether it may be absent.
macro_rules! view_struct {
    (@fields $kind:literal $view:ident [$($fields:tt)*]) => {
        #[doc = concat!("The spec of a ", $kind, " entity; unknown fields are kept in `extra`.")]
        #[derive(Clone, Debug, PartialEq, Deserialize)]
        pub struct $view {
            $($fields)*
            #[serde(flatten)]
            pub extra: Map<String, Value>,
        }
    };
    (@fields $kind:literal $view:ident [$($fields:tt)*]
        $(#[$doc:meta])* $wire:literal $rust:ident: required $shape:ident; $($rest:tt)*) => {
        view_struct!(@fields $kind $view [
            $($fields)*
            $(#[$doc])*
            #[serde(rename = $wire)]
            pub $rust: value_type!($shape),
        ] $($rest)*);
    };
    (@fields $kind:literal $view:ident [$($fields:tt)*]
        $(#[$doc:meta])* $wire:literal $rust:ident: optional $shape:ident; $($rest:tt)*) => {
        view_struct!(@fields $kind $view [
            $($fields)*
            $(#[$doc])*
            #[serde(rename = $wire, default)]
            pub $rust: optional_type!($shape),
        ] $($rest)*);
    };
}

/// The Rust type of a present value of each shape.
macro_rules! value_type {
    (Text) => { String };
    (OneOf) => { String };
    (Reference) => { String };
    (TextList) => { Vec<String> };
    (ReferenceList) => { Vec<String> };
    (Object) => { Map<String, Value> };
    (ObjectList) => { Vec<Map<String, Value>> };
    (ObjectOrList) => { Value };
}

/// The Rust type of an optional field: a list is empty when absent, any other
/// value `None`.
macro_rules! optional_type {
    (TextList) => { Vec<String> };
    (ReferenceList) => { Vec<String> };
    (ObjectList) => { Vec<Map<String, Value>> };
    ($shape:ident) => { Option<value_type!($shape)> };
}

kind_table!(typed_views);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn valid(kind: &str, api_version: &str, spec: Value) -> Entity {
        crate::validate(&json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "a"}, "spec": spec}))
            .unwrap()
    }

    #[test]
    fn every_valid_entity_of_a_known_kind_reads_as_its_typed_spec() {
        let core = "backstage.io/v1alpha1";
        let cases = [
            valid(
                "Component",
                core,
                json!({"type": "service", "lifecycle": "production", "owner": "t", "dependsOn": ["resource:db"], "x-team": 1}),
            ),
            valid("API", core, json!({"type": "openapi", "lifecycle": "production", "owner": "t", "definition": "d"})),
            valid("Resource", core, json!({"type": "database", "owner": "t"})),
            valid("System", core, json!({"owner": "t", "domain": "d"})),
            valid("Domain", core, json!({"owner": "t"})),
            valid("Group", core, json!({"type": "team", "children": [], "profile": {"email": "t@x"}})),
            valid("User", core, json!({"memberOf": ["t"]})),
            valid("Location", core, json!({"targets": ["./a.yaml"]})),
            valid(
                "Template",
                "scaffolder.backstage.io/v1beta3",
                json!({"type": "service", "steps": [{"id": "a", "action": "x"}]}),
            ),
        ];
        for entity in &cases {
            assert!(entity.typed_spec().is_ok(), "{}: {:?}", entity.kind, entity.typed_spec());
        }
        let TypedSpec::Component(component) = cases[0].typed_spec().unwrap() else { panic!("a component") };
        assert_eq!(component.depends_on, ["resource:db"]);
        assert_eq!(component.extra["x-team"], json!(1));
        let TypedSpec::Template(template) = cases[8].typed_spec().unwrap() else { panic!("a template") };
        assert_eq!(template.steps[0]["action"], "x");
    }

    #[test]
    fn other_kinds_keep_their_spec_untyped() {
        let entity = valid("Pipeline", "acme.com/v1", json!({"stages": 3}));
        assert_eq!(entity.typed_spec().unwrap(), TypedSpec::Other(json!({"stages": 3}).as_object().unwrap().clone()));
    }
}
