//! Validation of an untrusted document into an [`Entity`]: every problem is
//! reported with the field path and the rule it breaks, never just the first.

use std::fmt;

use serde_json::{Map, Value};

use crate::entity::Entity;
use crate::entity_ref::{EntityRef, RefError};
use crate::names;
use crate::rule::Rule;
use crate::spec::{self, FieldShape};

/// One problem with one field of a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    /// The path of the field, e.g. `metadata.tags[2]` or `spec.owner`.
    pub field: String,
    pub rule: Rule,
    /// The sentence shown to people; names the field, the rule and the detail.
    pub message: String,
}

impl ValidationError {
    pub(crate) fn new(field: impl Into<String>, rule: Rule, detail: Option<String>) -> Self {
        let field = field.into();
        let message = match detail {
            Some(detail) => format!("{field} {} ({detail}) [rule {}]", rule.describe(), rule.code()),
            None => format!("{field} {} [rule {}]", rule.describe(), rule.code()),
        };
        Self { field, rule, message }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ValidationError {}

const ROOT_KEYS: [&str; 4] = ["apiVersion", "kind", "metadata", "spec"];

/// Collects errors while walking a document.
#[derive(Default)]
struct Problems(Vec<ValidationError>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, rule: Rule, detail: Option<String>) {
        self.0.push(ValidationError::new(field, rule, detail));
    }

    fn check(&mut self, field: &str, value: &str, check: fn(&str) -> Result<(), Rule>) {
        if let Err(rule) = check(value) {
            self.push(field, rule, Some(format!("got {value:?}")));
        }
    }

    fn string<'a>(&mut self, object: &'a Map<String, Value>, key: &str, path: &str, required: bool) -> Option<&'a str> {
        match object.get(key) {
            None | Some(Value::Null) if required => {
                self.push(path, Rule::Required, None);
                None
            }
            None | Some(Value::Null) => None,
            Some(Value::String(text)) if required && text.trim().is_empty() => {
                self.push(path, Rule::Required, Some("must not be empty".into()));
                None
            }
            Some(Value::String(text)) => Some(text),
            Some(other) => {
                self.push(path, Rule::WrongType, Some(format!("expected a string, got {}", type_name(other))));
                None
            }
        }
    }
}

/// Validates a parsed document as a Backstage entity.
///
/// Returns the entity, or every problem found in it. The entity's relations are
/// derived here too, so a valid entity always carries them.
pub fn validate(document: &Value) -> Result<Entity, Vec<ValidationError>> {
    let mut problems = Problems::default();
    let Value::Object(root) = document else {
        problems.push("(document)", Rule::DocumentNotObject, Some(format!("got {}", type_name(document))));
        return Err(problems.0);
    };
    for key in root.keys() {
        if !ROOT_KEYS.contains(&key.as_str()) {
            problems.push(key.clone(), Rule::UnknownRootKey, None);
        }
    }
    let api_version = problems.string(root, "apiVersion", "apiVersion", true);
    if let Some(api_version) = api_version {
        problems.check("apiVersion", api_version, names::check_api_version);
    }
    let kind = problems.string(root, "kind", "kind", true);
    if let Some(kind) = kind {
        problems.check("kind", kind, names::check_kind);
    }
    let empty = Map::new();
    let metadata = match root.get("metadata") {
        Some(Value::Object(metadata)) => metadata,
        None | Some(Value::Null) => {
            problems.push("metadata", Rule::Required, None);
            &empty
        }
        Some(other) => {
            problems.push("metadata", Rule::WrongType, Some(format!("expected a mapping, got {}", type_name(other))));
            &empty
        }
    };
    let namespace = validate_metadata(metadata, &mut problems, root.contains_key("metadata"));
    let spec = match root.get("spec") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(spec)) => spec,
        Some(other) => {
            problems.push("spec", Rule::WrongType, Some(format!("expected a mapping, got {}", type_name(other))));
            &empty
        }
    };
    if let (Some(api_version), Some(kind)) = (api_version, kind)
        && let Some(kind_spec) = spec::kind_spec(kind)
    {
        if !kind_spec.api_versions.contains(&api_version) {
            problems.push(
                "apiVersion",
                Rule::ApiVersionForKind,
                Some(format!("{kind} accepts {}, got {api_version:?}", kind_spec.api_versions.join(" or "))),
            );
        }
        validate_spec(
            kind_spec,
            spec,
            namespace.as_deref().unwrap_or(crate::entity_ref::DEFAULT_NAMESPACE),
            &mut problems,
        );
    }
    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    let entity: Entity = serde_json::from_value(document.clone())
        .map_err(|error| vec![ValidationError::new("(document)", Rule::WrongType, Some(error.to_string()))])?;
    Ok(entity.with_derived_relations())
}

