//! GitHub webhooks at `/webhooks/github`: the signature is checked over the
//! raw body in constant time before anything is parsed, deliveries are
//! deduplicated, and an event that can change the catalog (a push touching a
//! catalog file, a repository renamed, archived, deleted or transferred) is a
//! hint: it triggers a re-read of that repository alone by the GitHub
//! providers of its organisation (a change of teams or members: a run of the
//! org providers), answered with 202 and processed in the background. A
//! failure of any kind changes nothing.

use super::{WebhooksConfig, answer, sha256_digest};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use catalog_ingestion::{Engine, GithubRefresh};
use serde_json::{Value, json};
use tracing::Instrument as _;

/// The longest delivery id or event name accepted.
const MAX_DELIVERY_ID_BYTES: usize = 64;

/// Delivery ids remembered for deduplication (GitHub redelivers by id).
const REMEMBERED_DELIVERIES: usize = 10_000;

/// The GitHub webhook receiver: its key, limits and memory of deliveries.
pub(crate) struct GithubWebhooks {
    key: ring::hmac::Key,
    max_body_bytes: usize,
    deliveries: Mutex<(HashSet<String>, VecDeque<String>)>,
    engine: Engine,
}

impl GithubWebhooks {
    /// None when no secret is configured: the endpoint is off.
    pub(crate) fn new(config: &WebhooksConfig, engine: Engine) -> Option<Arc<Self>> {
        (!config.github_secret.is_empty()).then(|| {
            Arc::new(Self {
                key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, config.github_secret.as_bytes()),
                max_body_bytes: config.max_body_bytes,
                deliveries: Mutex::default(),
                engine,
            })
        })
    }

    /// True the first time a delivery id is seen.
    fn first_delivery(&self, id: &str) -> bool {
        let mut deliveries = self.deliveries.lock();
        let (seen, order) = &mut *deliveries;
        if !seen.insert(id.to_owned()) {
            return false;
        }
        order.push_back(id.to_owned());
        if order.len() > REMEMBERED_DELIVERIES
            && let Some(oldest) = order.pop_front()
        {
            seen.remove(&oldest);
        }
        true
    }
}

fn refused(status: StatusCode, message: &str) -> Response {
    tracing::info!(status = status.as_u16(), reason = message, "GitHub webhook refused");
    answer(status, json!({"message": message}))
}

/// Whether `signature` (`X-Hub-Signature-256`: `sha256=` and 64 hex digits)
/// signs `body`: Some(true|false), or None when it is malformed.
fn signature_matches(key: &ring::hmac::Key, signature: &str, body: &[u8]) -> Option<bool> {
    let digest = sha256_digest(signature.strip_prefix("sha256=")?)?;
    // ring compares in constant time.
    Some(ring::hmac::verify(key, body, &digest).is_ok())
}

/// POST /webhooks/github.
pub(crate) async fn github(State(webhooks): State<Arc<GithubWebhooks>>, headers: HeaderMap, body: Body) -> Response {
    let Ok(body) = axum::body::to_bytes(body, webhooks.max_body_bytes).await else {
        let message = format!("the delivery is over the limit of {} bytes", webhooks.max_body_bytes);
        return refused(StatusCode::PAYLOAD_TOO_LARGE, &message);
    };
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let Some(signature) = header("x-hub-signature-256") else {
        return refused(StatusCode::BAD_REQUEST, "X-Hub-Signature-256 is missing");
    };
    match signature_matches(&webhooks.key, signature, &body) {
        None => return refused(StatusCode::BAD_REQUEST, "X-Hub-Signature-256 is not sha256= and 64 hex digits"),
        Some(false) => return refused(StatusCode::UNAUTHORIZED, "the signature does not match the body"),
        Some(true) => {}
    }
    let (Some(delivery), Some(event)) = (header("x-github-delivery"), header("x-github-event")) else {
        return refused(StatusCode::BAD_REQUEST, "X-GitHub-Delivery and X-GitHub-Event are required");
    };
    // GitHub's ids are GUIDs; a longer one would make the memory of
    // deliveries a place to store whatever a replayer sends.
    if delivery.len() > MAX_DELIVERY_ID_BYTES || event.len() > MAX_DELIVERY_ID_BYTES {
        return refused(StatusCode::BAD_REQUEST, "X-GitHub-Delivery or X-GitHub-Event is too long");
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return refused(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    if !webhooks.first_delivery(delivery) {
        return answer(StatusCode::OK, json!({"status": "duplicate"}));
    }
    if event == "ping" {
        return answer(StatusCode::OK, json!({"status": "pong"}));
    }
    let refreshes = webhooks.engine.github_refreshes(event, &payload);
    let keys: Vec<&str> = refreshes.iter().map(GithubRefresh::provider).collect();
    let repositories: Vec<&str> = refreshes
        .iter()
        .flat_map(|refresh| match refresh {
            GithubRefresh::Repositories { repositories, .. } => repositories.as_slice(),
            GithubRefresh::Provider(_) => &[],
        })
        .map(|hint| hint.full_name.as_str())
        .collect();
    tracing::info!(event, delivery, providers = ?keys, repositories = ?repositories, "GitHub webhook accepted");
    let body = json!({
        "status": if refreshes.is_empty() { "ignored" } else { "accepted" },
        "refresh": keys,
        "repositories": repositories,
    });
    for refresh in refreshes {
        let engine = webhooks.engine.clone();
        // Re-reads of one provider coalesce, so a burst of deliveries costs
        // a couple of reads.
        let span = crate::telemetry::detached_child(tracing::info_span!(
            parent: None,
            "webhook.refresh",
            provider = refresh.provider()
        ));
        tokio::spawn(
            async move {
                if let Err(error) = engine.refresh_github(&refresh).await {
                    tracing::warn!(provider = refresh.provider(), error = %error, "refresh after a GitHub webhook failed");
                }
            }
            .instrument(span),
        );
    }
    answer(StatusCode::ACCEPTED, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's published example ("Validating webhook deliveries").
    #[test]
    fn githubs_documented_signature_checks_out() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"It's a Secret to Everybody");
        let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(signature_matches(&key, signature, b"Hello, World!"), Some(true));
        assert_eq!(signature_matches(&key, signature, b"Hello, World?"), Some(false));
        assert_eq!(signature_matches(&key, "sha1=757107ea", b"Hello, World!"), None);
        assert_eq!(signature_matches(&key, "sha256=zz", b"Hello, World!"), None);
        let not_hex = format!("sha256={}", "g".repeat(64));
        assert_eq!(signature_matches(&key, &not_hex, b"Hello, World!"), None);
    }

    #[test]
    fn the_secret_never_shows_in_debug_output() {
        let config = WebhooksConfig {
            github_secret: "hunter2".into(),
            pagerduty_secrets: vec!["swordfish".into()],
            ..WebhooksConfig::default()
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("swordfish"), "{debug}");
    }
}
