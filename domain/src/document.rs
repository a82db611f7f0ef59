//! Safe parsing of untrusted catalog files: YAML (and JSON, which is YAML) split
//! into documents, each parsed under resource limits and validated on its own, so
//! one broken document yields its error and never hides the good ones.

use serde_json::Value;

use crate::entity::Entity;
use crate::entity_ref::EntityRef;
use crate::validation::{ValidationError, validate};

/// The largest catalog file accepted, in bytes. Backstage descriptors are a few
/// kilobytes; inline API definitions can reach hundreds.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// What became of one document of a file.
#[derive(Clone, Debug)]
pub enum DocumentOutcome {
    /// A valid entity, with its relations derived.
    Entity(Box<Entity>),
    /// Parsed but invalid. `entity_ref` is known when kind and name were readable,
    /// so that the catalog can attach the errors to the last good version.
    Invalid { entity_ref: Option<EntityRef>, errors: Vec<ValidationError> },
    /// Not YAML, or over a resource limit.
    Unparsable { message: String },
}

/// One document of a file: its position (0-based index, 1-based first line) and outcome.
#[derive(Clone, Debug)]
pub struct ParsedDocument {
    pub index: usize,
    pub line: usize,
    pub outcome: DocumentOutcome,
}

impl ParsedDocument {
    /// Every problem of the document as sentences; empty when it is valid.
    pub fn problems(&self) -> Vec<String> {
        match &self.outcome {
            DocumentOutcome::Entity(_) => Vec::new(),
            DocumentOutcome::Invalid { errors, .. } => errors.iter().map(ToString::to_string).collect(),
            DocumentOutcome::Unparsable { message } => vec![message.clone()],
        }
    }
}

/// Parses every document of a file and validates each as an entity. Empty
/// documents (comments only) are skipped.
pub fn parse_documents(text: &str) -> Vec<ParsedDocument> {
    if text.len() > MAX_FILE_BYTES {
        return vec![ParsedDocument {
            index: 0,
            line: 1,
            outcome: DocumentOutcome::Unparsable {
                message: format!("the file is {} bytes, over the limit of {MAX_FILE_BYTES} bytes", text.len()),
            },
        }];
    }
    split_documents(text)
        .into_iter()
        .enumerate()
        .filter_map(|(index, (line, body))| {
            let value = match parse_yaml(body) {
                Ok(Value::Null) => return None,
                Ok(value) => value,
                Err(error) => {
                    let message = error.to_string();
                    return Some(ParsedDocument { index, line, outcome: DocumentOutcome::Unparsable { message } });
                }
            };
            let outcome = match validate(&value) {
                Ok(entity) => DocumentOutcome::Entity(Box::new(entity)),
                Err(errors) => DocumentOutcome::Invalid { entity_ref: readable_ref(&value), errors },
            };
            Some(ParsedDocument { index, line, outcome })
        })
        .collect()
}

/// The valid entities of a file, for callers that report problems elsewhere.
pub fn parse_entities(text: &str) -> Vec<Entity> {
    parse_documents(text)
        .into_iter()
        .filter_map(|document| match document.outcome {
            DocumentOutcome::Entity(entity) => Some(*entity),
            _ => None,
        })
        .collect()
}

/// A text that is not one YAML document within the limits of [`parse_yaml`].
#[derive(Debug, thiserror::Error)]
#[error("invalid YAML: {0}")]
pub struct YamlError(#[from] serde_saphyr::Error);

/// Parses one YAML document into JSON under the limits untrusted input needs:
/// bounded depth, nodes and alias expansion, duplicate keys rejected at any depth,
/// and YAML 1.2 booleans only (`on`, `yes` and `no` stay strings, as in Backstage).
pub fn parse_yaml(text: &str) -> Result<Value, YamlError> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 64,
            max_nodes: 200_000,
            max_events: 400_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_total_scalar_bytes: 16 * 1024 * 1024,
        },
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        strict_booleans: true,
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options::<Option<Value>>(text, options)
        .map(|value| value.unwrap_or(Value::Null))
        .map_err(YamlError)
}

/// Splits a YAML stream at `---` and `...` markers in column 0, returning each
/// document with its first line number. Splitting ourselves, rather than letting
/// the parser read the whole stream, is what lets one broken document not take
/// the others with it.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (line_index, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end_matches(['\n', '\r']);
        let is_start = trimmed == "---" || trimmed.starts_with("--- ") || trimmed.starts_with("---\t");
        let is_end = trimmed == "..." || trimmed.starts_with("... ");
        if is_start || is_end {
            documents.push((start_line, &text[start..offset]));
            // Content after `--- ` on the same line belongs to the new document.
            start = if is_start { offset + 3 } else { offset + line.len() };
            // Lines are 1-based; a bare marker's document starts on the next line.
            start_line = if is_start && trimmed.len() > 3 { line_index + 1 } else { line_index + 2 };
        }
        offset += line.len();
    }
    documents.push((start_line, &text[start..]));
    documents.retain(|(_, body)| !body.trim().is_empty());
    documents
}

