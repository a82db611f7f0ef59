//! The transport's defences: the production profile, CSRF, CORS, WebSocket
//! origins and the WebSocket init timeout; authentication with API tokens over
//! HTTP and WebSocket.

use std::time::Duration;

use catalog_api::auth::identity::Permission;
use catalog_api::config::{Config, Profile};
use catalog_store::backend_tests;
use catalog_store::testing::TestDatabase;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::helpers::{TestApp, error_code, examples_root, spawn_app_with};

async fn app_with(database: TestDatabase, configure: impl FnOnce(&mut Config)) -> TestApp {
    let url = database.url.clone();
    spawn_app_with(&url, &examples_root(), Some(database), configure).await
}

async fn the_production_profile_hides_the_schema_and_asks_get_for_a_csrf_header(database: TestDatabase) {
    let app = app_with(database, |config| {
        config.profile = Profile::Production;
        config.graphql = Config::for_profile(Profile::Production).graphql;
    })
    .await;
    let (_, body) = app.post("{ __schema { queryType { name } } }", json!({})).await;
    assert!(body["data"]["__schema"].is_null(), "introspection is off: {body}");
    let (_, body) = app.post("{ entitis { totalCount } }", json!({})).await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(!message.contains("Did you mean"), "no field suggestions: {message}");

    let get = app.client.get(app.url("/graphql")).query(&[("query", "{ __typename }")]);
    let response = get.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("x-catalog-csrf"), "{body}");
    let response = app
        .client
        .get(app.url("/graphql"))
        .header("x-catalog-csrf", "1")
        .query(&[("query", "{ __typename }")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let graphiql = app.client.get(app.url("/graphql")).header("accept", "text/html").send().await.unwrap();
    assert_ne!(graphiql.headers()["content-type"], "text/html; charset=utf-8", "no GraphiQL in production");
    // POST with JSON needs no CSRF header: cross-site forms cannot send it.
    let data = app.query("{ entities { totalCount } }", json!({})).await;
    assert!(data["entities"]["totalCount"].as_u64().unwrap() > 0);
}

async fn the_embedded_profile_suggests_fields_and_answers_introspection(database: TestDatabase) {
    let app = app_with(database, |_| {}).await;
    let data = app.query("{ __schema { queryType { name } } }", json!({})).await;
    assert_eq!(data["__schema"]["queryType"]["name"], "QueryRoot");
    let (_, body) = app.post("{ entitis { totalCount } }", json!({})).await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("Did you mean"), "{body}");
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED");
}

/// Opens a WebSocket to /graphql/ws, optionally with an Origin header.
async fn open_socket(
    app: &TestApp,
    origin: Option<&str>,
) -> Result<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>, WsError> {
    let mut request = format!("ws://{}/graphql/ws", app.address).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    if let Some(origin) = origin {
        request.headers_mut().insert("Origin", HeaderValue::from_str(origin).unwrap());
    }
    tokio_tungstenite::connect_async(request).await.map(|(socket, _)| socket)
}

async fn websockets_refuse_other_origins_and_silent_clients(database: TestDatabase) {
    let app = app_with(database, |config| {
        config.graphql.websocket_init_timeout_seconds = 1;
        config.server.cors_allowed_origins = vec!["https://portal.example.com".into()];
    })
    .await;
    match open_socket(&app, Some("https://evil.example.com")).await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 403),
        other => panic!("a page from another origin opened the socket: {:?}", other.map(|_| ())),
    }
    open_socket(&app, Some("https://portal.example.com")).await.expect("an allowed origin opens the socket");
    open_socket(&app, Some(&format!("http://{}", app.address))).await.expect("the server's own origin");
    let mut silent = open_socket(&app, None).await.expect("non-browser clients send no Origin");
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.next()).await.expect("closed within 5 s");
    match closed {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::from(4408)),
        other => panic!("expected a 4408 close, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(900), "not before the timeout");
}

