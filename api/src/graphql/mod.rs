//! The GraphQL schema: the query root, connections, facets, validation and the
//! wiring of per-request DataLoaders.

mod changes;
mod entity;
mod error;
mod filter;
mod framework_errors;
mod graph;
mod kubernetes;
mod loaders;
mod mutation;
mod operations;
mod pagerduty;
mod scaffolder;

use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader as _};
use async_graphql::{
    Context, ID, Interface, MergedObject, MergedSubscription, Object, Request, Result, Schema, SimpleObject,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use catalog_domain::{DocumentOutcome, EntityRef, RelationType, parse_documents};
use catalog_store::{AccessStore, AsOfQuery, Catalog, ChangeFeed, EntityPage, ListQuery, SnapshotWriter, TaskStore};

use crate::auth::Granted;
use crate::identity::Permission;
use crate::policy::{ReadScope, SharedScope};
use chrono::{DateTime, Utc};

pub use entity::EntityValue;
pub use error::ApiError;
pub use filter::{EntityFilter, EntityOrder};

use entity::RelationTypeValue;
use entity::{Api, Component, Domain, GenericEntity, Group, Location, Resource, System, Template, User};
use graph::{EntityGraph, Impact, RelationPath, TraversalConnection, TraversalDirection};
use loaders::{EdgesLoader, EntityLoader, RelatedLoader, RelationKey, RequestBudget, RequestLoader};

pub use changes::{AsOf, ChangeCursor, ChangeFilter, ChangePage};
pub use mutation::RequestId;
pub use operations::OperationMetrics;
pub(crate) use operations::is_operation_label;

use changes::CatalogSubscription;
use mutation::CatalogMutation;
use scaffolder::{ScaffolderMutation, ScaffolderQuery, ScaffolderSubscription};

/// Every query: the catalog's and the scaffolder's.
#[derive(MergedObject, Default)]
pub struct QueryRoot(CatalogQuery, ScaffolderQuery);

/// Every change a client can ask for.
#[derive(MergedObject, Default)]
pub struct MutationRoot(CatalogMutation, ScaffolderMutation);

/// The entry point of every subscription.
#[derive(MergedSubscription, Default)]
pub struct SubscriptionRoot(CatalogSubscription, ScaffolderSubscription);

/// The executable schema.
pub type CatalogSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

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
/// primary, or for queries the read replica when there is one (`http.rs`).
/// Requests carry them as one value, so the choice costs one reference count.
#[derive(Clone, Debug)]
pub struct StoreHandles {
    pub catalog: Catalog,
    pub change_feed: ChangeFeed,
    pub tasks: TaskStore,
    /// Audit records are read here; mutations, which always run on the
    /// primary, record refusals through it too.
    pub access: AccessStore,
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
}

/// Builds the schema over the process's services.
pub fn build_schema(services: SchemaServices, options: SchemaOptions) -> CatalogSchema {
    let mut builder = Schema::build(QueryRoot::default(), MutationRoot::default(), SubscriptionRoot::default())
        .data(services.handles)
        .data(services.writer)
        .data(services.hub)
        .data(services.engine)
        .data(services.refusals)
        .data(services.tasks)
        // Depth and complexity are checked by the extension, whose errors carry their code.
        .limit_recursive_depth(framework_errors::MAX_RECURSIVE_DEPTH)
        .limit_directives(framework_errors::MAX_FIELD_DIRECTIVES)
        .extension(operations::OperationTracing {
            metrics: services.operations,
            limits: framework_errors::ValidationLimits {
                max_depth: options.max_depth,
                max_complexity: options.max_complexity,
            },
        });
    if !options.introspection {
        builder = builder.disable_introspection();
    }
    if !options.field_suggestions {
        builder = builder.disable_suggestions();
    }
    builder.finish()
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
    catalog: &Catalog,
    scope: &SharedScope,
    max_loaded_entities: usize,
    cache: bool,
) -> Request {
    let budget = Arc::new(RequestBudget::new(max_loaded_entities));
    let entities = EntityLoader { catalog: catalog.clone(), scope: scope.clone(), budget: budget.clone() };
    let related = RelatedLoader { catalog: catalog.clone(), scope: scope.clone(), budget: budget.clone() };
    let entities = DataLoader::with_cache(entities, spawn_in_span, HashMapCache::default()).delay(LOADER_DELAY);
    let related = DataLoader::with_cache(related, spawn_in_span, HashMapCache::default()).delay(LOADER_DELAY);
    let edges = DataLoader::with_cache(EdgesLoader(catalog.clone()), spawn_in_span, HashMapCache::default())
        .delay(LOADER_DELAY);
    entities.enable_all_cache(cache);
    related.enable_all_cache(cache);
    edges.enable_all_cache(cache);
    request.data(scope.clone()).data(entities).data(related).data(edges).data(budget)
}

/// Anything with a global ID.
#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID"))]
pub enum Node {
    Component(Component),
    Api(Api),
    Resource(Resource),
    System(System),
    Domain(Domain),
    Group(Group),
    User(User),
    Location(Location),
    Template(Template),
    GenericEntity(GenericEntity),
}

impl From<EntityValue> for Node {
    fn from(value: EntityValue) -> Self {
        match value {
            EntityValue::Component(inner) => Node::Component(inner),
            EntityValue::Api(inner) => Node::Api(inner),
            EntityValue::Resource(inner) => Node::Resource(inner),
            EntityValue::System(inner) => Node::System(inner),
            EntityValue::Domain(inner) => Node::Domain(inner),
            EntityValue::Group(inner) => Node::Group(inner),
            EntityValue::User(inner) => Node::User(inner),
            EntityValue::Location(inner) => Node::Location(inner),
            EntityValue::Template(inner) => Node::Template(inner),
            EntityValue::GenericEntity(inner) => Node::GenericEntity(inner),
        }
    }
}

/// Relay page information.
#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
}

