//! The scaffolder as this server runs it: its configuration section, the
//! action registry (built-ins, the GitHub actions, and `catalog:register`,
//! which needs the catalog and so lives here), and the task service.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use catalog_ingestion::{Engine, GithubFileUrl, GithubRefresh, RepositoryHint};
use catalog_scaffolder::{
    Action, ActionContext, ActionError, ActionExample, ActionRegistry, GithubPublishConfig, TaskConfig, TaskService,
    TemplateFiles,
};
use catalog_store::{Catalog, Filter, FilterField, ListQuery, Predicate, TaskStore};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `scaffolder` in the configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScaffolderConfig {
    /// Tasks this replica runs at once; more wait for a free worker.
    pub workers: usize,
    /// How often a running task's runner records that it is alive.
    pub heartbeat_seconds: u64,
    /// A task unheard of for this long is failed (its server stopped).
    pub abandoned_after_seconds: u64,
    /// How long `catalog:register` waits for the new entities to appear.
    pub register_timeout_seconds: u64,
    /// Where `publish:github` and `github:webhook` send requests, and the token.
    pub github: GithubPublishConfig,
}

impl Default for ScaffolderConfig {
    fn default() -> Self {
        let tasks = TaskConfig::default();
        Self {
            workers: tasks.workers,
            heartbeat_seconds: tasks.heartbeat_seconds,
            abandoned_after_seconds: tasks.abandoned_after_seconds,
            register_timeout_seconds: 60,
            github: GithubPublishConfig::default(),
        }
    }
}

/// The task service with every action this server offers.
pub fn task_service(
    config: &ScaffolderConfig,
    task_store: TaskStore,
    catalog: Catalog,
    engine: Engine,
) -> anyhow::Result<TaskService> {
    let mut registry = ActionRegistry::with_builtins();
    let github = config.github.build().context("invalid scaffolder.github configuration")?;
    if !github.has_token() {
        tracing::warn!(
            variable = %config.github.token_variable,
            "no GitHub token for the scaffolder: publish:github and github:webhook only work in dry runs"
        );
    }
    github.register(&mut registry).context("cannot register the GitHub actions")?;
    let register_engine = engine.clone();
    let register =
        CatalogRegister { catalog, engine, timeout: Duration::from_secs(config.register_timeout_seconds.max(1)) };
    registry.register(Arc::new(register)).context("cannot register catalog:register")?;
    let tasks = TaskConfig {
        workers: config.workers,
        heartbeat_seconds: config.heartbeat_seconds,
        abandoned_after_seconds: config.abandoned_after_seconds,
    };
    let files = GithubTemplateFiles { engine: register_engine };
    Ok(TaskService::new(task_store, registry, tasks).with_template_files(Arc::new(files)))
}

/// The most files and bytes of a template directory fetched from GitHub.
const TEMPLATE_DIRECTORY_LIMITS: (usize, usize) = (2_000, 32 * 1024 * 1024);

/// Templates read from GitHub get their directory (skeletons) through the
/// GitHub provider reading their organisation.
struct GithubTemplateFiles {
    engine: Engine,
}

impl TemplateFiles for GithubTemplateFiles {
    fn fetch<'a>(
        &'a self,
        location: &'a str,
        target: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<(), Box<dyn std::error::Error + Send + Sync>>> {
        Box::pin(async move {
            let url = location.strip_prefix("url:").unwrap_or(location);
            self.engine.download_github_directory(url, target, TEMPLATE_DIRECTORY_LIMITS).await?;
            Ok(())
        })
    }
}

/// How often `catalog:register` reads the new repository again while it waits.
const REREAD_EVERY: Duration = Duration::from_secs(5);

/// `catalog:register`: has the GitHub provider that reads the repository's
/// organisation read that repository now (a targeted re-read, as a webhook
/// would), then waits until the catalog file's entities are in the catalog.
struct CatalogRegister {
    catalog: Catalog,
    engine: Engine,
    timeout: Duration,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegisterInput {
    /// `https://github.com/ORG/REPO/blob/BRANCH`, as publish:github returns it.
    repo_contents_url: Option<String>,
    #[serde(default = "default_catalog_path")]
    catalog_info_path: String,
    /// Or the catalog file's URL whole.
    catalog_info_url: Option<String>,
    #[serde(default)]
    optional: bool,
}

fn default_catalog_path() -> String {
    "/catalog-info.yaml".into()
}

impl Action for CatalogRegister {
    fn id(&self) -> &str {
        "catalog:register"
    }

