//! The store's behaviour, each test body run on SQLite and on PostgreSQL.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use catalog_domain::{Entity, EntityRef, RelationType};
use catalog_store::testing::TestDatabase;
use catalog_store::{
    ChangeType, Filter, FilterField, InvalidEntity, ListQuery, LocationStatus, OrderField, Predicate, Snapshot,
    SnapshotEntity, Store, TargetBodies, backend_tests,
};
use serde_json::json;

fn component(name: &str, owner: &str, extra: serde_json::Value) -> Entity {
    let mut spec = json!({"type": "service", "lifecycle": "production", "owner": owner});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    catalog_domain::validate(&json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "tags": ["rust"], "description": format!("The {name} service")},
        "spec": spec,
    }))
    .unwrap()
}

fn group(name: &str) -> Entity {
    catalog_domain::validate(&json!({
        "apiVersion": "backstage.io/v1alpha1", "kind": "Group",
        "metadata": {"name": name}, "spec": {"type": "team", "children": []}
    }))
    .unwrap()
}

fn snapshot(provider: &str, entities: Vec<(Entity, &str)>) -> Snapshot {
    let mut locations: Vec<String> = entities.iter().map(|(_, location)| (*location).to_owned()).collect();
    locations.sort();
    locations.dedup();
    Snapshot {
        provider: provider.into(),
        entities: entities
            .into_iter()
            .map(|(entity, location)| SnapshotEntity::new(entity, Some(location.into())))
            .collect(),
        invalid: Vec::new(),
        locations: locations
            .into_iter()
            .map(|target| LocationStatus { target, n_entities: 1, ..Default::default() })
            .collect(),
        ..Default::default()
    }
}

fn reference(text: &str) -> EntityRef {
    EntityRef::parse(text).unwrap()
}

async fn a_snapshot_adds_updates_and_removes_with_one_change_each(store: Store) {
    let first = snapshot(
        "file",
        vec![(component("a", "team-a", json!({})), "a.yaml"), (component("b", "team-a", json!({})), "b.yaml")],
    );
    let summary = store.snapshot_writer().apply_snapshot(&first).await.unwrap();
    assert_eq!((summary.added, summary.updated, summary.removed), (2, 0, 0));

    let second = snapshot("file", vec![(component("a", "team-b", json!({})), "a.yaml")]);
    let summary = store.snapshot_writer().apply_snapshot(&second).await.unwrap();
    assert_eq!((summary.added, summary.updated, summary.removed), (0, 1, 1));

    let changes = store.change_feed().changes_after(0, 100).await.unwrap();
    let kinds: Vec<(String, ChangeType)> =
        changes.iter().map(|change| (change.entity_ref.to_string(), change.change_type)).collect();
    assert_eq!(kinds.len(), 4);
    assert!(kinds.contains(&("component:default/a".into(), ChangeType::Updated)));
    assert!(kinds.contains(&("component:default/b".into(), ChangeType::Removed)));
    assert!(changes.windows(2).all(|pair| pair[0].sequence < pair[1].sequence));
    let removed = changes.iter().find(|change| change.change_type == ChangeType::Removed).unwrap();
    assert!(removed.entity.is_none());

    let a = store.catalog().entity_by_ref(&reference("component:default/a")).await.unwrap().unwrap();
    assert_eq!(a.entity().unwrap().spec["owner"], "team-b");
    assert!(store.catalog().entity_by_ref(&reference("component:default/b")).await.unwrap().is_none());
}

/// PostgreSQL has no foreign key from the index rows to their entity (it
/// doubled the cost of writing them): every path that rewrites or deletes an
/// entity deletes its relation and facet rows itself.
async fn no_index_row_outlives_its_entity(store: Store) {
    let dependent = |name: &str, owner: &str| component(name, owner, json!({"dependsOn": ["component:b"]}));
    let first = snapshot(
        "file",
        vec![
            (dependent("a", "team-a"), "a.yaml"),
            (dependent("b", "team-a"), "b.yaml"),
            (dependent("c", "team-a"), "c.yaml"),
        ],
    );
    store.snapshot_writer().apply_snapshot(&first).await.unwrap();
    // Updated (a), removed (b), deleted through the API (c).
    let second = snapshot("file", vec![(dependent("a", "team-b"), "a.yaml"), (dependent("c", "team-a"), "c.yaml")]);
    let summary = store.snapshot_writer().apply_snapshot(&second).await.unwrap();
    assert_eq!((summary.updated, summary.removed), (1, 1));
    let audit = catalog_store::AuditEntry {
        principal: "token:janitor".into(),
        token_id: None,
        operation: "entity.delete".into(),
        targets: vec!["component:default/c".into()],
        decision: catalog_store::AuditDecision::Allowed,
        result: "ok".into(),
        request_id: None,
    };
    store.snapshot_writer().delete_entity(&reference("component:default/c"), &audit).await.unwrap().unwrap();
    assert_eq!(store.orphaned_index_rows_for_tests().await, 0);
    let edges = store.catalog().relations_from(&[reference("component:default/a")], None).await.unwrap();
    assert!(!edges.is_empty(), "the survivor keeps its own rows");
}