#[derive(SimpleObject)]
pub struct EntityEdge {
    pub cursor: String,
    pub node: EntityValue,
}

/// A page of entities.
#[derive(SimpleObject)]
pub struct EntityConnection {
    pub edges: Vec<EntityEdge>,
    /// The entities of the page, without cursors.
    pub nodes: Vec<EntityValue>,
    pub page_info: PageInfo,
    /// How many entities match, over all pages.
    pub total_count: u64,
}

#[derive(SimpleObject)]
pub struct FacetValue {
    pub value: String,
    pub count: u64,
}

/// The values of one field with their counts, most frequent first.
#[derive(SimpleObject)]
pub struct Facet {
    pub field: String,
    pub values: Vec<FacetValue>,
}

/// A location a provider read, and the outcome of its last read.
#[derive(SimpleObject)]
pub struct CatalogLocation {
    pub provider: String,
    pub target: String,
    /// Why the last read failed, or the problems of its documents.
    pub error: Option<String>,
    pub entity_count: i64,
    /// When the outcome of reading it (error or entity count) last changed.
    pub updated_at: DateTime<Utc>,
}

/// A provider's health.
#[derive(SimpleObject)]
pub struct ProviderStatus {
    /// Its key: `file`, `github`, `github-2`... (what `refreshProvider` takes).
    pub name: String,
    /// `file`, `github`, `github-org`, `kubernetes` or `pagerduty`.
    #[graphql(name = "type")]
    pub kind: String,
    /// When its last run started; null before the first.
    pub last_run_at: Option<DateTime<Utc>>,
    /// When its last run that read the whole source started.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Why its last run failed or could not read everything (nothing was
    /// removed then); null after a full read.
    pub last_error: Option<String>,
    /// Entities it holds now (in all its scopes).
    pub entity_count: u64,
    /// The parts of its source read and applied on their own: one per
    /// cluster and workload kind for Kubernetes, the provider itself for
    /// the others.
    pub scopes: Vec<ProviderScope>,
    /// Locations of its last run that failed to read or held bad documents
    /// (see `locations`).
    pub location_error_count: u64,
    pub last_added: u64,
    pub last_updated: u64,
    pub last_removed: u64,
    /// Removals its last run held back (safety valve or incomplete read).
    pub last_held_back: u64,
    /// When the schedule runs it next; null when this process does not
    /// schedule ingestion.
    pub next_run_at: Option<DateTime<Utc>>,
}

/// One scope of a provider.
#[derive(SimpleObject)]
pub struct ProviderScope {
    /// Its key in the store: the entities' provider (`kubernetes:prod:deployment`).
    pub name: String,
    /// Whether it was read in full (a watcher: listed at least once);
    /// until then it removes nothing.
    pub complete: bool,
    pub last_error: Option<String>,
    pub entity_count: u64,
}

/// Whether an audited operation was allowed.
#[derive(async_graphql::Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(remote = "catalog_store::AuditDecision")]
pub enum AuditDecisionValue {
    Allowed,
    Denied,
}

/// One audit log entry. Principals are names (`token:NAME`, `sub:SUBJECT`,
/// `provider:KEY`, `cli`, `unknown` for credentials that did not check out),
/// never credentials.
#[derive(SimpleObject)]
pub struct AuditEvent {
    /// Pass as `before` for older entries.
    pub cursor: String,
    pub time: DateTime<Utc>,
    pub principal: String,
    pub token_id: Option<String>,
    /// `snapshot.apply`, `token.create`, `token.revoke`, `request`.
    pub operation: String,
    pub targets: Vec<String>,
    pub decision: AuditDecisionValue,
    /// What changed, or why it was refused.
    pub result: String,
    /// The `x-request-id` of the request, when there was one.
    pub request_id: Option<String>,
}

/// A page of the audit log.
#[derive(SimpleObject)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

/// A ref that two sources claim: the owner keeps it.
#[derive(SimpleObject)]
pub struct Conflict {
    pub entity_ref: String,
    pub owner_provider: String,
    pub owner_location: Option<String>,
    pub claimant_provider: String,
    pub claimant_location: Option<String>,
    pub detected_at: DateTime<Utc>,
}

