//! Facts the providers hold, as governance rules read them
//! (`fact('pagerduty.service')`, `fact('kubernetes.workloads')`): answered
//! from the ingestion engine's in-memory views, never with a call out per
//! evaluation. A provider that is not configured, or has not read yet,
//! leaves its fact out, and the rules that need it are `UNKNOWN`.

use std::collections::{BTreeMap, BTreeSet};

use catalog_governance::{Fact, FactSource};
use catalog_ingestion::Engine;
use chrono::Utc;
use serde_json::{Value, json};

/// The PagerDuty service an entity's annotations map it to (`id`, `name`,
/// `status`, `escalationPolicy`, `teams`), or `null` when they map it to none.
pub const PAGERDUTY_SERVICE: &str = "pagerduty.service";
/// The Kubernetes workloads linked to the entity (`cluster`, `kind`,
/// `namespace`, `name`, `readyReplicas`, `replicas`), `[]` when none.
pub const KUBERNETES_WORKLOADS: &str = "kubernetes.workloads";
/// The GitHub repository the entity comes from or names in
/// `github.com/project-slug` (`fullName`, `archived`, `pushedAt`), or
/// `null` when it names none the GitHub providers list.
pub const GITHUB_REPOSITORY: &str = "github.repository";
/// Every fact name this server knows.
pub const FACTS: [&str; 3] = [PAGERDUTY_SERVICE, KUBERNETES_WORKLOADS, GITHUB_REPOSITORY];

/// The engine's views as a fact source; each fact judged for `ttl` after
/// its provider last read it.
pub struct ProviderFacts {
    pub engine: Engine,
    pub ttl: chrono::Duration,
}

fn annotations(entity: &Value) -> BTreeMap<String, String> {
    entity
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|annotations| {
            annotations.iter().filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_owned()))).collect()
        })
        .unwrap_or_default()
}

impl FactSource for ProviderFacts {
    fn facts(&self, entity: &Value, names: &BTreeSet<String>) -> BTreeMap<String, Fact> {
        let annotations = annotations(entity);
        let mut facts = BTreeMap::new();
        if names.contains(PAGERDUTY_SERVICE)
            && let Some(view) = self.engine.pagerduty()
            && let Some(read_at) = view.read_at()
            && let Ok(service) = view.service_for(&annotations)
        {
            let value = service.map_or(Value::Null, |service| {
                json!({
                    "id": service.id,
                    "name": service.name,
                    "status": service.status,
                    "escalationPolicy": service.escalation_policy.as_ref().map(|policy| policy.name.clone()),
                    "teams": service.teams.iter().map(|team| team.name.clone()).collect::<Vec<_>>(),
                })
            });
            facts.insert(PAGERDUTY_SERVICE.to_owned(), Fact { value, observed_at: read_at, ttl: self.ttl });
        }
        let github = self.engine.github();
        // Judged as of the oldest listing: a repository may be in any of them.
        let listed = github
            .iter()
            .map(|view| view.read_at())
            .collect::<Option<Vec<_>>>()
            .and_then(|times| times.into_iter().min());
        if names.contains(GITHUB_REPOSITORY)
            && let Some(read_at) = listed
        {
            let value =
                github.iter().find_map(|view| view.repository_for(&annotations)).map_or(Value::Null, |repository| {
                    json!({
                        "fullName": repository.full_name,
                        "archived": repository.archived,
                        "pushedAt": repository.pushed_at.map(|time| time.to_rfc3339()),
                    })
                });
            facts.insert(GITHUB_REPOSITORY.to_owned(), Fact { value, observed_at: read_at, ttl: self.ttl });
        }
        let views = self.engine.kubernetes();
        // The watchers keep a listed scope current: its facts are as of now.
        if names.contains(KUBERNETES_WORKLOADS) && !views.is_empty() && views.iter().all(|view| view.listed()) {
            let workloads: Vec<Value> = views
                .iter()
                .flat_map(|view| view.workloads_for(&annotations))
                .map(|workload| {
                    json!({
                        "cluster": workload.cluster,
                        "kind": workload.kind.as_str(),
                        "namespace": workload.namespace,
                        "name": workload.name,
                        "replicas": workload.replicas.as_ref().map(|replicas| replicas.desired),
                        "readyReplicas": workload.replicas.as_ref().map(|replicas| replicas.ready),
                    })
                })
                .collect();
            facts.insert(
                KUBERNETES_WORKLOADS.to_owned(),
                Fact { value: Value::Array(workloads), observed_at: Utc::now(), ttl: self.ttl },
            );
        }
        facts
    }
}
