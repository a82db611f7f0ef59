//! PagerDuty webhooks (v3) at `/webhooks/pagerduty`. `X-PagerDuty-Signature`
//! holds one or more comma-separated `v1=<hex>` entries (several while a
//! subscription's secret is rotated), each an HMAC-SHA256 of the raw body;
//! a delivery is accepted when any entry matches any configured secret,
//! checked in constant time before anything is parsed. A `service.*` or
//! `incident.*` event is a hint: the service's cached on-call and incidents
//! are forgotten and its directory entry read again, in the background
//! after a 202. A failure of any kind changes nothing.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use catalog_ingestion::Engine;
use serde_json::{Value, json};
use tracing::Instrument as _;

use super::{WebhooksConfig, answer, sha256_digest};

/// The most signature entries a delivery may carry (PagerDuty sends one per
/// secret of the subscription, two while rotating).
const MAX_SIGNATURES: usize = 8;

/// The longest service id accepted (PagerDuty's are 7 characters).
const MAX_SERVICE_ID_BYTES: usize = 64;

/// The PagerDuty webhook receiver: the keys of every configured secret.
pub(crate) struct PagerDutyWebhooks {
    keys: Vec<ring::hmac::Key>,
    max_body_bytes: usize,
    engine: Engine,
}

impl PagerDutyWebhooks {
    /// None when no secret is configured: the endpoint is off.
    pub(crate) fn new(config: &WebhooksConfig, engine: Engine) -> Option<Arc<Self>> {
        let keys: Vec<ring::hmac::Key> = config
            .pagerduty_secrets
            .iter()
            .filter(|secret| !secret.is_empty())
            .map(|secret| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes()))
            .collect();
        (!keys.is_empty()).then(|| Arc::new(Self { keys, max_body_bytes: config.max_body_bytes, engine }))
    }
}

fn refused(status: StatusCode, message: &str) -> Response {
    tracing::info!(status = status.as_u16(), reason = message, "PagerDuty webhook refused");
    answer(status, json!({"message": message}))
}

/// The digests of an `X-PagerDuty-Signature` header; None when it holds no
/// well-formed `v1=` entry, or a `v1=` entry that is not 64 hex digits, or
/// too many entries. Entries of other versions are skipped.
fn signatures(header: &str) -> Option<Vec<Vec<u8>>> {
    let entries: Vec<&str> = header.split(',').map(str::trim).filter(|entry| !entry.is_empty()).collect();
    if entries.len() > MAX_SIGNATURES {
        return None;
    }
    let mut digests = Vec::new();
    for entry in entries {
        let Some(hex) = entry.strip_prefix("v1=") else { continue };
        digests.push(sha256_digest(hex)?);
    }
    (!digests.is_empty()).then_some(digests)
}

/// Whether any signature of the header signs `body` with any key:
/// Some(true|false), or None when the header is malformed.
fn signature_matches(keys: &[ring::hmac::Key], header: &str, body: &[u8]) -> Option<bool> {
    let digests = signatures(header)?;
    // ring compares in constant time.
    Some(keys.iter().any(|key| digests.iter().any(|digest| ring::hmac::verify(key, body, digest).is_ok())))
}

/// The service an event is about: the service itself for `service.*`, the
/// incident's service for `incident.*`. Err when the event is not one of
/// those (`Ok(None)`: it is, but names no service).
fn event_service(event: &Value) -> Result<Option<&str>, ()> {
    let event_type = event["event_type"].as_str().unwrap_or_default();
    let id = if event_type.starts_with("service.") {
        event["data"]["id"].as_str()
    } else if event_type.starts_with("incident.") {
        event["data"]["service"]["id"].as_str()
    } else {
        return Err(());
    };
    Ok(id)
}

/// PagerDuty ids are short and alphanumeric; anything else never reaches a URL.
fn is_service_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_SERVICE_ID_BYTES && id.bytes().all(|byte| byte.is_ascii_alphanumeric())
}

