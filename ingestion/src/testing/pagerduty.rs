//! A fake PagerDuty for tests: JSON fixtures shaped like the REST API v2's
//! answers, and [`FakePagerDuty`], a wiremock server that serves an
//! [`Account`] the way PagerDuty does (offset/limit pages with `more`,
//! `include[]=users` on /oncalls, filters and `total` on /incidents, 404 for
//! an unknown service). Tests change the account while the server runs and
//! mount faults (429, 5xx) in front of it with a higher priority.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// The priority of the account's mocks: a test's own mocks (wiremock's
/// default priority is 5) answer first.
pub const ACCOUNT_PRIORITY: u8 = 10;

/// Where the fixtures' web links point.
const WEB: &str = "https://acme.pagerduty.com";

/// A service as `GET /services?include[]=escalation_policies&include[]=teams&include[]=integrations`
/// lists it: active, with its escalation policy, no teams and no
/// integrations (see [`with_team`] and [`with_integration`]).
pub fn service(id: &str, name: &str, policy_id: &str) -> Value {
    json!({
        "id": id, "type": "service", "summary": name, "name": name,
        "self": format!("https://api.pagerduty.com/services/{id}"),
        "html_url": format!("{WEB}/service-directory/{id}"),
        "description": format!("{name}, as PagerDuty knows it."),
        "auto_resolve_timeout": 14400, "acknowledgement_timeout": 600,
        "created_at": "2025-06-01T10:00:00Z", "status": "active", "last_incident_timestamp": null,
        "alert_creation": "create_alerts_and_incidents",
        "escalation_policy": {
            "id": policy_id, "type": "escalation_policy", "summary": format!("{name} policy"),
            "name": format!("{name} policy"),
            "self": format!("https://api.pagerduty.com/escalation_policies/{policy_id}"),
            "html_url": format!("{WEB}/escalation_policies/{policy_id}"),
            "num_loops": 0, "on_call_handoff_notifications": "if_has_services",
        },
        "teams": [], "integrations": [],
        "incident_urgency_rule": {"type": "constant", "urgency": "high"},
    })
}

/// A service that belongs to a team too.
pub fn with_team(mut service: Value, team_id: &str, team_name: &str) -> Value {
    service["teams"].as_array_mut().expect("a service fixture has teams").push(json!({
        "id": team_id, "type": "team", "summary": team_name, "name": team_name,
        "self": format!("https://api.pagerduty.com/teams/{team_id}"),
        "html_url": format!("{WEB}/teams/{team_id}"),
    }));
    service
}

/// A service with one more Events API v2 integration, routing `key`.
pub fn with_integration(mut service: Value, key: &str) -> Value {
    let integrations = service["integrations"].as_array_mut().expect("a service fixture has integrations");
    let id = format!("PINT{}", integrations.len() + 1);
    integrations.push(json!({
        "id": id, "type": "events_api_v2_inbound_integration", "summary": "Events API v2",
        "name": "Events API v2", "integration_key": key,
        "self": format!("https://api.pagerduty.com/services/x/integrations/{id}"),
        "created_at": "2025-06-01T10:00:00Z",
    }));
    service
}

/// A service with another status (`warning`, `critical`, `maintenance`, `disabled`).
pub fn with_status(mut service: Value, status: &str) -> Value {
    service["status"] = json!(status);
    service
}

/// A team as `GET /teams` lists it.
pub fn team(id: &str, name: &str) -> Value {
    json!({
        "id": id, "type": "team", "summary": name, "name": name, "description": null,
        "self": format!("https://api.pagerduty.com/teams/{id}"), "html_url": format!("{WEB}/teams/{id}"),
        "default_role": "manager", "parent": null,
    })
}

