//! Test harness: a fresh database per test, on SQLite (a file in a
//! temporary directory) or PostgreSQL (a new database on the server named by
//! `CATALOG_TEST_DATABASE_URL`), and [`backend_tests!`](crate::backend_tests),
//! the one macro that runs a test body on both. The body's argument type picks
//! what it is given ([`Fixture`]): the store crate's own tests take a
//! [`Store`], the end-to-end tests a running application or the
//! [`TestDatabase`] to start their own.

pub mod rng;

use catalog_domain::Entity;

use crate::connection::Store;
use crate::snapshot::{LocationStatus, Snapshot, SnapshotEntity};

/// A snapshot of `provider` holding `entities`, all read from one location
/// (`all.yaml`) that read cleanly.
pub fn one_location_snapshot(provider: &str, entities: Vec<Entity>) -> Snapshot {
    Snapshot {
        provider: provider.into(),
        entities: entities.into_iter().map(|entity| SnapshotEntity::new(entity, Some("all.yaml".into()))).collect(),
        invalid: Vec::new(),
        locations: vec![LocationStatus { target: "all.yaml".into(), n_entities: 1, ..Default::default() }],
        ..Default::default()
    }
}

/// Where the PostgreSQL server for tests is, e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
pub const DATABASE_URL_VARIABLE: &str = "CATALOG_TEST_DATABASE_URL";
/// Set to `1` (as CI does) to make PostgreSQL cases fail, not skip, without a URL.
pub const REQUIRE_POSTGRES_VARIABLE: &str = "CATALOG_TEST_REQUIRE_POSTGRES";

/// The database a case of [`backend_tests!`](crate::backend_tests) runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// What a fresh test database holds before the test body starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// Every migration of this binary applied.
    Migrated,
    /// No table at all, not even the migrations' own.
    Empty,
}

/// A database that lives as long as the test holds it (or any clone of it).
#[derive(Clone)]
pub struct TestDatabase {
    pub store: Store,
    pub url: String,
    // Shared so that the harness and the fixture it builds (a store, a
    // running app) can both hold the database: it goes when the last does.
    _lifetime: std::sync::Arc<DatabaseLifetime>,
}

/// What must be removed once no test holds the database any more.
struct DatabaseLifetime {
    _directory: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    /// A fresh database on `backend` holding `schema`, or `None` (with a
    /// loud message naming `case`) when PostgreSQL is not configured and
    /// not required.
    pub async fn open(backend: Backend, schema: Schema, case: &str) -> Option<TestDatabase> {
        let database = match backend {
            Backend::Sqlite => Self::fresh_sqlite().await,
            Backend::Postgres => Self::fresh_postgres(case).await?,
        };
        if schema == Schema::Migrated {
            database.store.migrate().await.unwrap_or_else(|error| panic!("migrations run on {backend:?}: {error}"));
        }
        Some(database)
    }

    /// A fresh, migrated SQLite file.
    pub async fn sqlite() -> TestDatabase {
        Self::open(Backend::Sqlite, Schema::Migrated, "a SQLite case").await.expect("SQLite is always there")
    }

    /// A fresh SQLite file without any table, not even the migrations'.
    pub async fn sqlite_unmigrated() -> TestDatabase {
        Self::open(Backend::Sqlite, Schema::Empty, "a SQLite case").await.expect("SQLite is always there")
    }

    /// A fresh, migrated PostgreSQL database, or `None` (with a loud
    /// message) when no server is configured and it is not required.
    pub async fn postgres() -> Option<TestDatabase> {
        Self::open(Backend::Postgres, Schema::Migrated, "a test").await
    }

    /// [`TestDatabase::postgres`] without any table, not even the migrations'.
    pub async fn postgres_unmigrated() -> Option<TestDatabase> {
        Self::open(Backend::Postgres, Schema::Empty, "a test").await
    }

