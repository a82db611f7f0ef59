//! GitHub App authentication: a GitHub App's installation token instead of
//! a personal token (higher rate limits, no person's account behind it).
//! The app's private key signs a short JWT (RS256) that buys an installation
//! token from `POST /app/installations/{id}/access_tokens`; the token is
//! kept until shortly before it expires and bought again then, or at once
//! after GitHub refused it.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, USER_AGENT};
use ring::signature::RsaKeyPair;
use serde::Deserialize;

use crate::pull::{SourceError, TokenSource};

/// How long before its expiry a token is replaced: a request started with it
/// must not be refused halfway through a run.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// The JWT's lifetime; GitHub accepts at most ten minutes.
const JWT_LIFETIME_SECONDS: i64 = 540;

/// A GitHub App installation's credentials and its current token.
pub(super) struct AppTokens {
    app_id: u64,
    key: RsaKeyPair,
    token_url: String,
    client: reqwest::Client,
    current: tokio::sync::Mutex<Option<(String, DateTime<Utc>)>>,
}

/// `POST /app/installations/{id}/access_tokens`'s answer (the fields used).
#[derive(Deserialize)]
struct AccessToken {
    token: String,
    expires_at: DateTime<Utc>,
}

/// Why a PEM block is not a usable private key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("bad base64: {0}")]
    Base64(base64::DecodeError),
    #[error("not an RSA private key: {0}")]
    NotRsa(ring::error::KeyRejected),
    #[error("not a PEM private key (-----BEGIN RSA PRIVATE KEY----- or -----BEGIN PRIVATE KEY-----)")]
    NotPem,
}

impl AppTokens {
    /// Tokens of the installation `installation_id` of the app `app_id`,
    /// bought from the API at `api_base_url` through `client`.
    pub(super) fn new(
        app_id: u64,
        installation_id: u64,
        key: RsaKeyPair,
        api_base_url: &str,
        client: reqwest::Client,
    ) -> Self {
        let base = api_base_url.trim_end_matches('/');
        Self {
            app_id,
            key,
            token_url: format!("{base}/app/installations/{installation_id}/access_tokens"),
            client,
            current: tokio::sync::Mutex::default(),
        }
    }

    /// The JWT that authenticates as the app itself, issued a minute early
    /// for clock drift, as GitHub advises.
    fn jwt(&self, now: DateTime<Utc>) -> Result<String, SourceError> {
        let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header = encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let issued = now.timestamp() - 60;
        let claims =
            serde_json::json!({"iat": issued, "exp": issued + JWT_LIFETIME_SECONDS, "iss": self.app_id.to_string()});
        let message = format!("{header}.{}", encode(claims.to_string().as_bytes()));
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                message.as_bytes(),
                &mut signature,
            )
            .map_err(|_| SourceError::Unauthorized { message: "the GitHub App key cannot sign".into() })?;
        Ok(format!("{message}.{}", encode(&signature)))
    }

    async fn buy(&self) -> Result<AccessToken, SourceError> {
        let url = &self.token_url;
        let jwt = self.jwt(Utc::now())?;
        let mut trace = reqwest::header::HeaderMap::new();
        crate::trace::inject(&mut trace);
        let response = self
            .client
            .post(url)
            .headers(trace)
            .header(AUTHORIZATION, {
                let mut value = HeaderValue::from_str(&format!("Bearer {jwt}")).expect("a JWT is ASCII");
                value.set_sensitive(true);
                value
            })
            .header(ACCEPT, "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header(USER_AGENT, "backstage-catalog-graphql")
            .send()
            .await
            .map_err(|error| SourceError::Unavailable { message: format!("{url}: {error}"), retry_after: None })?;
        let status = response.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(SourceError::Unavailable { message: format!("{url}: {status}"), retry_after: None });
        }
        if !status.is_success() {
            // 401: a wrong key or app id; 404: no such installation. Neither
            // mends itself, so the run keeps its entities and says why.
            return Err(SourceError::Unauthorized {
                message: format!("{url}: {status}: the GitHub App (app_id {}) cannot get a token", self.app_id),
            });
        }
        response
            .json::<AccessToken>()
            .await
            .map_err(|error| SourceError::Invalid { message: format!("{url}: {error}") })
    }
}

impl TokenSource for AppTokens {
    fn token(&self) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async move {
            let mut current = self.current.lock().await;
            if let Some((token, expires_at)) = current.as_ref()
                && Utc::now() + RENEW_BEFORE < *expires_at
            {
                return Ok(token.clone());
            }
            let bought = self.buy().await?;
            tracing::debug!(app_id = self.app_id, expires_at = %bought.expires_at, "GitHub App installation token bought");
            *current = Some((bought.token.clone(), bought.expires_at));
            Ok(bought.token)
        })
    }

    fn refused(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            *self.current.lock().await = None;
        })
    }
}

/// The RSA key of a PEM block: `RSA PRIVATE KEY` (PKCS#1, what GitHub's
/// download holds) or `PRIVATE KEY` (PKCS#8).
pub(super) fn private_key(pem: &str) -> Result<RsaKeyPair, KeyError> {
    let body = |label: &str| {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let start = pem.find(&begin)? + begin.len();
        let stop = start + pem[start..].find(&end)?;
        let packed: String = pem[start..stop].chars().filter(|character| !character.is_whitespace()).collect();
        Some(base64::engine::general_purpose::STANDARD.decode(packed).map_err(KeyError::Base64))
    };
    if let Some(der) = body("RSA PRIVATE KEY") {
        RsaKeyPair::from_der(&der?).map_err(KeyError::NotRsa)
    } else if let Some(der) = body("PRIVATE KEY") {
        RsaKeyPair::from_pkcs8(&der?).map_err(KeyError::NotRsa)
    } else {
        Err(KeyError::NotPem)
    }
}
