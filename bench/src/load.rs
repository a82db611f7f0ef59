//! The load driver: realistic GraphQL queries against a live server at
//! several concurrency levels, with latencies in HDR histograms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use serde::Serialize;
use serde_json::{Value, json};

/// Refs taken from a generated catalog's manifest.
pub struct Targets {
    components: Vec<String>,
    groups: Vec<String>,
    root_groups: Vec<String>,
    /// The three components or resources with the most transitive dependents.
    hubs: Vec<String>,
    words: Vec<String>,
}

impl Targets {
    pub fn from_manifest(manifest: &Value) -> anyhow::Result<Self> {
        let list = |key: &str| -> anyhow::Result<Vec<String>> {
            let values =
                manifest["samples"][key].as_array().with_context(|| format!("manifest.samples.{key} is missing"))?;
            Ok(values.iter().filter_map(|value| value.as_str().map(str::to_owned)).collect())
        };
        let components = list("components")?;
        let words = components
            .iter()
            .filter_map(|entity_ref| entity_ref.rsplit('/').next())
            .filter_map(|name| name.split('-').nth(1).map(str::to_owned))
            .collect();
        let hubs: Vec<String> = manifest["hubs"]
            .as_array()
            .context("manifest.hubs is missing")?
            .iter()
            .take(3)
            .filter_map(|hub| hub["entity_ref"].as_str().map(str::to_owned))
            .collect();
        anyhow::ensure!(!hubs.is_empty(), "manifest.hubs is empty");
        Ok(Self { components, groups: list("groups")?, root_groups: list("root_groups")?, hubs, words })
    }

    fn component(&self, index: usize) -> &str {
        &self.components[index % self.components.len()]
    }

    fn group(&self, index: usize) -> &str {
        &self.groups[index % self.groups.len()]
    }

    fn root_group(&self, index: usize) -> &str {
        &self.root_groups[index % self.root_groups.len()]
    }

    fn hub(&self, index: usize) -> &str {
        &self.hubs[index % self.hubs.len()]
    }

    /// The 100 components of the `index`th batch.
    fn batch(&self, index: usize) -> Vec<&str> {
        (0..100).map(|offset| self.component(index + offset)).collect()
    }

    /// The generator's lifecycles, in turn.
    fn lifecycle(&self, index: usize) -> &'static str {
        const LIFECYCLES: [&str; 3] = ["production", "experimental", "deprecated"];
        LIFECYCLES[index % LIFECYCLES.len()]
    }
}

/// One kind of request the driver sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    ByRef,
    Page,
    Facets,
    Search,
    FanOut,
    /// 100 components by ref, each with its ref only.
    Batch,
    /// 100 components by ref with type, lifecycle, owner and system: what a
    /// portal's table of services asks for.
    BatchRelated,
    /// A page of 100 components with totalCount, type, lifecycle, owner and
    /// system.
    PageRelated,
    /// Dependencies of a component three hops deep, first 50 with totalCount.
    Dependencies,
    /// Dependents of a top hub at full depth, first 50 with totalCount.
    HubDependents,
    /// What a root group's whole subtree owns, first 50 with totalCount.
    OwnedSubtree,
    /// The impact of a top hub: every dependent counted, owners grouped.
    Impact,
    /// by-ref as hand-written SQL straight to the database: the baseline the
    /// API's overhead is measured against.
    SqlByRef,
    /// page as hand-written SQL (the page, then the count).
    SqlPage,
    /// Backstage's `POST /entities/by-refs` for the same 100 refs as
    /// batch-related: the whole entities, relations included (a stock
    /// Backstage catalog backend, named by `--backstage-url`).
    BackstageBatch,
    /// Backstage's `GET /entities/by-name` for by-ref's component.
    BackstageByRef,
    /// Backstage's `GET /entities/by-query` for page-related's page: 100
    /// components with totalItems.
    BackstagePage,
}

