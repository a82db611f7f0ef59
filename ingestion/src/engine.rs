//! The engine: builds providers from their configs, runs them on a schedule,
//! and applies each snapshot to the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use catalog_http::{RetryPolicy, SourceError};
use catalog_store::{ApplySummary, Catalog, Leadership, Snapshot, SnapshotWriter, StoreError};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::watch;

use crate::admission::{Admission, Admitted};
use crate::config::{ProviderConfig, build_providers};
use crate::github::{GithubFileUrl, GithubView};
use crate::kubernetes::KubernetesView;
use crate::pagerduty::{PagerDutyProvider, PagerDutyView};
use crate::provider::{BuildError, Facts, GithubRefresh, Provider, RepositoryHint, ScopeHealth};

/// How long file events settle before a run: an editor's save is a burst.
const SETTLE: Duration = Duration::from_millis(100);

/// The most repositories one targeted re-read takes: past it (a burst of
/// webhooks after an outage, say) reading the whole organisation is cheaper.
const MAX_TARGETED_REPOSITORIES: usize = 50;

/// Why an on-demand provider run did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the provider's read was aborted; nothing was changed")]
    Aborted,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outcome of one provider run.
#[derive(Clone, Debug)]
pub struct ProviderRun {
    pub provider: String,
    pub summary: ApplySummary,
    pub n_location_errors: usize,
    /// Why the source could not be read in full (nothing was removed).
    pub incomplete: Option<String>,
}

/// What a provider last did: the `providers` query's answer.
#[derive(Clone, Debug, Default)]
pub struct ProviderHealth {
    pub key: String,
    /// `file`, `github`.
    pub kind: &'static str,
    /// When the last run started.
    pub last_run_at: Option<DateTime<Utc>>,
    /// When the last run that read the source in full (every location)
    /// started.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Why the last run failed, was incomplete or could not read some
    /// locations; None after a full read.
    pub last_error: Option<String>,
    /// What the last applied run changed.
    pub last_summary: Option<ApplySummary>,
    /// What admission policies did to the last applied run (None without
    /// policies).
    pub last_admission: Option<Admitted>,
    /// Locations of the last run that could not be read or held problems.
    pub n_location_errors: usize,
    /// When the schedule runs it next (None when ingestion is not scheduled
    /// in this process).
    pub next_run_at: Option<DateTime<Utc>>,
    /// Runs since the process started, by outcome: read in full, read in
    /// part (incomplete, or some locations unread), failed (aborted, timed
    /// out, or not applied).
    pub runs_complete: u64,
    pub runs_incomplete: u64,
    pub runs_failed: u64,
    /// How long the last run took, read and apply.
    pub last_duration: Option<Duration>,
    /// The parts of the source that are read and applied on their own
    /// (Kubernetes: one per cluster and kind); one, named by the key, for
    /// the other providers.
    pub scopes: Vec<ScopeHealth>,
}

/// Why a template's directory cannot be copied from GitHub.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{0} is not a GitHub file URL (https://HOST/ORG/REPO/blob/BRANCH/PATH)")]
    NotAFileUrl(String),
    #[error("no GitHub provider reads the organisation {0}")]
    NoProvider(String),
    #[error("cannot fetch {repository}/{directory} at {branch}: {source}")]
    Fetch { repository: String, directory: String, branch: String, source: SourceError },
}

/// The longest one provider run may take by default before it is abandoned
/// (nothing is applied then).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(900);

