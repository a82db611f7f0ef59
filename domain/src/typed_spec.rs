//! Typed views of the specs of the known kinds. The entity keeps its spec as
//! JSON so that unknown fields survive; these views read it after validation
//! has checked its shape, and keep unknown fields in `extra`.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::entity::Entity;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    #[serde(rename = "type")]
    pub component_type: String,
    pub lifecycle: String,
    pub owner: String,
    pub system: Option<String>,
    pub subcomponent_of: Option<String>,
    #[serde(default)]
    pub provides_apis: Vec<String>,
    #[serde(default)]
    pub consumes_apis: Vec<String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub dependency_of: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiSpec {
    #[serde(rename = "type")]
    pub api_type: String,
    pub lifecycle: String,
    pub owner: String,
    pub definition: String,
    pub system: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSpec {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub owner: String,
    pub system: Option<String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub dependency_of: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemSpec {
    pub owner: String,
    pub domain: Option<String>,
    #[serde(rename = "type")]
    pub system_type: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainSpec {
    pub owner: String,
    pub subdomain_of: Option<String>,
    #[serde(rename = "type")]
    pub domain_type: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSpec {
    #[serde(rename = "type")]
    pub group_type: String,
    pub children: Vec<String>,
    pub parent: Option<String>,
    #[serde(default)]
    pub members: Vec<String>,
    pub profile: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserSpec {
    pub member_of: Vec<String>,
    pub profile: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocationSpec {
    #[serde(rename = "type")]
    pub location_type: Option<String>,
    pub target: Option<String>,
    #[serde(default)]
    pub targets: Vec<String>,
    pub presence: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateSpec {
    #[serde(rename = "type")]
    pub template_type: String,
    pub owner: Option<String>,
    /// One JSON Schema object or a list of form pages.
    pub parameters: Option<Value>,
    pub steps: Vec<Map<String, Value>>,
    pub output: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The spec of an entity, typed by its kind.
#[derive(Clone, Debug, PartialEq)]
pub enum TypedSpec {
    Component(ComponentSpec),
    Api(ApiSpec),
    Resource(ResourceSpec),
    System(SystemSpec),
    Domain(DomainSpec),
    Group(GroupSpec),
    User(UserSpec),
    Location(LocationSpec),
    Template(TemplateSpec),
    /// A kind without a typed spec.
    Other(Map<String, Value>),
}

impl Entity {
    /// The spec typed by kind. Fails only for an entity that did not come
    /// through validation; the message names the kind and the problem.
    pub fn typed_spec(&self) -> Result<TypedSpec, String> {
        fn read<T: for<'de> Deserialize<'de>>(entity: &Entity) -> Result<T, String> {
            serde_json::from_value(Value::Object(entity.spec.clone()))
                .map_err(|error| format!("{} spec: {error}", entity.kind))
        }
        Ok(match self.kind.to_ascii_lowercase().as_str() {
            "component" => TypedSpec::Component(read(self)?),
            "api" => TypedSpec::Api(read(self)?),
            "resource" => TypedSpec::Resource(read(self)?),
            "system" => TypedSpec::System(read(self)?),
            "domain" => TypedSpec::Domain(read(self)?),
            "group" => TypedSpec::Group(read(self)?),
            "user" => TypedSpec::User(read(self)?),
            "location" => TypedSpec::Location(read(self)?),
            "template" => TypedSpec::Template(read(self)?),
            _ => TypedSpec::Other(self.spec.clone()),
        })
    }
}

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
