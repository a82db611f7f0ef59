//! GitHub's REST API on the pull loop: its media type, version and user
//! agent, and how a client authenticates (a token from the environment, or
//! a GitHub App's installation tokens, `app.rs`). The one GitHub client: the
//! ingestion providers read through it and the scaffolder's actions write
//! through it, with the same retries and rate-limit handling.

mod app;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, USER_AGENT};
use serde::{Deserialize, Serialize};

pub use self::app::KeyError;
use self::app::{AppTokens, private_key};
use crate::pull::{HttpSource, RetryPolicy};

/// Where GitHub's REST API is and how to authenticate to it: the keys every
/// GitHub provider's configuration shares (flattened into each, so they sit
/// beside the provider's own keys). Unknown keys are the enclosing
/// configuration's to refuse.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct GithubAuthConfig {
    /// The REST API's root: `https://api.github.com`, or GitHub Enterprise's
    /// `https://HOST/api/v3`.
    pub api_base_url: String,
    /// The environment variable holding the token (a personal access token
    /// or an installation token); unset: unauthenticated (60 requests an hour).
    pub token_variable: String,
    /// A GitHub App to authenticate as instead (0: none): its installation
    /// tokens are bought with the private key and renewed before they expire.
    pub app_id: u64,
    pub app_installation_id: u64,
    /// The environment variable holding the app's private key (PEM).
    pub app_private_key_variable: String,
    /// A file holding the app's private key instead (a mounted secret).
    pub app_private_key_file: String,
}

impl Default for GithubAuthConfig {
    fn default() -> Self {
        Self {
            api_base_url: "https://api.github.com".into(),
            token_variable: "GITHUB_TOKEN".into(),
            app_id: 0,
            app_installation_id: 0,
            app_private_key_variable: "GITHUB_APP_PRIVATE_KEY".into(),
            app_private_key_file: String::new(),
        }
    }
}

/// Why a GitHub client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum GithubAuthError {
    #[error("the token in {0} is not a valid header value")]
    Token(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("GitHub App: {0}")]
    App(#[from] AppError),
}

/// Why a GitHub App's credentials cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("app_installation_id must be set with app_id")]
    NoInstallation,
    #[error("the private key variable {0} is not set")]
    KeyVariableUnset(String),
    #[error("cannot read the private key file {file}: {source}")]
    KeyFile { file: String, source: std::io::Error },
    /// `origin`: the variable or file the key came from.
    #[error("{origin}: {source}")]
    Key { origin: String, source: KeyError },
}

impl GithubAuthConfig {
    /// A client for GitHub's REST API that authenticates as the GitHub App
    /// when `app_id` is set, otherwise with the token in `token_variable`
    /// when that is set, reading both from the process's environment.
    pub fn source(&self, timeout_seconds: u64, policy: RetryPolicy) -> Result<HttpSource, GithubAuthError> {
        self.source_with_environment(timeout_seconds, policy, |name| std::env::var(name).ok())
    }

    /// [`source`](Self::source) with the environment given as a lookup
    /// (tests cannot set process variables safely).
    pub fn source_with_environment(
        &self,
        timeout_seconds: u64,
        policy: RetryPolicy,
        environment: impl Fn(&str) -> Option<String>,
    ) -> Result<HttpSource, GithubAuthError> {
        let timeout = Duration::from_secs(timeout_seconds.max(1));
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/vnd.github+json"));
        headers.insert("x-github-api-version", HeaderValue::from_static("2022-11-28"));
        // GitHub refuses requests without a user agent.
        headers.insert(USER_AGENT, HeaderValue::from_static("backstage-catalog-graphql"));
        if self.app_id != 0 {
            let tokens = self.app_tokens(timeout, &environment)?;
            return Ok(HttpSource::new(headers, timeout, policy)?.with_tokens(Arc::new(tokens)));
        }
        if let Some(token) = environment(&self.token_variable)
            && !token.is_empty()
        {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| GithubAuthError::Token(self.token_variable.clone()))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        Ok(HttpSource::new(headers, timeout, policy)?)
    }

    /// The GitHub App's installation tokens. Reads the private key (PEM,
    /// PKCS#1 as GitHub issues it, or PKCS#8) from `app_private_key_file`
    /// when set (a mounted secret), else from the environment variable
    /// `app_private_key_variable`.
    fn app_tokens(
        &self,
        timeout: Duration,
        environment: impl Fn(&str) -> Option<String>,
    ) -> Result<AppTokens, GithubAuthError> {
        if self.app_installation_id == 0 {
            return Err(AppError::NoInstallation.into());
        }
        let (pem, origin) = if self.app_private_key_file.is_empty() {
            let variable = &self.app_private_key_variable;
            let pem = environment(variable).filter(|pem| !pem.trim().is_empty());
            (pem.ok_or_else(|| AppError::KeyVariableUnset(variable.clone()))?, variable)
        } else {
            let file = &self.app_private_key_file;
            let pem =
                std::fs::read_to_string(file).map_err(|source| AppError::KeyFile { file: file.clone(), source })?;
            (pem, file)
        };
        let key = private_key(&pem).map_err(|source| AppError::Key { origin: origin.clone(), source })?;
        let client = reqwest::Client::builder().timeout(timeout).redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(AppTokens::new(self.app_id, self.app_installation_id, key, &self.api_base_url, client))
    }
}
