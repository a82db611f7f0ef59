//! Graph questions over HTTP: impact, ownership trees, paths, drawings, and
//! what they cost.

use std::collections::{BTreeMap, BTreeSet};

use catalog_store::backend_tests;
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code};

fn refs(nodes: &Value) -> Vec<String> {
    nodes.as_array().unwrap().iter().map(|node| node["entityRef"].as_str().unwrap().to_owned()).collect()
}

fn node<'a>(nodes: &'a Value, entity_ref: &str) -> &'a Value {
    nodes.as_array().unwrap().iter().find(|node| node["entityRef"] == entity_ref).unwrap_or_else(|| {
        panic!("{entity_ref} is not among {nodes}");
    })
}

const IMPACT: &str = r#"query ($ref: String!, $throughApis: Boolean!) {
    impact(ref: $ref, throughApis: $throughApis) {
        rootRef totalCount complete unresolvedCount
        owners { ownerRef count owner { name } }
        entities(first: 100) {
            totalCount
            nodes {
                entityRef distance resolved ownerRef owner { entityRef }
                path { sourceRef type targetRef }
                entity { ... on Component { owner { entityRef } } ... on Api { owner { entityRef } } ... on Resource { owner { entityRef } } }
            }
        }
    } }"#;

async fn impact_lists_every_dependent_with_its_path_and_groups_owners(app: TestApp) {
    let data = app.query(IMPACT, json!({"ref": "resource:primary-postgres-cluster", "throughApis": true})).await;
    let impact = &data["impact"];
    assert_eq!(impact["rootRef"], "resource:default/primary-postgres-cluster");
    assert_eq!(impact["complete"], true);
    let nodes = &impact["entities"]["nodes"];
    assert_eq!(impact["totalCount"], impact["entities"]["totalCount"]);
    assert_eq!(nodes.as_array().unwrap().len() as u64, impact["totalCount"].as_u64().unwrap());

    // Direct dependents first; every path starts at the root and ends at the node.
    let catalog_service = node(nodes, "component:default/catalog-service");
    assert_eq!(catalog_service["distance"], 1);
    let portal = node(nodes, "component:default/developer-portal");
    assert_eq!(portal["distance"], 2);
    for node in nodes.as_array().unwrap() {
        let path = node["path"].as_array().unwrap();
        assert_eq!(path.len() as u64, node["distance"].as_u64().unwrap());
        assert_eq!(path[0]["sourceRef"], "resource:default/primary-postgres-cluster");
        assert_eq!(path.last().unwrap()["targetRef"], node["entityRef"]);
        assert!(path.windows(2).all(|pair| pair[0]["targetRef"] == pair[1]["sourceRef"]), "{path:?}");
    }
    let distances: Vec<u64> = nodes.as_array().unwrap().iter().map(|node| node["distance"].as_u64().unwrap()).collect();
    assert!(distances.windows(2).all(|pair| pair[0] <= pair[1]), "nearest first: {distances:?}");
    assert_eq!(refs(nodes).iter().collect::<BTreeSet<_>>().len(), nodes.as_array().unwrap().len(), "no duplicates");

    // Owners are the impacted entities' owners, counted.
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for node in nodes.as_array().unwrap() {
        if let Some(owner) = node["entity"]["owner"]["entityRef"].as_str() {
            *expected.entry(owner.to_owned()).or_default() += 1;
            assert_eq!(node["ownerRef"], owner);
            assert_eq!(node["owner"]["entityRef"], owner);
        }
    }
    let owners: BTreeMap<String, u64> = impact["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|owner| (owner["ownerRef"].as_str().unwrap().to_owned(), owner["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(owners, expected);
    assert!(owners.len() >= 3, "{owners:?}");
    let counts: Vec<u64> =
        impact["owners"].as_array().unwrap().iter().map(|owner| owner["count"].as_u64().unwrap()).collect();
    assert!(counts.windows(2).all(|pair| pair[0] >= pair[1]), "most first: {counts:?}");
}

async fn impact_goes_through_apis_only_when_asked(app: TestApp) {
    let through = app.query(IMPACT, json!({"ref": "component:shipment-tracker", "throughApis": true})).await;
    let nodes = &through["impact"]["entities"]["nodes"];
    // tracking-website consumes the API shipment-tracker provides, and also depends on it directly.
    assert_eq!(node(nodes, "component:default/tracking-website")["distance"], 1);
    let api = node(nodes, "api:default/shipment-tracking-api");
    assert_eq!(api["path"][0]["type"], "PROVIDES_API");

    let direct = app.query(IMPACT, json!({"ref": "component:shipment-tracker", "throughApis": false})).await;
    let direct_refs = refs(&direct["impact"]["entities"]["nodes"]);
    assert!(!direct_refs.contains(&"api:default/shipment-tracking-api".to_owned()), "{direct_refs:?}");
    assert!(direct_refs.contains(&"component:default/tracking-website".to_owned()));
    assert!(direct["impact"]["totalCount"].as_u64() < through["impact"]["totalCount"].as_u64());
}

async fn unresolved_dependencies_appear_as_unresolved_nodes(app: TestApp) {
    let data = app
        .query(
            r#"{ entity(ref: "component:customs-gateway") {
                dependencies(depth: 5) { totalCount complete nodes { entityRef distance resolved entity { name } } } } }"#,
            json!({}),
        )
        .await;
    let dependencies = &data["entity"]["dependencies"];
    let bridge = node(&dependencies["nodes"], "component:default/legacy-mainframe-bridge");
    assert_eq!(bridge["resolved"], false);
    assert!(bridge["entity"].is_null());
    assert_eq!(dependencies["complete"], true);

    let impact = app.query(IMPACT, json!({"ref": "component:legacy-mainframe-bridge", "throughApis": true})).await;
    assert_eq!(refs(&impact["impact"]["entities"]["nodes"]), vec!["component:default/customs-gateway"]);
}

