//! A Template entity (`scaffolder.backstage.io/v1beta3`) read into a checked
//! [`Template`]: steps with their ids, actions, inputs and conditions, the
//! parameters as written (clients draw forms from them, `ui:*` hints
//! included) and one JSON Schema object that validates a task's values.
//!
//! The domain has already checked the envelope and the spec's top-level
//! shapes; this module checks what only the scaffolder cares about and
//! reports every problem at once, each with its field path.

use std::collections::HashSet;
use std::fmt;

use catalog_domain::typed_spec::TemplateSpec;
use catalog_domain::{Entity, EntityRef, TypedSpec};
use serde_json::{Map, Value};

use crate::expression::{ExpressionProblem, Expressions};
use crate::parameters::ParameterSchema;

/// The only Template apiVersion the scaffolder runs.
const TEMPLATE_API_VERSION: &str = "scaffolder.backstage.io/v1beta3";

/// The names a step's input, `if` and the template's output can read.
pub(crate) const TASK_CONTEXT_ROOTS: &[&str] = &["parameters", "steps", "user", "secrets"];

/// The fields a step may have. Keys under `backstage:` (permission tags) are
/// metadata for other plugins and are allowed too.
const STEP_FIELDS: &[&str] = &["id", "name", "action", "input", "if"];

/// A template whose spec the scaffolder can run.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    entity_ref: EntityRef,
    template_type: String,
    owner: Option<String>,
    parameters: Value,
    parameter_schema: Value,
    steps: Vec<Step>,
    output: Map<String, Value>,
}

/// One step of a template, in the order the template lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    id: String,
    name: String,
    action: String,
    input: Map<String, Value>,
    condition: Option<Value>,
}

/// Why part of a template cannot be run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateRule {
    #[error("must be {TEMPLATE_API_VERSION}")]
    ApiVersion,
    #[error("must be Template")]
    Kind,
    #[error("does not read as a Template spec: {0}")]
    Shape(String),
    #[error("is required")]
    Required,
    #[error("must be {0}")]
    WrongType(&'static str),
    #[error("must not be empty")]
    Empty,
    #[error("must be unique")]
    Duplicate,
    #[error("is not a step field (the fields are id, name, action, input and if)")]
    UnknownStepField,
    #[error("is not supported by this scaffolder")]
    Unsupported,
    #[error("{0}")]
    Expression(ExpressionProblem),
    #[error("{0}")]
    ParameterSchema(String),
}

impl TemplateRule {
    /// The stable machine-readable code of the rule, for clients that branch on it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ApiVersion => "template_api_version",
            Self::Kind => "template_kind",
            Self::Shape(_) => "template_shape",
            Self::Required => "required",
            Self::WrongType(_) => "wrong_type",
            Self::Empty => "empty",
            Self::Duplicate => "duplicate",
            Self::UnknownStepField => "unknown_step_field",
            Self::Unsupported => "unsupported",
            Self::Expression(_) => "expression",
            Self::ParameterSchema(_) => "parameter_schema",
        }
    }
}

/// One problem of a template: the field path and the rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {rule}")]
pub struct TemplateProblem {
    pub path: String,
    pub rule: TemplateRule,
}

/// Every problem that keeps a template from running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    pub problems: Vec<TemplateProblem>,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the template cannot run: ")?;
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TemplateError {}

/// Collects problems with their paths while a template is read.
#[derive(Default)]
struct Problems(Vec<TemplateProblem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, rule: TemplateRule) {
        self.0.push(TemplateProblem { path: path.into(), rule });
    }
}

