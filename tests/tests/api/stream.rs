//! The change stream end to end: a real WebSocket client subscribes while the
//! test edits catalog files and ingests them.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use catalog_store::backend_tests;
use catalog_store::testing::TestDatabase;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{ServeProcess, TestApp, catalog_command, editable_examples, query_graphql, spawn_app_on};

/// The two GraphQL-over-WebSocket protocols clients speak.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// graphql-transport-ws (the graphql-ws JavaScript client).
    TransportWs,
    /// The legacy subscriptions-transport-ws protocol, named graphql-ws.
    Legacy,
}

pub(crate) struct Subscriber {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    protocol: Protocol,
}

impl Subscriber {
    pub(crate) async fn connect(address: SocketAddr, path: &str, protocol: Protocol) -> Self {
        Self::connect_with_window(address, path, protocol, None).await
    }

    /// Connects over a socket whose receive buffer is `window` bytes, so that
    /// a subscriber that stops reading stops the server's writes early.
    async fn connect_with_window(address: SocketAddr, path: &str, protocol: Protocol, window: Option<u32>) -> Self {
        Self::connect_with(address, path, protocol, window, json!({})).await
    }

    /// Connects and sends `init_payload` (credentials, say) in connection_init.
    pub(crate) async fn connect_with(
        address: SocketAddr,
        path: &str,
        protocol: Protocol,
        window: Option<u32>,
        init_payload: Value,
    ) -> Self {
        let mut request = format!("ws://{address}{path}").into_client_request().unwrap();
        let name = match protocol {
            Protocol::TransportWs => "graphql-transport-ws",
            Protocol::Legacy => "graphql-ws",
        };
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(name));
        let tcp = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(window) = window {
            tcp.set_recv_buffer_size(window).unwrap();
        }
        let stream = tcp.connect(address).await.unwrap();
        let (socket, response) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
            .await
            .expect("the WebSocket upgrade succeeds");
        assert_eq!(response.headers()["sec-websocket-protocol"], name);
        let mut subscriber = Self { socket, protocol };
        subscriber.send(json!({"type": "connection_init", "payload": init_payload})).await;
        assert_eq!(subscriber.message().await["type"], "connection_ack");
        subscriber
    }

    async fn send(&mut self, message: Value) {
        self.socket.send(Message::Text(message.to_string().into())).await.unwrap();
    }

    pub(crate) async fn subscribe(&mut self, query: &str, variables: Value) {
        let kind = if self.protocol == Protocol::TransportWs { "subscribe" } else { "start" };
        self.send(json!({"id": "1", "type": kind, "payload": {"query": query, "variables": variables}})).await;
    }

    /// The next protocol message, skipping keep-alives; fails after 15 s.
    pub(crate) async fn message(&mut self) -> Value {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(15), self.socket.next())
                .await
                .expect("a message within 15 s")
                .expect("the connection stays open")
                .unwrap();
            if let Message::Text(text) = next {
                let message: Value = serde_json::from_str(&text).unwrap();
                if message["type"] != "ka" && message["type"] != "ping" {
                    return message;
                }
            }
        }
    }

    /// The next `catalogChanges` event; fails on errors and completion.
    pub(crate) async fn event(&mut self) -> Value {
        self.data().await["catalogChanges"].clone()
    }

    /// The next event's data; fails on errors and completion.
    pub(crate) async fn data(&mut self) -> Value {
        let message = self.message().await;
        let expected = if self.protocol == Protocol::TransportWs { "next" } else { "data" };
        assert_eq!(message["type"], expected, "{message}");
        assert!(message["payload"].get("errors").is_none(), "{message}");
        message["payload"]["data"].clone()
    }

    /// Nothing arrives within `wait`.
    async fn silent_for(&mut self, wait: Duration) {
        if let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(wait, self.socket.next()).await {
            panic!("unexpected message: {text}");
        }
    }
}

const CHANGES: &str = r#"subscription ($filter: ChangeFilter, $after: ChangeCursor) {
    catalogChanges(filter: $filter, after: $after) {
        cursor type entityRef changedFields source time
        entity { entityRef description ... on Component { lifecycle owner { entityRef } } }
    } }"#;