async fn traverse_follows_direction_depth_and_filter(app: TestApp) {
    let query = r#"query ($direction: TraversalDirection!, $depth: Int!) {
        traverse(from: ["component:shipment-tracker"], relationTypes: [DEPENDS_ON], direction: $direction, maxDepth: $depth) {
            totalCount complete nodes { entityRef distance }
        }
        resources: traverse(from: ["component:shipment-tracker"], relationTypes: [DEPENDS_ON], maxDepth: $depth, filter: {kind: ["resource"]}) {
            totalCount nodes { entityRef }
        } }"#;
    let one = app.query(query, json!({"direction": "OUTGOING", "depth": 1})).await;
    let deep = app.query(query, json!({"direction": "OUTGOING", "depth": 5})).await;
    assert!(refs(&one["traverse"]["nodes"]).contains(&"component:default/route-optimizer".to_owned()));
    assert!(!refs(&one["traverse"]["nodes"]).contains(&"resource:default/routing-cache".to_owned()));
    assert_eq!(node(&deep["traverse"]["nodes"], "resource:default/routing-cache")["distance"], 2);
    assert_eq!(one["traverse"]["complete"], false, "routing-cache lies past depth 1");
    assert_eq!(deep["traverse"]["complete"], true);
    assert!(refs(&deep["resources"]["nodes"]).iter().all(|entity_ref| entity_ref.starts_with("resource:")));
    assert!(deep["resources"]["totalCount"].as_u64().unwrap() >= 3);

    let incoming = app.query(query, json!({"direction": "INCOMING", "depth": 1})).await;
    assert_eq!(refs(&incoming["traverse"]["nodes"]), vec!["component:default/tracking-website"]);
}

