//! Facets from the in-memory index against facets in SQL, each test body run
//! on SQLite and on PostgreSQL: the same values, counts and order over a
//! generated catalog and many generated filters, and after changes written
//! here or through another store on the same database (another replica).

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use catalog_domain::Entity;
use catalog_store::testing::one_location_snapshot;
use catalog_store::testing::rng::Rng;
use catalog_store::{
    AuditDecision, AuditEntry, Facet, Filter, FilterField, ListQuery, Predicate, Store, backend_tests,
};
use serde_json::json;

const TYPES: &[&str] = &["service", "Service", "website", "library"];
const LIFECYCLES: &[&str] = &["production", "Production", "experimental", "deprecated"];
const OWNERS: &[&str] = &["team-a", "group:team-b", "Group:default/Team-A", "user:alice", "group:ops/team-c"];
const SYSTEMS: &[&str] = &["sys-a", "system:sys-b", "System:ops/sys-c"];
const TAGS: &[&str] = &["rust", "java", "go", "web", "data"];
const TIERS: &[&str] = &["gold", "silver", "Gold"];
const NAMESPACES: &[&str] = &["default", "default", "ops", "web"];

/// Values filters ask for: stored ones in several cases and ref forms, and some nobody holds.
const WANTED: &[&str] = &[
    "component",
    "Component",
    "COMPONENT",
    "resource",
    "widget",
    "api",
    "default",
    "ops",
    "Web",
    "svc-3",
    "Svc-3",
    "e4",
    "team-a",
    "Team-A",
    "group:team-b",
    "group:default/team-a",
    "group:ops/team-c",
    "ops/team-c",
    "user:alice",
    "user:default/alice",
    "42",
    "production",
    "Production",
    "experimental",
    "service",
    "Service",
    "true",
    "sys-a",
    "system:sys-b",
    "ops/sys-c",
    "rust",
    "go",
    "Rust",
    "gold",
    "Gold",
    "silver",
    "v1",
    "deep",
    "nothing",
];

