//! The GraphQL schema's wiring: the merged roots, `build_schema` over the
//! process's services, the store handles a request reads, and the
//! per-request DataLoaders. The types and resolvers live in the modules
//! below (the query root in `query.rs`, everything holding entities in
//! `entity/`).

mod admin;
mod changes;
mod context;
mod entity;
mod error;
mod filter;
mod framework_errors;
mod governance;
mod kubernetes;
mod loaders;
mod mutation;
mod operations;
mod pagerduty;
mod paging;
mod query;
mod review;
mod scaffolder;
mod validation;

use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache};
use async_graphql::{MergedObject, MergedSubscription, Request, Schema};
use catalog_store::{AccessStore, Catalog, ChangeFeed, ScoreStore, SnapshotWriter, TaskStore};

use crate::auth::policy::SharedScope;

pub use entity::EntityValue;
pub use error::ApiError;
pub use filter::{EntityFilter, EntityOrder};

use loaders::{EdgesLoader, EntityLoader, RelatedLoader, RequestBudget, ScoresLoader};

pub use changes::ChangeFilter;
pub use entity::change::{AsOf, ChangeCursor, ChangePage};
pub use mutation::RequestId;
pub use operations::OperationMetrics;
pub(crate) use operations::{is_operation_label, selected_operation};
pub use validation::{ValidationReport, validation_report};

use changes::CatalogSubscription;
use governance::{GovernanceQuery, GovernanceSubscription};
use mutation::CatalogMutation;
use query::CatalogQuery;
use review::{ReviewMutation, ReviewQuery, ReviewSubscription};
use scaffolder::{ScaffolderMutation, ScaffolderQuery, ScaffolderSubscription};

/// Every query: the catalog's and the scaffolder's.
#[derive(MergedObject, Default)]
pub struct QueryRoot(CatalogQuery, ScaffolderQuery, GovernanceQuery, ReviewQuery);

/// Every change a client can ask for.
#[derive(MergedObject, Default)]
pub struct MutationRoot(CatalogMutation, ScaffolderMutation, ReviewMutation);

/// The entry point of every subscription.
#[derive(MergedSubscription, Default)]
pub struct SubscriptionRoot(CatalogSubscription, ScaffolderSubscription, GovernanceSubscription, ReviewSubscription);

/// The executable schema, gated (`operations.rs`).
pub type CatalogSchema = operations::GatedSchema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Page sizes: the default, and the most one page may hold.
pub const DEFAULT_PAGE_SIZE: u64 = 20;
pub const MAX_PAGE_SIZE: u64 = 100;
/// The largest YAML `validateEntity` accepts.
pub const MAX_VALIDATE_BYTES: usize = 64 * 1024;
/// The most refs one `entitiesByRefs` or `nodes` call may ask for.
pub const MAX_REFS: usize = 500;

/// Limits the schema enforces on every operation, and what it tells clients
/// about itself.
#[derive(Clone, Copy, Debug)]
pub struct SchemaOptions {
    pub max_depth: usize,
    pub max_complexity: usize,
    /// Whether `__schema` and `__type` answer.
    pub introspection: bool,
    /// Whether validation errors suggest field names ("did you mean ...?"),
    /// which lets a client map the schema without introspection.
    pub field_suggestions: bool,
}

/// The store handles a request reads through, all of one database: the
/// primary, or for queries the read replica when there is one (`http/graphql_http.rs`).
/// Requests carry them as one value, so the choice costs one reference count.
#[derive(Clone, Debug)]
pub struct StoreHandles {
    pub catalog: Catalog,
    pub change_feed: ChangeFeed,
    pub tasks: TaskStore,
    /// Audit records are read here; mutations, which always run on the
    /// primary, record refusals through it too.
    pub access: AccessStore,
    /// Governance results (scorecards, scores, their history).
    pub scores: ScoreStore,
}

