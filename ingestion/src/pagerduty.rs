//! The PagerDuty provider: enriches, does not invent. A run reads one
//! account's services (with escalation policies, teams and integrations)
//! and teams through the REST API v2 into an in-memory [`Directory`],
//! swapped in whole after a complete read (a failed read keeps the previous
//! one). Catalog entities link to services with `pagerduty.com/service-id`
//! or `pagerduty.com/integration-key`, and Groups to teams with
//! `pagerduty.com/team-id`; they are never rewritten: the API serves their
//! PagerDuty data from the directory, and who is on call and the open
//! incidents live from PagerDuty through a short single-flight cache
//! ([`PagerDutyView`]). The snapshot a run returns is empty unless
//! `ingest_unmapped_services` is on; then it holds a Resource for each
//! service no catalog entity maps.

mod directory;
mod live;
mod wire;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use catalog_http::{HttpSource, RetryPolicy, SourceError};
use catalog_store::{Catalog, InvalidEntity, LocationStatus, Snapshot, SnapshotEntity};
use futures::future::BoxFuture;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, USER_AGENT};
use serde::{Deserialize, Serialize};
use serde_json::json;

use self::directory::Directory;
use self::live::LiveCache;
pub use self::wire::{Incident, OnCall, OpenIncidents, PagerDutyReference, PagerDutyService};
use self::wire::{IncidentsResponse, OnCallWire, ServiceResponse, ServiceWire, TeamWire, lowest_level_on_call};
use crate::provider::{BuildContext, BuildError, BuildProvider, Facts, Provider, ReadError};

/// The kind a partial owner ref defaults to, as in the entities' specs.
const OWNER_KIND: Option<&str> = catalog_domain::spec::default_kind("owner");

/// The provider's type in the configuration.
const KIND: &str = "pagerduty";

/// The annotation naming an entity's PagerDuty service.
pub const SERVICE_ID_ANNOTATION: &str = "pagerduty.com/service-id";
/// The annotation naming an Events API routing key of the entity's service.
pub const INTEGRATION_KEY_ANNOTATION: &str = "pagerduty.com/integration-key";
/// The annotation linking a Group to a PagerDuty team.
pub const TEAM_ID_ANNOTATION: &str = "pagerduty.com/team-id";

/// The `spec.type` of the Resources made for unmapped services.
pub const UNMAPPED_SERVICE_TYPE: &str = "pagerduty-service";

/// The most incidents kept per service (the newest).
pub const LATEST_INCIDENTS: usize = 25;

/// One PagerDuty account.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PagerDutyProviderConfig {
    /// The REST API's root (`https://api.eu.pagerduty.com` for EU accounts).
    pub api_base_url: String,
    /// The environment variable holding a REST API key (read-only is enough).
    pub token_variable: String,
    /// How long who is on call is served from the cache before PagerDuty is
    /// asked again; 0: every query asks (concurrent ones still share a request).
    pub oncall_cache_seconds: u64,
    /// The same for open incidents.
    pub incidents_cache_seconds: u64,
    /// Make a Resource (`spec.type: pagerduty-service`) of every service no
    /// catalog entity maps.
    pub ingest_unmapped_services: bool,
    /// The owner of those Resources when none of the service's teams maps to
    /// a Group; required with `ingest_unmapped_services`.
    pub unmapped_owner: String,
    /// The namespace of those Resources.
    pub namespace: String,
    /// Items per page (PagerDuty allows up to 100).
    pub page_size: usize,
    /// The most of its entities one complete run may remove, in percent.
    pub max_removed_percent: u8,
    pub request_timeout_seconds: u64,
}

impl Default for PagerDutyProviderConfig {
    fn default() -> Self {
        Self {
            api_base_url: "https://api.pagerduty.com".into(),
            token_variable: "PAGERDUTY_TOKEN".into(),
            oncall_cache_seconds: 60,
            incidents_cache_seconds: 60,
            ingest_unmapped_services: false,
            unmapped_owner: String::new(),
            namespace: "default".into(),
            page_size: 100,
            max_removed_percent: 20,
            request_timeout_seconds: 30,
        }
    }
}

