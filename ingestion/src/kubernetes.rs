//! The Kubernetes provider: a kube-rs watcher per (cluster, workload kind)
//! keeps every configured cluster's Deployments, StatefulSets, DaemonSets and
//! CronJobs in memory, and a run projects them into catalog entities, one
//! snapshot per (cluster, kind) scope. A workload that a catalog entity
//! claims (see `link.rs`) attaches to that entity instead of becoming one;
//! the others become Components (or Resources) with collision-free names.
//!
//! A scope's snapshot is complete once its watcher has listed it (and again
//! after every re-list on 410 Gone); until then it is incomplete and removes
//! nothing. Watch events after that only wake the engine, which re-projects
//! after a debounce and lets the store's diff find what changed: status
//! churn (replicas, resourceVersion, managedFields) never reaches the
//! projected entities, so it writes nothing and sends no change event.
//!
//! The watchers run in every replica, so that each can answer the
//! `kubernetes` GraphQL field from memory; only the leading replica applies
//! the snapshots.

mod link;
mod workload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use catalog_store::{Catalog, InvalidEntity, LocationStatus, Snapshot, SnapshotEntity};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tokio::sync::Notify;

use catalog_http::{RetryPolicy, backoff};
use futures::future::BoxFuture;
use link::{CLUSTER, KUBERNETES_ID, LINK_ANNOTATIONS, Link, NAMESPACE};
pub use workload::{Replicas, WatchedKind, Workload, WorkloadCondition, WorkloadKind};

use crate::documents::{MANAGED_BY_LOCATION, MANAGED_BY_ORIGIN_LOCATION};
use crate::provider::{BuildContext, BuildError, BuildProvider, Facts, Provider, ReadError, ScopeHealth};

/// The provider's type in the configuration.
const KIND: &str = "kubernetes";

/// Where and what to watch, and how workloads become entities.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesProviderConfig {
    pub clusters: Vec<KubernetesClusterConfig>,
    /// The workload kinds watched in every cluster.
    pub kinds: Vec<WorkloadKind>,
    /// Only these namespaces (one watcher per namespace and kind); empty:
    /// every namespace (one cluster-wide watcher per kind).
    pub namespaces: Vec<String>,
    /// Namespaces whose workloads are ignored.
    pub exclude_namespaces: Vec<String>,
    /// `Component` or `Resource`: what an unclaimed workload becomes.
    pub entity_kind: String,
    /// The `spec.type` of the entities made from workloads.
    pub spec_type: String,
    /// A Component's `spec.lifecycle`.
    pub lifecycle: String,
    /// The catalog namespace of the entities made from workloads.
    pub catalog_namespace: String,
    /// The workload annotation (or label) naming its owner.
    pub owner_annotation: String,
    /// The owner of a workload that names none. Required.
    pub default_owner: String,
    /// How long watch events settle before the workloads are projected again.
    pub debounce_ms: u64,
    /// How long a run waits for the watchers' first lists before it applies
    /// what is there (scopes not listed yet remove nothing).
    pub initial_list_timeout_seconds: u64,
    /// The most of a scope's entities one run may remove, in percent; more
    /// is held back until a forced run. 100: no limit.
    pub max_removed_percent: u8,
}

impl Default for KubernetesProviderConfig {
    fn default() -> Self {
        Self {
            clusters: Vec::new(),
            kinds: WorkloadKind::ALL.to_vec(),
            namespaces: Vec::new(),
            exclude_namespaces: ["kube-system", "kube-public", "kube-node-lease"].map(str::to_owned).to_vec(),
            entity_kind: "Component".into(),
            spec_type: "service".into(),
            lifecycle: "production".into(),
            catalog_namespace: "default".into(),
            owner_annotation: "backstage.io/owner".into(),
            default_owner: String::new(),
            debounce_ms: 1_000,
            initial_list_timeout_seconds: 30,
            max_removed_percent: 20,
        }
    }
}

