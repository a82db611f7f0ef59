//! Migrations: what a database's schema status says, the refusal of a
//! database that a newer binary migrated (unless it only added to the
//! schema), and replicas migrating at once.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use catalog_store::testing::TestDatabase;
use catalog_store::{SchemaStatus, Store, StoreError, backend_tests};

/// A migration no binary of today knows, as a newer binary would record it.
const FUTURE_MIGRATION: &str = "m20991231_000001_from_the_future";
/// A newer binary's migration that promises to only add to the schema.
const FUTURE_ADDITIVE: &str = "m20991230_000001_new_index_additive";

async fn record_future_migration(store: &Store) {
    store.record_migration_for_tests(FUTURE_MIGRATION).await;
}

backend_tests!(additive_migrations_of_a_newer_binary_leave_this_one_serving);

/// A rolling upgrade: the new binary applied a migration named additive, so
/// this older one still serves and `migrate` succeeds changing nothing; a
/// later migration that is not additive makes it refuse again.
async fn additive_migrations_of_a_newer_binary_leave_this_one_serving(store: Store) {
    store.record_migration_for_tests(FUTURE_ADDITIVE).await;
    let status = store.schema_status().await.unwrap();
    assert_eq!(status, SchemaStatus::Compatible(vec![FUTURE_ADDITIVE.to_owned()]));
    assert!(status.serves() && !status.is_current());
    assert!(status.to_string().contains(FUTURE_ADDITIVE), "{status}");
    store.migrate().await.expect("nothing of this binary's to apply, and no refusal");
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::Compatible(vec![FUTURE_ADDITIVE.to_owned()]));

    record_future_migration(&store).await;
    let status = store.schema_status().await.unwrap();
    assert_eq!(status, SchemaStatus::Newer(vec![FUTURE_ADDITIVE.to_owned(), FUTURE_MIGRATION.to_owned()]));
    assert!(!status.serves());
    assert!(matches!(store.migrate().await, Err(StoreError::SchemaNewer { .. })));
}

backend_tests!(unmigrated: an_additive_newer_migration_does_not_excuse_a_missing_one_of_ours);

/// Additive unknown migrations with one of this binary's own missing: not a
/// schema any binary made, so refused rather than served.
async fn an_additive_newer_migration_does_not_excuse_a_missing_one_of_ours(store: Store) {
    store.migrate().await.unwrap();
    store.record_migration_for_tests(FUTURE_ADDITIVE).await;
    store
        .execute_unprepared_for_tests(&format!(
            "DELETE FROM seaql_migrations WHERE version = '{}'",
            Store::newest_migration()
        ))
        .await
        .unwrap();
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::Newer(vec![FUTURE_ADDITIVE.to_owned()]));
}

fn known_migrations() -> Vec<String> {
    use catalog_migrations::Migrator;
    use sea_orm_migration::MigratorTrait;
    Migrator::migrations().iter().map(|migration| migration.name().to_owned()).collect()
}

backend_tests!(unmigrated: an_empty_database_has_every_migration_pending_until_migrated);

async fn an_empty_database_has_every_migration_pending_until_migrated(store: Store) {
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::Pending(known_migrations()));
    store.migrate().await.unwrap();
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::Current);
    // Migrating a current database changes nothing and succeeds.
    store.migrate().await.unwrap();
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::Current);
}

backend_tests!(a_database_migrated_by_a_newer_binary_is_refused_naming_the_migration);

async fn a_database_migrated_by_a_newer_binary_is_refused_naming_the_migration(store: Store) {
    assert_eq!(store.schema_status().await.unwrap(), SchemaStatus::Current);
    record_future_migration(&store).await;
    let status = store.schema_status().await.unwrap();
    assert_eq!(status, SchemaStatus::Newer(vec![FUTURE_MIGRATION.to_owned()]));
    assert!(status.to_string().contains("upgrade the catalog binary"), "{status}");

    let error = store.migrate().await.unwrap_err();
    assert!(matches!(&error, StoreError::SchemaNewer { unknown, .. } if unknown == &[FUTURE_MIGRATION]), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(FUTURE_MIGRATION), "{message}");
    assert!(message.contains("newer version") && message.contains("upgrade the catalog binary"), "{message}");
    assert!(message.contains(&Store::newest_migration()), "names the binary's newest migration: {message}");
}

backend_tests!(unmigrated: a_newer_schema_is_refused_even_with_migrations_of_this_binary_pending);

/// A database where this binary's newest migration is missing but a newer
/// binary's is recorded (a newer binary's schema, partly rolled back by hand):
/// refused, not "repaired" by applying what looks pending.
async fn a_newer_schema_is_refused_even_with_migrations_of_this_binary_pending(store: Store) {
    store.migrate().await.unwrap();
    record_future_migration(&store).await;
    store
        .execute_unprepared_for_tests(&format!(
            "DELETE FROM seaql_migrations WHERE version = '{}'",
            Store::newest_migration()
        ))
        .await
        .unwrap();
    assert!(matches!(store.schema_status().await.unwrap(), SchemaStatus::Newer(_)));
    assert!(matches!(store.migrate().await, Err(StoreError::SchemaNewer { .. })));
}

/// Replicas starting together each run `catalog migrate` (or migrate on
/// start) against one fresh PostgreSQL database, each with its own pool as
/// separate processes have: all succeed and each migration is applied once.
/// Without the migration lock two of them create the same tables and one
/// fails. (SQLite is one process on one host: nothing to race.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_migrating_one_postgres_database_at_once_all_succeed() {
    let Some(database) = TestDatabase::postgres_unmigrated().await else { return };
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(Store::connect(&database.url).await.unwrap());
    }
    let migrations = replicas.iter().map(|replica| replica.migrate());
    for (index, outcome) in futures::future::join_all(migrations).await.into_iter().enumerate() {
        outcome.unwrap_or_else(|error| panic!("replica {index} failed to migrate: {error}"));
    }
    assert_eq!(database.store.schema_status().await.unwrap(), SchemaStatus::Current);
}