/// Why a PagerDuty provider cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum PagerDutyBuildError {
    #[error("pagerduty provider: unmapped_owner must be set when ingest_unmapped_services is on")]
    NoUnmappedOwner,
    #[error("pagerduty provider: unmapped_owner {0:?} is not an entity reference: {1}")]
    UnmappedOwner(String, String),
    #[error("pagerduty provider: namespace {0:?} is not a valid namespace")]
    Namespace(String),
    #[error("pagerduty provider: page_size must be between 1 and 100, got {0}")]
    PageSize(usize),
    #[error("pagerduty provider: api_base_url {0:?} is not a URL")]
    BaseUrl(String),
    #[error("pagerduty provider: the token in {0} is not a valid header value")]
    Token(String),
    #[error("pagerduty provider: cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl BuildProvider for PagerDutyProviderConfig {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn build(&self, context: BuildContext) -> Result<Arc<dyn Provider>, BuildError> {
        let provider = PagerDutyProvider::build(context.key, self, context.policy, context.catalog);
        Ok(Arc::new(provider.map_err(BuildError::new)?))
    }
}

/// Why PagerDuty data cannot be served.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PagerDutyError {
    /// No run has read the account in full yet.
    #[error("PagerDuty ({provider}) has not been read yet{}", .reason.as_ref().map(|reason| format!(": {reason}")).unwrap_or_default())]
    NotRead { provider: String, reason: Option<String> },
    #[error("PagerDuty ({provider}) could not be read: {error}")]
    Source { provider: String, error: SourceError },
    /// The service left the directory since it was looked up.
    #[error("PagerDuty has no service {service}")]
    UnknownService { service: String },
}

/// How the live reads (on-call, incidents) retry: they answer a GraphQL
/// request, so they give up long before a run would.
fn live_policy(policy: RetryPolicy) -> RetryPolicy {
    RetryPolicy {
        max_attempts: policy.max_attempts.min(2),
        base_delay: policy.base_delay.min(Duration::from_millis(200)),
        max_delay: policy.max_delay.min(Duration::from_secs(1)),
        max_wait: policy.max_wait.min(Duration::from_secs(5)),
    }
}

/// A ready PagerDuty provider: its sources, directory and caches.
pub struct PagerDutyProvider {
    key: String,
    config: PagerDutyProviderConfig,
    /// Runs and webhook refreshes.
    source: HttpSource,
    /// On-call and incident reads for the API.
    live_source: HttpSource,
    /// Read (it cannot write) to tell mapped services from unmapped.
    catalog: Catalog,
    /// The last complete read; None before the first.
    directory: RwLock<Option<Arc<Directory>>>,
    /// Why the last run could not read the account (None after a complete read).
    last_error: RwLock<Option<String>>,
    on_call: LiveCache<Vec<OnCall>>,
    incidents: LiveCache<OpenIncidents>,
}

impl std::fmt::Debug for PagerDutyProvider {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("PagerDutyProvider").field("key", &self.key).field("config", &self.config).finish()
    }
}

fn pagerduty_source(config: &PagerDutyProviderConfig, policy: RetryPolicy) -> Result<HttpSource, PagerDutyBuildError> {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("application/vnd.pagerduty+json;version=2"));
    headers.insert(USER_AGENT, HeaderValue::from_static("backstage-catalog-graphql"));
    if let Ok(token) = std::env::var(&config.token_variable)
        && !token.is_empty()
    {
        let mut value = HeaderValue::from_str(&format!("Token token={token}"))
            .map_err(|_| PagerDutyBuildError::Token(config.token_variable.clone()))?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    } else {
        tracing::warn!(variable = %config.token_variable, "no PagerDuty token in the environment; PagerDuty will refuse the requests");
    }
    Ok(HttpSource::new(headers, Duration::from_secs(config.request_timeout_seconds.max(1)), policy)?)
}

