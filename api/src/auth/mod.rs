//! Who is calling: API tokens (issued by `catalog token create`, stored as a
//! hash), OIDC/JWT bearer tokens (`jwt.rs`), permissions in the spirit of Backstage's permission framework, and
//! the anonymous-read switch. HTTP and WebSocket authenticate through the same
//! [`Authenticator`].

pub mod identity;
pub mod jwt;
pub mod policy;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use catalog_store::{AccessStore, AuditDecision, AuditEntry, NewToken, StoreError, TokenRecord};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::identity::{AuthError, Permission, Principal};
use crate::auth::jwt::{JwtConfigError, JwtVerifier};
use crate::auth::policy::{Policy, PolicyError};

/// The `auth` section of the configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Whether requests without credentials may read the catalog. Requests
    /// with a wrong token are refused either way.
    pub anonymous_read: bool,
    /// OIDC/JWT bearer tokens; off while `jwks_url` is empty.
    pub jwt: crate::auth::jwt::JwtConfig,
    /// Rules granting permissions to principals, with conditions on what
    /// they may read. Empty: token scopes alone decide.
    pub policy: Vec<crate::auth::policy::PolicyRule>,
    /// How long a looked-up API token is trusted before it is read again,
    /// and how often an open WebSocket's credentials (and read scope) are
    /// checked again. Revocation reaches requests within this time and open
    /// sockets within twice it; shorter costs more token reads.
    pub recheck_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            anonymous_read: true,
            jwt: crate::auth::jwt::JwtConfig::default(),
            policy: Vec::new(),
            recheck_seconds: 10,
        }
    }
}

/// The prefix of every catalog token, so that secret scanners can find leaked ones.
const TOKEN_PREFIX: &str = "ctk_";

/// A new token: the text to hand out once, and the record to store.
pub struct IssuedToken {
    pub token: String,
    pub record: TokenRecord,
}

/// Creates and stores a token named `name` (the CLI's `token create`).
pub async fn issue_token(
    store: &AccessStore,
    name: &str,
    scopes: &[Permission],
    expires_at: Option<DateTime<Utc>>,
    actor: &str,
) -> Result<IssuedToken, StoreError> {
    let public_id = hex(&random_bytes::<8>());
    let secret = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let record = store
        .create_token(
            NewToken {
                name: name.to_owned(),
                public_id: public_id.clone(),
                secret_hash: secret_hash(&secret),
                scopes: scopes.iter().map(|scope| scope.name().to_owned()).collect(),
                expires_at,
            },
            actor,
        )
        .await?;
    Ok(IssuedToken { token: format!("{TOKEN_PREFIX}{public_id}_{secret}"), record })
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random generator works");
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// SHA-256 suffices: the secret is 256 random bits, not a password to stretch.
fn secret_hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// The public id and the secret of a token's text.
fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (public_id, secret) = rest.split_once('_')?;
    let well_formed = public_id.len() == 16 && public_id.bytes().all(|byte| byte.is_ascii_hexdigit());
    (well_formed && !secret.is_empty()).then_some((public_id, secret))
}

/// Cached lookups (including unknown ids) before the cache is emptied.
const CACHE_CAPACITY: usize = 10_000;
/// `last_used_at` is written at most this often per token.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// A principal, the entities it may read (`None`: all of them) and the
/// permissions it holds.
#[derive(Clone, Debug)]
pub struct Access {
    pub principal: Principal,
    pub read_filter: Option<catalog_store::Filter>,
    pub granted: Vec<Permission>,
    /// The templates and actions it may run (template.execute).
    pub templates: crate::auth::policy::TemplateGrants,
}

/// The permissions a request's principal holds, and the templates and
/// actions a policy lets it run, in its request data.
#[derive(Clone, Debug, Default)]
pub struct Granted(pub Vec<Permission>, pub crate::auth::policy::TemplateGrants);

/// The window over which refusals written to the audit log are counted.
const DENIAL_WINDOW: Duration = Duration::from_secs(10);
/// Refusals written per window; the rest are counted in the log only.
const DENIALS_PER_WINDOW: u32 = 100;

