//! `validateEntity` and the `validate` command: every document of a YAML
//! text with its outcome, and each problem with the field and rule it broke.

use async_graphql::SimpleObject;
use catalog_domain::{DocumentOutcome, parse_documents};

/// One problem of one document.
#[derive(SimpleObject)]
pub struct ValidationProblem {
    /// The field path, e.g. `spec.owner` (`(document)` for the whole document).
    pub field: String,
    /// The stable rule code, e.g. `name.pattern`.
    pub rule: String,
    pub message: String,
}

/// The outcome of one document.
#[derive(SimpleObject)]
pub struct DocumentReport {
    pub index: i32,
    pub line: i32,
    pub entity_ref: Option<String>,
    pub valid: bool,
    pub problems: Vec<ValidationProblem>,
}

#[derive(SimpleObject)]
pub struct ValidationReport {
    pub valid: bool,
    pub documents: Vec<DocumentReport>,
}

/// Every document's outcome, shared by the API and the `validate` command.
pub fn validation_report(yaml: &str) -> ValidationReport {
    let documents: Vec<DocumentReport> = parse_documents(yaml)
        .into_iter()
        .map(|document| {
            let index = i32::try_from(document.index).unwrap_or(i32::MAX);
            let line = i32::try_from(document.line).unwrap_or(i32::MAX);
            match document.outcome {
                DocumentOutcome::Entity(entity) => DocumentReport {
                    index,
                    line,
                    entity_ref: Some(entity.entity_ref().to_string()),
                    valid: true,
                    problems: Vec::new(),
                },
                DocumentOutcome::Invalid { entity_ref, errors } => DocumentReport {
                    index,
                    line,
                    entity_ref: entity_ref.map(|entity_ref| entity_ref.to_string()),
                    valid: false,
                    problems: errors
                        .into_iter()
                        .map(|error| ValidationProblem {
                            field: error.field.clone(),
                            rule: error.rule.code().to_owned(),
                            message: error.message,
                        })
                        .collect(),
                },
                DocumentOutcome::Unparsable { message } => DocumentReport {
                    index,
                    line,
                    entity_ref: None,
                    valid: false,
                    problems: vec![ValidationProblem { field: "(document)".into(), rule: "yaml".into(), message }],
                },
            }
        })
        .collect();
    ValidationReport { valid: !documents.is_empty() && documents.iter().all(|document| document.valid), documents }
}
