//! The GitHub actions (`publish:github`, `github:webhook`) and what they
//! share, built from a [`GithubPublishConfig`]: the catalog's one GitHub
//! client (`catalog-http`, also the ingestion providers'), which decides
//! retries, backoff and rate limits, and the sentences its answers become.
//!
//! The token is read from the environment once, when the actions are built:
//! it goes into the client's `Authorization` header (marked sensitive) and
//! nowhere else. Redirects are off, since a redirect would carry the token
//! to wherever it points. Every failure is a sentence that says what the
//! action was trying to do (`the token cannot create the repository
//! acme/checkout: ...`), classified by GitHub's status.
//!
//! Owners, repositories, teams, users and branches become URL path segments,
//! so each is checked against GitHub's naming rules before any request: a
//! value like `../../orgs/x` can never steer a request elsewhere.

mod publish;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use catalog_http::github::GithubAuthConfig;
use catalog_http::{Answer, HttpSource, RetryPolicy, SourceError};
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::action::{ActionContext, ActionError, ActionRegistry, DuplicateAction};
use crate::secret::Secret;

/// Where GitHub's REST API is and how to authenticate to it. The api crate
/// embeds it in its configuration; every field has a default, so GitHub.com
/// with a token in `GITHUB_TOKEN` needs no configuration at all.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GithubPublishConfig {
    /// The REST API's root: `https://api.github.com`, or
    /// `https://HOST/api/v3` for GitHub Enterprise Server. Plain `http` is
    /// accepted only for a loopback host (a test server), since the token
    /// travels with every request.
    pub api_base_url: String,
    /// The environment variable holding the token, read when the actions are
    /// built. The token itself is never part of a configuration file.
    pub token_variable: String,
    /// How long one request to GitHub may take, in seconds.
    pub request_timeout_seconds: u64,
}

impl Default for GithubPublishConfig {
    fn default() -> Self {
        Self {
            api_base_url: "https://api.github.com".to_owned(),
            token_variable: "GITHUB_TOKEN".to_owned(),
            request_timeout_seconds: 30,
        }
    }
}

/// One problem of a [`GithubPublishConfig`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GithubConfigProblem {
    #[error("api_base_url: must be an absolute URL such as https://api.github.com ({0})")]
    ApiBaseUrl(String),
    #[error("api_base_url: must use https (plain http only for localhost), since the token travels with every request")]
    InsecureApiBaseUrl,
    #[error("token_variable: must name an environment variable, not be empty")]
    EmptyTokenVariable,
    #[error("token_variable: the value of {0} cannot be sent in an HTTP header (it holds a control character)")]
    UnusableToken(String),
    #[error("request_timeout_seconds: must be at least 1")]
    ZeroTimeout,
    #[error("the HTTP client cannot be built: {0}")]
    Client(String),
}

/// Every problem that keeps the GitHub actions from being built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the GitHub publishing configuration is not valid: {}", join_problems(.problems))]
pub struct GithubConfigError {
    pub problems: Vec<GithubConfigProblem>,
}

