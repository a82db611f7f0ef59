//! The GitHub discovery provider: lists an organisation's repositories
//! (REST, `Link` pagination), keeps those its filters select, and reads each
//! one's catalog files through the contents API: the configured path, or
//! every file a glob matches in the repository's git tree, and the files
//! their Location entities point at inside the repository. Each file is a
//! location; its entities carry `backstage.io/managed-by-location` with the
//! file's URL. A webhook's hint re-reads one repository alone (a partial
//! snapshot covering that repository's locations). The wire types and the
//! mapping are here; fetching, retries, rate limits and authentication are
//! `catalog-http`'s.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use base64::Engine as _;
use catalog_http::github::{GithubAuthConfig, GithubAuthError};
use catalog_http::{HttpSource, RetryPolicy, SourceError};
use catalog_store::{InvalidEntity, LocationStatus, Snapshot};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::documents::add_documents;
use crate::provider::{
    BuildContext, BuildError, BuildProvider, Facts, GithubRefresh, Provider, ReadError, RepositoryHint,
    RepositoryReader,
};

/// The provider's type in the configuration.
const KIND: &str = "github";

/// Where and what to discover in one GitHub organisation.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GithubProviderConfig {
    /// The organisation whose repositories are read.
    pub organization: String,
    /// Where the REST API is and how to authenticate to it.
    #[serde(flatten)]
    pub auth: GithubAuthConfig,
    /// The catalog file's path in each repository, or a glob (`*`, `?`,
    /// `[...]`; `**` for any depth) matched against every path of the
    /// repository's git tree.
    pub catalog_path: String,
    /// The branch to read; empty: each repository's default branch.
    pub branch: String,
    /// A regular expression repository names must match; empty: all.
    pub repository_pattern: String,
    /// Repositories must carry at least one of these topics; empty: any.
    pub topics: Vec<String>,
    /// The kinds a repository's catalog file may declare; others are
    /// refused (recorded as invalid). Groups and Users come from the org
    /// provider, not from files anyone with push access can edit.
    pub allowed_kinds: Vec<String>,
    pub include_archived: bool,
    pub include_forks: bool,
    /// Repositories read at once.
    pub concurrency: usize,
    /// The most catalog files read from one repository (glob matches and
    /// Location targets together); past it the rest are not read and the
    /// repository's entities are kept.
    pub max_files_per_repository: usize,
    /// The most of its entities one complete run may remove, in percent;
    /// more is held back until a forced run. 100: no limit.
    pub max_removed_percent: u8,
    pub request_timeout_seconds: u64,
}

impl Default for GithubProviderConfig {
    fn default() -> Self {
        Self {
            organization: String::new(),
            auth: GithubAuthConfig::default(),
            catalog_path: "catalog-info.yaml".into(),
            branch: String::new(),
            repository_pattern: String::new(),
            topics: Vec::new(),
            allowed_kinds: ["Component", "API", "Resource", "System", "Domain", "Template", "Location"]
                .map(str::to_owned)
                .to_vec(),
            include_archived: false,
            include_forks: false,
            concurrency: 8,
            max_files_per_repository: 100,
            max_removed_percent: 20,
            request_timeout_seconds: 30,
        }
    }
}