async fn group_subtrees_and_user_memberships_own_transitively(app: TestApp) {
    let data = app
        .query(
            r#"{ org: entity(ref: "group:engineering-logistics") { ... on Group {
                    descendants { entityRef ownedEntities { totalCount } }
                    ancestors { name }
                    ownedEntities { totalCount }
                    subtree: ownedEntities(includeSubgroups: true, first: 100) { totalCount nodes { entityRef } }
                } }
                filtered: entities(filter: {ownedByTree: ["engineering-logistics"]}, first: 100) { totalCount nodes { entityRef } }
                user: entity(ref: "user:grace-hopper") { ... on User {
                    groups { name }
                    allGroups: groups(transitive: true) { entityRef ownedEntities { totalCount } }
                    ownedEntities(first: 100) { totalCount }
                    direct: ownedEntities(throughGroups: false) { totalCount }
                } } }"#,
            json!({}),
        )
        .await;
    let org = &data["org"];
    assert_eq!(org["ancestors"][0]["name"], "acme");
    let descendants = org["descendants"].as_array().unwrap();
    assert!(descendants.len() >= 2, "{descendants:?}");
    let expected: u64 = org["ownedEntities"]["totalCount"].as_u64().unwrap()
        + descendants.iter().map(|group| group["ownedEntities"]["totalCount"].as_u64().unwrap()).sum::<u64>();
    assert_eq!(org["subtree"]["totalCount"].as_u64().unwrap(), expected);
    assert!(expected > org["ownedEntities"]["totalCount"].as_u64().unwrap());
    assert_eq!(refs(&data["filtered"]["nodes"]), refs(&org["subtree"]["nodes"]));

    let user = &data["user"];
    if user.is_null() {
        panic!("the example catalog has user grace-hopper");
    }
    let groups = user["groups"].as_array().unwrap();
    let all_groups = user["allGroups"].as_array().unwrap();
    assert!(all_groups.len() > groups.len(), "parents of the user's groups count too");
    let expected: u64 = user["direct"]["totalCount"].as_u64().unwrap()
        + all_groups.iter().map(|group| group["ownedEntities"]["totalCount"].as_u64().unwrap()).sum::<u64>();
    assert_eq!(user["ownedEntities"]["totalCount"].as_u64().unwrap(), expected);
}

async fn paths_explain_a_dependency_and_are_empty_when_there_is_none(app: TestApp) {
    let data = app
        .query(
            r#"{ why: paths(from: "component:shipment-tracker", to: "resource:primary-postgres-cluster") { length edges { sourceRef type targetRef } }
                none: paths(from: "resource:primary-postgres-cluster", to: "component:shipment-tracker") { length } }"#,
            json!({}),
        )
        .await;
    let why = data["why"].as_array().unwrap();
    assert!(!why.is_empty());
    assert!(why.iter().all(|path| path["length"] == why[0]["length"]), "only shortest paths");
    assert_eq!(why[0]["edges"][0]["sourceRef"], "component:default/shipment-tracker");
    assert_eq!(
        why[0]["edges"].as_array().unwrap().last().unwrap()["targetRef"],
        "resource:default/primary-postgres-cluster"
    );
    assert_eq!(data["none"], json!([]));
}

