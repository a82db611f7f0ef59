//! `catalog:write`: writes an entity as YAML, `catalog-info.yaml` unless a
//! path is given, so the new repository describes itself to the catalog.

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::action::{Action, ActionContext, ActionError, read_input};

pub(super) struct CatalogWrite;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Input {
    entity: Map<String, Value>,
    #[serde(default = "default_path")]
    file_path: String,
}

fn default_path() -> String {
    "catalog-info.yaml".to_owned()
}

impl Action for CatalogWrite {
    fn id(&self) -> &str {
        "catalog:write"
    }

    /// It only touches the workspace, which a dry run has too.
    fn supports_dry_run(&self) -> bool {
        true
    }

    fn is_local(&self) -> bool {
        true
    }

    fn description(&self) -> &str {
        "Writes an entity descriptor as YAML into the workspace (catalog-info.yaml by default)."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["entity"],
            "additionalProperties": false,
            "properties": {
                "entity": {"type": "object", "description": "The entity: apiVersion, kind, metadata, spec."},
                "filePath": {"type": "string", "description": "Where to write it (default catalog-info.yaml)."},
            },
        })
    }

    fn output_schema(&self) -> Value {
        json!({"type": "object"})
    }

    fn run<'a>(&'a self, context: &'a ActionContext, input: Value) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move {
            let input: Input = read_input(input)?;
            let yaml = serde_saphyr::to_string(&input.entity).map_err(|error| {
                ActionError::Failed(format!("catalog:write: the entity cannot be written as YAML: {error}"))
            })?;
            context.workspace().write(&input.file_path, yaml.as_bytes())?;
            Ok(json!({}))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::testing;
    use crate::secret::Secrets;

    #[tokio::test]
    async fn the_entity_is_written_as_yaml_that_the_catalog_reads_back() {
        let test = testing::context(Secrets::new(), None);
        let entity = json!({
            "apiVersion": "backstage.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": "checkout", "annotations": {"github.com/project-slug": "acme/checkout"}},
            "spec": {"type": "service", "lifecycle": "experimental", "owner": "team-a"},
        });
        CatalogWrite.run(&test.context, json!({"entity": entity})).await.unwrap();
        let yaml = String::from_utf8(test.context.workspace().read("catalog-info.yaml").unwrap()).unwrap();
        let parsed = catalog_domain::parse_entities(&yaml);
        assert_eq!(parsed.len(), 1, "{yaml}");
        let read = parsed.into_iter().next().unwrap();
        assert_eq!(read.entity_ref().to_string(), "component:default/checkout");
        assert_eq!(read.metadata.annotations["github.com/project-slug"], "acme/checkout");
    }

    #[tokio::test]
    async fn a_given_path_is_used_instead() {
        let test = testing::context(Secrets::new(), None);
        CatalogWrite
            .run(&test.context, json!({"entity": {"kind": "x"}, "filePath": "meta/entity.yaml"}))
            .await
            .unwrap();
        assert!(test.context.workspace().exists("meta/entity.yaml").unwrap());
    }
}