/// Tasks that end with their owner, however it ends (a cancelled future included).
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl From<Vec<tokio::task::JoinHandle<()>>> for AbortOnDrop {
    fn from(tasks: Vec<tokio::task::JoinHandle<()>>) -> Self {
        Self(tasks)
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// What the snapshots of one run say about how it went.
struct Outcome {
    n_location_errors: usize,
    incomplete: Option<String>,
    /// Why the run was not a full read: incomplete, or some locations unread.
    error: Option<String>,
}

impl Outcome {
    fn of(snapshots: &[Snapshot]) -> Self {
        let locations = || snapshots.iter().flat_map(|snapshot| &snapshot.locations);
        let n_location_errors = locations().filter(|status| status.error.is_some()).count();
        // Locations that could not be read (their entities kept) make the
        // run a failure too, though the rest of it applied.
        let unread: Vec<&str> =
            locations().filter(|status| status.keeps_entities).filter_map(|status| status.error.as_deref()).collect();
        let incomplete: Vec<&str> = snapshots.iter().filter_map(|snapshot| snapshot.incomplete.as_deref()).collect();
        let incomplete = (!incomplete.is_empty()).then(|| incomplete.join("; "));
        let error = incomplete.clone().or_else(|| {
            unread.first().map(|first| format!("{} location(s) could not be read; the first: {first}", unread.len()))
        });
        Self { n_location_errors, incomplete, error }
    }
}

/// A provider run and when it started.
type StartedRun = (Instant, ProviderRun);

/// Runs providers and applies their snapshots.
#[derive(Clone, Debug)]
pub struct Engine {
    /// Where snapshots go: the engine is the only writer of entities.
    writer: SnapshotWriter,
    providers: Vec<Arc<dyn Provider>>,
    /// The live views the Kubernetes providers' watchers keep, for the API.
    kubernetes: Vec<KubernetesView>,
    /// What the GitHub discovery providers know of their repositories.
    github: Vec<GithubView>,
    /// What the API reads from the PagerDuty accounts; None without one.
    pagerduty: Option<PagerDutyView>,
    /// Per provider (same order): its latest run and when it started. One
    /// run at a time per provider; a caller that waited for a run which
    /// started after it asked takes that run's result instead of reading
    /// again, so a burst of refreshes costs two reads, not one each.
    latest: Arc<Vec<tokio::sync::Mutex<Option<StartedRun>>>>,
    health: Arc<parking_lot::Mutex<Vec<ProviderHealth>>>,
    run_timeout: Duration,
    /// Whether this process's schedule runs the providers (it leads).
    leading: Arc<std::sync::atomic::AtomicBool>,
    /// Per provider index: repositories webhooks named that no targeted
    /// re-read has taken yet. Calls waiting behind a run drain it together.
    pending_repositories: Arc<parking_lot::Mutex<HashMap<usize, HashSet<RepositoryHint>>>>,
    /// What every snapshot passes before it is applied; None: all is admitted.
    admission: Option<Arc<dyn Admission>>,
}

impl Engine {
    /// Builds every provider, checking its configuration first.
    /// Providers that read the catalog (Kubernetes, PagerDuty) get `catalog`.
    pub fn build(writer: SnapshotWriter, catalog: Catalog, configs: &[ProviderConfig]) -> Result<Self, BuildError> {
        Self::build_with(writer, catalog, configs, RetryPolicy::default())
    }

    /// [`Engine::build`] with the HTTP providers' retry policy (tests shorten it).
    pub fn build_with(
        writer: SnapshotWriter,
        catalog: Catalog,
        configs: &[ProviderConfig],
        policy: RetryPolicy,
    ) -> Result<Self, BuildError> {
        let providers = build_providers(configs, policy, &catalog)?;
        let mut facts = Facts::default();
        for provider in &providers {
            Arc::clone(provider).contribute(&mut facts);
        }
        let kubernetes = facts.take::<KubernetesView>();
        let github = facts.take::<GithubView>();
        let pagerduty = PagerDutyView::new(facts.take::<Arc<PagerDutyProvider>>());
        let latest = Arc::new(providers.iter().map(|_| tokio::sync::Mutex::new(None)).collect());
        let health = providers
            .iter()
            .map(|provider| ProviderHealth {
                key: provider.key().to_owned(),
                kind: provider.kind(),
                ..Default::default()
            })
            .collect();
        Ok(Self {
            writer,
            providers,
            kubernetes,
            github,
            pagerduty,
            latest,
            health: Arc::new(parking_lot::Mutex::new(health)),
            run_timeout: RUN_TIMEOUT,
            leading: Arc::default(),
            pending_repositories: Arc::default(),
            admission: None,
        })
    }

    /// Checks every snapshot with `admission` before it is applied.
    pub fn with_admission(mut self, admission: Arc<dyn Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// Admits the snapshot (admission is a no-op without policies) and
    /// applies what was admitted; nothing unchecked is applied.
    async fn admit_and_apply(&self, snapshot: &mut Snapshot) -> Result<(ApplySummary, Option<Admitted>), StoreError> {
        let admitted = match &self.admission {
            Some(admission) => Some(admission.admit(snapshot).await?),
            None => None,
        };
        Ok((self.writer.apply_snapshot(snapshot).await?, admitted))
    }

    /// Abandons a provider run (applying nothing) after `timeout`.
    pub fn with_run_timeout(mut self, timeout: Duration) -> Self {
        self.run_timeout = timeout;
        self
    }

    /// Whether this process's schedule runs the providers: with several
    /// replicas on one PostgreSQL database, exactly one does.
    pub fn is_leading(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What every provider last did, in configuration order.
    pub fn health(&self) -> Vec<ProviderHealth> {
        let mut health = self.health.lock().clone();
        for (provider, health) in self.providers.iter().zip(&mut health) {
            health.scopes = provider.scopes().unwrap_or_else(|| {
                vec![ScopeHealth {
                    name: health.key.clone(),
                    // A run in progress leaves the last outcome standing.
                    complete: health.last_success_at.is_some() && health.last_error.is_none(),
                    last_error: health.last_error.clone(),
                }]
            });
        }
        health
    }

    /// The live views of the Kubernetes providers' watchers.
    pub fn kubernetes(&self) -> Vec<KubernetesView> {
        self.kubernetes.clone()
    }

    /// What the GitHub discovery providers know of their repositories.
    pub fn github(&self) -> Vec<GithubView> {
        self.github.clone()
    }

    fn update_health(&self, index: usize, update: impl FnOnce(&mut ProviderHealth)) {
        let mut health = self.health.lock();
        update(&mut health[index]);
    }

    /// Runs every provider once. A provider whose run fails does not stop
    /// the others; the first failure is returned after all have run (each
    /// is in its provider's health).
    pub async fn run_once(&self) -> Result<Vec<ProviderRun>, StoreError> {
        let mut runs = Vec::with_capacity(self.providers.len());
        let mut first_error = None;
        for index in 0..self.providers.len() {
            match self.run_provider_at(index, false).await {
                Ok(Some(run)) => runs.push(run),
                Ok(None) => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(runs), Err)
    }

    /// What a GitHub webhook event asks of the providers: the repositories
    /// each discovery provider of that organisation should read again, and
    /// a run of each org provider when teams or members changed. Empty when
    /// the event changes nothing the providers read.
    pub fn github_refreshes(&self, event: &str, payload: &Value) -> Vec<GithubRefresh> {
        self.providers.iter().filter_map(|provider| provider.github_refresh(event, payload)).collect()
    }

    /// Copies the directory of a file the GitHub providers read
    /// (`https://HOST/ORG/REPO/blob/BRANCH/PATH`: the directory of PATH) into
    /// `target`, through the provider reading ORG (its token or app). A
    /// template read from GitHub finds its skeletons there.
    pub async fn download_github_directory(
        &self,
        file_url: &str,
        target: &std::path::Path,
        limits: (usize, usize),
    ) -> Result<usize, DownloadError> {
        let Some(GithubFileUrl { owner, repository: name, branch, path, .. }) = GithubFileUrl::parse(file_url) else {
            return Err(DownloadError::NotAFileUrl(file_url.to_owned()));
        };
        let directory = path.rsplit_once('/').map_or("", |(directory, _)| directory);
        let provider = self
            .reading_organization(&owner)
            .next()
            .cloned()
            .ok_or_else(|| DownloadError::NoProvider(owner.clone()))?;
        let Some(github) = provider.repositories() else { return Err(DownloadError::NoProvider(owner)) };
        let repository = format!("{owner}/{name}");
        github.download_directory(&repository, &branch, directory, target, limits).await.map_err(|source| {
            DownloadError::Fetch { repository, directory: directory.to_owned(), branch: branch.clone(), source }
        })
    }

    /// The providers that read GitHub repositories of `organization`.
    fn reading_organization<'a>(&'a self, organization: &'a str) -> impl Iterator<Item = &'a Arc<dyn Provider>> + 'a {
        self.providers.iter().filter(|provider| {
            provider.repositories().is_some_and(|repositories| repositories.reads_organization(organization))
        })
    }

    /// The keys of the GitHub discovery providers reading `organization`.
    pub fn github_providers_for(&self, organization: &str) -> Vec<String> {
        self.reading_organization(organization).map(|provider| provider.key().to_owned()).collect()
    }

    /// Carries out what a webhook asked ([`Engine::github_refreshes`]).
    /// Targeted re-reads of one provider wait for its run in progress and
    /// then take every repository named meanwhile at once; `Ok(None)` when
    /// an earlier call already read them (or no provider has the key).
    #[tracing::instrument(name = "provider.refresh", skip_all, fields(provider = refresh.provider()))]
    pub async fn refresh_github(&self, refresh: &GithubRefresh) -> Result<Option<ProviderRun>, RunError> {
        let (provider, repositories) = match refresh {
            GithubRefresh::Provider(provider) => return self.run_provider(provider).await,
            GithubRefresh::Repositories { provider, repositories } => (provider, repositories),
        };
        let Some(index) = self
            .providers
            .iter()
            .position(|candidate| candidate.key() == provider && candidate.repositories().is_some())
        else {
            return Ok(None);
        };
        let candidate = Arc::clone(&self.providers[index]);
        let Some(github) = candidate.repositories() else { return Ok(None) };
        let lock_pending = || self.pending_repositories.lock();
        lock_pending().entry(index).or_default().extend(repositories.iter().cloned());
        let mut latest = self.latest[index].lock().await;
        let hints: Vec<RepositoryHint> = lock_pending().remove(&index).unwrap_or_default().into_iter().collect();
        if hints.is_empty() {
            return Ok(None);
        }
        if hints.len() > MAX_TARGETED_REPOSITORIES {
            let started = Instant::now();
            let run = self.read_and_apply(index, false).await?;
            *latest = run.clone().map(|run| (started, run));
            return run.map(Some).ok_or(RunError::Aborted);
        }
        let Ok(mut snapshot) = tokio::time::timeout(self.run_timeout, github.read_repositories(&hints)).await else {
            let message =
                format!("a targeted re-read took longer than {} s and was abandoned", self.run_timeout.as_secs());
            tracing::error!(provider, error = %message, "provider run failed");
            self.update_health(index, |health| health.last_error = Some(message));
            // Hints a failed read did not apply go back for the next call.
            lock_pending().entry(index).or_default().extend(hints);
            return Err(RunError::Aborted);
        };
        let summary = match self.admit_and_apply(&mut snapshot).await {
            Ok((summary, _)) => summary,
            Err(error) => {
                lock_pending().entry(index).or_default().extend(hints);
                return Err(error.into());
            }
        };
        let outcome = Outcome::of(std::slice::from_ref(&snapshot));
        let names: Vec<&str> = hints.iter().map(|hint| hint.full_name.as_str()).collect();
        tracing::info!(provider, repositories = ?names, added = summary.added, updated = summary.updated, removed = summary.removed, "repositories read again");
        // A targeted read says nothing of the other repositories, so only
        // its failure is worth recording.
        if let Some(error) = &outcome.error {
            self.update_health(index, |health| health.last_error = Some(error.clone()));
        }
        Ok(Some(ProviderRun {
            provider: provider.clone(),
            summary,
            n_location_errors: outcome.n_location_errors,
            incomplete: outcome.incomplete,
        }))
    }

    /// What the API reads from the PagerDuty providers (services, on-call,
    /// incidents); None when none is configured.
    pub fn pagerduty(&self) -> Option<PagerDutyView> {
        self.pagerduty.clone()
    }

    /// The keys of the configured providers, in configuration order.
    pub fn provider_keys(&self) -> Vec<String> {
        self.providers.iter().map(|provider| provider.key().to_owned()).collect()
    }

    /// Runs the provider with this key once, now. `Ok(None)` when no provider
    /// has that key; an error when its run failed (nothing was removed then).
    pub async fn run_provider(&self, key: &str) -> Result<Option<ProviderRun>, RunError> {
        self.run_provider_with(key, false).await
    }

    /// [`Engine::run_provider`]; `force` applies removals that the
    /// provider's safety valve would hold back (never those of an
    /// incomplete snapshot: what was not read is not known to be gone).
    pub async fn run_provider_with(&self, key: &str, force: bool) -> Result<Option<ProviderRun>, RunError> {
        let Some(index) = self.providers.iter().position(|provider| provider.key() == key) else {
            return Ok(None);
        };
        self.run_provider_at(index, force).await?.map(Some).ok_or(RunError::Aborted)
    }

    /// A run of the provider at `index` that started no earlier than this
    /// call (a forced run never takes another run's result); None when its
    /// read was aborted (logged).
    async fn run_provider_at(&self, index: usize, force: bool) -> Result<Option<ProviderRun>, StoreError> {
        let asked = Instant::now();
        let mut latest = self.latest[index].lock().await;
        if !force
            && let Some((started, run)) = latest.as_ref()
            && *started >= asked
        {
            return Ok(Some(run.clone()));
        }
        let started = Instant::now();
        let run = self.read_and_apply(index, force).await?;
        *latest = run.clone().map(|run| (started, run));
        Ok(run)
    }

    /// Reads the provider at `index` (within the run timeout) and applies
    /// its snapshot, recording the outcome in its health.
    #[tracing::instrument(name = "provider.run", skip_all, fields(provider = self.providers[index].key(), force = force))]
    async fn read_and_apply(&self, index: usize, force: bool) -> Result<Option<ProviderRun>, StoreError> {
        let provider = &self.providers[index];
        let started_at = Utc::now();
        let started = Instant::now();
        self.update_health(index, |health| health.last_run_at = Some(started_at));
        let read = provider.read();
        let failed = |message: String| {
            tracing::error!(provider = provider.key(), error = %message, "provider run failed");
            self.update_health(index, |health| {
                health.last_error = Some(message);
                health.runs_failed += 1;
                health.last_duration = Some(started.elapsed());
            });
        };
        let mut snapshots = match tokio::time::timeout(self.run_timeout, read).await {
            Ok(Ok(snapshots)) => snapshots,
            Ok(Err(error)) => {
                failed(format!("the read was aborted: {error}"));
                return Ok(None);
            }
            Err(_) => {
                failed(format!("the run took longer than {} s and was abandoned", self.run_timeout.as_secs()));
                return Ok(None);
            }
        };
        let mut summary = ApplySummary::default();
        let mut admitted: Option<Admitted> = None;
        for snapshot in &mut snapshots {
            if force {
                snapshot.max_removed_share = None;
            }
            match self.admit_and_apply(snapshot).await {
                Ok((applied, this)) => {
                    summary.absorb(&applied);
                    if let Some(this) = this {
                        admitted.get_or_insert_default().absorb(this);
                    }
                }
                Err(error) => {
                    failed(format!("applying the snapshot of {} failed: {error}", snapshot.provider));
                    return Err(error);
                }
            }
        }
        let Outcome { n_location_errors, incomplete, error } = Outcome::of(&snapshots);
        self.update_health(index, |health| {
            if error.is_none() {
                health.last_success_at = Some(started_at);
                health.runs_complete += 1;
            } else {
                health.runs_incomplete += 1;
            }
            health.last_duration = Some(started.elapsed());
            health.last_error = error;
            health.last_summary = Some(summary.clone());
            health.last_admission = admitted;
            health.n_location_errors = n_location_errors;
        });
        Ok(Some(ProviderRun { provider: provider.key().to_owned(), summary, n_location_errors, incomplete }))
    }

    /// Runs every provider now and then every `interval` until `shutdown` turns
    /// true, and, with `watch_files`, also as soon as a file under the file
    /// providers' directories changes (the interval stays as the safety net
    /// for lost events and for files outside those directories). A failed run
    /// is logged and retried at the next tick; it never removes anything.
    /// Only while `leadership` holds: a replica that does not lead skips its
    /// ticks, and takes over at a tick after the leader is gone.
    pub async fn run(
        self,
        interval: Duration,
        watch_files: bool,
        mut leadership: Leadership,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (changed, mut changes) = tokio::sync::mpsc::channel::<()>(1);
        // Kept alive for as long as the loop runs: dropping it stops watching.
        let _watcher = if watch_files { self.watch(changed) } else { None };
        // Watchers (Kubernetes) run in every replica (the API reads them); a
        // change they see wakes the loop with the provider's index.
        let (workloads_changed, mut workload_changes) = tokio::sync::mpsc::channel::<usize>(16);
        self.start_watchers();
        let _forwarders: AbortOnDrop = self
            .providers
            .iter()
            .enumerate()
            .filter(|(_, provider)| provider.debounce().is_some())
            .map(|(index, provider)| {
                let (provider, changed) = (Arc::clone(provider), workloads_changed.clone());
                tokio::spawn(async move {
                    loop {
                        provider.changed().await;
                        if changed.send(index).await.is_err() {
                            break;
                        }
                    }
                })
            })
            .collect::<Vec<_>>()
            .into();
        loop {
            // Some: only these providers run (their watchers saw changes).
            let mut only: Option<Vec<usize>> = None;
            tokio::select! {
                _ = ticker.tick() => {}
                Some(()) = changes.recv() => {
                    // An editor's save is several events: let them settle, then read once.
                    tokio::time::sleep(SETTLE).await;
                    while changes.try_recv().is_ok() {}
                }
                Some(index) = workload_changes.recv() => {
                    // A rollout is many events: project once when they settle.
                    tokio::time::sleep(self.debounce(index)).await;
                    let mut due = vec![index];
                    while let Ok(index) = workload_changes.try_recv() {
                        due.push(index);
                    }
                    due.sort_unstable();
                    due.dedup();
                    only = Some(due);
                }
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
            let leading = leadership.try_lead().await.unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot claim the ingestion lead; trying again at the next tick");
                false
            });
            self.leading.store(leading, std::sync::atomic::Ordering::Relaxed);
            if !leading {
                // What the API serves live must be there in every replica,
                // not only where ingestion runs: Kubernetes watchers run
                // everywhere; PagerDuty's directory is read here (the
                // snapshot is the leader's to apply).
                if only.is_none() {
                    self.refresh_live_views().await;
                }
                continue;
            }
            if let Some(due) = only {
                for index in due {
                    if let Err(error) = self.run_provider_at(index, false).await {
                        tracing::error!(provider = self.providers[index].key(), %error, "ingestion run failed");
                    }
                }
                continue;
            }
            if let Err(error) = self.run_once().await {
                tracing::error!(error = %error, "ingestion run failed");
            }
            let next = chrono::Duration::from_std(interval).ok().and_then(|step| Utc::now().checked_add_signed(step));
            let mut health = self.health.lock();
            for provider in health.iter_mut() {
                provider.next_run_at = next;
            }
        }
    }

    /// Starts the providers' watchers (Kubernetes: the API reads them in
    /// every replica, whether or not it ingests); idempotent.
    pub fn start_watchers(&self) {
        for provider in &self.providers {
            provider.start();
        }
    }

    /// Reads what the API serves live in a replica that does not apply
    /// snapshots (the PagerDuty directories).
    async fn refresh_live_views(&self) {
        for provider in &self.providers {
            provider.refresh_live().await;
        }
    }

    /// How long changes seen by the provider at `index` settle before it runs.
    fn debounce(&self, index: usize) -> Duration {
        self.providers[index].debounce().unwrap_or(SETTLE)
    }

    /// Watches the file providers' directories; every event wakes the loop.
    fn watch(&self, changed: tokio::sync::mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher as _;
        let roots: Vec<(std::path::PathBuf, bool)> =
            self.providers.iter().flat_map(|provider| provider.watch_roots()).collect();
        if roots.is_empty() {
            return None;
        }
        let handler = move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|event| !event.kind.is_access()) {
                // A full channel already holds a wake-up: nothing is lost.
                let _ = changed.try_send(());
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(watcher) => watcher,
            Err(error) => {
                tracing::warn!(%error, "cannot watch files; the interval alone will pick up changes");
                return None;
            }
        };
        for (root, recursive) in &roots {
            let mode = if *recursive { notify::RecursiveMode::Recursive } else { notify::RecursiveMode::NonRecursive };
            match watcher.watch(root, mode) {
                Ok(()) => tracing::info!(directory = %root.display(), "watching for catalog changes"),
                Err(error) => tracing::warn!(directory = %root.display(), %error, "cannot watch directory"),
            }
        }
        Some(watcher)
    }
}
