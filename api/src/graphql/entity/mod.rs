//! The Entity interface and one object type per kind. Each type wraps a stored
//! domain entity; relation fields resolve through the DataLoaders.

pub(crate) mod change;
pub(crate) mod connection;
pub(crate) mod graph;

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, Interface, Json, Object, Result, SimpleObject};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use catalog_domain::EntityRef;
use catalog_domain::RelationType as DomainRelationType;
use catalog_domain::spec::{self, SpecField};
use catalog_store::StoredEntity;
use chrono::{DateTime, Utc};

use catalog_store::{Direction, Filter, FilterField, Predicate, WalkRequest};

use crate::graphql::context::{body, budget, edges_loader, entity_loader, related_loader};
use crate::graphql::error::ApiError;
use crate::graphql::filter::{EntityFilter, EntityOrder};
use crate::graphql::kubernetes::KubernetesCluster;
use crate::graphql::pagerduty::PagerDutyServiceValue;
use crate::graphql::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use change::{ChangeCursor, ChangePage, history_page};
use connection::{EntityConnection, EntitySource, PageArgs, list_connection};
use graph::{
    MAX_DEPTH, MAX_WALK_NODES, Traversal, TraversalConnection, TraversalDirection, dependency_types, dependent_types,
    domain_types, traversal_connection,
};

/// The relation types of the catalog graph, each with its reverse.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(name = "RelationType", remote = "catalog_domain::RelationType")]
pub enum RelationTypeValue {
    OwnedBy,
    OwnerOf,
    PartOf,
    HasPart,
    DependsOn,
    DependencyOf,
    ProvidesApi,
    ApiProvidedBy,
    ConsumesApi,
    ApiConsumedBy,
    MemberOf,
    HasMember,
    ChildOf,
    ParentOf,
}

/// A label or annotation.
#[derive(SimpleObject, Clone)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// A link shown on an entity's page.
#[derive(SimpleObject, Clone)]
pub struct EntityLink {
    pub url: String,
    pub title: Option<String>,
    pub icon: Option<String>,
    #[graphql(name = "type")]
    pub link_type: Option<String>,
}

/// One edge from this entity. `target` is null when nothing in the catalog has
/// `targetRef` yet: dangling references are shown, never hidden.
pub struct RelationEdge {
    relation_type: DomainRelationType,
    target_ref: EntityRef,
}

#[Object]
impl RelationEdge {
    #[graphql(name = "type")]
    async fn relation_type(&self) -> RelationTypeValue {
        self.relation_type.into()
    }

    async fn target_ref(&self) -> &str {
        self.target_ref.as_str()
    }

    async fn target(&self, ctx: &Context<'_>) -> Result<Option<EntityValue>> {
        let found = entity_loader(ctx)?.load_one(self.target_ref.clone()).await?;
        Ok(found.map(EntityValue::from))
    }

    /// Whether the target exists in the catalog.
    async fn resolved(&self, ctx: &Context<'_>) -> Result<bool> {
        Ok(entity_loader(ctx)?.load_one(self.target_ref.clone()).await?.is_some())
    }
}

/// The opaque global ID of an entity: stable for a ref.
pub fn entity_node_id(entity_ref: &str) -> ID {
    ID(URL_SAFE_NO_PAD.encode(format!("Entity:{entity_ref}")))
}

/// Decodes a global ID into its type and key.
pub fn decode_node_id(id: &str) -> Option<(String, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(id).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (kind, key) = text.split_once(':')?;
    Some((kind.to_owned(), key.to_owned()))
}

/// Targets of one relation type from an entity, optionally of one kind, in
/// target-ref order, loaded in batches with the edges that lead to them.
async fn related(
    ctx: &Context<'_>,
    stored: &StoredEntity,
    relation_type: DomainRelationType,
    kind: Option<&str>,
) -> Result<Vec<Arc<StoredEntity>>> {
    let key = (stored.entity_ref.clone(), relation_type);
    let loader = related_loader(ctx)?;
    if selects_body(ctx.field().selection_set()) {
        loader.loader().want_bodies();
    }
    let targets = loader.load_one(key).await?.unwrap_or_default();
    Ok(targets
        .iter()
        .filter(|target| kind.is_none_or(|kind| target.entity_ref.kind().eq_ignore_ascii_case(kind)))
        .cloned()
        .collect())
}

/// The fields of an entity that its body does not answer: its ref, its
/// row's bookkeeping, and fields other loaders answer (relations, walks,
/// history). Relation targets are read without their bodies when a
/// selection holds only these; any other field (every field added later
/// too, until listed here) reads them.
const BODY_FREE_FIELDS: &[&str] = &[
    "__typename",
    "id",
    "entityRef",
    "processingErrors",
    "policyViolations",
    "sourceLocation",
    "createdAt",
    "updatedAt",
    "relations",
    "traverse",
    "dependencies",
    "dependents",
    "history",
    "ownedEntities",
    "owner",
    "system",
    "domain",
    "subcomponentOf",
    "subcomponents",
    "providesApis",
    "consumesApis",
    "dependsOn",
    "providers",
    "consumers",
    "components",
    "apis",
    "resources",
    "subdomainOf",
    "subdomains",
    "systems",
    "parent",
    "children",
    "members",
    "ancestors",
    "descendants",
    "memberOf",
    "groups",
    "scores",
    "scoreHistory",
    "scorecardRollup",
];

