//! The file provider through the engine into a real store, on both backends.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use catalog_domain::EntityRef;
use catalog_ingestion::{Engine, FileProviderConfig, MANAGED_BY_LOCATION, MANAGED_BY_ORIGIN_LOCATION, ProviderConfig};
use catalog_store::{Store, backend_tests};

fn component(name: &str, owner: &str) -> String {
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: service\n  lifecycle: production\n  owner: {owner}\n"
    )
}

fn engine(store: &Store, root: &Path) -> Engine {
    let paths = vec![root.join("catalog-info.yaml").display().to_string()];
    Engine::build(store.snapshot_writer(), store.catalog(), &[ProviderConfig::File(FileProviderConfig { paths })])
        .unwrap()
}

async fn owner_of(store: &Store, name: &str) -> Option<String> {
    let entity_ref = EntityRef::parse(&format!("component:default/{name}")).unwrap();
    let stored = store.catalog().entity_by_ref(&entity_ref).await.unwrap()?;
    stored.entity().unwrap().spec_str("owner").map(str::to_owned)
}

async fn locations_are_followed_and_entities_annotated(store: Store) {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("teams")).unwrap();
    std::fs::write(
        root.path().join("catalog-info.yaml"),
        "apiVersion: backstage.io/v1alpha1\nkind: Location\nmetadata:\n  name: root\nspec:\n  targets: [./teams/a.yaml, ./missing.yaml]\n---\napiVersion: backstage.io/v1alpha1\nkind: Location\nmetadata:\n  name: optional\nspec:\n  target: ./nothing-here.yaml\n  presence: optional\n",
    )
    .unwrap();
    // A cycle back to the root must not loop.
    std::fs::write(
        root.path().join("teams/a.yaml"),
        format!("{}---\napiVersion: backstage.io/v1alpha1\nkind: Location\nmetadata:\n  name: back\nspec:\n  target: ../catalog-info.yaml\n", component("a", "team-a")),
    )
    .unwrap();
    let runs = engine(&store, root.path()).run_once().await.unwrap();
    assert_eq!(runs[0].summary.added, 4);
    assert_eq!(runs[0].n_location_errors, 1, "missing.yaml is required and absent");

    let a = store.catalog().entity_by_ref(&EntityRef::parse("component:default/a").unwrap()).await.unwrap().unwrap();
    let annotations = &a.entity().unwrap().metadata.annotations;
    assert!(annotations[MANAGED_BY_LOCATION].ends_with("/teams/a.yaml"), "{annotations:?}");
    assert!(annotations[MANAGED_BY_ORIGIN_LOCATION].ends_with("/catalog-info.yaml"));
    let locations = store.catalog().locations().await.unwrap();
    let missing = locations.iter().find(|location| location.target.ends_with("missing.yaml")).unwrap();
    assert_eq!(missing.error.as_deref(), Some("the file does not exist"));
    assert!(!locations.iter().any(|location| location.target.ends_with("nothing-here.yaml")));
}

async fn a_broken_file_keeps_its_entities_and_a_deleted_one_removes_them(store: Store) {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("catalog-info.yaml"),
        "apiVersion: backstage.io/v1alpha1\nkind: Location\nmetadata:\n  name: root\nspec:\n  targets: [./a.yaml, ./b.yaml]\n",
    )
    .unwrap();
    std::fs::write(root.path().join("a.yaml"), component("a", "team-a")).unwrap();
    std::fs::write(
        root.path().join("b.yaml"),
        format!("{}---\n{}", component("b", "team-b"), component("c", "team-c")),
    )
    .unwrap();
    let engine = engine(&store, root.path());
    engine.run_once().await.unwrap();
    assert_eq!(owner_of(&store, "b").await.as_deref(), Some("team-b"));

    // b.yaml breaks: one document is no longer YAML, the other changes validly.
    std::fs::write(root.path().join("b.yaml"), format!("{}---\nkind: [broken\n", component("b", "team-new"))).unwrap();
    let runs = engine.run_once().await.unwrap();
    assert_eq!(runs[0].summary.removed, 0);
    assert_eq!(owner_of(&store, "b").await.as_deref(), Some("team-new"));
    assert_eq!(owner_of(&store, "c").await.as_deref(), Some("team-c"), "c stays while its file cannot be parsed");
    let locations = store.catalog().locations().await.unwrap();
    let b = locations.iter().find(|location| location.target.ends_with("/b.yaml")).unwrap();
    assert!(b.error.as_deref().unwrap().contains("document 2 (line 10)"), "{:?}", b.error);

    // a.yaml turns invalid: the last good version stays and carries the errors.
    std::fs::write(root.path().join("a.yaml"), component("a", "team-a").replace("  owner: team-a\n", "")).unwrap();
    engine.run_once().await.unwrap();
    let a = store.catalog().entity_by_ref(&EntityRef::parse("component:default/a").unwrap()).await.unwrap().unwrap();
    assert_eq!(a.entity().unwrap().spec_str("owner"), Some("team-a"));
    assert!(a.errors[0].contains("spec.owner") && a.errors[0].contains("required"), "{:?}", a.errors);

    std::fs::remove_file(root.path().join("a.yaml")).unwrap();
    std::fs::write(root.path().join("b.yaml"), component("b", "team-new")).unwrap();
    let runs = engine.run_once().await.unwrap();
    assert_eq!(runs[0].summary.removed, 2, "a (file deleted) and c (document gone)");
    assert!(owner_of(&store, "a").await.is_none());
}

