//! A task's values checked against the template's parameter schema before
//! anything runs: defaults filled in, then every problem reported with its
//! path, the keyword it breaks and a sentence.
//!
//! The schema is JSON Schema draft 7, what Backstage's forms (rjsf) and its
//! backend validate with; `ui:*` keywords are unknown to the draft and
//! ignored. `$ref` resolves only inside the schema: the validator is built
//! without its HTTP and file retrievers, so a template cannot make the
//! server fetch a URL or read a file. `pattern` uses the `regex` crate
//! (linear time) rather than a backtracking engine, so a template's pattern
//! cannot stall validation; patterns with look-around are refused when the
//! schema is compiled.

use std::fmt;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{Draft, PatternOptions, ValidationError, Validator};
use serde_json::{Map, Value};

/// A compiled parameter schema.
pub struct ParameterSchema {
    schema: Value,
    validator: Validator,
}

impl fmt::Debug for ParameterSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParameterSchema").field("schema", &self.schema).finish_non_exhaustive()
    }
}

/// The parameter schema itself is not a schema this scaffolder can use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the parameter schema is not valid: {0}")]
pub struct SchemaError(String);

/// One problem of a task's values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", field_name(path))]
pub struct ParameterProblem {
    /// JSON pointer to the value, `/name` or `/service/ports/0`; for a
    /// missing required value, the pointer it should have had.
    pub path: String,
    /// The JSON Schema keyword broken: `required`, `enum`, `pattern`, `type`...
    pub rule: String,
    /// The sentence for the user. It names the rule, not the value.
    pub message: String,
}

/// Every problem of a task's values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParameterError {
    pub problems: Vec<ParameterProblem>,
}

impl fmt::Display for ParameterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the values do not match the template's parameters: ")?;
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ParameterError {}

impl ParameterSchema {
    pub fn compile(schema: &Value) -> Result<Self, SchemaError> {
        let validator = jsonschema::options()
            .with_draft(Draft::Draft7)
            .should_validate_formats(true)
            .with_pattern_options(PatternOptions::regex())
            .build(schema)
            .map_err(|error| SchemaError(error.to_string()))?;
        Ok(Self { schema: schema.clone(), validator })
    }

    /// The values with schema defaults filled in where a value is missing,
    /// or every problem of them.
    pub fn validate(&self, values: &Map<String, Value>) -> Result<Map<String, Value>, ParameterError> {
        let mut completed = Value::Object(values.clone());
        apply_defaults(&self.schema, &mut completed);
        let problems: Vec<ParameterProblem> =
            self.validator.iter_errors(&completed).map(|error| problem(&error)).collect();
        match completed {
            Value::Object(completed) if problems.is_empty() => Ok(completed),
            _ => Err(ParameterError { problems }),
        }
    }
}

fn problem(error: &ValidationError<'_>) -> ParameterProblem {
    let mut path = error.instance_path().as_str().to_owned();
    // A missing property is reported on its parent; pointing at the property itself is what a form needs.
    if let ValidationErrorKind::Required { property } = error.kind() {
        let name = property.as_str().map_or_else(|| property.to_string(), str::to_owned);
        path = format!("{path}/{}", name.replace('~', "~0").replace('/', "~1"));
    }
    ParameterProblem {
        path,
        rule: error.kind().keyword().to_owned(),
        message: error.masked_with("the value").to_string(),
    }
}

/// `values.service.ports[0]` for the pointer `/service/ports/0`.
fn field_name(pointer: &str) -> String {
    let mut name = String::from("values");
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        match segment.parse::<usize>() {
            Ok(index) => name.push_str(&format!("[{index}]")),
            Err(_) => {
                name.push('.');
                name.push_str(&segment);
            }
        }
    }
    name
}