    async fn fresh_sqlite() -> TestDatabase {
        // A file, not `:memory:`: a pool would split memory into one
        // database per connection.
        let directory = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", directory.path().join("catalog.db").display());
        let store = Store::connect(&url).await.expect("SQLite opens");
        let lifetime = DatabaseLifetime { _directory: Some(directory), postgres: None };
        TestDatabase { store, url, _lifetime: std::sync::Arc::new(lifetime) }
    }

    async fn fresh_postgres(case: &str) -> Option<TestDatabase> {
        let Some(admin_url) = std::env::var(DATABASE_URL_VARIABLE).ok().filter(|url| !url.is_empty()) else {
            if std::env::var(REQUIRE_POSTGRES_VARIABLE).is_ok_and(|value| value == "1") {
                panic!("{REQUIRE_POSTGRES_VARIABLE}=1 but {DATABASE_URL_VARIABLE} is not set");
            }
            // Straight to the process's stderr: the test harness captures
            // `eprintln!`, and a skip must be seen without `--nocapture`.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED: {case} on PostgreSQL (set {DATABASE_URL_VARIABLE} to run it)\n").as_bytes(),
            );
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
        let lifetime = DatabaseLifetime { _directory: None, postgres: Some((admin_url, name)) };
        Some(TestDatabase { store, url, _lifetime: std::sync::Arc::new(lifetime) })
    }
}

impl Drop for DatabaseLifetime {
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

/// What a two-database test body takes as its argument, built over the
/// case's fresh database: the database itself, its [`Store`], or (in the
/// end-to-end tests) a running application. Crates add their own.
pub trait Fixture: Sized {
    /// Builds the fixture over `database`; the harness keeps its own clone
    /// of `database` until the body returns.
    fn over(database: TestDatabase) -> impl std::future::Future<Output = Self>;
}

impl Fixture for TestDatabase {
    async fn over(database: TestDatabase) -> Self {
        database
    }
}

impl Fixture for Store {
    async fn over(database: TestDatabase) -> Self {
        database.store.clone()
    }
}

/// Runs `body` on a fresh database of `backend` holding `schema`, the
/// fixture chosen by the body's argument type. A PostgreSQL case without a
/// configured server returns at once (see [`REQUIRE_POSTGRES_VARIABLE`]).
pub async fn run_case<F, Body, Done>(backend: Backend, schema: Schema, case: &str, body: Body)
where
    F: Fixture,
    Body: FnOnce(F) -> Done,
    Done: std::future::Future<Output = ()>,
{
    let Some(database) = TestDatabase::open(backend, schema, case).await else { return };
    body(F::over(database.clone()).await).await;
    drop(database);
}

/// Generates, for each named `async fn(F)` where `F` is a [`testing::Fixture`]
/// (a `Store`, a `TestDatabase`, a running app), a module of that name with
/// two tests, `sqlite` and `postgres`, that run the same body each on a fresh
/// database of their own. `backend_tests!(a, b)` migrates the database first;
/// `backend_tests!(unmigrated: a, b)` leaves it without any table.
///
/// [`testing::Fixture`]: crate::testing::Fixture
#[macro_export]
macro_rules! backend_tests {
    (@schema $schema:ident; $($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::testing::run_case(
                        $crate::testing::Backend::Sqlite,
                        $crate::testing::Schema::$schema,
                        module_path!(),
                        super::$name,
                    )
                    .await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::testing::run_case(
                        $crate::testing::Backend::Postgres,
                        $crate::testing::Schema::$schema,
                        module_path!(),
                        super::$name,
                    )
                    .await;
                }
            }
        )*
    };
    (unmigrated: $($name:ident),* $(,)?) => {
        $crate::backend_tests!(@schema Empty; $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        $crate::backend_tests!(@schema Migrated; $($name),*);
    };
}

impl Store {
    /// Another store on the same database with its own pool and its own
    /// writer lock: what a second process sees.
    pub async fn open_again(&self) -> Store {
        Store::connect(&self.url).await.expect("the database opens again")
    }
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