impl Template {
    /// Reads a validated Template entity. Every problem is reported, not
    /// just the first.
    pub fn from_entity(entity: &Entity) -> Result<Self, TemplateError> {
        let mut problems = Problems::default();
        if entity.api_version != TEMPLATE_API_VERSION {
            problems.add("apiVersion", TemplateRule::ApiVersion);
        }
        if !entity.kind.eq_ignore_ascii_case("Template") {
            problems.add("kind", TemplateRule::Kind);
        }
        let spec = match entity.typed_spec() {
            Ok(TypedSpec::Template(spec)) => Some(spec),
            Ok(_) => None,
            Err(error) => {
                problems.add("spec", TemplateRule::Shape(error.to_string()));
                None
            }
        };
        let template = spec.map(|spec| read_spec(entity.entity_ref(), spec, &mut problems));
        match template {
            Some(template) if problems.0.is_empty() => Ok(template),
            _ => Err(TemplateError { problems: problems.0 }),
        }
    }

    /// The template's own reference, `template:namespace/name`.
    pub fn entity_ref(&self) -> &EntityRef {
        &self.entity_ref
    }

    /// `spec.type`, e.g. `service` or `website`.
    pub fn template_type(&self) -> &str {
        &self.template_type
    }

    /// `spec.owner` as written.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// `spec.parameters` exactly as written (an object, a list of form pages,
    /// or null), so clients see every `ui:*` hint and page title.
    pub fn parameters(&self) -> &Value {
        &self.parameters
    }

    /// One JSON Schema that a task's values must satisfy: the single object
    /// as written, or `allOf` the pages. `allOf` rather than a union of the
    /// pages' properties, because a page may carry its own `dependencies`,
    /// `oneOf` or `if`/`then`, which a union would lose; Backstage validates
    /// each page in turn, which `allOf` matches exactly.
    pub fn parameter_schema(&self) -> &Value {
        &self.parameter_schema
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// `spec.output` unrendered (links and text with expressions).
    pub fn output(&self) -> &Map<String, Value> {
        &self.output
    }
}

impl Step {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The step's display name; the id when the template gives none.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The id of the action the step runs, e.g. `fetch:template`.
    pub fn action(&self) -> &str {
        &self.action
    }

    /// The input as written, expressions unrendered.
    pub fn input(&self) -> &Map<String, Value> {
        &self.input
    }

