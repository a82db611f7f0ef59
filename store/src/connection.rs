//! Opening the database (SQLite file or PostgreSQL) and counting the
//! statements it runs. Migrating it is `migration.rs`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection};
use tokio::sync::watch;

use crate::error::StoreError;
use crate::handles::{
    AccessStore, Catalog, ChangeFeed, Maintenance, PoolMonitor, ScoreStore, SnapshotWriter, TaskStore,
};

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
    pub(crate) commits: Arc<watch::Sender<u64>>,
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
    /// Decoded entity bodies, shared by clones (`body_cache.rs`).
    pub(crate) bodies: Arc<crate::body_cache::BodyCache>,
    /// The governance results' announcements and writer (`scores.rs`).
    pub(crate) score_transitions: Arc<watch::Sender<i64>>,
    pub(crate) score_writer: Arc<tokio::sync::Mutex<()>>,
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
    /// How many decoded entity bodies the store keeps in memory
    /// (`body_cache.rs`); `None`: [`crate::DEFAULT_BODY_CACHE_ENTRIES`], zero:
    /// none.
    pub body_cache_entries: Option<usize>,
    /// The most connections the pool opens; `None` or zero:
    /// [`DEFAULT_POSTGRES_CONNECTIONS`] on PostgreSQL,
    /// [`DEFAULT_SQLITE_CONNECTIONS`] on SQLite.
    pub max_connections: Option<u32>,
}

/// A PostgreSQL pool's size unless configured.
pub const DEFAULT_POSTGRES_CONNECTIONS: u32 = 16;
/// A SQLite pool's size unless configured: SQLite has one writer, and a
/// small pool avoids lock contention.
pub const DEFAULT_SQLITE_CONNECTIONS: u32 = 4;

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
            (url, DEFAULT_SQLITE_CONNECTIONS)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (url.to_owned(), DEFAULT_POSTGRES_CONNECTIONS)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let mut options = ConnectOptions::new(url);
        options
            .max_connections(settings.max_connections.filter(|&max| max > 0).unwrap_or(max_connections))
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
            score_transitions: Arc::new(watch::channel(0).0),
            score_writer: Arc::default(),
            writer: Arc::default(),
            url: given,
            graph: Arc::default(),
            facet_index: Arc::default(),
            bodies: Arc::new(crate::body_cache::BodyCache::new(
                settings.body_cache_entries.unwrap_or(crate::body_cache::DEFAULT_ENTRIES),
            )),
        })
    }

    /// The handle that reads the catalog.
    pub fn catalog(&self) -> Catalog {
        Catalog {
            db: self.db.clone(),
            graph: self.graph.clone(),
            facet_index: self.facet_index.clone(),
            bodies: self.bodies.clone(),
        }
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

    /// The handle of governance results.
    pub fn score_store(&self) -> ScoreStore {
        ScoreStore {
            db: self.db.clone(),
            transitions: self.score_transitions.clone(),
            writer: self.score_writer.clone(),
        }
    }

    /// The handle of retention purges and statistics.
    pub fn maintenance(&self) -> Maintenance {
        Maintenance { db: self.db.clone(), writer: self.writer.clone() }
    }

    /// The handle that reports the connection pool's state.
    pub fn pool_monitor(&self) -> PoolMonitor {
        PoolMonitor { db: self.db.clone() }
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
