//! An in-memory index kept current from the change log, written once for
//! every such index (the relation graph, the facet columns): loaded from one
//! consistent snapshot of the tables with the newest change-log sequence,
//! then, before each read, brought up to the newest commit by applying the
//! changes after its cursor (one statement, usually empty, so commits of
//! other replicas are seen). A large backlog, an hour without catching up or
//! a change the index cannot apply reloads it instead.
//!
//! An index implements [`Followed`]: how it loads, how it applies one change,
//! and, for an index that holds parts on demand (facet columns), what a
//! caller needs that it lacks.

use std::future::Future;
use std::time::{Duration, Instant};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use catalog_domain::Entity;
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbBackend, IsolationLevel, TransactionTrait};
use serde::Deserialize;

use crate::change_log::{changes_after, newest_sequence};
use crate::error::StoreError;
use crate::record::Change;

/// Change-log rows read per statement while catching up.
const CATCH_UP_BATCH: u64 = 1_000;
/// An index that has not caught up for this long reloads instead: the change
/// log it would read may have been purged since (retention is in days).
const STALE_AFTER: Duration = Duration::from_secs(3_600);
/// Past this many unapplied changes, reloading from the tables is cheaper
/// than replaying bodies (a bulk ingestion).
const RELOAD_AFTER_CHANGES: usize = 20_000;

/// An index a [`Follower`] keeps current.
pub(crate) trait Followed: Default + Send + Sync {
    /// What a reader needs the index to hold: the columns of a facets call;
    /// `()` for an index that is always whole.
    type Need: ?Sized + Sync;
    /// What the index lacks of a need, and the part read for it.
    type Lacking: Send;
    type Part: Send;

    /// Reads the whole index for `need` inside `txn`, one consistent snapshot.
    fn load(txn: &DatabaseTransaction, need: &Self::Need) -> impl Future<Output = Result<Self, StoreError>> + Send;

    /// What of `need` the index does not hold; None when nothing.
    fn lacking(&self, need: &Self::Need) -> Option<Self::Lacking>;

    /// Reads what the index lacks inside `txn`, a snapshot at or after its
    /// cursor: replaying the changes after the cursor over it then ends in
    /// the same state, since each change sets an entity's whole state.
    fn read_lacking(
        txn: &DatabaseTransaction,
        lacking: Self::Lacking,
    ) -> impl Future<Output = Result<Self::Part, StoreError>> + Send;

    fn add(&mut self, part: Self::Part);

    /// Applies one committed change; false when the index cannot (it reloads).
    fn apply(&mut self, change: &Change) -> bool;

    /// Runs under the write lock once the index has caught up for `need`.
    fn caught_up(&mut self, _need: &Self::Need) {}
}

/// Where the index stands in the change log.
#[derive(Default)]
struct Progress {
    /// The last change-log sequence applied.
    cursor: i64,
    /// None until the first load.
    caught_up_at: Option<Instant>,
}

/// An index and its place in the change log, shared by a store's clones.
#[derive(Default)]
pub(crate) struct Follower<I> {
    index: RwLock<I>,
    /// Held while loading or catching up, so concurrent readers do it once;
    /// readers of the index never wait for it, only for the brief write lock
    /// that applies what was read.
    progress: tokio::sync::Mutex<Progress>,
}

impl<I> std::fmt::Debug for Follower<I> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Follower")
    }
}

impl<I: Followed> Follower<I> {
    /// The index as last brought up to date.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, I> {
        self.index.read()
    }

    fn write(&self) -> RwLockWriteGuard<'_, I> {
        self.index.write()
    }

    /// Brings the index up to the newest committed change, holding what
    /// `need` asks for.
    pub(crate) async fn catch_up(&self, db: &DatabaseConnection, need: &I::Need) -> Result<(), StoreError> {
        let mut progress = self.progress.lock().await;
        if progress.caught_up_at.is_none_or(|at| at.elapsed() >= STALE_AFTER) {
            return self.load(db, need, &mut progress).await;
        }
        let lacking = self.read().lacking(need);
        if let Some(lacking) = lacking {
            let (txn, _) = snapshot(db).await?;
            let part = I::read_lacking(&txn, lacking).await?;
            txn.commit().await?;
            self.write().add(part);
        }
        let mut pending: Vec<Change> = Vec::new();
        let mut after = progress.cursor;
        loop {
            let batch = changes_after(db, after, CATCH_UP_BATCH).await?;
            let Some(last) = batch.last() else { break };
            after = last.sequence;
            pending.extend(batch);
            if pending.len() > RELOAD_AFTER_CHANGES {
                return self.load(db, need, &mut progress).await;
            }
        }
        let applied = {
            let mut index = self.write();
            let applied = pending.iter().all(|change| index.apply(change));
            if applied {
                index.caught_up(need);
            }
            applied
        };
        if !applied {
            return self.load(db, need, &mut progress).await;
        }
        if let Some(last) = pending.last() {
            progress.cursor = progress.cursor.max(last.sequence);
        }
        progress.caught_up_at = Some(Instant::now());
        Ok(())
    }

    /// Replaces the index with one read from a consistent snapshot, and its
    /// cursor with that snapshot's newest sequence.
    async fn load(&self, db: &DatabaseConnection, need: &I::Need, progress: &mut Progress) -> Result<(), StoreError> {
        let (txn, cursor) = snapshot(db).await?;
        let index = I::load(&txn, need).await?;
        txn.commit().await?;
        *self.write() = index;
        *progress = Progress { cursor, caught_up_at: Some(Instant::now()) };
        Ok(())
    }
}

/// A transaction that reads one consistent snapshot (repeatable read on
/// PostgreSQL; a SQLite transaction reads one snapshot), with the newest
/// change-log sequence in it.
async fn snapshot(db: &DatabaseConnection) -> Result<(DatabaseTransaction, i64), StoreError> {
    let isolation = (db.get_database_backend() == DbBackend::Postgres).then_some(IsolationLevel::RepeatableRead);
    let txn = db.begin_with_config(isolation, None).await?;
    let cursor = newest_sequence(&txn).await?;
    Ok((txn, cursor))
}

/// The entity a change's body holds; None without a body (a removal) or
/// when the body is not an entity. Read in place, not cloned first: bodies
/// are large and a bulk ingestion's backlog holds thousands.
pub(crate) fn changed_entity(change: &Change) -> Option<Entity> {
    change.entity.as_ref().and_then(|body| Entity::deserialize(body).ok())
}
