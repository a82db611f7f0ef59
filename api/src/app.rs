//! The application: store, schema, HTTP server and ingestion loop, built from a
//! configuration. Tests build it on port 0 and read the bound address.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use catalog_ingestion::{Engine, ProviderRun};
use catalog_store::{Maintenance, SchemaStatus, Store};

use crate::graphql::StoreHandles;
use crate::telemetry::metrics::{CatalogPools, CatalogReads};
use futures::FutureExt as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::graphql::{SchemaOptions, SchemaServices, build_schema};
use crate::http::{HttpState, router};
use crate::hub::ChangeHub;
use crate::readiness::Waited;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::otlp_metrics::OtlpMetricsConfig;

/// A built, bound, not yet serving application.
pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    store: Store,
    /// The read replica's store (`database.read_url`), when there is one.
    reader: Option<Store>,
    engine: Engine,
    /// None while migrations are pending (`database.migrate_on_start` off):
    /// following the change log needs its tables, so `run_until` starts it
    /// once `catalog migrate` has run.
    hub: Option<Arc<ChangeHub>>,
    schema: SchemaStatus,
    auth: Arc<Authenticator>,
    tasks: catalog_scaffolder::TaskService,
    config: Config,
    /// Where metrics are pushed over OTLP besides `GET /metrics`, if anywhere.
    otlp_metrics: Option<OtlpMetricsConfig>,
    /// The scorecards the server defines itself (staleness).
    built_in_scorecards: Vec<catalog_governance::LoadedScorecard>,
}