fn join_problems(problems: &[GithubConfigProblem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl GithubPublishConfig {
    /// Checks the configuration and builds the actions, reading the token
    /// from the process's environment.
    pub fn build(&self) -> Result<GithubActions, GithubConfigError> {
        self.build_with_environment(|name| std::env::var(name).ok())
    }

    /// Like [`build`](Self::build), with the environment given as a lookup
    /// (tests cannot set process variables safely). A missing or empty token
    /// is not an error here: dry runs need none, and a real run fails with
    /// a sentence naming the variable.
    pub fn build_with_environment(
        &self,
        environment: impl Fn(&str) -> Option<String>,
    ) -> Result<GithubActions, GithubConfigError> {
        let mut problems = Vec::new();
        let api_base_url = match url::Url::parse(&self.api_base_url) {
            Ok(url) if url.host_str().is_none() => {
                problems.push(GithubConfigProblem::ApiBaseUrl("it has no host".into()));
                None
            }
            Ok(url) => {
                let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
                match url.scheme() {
                    "https" => Some(url),
                    "http" if loopback => Some(url),
                    _ => {
                        problems.push(GithubConfigProblem::InsecureApiBaseUrl);
                        None
                    }
                }
            }
            Err(error) => {
                problems.push(GithubConfigProblem::ApiBaseUrl(error.to_string()));
                None
            }
        };
        if self.token_variable.trim().is_empty() {
            problems.push(GithubConfigProblem::EmptyTokenVariable);
        }
        if self.request_timeout_seconds == 0 {
            problems.push(GithubConfigProblem::ZeroTimeout);
        }
        let token = environment(&self.token_variable).filter(|token| !token.trim().is_empty()).map(Secret::new);
        // Found now rather than at the first publish, where it would look like a GitHub failure.
        if token.as_ref().is_some_and(|token| !sendable(token)) {
            problems.push(GithubConfigProblem::UnusableToken(self.token_variable.clone()));
        }
        let Some(api_base_url) = api_base_url.filter(|_| problems.is_empty()) else {
            return Err(GithubConfigError { problems });
        };
        let api_base_url_text = api_base_url.as_str().trim_end_matches('/').to_owned();
        let auth = GithubAuthConfig {
            api_base_url: api_base_url_text.clone(),
            token_variable: self.token_variable.clone(),
            ..GithubAuthConfig::default()
        };
        // The token found above, not a second read of the environment.
        let source = auth
            .source_with_environment(self.request_timeout_seconds, RetryPolicy::default(), |_| {
                token.as_ref().map(|token| token.expose().to_owned())
            })
            .map_err(|error| GithubConfigError { problems: vec![GithubConfigProblem::Client(error.to_string())] })?;
        let client = GithubClient {
            source,
            web_host: web_host(&api_base_url),
            api_base_url: api_base_url_text,
            has_token: token.is_some(),
            token_variable: self.token_variable.clone(),
        };
        Ok(GithubActions { client: Arc::new(client) })
    }
}

/// The GitHub actions, ready to register.
#[derive(Clone)]
pub struct GithubActions {
    client: Arc<GithubClient>,
}

impl GithubActions {
    /// Adds `publish:github` and `github:webhook` to a registry.
    pub fn register(&self, registry: &mut ActionRegistry) -> Result<(), DuplicateAction> {
        registry.register(Arc::new(publish::PublishGithub::new(Arc::clone(&self.client))))?;
        registry.register(Arc::new(webhook::GithubWebhook::new(Arc::clone(&self.client))))
    }

    /// Whether a token was found; without one only dry runs succeed, so the
    /// server can warn at startup.
    pub fn has_token(&self) -> bool {
        self.client.has_token
    }

    /// The host repository URLs name (`github.com`, or the Enterprise host).
    pub fn host(&self) -> &str {
        &self.client.web_host
    }
}

/// The host that `repoUrl` names for an API root: `api.github.com` serves
/// `github.com`; an Enterprise server (`https://HOST/api/v3`) and any other
/// root serve their own host.
fn web_host(api_base_url: &url::Url) -> String {
    let host = api_base_url.host_str().unwrap_or_default();
    match (host, api_base_url.port()) {
        ("api.github.com", _) => "github.com".to_owned(),
        (host, Some(port)) => format!("{host}:{port}"),
        (host, None) => host.to_owned(),
    }
}

/// Why a request to GitHub failed. `purpose` is what the action was doing,
/// as a verb phrase (`create the repository acme/checkout`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum GithubError {
    #[error(
        "no GitHub token: the environment variable {variable} was not set when the server started, so the action \
         cannot {purpose}"
    )]
    NoToken { variable: String, purpose: String },
    #[error("the token cannot {purpose}: GitHub does not accept it (401 Unauthorized; is it expired or revoked?)")]
    Unauthorized { purpose: String },
    #[error("the token cannot {purpose}: GitHub forbids it (403 Forbidden: {message})")]
    Forbidden { purpose: String, message: String },
    #[error("GitHub's rate limit stopped the request to {purpose}; try again later")]
    RateLimited { purpose: String },
    #[error("GitHub cannot {purpose}: something it names does not exist, or the token cannot see it (404 Not Found)")]
    NotFound { purpose: String },
    #[error("GitHub refused to {purpose} (422 Unprocessable Entity): {message}")]
    Unprocessable { purpose: String, message: String },
    #[error("GitHub is unavailable ({status}) and cannot {purpose} now; try again later")]
    Unavailable { purpose: String, status: u16 },
    #[error("GitHub answered {status} when asked to {purpose}: {message}")]
    Status { purpose: String, status: u16, message: String },
    #[error("GitHub cannot be reached to {purpose}: {message}")]
    Network { purpose: String, message: String },
    #[error("GitHub's answer when asked to {purpose} is not what its API documents: {message}")]
    Response { purpose: String, message: String },
    #[error("the action cannot {purpose}: {reason}")]
    Refused { purpose: String, reason: String },
    #[error("the repository was created at {html_url}, but then {source}")]
    AfterCreation { html_url: String, source: Box<GithubError> },
    #[error("the task was cancelled")]
    Cancelled,
}

