//! `github:webhook`: adds a webhook to a repository (POST
//! /repos/{o}/{r}/hooks).
//!
//! The webhook's secret reaches the action as a rendered `${{ secrets.x }}`;
//! it is held as a [`Secret`] from the moment the input is read, goes into
//! the request body only, and is never logged or returned.

use std::sync::Arc;

use futures::future::BoxFuture;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{GithubClient, RepoLocation};
use crate::action::{Action, ActionContext, ActionError, read_input};
use crate::secret::Secret;

const ID: &str = "github:webhook";

pub(super) struct GithubWebhook {
    client: Arc<GithubClient>,
}

impl GithubWebhook {
    pub(super) fn new(client: Arc<GithubClient>) -> Self {
        Self { client }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Input {
    repo_url: String,
    webhook_url: String,
    #[serde(default, deserialize_with = "secret")]
    webhook_secret: Option<Secret>,
    #[serde(default = "default_events")]
    events: Vec<String>,
    #[serde(default = "default_active")]
    active: bool,
    #[serde(default)]
    content_type: ContentType,
    #[serde(default)]
    insecure_ssl: bool,
}

/// Reads the secret straight into a [`Secret`], so no plain `String` of it
/// lingers in a type that prints itself.
fn secret<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Secret>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    Ok(text.filter(|text| !text.is_empty()).map(Secret::new))
}

fn default_events() -> Vec<String> {
    vec!["push".to_owned()]
}

fn default_active() -> bool {
    true
}

#[derive(Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ContentType {
    /// GitHub's and Backstage's default.
    #[default]
    Form,
    Json,
}

impl Action for GithubWebhook {
    fn id(&self) -> &str {
        ID
    }

    fn description(&self) -> &str {
        "Adds a webhook to a GitHub repository."
    }

    /// A dry run calls nothing and returns outputs built from the input.
    fn supports_dry_run(&self) -> bool {
        true
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["repoUrl", "webhookUrl"],
            "additionalProperties": false,
            "properties": {
                "repoUrl": {"type": "string", "description": "The repository: github.com?owner=o&repo=r."},
                "webhookUrl": {"type": "string", "description": "Where GitHub delivers events."},
                "webhookSecret": {"type": "string", "description": "Signs deliveries; pass it as ${{ secrets.name }}."},
                "events": {"type": "array", "items": {"type": "string"}, "description": "Default: [push]."},
                "active": {"type": "boolean", "description": "Default true."},
                "contentType": {"type": "string", "enum": ["form", "json"], "description": "Default form."},
                "insecureSsl": {"type": "boolean", "description": "Skip TLS verification of deliveries (default false)."},
            },
        })
    }

    fn output_schema(&self) -> Value {
        json!({"type": "object"})
    }

    fn run<'a>(&'a self, context: &'a ActionContext, input: Value) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move {
            let input: Input = read_input(input)?;
            let location = RepoLocation::parse(&input.repo_url, self.client.web_host())?;
            let is_web_url =
                url::Url::parse(&input.webhook_url).is_ok_and(|url| matches!(url.scheme(), "http" | "https"));
            if !is_web_url {
                return Err(ActionError::Input("webhookUrl: must be an http or https URL".into()));
            }
            if input.events.is_empty() {
                return Err(ActionError::Input("events: must name at least one event".into()));
            }
            let slug = location.slug();
            let events = input.events.join(", ");
            if context.dry_run() {
                context.logger().info(&format!("dry run: would add a webhook to {slug} for {events}"));
                return Ok(json!({}));
            }
            context.logger().info(&format!("adding a webhook to {slug} for {events}"));
            let mut config = json!({
                "url": input.webhook_url,
                "content_type": match input.content_type {
                    ContentType::Form => "form",
                    ContentType::Json => "json",
                },
                "insecure_ssl": if input.insecure_ssl { "1" } else { "0" },
            });
            if let Some(secret) = &input.webhook_secret {
                config["secret"] = json!(secret.expose());
            }
            let body = json!({"name": "web", "active": input.active, "events": input.events, "config": config});
            let purpose = format!("add a webhook to {slug}");
            self.client
                .send(context, Method::POST, &format!("/repos/{slug}/hooks"), Some(&body), &purpose)
                .await
                .map_err(|error| error.into_action_error(ID))?;
            Ok(json!({}))
        })
    }
}
