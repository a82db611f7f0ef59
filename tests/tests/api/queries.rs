//! What portal teams and scripts ask the catalog, over HTTP.

use catalog_store::backend_tests;
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code};

async fn a_component_comes_with_its_owner_system_apis_and_dependencies(app: TestApp) {
    let data = app
        .query(
            r#"query ($ref: String!) {
                entity(ref: $ref, defaultKind: "Component") {
                    entityRef
                    ... on Component {
                        type lifecycle
                        owner { entityRef ... on Group { members { name } } }
                        system { name domain { name } }
                        providesApis { name consumers { name } }
                        consumesApis { name providers { name } }
                        dependsOn { entityRef }
                        relations(type: DEPENDS_ON) { targetRef resolved }
                    }
                }
            }"#,
            json!({"ref": "shipment-tracker"}),
        )
        .await;
    let component = &data["entity"];
    assert_eq!(component["entityRef"], "component:default/shipment-tracker");
    assert_eq!(component["owner"]["entityRef"], "group:default/team-shipping-core");
    assert!(!component["owner"]["members"].as_array().unwrap().is_empty());
    assert_eq!(component["system"]["name"], "shipping-platform");
    assert!(component["system"]["domain"]["name"].is_string());
    assert_eq!(component["providesApis"][0]["name"], "shipment-tracking-api");
    assert_eq!(component["consumesApis"][0]["name"], "billing-invoices-api");
    assert!(!component["consumesApis"][0]["providers"].as_array().unwrap().is_empty());
    let dependencies: Vec<&str> =
        component["dependsOn"].as_array().unwrap().iter().map(|entity| entity["entityRef"].as_str().unwrap()).collect();
    assert!(dependencies.contains(&"resource:default/shipments-db"), "{dependencies:?}");
    assert!(dependencies.contains(&"component:default/route-optimizer"), "{dependencies:?}");
}

async fn dangling_references_are_listed_as_unresolved(app: TestApp) {
    let data = app
        .query(
            r#"{ entities(filter: {fields: [{key: "spec.dependsOn", equals: "component:legacy-mainframe-bridge"}]}) {
                    nodes { relations(type: DEPENDS_ON) { targetRef resolved target { name } } }
                } }"#,
            json!({}),
        )
        .await;
    let relations = data["entities"]["nodes"][0]["relations"].as_array().unwrap();
    let dangling = relations
        .iter()
        .find(|relation| relation["targetRef"] == "component:default/legacy-mainframe-bridge")
        .expect("the dangling dependency is listed");
    assert_eq!(dangling["resolved"], false);
    assert!(dangling["target"].is_null());
}