impl PagerDutyProvider {
    /// Checks the configuration and reads the token from the environment.
    /// `catalog` is read to tell mapped services from unmapped.
    pub fn build(
        key: String,
        config: &PagerDutyProviderConfig,
        policy: RetryPolicy,
        catalog: Catalog,
    ) -> Result<Self, PagerDutyBuildError> {
        if reqwest::Url::parse(&config.api_base_url).is_err() {
            return Err(PagerDutyBuildError::BaseUrl(config.api_base_url.clone()));
        }
        if !(1..=100).contains(&config.page_size) {
            return Err(PagerDutyBuildError::PageSize(config.page_size));
        }
        if catalog_domain::EntityRef::parse(&format!("resource:{}/x", config.namespace)).is_err() {
            return Err(PagerDutyBuildError::Namespace(config.namespace.clone()));
        }
        if config.ingest_unmapped_services {
            if config.unmapped_owner.trim().is_empty() {
                return Err(PagerDutyBuildError::NoUnmappedOwner);
            }
            catalog_domain::EntityRef::parse_with_defaults(&config.unmapped_owner, OWNER_KIND, &config.namespace)
                .map_err(|error| {
                    PagerDutyBuildError::UnmappedOwner(config.unmapped_owner.clone(), error.to_string())
                })?;
        }
        Ok(Self {
            key,
            source: pagerduty_source(config, policy)?,
            live_source: pagerduty_source(config, live_policy(policy))?,
            catalog,
            directory: RwLock::default(),
            last_error: RwLock::default(),
            on_call: LiveCache::new(Duration::from_secs(config.oncall_cache_seconds)),
            incidents: LiveCache::new(Duration::from_secs(config.incidents_cache_seconds)),
            config: config.clone(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.config.api_base_url.trim_end_matches('/'))
    }

    /// `path` with query parameters, encoded.
    fn url_with(&self, path: &str, query: &[(&str, &str)]) -> String {
        let mut url = reqwest::Url::parse(&self.url(path)).expect("the base URL was checked at build");
        url.query_pairs_mut().extend_pairs(query);
        url.into()
    }

    fn directory(&self) -> Option<Arc<Directory>> {
        self.directory.read().clone()
    }

    fn not_read(&self) -> PagerDutyError {
        let reason = self.last_error.read().clone();
        PagerDutyError::NotRead { provider: self.key.clone(), reason }
    }

    fn source_error(&self, error: SourceError) -> PagerDutyError {
        PagerDutyError::Source { provider: self.key.clone(), error }
    }

    /// Reads the account into a new directory and, with
    /// `ingest_unmapped_services`, a snapshot of Resources for the services
    /// no catalog entity maps. Any failed page: an incomplete, empty
    /// snapshot and the previous directory kept.
    async fn snapshot(&self) -> Snapshot {
        let location = format!("url:{}", self.url("services"));
        let mut snapshot = Snapshot {
            provider: self.key.clone(),
            max_removed_share: Some(f64::from(self.config.max_removed_percent.min(100)) / 100.0),
            ..Default::default()
        };
        let failed = |mut snapshot: Snapshot, error: String| {
            tracing::warn!(provider = %self.key, error = %error, "cannot read PagerDuty; nothing changes");
            snapshot.locations.push(LocationStatus {
                target: location.clone(),
                error: Some(error.clone()),
                keeps_entities: true,
                ..Default::default()
            });
            snapshot.incomplete = Some(format!("reading PagerDuty failed: {error}"));
            snapshot
        };
        let directory = match self.fetch_directory().await {
            Ok(directory) => directory,
            Err(error) => {
                *self.last_error.write() = Some(error.to_string());
                return failed(snapshot, error.to_string());
            }
        };
        let directory = Arc::new(directory);
        *self.directory.write() = Some(directory.clone());
        *self.last_error.write() = None;
        let mut problems = Vec::new();
        if self.config.ingest_unmapped_services {
            match self.unmapped_resources(&directory).await {
                Ok(documents) => {
                    for document in documents {
                        match catalog_domain::validate(&document) {
                            Ok(entity) => snapshot.entities.push(SnapshotEntity::new(entity, Some(location.clone()))),
                            Err(errors) => {
                                // A service that cannot be a Resource (a description
                                // over the limits, say) keeps its last good version
                                // and says why, without holding the others back.
                                let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
                                let name = document["metadata"]["name"].as_str().unwrap_or_default();
                                problems.push(format!("Resource {name}: {}", messages.join("; ")));
                                if let Ok(entity_ref) = catalog_domain::EntityRef::parse(&format!(
                                    "resource:{}/{name}",
                                    self.config.namespace
                                )) {
                                    snapshot.invalid.push(InvalidEntity {
                                        entity_ref,
                                        location: Some(location.clone()),
                                        errors: messages,
                                    });
                                }
                            }
                        }
                    }
                }
                Err(error) => {
                    return failed(snapshot, format!("cannot read the catalog's PagerDuty annotations: {error}"));
                }
            }
        }
        snapshot.locations.push(LocationStatus {
            target: location,
            error: (!problems.is_empty()).then(|| problems.join("\n")),
            n_entities: snapshot.entities.len(),
            keeps_entities: false,
        });
        snapshot
    }

    async fn fetch_directory(&self) -> Result<Directory, SourceError> {
        let services_url = self.url_with(
            "services",
            &[
                ("include[]", "escalation_policies"),
                ("include[]", "teams"),
                ("include[]", "integrations"),
                ("total", "false"),
            ],
        );
        let services: Vec<ServiceWire> =
            self.source.get_offset_pages(&services_url, "services", self.config.page_size).await?;
        let teams: Vec<TeamWire> =
            self.source.get_offset_pages(&self.url("teams"), "teams", self.config.page_size).await?;
        Ok(Directory::new(
            services.into_iter().map(PagerDutyService::from).collect(),
            teams.into_iter().map(PagerDutyReference::from).collect(),
        ))
    }

    /// Resources for the services no entity of another provider maps.
    async fn unmapped_resources(
        &self,
        directory: &Directory,
    ) -> Result<Vec<serde_json::Value>, catalog_store::StoreError> {
        let annotated =
            self.catalog.annotated(&[SERVICE_ID_ANNOTATION, INTEGRATION_KEY_ANNOTATION, TEAM_ID_ANNOTATION]).await?;
        let mut mapped_ids: HashSet<&str> = HashSet::new();
        let mut mapped_keys: HashSet<&str> = HashSet::new();
        let mut groups_by_team: HashMap<&str, &str> = HashMap::new();
        // Our own Resources carry the service id too: they do not map it.
        for annotation in annotated.iter().filter(|annotation| annotation.provider != self.key) {
            match annotation.key.as_str() {
                SERVICE_ID_ANNOTATION => {
                    mapped_ids.insert(annotation.value.trim());
                }
                INTEGRATION_KEY_ANNOTATION => {
                    mapped_keys.insert(annotation.value.trim());
                }
                _ if annotation.entity_ref.kind() == "group" => {
                    groups_by_team.entry(annotation.value.trim()).or_insert(annotation.entity_ref.as_str());
                }
                _ => {}
            }
        }
        let owner_fallback = catalog_domain::EntityRef::parse_with_defaults(
            &self.config.unmapped_owner,
            OWNER_KIND,
            &self.config.namespace,
        )
        .map(|owner| owner.to_string())
        .unwrap_or_default();
        Ok(directory
            .services()
            .filter(|service| !mapped_ids.contains(service.id.as_str()))
            .filter(|service| !service.integration_keys.iter().any(|key| mapped_keys.contains(key.as_str())))
            .map(|service| {
                let owner = service
                    .teams
                    .iter()
                    .find_map(|team| groups_by_team.get(team.id.as_str()))
                    .map_or(owner_fallback.clone(), |group| (*group).to_owned());
                self.resource_document(service, &owner)
            })
            .collect())
    }

    fn resource_document(&self, service: &PagerDutyService, owner: &str) -> serde_json::Value {
        let mut metadata = json!({
            "name": resource_name(&service.id),
            "namespace": self.config.namespace,
            "title": service.name,
            "annotations": {SERVICE_ID_ANNOTATION: service.id},
        });
        if let Some(description) = &service.description {
            metadata["description"] = json!(description);
        }
        if let Some(url) = &service.html_url {
            metadata["links"] = json!([{"url": url, "title": "PagerDuty"}]);
        }
        json!({
            "apiVersion": "backstage.io/v1alpha1",
            "kind": "Resource",
            "metadata": metadata,
            "spec": {"type": UNMAPPED_SERVICE_TYPE, "owner": owner},
        })
    }

    /// Who is on call for the service now (the lowest escalation level of
    /// its policy, one entry per user), from the cache or PagerDuty.
    async fn on_call(&self, service: &PagerDutyService) -> Result<Arc<Vec<OnCall>>, PagerDutyError> {
        let Some(policy) = &service.escalation_policy else { return Ok(Arc::default()) };
        let url = self.url_with("oncalls", &[("escalation_policy_ids[]", &policy.id), ("include[]", "users")]);
        self.on_call
            .get_or_fetch(&policy.id, || async {
                let entries: Vec<OnCallWire> =
                    self.live_source.get_offset_pages(&url, "oncalls", self.config.page_size).await?;
                Ok(lowest_level_on_call(entries))
            })
            .await
            .map_err(|error| self.source_error(error))
    }

    /// The service's open incidents: how many, and the newest.
    async fn incidents(&self, service: &PagerDutyService) -> Result<Arc<OpenIncidents>, PagerDutyError> {
        let limit = LATEST_INCIDENTS.to_string();
        let url = self.url_with(
            "incidents",
            &[
                ("service_ids[]", &service.id),
                ("statuses[]", "triggered"),
                ("statuses[]", "acknowledged"),
                ("sort_by", "created_at:desc"),
                ("total", "true"),
                ("limit", &limit),
            ],
        );
        self.incidents
            .get_or_fetch(&service.id, || async {
                let (response, _) = self.live_source.get_json::<IncidentsResponse>(&url).await?;
                let mut latest: Vec<Incident> = response.incidents.into_iter().map(Incident::from).collect();
                latest.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
                latest.truncate(LATEST_INCIDENTS);
                // Without a total (PagerDuty leaves it out unless asked) what was read is all there is to count.
                let count = response.total.unwrap_or(latest.len() as u64).max(latest.len() as u64);
                Ok(OpenIncidents { count, latest })
            })
            .await
            .map_err(|error| self.source_error(error))
    }

    /// Re-reads one service into the directory (a webhook said it changed)
    /// and forgets its cached on-call and incidents. Whether the service is
    /// this account's: false when PagerDuty does not know it here.
    async fn refresh_service(&self, id: &str) -> Result<bool, PagerDutyError> {
        let before = self.directory().and_then(|directory| directory.service(id));
        self.incidents.invalidate(id);
        if let Some(policy) = before.as_ref().and_then(|service| service.escalation_policy.as_ref()) {
            self.on_call.invalidate(&policy.id);
        }
        let url = self.url_with(
            &format!("services/{id}"),
            &[("include[]", "escalation_policies"), ("include[]", "teams"), ("include[]", "integrations")],
        );
        let service = match self.source.get_json::<ServiceResponse>(&url).await {
            Ok((response, _)) => Some(PagerDutyService::from(response.service)),
            Err(SourceError::NotFound) => None,
            Err(error) => return Err(self.source_error(error)),
        };
        if let Some(policy) = service.as_ref().and_then(|service| service.escalation_policy.as_ref()) {
            self.on_call.invalidate(&policy.id);
        }
        let known = service.is_some();
        if known || before.is_some() {
            // Under the write lock, so that two refreshes do not drop each other's change.
            let mut guard = self.directory.write();
            if let Some(directory) = guard.as_ref() {
                *guard = Some(Arc::new(directory.with_service(id, service)));
            }
        }
        Ok(known)
    }
}

impl Provider for PagerDutyProvider {
    fn key(&self) -> &str {
        &self.key
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn read(&self) -> BoxFuture<'_, Result<Vec<Snapshot>, ReadError>> {
        Box::pin(async move { Ok(vec![self.snapshot().await]) })
    }

    /// The account: [`PagerDutyView`] answers the API from every account's.
    fn contribute(self: Arc<Self>, facts: &mut Facts) {
        facts.add(self);
    }

    /// A read swaps the directory in; the snapshot is the leader's to apply.
    fn refresh_live(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.snapshot().await;
        })
    }
}