async fn an_unchanged_entity_is_not_rewritten_and_keeps_its_uid(store: Store) {
    let first = snapshot("file", vec![(component("a", "team-a", json!({})), "a.yaml")]);
    store.snapshot_writer().apply_snapshot(&first).await.unwrap();
    let before = store.catalog().entity_by_ref(&reference("component:default/a")).await.unwrap().unwrap();
    let summary = store.snapshot_writer().apply_snapshot(&first).await.unwrap();
    assert_eq!((summary.unchanged, summary.added, summary.updated), (1, 0, 0));
    assert_eq!(summary.rows_written, 0, "an unchanged snapshot writes nothing");
    assert_eq!(store.change_feed().changes_after(0, 100).await.unwrap().len(), 1);

    store
        .snapshot_writer()
        .apply_snapshot(&snapshot("file", vec![(component("a", "team-z", json!({})), "a.yaml")]))
        .await
        .unwrap();
    let after = store.catalog().entity_by_ref(&reference("component:default/a")).await.unwrap().unwrap();
    assert_eq!(before.entity().unwrap().metadata.uid, after.entity().unwrap().metadata.uid);
    assert_ne!(before.entity().unwrap().metadata.etag, after.entity().unwrap().metadata.etag);
    assert_eq!(before.created_at, after.created_at);
}

async fn an_invalid_new_version_keeps_the_last_good_one_with_its_errors(store: Store) {
    store
        .snapshot_writer()
        .apply_snapshot(&snapshot("file", vec![(component("a", "team-a", json!({})), "a.yaml")]))
        .await
        .unwrap();
    let mut broken = snapshot("file", vec![]);
    broken.invalid.push(InvalidEntity {
        entity_ref: reference("component:default/a"),
        location: Some("a.yaml".into()),
        errors: vec!["spec.owner is required [rule required]".into()],
    });
    broken.locations.push(LocationStatus { target: "a.yaml".into(), ..Default::default() });
    let summary = store.snapshot_writer().apply_snapshot(&broken).await.unwrap();
    assert_eq!((summary.removed, summary.invalid), (0, 1));
    let kept = store.catalog().entity_by_ref(&reference("component:default/a")).await.unwrap().unwrap();
    assert_eq!(kept.entity().unwrap().spec["owner"], "team-a");
    assert_eq!(kept.errors, ["spec.owner is required [rule required]"]);

    store
        .snapshot_writer()
        .apply_snapshot(&snapshot("file", vec![(component("a", "team-a", json!({})), "a.yaml")]))
        .await
        .unwrap();
    let healed = store.catalog().entity_by_ref(&reference("component:default/a")).await.unwrap().unwrap();
    assert!(healed.errors.is_empty());
}

async fn a_location_that_fails_to_read_keeps_its_entities(store: Store) {
    store
        .snapshot_writer()
        .apply_snapshot(&snapshot(
            "file",
            vec![(component("a", "team-a", json!({})), "a.yaml"), (component("b", "team-a", json!({})), "b.yaml")],
        ))
        .await
        .unwrap();
    let mut failing = snapshot("file", vec![(component("b", "team-a", json!({})), "b.yaml")]);
    failing.locations.push(LocationStatus {
        target: "a.yaml".into(),
        error: Some("permission denied".into()),
        n_entities: 0,
        keeps_entities: true,
    });
    let summary = store.snapshot_writer().apply_snapshot(&failing).await.unwrap();
    assert_eq!(summary.removed, 0);
    assert!(store.catalog().entity_by_ref(&reference("component:default/a")).await.unwrap().is_some());
    let locations = store.catalog().locations().await.unwrap();
    let a = locations.iter().find(|location| location.target == "a.yaml").unwrap();
    assert_eq!(a.error.as_deref(), Some("permission denied"));
}