/// Whether a selection (fragments included) holds a field the body answers.
pub(crate) fn selects_body<'a>(mut fields: impl Iterator<Item = async_graphql::SelectionField<'a>>) -> bool {
    fields.any(|field| !BODY_FREE_FIELDS.contains(&field.name()))
}

/// An object type of one kind, for relation fields typed by the kind of the
/// entity at their other end.
trait KindObject: Sized {
    /// The kind its entities have (as refs spell it); None for any kind.
    const KIND: Option<&'static str>;

    fn wrap(stored: Arc<StoredEntity>) -> Self;
}

impl KindObject for EntityValue {
    const KIND: Option<&'static str> = None;

    fn wrap(stored: Arc<StoredEntity>) -> Self {
        EntityValue::from(stored)
    }
}

macro_rules! kind_objects {
    ($($object:ident = $kind:literal),* $(,)?) => {
        $(
            impl KindObject for $object {
                const KIND: Option<&'static str> = Some($kind);

                fn wrap(stored: Arc<StoredEntity>) -> Self {
                    $object(stored)
                }
            }
        )*
    };
}

kind_objects!(
    Component = "component",
    Api = "api",
    Resource = "resource",
    System = "system",
    Domain = "domain",
    Group = "group",
    User = "user",
);

// The relation fields below take their relation from the kind table
// (`catalog_domain::spec`), read in constants: a field the table does not
// have, or one that states no relation, fails the build.

/// The entities of `T`'s kind that this entity states `relation_type` to
/// (or that state its reverse to this one).
async fn stated<T: KindObject>(
    ctx: &Context<'_>,
    stored: &StoredEntity,
    relation_type: DomainRelationType,
) -> Result<Vec<T>> {
    Ok(related(ctx, stored, relation_type, T::KIND).await?.into_iter().map(T::wrap).collect())
}

async fn stated_one<T: KindObject>(
    ctx: &Context<'_>,
    stored: &StoredEntity,
    relation_type: DomainRelationType,
) -> Result<Option<T>> {
    Ok(stated(ctx, stored, relation_type).await?.into_iter().next())
}

/// The entities of `T`'s kind whose spec states `relation_type` to this one.
async fn stated_by<T: KindObject>(
    ctx: &Context<'_>,
    stored: &StoredEntity,
    relation_type: DomainRelationType,
) -> Result<Vec<T>> {
    stated(ctx, stored, relation_type.reverse()).await
}

async fn spec_text(ctx: &Context<'_>, stored: &StoredEntity, field: &SpecField) -> Result<Option<String>> {
    Ok(body(ctx, stored).await?.spec_str(field.name).map(str::to_owned))
}

async fn spec_json(
    ctx: &Context<'_>,
    stored: &StoredEntity,
    field: &SpecField,
) -> Result<Option<Json<serde_json::Value>>> {
    Ok(body(ctx, stored).await?.spec.get(field.name).cloned().map(Json))
}

async fn spec_texts(ctx: &Context<'_>, stored: &StoredEntity, field: &SpecField) -> Result<Vec<String>> {
    Ok(match body(ctx, stored).await?.spec.get(field.name) {
        Some(serde_json::Value::Array(items)) => {
            items.iter().filter_map(|item| item.as_str().map(str::to_owned)).collect()
        }
        _ => Vec::new(),
    })
}