fn generated_entity(rng: &mut Rng, index: usize) -> Entity {
    let kind = ["Component", "Component", "Resource", "Widget", "API"][rng.below(5)];
    let name = if rng.chance(50) { format!("Svc-{index}") } else { format!("e{index}") };
    let mut metadata = json!({"name": name, "namespace": rng.pick(NAMESPACES)});
    let tags: Vec<&str> = TAGS.iter().copied().filter(|_| rng.chance(30)).collect();
    if !tags.is_empty() {
        metadata["tags"] = json!(tags);
    }
    if rng.chance(60) {
        metadata["labels"] = json!({"tier": rng.pick(TIERS)});
    }
    if rng.chance(30) {
        metadata["annotations"] = json!({"example.com/x": format!("v{}", index % 3)});
    }
    let mut spec = serde_json::Map::new();
    match kind {
        "Component" | "API" => {
            spec.insert("type".into(), json!(rng.pick(TYPES)));
            spec.insert("lifecycle".into(), json!(rng.pick(LIFECYCLES)));
            spec.insert("owner".into(), json!(rng.pick(OWNERS)));
            if kind == "API" {
                spec.insert("definition".into(), json!("openapi: 3.0.0"));
            }
            if rng.chance(50) {
                spec.insert("system".into(), json!(rng.pick(SYSTEMS)));
            }
        }
        "Resource" => {
            spec.insert("type".into(), json!(rng.pick(TYPES)));
            spec.insert("owner".into(), json!(rng.pick(OWNERS)));
        }
        _ => {
            // An unknown kind's spec is free: values that are not strings
            // have facet rows but no typed column, refs that do not parse
            // neither an owner column, and nested objects dotted paths.
            if rng.chance(60) {
                spec.insert("type".into(), if rng.chance(50) { json!(rng.pick(TYPES)) } else { json!(true) });
            }
            if rng.chance(60) {
                spec.insert("lifecycle".into(), if rng.chance(70) { json!(rng.pick(LIFECYCLES)) } else { json!(42) });
            }
            if rng.chance(60) {
                let owner = match rng.below(3) {
                    0 => json!(rng.pick(OWNERS)),
                    1 => json!(42),
                    _ => json!("a:b/c/d"),
                };
                spec.insert("owner".into(), owner);
            }
            if rng.chance(40) {
                spec.insert("nested".into(), json!({"level": rng.pick(&["deep", "Deep"])}));
            }
        }
    }
    let document = json!({"apiVersion": "backstage.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec});
    catalog_domain::validate(&document).unwrap_or_else(|errors| panic!("{document}: {errors:?}"))
}

/// How many fields generated filters compare.
const N_FIELDS: usize = 15;

fn generated_field(rng: &mut Rng) -> FilterField {
    field_number(rng.below(N_FIELDS))
}

fn field_number(number: usize) -> FilterField {
    match number {
        0 => FilterField::Kind,
        1 => FilterField::Namespace,
        2 => FilterField::Name,
        3 => FilterField::Owner,
        4 => FilterField::Lifecycle,
        5 => FilterField::Type,
        6 => FilterField::System,
        7 => FilterField::Tag,
        8 => FilterField::OwnedByTree,
        9 => FilterField::from_key("metadata.labels.tier"),
        10 => FilterField::Path("spec.type".into()),
        11 => FilterField::Path("spec.owner".into()),
        12 => FilterField::from_key("metadata.annotations.example.com/x"),
        13 => FilterField::from_key("spec.nested.level"),
        _ => FilterField::from_key("kind"),
    }
}

fn generated_filter(rng: &mut Rng, depth: usize) -> Filter {
    if depth == 0 || rng.chance(40) {
        let field = generated_field(rng);
        let predicate = if rng.chance(25) {
            Predicate::Exists(rng.chance(50))
        } else {
            Predicate::In((0..rng.below(4)).map(|_| rng.pick(WANTED).to_string()).collect())
        };
        return Filter::Field { field, predicate };
    }
    let children = |rng: &mut Rng| (0..rng.below(4)).map(|_| generated_filter(rng, depth - 1)).collect();
    match rng.below(3) {
        0 => Filter::All(children(rng)),
        1 => Filter::Any(children(rng)),
        _ => Filter::Not(Box::new(generated_filter(rng, depth - 1))),
    }
}

fn field_list(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|key| (*key).to_owned()).collect()
}

const FACET_FIELDS: &[&str] = &[
    "kind",
    "spec.type",
    "metadata.tags",
    "spec.lifecycle",
    "owner",
    "metadata.labels.tier",
    "metadata.namespace",
    "spec.system",
    "spec.nested.level",
    "metadata.annotations.example.com/x",
    "nothing.here",
];

async fn assert_paths_agree(store: &Store, fields: &[String], filter: Option<&Filter>) -> Vec<Facet> {
    let from_index = store.catalog().facets(fields, filter).await.unwrap();
    let from_sql = store.facets_in_sql_for_tests(fields, filter).await.unwrap();
    assert_eq!(from_index, from_sql, "filter {filter:?}");
    from_index
}

async fn the_index_and_sql_agree_over_generated_catalogs_and_filters(store: Store) {
    let mut rng = Rng::new(7);
    let entities: Vec<Entity> = (0..300).map(|index| generated_entity(&mut rng, index)).collect();
    let fields = field_list(FACET_FIELDS);

    // A third of the catalog first, which the index reads from the tables
    // (every column: each field is filtered on)...
    store.snapshot_writer().apply_snapshot(&one_location_snapshot("file", entities[..100].to_vec())).await.unwrap();
    let every_column = Filter::Any(
        (0..N_FIELDS)
            .map(|number| Filter::Field { field: field_number(number), predicate: Predicate::Exists(true) })
            .collect(),
    );
    assert_paths_agree(&store, &fields, Some(&every_column)).await;

    // ...then the rest, changes to half of the first third and ten removals,
    // which it replays from the change log.
    let mut later = entities.clone();
    for entity in later.iter_mut().take(100).step_by(2) {
        entity.metadata.tags = vec!["go".into()];
        entity.metadata.labels.insert("tier".into(), "Gold".into());
        if entity.spec.contains_key("lifecycle") {
            entity.spec.insert("lifecycle".into(), json!("Experimental"));
        }
    }
    later.drain(10..20);
    let summary = store.snapshot_writer().apply_snapshot(&one_location_snapshot("file", later)).await.unwrap();
    assert_eq!((summary.added, summary.removed), (200, 10));
    assert!(summary.updated > 30, "{summary:?}");

    let everything = assert_paths_agree(&store, &fields, None).await;
    let n_kinds: u64 = everything[0].values.iter().map(|(_, n)| n).sum();
    assert_eq!(n_kinds, 290);

    let (mut n_some, mut n_none) = (0, 0);
    for _ in 0..200 {
        let filter = generated_filter(&mut rng, 3);
        let facets = assert_paths_agree(&store, &fields, Some(&filter)).await;
        match facets[0].values.iter().map(|(_, n)| n).sum::<u64>() {
            0 => n_none += 1,
            290 => {}
            _ => n_some += 1,
        }
    }
    // The generated filters select something between nothing and everything
    // often enough for the comparison to mean something.
    assert!(n_some > 40 && n_none > 10, "{n_some} partial, {n_none} empty");

    // Ties are ordered by value in byte order on both paths, upper case first.
    let tiers = assert_paths_agree(&store, &field_list(&["metadata.labels.tier"]), None).await;
    assert!(tiers[0].values.iter().any(|(value, _)| value == "Gold"));

    // More columns than the index holds at once: answered in SQL, alike.
    let many = Filter::Any(
        (0..40)
            .map(|index| Filter::Field {
                field: FilterField::from_key(&format!("metadata.labels.l{index}")),
                predicate: Predicate::Exists(false),
            })
            .collect(),
    );
    let facets = assert_paths_agree(&store, &fields, Some(&many)).await;
    assert_eq!(facets[0].values.iter().map(|(_, n)| n).sum::<u64>(), 290);
}

fn component(name: &str, lifecycle: &str, tags: &[&str]) -> Entity {
    catalog_domain::validate(&json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "tags": tags},
        "spec": {"type": "service", "lifecycle": lifecycle, "owner": "team-a"},
    }))
    .unwrap()
}