/// A Resource name for a service: `pagerduty-` and its id. Not its name:
/// PagerDuty's names are neither unique nor stable, and a renamed service
/// must stay the same entity (its history, its relations).
fn resource_name(id: &str) -> String {
    let id: String = id.chars().filter(char::is_ascii_alphanumeric).take(53).collect();
    format!("pagerduty-{}", id.to_ascii_lowercase())
}

/// What the API reads from PagerDuty: the services entities map to, who is
/// on call and the open incidents, over every configured account.
#[derive(Clone, Debug)]
pub struct PagerDutyView {
    providers: Vec<Arc<PagerDutyProvider>>,
}

impl PagerDutyView {
    pub(crate) fn new(providers: Vec<Arc<PagerDutyProvider>>) -> Option<Self> {
        (!providers.is_empty()).then_some(Self { providers })
    }

    /// The first of `find`'s answers over the accounts' directories; an
    /// error when none answered and some account has not been read yet.
    fn find<T>(&self, find: impl Fn(&Directory) -> Option<T>) -> Result<Option<T>, PagerDutyError> {
        let mut unread = None;
        for provider in &self.providers {
            match provider.directory() {
                Some(directory) => {
                    if let Some(found) = find(&directory) {
                        return Ok(Some(found));
                    }
                }
                None => {
                    unread.get_or_insert_with(|| provider.not_read());
                }
            }
        }
        unread.map_or(Ok(None), Err)
    }

