//! No single request can crash the server or make it do unbounded work.

use serde_json::json;

use catalog_store::backend_tests;
use catalog_store::testing::TestDatabase;

use crate::helpers::{TestApp, error_code, examples_root, spawn_app_with};

async fn a_deeply_nested_query_is_refused_and_the_server_keeps_answering(app: TestApp) {
    // About 2,000 levels of `[` overflow async-graphql's recursive parser.
    let query = format!(
        "{{ entities(filter: {{kind: {}\"component\"{}}}) {{ totalCount }} }}",
        "[".repeat(2000),
        "]".repeat(2000)
    );
    let (status, body) = app.post(&query, json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "LIMIT_EXCEEDED");
    assert_eq!(body["errors"][0]["extensions"]["limit"], "nesting");

    let response = app.client.get(app.url("/graphql")).query(&[("query", query.as_str())]).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 400);

    let data = app.query("{ entities { totalCount } }", json!({})).await;
    assert!(data["entities"]["totalCount"].as_u64().unwrap() >= 60);
}

async fn oversized_bodies_and_queries_are_refused(app: TestApp) {
    let huge = format!("{{ entities {{ totalCount }} }} #{}", "x".repeat(300 * 1024));
    let response = app.client.post(app.url("/graphql")).json(&json!({"query": huge})).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let long = format!("{{ entities {{ totalCount }} }} #{}", "x".repeat(40 * 1024));
    let (status, body) = app.post(&long, json!({})).await;
    assert_eq!((status, error_code(&body)), (413, "LIMIT_EXCEEDED"));
}