/// One problem of one document.
#[derive(SimpleObject)]
pub struct ValidationProblem {
    /// The field path, e.g. `spec.owner` (`(document)` for the whole document).
    pub field: String,
    /// The stable rule code, e.g. `name.pattern`.
    pub rule: String,
    pub message: String,
}

/// The outcome of one document.
#[derive(SimpleObject)]
pub struct DocumentReport {
    pub index: i32,
    pub line: i32,
    pub entity_ref: Option<String>,
    pub valid: bool,
    pub problems: Vec<ValidationProblem>,
}

#[derive(SimpleObject)]
pub struct ValidationReport {
    pub valid: bool,
    pub documents: Vec<DocumentReport>,
}

fn offset_cursor(offset: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("offset:{offset}"))
}

fn decode_cursor(cursor: &str) -> Result<u64, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("offset:").and_then(|number| number.parse::<u64>().ok()))
        // Offsets reach the database as signed 64-bit integers.
        .filter(|offset| *offset < i64::MAX as u64)
        .ok_or_else(|| ApiError::BadUserInput(format!("cursor {cursor:?} is not a cursor this API issued")))
}

pub(crate) fn page_size(name: &str, value: Option<i32>) -> Result<Option<u64>, ApiError> {
    match value {
        None => Ok(None),
        Some(size) if size < 1 => Err(ApiError::BadUserInput(format!("{name} must be at least 1, got {size}"))),
        Some(size) if u64::try_from(size).unwrap_or(u64::MAX) > MAX_PAGE_SIZE => Err(ApiError::LimitExceeded {
            limit: "pageSize",
            message: format!("{name} must be at most {MAX_PAGE_SIZE}, got {size}"),
        }),
        Some(size) => Ok(u64::try_from(size).ok()),
    }
}

/// The complexity of one `entities(asOf:)` page on top of its selection: it
/// scans the whole change log, so a request holds few of them (with the
/// default limit of 10,000, at most nine).
const AS_OF_PAGE_COST: usize = 1_000;

/// The most words one search may hold; each is one condition.
const MAX_SEARCH_WORDS: usize = 10;
/// The longest search text: each word becomes a `LIKE '%word%'` scan.
const MAX_SEARCH_CHARS: usize = 256;

pub(crate) fn search_words(text: &str) -> Result<String, ApiError> {
    let n_chars = text.chars().count();
    if n_chars > MAX_SEARCH_CHARS {
        return Err(ApiError::LimitExceeded {
            limit: "searchChars",
            message: format!("a search may be at most {MAX_SEARCH_CHARS} characters, got {n_chars}"),
        });
    }
    let mut words: Vec<&str> = text.split_whitespace().collect();
    words.sort_unstable();
    words.dedup();
    if words.len() > MAX_SEARCH_WORDS {
        return Err(ApiError::LimitExceeded {
            limit: "searchWords",
            message: format!("a search may hold at most {MAX_SEARCH_WORDS} words, got {}", words.len()),
        });
    }
    Ok(words.join(" "))
}

/// The store handles of the database the request reads. Missing only when
/// the schema runs without its services: fail closed then.
pub(crate) fn store_handles<'a>(ctx: &Context<'a>) -> Result<&'a StoreHandles, ApiError> {
    ctx.data_opt::<Arc<StoreHandles>>().map(|handles| &**handles).ok_or_else(|| {
        tracing::error!("a request ran without store handles");
        ApiError::Internal
    })
}

/// The catalog the request reads.
pub(crate) fn catalog<'a>(ctx: &Context<'a>) -> Result<&'a Catalog, ApiError> {
    store_handles(ctx).map(|handles| &handles.catalog)
}

/// The change log the request reads.
pub(crate) fn change_feed<'a>(ctx: &Context<'a>) -> Result<&'a ChangeFeed, ApiError> {
    store_handles(ctx).map(|handles| &handles.change_feed)
}

/// The scaffolder tasks the request reads.
pub(crate) fn task_store<'a>(ctx: &Context<'a>) -> Result<&'a TaskStore, ApiError> {
    store_handles(ctx).map(|handles| &handles.tasks)
}

/// Tokens and the audit log of the database the request reads.
pub(crate) fn access_store<'a>(ctx: &Context<'a>) -> Result<&'a AccessStore, ApiError> {
    store_handles(ctx).map(|handles| &handles.access)
}

/// The primary's snapshot writer, for mutations.
pub(crate) fn snapshot_writer<'a>(ctx: &Context<'a>) -> Result<&'a SnapshotWriter, ApiError> {
    ctx.data_opt::<SnapshotWriter>().ok_or_else(|| {
        tracing::error!("a mutation ran without the snapshot writer");
        ApiError::Internal
    })
}

/// What the request may read. Missing only when the schema runs outside the
/// HTTP and WebSocket layers, which always add it: fail closed then.
pub(crate) fn shared_scope<'a>(ctx: &Context<'a>) -> Result<&'a SharedScope, ApiError> {
    ctx.data_opt::<SharedScope>().ok_or_else(|| {
        tracing::error!("a request ran without a read scope");
        ApiError::Internal
    })
}