impl Scenario {
    /// The scenarios `bench/run.sh` runs: the Backstage ones need a Backstage.
    pub const ALL: [Scenario; 14] = [
        Scenario::ByRef,
        Scenario::Page,
        Scenario::Facets,
        Scenario::Search,
        Scenario::FanOut,
        Scenario::Batch,
        Scenario::BatchRelated,
        Scenario::PageRelated,
        Scenario::Dependencies,
        Scenario::HubDependents,
        Scenario::OwnedSubtree,
        Scenario::Impact,
        Scenario::SqlByRef,
        Scenario::SqlPage,
    ];

    /// Whether this scenario talks to the database instead of the server.
    pub fn is_sql(self) -> bool {
        matches!(self, Scenario::SqlByRef | Scenario::SqlPage)
    }

    /// Whether this scenario talks to a Backstage catalog backend.
    pub fn is_backstage(self) -> bool {
        matches!(self, Scenario::BackstageBatch | Scenario::BackstageByRef | Scenario::BackstagePage)
    }

    /// The request body for the `index`th request of this scenario.
    fn request(self, targets: &Targets, index: usize) -> Value {
        match self {
            Scenario::ByRef => json!({
                "query": "query ($ref: String!) { entity(ref: $ref) { entityRef name ... on Component { owner { entityRef } system { entityRef } } } }",
                "variables": {"ref": targets.component(index)},
            }),
            Scenario::Page => json!({
                "query": "query ($owner: String!) { entities(filter: {kind: [\"component\"], owner: [$owner]}, first: 50) { totalCount nodes { entityRef name } } }",
                "variables": {"owner": targets.group(index)},
            }),
            Scenario::Facets => json!({
                "query": "{ facets(fields: [\"kind\", \"spec.type\", \"metadata.tags\", \"spec.lifecycle\"], filter: {kind: [\"component\", \"api\"]}) { field values { value count } } }",
            }),
            Scenario::Search => json!({
                "query": "query ($text: String!) { entities(search: $text, first: 20) { totalCount nodes { entityRef } } }",
                "variables": {"text": targets.words[index % targets.words.len()]},
            }),
            Scenario::FanOut => json!({
                "query": "query ($ref: String!) { entity(ref: $ref) { entityRef ... on Component { type lifecycle \
                    owner { entityRef ... on Group { members { entityRef } } } \
                    system { entityRef domain { entityRef } } \
                    providesApis { entityRef } \
                    consumesApis { entityRef providers { entityRef } } \
                    dependsOn { entityRef ... on Component { owner { entityRef } } ... on Resource { owner { entityRef } } } } } }",
                "variables": {"ref": targets.component(index)},
            }),
            Scenario::Batch => json!({
                "query": "query ($refs: [String!]!) { entitiesByRefs(refs: $refs) { entityRef } }",
                "variables": {"refs": targets.batch(index)},
            }),
            Scenario::BatchRelated => json!({
                "query": "query ($refs: [String!]!) { entitiesByRefs(refs: $refs) { entityRef \
                    ... on Component { type lifecycle owner { entityRef } system { entityRef } } } }",
                "variables": {"refs": targets.batch(index)},
            }),
            Scenario::PageRelated => json!({
                "query": "query ($lifecycle: String!) { entities(filter: {kind: [\"component\"], lifecycle: [$lifecycle]}, first: 100) \
                    { totalCount nodes { entityRef ... on Component { type lifecycle owner { entityRef } system { entityRef } } } } }",
                "variables": {"lifecycle": targets.lifecycle(index)},
            }),
            Scenario::Dependencies => json!({
                "query": "query ($ref: String!) { entity(ref: $ref) { dependencies(depth: 3, first: 50) { totalCount nodes { entityRef distance } } } }",
                "variables": {"ref": targets.component(index)},
            }),
            Scenario::HubDependents => json!({
                "query": "query ($ref: String!) { entity(ref: $ref) { dependents(depth: 32, first: 50) { totalCount complete nodes { entityRef distance } } } }",
                "variables": {"ref": targets.hub(index)},
            }),
            Scenario::OwnedSubtree => json!({
                "query": "query ($ref: String!) { entity(ref: $ref) { ... on Group { ownedEntities(includeSubgroups: true, first: 50) { totalCount nodes { entityRef } } } } }",
                "variables": {"ref": targets.root_group(index)},
            }),
            Scenario::Impact => json!({
                "query": "query ($ref: String!) { impact(ref: $ref) { totalCount complete owners { ownerRef count } entities(first: 20) { nodes { entityRef distance } } } }",
                "variables": {"ref": targets.hub(index)},
            }),
            Scenario::SqlByRef => json!({"ref": targets.component(index)}),
            Scenario::SqlPage => json!({"owner": targets.group(index)}),
            Scenario::BackstageBatch => json!({"entityRefs": targets.batch(index)}),
            Scenario::BackstageByRef => json!({"ref": targets.component(index)}),
            Scenario::BackstagePage => json!({"lifecycle": targets.lifecycle(index)}),
        }
    }
}