// `ownedEntities` is written here rather than by the caller because its
// complexity expression names `child_complexity`, which #[Object] binds in
// this macro's hygiene context: from the caller's tokens it is out of reach.
macro_rules! entity_object {
    (
        $(#[$doc:meta])* $name:ident { $($fields:tt)* }
        $(owned_entities: $(#[$owned_doc:meta])* $flag:ident = $default:literal => $transitive:expr)?
    ) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(pub Arc<StoredEntity>);

        #[Object]
        impl $name {
            /// Opaque global ID (Relay Node).
            pub async fn id(&self) -> ID {
                entity_node_id(self.0.entity_ref.as_str())
            }

            /// The canonical reference `kind:namespace/name`, lower-case.
            pub async fn entity_ref(&self) -> String {
                self.0.entity_ref.to_string()
            }

            pub async fn kind(&self, ctx: &Context<'_>) -> Result<&str> {
                Ok(&body(ctx, &self.0).await?.kind)
            }

            pub async fn api_version(&self, ctx: &Context<'_>) -> Result<&str> {
                Ok(&body(ctx, &self.0).await?.api_version)
            }

            pub async fn namespace(&self, ctx: &Context<'_>) -> Result<&str> {
                Ok(&body(ctx, &self.0).await?.metadata.namespace)
            }

            pub async fn name(&self, ctx: &Context<'_>) -> Result<&str> {
                Ok(&body(ctx, &self.0).await?.metadata.name)
            }

            pub async fn title(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
                Ok(body(ctx, &self.0).await?.metadata.title.as_deref())
            }

            pub async fn description(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
                Ok(body(ctx, &self.0).await?.metadata.description.as_deref())
            }

            /// Stable across re-ingestion of the same ref.
            pub async fn uid(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
                Ok(body(ctx, &self.0).await?.metadata.uid.as_deref())
            }

            /// Changes exactly when the entity's content changes.
            pub async fn etag(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
                Ok(body(ctx, &self.0).await?.metadata.etag.as_deref())
            }

            pub async fn labels(&self, ctx: &Context<'_>) -> Result<Vec<KeyValue>> {
                Ok(key_values(&body(ctx, &self.0).await?.metadata.labels))
            }

            pub async fn annotations(&self, ctx: &Context<'_>) -> Result<Vec<KeyValue>> {
                Ok(key_values(&body(ctx, &self.0).await?.metadata.annotations))
            }

            /// One annotation's value.
            pub async fn annotation(&self, ctx: &Context<'_>, key: String) -> Result<Option<&str>> {
                Ok(body(ctx, &self.0).await?.metadata.annotations.get(&key).map(String::as_str))
            }

            pub async fn tags(&self, ctx: &Context<'_>) -> Result<&[String]> {
                Ok(&body(ctx, &self.0).await?.metadata.tags)
            }

            pub async fn links(&self, ctx: &Context<'_>) -> Result<Vec<EntityLink>> {
                entity_links(ctx, &self.0).await
            }

            /// The whole entity as Backstage serves it, for anything not typed here.
            pub async fn raw(&self, ctx: &Context<'_>) -> Result<Json<serde_json::Value>> {
                body(ctx, &self.0).await?;
                Ok(Json(self.0.raw().map_err(ApiError::from)?))
            }

            /// Edges from this entity (both those its spec states and those other
            /// entities state about it), including unresolved targets.
            pub async fn relations(
                &self,
                ctx: &Context<'_>,
                #[graphql(name = "type")] relation_type: Option<RelationTypeValue>,
            ) -> Result<Vec<RelationEdge>> {
                relation_edges(ctx, &self.0, relation_type).await
            }

            /// Problems with the latest version its source offered; the entity shown
            /// is the last valid one.
            pub async fn processing_errors(&self) -> &[String] {
                &self.0.errors
            }

            /// The admission policies' rules it breaks but was admitted with
            /// (a `warn` policy, or an `enforce` policy held back because it
            /// would have refused too much), as of its provider's last run.
            pub async fn policy_violations(&self) -> Vec<crate::graphql::governance::PolicyViolationValue> {
                self.0.violations.iter().map(crate::graphql::governance::PolicyViolationValue::from).collect()
            }

            /// Where the entity was read from.
            pub async fn source_location(&self) -> Option<&str> {
                self.0.location.as_deref()
            }

            pub async fn created_at(&self) -> DateTime<Utc> {
                self.0.created_at
            }

            pub async fn updated_at(&self) -> DateTime<Utc> {
                self.0.updated_at
            }

            /// Entities reachable from this one over the given relation types
            /// (every type when omitted), nearest first, each with its distance
            /// and one shortest path. Cycle-safe; unresolved refs are included.
            #[graphql(complexity = "traversal_cost(first, max_depth, child_complexity)")]
            #[allow(clippy::too_many_arguments)]
            pub async fn traverse(
                &self,
                ctx: &Context<'_>,
                relation_types: Option<Vec<RelationTypeValue>>,
                #[graphql(default)] direction: TraversalDirection,
                #[graphql(default = 3)] max_depth: i32,
                filter: Option<EntityFilter>,
                first: Option<i32>,
                after: Option<String>,
            ) -> Result<TraversalConnection> {
                let types = domain_types(relation_types).unwrap_or_default();
                walk_from(ctx, &self.0, types, direction.into(), max_depth, filter, first, after).await
            }

            /// What this entity depends on, transitively up to `depth` hops:
            /// `dependsOn`, and with `throughApis` the APIs it consumes and the
            /// components that provide them (each API is one hop).
            #[graphql(complexity = "traversal_cost(first, depth, child_complexity)")]
            pub async fn dependencies(
                &self,
                ctx: &Context<'_>,
                #[graphql(default = 1)] depth: i32,
                #[graphql(default = true)] through_apis: bool,
                filter: Option<EntityFilter>,
                first: Option<i32>,
                after: Option<String>,
            ) -> Result<TraversalConnection> {
                let types = dependency_types(through_apis);
                walk_from(ctx, &self.0, types, Direction::Outgoing, depth, filter, first, after).await
            }

            /// What depends on this entity, transitively up to `depth` hops: the
            /// reverse of `dependencies`.
            #[graphql(complexity = "traversal_cost(first, depth, child_complexity)")]
            pub async fn dependents(
                &self,
                ctx: &Context<'_>,
                #[graphql(default = 1)] depth: i32,
                #[graphql(default = true)] through_apis: bool,
                filter: Option<EntityFilter>,
                first: Option<i32>,
                after: Option<String>,
            ) -> Result<TraversalConnection> {
                let types = dependent_types(through_apis);
                walk_from(ctx, &self.0, types, Direction::Outgoing, depth, filter, first, after).await
            }

            /// Its Kubernetes workloads per cluster, as the watchers last saw
            /// them: those whose `backstage.io/kubernetes-id` label matches its
            /// annotation of that name, or that its
            /// `backstage.io/kubernetes-label-selector` selects (narrowed by its
            /// `backstage.io/kubernetes-namespace` and `-cluster` annotations).
            #[graphql(complexity = "first.max(1) as usize + 1")]
            pub async fn kubernetes(
                &self,
                ctx: &Context<'_>,
                #[graphql(default = 100)] first: i32,
            ) -> Result<Vec<KubernetesCluster>> {
                crate::graphql::kubernetes::clusters(ctx, &self.0, first).await
            }

            /// The versions of this entity, newest first: each change with its
            /// cursor, time, type and changed fields. Pass `nextCursor` as
            /// `after` for older ones.
            pub async fn history(
                &self,
                ctx: &Context<'_>,
                #[graphql(default = 20)] first: i32,
                after: Option<ChangeCursor>,
            ) -> Result<ChangePage> {
                let change_feed = crate::graphql::context::change_feed(ctx)?;
                let scope = crate::graphql::context::read_scope(ctx)?;
                Ok(history_page(change_feed, &scope, &self.0.entity_ref, first, after).await?)
            }

            /// The PagerDuty service this entity maps to through its
            /// `pagerduty.com/service-id` (or `pagerduty.com/integration-key`)
            /// annotation; null when it maps to none. (A Group's team's
            /// services: `pagerDutyServices`.)
            pub async fn pager_duty(&self, ctx: &Context<'_>) -> Result<Option<PagerDutyServiceValue>> {
                crate::graphql::pagerduty::entity_service(ctx, &self.0).await
            }

            /// Its standing under each scorecard that applies to it (or the
            /// one named), with every rule's result, explanation and the time
            /// since it holds.
            pub async fn scores(
                &self,
                ctx: &Context<'_>,
                scorecard: Option<String>,
            ) -> Result<Vec<crate::graphql::governance::EntityScore>> {
                crate::graphql::governance::entity_scores(ctx, &self.0, scorecard).await
            }

            /// Its standing under each scorecard (or one) at a past `time`:
            /// the level and each rule's status then, rebuilt from the
            /// transitions recorded since; the score when the history
            /// still holds it. Scorecards that did not apply then are left
            /// out.
            pub async fn scores_as_of(
                &self,
                ctx: &Context<'_>,
                time: chrono::DateTime<chrono::Utc>,
                scorecard: Option<String>,
            ) -> Result<Vec<crate::graphql::governance::PastScore>> {
                crate::graphql::governance::entity_scores_as_of(ctx, &self.0, time, scorecard).await
            }

            /// Whether it may no longer be true, and why: its owner gone or
            /// a team nobody is in, deprecated but depended on, unchanged for
            /// `governance.staleness.unchanged_days`, not read by its provider
            /// for `governance.staleness.not_seen_days`, its repository
            /// archived or quiet, claimed workloads or a
            /// PagerDuty service not found. Null where stale detection does
            /// not apply. Filter with the `stale` key.
            pub async fn staleness(&self, ctx: &Context<'_>) -> Result<Option<crate::graphql::governance::Staleness>> {
                crate::graphql::governance::entity_staleness(ctx, &self.0).await
            }

            /// Its level and rule transitions, newest first, under one
            /// scorecard or all. Pass `nextCursor` as `before` for older ones.
            pub async fn score_history(
                &self,
                ctx: &Context<'_>,
                scorecard: Option<String>,
                #[graphql(default = 20)] first: i32,
                before: Option<crate::graphql::governance::ScoreCursor>,
            ) -> Result<crate::graphql::governance::ScoreHistoryPage> {
                crate::graphql::governance::score_history(ctx, &self.0, scorecard, first, before).await
            }

            $(
                $(#[$owned_doc])*
                #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity + 5")]
                pub async fn owned_entities(
                    &self,
                    ctx: &Context<'_>,
                    #[graphql(default = $default)] $flag: bool,
                    filter: Option<EntityFilter>,
                    first: Option<i32>,
                    after: Option<String>,
                ) -> Result<EntityConnection> {
                    let field = if $flag { $transitive } else { FilterField::Owner };
                    owned_connection(ctx, &self.0, field, filter, first, after).await
                }
            )?

            $($fields)*
        }
    };
}

fn key_values(map: &std::collections::BTreeMap<String, String>) -> Vec<KeyValue> {
    map.iter().map(|(key, value)| KeyValue { key: key.clone(), value: value.clone() }).collect()
}

async fn entity_links(ctx: &Context<'_>, stored: &StoredEntity) -> Result<Vec<EntityLink>> {
    Ok(body(ctx, stored)
        .await?
        .metadata
        .links
        .iter()
        .map(|link| EntityLink {
            url: link.url.clone(),
            title: link.title.clone(),
            icon: link.icon.clone(),
            link_type: link.link_type.clone(),
        })
        .collect())
}

async fn relation_edges(
    ctx: &Context<'_>,
    stored: &StoredEntity,
    relation_type: Option<RelationTypeValue>,
) -> Result<Vec<RelationEdge>> {
    let wanted = relation_type.map(DomainRelationType::from);
    let edges = edges_loader(ctx)?.load_one(stored.entity_ref.clone()).await?.unwrap_or_default();
    let mut edges: Vec<RelationEdge> = edges
        .iter()
        .filter(|edge| wanted.is_none_or(|wanted| edge.relation_type == wanted))
        .map(|edge| RelationEdge { relation_type: edge.relation_type, target_ref: edge.target_ref.clone() })
        .collect();
    // A hub's edge list is as long as the data makes it: priced per edge.
    budget(ctx)?.spend_loaded(edges.len())?;
    if crate::graphql::context::read_scope(ctx)?.is_restricted() {
        // An edge this entity states itself (its own spec names the target)
        // stays, whatever the target: a hidden target then looks absent,
        // unresolved like a dangling ref. An edge only the target states
        // exists because the target does: it goes when the target is
        // hidden, or the edge would reveal it.
        let stated: std::collections::HashSet<(DomainRelationType, EntityRef)> =
            catalog_domain::derive_relations(body(ctx, stored).await?)
                .into_iter()
                .filter(|edge| edge.source == stored.entity_ref)
                .map(|edge| (edge.relation_type, edge.target))
                .collect();
        let is_stated = |edge: &RelationEdge| stated.contains(&(edge.relation_type, edge.target_ref.clone()));
        let others: Vec<EntityRef> =
            edges.iter().filter(|edge| !is_stated(edge)).map(|edge| edge.target_ref.clone()).collect();
        let visible = entity_loader(ctx)?.load_many(others).await?;
        edges.retain(|edge| is_stated(edge) || visible.contains_key(&edge.target_ref));
    }
    Ok(edges)
}

/// The complexity of a walk: its page times what each node selects, plus a
/// charge per hop, so one operation cannot ask for many deep walks.
pub(crate) fn traversal_cost(first: Option<i32>, depth: i32, child_complexity: usize) -> usize {
    let page = first.unwrap_or(DEFAULT_PAGE_SIZE as i32).clamp(1, MAX_PAGE_SIZE as i32) as usize;
    page * child_complexity + depth.clamp(1, MAX_DEPTH) as usize * 10
}

#[allow(clippy::too_many_arguments)]
async fn walk_from(
    ctx: &Context<'_>,
    stored: &StoredEntity,
    types: Vec<DomainRelationType>,
    direction: Direction,
    max_depth: i32,
    filter: Option<EntityFilter>,
    first: Option<i32>,
    after: Option<String>,
) -> Result<TraversalConnection> {
    let traversal = Traversal { from: vec![stored.entity_ref.clone()], types, direction, max_depth };
    traversal_connection(ctx, traversal, filter, first, after).await
}

/// Entities owned by `stored` as `field` (Owner, OwnedByTree or OwnedByMember) means it.
async fn owned_connection(
    ctx: &Context<'_>,
    stored: &StoredEntity,
    field: FilterField,
    filter: Option<EntityFilter>,
    first: Option<i32>,
    after: Option<String>,
) -> Result<EntityConnection> {
    let mut all = vec![Filter::Field { field, predicate: Predicate::In(vec![stored.entity_ref.to_string()]) }];
    if let Some(filter) = filter {
        all.push(filter.to_store()?);
    }
    let page = PageArgs { first, after, ..PageArgs::default() };
    let catalog = crate::graphql::context::catalog(ctx)?;
    let filter = crate::graphql::context::read_scope(ctx)?.narrow(Some(Filter::All(all)));
    Ok(list_connection(catalog, filter, None, EntitySource::Now(EntityOrder::default()), page).await?)
}

/// The groups a walk over `types` reaches from `stored`, nearest first.
async fn groups_by_walk(ctx: &Context<'_>, stored: &StoredEntity, types: &[DomainRelationType]) -> Result<Vec<Group>> {
    let request = WalkRequest {
        from: vec![stored.entity_ref.clone()],
        types: types.to_vec(),
        direction: Direction::Outgoing,
        max_depth: MAX_DEPTH as u32,
        max_nodes: MAX_WALK_NODES,
        ..WalkRequest::default()
    };
    let walk = graph::walk(ctx, &request).await?;
    let refs: Vec<EntityRef> = walk
        .nodes
        .iter()
        .filter(|node| node.distance > 0 && node.entity_ref.kind() == "group")
        .map(|node| node.entity_ref.clone())
        .collect();
    let found = entity_loader(ctx)?.load_many(refs.iter().cloned()).await?;
    Ok(refs.iter().filter_map(|entity_ref| found.get(entity_ref).cloned()).map(Group).collect())
}

entity_object!(
    /// A piece of software: a service, website, library...
    Component {
        #[graphql(name = "type")]
        async fn component_type(&self, ctx: &Context<'_>) -> Result<Option<String>> { spec_text(ctx, &self.0, const { spec::field("Component", "type") }).await }
        async fn lifecycle(&self, ctx: &Context<'_>) -> Result<Option<String>> { spec_text(ctx, &self.0, const { spec::field("Component", "lifecycle") }).await }
        async fn owner(&self, ctx: &Context<'_>) -> Result<Option<EntityValue>> {
            stated_one::<EntityValue>(ctx, &self.0, const { spec::relation("Component", "owner") }).await
        }
        async fn system(&self, ctx: &Context<'_>) -> Result<Option<System>> {
            stated_one::<System>(ctx, &self.0, const { spec::relation("Component", "system") }).await
        }
        /// The component this one is a part of.
        async fn subcomponent_of(&self, ctx: &Context<'_>) -> Result<Option<Component>> {
            stated_one::<Component>(ctx, &self.0, const { spec::relation("Component", "subcomponentOf") }).await
        }
        async fn subcomponents(&self, ctx: &Context<'_>) -> Result<Vec<Component>> {
            stated_by::<Component>(ctx, &self.0, const { spec::relation("Component", "subcomponentOf") }).await
        }
        async fn provides_apis(&self, ctx: &Context<'_>) -> Result<Vec<Api>> {
            stated::<Api>(ctx, &self.0, const { spec::relation("Component", "providesApis") }).await
        }
        async fn consumes_apis(&self, ctx: &Context<'_>) -> Result<Vec<Api>> {
            stated::<Api>(ctx, &self.0, const { spec::relation("Component", "consumesApis") }).await
        }
        /// What this component depends on (components and resources).
        async fn depends_on(&self, ctx: &Context<'_>) -> Result<Vec<EntityValue>> {
            stated::<EntityValue>(ctx, &self.0, const { spec::relation("Component", "dependsOn") }).await
        }
    }
);

entity_object!(
    /// An interface between components.
    Api {
        #[graphql(name = "type")]
        async fn api_type(&self, ctx: &Context<'_>) -> Result<Option<String>> { spec_text(ctx, &self.0, const { spec::field("API", "type") }).await }
        async fn lifecycle(&self, ctx: &Context<'_>) -> Result<Option<String>> { spec_text(ctx, &self.0, const { spec::field("API", "lifecycle") }).await }
        /// The definition as written (OpenAPI, AsyncAPI, GraphQL SDL, protobuf...).
        async fn definition(&self, ctx: &Context<'_>) -> Result<Option<String>> { spec_text(ctx, &self.0, const { spec::field("API", "definition") }).await }
        async fn owner(&self, ctx: &Context<'_>) -> Result<Option<EntityValue>> {
            stated_one::<EntityValue>(ctx, &self.0, const { spec::relation("API", "owner") }).await
        }
        async fn system(&self, ctx: &Context<'_>) -> Result<Option<System>> {
            stated_one::<System>(ctx, &self.0, const { spec::relation("API", "system") }).await
        }
        /// Components that provide this API.
        async fn providers(&self, ctx: &Context<'_>) -> Result<Vec<Component>> {
            stated_by::<Component>(ctx, &self.0, const { spec::relation("Component", "providesApis") }).await
        }
        /// Components that consume this API.
        async fn consumers(&self, ctx: &Context<'_>) -> Result<Vec<Component>> {
            stated_by::<Component>(ctx, &self.0, const { spec::relation("Component", "consumesApis") }).await
        }
    }
);

entity_object!(
    /// Infrastructure a component needs: a database, a bucket, a topic...
    Resource {
        #[graphql(name = "type")]
        async fn resource_type(&self, ctx: &Context<'_>) -> Result<Option<String>> { spec_text(ctx, &self.0, const { spec::field("Resource", "type") }).await }
        async fn owner(&self, ctx: &Context<'_>) -> Result<Option<EntityValue>> {
            stated_one::<EntityValue>(ctx, &self.0, const { spec::relation("Resource", "owner") }).await
        }
        async fn system(&self, ctx: &Context<'_>) -> Result<Option<System>> {
            stated_one::<System>(ctx, &self.0, const { spec::relation("Resource", "system") }).await
        }
        async fn depends_on(&self, ctx: &Context<'_>) -> Result<Vec<EntityValue>> {
            stated::<EntityValue>(ctx, &self.0, const { spec::relation("Resource", "dependsOn") }).await
        }
    }
);

entity_object!(
    /// A collection of components, APIs and resources that form one product.
    System {
        #[graphql(name = "type")]
        async fn system_type(&self, ctx: &Context<'_>) -> Result<Option<String>> { spec_text(ctx, &self.0, const { spec::field("System", "type") }).await }
        async fn owner(&self, ctx: &Context<'_>) -> Result<Option<EntityValue>> {
            stated_one::<EntityValue>(ctx, &self.0, const { spec::relation("System", "owner") }).await
        }
        async fn domain(&self, ctx: &Context<'_>) -> Result<Option<Domain>> {
            stated_one::<Domain>(ctx, &self.0, const { spec::relation("System", "domain") }).await
        }
        async fn components(&self, ctx: &Context<'_>) -> Result<Vec<Component>> {
            stated_by::<Component>(ctx, &self.0, const { spec::relation("Component", "system") }).await
        }
        async fn apis(&self, ctx: &Context<'_>) -> Result<Vec<Api>> {
            stated_by::<Api>(ctx, &self.0, const { spec::relation("API", "system") }).await
        }
        async fn resources(&self, ctx: &Context<'_>) -> Result<Vec<Resource>> {
            stated_by::<Resource>(ctx, &self.0, const { spec::relation("Resource", "system") }).await
        }
    }
);

entity_object!(
    /// A business area grouping systems.
    Domain {
        #[graphql(name = "type")]
        async fn domain_type(&self, ctx: &Context<'_>) -> Result<Option<String>> { spec_text(ctx, &self.0, const { spec::field("Domain", "type") }).await }
        async fn owner(&self, ctx: &Context<'_>) -> Result<Option<EntityValue>> {
            stated_one::<EntityValue>(ctx, &self.0, const { spec::relation("Domain", "owner") }).await
        }
        /// The domain this one is a subdomain of.
        async fn subdomain_of(&self, ctx: &Context<'_>) -> Result<Option<Domain>> {
            stated_one::<Domain>(ctx, &self.0, const { spec::relation("Domain", "subdomainOf") }).await
        }
        async fn subdomains(&self, ctx: &Context<'_>) -> Result<Vec<Domain>> {
            stated_by::<Domain>(ctx, &self.0, const { spec::relation("Domain", "subdomainOf") }).await
        }
        async fn systems(&self, ctx: &Context<'_>) -> Result<Vec<System>> {
            stated_by::<System>(ctx, &self.0, const { spec::relation("System", "domain") }).await
        }
    }
);

entity_object!(
    /// A team, department or organisation.
    Group {
        #[graphql(name = "type")]
        async fn group_type(&self, ctx: &Context<'_>) -> Result<Option<String>> { spec_text(ctx, &self.0, const { spec::field("Group", "type") }).await }
        async fn profile(&self, ctx: &Context<'_>) -> Result<Option<Json<serde_json::Value>>> { spec_json(ctx, &self.0, const { spec::field("Group", "profile") }).await }
        async fn parent(&self, ctx: &Context<'_>) -> Result<Option<Group>> {
            stated_one::<Group>(ctx, &self.0, const { spec::relation("Group", "parent") }).await
        }
        async fn children(&self, ctx: &Context<'_>) -> Result<Vec<Group>> {
            stated::<Group>(ctx, &self.0, const { spec::relation("Group", "children") }).await
        }
        async fn members(&self, ctx: &Context<'_>) -> Result<Vec<User>> {
            stated::<User>(ctx, &self.0, const { spec::relation("Group", "members") }).await
        }
        /// The groups above this one, nearest first.
        async fn ancestors(&self, ctx: &Context<'_>) -> Result<Vec<Group>> {
            groups_by_walk(ctx, &self.0, &[const { spec::relation("Group", "parent") }]).await
        }
        /// The groups under this one (children, transitively), nearest first.
        async fn descendants(&self, ctx: &Context<'_>) -> Result<Vec<Group>> {
            groups_by_walk(ctx, &self.0, &[const { spec::relation("Group", "children") }]).await
        }
        /// The services of the PagerDuty team its `pagerduty.com/team-id`
        /// annotation names, by name; empty without one.
        async fn pager_duty_services(&self, ctx: &Context<'_>) -> Result<Vec<PagerDutyServiceValue>> {
            crate::graphql::pagerduty::team_services(ctx, &self.0).await
        }
        /// A scorecard's results over what this group owns and, with
        /// `includeSubgroups`, what every group under it owns: entities per
        /// level and each rule's pass rate. Null when no scorecard has the id.
        async fn scorecard_rollup(
            &self,
            ctx: &Context<'_>,
            scorecard: String,
            #[graphql(default = true)] include_subgroups: bool,
        ) -> Result<Option<crate::graphql::governance::ScorecardRollup>> {
            crate::graphql::governance::scorecard_rollup(ctx, &self.0, scorecard, include_subgroups).await
        }
    }
    owned_entities:
        /// What this group owns; with `includeSubgroups`, also what every group
        /// under it (children, transitively) owns.
        include_subgroups = false => FilterField::OwnedByTree
);

entity_object!(
    /// A person.
    User {
        async fn profile(&self, ctx: &Context<'_>) -> Result<Option<Json<serde_json::Value>>> { spec_json(ctx, &self.0, const { spec::field("User", "profile") }).await }
        async fn member_of(&self, ctx: &Context<'_>) -> Result<Vec<Group>> {
            stated::<Group>(ctx, &self.0, const { spec::relation("User", "memberOf") }).await
        }
        /// The groups this user is a member of; with `transitive`, also every
        /// group above them, nearest first.
        async fn groups(&self, ctx: &Context<'_>, #[graphql(default = false)] transitive: bool) -> Result<Vec<Group>> {
            if transitive {
                groups_by_walk(
                    ctx,
                    &self.0,
                    &[const { spec::relation("User", "memberOf") }, const { spec::relation("Group", "parent") }],
                )
                .await
            } else {
                stated::<Group>(ctx, &self.0, const { spec::relation("User", "memberOf") }).await
            }
        }
    }
    owned_entities:
        /// What this user owns; with `throughGroups` (the default), also what
        /// every group the user belongs to owns, directly or through parent groups.
        through_groups = true => FilterField::OwnedByMember
);

entity_object!(
    /// A pointer to more catalog files.
    Location {
        #[graphql(name = "type")]
        async fn location_type(&self, ctx: &Context<'_>) -> Result<Option<String>> { spec_text(ctx, &self.0, const { spec::field("Location", "type") }).await }
        async fn target(&self, ctx: &Context<'_>) -> Result<Option<String>> { spec_text(ctx, &self.0, const { spec::field("Location", "target") }).await }
        async fn targets(&self, ctx: &Context<'_>) -> Result<Vec<String>> { spec_texts(ctx, &self.0, const { spec::field("Location", "targets") }).await }
        async fn presence(&self, ctx: &Context<'_>) -> Result<Option<String>> { spec_text(ctx, &self.0, const { spec::field("Location", "presence") }).await }
    }
);

entity_object!(
    /// A scaffolder software template.
    Template {
        #[graphql(name = "type")]
        async fn template_type(&self, ctx: &Context<'_>) -> Result<Option<String>> { spec_text(ctx, &self.0, const { spec::field("Template", "type") }).await }
        async fn owner(&self, ctx: &Context<'_>) -> Result<Option<EntityValue>> {
            stated_one::<EntityValue>(ctx, &self.0, const { spec::relation("Template", "owner") }).await
        }
        /// The parameter form as JSON Schema (one object or a list of pages).
        async fn parameters(&self, ctx: &Context<'_>) -> Result<Option<Json<serde_json::Value>>> { spec_json(ctx, &self.0, const { spec::field("Template", "parameters") }).await }
        async fn steps(&self, ctx: &Context<'_>) -> Result<Option<Json<serde_json::Value>>> { spec_json(ctx, &self.0, const { spec::field("Template", "steps") }).await }
        async fn output(&self, ctx: &Context<'_>) -> Result<Option<Json<serde_json::Value>>> { spec_json(ctx, &self.0, const { spec::field("Template", "output") }).await }
    }
);

entity_object!(
    /// An entity of a kind this catalog has no type for; see `raw`.
    GenericEntity {
        /// The whole spec.
        async fn spec(&self, ctx: &Context<'_>) -> Result<Json<serde_json::Value>> {
            Ok(Json(serde_json::Value::Object(body(ctx, &self.0).await?.spec.clone())))
        }
    }
);

/// Any catalog entity.
// clippy reads the interface's repeated `field(ty = ...)` entries as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(Interface, Clone)]
#[graphql(
    name = "Entity",
    field(name = "id", ty = "ID"),
    field(name = "entity_ref", ty = "String"),
    field(name = "kind", ty = "&str"),
    field(name = "api_version", ty = "&str"),
    field(name = "namespace", ty = "&str"),
    field(name = "name", ty = "&str"),
    field(name = "title", ty = "Option<&str>"),
    field(name = "description", ty = "Option<&str>"),
    field(name = "uid", ty = "Option<&str>"),
    field(name = "etag", ty = "Option<&str>"),
    field(name = "labels", ty = "Vec<KeyValue>"),
    field(name = "annotations", ty = "Vec<KeyValue>"),
    field(name = "annotation", ty = "Option<&str>", arg(name = "key", ty = "String")),
    field(name = "tags", ty = "&[String]"),
    field(name = "links", ty = "Vec<EntityLink>"),
    field(name = "raw", ty = "Json<serde_json::Value>"),
    field(name = "relations", ty = "Vec<RelationEdge>", arg(name = "type", ty = "Option<RelationTypeValue>")),
    field(name = "processing_errors", ty = "&[String]"),
    field(name = "policy_violations", ty = "Vec<crate::graphql::governance::PolicyViolationValue>"),
    field(name = "source_location", ty = "Option<&str>"),
    field(name = "created_at", ty = "DateTime<Utc>"),
    field(name = "updated_at", ty = "DateTime<Utc>"),
    field(name = "pager_duty", ty = "Option<PagerDutyServiceValue>"),
    field(
        name = "traverse",
        ty = "TraversalConnection",
        arg(name = "relation_types", ty = "Option<Vec<RelationTypeValue>>"),
        arg(name = "direction", ty = "TraversalDirection", default),
        arg(name = "max_depth", ty = "i32", default = 3),
        arg(name = "filter", ty = "Option<EntityFilter>"),
        arg(name = "first", ty = "Option<i32>"),
        arg(name = "after", ty = "Option<String>")
    ),
    field(
        name = "dependencies",
        ty = "TraversalConnection",
        arg(name = "depth", ty = "i32", default = 1),
        arg(name = "through_apis", ty = "bool", default = true),
        arg(name = "filter", ty = "Option<EntityFilter>"),
        arg(name = "first", ty = "Option<i32>"),
        arg(name = "after", ty = "Option<String>")
    ),
    field(name = "kubernetes", ty = "Vec<KubernetesCluster>", arg(name = "first", ty = "i32", default = 100)),
    field(
        name = "scores",
        ty = "Vec<crate::graphql::governance::EntityScore>",
        arg(name = "scorecard", ty = "Option<String>")
    ),
    field(
        name = "scores_as_of",
        ty = "Vec<crate::graphql::governance::PastScore>",
        arg(name = "time", ty = "DateTime<Utc>"),
        arg(name = "scorecard", ty = "Option<String>")
    ),
    field(name = "staleness", ty = "Option<crate::graphql::governance::Staleness>"),
    field(
        name = "score_history",
        ty = "crate::graphql::governance::ScoreHistoryPage",
        arg(name = "scorecard", ty = "Option<String>"),
        arg(name = "first", ty = "i32", default = 20),
        arg(name = "before", ty = "Option<crate::graphql::governance::ScoreCursor>")
    ),
    field(
        name = "history",
        ty = "ChangePage",
        arg(name = "first", ty = "i32", default = 20),
        arg(name = "after", ty = "Option<ChangeCursor>")
    ),
    field(
        name = "dependents",
        ty = "TraversalConnection",
        arg(name = "depth", ty = "i32", default = 1),
        arg(name = "through_apis", ty = "bool", default = true),
        arg(name = "filter", ty = "Option<EntityFilter>"),
        arg(name = "first", ty = "Option<i32>"),
        arg(name = "after", ty = "Option<String>")
    )
)]
pub enum EntityValue {
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

impl From<Arc<StoredEntity>> for EntityValue {
    fn from(stored: Arc<StoredEntity>) -> Self {
        match stored.entity_ref.kind() {
            "component" => EntityValue::Component(Component(stored)),
            "api" => EntityValue::Api(Api(stored)),
            "resource" => EntityValue::Resource(Resource(stored)),
            "system" => EntityValue::System(System(stored)),
            "domain" => EntityValue::Domain(Domain(stored)),
            "group" => EntityValue::Group(Group(stored)),
            "user" => EntityValue::User(User(stored)),
            "location" => EntityValue::Location(Location(stored)),
            "template" => EntityValue::Template(Template(stored)),
            _ => EntityValue::GenericEntity(GenericEntity(stored)),
        }
    }
}
