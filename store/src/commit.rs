//! Committing in order and telling every reader: the writers' lock that
//! makes change-log sequence order commit order, and the announcements a
//! commit that wrote change-log rows makes (the store's `commits` watch here,
//! a NOTIFY for other replicas, read back by `listen_for_commits`).

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseTransaction};
use tokio::sync::watch;

use crate::connection::Store;
use crate::error::StoreError;
use crate::handles::{ChangeFeed, SnapshotWriter};

/// The key of the PostgreSQL advisory lock every snapshot transaction holds.
const WRITER_LOCK: i64 = 0x0063_6174_616c_6f67; // "catalog" in ASCII

/// Takes the writers' lock until the transaction ends. Change-log sequence
/// numbers are drawn from a sequence before commit; two writers could commit
/// 11 before 10, and a reader that saw 11 would miss 10. One writer at a time
/// makes sequence order commit order. SQLite has one writer anyway, but its
/// transactions must take the write lock before their first read.
pub(crate) async fn lock_writers(txn: &DatabaseTransaction) -> Result<(), StoreError> {
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        // The session's statement timeout bounds reads; a writer may wait for
        // another replica's snapshot and then write in bulk. A statement's
        // timeout is armed when it starts, hence a statement of its own.
        txn.execute_unprepared("SET LOCAL statement_timeout = 0").await?;
        txn.execute_raw(sea_orm::Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [WRITER_LOCK.into()],
        ))
        .await?;
    } else {
        write_up_front(txn).await?;
    }
    Ok(())
}

/// On SQLite, takes the write lock before a transaction's first read. A
/// deferred SQLite transaction that reads first cannot become a writer
/// once another connection has committed since its read
/// (SQLITE_BUSY_SNAPSHOT, with no wait): a token's last-use write can land
/// between a writer's first read and its first write. A write statement,
/// even one matching no row, takes the lock up front, waiting for it like
/// any writer. Nothing on PostgreSQL.
pub(crate) async fn write_up_front(txn: &DatabaseTransaction) -> Result<(), StoreError> {
    if txn.get_database_backend() == DatabaseBackend::Sqlite {
        txn.execute_unprepared("UPDATE catalog_state SET value = value WHERE 1 = 0").await?;
    }
    Ok(())
}

/// The PostgreSQL channel a snapshot notifies when it changed something.
pub(crate) const COMMIT_CHANNEL: &str = "catalog_changes";

/// On PostgreSQL, a notification delivered at commit to every replica
/// listening: their wake-up call for a transaction that wrote change-log rows.
pub(crate) async fn notify_replicas(txn: &DatabaseTransaction) -> Result<(), StoreError> {
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        txn.execute_unprepared(&format!("NOTIFY {COMMIT_CHANNEL}")).await?;
    }
    Ok(())
}

impl ChangeFeed {
    /// A receiver that changes after every commit that wrote change-log rows.
    /// It only says "look again": the change log is the truth.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }
}

impl SnapshotWriter {
    pub(crate) fn announce_commit(&self) {
        self.commits.send_modify(|count| *count = count.wrapping_add(1));
    }
}

impl Store {
    /// Announces here the commits of every process sharing the database. On
    /// PostgreSQL it listens on a connection outside the pool (each snapshot
    /// NOTIFYs at commit), returning once
    /// listening so that a reader started afterwards misses no commit, and
    /// re-connects after errors (announcing once, for what it may have
    /// missed). SQLite has no notifications: a connection of its own (outside
    /// the pool and its statement count) looks at the newest sequence number
    /// twice a second, so that `catalog ingest --once` run beside `serve`
    /// reaches subscribers. Both stop when the store's last clone is dropped.
    pub async fn listen_for_commits(&self) -> Result<(), StoreError> {
        use sea_orm::sqlx::postgres::PgListener;
        if self.db.get_database_backend() != DatabaseBackend::Postgres {
            return self.watch_sqlite_commits().await;
        }
        // The listener's connection is its own, outside the pool: held for
        // the process's life, it would otherwise take one of the pool's, and
        // a pool of one (`database.max_connections: 1`) would have none left.
        let options = (*self.db.get_postgres_connection_pool().connect_options()).clone();
        let pool = sea_orm::sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(options);
        let connect = move |pool: sea_orm::sqlx::PgPool| async move {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(COMMIT_CHANNEL).await?;
            Ok::<_, sea_orm::sqlx::Error>(listener)
        };
        let mut listener = connect(pool.clone())
            .await
            .map_err(|error| StoreError::Database(sea_orm::DbErr::Custom(error.to_string())))?;
        let commits = Arc::downgrade(&self.commits);
        tokio::spawn(async move {
            loop {
                let error = loop {
                    // `Ok(None)`: the listener lost its connection and
                    // re-connected by itself; commits may have landed
                    // meanwhile, so that wakes readers too.
                    if let Err(error) = listener.try_recv().await {
                        break error;
                    }
                    let Some(commits) = commits.upgrade() else { return };
                    commits.send_modify(|count| *count = count.wrapping_add(1));
                };
                tracing::warn!(%error, "listening for commits failed; re-connecting");
                listener = loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if commits.strong_count() == 0 {
                        return;
                    }
                    match connect(pool.clone()).await {
                        Ok(listener) => break listener,
                        Err(error) => tracing::warn!(%error, "re-connecting the commit listener failed"),
                    }
                };
                // Commits may have landed while nobody listened.
                let Some(commits) = commits.upgrade() else { return };
                commits.send_modify(|count| *count = count.wrapping_add(1));
            }
        });
        Ok(())
    }

    async fn watch_sqlite_commits(&self) -> Result<(), StoreError> {
        use sea_orm::sqlx::Connection as _;
        if self.url.contains(":memory:") {
            return Ok(());
        }
        let custom = |error: sea_orm::sqlx::Error| StoreError::Database(sea_orm::DbErr::Custom(error.to_string()));
        let mut connection = sea_orm::sqlx::SqliteConnection::connect(&self.url).await.map_err(custom)?;
        let newest = crate::change_log::NEWEST_SEQUENCE;
        let mut last: i64 = sea_orm::sqlx::query_scalar(newest).fetch_one(&mut connection).await.map_err(custom)?;
        let commits = Arc::downgrade(&self.commits);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(commits) = commits.upgrade() else { return };
                match sea_orm::sqlx::query_scalar::<_, i64>(newest).fetch_one(&mut connection).await {
                    Ok(sequence) if sequence != last => {
                        last = sequence;
                        commits.send_modify(|count| *count = count.wrapping_add(1));
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "looking for new commits failed"),
                }
            }
        });
        Ok(())
    }
}
