//! Which fields changed between two versions of an entity, as the dotted paths
//! change events carry (`spec.owner`, `metadata.tags`, `metadata.labels.tier`).

use serde_json::Value;

/// Paths the catalog sets itself on every write; a change there is no news.
const IGNORED: &[&str] = &["metadata.etag", "metadata.uid", "relations"];

/// The dotted paths whose values differ between `old` and `new`, sorted.
/// Objects are compared key by key down to the leaves; a list is one value
/// (a changed tag list is `metadata.tags`, not an index).
pub fn changed_paths(old: &Value, new: &Value) -> Vec<String> {
    let mut paths = Vec::new();
    walk("", old, new, &mut paths);
    paths.retain(|path| !IGNORED.contains(&path.as_str()));
    paths.sort();
    paths
}

fn walk(path: &str, old: &Value, new: &Value, paths: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, old_value) in old {
                let child = join(path, key);
                walk(&child, old_value, new.get(key).unwrap_or(&Value::Null), paths);
            }
            for (key, new_value) in new {
                if !old.contains_key(key) && !new_value.is_null() {
                    paths.push(join(path, key));
                }
            }
        }
        (old, new) if old != new => paths.push(path.to_owned()),
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::changed_paths;

    #[test]
    fn nested_changes_additions_and_removals_are_named_by_path() {
        let old = json!({
            "metadata": {"name": "a", "tags": ["java"], "labels": {"tier": "1"}, "etag": "x"},
            "spec": {"owner": "team-a", "lifecycle": "production", "system": "s"}
        });
        let new = json!({
            "metadata": {"name": "a", "tags": ["java", "grpc"], "labels": {"tier": "2", "pci": "yes"}, "etag": "y"},
            "spec": {"owner": "team-b", "lifecycle": "production"}
        });
        assert_eq!(
            changed_paths(&old, &new),
            vec!["metadata.labels.pci", "metadata.labels.tier", "metadata.tags", "spec.owner", "spec.system"]
        );
    }

    #[test]
    fn equal_versions_and_catalog_bookkeeping_change_nothing() {
        let old = json!({"metadata": {"name": "a", "etag": "1", "uid": "u1"}, "spec": {}});
        let new = json!({"metadata": {"name": "a", "etag": "2", "uid": "u1"}, "spec": {}});
        assert!(changed_paths(&old, &new).is_empty());
    }
}