async fn pages_walk_every_entity_exactly_once(app: TestApp) {
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let total = loop {
        let data = app
            .query(
                "query ($after: String) { entities(first: 17, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { cursor node { entityRef } } } }",
                json!({"after": after}),
            )
            .await;
        let connection = &data["entities"];
        for edge in connection["edges"].as_array().unwrap() {
            seen.push(edge["node"]["entityRef"].as_str().unwrap().to_owned());
        }
        if connection["pageInfo"]["hasNextPage"] != true {
            break connection["totalCount"].as_u64().unwrap();
        }
        after = connection["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    };
    assert_eq!(seen.len() as u64, total);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len());

    let data = app.query("{ entities(last: 3) { nodes { entityRef } pageInfo { hasPreviousPage } } }", json!({})).await;
    let last: Vec<&str> =
        data["entities"]["nodes"].as_array().unwrap().iter().map(|n| n["entityRef"].as_str().unwrap()).collect();
    assert_eq!(last, seen[seen.len() - 3..].iter().map(String::as_str).collect::<Vec<_>>());
}

async fn filters_search_and_facets_agree(app: TestApp) {
    let data = app
        .query(
            r#"{
                services: entities(filter: {kind: ["component"], type: ["service"]}, first: 100) { totalCount nodes { kind ... on Component { type } } }
                notServices: entities(filter: {kind: ["Component"], not: {type: ["service"]}}) { totalCount }
                components: entities(filter: {kind: ["component"]}) { totalCount }
                either: entities(filter: {or: [{kind: ["api"]}, {kind: ["resource"]}]}) { totalCount }
                facets(fields: ["kind", "spec.type"], filter: {kind: ["component"]}) { field values { value count } }
                search: entities(search: "shipment tracker") { nodes { entityRef } }
            }"#,
            json!({}),
        )
        .await;
    let services = data["services"]["totalCount"].as_u64().unwrap();
    assert!(services > 0);
    assert!(data["services"]["nodes"].as_array().unwrap().iter().all(|node| node["type"] == "service"));
    let components = data["components"]["totalCount"].as_u64().unwrap();
    assert_eq!(services + data["notServices"]["totalCount"].as_u64().unwrap(), components);
    let facets = data["facets"].as_array().unwrap();
    assert_eq!(facets[0]["values"], json!([{"value": "Component", "count": components}]));
    let type_counts: u64 =
        facets[1]["values"].as_array().unwrap().iter().map(|value| value["count"].as_u64().unwrap()).sum();
    assert_eq!(type_counts, components);
    let service_facet =
        facets[1]["values"].as_array().unwrap().iter().find(|value| value["value"] == "service").unwrap();
    assert_eq!(service_facet["count"].as_u64().unwrap(), services);
    let found: Vec<&Value> =
        data["search"]["nodes"].as_array().unwrap().iter().map(|node| &node["entityRef"]).collect();
    assert!(found.contains(&&json!("component:default/shipment-tracker")), "{found:?}");
    assert!(data["either"]["totalCount"].as_u64().unwrap() > 0);
}

async fn refs_and_ids_resolve_in_input_order(app: TestApp) {
    let data = app
        .query(
            r#"{ entitiesByRefs(refs: ["group:team-shipping-core", "component:default/nope", "component:shipment-tracker"]) { entityRef id } }"#,
            json!({}),
        )
        .await;
    let results = data["entitiesByRefs"].as_array().unwrap();
    assert_eq!(results[0]["entityRef"], "group:default/team-shipping-core");
    assert!(results[1].is_null());
    assert_eq!(results[2]["entityRef"], "component:default/shipment-tracker");
    let id = results[2]["id"].as_str().unwrap();
    let data =
        app.query("query ($id: ID!) { node(id: $id) { id ... on Component { name } } }", json!({"id": id})).await;
    assert_eq!(data["node"]["name"], "shipment-tracker");
}

async fn validation_names_every_field_and_rule(app: TestApp) {
    let yaml = "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: -bad-\n  tags: [Not_A_Tag]\nspec:\n  type: service\n---\nkind: [broken\n";
    let data = app
        .query("query ($yaml: String!) { validateEntity(yaml: $yaml) { valid documents { line valid problems { field rule } } } }", json!({"yaml": yaml}))
        .await;
    let report = &data["validateEntity"];
    assert_eq!(report["valid"], false);
    let problems = &report["documents"][0]["problems"];
    for (field, rule) in [
        ("metadata.name", "name.pattern"),
        ("metadata.tags[0]", "tag.pattern"),
        ("spec.lifecycle", "required"),
        ("spec.owner", "required"),
    ] {
        assert!(
            problems.as_array().unwrap().contains(&json!({"field": field, "rule": rule})),
            "{field} {rule} in {problems}"
        );
    }
    assert_eq!(report["documents"][1]["line"], 9);
    assert_eq!(report["documents"][1]["valid"], false);
}