    /// The step's `if`, unrendered: a boolean or an expression string.
    pub fn condition(&self) -> Option<&Value> {
        self.condition.as_ref()
    }
}

fn read_spec(entity_ref: EntityRef, spec: TemplateSpec, problems: &mut Problems) -> Template {
    let parameters = spec.parameters.unwrap_or(Value::Null);
    let parameter_schema = read_parameters(&parameters, problems);
    let steps = read_steps(&spec.steps, problems);
    let output = spec.output.unwrap_or_default();
    read_output(&output, problems);
    check_expressions(&steps, &output, problems);
    Template {
        entity_ref,
        template_type: spec.template_type,
        owner: spec.owner,
        parameters,
        parameter_schema,
        steps,
        output,
    }
}

/// Checks the parameter pages and merges them into one schema.
fn read_parameters(parameters: &Value, problems: &mut Problems) -> Value {
    let pages: Vec<(String, &Value)> = match parameters {
        Value::Null => return serde_json::json!({"type": "object"}),
        Value::Array(pages) => {
            pages.iter().enumerate().map(|(index, page)| (format!("spec.parameters[{index}]"), page)).collect()
        }
        page => vec![("spec.parameters".to_owned(), page)],
    };
    let n_problems_before = problems.0.len();
    for (path, page) in &pages {
        let Some(page) = page.as_object() else {
            problems.add(path.clone(), TemplateRule::WrongType("a JSON Schema object"));
            continue;
        };
        if let Some(properties) = page.get("properties")
            && !properties.is_object()
        {
            problems.add(format!("{path}.properties"), TemplateRule::WrongType("an object"));
        }
        if let Some(required) = page.get("required") {
            let all_strings = required.as_array().is_some_and(|names| names.iter().all(Value::is_string));
            if !all_strings {
                problems.add(format!("{path}.required"), TemplateRule::WrongType("a list of property names"));
            }
        }
    }
    let schema = match parameters {
        Value::Array(pages) if pages.len() == 1 => pages[0].clone(),
        Value::Array(pages) => serde_json::json!({"type": "object", "allOf": pages}),
        page => page.clone(),
    };
    // A page of the wrong shape is already reported, and would only fail compilation again.
    let pages_are_sound = problems.0.len() == n_problems_before;
    if pages_are_sound && let Err(error) = ParameterSchema::compile(&schema) {
        problems.add("spec.parameters", TemplateRule::ParameterSchema(error.to_string()));
    }
    schema
}

fn read_steps(steps: &[Map<String, Value>], problems: &mut Problems) -> Vec<Step> {
    let mut seen_ids = HashSet::new();
    let mut read = Vec::with_capacity(steps.len());
    for (index, step) in steps.iter().enumerate() {
        let path = format!("spec.steps[{index}]");
        for key in step.keys() {
            if key == "each" {
                // Silently running a loop step once would do the wrong thing.
                problems.add(format!("{path}.each"), TemplateRule::Unsupported);
            } else if !STEP_FIELDS.contains(&key.as_str()) && !key.starts_with("backstage:") {
                problems.add(format!("{path}.{key}"), TemplateRule::UnknownStepField);
            }
        }
        // Backstage makes `id` optional, but outputs are addressed as
        // `steps.<id>.output` and events name their step, so it is required here.
        let id = required_text(step, "id", &path, problems);
        if let Some(id) = &id
            && !seen_ids.insert(id.clone())
        {
            problems.add(format!("{path}.id"), TemplateRule::Duplicate);
        }
        let action = required_text(step, "action", &path, problems);
        let name = match step.get("name") {
            None => None,
            Some(Value::String(name)) => Some(name.clone()),
            Some(_) => {
                problems.add(format!("{path}.name"), TemplateRule::WrongType("a string"));
                None
            }
        };
        let input = match step.get("input") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(input)) => input.clone(),
            Some(_) => {
                problems.add(format!("{path}.input"), TemplateRule::WrongType("an object"));
                Map::new()
            }
        };
        let condition = match step.get("if") {
            None => None,
            Some(condition @ (Value::Bool(_) | Value::String(_))) => Some(condition.clone()),
            Some(_) => {
                problems.add(format!("{path}.if"), TemplateRule::WrongType("a boolean or an expression string"));
                None
            }
        };
        if let (Some(id), Some(action)) = (id, action) {
            let name = name.unwrap_or_else(|| id.clone());
            read.push(Step { id, name, action, input, condition });
        }
    }
    read
}

fn required_text(step: &Map<String, Value>, field: &str, path: &str, problems: &mut Problems) -> Option<String> {
    match step.get(field) {
        None | Some(Value::Null) => {
            problems.add(format!("{path}.{field}"), TemplateRule::Required);
            None
        }
        Some(Value::String(text)) if text.trim().is_empty() => {
            problems.add(format!("{path}.{field}"), TemplateRule::Empty);
            None
        }
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => {
            problems.add(format!("{path}.{field}"), TemplateRule::WrongType("a string"));
            None
        }
    }
}

/// `spec.output.links` and `spec.output.text` are lists of objects; other
/// output keys pass through to clients as they are.
fn read_output(output: &Map<String, Value>, problems: &mut Problems) {
    for field in ["links", "text"] {
        let Some(value) = output.get(field) else { continue };
        let Some(items) = value.as_array() else {
            problems.add(format!("spec.output.{field}"), TemplateRule::WrongType("a list of objects"));
            continue;
        };
        for (index, item) in items.iter().enumerate() {
            if !item.is_object() {
                problems.add(format!("spec.output.{field}[{index}]"), TemplateRule::WrongType("an object"));
            }
        }
    }
}