fn counts(facet: &Facet) -> Vec<(&str, u64)> {
    facet.values.iter().map(|(value, n)| (value.as_str(), *n)).collect()
}

fn audit(target: &str) -> AuditEntry {
    AuditEntry {
        principal: "token:janitor".into(),
        token_id: None,
        operation: "entity.delete".into(),
        targets: vec![target.into()],
        decision: AuditDecision::Allowed,
        result: "ok".into(),
        request_id: None,
    }
}

async fn the_index_follows_changes_written_here_and_by_another_replica(store: Store) {
    let fields = field_list(&["kind", "spec.lifecycle", "metadata.tags"]);
    let production =
        Filter::Field { field: FilterField::Lifecycle, predicate: Predicate::In(vec!["Production".into()]) };
    let initial: Vec<Entity> = (0..5).map(|index| component(&format!("c{index}"), "production", &["rust"])).collect();
    store.snapshot_writer().apply_snapshot(&one_location_snapshot("file", initial)).await.unwrap();
    let facets = assert_paths_agree(&store, &fields, None).await;
    assert_eq!(counts(&facets[0]), [("Component", 5)]);
    assert_eq!(counts(&assert_paths_agree(&store, &fields, Some(&production)).await[2]), [("rust", 5)]);

    // Another replica updates c1, adds c5 and removes c3 and c4.
    let other = store.open_again().await;
    let changed: Vec<Entity> = vec![
        component("c0", "production", &["rust"]),
        component("c1", "experimental", &["rust", "go"]),
        component("c2", "production", &["rust"]),
        component("c5", "deprecated", &[]),
    ];
    let summary = other.snapshot_writer().apply_snapshot(&one_location_snapshot("file", changed)).await.unwrap();
    assert_eq!((summary.added, summary.updated, summary.removed), (1, 1, 2));
    let facets = assert_paths_agree(&store, &fields, None).await;
    assert_eq!(counts(&facets[0]), [("Component", 4)]);
    assert_eq!(counts(&facets[1]), [("production", 2), ("deprecated", 1), ("experimental", 1)]);
    assert_eq!(counts(&facets[2]), [("rust", 3), ("go", 1)]);
    let facets = assert_paths_agree(&store, &fields, Some(&production)).await;
    assert_eq!(counts(&facets[2]), [("rust", 2)]);

    // A deletion by hand on the other replica, then a re-addition here.
    other
        .snapshot_writer()
        .delete_entity(
            &catalog_domain::EntityRef::parse("component:default/c0").unwrap(),
            &audit("component:default/c0"),
        )
        .await
        .unwrap()
        .unwrap();
    let facets = assert_paths_agree(&store, &fields, Some(&production)).await;
    assert_eq!(counts(&facets[0]), [("Component", 1)]);
    let back: Vec<Entity> = vec![
        component("c0", "Production", &["java"]),
        component("c1", "experimental", &["rust", "go"]),
        component("c2", "production", &["rust"]),
        component("c5", "deprecated", &[]),
    ];
    store.snapshot_writer().apply_snapshot(&one_location_snapshot("file", back)).await.unwrap();
    let facets = assert_paths_agree(&store, &fields, Some(&production)).await;
    assert_eq!(counts(&facets[1]), [("Production", 1), ("production", 1)]);
    assert_eq!(counts(&facets[2]), [("java", 1), ("rust", 1)]);

    // A column first needed after the changes is read at its own snapshot
    // and agrees too.
    let owners = assert_paths_agree(&store, &field_list(&["spec.owner"]), Some(&production)).await;
    assert_eq!(counts(&owners[0]), [("team-a", 2)]);

    // Everything removed.
    other.snapshot_writer().apply_snapshot(&one_location_snapshot("file", Vec::new())).await.unwrap();
    let facets = assert_paths_agree(&store, &fields, None).await;
    assert!(facets.iter().all(|facet| facet.values.is_empty()), "{facets:?}");
}

