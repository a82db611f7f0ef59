//! Who a request runs as and what it may do: the `Principal`, its
//! `Permission`s, and why credentials were refused (`AuthError`). Shared by
//! the authenticator (`auth/mod.rs`), JWT verification (`jwt.rs`) and policies
//! (`policy.rs`), which is why it is a module of its own: none of them needs
//! another to name a principal.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};

use crate::error_code::{ClientError, ErrorCode};

/// What a principal may do. Names as Backstage's permission framework spells
/// them, so that policies read alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    EntityRead,
    EntityRefresh,
    EntityDelete,
    LocationCreate,
    LocationDelete,
    TemplateExecute,
    /// Approving and rejecting entities an admission policy holds for review.
    EntityApprove,
    /// Every permission.
    Admin,
}

impl Permission {
    pub const ALL: [Permission; 8] = [
        Permission::EntityRead,
        Permission::EntityRefresh,
        Permission::EntityDelete,
        Permission::LocationCreate,
        Permission::LocationDelete,
        Permission::TemplateExecute,
        Permission::EntityApprove,
        Permission::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Permission::EntityRead => "entity.read",
            Permission::EntityRefresh => "entity.refresh",
            Permission::EntityDelete => "entity.delete",
            Permission::LocationCreate => "location.create",
            Permission::LocationDelete => "location.delete",
            Permission::TemplateExecute => "template.execute",
            Permission::EntityApprove => "entity.approve",
            Permission::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|permission| permission.name() == name)
    }
}

/// Why a token's scopes were refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("unknown scope {name:?}: use {known}")]
    Unknown { name: String, known: String },
    #[error("a token needs at least one scope")]
    Empty,
}

/// Scopes as given on the command line, checked against the known permissions.
pub fn parse_scopes(text: &str) -> Result<Vec<Permission>, ScopeError> {
    let mut scopes = Vec::new();
    for name in text.split(',').map(str::trim).filter(|name| !name.is_empty()) {
        let permission = Permission::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Permission::ALL.iter().map(|permission| permission.name()).collect();
            ScopeError::Unknown { name: name.to_owned(), known: known.join(", ") }
        })?;
        if !scopes.contains(&permission) {
            scopes.push(permission);
        }
    }
    if scopes.is_empty() {
        return Err(ScopeError::Empty);
    }
    Ok(scopes)
}

/// Who a request runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    /// An API token issued by `catalog token create`.
    Token {
        id: i64,
        name: String,
        scopes: Vec<Permission>,
        expires_at: Option<DateTime<Utc>>,
    },
    /// A JWT from the configured identity provider; `groups` from its claim
    /// of that name, for the policy file to come.
    Jwt {
        subject: String,
        groups: Vec<String>,
        scopes: Vec<Permission>,
        expires_at: Option<DateTime<Utc>>,
    },
}

impl Principal {
    /// Whether the principal holds `permission` (anonymous callers hold
    /// `entity.read` when anonymous reads are on).
    pub fn holds(&self, permission: Permission, anonymous_read: bool) -> bool {
        match self {
            Principal::Anonymous => anonymous_read && permission == Permission::EntityRead,
            Principal::Token { scopes, .. } | Principal::Jwt { scopes, .. } => {
                scopes.contains(&Permission::Admin) || scopes.contains(&permission)
            }
        }
    }

    /// How the audit log names the principal (never its credentials).
    /// The stored token's id, for the audit log.
    pub fn token_id(&self) -> Option<i64> {
        match self {
            Principal::Token { id, .. } => Some(*id),
            Principal::Anonymous | Principal::Jwt { .. } => None,
        }
    }

    pub fn label(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::Token { name, .. } => format!("token:{name}"),
            Principal::Jwt { subject, .. } => format!("sub:{subject}"),
        }
    }

    /// When the credentials stop being valid.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Principal::Anonymous => None,
            Principal::Token { expires_at, .. } | Principal::Jwt { expires_at, .. } => *expires_at,
        }
    }
}

/// Why credentials were refused. The message is safe to show.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this catalog needs credentials: send Authorization: Bearer <token>")]
    Missing,
    #[error("the Authorization header must be \"Bearer <token>\"")]
    NotBearer,
    #[error("the token is not valid")]
    Invalid,
    #[error("the token was revoked")]
    Revoked,
    #[error("the token expired")]
    Expired,
    #[error("the token lacks the {0} scope")]
    Forbidden(&'static str),
    #[error("credentials could not be checked")]
    Unavailable,
}

impl ClientError for AuthError {
    fn code(&self) -> ErrorCode {
        match self {
            AuthError::Forbidden(_) => ErrorCode::Forbidden,
            AuthError::Unavailable => ErrorCode::Internal,
            _ => ErrorCode::Unauthenticated,
        }
    }

    fn message(&self) -> String {
        self.to_string()
    }

    /// 401 for credentials that are missing or wrong, 403 for valid ones
    /// that do not allow the request, 503 when the check itself failed.
    fn status(&self) -> StatusCode {
        match self {
            AuthError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => self.code().status(),
        }
    }
}
