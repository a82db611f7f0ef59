//! The transport's defences: the production profile, CSRF, CORS, WebSocket
//! origins and the WebSocket init timeout.

use std::time::Duration;

use catalog_api::config::{Config, Profile};
use catalog_store::testing::TestDatabase;
use futures::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::helpers::{TestApp, database_tests, error_code, examples_root, spawn_app_with};

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

database_tests!(
    the_production_profile_hides_the_schema_and_asks_get_for_a_csrf_header,
    the_embedded_profile_suggests_fields_and_answers_introspection,
    websockets_refuse_other_origins_and_silent_clients,
    cors_answers_only_configured_origins,
);