async fn a_warm_index_answers_facets_with_one_statement(store: Store) {
    let entities: Vec<Entity> =
        (0..20).map(|index| component(&format!("c{index}"), "production", &["rust", "go"])).collect();
    store.snapshot_writer().apply_snapshot(&one_location_snapshot("file", entities)).await.unwrap();
    let fields = field_list(&["kind", "spec.type", "metadata.tags", "spec.lifecycle"]);
    let filter = Filter::Field { field: FilterField::Kind, predicate: Predicate::In(vec!["component".into()]) };
    store.catalog().facets(&fields, Some(&filter)).await.unwrap();
    let before = store.statement_count();
    let facets = store.catalog().facets(&fields, Some(&filter)).await.unwrap();
    // The SQL path runs one statement per field; the index reads the change
    // log after its cursor, and that is all.
    assert_eq!(store.statement_count() - before, 1);
    assert_eq!(counts(&facets[2]), [("go", 20), ("rust", 20)]);
}

/// The in-memory matcher (read scopes, change filters, time travel) and the
/// SQL filter select the same entities, filter for generated filter.
async fn the_matcher_and_sql_agree_over_generated_catalogs_and_filters(store: Store) {
    let mut rng = Rng::new(11);
    let entities: Vec<Entity> = (0..200).map(|index| generated_entity(&mut rng, index)).collect();
    store.snapshot_writer().apply_snapshot(&one_location_snapshot("file", entities)).await.unwrap();
    let catalog = store.catalog();
    let everything = catalog.list_entities(&ListQuery { limit: 1_000, ..ListQuery::default() }).await.unwrap().entities;
    assert_eq!(everything.len(), 200);
    let (mut n_some, mut n_none) = (0, 0);
    for _ in 0..150 {
        let filter = generated_filter(&mut rng, 3);
        let query = ListQuery { filter: Some(filter.clone()), limit: 1_000, ..ListQuery::default() };
        let by_sql: BTreeSet<String> = catalog
            .list_entities(&query)
            .await
            .unwrap()
            .entities
            .iter()
            .map(|stored| stored.entity_ref.to_string())
            .collect();
        let matcher = catalog.entity_matcher(&filter).await.unwrap();
        let by_matcher: BTreeSet<String> = everything
            .iter()
            .filter(|stored| matcher.matches(stored))
            .map(|stored| stored.entity_ref.to_string())
            .collect();
        assert_eq!(by_sql, by_matcher, "{filter:?}");
        match by_sql.len() {
            0 => n_none += 1,
            200 => {}
            _ => n_some += 1,
        }
    }
    // Generated filters select something between nothing and everything
    // often enough for the comparison to mean something.
    assert!(n_some > 30 && n_none > 5, "{n_some} partial, {n_none} empty");
}

backend_tests!(
    the_matcher_and_sql_agree_over_generated_catalogs_and_filters,
    the_index_and_sql_agree_over_generated_catalogs_and_filters,
    the_index_follows_changes_written_here_and_by_another_replica,
    a_warm_index_answers_facets_with_one_statement,
);