impl GithubError {
    /// A 409 from the git data API: the new repository is not ready yet.
    fn is_conflict(&self) -> bool {
        matches!(self, Self::Status { status: 409, .. })
    }

    /// The action's error, its message prefixed with the action's id.
    pub(crate) fn into_action_error(self, action_id: &str) -> ActionError {
        match self {
            Self::Cancelled => ActionError::Cancelled,
            other => ActionError::Failed(format!("{action_id}: {other}")),
        }
    }
}

/// The GitHub client the actions share: the catalog's one GitHub client,
/// and the sentences its answers become.
pub(crate) struct GithubClient {
    /// Retries, backoff and rate limits are its, as for the providers.
    source: HttpSource,
    /// Without a trailing slash.
    api_base_url: String,
    web_host: String,
    /// Whether a token was found; the client sends it.
    has_token: bool,
    token_variable: String,
}

impl GithubClient {
    /// Sends one request and reads GitHub's JSON answer (`null` for an empty
    /// body). The request (with its retries) is abandoned when the task is
    /// cancelled.
    pub(crate) async fn send(
        &self,
        context: &ActionContext,
        method: Method,
        path: &str,
        body: Option<&Value>,
        purpose: &str,
    ) -> Result<Value, GithubError> {
        let purpose = purpose.to_owned();
        if !self.has_token {
            return Err(GithubError::NoToken { variable: self.token_variable.clone(), purpose });
        }
        let url = format!("{}{path}", self.api_base_url);
        let answer = tokio::select! {
            () = context.cancellation().cancelled() => return Err(GithubError::Cancelled),
            answer = self.source.send(method, &url, body) => answer,
        };
        let Answer { status, body, .. } = answer.map_err(|error| unanswered(purpose.clone(), error))?;
        let text = String::from_utf8_lossy(&body);
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|error| GithubError::Response {
                purpose,
                message: format!("the body is not JSON ({error})"),
            });
        }
        let message = github_message(&text);
        // Rate limits never get here: the client waits them out or gives up.
        Err(match status.as_u16() {
            401 => GithubError::Unauthorized { purpose },
            403 => GithubError::Forbidden { purpose, message },
            404 => GithubError::NotFound { purpose },
            422 => GithubError::Unprocessable { purpose, message },
            status @ 500..=599 => GithubError::Unavailable { purpose, status },
            status => GithubError::Status { purpose, status, message },
        })
    }

    /// Like [`send`](Self::send), retrying a 409 a few times: GitHub answers
    /// 409 while a repository it has just created is not ready for the git
    /// data API.
    pub(crate) async fn send_when_ready(
        &self,
        context: &ActionContext,
        method: Method,
        path: &str,
        body: &Value,
        purpose: &str,
    ) -> Result<Value, GithubError> {
        const DELAYS_MILLISECONDS: [u64; 3] = [500, 1_000, 2_000];
        for delay in DELAYS_MILLISECONDS {
            match self.send(context, method.clone(), path, Some(body), purpose).await {
                Err(error) if error.is_conflict() => {
                    tokio::select! {
                        () = context.cancellation().cancelled() => return Err(GithubError::Cancelled),
                        () = tokio::time::sleep(Duration::from_millis(delay)) => {}
                    }
                }
                other => return other,
            }
        }
        self.send(context, method, path, Some(body), purpose).await
    }

    pub(crate) fn web_host(&self) -> &str {
        &self.web_host
    }
}

/// Whether a token can be sent in the `Authorization` header.
fn sendable(token: &Secret) -> bool {
    HeaderValue::from_str(&format!("Bearer {}", token.expose())).is_ok()
}