    fn description(&self) -> &str {
        "Reads the new repository's catalog file into the catalog now (through the GitHub provider of its \
         organisation) and waits until its entities are visible."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "repoContentsUrl": {"type": "string", "description": "https://HOST/ORG/REPO/blob/BRANCH"},
                "catalogInfoPath": {"type": "string", "default": "/catalog-info.yaml"},
                "catalogInfoUrl": {"type": "string", "description": "The catalog file's URL, instead of the two above."},
                "optional": {"type": "boolean", "description": "Succeed even when no entity appears."},
            },
        })
    }

    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "entityRef": {"type": "string", "description": "The first entity of the file."},
                "entityRefs": {"type": "array", "items": {"type": "string"}},
                "catalogInfoUrl": {"type": "string"},
            },
        })
    }

    fn examples(&self) -> Vec<ActionExample> {
        vec![ActionExample {
            description: "Register what publish:github pushed.".into(),
            step: json!({"id": "register", "action": "catalog:register", "input": {
                "repoContentsUrl": "${{ steps.publish.output.repoContentsUrl }}",
                "catalogInfoPath": "/catalog-info.yaml",
            }}),
        }]
    }

    fn run<'a>(&'a self, context: &'a ActionContext, input: Value) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move {
            let input: RegisterInput =
                serde_json::from_value(input).map_err(|error| ActionError::Input(error.to_string()))?;
            let url = match (&input.catalog_info_url, &input.repo_contents_url) {
                (Some(url), _) => url.clone(),
                (None, Some(contents)) => {
                    format!("{}/{}", contents.trim_end_matches('/'), input.catalog_info_path.trim_start_matches('/'))
                }
                (None, None) => {
                    return Err(ActionError::Input("repoContentsUrl or catalogInfoUrl is required".into()));
                }
            };
            let GithubFileUrl { owner, repository, html_url, .. } = GithubFileUrl::parse(&url).ok_or_else(|| {
                ActionError::Input(format!("{url} is not a GitHub file URL (https://HOST/ORG/REPO/blob/BRANCH/PATH)"))
            })?;
            let hint = RepositoryHint { full_name: format!("{owner}/{repository}"), html_url, gone: false };
            let providers = self.engine.github_providers_for(&owner);
            if providers.is_empty() {
                return Err(ActionError::Failed(format!(
                    "no GitHub provider reads the organisation {owner}: add one to ingestion.providers"
                )));
            }
            context.logger().info(&format!("reading {} through {}", hint.full_name, providers.join(", ")));
            let location = format!("url:{url}");
            let deadline = tokio::time::Instant::now() + self.timeout;
            let mut next_read = tokio::time::Instant::now();
            loop {
                context.check_cancelled()?;
                // Read the repository now and then again every few seconds
                // (GitHub may serve the new repository late), polling the
                // store in between.
                let reading = tokio::time::Instant::now() >= next_read;
                if reading {
                    next_read = tokio::time::Instant::now() + REREAD_EVERY;
                }
                for provider in providers.iter().filter(|_| reading) {
                    let refresh =
                        GithubRefresh::Repositories { provider: provider.clone(), repositories: vec![hint.clone()] };
                    if let Err(error) = self.engine.refresh_github(&refresh).await {
                        context.logger().info(&format!("reading through {provider} failed: {error}"));
                    }
                }
                let refs = self.entities_of(&location).await?;
                if !refs.is_empty() || input.optional {
                    let first = refs.first().cloned().unwrap_or_default();
                    return Ok(json!({"entityRef": first, "entityRefs": refs, "catalogInfoUrl": url}));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(ActionError::Failed(format!(
                        "no entity from {url} appeared in the catalog within {} s (is the file valid, and does the \
                         provider select the repository?)",
                        self.timeout.as_secs()
                    )));
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = context.cancellation().cancelled() => return Err(ActionError::Cancelled),
                }
            }
        })
    }
}

impl CatalogRegister {
    async fn entities_of(&self, location: &str) -> Result<Vec<String>, ActionError> {
        let key = format!("metadata.annotations.{}", catalog_ingestion::MANAGED_BY_LOCATION);
        let query = ListQuery {
            filter: Some(Filter::Field {
                field: FilterField::Path(key),
                predicate: Predicate::In(vec![location.into()]),
            }),
            limit: 100,
            ..ListQuery::default()
        };
        let page = self
            .catalog
            .list_entities(&query)
            .await
            .map_err(|error| ActionError::Failed(format!("cannot read the catalog: {error}")))?;
        Ok(page.entities.iter().map(|stored| stored.entity_ref.to_string()).collect())
    }
}
