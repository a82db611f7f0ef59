//! `catalog-bench`: generate synthetic catalogs, drive load against a live
//! server, measure its change stream with many subscribers and GitHub
//! discovery against a fake GitHub, and governance evaluation. `bench/run.sh`
//! ties them to the ingestion benchmark.

mod generate;
mod github;
mod governance;
mod load;
mod subscribe;
mod yaml;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// The server's allocator (`catalog`'s main.rs): the governance benchmark
/// runs the server's evaluator in this process, and under glibc's malloc
/// half its time went to allocating and freeing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "catalog-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a deterministic synthetic catalog and its manifest.json.
    Generate {
        #[arg(long)]
        entities: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = generate::Layout::Single)]
        layout: generate::Layout,
    },
    /// Send each scenario at each concurrency to a live server; print a table
    /// and write the figures as JSON.
    Load {
        /// The GraphQL endpoint.
        #[arg(long, default_value = "http://127.0.0.1:7007/graphql")]
        url: String,
        /// The manifest.json of the catalog the server holds.
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
        concurrency: Vec<usize>,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, value_enum, value_delimiter = ',')]
        scenarios: Option<Vec<load::Scenario>>,
        /// The database the server reads, for the hand-written SQL baselines
        /// (sql-by-ref, sql-page); without it those scenarios are skipped.
        #[arg(long)]
        database_url: Option<String>,
        /// A stock Backstage catalog backend (`http://host:port`) holding the
        /// same catalog, for the backstage-* scenarios; without it they are
        /// skipped.
        #[arg(long)]
        backstage_url: Option<String>,
        /// Where to write the JSON results.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Evaluate scorecards cold over the catalog in a database (their stored
    /// results removed first), restart over them, then change entities one
    /// at a time and time each change until its results are stored.
    Governance {
        #[arg(long)]
        database_url: String,
        /// A folder of scorecard files (`bench/scorecards`).
        #[arg(long)]
        scorecards: PathBuf,
        /// Components changed one at a time (and a fifth as many groups).
        #[arg(long, default_value_t = 50)]
        changes: usize,
        /// Where to write the JSON results.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Hold each number of `catalogChanges` subscribers open while a writer
    /// commits changes at a fixed rate beside the server; print a line per
    /// level and write the figures as JSON.
    Subscribe {
        /// The GraphQL endpoint over HTTP; subscribers use its /ws.
        #[arg(long, default_value = "http://127.0.0.1:7007/graphql")]
        url: String,
        /// The database the server uses: the writer applies snapshots to it.
        #[arg(long)]
        database_url: String,
        #[arg(long, value_delimiter = ',', default_value = "100,1000")]
        subscribers: Vec<usize>,
        /// Changes committed per second.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The server's process, to read its memory and CPU from /proc.
        #[arg(long)]
        server_pid: Option<u32>,
        /// An API token, sent in connection_init, for a server that refuses
        /// anonymous reads.
        #[arg(long, env = "CATALOG_BENCH_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// WebSocket handshakes in flight at once while subscribers connect.
        #[arg(long, default_value_t = 32)]
        connect_parallelism: usize,
        /// How long to wait after the window for events still on their way.
        #[arg(long, default_value_t = 10)]
        drain_seconds: u64,
        /// Where to write the JSON results.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Discover and ingest an organisation's repositories from a fake GitHub
    /// whose every answer takes `latency_ms`, cold and unchanged, at each
    /// concurrency; print a line per level and write the figures as JSON.
    Github {
        #[arg(long, default_value_t = 2000)]
        repositories: usize,
        #[arg(long, default_value_t = 50)]
        latency_ms: u64,
        #[arg(long, value_delimiter = ',', default_value = "8,16,32")]
        concurrency: Vec<usize>,
        /// Where to write the JSON results.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Generate { entities, seed, out, layout } => {
            let manifest = generate::generate(entities, seed, layout, &out)?;
            println!("{}", serde_json::to_string_pretty(&manifest)?);
        }
        Command::Load { url, manifest, concurrency, seconds, scenarios, database_url, backstage_url, out } => {
            let text =
                std::fs::read_to_string(&manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
            let targets = Arc::new(load::Targets::from_manifest(&serde_json::from_str(&text)?)?);
            let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
            let database = match &database_url {
                Some(database_url) => {
                    let mut options = sea_orm::ConnectOptions::new(database_url.clone());
                    // As many connections as the server's pool, pinged as
                    // seldom: the same footing.
                    options
                        .max_connections(if database_url.starts_with("sqlite:") { 4 } else { 16 })
                        .test_before_acquire_if_idle_for(catalog_store::IDLE_BEFORE_PING)
                        .sqlx_logging(false);
                    Some(sea_orm::Database::connect(options).await.context("cannot connect to --database-url")?)
                }
                None => None,
            };
            let driver = Arc::new(load::Driver { client, url, database, backstage_url });
            let mut measurements = Vec::new();
            println!(
                "{:<15} {:>4} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8}",
                "scenario", "conc", "requests", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
            );
            let scenarios = scenarios.unwrap_or_else(|| load::Scenario::ALL.to_vec());
            for scenario in scenarios.into_iter().filter(|scenario| driver.can_send(*scenario)) {
                for &level in &concurrency {
                    let m = load::measure(
                        driver.clone(),
                        targets.clone(),
                        scenario,
                        level.max(1),
                        Duration::from_secs(seconds),
                    )
                    .await?;
                    println!(
                        "{:<15} {:>4} {:>9} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                        serde_json::to_value(m.scenario)?.as_str().unwrap_or_default(),
                        m.concurrency,
                        m.requests,
                        m.errors,
                        m.requests_per_second,
                        m.p50_ms,
                        m.p90_ms,
                        m.p99_ms,
                        m.max_ms
                    );
                    measurements.push(m);
                }
            }
            if let Some(out) = out {
                std::fs::write(&out, serde_json::to_string_pretty(&measurements)?)
                    .with_context(|| format!("cannot write {}", out.display()))?;
            }
            if measurements.iter().any(|m| m.errors > 0) {
                anyhow::bail!("some requests failed");
            }
        }
        Command::Governance { database_url, scorecards, changes, out } => {
            governance::run(&database_url, &scorecards, changes, out.as_deref()).await?;
        }
        Command::Subscribe {
            url,
            database_url,
            subscribers,
            rate,
            seconds,
            server_pid,
            token,
            connect_parallelism,
            drain_seconds,
            out,
        } => {
            let options = subscribe::Options {
                url,
                database_url,
                levels: subscribers,
                rate,
                seconds,
                server_pid,
                token,
                connect_parallelism,
                drain: Duration::from_secs(drain_seconds),
            };
            let measurements = subscribe::run(&options).await?;
            if let Some(out) = out {
                std::fs::write(&out, serde_json::to_string_pretty(&measurements)?)
                    .with_context(|| format!("cannot write {}", out.display()))?;
            }
            if measurements.iter().any(|m| m.lost_by_live_subscribers > 0 || m.duplicated > 0 || m.unexpected > 0) {
                anyhow::bail!("events were lost or duplicated");
            }
        }
        Command::Github { repositories, latency_ms, concurrency, out } => {
            let measurements = github::run(repositories, latency_ms, &concurrency).await?;
            if let Some(out) = out {
                std::fs::write(&out, serde_json::to_string_pretty(&measurements)?)
                    .with_context(|| format!("cannot write {}", out.display()))?;
            }
        }
    }
    Ok(())
}