async fn cors_answers_only_configured_origins(database: TestDatabase) {
    let app = app_with(database, |config| {
        config.server.cors_allowed_origins = vec!["https://portal.example.com".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://portal.example.com").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://portal.example.com");
    let refused = preflight("https://evil.example.com").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("origin", "https://portal.example.com")
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "https://portal.example.com");
    let exposed = response.headers()["access-control-expose-headers"].to_str().unwrap().to_owned();
    assert!(exposed.contains("x-request-id"), "{exposed}");
}

backend_tests!(
    the_production_profile_hides_the_schema_and_asks_get_for_a_csrf_header,
    the_embedded_profile_suggests_fields_and_answers_introspection,
    websockets_refuse_other_origins_and_silent_clients,
    cors_answers_only_configured_origins,
    api_tokens_authenticate_http_requests,
    a_wrong_token_is_refused_even_when_anonymous_reads_are_allowed,
    websockets_authenticate_in_connection_init_and_close_when_the_token_expires,
    a_revoked_token_closes_its_open_websocket,
    relations_keep_what_a_visible_entity_states_and_lose_what_only_hidden_ones_state,
    a_policy_limits_reads_everywhere_a_hidden_entity_could_show,
    the_audit_log_records_changes_and_refusals_for_admins,
    a_websocket_runs_a_bounded_number_of_operations_and_no_mutations,
    open_websockets_are_capped_and_a_closed_one_frees_its_place,
    a_websocket_must_begin_with_an_authenticated_init,
    history_leaves_out_versions_the_policy_hides,
    a_token_record_holds_a_hash_of_its_secret_never_the_secret,
);

/// What the database holds of a token cannot be used as one: the record
/// keeps a SHA-256 digest of the secret, and no field holds the secret.
async fn a_token_record_holds_a_hash_of_its_secret_never_the_secret(store: catalog_store::Store) {
    let issued = catalog_api::auth::issue_token(&store.access_store(), "ci", &[Permission::EntityRead], None, "test")
        .await
        .unwrap();
    let (_, secret) = issued.token.strip_prefix("ctk_").unwrap().split_once('_').unwrap();
    let records = store.access_store().tokens().await.unwrap();
    let [record] = records.as_slice() else { panic!("one token: {records:?}") };
    let stored = format!("{record:?}");
    assert!(!stored.contains(secret), "the record holds the secret: {stored}");
    assert_eq!(record.secret_hash.len(), 64, "a SHA-256 digest in hex: {stored}");
    assert!(record.secret_hash.bytes().all(|byte| byte.is_ascii_hexdigit()), "{stored}");
}

/// An app that refuses anonymous reads, with one token per case.
async fn locked_app(database: TestDatabase) -> TestApp {
    app_with(database, |config| config.auth.anonymous_read = false).await
}

async fn issue(
    app: &TestApp,
    name: &str,
    scopes: &[Permission],
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> String {
    catalog_api::auth::issue_token(&app.store.access_store(), name, scopes, expires_at, "test").await.unwrap().token
}

async fn post_with(app: &TestApp, authorization: Option<&str>) -> (u16, Option<String>, serde_json::Value) {
    let mut request = app.client.post(app.url("/graphql")).json(&json!({"query": "{ entities { totalCount } }"}));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response.headers().get("www-authenticate").map(|value| value.to_str().unwrap().to_owned());
    (status, challenge, response.json().await.unwrap())
}

async fn api_tokens_authenticate_http_requests(database: TestDatabase) {
    let app = locked_app(database).await;
    let reader = issue(&app, "reader", &[Permission::EntityRead], None).await;
    let admin = issue(&app, "admin", &[Permission::Admin], None).await;
    let no_read = issue(&app, "refresher", &[Permission::EntityRefresh], None).await;
    let expired =
        issue(&app, "expired", &[Permission::EntityRead], Some(chrono::Utc::now() - chrono::Duration::seconds(1)))
            .await;
    let revoked = issue(&app, "revoked", &[Permission::EntityRead], None).await;
    assert!(app.store.access_store().revoke_token("revoked", "test").await.unwrap());

    let (status, challenge, body) = post_with(&app, None).await;
    assert_eq!((status, error_code(&body)), (401, "UNAUTHENTICATED"), "{body}");
    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="catalog""#));
    for (authorization, reason) in [
        (format!("Bearer {reader}x"), "not valid"),
        (format!("Bearer {}", reader.replace("ctk_", "ctk_0")), "not valid"),
        ("Bearer ctk_0000000000000000_guess".to_owned(), "not valid"),
        (format!("Basic {reader}"), "Bearer"),
        (format!("Bearer {expired}"), "expired"),
        (format!("Bearer {revoked}"), "revoked"),
    ] {
        let (status, challenge, body) = post_with(&app, Some(&authorization)).await;
        assert_eq!(status, 401, "{authorization}: {body}");
        assert!(challenge.unwrap().contains("invalid_token"));
        assert!(body["errors"][0]["message"].as_str().unwrap().contains(reason), "{authorization}: {body}");
        assert!(body.get("data").is_none());
    }
    let (status, _, body) = post_with(&app, Some(&format!("Bearer {no_read}"))).await;
    assert_eq!((status, error_code(&body)), (403, "FORBIDDEN"), "{body}");
    for token in [&reader, &admin] {
        let (status, _, body) = post_with(&app, Some(&format!("Bearer {token}"))).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["data"]["entities"]["totalCount"].as_u64().unwrap() > 0);
    }
    // The use is recorded (in the background).
    let mut last_used = None;
    for _ in 0..50 {
        let tokens = app.store.access_store().tokens().await.unwrap();
        last_used = tokens.iter().find(|token| token.name == "reader").and_then(|token| token.last_used_at);
        if last_used.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last_used.is_some(), "last_used_at is set");
    // GET authenticates the same way.
    let response = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", "{ __typename }")])
        .header("authorization", format!("Bearer {reader}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

async fn a_wrong_token_is_refused_even_when_anonymous_reads_are_allowed(database: TestDatabase) {
    let app = app_with(database, |_| {}).await;
    let (status, _, _) = post_with(&app, None).await;
    assert_eq!(status, 200, "anonymous reads are on by default");
    let (status, _, body) = post_with(&app, Some("Bearer ctk_0000000000000000_guess")).await;
    assert_eq!((status, error_code(&body)), (401, "UNAUTHENTICATED"), "never silently anonymous");
}

/// Sends `connection_init` with `payload` and returns the server's answer:
/// `Ok(ack)` or `Err(close code)`.
async fn init_socket(app: &TestApp, payload: serde_json::Value) -> Result<TestSocket, u16> {
    let mut socket = open_socket(app, None).await.unwrap();
    socket
        .send(Message::Text(json!({"type": "connection_init", "payload": payload}).to_string().into()))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), socket.next()).await.unwrap() {
        Some(Ok(Message::Text(text))) if text.contains("connection_ack") => Ok(socket),
        Some(Ok(Message::Close(Some(frame)))) => Err(u16::from(frame.code)),
        other => panic!("unexpected answer to connection_init: {other:?}"),
    }
}

type TestSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn websockets_authenticate_in_connection_init_and_close_when_the_token_expires(database: TestDatabase) {
    let app = locked_app(database).await;
    let reader = issue(&app, "reader", &[Permission::EntityRead], None).await;
    let soon =
        issue(&app, "soon", &[Permission::EntityRead], Some(chrono::Utc::now() + chrono::Duration::seconds(2))).await;
    assert_eq!(init_socket(&app, json!({})).await.err(), Some(4403), "no token");
    assert_eq!(
        init_socket(&app, json!({"Authorization": "Bearer ctk_0000000000000000_garbage"})).await.err(),
        Some(4403)
    );
    let mut socket =
        init_socket(&app, json!({"Authorization": format!("Bearer {reader}")})).await.expect("a valid token");
    let query = json!({"id": "1", "type": "subscribe", "payload": {"query": "{ entities { totalCount } }"}});
    socket.send(Message::Text(query.to_string().into())).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.unwrap().unwrap().unwrap();
    assert!(answer.to_text().unwrap().contains("totalCount"), "{answer:?}");
    init_socket(&app, json!({"token": reader})).await.expect("a bare token works too");

    let mut expiring =
        init_socket(&app, json!({"Authorization": format!("Bearer {soon}")})).await.expect("valid for now");
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), expiring.next()).await.expect("closed within 5 s") {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(closed, 4403);
}

/// Revocation reaches open sockets too: at the next credential check after
/// the cached record ages out (at most twice `auth.recheck_seconds`).
async fn a_revoked_token_closes_its_open_websocket(database: TestDatabase) {
    let app = app_with(database, |config| {
        config.auth.anonymous_read = false;
        config.auth.recheck_seconds = 1;
    })
    .await;
    let watcher = issue(&app, "watcher", &[Permission::EntityRead], None).await;
    let mut socket =
        init_socket(&app, json!({"Authorization": format!("Bearer {watcher}")})).await.expect("a valid token");
    let subscription = json!({"id": "1", "type": "subscribe",
        "payload": {"query": "subscription { catalogChanges { entityRef } }"}});
    socket.send(Message::Text(subscription.to_string().into())).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(1_500), socket.next()).await;
    assert!(quiet.is_err(), "open and quiet past a check while the token is valid: {quiet:?}");
    assert!(app.store.access_store().revoke_token("watcher", "test").await.unwrap());
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("closed within 5 s") {
            Some(Ok(Message::Close(Some(frame)))) => break (u16::from(frame.code), frame.reason.to_string()),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(closed.0, 4403, "{closed:?}");
    assert!(closed.1.contains("revoked") || closed.1.contains("not valid"), "{closed:?}");
}

/// Under read conditions, a visible entity's `relations` keep the edges its
/// own spec states (a hidden target looks like a dangling ref) and lose the
/// edges that only a hidden entity states, which would name it.
async fn relations_keep_what_a_visible_entity_states_and_lose_what_only_hidden_ones_state(database: TestDatabase) {
    let app = app_with(database, |config| {
        config.auth.anonymous_read = false;
        config.auth.policy = serde_json::from_value(json!([
            {"subjects": ["token:groups"], "permissions": ["entity.read"], "conditions": {"kinds": ["Group"]}},
            {"subjects": ["token:ops"], "permissions": ["entity.read"]},
            {"subjects": ["token:components"], "permissions": ["entity.read"], "conditions": {"kinds": ["Component"]}},
        ]))
        .unwrap();
    })
    .await;
    let groups = issue(&app, "groups", &[Permission::EntityRead], None).await;
    let ops = issue(&app, "ops", &[Permission::EntityRead], None).await;
    let query = r#"{ entity(ref: "group:default/team-billing") { relations { type targetRef resolved } } }"#;
    let edges = |body: serde_json::Value| -> Vec<(String, String, bool)> {
        body["data"]["entity"]["relations"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|edge| {
                let text = |key: &str| edge[key].as_str().unwrap().to_owned();
                (text("type"), text("targetRef"), edge["resolved"].as_bool().unwrap())
            })
            .collect()
    };
    let everything = edges(app.post_as(&ops, query).await.1);
    let limited = edges(app.post_as(&groups, query).await.1);
    let has = |edges: &[(String, String, bool)], kind: &str, target: &str| {
        edges.iter().any(|(edge_type, edge_target, _)| edge_type == kind && edge_target == target)
    };
    // Stated by the group itself (`spec.parent`), and by its visible parent.
    assert!(has(&limited, "CHILD_OF", "group:default/engineering-finance"), "{limited:?}");
    // Stated only by the components it owns and the users in it: hidden.
    assert!(has(&everything, "OWNER_OF", "component:default/invoice-service"), "{everything:?}");
    assert!(everything.iter().any(|(edge_type, _, _)| edge_type == "HAS_MEMBER"), "{everything:?}");
    assert!(
        limited.iter().all(|(edge_type, _, _)| edge_type != "OWNER_OF" && edge_type != "HAS_MEMBER"),
        "{limited:?}"
    );
    assert!(limited.iter().all(|(_, target, _)| target.starts_with("group:")), "{limited:?}");

    // A component reader sees a component's owner edge (its own spec names
    // the group), unresolved like a dangling ref since the group is hidden.
    let components = issue(&app, "components", &[Permission::EntityRead], None).await;
    let query = r#"{ entity(ref: "component:default/invoice-service") { relations { type targetRef resolved target { name } } } }"#;
    let (_, body) = app.post_as(&components, query).await;
    let relations = body["data"]["entity"]["relations"].as_array().unwrap_or_else(|| panic!("{body}"));
    let owner = relations.iter().find(|edge| edge["type"] == "OWNED_BY").unwrap_or_else(|| panic!("{body}"));
    assert_eq!(owner["targetRef"], "group:default/team-billing");
    assert_eq!((owner["resolved"].as_bool(), owner["target"].is_null()), (Some(false), true), "{owner}");
}

/// A policy limits what a token reads: hidden entities are neither listed,
/// counted, faceted, loaded, related nor streamed, and what cannot be
/// filtered yet is refused rather than leaked.
async fn a_policy_limits_reads_everywhere_a_hidden_entity_could_show(database: TestDatabase) {
    let app = app_with(database, |config| {
        config.auth.anonymous_read = false;
        config.auth.policy = serde_json::from_value(json!([
            {"subjects": ["token:portal"], "permissions": ["entity.read"], "conditions": {"kinds": ["Component"]}},
            {"subjects": ["token:ops"], "permissions": ["entity.read"]},
            {"subjects": ["token:refresher"], "permissions": ["entity.refresh"]},
        ]))
        .unwrap();
    })
    .await;
    let portal = issue(&app, "portal", &[Permission::EntityRead], None).await;
    let ops = issue(&app, "ops", &[Permission::EntityRead], None).await;
    let refresher = issue(&app, "refresher", &[Permission::EntityRead], None).await;
    let stranger = issue(&app, "stranger", &[Permission::EntityRead], None).await;

    let counts = r#"{ all: entities { totalCount } components: entities(filter: {kind: ["component"]}) { totalCount }
        groups: entities(filter: {kind: ["group"]}) { totalCount } facets(fields: ["kind"]) { values { value count } } }"#;
    let (_, everything) = app.post_as(&ops, counts).await;
    let (status, limited) = app.post_as(&portal, counts).await;
    assert_eq!(status, 200, "{limited}");
    let components = everything["data"]["components"]["totalCount"].as_u64().unwrap();
    assert!(everything["data"]["all"]["totalCount"].as_u64().unwrap() > components);
    assert_eq!(limited["data"]["all"]["totalCount"].as_u64().unwrap(), components, "{limited}");
    assert_eq!(limited["data"]["groups"]["totalCount"], 0);
    let kinds: Vec<&str> = limited["data"]["facets"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|value| value["value"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["Component"], "{limited}");

    let loads = r#"{ group: entity(ref: "group:team-shipping-core") { entityRef }
        component: entity(ref: "component:shipment-tracker") { entityRef ... on Component { owner { entityRef } } }
        byRefs: entitiesByRefs(refs: ["component:default/shipment-tracker", "group:default/team-shipping-core"]) { entityRef } }"#;
    let (_, body) = app.post_as(&portal, loads).await;
    assert!(body["data"]["group"].is_null(), "{body}");
    assert_eq!(body["data"]["component"]["entityRef"], "component:default/shipment-tracker");
    assert!(body["data"]["component"]["owner"].is_null(), "the owner is a hidden group: {body}");
    assert!(body["data"]["byRefs"][1].is_null() && body["data"]["byRefs"][0].is_object(), "{body}");
    let (_, body) = app.post_as(&ops, loads).await;
    assert_eq!(body["data"]["group"]["entityRef"], "group:default/team-shipping-core");

    let (_, body) = app.post_as(&portal, "{ changes(first: 1000) { events { entityRef } } }").await;
    let events = body["data"]["changes"]["events"].as_array().unwrap();
    assert!(
        !events.is_empty() && events.iter().all(|event| event["entityRef"].as_str().unwrap().starts_with("component:")),
        "{body}"
    );

    // Walks leave hidden entities out, and what is reached only through them.
    let walk = r#"{ traverse(from: ["component:shipment-tracker"], maxDepth: 6) { totalCount nodes { entityRef resolved } } }"#;
    let (_, limited) = app.post_as(&portal, walk).await;
    let (_, everything) = app.post_as(&ops, walk).await;
    let reached: Vec<&str> = limited["data"]["traverse"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("{limited}"))
        .iter()
        .filter(|node| node["resolved"] == true)
        .map(|node| node["entityRef"].as_str().unwrap())
        .collect();
    assert!(reached.iter().all(|entity_ref| entity_ref.starts_with("component:")), "{reached:?}");
    // Hidden nodes do not come back as unresolved ones either.
    let hidden: Vec<&str> = everything["data"]["traverse"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|node| node["resolved"] == true)
        .map(|node| node["entityRef"].as_str().unwrap())
        .filter(|entity_ref| !entity_ref.starts_with("component:"))
        .collect();
    assert!(!hidden.is_empty());
    let shown = limited["data"]["traverse"]["nodes"].to_string();
    assert!(hidden.iter().all(|entity_ref| !shown.contains(&format!("\"{entity_ref}\""))), "{shown}");
    // A hidden root and an absent one look alike.
    for root in ["group:default/team-shipping-core", "component:default/does-not-exist"] {
        let query = format!(r#"{{ graph(roots: ["{root}"]) {{ nodes {{ entityRef }} }} }}"#);
        let (_, body) = app.post_as(&portal, &query).await;
        assert_eq!(body["data"]["graph"]["nodes"], json!([]), "{root}: {body}");
    }
    let all = everything["data"]["traverse"]["totalCount"].as_u64().unwrap();
    let seen = limited["data"]["traverse"]["totalCount"].as_u64().unwrap();
    assert!(seen < all, "the hidden owner, system and APIs are left out: {seen} of {all}");
    let (_, body) = app.post_as(&portal, r#"{ traverse(from: ["group:team-shipping-core"]) { totalCount } }"#).await;
    assert_eq!(body["data"]["traverse"]["totalCount"], 0, "a hidden start reaches nothing: {body}");
    let (_, body) = app.post_as(&portal, "{ locations { target } }").await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");

    for token in [&refresher, &stranger] {
        let (status, body) = app.post_as(token, "{ __typename }").await;
        assert_eq!((status, error_code(&body)), (403, "FORBIDDEN"), "no rule grants entity.read: {body}");
    }
}

/// The audit log records ingestion, token changes and refused requests (by
/// name and request id, never with the credentials), and only admins read it.
async fn the_audit_log_records_changes_and_refusals_for_admins(database: TestDatabase) {
    let app = app_with(database, |_| {}).await;
    let admin = issue(&app, "auditor", &[Permission::Admin], None).await;
    let reader = issue(&app, "reader", &[Permission::EntityRead], None).await;
    let garbage = "ctk_0123456789abcdef_this-secret-must-never-be-stored";
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("authorization", format!("Bearer {garbage}"))
        .header("x-request-id", "audit-me-1")
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    let query =
        "{ auditLog(first: 100) { events { principal tokenId operation targets decision result requestId } hasMore } }";
    let mut log = json!(null);
    for _ in 0..40 {
        let (_, body) = app.post_as(&admin, query).await;
        log = body;
        let events = log["data"]["auditLog"]["events"].as_array().cloned().unwrap_or_default();
        if events.iter().any(|event| event["decision"] == "DENIED") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = log["data"]["auditLog"]["events"].as_array().unwrap();
    let denied = events.iter().find(|event| event["decision"] == "DENIED").unwrap_or_else(|| panic!("{log}"));
    assert_eq!(denied["principal"], "unknown");
    assert_eq!(denied["requestId"], "audit-me-1");
    assert!(denied["result"].as_str().unwrap().contains("not valid"), "{denied}");
    assert!(!log.to_string().contains("this-secret-must-never-be-stored"));
    let created =
        events.iter().find(|event| event["operation"] == "token.create" && event["targets"][0] == "token:reader");
    let created = created.unwrap_or_else(|| panic!("{log}"));
    assert_eq!((created["principal"].as_str(), created["decision"].as_str()), (Some("test"), Some("ALLOWED")));
    assert!(created["tokenId"].is_string());
    let ingested =
        events.iter().find(|event| event["operation"] == "snapshot.apply").unwrap_or_else(|| panic!("{log}"));
    assert_eq!(ingested["principal"], "provider:file");
    assert!(ingested["result"].as_str().unwrap().contains("added"), "{ingested}");

    let (_, body) = app.post_as(&reader, query).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    let (_, body) = app.post(query, json!({})).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "anonymous: {body}");
}

/// The next text message on a socket, or the close code it ends with.
async fn next_message(socket: &mut TestSocket) -> Result<serde_json::Value, u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("an answer within 5 s") {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(Some(frame)))) => return Err(u16::from(frame.code)),
            Some(Ok(_)) => continue,
            other => panic!("unexpected: {other:?}"),
        }
    }
}

