//! OIDC/JWT bearer tokens: signatures checked against the identity provider's
//! JWKS, with the issuer, audience, expiry and not-before checked and the
//! algorithms pinned by configuration (never `none`, never an HMAC algorithm,
//! whose "secret" would be the public key). Keys are cached, refreshed when
//! the cache is older than its TTL and when a token names an unknown key id,
//! at most once per cooldown, so a flood of made-up key ids cannot turn into
//! a flood of JWKS requests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::auth::identity::{AuthError, Permission, Principal};

/// The `auth.jwt` configuration section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// An `aud` every token must carry.
    pub audience: String,
    /// Where the identity provider publishes its signing keys.
    pub jwks_url: String,
    /// Accepted signing algorithms: RS256, RS384, RS512, PS256, PS384,
    /// PS512, ES256, ES384 or EdDSA.
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_seconds: u64,
    /// How long fetched keys are used before they are fetched again.
    pub jwks_cache_seconds: u64,
    /// The least time between two fetches triggered by unknown key ids.
    pub jwks_refresh_cooldown_seconds: u64,
    /// Permissions every valid token holds (until the policy file maps
    /// claims to permissions).
    pub permissions: Vec<String>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: String::new(),
            jwks_url: String::new(),
            algorithms: vec!["RS256".into()],
            leeway_seconds: 30,
            jwks_cache_seconds: 300,
            jwks_refresh_cooldown_seconds: 30,
            permissions: vec![Permission::EntityRead.name().into()],
        }
    }
}

impl JwtConfig {
    /// Whether JWT authentication is configured at all.
    pub fn enabled(&self) -> bool {
        !self.jwks_url.is_empty()
    }
}

/// Why a JWT configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("auth.jwt: {0}")]
pub struct JwtConfigError(String);

fn parse_algorithm(name: &str) -> Result<Algorithm, JwtConfigError> {
    let algorithm = match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        "HS256" | "HS384" | "HS512" => {
            return Err(JwtConfigError(format!(
                "{name} is refused: with a JWKS the HMAC secret would be a public key anyone can read"
            )));
        }
        other => return Err(JwtConfigError(format!("unknown algorithm {other:?}"))),
    };
    Ok(algorithm)
}

/// The claims the catalog reads.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    #[serde(default)]
    groups: Vec<String>,
}

struct KeyCache {
    keys: HashMap<String, (DecodingKey, Option<Algorithm>)>,
    fetched_at: Option<Instant>,
    last_unknown_kid_fetch: Option<Instant>,
    /// When a fetch last failed: no other is tried within the cooldown, so
    /// an unreachable provider costs one timeout per cooldown, not one per
    /// request (the keys already known keep working meanwhile).
    failed_at: Option<Instant>,
}

/// Verifies JWTs against a JWKS.
pub struct JwtVerifier {
    config: JwtConfig,
    algorithms: Vec<Algorithm>,
    permissions: Vec<Permission>,
    client: reqwest::Client,
    cache: Mutex<KeyCache>,
}

