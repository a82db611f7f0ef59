//! What platform teams read about the catalog itself: the locations and
//! providers it reads, their scopes and health, ownership conflicts between
//! providers, and the audit log.

use async_graphql::SimpleObject;
use chrono::{DateTime, Utc};

/// A location a provider read, and the outcome of its last read.
#[derive(SimpleObject)]
pub struct CatalogLocation {
    pub provider: String,
    pub target: String,
    /// Why the last read failed, or the problems of its documents.
    pub error: Option<String>,
    pub entity_count: i64,
    /// When the outcome of reading it (error or entity count) last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was last read in full, to the hour (stale detection's
    /// `not-seen`); null before that.
    pub read_at: Option<DateTime<Utc>>,
}

/// A provider's health.
#[derive(SimpleObject)]
pub struct ProviderStatus {
    /// Its key: `file`, `github`, `github-2`... (what `refreshProvider` takes).
    pub name: String,
    /// `file`, `github`, `github-org`, `kubernetes` or `pagerduty`.
    #[graphql(name = "type")]
    pub kind: String,
    /// When its last run started; null before the first.
    pub last_run_at: Option<DateTime<Utc>>,
    /// When its last run that read the whole source started.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Why its last run failed or could not read everything (nothing was
    /// removed then); null after a full read.
    pub last_error: Option<String>,
    /// Entities it holds now (in all its scopes).
    pub entity_count: u64,
    /// The parts of its source read and applied on their own: one per
    /// cluster and workload kind for Kubernetes, the provider itself for
    /// the others.
    pub scopes: Vec<ProviderScope>,
    /// Locations of its last run that failed to read or held bad documents
    /// (see `locations`).
    pub location_error_count: u64,
    pub last_added: u64,
    pub last_updated: u64,
    pub last_removed: u64,
    /// Removals its last run held back (safety valve or incomplete read).
    pub last_held_back: u64,
    /// Entities its last run offered that an `enforce` admission policy
    /// refused (see `locations` for each one's error).
    pub last_refused: u64,
    /// Entities its last run admitted with policy violations.
    pub last_admitted_with_violations: u64,
    /// Entities its last run offered that a review policy holds in the
    /// review queue (`pendingEntities`).
    pub last_queued: u64,
    /// Admission policies its last run held back because they would have
    /// refused more than their share of its entities
    /// (`policy: 40 of 50 entities`): they only warned.
    pub held_back_policies: Vec<String>,
    /// When the schedule runs it next; null when this process does not
    /// schedule ingestion.
    pub next_run_at: Option<DateTime<Utc>>,
}

/// One scope of a provider.
#[derive(SimpleObject)]
pub struct ProviderScope {
    /// Its key in the store: the entities' provider (`kubernetes:prod:deployment`).
    pub name: String,
    /// Whether it was read in full (a watcher: listed at least once);
    /// until then it removes nothing.
    pub complete: bool,
    pub last_error: Option<String>,
    pub entity_count: u64,
}

/// Whether an audited operation was allowed.
#[derive(async_graphql::Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(remote = "catalog_store::AuditDecision")]
pub enum AuditDecisionValue {
    Allowed,
    Denied,
}

/// One audit log entry. Principals are names (`token:NAME`, `sub:SUBJECT`,
/// `provider:KEY`, `cli`, `unknown` for credentials that did not check out),
/// never credentials.
#[derive(SimpleObject)]
pub struct AuditEvent {
    /// Pass as `before` for older entries.
    pub cursor: String,
    pub time: DateTime<Utc>,
    pub principal: String,
    pub token_id: Option<String>,
    /// `snapshot.apply`, `token.create`, `token.revoke`, `request`.
    pub operation: String,
    pub targets: Vec<String>,
    pub decision: AuditDecisionValue,
    /// What changed, or why it was refused.
    pub result: String,
    /// The `x-request-id` of the request, when there was one.
    pub request_id: Option<String>,
}

/// A page of the audit log.
#[derive(SimpleObject)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

/// A ref that two sources claim: the owner keeps it.
#[derive(SimpleObject)]
pub struct Conflict {
    pub entity_ref: String,
    pub owner_provider: String,
    pub owner_location: Option<String>,
    pub claimant_provider: String,
    pub claimant_location: Option<String>,
    pub detected_at: DateTime<Utc>,
}