/// How to reach one cluster. With neither `url`, `kubeconfig` nor
/// `in_cluster`, the client is inferred as kubectl does (`KUBECONFIG`,
/// `~/.kube/config`, then in-cluster).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesClusterConfig {
    /// The cluster's name in entity names, annotations and scopes:
    /// lower-case letters, digits and dashes.
    pub name: String,
    /// The API server's URL; overrides the kubeconfig's.
    pub url: String,
    /// A kubeconfig file to read.
    pub kubeconfig: String,
    /// The kubeconfig context; empty: its current context.
    pub context: String,
    /// Use the pod's service account.
    pub in_cluster: bool,
    /// An environment variable holding a bearer token; empty: none.
    pub token_variable: String,
}

/// Why a Kubernetes provider cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesBuildError {
    #[error("kubernetes provider: clusters must list at least one cluster")]
    NoClusters,
    #[error("kubernetes provider: kinds must list at least one workload kind")]
    NoKinds,
    #[error(
        "kubernetes provider: clusters[{0}].name {1:?} must be 1-40 lower-case letters, digits and dashes, and unique"
    )]
    ClusterName(usize, String),
    #[error("kubernetes provider: clusters[{0}].url {1:?} is not a URL")]
    Url(usize, String),
    #[error("kubernetes provider: default_owner must be set (the owner of workloads that name none)")]
    NoOwner,
    #[error("kubernetes provider: entity_kind must be Component or Resource, not {0:?}")]
    EntityKind(String),
    #[error(
        "kubernetes providers: cluster {0:?} is configured twice; its workloads would get the same entity names (one provider per cluster)"
    )]
    ClusterTwice(String),
    #[error("kubernetes provider: catalog_namespace {0:?} is not a catalog namespace (a lower-case DNS label)")]
    CatalogNamespace(String),
    #[error("kubernetes provider: default_owner {0:?} is not an entity ref: {1}")]
    Owner(String, String),
}

impl BuildProvider for KubernetesProviderConfig {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn build(&self, context: BuildContext) -> Result<Arc<dyn Provider>, BuildError> {
        let provider = KubernetesProvider::build(context.key, self, context.policy, context.catalog);
        Ok(Arc::new(provider.map_err(BuildError::new)?))
    }
}

