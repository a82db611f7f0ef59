//! The store's handles, one per job. [`crate::Store`] opens the database and
//! hands them out; a crate receives only the handles of the jobs it does, so
//! that, say, a provider given a [`Catalog`] cannot write and the scaffolder
//! cannot read tokens. Each handle holds only the shared state its job needs
//! (clones of the pool and of the in-memory indexes): cloning one is a few
//! reference-count increments, and its methods live in the module of their
//! subject (`query.rs`, `changes.rs`, `snapshot.rs`, `tasks.rs`...).

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use tokio::sync::watch;

use crate::facet_index::FacetIndex;
use crate::graph_index::GraphIndex;

/// Reads the catalog as it is now: entities, their relations and the graph,
/// facets, locations and conflicts.
#[derive(Clone, Debug)]
pub struct Catalog {
    pub(crate) db: DatabaseConnection,
    /// The relation graph in memory, shared by every handle of one store.
    pub(crate) graph: Arc<GraphIndex>,
    /// Facet values in memory, shared by every handle of one store.
    pub(crate) facet_index: Arc<FacetIndex>,
    /// Decoded entity bodies, shared by every handle of one store.
    pub(crate) bodies: Arc<crate::body_cache::BodyCache>,
}

/// Reads the change log: what changed after a sequence number, an entity's
/// history and versions as of a time, and the announcements of new commits.
#[derive(Clone, Debug)]
pub struct ChangeFeed {
    pub(crate) db: DatabaseConnection,
    /// Bumped after every commit that wrote change-log rows.
    pub(crate) commits: Arc<watch::Sender<u64>>,
}

/// The one way entities are written: provider snapshots and removals by
/// hand, each with its change-log rows.
#[derive(Clone, Debug)]
pub struct SnapshotWriter {
    pub(crate) db: DatabaseConnection,
    /// One writer at a time per process (see [`crate::Store`]).
    pub(crate) writer: Arc<tokio::sync::Mutex<()>>,
    pub(crate) commits: Arc<watch::Sender<u64>>,
}

/// The scaffolder's tasks and their event logs.
#[derive(Clone, Debug)]
pub struct TaskStore {
    pub(crate) db: DatabaseConnection,
}

/// API tokens and the audit log: what authentication and authorization read
/// and write.
#[derive(Clone, Debug)]
pub struct AccessStore {
    pub(crate) db: DatabaseConnection,
}

/// Reads and writes governance results.
#[derive(Clone, Debug)]
pub struct ScoreStore {
    pub(crate) db: DatabaseConnection,
    /// Bumped after every batch that recorded a transition.
    pub(crate) transitions: Arc<watch::Sender<i64>>,
    /// One writer of scores at a time in this process, so sequences are
    /// committed in order.
    pub(crate) writer: Arc<tokio::sync::Mutex<()>>,
}

/// The connection pool's state, for the metrics.
#[derive(Clone, Debug)]
pub struct PoolMonitor {
    pub(crate) db: DatabaseConnection,
}

/// Housekeeping the server schedules: retention purges of the change and
/// audit logs, and the query planner's statistics.
#[derive(Clone, Debug)]
pub struct Maintenance {
    pub(crate) db: DatabaseConnection,
    /// Purging the change log waits for writers, as a snapshot does.
    pub(crate) writer: Arc<tokio::sync::Mutex<()>>,
}