impl JwtVerifier {
    pub fn new(config: JwtConfig) -> Result<Self, JwtConfigError> {
        for (key, value) in [("issuer", &config.issuer), ("audience", &config.audience)] {
            if value.is_empty() {
                return Err(JwtConfigError(format!("{key} must be set when jwks_url is")));
            }
        }
        let algorithms = config.algorithms.iter().map(|name| parse_algorithm(name)).collect::<Result<Vec<_>, _>>()?;
        if algorithms.is_empty() {
            return Err(JwtConfigError("algorithms must name at least one algorithm".into()));
        }
        let permissions = config
            .permissions
            .iter()
            .map(|name| Permission::parse(name).ok_or_else(|| JwtConfigError(format!("unknown permission {name:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| JwtConfigError(format!("cannot build the JWKS client: {error}")))?;
        let cache = KeyCache { keys: HashMap::new(), fetched_at: None, last_unknown_kid_fetch: None, failed_at: None };
        Ok(Self { config, algorithms, permissions, client, cache: Mutex::new(cache) })
    }

    /// The principal a valid token stands for.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        // An unparsable header (including `alg: none`, which the library
        // does not even represent) is simply not a valid token.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthError::Invalid);
        }
        let kid = header.kid.ok_or(AuthError::Invalid)?;
        let (key, key_algorithm) = self.key(&kid).await?;
        if key_algorithm.is_some_and(|algorithm| algorithm != header.alg) {
            return Err(AuthError::Invalid);
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.config.leeway_seconds;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|error| match error.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid,
        })?;
        let claims = data.claims;
        Ok(Principal::Jwt {
            subject: claims.sub,
            groups: claims.groups,
            scopes: self.permissions.clone(),
            expires_at: DateTime::<Utc>::from_timestamp(claims.exp, 0),
        })
    }

    /// The key named `kid`: from the cache while it is fresh, otherwise
    /// fetched; an unknown kid fetches again at most once per cooldown.
    async fn key(&self, kid: &str) -> Result<(DecodingKey, Option<Algorithm>), AuthError> {
        let mut cache = self.cache.lock().await;
        let ttl = Duration::from_secs(self.config.jwks_cache_seconds);
        let cooldown = Duration::from_secs(self.config.jwks_refresh_cooldown_seconds);
        let failed_recently = cache.failed_at.is_some_and(|failed_at| failed_at.elapsed() < cooldown);
        let stale = !failed_recently && cache.fetched_at.is_none_or(|fetched_at| fetched_at.elapsed() >= ttl);
        if stale {
            self.refresh(&mut cache).await;
        }
        if let Some(key) = cache.keys.get(kid) {
            return Ok(key.clone());
        }
        let may_refetch =
            !failed_recently && cache.last_unknown_kid_fetch.is_none_or(|last| last.elapsed() >= cooldown);
        if stale || !may_refetch {
            return Err(AuthError::Invalid);
        }
        cache.last_unknown_kid_fetch = Some(Instant::now());
        self.refresh(&mut cache).await;
        cache.keys.get(kid).cloned().ok_or(AuthError::Invalid)
    }

    /// Fetches the JWKS; on failure the keys already known stay in use.
    async fn refresh(&self, cache: &mut KeyCache) {
        match self.fetch().await {
            Ok(keys) => {
                cache.keys = keys;
                cache.fetched_at = Some(Instant::now());
                cache.failed_at = None;
            }
            Err(message) => {
                tracing::warn!(url = %self.config.jwks_url, error = %message, "cannot fetch the JWKS");
                cache.failed_at = Some(Instant::now());
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, (DecodingKey, Option<Algorithm>)>, JwksError> {
        let response = self.client.get(&self.config.jwks_url).send().await?;
        if !response.status().is_success() {
            return Err(JwksError::Status(response.status()));
        }
        let set: JwkSet = response.json().await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            let Ok(key) = DecodingKey::from_jwk(jwk) else { continue };
            let algorithm =
                jwk.common.key_algorithm.and_then(|algorithm| parse_algorithm(&format!("{algorithm:?}")).ok());
            keys.insert(kid, (key, algorithm));
        }
        Ok(keys)
    }
}

/// Why the JWKS could not be read.
#[derive(Debug, thiserror::Error)]
enum JwksError {
    #[error(transparent)]
    Request(#[from] reqwest::Error),
    #[error("status {0}")]
    Status(reqwest::StatusCode),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_and_unknown_algorithms_are_refused_in_the_configuration() {
        let config = |algorithms: &[&str]| JwtConfig {
            issuer: "https://idp".into(),
            audience: "catalog".into(),
            jwks_url: "http://127.0.0.1:1/jwks".into(),
            algorithms: algorithms.iter().map(|name| (*name).to_owned()).collect(),
            ..JwtConfig::default()
        };
        let error = JwtVerifier::new(config(&["RS256", "HS256"])).err().unwrap().to_string();
        assert!(error.contains("HS256") && error.contains("public key"), "{error}");
        assert!(JwtVerifier::new(config(&["none"])).is_err());
        assert!(JwtVerifier::new(config(&[])).is_err());
        assert!(JwtVerifier::new(config(&["ES256", "RS256"])).is_ok());
        let no_audience = JwtConfig { audience: String::new(), ..config(&["RS256"]) };
        assert!(JwtVerifier::new(no_audience).err().unwrap().to_string().contains("audience"));
    }
}
