//! Starting the real application for a test, and talking to it over HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use catalog_api::app::Application;
use catalog_api::config::Config;
use catalog_ingestion::Engine;
use catalog_store::Store;
use catalog_store::testing::{Fixture, TestDatabase};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// A running server over a fresh database holding the example catalog.
pub struct TestApp {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    /// The application's own store, to count the statements it runs.
    pub store: Store,
    /// Runs the providers on demand: tests change files, then ingest.
    pub engine: Engine,
    _database: Option<TestDatabase>,
    _shutdown: oneshot::Sender<()>,
}

pub fn examples_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

pub async fn spawn_app(database: TestDatabase) -> TestApp {
    let url = database.url.clone();
    spawn_app_on(&url, &examples_root(), Some(database)).await
}

/// A server over the database at `url` reading the catalog under `catalog`
/// (its catalog-info.yaml), ingested once before it serves. Several apps may
/// share one database, as replicas do.
pub async fn spawn_app_on(url: &str, catalog: &Path, database: Option<TestDatabase>) -> TestApp {
    spawn_app_with(url, catalog, database, |_| {}).await
}

/// [`spawn_app_on`] with the configuration adjusted first.
pub async fn spawn_app_with(
    url: &str,
    catalog: &Path,
    database: Option<TestDatabase>,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    let mut config = Config::default();
    config.server.port = 0;
    config.database.url = url.to_owned();
    config.ingestion.enabled = false;
    config.ingestion.providers = vec![catalog_ingestion_config(catalog.join("catalog-info.yaml"))];
    // Its statements would mix with those tests count; the governance tests turn it on.
    config.governance.enabled = false;
    config.governance.scorecards = vec![catalog.join("scorecards")];
    config.governance.policies = vec![catalog.join("policies")];
    configure(&mut config);
    let application = Application::build(config).await.expect("the application builds");
    let runs = application.ingest_once().await.expect("the example catalog ingests");
    assert_eq!(runs[0].n_location_errors, 0, "every example location reads cleanly");
    let address = application.address();
    let store = application.store().clone();
    let engine = application.engine();
    let (shutdown, stopped) = oneshot::channel::<()>();
    tokio::spawn(application.run_until(async move {
        let _ = stopped.await;
    }));
    TestApp { address, client: reqwest::Client::new(), store, engine, _database: database, _shutdown: shutdown }
}

/// A copy of the example catalog that a test may edit.
pub fn editable_examples() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    let directory = tempfile::tempdir().unwrap();
    copy(&examples_root(), directory.path());
    directory
}

fn catalog_ingestion_config(path: PathBuf) -> catalog_api::config::ProviderConfig {
    serde_json::from_value(json!({"type": "file", "paths": [path.display().to_string()]})).unwrap()
}

