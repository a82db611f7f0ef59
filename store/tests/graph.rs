//! Graph walks and ownership closures, each test body run on SQLite and on PostgreSQL.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use catalog_domain::{Entity, EntityRef, RelationType};
use catalog_store::{
    Direction, Filter, FilterField, ListQuery, Predicate, Snapshot, Store, Walk, WalkRequest, backend_tests,
};
use serde_json::{Value, json};

fn entity(kind: &str, name: &str, spec: Value) -> Entity {
    catalog_domain::validate(&json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap_or_else(|errors| panic!("{kind} {name}: {errors:?}"))
}

fn component(name: &str, depends_on: &[&str]) -> Entity {
    let depends_on: Vec<String> = depends_on.iter().map(|target| format!("component:{target}")).collect();
    entity(
        "Component",
        name,
        json!({"type": "service", "lifecycle": "production", "owner": "team", "dependsOn": depends_on}),
    )
}

fn snapshot_of(entities: Vec<Entity>) -> Snapshot {
    catalog_store::testing::one_location_snapshot("file", entities)
}

async fn load(store: &Store, entities: Vec<Entity>) {
    store.snapshot_writer().apply_snapshot(&snapshot_of(entities)).await.unwrap();
}

fn request(from: &EntityRef, types: &[RelationType], direction: Direction, max_depth: u32) -> WalkRequest {
    WalkRequest {
        from: vec![from.clone()],
        types: types.to_vec(),
        direction,
        max_depth,
        max_nodes: 1_000,
        target: None,
        probe_past_depth: true,
        keep_edges: true,
    }
}

/// (ref, distance) of every node, in walk order.
fn reached(walk: &Walk) -> Vec<(EntityRef, u32)> {
    walk.nodes.iter().map(|node| (node.entity_ref.clone(), node.distance)).collect()
}

fn c(name: &str) -> EntityRef {
    reference(&format!("component:default/{name}"))
}

fn reference(text: &str) -> EntityRef {
    EntityRef::parse(text).unwrap()
}

fn path_text(walk: &Walk, entity_ref: &EntityRef) -> Vec<String> {
    let node = walk.position(entity_ref).unwrap();
    walk.path(node)
        .iter()
        .map(|edge| format!("{} {} {}", edge.source_ref, edge.relation_type, edge.target_ref))
        .collect()
}

async fn a_cycle_is_walked_once_and_ends(store: Store) {
    load(&store, vec![component("a", &["b"]), component("b", &["c"]), component("c", &["a"])]).await;
    let walk =
        store.catalog().walk(&request(&c("a"), &[RelationType::DependsOn], Direction::Outgoing, 10)).await.unwrap();
    assert_eq!(reached(&walk), vec![(c("a"), 0), (c("b"), 1), (c("c"), 2)]);
    assert!(walk.complete);
    assert_eq!(
        path_text(&walk, &c("c")),
        vec![format!("{} dependsOn {}", c("a"), c("b")), format!("{} dependsOn {}", c("b"), c("c"))]
    );
    // The edge back to the start is walked but adds no node.
    assert_eq!(walk.edges().count(), 3);
}

async fn a_diamond_counts_its_bottom_once_with_every_shortest_path(store: Store) {
    load(
        &store,
        vec![
            component("top", &["left", "right"]),
            component("left", &["bottom"]),
            component("right", &["bottom"]),
            component("bottom", &[]),
        ],
    )
    .await;
    let walk =
        store.catalog().walk(&request(&c("top"), &[RelationType::DependsOn], Direction::Outgoing, 5)).await.unwrap();
    assert_eq!(reached(&walk), vec![(c("top"), 0), (c("left"), 1), (c("right"), 1), (c("bottom"), 2)]);
    let bottom = walk.position(&c("bottom")).unwrap();
    assert_eq!(walk.nodes[bottom].parents.len(), 2);
    // The canonical path goes through the first parent in ref order.
    assert_eq!(path_text(&walk, &c("bottom"))[0], format!("{} dependsOn {}", c("top"), c("left")));
    let paths = walk.shortest_paths(bottom, 10);
    assert_eq!(paths.len(), 2);
    assert_eq!(walk.shortest_paths(bottom, 1).len(), 1);
    assert_eq!(paths[1][0].target_ref, c("right"));
}

async fn depth_limits_and_directions_are_honoured(store: Store) {
    load(&store, vec![component("a", &["b"]), component("b", &["c"]), component("c", &["d"]), component("d", &[])])
        .await;
    let walk =
        store.catalog().walk(&request(&c("a"), &[RelationType::DependsOn], Direction::Outgoing, 2)).await.unwrap();
    assert_eq!(reached(&walk), vec![(c("a"), 0), (c("b"), 1), (c("c"), 2)]);
    assert!(!walk.complete, "d lies past the depth limit");
    let walk =
        store.catalog().walk(&request(&c("a"), &[RelationType::DependsOn], Direction::Outgoing, 3)).await.unwrap();
    assert!(walk.complete);

    // Incoming dependsOn edges and outgoing dependencyOf edges are the same walk.
    let incoming =
        store.catalog().walk(&request(&c("d"), &[RelationType::DependsOn], Direction::Incoming, 5)).await.unwrap();
    assert_eq!(reached(&incoming), vec![(c("d"), 0), (c("c"), 1), (c("b"), 2), (c("a"), 3)]);
    assert_eq!(path_text(&incoming, &c("c")), vec![format!("{} dependsOn {}", c("c"), c("d"))]);
    let reverse =
        store.catalog().walk(&request(&c("d"), &[RelationType::DependencyOf], Direction::Outgoing, 5)).await.unwrap();
    assert_eq!(reached(&reverse), reached(&incoming));

    let both = store.catalog().walk(&request(&c("b"), &[RelationType::DependsOn], Direction::Both, 1)).await.unwrap();
    assert_eq!(reached(&both), vec![(c("b"), 0), (c("a"), 1), (c("c"), 1)]);

    // Relation types not asked for are not followed.
    let owned =
        store.catalog().walk(&request(&c("a"), &[RelationType::OwnedBy], Direction::Outgoing, 5)).await.unwrap();
    assert_eq!(reached(&owned), vec![(c("a"), 0), (reference("group:default/team"), 1)]);
}

async fn unresolved_targets_are_reached_and_known_as_missing(store: Store) {
    load(&store, vec![component("a", &["ghost"])]).await;
    let walk =
        store.catalog().walk(&request(&c("a"), &[RelationType::DependsOn], Direction::Outgoing, 3)).await.unwrap();
    assert_eq!(reached(&walk), vec![(c("a"), 0), (c("ghost"), 1)]);
    let owners = store.catalog().owners_of(&[c("a"), c("ghost")]).await.unwrap();
    assert_eq!(owners.get(&c("a")), Some(&Some(reference("group:default/team"))));
    assert!(!owners.contains_key(&c("ghost")));
}

async fn the_node_cap_cuts_a_walk_and_says_so(store: Store) {
    load(
        &store,
        vec![component("hub", &[]), component("x", &["hub"]), component("y", &["hub"]), component("z", &["hub"])],
    )
    .await;
    let mut capped = request(&c("hub"), &[RelationType::DependencyOf], Direction::Outgoing, 5);
    capped.max_nodes = 3;
    let walk = store.catalog().walk(&capped).await.unwrap();
    assert_eq!(walk.nodes.len(), 3);
    assert!(!walk.complete);
    assert!(walk.edges().all(|edge| walk.position(&edge.target_ref).is_some()));
    // A probe past the depth limit that finds nothing new does not undo the cut.
    capped.max_depth = 1;
    capped.max_nodes = 2;
    let walk = store.catalog().walk(&capped).await.unwrap();
    assert_eq!(walk.nodes.len(), 2);
    assert!(!walk.complete);
}

async fn a_walk_costs_one_statement_whatever_its_size(store: Store) {
    let mut entities: Vec<Entity> = (0..30).map(|index| component(&format!("leaf-{index}"), &[])).collect();
    let middles: Vec<String> = (0..30).map(|index| format!("middle-{index}")).collect();
    for (index, middle) in middles.iter().enumerate() {
        entities.push(component(middle, &[&format!("leaf-{index}"), &format!("leaf-{}", (index + 1) % 30)]));
    }
    let middle_refs: Vec<&str> = middles.iter().map(String::as_str).collect();
    entities.push(component("root", &middle_refs));
    load(&store, entities).await;
    let walk_request = request(&c("root"), &[RelationType::DependsOn], Direction::Outgoing, 2);
    // The first walk loads the index.
    store.catalog().walk(&walk_request).await.unwrap();
    let before = store.statement_count();
    let walk = store.catalog().walk(&walk_request).await.unwrap();
    assert_eq!(walk.nodes.len(), 61);
    assert_eq!(store.statement_count() - before, 1, "one look at the change log");
}

async fn the_index_follows_every_commit(store: Store) {
    load(&store, vec![component("a", &["b"]), component("b", &[])]).await;
    let from_a = request(&c("a"), &[RelationType::DependsOn], Direction::Outgoing, 5);
    assert_eq!(reached(&store.catalog().walk(&from_a).await.unwrap()), vec![(c("a"), 0), (c("b"), 1)]);
    // A new version replaces exactly the edges its entity states.
    load(&store, vec![component("a", &["c"]), component("b", &[]), component("c", &["b"])]).await;
    assert_eq!(reached(&store.catalog().walk(&from_a).await.unwrap()), vec![(c("a"), 0), (c("c"), 1), (c("b"), 2)]);
    // Another process's commit is seen too: it lands in the log the walk reads.
    let other = store.open_again().await;
    other.snapshot_writer().apply_snapshot(&snapshot_of(vec![component("a", &[])])).await.unwrap();
    assert_eq!(reached(&store.catalog().walk(&from_a).await.unwrap()), vec![(c("a"), 0)]);
    // Edges stated by two entities (a membership) survive the removal of one statement.
    load(
        &store,
        vec![
            catalog_domain::validate(&json!({"apiVersion": "backstage.io/v1alpha1", "kind": "Group", "metadata": {"name": "g"}, "spec": {"type": "team", "children": [], "members": ["u"]}})).unwrap(),
            entity("User", "u", json!({"memberOf": ["g"]})),
        ],
    )
    .await;
    let members = request(&reference("group:default/g"), &[RelationType::HasMember], Direction::Outgoing, 1);
    assert_eq!(store.catalog().walk(&members).await.unwrap().nodes.len(), 2);
    load(&store, vec![group("g", None), entity("User", "u", json!({"memberOf": ["g"]}))]).await;
    assert_eq!(store.catalog().walk(&members).await.unwrap().nodes.len(), 2, "the user still states it");
    load(&store, vec![group("g", None)]).await;
    assert_eq!(store.catalog().walk(&members).await.unwrap().nodes.len(), 1);
}

async fn shortest_paths_stop_at_the_target_and_are_empty_when_none_exist(store: Store) {
    load(
        &store,
        vec![
            component("a", &["b"]),
            component("b", &["c"]),
            component("c", &["d"]),
            component("d", &[]),
            component("lone", &[]),
        ],
    )
    .await;
    let mut to_c = request(&c("a"), &[RelationType::DependsOn], Direction::Outgoing, 10);
    to_c.target = Some(c("c"));
    let walk = store.catalog().walk(&to_c).await.unwrap();
    assert!(walk.position(&c("d")).is_none(), "the walk stops at the target's hop");
    assert_eq!(walk.shortest_paths(walk.position(&c("c")).unwrap(), 5).len(), 1);
    let mut to_lone = to_c.clone();
    to_lone.target = Some(c("lone"));
    let walk = store.catalog().walk(&to_lone).await.unwrap();
    assert!(walk.position(&c("lone")).is_none());
}

fn group(name: &str, parent: Option<&str>) -> Entity {
    let mut spec = json!({"type": "team", "children": []});
    if let Some(parent) = parent {
        spec["parent"] = json!(parent);
    }
    entity("Group", name, spec)
}

fn owned(name: &str, owner: &str) -> Entity {
    entity("Component", name, json!({"type": "service", "lifecycle": "production", "owner": owner}))
}

async fn names_matching(store: &Store, field: FilterField, value: &str) -> Vec<String> {
    let filter = Filter::Field { field, predicate: Predicate::In(vec![value.to_owned()]) };
    let page = store
        .catalog()
        .list_entities(&ListQuery { filter: Some(filter), limit: 100, ..Default::default() })
        .await
        .unwrap();
    let mut names: Vec<String> =
        page.entities.iter().map(|stored| stored.entity().unwrap().metadata.name.clone()).collect();
    names.sort();
    names
}

async fn ownership_follows_group_subtrees_and_memberships(store: Store) {
    load(
        &store,
        vec![
            group("org", None),
            group("platform", Some("org")),
            group("storage", Some("platform")),
            group("web", Some("org")),
            entity("User", "ada", json!({"memberOf": ["storage", "web"]})),
            entity("User", "bob", json!({"memberOf": ["platform"]})),
            owned("by-org", "org"),
            owned("by-platform", "platform"),
            owned("by-storage", "storage"),
            owned("by-web", "web"),
            owned("by-ada", "user:ada"),
            owned("by-bob", "user:bob"),
        ],
    )
    .await;
    assert_eq!(
        names_matching(&store, FilterField::OwnedByTree, "org").await,
        vec!["by-org", "by-platform", "by-storage", "by-web"]
    );
    assert_eq!(names_matching(&store, FilterField::OwnedByTree, "platform").await, vec!["by-platform", "by-storage"]);
    assert_eq!(names_matching(&store, FilterField::OwnedByTree, "group:default/storage").await, vec!["by-storage"]);
    // A user in two groups owns what either group and every parent of either owns.
    assert_eq!(
        names_matching(&store, FilterField::OwnedByMember, "ada").await,
        vec!["by-ada", "by-org", "by-platform", "by-storage", "by-web"]
    );
    assert_eq!(
        names_matching(&store, FilterField::OwnedByMember, "bob").await,
        vec!["by-bob", "by-org", "by-platform"]
    );
    // NOT keeps entities without an owner and drops the subtree's.
    let not_platform = Filter::All(vec![
        Filter::Field { field: FilterField::Kind, predicate: Predicate::In(vec!["component".into()]) },
        Filter::Not(Box::new(Filter::Field {
            field: FilterField::OwnedByTree,
            predicate: Predicate::In(vec!["platform".into()]),
        })),
    ]);
    let page = store
        .catalog()
        .list_entities(&ListQuery { filter: Some(not_platform), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page.total_count, 4);

    let matching = store
        .catalog()
        .refs_matching(
            &[c("by-org"), c("by-storage"), c("missing")],
            &Filter::Field { field: FilterField::OwnedByTree, predicate: Predicate::In(vec!["platform".into()]) },
        )
        .await
        .unwrap();
    assert_eq!(matching.into_iter().collect::<Vec<_>>(), vec![c("by-storage")]);
}

backend_tests!(
    a_cycle_is_walked_once_and_ends,
    a_diamond_counts_its_bottom_once_with_every_shortest_path,
    depth_limits_and_directions_are_honoured,
    unresolved_targets_are_reached_and_known_as_missing,
    the_node_cap_cuts_a_walk_and_says_so,
    a_walk_costs_one_statement_whatever_its_size,
    the_index_follows_every_commit,
    shortest_paths_stop_at_the_target_and_are_empty_when_none_exist,
    ownership_follows_group_subtrees_and_memberships,
);