/// Why a cluster's client cannot be configured.
#[derive(Debug, thiserror::Error)]
enum ClientError {
    #[error(transparent)]
    InCluster(#[from] kube::config::InClusterError),
    #[error(transparent)]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error(transparent)]
    Infer(#[from] kube::config::InferConfigError),
    #[error(transparent)]
    Url(#[from] http::uri::InvalidUri),
    #[error("the token variable {0} is not set")]
    TokenVariable(String),
    #[error("the token in {0} is not a valid header value")]
    Token(String),
    #[error(transparent)]
    Client(#[from] kube::Error),
}

/// The key of one scope: a cluster and a workload kind.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ScopeKey {
    cluster: String,
    kind: WorkloadKind,
}

/// A scope as a run sees it: listed yet, and the watcher's last error.
type ScopeOutcome = (ScopeKey, bool, Option<String>);

/// One watcher's share of a scope: every namespace, or one.
#[derive(Debug, Default)]
struct Part {
    /// Whether its list completed at least once.
    listed: bool,
    /// The workloads by namespace and name.
    workloads: BTreeMap<(String, String), Workload>,
    /// A list in progress, swapped in when it completes.
    pending: Option<BTreeMap<(String, String), Workload>>,
}

#[derive(Debug, Default)]
struct ScopeState {
    /// By namespace ("" for a cluster-wide watcher).
    parts: BTreeMap<String, Part>,
    /// The watcher's last error and when; cleared by its next event.
    last_error: Option<(DateTime<Utc>, String)>,
}

impl ScopeState {
    fn listed(&self) -> bool {
        self.parts.values().all(|part| part.listed)
    }
}

/// What the watchers hold, shared with the API.
#[derive(Debug, Default)]
struct Watched {
    scopes: RwLock<BTreeMap<ScopeKey, ScopeState>>,
    /// Woken when a workload appears, goes, or changes labels or annotations.
    changed: Notify,
    /// Woken on every list completion (runs waiting for first lists).
    listed: Notify,
}

impl Watched {
    fn scopes(&self) -> parking_lot::RwLockReadGuard<'_, BTreeMap<ScopeKey, ScopeState>> {
        self.scopes.read()
    }

    fn update(&self, scope: &ScopeKey, change: impl FnOnce(&mut ScopeState)) {
        let mut scopes = self.scopes.write();
        if let Some(state) = scopes.get_mut(scope) {
            change(state);
        }
    }
}

/// The live view of one provider's workloads, for the API: no call to a
/// cluster per request.
#[derive(Clone, Debug)]
pub struct KubernetesView {
    key: String,
    watched: Arc<Watched>,
}

/// How one scope's watcher is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeStatus {
    /// The scope's key in the store (`kubernetes:prod:deployment`).
    pub name: String,
    pub listed: bool,
    pub workloads: usize,
    pub last_error: Option<String>,
}

impl KubernetesView {
    /// The workloads an entity with these annotations links to, by key.
    pub fn workloads_for(&self, annotations: &BTreeMap<String, String>) -> Vec<Workload> {
        let Some(link) = Link::from_annotations(annotations.iter().map(|(k, v)| (k.as_str(), v.as_str()))) else {
            return Vec::new();
        };
        let scopes = self.watched.scopes();
        let mut found: Vec<Workload> = scopes
            .values()
            .flat_map(|scope| scope.parts.values())
            .flat_map(|part| part.workloads.values())
            .filter(|workload| link.matches(workload))
            .cloned()
            .collect();
        found.sort_by_key(Workload::key);
        found
    }

    /// Whether every scope has been listed: from then on the watchers keep
    /// the workloads current.
    pub fn listed(&self) -> bool {
        self.watched.scopes().values().all(ScopeState::listed)
    }

    /// Every scope's watcher.
    pub fn scopes(&self) -> Vec<ScopeStatus> {
        self.watched
            .scopes()
            .iter()
            .map(|(key, state)| ScopeStatus {
                name: scope_name(&self.key, key),
                listed: state.listed(),
                workloads: state.parts.values().map(|part| part.workloads.len()).sum(),
                last_error: state.last_error.as_ref().map(|(at, error)| format!("{}: {error}", at.to_rfc3339())),
            })
            .collect()
    }
}

/// The store's provider key of a scope: `kubernetes:prod:deployment`.
fn scope_name(key: &str, scope: &ScopeKey) -> String {
    format!("{key}:{}:{}", scope.cluster, scope.kind.as_str().to_ascii_lowercase())
}

/// A ready Kubernetes provider.
pub struct KubernetesProvider {
    key: String,
    config: KubernetesProviderConfig,
    policy: RetryPolicy,
    /// Read (it cannot write) for the links other providers' entities claim.
    catalog: Catalog,
    watched: Arc<Watched>,
    /// The watcher tasks, once started; aborted when the provider goes.
    tasks: Mutex<Option<Vec<tokio::task::AbortHandle>>>,
}

impl std::fmt::Debug for KubernetesProvider {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("KubernetesProvider").field("key", &self.key).finish_non_exhaustive()
    }
}

impl Drop for KubernetesProvider {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut();
        for task in tasks.iter().flatten() {
            task.abort();
        }
    }
}