async fn a_location_file_that_breaks_keeps_everything_it_led_to(store: Store) {
    let root = tempfile::tempdir().unwrap();
    let location = "apiVersion: backstage.io/v1alpha1\nkind: Location\nmetadata:\n  name: root\nspec:\n  targets: [./teams/*.yaml]\n";
    std::fs::create_dir_all(root.path().join("teams")).unwrap();
    std::fs::write(root.path().join("catalog-info.yaml"), location).unwrap();
    std::fs::write(root.path().join("teams/a.yaml"), component("a", "team-a")).unwrap();
    let engine = engine(&store, root.path());
    assert_eq!(engine.run_once().await.unwrap()[0].summary.added, 2);

    // A typo in the root Location hides what it lists: nothing may go.
    std::fs::write(root.path().join("catalog-info.yaml"), format!("{location}  oops: [\n")).unwrap();
    let runs = engine.run_once().await.unwrap();
    assert_eq!(runs[0].summary.removed, 0);
    assert_eq!(owner_of(&store, "a").await.as_deref(), Some("team-a"));
}

async fn two_file_providers_keep_their_own_entities(store: Store) {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    std::fs::write(first.path().join("catalog-info.yaml"), component("a", "team-a")).unwrap();
    std::fs::write(second.path().join("catalog-info.yaml"), component("b", "team-b")).unwrap();
    let configs: Vec<ProviderConfig> = [first.path(), second.path()]
        .iter()
        .map(|root| {
            ProviderConfig::File(FileProviderConfig {
                paths: vec![root.join("catalog-info.yaml").display().to_string()],
            })
        })
        .collect();
    let engine = Engine::build(store.snapshot_writer(), store.catalog(), &configs).unwrap();
    engine.run_once().await.unwrap();
    let runs = engine.run_once().await.unwrap();
    assert_eq!(runs.iter().map(|run| run.provider.as_str()).collect::<Vec<_>>(), ["file", "file-2"]);
    assert!(runs.iter().all(|run| run.summary.removed == 0 && run.summary.unchanged == 1), "{runs:?}");
    assert!(owner_of(&store, "a").await.is_some() && owner_of(&store, "b").await.is_some());
}

backend_tests!(
    a_burst_of_refreshes_reads_the_source_at_most_twice,
    two_file_providers_keep_their_own_entities,
    a_location_file_that_breaks_keeps_everything_it_led_to,
    locations_are_followed_and_entities_annotated,
    a_broken_file_keeps_its_entities_and_a_deleted_one_removes_them
);

/// Refreshes that arrive while a run is under way share the next run: eight
/// at once read the source at most twice, not eight times.
async fn a_burst_of_refreshes_reads_the_source_at_most_twice(store: Store) {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("catalog-info.yaml"), component("a", "team-a")).unwrap();
    let engine = engine(&store, root.path());
    engine.run_once().await.unwrap();
    // Counted by the engine per run (read and apply), not by statements:
    // how many statements one run takes varies with the database's load.
    let runs_so_far = || engine.health()[0].runs_complete;
    let before = runs_so_far();
    let runs = futures::future::join_all((0..8).map(|_| engine.run_provider("file"))).await;
    assert!(runs.iter().all(|run| matches!(run, Ok(Some(run)) if run.summary.unchanged == 1)), "{runs:?}");
    let spent = runs_so_far() - before;
    assert!((1..=2).contains(&spent), "{spent} runs for eight refreshes");
    assert!(engine.run_provider("nope").await.unwrap().is_none());
}