/// Replaces the description of the entity named `name` in `file`.
pub(crate) fn edit_description(catalog: &Path, file: &str, name: &str, description: &str) {
    let path = catalog.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let at = lines.iter().position(|line| line == &format!("  name: {name}")).expect("the entity is in the file");
    let description_line = lines[at..].iter().position(|line| line.starts_with("  description:")).unwrap() + at;
    lines[description_line] = format!("  description: \"{description}\"");
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// The last cursor of the feed so far.
async fn latest_cursor(app: &TestApp) -> String {
    latest_cursor_at(&app.client, app.address).await
}

async fn latest_cursor_at(client: &reqwest::Client, address: SocketAddr) -> String {
    let mut cursor = Value::Null;
    loop {
        let page = query_graphql(
            client,
            address,
            "query ($after: ChangeCursor) { changes(after: $after, first: 1000) { nextCursor hasMore } }",
            json!({"after": cursor}),
        )
        .await;
        cursor = page["changes"]["nextCursor"].clone();
        if page["changes"]["hasMore"] == false {
            return cursor.as_str().unwrap().to_owned();
        }
    }
}

async fn a_subscriber_is_told_what_changed_after_replaying_the_past(database: TestDatabase) {
    let catalog = editable_examples();
    let url = database.url.clone();
    let app = spawn_app_on(&url, catalog.path(), Some(database)).await;
    let mut subscriber = Subscriber::connect(app.address, "/graphql/ws", Protocol::TransportWs).await;
    subscriber.subscribe(CHANGES, json!({"filter": {"refs": ["component:shipment-tracker"]}, "after": "0"})).await;
    let added = subscriber.event().await;
    assert_eq!(added["type"], "ADDED");
    assert_eq!(added["entityRef"], "component:default/shipment-tracker");
    assert_eq!(added["entity"]["lifecycle"], "production");

    let path = catalog.path().join("systems/shipping.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("  lifecycle: production", "  lifecycle: experimental", 1)).unwrap();
    app.ingest().await;
    let updated = subscriber.event().await;
    assert_eq!(updated["type"], "UPDATED");
    assert_eq!(updated["changedFields"], json!(["spec.lifecycle"]));
    assert_eq!(updated["entity"]["lifecycle"], "experimental");
    assert_eq!(updated["entity"]["owner"]["entityRef"], "group:default/team-shipping-core");
    assert_eq!(updated["source"], "file");
    assert!(
        updated["cursor"].as_str().unwrap().parse::<i64>().unwrap()
            > added["cursor"].as_str().unwrap().parse::<i64>().unwrap()
    );
    // Changes to other entities do not reach this subscriber.
    edit_description(catalog.path(), "systems/shipping.yaml", "driver-app", "elsewhere");
    app.ingest().await;
    subscriber.silent_for(Duration::from_millis(1500)).await;
}

async fn a_reconnecting_subscriber_gets_exactly_what_it_missed(database: TestDatabase) {
    let catalog = editable_examples();
    let url = database.url.clone();
    let app = spawn_app_on(&url, catalog.path(), Some(database)).await;
    let cursor = latest_cursor(&app).await;
    let names = ["shipment-tracker", "label-printer-lib", "tracking-website", "customs-gateway", "route-optimizer"];
    for (round, name) in names.iter().enumerate() {
        edit_description(catalog.path(), "systems/shipping.yaml", name, &format!("missed {round}"));
        app.ingest().await;
    }
    let mut subscriber = Subscriber::connect(app.address, "/graphql", Protocol::TransportWs).await;
    subscriber.subscribe(CHANGES, json!({"filter": {"kinds": ["component"]}, "after": cursor})).await;
    // More changes land while the replay runs: they follow it, once each.
    let during = {
        let path = catalog.path().to_owned();
        let engine = app.engine.clone();
        tokio::spawn(async move {
            for round in 0..3 {
                edit_description(&path, "systems/shipping.yaml", "driver-app", &format!("during {round}"));
                engine.run_once().await.unwrap();
            }
        })
    };
    let mut events = Vec::new();
    for _ in 0..8 {
        events.push(subscriber.event().await);
    }
    during.await.unwrap();
    let refs: Vec<&str> = events.iter().map(|event| event["entityRef"].as_str().unwrap()).collect();
    let expected_first: Vec<String> = names.iter().map(|name| format!("component:default/{name}")).collect();
    assert_eq!(
        refs[..5],
        expected_first.iter().map(String::as_str).collect::<Vec<_>>()[..],
        "the missed five, in order"
    );
    assert!(refs[5..].iter().all(|entity_ref| *entity_ref == "component:default/driver-app"));
    let descriptions: Vec<&str> =
        events[5..].iter().map(|event| event["entity"]["description"].as_str().unwrap()).collect();
    assert_eq!(descriptions, vec!["during 0", "during 1", "during 2"]);
    let cursors: Vec<i64> = events.iter().map(|event| event["cursor"].as_str().unwrap().parse().unwrap()).collect();
    assert!(cursors.windows(2).all(|pair| pair[0] < pair[1]), "in order, no duplicates: {cursors:?}");
    assert!(
        events
            .iter()
            .all(|event| event["type"] == "UPDATED" && event["changedFields"] == json!(["metadata.description"]))
    );
    subscriber.silent_for(Duration::from_millis(1500)).await;
}

async fn the_legacy_protocol_delivers_the_same_events(database: TestDatabase) {
    let catalog = editable_examples();
    let url = database.url.clone();
    let app = spawn_app_on(&url, catalog.path(), Some(database)).await;
    let cursor = latest_cursor(&app).await;
    let mut subscriber = Subscriber::connect(app.address, "/graphql/ws", Protocol::Legacy).await;
    subscriber.subscribe(CHANGES, json!({"filter": {"owners": ["team-shipping-core"]}, "after": cursor})).await;
    edit_description(catalog.path(), "systems/shipping.yaml", "customs-gateway", "legacy clients too");
    app.ingest().await;
    let event = subscriber.event().await;
    assert_eq!(event["entityRef"], "component:default/customs-gateway");
    assert_eq!(event["entity"]["description"], "legacy clients too");
}

async fn a_change_ingested_by_one_replica_reaches_a_subscriber_of_another(database: TestDatabase) {
    // On PostgreSQL the reader is notified; on SQLite it looks for new commits
    // twice a second (two processes on one SQLite file, e.g. `ingest --once`
    // beside `serve`).
    let catalog = editable_examples();
    let url = database.url.clone();
    let writer = spawn_app_on(&url, catalog.path(), Some(database)).await;
    let reader = spawn_app_on(&url, catalog.path(), None).await;
    let cursor = latest_cursor(&reader).await;
    let mut subscriber = Subscriber::connect(reader.address, "/graphql/ws", Protocol::TransportWs).await;
    subscriber.subscribe(CHANGES, json!({"after": cursor})).await;
    edit_description(catalog.path(), "systems/shipping.yaml", "route-optimizer", "written by the other replica");
    writer.ingest().await;
    let event = subscriber.event().await;
    assert_eq!(event["entityRef"], "component:default/route-optimizer");
    assert_eq!(event["entity"]["description"], "written by the other replica");
}

async fn history_and_as_of_answer_from_the_change_log(database: TestDatabase) {
    let catalog = editable_examples();
    let url = database.url.clone();
    let app = spawn_app_on(&url, catalog.path(), Some(database)).await;
    let before_edit = latest_cursor(&app).await;
    edit_description(catalog.path(), "systems/shipping.yaml", "customs-gateway", "second version");
    app.ingest().await;
    let path = catalog.path().join("systems/shipping.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> =
        text.split("\n---\n").filter(|document| !document.contains("name: customs-gateway")).collect();
    std::fs::write(&path, kept.join("\n---\n")).unwrap();
    app.ingest().await;

    let query = r#"query ($cursor: ChangeCursor!) {
        now: entity(ref: "component:customs-gateway") { entityRef }
        then: entity(ref: "component:customs-gateway", asOf: {cursor: $cursor}) { description }
        history: changes(filter: {refs: ["component:customs-gateway"]}) { events { type cursor } }
    }"#;
    let data = app.query(query, json!({"cursor": before_edit})).await;
    assert!(data["now"].is_null(), "removed now");
    assert_ne!(data["then"]["description"], "second version");
    assert!(data["then"]["description"].is_string(), "present before: {data}");
    let types: Vec<&str> =
        data["history"]["events"].as_array().unwrap().iter().map(|event| event["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["ADDED", "UPDATED", "REMOVED"]);
    let updated_cursor = data["history"]["events"][1]["cursor"].clone();
    let as_updated =
        app.query(r#"query ($c: ChangeCursor!) { entity(ref: "component:customs-gateway", asOf: {cursor: $c}) { description } }"#, json!({"c": updated_cursor})).await;
    assert_eq!(as_updated["entity"]["description"], "second version");

    // A page of the catalog as it was: the removed component is back with its
    // first description, filters and counts apply to the versions of then.
    let page = r#"query ($c: ChangeCursor!) {
        then: entities(asOf: {cursor: $c}, filter: {kind: ["component"], system: ["shipping-platform"]}, first: 100) {
            totalCount nodes { entityRef description }
        }
        now: entities(filter: {kind: ["component"], system: ["shipping-platform"]}) { totalCount }
    }"#;
    let data = app.query(page, json!({"c": before_edit})).await;
    let then_refs: Vec<&str> =
        data["then"]["nodes"].as_array().unwrap().iter().map(|node| node["entityRef"].as_str().unwrap()).collect();
    assert!(then_refs.contains(&"component:default/customs-gateway"), "{then_refs:?}");
    assert!(then_refs.is_sorted(), "time-travel pages are in ref order: {then_refs:?}");
    assert_eq!(data["then"]["totalCount"].as_u64().unwrap(), then_refs.len() as u64);
    assert_eq!(data["now"]["totalCount"].as_u64().unwrap() + 1, then_refs.len() as u64, "{data}");
    let (_, body) =
        app.post(r#"{ entities(asOf: {cursor: "1"}, orderBy: {field: TITLE}) { totalCount } }"#, json!({})).await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("orderBy cannot be combined with asOf"), "{body}");

    // History hangs off every entity, newest first.
    let history = app
        .query(
            r#"{ entity(ref: "component:shipment-tracker") { history(first: 5) { events { type changedFields } hasMore nextCursor } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(history["entity"]["history"]["events"][0]["type"], "ADDED");
    assert_eq!(history["entity"]["history"]["hasMore"], false);
}

async fn feed_cursors_are_validated(database: TestDatabase) {
    let url = database.url.clone();
    let app = spawn_app_on(&url, &crate::helpers::examples_root(), Some(database)).await;
    let (_, body) = app.post(r#"{ changes(after: "minus one") { hasMore } }"#, json!({})).await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("change cursor"), "{body}");
    let (_, body) = app.post(r#"{ changes(first: 5000) { hasMore } }"#, json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["limit"], "pageSize", "{body}");
    let page = app
        .query(
            r#"{ changes(first: 10, filter: {kinds: ["group"]}) { events { entityRef type } nextCursor hasMore } }"#,
            json!({}),
        )
        .await;
    let events = page["changes"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 10);
    assert!(events.iter().all(|event| event["entityRef"].as_str().unwrap().starts_with("group:")));
    assert_eq!(page["changes"]["hasMore"], true);
    // Every ref in a filter is parsed where it enters, the owner trees' roots too.
    for filter in [r#"{refs: ["component:bad_ns/x"]}"#, r#"{ownedByTree: ["group:bad_ns/x"]}"#] {
        let (_, body) = app.post(&format!("{{ changes(filter: {filter}) {{ hasMore }} }}"), json!({})).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{filter}: {body}");
    }
}

async fn websocket_operations_pass_the_firewall(database: TestDatabase) {
    let url = database.url.clone();
    let app = spawn_app_on(&url, &crate::helpers::examples_root(), Some(database)).await;
    let mut subscriber = Subscriber::connect(app.address, "/graphql/ws", Protocol::TransportWs).await;
    // The query that overflows async-graphql's parser stack: refused unparsed.
    let crash = format!(
        "subscription {{ catalogChanges(filter: {{refs: {}\"x\"{}}}) {{ cursor }} }}",
        "[".repeat(2_000),
        "]".repeat(2_000)
    );
    subscriber.subscribe(&crash, json!({})).await;
    let refused = subscriber.message().await;
    let errors =
        if refused["type"] == "error" { refused["payload"].clone() } else { refused["payload"]["errors"].clone() };
    assert_eq!(errors[0]["extensions"]["code"], "LIMIT_EXCEEDED", "{refused}");
    assert_eq!(errors[0]["extensions"]["limit"], "nesting", "{refused}");
    // The server still answers.
    let data = app.query("{ entities { totalCount } }", json!({})).await;
    assert!(data["entities"]["totalCount"].as_u64().unwrap() > 0);
}

/// Rewrites every description in the shipping system's file.
fn edit_every_description(catalog: &Path, round: usize) {
    let path = catalog.join("systems/shipping.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with("  description:") {
                format!("  description: \"round {round}\"")
            } else {
                line.to_owned()
            }
        })
        .collect();
    std::fs::write(path, edited.join("\n") + "\n").unwrap();
}

async fn a_subscriber_that_stops_reading_is_ended_with_a_cursor_to_resume_from(database: TestDatabase) {
    let catalog = editable_examples();
    let url = database.url.clone();
    let app = crate::helpers::spawn_app_with(&url, catalog.path(), Some(database), |config| {
        config.changes.subscriber_buffer = 4;
    })
    .await;
    let start = latest_cursor(&app).await;
    let query = r#"subscription ($after: ChangeCursor) { catalogChanges(after: $after) { cursor entity { raw } } }"#;
    let mut slow = Subscriber::connect_with_window(app.address, "/graphql/ws", Protocol::TransportWs, Some(2048)).await;
    slow.subscribe(query, json!({"after": start})).await;
    for round in 0..6 {
        edit_every_description(catalog.path(), round);
        app.ingest().await;
    }
    let expected: Vec<String> = {
        let page = app
            .query(
                "query ($after: ChangeCursor) { changes(after: $after, first: 1000) { events { cursor } } }",
                json!({"after": start}),
            )
            .await;
        page["changes"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["cursor"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(expected.len() >= 60, "{} changes", expected.len());

    let mut delivered = Vec::new();
    let last_cursor = loop {
        let message = slow.message().await;
        assert_eq!(message["type"], "next", "ended without saying why: {message}");
        if let Some(errors) = message["payload"].get("errors") {
            assert_eq!(errors[0]["extensions"]["code"], "SUBSCRIBER_TOO_SLOW", "{message}");
            break errors[0]["extensions"]["lastCursor"].as_str().unwrap().to_owned();
        }
        delivered.push(message["payload"]["data"]["catalogChanges"]["cursor"].as_str().unwrap().to_owned());
    };
    assert_eq!(slow.message().await["type"], "complete");
    assert!(delivered.len() < expected.len(), "the subscriber was cut off before the end");
    assert_eq!(
        delivered.last().map(String::as_str).unwrap_or(start.as_str()),
        last_cursor,
        "lastCursor is the last delivered"
    );

    let mut resumed = Subscriber::connect(app.address, "/graphql/ws", Protocol::TransportWs).await;
    resumed.subscribe(query, json!({"after": last_cursor})).await;
    while delivered.len() < expected.len() {
        delivered.push(resumed.event().await["cursor"].as_str().unwrap().to_owned());
    }
    assert_eq!(delivered, expected, "cut off and resumed: every change once, in order");
}

async fn a_saved_file_reaches_subscribers_without_a_refresh(database: TestDatabase) {
    let catalog = editable_examples();
    let url = database.url.clone();
    // An hour between scheduled runs: only the file watch can deliver in time.
    let app = crate::helpers::spawn_app_with(&url, catalog.path(), Some(database), |config| {
        config.ingestion.enabled = true;
        config.ingestion.interval_seconds = 3_600;
        config.ingestion.watch = true;
    })
    .await;
    let cursor = latest_cursor(&app).await;
    let mut subscriber = Subscriber::connect(app.address, "/graphql/ws", Protocol::TransportWs).await;
    subscriber.subscribe(CHANGES, json!({"filter": {"refs": ["component:route-optimizer"]}, "after": cursor})).await;
    // Let the loop's first scheduled run finish before saving.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let saved = std::time::Instant::now();
    edit_description(catalog.path(), "systems/shipping.yaml", "route-optimizer", "saved, not refreshed");
    let event = subscriber.event().await;
    assert_eq!(event["entity"]["description"], "saved, not refreshed");
    assert!(saved.elapsed() < Duration::from_secs(5), "delivered after {:?}", saved.elapsed());
}

async fn a_cursor_older_than_the_retained_log_is_refused(database: TestDatabase) {
    let catalog = editable_examples();
    let url = database.url.clone();
    let app = spawn_app_on(&url, catalog.path(), Some(database)).await;
    edit_description(catalog.path(), "systems/shipping.yaml", "driver-app", "before the purge");
    app.ingest().await;
    app.store.maintenance().purge_changes(chrono::Utc::now() + chrono::Duration::days(1)).await.unwrap();
    let purged_through = app.store.change_feed().purged_through().await.unwrap().to_string();

    let (_, body) = app.post(r#"{ changes(after: "0") { hasMore } }"#, json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "CURSOR_EXPIRED", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["oldestCursor"], purged_through.as_str());
    let (_, body) =
        app.post(r#"{ entity(ref: "component:driver-app", asOf: {cursor: "1"}) { name } }"#, json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "CURSOR_EXPIRED", "{body}");
    // From the mark on, the feed is whole again.
    app.query("query ($after: ChangeCursor) { changes(after: $after) { hasMore } }", json!({"after": purged_through}))
        .await;

    let mut subscriber = Subscriber::connect(app.address, "/graphql/ws", Protocol::TransportWs).await;
    subscriber.subscribe(CHANGES, json!({"after": "0"})).await;
    let refused = subscriber.message().await;
    let errors =
        if refused["type"] == "error" { refused["payload"].clone() } else { refused["payload"]["errors"].clone() };
    assert_eq!(errors[0]["extensions"]["code"], "CURSOR_EXPIRED", "{refused}");
}

backend_tests!(
    separate_server_processes_deliver_the_same_changes,
    a_cursor_older_than_the_retained_log_is_refused,
    a_saved_file_reaches_subscribers_without_a_refresh,
    a_subscriber_that_stops_reading_is_ended_with_a_cursor_to_resume_from,
    a_subscriber_is_told_what_changed_after_replaying_the_past,
    a_reconnecting_subscriber_gets_exactly_what_it_missed,
    the_legacy_protocol_delivers_the_same_events,
    a_change_ingested_by_one_replica_reaches_a_subscriber_of_another,
    history_and_as_of_answer_from_the_change_log,
    feed_cursors_are_validated,
    websocket_operations_pass_the_firewall,
);

/// Three separate OS processes on one database: a server that ingests (its
/// file watcher), a server that only serves, and a one-off `catalog ingest
/// --once`. Subscribers of both servers receive every change exactly once and
/// with the same cursors, whichever process wrote it (PostgreSQL wakes the
/// others with NOTIFY, SQLite through each server's poll of the log).
async fn separate_server_processes_deliver_the_same_changes(database: TestDatabase) {
    let catalog = editable_examples();
    let writer = ServeProcess::start(&database.url, catalog.path(), true).await;
    let reader = ServeProcess::start(&database.url, catalog.path(), false).await;
    let cursor = latest_cursor_at(&reader.client, reader.address).await;
    let filter = json!({"refs": ["component:route-optimizer", "component:driver-app"]});
    let mut subscribers = Vec::new();
    for server in [&writer, &reader] {
        let mut subscriber = Subscriber::connect(server.address, "/graphql/ws", Protocol::TransportWs).await;
        subscriber.subscribe(CHANGES, json!({"filter": filter, "after": cursor})).await;
        subscribers.push(subscriber);
    }

    // The serving writer's watcher picks up a saved file.
    edit_description(catalog.path(), "systems/shipping.yaml", "route-optimizer", "saved beside the writer");
    let mut cursors = Vec::new();
    for subscriber in &mut subscribers {
        let event = subscriber.event().await;
        assert_eq!(event["entityRef"], "component:default/route-optimizer");
        assert_eq!(event["entity"]["description"], "saved beside the writer");
        cursors.push(event["cursor"].clone());
    }
    assert_eq!(cursors[0], cursors[1], "both servers deliver the same change under the same cursor");

    // A third process ingests another edit; the writer's watcher may race it
    // for the same file, and still exactly one change comes out.
    edit_description(catalog.path(), "systems/shipping.yaml", "driver-app", "ingested by a one-off process");
    let status = catalog_command(&database.url, catalog.path()).args(["ingest", "--once"]).status().unwrap();
    assert!(status.success());
    let mut cursors = Vec::new();
    for subscriber in &mut subscribers {
        let event = subscriber.event().await;
        assert_eq!(event["entityRef"], "component:default/driver-app");
        assert_eq!(event["entity"]["description"], "ingested by a one-off process");
        cursors.push(event["cursor"].clone());
    }
    assert_eq!(cursors[0], cursors[1]);
    for subscriber in &mut subscribers {
        subscriber.silent_for(Duration::from_secs(1)).await;
    }
}