/// Why a GitHub provider (discovery or org) cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum GithubBuildError {
    #[error("github provider: organization must be set")]
    NoOrganization,
    #[error("github provider: repository_pattern is not a regular expression: {0}")]
    Pattern(#[from] regex::Error),
    #[error("github provider: catalog_path is not a glob pattern: {0}")]
    CatalogPath(#[from] glob::PatternError),
    #[error("github provider: {0}")]
    Auth(#[from] GithubAuthError),
}

impl BuildProvider for GithubProviderConfig {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn build(&self, context: BuildContext) -> Result<Arc<dyn Provider>, BuildError> {
        Ok(Arc::new(GithubProvider::build(context.key, self, context.policy).map_err(BuildError::new)?))
    }
}

/// A ready GitHub discovery provider.
pub struct GithubProvider {
    key: String,
    config: GithubProviderConfig,
    pattern: Option<regex::Regex>,
    /// `catalog_path` when it is a glob.
    catalog_glob: Option<glob::Pattern>,
    source: HttpSource,
    /// The paths of the files last read per repository (`owner/name`,
    /// lower case): a push touching one of them is worth a re-read.
    files_read: Mutex<HashMap<String, HashSet<String>>>,
    /// Every listed repository, for governance facts.
    view: GithubView,
}

/// A file's URL on GitHub, `https://HOST/OWNER/REPO/blob/BRANCH/PATH`, in
/// parts (a branch with `/` in its name is not told apart from the path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GithubFileUrl {
    /// `https://HOST/OWNER/REPO`: every location of the repository starts with it.
    pub html_url: String,
    pub owner: String,
    pub repository: String,
    pub branch: String,
    pub path: String,
}

impl GithubFileUrl {
    pub fn parse(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
        let parts: Vec<&str> = rest.splitn(6, '/').collect();
        let [host, owner, repository, "blob", branch, path] = parts[..] else { return None };
        if [host, owner, repository, branch, path].iter().any(|part| part.is_empty()) {
            return None;
        }
        let scheme = &url[..url.len() - rest.len()];
        Some(Self {
            html_url: format!("{scheme}{host}/{owner}/{repository}"),
            owner: owner.to_owned(),
            repository: repository.to_owned(),
            branch: branch.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// How glob paths match: `*` stays within one directory, as in a shell.
const GLOB_OPTIONS: glob::MatchOptions =
    glob::MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: false };

/// GitHub lists at most this many commits in a push event: a full list may
/// hide the one that touched a catalog file.
const MAX_LISTED_COMMITS: usize = 20;

impl std::fmt::Debug for GithubProvider {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("GithubProvider").field("key", &self.key).field("config", &self.config).finish()
    }
}

/// One repository as the list and get endpoints return it (the fields used).
#[derive(Clone, Debug, Deserialize)]
struct Repository {
    name: String,
    full_name: String,
    owner: Owner,
    html_url: String,
    default_branch: Option<String>,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    fork: bool,
    #[serde(default)]
    topics: Vec<String>,
    /// The last push to any branch; null for an empty repository.
    #[serde(default)]
    pushed_at: Option<DateTime<Utc>>,
}

/// What GitHub said of one repository at the provider's last read: the
/// facts governance rules read (`fact('github.repository')`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GithubRepository {
    /// `owner/name`.
    pub full_name: String,
    /// `https://github.com/owner/name`.
    pub html_url: String,
    pub archived: bool,
    pub pushed_at: Option<DateTime<Utc>>,
}

/// The repositories of the last listing, by lower-case `owner/name`.
#[derive(Debug, Default)]
struct RepositoryFacts {
    /// When the last complete listing was read; None before one.
    read_at: Option<DateTime<Utc>>,
    by_name: HashMap<String, GithubRepository>,
}

/// What a GitHub discovery provider knows of its organisation's
/// repositories (every listed one, selected or not), for the API.
#[derive(Clone, Debug, Default)]
pub struct GithubView {
    facts: Arc<parking_lot::RwLock<RepositoryFacts>>,
}

impl GithubView {
    /// When the repositories were last listed in full.
    pub fn read_at(&self) -> Option<DateTime<Utc>> {
        self.facts.read().read_at
    }

    /// The repository an entity's annotations point at: its
    /// `github.com/project-slug`, or the GitHub location it was read from
    /// (`backstage.io/managed-by-location`, `backstage.io/source-location`).
    pub fn repository_for(&self, annotations: &BTreeMap<String, String>) -> Option<GithubRepository> {
        let facts = self.facts.read();
        if let Some(slug) = annotations.get("github.com/project-slug") {
            return facts.by_name.get(&slug.trim().to_lowercase()).cloned();
        }
        let location = ["backstage.io/managed-by-location", "backstage.io/source-location"]
            .iter()
            .find_map(|key| annotations.get(*key))?;
        let url = location.trim_start_matches("url:").to_lowercase();
        facts
            .by_name
            .values()
            .find(|repository| {
                let base = repository.html_url.trim_end_matches('/').to_lowercase();
                url.strip_prefix(&base).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .cloned()
    }

    fn record(&self, repositories: &[Repository], complete: bool) {
        let mut facts = self.facts.write();
        if complete {
            facts.by_name.clear();
            facts.read_at = Some(Utc::now());
        }
        for repository in repositories {
            facts.by_name.insert(
                repository.full_name.to_lowercase(),
                GithubRepository {
                    full_name: repository.full_name.clone(),
                    html_url: repository.html_url.clone(),
                    archived: repository.archived,
                    pushed_at: repository.pushed_at,
                },
            );
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
struct Owner {
    login: String,
}

/// A repository's git tree as `git/trees/{ref}?recursive=1` returns it.
#[derive(Deserialize)]
struct Tree {
    tree: Vec<TreeItem>,
    /// GitHub stops listing past 100,000 entries or 7 MB.
    #[serde(default)]
    truncated: bool,
}

#[derive(Deserialize)]
struct TreeItem {
    path: String,
    #[serde(rename = "type")]
    item_type: String,
}

/// A file to read in a repository, and whether its absence removes its
/// entities (a Location's optional target does not).
struct FileToRead {
    path: String,
    required: bool,
}

/// A file as the contents endpoint returns it.
#[derive(Deserialize)]
struct Contents {
    content: String,
    encoding: String,
}

impl GithubProvider {
    /// Checks the configuration and reads the token from the environment.
    pub fn build(key: String, config: &GithubProviderConfig, policy: RetryPolicy) -> Result<Self, GithubBuildError> {
        if config.organization.trim().is_empty() {
            return Err(GithubBuildError::NoOrganization);
        }
        let pattern = (!config.repository_pattern.is_empty())
            .then(|| regex::Regex::new(&config.repository_pattern))
            .transpose()?;
        let catalog_glob = has_glob_characters(&config.catalog_path)
            .then(|| glob::Pattern::new(config.catalog_path.trim_start_matches('/')))
            .transpose()?;
        let source = config.auth.source(config.request_timeout_seconds, policy)?;
        Ok(Self {
            key,
            config: config.clone(),
            pattern,
            catalog_glob,
            source,
            files_read: Mutex::default(),
            view: GithubView::default(),
        })
    }

    /// Reads every selected repository's catalog files into a snapshot. A
    /// listing that fails leaves the snapshot incomplete (nothing removed);
    /// a file that fails to read keeps that file's entities; a file that is
    /// not there (404) removes them.
    async fn snapshot(&self) -> Snapshot {
        let mut snapshot = self.empty_snapshot();
        let listing = self.list_url();
        let repositories = match self.source.get_all_pages::<Repository>(&listing).await {
            Ok(repositories) => repositories,
            Err(error) => {
                tracing::warn!(provider = %self.key, error = %error, "cannot list the repositories; nothing is removed");
                snapshot.locations.push(LocationStatus {
                    target: format!("url:{listing}"),
                    error: Some(error.to_string()),
                    keeps_entities: true,
                    ..Default::default()
                });
                snapshot.incomplete = Some(format!("listing the repositories failed: {error}"));
                return snapshot;
            }
        };
        self.view.record(&repositories, true);
        let selected: Vec<Repository> =
            repositories.into_iter().filter(|repository| self.selects(repository)).collect();
        let parts: Vec<(String, Snapshot, HashSet<String>)> =
            futures::stream::iter(selected.into_iter().map(|repository| async move {
                let (part, files) = self.read_repository(&repository).await;
                (repository.full_name.to_lowercase(), part, files)
            }))
            .buffered(self.config.concurrency.max(1))
            .collect()
            .await;
        let mut files_read = HashMap::new();
        for (full_name, part, files) in parts {
            merge(&mut snapshot, part);
            files_read.insert(full_name, files);
        }
        *self.files_read.lock() = files_read;
        snapshot
    }

    /// Reads the named repositories alone into a partial snapshot covering
    /// only their locations: what a webhook's hint costs instead of a whole
    /// organisation. A repository that is gone, archived or no longer
    /// selected loses its entities; one that cannot be read keeps them.
    async fn targeted_snapshot(&self, hints: &[RepositoryHint]) -> Snapshot {
        let mut snapshot = self.empty_snapshot();
        let mut covers = Vec::new();
        for hint in hints {
            covers.push(format!("url:{}/", hint.html_url.trim_end_matches('/')));
            if hint.gone {
                self.forget_files(&hint.full_name);
                continue;
            }
            let base = self.config.auth.api_base_url.trim_end_matches('/');
            let url = format!("{base}/repos/{}", hint.full_name);
            let read = self.source.get_json::<Repository>(&url).await;
            if let Ok((repository, _)) = &read {
                self.view.record(std::slice::from_ref(repository), false);
            }
            match read {
                Ok((repository, _)) if self.selects(&repository) && self.owns(&repository) => {
                    // Renamed since the hint was sent: its new name's locations are its.
                    covers.push(format!("url:{}/", repository.html_url.trim_end_matches('/')));
                    let (part, files) = self.read_repository(&repository).await;
                    merge(&mut snapshot, part);
                    self.files_read.lock().insert(repository.full_name.to_lowercase(), files);
                }
                // Archived, a fork, filtered out or moved away: its entities go.
                Ok(_) | Err(SourceError::NotFound) => self.forget_files(&hint.full_name),
                Err(error) => {
                    tracing::warn!(provider = %self.key, repository = %hint.full_name, error = %error, "cannot read the repository; its entities are kept");
                    snapshot.locations.push(LocationStatus {
                        target: format!("url:{url}"),
                        error: Some(error.to_string()),
                        keeps_entities: true,
                        ..Default::default()
                    });
                    snapshot.incomplete = Some(format!("reading {} failed: {error}", hint.full_name));
                }
            }
        }
        snapshot.covers = Some(covers);
        snapshot
    }

    /// The repositories a webhook event asks to read again: none when the
    /// event cannot change what this provider reads (another organisation,
    /// another branch, a push that touched no catalog file).
    fn repositories_to_refresh(&self, event: &str, payload: &Value) -> Vec<RepositoryHint> {
        let repository = &payload["repository"];
        let (Some(full_name), Some(html_url)) = (repository["full_name"].as_str(), repository["html_url"].as_str())
        else {
            return Vec::new();
        };
        let current = RepositoryHint { full_name: full_name.to_owned(), html_url: html_url.to_owned(), gone: false };
        let mut hints = Vec::new();
        match event {
            "push" if self.push_concerns_catalog(payload) => hints.push(current),
            "repository" => match payload["action"].as_str() {
                Some("renamed") => {
                    if let Some(from) = payload["changes"]["repository"]["name"]["from"].as_str()
                        && let Some((owner, _)) = full_name.split_once('/')
                    {
                        hints.push(moved(&current, owner, from));
                    }
                    hints.push(current);
                }
                Some("transferred") => {
                    let from = &payload["changes"]["owner"]["from"];
                    if let Some(owner) = from["organization"]["login"].as_str().or(from["user"]["login"].as_str())
                        && let Some((_, name)) = full_name.split_once('/')
                    {
                        hints.push(moved(&current, owner, name));
                    }
                    hints.push(current);
                }
                Some("created" | "deleted" | "archived" | "unarchived" | "edited" | "publicized" | "privatized") => {
                    hints.push(current)
                }
                _ => {}
            },
            _ => {}
        }
        let organization = self.config.organization.as_str();
        hints.retain(|hint| {
            hint.full_name.split_once('/').is_some_and(|(owner, _)| owner.eq_ignore_ascii_case(organization))
        });
        hints
    }

    /// Whether a push went to the branch this provider reads and touched a
    /// file it reads (or could: a new match of the glob).
    fn push_concerns_catalog(&self, payload: &Value) -> bool {
        let branch = if self.config.branch.is_empty() {
            payload["repository"]["default_branch"].as_str().unwrap_or("main")
        } else {
            &self.config.branch
        };
        if payload["ref"].as_str() != Some(format!("refs/heads/{branch}").as_str()) {
            return false;
        }
        let Some(commits) = payload["commits"].as_array() else { return false };
        if commits.len() >= MAX_LISTED_COMMITS {
            return true;
        }
        let full_name = payload["repository"]["full_name"].as_str().unwrap_or_default().to_lowercase();
        let files_read = self.files_read.lock();
        let known = files_read.get(&full_name);
        // Files reached through a Location (or a new match of its glob) are
        // known only to the process that read the repository, and only
        // until it restarts: where this process has not read it, or a
        // Location was followed, any YAML file may be one.
        let any_yaml = known.is_none_or(|known| known.len() > 1);
        let concerns = |path: &str| {
            self.is_catalog_path(path)
                || known.is_some_and(|known| known.contains(path))
                || (any_yaml && (path.ends_with(".yaml") || path.ends_with(".yml")))
        };
        commits.iter().any(|commit| {
            ["added", "modified", "removed"].iter().any(|list| {
                commit[*list].as_array().is_some_and(|paths| paths.iter().filter_map(Value::as_str).any(concerns))
            })
        })
    }

    fn is_catalog_path(&self, path: &str) -> bool {
        match &self.catalog_glob {
            Some(glob) => glob.matches_with(path, GLOB_OPTIONS),
            None => path == self.config.catalog_path.trim_start_matches('/'),
        }
    }

    fn forget_files(&self, full_name: &str) {
        self.files_read.lock().remove(&full_name.to_lowercase());
    }

    fn empty_snapshot(&self) -> Snapshot {
        Snapshot {
            provider: self.key.clone(),
            max_removed_share: Some(f64::from(self.config.max_removed_percent.min(100)) / 100.0),
            ..Default::default()
        }
    }

    /// One repository's catalog files (as a snapshot to merge) and the
    /// paths read. The repository's tree is listed only when a glob needs it.
    async fn read_repository(&self, repository: &Repository) -> (Snapshot, HashSet<String>) {
        let mut part = Snapshot::default();
        let origin = format!("url:{}", self.list_url());
        let mut tree: Option<Vec<String>> = None;
        let mut queue = VecDeque::new();
        if let Some(glob) = &self.catalog_glob {
            match self.tree(repository, &mut tree).await {
                Ok(paths) => queue.extend(
                    paths
                        .iter()
                        .filter(|path| glob.matches_with(path, GLOB_OPTIONS))
                        .map(|path| FileToRead { path: path.clone(), required: true }),
                ),
                Err(status) => {
                    part.locations.push(status);
                    return (part, HashSet::new());
                }
            }
        } else {
            queue.push_back(FileToRead {
                path: self.config.catalog_path.trim_start_matches('/').to_owned(),
                required: true,
            });
        }
        let mut visited = HashSet::new();
        while let Some(file) = queue.pop_front() {
            if visited.contains(&file.path) {
                continue;
            }
            let key = self.file_key(repository, &file.path);
            if visited.len() >= self.config.max_files_per_repository {
                part.locations.push(LocationStatus {
                    target: key,
                    error: Some(format!(
                        "{} has more than {} catalog files (github.max_files_per_repository): the rest were not read",
                        repository.full_name, self.config.max_files_per_repository
                    )),
                    keeps_entities: true,
                    ..Default::default()
                });
                break;
            }
            visited.insert(file.path.clone());
            match self.catalog_file(repository, &file.path).await {
                Ok(text) => {
                    let first = part.entities.len();
                    let locations = add_documents(&text, &key, &origin, &mut part);
                    self.refuse_other_kinds(&mut part, first);
                    if self.allows("Location") {
                        for location in locations {
                            let (files, problems) =
                                self.location_targets(repository, &file.path, &location, &mut tree).await;
                            queue.extend(files);
                            for problem in problems {
                                note_problem(&mut part, &key, &problem);
                            }
                        }
                    }
                }
                // The file is not there (any more): its entities go.
                Err(SourceError::NotFound) if file.required => part.locations.push(LocationStatus {
                    target: key,
                    error: Some(format!("{} has no file {}", repository.full_name, file.path)),
                    ..Default::default()
                }),
                Err(SourceError::NotFound) => {}
                Err(error) => part.locations.push(LocationStatus {
                    target: key,
                    error: Some(format!("cannot read the catalog file: {error}")),
                    keeps_entities: true,
                    ..Default::default()
                }),
            }
        }
        (part, visited)
    }

    /// The files a Location entity read from `file` points at, and the
    /// targets that were refused, each with why. Targets are
    /// relative paths or URLs of the same repository and branch (globs
    /// allowed); anything else is refused, since following URLs elsewhere
    /// would let one repository's file make the server fetch any address.
    async fn location_targets(
        &self,
        repository: &Repository,
        file: &str,
        location: &catalog_domain::Entity,
        tree: &mut Option<Vec<String>>,
    ) -> (Vec<FileToRead>, Vec<String>) {
        let Ok(catalog_domain::TypedSpec::Location(spec)) = location.typed_spec() else {
            return (Vec::new(), Vec::new());
        };
        let required = spec.presence.as_deref() != Some("optional");
        let blob = format!("{}/blob/{}/", repository.html_url.trim_end_matches('/'), self.branch(repository));
        let directory = file.rsplit_once('/').map_or("", |(directory, _)| directory);
        let mut files = Vec::new();
        let mut problems = Vec::new();
        for target in spec.target.iter().chain(&spec.targets) {
            let path = if target.starts_with("https://") || target.starts_with("http://") {
                match target.get(..blob.len()) {
                    Some(prefix) if prefix.eq_ignore_ascii_case(&blob) => Some(target[blob.len()..].to_owned()),
                    _ => None,
                }
            } else {
                normalise(directory, target)
            };
            let Some(path) = path else {
                problems.push(format!(
                    "{}: target {target}: only files of the same repository and branch ({blob}...) are followed",
                    location.entity_ref()
                ));
                continue;
            };
            // An encoded `..` (`%2e%2e`) would climb out of the repository
            // once the URL is parsed: encoded targets are refused whole.
            if path.contains(['%', '\\', '#', '?'])
                || path.split('/').any(|part| part.is_empty() || part == "." || part == "..")
            {
                problems.push(format!(
                    "{}: target {target}: a path with %, \\, #, ? or an empty, . or .. segment is not followed",
                    location.entity_ref()
                ));
                continue;
            }
            if has_glob_characters(&path) {
                let pattern = match glob::Pattern::new(&path) {
                    Ok(pattern) => pattern,
                    Err(error) => {
                        problems
                            .push(format!("{}: target {target}: not a glob pattern: {error}", location.entity_ref()));
                        continue;
                    }
                };
                match self.tree(repository, tree).await {
                    Ok(paths) => files.extend(
                        paths
                            .iter()
                            .filter(|path| pattern.matches_with(path, GLOB_OPTIONS))
                            .map(|path| FileToRead { path: path.clone(), required }),
                    ),
                    Err(status) => problems.push(status.error.unwrap_or_default()),
                }
            } else {
                files.push(FileToRead { path, required });
            }
        }
        (files, problems)
    }

    /// The paths of the repository's files (blobs), listed once per read:
    /// the git trees API, recursively. An empty repository has none; a
    /// truncated or failed listing is a location error that keeps entities.
    async fn tree<'a>(
        &self,
        repository: &Repository,
        tree: &'a mut Option<Vec<String>>,
    ) -> Result<&'a Vec<String>, LocationStatus> {
        if tree.is_none() {
            let base = self.config.auth.api_base_url.trim_end_matches('/');
            let branch = self.branch(repository).replace('/', "%2F");
            let url = format!("{base}/repos/{}/git/trees/{branch}?recursive=1", repository.full_name);
            let failed = |message: String| LocationStatus {
                target: format!("url:{}/tree/{}", repository.html_url, self.branch(repository)),
                error: Some(message),
                keeps_entities: true,
                ..Default::default()
            };
            let paths = match self.source.get_json::<Tree>(&url).await {
                Ok((listing, _)) if listing.truncated => {
                    return Err(failed(format!(
                        "{}: the git tree is too large to list in one request (truncated); its entities are kept",
                        repository.full_name
                    )));
                }
                Ok((listing, _)) => {
                    listing.tree.into_iter().filter(|item| item.item_type == "blob").map(|item| item.path).collect()
                }
                // No branch, or an empty repository (409): no files.
                Err(SourceError::NotFound | SourceError::Conflict { .. }) => Vec::new(),
                Err(error) => return Err(failed(format!("cannot list the repository's files: {error}"))),
            };
            *tree = Some(paths);
        }
        Ok(tree.as_ref().expect("listed above"))
    }

    /// Moves the entities from `first` on whose kind is not allowed into
    /// the snapshot's invalid list: anyone who can push to one repository
    /// must not be able to declare a Group (and with it who may read what
    /// that group owns) or a User.
    fn refuse_other_kinds(&self, snapshot: &mut Snapshot, first: usize) {
        let added = snapshot.entities.split_off(first);
        let mut refused = Vec::new();
        for item in added {
            if self.allows(&item.entity.kind) {
                snapshot.entities.push(item);
            } else {
                let message = format!(
                    "kind {} is not allowed from repositories (github.allowed_kinds: {})",
                    item.entity.kind,
                    self.config.allowed_kinds.join(", ")
                );
                refused.push(format!("{}: {message}", item.entity.entity_ref()));
                snapshot.invalid.push(InvalidEntity {
                    entity_ref: item.entity.entity_ref(),
                    location: item.location,
                    errors: vec![message],
                });
            }
        }
        if refused.is_empty() {
            return;
        }
        if let Some(status) = snapshot.locations.last_mut() {
            status.n_entities = status.n_entities.saturating_sub(refused.len());
            let joined = refused.join("\n");
            status.error = Some(match status.error.take() {
                Some(error) => format!("{error}\n{joined}"),
                None => joined,
            });
        }
    }

    fn allows(&self, kind: &str) -> bool {
        self.config.allowed_kinds.iter().any(|allowed| allowed.eq_ignore_ascii_case(kind))
    }

    /// Whether the repository still belongs to the organisation (a
    /// transferred one answers under its new owner).
    fn owns(&self, repository: &Repository) -> bool {
        repository.owner.login.eq_ignore_ascii_case(&self.config.organization)
    }

    fn list_url(&self) -> String {
        let base = self.config.auth.api_base_url.trim_end_matches('/');
        format!("{base}/orgs/{}/repos?per_page=100&type=all", self.config.organization)
    }

    fn selects(&self, repository: &Repository) -> bool {
        (self.config.include_archived || !repository.archived)
            && (self.config.include_forks || !repository.fork)
            && self.pattern.as_ref().is_none_or(|pattern| pattern.is_match(&repository.name))
            && (self.config.topics.is_empty()
                || repository.topics.iter().any(|topic| self.config.topics.contains(topic)))
    }

    fn branch<'a>(&'a self, repository: &'a Repository) -> &'a str {
        if self.config.branch.is_empty() {
            repository.default_branch.as_deref().unwrap_or("main")
        } else {
            &self.config.branch
        }
    }

    /// The file's URL on GitHub: what Backstage names the location.
    fn file_key(&self, repository: &Repository, path: &str) -> String {
        format!("url:{}/blob/{}/{path}", repository.html_url.trim_end_matches('/'), self.branch(repository))
    }

    async fn catalog_file(&self, repository: &Repository, path: &str) -> Result<String, SourceError> {
        let bytes = self.file_bytes(repository, path).await?;
        String::from_utf8(bytes).map_err(|_| SourceError::Invalid { message: format!("{path}: the file is not UTF-8") })
    }

    /// Copies the directory `directory` of `owner/name` at `branch` (every
    /// file beneath it, through the git tree and the contents API) into
    /// `target`: what a template's skeletons need when the template lives
    /// in a repository. Bounded by `max_files` and `max_bytes`.
    async fn copy_directory(
        &self,
        full_name: &str,
        branch: &str,
        directory: &str,
        target: &std::path::Path,
        (max_files, max_bytes): (usize, usize),
    ) -> Result<usize, SourceError> {
        let invalid = |message: String| SourceError::Invalid { message };
        let (owner, name) = full_name.split_once('/').ok_or_else(|| invalid(format!("{full_name}: not owner/name")))?;
        let repository = Repository {
            name: name.to_owned(),
            full_name: full_name.to_owned(),
            owner: Owner { login: owner.to_owned() },
            html_url: String::new(),
            default_branch: Some(branch.to_owned()),
            archived: false,
            fork: false,
            topics: Vec::new(),
            pushed_at: None,
        };
        let mut tree = None;
        let paths = match self.tree(&repository, &mut tree).await {
            Ok(paths) => paths.clone(),
            Err(status) => return Err(invalid(status.error.unwrap_or_default())),
        };
        let prefix = if directory.is_empty() { String::new() } else { format!("{}/", directory.trim_end_matches('/')) };
        let wanted: Vec<&String> = paths.iter().filter(|path| path.starts_with(&prefix)).collect();
        if wanted.len() > max_files {
            return Err(invalid(format!("{full_name}/{directory} has more than {max_files} files")));
        }
        let mut n_bytes = 0;
        for path in &wanted {
            let relative = std::path::Path::new(&path[prefix.len()..]);
            // Tree paths never climb, but a file must land inside `target` whatever GitHub says.
            if !relative.components().all(|part| matches!(part, std::path::Component::Normal(_))) {
                return Err(invalid(format!("{path}: not a plain relative path")));
            }
            let bytes = self.file_bytes(&repository, path).await?;
            n_bytes += bytes.len();
            if n_bytes > max_bytes {
                return Err(invalid(format!("{full_name}/{directory} holds more than {max_bytes} bytes")));
            }
            let destination = target.join(relative);
            let written = destination
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&destination, &bytes));
            written.map_err(|error| invalid(format!("cannot write {}: {error}", destination.display())))?;
        }
        Ok(wanted.len())
    }

    async fn file_bytes(&self, repository: &Repository, path: &str) -> Result<Vec<u8>, SourceError> {
        let base = self.config.auth.api_base_url.trim_end_matches('/');
        let encoded: Vec<String> = path.split('/').map(encode_segment).collect();
        let url = format!(
            "{base}/repos/{}/contents/{}?ref={}",
            repository.full_name,
            encoded.join("/"),
            encode_segment(self.branch(repository))
        );
        let (contents, _) = self.source.get_json::<Contents>(&url).await?;
        if contents.encoding != "base64" {
            return Err(SourceError::Invalid { message: format!("{url}: unexpected encoding {}", contents.encoding) });
        }
        // GitHub wraps the base64 at 60 characters.
        let packed: String = contents.content.chars().filter(|character| !character.is_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(packed)
            .map_err(|error| SourceError::Invalid { message: format!("{url}: bad base64: {error}") })
    }
}

impl Provider for GithubProvider {
    fn key(&self) -> &str {
        &self.key
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn read(&self) -> BoxFuture<'_, Result<Vec<Snapshot>, ReadError>> {
        Box::pin(async move { Ok(vec![self.snapshot().await]) })
    }

    fn github_refresh(&self, event: &str, payload: &Value) -> Option<GithubRefresh> {
        let repositories = self.repositories_to_refresh(event, payload);
        (!repositories.is_empty()).then(|| GithubRefresh::Repositories { provider: self.key.clone(), repositories })
    }

    fn repositories(&self) -> Option<&dyn RepositoryReader> {
        Some(self)
    }

    fn contribute(self: Arc<Self>, facts: &mut Facts) {
        facts.add(self.view.clone());
    }
}

impl RepositoryReader for GithubProvider {
    fn reads_organization(&self, organization: &str) -> bool {
        self.config.organization.eq_ignore_ascii_case(organization)
    }

    fn read_repositories<'a>(&'a self, hints: &'a [RepositoryHint]) -> BoxFuture<'a, Snapshot> {
        Box::pin(self.targeted_snapshot(hints))
    }

    fn download_directory<'a>(
        &'a self,
        full_name: &'a str,
        branch: &'a str,
        directory: &'a str,
        target: &'a std::path::Path,
        limits: (usize, usize),
    ) -> BoxFuture<'a, Result<usize, SourceError>> {
        Box::pin(self.copy_directory(full_name, branch, directory, target, limits))
    }
}

/// Appends what one partial read found to the whole snapshot.
fn merge(snapshot: &mut Snapshot, part: Snapshot) {
    snapshot.entities.extend(part.entities);
    snapshot.invalid.extend(part.invalid);
    snapshot.locations.extend(part.locations);
}

/// Adds a problem to the outcome of the location `key` (already recorded).
fn note_problem(snapshot: &mut Snapshot, key: &str, problem: &str) {
    tracing::warn!(location = key, error = %problem, "a Location target is not followed");
    if let Some(status) = snapshot.locations.iter_mut().rev().find(|status| status.target == key) {
        status.error = Some(match status.error.take() {
            Some(error) => format!("{error}\n{problem}"),
            None => problem.to_owned(),
        });
    }
}

/// The repository the hint names, under another owner or name: gone from there.
fn moved(current: &RepositoryHint, owner: &str, name: &str) -> RepositoryHint {
    let suffix = format!("/{}", current.full_name);
    let host = current.html_url.trim_end_matches('/').strip_suffix(&suffix).unwrap_or(&current.html_url);
    RepositoryHint { full_name: format!("{owner}/{name}"), html_url: format!("{host}/{owner}/{name}"), gone: true }
}

/// `target` relative to `directory` inside a repository, with `.` and `..`
/// resolved; None when it leads outside the repository. A leading `/` is
/// the repository's root.
fn normalise(directory: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    let start = if target.starts_with('/') { "" } else { directory };
    for part in start.split('/').chain(target.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// One path segment or query value with everything but unreserved
/// characters percent-encoded, so a file named `a#b` or `%2e%2e` stays a name.
fn encode_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn has_glob_characters(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn provider(catalog_path: &str) -> GithubProvider {
        let config = GithubProviderConfig {
            organization: "acme".into(),
            catalog_path: catalog_path.into(),
            ..GithubProviderConfig::default()
        };
        GithubProvider::build("github".into(), &config, RetryPolicy::default()).unwrap()
    }

    fn push(branch: &str, paths: &[&str], n_commits: usize) -> Value {
        let commit = json!({"added": [], "modified": paths, "removed": []});
        json!({"ref": format!("refs/heads/{branch}"), "commits": vec![commit; n_commits],
               "repository": {"full_name": "acme/svc", "html_url": "https://github.com/acme/svc", "default_branch": "main"}})
    }

    fn names(hints: &[RepositoryHint]) -> Vec<(&str, bool)> {
        hints.iter().map(|hint| (hint.full_name.as_str(), hint.gone)).collect()
    }

    #[test]
    fn pushes_matter_only_on_the_read_branch_when_they_touch_a_catalog_file() {
        let plain = provider("catalog-info.yaml");
        assert_eq!(
            names(&plain.repositories_to_refresh("push", &push("main", &["catalog-info.yaml"], 1))),
            [("acme/svc", false)]
        );
        assert!(plain.repositories_to_refresh("push", &push("main", &["src/main.rs"], 1)).is_empty());
        // Not read by this process yet: any YAML file may be a Location's target.
        assert_eq!(plain.repositories_to_refresh("push", &push("main", &["docs/api.yaml"], 1)).len(), 1);
        plain.files_read.lock().insert("acme/svc".into(), HashSet::from(["catalog-info.yaml".to_owned()]));
        assert!(plain.repositories_to_refresh("push", &push("main", &["docs/api.yaml"], 1)).is_empty());
        assert!(plain.repositories_to_refresh("push", &push("feature", &["catalog-info.yaml"], 1)).is_empty());
        let full = push("main", &["src/main.rs"], MAX_LISTED_COMMITS);
        assert_eq!(plain.repositories_to_refresh("push", &full).len(), 1, "a full list may hide the file");

        let glob = provider("services/*/catalog-info.yaml");
        assert_eq!(glob.repositories_to_refresh("push", &push("main", &["services/a/catalog-info.yaml"], 1)).len(), 1);
        glob.files_read.lock().insert("acme/svc".into(), HashSet::new());
        assert!(glob.repositories_to_refresh("push", &push("main", &["services/a/b/catalog-info.yaml"], 1)).is_empty());
        // A file read through a Location last time counts too.
        glob.files_read.lock().insert("acme/svc".into(), HashSet::from(["docs/api.yaml".to_owned()]));
        assert_eq!(glob.repositories_to_refresh("push", &push("main", &["docs/api.yaml"], 1)).len(), 1);
    }

    #[test]
    fn renames_and_transfers_read_the_new_name_and_empty_the_old_one() {
        let github = provider("catalog-info.yaml");
        let renamed = json!({"action": "renamed", "changes": {"repository": {"name": {"from": "old-svc"}}},
                             "repository": {"full_name": "acme/svc", "html_url": "https://github.com/acme/svc"}});
        let hints = github.repositories_to_refresh("repository", &renamed);
        assert_eq!(names(&hints), [("acme/old-svc", true), ("acme/svc", false)]);
        assert_eq!(hints[0].html_url, "https://github.com/acme/old-svc");

        // Moved out of acme: only the old name concerns this provider.
        let away = json!({"action": "transferred", "changes": {"owner": {"from": {"organization": {"login": "acme"}}}},
                          "repository": {"full_name": "other/svc", "html_url": "https://github.com/other/svc"}});
        assert_eq!(names(&github.repositories_to_refresh("repository", &away)), [("acme/svc", true)]);
        let elsewhere = json!({"action": "archived",
                               "repository": {"full_name": "other/x", "html_url": "https://github.com/other/x"}});
        assert!(github.repositories_to_refresh("repository", &elsewhere).is_empty());
        assert!(github.repositories_to_refresh("issues", &elsewhere).is_empty());
    }

    #[test]
    fn only_github_file_urls_name_a_repository() {
        let parsed = GithubFileUrl::parse("https://github.com/acme/payments/blob/main/catalog-info.yaml").unwrap();
        assert_eq!((parsed.owner.as_str(), parsed.repository.as_str()), ("acme", "payments"));
        assert_eq!(
            (parsed.html_url.as_str(), parsed.path.as_str()),
            ("https://github.com/acme/payments", "catalog-info.yaml")
        );
        assert_eq!(GithubFileUrl::parse("https://github.com/acme/payments/tree/main"), None);
        assert_eq!(GithubFileUrl::parse("file:/etc/passwd"), None);
    }

    #[test]
    fn a_double_star_glob_matches_at_any_depth_including_the_root() {
        let github = provider("**/catalog-info.yaml");
        assert!(github.is_catalog_path("catalog-info.yaml"));
        assert!(github.is_catalog_path("a/b/catalog-info.yaml"));
        assert!(!github.is_catalog_path("a/b/catalog-info.yml"));
    }

    #[test]
    fn location_targets_resolve_against_their_files_directory_and_stay_in_the_repository() {
        assert_eq!(normalise("services/a", "./api.yaml").as_deref(), Some("services/a/api.yaml"));
        assert_eq!(normalise("services/a", "../b/catalog-info.yaml").as_deref(), Some("services/b/catalog-info.yaml"));
        assert_eq!(normalise("services/a", "/docs/catalog.yaml").as_deref(), Some("docs/catalog.yaml"));
        assert_eq!(normalise("", "catalog/*.yaml").as_deref(), Some("catalog/*.yaml"));
        assert_eq!(normalise("services", "../../etc/passwd"), None);
        assert_eq!(normalise("", ".."), None);
    }
}