async fn locations_and_ingestion_annotations_are_visible(app: TestApp) {
    let data = app
        .query(
            r#"{ locations { target error entityCount }
                 entity(ref: "component:shipment-tracker") { annotation(key: "backstage.io/managed-by-location") uid etag } }"#,
            json!({}),
        )
        .await;
    let locations = data["locations"].as_array().unwrap();
    assert!(locations.len() >= 5);
    assert!(locations.iter().all(|location| location["error"].is_null()), "{locations:?}");
    let annotation = data["entity"]["annotation"].as_str().unwrap();
    assert!(annotation.starts_with("file:") && annotation.ends_with(".yaml"), "{annotation}");
    assert!(data["entity"]["uid"].is_string() && data["entity"]["etag"].is_string());
    let (status, body) = app.post("{ entity(ref: \"shipment-tracker\") { name } }", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "a partial ref without defaultKind: {body}");
}

async fn relation_fields_cost_statements_by_depth_not_by_size(app: TestApp) {
    let query = r#"query ($first: Int!) { entities(first: $first, filter: {kind: ["component", "api", "resource"]}) {
        nodes {
            entityRef
            ... on Component { owner { name ... on Group { parent { name } } } system { name domain { name } } dependsOn { name } providesApis { name } }
            ... on Api { owner { name } providers { name } }
            ... on Resource { owner { name } system { name } }
        } } }"#;
    // The fewest of three runs: a loader batch that a busy machine splits
    // in two (its 1 ms window passing mid-level) costs a statement more
    // without saying anything about the query's shape.
    let mut runs = Vec::new();
    for first in [2, 40] {
        let mut fewest = u64::MAX;
        let mut data = Value::Null;
        for _ in 0..3 {
            let before = app.store.statement_count();
            data = app.query(query, json!({"first": first})).await;
            fewest = fewest.min(app.store.statement_count() - before);
        }
        runs.push((data, fewest));
    }
    let [(small, small_statements), (large, large_statements)] = <[_; 2]>::try_from(runs).unwrap();
    assert_eq!(small["entities"]["nodes"].as_array().unwrap().len(), 2);
    assert!(large["entities"]["nodes"].as_array().unwrap().len() >= 25);
    // count + page, then an edge load and an entity load per relation level (3 deep).
    assert!(large_statements <= 2 + 2 * 3, "{large_statements} statements for 40 entities");
    assert!(large_statements <= small_statements + 1, "{small_statements} for 2 entities vs {large_statements} for 40");
}

/// `entity(ref:)` and `entitiesByRefs` read the owner and system their
/// selection asks for in the statement that reads the entities: a batch of
/// refs costs the statements one ref costs, and both answer the same.
async fn root_entities_come_with_their_owner_and_system_in_their_own_statement(app: TestApp) {
    let selection = "entityRef ... on Component { owner { entityRef } system { entityRef domain { entityRef } } }";
    let entity_ref = "component:default/shipment-tracker";
    let refs = [entity_ref, "component:default/invoice-service", "component:default/pricing-engine"];
    let one = format!("query ($ref: String!) {{ entity(ref: $ref) {{ {selection} }} }}");
    let many = format!("query ($refs: [String!]!) {{ entitiesByRefs(refs: $refs) {{ {selection} }} }}");
    // The server runs statements of its own now and then (the change feed,
    // pool pings): the fewest over a few runs are the query's.
    let (mut by_ref, mut by_refs) = (u64::MAX, u64::MAX);
    let (mut one_answer, mut many_answer) = (Value::Null, Value::Null);
    for _ in 0..5 {
        let before = app.store.statement_count();
        one_answer = app.query(&one, json!({"ref": entity_ref})).await;
        by_ref = by_ref.min(app.store.statement_count() - before);
        let before = app.store.statement_count();
        many_answer = app.query(&many, json!({"refs": refs})).await;
        by_refs = by_refs.min(app.store.statement_count() - before);
    }
    let (one, many) = (one_answer, many_answer);
    assert_eq!(one["entity"], many["entitiesByRefs"][0]);
    assert_eq!(one["entity"]["owner"]["entityRef"], "group:default/team-shipping-core", "{one}");
    assert_eq!(one["entity"]["system"]["domain"]["entityRef"], "domain:default/logistics", "{one}");
    let owners: Vec<&Value> =
        many["entitiesByRefs"].as_array().unwrap().iter().map(|entity| &entity["owner"]).collect();
    assert!(owners.iter().all(|owner| owner["entityRef"].is_string()), "every owner resolved: {many}");
    // The entities with their owners and systems, then the systems' domains.
    assert_eq!(by_ref, 2, "entity(ref:) {by_ref} statements");
    assert_eq!(by_ref, by_refs, "entity(ref:) {by_ref} statements, entitiesByRefs of three {by_refs}");
}