/// What the schema's resolvers reach beyond the request: the primary's store
/// handles and its snapshot writer (for mutations), the process's change
/// hub, the ingestion engine (for refreshes) and the audit log's refusal
/// writer.
pub struct SchemaServices {
    pub handles: Arc<StoreHandles>,
    pub writer: SnapshotWriter,
    pub hub: Arc<crate::hub::ChangeHub>,
    pub engine: catalog_ingestion::Engine,
    pub refusals: Arc<crate::auth::RefusalLog>,
    pub tasks: catalog_scaffolder::TaskService,
    /// Where each operation's duration is counted (`/metrics`), when metrics are on.
    pub operations: Option<Arc<OperationMetrics>>,
    /// The providers' facts, for `previewScorecard`.
    pub facts: Arc<crate::facts::ProviderFacts>,
}

/// Builds the schema over the process's services.
pub fn build_schema(services: SchemaServices, options: SchemaOptions) -> CatalogSchema {
    let shared = || {
        let mut builder = Schema::build(QueryRoot::default(), MutationRoot::default(), SubscriptionRoot::default())
            .limit_recursive_depth(framework_errors::MAX_RECURSIVE_DEPTH)
            .limit_directives(framework_errors::MAX_FIELD_DIRECTIVES);
        if !options.introspection {
            builder = builder.disable_introspection();
        }
        if !options.field_suggestions {
            builder = builder.disable_suggestions();
        }
        builder
    };
    let SchemaServices { handles, writer, hub, engine, refusals, tasks, operations, facts } = services;
    // Depth and complexity are checked by the gate, whose errors carry their code.
    CatalogSchema::new(
        shared,
        |builder| builder.data(handles).data(writer).data(hub).data(engine).data(refusals).data(tasks).data(facts),
        framework_errors::ValidationLimits { max_depth: options.max_depth, max_complexity: options.max_complexity },
        operations,
    )
}

/// Loader batches run in a task of their own; they stay in the span of the
/// field that started them, so their statements show under the operation.
fn spawn_in_span(future: futures::future::BoxFuture<'static, ()>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(tracing::Instrument::in_current_span(future))
}

/// The schema without data, for printing the SDL.
pub fn sdl() -> String {
    Schema::build(QueryRoot::default(), MutationRoot::default(), SubscriptionRoot::default()).finish().sdl()
}

/// How long a DataLoader waits for sibling fields to add their keys before it
/// runs the batch. Siblings register their keys within one poll of their
/// parent, microseconds apart; async-graphql's default of 1 ms added a
/// millisecond to every level of every query (by-ref with owner and system:
/// 4.8 ms at p50, measured on 10,000 entities).
const LOADER_DELAY: std::time::Duration = std::time::Duration::from_micros(100);

/// Adds the per-request DataLoaders and walk budget: neither may outlive a
/// request. `cache`: whether what one field loaded serves the request's other
/// fields (and what `entity(ref:)` read with its entity serves its relation
/// fields). True for queries; false for mutations, which change the catalog
/// between fields, and subscriptions, which live for many events and must not
/// answer one from an earlier one's data (their budget is renewed per event).
pub fn with_loaders(
    request: Request,
    handles: &StoreHandles,
    scope: &SharedScope,
    max_loaded_entities: usize,
    cache: bool,
) -> Request {
    let catalog = &handles.catalog;
    let budget = Arc::new(RequestBudget::new(max_loaded_entities));
    let entities = EntityLoader { catalog: catalog.clone(), scope: scope.clone(), budget: budget.clone() };
    let related = RelatedLoader {
        catalog: catalog.clone(),
        scope: scope.clone(),
        budget: budget.clone(),
        bodies_wanted: std::sync::atomic::AtomicBool::new(false),
    };
    let entities = DataLoader::with_cache(entities, spawn_in_span, HashMapCache::default()).delay(LOADER_DELAY);
    let related = DataLoader::with_cache(related, spawn_in_span, HashMapCache::default()).delay(LOADER_DELAY);
    let edges = DataLoader::with_cache(EdgesLoader(catalog.clone()), spawn_in_span, HashMapCache::default())
        .delay(LOADER_DELAY);
    let scores = DataLoader::with_cache(ScoresLoader(handles.scores.clone()), spawn_in_span, HashMapCache::default())
        .delay(LOADER_DELAY);
    entities.enable_all_cache(cache);
    related.enable_all_cache(cache);
    edges.enable_all_cache(cache);
    scores.enable_all_cache(cache);
    request.data(scope.clone()).data(entities).data(related).data(edges).data(scores).data(budget)
}