/// Fills `default`s of the schema's properties into the value where they
/// are missing, through `allOf` pages and nested objects, as the forms
/// would. Defaults under `oneOf`, `anyOf`, `dependencies` and `if`/`then`
/// depend on which branch applies and are left alone.
fn apply_defaults(schema: &Value, value: &mut Value) {
    if let Some(pages) = schema.get("allOf").and_then(Value::as_array) {
        for page in pages {
            apply_defaults(page, value);
        }
    }
    let (Some(properties), Some(object)) = (schema.get("properties").and_then(Value::as_object), value.as_object_mut())
    else {
        return;
    };
    for (name, property) in properties {
        match object.get_mut(name) {
            Some(child) => apply_defaults(property, child),
            None => {
                if let Some(default) = property.get("default") {
                    object.insert(name.clone(), default.clone());
                } else if property.get("properties").is_some() {
                    let mut child = Value::Object(Map::new());
                    apply_defaults(property, &mut child);
                    if child.as_object().is_some_and(|child| !child.is_empty()) {
                        object.insert(name.clone(), child);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> ParameterSchema {
        ParameterSchema::compile(&json!({
            "type": "object",
            "allOf": [
                {
                    "title": "Service",
                    "required": ["name", "owner"],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[a-z0-9-]+$", "ui:autofocus": true},
                        "owner": {"type": "string", "ui:field": "OwnerPicker"},
                        "language": {"type": "string", "enum": ["rust", "go"], "default": "rust"},
                    },
                },
                {
                    "title": "Deployment",
                    "properties": {
                        "deployment": {
                            "type": "object",
                            "required": ["replicas"],
                            "properties": {
                                "replicas": {"type": "integer", "minimum": 1, "default": 2},
                                "region": {"type": "string", "enum": ["eu", "us"]},
                            },
                        },
                    },
                },
            ],
        }))
        .unwrap()
    }

    fn values(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn valid_values_come_back_with_defaults_filled_in() {
        let checked = schema().validate(&values(json!({"name": "checkout", "owner": "team-a"}))).unwrap();
        assert_eq!(
            Value::Object(checked),
            json!({"name": "checkout", "owner": "team-a", "language": "rust", "deployment": {"replicas": 2}})
        );
    }

    #[test]
    fn a_given_value_wins_over_its_default() {
        let checked = schema()
            .validate(&values(json!({"name": "a", "owner": "t", "language": "go", "deployment": {"replicas": 5}})));
        let checked = checked.unwrap();
        assert_eq!(checked["language"], "go");
        assert_eq!(checked["deployment"]["replicas"], 5);
    }

    #[test]
    fn every_problem_is_reported_with_its_path_and_rule() {
        let error = schema()
            .validate(&values(
                json!({"name": "Not Valid", "language": "cobol", "deployment": {"replicas": 0, "region": "mars"}}),
            ))
            .unwrap_err();
        let mut found: Vec<(String, String)> =
            error.problems.iter().map(|problem| (problem.path.clone(), problem.rule.clone())).collect();
        found.sort();
        assert_eq!(
            found,
            [
                ("/deployment/region".to_owned(), "enum".to_owned()),
                ("/deployment/replicas".to_owned(), "minimum".to_owned()),
                ("/language".to_owned(), "enum".to_owned()),
                ("/name".to_owned(), "pattern".to_owned()),
                ("/owner".to_owned(), "required".to_owned()),
            ]
        );
    }

    #[test]
    fn a_problem_reads_as_a_sentence_naming_the_field_and_not_the_value() {
        let error = schema().validate(&values(json!({"name": "Secret Name", "owner": "t"}))).unwrap_err();
        let sentence = error.problems[0].to_string();
        assert!(sentence.starts_with("values.name: "), "{sentence}");
        assert!(sentence.contains("^[a-z0-9-]+$") && !sentence.contains("Secret Name"), "{sentence}");
        let missing = schema().validate(&values(json!({"name": "a"}))).unwrap_err();
        assert_eq!(missing.problems[0].to_string(), "values.owner: \"owner\" is a required property");
    }

    #[test]
    fn a_nested_missing_required_value_points_at_the_value() {
        let schema = ParameterSchema::compile(&json!({
            "properties": {"service": {"type": "object", "required": ["ports"], "properties": {"ports": {"type": "array", "items": {"type": "integer"}}}}},
        }))
        .unwrap();
        let error = schema.validate(&values(json!({"service": {}}))).unwrap_err();
        assert_eq!(error.problems[0].path, "/service/ports");
        let error = schema.validate(&values(json!({"service": {"ports": [80, "x"]}}))).unwrap_err();
        assert_eq!(error.problems[0].path, "/service/ports/1");
        assert!(error.problems[0].to_string().starts_with("values.service.ports[1]: "), "{}", error.problems[0]);
    }

    #[test]
    fn a_remote_or_file_reference_is_refused_without_being_fetched() {
        for reference in ["https://example.invalid/schema.json", "file:///etc/passwd"] {
            let compiled = ParameterSchema::compile(&json!({"properties": {"a": {"$ref": reference}}}));
            assert!(compiled.is_err(), "{reference}");
        }
    }

    #[test]
    fn a_backtracking_pattern_is_refused_when_the_schema_is_compiled() {
        let compiled =
            ParameterSchema::compile(&json!({"properties": {"a": {"type": "string", "pattern": "^(?=a)a$"}}}));
        assert!(compiled.unwrap_err().to_string().starts_with("the parameter schema is not valid: "));
    }

    #[test]
    fn a_local_reference_resolves() {
        let schema = ParameterSchema::compile(&json!({
            "definitions": {"name": {"type": "string", "minLength": 2}},
            "properties": {"a": {"$ref": "#/definitions/name"}},
        }))
        .unwrap();
        assert!(schema.validate(&values(json!({"a": "ok"}))).is_ok());
        assert_eq!(schema.validate(&values(json!({"a": "x"}))).unwrap_err().problems[0].rule, "minLength");
    }
}