async fn only_json_single_requests_are_accepted(app: TestApp) {
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "text/plain")
        .body(r#"{"query": "{ entities { totalCount } }"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    let response = app
        .client
        .post(app.url("/graphql"))
        .json(&json!([{"query": "{ entities { totalCount } }"}, {"query": "{ entities { totalCount } }"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("accept", "application/graphql-response+json")
        .json(&json!({"query": "{ entities { totalCount } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/graphql-response+json");
}

async fn page_sizes_depth_and_complexity_are_bounded_with_codes(app: TestApp) {
    let (_, body) = app.post("{ entities(first: 101) { totalCount } }", json!({})).await;
    assert_eq!(error_code(&body), "LIMIT_EXCEEDED", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["limit"], "pageSize");
    let (_, body) = app.post("{ entities(first: 0) { totalCount } }", json!({})).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    // An offset past what the database can take is refused, not a crash.
    let (_, body) = app
        .post(
            "query ($after: String) { entities(after: $after) { totalCount } }",
            json!({"after": "b2Zmc2V0OjE4NDQ2NzQ0MDczNzA5NTUxNjE1"}),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    let words = (0..11).map(|index| format!("w{index}")).collect::<Vec<_>>().join(" ");
    let (_, body) = app.post("query ($q: String) { entities(search: $q) { totalCount } }", json!({"q": words})).await;
    assert_eq!(body["errors"][0]["extensions"]["limit"], "searchWords", "{body}");

    // 18 levels: deeper than max_depth (16) but within max_nesting (40 brackets).
    let mut selection = String::from("name");
    for _ in 0..18 {
        selection = format!("name ... on Group {{ parent {{ {selection} }} }}");
    }
    let (_, body) =
        app.post(&format!("{{ entity(ref: \"group:team-shipping-core\") {{ {selection} }} }}"), json!({})).await;
    assert_eq!(error_code(&body), "LIMIT_EXCEEDED", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["limit"], "depth");

    // Each connection costs its page size times its selection: 20 full pages of
    // five fields are over the complexity limit (10,000) though shallow.
    let pages: String = (0..20)
        .map(|index| format!("p{index}: entities(first: 100) {{ nodes {{ name kind namespace title description }} }} "))
        .collect();
    let (_, body) = app.post(&format!("{{ {pages} }}"), json!({})).await;
    assert_eq!(error_code(&body), "LIMIT_EXCEEDED", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["limit"], "complexity");
    let (_, body) =
        app.post("{ p: entities(first: 100) { nodes { name kind namespace title description } } }", json!({})).await;
    assert!(body.get("errors").is_none(), "one such page is fine: {body}");
    let (_, body) = app.post("{ nonsense }", json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    let (_, body) = app.post("{ entities(", json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_PARSE_FAILED", "{body}");
}

async fn health_readiness_and_graphiql_answer(app: TestApp) {
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let graphiql = app.client.get(app.url("/graphql")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(graphiql.status().as_u16(), 200);
    assert!(graphiql.text().await.unwrap().to_lowercase().contains("graphiql"));
    let get =
        app.client.get(app.url("/graphql")).query(&[("query", "{ entities { totalCount } }")]).send().await.unwrap();
    let body: serde_json::Value = get.json().await.unwrap();
    assert!(body["data"]["entities"]["totalCount"].as_u64().unwrap() >= 60);
}

async fn aliases_fields_directives_and_fragments_are_counted_before_validation(app: TestApp) {
    // The measured case: 1,000 aliases of __typename passed a complexity limit.
    let thousand: String = (0..1000).map(|n| format!("a{n}: __typename ")).collect();
    let (status, body) = app.post(&format!("{{ {thousand} }}"), json!({})).await;
    assert_eq!((status, error_code(&body)), (400, "LIMIT_EXCEEDED"), "{body}");
    assert_eq!(body["errors"][0]["extensions"]["limit"], "tokens");
    let forty: String = (0..40).map(|n| format!("a{n}: __typename ")).collect();
    let (status, body) = app.post(&format!("{{ {forty} }}"), json!({})).await;
    assert_eq!((status, body["errors"][0]["extensions"]["limit"].as_str()), (400, Some("aliases")), "{body}");

    // Each fragment spreads the next twice: 2^30 fields once expanded.
    let mut bomb = String::from("{ ...f0 }\n");
    for n in 0..30 {
        bomb.push_str(&format!("fragment f{n} on Query {{ ...f{next} ...f{next} }}\n", next = n + 1));
    }
    bomb.push_str("fragment f30 on Query { __typename }");
    let started = std::time::Instant::now();
    let (status, body) = app.post(&bomb, json!({})).await;
    assert_eq!((status, body["errors"][0]["extensions"]["limit"].as_str()), (400, Some("fields")), "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "refused in {:?}", started.elapsed());

    let cycle = "{ ...a } fragment a on Query { ...b } fragment b on Query { __typename ...a }";
    let (status, body) = app.post(cycle, json!({})).await;
    assert_eq!((status, error_code(&body)), (400, "GRAPHQL_VALIDATION_FAILED"), "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("spreads itself"), "{body}");

    let directives = " @include(if: true)".repeat(60);
    let (_, body) = app.post(&format!("{{ __typename{directives} }}"), json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["limit"], "directives", "{body}");
    // The server is still fine.
    let data = app.query("{ entities { totalCount } }", json!({})).await;
    assert!(data["entities"]["totalCount"].as_u64().unwrap() > 0);
}

async fn get_runs_queries_only_and_responses_follow_the_accept_header(app: TestApp) {
    let get = |query: &'static str| app.client.get(app.url("/graphql")).query(&[("query", query)]).send();
    let response = get("mutation { __typename }").await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let response = get("subscription { catalogChanges { cursor } }").await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let response = get("query A { __typename } mutation B { __typename }").await.unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body.get("data").is_none(), "two operations and no name: nothing runs: {body}");
    let response = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", "query A { __typename } mutation B { __typename }"), ("operationName", "A")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "the query of a document that also holds a mutation");

    let post = |accept: &'static str, body: serde_json::Value| {
        app.client.post(app.url("/graphql")).header("accept", accept).json(&body).send()
    };
    let response = post("text/plain", json!({"query": "{ __typename }"})).await.unwrap();
    assert_eq!(response.status().as_u16(), 406);
    // A request error: 400 and no data entry in the GraphQL media type...
    let response = post("application/graphql-response+json", json!({"query": "{ nonsense }"})).await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(response.headers()["content-type"], "application/graphql-response+json");
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body.get("data").is_none() && body["errors"].is_array(), "{body}");
    // ...200 in plain JSON, which legacy clients expect.
    let response = post("application/json", json!({"query": "{ nonsense }"})).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let response =
        post("application/graphql-response+json", json!({"query": "{ __typename }", "variables": "x"})).await.unwrap();
    assert_eq!(response.status().as_u16(), 400, "variables must be an object");
    let response = post(
        "application/graphql-response+json",
        json!({"query": "query ($n: Int) { entities(first: $n) { totalCount } }", "variables": {"n": "ten"}}),
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 400, "a variable that does not coerce");
}

/// A database failure reaches the client as a generic message with the
/// request's id; the details stay in the log.
async fn internal_errors_are_masked_and_carry_the_request_id(app: TestApp) {
    app.store.execute_unprepared_for_tests("DROP TABLE entity_facets").await.unwrap();
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("x-request-id", "trace-me-42")
        .json(&json!({"query": "{ facets(fields: [\"kind\"]) { field } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "INTERNAL", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["requestId"], "trace-me-42");
    let text = body.to_string().to_lowercase();
    for leak in ["entity_facets", "no such table", "relation", "sqlx", "postgres", "sqlite"] {
        assert!(!text.contains(leak), "{leak} reached the client: {body}");
    }
    // Without one, the server makes an id up and returns it.
    let response = app.client.post(app.url("/graphql")).json(&json!({"query": "{ __typename }"})).send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"].len(), 32);
}

backend_tests!(
    aliases_fields_directives_and_fragments_are_counted_before_validation,
    get_runs_queries_only_and_responses_follow_the_accept_header,
    internal_errors_are_masked_and_carry_the_request_id,
    a_deeply_nested_query_is_refused_and_the_server_keeps_answering,
    oversized_bodies_and_queries_are_refused,
    only_json_single_requests_are_accepted,
    page_sizes_depth_and_complexity_are_bounded_with_codes,
    health_readiness_and_graphiql_answer,
);

/// Relation lists have no page size for complexity to price: a request's
/// entity loads are counted instead, and past the limit its relation
/// fields fail with LIMIT_EXCEEDED (the rest of the response stands).
async fn entities_loaded_through_relations_are_bounded_per_request(database: TestDatabase) {
    let url = database.url.clone();
    let app = spawn_app_with(&url, &examples_root(), Some(database), |config| {
        config.graphql.max_loaded_entities = 20;
    })
    .await;
    let small = r#"{ entity(ref: "component:default/invoice-service") { relations { targetRef target { name } } } }"#;
    let data = app.query(small, json!({})).await;
    assert!(!data["entity"]["relations"].as_array().unwrap().is_empty(), "{data}");

    let fan_out = "{ entities(first: 100) { totalCount nodes { relations { target { name } } } } }";
    let (status, body) = app.post(fan_out, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(error_code(&body), "LIMIT_EXCEEDED", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["limit"], "loadedEntities");
    assert!(body["data"]["entities"]["totalCount"].as_u64().unwrap() > 20, "the page itself stands: {body}");
    // An owner many entities share is loaded, and counted, once.
    let shared = "{ entities(first: 100) { nodes { ... on Component { owner { name } } ... on Api { owner { name } } \
                  ... on Resource { owner { name } } ... on System { owner { name } } } } }";
    let (_, body) = app.post(shared, json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    let owned = body["data"]["entities"]["nodes"].as_array().unwrap().iter().filter(|node| !node["owner"].is_null());
    assert!(owned.count() > 20, "more owned entities than the limit: {body}");
    // Edges count too: a list of refs over hubs is work as well.
    let (_, body) = app.post("{ entities(first: 100) { nodes { relations { targetRef } } } }", json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["limit"], "loadedEntities", "{body}");
}

backend_tests!(entities_loaded_through_relations_are_bounded_per_request);