/// Compiles every expression of the steps and the output, so that syntax
/// errors and unknown names are found before a task starts.
fn check_expressions(steps: &[Step], output: &Map<String, Value>, problems: &mut Problems) {
    let expressions = Expressions::new();
    let mut found = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        let path = format!("spec.steps[{index}]");
        expressions.check_value(
            &Value::Object(step.input.clone()),
            TASK_CONTEXT_ROOTS,
            &format!("{path}.input"),
            &mut found,
        );
        if let Some(condition) = &step.condition {
            expressions.check_value(condition, TASK_CONTEXT_ROOTS, &format!("{path}.if"), &mut found);
        }
    }
    expressions.check_value(&Value::Object(output.clone()), TASK_CONTEXT_ROOTS, "spec.output", &mut found);
    for error in found {
        problems.add(error.path, TemplateRule::Expression(error.problem));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entity(spec: Value) -> Entity {
        catalog_domain::validate(&json!({
            "apiVersion": TEMPLATE_API_VERSION,
            "kind": "Template",
            "metadata": {"name": "t"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn problems(spec: Value) -> Vec<String> {
        let error = Template::from_entity(&entity(spec)).unwrap_err();
        error.problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_template_reads_its_steps_in_order_with_names_defaulting_to_ids() {
        let template = Template::from_entity(&entity(json!({
            "type": "service",
            "owner": "team-a",
            "steps": [
                {"id": "fetch", "name": "Fetch", "action": "fetch:template", "input": {"url": "./skeleton"}},
                {"id": "log", "action": "debug:log", "if": "${{ parameters.debug }}"},
            ],
            "output": {"links": [{"title": "Repo", "url": "${{ steps.publish.output.remoteUrl }}"}]},
        })))
        .unwrap();
        assert_eq!(template.entity_ref().to_string(), "template:default/t");
        assert_eq!(template.template_type(), "service");
        assert_eq!(template.owner(), Some("team-a"));
        let ids: Vec<_> = template.steps().iter().map(Step::id).collect();
        assert_eq!(ids, ["fetch", "log"]);
        assert_eq!(template.steps()[0].name(), "Fetch");
        assert_eq!(template.steps()[1].name(), "log");
        assert_eq!(template.steps()[0].input()["url"], "./skeleton");
        assert_eq!(template.steps()[1].condition(), Some(&json!("${{ parameters.debug }}")));
        assert_eq!(template.output()["links"][0]["title"], "Repo");
    }

    #[test]
    fn parameters_are_kept_as_written_for_clients() {
        let parameters = json!([{"title": "A", "properties": {"name": {"type": "string", "ui:autofocus": true}}}]);
        let template = Template::from_entity(&entity(
            json!({"type": "service", "parameters": parameters.clone(), "steps": [{"id": "a", "action": "x"}]}),
        ))
        .unwrap();
        assert_eq!(template.parameters(), &parameters);
    }

    #[test]
    fn several_parameter_pages_merge_into_one_schema_that_requires_every_page() {
        let template = Template::from_entity(&entity(json!({
            "type": "service",
            "parameters": [
                {"title": "A", "required": ["name"], "properties": {"name": {"type": "string"}}},
                {"title": "B", "required": ["repoUrl"], "properties": {"repoUrl": {"type": "string"}}},
            ],
            "steps": [{"id": "a", "action": "x"}],
        })))
        .unwrap();
        let schema = template.parameter_schema();
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["allOf"][0]["required"], json!(["name"]));
        assert_eq!(schema["allOf"][1]["required"], json!(["repoUrl"]));
    }

    #[test]
    fn one_parameter_object_is_the_schema_itself() {
        let page = json!({"required": ["name"], "properties": {"name": {"type": "string"}}});
        let template = Template::from_entity(&entity(
            json!({"type": "service", "parameters": page.clone(), "steps": [{"id": "a", "action": "x"}]}),
        ))
        .unwrap();
        assert_eq!(template.parameter_schema(), &page);
    }

    #[test]
    fn a_template_without_parameters_accepts_any_object() {
        let template =
            Template::from_entity(&entity(json!({"type": "service", "steps": [{"id": "a", "action": "x"}]}))).unwrap();
        assert_eq!(template.parameter_schema(), &json!({"type": "object"}));
        assert_eq!(template.parameters(), &Value::Null);
    }

    #[test]
    fn a_parameter_schema_that_does_not_compile_is_a_template_problem() {
        let found = problems(json!({
            "type": "service",
            "parameters": {"properties": {"name": {"type": "string", "pattern": "(unclosed"}}},
            "steps": [{"id": "a", "action": "x"}],
        }));
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("spec.parameters: the parameter schema is not valid: "), "{}", found[0]);
    }

    #[test]
    fn step_ids_must_be_unique() {
        let found = problems(json!({
            "type": "service",
            "steps": [{"id": "a", "action": "x"}, {"id": "b", "action": "x"}, {"id": "a", "action": "y"}],
        }));
        assert_eq!(found, ["spec.steps[2].id: must be unique"]);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let found = problems(json!({
            "type": "service",
            "parameters": [{"properties": []}, "not a page", {"required": "name"}],
            "steps": [
                {"name": "no id or action"},
                {"id": " ", "action": 3, "input": "text", "if": 1},
                {"id": "c", "action": "x", "each": ["a"], "timeout": 3, "backstage:permissions": {"tags": ["t"]}},
            ],
            "output": {"links": {"url": "x"}, "text": ["plain"]},
        }));
        assert_eq!(
            found,
            [
                "spec.parameters[0].properties: must be an object",
                "spec.parameters[1]: must be a JSON Schema object",
                "spec.parameters[2].required: must be a list of property names",
                "spec.steps[0].id: is required",
                "spec.steps[0].action: is required",
                "spec.steps[1].id: must not be empty",
                "spec.steps[1].action: must be a string",
                "spec.steps[1].input: must be an object",
                "spec.steps[1].if: must be a boolean or an expression string",
                "spec.steps[2].each: is not supported by this scaffolder",
                "spec.steps[2].timeout: is not a step field (the fields are id, name, action, input and if)",
                "spec.output.links: must be a list of objects",
                "spec.output.text[0]: must be an object",
            ]
        );
    }

    #[test]
    fn expressions_in_inputs_conditions_and_output_are_checked_before_anything_runs() {
        let found = problems(json!({
            "type": "service",
            "steps": [{"id": "a", "action": "x", "input": {"n": ["${{ paramters.name }}"]}, "if": "${{ parameters. }}"}],
            "output": {"text": [{"content": "${{ stepz.a.output }}"}]},
        }));
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("spec.steps[0].input.n[0]: `paramters` is not defined here"), "{}", found[0]);
        assert!(found[1].starts_with("spec.steps[0].if: the expression is not valid syntax"), "{}", found[1]);
        assert!(found[2].starts_with("spec.output.text[0].content: "), "{}", found[2]);
    }

    #[test]
    fn only_scaffolder_v1beta3_templates_are_read() {
        let mut old = entity(json!({"type": "service", "steps": [{"id": "a", "action": "x"}]}));
        old.api_version = "backstage.io/v1beta2".into();
        let error = Template::from_entity(&old).unwrap_err();
        assert_eq!(error.problems[0].to_string(), "apiVersion: must be scaffolder.backstage.io/v1beta3");
        assert_eq!(error.problems[0].rule.code(), "template_api_version");
    }

    #[test]
    fn an_entity_of_another_kind_is_not_a_template() {
        let component = catalog_domain::validate(&json!({
            "apiVersion": "backstage.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": "c"},
            "spec": {"type": "service", "lifecycle": "production", "owner": "t"},
        }))
        .unwrap();
        let error = Template::from_entity(&component).unwrap_err();
        let found: Vec<_> = error.problems.iter().map(ToString::to_string).collect();
        assert_eq!(found, ["apiVersion: must be scaffolder.backstage.io/v1beta3", "kind: must be Template"]);
        assert!(error.to_string().starts_with("the template cannot run: apiVersion"));
    }
}