/// What the request may read now.
pub(crate) fn read_scope(ctx: &Context<'_>) -> Result<ReadScope, ApiError> {
    shared_scope(ctx).map(SharedScope::current)
}

/// Refuses principals without `permission` (or admin).
pub(crate) fn require_permission(ctx: &Context<'_>, permission: Permission) -> Result<(), ApiError> {
    let granted = ctx.data_opt::<Granted>().map(|granted| granted.0.as_slice()).unwrap_or_default();
    if granted.contains(&permission) || granted.contains(&Permission::Admin) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!("this needs the {} permission", permission.name())))
}

/// Refuses `what` to principals whose reads a policy limits, where the
/// result cannot yet be filtered entity by entity.
pub(crate) fn require_unrestricted(ctx: &Context<'_>, what: &str) -> Result<(), ApiError> {
    if read_scope(ctx)?.is_restricted() {
        return Err(ApiError::Forbidden(format!("{what} is not available to principals whose reads a policy limits")));
    }
    Ok(())
}

/// The one-entity relation fields an entity page selects (by field name),
/// read with the entity by `entity(ref:)` in one statement.
const PREFETCHED_RELATIONS: [(&str, RelationType); 3] =
    [("owner", RelationType::OwnedBy), ("system", RelationType::PartOf), ("domain", RelationType::PartOf)];

/// The relation types of [`PREFETCHED_RELATIONS`] the field's selection
/// holds, in any fragment: a fragment on another kind costs a lookup its
/// answer will not use, nothing else.
fn prefetched_relations(ctx: &Context<'_>) -> Vec<RelationType> {
    let selection = ctx.look_ahead();
    let mut types: Vec<RelationType> = PREFETCHED_RELATIONS
        .iter()
        .filter(|(field, _)| selection.field(field).exists())
        .map(|(_, relation_type)| *relation_type)
        .collect();
    types.dedup();
    types
}

pub(crate) fn parse_ref(
    text: &str,
    default_kind: Option<&str>,
    default_namespace: &str,
) -> Result<EntityRef, ApiError> {
    EntityRef::parse_with_defaults(text, default_kind, default_namespace)
        .map_err(|error| ApiError::BadUserInput(format!("{text:?} is not an entity reference: {error}")))
}

/// The entity ref a global ID stands for; an ID that names none (whatever
/// decodes to something else than a valid entity ref) is not one this API
/// issued.
fn node_ref(id: &ID) -> Result<EntityRef, ApiError> {
    match entity::decode_node_id(id) {
        Some((kind, key)) if kind == "Entity" => EntityRef::parse(&key).ok(),
        _ => None,
    }
    .ok_or_else(|| ApiError::BadUserInput(format!("{:?} is not an ID this API issued", id.as_str())))
}

/// The entry point of every query.
/// The catalog's queries.
#[derive(Default)]
pub struct CatalogQuery;

