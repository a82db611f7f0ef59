//! PagerDuty's REST API v2 as it answers (the fields the catalog uses), and
//! the mapping into the provider's own types: services with their
//! escalation policy, teams and integrations; on-call entries; incidents.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// A PagerDuty service as the directory holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct PagerDutyService {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub html_url: Option<String>,
    /// `active`, `warning`, `critical`, `maintenance` or `disabled`.
    pub status: String,
    pub escalation_policy: Option<PagerDutyReference>,
    pub teams: Vec<PagerDutyReference>,
    /// The routing keys of its Events API integrations.
    pub integration_keys: Vec<String>,
}

/// Another PagerDuty object a service names: its escalation policy, a team.
#[derive(Clone, Debug, PartialEq)]
pub struct PagerDutyReference {
    pub id: String,
    pub name: String,
    pub html_url: Option<String>,
}

/// Someone on call for a service now.
#[derive(Clone, Debug, PartialEq)]
pub struct OnCall {
    pub user_id: String,
    pub user_name: String,
    pub email: Option<String>,
    /// The schedule that puts them on call; None when the escalation policy
    /// names them directly.
    pub schedule: Option<String>,
    pub level: u32,
    /// When their shift ends; None: it does not (a direct assignment).
    pub until: Option<DateTime<Utc>>,
}

/// A service's open (triggered or acknowledged) incidents.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenIncidents {
    /// How many there are.
    pub count: u64,
    /// The newest, newest first (at most [`super::LATEST_INCIDENTS`]).
    pub latest: Vec<Incident>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Incident {
    pub id: String,
    pub number: Option<u64>,
    pub title: String,
    /// `triggered` or `acknowledged`.
    pub status: String,
    /// `high` or `low`.
    pub urgency: String,
    pub created_at: DateTime<Utc>,
    pub html_url: Option<String>,
}

/// A reference as PagerDuty embeds one (`summary` always; `name` when the
/// object itself was included).
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ReferenceWire {
    id: String,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
}

impl ReferenceWire {
    fn name(&self) -> String {
        self.name.clone().or_else(|| self.summary.clone()).unwrap_or_else(|| self.id.clone())
    }

    fn into_reference(self) -> PagerDutyReference {
        PagerDutyReference { name: self.name(), id: self.id, html_url: self.html_url }
    }
}

#[derive(Clone, Debug, Deserialize)]
struct IntegrationWire {
    #[serde(default)]
    integration_key: Option<String>,
}

/// `GET /services` items and `GET /services/{id}`'s `service`, with
/// `include[]=escalation_policies`, `teams` and `integrations`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ServiceWire {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    escalation_policy: Option<ReferenceWire>,
    #[serde(default)]
    teams: Vec<ReferenceWire>,
    #[serde(default)]
    integrations: Vec<IntegrationWire>,
}

impl From<ServiceWire> for PagerDutyService {
    fn from(wire: ServiceWire) -> Self {
        let mut integration_keys: Vec<String> =
            wire.integrations.into_iter().filter_map(|integration| integration.integration_key).collect();
        integration_keys.sort();
        integration_keys.dedup();
        PagerDutyService {
            name: wire.name.or(wire.summary).unwrap_or_else(|| wire.id.clone()),
            id: wire.id,
            description: wire.description.filter(|text| !text.is_empty()),
            html_url: wire.html_url,
            status: wire.status.unwrap_or_default(),
            escalation_policy: wire.escalation_policy.map(ReferenceWire::into_reference),
            teams: wire.teams.into_iter().map(ReferenceWire::into_reference).collect(),
            integration_keys,
        }
    }
}

/// `GET /services/{id}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ServiceResponse {
    pub service: ServiceWire,
}

/// `GET /teams` items.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct TeamWire {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
}

impl From<TeamWire> for PagerDutyReference {
    fn from(wire: TeamWire) -> Self {
        PagerDutyReference {
            name: wire.name.or(wire.summary).unwrap_or_else(|| wire.id.clone()),
            id: wire.id,
            html_url: wire.html_url,
        }
    }
}

/// A user on an on-call entry: the full object with `include[]=users`
/// (name and email), a reference (summary only) without.
#[derive(Clone, Debug, Deserialize)]
struct UserWire {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

/// `GET /oncalls` items.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct OnCallWire {
    escalation_level: u32,
    user: UserWire,
    #[serde(default)]
    schedule: Option<ReferenceWire>,
    #[serde(default)]
    end: Option<DateTime<Utc>>,
}

/// Who is on call at the lowest escalation level among `entries` (the
/// first to be paged), one entry per user: someone on call through two
/// schedules at that level is listed once, with the shift that ends last
/// (one without an end wins). Ordered by user name.
pub(crate) fn lowest_level_on_call(entries: Vec<OnCallWire>) -> Vec<OnCall> {
    let Some(lowest) = entries.iter().map(|entry| entry.escalation_level).min() else { return Vec::new() };
    let mut by_user: BTreeMap<String, OnCallWire> = BTreeMap::new();
    for entry in entries.into_iter().filter(|entry| entry.escalation_level == lowest) {
        match by_user.get(&entry.user.id) {
            // None (no end) sorts first among Options, so it is compared apart.
            Some(kept)
                if kept.end.is_none() || entry.end.is_some_and(|end| kept.end.is_some_and(|kept| end <= kept)) => {}
            _ => {
                by_user.insert(entry.user.id.clone(), entry);
            }
        }
    }
    let mut on_call: Vec<OnCall> = by_user
        .into_values()
        .map(|entry| OnCall {
            user_name: entry.user.name.or(entry.user.summary).unwrap_or_else(|| entry.user.id.clone()),
            user_id: entry.user.id,
            email: entry.user.email.filter(|email| !email.is_empty()),
            schedule: entry.schedule.map(|schedule| schedule.name()),
            level: entry.escalation_level,
            until: entry.end,
        })
        .collect();
    on_call.sort_by(|a, b| (&a.user_name, &a.user_id).cmp(&(&b.user_name, &b.user_id)));
    on_call
}

