//! The GitHub discovery benchmark: a fake GitHub (a small axum app speaking
//! the REST API's shapes, every answer delayed by a fixed latency, ETags
//! honoured) with N repositories, each holding one catalog file, and the
//! real engine discovering and ingesting them into a fresh SQLite store, once
//! cold and once unchanged, per level of concurrency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use catalog_ingestion::{Engine, GithubAuthConfig, GithubProviderConfig, ProviderConfig, RetryPolicy};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct Measurement {
    pub repositories: usize,
    pub latency_ms: u64,
    pub concurrency: usize,
    /// Discovery and ingestion into an empty store.
    pub cold_seconds: f64,
    pub entities_added: usize,
    pub requests: usize,
    /// The most requests the fake GitHub had in flight at once.
    pub peak_in_flight: usize,
    /// The same organisation again, nothing changed (ETags answer 304).
    pub unchanged_seconds: f64,
    pub unchanged_rows_written: usize,
    pub unchanged_not_modified: usize,
}

struct Fake {
    repositories: usize,
    latency: Duration,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    not_modified: AtomicUsize,
}

impl Fake {
    /// Counts a request in flight for as long as the guard lives.
    async fn serve(&self) -> InFlight<'_> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        tokio::time::sleep(self.latency).await;
        InFlight(&self.in_flight)
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

const PER_PAGE: usize = 100;

#[derive(Deserialize)]
struct PageQuery {
    page: Option<usize>,
}

async fn list_repositories(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let _guard = fake.serve().await;
    let page = query.page.unwrap_or(1).max(1);
    let start = (page - 1) * PER_PAGE;
    let end = (start + PER_PAGE).min(fake.repositories);
    let host = headers.get("host").and_then(|value| value.to_str().ok()).unwrap_or("127.0.0.1");
    let items: Vec<serde_json::Value> = (start..end)
        .map(|index| {
            let name = format!("service-{index:05}");
            json!({"id": index, "name": name, "full_name": format!("acme/{name}"), "private": false,
                   "owner": {"login": "acme"}, "html_url": format!("https://github.example/acme/{name}"),
                   "fork": false, "archived": false, "default_branch": "main", "topics": ["backstage"]})
        })
        .collect();
    let mut response = axum::Json(items).into_response();
    if end < fake.repositories {
        let link = format!(r#"<http://{host}/orgs/acme/repos?per_page=100&type=all&page={}>; rel="next""#, page + 1);
        if let Ok(value) = link.parse() {
            response.headers_mut().insert("link", value);
        }
    }
    response
}

async fn catalog_file(State(fake): State<Arc<Fake>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let _guard = fake.serve().await;
    let etag = format!("\"{name}-1\"");
    if headers.get("if-none-match").and_then(|value| value.to_str().ok()) == Some(etag.as_str()) {
        fake.not_modified.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response();
    }
    let text = format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n  tags: [rust]\nspec:\n  type: service\n  lifecycle: production\n  owner: team-{}\n",
        name.len() % 7
    );
    let content = base64::engine::general_purpose::STANDARD.encode(text);
    ([("etag", etag)], axum::Json(json!({"type": "file", "encoding": "base64", "content": content}))).into_response()
}

async fn start_fake(repositories: usize, latency: Duration) -> anyhow::Result<(SocketAddr, Arc<Fake>)> {
    let fake = Arc::new(Fake {
        repositories,
        latency,
        requests: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        peak_in_flight: AtomicUsize::new(0),
        not_modified: AtomicUsize::new(0),
    });
    let app = axum::Router::new()
        .route("/orgs/acme/repos", axum::routing::get(list_repositories))
        .route("/repos/acme/{name}/contents/catalog-info.yaml", axum::routing::get(catalog_file))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the fake GitHub")?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((address, fake))
}

/// Runs the benchmark at each concurrency.
pub async fn run(repositories: usize, latency_ms: u64, levels: &[usize]) -> anyhow::Result<Vec<Measurement>> {
    let mut measurements = Vec::new();
    for &concurrency in levels {
        let (address, fake) = start_fake(repositories, Duration::from_millis(latency_ms)).await?;
        let directory = tempfile::tempdir().context("cannot make a temporary directory")?;
        let url = format!("sqlite://{}", directory.path().join("catalog.db").display());
        let store = catalog_store::Store::connect(&url).await?;
        store.migrate().await?;
        let config = GithubProviderConfig {
            organization: "acme".into(),
            auth: GithubAuthConfig {
                api_base_url: format!("http://{address}"),
                token_variable: "CATALOG_BENCH_GITHUB_TOKEN_UNSET".into(),
                ..GithubAuthConfig::default()
            },
            concurrency,
            ..GithubProviderConfig::default()
        };
        let engine = Engine::build_with(
            store.snapshot_writer(),
            store.catalog(),
            &[ProviderConfig::Github(config)],
            RetryPolicy::default(),
        )?;
        let started = Instant::now();
        let cold = engine.run_once().await?;
        let cold_seconds = started.elapsed().as_secs_f64();
        let requests = fake.requests.load(Ordering::Relaxed);
        let peak_in_flight = fake.peak_in_flight.load(Ordering::Relaxed);
        let started = Instant::now();
        let unchanged = engine.run_once().await?;
        let unchanged_seconds = started.elapsed().as_secs_f64();
        let measurement = Measurement {
            repositories,
            latency_ms,
            concurrency,
            cold_seconds,
            entities_added: cold.first().map_or(0, |run| run.summary.added),
            requests,
            peak_in_flight,
            unchanged_seconds,
            unchanged_rows_written: unchanged.first().map_or(0, |run| run.summary.rows_written),
            unchanged_not_modified: fake.not_modified.load(Ordering::Relaxed),
        };
        println!(
            "{repositories} repositories, {latency_ms} ms latency, concurrency {concurrency}: cold {cold_seconds:.2} s ({} added, {requests} requests, peak {peak_in_flight} in flight); unchanged {unchanged_seconds:.2} s ({} rows written, {} answered 304)",
            measurement.entities_added, measurement.unchanged_rows_written, measurement.unchanged_not_modified
        );
        if measurement.entities_added != repositories || measurement.unchanged_rows_written != 0 {
            anyhow::bail!("expected {repositories} entities added and nothing rewritten: {measurement:?}");
        }
        measurements.push(measurement);
        store.close().await?;
    }
    Ok(measurements)
}
