//! The abuse suite: hostile requests, each refused with the right status and
//! code, quickly, while the server keeps answering and its memory stays
//! bounded. The first cases are the ones measured against a stock
//! async-graphql server (parser stack overflow, CSRF, unbounded bodies,
//! batches and aliases).

use std::time::{Duration, Instant};

use catalog_store::backend_tests;
use serde_json::{Value, json};

use crate::helpers::TestApp;

/// How a hostile request is sent.
enum Send {
    /// POST /graphql with a JSON body.
    Json(Value),
    /// POST /graphql with raw bytes and an optional content type.
    Raw(Option<&'static str>, Vec<u8>),
    /// GET /graphql with query parameters.
    Get(Vec<(&'static str, String)>),
    /// GET on a raw path and query string (for bytes reqwest would encode).
    GetRaw(String),
    /// POST /graphql with a JSON body and extra headers.
    WithHeaders(Value, Vec<(String, Vec<u8>)>),
}

struct Case {
    name: &'static str,
    send: Send,
    status: u16,
    /// The `extensions.code` of the first error (empty: the body is not ours).
    code: &'static str,
    limit: Option<&'static str>,
}

fn case(name: &'static str, send: Send, status: u16, code: &'static str, limit: Option<&'static str>) -> Case {
    Case { name, send, status, code, limit }
}

fn query(text: impl Into<String>) -> Send {
    Send::Json(json!({"query": text.into()}))
}

fn with_variables(text: &str, variables: Value) -> Send {
    Send::Json(json!({"query": text, "variables": variables}))
}

fn nested(open: &str, close: &str, depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
}

fn fragment_bomb(levels: usize) -> String {
    let mut text = String::from("{ ...f0 }\n");
    for level in 0..levels {
        text.push_str(&format!("fragment f{level} on QueryRoot {{ ...f{next} ...f{next} }}\n", next = level + 1));
    }
    text + &format!("fragment f{levels} on QueryRoot {{ __typename }}")
}

fn aliases(count: usize) -> String {
    let fields: String = (0..count).map(|n| format!("a{n}: __typename ")).collect();
    format!("{{ {fields} }}")
}

fn cases() -> Vec<Case> {
    const LIMIT: &str = "LIMIT_EXCEEDED";
    const BAD: &str = "BAD_REQUEST";
    const INPUT: &str = "BAD_USER_INPUT";
    const INVALID: &str = "GRAPHQL_VALIDATION_FAILED";
    let many_values: Vec<String> = (0..600).map(|n| format!("c{n}")).collect();
    let deep_json = nested("[", "]", 10_000, "");
    let deep_variables = format!(r#"{{"query": "{{ __typename }}", "variables": {{"a": {deep_json}}}}}"#);
    let yaml_bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n";
    let many_headers: Vec<(String, Vec<u8>)> = (0..200).map(|n| (format!("x-flood-{n}"), b"1".to_vec())).collect();
    vec![
        // Parser stack overflow (aborted a stock server), in every bracket kind.
        case(
            "2,000 nested [ in an argument",
            query(format!("{{ entities(filter: {{kind: {}}}) {{ totalCount }} }}", nested("[", "]", 2000, "\"a\""))),
            400,
            LIMIT,
            Some("nesting"),
        ),
        case(
            "2,000 nested { in an argument",
            query(format!("{{ entities(filter: {}) {{ totalCount }} }}", nested("{and: ", "}", 2000, "{}"))),
            400,
            LIMIT,
            Some("nesting"),
        ),
        case("2,000 nested selection sets", query(nested("{ a ", "}", 2000, "")), 400, LIMIT, Some("nesting")),
        case(
            "2,000 nested ( in a directive argument",
            query(format!("{{ __typename @skip(if: {}) }}", nested("(", ")", 2000, "false"))),
            400,
            LIMIT,
            Some("nesting"),
        ),
        case(
            "2,000 nested [ in a variable default",
            query(format!("query ($v: [[Int]] = {}) {{ __typename }}", nested("[", "]", 2000, "1"))),
            400,
            LIMIT,
            Some("nesting"),
        ),
        // Size.
        case(
            "a 2 MB body",
            Send::Raw(
                Some("application/json"),
                format!("{{\"query\": \"{{ __typename }}\", \"x\": \"{}\"}}", "x".repeat(2 << 20)).into_bytes(),
            ),
            413,
            LIMIT,
            Some("bodyBytes"),
        ),
        case(
            "a 40 KB query",
            query(format!("{{ __typename }} #{}", "x".repeat(40 * 1024))),
            413,
            LIMIT,
            Some("queryBytes"),
        ),
        case(
            "300 KB of variables",
            with_variables("{ __typename }", json!({"v": "x".repeat(300 * 1024)})),
            413,
            LIMIT,
            Some("bodyBytes"),
        ),
        case("2,500 tokens", query(format!("{{ {} }}", "__typename ".repeat(2500))), 400, LIMIT, Some("tokens")),
        // Batches.
        case(
            "a batch of 1,000 operations",
            Send::Json(Value::Array(vec![json!({"query": "{ __typename }"}); 1000])),
            400,
            BAD,
            None,
        ),
        case(
            "a batch of 2 operations",
            Send::Json(json!([{"query": "{ __typename }"}, {"query": "{ __typename }"}])),
            400,
            BAD,
            None,
        ),
        // Aliases, fields, directives, fragments.
        case("1,000 aliases of __typename", query(aliases(1000)), 400, LIMIT, Some("tokens")),
        case("40 aliases", query(aliases(40)), 400, LIMIT, Some("aliases")),
        case("a fragment bomb of 2^30 fields", query(fragment_bomb(30)), 400, LIMIT, Some("fields")),
        case(
            "a two-fragment cycle",
            query("{ ...a } fragment a on QueryRoot { ...b } fragment b on QueryRoot { __typename ...a }"),
            400,
            INVALID,
            None,
        ),
        case(
            "a fragment spreading itself",
            query("{ ...a } fragment a on QueryRoot { __typename ...a }"),
            400,
            INVALID,
            None,
        ),
        case(
            "60 directives on one field",
            query(format!("{{ __typename{} }}", " @include(if: true)".repeat(60))),
            400,
            LIMIT,
            Some("directives"),
        ),
        // CSRF and transport.
        case("a mutation over GET", Send::Get(vec![("query", "mutation { __typename }".into())]), 405, BAD, None),
        case(
            "a subscription over GET",
            Send::Get(vec![("query", "subscription { catalogChanges { cursor } }".into())]),
            405,
            BAD,
            None,
        ),
        case(
            "text/plain POST (a form-submittable type)",
            Send::Raw(Some("text/plain"), br#"{"query": "mutation { __typename }"}"#.to_vec()),
            415,
            BAD,
            None,
        ),
        case(
            "form-urlencoded POST",
            Send::Raw(Some("application/x-www-form-urlencoded"), b"query=%7B__typename%7D".to_vec()),
            415,
            BAD,
            None,
        ),
        case("multipart POST", Send::Raw(Some("multipart/form-data; boundary=x"), b"--x--".to_vec()), 415, BAD, None),
        case(
            "POST without a content type",
            Send::Raw(None, br#"{"query": "{ __typename }"}"#.to_vec()),
            415,
            BAD,
            None,
        ),
        case(
            "an unknown content type",
            Send::Raw(Some("application/x-evil"), br#"{"query": "{ __typename }"}"#.to_vec()),
            415,
            BAD,
            None,
        ),
        case("invalid JSON", Send::Raw(Some("application/json"), b"{\"query\": ".to_vec()), 400, BAD, None),
        case(
            "invalid UTF-8 in the body",
            Send::Raw(Some("application/json"), b"{\"query\": \"{ \xff\xfe }\"}".to_vec()),
            400,
            BAD,
            None,
        ),
        case(
            "invalid UTF-8 in the query string",
            Send::GetRaw("/graphql?query=%7B%20%FF%20%7D".into()),
            200,
            "GRAPHQL_PARSE_FAILED",
            None,
        ),
        case(
            "a body that is not an object",
            Send::Raw(Some("application/json"), b"\"{ __typename }\"".to_vec()),
            400,
            BAD,
            None,
        ),
        case("a query that is not a string", Send::Json(json!({"query": 42})), 400, BAD, None),
        case("variables as a string", with_variables("{ __typename }", json!("{}")), 400, BAD, None),
        case("variables as an array", with_variables("{ __typename }", json!([1, 2])), 400, BAD, None),
        case("extensions as a number", Send::Json(json!({"query": "{ __typename }", "extensions": 7})), 400, BAD, None),
        case(
            "variables nested 10,000 deep",
            Send::Raw(Some("application/json"), deep_variables.into_bytes()),
            400,
            BAD,
            None,
        ),
        case("a NUL byte in the query", query("{ __type\u{0}name }"), 200, "GRAPHQL_PARSE_FAILED", None),
        // Credentials.
        case(
            "a garbage bearer token",
            Send::WithHeaders(
                json!({"query": "{ __typename }"}),
                vec![("authorization".into(), b"Bearer ctk_0000000000000000_nope".to_vec())],
            ),
            401,
            "UNAUTHENTICATED",
            None,
        ),
        case(
            "a Basic credential",
            Send::WithHeaders(
                json!({"query": "{ __typename }"}),
                vec![("authorization".into(), b"Basic YWRtaW46YWRtaW4=".to_vec())],
            ),
            401,
            "UNAUTHENTICATED",
            None,
        ),
        case(
            "a non-text Authorization header",
            Send::WithHeaders(
                json!({"query": "{ __typename }"}),
                vec![("authorization".into(), b"Bearer \xff\xfe".to_vec())],
            ),
            401,
            "UNAUTHENTICATED",
            None,
        ),
        case("200 request headers", Send::WithHeaders(json!({"query": "{ __typename }"}), many_headers), 431, "", None),
        // Limits on work inside resolvers.
        case("a page of 1,000", query("{ entities(first: 1000) { totalCount } }"), 200, LIMIT, Some("pageSize")),
        case("a page of -1", query("{ entities(first: -1) { totalCount } }"), 200, INPUT, None),
        case(
            "20 full pages at once",
            query(format!(
                "{{ {} }}",
                (0..20)
                    .map(|n| format!(
                        "p{n}: entities(first: 100) {{ nodes {{ name kind namespace title description }} }} "
                    ))
                    .collect::<String>()
            )),
            200,
            LIMIT,
            Some("complexity"),
        ),
        case(
            "selections 18 deep",
            query(format!(
                "{{ entity(ref: \"group:team-shipping-core\") {{ {} }} }}",
                (0..18).fold(String::from("name"), |inner, _| format!("name ... on Group {{ parent {{ {inner} }} }}"))
            )),
            200,
            LIMIT,
            Some("depth"),
        ),
        case(
            "introspection 26 levels deep",
            query(format!(
                "{{ __schema {{ types {{ {} }} }} }}",
                (0..12).fold(String::from("name"), |inner, _| format!("fields {{ type {{ {inner} }} }}"))
            )),
            200,
            LIMIT,
            Some("depth"),
        ),
        case(
            "11 search words",
            with_variables(
                "query ($q: String) { entities(search: $q) { totalCount } }",
                json!({"q": (0..11).map(|n| format!("w{n}")).collect::<Vec<_>>().join(" ")}),
            ),
            200,
            LIMIT,
            Some("searchWords"),
        ),
        case(
            "a 30 KB search word",
            with_variables(
                "query ($q: String) { entities(search: $q) { totalCount } }",
                json!({"q": "x".repeat(30_000)}),
            ),
            200,
            LIMIT,
            Some("searchChars"),
        ),
        case(
            "600 values for one filter key",
            with_variables(
                "query ($k: [String!]) { entities(filter: {kind: $k}) { totalCount } }",
                json!({"k": many_values}),
            ),
            200,
            LIMIT,
            Some("filterValues"),
        ),
        case(
            "filters nested 9 deep",
            query(format!("{{ entities(filter: {}) {{ totalCount }} }}", nested("{and: [", "]}", 9, "{}"))),
            200,
            LIMIT,
            Some("filterDepth"),
        ),
        case(
            "501 refs in one batch",
            with_variables(
                "query ($r: [String!]!) { entitiesByRefs(refs: $r) { name } }",
                json!({"r": (0..501).map(|n| format!("component:default/c{n}")).collect::<Vec<_>>()}),
            ),
            200,
            LIMIT,
            Some("refs"),
        ),
        case(
            "21 facet fields",
            with_variables(
                "query ($f: [String!]!) { facets(fields: $f) { field } }",
                json!({"f": (0..21).map(|n| format!("spec.f{n}")).collect::<Vec<_>>()}),
            ),
            200,
            LIMIT,
            Some("facetFields"),
        ),
        case(
            "a traversal 33 deep",
            query("{ traverse(from: [\"component:shipment-tracker\"], maxDepth: 33) { totalCount } }"),
            200,
            LIMIT,
            Some("traversalDepth"),
        ),
        case(
            "a graph of 5,000 nodes",
            query("{ graph(roots: [\"component:shipment-tracker\"], maxNodes: 5000) { truncated } }"),
            200,
            LIMIT,
            Some("graphNodes"),
        ),
        case(
            "a 70 KB YAML to validate",
            with_variables(
                "query ($y: String!) { validateEntity(yaml: $y) { valid } }",
                json!({"y": format!("# {}", "x".repeat(70 * 1024))}),
            ),
            200,
            LIMIT,
            Some("validateBytes"),
        ),
        case(
            "a 10,000-character ref",
            with_variables("query ($r: String!) { entity(ref: $r) { name } }", json!({"r": "x".repeat(10_000)})),
            200,
            INPUT,
            None,
        ),
        case("a garbage change cursor", query("{ changes(after: \"!!!\") { hasMore } }"), 200, INPUT, None),
        case("a negative change cursor", query("{ changes(after: \"-1\") { hasMore } }"), 200, INPUT, None),
        case("a change page of 100,000", query("{ changes(first: 100000) { hasMore } }"), 200, LIMIT, Some("pageSize")),
        case(
            "a YAML alias bomb to validate",
            with_variables(
                "query ($y: String!) { validateEntity(yaml: $y) { valid problems { message } } }",
                json!({"y": yaml_bomb}),
            ),
            200,
            "",
            None,
        ),
        case(
            "10 time-travel pages at once (each scans the change log)",
            query(format!(
                "{{ {} }}",
                (0..10)
                    .map(|n| format!("p{n}: entities(asOf: {{cursor: \"1\"}}, first: 1) {{ totalCount }} "))
                    .collect::<String>()
            )),
            200,
            LIMIT,
            Some("complexity"),
        ),
        case(
            "an unknown operation name",
            Send::Json(json!({"query": "query A { __typename }", "operationName": "B"})),
            200,
            INVALID,
            None,
        ),
    ]
}

async fn send(app: &TestApp, send: &Send) -> Result<reqwest::Response, reqwest::Error> {
    let url = app.url("/graphql");
    // A connection of its own per case: the server answers an oversized body
    // before reading it and then closes the connection, which a pooled
    // client could otherwise pick for the next case.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    match send {
        Send::Json(body) => client.post(url).json(body).send().await,
        Send::Raw(content_type, body) => {
            let mut request = client.post(url).body(body.clone());
            if let Some(content_type) = content_type {
                request = request.header("content-type", *content_type);
            }
            request.send().await
        }
        Send::Get(params) => client.get(url).query(params).send().await,
        Send::GetRaw(path_and_query) => client.get(app.url(path_and_query)).send().await,
        Send::WithHeaders(body, headers) => {
            let mut request = client.post(url).json(body);
            for (name, value) in headers {
                let value = reqwest::header::HeaderValue::from_bytes(value).unwrap();
                request = request.header(name.as_str(), value);
            }
            request.send().await
        }
    }
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).unwrap_or(0)
}

async fn every_hostile_request_is_refused_quickly_and_the_server_keeps_answering(app: TestApp) {
    let cases = cases();
    assert!(cases.len() >= 50, "the suite holds {} cases", cases.len());
    let resident_before = resident_kib();
    let mut failures = Vec::new();
    for case in &cases {
        let started = Instant::now();
        let response = send(&app, &case.send).await;
        let elapsed = started.elapsed();
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                failures.push(format!("{}: no response: {error}", case.name));
                continue;
            }
        };
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let code = body["errors"][0]["extensions"]["code"].as_str().unwrap_or_default();
        let limit = body["errors"][0]["extensions"]["limit"].as_str();
        if status != case.status
            || (!case.code.is_empty() && code != case.code)
            || (case.limit.is_some() && limit != case.limit)
        {
            failures.push(format!(
                "{}: got {status} {code} {limit:?}, expected {} {} {:?}: {}",
                case.name,
                case.status,
                case.code,
                case.limit,
                body.to_string().chars().take(300).collect::<String>()
            ));
        }
        if elapsed > Duration::from_secs(2) {
            failures.push(format!("{}: answered in {elapsed:?}", case.name));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    // Still serving, and the suite did not leave memory behind (the test
    // process holds the server, the client and the cases themselves).
    let data = app.query("{ entities { totalCount } }", json!({})).await;
    assert!(data["entities"]["totalCount"].as_u64().unwrap() > 0);
    let grown_mib = resident_kib().saturating_sub(resident_before) / 1024;
    assert!(grown_mib < 256, "resident memory grew by {grown_mib} MiB over the suite");
}

backend_tests!(every_hostile_request_is_refused_quickly_and_the_server_keeps_answering);
