//! Opening the database (SQLite file or PostgreSQL), migrating it, and counting
//! the statements it runs.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use catalog_migrations::Migrator;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection};
use sea_orm_migration::MigratorTrait;

use crate::error::StoreError;

/// The catalog's storage. Cheap to clone: clones share the pool.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) db: DatabaseConnection,
    statements: Arc<AtomicU64>,
}

impl Store {
    /// Connects to `sqlite://PATH` (the file and its directory are created) or
    /// `postgres://...`. Does not migrate: call [`Store::migrate`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
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
            .sqlx_logging(false);
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
        Ok(Self { db, statements })
    }

    /// Applies every pending migration.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        Migrator::up(&self.db, None).await?;
        Ok(())
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

    /// Refreshes the query planner's statistics of the catalog tables on
    /// PostgreSQL. SQLite is left without statistics on purpose: with them
    /// (ANALYZE at 100,000 entities) it chose to probe the facet index once per
    /// matching entity and facets went from 0.17 s to 0.56 s.
    pub async fn refresh_statistics(&self) -> Result<(), StoreError> {
        if self.db.get_database_backend() == DatabaseBackend::Postgres {
            self.db.execute_unprepared("ANALYZE entities, relations, entity_facets").await?;
        }
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(self) -> Result<(), StoreError> {
        self.db.close().await?;
        Ok(())
    }
}