/// Where requests go: the server over HTTP, and for the SQL baselines the
/// database the server reads.
pub struct Driver {
    pub client: reqwest::Client,
    pub url: String,
    pub database: Option<DatabaseConnection>,
    /// A stock Backstage backend's base URL (`http://host:port`), for the
    /// side-by-side scenarios.
    pub backstage_url: Option<String>,
}

impl Driver {
    /// Whether this driver can send the scenario's requests.
    pub fn can_send(&self, scenario: Scenario) -> bool {
        (!scenario.is_sql() || self.database.is_some()) && (!scenario.is_backstage() || self.backstage_url.is_some())
    }

    /// Sends one request; whether it succeeded.
    async fn send(&self, scenario: Scenario, body: &Value) -> bool {
        if scenario.is_backstage() {
            let Some(base) = &self.backstage_url else { return false };
            return backstage(&self.client, base, scenario, body).await;
        }
        if !scenario.is_sql() {
            return send(&self.client, &self.url, body).await;
        }
        let Some(database) = &self.database else { return false };
        sql(database, scenario, body).await.is_ok()
    }
}

/// One request to Backstage's catalog REST API, read whole as a client
/// would; whether it answered 200 with what was asked for.
async fn backstage(client: &reqwest::Client, base: &str, scenario: Scenario, parameters: &Value) -> bool {
    let catalog = format!("{}/api/catalog", base.trim_end_matches('/'));
    let request = match scenario {
        Scenario::BackstageBatch => client.post(format!("{catalog}/entities/by-refs")).json(parameters),
        Scenario::BackstageByRef => {
            let entity_ref = parameters["ref"].as_str().unwrap_or_default();
            let Some((kind, rest)) = entity_ref.split_once(':') else { return false };
            let Some((namespace, name)) = rest.split_once('/') else { return false };
            client.get(format!("{catalog}/entities/by-name/{kind}/{namespace}/{name}"))
        }
        _ => {
            let lifecycle = parameters["lifecycle"].as_str().unwrap_or_default();
            client
                .get(format!("{catalog}/entities/by-query?filter=kind=component,spec.lifecycle={lifecycle}&limit=100"))
        }
    };
    let Ok(response) = request.send().await else { return false };
    if !response.status().is_success() {
        return false;
    }
    let Ok(body) = response.json::<Value>().await else { return false };
    match scenario {
        Scenario::BackstageBatch => {
            body["items"].as_array().is_some_and(|items| !items.is_empty() && items.iter().all(Value::is_object))
        }
        Scenario::BackstageByRef => body["metadata"].is_object(),
        _ => body["items"].as_array().is_some_and(|items| !items.is_empty()),
    }
}

