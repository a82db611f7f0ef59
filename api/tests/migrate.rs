//! `catalog migrate` as a deployment runs it: from several replicas at once
//! against one PostgreSQL database, and refusing (like `catalog serve`) a
//! database that a newer binary migrated.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use catalog_store::testing::TestDatabase;
use catalog_store::{SchemaStatus, Store};

/// A migration no binary of today knows, as a newer binary would record it.
const FUTURE_MIGRATION: &str = "m20991231_000001_from_the_future";

/// The binary with only `url` configured: no config file or stray variable
/// from the environment running the tests.
fn catalog(url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_catalog"));
    command
        .env_remove("CATALOG_CONFIG")
        .env("CATALOG_DATABASE__URL", url)
        .env("CATALOG_SERVER__PORT", "0")
        .env("CATALOG_INGESTION__ENABLED", "false")
        .stdin(Stdio::null());
    command
}

/// Runs `command` to its end, killing it (and failing) after 60 seconds.
fn finish(mut command: Command) -> Output {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("still running after a minute: {command:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Several `catalog migrate` processes at once against one fresh PostgreSQL
/// database, as replicas' init containers start together: every one succeeds
/// and the schema is current. (Without the migration lock two of them create
/// the same tables and one fails.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_from_several_processes_at_once_succeeds_everywhere() {
    let Some(database) = TestDatabase::postgres_unmigrated().await else { return };
    let url = database.url.clone();
    let outputs = tokio::task::spawn_blocking(move || {
        let children: Vec<_> = (0..3)
            .map(|_| catalog(&url).arg("migrate").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
            .collect();
        children.into_iter().map(|child| child.wait_with_output().unwrap()).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for output in &outputs {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains("the schema is current"), "{stdout}");
    }
    assert_eq!(database.store.schema_status().await.unwrap(), SchemaStatus::Current);
}

async fn migrate_and_serve_refuse_a_database_migrated_by_a_newer_binary(database: TestDatabase) {
    database
        .store
        .execute_unprepared_for_tests(&format!(
            "INSERT INTO seaql_migrations (version, applied_at) VALUES ('{FUTURE_MIGRATION}', 0)"
        ))
        .await
        .unwrap();
    let url = database.url.clone();
    let outputs = tokio::task::spawn_blocking(move || {
        let mut migrate = catalog(&url);
        migrate.arg("migrate");
        let mut serve = catalog(&url);
        serve.arg("serve");
        let mut serve_without_migrating = catalog(&url);
        serve_without_migrating.arg("serve").env("CATALOG_DATABASE__MIGRATE_ON_START", "false");
        [finish(migrate), finish(serve), finish(serve_without_migrating)]
    })
    .await
    .unwrap();
    for output in outputs {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains(FUTURE_MIGRATION), "names the migration: {stderr}");
        assert!(stderr.contains("upgrade the catalog binary"), "says what to do: {stderr}");
        assert!(stderr.contains(&Store::newest_migration()), "names this binary's newest: {stderr}");
    }
    // Nothing was changed: the unknown migration is still there, alone.
    assert_eq!(database.store.schema_status().await.unwrap(), SchemaStatus::Newer(vec![FUTURE_MIGRATION.to_owned()]));
}

mod migrate_and_serve_refuse_a_database_migrated_by_a_newer_binary {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::migrate_and_serve_refuse_a_database_migrated_by_a_newer_binary(
            catalog_store::testing::TestDatabase::sqlite().await,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let Some(database) = catalog_store::testing::TestDatabase::postgres().await else { return };
        super::migrate_and_serve_refuse_a_database_migrated_by_a_newer_binary(database).await;
    }
}
