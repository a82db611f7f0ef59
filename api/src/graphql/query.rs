//! The catalog's query root (`CatalogQuery`): entities by ref, ID and filter,
//! facets, graph queries, history and the past, the catalog's own state
//! (providers, locations, conflicts, audit) and validation.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader as _;
use async_graphql::{Context, ID, Interface, Object, Result, SimpleObject};
use catalog_domain::{EntityRef, RelationType, spec};
use catalog_store::StoredEntity;

use super::admin::{
    AuditDecisionValue, AuditEvent, AuditPage, CatalogLocation, Conflict, ProviderScope, ProviderStatus,
};
use super::changes::ChangeFilter;
use super::context::{
    access_store, catalog, change_feed, engine, entity_loader, parse_ref, read_scope, related_loader,
    require_permission, require_unrestricted, shared_scope,
};
use super::entity::change::{AsOf, ChangeCursor, ChangePage};
use super::entity::connection::{EntityConnection, EntitySource, PageArgs, list_connection};
use super::entity::graph::{EntityGraph, Impact, RelationPath, TraversalConnection, TraversalDirection};
use super::entity::{
    self, Api, Component, Domain, EntityValue, GenericEntity, Group, Location, RelationTypeValue, Resource, System,
    Template, User,
};
use super::error::ApiError;
use super::filter::{EntityFilter, EntityOrder, search_words};
use super::loaders::RelationKey;
use super::paging::page_size;
use super::validation::{ValidationReport, validation_report};
use super::{DEFAULT_PAGE_SIZE, MAX_REFS, MAX_VALIDATE_BYTES};
use crate::auth::identity::Permission;
use crate::error_code::Limit;

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

/// The complexity of one `entities(asOf:)` page on top of its selection: it
/// scans the whole change log, so a request holds few of them (with the
/// default limit of 10,000, at most nine).
const AS_OF_PAGE_COST: usize = 1_000;

/// The one-entity relation fields an entity page selects (by field name),
/// read with the entity by `entity(ref:)` in one statement.
const PREFETCHED_RELATIONS: [(&str, RelationType); 3] = [
    ("owner", spec::relation("Component", "owner")),
    ("system", spec::relation("Component", "system")),
    ("domain", spec::relation("System", "domain")),
];

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