impl KubernetesProvider {
    /// Checks the configuration; nothing is contacted until [`start`](Self::start).
    pub fn build(
        key: String,
        config: &KubernetesProviderConfig,
        policy: RetryPolicy,
        catalog: Catalog,
    ) -> Result<Self, KubernetesBuildError> {
        if config.clusters.is_empty() {
            return Err(KubernetesBuildError::NoClusters);
        }
        if config.kinds.is_empty() {
            return Err(KubernetesBuildError::NoKinds);
        }
        for (index, cluster) in config.clusters.iter().enumerate() {
            let name = &cluster.name;
            let valid = !name.is_empty()
                && name.len() <= 40
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.starts_with('-')
                && !name.ends_with('-')
                && config.clusters.iter().filter(|other| other.name == *name).count() == 1;
            if !valid {
                return Err(KubernetesBuildError::ClusterName(index, name.clone()));
            }
            if !cluster.url.is_empty() && cluster.url.parse::<http::Uri>().is_err() {
                return Err(KubernetesBuildError::Url(index, cluster.url.clone()));
            }
        }
        if config.default_owner.trim().is_empty() {
            return Err(KubernetesBuildError::NoOwner);
        }
        if !["Component", "Resource"].contains(&config.entity_kind.as_str()) {
            return Err(KubernetesBuildError::EntityKind(config.entity_kind.clone()));
        }
        if catalog_domain::names::check_namespace(&config.catalog_namespace).is_err() {
            return Err(KubernetesBuildError::CatalogNamespace(config.catalog_namespace.clone()));
        }
        if let Err(error) = catalog_domain::EntityRef::parse(&config.default_owner) {
            return Err(KubernetesBuildError::Owner(config.default_owner.clone(), error.to_string()));
        }
        // Two watchers on one part would interleave their lists.
        let mut config = config.clone();
        config.kinds.sort();
        config.kinds.dedup();
        config.namespaces.sort();
        config.namespaces.dedup();
        let config = &config;
        let mut scopes = BTreeMap::new();
        for cluster in &config.clusters {
            for kind in &config.kinds {
                let parts: BTreeMap<String, Part> = if config.namespaces.is_empty() {
                    [(String::new(), Part::default())].into()
                } else {
                    config.namespaces.iter().map(|namespace| (namespace.clone(), Part::default())).collect()
                };
                scopes.insert(
                    ScopeKey { cluster: cluster.name.clone(), kind: *kind },
                    ScopeState { parts, last_error: None },
                );
            }
        }
        let watched = Arc::new(Watched { scopes: RwLock::new(scopes), ..Default::default() });
        Ok(Self { key, config: config.clone(), policy, catalog, watched, tasks: Mutex::new(None) })
    }

    /// The live view the API reads.
    fn view(&self) -> KubernetesView {
        KubernetesView { key: self.key.clone(), watched: Arc::clone(&self.watched) }
    }

    /// Starts the watchers (once; later calls do nothing). They run until
    /// the provider is dropped, recovering from errors with backoff.
    fn start_watchers(&self) {
        let mut tasks = self.tasks.lock();
        if tasks.is_some() {
            return;
        }
        let mut started = Vec::new();
        for cluster in &self.config.clusters {
            for kind in &self.config.kinds {
                let parts: Vec<String> = if self.config.namespaces.is_empty() {
                    vec![String::new()]
                } else {
                    self.config.namespaces.clone()
                };
                for namespace in parts {
                    let watch = Watch {
                        cluster: cluster.clone(),
                        scope: ScopeKey { cluster: cluster.name.clone(), kind: *kind },
                        namespace,
                        exclude: self.config.exclude_namespaces.clone(),
                        watched: Arc::clone(&self.watched),
                        policy: self.policy,
                    };
                    let task = match kind {
                        WorkloadKind::Deployment => tokio::spawn(watch.run::<Deployment>()),
                        WorkloadKind::StatefulSet => tokio::spawn(watch.run::<StatefulSet>()),
                        WorkloadKind::DaemonSet => tokio::spawn(watch.run::<DaemonSet>()),
                        WorkloadKind::CronJob => tokio::spawn(watch.run::<CronJob>()),
                    };
                    started.push(task.abort_handle());
                }
            }
        }
        *tasks = Some(started);
    }