    /// When the oldest account's services were last read; None while any
    /// account has not been read yet. What a service lookup answers is as
    /// old as this.
    pub fn read_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.providers.iter().map(|provider| provider.directory().map(|directory| directory.read_at)).min().flatten()
    }

    /// Whether any of these annotations links to PagerDuty.
    pub fn is_mapped(annotations: &BTreeMap<String, String>) -> bool {
        [SERVICE_ID_ANNOTATION, INTEGRATION_KEY_ANNOTATION].iter().any(|key| annotations.contains_key(*key))
    }

    /// The service an entity's annotations map it to: by
    /// `pagerduty.com/service-id`, else by `pagerduty.com/integration-key`
    /// through the services' integrations. None when neither is set or
    /// PagerDuty has no such service.
    pub fn service_for(
        &self,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Option<Arc<PagerDutyService>>, PagerDutyError> {
        if let Some(id) = annotations.get(SERVICE_ID_ANNOTATION).map(|id| id.trim()) {
            return self.find(|directory| directory.service(id));
        }
        if let Some(key) = annotations.get(INTEGRATION_KEY_ANNOTATION).map(|key| key.trim()) {
            return self.find(|directory| directory.service_by_integration_key(key));
        }
        Ok(None)
    }

    /// The services of a PagerDuty team, by name.
    pub fn services_of_team(&self, team_id: &str) -> Result<Vec<Arc<PagerDutyService>>, PagerDutyError> {
        let team_id = team_id.trim();
        Ok(self
            .find(|directory| {
                let services = directory.services_of_team(team_id);
                (!services.is_empty() || directory.team(team_id).is_some()).then_some(services)
            })?
            .unwrap_or_default())
    }

    /// The account that holds the service.
    fn provider_of(&self, service_id: &str) -> Result<(Arc<PagerDutyProvider>, Arc<PagerDutyService>), PagerDutyError> {
        let mut unread = None;
        for provider in &self.providers {
            match provider.directory() {
                Some(directory) => {
                    if let Some(service) = directory.service(service_id) {
                        return Ok((provider.clone(), service));
                    }
                }
                None => {
                    unread.get_or_insert_with(|| provider.not_read());
                }
            }
        }
        Err(unread.unwrap_or_else(|| PagerDutyError::UnknownService { service: service_id.to_owned() }))
    }

    /// Who is on call for the service now: its escalation policy's lowest
    /// level, one entry per user, cached per policy for
    /// `oncall_cache_seconds`.
    pub async fn on_call(&self, service_id: &str) -> Result<Arc<Vec<OnCall>>, PagerDutyError> {
        let (provider, service) = self.provider_of(service_id)?;
        provider.on_call(&service).await
    }

    /// The service's open incidents, cached for `incidents_cache_seconds`.
    pub async fn incidents(&self, service_id: &str) -> Result<Arc<OpenIncidents>, PagerDutyError> {
        let (provider, service) = self.provider_of(service_id)?;
        provider.incidents(&service).await
    }

    /// Forgets the cached incidents of a service (an incident webhook: the
    /// service itself did not change, so nothing is re-read).
    pub fn forget_incidents(&self, service_id: &str) {
        for provider in &self.providers {
            provider.incidents.invalidate(service_id);
        }
    }

    /// Re-reads a service that a webhook says changed, in every account
    /// that has it or (a new service) knows it, forgetting its cached
    /// on-call and incidents. Returns the keys of the providers that knew it
    /// and make Resources of unmapped services: their snapshots may change.
    pub async fn refresh_service(&self, service_id: &str) -> Vec<String> {
        let mut rerun = Vec::new();
        for provider in &self.providers {
            match provider.refresh_service(service_id).await {
                Ok(known) => {
                    if known && provider.config.ingest_unmapped_services {
                        rerun.push(provider.key.clone());
                    }
                }
                Err(error) => {
                    tracing::warn!(provider = %provider.key, service = service_id, error = %error, "cannot refresh a PagerDuty service");
                }
            }
        }
        rerun
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_come_from_the_id_and_are_valid_names() {
        assert_eq!(resource_name("PX1Y2Z3"), "pagerduty-px1y2z3");
        let odd = resource_name(&format!("P-{}", "X".repeat(80)));
        assert!(odd.len() <= 63, "{odd}");
        assert!(catalog_domain::EntityRef::parse(&format!("resource:default/{odd}")).is_ok(), "{odd}");
    }

    #[test]
    fn live_reads_give_up_sooner_than_runs() {
        let live = live_policy(RetryPolicy::default());
        assert_eq!(live.max_attempts, 2);
        assert!(live.max_wait <= Duration::from_secs(5));
    }
}