/// The entities of a root field that names them by ref (distinct refs),
/// those the read scope hides left out. A root field has no siblings to
/// batch with, so it reads without the DataLoader (whose delay and task hop
/// would add to every call); its answer primes the loader for relations
/// leading back to these entities. The owner/system/domain its selection
/// holds come in the same statement and prime the RelatedLoader, so those
/// fields cost no second round trip (nor the loader's delay).
async fn load_root_entities(
    ctx: &Context<'_>,
    refs: &[EntityRef],
) -> Result<HashMap<EntityRef, Arc<StoredEntity>>, ApiError> {
    let loader = entity_loader(ctx)?;
    let prefetched = prefetched_relations(ctx);
    let found = if prefetched.is_empty() {
        loader.loader().load(refs).await?
    } else {
        loader.loader().budget.spend_loaded(refs.len())?;
        let relations = related_loader(ctx)?;
        let selection = ctx.look_ahead();
        let prefetched_fields =
            PREFETCHED_RELATIONS.iter().flat_map(|(field, _)| selection.field(field).selection_fields());
        if prefetched_fields.into_iter().any(|field| entity::selects_body(field.selection_set())) {
            relations.loader().want_bodies();
        }
        let bodies = relations.loader().target_bodies();
        let (found, related) = catalog(ctx)?.entities_with_related(refs, &prefetched, bodies).await?;
        let keys: Vec<RelationKey> = refs
            .iter()
            .flat_map(|entity_ref| prefetched.iter().map(|relation_type| (entity_ref.clone(), *relation_type)))
            .collect();
        relations.feed_many(relations.loader().answer(&keys, related)?).await;
        loader.loader().visible(found)
    };
    loader.feed_many(found.iter().map(|(entity_ref, stored)| (entity_ref.clone(), Arc::clone(stored)))).await;
    Ok(found)
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
            let visible = version
                .and_then(|change| entity::change::stored_version(&change))
                .filter(|stored| scope.allows(stored));
            return Ok(visible.map(EntityValue::from));
        }
        let mut found = load_root_entities(ctx, std::slice::from_ref(&entity_ref)).await?;
        Ok(found.remove(&entity_ref).map(EntityValue::from))
    }

    /// Entities by full ref, in input order, with null for refs not in the catalog.
    async fn entities_by_refs(&self, ctx: &Context<'_>, refs: Vec<String>) -> Result<Vec<Option<EntityValue>>> {
        if refs.len() > MAX_REFS {
            return Err(ApiError::LimitExceeded {
                limit: Limit::Refs,
                message: format!("at most {MAX_REFS} refs per call, got {}", refs.len()),
            }
            .into());
        }
        let parsed = refs.iter().map(|text| parse_ref(text, None, "default")).collect::<Result<Vec<_>, _>>()?;
        let mut keys = parsed.clone();
        keys.sort();
        keys.dedup();
        let found = load_root_entities(ctx, &keys).await?;
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
        let traversal = entity::graph::Traversal {
            from: entity::graph::parse_refs(&from)?,
            types: entity::graph::domain_types(relation_types).unwrap_or_default(),
            direction: direction.into(),
            max_depth,
        };
        entity::graph::traversal_connection(ctx, traversal, filter, first, after).await
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
        let types = entity::graph::domain_types(relation_types)
            .unwrap_or_else(|| entity::graph::impact_types(through_apis, include_part_of));
        entity::graph::impact(ctx, entity_ref, types, max_depth).await
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
        let types =
            entity::graph::domain_types(relation_types).unwrap_or_else(|| entity::graph::dependency_types(true));
        entity::graph::paths(ctx, from, to, (types, direction.into(), max_depth), first).await
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
        let traversal = entity::graph::Traversal {
            from: entity::graph::parse_refs(&roots)?,
            types: entity::graph::domain_types(relation_types).unwrap_or_default(),
            direction: direction.into(),
            max_depth,
        };
        entity::graph::graph(ctx, traversal, max_nodes).await
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
        Ok(super::changes::changes_page(change_feed(ctx)?, catalog(ctx)?, shared_scope(ctx)?, after, filter, first)
            .await?)
    }

    /// Value counts per field over the entities that match the filter, e.g.
    /// fields `["kind", "spec.type", "metadata.tags", "spec.lifecycle"]`.
    async fn facets(&self, ctx: &Context<'_>, fields: Vec<String>, filter: Option<EntityFilter>) -> Result<Vec<Facet>> {
        if fields.len() > 20 {
            return Err(
                ApiError::LimitExceeded { limit: Limit::FacetFields, message: "at most 20 fields".into() }.into()
            );
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
        let found = entity_loader(ctx)?.load_one(entity_ref).await?;
        Ok(found.map(|stored| Node::from(EntityValue::from(stored))))
    }

    /// Fetches objects by global ID, in input order.
    async fn nodes(&self, ctx: &Context<'_>, ids: Vec<ID>) -> Result<Vec<Option<Node>>> {
        if ids.len() > MAX_REFS {
            return Err(
                ApiError::LimitExceeded { limit: Limit::Ids, message: format!("at most {MAX_REFS} ids") }.into()
            );
        }
        let keys = ids.iter().map(node_ref).collect::<Result<Vec<_>, _>>()?;
        let found = entity_loader(ctx)?.load_many(keys.iter().cloned()).await?;
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
                read_at: location.read_at,
            })
            .collect())
    }

    /// Whether this process runs the providers' schedule: with several
    /// replicas on one PostgreSQL database exactly one does, and another
    /// takes over when it goes.
    async fn ingestion_leader(&self, ctx: &Context<'_>) -> Result<bool> {
        Ok(engine(ctx)?.is_leading())
    }

    /// Every configured provider: what its last run did, whether it could
    /// read its source in full, and when the schedule runs it next. As this
    /// process saw it (with several replicas, ask the one that ingests).
    /// Refused to principals whose reads a policy limits (errors name sources).
    async fn providers(&self, ctx: &Context<'_>) -> Result<Vec<ProviderStatus>> {
        require_unrestricted(ctx, "providers")?;
        let engine = engine(ctx)?;
        let counts = catalog(ctx)?.entity_counts_by_provider().await.map_err(ApiError::from)?;
        Ok(engine
            .health()
            .into_iter()
            .map(|health| {
                let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
                let summary = health.last_summary.unwrap_or_default();
                let admitted = health.last_admission.unwrap_or_default();
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
                    last_refused: count(admitted.refused),
                    last_admitted_with_violations: count(admitted.warned),
                    last_queued: count(admitted.queued),
                    held_back_policies: admitted.held_back,
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
                limit: Limit::ValidateBytes,
                message: format!("yaml is {} bytes, over the limit of {MAX_VALIDATE_BYTES}", yaml.len()),
            }
            .into());
        }
        // Parsing is CPU work that never yields: keep it off the async workers.
        tokio::task::spawn_blocking(move || validation_report(&yaml)).await.map_err(|_| ApiError::Internal.into())
    }
}