/// The hand-written SQL a developer would write for by-ref (the entity with
/// its owner and system in one statement) and page (the page, then the count),
/// reading what the API's answer holds: the entity's JSON body for by-ref.
async fn sql(database: &DatabaseConnection, scenario: Scenario, parameters: &Value) -> Result<(), DbErr> {
    let backend = database.get_database_backend();
    let placeholder = if backend == DbBackend::Postgres { "$1" } else { "?" };
    let text = |key: &str| parameters[key].as_str().unwrap_or_default().to_owned();
    match scenario {
        Scenario::SqlByRef => {
            let statement = Statement::from_sql_and_values(
                backend,
                format!(
                    "SELECT e.entity_ref, e.name, e.body, o.entity_ref AS owner, s.entity_ref AS system FROM entities e \
                     LEFT JOIN entities o ON o.entity_ref = e.owner_ref LEFT JOIN entities s ON s.entity_ref = e.system_ref \
                     WHERE e.entity_ref = {placeholder}"
                ),
                [text("ref").into()],
            );
            let row = database.query_one_raw(statement).await?.ok_or_else(|| DbErr::RecordNotFound("entity".into()))?;
            let body: Value = row.try_get("", "body")?;
            if !body.is_object() {
                return Err(DbErr::Custom("body is not an object".into()));
            }
        }
        _ => {
            let filter = format!("kind = 'component' AND owner_ref = {placeholder}");
            let page = Statement::from_sql_and_values(
                backend,
                format!("SELECT entity_ref, name FROM entities WHERE {filter} ORDER BY name, id LIMIT 50"),
                [text("owner").into()],
            );
            database.query_all_raw(page).await?;
            let count = Statement::from_sql_and_values(
                backend,
                format!("SELECT COUNT(*) AS n FROM entities WHERE {filter}"),
                [text("owner").into()],
            );
            database.query_one_raw(count).await?;
        }
    }
    Ok(())
}

/// The figures of one scenario at one concurrency.
#[derive(Debug, Serialize)]
pub struct Measurement {
    pub scenario: Scenario,
    pub concurrency: usize,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Sends one scenario's requests from `concurrency` workers for `duration`.
pub async fn measure(
    driver: Arc<Driver>,
    targets: Arc<Targets>,
    scenario: Scenario,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Measurement> {
    // Warm caches and connections; these requests are not counted.
    for index in 0..20 {
        driver.send(scenario, &scenario.request(&targets, index)).await;
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let driver = driver.clone();
        let targets = targets.clone();
        workers.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new(3).expect("a histogram with 3 significant figures");
            let mut errors = 0u64;
            let mut index = worker * 7919;
            while Instant::now() < deadline {
                let body = scenario.request(&targets, index);
                let sent = Instant::now();
                if !driver.send(scenario, &body).await {
                    errors += 1;
                }
                let _ = histogram.record(sent.elapsed().as_micros() as u64);
                index += 1;
            }
            (histogram, errors)
        }));
    }
    let mut histogram = Histogram::<u64>::new(3).context("a histogram")?;
    let mut errors = 0;
    for worker in workers {
        let (worker_histogram, worker_errors) = worker.await.context("a worker panicked")?;
        histogram.add(worker_histogram).context("histograms merge")?;
        errors += worker_errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ms = |micros: u64| micros as f64 / 1000.0;
    Ok(Measurement {
        scenario,
        concurrency,
        requests: histogram.len(),
        errors,
        requests_per_second: histogram.len() as f64 / elapsed,
        p50_ms: ms(histogram.value_at_quantile(0.50)),
        p90_ms: ms(histogram.value_at_quantile(0.90)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
    })
}

/// Whether the request succeeded: HTTP 200 and no GraphQL errors.
async fn send(client: &reqwest::Client, url: &str, body: &Value) -> bool {
    let Ok(response) = client.post(url).json(body).send().await else { return false };
    if !response.status().is_success() {
        return false;
    }
    match response.json::<Value>().await {
        Ok(body) => body.get("errors").is_none() && body.get("data").is_some(),
        Err(_) => false,
    }
}