impl TestApp {
    /// Runs the providers once, as the ingestion loop would.
    pub async fn ingest(&self) {
        self.engine.run_once().await.expect("ingestion runs");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// POSTs a query and returns the status and JSON body.
    pub async fn post(&self, query: &str, variables: Value) -> (u16, Value) {
        post_graphql(&self.client, self.address, query, variables).await
    }

    /// POSTs a query with `Authorization: Bearer <token>`: the status and JSON body.
    pub async fn post_as(&self, token: &str, query: &str) -> (u16, Value) {
        send_graphql(&self.client, self.address, Some(token), query, json!({})).await
    }

    /// POSTs a query that must succeed and returns its data.
    pub async fn query(&self, query: &str, variables: Value) -> Value {
        query_graphql(&self.client, self.address, query, variables).await
    }
}

/// POSTs a query to the server at `address`: the status and JSON body.
pub async fn post_graphql(
    client: &reqwest::Client,
    address: SocketAddr,
    query: &str,
    variables: Value,
) -> (u16, Value) {
    send_graphql(client, address, None, query, variables).await
}

/// POSTs a query, with a bearer token when given: the status and JSON body.
async fn send_graphql(
    client: &reqwest::Client,
    address: SocketAddr,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> (u16, Value) {
    let body = json!({"query": query, "variables": variables});
    let mut request = client.post(format!("http://{address}/graphql")).json(&body);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// POSTs a query that must succeed to the server at `address`: its data.
pub async fn query_graphql(client: &reqwest::Client, address: SocketAddr, query: &str, variables: Value) -> Value {
    let (status, body) = post_graphql(client, address, query, variables).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "unexpected errors: {body}");
    body["data"].clone()
}

/// The `extensions.code` of the first error of a response.
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or_default()
}

/// A `catalog serve` process of its own, killed when dropped.
pub struct ServeProcess {
    child: std::process::Child,
    pub address: SocketAddr,
    pub client: reqwest::Client,
}

/// The `catalog` binary `cargo test --workspace` builds beside this test
/// (the api crate's own integration tests make cargo build it).
pub fn catalog_binary() -> std::path::PathBuf {
    let test_binary = std::env::current_exe().unwrap();
    let binary = test_binary.parent().and_then(Path::parent).unwrap().join("catalog");
    assert!(binary.exists(), "{} is missing: run the suite with `cargo test --workspace`", binary.display());
    binary
}

/// The environment of a `catalog` process on `database_url` reading `catalog`.
pub fn catalog_command(database_url: &str, catalog: &Path) -> std::process::Command {
    let providers = json!([{"type": "file", "paths": [catalog.join("catalog-info.yaml").display().to_string()]}]);
    let mut command = std::process::Command::new(catalog_binary());
    command
        .env("CATALOG_DATABASE__URL", database_url)
        .env("CATALOG_INGESTION__PROVIDERS", providers.to_string())
        .env("CATALOG_INGESTION__INTERVAL_SECONDS", "3600")
        .env("CATALOG_GOVERNANCE__SCORECARDS", json!([catalog.join("scorecards")]).to_string())
        .env("CATALOG_GOVERNANCE__POLICIES", json!([catalog.join("policies")]).to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

impl ServeProcess {
    /// Starts `catalog serve` on a free port and waits until it answers.
    pub async fn start(database_url: &str, catalog: &Path, ingest: bool) -> Self {
        Self::start_with(database_url, catalog, ingest, |_| {}).await
    }

    /// [`ServeProcess::start`], with the command adjusted first (more
    /// variables, stderr to a file).
    pub async fn start_with(
        database_url: &str,
        catalog: &Path,
        ingest: bool,
        adjust: impl FnOnce(&mut std::process::Command),
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = catalog_command(database_url, catalog);
        command
            .arg("serve")
            .env("CATALOG_SERVER__HOST", "127.0.0.1")
            .env("CATALOG_SERVER__PORT", port.to_string())
            .env("CATALOG_INGESTION__ENABLED", ingest.to_string())
            .env("CATALOG_INGESTION__WATCH", ingest.to_string());
        adjust(&mut command);
        let child = command.spawn().expect("catalog serve starts");
        let process =
            ServeProcess { child, address: SocketAddr::from(([127, 0, 0, 1], port)), client: reqwest::Client::new() };
        let started = std::time::Instant::now();
        let ready = r#"{ entity(ref: "component:route-optimizer") { entityRef } }"#;
        loop {
            let response = process
                .client
                .post(format!("http://{}/graphql", process.address))
                .json(&json!({"query": ready}))
                .send()
                .await;
            if let Ok(response) = response
                && let Ok(body) = response.json::<Value>().await
                && body["data"]["entity"].is_object()
            {
                return process;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "catalog serve did not serve the catalog within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl ServeProcess {
    /// Stops the process as an orchestrator does (SIGTERM) and waits for
    /// it to exit (at most 30 s).
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let status = std::process::Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        assert!(status.is_ok_and(|status| status.success()), "kill -TERM failed");
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "catalog serve did not stop within 30 s of SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A body of `backend_tests!` that takes a [`TestApp`] runs against the
/// application started over the case's fresh database.
impl Fixture for TestApp {
    async fn over(database: TestDatabase) -> Self {
        spawn_app(database).await
    }
}
