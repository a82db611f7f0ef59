//! What one PagerDuty account holds, as its last complete read found it:
//! services (with escalation policy, teams and integration keys) and teams,
//! indexed by service id, integration key and team id. Immutable: a run
//! builds a new one and swaps it in; a webhook's refresh of one service
//! makes a copy with that service replaced.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::wire::{PagerDutyReference, PagerDutyService};

#[derive(Debug, Default)]
pub(crate) struct Directory {
    services: BTreeMap<String, Arc<PagerDutyService>>,
    by_integration_key: HashMap<String, String>,
    teams: BTreeMap<String, PagerDutyReference>,
    /// When PagerDuty answered the listing this directory holds.
    pub(crate) read_at: chrono::DateTime<chrono::Utc>,
}

impl Directory {
    pub(crate) fn new(services: Vec<PagerDutyService>, teams: Vec<PagerDutyReference>) -> Self {
        let services: BTreeMap<String, Arc<PagerDutyService>> =
            services.into_iter().map(|service| (service.id.clone(), Arc::new(service))).collect();
        let by_integration_key = services
            .values()
            .flat_map(|service| service.integration_keys.iter().map(|key| (key.clone(), service.id.clone())))
            .collect();
        let teams = teams.into_iter().map(|team| (team.id.clone(), team)).collect();
        Self { services, by_integration_key, teams, read_at: chrono::Utc::now() }
    }

    pub(crate) fn service(&self, id: &str) -> Option<Arc<PagerDutyService>> {
        self.services.get(id).cloned()
    }

    /// The service one of whose integrations routes events with `key`.
    pub(crate) fn service_by_integration_key(&self, key: &str) -> Option<Arc<PagerDutyService>> {
        self.by_integration_key.get(key).and_then(|id| self.service(id))
    }

    /// The services of a team, by name.
    pub(crate) fn services_of_team(&self, team_id: &str) -> Vec<Arc<PagerDutyService>> {
        let mut services: Vec<Arc<PagerDutyService>> = self
            .services
            .values()
            .filter(|service| service.teams.iter().any(|team| team.id == team_id))
            .cloned()
            .collect();
        services.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        services
    }

    pub(crate) fn team(&self, id: &str) -> Option<&PagerDutyReference> {
        self.teams.get(id)
    }

    pub(crate) fn services(&self) -> impl Iterator<Item = &Arc<PagerDutyService>> {
        self.services.values()
    }

    /// A copy with the service `id` replaced by `service` (removed when None).
    pub(crate) fn with_service(&self, id: &str, service: Option<PagerDutyService>) -> Self {
        let mut services: Vec<PagerDutyService> =
            self.services.values().filter(|kept| kept.id != id).map(|kept| (**kept).clone()).collect();
        services.extend(service);
        Self::new(services, self.teams.values().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(id: &str, name: &str, team: &str, keys: &[&str]) -> PagerDutyService {
        PagerDutyService {
            id: id.into(),
            name: name.into(),
            description: None,
            html_url: None,
            status: "active".into(),
            escalation_policy: None,
            teams: vec![PagerDutyReference { id: team.into(), name: team.into(), html_url: None }],
            integration_keys: keys.iter().map(|key| (*key).to_owned()).collect(),
        }
    }

    #[test]
    fn services_are_found_by_id_integration_key_and_team() {
        let directory = Directory::new(
            vec![service("P2", "Zebra", "T1", &["k2"]), service("P1", "Alpha", "T1", &["k1", "k1b"])],
            Vec::new(),
        );
        assert_eq!(directory.service("P1").unwrap().name, "Alpha");
        assert_eq!(directory.service_by_integration_key("k1b").unwrap().id, "P1");
        assert!(directory.service_by_integration_key("nope").is_none());
        let names: Vec<String> = directory.services_of_team("T1").iter().map(|found| found.name.clone()).collect();
        assert_eq!(names, vec!["Alpha", "Zebra"]);
    }

    #[test]
    fn replacing_a_service_reindexes_its_integration_keys() {
        let directory = Directory::new(vec![service("P1", "Alpha", "T1", &["old"])], Vec::new());
        let refreshed = directory.with_service("P1", Some(service("P1", "Alpha", "T2", &["new"])));
        assert!(refreshed.service_by_integration_key("old").is_none());
        assert_eq!(refreshed.service_by_integration_key("new").unwrap().id, "P1");
        assert!(refreshed.services_of_team("T1").is_empty());
        assert!(refreshed.with_service("P1", None).service("P1").is_none());
        assert!(directory.service_by_integration_key("old").is_some(), "the original is untouched");
    }
}