    /// Projects the watched workloads into one snapshot per scope. Waits
    /// (up to `initial_list_timeout_seconds`) for scopes not listed yet;
    /// those still not listed give an incomplete snapshot that removes
    /// nothing. Fails only when the claims cannot be read from the store.
    async fn snapshots(&self) -> Result<Vec<Snapshot>, ReadError> {
        self.start_watchers();
        let wait = Duration::from_secs(self.config.initial_list_timeout_seconds);
        let _ = tokio::time::timeout(wait, async {
            loop {
                let listed = self.watched.listed.notified();
                if self.watched.scopes().values().all(ScopeState::listed) {
                    return;
                }
                listed.await;
            }
        })
        .await;
        let claims = self.claims().await?;
        Ok(self.project(&claims))
    }

    /// The links of every entity other providers hold: their workloads are
    /// theirs.
    async fn claims(&self) -> Result<Vec<Link>, ReadError> {
        let annotated = self
            .catalog
            .annotated(&LINK_ANNOTATIONS)
            .await
            .map_err(|source| ReadError::Store { what: "links", source })?;
        let own = format!("{}:", self.key);
        let mut by_entity: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
        for row in annotated.iter().filter(|row| row.provider != self.key && !row.provider.starts_with(&own)) {
            by_entity.entry(row.entity_ref.as_str()).or_default().push((&row.key, &row.value));
        }
        Ok(by_entity.into_values().filter_map(Link::from_annotations).collect())
    }

    fn project(&self, claims: &[Link]) -> Vec<Snapshot> {
        // Taken out of the lock at once: the watchers write under it.
        let (unclaimed, states): (Vec<(ScopeKey, Workload)>, Vec<ScopeOutcome>) = {
            let scopes = self.watched.scopes();
            let unclaimed = scopes
                .iter()
                .flat_map(|(key, state)| {
                    state.parts.values().flat_map(|part| part.workloads.values()).map(move |workload| (key, workload))
                })
                .filter(|(_, workload)| !claims.iter().any(|link| link.matches(workload)))
                .map(|(key, workload)| (key.clone(), workload.clone()))
                .collect();
            let states = scopes
                .iter()
                .map(|(key, state)| {
                    (key.clone(), state.listed(), state.last_error.as_ref().map(|(_, error)| error.clone()))
                })
                .collect();
            (unclaimed, states)
        };
        let share = Some(f64::from(self.config.max_removed_percent.min(100)) / 100.0);
        let mut snapshots: BTreeMap<&ScopeKey, Snapshot> = states
            .iter()
            .map(|(key, listed, last_error)| {
                let name = scope_name(&self.key, key);
                let incomplete = (!listed).then(|| match last_error {
                    Some(error) => format!("{name}: the watcher has not listed the workloads yet: {error}"),
                    None => format!("{name}: the watcher has not listed the workloads yet"),
                });
                let location = LocationStatus {
                    target: self.location(key),
                    error: last_error.clone(),
                    keeps_entities: incomplete.is_some(),
                    ..Default::default()
                };
                let snapshot = Snapshot {
                    provider: name,
                    locations: vec![location],
                    incomplete,
                    max_removed_share: share,
                    ..Default::default()
                };
                (key, snapshot)
            })
            .collect();
        for (scope, workload) in &unclaimed {
            let name = &entity_name(workload);
            let Some(snapshot) = snapshots.get_mut(scope) else { continue };
            let location = self.location(scope);
            match catalog_domain::validate(&self.entity(workload, name)) {
                Ok(entity) => {
                    snapshot.entities.push(SnapshotEntity::new(entity, Some(location)));
                    snapshot.locations[0].n_entities += 1;
                }
                Err(errors) => {
                    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    let problem = format!("{}: {}", workload.key(), messages.join("; "));
                    let status = &mut snapshot.locations[0];
                    status.error = Some(match status.error.take() {
                        Some(error) => format!("{error}\n{problem}"),
                        None => problem,
                    });
                    if let Ok(entity_ref) = catalog_domain::EntityRef::parse(&format!(
                        "{}:{}/{name}",
                        self.config.entity_kind.to_ascii_lowercase(),
                        self.config.catalog_namespace
                    )) {
                        snapshot.invalid.push(InvalidEntity { entity_ref, location: Some(location), errors: messages });
                    }
                }
            }
        }
        snapshots.into_values().collect()
    }