async fn a_websocket_runs_a_bounded_number_of_operations_and_no_mutations(database: TestDatabase) {
    let app = app_with(database, |config| config.graphql.max_websocket_operations = 2).await;
    let mut socket = init_socket(&app, json!({})).await.expect("anonymous reads are on");
    let subscribe = |id: &str, query: &str| {
        Message::Text(json!({"id": id, "type": "subscribe", "payload": {"query": query}}).to_string().into())
    };
    socket.send(subscribe("m", "mutation { __typename }")).await.unwrap();
    let refused = next_message(&mut socket).await.unwrap();
    assert_eq!(refused["payload"]["errors"][0]["extensions"]["code"], "BAD_REQUEST", "{refused}");
    assert!(refused["payload"]["errors"][0]["message"].as_str().unwrap().contains("websocket_mutations"));
    assert_eq!(next_message(&mut socket).await.unwrap()["type"], "complete");

    let live = "subscription { catalogChanges { cursor } }";
    socket.send(subscribe("1", live)).await.unwrap();
    socket.send(subscribe("2", live)).await.unwrap();
    // Ending one makes room for another.
    socket.send(Message::Text(json!({"id": "1", "type": "complete"}).to_string().into())).await.unwrap();
    assert_eq!(next_message(&mut socket).await.unwrap(), json!({"type": "complete", "id": "1"}));
    socket.send(subscribe("3", live)).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(500), socket.next()).await;
    assert!(quiet.is_err(), "two operations run without complaint: {quiet:?}");
    socket.send(subscribe("4", live)).await.unwrap();
    assert_eq!(next_message(&mut socket).await.err(), Some(4429), "the third at once closes the socket");
    assert_rejections_counted(&app, "websocketOperations", 1).await;
}

