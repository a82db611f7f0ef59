//! The GitHub discovery provider: lists an organisation's repositories
//! (REST, `Link` pagination), keeps those its filters select, and reads each
//! one's catalog file through the contents API. Each repository is a
//! location; its entities carry `backstage.io/managed-by-location` with the
//! file's URL. The wire types and the mapping are here; fetching, retries and
//! rate limits are `pull.rs`'s.

use std::time::Duration;

use base64::Engine as _;
use catalog_store::{InvalidEntity, LocationStatus, Snapshot};
use futures::StreamExt as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, USER_AGENT};
use serde::{Deserialize, Serialize};

use crate::documents::add_documents;
use crate::pull::{HttpSource, RetryPolicy, SourceError};

/// Where and what to discover in one GitHub organisation.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GithubProviderConfig {
    /// The organisation whose repositories are read.
    pub organization: String,
    /// The REST API's root: `https://api.github.com`, or GitHub Enterprise's
    /// `https://HOST/api/v3`.
    pub api_base_url: String,
    /// The catalog file's path in each repository.
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
    /// The environment variable holding the token (a personal access token
    /// or an installation token); unset: unauthenticated (60 requests an hour).
    pub token_variable: String,
    /// Catalog files fetched at once.
    pub concurrency: usize,
    /// The most of its entities one complete run may remove, in percent;
    /// more is held back until a forced run. 100: no limit.
    pub max_removed_percent: u8,
    pub request_timeout_seconds: u64,
}

impl Default for GithubProviderConfig {
    fn default() -> Self {
        Self {
            organization: String::new(),
            api_base_url: "https://api.github.com".into(),
            catalog_path: "catalog-info.yaml".into(),
            branch: String::new(),
            repository_pattern: String::new(),
            topics: Vec::new(),
            allowed_kinds: ["Component", "API", "Resource", "System", "Domain", "Template"].map(str::to_owned).to_vec(),
            include_archived: false,
            include_forks: false,
            token_variable: "GITHUB_TOKEN".into(),
            concurrency: 8,
            max_removed_percent: 20,
            request_timeout_seconds: 30,
        }
    }
}

/// Why a GitHub provider cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum GithubBuildError {
    #[error("github provider: organization must be set")]
    NoOrganization,
    #[error("github provider: repository_pattern is not a regular expression: {0}")]
    Pattern(#[from] regex::Error),
    #[error("github provider: the token in {0} is not a valid header value")]
    Token(String),
    #[error("github provider: cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// An HTTP source for GitHub's REST API: its media type and version, and
/// the token from `token_variable` when that is set.
pub(crate) fn github_source(
    token_variable: &str,
    timeout_seconds: u64,
    policy: RetryPolicy,
) -> Result<HttpSource, GithubBuildError> {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("application/vnd.github+json"));
    headers.insert("x-github-api-version", HeaderValue::from_static("2022-11-28"));
    headers.insert(USER_AGENT, HeaderValue::from_static("backstage-catalog-graphql"));
    if let Ok(token) = std::env::var(token_variable)
        && !token.is_empty()
    {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| GithubBuildError::Token(token_variable.to_owned()))?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(HttpSource::new(headers, Duration::from_secs(timeout_seconds.max(1)), policy)?)
}

/// A ready GitHub discovery provider.
pub struct GithubProvider {
    key: String,
    config: GithubProviderConfig,
    pattern: Option<regex::Regex>,
    source: HttpSource,
}

impl std::fmt::Debug for GithubProvider {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("GithubProvider").field("key", &self.key).field("config", &self.config).finish()
    }
}

/// One repository as the list endpoint returns it (the fields used).
#[derive(Clone, Debug, Deserialize)]
struct Repository {
    name: String,
    full_name: String,
    html_url: String,
    default_branch: Option<String>,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    fork: bool,
    #[serde(default)]
    topics: Vec<String>,
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
        let source = github_source(&config.token_variable, config.request_timeout_seconds, policy)?;
        Ok(Self { key, config: config.clone(), pattern, source })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn organization(&self) -> &str {
        &self.config.organization
    }