    fn location(&self, scope: &ScopeKey) -> String {
        format!("kubernetes:{}/{}", scope.cluster, scope.kind.api_path().1)
    }

    /// The entity document a workload becomes.
    fn entity(&self, workload: &Workload, name: &str) -> serde_json::Value {
        let owner = workload
            .annotations
            .get(&self.config.owner_annotation)
            .or_else(|| workload.labels.get(&self.config.owner_annotation))
            .unwrap_or(&self.config.default_owner);
        let id = workload.labels.get(KUBERNETES_ID).unwrap_or(&workload.name);
        let location = format!("kubernetes:{}/{}", workload.cluster, workload.api_path());
        let mut spec = serde_json::json!({"type": self.config.spec_type, "owner": owner});
        if self.config.entity_kind == "Component" {
            spec["lifecycle"] = self.config.lifecycle.clone().into();
        }
        serde_json::json!({
            "apiVersion": "backstage.io/v1alpha1",
            "kind": self.config.entity_kind,
            "metadata": {
                "name": name,
                "namespace": self.config.catalog_namespace,
                "title": workload.name,
                "description": format!(
                    "{} {} in namespace {} of cluster {}",
                    workload.kind.as_str(), workload.name, workload.namespace, workload.cluster
                ),
                "annotations": {
                    KUBERNETES_ID: id,
                    NAMESPACE: workload.namespace,
                    CLUSTER: workload.cluster,
                    MANAGED_BY_LOCATION: location,
                    MANAGED_BY_ORIGIN_LOCATION: self.location(&ScopeKey {
                        cluster: workload.cluster.clone(),
                        kind: workload.kind,
                    }),
                },
            },
            "spec": spec,
        })
    }
}

impl Provider for KubernetesProvider {
    fn key(&self) -> &str {
        &self.key
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn read(&self) -> BoxFuture<'_, Result<Vec<Snapshot>, ReadError>> {
        Box::pin(self.snapshots())
    }

    fn scopes(&self) -> Option<Vec<ScopeHealth>> {
        let scopes = self.view().scopes().into_iter();
        Some(
            scopes
                .map(|scope| ScopeHealth { name: scope.name, complete: scope.listed, last_error: scope.last_error })
                .collect(),
        )
    }

    fn contribute(self: Arc<Self>, facts: &mut Facts) {
        facts.add(self.view());
    }

    fn start(&self) {
        self.start_watchers();
    }

    fn debounce(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.config.debounce_ms))
    }

    /// Woken when the workloads change in a way the projection can see.
    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.watched.changed.notified())
    }
}

/// The longest entity name Backstage accepts.
const MAX_NAME: usize = 63;