fn readable_ref(value: &Value) -> Option<EntityRef> {
    let kind = value.get("kind")?.as_str()?;
    let metadata = value.get("metadata")?;
    let name = metadata.get("name")?.as_str()?;
    let namespace = metadata.get("namespace").and_then(Value::as_str).unwrap_or(crate::entity_ref::DEFAULT_NAMESPACE);
    let text = format!("{kind}:{namespace}/{name}");
    EntityRef::parse(&text).ok()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    const COMPONENT: &str = "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: a\nspec:\n  type: service\n  lifecycle: production\n  owner: team-a\n";

    #[test]
    fn every_document_of_a_file_is_parsed() {
        let text = format!("{COMPONENT}---\n{}", COMPONENT.replace("name: a", "name: b"));
        let names: Vec<String> = parse_entities(&text).into_iter().map(|entity| entity.metadata.name).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn a_broken_document_does_not_hide_the_good_ones() {
        let text = format!("{COMPONENT}---\nkind: [unclosed\n---\n{}", COMPONENT.replace("name: a", "name: c"));
        let documents = parse_documents(&text);
        assert_eq!(documents.len(), 3);
        assert!(matches!(documents[0].outcome, DocumentOutcome::Entity(_)));
        assert!(matches!(documents[1].outcome, DocumentOutcome::Unparsable { .. }));
        assert_eq!(documents[1].line, 10);
        assert!(matches!(documents[2].outcome, DocumentOutcome::Entity(_)));
    }

    #[test]
    fn an_invalid_document_reports_its_ref_and_every_error() {
        let text = COMPONENT.replace("  owner: team-a\n", "").replace("type: service", "type: 7");
        let documents = parse_documents(&text);
        let DocumentOutcome::Invalid { entity_ref, errors } = &documents[0].outcome else { panic!("expected invalid") };
        assert_eq!(entity_ref.as_ref().unwrap().to_string(), "component:default/a");
        let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, ["spec.type", "spec.owner"]);
    }

    #[test]
    fn empty_documents_and_comments_are_skipped() {
        let text = format!("# header\n---\n{COMPONENT}---\n# trailing\n");
        assert_eq!(parse_documents(&text).len(), 1);
    }

    #[test]
    fn duplicate_keys_are_an_error_at_any_depth() {
        let text = COMPONENT.replace("  owner: team-a\n", "  owner: team-a\n  owner: team-b\n");
        let documents = parse_documents(&text);
        assert!(matches!(documents[0].outcome, DocumentOutcome::Unparsable { .. }), "{documents:?}");
        let nested = "a:\n  b:\n    c: 1\n    c: 2\n";
        assert!(parse_yaml(nested).is_err());
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        let value = parse_yaml("a: on\nb: yes\nc: no\nd: true\n").unwrap();
        assert_eq!(value["a"], "on");
        assert_eq!(value["b"], "yes");
        assert_eq!(value["c"], "no");
        assert_eq!(value["d"], true);
    }

    #[test]
    fn an_alias_expansion_bomb_is_rejected_quickly() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..10 {
            let previous = level - 1;
            text.push_str(&format!("a{level}: &a{level} [*a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}]\n"));
        }
        let started = Instant::now();
        assert!(parse_yaml(&text).is_err());
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    #[test]
    fn a_deeply_nested_document_is_rejected_quickly() {
        let depth = 100_000;
        let text = format!("a: {}{}", "[".repeat(depth), "]".repeat(depth));
        let started = Instant::now();
        assert!(parse_yaml(&text).is_err());
        let block: String = (0..200).map(|level| format!("{}k{level}:\n", "  ".repeat(level))).collect();
        assert!(parse_yaml(&block).is_err());
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    #[test]
    fn a_file_over_the_size_limit_is_one_clear_error() {
        let text = "#".repeat(MAX_FILE_BYTES + 1);
        let documents = parse_documents(&text);
        assert!(documents[0].problems()[0].contains("over the limit"));
    }

    #[test]
    fn json_documents_are_accepted() {
        let text = r#"{"apiVersion":"backstage.io/v1alpha1","kind":"Group","metadata":{"name":"g"},"spec":{"type":"team","children":[]}}"#;
        assert_eq!(parse_entities(text).len(), 1);
    }
}