/// `/metrics` counted `n` rejections for `limit`.
async fn assert_rejections_counted(app: &TestApp, limit: &str, n: u32) {
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let series = format!("catalog_limit_rejections_total{{limit=\"{limit}\"}} {n}\n");
    assert!(text.contains(&series), "no `{series}` in {text}");
}

async fn open_websockets_are_capped_and_a_closed_one_frees_its_place(database: TestDatabase) {
    let app = app_with(database, |config| config.graphql.max_websocket_connections = 1).await;
    let first = init_socket(&app, json!({})).await.expect("the first socket opens");
    match open_socket(&app, None).await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 503),
        other => panic!("a second socket opened: {:?}", other.map(|_| ())),
    }
    assert_rejections_counted(&app, "websocketConnections", 1).await;
    drop(first);
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(socket) = open_socket(&app, None).await {
            reopened = Some(socket);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened.is_some(), "closing the first socket frees its place");
}

/// A socket whose first protocol message is not `connection_init` is closed
/// with 4400 (async-graphql alone would answer a ping and accept a later
/// init); an init sent as a binary frame is checked like a text one.
async fn a_websocket_must_begin_with_an_authenticated_init(database: TestDatabase) {
    let app = locked_app(database).await;
    let reader = issue(&app, "reader", &[Permission::EntityRead], None).await;
    let mut socket = open_socket(&app, None).await.unwrap();
    socket.send(Message::Text(json!({"type": "ping"}).to_string().into())).await.unwrap();
    assert_eq!(next_message(&mut socket).await.err(), Some(4400));

    let mut socket = open_socket(&app, None).await.unwrap();
    socket.send(Message::Binary(json!({"type": "connection_init"}).to_string().into_bytes().into())).await.unwrap();
    assert_eq!(next_message(&mut socket).await.err(), Some(4403), "a binary init without a token");

    let mut socket = open_socket(&app, None).await.unwrap();
    let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {reader}")}});
    socket.send(Message::Binary(init.to_string().into_bytes().into())).await.unwrap();
    assert_eq!(next_message(&mut socket).await.unwrap()["type"], "connection_ack");

    let mut socket = open_socket(&app, None).await.unwrap();
    socket
        .send(Message::Text(json!({"type": "connection_init", "payload": {"token": 42}}).to_string().into()))
        .await
        .unwrap();
    assert_eq!(next_message(&mut socket).await.err(), Some(4403), "a credential that is not a string is a bad one");
}