/// `GET /incidents` with `total=true`.
#[derive(Debug, Deserialize)]
pub(crate) struct IncidentsResponse {
    pub incidents: Vec<IncidentWire>,
    #[serde(default)]
    pub total: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct IncidentWire {
    id: String,
    #[serde(default)]
    incident_number: Option<u64>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    summary: Option<String>,
    status: String,
    #[serde(default)]
    urgency: Option<String>,
    created_at: DateTime<Utc>,
    #[serde(default)]
    html_url: Option<String>,
}

impl From<IncidentWire> for Incident {
    fn from(wire: IncidentWire) -> Self {
        Incident {
            title: wire.title.or(wire.summary).unwrap_or_default(),
            id: wire.id,
            number: wire.incident_number,
            status: wire.status,
            urgency: wire.urgency.unwrap_or_default(),
            created_at: wire.created_at,
            html_url: wire.html_url,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(level: u32, user: &str, schedule: Option<&str>, end: Option<&str>) -> OnCallWire {
        serde_json::from_value(json!({
            "escalation_policy": {"id": "PPOL1", "type": "escalation_policy_reference", "summary": "Payments"},
            "escalation_level": level,
            "schedule": schedule.map(|name| json!({"id": format!("S{name}"), "type": "schedule_reference", "summary": name})),
            "user": {"id": format!("U{user}"), "type": "user", "name": user, "email": format!("{user}@acme.example"),
                     "summary": user},
            "start": "2026-11-30T09:00:00Z",
            "end": end,
        }))
        .unwrap()
    }

    #[test]
    fn only_the_lowest_level_is_on_call() {
        let on_call = lowest_level_on_call(vec![
            entry(2, "bob", Some("Secondary"), Some("2026-12-01T09:00:00Z")),
            entry(1, "ada", Some("Primary"), Some("2026-12-01T09:00:00Z")),
            entry(3, "cy", None, None),
        ]);
        assert_eq!(on_call.len(), 1, "{on_call:?}");
        assert_eq!((on_call[0].user_name.as_str(), on_call[0].level), ("ada", 1));
        assert_eq!(on_call[0].email.as_deref(), Some("ada@acme.example"));
        assert_eq!(on_call[0].schedule.as_deref(), Some("Primary"));
    }

    #[test]
    fn a_user_on_two_schedules_is_listed_once_with_the_shift_that_ends_last() {
        let on_call = lowest_level_on_call(vec![
            entry(1, "ada", Some("Early"), Some("2026-12-01T09:00:00Z")),
            entry(1, "ada", Some("Late"), Some("2026-12-01T21:00:00Z")),
            entry(1, "grace", Some("Early"), Some("2026-12-01T09:00:00Z")),
            entry(1, "grace", None, None),
            entry(1, "grace", Some("Late"), Some("2026-12-01T21:00:00Z")),
        ]);
        let summary: Vec<(&str, Option<&str>)> =
            on_call.iter().map(|entry| (entry.user_name.as_str(), entry.schedule.as_deref())).collect();
        assert_eq!(summary, vec![("ada", Some("Late")), ("grace", None)], "no end outlasts any end");
        assert_eq!(on_call[0].until, Some("2026-12-01T21:00:00Z".parse().unwrap()));
        assert_eq!(on_call[1].until, None);
    }

    #[test]
    fn a_user_reference_without_include_still_has_a_name() {
        let wire: OnCallWire = serde_json::from_value(json!({
            "escalation_level": 1, "schedule": null, "end": null,
            "user": {"id": "PU1", "type": "user_reference", "summary": "Ada Lovelace"},
        }))
        .unwrap();
        let on_call = lowest_level_on_call(vec![wire]);
        assert_eq!((on_call[0].user_name.as_str(), on_call[0].email.as_deref()), ("Ada Lovelace", None));
    }

    #[test]
    fn a_service_keeps_its_integration_keys_and_names_its_references() {
        let wire: ServiceWire = serde_json::from_value(json!({
            "id": "PSVC1", "type": "service", "summary": "Payments API", "name": "Payments API",
            "status": "active", "html_url": "https://acme.pagerduty.com/service-directory/PSVC1",
            "escalation_policy": {"id": "PPOL1", "type": "escalation_policy", "summary": "Payments", "name": "Payments on call"},
            "teams": [{"id": "PTEAM1", "type": "team_reference", "summary": "Payments"}],
            "integrations": [
                {"id": "PI1", "type": "events_api_v2_inbound_integration", "integration_key": "abc123"},
                {"id": "PI2", "type": "email_inbound_integration", "integration_email": "payments@acme.pagerduty.com"},
            ],
        }))
        .unwrap();
        let service = PagerDutyService::from(wire);
        assert_eq!(service.integration_keys, vec!["abc123".to_owned()]);
        assert_eq!(service.escalation_policy.unwrap().name, "Payments on call", "the included policy's own name");
        assert_eq!(service.teams[0].name, "Payments", "a reference's summary");
    }
}
