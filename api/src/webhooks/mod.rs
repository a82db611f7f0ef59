//! Webhooks: deliveries from the systems the catalog reads, each a hint that
//! triggers a targeted re-read (GitHub at `/webhooks/github`) or updates the
//! facts a provider holds (PagerDuty at `/webhooks/pagerduty`). Every
//! endpoint checks its signature over the raw body before parsing it and
//! answers through [`answer`], which tags the response for the deliveries
//! metric.

pub(crate) mod github;
pub(crate) mod pagerduty;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `webhooks` in the configuration.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// The secret GitHub signs deliveries with. Set it from the environment
    /// (`CATALOG_WEBHOOKS__GITHUB_SECRET`), never in a file; empty: the
    /// endpoint is off (404).
    pub github_secret: String,
    /// The secrets PagerDuty signs webhook (v3) deliveries with: one per
    /// subscription, two while one is rotated. Set them from the environment
    /// (`CATALOG_WEBHOOKS__PAGERDUTY_SECRETS='["the secret"]'`); empty: the
    /// endpoint is off (404).
    pub pagerduty_secrets: Vec<String>,
    /// Larger deliveries get 413 (GitHub caps payloads at 25 MB; the events
    /// the catalog reads are far smaller).
    pub max_body_bytes: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self { github_secret: String::new(), pagerduty_secrets: Vec::new(), max_body_bytes: 1024 * 1024 }
    }
}

impl std::fmt::Debug for WebhooksConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = if self.github_secret.is_empty() { "(unset)" } else { "(redacted)" };
        formatter
            .debug_struct("WebhooksConfig")
            .field("github_secret", &secret)
            .field("pagerduty_secrets", &format!("({} redacted)", self.pagerduty_secrets.len()))
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

/// What became of a webhook delivery, for `catalog_webhook_deliveries_total`
/// (`metrics::track` reads it from the response).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WebhookResult(pub(crate) &'static str);

/// A webhook's answer, with its result for the metrics: accepted (a re-read
/// starts), duplicate (a redelivery), ignored (nothing to re-read, pings),
/// refused (4xx) or failed (5xx).
pub(crate) fn answer(status: StatusCode, body: Value) -> Response {
    let result = match body["status"].as_str() {
        Some("accepted") => "accepted",
        Some("duplicate") => "duplicate",
        Some(_) => "ignored",
        None if status.is_server_error() => "failed",
        None => "refused",
    };
    let mut response = (status, axum::Json(body)).into_response();
    response.extensions_mut().insert(WebhookResult(result));
    response
}

/// A SHA-256 digest written as 64 hex digits (GitHub's and PagerDuty's
/// signatures); None when it is not one.
pub(crate) fn sha256_digest(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    (0..32).map(|index| u8::from_str_radix(hex.get(index * 2..index * 2 + 2)?, 16).ok()).collect()
}