async fn graph_payloads_say_when_they_are_truncated(app: TestApp) {
    let query = r#"query ($maxNodes: Int!) { graph(roots: ["component:shipment-tracker"], relationTypes: [DEPENDS_ON], maxDepth: 3, maxNodes: $maxNodes) {
        truncated omittedNodeCount nodes { entityRef distance resolved } edges { sourceRef type targetRef } } }"#;
    let full = app.query(query, json!({"maxNodes": 100})).await["graph"].clone();
    let cut = app.query(query, json!({"maxNodes": 3})).await["graph"].clone();
    assert_eq!(full["truncated"], false);
    assert_eq!(full["omittedNodeCount"], 0);
    let n_full = full["nodes"].as_array().unwrap().len();
    assert!(n_full > 3);
    assert_eq!(cut["truncated"], true);
    assert_eq!(cut["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(cut["omittedNodeCount"].as_u64().unwrap() as usize, n_full - 3);
    let kept: BTreeSet<String> = refs(&cut["nodes"]).into_iter().collect();
    for edge in cut["edges"].as_array().unwrap() {
        assert!(
            kept.contains(edge["sourceRef"].as_str().unwrap()) && kept.contains(edge["targetRef"].as_str().unwrap())
        );
    }
    assert!(full["edges"].as_array().unwrap().len() >= n_full - 1, "every node is reached by an edge");
}

async fn walks_are_limited_and_priced(app: TestApp) {
    let (_, body) =
        app.post(r#"{ traverse(from: ["component:shipment-tracker"], maxDepth: 33) { totalCount } }"#, json!({})).await;
    assert_eq!(error_code(&body), "LIMIT_EXCEEDED", "{body}");
    let (_, body) =
        app.post(r#"{ traverse(from: ["component:shipment-tracker"], maxDepth: 0) { totalCount } }"#, json!({})).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    let (_, body) =
        app.post(r#"{ graph(roots: ["component:shipment-tracker"], maxNodes: 5000) { truncated } }"#, json!({})).await;
    assert_eq!(error_code(&body), "LIMIT_EXCEEDED", "{body}");
    let (_, body) =
        app.post(r#"{ paths(from: "component:a", to: "component:b", first: 0) { length } }"#, json!({})).await;
    assert_eq!(error_code(&body), "LIMIT_EXCEEDED", "{body}");
    // A deep walk from each of a hundred entities is more work than one operation
    // may ask for: refused before it runs when selected on an object type...
    let (_, body) = app
        .post(
            r#"{ entities(first: 100) { nodes { ... on Component { dependents(depth: 32, first: 100) { nodes { entityRef entity { name } } } } } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["limit"], "complexity", "{body}");
    // ...and cut at the walk budget when selected through the Entity interface,
    // which complexity does not price.
    let (_, body) =
        app.post(r#"{ entities(first: 100) { nodes { dependents(depth: 32) { totalCount } } } }"#, json!({})).await;
    let errors = body["errors"].as_array().unwrap();
    assert!(errors.iter().all(|error| error["extensions"]["limit"] == "walks"), "{body}");
    let n_entities =
        app.query("{ entities { totalCount } }", json!({})).await["entities"]["totalCount"].as_u64().unwrap();
    assert_eq!(errors.len() as u64, n_entities.min(100) - 20, "every walk past the 20th is refused");
}

async fn a_walk_costs_statements_by_depth_not_by_size(app: TestApp) {
    let query = r#"query ($depth: Int!) { entity(ref: "component:developer-portal") {
        dependencies(depth: $depth, first: 100) { totalCount complete nodes { entityRef resolved entity { name } } } } }"#;
    let before = app.store.statement_count();
    let deep = app.query(query, json!({"depth": 4})).await;
    let statements = app.store.statement_count() - before;
    let reached = deep["entity"]["dependencies"]["totalCount"].as_u64().unwrap();
    assert!(reached >= 5, "{deep}");
    // The entity, one statement per hop, one probe past the limit, and the
    // reached entities in one batch (two when a busy machine makes the
    // DataLoader fire before every field has added its key).
    assert!(statements <= 1 + 4 + 1 + 2, "{statements} statements for {reached} entities");
}

backend_tests!(
    impact_lists_every_dependent_with_its_path_and_groups_owners,
    impact_goes_through_apis_only_when_asked,
    unresolved_dependencies_appear_as_unresolved_nodes,
    traverse_follows_direction_depth_and_filter,
    group_subtrees_and_user_memberships_own_transitively,
    paths_explain_a_dependency_and_are_empty_when_there_is_none,
    graph_payloads_say_when_they_are_truncated,
    walks_are_limited_and_priced,
    a_walk_costs_statements_by_depth_not_by_size,
);