#[Object]
impl CatalogQuery {
    /// One entity by ref. Partial refs are completed with `defaultKind` and
    /// `defaultNamespace`, e.g. `entity(ref: "shipment-tracker", defaultKind: "Component")`.
    ///
    /// With `asOf`, the entity as it was at that change cursor or time (null
    /// when it did not exist then), read from the change log; its relation
    /// fields resolve against the catalog as it is now.
    async fn entity(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "ref")] entity_ref: String,
        default_kind: Option<String>,
        #[graphql(default = "default")] default_namespace: String,
        as_of: Option<AsOf>,
    ) -> Result<Option<EntityValue>> {
        let entity_ref = parse_ref(&entity_ref, default_kind.as_deref(), &default_namespace)?;
        if let Some(as_of) = as_of {
            let change_feed = change_feed(ctx)?;
            let sequence = as_of.sequence(change_feed).await?;
            let version = change_feed.entity_as_of(&entity_ref, sequence).await.map_err(ApiError::from)?;
            let scope = read_scope(ctx)?;
            let visible =
                version.and_then(|change| changes::stored_version(&change)).filter(|stored| scope.allows(stored));
            return Ok(visible.map(EntityValue::from));
        }
        // A root field seldom has siblings to batch with (entitiesByRefs is
        // for many refs): going through the DataLoader would add its delay
        // and a task hop to every by-ref query. The result still primes the
        // loader for relations leading back to this entity.
        let loader = ctx.data_unchecked::<RequestLoader<EntityLoader>>();
        let prefetched = prefetched_relations(ctx);
        let found = if prefetched.is_empty() {
            loader.loader().load(std::slice::from_ref(&entity_ref)).await?.remove(&entity_ref)
        } else {
            // The selection's owner/system/domain come in the same statement
            // and prime the RelatedLoader, so those fields cost no second
            // round trip (nor the loader's delay).
            loader.loader().budget.spend_loaded(1)?;
            let (found, related) = catalog(ctx)?
                .entities_with_related(std::slice::from_ref(&entity_ref), &prefetched)
                .await
                .map_err(ApiError::from)?;
            let relations = ctx.data_unchecked::<RequestLoader<RelatedLoader>>();
            let keys: Vec<RelationKey> =
                prefetched.iter().map(|relation_type| (entity_ref.clone(), *relation_type)).collect();
            relations.feed_many(relations.loader().answer(&keys, related)?).await;
            loader.loader().visible(found).remove(&entity_ref)
        };
        if let Some(stored) = &found {
            loader.feed_one(entity_ref, Arc::clone(stored)).await;
        }
        Ok(found.map(EntityValue::from))
    }

    /// Entities by full ref, in input order, with null for refs not in the catalog.
    async fn entities_by_refs(&self, ctx: &Context<'_>, refs: Vec<String>) -> Result<Vec<Option<EntityValue>>> {
        if refs.len() > MAX_REFS {
            return Err(ApiError::LimitExceeded {
                limit: "refs",
                message: format!("at most {MAX_REFS} refs per call, got {}", refs.len()),
            }
            .into());
        }
        let parsed = refs.iter().map(|text| parse_ref(text, None, "default")).collect::<Result<Vec<_>, _>>()?;
        let found = ctx.data_unchecked::<RequestLoader<EntityLoader>>().load_many(parsed.iter().cloned()).await?;
        Ok(parsed.iter().map(|key| found.get(key).cloned().map(EntityValue::from)).collect())
    }

    /// A page of entities: filtered, searched, sorted. `search` matches words in
    /// the name, title, description and tags. Pages hold 20 by default, 100 at most.
    ///
    /// With `asOf`, the entities that existed at that change cursor or time,
    /// each as it was then, ordered by ref (`orderBy` cannot be combined with
    /// it). Filters and search apply to those versions; `ownedByTree` and
    /// `ownedByMember` expand over the group tree as it is now, and relation
    /// fields resolve against the catalog as it is now. A time-travel page
    /// reads the change log from the start, so it costs more than a live page.
    #[graphql(
        complexity = "first.or(last).unwrap_or(20).max(1) as usize * child_complexity + if as_of.is_some() { AS_OF_PAGE_COST } else { 5 }"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn entities(
        &self,
        ctx: &Context<'_>,
        filter: Option<EntityFilter>,
        search: Option<String>,
        order_by: Option<EntityOrder>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
        as_of: Option<AsOf>,
    ) -> Result<EntityConnection> {
        let filter = read_scope(ctx)?.narrow(filter.map(|filter| filter.to_store()).transpose()?);
        let search = search.filter(|text| !text.trim().is_empty()).map(|text| search_words(&text)).transpose()?;
        let catalog = catalog(ctx)?;
        let change_feed = change_feed(ctx)?;
        let source = match (as_of, order_by) {
            (None, order_by) => EntitySource::Now(order_by.unwrap_or_default()),
            (Some(_), Some(_)) => {
                return Err(ApiError::BadUserInput(
                    "orderBy cannot be combined with asOf: time-travel pages are ordered by ref".into(),
                )
                .into());
            }
            (Some(as_of), None) => EntitySource::AsOf(as_of.sequence(change_feed).await?),
        };
        Ok(list_connection(catalog, filter, search, source, PageArgs { first, after, last, before }).await?)
    }

    /// Entities reachable from `from` over the given relation types (every
    /// type when omitted), nearest first, each with its distance and one
    /// shortest path. Cycle-safe and deduplicated; refs named by a relation but
    /// not in the catalog appear with `resolved: false`. `filter` selects among
    /// the reached entities; it does not prune the walk.
    #[graphql(complexity = "entity::traversal_cost(first, max_depth, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn traverse(
        &self,
        ctx: &Context<'_>,
        from: Vec<String>,
        relation_types: Option<Vec<RelationTypeValue>>,
        #[graphql(default)] direction: TraversalDirection,
        #[graphql(default = 3)] max_depth: i32,
        filter: Option<EntityFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<TraversalConnection> {
        let traversal = graph::Traversal {
            from: graph::parse_refs(&from)?,
            types: graph::domain_types(relation_types).unwrap_or_default(),
            direction: direction.into(),
            max_depth,
        };
        graph::traversal_connection(ctx, traversal, filter, first, after).await
    }

    /// Everything that transitively depends on `ref`: through `dependsOn`, with
    /// `throughApis` through the APIs it provides and their consumers, with
    /// `includePartOf` up the systems and domains it is part of. `relationTypes`
    /// replaces those with an explicit set. Each impacted entity comes with its
    /// distance and path, and `owners` says who to tell.
    #[graphql(complexity = "child_complexity + 50")]
    async fn impact(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "ref")] entity_ref: String,
        #[graphql(default = 32)] max_depth: i32,
        relation_types: Option<Vec<RelationTypeValue>>,
        #[graphql(default = true)] through_apis: bool,
        #[graphql(default = false)] include_part_of: bool,
    ) -> Result<Impact> {
        let types =
            graph::domain_types(relation_types).unwrap_or_else(|| graph::impact_types(through_apis, include_part_of));
        graph::impact(ctx, entity_ref, types, max_depth).await
    }

    /// The shortest relation paths from `from` to `to` ("why does X depend on
    /// Y?"), up to `first` of them; empty when none exists within `maxDepth`.
    /// `relationTypes` defaults to the dependency relations: dependsOn,
    /// consumesApi and apiProvidedBy.
    #[allow(clippy::too_many_arguments)]
    async fn paths(
        &self,
        ctx: &Context<'_>,
        from: String,
        to: String,
        relation_types: Option<Vec<RelationTypeValue>>,
        #[graphql(default)] direction: TraversalDirection,
        #[graphql(default = 8)] max_depth: i32,
        #[graphql(default = 10)] first: i32,
    ) -> Result<Vec<RelationPath>> {
        let types = graph::domain_types(relation_types).unwrap_or_else(|| graph::dependency_types(true));
        graph::paths(ctx, from, to, (types, direction.into(), max_depth), first).await
    }

    /// Nodes and edges around `roots`, for drawing: at most `maxNodes` nodes
    /// (nearest first), with `truncated` and `omittedNodeCount` saying what was
    /// left out. `relationTypes` defaults to every type.
    #[graphql(
        complexity = "max_nodes.clamp(1, 2000) as usize * child_complexity / 10 + max_depth.clamp(1, 32) as usize * 10"
    )]
    async fn graph(
        &self,
        ctx: &Context<'_>,
        roots: Vec<String>,
        relation_types: Option<Vec<RelationTypeValue>>,
        #[graphql(default)] direction: TraversalDirection,
        #[graphql(default = 2)] max_depth: i32,
        #[graphql(default = 200)] max_nodes: i32,
    ) -> Result<EntityGraph> {
        let traversal = graph::Traversal {
            from: graph::parse_refs(&roots)?,
            types: graph::domain_types(relation_types).unwrap_or_default(),
            direction: direction.into(),
            max_depth,
        };
        graph::graph(ctx, traversal, max_nodes).await
    }

    /// The change log as a feed: changes after `after` (from the start when
    /// omitted) that match the filter, oldest first, up to `first` (at most
    /// 1,000). Pass `nextCursor` as `after` to continue; the same events the
    /// `catalogChanges` subscription delivers.
    async fn changes(
        &self,
        ctx: &Context<'_>,
        after: Option<ChangeCursor>,
        filter: Option<ChangeFilter>,
        #[graphql(default = 100)] first: i32,
    ) -> Result<ChangePage> {
        Ok(changes::changes_page(change_feed(ctx)?, catalog(ctx)?, shared_scope(ctx)?, after, filter, first).await?)
    }

    /// Value counts per field over the entities that match the filter, e.g.
    /// fields `["kind", "spec.type", "metadata.tags", "spec.lifecycle"]`.
    async fn facets(&self, ctx: &Context<'_>, fields: Vec<String>, filter: Option<EntityFilter>) -> Result<Vec<Facet>> {
        if fields.len() > 20 {
            return Err(ApiError::LimitExceeded { limit: "facetFields", message: "at most 20 fields".into() }.into());
        }
        let filter = read_scope(ctx)?.narrow(filter.map(|filter| filter.to_store()).transpose()?);
        let facets = catalog(ctx)?.facets(&fields, filter.as_ref()).await.map_err(ApiError::from)?;
        Ok(facets
            .into_iter()
            .map(|facet| Facet {
                field: facet.field,
                values: facet.values.into_iter().map(|(value, count)| FacetValue { value, count }).collect(),
            })
            .collect())
    }

    /// Fetches an object by global ID.
    async fn node(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Node>> {
        let entity_ref = node_ref(&id)?;
        let found = ctx.data_unchecked::<RequestLoader<EntityLoader>>().load_one(entity_ref).await?;
        Ok(found.map(|stored| Node::from(EntityValue::from(stored))))
    }

    /// Fetches objects by global ID, in input order.
    async fn nodes(&self, ctx: &Context<'_>, ids: Vec<ID>) -> Result<Vec<Option<Node>>> {
        if ids.len() > MAX_REFS {
            return Err(ApiError::LimitExceeded { limit: "ids", message: format!("at most {MAX_REFS} ids") }.into());
        }
        let keys = ids.iter().map(node_ref).collect::<Result<Vec<_>, _>>()?;
        let found = ctx.data_unchecked::<RequestLoader<EntityLoader>>().load_many(keys.iter().cloned()).await?;
        Ok(keys.iter().map(|key| found.get(key).cloned().map(|stored| Node::from(EntityValue::from(stored)))).collect())
    }

    /// Every location the providers read, with the outcome of the last read.
    async fn locations(&self, ctx: &Context<'_>) -> Result<Vec<CatalogLocation>> {
        require_unrestricted(ctx, "locations")?;
        let locations = catalog(ctx)?.locations().await.map_err(ApiError::from)?;
        Ok(locations
            .into_iter()
            .map(|location| CatalogLocation {
                provider: location.provider,
                target: location.target,
                error: location.error,
                entity_count: location.n_entities,
                updated_at: location.updated_at,
            })
            .collect())
    }

    /// Whether this process runs the providers' schedule: with several
    /// replicas on one PostgreSQL database exactly one does, and another
    /// takes over when it goes.
    async fn ingestion_leader(&self, ctx: &Context<'_>) -> Result<bool> {
        Ok(ctx.data::<catalog_ingestion::Engine>().map_err(|_| ApiError::Internal)?.is_leading())
    }

    /// Every configured provider: what its last run did, whether it could
    /// read its source in full, and when the schedule runs it next. As this
    /// process saw it (with several replicas, ask the one that ingests).
    /// Refused to principals whose reads a policy limits (errors name sources).
    async fn providers(&self, ctx: &Context<'_>) -> Result<Vec<ProviderStatus>> {
        require_unrestricted(ctx, "providers")?;
        let engine = ctx.data::<catalog_ingestion::Engine>().map_err(|_| ApiError::Internal)?;
        let counts = catalog(ctx)?.entity_counts_by_provider().await.map_err(ApiError::from)?;
        Ok(engine
            .health()
            .into_iter()
            .map(|health| {
                let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
                let summary = health.last_summary.unwrap_or_default();
                let scopes: Vec<ProviderScope> = health
                    .scopes
                    .into_iter()
                    .map(|scope| ProviderScope {
                        entity_count: counts.get(&scope.name).copied().unwrap_or_default(),
                        name: scope.name,
                        complete: scope.complete,
                        last_error: scope.last_error,
                    })
                    .collect();
                ProviderStatus {
                    entity_count: scopes.iter().map(|scope| scope.entity_count).sum(),
                    scopes,
                    name: health.key,
                    kind: health.kind.to_owned(),
                    last_run_at: health.last_run_at,
                    last_success_at: health.last_success_at,
                    last_error: health.last_error,
                    location_error_count: count(health.n_location_errors),
                    last_added: count(summary.added),
                    last_updated: count(summary.updated),
                    last_removed: count(summary.removed),
                    last_held_back: count(summary.held_back),
                    next_run_at: health.next_run_at,
                }
            })
            .collect())
    }

    /// The audit log, newest first: catalog changes (snapshots applied,
    /// tokens created and revoked) and refused requests, with who, what, the
    /// decision and the request id. Pass `nextCursor` as `before` for older
    /// entries. Needs the admin permission.
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: i32,
        before: Option<String>,
        decision: Option<AuditDecisionValue>,
    ) -> Result<AuditPage> {
        require_permission(ctx, Permission::Admin)?;
        let size = page_size("first", Some(first))?.unwrap_or(DEFAULT_PAGE_SIZE);
        let before =
            match before {
                Some(text) => Some(text.parse::<i64>().map_err(|_| {
                    ApiError::BadUserInput(format!("{text:?} is not an audit cursor: pass a nextCursor"))
                })?),
                None => None,
            };
        let mut records = access_store(ctx)?
            .audit_records(before, decision.map(Into::into), size + 1)
            .await
            .map_err(ApiError::from)?;
        let has_more = records.len() as u64 > size;
        records.truncate(size as usize);
        let next_cursor = records.last().map(|record| record.id.to_string());
        let events = records
            .into_iter()
            .map(|record| AuditEvent {
                cursor: record.id.to_string(),
                time: record.time,
                principal: record.entry.principal,
                token_id: record.entry.token_id.map(|id| id.to_string()),
                operation: record.entry.operation,
                targets: record.entry.targets,
                decision: record.entry.decision.into(),
                result: record.entry.result,
                request_id: record.entry.request_id,
            })
            .collect();
        Ok(AuditPage { events, next_cursor, has_more })
    }

    /// Refs claimed by two sources.
    async fn conflicts(&self, ctx: &Context<'_>) -> Result<Vec<Conflict>> {
        require_unrestricted(ctx, "conflicts")?;
        let conflicts = catalog(ctx)?.conflicts().await.map_err(ApiError::from)?;
        Ok(conflicts
            .into_iter()
            .map(|conflict| Conflict {
                entity_ref: conflict.entity_ref.to_string(),
                owner_provider: conflict.owner_provider,
                owner_location: conflict.owner_location,
                claimant_provider: conflict.claimant_provider,
                claimant_location: conflict.claimant_location,
                detected_at: conflict.detected_at,
            })
            .collect())
    }

    /// Validates catalog YAML (one or many documents, up to 64 KB) without
    /// storing it, and returns every problem of every document. Costly by
    /// design: a few calls fit in one operation's complexity budget.
    #[graphql(complexity = 1000)]
    async fn validate_entity(&self, yaml: String) -> Result<ValidationReport> {
        if yaml.len() > MAX_VALIDATE_BYTES {
            return Err(ApiError::LimitExceeded {
                limit: "validateBytes",
                message: format!("yaml is {} bytes, over the limit of {MAX_VALIDATE_BYTES}", yaml.len()),
            }
            .into());
        }
        // Parsing is CPU work that never yields: keep it off the async workers.
        tokio::task::spawn_blocking(move || validation_report(&yaml)).await.map_err(|_| ApiError::Internal.into())
    }
}

