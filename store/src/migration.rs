//! Migrating the schema safely. Several replicas may run `catalog migrate` (or
//! migrate on start) at once: on PostgreSQL a session advisory lock lets one
//! migrate while the others wait and then find nothing to do. And a binary
//! never runs against a schema that a newer binary changed under it: an
//! applied migration it does not know is an error that names it, unless the
//! migration says, by its name, that it only added to the schema
//! ([`ADDITIVE_SUFFIX`]). That is what keeps a rolling upgrade's old replicas
//! serving while the new ones start.

use std::collections::BTreeSet;
use std::fmt;

use catalog_migrations::Migrator;
use sea_orm::sqlx::Connection as _;
use sea_orm::sqlx::postgres::PgConnection;
use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};
use sea_orm_migration::{MigratorTrait, SchemaManager};

use crate::connection::Store;
use crate::error::StoreError;

/// The key of the migration advisory lock ("migrate" in ASCII): distinct from
/// the ingestion leader's ("ingest") and the writers' ("catalog"), so a
/// migration never waits for a leader that holds its lock for hours.
const MIGRATION_LOCK: i64 = 0x006d_6967_7261_7465;

/// How a migration says older binaries may keep serving after it (the
/// migrations crate names and checks its migrations by this rule).
pub use catalog_migrations::ADDITIVE_SUFFIX;

/// Where a database's schema stands against this binary's migrations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemaStatus {
    /// Every migration this binary knows is applied, and no other.
    Current,
    /// Migrations this binary knows that the database lacks, oldest first.
    Pending(Vec<String>),
    /// Applied migrations this binary does not know, every one additive
    /// ([`ADDITIVE_SUFFIX`]): a newer binary expanded the schema in ways this
    /// one can ignore, so it keeps serving.
    Compatible(Vec<String>),
    /// Applied migrations this binary does not know, at least one of them
    /// not additive: a newer binary changed the schema under this one.
    Newer(Vec<String>),
}

impl SchemaStatus {
    pub fn is_current(&self) -> bool {
        *self == SchemaStatus::Current
    }

    /// Whether this binary can serve the schema: it is current, or only
    /// expanded by a newer binary.
    pub fn serves(&self) -> bool {
        matches!(self, SchemaStatus::Current | SchemaStatus::Compatible(_))
    }
}

impl fmt::Display for SchemaStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaStatus::Current => formatter.write_str("the schema is current"),
            SchemaStatus::Compatible(unknown) => write!(
                formatter,
                "a newer binary added {} additive migration(s) ({}); this binary serves as before",
                unknown.len(),
                unknown.join(", ")
            ),
            SchemaStatus::Pending(pending) => write!(
                formatter,
                "{} migration(s) pending ({}): run `catalog migrate`",
                pending.len(),
                pending.join(", ")
            ),
            SchemaStatus::Newer(unknown) => {
                let error =
                    StoreError::SchemaNewer { unknown: unknown.clone(), newest_known: Store::newest_migration() };
                write!(formatter, "{error}")
            }
        }
    }
}

impl Store {
    /// The name of this binary's newest migration.
    pub fn newest_migration() -> String {
        Migrator::migrations().last().map(|migration| migration.name().to_owned()).unwrap_or_default()
    }

    /// Applies every pending migration. On PostgreSQL it first takes the
    /// migration lock (waiting while another process migrates), so replicas
    /// starting together apply each migration once. Refuses, changing
    /// nothing, a database that a newer binary migrated
    /// ([`StoreError::SchemaNewer`]), and leaves alone one that a newer
    /// binary only expanded ([`SchemaStatus::Compatible`]: this binary's
    /// migrations are all applied).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let lock = self.lock_migrations().await?;
        match self.schema_status().await? {
            SchemaStatus::Newer(unknown) => {
                return Err(StoreError::SchemaNewer { unknown, newest_known: Store::newest_migration() });
            }
            // sea-orm refuses to run with applied migrations it has no file
            // for, and there is nothing of this binary's left to apply.
            SchemaStatus::Compatible(_) => {}
            SchemaStatus::Current | SchemaStatus::Pending(_) => Migrator::up(&self.db, None).await?,
        }
        if let Some(connection) = lock {
            // Closing ends the session and with it the lock; a failure to
            // close gracefully still drops the socket, which ends it too.
            let _ = connection.close().await;
        }
        Ok(())
    }

    /// How the database's applied migrations compare with this binary's.
    /// Reads only (never creates the migrations table), so it can run on
    /// every readiness probe.
    pub async fn schema_status(&self) -> Result<SchemaStatus, StoreError> {
        let table = Migrator::migration_table_name().to_string();
        let mut applied = BTreeSet::new();
        if SchemaManager::new(&self.db).has_table(&table).await? {
            let select = Statement::from_string(self.db.get_database_backend(), format!("SELECT version FROM {table}"));
            for row in self.db.query_all_raw(select).await? {
                applied.insert(row.try_get::<String>("", "version")?);
            }
        }
        let known: Vec<String> = Migrator::migrations().iter().map(|migration| migration.name().to_owned()).collect();
        let unknown: Vec<String> = applied.iter().filter(|version| !known.contains(version)).cloned().collect();
        let pending: Vec<String> = known.into_iter().filter(|name| !applied.contains(name)).collect();
        Ok(match (unknown.is_empty(), pending.is_empty()) {
            (true, true) => SchemaStatus::Current,
            (true, false) => SchemaStatus::Pending(pending),
            // A newer binary applies every older migration first: with some
            // of ours missing, the schema is not one this binary can trust.
            (false, true) if unknown.iter().all(|name| name.ends_with(ADDITIVE_SUFFIX)) => {
                SchemaStatus::Compatible(unknown)
            }
            (false, _) => SchemaStatus::Newer(unknown),
        })
    }

    /// On PostgreSQL, a connection of its own holding the migration lock
    /// (taken, waiting as long as another process holds it). Session-level
    /// rather than transaction-level because sea-orm runs each migration in a
    /// transaction of its own: the lock must span all of them. SQLite is one
    /// process: nothing to take.
    async fn lock_migrations(&self) -> Result<Option<PgConnection>, StoreError> {
        if self.db.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(None);
        }
        let custom = |error: sea_orm::sqlx::Error| StoreError::Database(sea_orm::DbErr::Custom(error.to_string()));
        let options = self.db.get_postgres_connection_pool().connect_options();
        let mut connection = PgConnection::connect_with(&options).await.map_err(custom)?;
        // The pool's sessions may carry a statement timeout; waiting for
        // another replica's long migration must not be cut off by it.
        sea_orm::sqlx::query("SET statement_timeout = 0").execute(&mut connection).await.map_err(custom)?;
        let acquired: bool = sea_orm::sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .fetch_one(&mut connection)
            .await
            .map_err(custom)?;
        if !acquired {
            tracing::info!("another process is migrating the database; waiting for it");
            sea_orm::sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut connection)
                .await
                .map_err(custom)?;
        }
        Ok(Some(connection))
    }
}
