//! The example catalog's templates (`examples/templates/`), read from their
//! real files and run as dry runs: every step renders, the skeletons'
//! names and contents come out with the values, the rendered
//! `catalog-info.yaml` is an entity the catalog accepts, and the output
//! links point at the repository and the registered entity.
//!
//! `catalog:register` needs the catalog and lives in the api crate; a
//! stand-in registered here answers dry runs the way it will: with the
//! reference of the entity in the workspace's catalog-info.yaml.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use catalog_domain::DocumentOutcome;
use catalog_scaffolder::{
    Action, ActionContext, ActionError, ActionRegistry, DryRunFile, EventSink, GithubPublishConfig, RunOutcome, Runner,
    Secrets, TaskEvent, TaskRun, Template, Workspace,
};
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

/// Answers a dry run with the reference of the entity the workspace's
/// catalog-info.yaml describes, as `catalog:register` will.
struct CatalogRegisterStandIn;

impl Action for CatalogRegisterStandIn {
    fn id(&self) -> &str {
        "catalog:register"
    }

    /// It only reads the workspace, so it may run in the dry runs below.
    fn supports_dry_run(&self) -> bool {
        true
    }

    fn description(&self) -> &str {
        "Test stand-in for catalog:register (dry runs only)."
    }

    fn input_schema(&self) -> Value {
        json!({"type": "object"})
    }

    fn output_schema(&self) -> Value {
        json!({"type": "object", "properties": {"entityRef": {"type": "string"}}})
    }

    fn run<'a>(&'a self, context: &'a ActionContext, input: Value) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move {
            if !context.dry_run() {
                return Err(ActionError::Failed("the stand-in only answers dry runs".into()));
            }
            let contents_url = input["repoContentsUrl"].as_str().unwrap_or_default();
            if !contents_url.starts_with("https://") {
                return Err(ActionError::Input(format!("repoContentsUrl: {contents_url:?} is not a URL")));
            }
            let path = input["catalogInfoPath"].as_str().unwrap_or("/catalog-info.yaml").trim_start_matches('/');
            let text = String::from_utf8(context.workspace().read(path)?).unwrap();
            let entity = catalog_domain::parse_entities(&text)
                .into_iter()
                .next()
                .ok_or_else(|| ActionError::Failed(format!("{path} holds no valid entity")))?;
            Ok(json!({"entityRef": entity.entity_ref().to_string()}))
        })
    }
}

#[derive(Default)]
struct Events(Mutex<Vec<TaskEvent>>);

impl EventSink for Events {
    fn emit(&self, event: TaskEvent) {
        self.0.lock().unwrap().push(event);
    }
}

fn templates_directory() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/templates")
}

/// The template of an example file, which must be one valid entity.
fn example_template(file: &str) -> Template {
    let text = std::fs::read_to_string(templates_directory().join(file)).unwrap();
    let documents = catalog_domain::parse_documents(&text);
    assert_eq!(documents.len(), 1, "{file}");
    let DocumentOutcome::Entity(entity) = &documents[0].outcome else {
        panic!("{file} is not a valid entity: {:?}", documents[0].problems());
    };
    Template::from_entity(entity).unwrap_or_else(|error| panic!("{file}: {error}"))
}

fn registry() -> ActionRegistry {
    let mut registry = ActionRegistry::with_builtins();
    // No token: a dry run needs none.
    GithubPublishConfig::default().build_with_environment(|_| None).unwrap().register(&mut registry).unwrap();
    registry.register(Arc::new(CatalogRegisterStandIn)).unwrap();
    registry
}

async fn dry_run(template: &Template, values: Value) -> RunOutcome {
    let Value::Object(values) = values else { unreachable!("values are an object") };
    let events = Arc::new(Events::default());
    let task = TaskRun {
        values,
        secrets: Secrets::new(),
        user: json!({"ref": "user:default/alice"}),
        dry_run: true,
        template_directory: Some(templates_directory()),
        workspace: Arc::new(Workspace::temporary().unwrap()),
        cancellation: CancellationToken::new(),
        start_at: 0,
        previous_outputs: Map::new(),
    };
    let result = Runner::new(registry()).run(template, task, Arc::clone(&events) as Arc<dyn EventSink>).await;
    result.unwrap_or_else(|error| panic!("{error}; events: {:?}", events.0.lock().unwrap()))
}

fn file<'a>(outcome: &'a RunOutcome, path: &str) -> &'a str {
    let found = outcome.files.iter().find(|file| file.path == path);
    &found.unwrap_or_else(|| panic!("{path} is not among {:?}", paths(outcome))).contents
}

fn paths(outcome: &RunOutcome) -> Vec<&str> {
    outcome.files.iter().map(|file| file.path.as_str()).collect()
}