/// A workload's entity name, from its own key alone (so it never changes
/// while the workload lives): `NAME_NAMESPACE_CLUSTER`, with the kind after
/// the name for all but Deployments (`NAME_statefulset_NAMESPACE_CLUSTER`).
/// Kubernetes names and namespaces and our cluster names never hold `_`,
/// so two workloads cannot share a name; past 63 characters the name is cut
/// and a hash of the whole key follows.
fn entity_name(workload: &Workload) -> String {
    let kind = (workload.kind != WorkloadKind::Deployment).then(|| workload.kind.as_str().to_ascii_lowercase());
    let parts: Vec<String> = [Some(sanitize(&workload.name)), kind, Some(sanitize(&workload.namespace))]
        .into_iter()
        .flatten()
        .chain([workload.cluster.clone()])
        .collect();
    let name = parts.join("_");
    if name.len() <= MAX_NAME && catalog_domain::names::check_name(&name).is_ok() {
        return name;
    }
    let hash = hex(&sha2::Sha256::digest(workload.key().as_bytes())[..4]);
    let head = name[..name.len().min(MAX_NAME - hash.len() - 1)].trim_end_matches(['-', '.', '_']);
    format!("{head}-{hash}")
}

/// Lower-case letters, digits, `-` and `.` (all a Kubernetes name may hold;
/// anything else becomes `-`, and the hash then keeps names apart).
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// One watcher: a cluster, a kind and a namespace (or all).
struct Watch {
    cluster: KubernetesClusterConfig,
    scope: ScopeKey,
    namespace: String,
    exclude: Vec<String>,
    watched: Arc<Watched>,
    policy: RetryPolicy,
}

impl Watch {
    /// Builds the client (retrying with backoff until it can), then follows
    /// the watch stream for good.
    async fn run<K: WatchedKind>(self) {
        let mut failures = 0;
        let client = loop {
            match client(&self.cluster).await {
                Ok(client) => break client,
                Err(error) => {
                    failures += 1;
                    self.failed(format!("cannot configure the client: {error}"));
                    tokio::time::sleep(backoff(&self.policy, failures)).await;
                }
            }
        };
        let api: kube::Api<K> = if self.namespace.is_empty() {
            kube::Api::all(client)
        } else {
            kube::Api::namespaced(client, &self.namespace)
        };
        let stream = watcher::watcher(api, watcher::Config::default().page_size(500));
        futures::pin_mut!(stream);
        let mut failures = 0;
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    failures = 0;
                    self.apply(event);
                }
                // 410 Gone: the watcher re-lists at once, and that is the cure.
                Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                    tracing::info!(scope = ?self.scope, "watch expired (410 Gone); listing again");
                }
                Err(error) => {
                    failures += 1;
                    self.failed(error.to_string());
                    // The watcher retries on the next poll; the wait between is ours.
                    tokio::time::sleep(backoff(&self.policy, failures)).await;
                }
            }
        }
    }

    fn failed(&self, error: String) {
        tracing::warn!(cluster = %self.scope.cluster, kind = self.scope.kind.as_str(), namespace = %self.namespace, %error, "kubernetes watcher failed");
        self.watched.update(&self.scope, |state| state.last_error = Some((Utc::now(), error)));
    }

    fn apply<K: WatchedKind>(&self, event: watcher::Event<K>) {
        let mut changed = false;
        let mut listed = false;
        let keep = |workload: &Workload| !self.exclude.contains(&workload.namespace);
        self.watched.update(&self.scope, |state| {
            state.last_error = None;
            let Some(part) = state.parts.get_mut(&self.namespace) else { return };
            match event {
                watcher::Event::Init => part.pending = Some(BTreeMap::new()),
                watcher::Event::InitApply(object) => {
                    let workload = object.workload(&self.scope.cluster);
                    if keep(&workload) {
                        part.pending
                            .get_or_insert_default()
                            .insert((workload.namespace.clone(), workload.name.clone()), workload);
                    }
                }
                watcher::Event::InitDone => {
                    let listed_now = part.pending.take().unwrap_or_default();
                    changed = !part.listed || !same_projection(&part.workloads, &listed_now);
                    part.workloads = listed_now;
                    part.listed = true;
                    listed = true;
                }
                watcher::Event::Apply(object) => {
                    let workload = object.workload(&self.scope.cluster);
                    if keep(&workload) {
                        let key = (workload.namespace.clone(), workload.name.clone());
                        changed = part.workloads.get(&key).is_none_or(|old| !projects_alike(old, &workload));
                        part.workloads.insert(key, workload);
                    }
                }
                watcher::Event::Delete(object) => {
                    let workload = object.workload(&self.scope.cluster);
                    changed = part.workloads.remove(&(workload.namespace, workload.name)).is_some();
                }
            }
        });
        if listed {
            self.watched.listed.notify_waiters();
        }
        if changed {
            // notify_one keeps a permit when no one waits yet: no change is lost.
            self.watched.changed.notify_one();
        }
    }
}