/// POST /webhooks/pagerduty.
pub(crate) async fn pagerduty(
    State(webhooks): State<Arc<PagerDutyWebhooks>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(body) = axum::body::to_bytes(body, webhooks.max_body_bytes).await else {
        let message = format!("the delivery is over the limit of {} bytes", webhooks.max_body_bytes);
        return refused(StatusCode::PAYLOAD_TOO_LARGE, &message);
    };
    let Some(header) = headers.get("x-pagerduty-signature").and_then(|value| value.to_str().ok()) else {
        return refused(StatusCode::BAD_REQUEST, "X-PagerDuty-Signature is missing");
    };
    match signature_matches(&webhooks.keys, header, &body) {
        None => {
            return refused(
                StatusCode::BAD_REQUEST,
                "X-PagerDuty-Signature is not comma-separated v1= entries of 64 hex digits",
            );
        }
        Some(false) => return refused(StatusCode::UNAUTHORIZED, "no signature matches the body"),
        Some(true) => {}
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return refused(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let event = &payload["event"];
    let Some(event_type) = event["event_type"].as_str() else {
        return refused(StatusCode::BAD_REQUEST, "event.event_type is missing");
    };
    let service = match event_service(event) {
        // pagey.ping and event types the catalog does not read.
        Err(()) => return answer(StatusCode::ACCEPTED, json!({"status": "ignored"})),
        Ok(Some(id)) if is_service_id(id) => id.to_owned(),
        Ok(_) => return refused(StatusCode::BAD_REQUEST, "the event names no service id"),
    };
    let Some(view) = webhooks.engine.pagerduty() else {
        return answer(StatusCode::ACCEPTED, json!({"status": "ignored"}));
    };
    tracing::info!(event_type, service = %service, "PagerDuty webhook accepted");
    if event_type.starts_with("incident.") {
        // The service did not change: its incidents are read again when asked.
        view.forget_incidents(&service);
        return answer(StatusCode::ACCEPTED, json!({"status": "accepted", "service": service}));
    }
    let engine = webhooks.engine.clone();
    let refreshed = service.clone();
    let span =
        crate::telemetry::detached_child(tracing::info_span!(parent: None, "webhook.refresh", service = %service));
    tokio::spawn(
        async move {
            for key in view.refresh_service(&refreshed).await {
                // The service may now be mapped or unmapped, made or removed.
                if let Err(error) = engine.run_provider(&key).await {
                    tracing::warn!(provider = %key, error = %error, "refresh after a PagerDuty webhook failed");
                }
            }
        }
        .instrument(span),
    );
    answer(StatusCode::ACCEPTED, json!({"status": "accepted", "service": service}))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2: HMAC-SHA256 with key "Jefe".
    const KNOWN_ANSWER: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
    const KNOWN_BODY: &[u8] = b"what do ya want for nothing?";

    fn keys(secrets: &[&str]) -> Vec<ring::hmac::Key> {
        secrets.iter().map(|secret| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes())).collect()
    }

    #[test]
    fn the_rfc_4231_known_answer_checks_out() {
        let header = format!("v1={KNOWN_ANSWER}");
        assert_eq!(signature_matches(&keys(&["Jefe"]), &header, KNOWN_BODY), Some(true));
        assert_eq!(signature_matches(&keys(&["Jefe"]), &header, b"what do ya want for something?"), Some(false));
        assert_eq!(signature_matches(&keys(&["jefe"]), &header, KNOWN_BODY), Some(false));
    }

    #[test]
    fn any_entry_may_match_any_secret_during_a_rotation() {
        let other = "0".repeat(64);
        let header = format!("v1={other}, v1={KNOWN_ANSWER}");
        assert_eq!(signature_matches(&keys(&["old secret", "Jefe"]), &header, KNOWN_BODY), Some(true));
        assert_eq!(signature_matches(&keys(&["old secret"]), &header, KNOWN_BODY), Some(false));
        let future = format!("v2=abc,v1={KNOWN_ANSWER}");
        assert_eq!(signature_matches(&keys(&["Jefe"]), &future, KNOWN_BODY), Some(true), "other versions are skipped");
    }

    #[test]
    fn malformed_headers_are_told_apart_from_wrong_signatures() {
        let jefe = keys(&["Jefe"]);
        for header in
            ["", "sha256=abc", "v2=abc", "v1=zz", &format!("v1={}", "g".repeat(64)), &format!("v1={KNOWN_ANSWER}0")]
        {
            assert_eq!(signature_matches(&jefe, header, KNOWN_BODY), None, "{header:?}");
        }
        let many = vec![format!("v1={KNOWN_ANSWER}"); MAX_SIGNATURES + 1].join(",");
        assert_eq!(signature_matches(&jefe, &many, KNOWN_BODY), None, "too many entries");
    }

    #[test]
    fn service_and_incident_events_name_their_service() {
        let service = json!({"event_type": "service.updated", "data": {"id": "PSVC1", "type": "service"}});
        assert_eq!(event_service(&service), Ok(Some("PSVC1")));
        let incident = json!({"event_type": "incident.triggered",
            "data": {"id": "Q1", "type": "incident", "service": {"id": "PSVC2", "type": "service_reference"}}});
        assert_eq!(event_service(&incident), Ok(Some("PSVC2")));
        assert_eq!(event_service(&json!({"event_type": "pagey.ping", "data": {}})), Err(()));
        assert!(!is_service_id("../escalation_policies") && !is_service_id("") && is_service_id("P1ABC2D"));
    }
}
