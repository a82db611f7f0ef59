//! Test harness: a fresh, migrated database per test, on SQLite (a file in a
//! temporary directory) or PostgreSQL (a new database on the server named by
//! `CATALOG_TEST_DATABASE_URL`).

pub mod rng;

use catalog_domain::Entity;

use crate::connection::Store;
use crate::snapshot::{LocationStatus, Snapshot, SnapshotEntity};

/// A snapshot of `provider` holding `entities`, all read from one location
/// (`all.yaml`) that read cleanly.
pub fn one_location_snapshot(provider: &str, entities: Vec<Entity>) -> Snapshot {
    Snapshot {
        provider: provider.into(),
        entities: entities
            .into_iter()
            .map(|entity| SnapshotEntity { entity, location: Some("all.yaml".into()) })
            .collect(),
        invalid: Vec::new(),
        locations: vec![LocationStatus { target: "all.yaml".into(), n_entities: 1, ..Default::default() }],
        ..Default::default()
    }
}

/// Where the PostgreSQL server for tests is, e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
pub const DATABASE_URL_VARIABLE: &str = "CATALOG_TEST_DATABASE_URL";
/// Set to `1` (as CI does) to make PostgreSQL cases fail, not skip, without a URL.
pub const REQUIRE_POSTGRES_VARIABLE: &str = "CATALOG_TEST_REQUIRE_POSTGRES";

/// A database that lives as long as the test holds it.
pub struct TestDatabase {
    pub store: Store,
    pub url: String,
    _directory: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    /// A fresh SQLite file.
    pub async fn sqlite() -> TestDatabase {
        let database = Self::sqlite_unmigrated().await;
        database.store.migrate().await.expect("migrations run on SQLite");
        database
    }

    /// A fresh SQLite file without any table, not even the migrations'.
    pub async fn sqlite_unmigrated() -> TestDatabase {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", directory.path().join("catalog.db").display());
        let store = Store::connect(&url).await.expect("SQLite opens");
        TestDatabase { store, url, _directory: Some(directory), postgres: None }
    }

    /// A fresh PostgreSQL database, or `None` (with a loud message) when no
    /// server is configured and it is not required.
    pub async fn postgres() -> Option<TestDatabase> {
        let database = Self::postgres_unmigrated().await?;
        database.store.migrate().await.expect("migrations run on PostgreSQL");
        Some(database)
    }

    /// [`TestDatabase::postgres`] without any table, not even the migrations'.
    pub async fn postgres_unmigrated() -> Option<TestDatabase> {
        let Some(admin_url) = std::env::var(DATABASE_URL_VARIABLE).ok().filter(|url| !url.is_empty()) else {
            if std::env::var(REQUIRE_POSTGRES_VARIABLE).is_ok_and(|value| value == "1") {
                panic!("{REQUIRE_POSTGRES_VARIABLE}=1 but {DATABASE_URL_VARIABLE} is not set");
            }
            eprintln!("SKIPPED: PostgreSQL case (set {DATABASE_URL_VARIABLE} to run it)");
            return None;
        };
        let name = format!("catalog_test_{}", uuid::Uuid::new_v4().simple());
        let admin =
            Store::connect(&admin_url).await.expect("the PostgreSQL server in CATALOG_TEST_DATABASE_URL answers");
        sea_orm::ConnectionTrait::execute_unprepared(&admin.db, &format!("CREATE DATABASE {name}"))
            .await
            .expect("a test database can be created");
        admin.close().await.ok();
        let url = replace_database(&admin_url, &name);
        let store = Store::connect(&url).await.expect("the new test database opens");
        Some(TestDatabase { store, url, _directory: None, postgres: Some((admin_url, name)) })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else { return };
        // Dropping needs a runtime of its own: Drop cannot await, and the test's
        // runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let admin = Store::connect(&admin_url).await.ok()?;
                sea_orm::ConnectionTrait::execute_unprepared(
                    &admin.db,
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                )
                .await
                .ok()?;
                admin.close().await.ok()
            })
        })
        .join();
    }
}

fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |index| index + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// Generates, for each named `async fn(Store)`, one test on SQLite and one on
/// PostgreSQL, so both backends run the same body.
impl Store {
    /// Another store on the same database with its own pool and its own
    /// writer lock: what a second process sees.
    pub async fn open_again(&self) -> Store {
        Store::connect(&self.url).await.expect("the database opens again")
    }
}

#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let database = $crate::testing::TestDatabase::sqlite().await;
                    super::$name(database.store.clone()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let Some(database) = $crate::testing::TestDatabase::postgres().await else { return };
                    super::$name(database.store.clone()).await;
                }
            }
        )*
    };
}

impl Store {
    /// [`crate::Catalog::facets`] answered in SQL, never from the facet
    /// index: tests compare the two.
    pub async fn facets_in_sql_for_tests(
        &self,
        fields: &[String],
        filter: Option<&crate::Filter>,
    ) -> Result<Vec<crate::Facet>, crate::StoreError> {
        let catalog = self.catalog();
        let filter = catalog.expand_filter(filter).await?;
        catalog.facets_in_sql(fields, filter.as_ref()).await
    }

    /// Runs raw SQL on the store's own pool: tests use it to break the
    /// database under a running server (drop a table, say).
    pub async fn execute_unprepared_for_tests(&self, sql: &str) -> Result<(), crate::StoreError> {
        sea_orm::ConnectionTrait::execute_unprepared(&self.db, sql).await?;
        Ok(())
    }

    /// Records `name` as an applied migration, as a newer binary would.
    pub async fn record_migration_for_tests(&self, name: &str) {
        self.execute_unprepared_for_tests(&format!(
            "INSERT INTO seaql_migrations (version, applied_at) VALUES ('{name}', 0)"
        ))
        .await
        .expect("the migration is recorded");
    }

    /// Relation and facet rows whose entity is gone: the store deletes them
    /// itself (PostgreSQL has no foreign key to do it), so always 0.
    pub async fn orphaned_index_rows_for_tests(&self) -> u64 {
        use sea_orm::ConnectionTrait as _;
        let sql = "SELECT (SELECT COUNT(*) FROM relations WHERE origin_id NOT IN (SELECT id FROM entities)) \
                   + (SELECT COUNT(*) FROM entity_facets WHERE entity_id NOT IN (SELECT id FROM entities)) AS n";
        let statement = sea_orm::Statement::from_string(self.db.get_database_backend(), sql);
        let row = self.db.query_one_raw(statement).await.expect("the count").expect("a row");
        u64::try_from(row.try_get::<i64>("", "n").expect("a number")).expect("not negative")
    }

    /// Takes the writers' lock (as a snapshot on another replica does) and
    /// holds it for `duration`.
    pub async fn hold_writer_lock_for_tests(&self, duration: std::time::Duration) {
        use sea_orm::TransactionTrait as _;
        let txn = self.db.begin().await.expect("a transaction");
        crate::commit::lock_writers(&txn).await.expect("the writers' lock");
        tokio::time::sleep(duration).await;
        txn.commit().await.expect("commit");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_name_is_replaced_keeping_credentials_and_options() {
        assert_eq!(
            super::replace_database("postgres://u:p@h:5432/postgres?sslmode=disable", "t1"),
            "postgres://u:p@h:5432/t1?sslmode=disable"
        );
        assert_eq!(super::replace_database("postgres://h", "t1"), "postgres://h/t1");
    }
}