/// Whether two versions of a workload project to the same entity (or claim).
fn projects_alike(old: &Workload, new: &Workload) -> bool {
    old.labels == new.labels && old.annotations == new.annotations
}

fn same_projection(old: &BTreeMap<(String, String), Workload>, new: &BTreeMap<(String, String), Workload>) -> bool {
    old.len() == new.len()
        && old.iter().zip(new).all(|((old_key, old), (new_key, new))| old_key == new_key && projects_alike(old, new))
}

/// A client for one cluster, with kube's own retries off: the watcher loop
/// decides when to try again.
async fn client(cluster: &KubernetesClusterConfig) -> Result<kube::Client, ClientError> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let options = KubeConfigOptions {
        context: (!cluster.context.is_empty()).then(|| cluster.context.clone()),
        ..Default::default()
    };
    let mut config = if cluster.in_cluster {
        kube::Config::incluster()?
    } else if !cluster.kubeconfig.is_empty() {
        let file = Kubeconfig::read_from(&cluster.kubeconfig)?;
        kube::Config::from_custom_kubeconfig(file, &options).await?
    } else if !cluster.url.is_empty() {
        kube::Config::new(cluster.url.parse()?)
    } else {
        kube::Config::infer().await?
    };
    if !cluster.url.is_empty() {
        config.cluster_url = cluster.url.parse()?;
    }
    config.default_retry = false;
    if !cluster.token_variable.is_empty() {
        let token = std::env::var(&cluster.token_variable)
            .map_err(|_| ClientError::TokenVariable(cluster.token_variable.clone()))?;
        let mut value = http::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| ClientError::Token(cluster.token_variable.clone()))?;
        value.set_sensitive(true);
        config.headers.push((http::header::AUTHORIZATION, value));
    }
    let traced = tower::util::MapRequestLayer::new(|mut request: http::Request<kube::client::Body>| {
        catalog_http::trace::inject(request.headers_mut());
        request
    });
    Ok(kube::client::ClientBuilder::try_from(config)?.with_layer(&traced).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(cluster: &str, namespace: &str, name: &str) -> Workload {
        Workload::for_tests(cluster, namespace, name, &[])
    }

    #[test]
    fn names_are_valid_unique_and_stable() {
        let long = "a".repeat(70);
        let mut statefulset = workload("prod", "shop", "web");
        statefulset.kind = WorkloadKind::StatefulSet;
        let workloads = [
            workload("prod", "shop", "checkout"),
            // Joined with `-`, `a-b` in `c` and `a` in `b-c` would be one name.
            workload("prod", "c", "a-b"),
            workload("prod", "b-c", "a"),
            workload("prod", "shop", "web"),
            statefulset,
            workload("prod", "shop", &long),
            workload("prod", "shop", &format!("{long}x")),
        ];
        let names: Vec<String> = workloads.iter().map(entity_name).collect();
        assert_eq!(
            names[..5],
            ["checkout_shop_prod", "a-b_c_prod", "a_b-c_prod", "web_shop_prod", "web_statefulset_shop_prod"]
        );
        assert_ne!(names[5], names[6], "cut names keep apart by their hash");
        for name in &names {
            assert!(name.len() <= MAX_NAME, "{name}");
            catalog_domain::names::check_name(name).unwrap_or_else(|rule| panic!("{name}: {rule:?}"));
        }
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }
}