/// Relay page arguments as clients send them.
#[derive(Clone, Debug, Default)]
pub(crate) struct PageArgs {
    pub first: Option<i32>,
    pub after: Option<String>,
    pub last: Option<i32>,
    pub before: Option<String>,
}

/// A page of entities for a store filter: the `entities` query and every
/// field that lists entities by filter (ownedEntities) share it.
/// Where a page of entities comes from: the catalog now, in an order, or the
/// catalog as it was at a change-log sequence, in ref order.
pub(crate) enum EntitySource {
    Now(EntityOrder),
    AsOf(i64),
}

impl EntitySource {
    async fn page(&self, catalog: &Catalog, query: &ListQuery) -> Result<EntityPage, ApiError> {
        let EntitySource::AsOf(sequence) = *self else { return Ok(catalog.list_entities(query).await?) };
        let query = AsOfQuery {
            sequence,
            filter: query.filter.clone(),
            search: query.search.clone(),
            offset: query.offset,
            limit: query.limit,
        };
        let page = catalog.list_entities_as_of(&query).await?;
        let entities = page.versions.iter().filter_map(changes::stored_version).map(Arc::unwrap_or_clone).collect();
        Ok(EntityPage { entities, total_count: page.total_count })
    }
}

pub(crate) async fn list_connection(
    catalog: &Catalog,
    filter: Option<catalog_store::Filter>,
    search: Option<String>,
    source: EntitySource,
    page: PageArgs,
) -> Result<EntityConnection, ApiError> {
    let first = page_size("first", page.first)?;
    let last = page_size("last", page.last)?;
    if first.is_some() && last.is_some() {
        return Err(ApiError::BadUserInput("set first or last, not both".into()));
    }
    let start = page.after.as_deref().map(decode_cursor).transpose()?.map_or(0, |offset| offset + 1);
    let end = page.before.as_deref().map(decode_cursor).transpose()?;
    let order = match &source {
        EntitySource::Now(order) => *order,
        EntitySource::AsOf(_) => EntityOrder::default(),
    };
    let mut query = ListQuery {
        filter,
        search,
        order: order.field.into(),
        descending: order.direction == filter::OrderDirection::Desc,
        offset: start,
        limit: 0,
    };
    if let Some(last) = last {
        let end = match end {
            Some(end) => end,
            None => source.page(catalog, &query).await?.total_count,
        };
        query.offset = end.saturating_sub(last).max(start);
        query.limit = end.saturating_sub(query.offset);
    } else {
        let size = first.unwrap_or(DEFAULT_PAGE_SIZE);
        query.limit = match end {
            Some(end) => size.min(end.saturating_sub(start)),
            None => size,
        };
    }
    let found = source.page(catalog, &query).await?;
    let offset = query.offset;
    let edges: Vec<EntityEdge> = found
        .entities
        .into_iter()
        .enumerate()
        .map(|(index, stored)| EntityEdge {
            cursor: offset_cursor(offset + index as u64),
            node: EntityValue::from(Arc::new(stored)),
        })
        .collect();
    let n_edges = edges.len() as u64;
    let page_info = PageInfo {
        has_next_page: offset + n_edges < found.total_count,
        has_previous_page: offset > 0,
        start_cursor: edges.first().map(|edge| edge.cursor.clone()),
        end_cursor: edges.last().map(|edge| edge.cursor.clone()),
    };
    let nodes = edges.iter().map(|edge| edge.node.clone()).collect();
    Ok(EntityConnection { edges, nodes, page_info, total_count: found.total_count })
}