/// Someone on call, as `GET /oncalls?include[]=users` lists them: the full
/// user (with email), the schedule reference (`None`: the policy names the
/// user directly) and the shift's end (`None`: no end).
pub fn on_call(
    policy_id: &str,
    level: u32,
    user: (&str, &str, &str),
    schedule: Option<&str>,
    end: Option<&str>,
) -> Value {
    let (user_id, user_name, email) = user;
    json!({
        "escalation_policy": {
            "id": policy_id, "type": "escalation_policy_reference", "summary": "policy",
            "self": format!("https://api.pagerduty.com/escalation_policies/{policy_id}"),
            "html_url": format!("{WEB}/escalation_policies/{policy_id}"),
        },
        "escalation_level": level,
        "schedule": schedule.map(|name| json!({
            "id": format!("PSCH{}", name.len()), "type": "schedule_reference", "summary": name,
            "self": "https://api.pagerduty.com/schedules/PSCH", "html_url": format!("{WEB}/schedules/PSCH"),
        })),
        "user": {
            "id": user_id, "type": "user", "name": user_name, "summary": user_name, "email": email,
            "time_zone": "Europe/London", "color": "purple", "role": "user", "description": null,
            "self": format!("https://api.pagerduty.com/users/{user_id}"), "html_url": format!("{WEB}/users/{user_id}"),
        },
        "start": "2026-11-30T09:00:00Z",
        "end": end,
    })
}

/// An incident as `GET /incidents` lists it.
pub fn incident(id: &str, number: u64, service_id: &str, status: &str, created_at: &str) -> Value {
    let title = format!("Incident {number}");
    json!({
        "id": id, "type": "incident", "summary": format!("[#{number}] {title}"), "incident_number": number,
        "title": title, "created_at": created_at, "updated_at": created_at, "status": status,
        "incident_key": format!("key-{number}"), "urgency": if number.is_multiple_of(2) { "low" } else { "high" },
        "self": format!("https://api.pagerduty.com/incidents/{id}"), "html_url": format!("{WEB}/incidents/{id}"),
        "service": {
            "id": service_id, "type": "service_reference", "summary": service_id,
            "self": format!("https://api.pagerduty.com/services/{service_id}"),
            "html_url": format!("{WEB}/service-directory/{service_id}"),
        },
        "assignments": [], "acknowledgements": [], "last_status_change_at": created_at,
    })
}

/// What the fake account holds. Change it through [`FakePagerDuty::update`].
#[derive(Clone, Debug, Default)]
pub struct Account {
    pub services: Vec<Value>,
    pub teams: Vec<Value>,
    /// Every on-call entry; /oncalls filters them by escalation policy.
    pub on_calls: Vec<Value>,
    /// Every incident; /incidents filters them by service and status.
    pub incidents: Vec<Value>,
    /// How long each /oncalls and /incidents answer takes, so that
    /// concurrent queries overlap.
    pub live_latency: Duration,
}

/// A PagerDuty REST API on a random port, serving an [`Account`].
pub struct FakePagerDuty {
    pub server: MockServer,
    account: Arc<Mutex<Account>>,
}

impl FakePagerDuty {
    pub async fn start(account: Account) -> Self {
        let server = MockServer::start().await;
        let account = Arc::new(Mutex::new(account));
        let fake = Self { server, account };
        fake.mount().await;
        fake
    }

    /// The API root, for `api_base_url`.
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Changes the account; the next requests see the change.
    pub fn update(&self, change: impl FnOnce(&mut Account)) {
        change(&mut self.account.lock());
    }

    /// The requests received for `path` (its query ignored).
    pub async fn requests_to(&self, at: &str) -> Vec<Request> {
        let received = self.server.received_requests().await.expect("request recording is on");
        received.into_iter().filter(|request| request.url.path() == at).collect()
    }

