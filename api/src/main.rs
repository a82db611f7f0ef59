//! The `catalog` binary: serve, migrate, validate, print the schema, ingest,
//! manage API tokens.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use catalog_api::app::Application;
use catalog_api::auth;
use catalog_api::auth::identity;
use catalog_api::config::Config;
use catalog_api::graphql::{sdl, validation_report};
use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: ingesting 100,000 entities spent a
/// third of its CPU in glibc's malloc and free (bench/results/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The software catalog, served as GraphQL.
#[derive(Parser)]
#[command(name = "catalog", version)]
struct Cli {
    /// A YAML config file; CATALOG_SECTION__KEY variables override it.
    #[arg(long, global = true, env = "CATALOG_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve GraphQL, ingesting on a schedule (defaults: SQLite in ./data, the
    /// example catalog, 127.0.0.1:7007).
    Serve,
    /// Apply pending database migrations and exit. Safe from several
    /// replicas at once (on PostgreSQL one migrates, the others wait); refuses
    /// a database that a newer binary migrated, unless only with additive
    /// migrations (then there is nothing to apply).
    Migrate,
    /// Validate catalog files; exits non-zero when any document is invalid.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Run the providers.
    Ingest {
        /// Run once and exit (the only mode for now: `serve` schedules runs).
        #[arg(long, required = true)]
        once: bool,
        /// Run only this provider (its key: `file`, `github`, `github-2`...).
        #[arg(long)]
        provider: Option<String>,
        /// Apply removals the provider's safety valve would hold back.
        #[arg(long, requires = "provider")]
        force: bool,
    },
    /// Check a configuration file (with the CATALOG_* variables set) without
    /// starting: prints every problem with the path of its key.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage API tokens (sent as `Authorization: Bearer <token>`).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Governance scorecards (docs/governance.md).
    Scorecard {
        #[command(subcommand)]
        command: ScorecardCommand,
    },
}