/// Every document's outcome, shared by the API and the `validate` command.
pub fn validation_report(yaml: &str) -> ValidationReport {
    let documents: Vec<DocumentReport> = parse_documents(yaml)
        .into_iter()
        .map(|document| {
            let index = i32::try_from(document.index).unwrap_or(i32::MAX);
            let line = i32::try_from(document.line).unwrap_or(i32::MAX);
            match document.outcome {
                DocumentOutcome::Entity(entity) => DocumentReport {
                    index,
                    line,
                    entity_ref: Some(entity.entity_ref().to_string()),
                    valid: true,
                    problems: Vec::new(),
                },
                DocumentOutcome::Invalid { entity_ref, errors } => DocumentReport {
                    index,
                    line,
                    entity_ref: entity_ref.map(|entity_ref| entity_ref.to_string()),
                    valid: false,
                    problems: errors
                        .into_iter()
                        .map(|error| ValidationProblem {
                            field: error.field.clone(),
                            rule: error.rule.code().to_owned(),
                            message: error.message,
                        })
                        .collect(),
                },
                DocumentOutcome::Unparsable { message } => DocumentReport {
                    index,
                    line,
                    entity_ref: None,
                    valid: false,
                    problems: vec![ValidationProblem { field: "(document)".into(), rule: "yaml".into(), message }],
                },
            }
        })
        .collect();
    ValidationReport { valid: !documents.is_empty() && documents.iter().all(|document| document.valid), documents }
}