/// Checks metadata and returns the namespace when it is valid.
fn validate_metadata(metadata: &Map<String, Value>, problems: &mut Problems, present: bool) -> Option<String> {
    if present && let Some(name) = problems.string(metadata, "name", "metadata.name", true) {
        problems.check("metadata.name", name, names::check_name);
    }
    let namespace = problems.string(metadata, "namespace", "metadata.namespace", false);
    let mut valid_namespace = Some(crate::entity_ref::DEFAULT_NAMESPACE.to_owned());
    if let Some(namespace) = namespace {
        if let Err(rule) = names::check_namespace(namespace) {
            problems.push("metadata.namespace", rule, Some(format!("got {namespace:?}")));
            valid_namespace = None;
        } else {
            valid_namespace = Some(namespace.to_owned());
        }
    }
    for key in ["title", "description", "uid", "etag"] {
        problems.string(metadata, key, &format!("metadata.{key}"), false);
    }
    if let Some(labels) = object_field(metadata, "labels", "metadata.labels", problems) {
        for (key, value) in labels {
            let path = format!("metadata.labels[{key:?}]");
            if let Err(rule) = names::check_key(key) {
                problems.push(path.clone(), rule, Some(format!("key {key:?}")));
            }
            match value {
                Value::String(value) => {
                    if let Err(rule) = names::check_label_value(value) {
                        problems.push(path, rule, Some(format!("got {value:?}")));
                    }
                }
                other => {
                    problems.push(path, Rule::WrongType, Some(format!("expected a string, got {}", type_name(other))))
                }
            }
        }
    }
    if let Some(annotations) = object_field(metadata, "annotations", "metadata.annotations", problems) {
        for (key, value) in annotations {
            let path = format!("metadata.annotations[{key:?}]");
            if let Err(rule) = names::check_key(key) {
                problems.push(path.clone(), rule, Some(format!("key {key:?}")));
            }
            if !value.is_string() {
                problems.push(path, Rule::WrongType, Some(format!("expected a string, got {}", type_name(value))));
            }
        }
    }
    if let Some(tags) = array_field(metadata, "tags", "metadata.tags", problems) {
        for (index, tag) in tags.iter().enumerate() {
            let path = format!("metadata.tags[{index}]");
            match tag {
                Value::String(tag) => problems.check(&path, tag, names::check_tag),
                other => {
                    problems.push(path, Rule::WrongType, Some(format!("expected a string, got {}", type_name(other))))
                }
            }
        }
    }
    if let Some(links) = array_field(metadata, "links", "metadata.links", problems) {
        for (index, link) in links.iter().enumerate() {
            let path = format!("metadata.links[{index}]");
            let Value::Object(link) = link else {
                problems.push(path, Rule::WrongType, Some(format!("expected a mapping, got {}", type_name(link))));
                continue;
            };
            if let Some(url) = problems.string(link, "url", &format!("{path}.url"), true)
                && url::Url::parse(url).is_err()
            {
                problems.push(format!("{path}.url"), Rule::LinkUrl, Some(format!("got {url:?}")));
            }
            for key in ["title", "icon", "type"] {
                problems.string(link, key, &format!("{path}.{key}"), false);
            }
        }
    }
    valid_namespace
}