/// Parsed documents are kept by query text (api/src/http/documents.rs): a text
/// seen before must still run the operation and variables each request names.
async fn a_repeated_query_text_runs_each_requests_operation_and_variables(app: TestApp) {
    let text = r#"query One($ref: String!) { entity(ref: $ref) { entityRef } }
        query Two($refs: [String!]!) { entitiesByRefs(refs: $refs) { entityRef } }"#;
    let run = |operation: &'static str, variables: Value| {
        let request = app.client.post(app.url("/graphql")).json(&json!({
            "query": text, "operationName": operation, "variables": variables,
        }));
        async move {
            let body: Value = request.send().await.expect("the server answers").json().await.expect("JSON");
            assert!(body.get("errors").is_none(), "{body}");
            body["data"].clone()
        }
    };
    for _ in 0..2 {
        for name in ["shipment-tracker", "route-optimizer"] {
            let data = run("One", json!({"ref": format!("component:default/{name}")})).await;
            assert_eq!(data["entity"]["entityRef"], format!("component:default/{name}"), "{data}");
            assert!(data.get("entitiesByRefs").is_none(), "{data}");
        }
        let data = run("Two", json!({"refs": ["group:default/team-shipping-core"]})).await;
        assert_eq!(data["entitiesByRefs"][0]["entityRef"], "group:default/team-shipping-core", "{data}");
        assert!(data.get("entity").is_none(), "{data}");
    }
}

/// Every GraphQL block in the README, run as written against the example
/// catalog: the documentation's queries must keep working.
async fn the_readme_queries_run_against_the_example_catalog(app: TestApp) {
    let readme = include_str!("../../../README.md");
    let blocks: Vec<&str> = readme.split("```graphql\n").skip(1).filter_map(|rest| rest.split("```").next()).collect();
    assert!(blocks.len() >= 5, "the README shows its queries");
    // As an admin: some blocks (the audit log) need it.
    let admin = catalog_api::auth::issue_token(
        &app.store.access_store(),
        "readme",
        &[catalog_api::auth::identity::Permission::Admin],
        None,
        "test",
    )
    .await
    .unwrap()
    .token;
    for block in blocks {
        let (status, body) = app.post_as(&admin, block).await;
        assert_eq!(status, 200, "{block}\n{body}");
        assert!(body.get("errors").is_none(), "{block}\n{body}");
        assert!(
            body["data"].as_object().is_some_and(|data| data.values().all(|value| !value.is_null())),
            "{block}\n{body}"
        );
    }
}

backend_tests!(
    a_component_comes_with_its_owner_system_apis_and_dependencies,
    dangling_references_are_listed_as_unresolved,
    pages_walk_every_entity_exactly_once,
    filters_search_and_facets_agree,
    refs_and_ids_resolve_in_input_order,
    validation_names_every_field_and_rule,
    locations_and_ingestion_annotations_are_visible,
    relation_fields_cost_statements_by_depth_not_by_size,
    root_entities_come_with_their_owner_and_system_in_their_own_statement,
    a_repeated_query_text_runs_each_requests_operation_and_variables,
    the_readme_queries_run_against_the_example_catalog,
);
