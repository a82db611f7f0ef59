//! Opening the database (SQLite file or PostgreSQL) and counting the
//! statements it runs. Migrating it is `migration.rs`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection};
use tokio::sync::watch;

use crate::error::StoreError;
use crate::handles::{AccessStore, Catalog, ChangeFeed, Maintenance, PoolMonitor, SnapshotWriter, TaskStore};

/// How long a pooled connection may sit idle before its next checkout pings
/// it. Shorter than the idle cut-off of common proxies and firewalls (PgBouncer's
/// client_idle_timeout is off by default; cloud NATs drop after 4-5 minutes).
pub const IDLE_BEFORE_PING: Duration = Duration::from_secs(30);

/// The catalog's storage, as the binary's composition holds it: it opens and
/// migrates the database, watches it, and hands out the handles by job
/// (`handles.rs`) that every other crate receives instead. Cheap to clone:
/// clones share the pool and the in-memory indexes.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) db: DatabaseConnection,
    statements: Arc<AtomicU64>,
    /// Bumped after every commit that wrote change-log rows, by this process
    /// or (on PostgreSQL, once `listen_for_commits` runs) by any other.
    commits: Arc<watch::Sender<u64>>,
    /// One snapshot at a time per process. SQLite cannot upgrade a reading
    /// transaction to a writing one while another writes ("database is
    /// locked", measured with four concurrent providers); PostgreSQL
    /// serialises writers across processes with an advisory lock as well.
    pub(crate) writer: Arc<tokio::sync::Mutex<()>>,
    /// The URL it was opened with, for tests that need a second, independent
    /// pool (as another process has). Never logged: it may hold a password.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) url: Arc<str>,
    /// The relation graph in memory, shared by clones (`graph_index.rs`).
    pub(crate) graph: Arc<crate::graph_index::GraphIndex>,
    /// Facet values in memory, shared by clones (`facet_index.rs`).
    pub(crate) facet_index: Arc<crate::facet_index::FacetIndex>,
}

/// Connections of a store's pool: open ones, those of them idle, and the most
/// it opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

/// Settings of the database sessions a store opens.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectSettings {
    /// The longest one statement may run on PostgreSQL before the server
    /// cancels it (`statement_timeout`); `None` or zero: no limit. Snapshot and
    /// purge transactions are exempt: they wait for each other on a lock and
    /// write in bulk. SQLite has no such setting.
    pub statement_timeout: Option<Duration>,
}