#[derive(Subcommand)]
enum ScorecardCommand {
    /// Check a scorecard file and evaluate it over the configured database's
    /// catalog without storing anything: entities per level, each rule's
    /// results, the failures with their explanations. Exits non-zero when the
    /// file has a problem.
    Check {
        file: PathBuf,
        /// Print the preview as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Exits non-zero when FILE (layered over the defaults, under the
    /// environment's CATALOG_* variables) has any problem.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it once; only its hash is stored.
    Create {
        /// A unique name, used to revoke it.
        #[arg(long)]
        name: String,
        /// Comma-separated permissions: entity.read, entity.refresh,
        /// entity.delete, location.create, location.delete, template.execute, admin.
        #[arg(long)]
        scopes: String,
        /// Days until it expires (never, when omitted).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List tokens: names, scopes, expiry, revocation and last use (never secrets).
    List,
    /// Revoke a token by name.
    Revoke {
        #[arg(long)]
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = {
        let _entered = runtime.enter();
        match catalog_api::telemetry::init() {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("error: {error:#}");
                return ExitCode::FAILURE;
            }
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    };
    // The runtime still runs: the exporter sends its last batch through it.
    telemetry.shutdown();
    code
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = || Config::load(cli.config.as_deref(), std::env::vars()).context("cannot load the configuration");
    match &cli.command {
        Command::Serve => {
            let otlp_metrics = catalog_api::telemetry::otlp_metrics::OtlpMetricsConfig::from_env()?;
            let application = Application::build(config()?).await?.push_metrics(otlp_metrics);
            println!("catalog listening on http://{}/graphql", application.address());
            application.run_until(shutdown_signal()).await?;
        }
        Command::Migrate => {
            let config = config()?;
            // No statement timeout: migrations may build large indexes.
            let store =
                catalog_store::Store::connect(&config.database.url).await.context("cannot open the database")?;
            store.migrate().await.context("cannot migrate the database")?;
            match store.schema_status().await.context("cannot read the database's migrations")? {
                catalog_store::SchemaStatus::Current => {
                    println!(
                        "migrations applied; the schema is current ({})",
                        catalog_store::Store::newest_migration()
                    );
                }
                status @ catalog_store::SchemaStatus::Compatible(_) => println!("nothing to apply: {status}"),
                // A newer binary migrated in between.
                status => anyhow::bail!("{status}"),
            }
        }
        Command::Token { command } => return token(command, config()?).await,
        Command::Validate { files } => return validate(files),
        Command::Scorecard { command: ScorecardCommand::Check { file, json } } => {
            return check_scorecard(file, *json, config()?).await;
        }
        Command::Config { command: ConfigCommand::Check { file } } => {
            let problems = Config::check(Some(file), std::env::vars());
            if problems.is_empty() {
                println!("{}: ok", file.display());
                return Ok(ExitCode::SUCCESS);
            }
            for problem in &problems {
                println!("{}: {problem}", file.display());
            }
            return Ok(ExitCode::FAILURE);
        }
        Command::Schema => print!("{}", sdl()),
        Command::Ingest { provider, force, .. } => {
            let mut config = config()?;
            config.server.port = 0;
            let application = Application::build(config).await?;
            let status = application.schema_status();
            anyhow::ensure!(status.serves(), "cannot ingest: {status}");
            let runs = match provider {
                None => application.ingest_once().await?,
                Some(key) => {
                    let engine = application.engine();
                    let run = engine.run_provider_with(key, *force).await.context("ingestion failed")?;
                    let run = run.with_context(|| {
                        format!(
                            "no provider {key:?}; the configured providers are {}",
                            engine.provider_keys().join(", ")
                        )
                    })?;
                    vec![run]
                }
            };
            for run in runs {
                let summary = run.summary;
                println!(
                    "{}: {} added, {} updated, {} removed, {} held back, {} unchanged, {} invalid, {} conflicts, {} location errors, {} rows written",
                    run.provider,
                    summary.added,
                    summary.updated,
                    summary.removed,
                    summary.held_back,
                    summary.unchanged,
                    summary.invalid,
                    summary.conflicts,
                    run.n_location_errors,
                    summary.rows_written
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `catalog scorecard check`: the file's problems, or its preview over the
/// catalog in the configured database (which must be migrated already).
async fn check_scorecard(file: &Path, json: bool, config: Config) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let scorecard = match catalog_governance::Scorecard::parse(&text) {
        Ok(scorecard) => scorecard,
        Err(error) => {
            for problem in &error.problems {
                println!("{}: {problem}", file.display());
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let store = catalog_store::Store::connect(&config.database.url).await.context("cannot open the database")?;
    let status = store.schema_status().await.context("cannot read the database's migrations")?;
    anyhow::ensure!(status.serves(), "cannot read the catalog: {status}");
    // The moves are counted against the scorecard in force with this id, if any.
    let stored = store.score_store().scores_of(&scorecard.id).await?;
    // No providers run here: a rule that reads a fact is UNKNOWN.
    let preview = catalog_governance::preview(&store.catalog(), &scorecard, chrono::Utc::now(), &stored, None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&preview)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}: {} ({} entities)", file.display(), preview.scorecard, preview.evaluated);
    for (level, count) in &preview.levels {
        println!("  level {:<24} {count}", level.as_deref().unwrap_or("(below the first)"));
    }
    for rule in &preview.rules {
        let staged = if rule.enforced { "" } else { " (not enforced yet)" };
        println!(
            "  rule {:<24} {} pass, {} fail, {} unknown, {} error, {} exempt{staged}",
            rule.rule, rule.pass, rule.fail, rule.unknown, rule.error, rule.exempt
        );
    }
    for failure in &preview.failures {
        let result = &failure.result;
        let explanation = result.explanation.as_ref();
        println!(
            "  {} {} {:?}: {} at {} expected {}, found {}",
            failure.entity_ref,
            result.rule,
            result.status,
            explanation.map_or("", |explanation| explanation.expression.as_str()),
            explanation.and_then(|explanation| explanation.path.as_deref()).unwrap_or("-"),
            explanation.map_or("", |explanation| explanation.expected.as_str()),
            explanation.map_or(serde_json::Value::Null, |explanation| explanation.actual.clone()),
        );
    }
    if preview.more_failures > 0 {
        println!("  ... and {} more failures", preview.more_failures);
    }
    if !stored.is_empty() {
        println!(
            "  against the scorecard in force, {} entities would move",
            preview.moves.len() as u64 + preview.more_moves
        );
        for moved in &preview.moves {
            let level = |scored: bool, level: &Option<String>| match (scored, level) {
                (false, _) => "(not scored)".to_owned(),
                (true, None) => "(below the first)".to_owned(),
                (true, Some(level)) => level.clone(),
            };
            let flips: Vec<String> = moved
                .rules
                .iter()
                .map(|rule| {
                    let status = |status: Option<catalog_governance::RuleStatus>| {
                        status.map_or("-".to_owned(), |status| format!("{status:?}").to_uppercase())
                    };
                    format!("{} {}->{}", rule.rule, status(rule.from), status(rule.to))
                })
                .collect();
            println!(
                "  move {} {} -> {} {}",
                moved.entity_ref,
                level(moved.scored_before, &moved.level_before),
                level(moved.scored, &moved.level),
                flips.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Who the audit log names for changes made from the command line.
const CLI_ACTOR: &str = "cli";

async fn token(command: &TokenCommand, config: Config) -> anyhow::Result<ExitCode> {
    let store = catalog_store::Store::connect(&config.database.url).await.context("cannot open the database")?;
    store.migrate().await.context("cannot migrate the database")?;
    match command {
        TokenCommand::Create { name, scopes, expires_in_days } => {
            let scopes = match identity::parse_scopes(scopes) {
                Ok(scopes) => scopes,
                Err(message) => {
                    eprintln!("error: {message}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let expires_at = expires_in_days.map(|days| chrono::Utc::now() + chrono::Duration::days(i64::from(days)));
            match auth::issue_token(&store.access_store(), name, &scopes, expires_at, CLI_ACTOR).await {
                Ok(issued) => {
                    println!("{}", issued.token);
                    eprintln!("token {name:?} created: store it now, it is not shown again");
                }
                Err(catalog_store::StoreError::NameTaken(name)) => {
                    eprintln!("error: a token named {name:?} exists; revoked tokens keep their names");
                    return Ok(ExitCode::FAILURE);
                }
                Err(error) => return Err(error.into()),
            }
        }
        TokenCommand::List => {
            let never = || "never".to_owned();
            for token in store.access_store().tokens().await? {
                let status = if token.revoked_at.is_some() { "revoked" } else { "active" };
                println!(
                    "{}\t{status}\tscopes={}\texpires={}\tlast_used={}",
                    token.name,
                    token.scopes.join(","),
                    token.expires_at.map_or_else(never, |at| at.to_rfc3339()),
                    token.last_used_at.map_or_else(never, |at| at.to_rfc3339()),
                );
            }
        }
        TokenCommand::Revoke { name } => {
            if !store.access_store().revoke_token(name, CLI_ACTOR).await? {
                eprintln!("error: no active token named {name:?}");
                return Ok(ExitCode::FAILURE);
            }
            println!("token {name:?} revoked (servers stop accepting it within 10 s)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn validate(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut all_valid = true;
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let report = validation_report(&text);
        if report.documents.is_empty() {
            println!("{}: no documents", file.display());
        }
        for document in &report.documents {
            let name = document.entity_ref.as_deref().unwrap_or("(unknown entity)");
            if document.valid {
                println!("{}:{}: ok {name}", file.display(), document.line);
            } else {
                all_valid = false;
                for problem in &document.problems {
                    println!("{}:{}: error {name}: {}", file.display(), document.line, problem.message);
                }
            }
        }
    }
    Ok(if all_valid { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