fn validate_spec(kind_spec: &spec::KindSpec, spec: &Map<String, Value>, namespace: &str, problems: &mut Problems) {
    for field in kind_spec.fields {
        let path = format!("spec.{}", field.name);
        let value = spec.get(field.name).filter(|value| !value.is_null());
        let Some(value) = value else {
            if field.required {
                problems.push(path, Rule::Required, None);
            }
            continue;
        };
        match field.shape {
            FieldShape::Text => {
                problems.string(spec, field.name, &path, field.required);
            }
            FieldShape::OneOf(allowed) => {
                if let Some(text) = problems.string(spec, field.name, &path, field.required)
                    && !allowed.contains(&text)
                {
                    problems.push(
                        path,
                        Rule::EnumValue,
                        Some(format!("expected one of {}, got {text:?}", allowed.join(", "))),
                    );
                }
            }
            FieldShape::Object => {
                if !value.is_object() {
                    problems.push(path, Rule::WrongType, Some(format!("expected a mapping, got {}", type_name(value))));
                }
            }
            FieldShape::ObjectOrList => {
                if !value.is_object() && !value.is_array() {
                    problems.push(
                        path,
                        Rule::WrongType,
                        Some(format!("expected a mapping or a list, got {}", type_name(value))),
                    );
                }
            }
            FieldShape::TextList => {
                string_list(value, &path, problems);
            }
            FieldShape::ObjectList => match value {
                Value::Array(items) => {
                    for (index, item) in items.iter().enumerate() {
                        if !item.is_object() {
                            problems.push(
                                format!("{path}[{index}]"),
                                Rule::WrongType,
                                Some(format!("expected a mapping, got {}", type_name(item))),
                            );
                        }
                    }
                }
                other => {
                    problems.push(path, Rule::WrongType, Some(format!("expected a list, got {}", type_name(other))))
                }
            },
            FieldShape::Reference(default_kind) => {
                if let Some(text) = problems.string(spec, field.name, &path, field.required) {
                    check_reference(text, default_kind, namespace, &path, problems);
                }
            }
            FieldShape::ReferenceList(default_kind) => {
                for (index, text) in string_list(value, &path, problems) {
                    check_reference(text, default_kind, namespace, &format!("{path}[{index}]"), problems);
                }
            }
        }
    }
}

fn check_reference(text: &str, default_kind: Option<&str>, namespace: &str, path: &str, problems: &mut Problems) {
    match EntityRef::parse_with_defaults(text, default_kind, namespace) {
        Ok(_) => {}
        Err(RefError::KindRequired) => problems.push(path, Rule::ReferenceKindRequired, Some(format!("got {text:?}"))),
        Err(error) => problems.push(path, Rule::ReferenceSyntax, Some(format!("{error}: got {text:?}"))),
    }
}

fn string_list<'a>(value: &'a Value, path: &str, problems: &mut Problems) -> Vec<(usize, &'a str)> {
    let Value::Array(items) = value else {
        problems.push(path, Rule::WrongType, Some(format!("expected a list of strings, got {}", type_name(value))));
        return Vec::new();
    };
    let mut texts = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match item {
            Value::String(text) => texts.push((index, text.as_str())),
            other => problems.push(
                format!("{path}[{index}]"),
                Rule::WrongType,
                Some(format!("expected a string, got {}", type_name(other))),
            ),
        }
    }
    texts
}

fn object_field<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    path: &str,
    problems: &mut Problems,
) -> Option<&'a Map<String, Value>> {
    match object.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map),
        Some(other) => {
            problems.push(path, Rule::WrongType, Some(format!("expected a mapping, got {}", type_name(other))));
            None
        }
    }
}

fn array_field<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    path: &str,
    problems: &mut Problems,
) -> Option<&'a Vec<Value>> {
    match object.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(items),
        Some(other) => {
            problems.push(path, Rule::WrongType, Some(format!("expected a list, got {}", type_name(other))));
            None
        }
    }
}

pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn problems(document: Value) -> Vec<(String, &'static str)> {
        match validate(&document) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|error| (error.field, error.rule.code())).collect(),
        }
    }

    fn entity(kind: &str, api_version: &str, spec: Value) -> Value {
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "a"}, "spec": spec})
    }

    const CORE: &str = "backstage.io/v1alpha1";

    #[test]
    fn each_kind_accepts_its_minimal_spec_and_names_every_missing_required_field() {
        let cases: [(&str, &str, Value, &[&str]); 9] = [
            (
                "Component",
                CORE,
                json!({"type": "service", "lifecycle": "production", "owner": "t"}),
                &["type", "lifecycle", "owner"],
            ),
            (
                "API",
                CORE,
                json!({"type": "openapi", "lifecycle": "production", "owner": "t", "definition": "x"}),
                &["type", "lifecycle", "owner", "definition"],
            ),
            ("Resource", CORE, json!({"type": "database", "owner": "t"}), &["type", "owner"]),
            ("System", CORE, json!({"owner": "t"}), &["owner"]),
            ("Domain", CORE, json!({"owner": "t"}), &["owner"]),
            ("Group", CORE, json!({"type": "team", "children": []}), &["type", "children"]),
            ("User", CORE, json!({"memberOf": []}), &["memberOf"]),
            ("Location", CORE, json!({"target": "./a.yaml"}), &[]),
            (
                "Template",
                "scaffolder.backstage.io/v1beta3",
                json!({"type": "service", "steps": []}),
                &["type", "steps"],
            ),
        ];
        for (kind, api_version, minimal, required) in cases {
            assert_eq!(problems(entity(kind, api_version, minimal)), [], "{kind} minimal spec");
            let missing = problems(entity(kind, api_version, json!({})));
            let expected: Vec<(String, &str)> =
                required.iter().map(|field| (format!("spec.{field}"), "required")).collect();
            assert_eq!(missing, expected, "{kind} without a spec");
        }
    }

    #[test]
    fn only_api_version_kind_metadata_and_spec_are_accepted_at_the_root() {
        let mut document = entity("System", CORE, json!({"owner": "t"}));
        document["relations"] = json!([]);
        document["status"] = json!({});
        assert_eq!(problems(document), [("relations".into(), "root.known-keys"), ("status".into(), "root.known-keys")]);
    }

    #[test]
    fn the_api_version_must_suit_the_kind() {
        assert_eq!(
            problems(entity("Template", CORE, json!({"type": "service", "steps": []}))),
            [("apiVersion".into(), "apiVersion.kind")]
        );
        assert_eq!(
            problems(entity("System", "backstage.io/v1beta1", json!({"owner": "t"}))),
            [],
            "v1beta1 is accepted for core kinds"
        );
        assert_eq!(problems(entity("System", "not a version!", json!({"owner": "t"})))[0].1, "apiVersion.pattern");
    }

    #[test]
    fn every_problem_of_a_document_is_reported() {
        let document = json!({
            "apiVersion": CORE, "kind": "Component",
            "metadata": {"name": "-a-", "namespace": "Not_Valid", "tags": ["OK", 3], "labels": {"a/b/c": "x"},
                         "annotations": {"note": 5}, "links": [{"url": "not a url"}, {"title": "no url"}]},
            "spec": {"type": ["service"], "lifecycle": "production", "owner": "t", "dependsOn": ["other"]}
        });
        let found = problems(document);
        for expected in [
            ("metadata.name", "name.pattern"),
            ("metadata.namespace", "namespace.pattern"),
            ("metadata.tags[0]", "tag.pattern"),
            ("metadata.tags[1]", "type"),
            ("metadata.annotations[\"note\"]", "type"),
            ("metadata.links[0].url", "link.url"),
            ("metadata.links[1].url", "required"),
            ("spec.type", "type"),
            ("spec.dependsOn[0]", "reference.kind-required"),
        ] {
            assert!(
                found.iter().any(|(field, rule)| field == expected.0 && *rule == expected.1),
                "{expected:?} in {found:?}"
            );
        }
        assert!(found.iter().any(|(field, _)| field.starts_with("metadata.labels")), "{found:?}");
    }

    #[test]
    fn a_message_names_the_field_the_rule_and_the_value() {
        let errors = validate(
            &json!({"apiVersion": CORE, "kind": "System", "metadata": {"name": "bad name"}, "spec": {"owner": "t"}}),
        )
        .unwrap_err();
        assert_eq!(
            errors[0].message,
            "metadata.name must match ^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$ (got \"bad name\") [rule name.pattern]"
        );
    }

    #[test]
    fn references_must_be_well_formed() {
        let spec = json!({"type": "service", "lifecycle": "production", "owner": "group:", "system": "a/b/c"});
        let found = problems(entity("Component", CORE, spec));
        assert!(found.contains(&("spec.owner".into(), "reference.syntax")), "{found:?}");
    }

    #[test]
    fn a_location_presence_is_required_or_optional() {
        assert_eq!(
            problems(entity("Location", CORE, json!({"target": "a", "presence": "maybe"}))),
            [("spec.presence".into(), "enum")]
        );
    }

    #[test]
    fn unknown_kinds_pass_with_envelope_rules_only() {
        let document = json!({"apiVersion": "acme.com/v1", "kind": "Pipeline", "metadata": {"name": "p"}, "spec": {"anything": [1, 2]}});
        let entity = validate(&document).unwrap();
        assert_eq!(entity.spec["anything"], json!([1, 2]));
        assert!(entity.relations.is_empty());
    }

    #[test]
    fn a_document_that_is_not_a_mapping_is_one_clear_error() {
        assert_eq!(problems(json!(["a"])), [("(document)".into(), "document.object")]);
    }
}