async fn a_ref_claimed_by_two_sources_stays_with_the_first_and_is_recorded(store: Store) {
    store
        .snapshot_writer()
        .apply_snapshot(&snapshot("file", vec![(component("a", "team-a", json!({})), "a.yaml")]))
        .await
        .unwrap();
    let summary = store
        .snapshot_writer()
        .apply_snapshot(&snapshot("github", vec![(component("a", "team-b", json!({})), "repo/a.yaml")]))
        .await
        .unwrap();
    assert_eq!((summary.conflicts, summary.added), (1, 0));
    let kept = store.catalog().entity_by_ref(&reference("component:default/a")).await.unwrap().unwrap();
    assert_eq!((kept.provider.as_str(), kept.entity().unwrap().spec["owner"].as_str()), ("file", Some("team-a")));
    let conflicts = store.catalog().conflicts().await.unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!((conflicts[0].owner_provider.as_str(), conflicts[0].claimant_provider.as_str()), ("file", "github"));
    assert_eq!(conflicts[0].claimant_location.as_deref(), Some("repo/a.yaml"));
    // The claimant's next run re-records rather than duplicates.
    store
        .snapshot_writer()
        .apply_snapshot(&snapshot("github", vec![(component("a", "team-b", json!({})), "repo/a.yaml")]))
        .await
        .unwrap();
    assert_eq!(store.catalog().conflicts().await.unwrap().len(), 1);
}

async fn relations_are_stored_both_ways_and_dangling_targets_stay_visible(store: Store) {
    let a = component("a", "team-a", json!({"dependsOn": ["component:b", "component:ghost"]}));
    store
        .snapshot_writer()
        .apply_snapshot(&snapshot(
            "file",
            vec![(a, "a.yaml"), (component("b", "team-a", json!({})), "b.yaml"), (group("team-a"), "g.yaml")],
        ))
        .await
        .unwrap();
    let edges = store
        .catalog()
        .relations_from(&[reference("component:default/a")], Some(&[RelationType::DependsOn]))
        .await
        .unwrap();
    let targets: Vec<&str> = edges.iter().map(|edge| edge.target_ref.as_str()).collect();
    assert_eq!(targets, ["component:default/b", "component:default/ghost"]);
    let owned = store
        .catalog()
        .relations_from(&[reference("group:default/team-a")], Some(&[RelationType::OwnerOf]))
        .await
        .unwrap();
    assert_eq!(owned.len(), 2);
    let dependents = store.catalog().relations_from(&[reference("component:default/b")], None).await.unwrap();
    assert!(
        dependents.iter().any(|edge| edge.relation_type == RelationType::DependencyOf
            && edge.target_ref.as_str() == "component:default/a")
    );
}

/// Edges and their targets in one call: in source, type and target-ref
/// order, without dangling targets or types not asked for, a target
/// shared by several sources held once.
async fn related_entities_come_with_their_edges_each_target_once(store: Store) {
    let a = component("a", "team-a", json!({"dependsOn": ["component:c", "component:b", "component:ghost"]}));
    let entities = vec![
        (a, "a.yaml"),
        (component("b", "team-a", json!({})), "b.yaml"),
        (component("c", "team-a", json!({"system": "missing"})), "c.yaml"),
        (group("team-a"), "g.yaml"),
    ];
    store.snapshot_writer().apply_snapshot(&snapshot("file", entities)).await.unwrap();
    let sources = [reference("component:default/a"), reference("component:default/c")];
    let related = store
        .catalog()
        .related_entities(
            &sources,
            &[RelationType::OwnedBy, RelationType::DependsOn, RelationType::PartOf],
            TargetBodies::Read,
        )
        .await
        .unwrap();
    let id_of = |entity_ref: &str| {
        related.targets.values().find(|stored| stored.entity_ref.to_string() == entity_ref).unwrap().id
    };
    let edges: Vec<(&str, &str, i64)> = related
        .edges
        .iter()
        .map(|(source, relation_type, id)| (source.as_str(), relation_type.as_str(), *id))
        .collect();
    let team = id_of("group:default/team-a");
    assert_eq!(
        edges,
        [
            ("component:default/a", "dependsOn", id_of("component:default/b")),
            ("component:default/a", "dependsOn", id_of("component:default/c")),
            ("component:default/a", "ownedBy", team),
            ("component:default/c", "ownedBy", team),
        ],
        "the ghost and the missing system have no target"
    );
    assert_eq!(related.targets.len(), 3, "team-a once for both sources");
    assert_eq!(related.targets[&team].entity().unwrap().metadata.name, "team-a");

    let none =
        store.catalog().related_entities(&sources, &[RelationType::HasMember], TargetBodies::Read).await.unwrap();
    assert!(none.edges.is_empty() && none.targets.is_empty());

    // A target read without its body has it from memory once decoded (above).
    let refs = [reference("component:default/c"), reference("component:default/nowhere")];
    let (_, remembered) =
        store.catalog().entities_with_related(&refs, &[RelationType::OwnedBy], TargetBodies::Skip).await.unwrap();
    assert!(remembered.targets[&team].has_body());

    // The entities themselves come in the same statement, keyed by ref;
    // refs not in the catalog are missing, and their edges are none. (A
    // second pool, as another process has: nothing in memory yet.)
    let store = store.open_again().await;
    let before = store.statement_count();
    let (found, with_entity) =
        store.catalog().entities_with_related(&refs, &[RelationType::OwnedBy], TargetBodies::Skip).await.unwrap();
    assert_eq!(store.statement_count() - before, 1, "one statement for the entities and their edges");
    assert_eq!(found.keys().collect::<Vec<_>>(), [&refs[0]]);
    assert_eq!(found[&refs[0]].entity().unwrap().metadata.name, "c");
    let edges: Vec<(&str, i64)> = with_entity.edges.iter().map(|(source, _, id)| (source.as_str(), *id)).collect();
    assert_eq!(edges, [("component:default/c", team)]);
    assert_eq!(with_entity.targets.len(), 1);
    // Targets read without their bodies: the ref and bookkeeping are there,
    // the body is filled in from a whole read of the same entity only.
    let target = &with_entity.targets[&team];
    assert_eq!((target.entity_ref.as_str(), target.provider.as_str()), ("group:default/team-a", "file"));
    assert!(!target.has_body() && target.entity().is_err());
    assert!(found[&refs[0]].has_body(), "the sources come whole");
    let whole = store.catalog().entity_by_ref(&target.entity_ref).await.unwrap().unwrap();
    assert!(target.fill_body(&found[&refs[0]]).is_err(), "not from another entity");
    assert_eq!(target.fill_body(&whole).unwrap().metadata.name, "team-a");
    assert!(target.has_body() && target.entity().is_ok());
    let (found, nothing) = store.catalog().entities_with_related(&refs[..1], &[], TargetBodies::Skip).await.unwrap();
    assert_eq!(found.len(), 1);
    assert!(nothing.edges.is_empty(), "no types, no edges");
}