/// Every file is text with no expression left unrendered.
fn assert_fully_rendered(outcome: &RunOutcome) {
    for DryRunFile { path, contents, base64 } in &outcome.files {
        assert!(!base64, "{path} is not text");
        for delimiter in ["${{", "${%", "${#"] {
            assert!(!contents.contains(delimiter), "{path} keeps {delimiter}: {contents}");
        }
    }
}

/// The one entity a rendered catalog-info.yaml describes.
fn catalog_entity(outcome: &RunOutcome) -> catalog_domain::Entity {
    let documents = catalog_domain::parse_documents(file(outcome, "catalog-info.yaml"));
    assert_eq!(documents.len(), 1);
    match &documents[0].outcome {
        DocumentOutcome::Entity(entity) => (**entity).clone(),
        _ => panic!("catalog-info.yaml is not a valid entity: {:?}", documents[0].problems()),
    }
}

#[tokio::test]
async fn the_rust_service_template_renders_its_skeleton_and_links_in_a_dry_run() {
    let template = example_template("service-template.yaml");
    let values = json!({
        "name": "checkout",
        "owner": "team-payments",
        "system": "billing",
        "repoUrl": "github.com?owner=acme&repo=checkout",
    });
    let outcome = dry_run(&template, values).await;
    assert_eq!(
        paths(&outcome),
        [".github/workflows/ci.yml", "Cargo.toml", "Dockerfile", "README.md", "catalog-info.yaml", "src/main.rs"]
    );
    assert_fully_rendered(&outcome);
    assert!(file(&outcome, "Cargo.toml").contains("name = \"checkout\""));
    assert!(file(&outcome, "src/main.rs").contains("println!(\"checkout listening on {address}\");"));
    assert!(
        file(&outcome, "README.md")
            .starts_with("# checkout\n\nA Rust service owned by team-payments, part of the billing system.\n")
    );
    assert!(file(&outcome, "Dockerfile").contains("/src/target/release/checkout "));

    let entity = catalog_entity(&outcome);
    assert_eq!(entity.entity_ref().to_string(), "component:default/checkout");
    assert_eq!(entity.spec_str("owner"), Some("team-payments"));
    assert_eq!(entity.spec_str("system"), Some("billing"));
    assert_eq!(entity.spec_str("type"), Some("service"));

    assert_eq!(outcome.step_outputs["publish"]["repoContentsUrl"], "https://github.com/acme/checkout/blob/main");
    assert_eq!(
        outcome.output,
        json!({"links": [
            {"title": "Repository", "url": "https://github.com/acme/checkout.git"},
            {"title": "Open in catalog", "icon": "catalog", "entityRef": "component:default/checkout"},
        ]})
    );
}

#[tokio::test]
async fn the_rust_service_template_leaves_the_system_out_when_none_is_given() {
    let template = example_template("service-template.yaml");
    let values = json!({"name": "ledger", "owner": "team-payments", "repoUrl": "github.com?owner=acme&repo=ledger"});
    let outcome = dry_run(&template, values).await;
    assert_fully_rendered(&outcome);
    let entity = catalog_entity(&outcome);
    assert_eq!(entity.entity_ref().to_string(), "component:default/ledger");
    assert_eq!(entity.spec_str("system"), None);
    assert!(file(&outcome, "README.md").contains("owned by team-payments.\n"));
}

#[tokio::test]
async fn the_docs_site_template_renders_a_techdocs_site_and_links_in_a_dry_run() {
    let template = example_template("docs-site-template.yaml");
    assert_eq!(template.template_type(), "documentation");
    let values =
        json!({"name": "handbook", "owner": "team-platform-dx", "repoUrl": "github.com?owner=acme&repo=handbook-docs"});
    let outcome = dry_run(&template, values).await;
    assert_eq!(paths(&outcome), ["catalog-info.yaml", "docs/index.md", "mkdocs.yml"]);
    assert_fully_rendered(&outcome);
    assert!(file(&outcome, "mkdocs.yml").starts_with("site_name: handbook\n"));
    assert!(file(&outcome, "mkdocs.yml").contains("repo_url: https://github.com/acme/handbook-docs\n"));
    assert!(file(&outcome, "docs/index.md").starts_with("# handbook\n"));

    let entity = catalog_entity(&outcome);
    assert_eq!(entity.entity_ref().to_string(), "component:default/handbook");
    assert_eq!(entity.spec_str("owner"), Some("team-platform-dx"));
    assert_eq!(entity.spec_str("type"), Some("documentation"));
    assert_eq!(entity.metadata.annotations["backstage.io/techdocs-ref"], "dir:.");
    assert_eq!(entity.metadata.annotations["github.com/project-slug"], "acme/handbook-docs");

    assert_eq!(
        outcome.output,
        json!({"links": [
            {"title": "Repository", "url": "https://github.com/acme/handbook-docs.git"},
            {"title": "Open in catalog", "icon": "catalog", "entityRef": "component:default/handbook"},
        ]})
    );
}
