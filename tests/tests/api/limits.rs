//! No single request can crash the server or make it do unbounded work.

use serde_json::json;

use crate::helpers::{TestApp, e2e_tests, error_code};

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

e2e_tests!(
    a_deeply_nested_query_is_refused_and_the_server_keeps_answering,
    oversized_bodies_and_queries_are_refused,
    only_json_single_requests_are_accepted,
    page_sizes_depth_and_complexity_are_bounded_with_codes,
    health_readiness_and_graphiql_answer,
);