async fn pages_are_filtered_sorted_counted_and_searchable(store: Store) {
    let mut entities = Vec::new();
    for index in 0..25 {
        let owner = if index % 2 == 0 { "team-even" } else { "team-odd" };
        let lifecycle = if index < 5 { "experimental" } else { "production" };
        let mut entity = component(&format!("svc-{index:02}"), owner, json!({"lifecycle": lifecycle}));
        entity.metadata.labels.insert("acme.com/tier".into(), format!("{}", index % 3));
        entities.push((entity, "all.yaml"));
    }
    entities.push((group("team-even"), "all.yaml"));
    store.snapshot_writer().apply_snapshot(&snapshot("file", entities)).await.unwrap();

    let components = Filter::Field { field: FilterField::Kind, predicate: Predicate::In(vec!["component".into()]) };
    let page = store
        .catalog()
        .list_entities(&ListQuery { filter: Some(components.clone()), limit: 10, offset: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page.total_count, 25);
    let names: Vec<&str> = page.entities.iter().map(|stored| stored.entity().unwrap().metadata.name.as_str()).collect();
    assert_eq!(names.first(), Some(&"svc-10"));
    assert_eq!(names.len(), 10);

    let even = Filter::All(vec![
        components.clone(),
        Filter::Field { field: FilterField::Owner, predicate: Predicate::In(vec!["Team-Even".into()]) },
        Filter::Not(Box::new(Filter::Field {
            field: FilterField::Lifecycle,
            predicate: Predicate::In(vec!["experimental".into()]),
        })),
    ]);
    let page = store
        .catalog()
        .list_entities(&ListQuery {
            filter: Some(even),
            limit: 100,
            order: OrderField::Name,
            descending: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total_count, 10);
    assert_eq!(page.entities[0].entity().unwrap().metadata.name, "svc-24");

    let labelled = Filter::Any(vec![
        Filter::Field {
            field: FilterField::from_key("metadata.labels.acme.com/tier"),
            predicate: Predicate::In(vec!["0".into()]),
        },
        Filter::Field { field: FilterField::Kind, predicate: Predicate::In(vec!["group".into()]) },
    ]);
    let page = store
        .catalog()
        .list_entities(&ListQuery { filter: Some(labelled), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page.total_count, 9 + 1);

    // Negating a typed column keeps the entities that do not have it at all.
    let outside = Filter::Not(Box::new(Filter::Field {
        field: FilterField::System,
        predicate: Predicate::In(vec!["elsewhere".into()]),
    }));
    let page = store
        .catalog()
        .list_entities(&ListQuery { filter: Some(outside), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page.total_count, 26);

    let unlabelled = Filter::Field {
        field: FilterField::from_key("metadata.labels.acme.com/tier"),
        predicate: Predicate::Exists(false),
    };
    let page = store
        .catalog()
        .list_entities(&ListQuery { filter: Some(unlabelled), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page.total_count, 1);

    let page = store
        .catalog()
        .list_entities(&ListQuery { search: Some("SVC-1 service".into()), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page.total_count, 10);
    let page = store
        .catalog()
        .list_entities(&ListQuery { search: Some("100%".into()), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page.total_count, 0);

    let facets = store
        .catalog()
        .facets(&["kind".into(), "spec.lifecycle".into(), "metadata.tags".into()], Some(&components))
        .await
        .unwrap();
    assert_eq!(facets[0].values, [("Component".to_owned(), 25)]);
    assert_eq!(facets[1].values, [("production".to_owned(), 20), ("experimental".to_owned(), 5)]);
    assert_eq!(facets[2].values, [("rust".to_owned(), 25)]);
}

async fn many_refs_are_fetched_in_one_statement(store: Store) {
    let entities = (0..30).map(|index| (component(&format!("c{index}"), "team-a", json!({})), "x.yaml")).collect();
    store.snapshot_writer().apply_snapshot(&snapshot("file", entities)).await.unwrap();
    let refs: Vec<EntityRef> = (0..40).map(|index| reference(&format!("component:default/c{index}"))).collect();
    let before = store.statement_count();
    let found = store.catalog().entities_by_refs(&refs).await.unwrap();
    assert_eq!(store.statement_count() - before, 1);
    assert_eq!(found.len(), 30);
}

async fn a_large_snapshot_is_written_in_statements_under_the_bind_parameter_limits(store: Store) {
    // 3,000 entities hold about 40,000 facet rows (120,000 parameters in one
    // statement) and 9,000 relation rows: more than PostgreSQL's 65,535 limit
    // unless the writes are batched.
    let entities: Vec<(Entity, &str)> = (0..3_000)
        .map(|index| {
            let mut entity = component(&format!("c{index}"), "team-a", json!({"dependsOn": ["component:c0"]}));
            for label in 0..8 {
                entity.metadata.labels.insert(format!("acme.com/l{label}"), format!("v{index}"));
            }
            (entity, "big.yaml")
        })
        .collect();
    let before = store.statement_count();
    let summary = store.snapshot_writer().apply_snapshot(&snapshot("file", entities)).await.unwrap();
    assert_eq!(summary.added, 3_000);
    assert!(store.statement_count() - before < 200, "{} statements", store.statement_count() - before);
    let dependents = store
        .catalog()
        .relations_from(&[reference("component:default/c0")], Some(&[RelationType::DependencyOf]))
        .await
        .unwrap();
    assert_eq!(dependents.len(), 3_000, "c0 included: it depends on itself, as written");
    let page = store
        .catalog()
        .list_entities(&ListQuery { search: Some("c2999".into()), limit: 5, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page.total_count, 1);
}

async fn a_partial_snapshot_changes_only_what_it_covers(store: Store) {
    let repo_a =
        |name: &str| (component(name, "team-a", json!({})), "url:https://github.example/acme/a/blob/main/x.yaml");
    let repo_b =
        |name: &str| (component(name, "team-b", json!({})), "url:https://github.example/acme/b/blob/main/x.yaml");
    store
        .snapshot_writer()
        .apply_snapshot(&snapshot("github", vec![repo_a("a1"), repo_a("a2"), repo_b("b1")]))
        .await
        .unwrap();

    // Repository a was read alone: a2 is gone from it, b1 is not its to remove,
    // and its claim on b1 leaves b1 with repository b.
    let mut partial = snapshot("github", vec![repo_a("a1"), repo_a("b1")]);
    partial.covers = Some(vec!["url:https://github.example/acme/a/".into()]);
    let summary = store.snapshot_writer().apply_snapshot(&partial).await.unwrap();
    assert_eq!((summary.removed, summary.conflicts, summary.unchanged), (1, 1, 1), "{summary:?}");
    assert!(store.catalog().entity_by_ref(&reference("component:default/a2")).await.unwrap().is_none());
    let b1 = store.catalog().entity_by_ref(&reference("component:default/b1")).await.unwrap().unwrap();
    assert_eq!(b1.entity().unwrap().spec["owner"].as_str(), Some("team-b"));
    let conflicts = store.catalog().conflicts().await.unwrap();
    assert_eq!(conflicts[0].owner_location.as_deref(), Some("url:https://github.example/acme/b/blob/main/x.yaml"));

    // Repository a gone: its entities and location go; b's stay, and so does
    // the location row of b that this snapshot does not cover.
    let mut gone = snapshot("github", Vec::new());
    gone.covers = Some(vec!["url:https://github.example/acme/a/".into()]);
    let summary = store.snapshot_writer().apply_snapshot(&gone).await.unwrap();
    assert_eq!(summary.removed, 1);
    assert!(store.catalog().entity_by_ref(&reference("component:default/b1")).await.unwrap().is_some());
    let targets: Vec<String> =
        store.catalog().locations().await.unwrap().into_iter().map(|location| location.target).collect();
    assert_eq!(targets, ["url:https://github.example/acme/b/blob/main/x.yaml"]);
    assert!(store.catalog().conflicts().await.unwrap().is_empty(), "the claimant location's conflict went with it");
}

/// Reads hand back the stored body undecoded: the ref and bookkeeping of a
/// row whose body does not decode (edited by hand) still read, its body is
/// `Corrupt` naming it when asked for, and its neighbours in the batch are
/// whole, their `raw` with the relations their specs state.
async fn a_body_is_decoded_only_when_read_and_a_corrupt_one_names_its_entity(store: Store) {
    let entities = vec![
        (component("good", "team-a", json!({"system": "shop"})), "x.yaml"),
        (component("broken", "team-a", json!({})), "x.yaml"),
    ];
    store.snapshot_writer().apply_snapshot(&snapshot("file", entities)).await.unwrap();
    store
        .execute_unprepared_for_tests(
            r#"UPDATE entities SET body = '{"kind": 5}' WHERE entity_ref = 'component:default/broken'"#,
        )
        .await
        .unwrap();
    let refs = [reference("component:default/good"), reference("component:default/broken")];
    let found = store.catalog().entities_by_refs(&refs).await.unwrap();
    assert_eq!(found.len(), 2, "a body that does not decode does not hide its row");

    let broken = &found[&refs[1]];
    assert_eq!((broken.provider.as_str(), broken.location.as_deref()), ("file", Some("x.yaml")));
    let error = broken.entity().unwrap_err().to_string();
    assert!(error.contains("component:default/broken"), "{error}");
    assert!(broken.raw().is_err());
    let kind = Filter::Field { field: FilterField::Kind, predicate: Predicate::In(vec!["component".into()]) };
    let matcher = store.catalog().entity_matcher(&kind).await.unwrap();
    assert!(!matcher.matches(broken), "a restricted reader never sees a body it cannot read");
    assert!(matcher.matches(&found[&refs[0]]));

    let good = &found[&refs[0]];
    assert_eq!(good.entity().unwrap().metadata.description.as_deref(), Some("The good service"));
    assert!(good.entity().unwrap().metadata.uid.is_some(), "the catalog's uid is in the body");
    assert!(good.entity().unwrap().relations.is_empty(), "nothing derived on the way out");
    let raw = good.raw().unwrap();
    assert_eq!(
        raw["relations"],
        json!([
            {"type": "ownedBy", "targetRef": "group:default/team-a"},
            {"type": "partOf", "targetRef": "system:default/shop"},
        ]),
        "{raw}"
    );
    assert_eq!(raw["metadata"]["etag"], json!(good.entity().unwrap().metadata.etag));
}

/// A body read once is served from memory while its row names the same
/// version (row and etag): the reads after it leave the body out of their
/// statement, shown here by a body edited behind the catalog's back without
/// a new etag, which they never see. A change written by another process
/// (its own pool) names a new etag and is read at once, by every kind of read.
async fn a_body_read_again_comes_from_memory_until_its_entity_changes(store: Store) {
    let entities = vec![(component("c", "team-a", json!({"system": "one"})), "x.yaml")];
    store.snapshot_writer().apply_snapshot(&snapshot("file", entities)).await.unwrap();
    let refs = [reference("component:default/c")];
    let system = |stored: &catalog_store::StoredEntity| stored.entity().unwrap().spec["system"].clone();
    let first = store.catalog().entities_by_refs(&refs).await.unwrap();
    assert_eq!(system(&first[&refs[0]]), json!("one"));

    store
        .execute_unprepared_for_tests(
            r#"UPDATE entities SET body = '{"kind": 5}' WHERE entity_ref = 'component:default/c'"#,
        )
        .await
        .unwrap();
    let before = store.statement_count();
    let again = store.catalog().entities_by_refs(&refs).await.unwrap();
    assert_eq!(store.statement_count() - before, 1);
    assert_eq!(system(&again[&refs[0]]), json!("one"), "the body came from memory");
    let (with_related, _) =
        store.catalog().entities_with_related(&refs, &[RelationType::OwnedBy], TargetBodies::Skip).await.unwrap();
    assert_eq!(system(&with_related[&refs[0]]), json!("one"));
    let page = store.catalog().list_entities(&ListQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(system(&page.entities[0]), json!("one"), "a page decodes no body memory holds");

    let other_process = store.open_again().await;
    let write = |system: &str| {
        let entities = vec![(component("c", "team-a", json!({"system": system})), "x.yaml")];
        let writer = other_process.snapshot_writer();
        async move { writer.apply_snapshot(&snapshot("file", entities)).await.unwrap() }
    };
    write("two").await;
    let (with_related, related) =
        store.catalog().entities_with_related(&refs, &[RelationType::OwnedBy], TargetBodies::Skip).await.unwrap();
    assert_eq!(system(&with_related[&refs[0]]), json!("two"), "a new etag is a new version, read from the database");
    assert!(related.edges.is_empty(), "team-a is not in the catalog");
    let page = store.catalog().list_entities(&ListQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(system(&page.entities[0]), json!("two"));
    write("three").await;
    let after = store.catalog().entities_by_refs(&refs).await.unwrap();
    assert_eq!(system(&after[&refs[0]]), json!("three"));
}

backend_tests!(
    a_body_read_again_comes_from_memory_until_its_entity_changes,
    a_body_is_decoded_only_when_read_and_a_corrupt_one_names_its_entity,
    a_partial_snapshot_changes_only_what_it_covers,
    annotated_entities_are_found_by_annotation_key_with_their_provider,
    an_incomplete_snapshot_adds_and_updates_but_removes_nothing,
    a_snapshot_removing_more_than_its_share_is_held_back_until_forced,
    a_large_snapshot_is_written_in_statements_under_the_bind_parameter_limits,
    a_snapshot_adds_updates_and_removes_with_one_change_each,
    no_index_row_outlives_its_entity,
    an_unchanged_entity_is_not_rewritten_and_keeps_its_uid,
    an_invalid_new_version_keeps_the_last_good_one_with_its_errors,
    a_location_that_fails_to_read_keeps_its_entities,
    a_ref_claimed_by_two_sources_stays_with_the_first_and_is_recorded,
    relations_are_stored_both_ways_and_dangling_targets_stay_visible,
    related_entities_come_with_their_edges_each_target_once,
    pages_are_filtered_sorted_counted_and_searchable,
    many_refs_are_fetched_in_one_statement,
);

backend_tests!(the_pool_opens_at_most_the_configured_connections);

/// `database.max_connections` sizes the pool; unset or zero, each database
/// keeps its own default.
async fn the_pool_opens_at_most_the_configured_connections(database: TestDatabase) {
    let default = if database.store.is_postgres() {
        catalog_store::DEFAULT_POSTGRES_CONNECTIONS
    } else {
        catalog_store::DEFAULT_SQLITE_CONNECTIONS
    };
    for (asked, expected) in [(None, default), (Some(0), default), (Some(3), 3)] {
        let settings = catalog_store::ConnectSettings { max_connections: asked, ..Default::default() };
        let store = Store::connect_with(&database.url, settings).await.unwrap();
        assert_eq!(store.pool_monitor().pool_usage().max, expected, "asked {asked:?}");
    }
}

backend_tests!(a_pool_of_one_still_reads_while_listening_for_commits);

/// The commit listener holds its connection for the process's life; it is
/// not one of the pool's, so `database.max_connections: 1` leaves reads one.
async fn a_pool_of_one_still_reads_while_listening_for_commits(database: TestDatabase) {
    let settings = catalog_store::ConnectSettings { max_connections: Some(1), ..Default::default() };
    let store = Store::connect_with(&database.url, settings).await.unwrap();
    store.listen_for_commits().await.unwrap();
    let (catalog, absent) = (store.catalog(), reference("component:default/absent"));
    let read = catalog.entity_by_ref(&absent);
    let found = tokio::time::timeout(std::time::Duration::from_secs(5), read).await.expect("a connection is free");
    assert!(found.unwrap().is_none());
}

/// On PostgreSQL a read that runs past the statement timeout is cancelled by
/// the server, while a snapshot waiting longer than that for another
/// writer's lock still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_cancelled_after_the_statement_timeout_but_writers_may_wait() {
    let Some(database) = catalog_store::testing::TestDatabase::postgres().await else { return };
    let settings = catalog_store::ConnectSettings {
        statement_timeout: Some(std::time::Duration::from_millis(500)),
        ..Default::default()
    };
    let store = Store::connect_with(&database.url, settings).await.unwrap();
    let error = store.execute_unprepared_for_tests("SELECT pg_sleep(2)").await.unwrap_err();
    assert!(error.to_string().contains("statement timeout"), "{error}");
    store.execute_unprepared_for_tests("SELECT pg_sleep(0.1)").await.expect("a short statement runs");

    let holder = database.store.clone();
    let held =
        tokio::spawn(async move { holder.hold_writer_lock_for_tests(std::time::Duration::from_millis(1500)).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let snapshot =
        catalog_store::testing::one_location_snapshot("file", vec![component("waited", "team-a", json!({}))]);
    let summary = store.snapshot_writer().apply_snapshot(&snapshot).await.expect("the snapshot waits past the timeout");
    assert_eq!(summary.added, 1);
    held.await.unwrap();
}

fn components(names: std::ops::Range<usize>, owner: &str) -> Vec<(Entity, &'static str)> {
    names.map(|index| (component(&format!("c{index}"), owner, json!({})), "all.yaml")).collect()
}

async fn an_incomplete_snapshot_adds_and_updates_but_removes_nothing(store: Store) {
    store.snapshot_writer().apply_snapshot(&snapshot("github", components(0..3, "team-a"))).await.unwrap();
    let mut partial = snapshot("github", vec![(component("c0", "team-b", json!({})), "all.yaml")]);
    partial.entities.push(SnapshotEntity::new(component("c9", "team-a", json!({})), Some("all.yaml".into())));
    partial.incomplete = Some("page 2 of the repository list failed: 502".into());
    let summary = store.snapshot_writer().apply_snapshot(&partial).await.unwrap();
    assert_eq!((summary.added, summary.updated, summary.removed, summary.held_back), (1, 1, 0, 2), "{summary:?}");
    assert!(store.catalog().entity_by_ref(&reference("component:default/c2")).await.unwrap().is_some(), "kept");

    let complete = snapshot("github", vec![(component("c0", "team-b", json!({})), "all.yaml")]);
    let summary = store.snapshot_writer().apply_snapshot(&complete).await.unwrap();
    assert_eq!((summary.removed, summary.held_back), (3, 0), "a complete snapshot removes: {summary:?}");
}

async fn a_snapshot_removing_more_than_its_share_is_held_back_until_forced(store: Store) {
    store.snapshot_writer().apply_snapshot(&snapshot("github", components(0..20, "team-a"))).await.unwrap();
    let mut guarded = snapshot("github", components(0..16, "team-a"));
    guarded.max_removed_share = Some(0.2);
    let summary = store.snapshot_writer().apply_snapshot(&guarded).await.unwrap();
    assert_eq!((summary.removed, summary.held_back), (4, 0), "20% may go: {summary:?}");

    // 16 left; removing 4 more is 25%: held back, while the update applies.
    let mut guarded = snapshot("github", components(0..12, "team-b"));
    guarded.max_removed_share = Some(0.2);
    let summary = store.snapshot_writer().apply_snapshot(&guarded).await.unwrap();
    assert_eq!((summary.updated, summary.removed, summary.held_back), (12, 0, 4), "{summary:?}");
    assert!(store.catalog().entity_by_ref(&reference("component:default/c15")).await.unwrap().is_some());

    let forced = snapshot("github", components(0..12, "team-b"));
    let summary = store.snapshot_writer().apply_snapshot(&forced).await.unwrap();
    assert_eq!((summary.removed, summary.held_back), (4, 0), "{summary:?}");

    // Below the valve's minimum size, a small catalog may be emptied.
    let mut small = snapshot("github", components(0..3, "team-b"));
    store.snapshot_writer().apply_snapshot(&small).await.unwrap();
    small.entities.clear();
    small.max_removed_share = Some(0.2);
    assert_eq!(store.snapshot_writer().apply_snapshot(&small).await.unwrap().removed, 3);
}

async fn annotated_entities_are_found_by_annotation_key_with_their_provider(store: Store) {
    let mut linked = component("linked", "team-a", json!({}));
    linked.metadata.annotations.insert("backstage.io/kubernetes-id".into(), "linked-k8s".into());
    linked.metadata.annotations.insert("pagerduty.com/service-id".into(), "PSVC1".into());
    let mut other = component("other", "team-a", json!({}));
    other.metadata.annotations.insert("backstage.io/kubernetes-label-selector".into(), "app=other".into());
    let plain = component("plain", "team-a", json!({}));
    store
        .snapshot_writer()
        .apply_snapshot(&snapshot("file", vec![(linked, "a.yaml"), (plain, "a.yaml")]))
        .await
        .unwrap();
    store.snapshot_writer().apply_snapshot(&snapshot("github", vec![(other, "b.yaml")])).await.unwrap();

    let found = store
        .catalog()
        .annotated(&["backstage.io/kubernetes-id", "backstage.io/kubernetes-label-selector"])
        .await
        .unwrap();
    let found: Vec<(&str, &str, &str, &str)> =
        found.iter().map(|a| (a.entity_ref.as_str(), a.provider.as_str(), a.key.as_str(), a.value.as_str())).collect();
    assert_eq!(
        found,
        [
            ("component:default/linked", "file", "backstage.io/kubernetes-id", "linked-k8s"),
            ("component:default/other", "github", "backstage.io/kubernetes-label-selector", "app=other"),
        ]
    );
    assert!(store.catalog().annotated(&["example.com/nothing"]).await.unwrap().is_empty());
}
