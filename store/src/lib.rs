//! Catalog storage on sea-orm, one schema for SQLite (embedded) and PostgreSQL
//! (production). This is the only crate that knows sea-orm: it takes and returns
//! domain values, and every entity write goes through
//! [`SnapshotWriter::apply_snapshot`] or [`SnapshotWriter::delete_entity`],
//! which also append to the change log. [`Store`] opens the database and hands
//! out one handle per job (`handles.rs`); other crates receive handles.

mod as_of;
mod audit;
mod body_cache;
mod bulk;
mod change_log;
mod changes;
mod commit;
mod connection;
mod error;
mod facet_index;
mod filter;
mod follower;
mod graph;
mod graph_index;
mod handles;
mod health;
mod leadership;
mod matcher;
mod migration;
mod models;
mod projection;
mod query;
mod record;
mod review;
mod scores;
mod snapshot;
mod tasks;
#[cfg(feature = "testing")]
pub mod testing;
mod tokens;

pub use as_of::{AsOfPage, AsOfQuery};
pub use audit::{AuditDecision, AuditEntry, AuditRecord};
pub use body_cache::DEFAULT_ENTRIES as DEFAULT_BODY_CACHE_ENTRIES;
pub use connection::{
    ConnectSettings, DEFAULT_POSTGRES_CONNECTIONS, DEFAULT_SQLITE_CONNECTIONS, IDLE_BEFORE_PING, PoolUsage, Store,
};
pub use error::StoreError;
pub use filter::{Filter, FilterField, Predicate, STALENESS_SCORECARD};
pub use graph::{Direction, Parent, Reached, Walk, WalkRequest};
pub use handles::{AccessStore, Catalog, ChangeFeed, Maintenance, PoolMonitor, ScoreStore, SnapshotWriter, TaskStore};
pub use health::{HealthCounts, HealthRecord};
pub use leadership::Leadership;
pub use matcher::EntityMatcher;
pub use migration::{ADDITIVE_SUFFIX, SchemaStatus};
pub use projection::owner_column;
pub use query::{Annotated, EntityPage, ListQuery, OrderField};
pub use record::{
    Change, ChangeType, ConflictRecord, Facet, LocationRecord, PolicyViolation, Related, StoredEntity, StoredRelation,
    TargetBodies,
};
pub use review::{PendingRecord, QueueCounts, ReviewEvent, ReviewEventKind, ReviewReason, ReviewRequest, ReviewStatus};
pub use scores::{NewScore, ScoreChange, ScoreWrite, ScorecardRecord, StoredScore, Transition};
pub use snapshot::{
    ApplySummary, Decision, DecisionOutcome, DeletedEntity, InvalidEntity, LocationStatus, PendingEntity,
    SAFETY_VALVE_MIN_ENTITIES, Snapshot, SnapshotEntity,
};
pub use tasks::{NewTask, TaskEnd, TaskEventRecord, TaskQuery, TaskRecord, TaskStatus};
pub use tokens::{NewToken, TokenRecord};
