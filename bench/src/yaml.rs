//! A minimal YAML emitter for generated entities: block mappings, flow lists of
//! scalars, block literals for multi-line text, and every string double-quoted
//! (JSON string syntax is valid YAML), so nothing generated can be misread.

use std::fmt::Write;

use serde_json::Value;

pub fn document(value: &Value) -> String {
    let mut out = String::new();
    mapping(value, 0, &mut out);
    out
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(text) => serde_json::to_string(text).unwrap_or_default(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn is_scalar(value: &Value) -> bool {
    !value.is_object() && !value.is_array()
}

fn mapping(value: &Value, indent: usize, out: &mut String) {
    let Value::Object(map) = value else { return };
    let pad = " ".repeat(indent);
    for (key, value) in map {
        let key = serde_json::to_string(key).unwrap_or_default();
        match value {
            Value::String(text) if text.contains('\n') => {
                let _ = writeln!(out, "{pad}{key}: |");
                for line in text.lines() {
                    let _ = writeln!(out, "{pad}  {line}");
                }
            }
            Value::Object(inner) if inner.is_empty() => {
                let _ = writeln!(out, "{pad}{key}: {{}}");
            }
            Value::Object(_) => {
                let _ = writeln!(out, "{pad}{key}:");
                mapping(value, indent + 2, out);
            }
            Value::Array(items) if items.iter().all(is_scalar) => {
                let items: Vec<String> = items.iter().map(scalar).collect();
                let _ = writeln!(out, "{pad}{key}: [{}]", items.join(", "));
            }
            Value::Array(items) => {
                let _ = writeln!(out, "{pad}{key}:");
                for item in items {
                    let mut nested = String::new();
                    mapping(item, indent + 4, &mut nested);
                    let nested = nested.trim_start();
                    let _ = write!(out, "{pad}  - {nested}");
                }
            }
            scalar_value => {
                let _ = writeln!(out, "{pad}{key}: {}", scalar(scalar_value));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn emitted_yaml_reads_back_as_the_same_value() {
        let value = json!({
            "apiVersion": "backstage.io/v1alpha1",
            "metadata": {"name": "a", "description": "yes: no # not a comment", "tags": ["on", "x"], "labels": {}},
            "spec": {"definition": "openapi: 3.0.0\ninfo:\n  title: t\n", "steps": [{"id": "a", "input": {"x": 1}}, {"id": "b"}]}
        });
        let text = super::document(&value);
        assert_eq!(catalog_domain::document::parse_yaml(&text).unwrap(), value, "{text}");
    }
}