impl Store {
    /// Connects to `sqlite://PATH` (the file and its directory are created) or
    /// `postgres://...`. Does not migrate: call [`Store::migrate`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, ConnectSettings::default()).await
    }

    /// [`Store::connect`] with settings for the pool's sessions.
    pub async fn connect_with(url: &str, settings: ConnectSettings) -> Result<Self, StoreError> {
        let given: Arc<str> = url.into();
        let (url, max_connections) = if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            if path != ":memory:"
                && let Some(parent) = Path::new(path).parent().filter(|parent| !parent.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent).map_err(|error| {
                    StoreError::Database(sea_orm::DbErr::Custom(format!("cannot create {}: {error}", parent.display())))
                })?;
            }
            let url = if url.contains('?') { url.to_owned() } else { format!("{url}?mode=rwc") };
            // SQLite has one writer; a small pool avoids lock contention.
            (url, 4)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (url.to_owned(), 16)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let mut options = ConnectOptions::new(url);
        options
            .max_connections(max_connections)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(10))
            // sqlx pings every pooled connection on checkout by default: a
            // second round trip per statement, which doubled the latency of
            // a by-ref query. Only a connection idle long enough to have been
            // dropped (by the server, a proxy or a firewall) is pinged now; a
            // busy one that died fails its statement once, and the pool
            // replaces it.
            .test_before_acquire_if_idle_for(IDLE_BEFORE_PING)
            .sqlx_logging(false);
        if let Some(timeout) = settings.statement_timeout.filter(|timeout| !timeout.is_zero()) {
            // A session setting, so every pooled connection has it; writers
            // lift it inside their transactions (`lock_writers`).
            let milliseconds = format!("{}ms", timeout.as_millis());
            options.map_sqlx_postgres_opts(move |pg| pg.options([("statement_timeout", milliseconds.clone())]));
        }
        let mut db = Database::connect(options).await?;
        let statements = Arc::new(AtomicU64::new(0));
        let counter = statements.clone();
        db.set_metric_callback(move |_info| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        if db.get_database_backend() == DatabaseBackend::Sqlite {
            // WAL lets readers run while a snapshot is being applied.
            db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
            db.execute_unprepared("PRAGMA foreign_keys=ON").await?;
        }
        Ok(Self {
            db,
            statements,
            commits: Arc::new(watch::channel(0).0),
            writer: Arc::default(),
            url: given,
            graph: Arc::default(),
            facet_index: Arc::default(),
        })
    }

    /// The handle that reads the catalog.
    pub fn catalog(&self) -> Catalog {
        Catalog { db: self.db.clone(), graph: self.graph.clone(), facet_index: self.facet_index.clone() }
    }

    /// The handle that reads the change log.
    pub fn change_feed(&self) -> ChangeFeed {
        ChangeFeed { db: self.db.clone(), commits: self.commits.clone() }
    }

    /// The handle that writes entities.
    pub fn snapshot_writer(&self) -> SnapshotWriter {
        SnapshotWriter { db: self.db.clone(), writer: self.writer.clone(), commits: self.commits.clone() }
    }

    /// The handle of the scaffolder's tasks.
    pub fn task_store(&self) -> TaskStore {
        TaskStore { db: self.db.clone() }
    }

    /// The handle of tokens and the audit log.
    pub fn access_store(&self) -> AccessStore {
        AccessStore { db: self.db.clone() }
    }

    /// The handle of retention purges and statistics.
    pub fn maintenance(&self) -> Maintenance {
        Maintenance { db: self.db.clone(), writer: self.writer.clone() }
    }

    /// The handle that reports the connection pool's state.
    pub fn pool_monitor(&self) -> PoolMonitor {
        PoolMonitor { db: self.db.clone() }
    }

    /// Announces here the commits of every process sharing the database. On
    /// PostgreSQL it listens (each snapshot NOTIFYs at commit), returning once
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
        let pool = self.db.get_postgres_connection_pool().clone();
        let connect = move |pool: sea_orm::sqlx::PgPool| async move {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(crate::snapshot::COMMIT_CHANNEL).await?;
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
        let newest = crate::changes::NEWEST_SEQUENCE;
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

    /// Whether the database is PostgreSQL (else SQLite).
    pub fn is_postgres(&self) -> bool {
        self.db.get_database_backend() == DatabaseBackend::Postgres
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await?;
        Ok(())
    }

    /// How many SQL statements this store has run since it was opened. Tests use
    /// it to prove that queries are batched.
    pub fn statement_count(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Closes the pool.
    pub async fn close(self) -> Result<(), StoreError> {
        self.db.close().await?;
        Ok(())
    }
}

impl SnapshotWriter {
    pub(crate) fn announce_commit(&self) {
        self.commits.send_modify(|count| *count = count.wrapping_add(1));
    }
}

impl ChangeFeed {
    /// A receiver that changes after every commit that wrote change-log rows.
    /// It only says "look again": the change log is the truth.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }
}

impl Maintenance {
    /// Refreshes the query planner's statistics of the catalog tables on
    /// PostgreSQL. SQLite is left without statistics on purpose: with them
    /// (ANALYZE at 100,000 entities) it chose to probe the facet index once per
    /// matching entity and facets went from 0.17 s to 0.56 s.
    pub async fn refresh_statistics(&self) -> Result<(), StoreError> {
        refresh_statistics(&self.db).await
    }
}

/// [`Maintenance::refresh_statistics`], which a large snapshot runs too.
pub(crate) async fn refresh_statistics(db: &DatabaseConnection) -> Result<(), StoreError> {
    if db.get_database_backend() == DatabaseBackend::Postgres {
        db.execute_unprepared("ANALYZE entities, relations, entity_facets").await?;
    }
    Ok(())
}

impl PoolMonitor {
    /// The connection pool's state now.
    pub fn pool_usage(&self) -> PoolUsage {
        let (open, idle, max) = match self.db.get_database_backend() {
            DatabaseBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool();
                (pool.size(), pool.num_idle(), pool.options().get_max_connections())
            }
            _ => {
                let pool = self.db.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle(), pool.options().get_max_connections())
            }
        };
        PoolUsage { open, idle: u32::try_from(idle).unwrap_or(u32::MAX), max }
    }
}