/// Why the client has no answer to give: rate limited past its wait, GitHub
/// unreachable after its retries, or a request it could not send.
fn unanswered(purpose: String, error: SourceError) -> GithubError {
    match error {
        SourceError::Unavailable { retry_after: Some(_), .. } => GithubError::RateLimited { purpose },
        SourceError::Unavailable { message, retry_after: None } => GithubError::Network { purpose, message },
        SourceError::Unauthorized { .. } => GithubError::Unauthorized { purpose },
        SourceError::NotFound => GithubError::NotFound { purpose },
        error @ (SourceError::Conflict { .. } | SourceError::Invalid { .. }) => {
            GithubError::Response { purpose, message: error.to_string() }
        }
    }
}

/// GitHub's explanation of an error: the `message` of each of `errors[]`
/// (or its field and code), else the top-level `message`.
fn github_message(body: &str) -> String {
    let Ok(json) = serde_json::from_str::<Value>(body) else {
        return "no explanation was given".to_owned();
    };
    let details: Vec<String> = json["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|error| match (error["message"].as_str(), error["field"].as_str(), error["code"].as_str()) {
            (Some(message), _, _) => Some(message.to_owned()),
            (None, Some(field), Some(code)) => Some(format!("{field} {code}")),
            (None, None, Some(code)) => Some(code.to_owned()),
            _ => error.as_str().map(str::to_owned),
        })
        .collect();
    if !details.is_empty() {
        return details.join("; ");
    }
    json["message"].as_str().unwrap_or("no explanation was given").to_owned()
}

/// The owner and repository a `repoUrl` (`github.com?owner=o&repo=r`, the
/// RepoUrlPicker's form, read like the parseRepoUrl filter) names, checked
/// against the configured host and GitHub's naming rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RepoLocation {
    pub(crate) owner: String,
    pub(crate) repo: String,
}

impl RepoLocation {
    pub(crate) fn parse(repo_url: &str, expected_host: &str) -> Result<Self, ActionError> {
        const EXPECTED: &str = "(expected host?owner=o&repo=r)";
        let url = url::Url::parse(&format!("https://{repo_url}"))
            .map_err(|_| ActionError::Input(format!("repoUrl: is not a repository URL {EXPECTED}")))?;
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(ActionError::Input(format!("repoUrl: has no host {EXPECTED}"))),
        };
        if !host.eq_ignore_ascii_case(expected_host) {
            return Err(ActionError::Input(format!(
                "repoUrl: the host {host} is not the GitHub this server publishes to ({expected_host})"
            )));
        }
        let query = |name: &str| {
            url.query_pairs().find(|(key, value)| key == name && !value.is_empty()).map(|(_, value)| value.into_owned())
        };
        let owner = query("owner").ok_or_else(|| ActionError::Input(format!("repoUrl: has no owner {EXPECTED}")))?;
        let repo = query("repo").ok_or_else(|| ActionError::Input(format!("repoUrl: has no repo {EXPECTED}")))?;
        check_account("repoUrl owner", &owner)?;
        check_repository_name("repoUrl repo", &repo)?;
        Ok(Self { owner, repo })
    }

    /// `o/r`, for messages and API paths.
    pub(crate) fn slug(&self) -> String {
        format!("{}/{}", self.owner, self.repo)
    }
}

/// GitHub's rule for user and organisation logins: letters, digits and
/// single hyphens, not at either end, at most 39 characters.
pub(crate) fn check_account(field: &str, login: &str) -> Result<(), ActionError> {
    let valid = !login.is_empty()
        && login.len() <= 39
        && login.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !login.starts_with('-')
        && !login.ends_with('-')
        && !login.contains("--");
    if valid {
        Ok(())
    } else {
        Err(ActionError::Input(format!(
            "{field}: {login:?} is not a GitHub login (letters, digits and single hyphens, at most 39 characters)"
        )))
    }
}

