//! Whether the database is ready for this binary, and what the server does
//! until it is. Startup migrates (or, with `database.migrate_on_start` off,
//! only looks), refusing a schema that a newer binary migrated; a server whose
//! migrations are pending answers /healthz and a 503 /readyz, and nothing
//! else, until `catalog migrate` has run; /readyz says why it is not ready.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use catalog_store::{SchemaStatus, Store, StoreError};
use tokio::net::TcpListener;

use crate::config::DatabaseConfig;

/// How often a server waiting for its migrations looks again.
const MIGRATION_POLL: Duration = Duration::from_secs(1);
/// How long the waiting server waits for a request's head on a connection.
const WAITING_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Migrates the database when `migrate_on_start` is on (the migration lock
/// makes replicas starting together safe), else reads where it stands.
/// Fails on a schema newer than this binary either way; otherwise returns
/// `Current`, `Compatible` (a newer binary only expanded it: served as
/// current), or `Pending` for a server that must wait.
pub(crate) async fn prepare_schema(database: &DatabaseConfig) -> anyhow::Result<SchemaStatus> {
    // Migrations run without the statement timeout: building an index on a
    // large table may take longer than any read should.
    let migrator = Store::connect(&database.url).await.context("cannot open the database")?;
    if database.migrate_on_start {
        migrator.migrate().await.context("cannot migrate the database")?;
    }
    // Read after migrating too: a newer binary may have expanded the schema.
    let status = migrator.schema_status().await.context("cannot read the database's migrations")?;
    migrator.close().await.context("cannot close the migration connection")?;
    if let SchemaStatus::Newer(unknown) = status {
        let newest_known = Store::newest_migration();
        return Err(StoreError::SchemaNewer { unknown, newest_known }).context("refusing to start");
    }
    Ok(status)
}

/// GET /readyz: 200 when the database answers and its schema is this
/// binary's, else 503 with the reason (load balancers only read the status;
/// operators read the text).
pub(crate) async fn readyz(store: &Store) -> Response {
    if let Err(error) = store.ping().await {
        tracing::warn!(%error, "not ready: the database does not answer");
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: the database does not answer").into_response();
    }
    match store.schema_status().await {
        Ok(SchemaStatus::Current) => (StatusCode::OK, "ready").into_response(),
        // A rolling upgrade's old replica: it keeps taking traffic while the new ones start.
        Ok(status @ SchemaStatus::Compatible(_)) => (StatusCode::OK, format!("ready: {status}")).into_response(),
        Ok(status) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {status}")).into_response(),
        Err(error) => {
            tracing::warn!(%error, "not ready: the database's migrations cannot be read");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: the database's migrations cannot be read").into_response()
        }
    }
}

/// What the full server's /readyz asks: whether the primary is ready
/// ([`readyz`]) and the read replica, when there is one, answers.
#[derive(Clone, Debug)]
pub(crate) struct Readiness {
    primary: Store,
    replica: Option<Store>,
}

impl Readiness {
    pub(crate) fn new(primary: Store, replica: Option<Store>) -> Self {
        Self { primary, replica }
    }

    pub(crate) async fn check(&self) -> Response {
        let response = readyz(&self.primary).await;
        if response.status() != StatusCode::OK {
            return response;
        }
        match &self.replica {
            Some(replica) if replica.ping().await.is_err() => {
                tracing::warn!("not ready: the read replica does not answer");
                (StatusCode::SERVICE_UNAVAILABLE, "not ready: the read replica does not answer").into_response()
            }
            _ => response,
        }
    }
}

/// The waiting server's /readyz: never ready, since it serves nothing else;
/// once the migrations are applied it says so while the catalog starts.
async fn waiting_readyz(store: &Store) -> Response {
    let response = readyz(store).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    (StatusCode::SERVICE_UNAVAILABLE, "not ready: the migrations are applied; starting").into_response()
}

/// How waiting for migrations ended.
pub(crate) enum Waited {
    Migrated,
    ShutDown,
}

/// Serves /healthz, /readyz (503 with the reason) and a 503 for everything
/// else on `listener` until the schema is current or `shutdown` completes.
/// Fails when a newer binary migrates the database meanwhile.
pub(crate) async fn serve_until_migrated(
    listener: TcpListener,
    store: &Store,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<Waited> {
    tracing::warn!(
        "the database has pending migrations; serving only /healthz and /readyz until `catalog migrate` runs"
    );
    let readiness_store = store.clone();
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(move || async move { waiting_readyz(&readiness_store).await }))
        .fallback(|| async {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the catalog is waiting for its database migrations: run `catalog migrate`",
            )
        });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(accept_until(listener, router, stopped));
    let waited = async {
        loop {
            tokio::time::sleep(MIGRATION_POLL).await;
            match store.schema_status().await {
                Ok(SchemaStatus::Current | SchemaStatus::Compatible(_)) => return Ok(Waited::Migrated),
                Ok(SchemaStatus::Pending(_)) => {}
                Ok(SchemaStatus::Newer(unknown)) => {
                    let newest_known = Store::newest_migration();
                    return Err(StoreError::SchemaNewer { unknown, newest_known }).context("refusing to go on");
                }
                Err(error) => tracing::warn!(%error, "cannot read the database's migrations; trying again"),
            }
        }
    };
    let outcome = tokio::select! {
        outcome = waited => outcome,
        () = shutdown => Ok(Waited::ShutDown),
    };
    let _ = stop.send(());
    server.await.context("the waiting server panicked")?;
    if matches!(outcome, Ok(Waited::Migrated)) {
        tracing::info!("the database's migrations are applied; starting");
    }
    outcome
}

/// Serves `router` on connections from `listener` until `stop`, each
/// connection for one request. Not axum's serve: ending it with a graceful
/// shutdown closes a connection it accepted but has not read yet, failing a
/// request sent in the moment the full server takes over the socket. Here a
/// connection still queued stays on the socket for the full server (accepting
/// is cancel-safe), and an accepted one is answered in its own task.
async fn accept_until(listener: TcpListener, router: Router, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let service = hyper_util::service::TowerToHyperService::new(router);
    let mut http = hyper::server::conn::http1::Builder::new();
    // Each connection closes after its answer (this server gives way to the
    // full one on the same socket, which a kept-alive connection would
    // outlive), and one that sends nothing is not held for long.
    http.keep_alive(false).timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(WAITING_HEADER_TIMEOUT);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors, say: wait rather than spin.
                    tracing::warn!(%error, "the waiting server cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        let connection = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service.clone());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a connection to the waiting server failed");
            }
        });
    }
}