    pub fn catalog_path(&self) -> &str {
        &self.config.catalog_path
    }

    /// Reads every selected repository's catalog file into a snapshot. A
    /// listing that fails leaves the snapshot incomplete (nothing removed);
    /// a file that fails to read keeps that repository's entities; a file
    /// that is not there (404) removes them.
    pub async fn read(&self) -> Snapshot {
        let mut snapshot = Snapshot {
            provider: self.key.clone(),
            max_removed_share: Some(f64::from(self.config.max_removed_percent.min(100)) / 100.0),
            ..Default::default()
        };
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
        let selected: Vec<Repository> =
            repositories.into_iter().filter(|repository| self.selects(repository)).collect();
        let files: Vec<(Repository, Result<String, SourceError>)> =
            futures::stream::iter(selected.into_iter().map(|repository| async move {
                let text = self.catalog_file(&repository).await;
                (repository, text)
            }))
            .buffered(self.config.concurrency.max(1))
            .collect()
            .await;
        let origin = format!("url:{listing}");
        for (repository, text) in files {
            let key = self.location_key(&repository);
            match text {
                Ok(text) => {
                    let first = snapshot.entities.len();
                    // Locations inside a repository would point at other files of it:
                    // following them needs the trees API (not read yet).
                    for location in add_documents(&text, &key, &origin, &mut snapshot) {
                        tracing::warn!(location = %location.entity_ref(), "Location entities in GitHub repositories are not followed yet");
                    }
                    self.refuse_other_kinds(&mut snapshot, first);
                }
                // No catalog file (any more): the repository's entities go.
                Err(SourceError::NotFound) => snapshot.locations.push(LocationStatus {
                    target: key,
                    error: Some("the repository has no catalog file".into()),
                    ..Default::default()
                }),
                Err(error) => snapshot.locations.push(LocationStatus {
                    target: key,
                    error: Some(format!("cannot read the catalog file: {error}")),
                    keeps_entities: true,
                    ..Default::default()
                }),
            }
        }
        snapshot
    }

    /// Moves the entities from `first` on whose kind is not allowed into
    /// the snapshot's invalid list: anyone who can push to one repository
    /// must not be able to declare a Group (and with it who may read what
    /// that group owns) or a User.
    fn refuse_other_kinds(&self, snapshot: &mut Snapshot, first: usize) {
        let allowed = |kind: &str| self.config.allowed_kinds.iter().any(|allowed| allowed.eq_ignore_ascii_case(kind));
        let added = snapshot.entities.split_off(first);
        let mut refused = Vec::new();
        for item in added {
            if allowed(&item.entity.kind) {
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

    fn list_url(&self) -> String {
        let base = self.config.api_base_url.trim_end_matches('/');
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
    fn location_key(&self, repository: &Repository) -> String {
        format!("url:{}/blob/{}/{}", repository.html_url, self.branch(repository), self.config.catalog_path)
    }

    async fn catalog_file(&self, repository: &Repository) -> Result<String, SourceError> {
        let base = self.config.api_base_url.trim_end_matches('/');
        let url = format!(
            "{base}/repos/{}/contents/{}?ref={}",
            repository.full_name,
            self.config.catalog_path,
            self.branch(repository)
        );
        let (contents, _) = self.source.get_json::<Contents>(&url).await?;
        if contents.encoding != "base64" {
            return Err(SourceError::Invalid { message: format!("{url}: unexpected encoding {}", contents.encoding) });
        }
        // GitHub wraps the base64 at 60 characters.
        let packed: String = contents.content.chars().filter(|character| !character.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(packed)
            .map_err(|error| SourceError::Invalid { message: format!("{url}: bad base64: {error}") })?;
        String::from_utf8(bytes).map_err(|_| SourceError::Invalid { message: format!("{url}: the file is not UTF-8") })
    }
}