/// Why the `auth` configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error(transparent)]
    Jwt(#[from] JwtConfigError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Writes refusals to the audit log, in the background and at most
/// `DENIALS_PER_WINDOW` per window, so that a flood of refused requests
/// cannot turn into a flood of writes.
pub struct RefusalLog {
    store: AccessStore,
    window: Mutex<(Instant, u32)>,
}

impl RefusalLog {
    pub fn record(&self, entry: AuditEntry) {
        {
            let mut window = self.window.lock();
            if window.0.elapsed() >= DENIAL_WINDOW {
                if window.1 > DENIALS_PER_WINDOW {
                    tracing::warn!(dropped = window.1 - DENIALS_PER_WINDOW, "refusals not written to the audit log");
                }
                *window = (Instant::now(), 0);
            }
            window.1 += 1;
            if window.1 > DENIALS_PER_WINDOW {
                return;
            }
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(error) = store.record_audit(&entry).await {
                tracing::warn!(error = %error, "could not write a refusal to the audit log");
            }
        });
    }
}

/// Checks credentials against the stored tokens.
pub struct Authenticator {
    store: AccessStore,
    anonymous_read: bool,
    jwt: Option<JwtVerifier>,
    policy: Policy,
    refusals: Arc<RefusalLog>,
    /// How long a looked-up token record is reused (`auth.recheck_seconds`):
    /// revocation takes effect within this time, and a request with a token
    /// costs no statement most of the time.
    recheck: Duration,
    cache: Mutex<HashMap<String, (Instant, Option<TokenRecord>)>>,
    touched: Mutex<HashMap<i64, Instant>>,
}

impl Authenticator {
    pub fn new(store: AccessStore, config: &AuthConfig) -> Result<Self, AuthConfigError> {
        let jwt = config.jwt.enabled().then(|| JwtVerifier::new(config.jwt.clone())).transpose()?;
        Ok(Self {
            store: store.clone(),
            anonymous_read: config.anonymous_read,
            jwt,
            policy: Policy::new(&config.policy)?,
            refusals: Arc::new(RefusalLog { store, window: Mutex::new((Instant::now(), 0)) }),
            recheck: Duration::from_secs(config.recheck_seconds.max(1)),
            cache: Mutex::default(),
            touched: Mutex::default(),
        })
    }