/// GitHub's rule for repository names: letters, digits, `.`, `-` and `_`,
/// at most 100 characters, not `.` or `..`.
pub(crate) fn check_repository_name(field: &str, name: &str) -> Result<(), ActionError> {
    let valid = !name.is_empty()
        && name.len() <= 100
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && name != "."
        && name != "..";
    if valid {
        Ok(())
    } else {
        Err(ActionError::Input(format!(
            "{field}: {name:?} is not a GitHub repository name (letters, digits, `.`, `-` and `_`, at most 100 \
             characters)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(api_base_url: &str) -> String {
        web_host(&url::Url::parse(api_base_url).unwrap())
    }

    #[test]
    fn the_default_configuration_publishes_to_github_com_with_the_github_token_variable() {
        let actions = GithubPublishConfig::default().build_with_environment(|_| None).unwrap();
        assert_eq!(actions.host(), "github.com");
        assert!(!actions.has_token());
        let actions = GithubPublishConfig::default()
            .build_with_environment(|name| (name == "GITHUB_TOKEN").then(|| "ghp_x".to_owned()))
            .unwrap();
        assert!(actions.has_token());
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_a_configuration_problem() {
        let error = GithubPublishConfig::default()
            .build_with_environment(|_| Some("ghp_x\nInjected: header".to_owned()))
            .err()
            .unwrap();
        assert_eq!(error.problems, [GithubConfigProblem::UnusableToken("GITHUB_TOKEN".into())]);
        assert!(!error.to_string().contains("ghp_x"), "{error}");
    }

    #[test]
    fn an_enterprise_api_root_serves_repositories_of_its_own_host() {
        assert_eq!(host_of("https://github.example.com/api/v3"), "github.example.com");
        assert_eq!(host_of("http://127.0.0.1:8080"), "127.0.0.1:8080");
    }

    #[test]
    fn every_configuration_problem_is_reported_with_its_field() {
        let config = GithubPublishConfig {
            api_base_url: "http://github.example.com/api/v3".into(),
            token_variable: " ".into(),
            request_timeout_seconds: 0,
        };
        let error = config.build_with_environment(|_| None).err().unwrap();
        assert_eq!(
            error.problems,
            [
                GithubConfigProblem::InsecureApiBaseUrl,
                GithubConfigProblem::EmptyTokenVariable,
                GithubConfigProblem::ZeroTimeout
            ]
        );
        assert!(error.to_string().contains("token_variable: must name an environment variable"), "{error}");
    }

    #[test]
    fn the_configuration_refuses_unknown_keys() {
        let error = serde_json::from_value::<GithubPublishConfig>(serde_json::json!({"api_base": "x"})).unwrap_err();
        assert!(error.to_string().contains("unknown field `api_base`"), "{error}");
        let partial: GithubPublishConfig =
            serde_json::from_value(serde_json::json!({"request_timeout_seconds": 5})).unwrap();
        assert_eq!(partial.api_base_url, "https://api.github.com");
    }

    #[test]
    fn a_repo_url_names_owner_and_repository_on_the_configured_host() {
        let location = RepoLocation::parse("github.com?owner=acme&repo=checkout", "github.com").unwrap();
        assert_eq!(location.slug(), "acme/checkout");
    }

    #[test]
    fn a_repo_url_for_another_host_is_refused() {
        let error = RepoLocation::parse("gitlab.com?owner=acme&repo=checkout", "github.com").unwrap_err();
        assert_eq!(
            error.to_string(),
            "the input is not valid: repoUrl: the host gitlab.com is not the GitHub this server publishes to \
             (github.com)"
        );
    }

    #[test]
    fn a_repo_url_whose_parts_could_change_the_api_path_is_refused() {
        for repo_url in
            ["github.com?owner=acme&repo=..", "github.com?owner=../orgs&repo=x", "github.com?owner=a&repo=x/y"]
        {
            let error = RepoLocation::parse(repo_url, "github.com").unwrap_err();
            assert!(error.to_string().contains("is not a GitHub"), "{repo_url}: {error}");
        }
        let error = RepoLocation::parse("github.com?repo=x", "github.com").unwrap_err();
        assert!(error.to_string().contains("repoUrl: has no owner"), "{error}");
    }

    #[test]
    fn githubs_error_details_are_preferred_to_its_summary() {
        let body = r#"{"message":"Repository creation failed.","errors":[{"resource":"Repository","code":"custom","field":"name","message":"name already exists on this account"}]}"#;
        assert_eq!(github_message(body), "name already exists on this account");
        let body =
            r#"{"message":"Validation Failed","errors":[{"resource":"Hook","code":"missing_field","field":"url"}]}"#;
        assert_eq!(github_message(body), "url missing_field");
        assert_eq!(github_message(r#"{"message":"Bad credentials"}"#), "Bad credentials");
        assert_eq!(github_message("<html>"), "no explanation was given");
    }
}