/// History under a read condition shows only the versions the condition
/// would let through: here the version before the annotation was added.
async fn history_leaves_out_versions_the_policy_hides(database: TestDatabase) {
    let catalog = crate::helpers::editable_examples();
    let url = database.url.clone();
    let app = spawn_app_with(&url, catalog.path(), Some(database), |config| {
        config.auth.policy = serde_json::from_value(json!([
            {"subjects": ["token:public"], "permissions": ["entity.read"], "conditions": {"has_annotation": "example.com/public"}},
        ]))
        .unwrap();
    })
    .await;
    let public = issue(&app, "public", &[Permission::EntityRead], None).await;
    let query = r#"{ entity(ref: "component:shipment-tracker") { history { events { type } } } }"#;
    let (_, body) = app.post_as(&public, query).await;
    assert!(body["data"]["entity"].is_null(), "not public yet: {body}");

    let path = catalog.path().join("systems/shipping.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen(
        "    github.com/project-slug: acme/shipment-tracker",
        "    github.com/project-slug: acme/shipment-tracker\n    example.com/public: \"yes\"",
        1,
    );
    std::fs::write(&path, edited).unwrap();
    app.ingest().await;
    let (_, body) = app.post_as(&public, query).await;
    let types: Vec<&str> = body["data"]["entity"]["history"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["UPDATED"], "the version without the annotation stays hidden: {body}");
}