impl Application {
    /// Connects and migrates the database (or, with
    /// `database.migrate_on_start` off, looks at its migrations) and binds
    /// the listener. Fails on a database that a newer binary migrated.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        if let Some(problem) = config
            .database
            .problems()
            .into_iter()
            .chain(config.metrics.problems())
            .chain(config.governance.problems())
            .next()
        {
            anyhow::bail!(problem);
        }
        let schema = crate::readiness::prepare_schema(&config.database).await?;
        let store = Store::connect_with(&config.database.url, config.database.connect_settings())
            .await
            .context("cannot open the database")?;
        let reader = if config.database.read_url.is_empty() {
            None
        } else {
            let reader = Store::connect_with(&config.database.read_url, config.database.connect_settings())
                .await
                .context("cannot open the read replica (database.read_url)")?;
            Some(reader)
        };
        let mut engine = Engine::build(store.snapshot_writer(), store.catalog(), &config.ingestion.providers)
            .context("invalid provider configuration")?
            .with_run_timeout(Duration::from_secs(config.ingestion.run_timeout_seconds.max(1)));
        if config.governance.enabled {
            let admission = crate::admission::PolicyAdmission::new(store.catalog(), &config.governance);
            engine = engine.with_admission(Arc::new(admission));
        }
        let hub = match schema {
            SchemaStatus::Current | SchemaStatus::Compatible(_) => {
                Some(follow_commits(&store, config.changes.subscriber_buffer).await?)
            }
            _ => None,
        };
        let listener = TcpListener::bind((config.server.host.as_str(), config.server.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", config.server.host, config.server.port))?;
        let address = listener.local_addr().context("the listener has no address")?;
        let auth = Authenticator::new(store.access_store(), &config.auth).context("invalid auth configuration")?;
        let tasks =
            crate::scaffolder::task_service(&config.scaffolder, store.task_store(), store.catalog(), engine.clone())?;
        let staleness = &config.governance.staleness;
        let built_in_scorecards = if staleness.enabled {
            let has = |kind: &str| engine.health().iter().any(|provider| provider.kind == kind);
            let settings = catalog_governance::StalenessSettings {
                unchanged_days: staleness.unchanged_days,
                repository_unchanged_days: staleness.repository_unchanged_days,
                not_seen_days: staleness.not_seen_days,
                owner: staleness.owner.clone(),
                github: has("github"),
                kubernetes: has("kubernetes"),
                pagerduty: has("pagerduty"),
            };
            vec![catalog_governance::staleness_scorecard(&settings).context("invalid governance.staleness")?]
        } else {
            Vec::new()
        };
        Ok(Self {
            listener,
            address,
            store,
            reader,
            engine,
            hub,
            schema,
            auth: Arc::new(auth),
            tasks,
            config,
            otlp_metrics: None,
            built_in_scorecards,
        })
    }

    /// Pushes the metrics over OTLP too while serving (`metrics.enabled` on).
    pub fn push_metrics(mut self, otlp: Option<OtlpMetricsConfig>) -> Self {
        self.otlp_metrics = otlp;
        self
    }

    /// Where the schema stood at `build`: `Pending` only with
    /// `database.migrate_on_start` off, when `run_until` waits for it.
    pub fn schema_status(&self) -> &SchemaStatus {
        &self.schema
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The ingestion engine, to run providers on demand (tests, `refresh`).
    pub fn engine(&self) -> Engine {
        self.engine.clone()
    }

    /// The providers' facts as governance rules read them.
    pub fn provider_facts(&self) -> Arc<crate::facts::ProviderFacts> {
        let ttl = i64::try_from(self.config.governance.fact_ttl_seconds).unwrap_or(i64::MAX / 1_000);
        Arc::new(crate::facts::ProviderFacts { engine: self.engine.clone(), ttl: chrono::Duration::seconds(ttl) })
    }

    /// Runs every provider once, now.
    pub async fn ingest_once(&self) -> anyhow::Result<Vec<ProviderRun>> {
        self.engine.run_once().await.context("ingestion failed")
    }

    /// Serves until `shutdown` completes, running ingestion on its schedule
    /// when enabled; in-flight requests finish before it returns.
    /// With migrations pending it first serves only /healthz and a 503
    /// /readyz, until they are applied.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let shutdown = shutdown.shared();
        let hub = match self.hub.take() {
            Some(hub) => hub,
            None => {
                // Two handles on one socket: the waiting server stops
                // accepting on its own, and connections queue on the socket
                // until the catalog's server accepts them.
                let socket = self.listener.into_std().context("cannot take the listener")?;
                let waiting = socket.try_clone().context("cannot share the listener")?;
                let waiting = TcpListener::from_std(waiting).context("cannot share the listener")?;
                self.listener = TcpListener::from_std(socket).context("cannot share the listener")?;
                match crate::readiness::serve_until_migrated(waiting, &self.store, shutdown.clone()).await? {
                    Waited::Migrated => follow_commits(&self.store, self.config.changes.subscriber_buffer).await?,
                    Waited::ShutDown => return Ok(()),
                }
            }
        };
        let graphql = &self.config.graphql;
        let options = SchemaOptions {
            max_depth: graphql.max_depth,
            max_complexity: graphql.max_complexity,
            introspection: graphql.introspection,
            field_suggestions: graphql.field_suggestions,
        };
        let metrics = self.config.metrics.enabled.then(|| {
            let metrics = Metrics::new(&self.config.metrics.operation_names);
            let reads = CatalogReads {
                catalog: self.store.catalog(),
                tasks: self.store.task_store(),
                change_feed: self.store.change_feed(),
                scores: self.store.score_store(),
            };
            let pools = CatalogPools {
                primary: self.store.pool_monitor(),
                replica: self.reader.as_ref().map(Store::pool_monitor),
            };
            Arc::new(metrics.with_catalog(self.engine.clone(), reads, pools, hub.clone()))
        });
        let handles = store_handles(&self.store);
        let state = HttpState {
            auth: self.auth.clone(),
            websockets: Arc::new(tokio::sync::Semaphore::new(self.config.graphql.max_websocket_connections)),
            allowed_origins: self.config.server.cors_allowed_origins.clone(),
            schema: build_schema(
                SchemaServices {
                    handles: handles.clone(),
                    writer: self.store.snapshot_writer(),
                    hub,
                    engine: self.engine.clone(),
                    refusals: self.auth.refusals(),
                    tasks: self.tasks.clone(),
                    operations: metrics.as_ref().map(|metrics| metrics.operations()),
                    facts: self.provider_facts(),
                },
                options,
            ),
            handles,
            reader: self.reader.as_ref().map(store_handles),
            readiness: crate::readiness::Readiness::new(self.store.clone(), self.reader.clone()),
            graphql: self.config.graphql.clone(),
            documents: Arc::default(),
            request_timeout: Duration::from_secs(self.config.server.request_timeout_seconds),
            metrics: metrics.clone(),
            github_webhooks: crate::webhooks::github::GithubWebhooks::new(&self.config.webhooks, self.engine.clone()),
            pagerduty_webhooks: crate::webhooks::pagerduty::PagerDutyWebhooks::new(
                &self.config.webhooks,
                self.engine.clone(),
            ),
        };
        // The `kubernetes` field reads the watchers in every replica, and with
        // ingestion off too.
        self.engine.start_watchers();
        let (stop_ingestion, ingestion_stopped) = watch::channel(false);
        let ingestion = self.config.ingestion.enabled.then(|| {
            let interval = Duration::from_secs(self.config.ingestion.interval_seconds.max(1));
            tokio::spawn(self.engine.clone().run(
                interval,
                self.config.ingestion.watch,
                self.store.ingestion_leadership(),
                ingestion_stopped,
            ))
        });
        let governance = self.config.governance.enabled.then(|| {
            let evaluator = catalog_governance::Evaluator::new(
                self.store.catalog(),
                self.store.change_feed(),
                self.store.score_store(),
            )
            .with_facts(self.provider_facts());
            let settings = catalog_governance::Settings {
                sources: self.config.governance.scorecards.clone(),
                reload_every: Duration::from_secs(self.config.governance.reload_seconds.max(1)),
                reevaluate_every: Duration::from_secs(self.config.governance.reevaluate_seconds.max(1)),
                built_in: self.built_in_scorecards.clone(),
            };
            tokio::spawn(catalog_governance::run(
                evaluator,
                settings,
                self.store.change_feed().commits(),
                self.store.governance_leadership(),
                stop_ingestion.subscribe(),
            ))
        });
        let health = self.config.governance.enabled.then(|| {
            tokio::spawn(crate::health::record_until(
                self.store.catalog(),
                self.store.score_store(),
                self.engine.clone(),
                Duration::from_secs(self.config.governance.health_record_seconds.max(1)),
                stop_ingestion.subscribe(),
            ))
        });
        let retention = tokio::spawn(purge_hourly(
            self.store.maintenance(),
            Retention {
                changes: retention(self.config.changes.retention_days),
                audit: retention(self.config.audit.retention_days),
            },
            stop_ingestion.subscribe(),
        ));
        // Tasks whose runner stopped (this process before a restart, or
        // another replica) are failed with a clear error, now and periodically.
        let sweeper = self.tasks.start_sweeper();
        let push = match (metrics, self.otlp_metrics.take()) {
            (Some(metrics), Some(otlp)) => Some(tokio::spawn(crate::telemetry::otlp_metrics::push_until(
                metrics,
                otlp,
                stop_ingestion.subscribe(),
            ))),
            (None, Some(_)) => {
                tracing::warn!("metrics.enabled is off: no metrics are pushed over OTLP either");
                None
            }
            _ => None,
        };
        tracing::info!(address = %self.address, "serving GraphQL at /graphql");
        // On a failure too, the tasks below stop and the last metrics go out.
        let served = axum::serve(self.listener, router(state)).with_graceful_shutdown(shutdown).await;
        let _ = stop_ingestion.send(true);
        if let Some(ingestion) = ingestion {
            let _ = ingestion.await;
        }
        let _ = retention.await;
        if let Some(governance) = governance {
            let _ = governance.await;
        }
        if let Some(health) = health {
            let _ = health.await;
        }
        // Its last push carries the requests served to the end.
        if let Some(push) = push {
            let _ = push.await;
        }
        sweeper.abort();
        served.context("the server failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Starts following the change log for subscribers. Listening first, then
/// the hub reads where the log ends: no commit of another replica falls
/// between the two.
async fn follow_commits(store: &Store, buffer: usize) -> anyhow::Result<Arc<ChangeHub>> {
    store.listen_for_commits().await.context("cannot listen for commits")?;
    Ok(ChangeHub::start(store.change_feed(), buffer).await)
}

/// The handles a request reads through, of one database.
fn store_handles(store: &Store) -> Arc<StoreHandles> {
    Arc::new(StoreHandles {
        catalog: store.catalog(),
        change_feed: store.change_feed(),
        tasks: store.task_store(),
        access: store.access_store(),
        scores: store.score_store(),
    })
}

/// How long the change log and the audit log keep their rows (None: forever).
struct Retention {
    changes: Option<chrono::Duration>,
    audit: Option<chrono::Duration>,
}

fn retention(days: u32) -> Option<chrono::Duration> {
    (days > 0).then(|| chrono::Duration::days(i64::from(days)))
}

/// Purges the change log and the audit log every hour, the first time an
/// hour after start (so a short-lived server, or a test, runs no statement
/// it did not ask for).
async fn purge_hourly(maintenance: Maintenance, retention: Retention, mut shutdown: watch::Receiver<bool>) {
    if retention.changes.is_none() && retention.audit.is_none() {
        return;
    }
    let hour = Duration::from_secs(3_600);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + hour, hour);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Some(keep) = retention.changes
                    && let Err(error) = maintenance.purge_changes(chrono::Utc::now() - keep).await
                {
                    tracing::warn!(%error, "purging the change log failed; retrying in an hour");
                }
                // Score transitions are kept as long as the changes that caused them.
                if let Some(keep) = retention.changes
                    && let Err(error) = maintenance.purge_score_changes(chrono::Utc::now() - keep).await
                {
                    tracing::warn!(%error, "purging the score history failed; retrying in an hour");
                }
                if let Some(keep) = retention.changes
                    && let Err(error) = maintenance.purge_health(chrono::Utc::now() - keep).await
                {
                    tracing::warn!(%error, "purging the health history failed; retrying in an hour");
                }
                if let Some(keep) = retention.changes
                    && let Err(error) = maintenance.purge_review_events(chrono::Utc::now() - keep).await
                {
                    tracing::warn!(%error, "purging the review events failed; retrying in an hour");
                }
                if let Some(keep) = retention.audit
                    && let Err(error) = maintenance.purge_audit(chrono::Utc::now() - keep).await
                {
                    tracing::warn!(%error, "purging the audit log failed; retrying in an hour");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}