    /// The principal for an `Authorization` header value (or its absence),
    /// allowed to read the catalog, with what it may read. A wrong token is
    /// refused even when anonymous reads are on: it never silently becomes
    /// anonymous.
    /// A refusal is written to the audit log (naming the principal when the
    /// credentials were valid, never the credentials themselves).
    pub async fn authenticate_reader(
        &self,
        authorization: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<Access, AuthError> {
        self.reader_access(authorization).await.map_err(|(error, who)| {
            self.record_denial(who, &error, request_id);
            error
        })
    }

    async fn reader_access(&self, authorization: Option<&str>) -> Result<Access, (AuthError, String)> {
        let principal = match authorization {
            None => Principal::Anonymous,
            Some(value) => {
                let unknown = |error| (error, "unknown".to_owned());
                let token = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .ok_or(AuthError::NotBearer)
                    .map_err(unknown)?;
                self.token_principal(token.trim()).await.map_err(unknown)?
            }
        };
        let granted: Vec<Permission> = Permission::ALL
            .into_iter()
            .filter(|permission| principal.holds(*permission, self.anonymous_read))
            // With a policy, a rule must grant the permission as well as the scopes.
            .filter(|permission| self.policy.is_empty() || self.policy.grants(&principal, *permission))
            .collect();
        if !granted.contains(&Permission::EntityRead) && !granted.contains(&Permission::Admin) {
            let error = match principal {
                Principal::Anonymous => AuthError::Missing,
                _ => AuthError::Forbidden(Permission::EntityRead.name()),
            };
            return Err((error, principal.label()));
        }
        let read_filter = if self.policy.is_empty() { None } else { self.policy.read_filter(&principal) };
        let templates = if self.policy.is_empty() {
            crate::auth::policy::TemplateGrants(None)
        } else {
            self.policy.template_grants(&principal)
        };
        Ok(Access { principal, read_filter, granted, templates })
    }

    /// Writes a refusal to the audit log off the request path, at most
    /// [`DENIALS_PER_WINDOW`] per window so that a flood of bad requests
    /// cannot turn into a flood of writes.
    fn record_denial(&self, who: String, error: &AuthError, request_id: Option<&str>) {
        self.refusals.record(AuditEntry {
            principal: who,
            token_id: None,
            operation: "request".into(),
            targets: Vec::new(),
            decision: AuditDecision::Denied,
            result: error.to_string(),
            request_id: request_id.map(str::to_owned),
        });
    }

    /// How often an open WebSocket's credentials are checked again.
    pub fn recheck_interval(&self) -> Duration {
        self.recheck
    }

    /// Where refusals go, shared with the schema's permission guards.
    pub fn refusals(&self) -> Arc<RefusalLog> {
        self.refusals.clone()
    }

    /// An API token (`ctk_...`) or, when configured, a JWT.
    async fn token_principal(&self, token: &str) -> Result<Principal, AuthError> {
        if !token.starts_with(TOKEN_PREFIX)
            && let Some(jwt) = &self.jwt
        {
            return jwt.verify(token).await;
        }
        let (public_id, secret) = split_token(token).ok_or(AuthError::Invalid)?;
        let record = self.record(public_id).await?.ok_or(AuthError::Invalid)?;
        let matches: bool = secret_hash(secret).as_bytes().ct_eq(record.secret_hash.as_bytes()).into();
        if !matches {
            return Err(AuthError::Invalid);
        }
        if record.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        let now = Utc::now();
        if record.expires_at.is_some_and(|expires_at| expires_at <= now) {
            return Err(AuthError::Expired);
        }
        self.touch(record.id, now);
        Ok(Principal::Token {
            id: record.id,
            name: record.name,
            scopes: record.scopes.iter().filter_map(|scope| Permission::parse(scope)).collect(),
            expires_at: record.expires_at,
        })
    }

    async fn record(&self, public_id: &str) -> Result<Option<TokenRecord>, AuthError> {
        {
            let cache = self.cache.lock();
            if let Some((fetched, record)) = cache.get(public_id)
                && fetched.elapsed() < self.recheck
            {
                return Ok(record.clone());
            }
        }
        let record = self.store.token_by_public_id(public_id).await.map_err(|error| {
            tracing::error!(error = %error, "token lookup failed");
            AuthError::Unavailable
        })?;
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(public_id.to_owned(), (Instant::now(), record.clone()));
        Ok(record)
    }

    /// Records the use in the background, at most once a minute per token.
    fn touch(&self, id: i64, now: DateTime<Utc>) {
        {
            let mut touched = self.touched.lock();
            if touched.get(&id).is_some_and(|last| last.elapsed() < TOUCH_INTERVAL) {
                return;
            }
            touched.insert(id, Instant::now());
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(error) = store.touch_token(id, now).await {
                tracing::warn!(error = %error, "could not record a token's last use");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::identity::parse_scopes;

    #[test]
    fn scopes_are_checked_against_the_known_permissions() {
        assert_eq!(parse_scopes("entity.read, admin,entity.read"), Ok(vec![Permission::EntityRead, Permission::Admin]));
        let error = parse_scopes("entity.read,entity.write").unwrap_err().to_string();
        assert!(error.contains("entity.write") && error.contains("template.execute"), "{error}");
        assert!(parse_scopes(" , ").is_err());
    }

    #[test]
    fn token_text_splits_into_public_id_and_secret() {
        assert_eq!(split_token("ctk_0123456789abcdef_s3cr3t"), Some(("0123456789abcdef", "s3cr3t")));
        assert_eq!(split_token("ctk_0123456789abcdeg_s3cr3t"), None, "not hex");
        assert_eq!(split_token("ctk_0123_s3cr3t"), None, "too short");
        assert_eq!(split_token("ghp_0123456789abcdef_s3cr3t"), None, "another prefix");
        assert_eq!(split_token("ctk_0123456789abcdef_"), None, "no secret");
    }

    #[test]
    fn admin_holds_every_permission_and_anonymous_only_reads_when_allowed() {
        let admin = Principal::Token { id: 1, name: "a".into(), scopes: vec![Permission::Admin], expires_at: None };
        assert!(Permission::ALL.iter().all(|permission| admin.holds(*permission, false)));
        assert!(Principal::Anonymous.holds(Permission::EntityRead, true));
        assert!(!Principal::Anonymous.holds(Permission::EntityRead, false));
        assert!(!Principal::Anonymous.holds(Permission::EntityRefresh, true));
    }
}