    async fn mount(&self) {
        let serve = |list: fn(&Account, &Request) -> (Vec<Value>, bool), key: &'static str| {
            let account = self.account.clone();
            move |request: &Request| {
                let account = account.lock().clone();
                let (items, live) = list(&account, request);
                let response = ResponseTemplate::new(200).set_body_json(page(key, &items, request));
                if live { response.set_delay(account.live_latency) } else { response }
            }
        };
        Mock::given(method("GET"))
            .and(path("/services"))
            .respond_with(serve(|account, _| (account.services.clone(), false), "services"))
            .with_priority(ACCOUNT_PRIORITY)
            .mount(&self.server)
            .await;
        Mock::given(method("GET"))
            .and(path("/teams"))
            .respond_with(serve(|account, _| (account.teams.clone(), false), "teams"))
            .with_priority(ACCOUNT_PRIORITY)
            .mount(&self.server)
            .await;
        Mock::given(method("GET"))
            .and(path("/oncalls"))
            .respond_with(serve(
                |account, request| {
                    let policies = query_values(request, "escalation_policy_ids[]");
                    let entries = account
                        .on_calls
                        .iter()
                        .filter(|entry| {
                            policies.is_empty()
                                || policies.iter().any(|id| entry["escalation_policy"]["id"].as_str() == Some(id))
                        })
                        .map(|entry| {
                            if query_values(request, "include[]").iter().any(|name| name == "users") {
                                return entry.clone();
                            }
                            // Without include[]=users PagerDuty sends references: no name, no email.
                            let mut entry = entry.clone();
                            let user = &entry["user"];
                            entry["user"] = json!({"id": user["id"], "type": "user_reference",
                                "summary": user["summary"], "self": user["self"], "html_url": user["html_url"]});
                            entry
                        })
                        .collect();
                    (entries, true)
                },
                "oncalls",
            ))
            .with_priority(ACCOUNT_PRIORITY)
            .mount(&self.server)
            .await;
        Mock::given(method("GET"))
            .and(path("/incidents"))
            .respond_with(serve(
                |account, request| {
                    let services = query_values(request, "service_ids[]");
                    let statuses = query_values(request, "statuses[]");
                    let mut incidents: Vec<Value> = account
                        .incidents
                        .iter()
                        .filter(|incident| {
                            services.is_empty()
                                || services.iter().any(|id| incident["service"]["id"].as_str() == Some(id))
                        })
                        .filter(|incident| {
                            statuses.is_empty()
                                || statuses.iter().any(|status| incident["status"].as_str() == Some(status))
                        })
                        .cloned()
                        .collect();
                    if query_values(request, "sort_by").iter().any(|sort| sort == "created_at:desc") {
                        incidents.sort_by(|a, b| b["created_at"].as_str().cmp(&a["created_at"].as_str()));
                    }
                    (incidents, true)
                },
                "incidents",
            ))
            .with_priority(ACCOUNT_PRIORITY)
            .mount(&self.server)
            .await;
        let account = self.account.clone();
        Mock::given(method("GET"))
            .and(path_regex(r"^/services/[^/]+$"))
            .respond_with(move |request: &Request| {
                let id = request.url.path().trim_start_matches("/services/");
                let account = account.lock();
                match account.services.iter().find(|service| service["id"].as_str() == Some(id)) {
                    Some(service) => ResponseTemplate::new(200).set_body_json(json!({"service": service})),
                    None => ResponseTemplate::new(404)
                        .set_body_json(json!({"error": {"message": "Not Found", "code": 2100}})),
                }
            })
            .with_priority(ACCOUNT_PRIORITY)
            .mount(&self.server)
            .await;
    }
}

/// A 429 as PagerDuty sends it when a token's rate limit is spent.
pub fn rate_limited(reset_seconds: u64) -> ResponseTemplate {
    ResponseTemplate::new(429)
        .insert_header("ratelimit-limit", "960")
        .insert_header("ratelimit-remaining", "0")
        .insert_header("ratelimit-reset", reset_seconds.to_string().as_str())
        .set_body_json(json!({"error": {"message": "Rate Limit Exceeded", "code": 2020}}))
}

/// Every value of a query parameter.
fn query_values(request: &Request, name: &str) -> Vec<String> {
    request.url.query_pairs().filter(|(key, _)| key == name).map(|(_, value)| value.into_owned()).collect()
}

/// One page of `items` under `key`, by the request's `offset` and `limit`
/// (PagerDuty's defaults: 0 and 25), with `more`, and `total` when asked.
fn page(key: &str, items: &[Value], request: &Request) -> Value {
    let number = |name: &str, default: usize| {
        query_values(request, name).first().and_then(|value| value.parse::<usize>().ok()).unwrap_or(default)
    };
    let (offset, limit) = (number("offset", 0), number("limit", 25).max(1));
    let listed: Vec<Value> = items.iter().skip(offset).take(limit).cloned().collect();
    let total = query_values(request, "total").iter().any(|value| value == "true").then_some(items.len());
    json!({key: listed, "limit": limit, "offset": offset, "more": offset + limit < items.len(), "total": total})
}
