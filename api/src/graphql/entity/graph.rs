//! Graph queries: traversal, dependencies and dependents, impact analysis,
//! shortest paths and drawable subgraphs. Each resolves one store walk (in
//! memory, after one statement that catches the graph index up with the
//! change log) and loads the entities of what it returns in one batch.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::{Context, Enum, Object, Result, SimpleObject};
use catalog_domain::{EntityRef, RelationType as R};
use catalog_store::{Direction, Filter, StoredRelation, Walk, WalkRequest};

use super::{EntityValue, RelationTypeValue};
use crate::auth::policy::ReadScope;
use crate::error_code::Limit;
use crate::graphql::context::{budget, catalog, entity_loader, parse_ref};
use crate::graphql::error::ApiError;
use crate::graphql::filter::EntityFilter;
use crate::graphql::pagerduty::{ImpactServices, PagerDutyOnCall};
use crate::graphql::paging::{PageInfo, decode_cursor, offset_cursor, page_size};
use crate::graphql::{DEFAULT_PAGE_SIZE, MAX_REFS};

/// The deepest walk a query may ask for.
pub const MAX_DEPTH: i32 = 32;
/// The most nodes one walk may reach; past it, results say they are incomplete.
pub const MAX_WALK_NODES: usize = 100_000;
/// The most nodes a `graph` payload may hold.
pub const MAX_GRAPH_NODES: i32 = 2_000;
/// The most paths one `paths` call may return.
pub const MAX_PATHS: i32 = 100;

/// Runs a walk against the request's budget.
pub(crate) async fn walk(ctx: &Context<'_>, request: &WalkRequest) -> Result<Walk, ApiError> {
    budget(ctx)?.spend_walk()?;
    let catalog = catalog(ctx)?;
    let mut walk = catalog.walk(request).await?;
    if let ReadScope::Only { filter, .. } = crate::graphql::context::read_scope(ctx)? {
        // Hidden entities, and whatever is reached only through them, leave
        // the walk before anything is counted or paged. A ref nothing in the
        // catalog has stays when a visible entity names it, but never as a
        // start: "absent" and "hidden" must look alike from outside.
        let refs: Vec<EntityRef> = walk.nodes.iter().map(|node| node.entity_ref.clone()).collect();
        let existing = catalog.refs_matching(&refs, &Filter::All(Vec::new())).await?;
        let visible = catalog.refs_matching(&refs, &filter).await?;
        walk.retain_visible(|node| {
            visible.contains(&node.entity_ref) || (node.distance > 0 && !existing.contains(&node.entity_ref))
        });
    }
    Ok(walk)
}

/// Which way a traversal follows edges.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq, Default)]
#[graphql(remote = "catalog_store::Direction")]
pub enum TraversalDirection {
    /// From each entity along its own relations (`dependsOn` leads to dependencies).
    #[default]
    Outgoing,
    /// Against the relations: to the entities that state them (`dependsOn` leads to dependents).
    Incoming,
    Both,
}

/// One edge of the catalog graph as stated: `sourceRef` `type` `targetRef`.
#[derive(SimpleObject, Clone, Debug)]
pub struct GraphEdge {
    pub source_ref: String,
    #[graphql(name = "type")]
    pub relation_type: RelationTypeValue,
    pub target_ref: String,
}

impl From<&StoredRelation> for GraphEdge {
    fn from(edge: &StoredRelation) -> Self {
        GraphEdge {
            source_ref: edge.source_ref.to_string(),
            relation_type: edge.relation_type.into(),
            target_ref: edge.target_ref.to_string(),
        }
    }
}

/// An entity reached by a walk. `entity` is null (and `resolved` false) when
/// the ref is named by a relation but nothing in the catalog has it.
#[derive(Clone, Debug)]
pub struct TraversalNode {
    entity_ref: EntityRef,
    distance: u32,
    path: Vec<GraphEdge>,
}

/// An entity reached by a walk, with its distance and one shortest path.
/// `entity` is null (and `resolved` false) when the ref is named by a relation
/// but nothing in the catalog has it.
#[Object]
impl TraversalNode {
    async fn entity_ref(&self) -> &str {
        self.entity_ref.as_str()
    }

    /// Hops from the start.
    async fn distance(&self) -> u32 {
        self.distance
    }

    /// One shortest path from the start: the edges in walking order.
    async fn path(&self) -> &[GraphEdge] {
        &self.path
    }

    async fn entity(&self, ctx: &Context<'_>) -> Result<Option<EntityValue>> {
        let found = entity_loader(ctx)?.load_one(self.entity_ref.clone()).await?;
        Ok(found.map(EntityValue::from))
    }

    /// Whether the ref is in the catalog.
    async fn resolved(&self, ctx: &Context<'_>) -> Result<bool> {
        Ok(entity_loader(ctx)?.load_one(self.entity_ref.clone()).await?.is_some())
    }

    /// The owner's ref, for kinds that have one; null for unresolved refs.
    async fn owner_ref(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        let found = entity_loader(ctx)?.load_one(self.entity_ref.clone()).await?;
        let Some(stored) = found else { return Ok(None) };
        Ok(super::body(ctx, &stored)
            .await?
            .stated_relations()
            .into_iter()
            .find(|relation| relation.relation_type == R::OwnedBy)
            .map(|relation| relation.target_ref))
    }

    /// The owner (a Group or User), when it is in the catalog.
    async fn owner(&self, ctx: &Context<'_>) -> Result<Option<EntityValue>> {
        let Some(owner_ref) = self.owner_ref(ctx).await? else { return Ok(None) };
        // The catalog wrote this relation from a parsed ref when it read the
        // entity (`with_derived_relations`).
        let Ok(owner_ref) = EntityRef::from_stored(&owner_ref) else { return Ok(None) };
        let found = entity_loader(ctx)?.load_one(owner_ref).await?;
        Ok(found.map(EntityValue::from))
    }
}

/// A reached entity with its cursor.
#[derive(SimpleObject, Clone)]
pub struct TraversalEdge {
    pub cursor: String,
    pub node: TraversalNode,
}

/// A page of the entities a walk reached, nearest first, in a stable order.
#[derive(SimpleObject)]
pub struct TraversalConnection {
    pub edges: Vec<TraversalEdge>,
    pub nodes: Vec<TraversalNode>,
    pub page_info: PageInfo,
    /// How many reached entities match, over all pages.
    pub total_count: u64,
    /// False when the depth limit or the node cap left reachable entities out.
    pub complete: bool,
}

/// A walk as the API asks for it.
pub(crate) struct Traversal {
    pub from: Vec<EntityRef>,
    pub types: Vec<R>,
    pub direction: Direction,
    pub max_depth: i32,
}

fn check_depth(name: &str, depth: i32) -> Result<u32, ApiError> {
    if depth < 1 {
        return Err(ApiError::BadUserInput(format!("{name} must be at least 1, got {depth}")));
    }
    if depth > MAX_DEPTH {
        return Err(ApiError::LimitExceeded {
            limit: Limit::TraversalDepth,
            message: format!("{name} must be at most {MAX_DEPTH}, got {depth}"),
        });
    }
    Ok(depth as u32)
}

pub(crate) fn parse_refs(refs: &[String]) -> Result<Vec<EntityRef>, ApiError> {
    if refs.len() > MAX_REFS {
        return Err(ApiError::LimitExceeded {
            limit: Limit::Refs,
            message: format!("at most {MAX_REFS} start refs, got {}", refs.len()),
        });
    }
    refs.iter().map(|text| parse_ref(text, None, "default")).collect()
}

/// Whether the client selected `field` directly under the current field.
fn selects(ctx: &Context<'_>, field: &str) -> bool {
    ctx.look_ahead().field(field).exists()
}

async fn run(ctx: &Context<'_>, traversal: &Traversal, probe: bool, keep_edges: bool) -> Result<Walk, ApiError> {
    let request = WalkRequest {
        from: traversal.from.clone(),
        types: traversal.types.clone(),
        direction: traversal.direction,
        max_depth: check_depth("maxDepth", traversal.max_depth)?,
        max_nodes: MAX_WALK_NODES,
        probe_past_depth: probe,
        keep_edges,
        ..WalkRequest::default()
    };
    walk(ctx, &request).await
}

/// The reached entities (start nodes excluded) that match the filter, as a page.
pub(crate) async fn traversal_connection(
    ctx: &Context<'_>,
    traversal: Traversal,
    filter: Option<EntityFilter>,
    first: Option<i32>,
    after: Option<String>,
) -> Result<TraversalConnection> {
    let size = page_size("first", first)?.unwrap_or(DEFAULT_PAGE_SIZE);
    let filter = filter.map(|filter| filter.to_store()).transpose()?;
    let start = after.as_deref().map(decode_cursor).transpose()?.map_or(0, |offset| offset + 1);
    let walk = run(ctx, &traversal, selects(ctx, "complete"), false).await?;
    Ok(page_of(ctx, &walk, filter.as_ref(), start, size).await?)
}

async fn page_of(
    ctx: &Context<'_>,
    walk: &Walk,
    filter: Option<&catalog_store::Filter>,
    start: u64,
    size: u64,
) -> Result<TraversalConnection, ApiError> {
    let mut reached: Vec<usize> = (0..walk.nodes.len()).filter(|node| walk.nodes[*node].distance > 0).collect();
    if let Some(filter) = filter {
        let refs: Vec<EntityRef> = reached.iter().map(|node| walk.nodes[*node].entity_ref.clone()).collect();
        let matching = catalog(ctx)?.refs_matching(&refs, filter).await?;
        reached.retain(|node| matching.contains(&walk.nodes[*node].entity_ref));
    }
    let total_count = reached.len() as u64;
    let edges: Vec<TraversalEdge> = reached
        .iter()
        .enumerate()
        .skip(usize::try_from(start).unwrap_or(usize::MAX))
        .take(usize::try_from(size).unwrap_or(usize::MAX))
        .map(|(position, node)| TraversalEdge {
            cursor: offset_cursor(position as u64),
            node: traversal_node(walk, *node),
        })
        .collect();
    let page_info = PageInfo {
        has_next_page: start + (edges.len() as u64) < total_count,
        has_previous_page: start > 0,
        start_cursor: edges.first().map(|edge| edge.cursor.clone()),
        end_cursor: edges.last().map(|edge| edge.cursor.clone()),
    };
    let nodes = edges.iter().map(|edge| edge.node.clone()).collect();
    Ok(TraversalConnection { edges, nodes, page_info, total_count, complete: walk.complete })
}

fn traversal_node(walk: &Walk, node: usize) -> TraversalNode {
    let reached = &walk.nodes[node];
    TraversalNode {
        entity_ref: reached.entity_ref.clone(),
        distance: reached.distance,
        path: walk.path(node).iter().map(GraphEdge::from).collect(),
    }
}

/// Relation types as the API takes them, in the domain's terms; `None` when
/// the client left the argument out (each field has its own default).
pub(crate) fn domain_types(types: Option<Vec<RelationTypeValue>>) -> Option<Vec<R>> {
    types.map(|types| types.into_iter().map(R::from).collect())
}

/// The relation types of "depends on", optionally through APIs: a consumer of
/// an API depends on the API, and the API on the components that provide it.
pub(crate) fn dependency_types(through_apis: bool) -> Vec<R> {
    let mut types = vec![R::DependsOn];
    if through_apis {
        types.extend([R::ConsumesApi, R::ApiProvidedBy]);
    }
    types
}

/// The reverse of [`dependency_types`]: what depends on an entity.
pub(crate) fn dependent_types(through_apis: bool) -> Vec<R> {
    dependency_types(through_apis).into_iter().map(R::reverse).collect()
}

/// Everything that transitively depends on one entity, and who owns it.
pub struct Impact {
    root: EntityRef,
    walk: Arc<Walk>,
    /// Shared by the owners: their PagerDuty services are worked out once.
    pagerduty: Arc<ImpactServices>,
}

/// The owner of some impacted entities.
pub struct ImpactOwner {
    owner_ref: EntityRef,
    count: u64,
    pagerduty: Arc<ImpactServices>,
}

/// An owner of impacted entities: who to tell, and about how many.
#[Object]
impl ImpactOwner {
    async fn owner_ref(&self) -> &str {
        self.owner_ref.as_str()
    }

    /// The owner (a Group or User); null when the ref is not in the catalog.
    async fn owner(&self, ctx: &Context<'_>) -> Result<Option<EntityValue>> {
        let found = entity_loader(ctx)?.load_one(self.owner_ref.clone()).await?;
        Ok(found.map(EntityValue::from))
    }

    /// How many impacted entities this owner owns.
    async fn count(&self) -> u64 {
        self.count
    }

    /// Who is on call for this owner in PagerDuty: for the services of its
    /// Group's team (`pagerduty.com/team-id`) and those its impacted
    /// entities map to, each service's lowest escalation level. Empty
    /// without PagerDuty; UNAVAILABLE when PagerDuty cannot be asked.
    async fn on_call(&self, ctx: &Context<'_>) -> Result<Vec<PagerDutyOnCall>> {
        Ok(self.pagerduty.on_call(ctx, &self.owner_ref).await?)
    }
}

/// Everything that transitively depends on one entity, and who owns it.
#[Object]
impl Impact {
    /// The entity whose failure is analysed.
    async fn root_ref(&self) -> &str {
        self.root.as_str()
    }

    /// How many entities are impacted.
    async fn total_count(&self) -> u64 {
        self.walk.nodes.iter().filter(|node| node.distance > 0).count() as u64
    }

    /// False when the depth limit or the node cap left impacted entities out.
    async fn complete(&self) -> bool {
        self.walk.complete
    }

    /// The impacted entities, nearest first, each with its distance and path.
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity + 5")]
    async fn entities(
        &self,
        ctx: &Context<'_>,
        filter: Option<EntityFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<TraversalConnection> {
        let size = page_size("first", first)?.unwrap_or(DEFAULT_PAGE_SIZE);
        let filter = filter.map(|filter| filter.to_store()).transpose()?;
        let start = after.as_deref().map(decode_cursor).transpose()?.map_or(0, |offset| offset + 1);
        Ok(page_of(ctx, &self.walk, filter.as_ref(), start, size).await?)
    }

    /// Who to tell: the owners of the impacted entities with how many each
    /// owns, most first. Every impacted entity counts once, for its owner.
    async fn owners(&self, ctx: &Context<'_>) -> Result<Vec<ImpactOwner>> {
        let owners = catalog(ctx)?.owners_in_graph(&self.impacted_refs()).await.map_err(ApiError::from)?;
        let mut counts: HashMap<EntityRef, u64> = HashMap::new();
        for owner in owners.into_values() {
            *counts.entry(owner).or_default() += 1;
        }
        let mut owners: Vec<ImpactOwner> = counts
            .into_iter()
            .map(|(owner_ref, count)| ImpactOwner { owner_ref, count, pagerduty: self.pagerduty.clone() })
            .collect();
        owners.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.owner_ref.as_str().cmp(b.owner_ref.as_str())));
        Ok(owners)
    }

    /// Impacted refs that are not in the catalog (named by a relation only).
    async fn unresolved_count(&self, ctx: &Context<'_>) -> Result<u64> {
        let refs = self.impacted_refs();
        let found = catalog(ctx)?.owners_of(&refs).await.map_err(ApiError::from)?;
        Ok((refs.len() - found.len()) as u64)
    }
}

impl Impact {
    /// Every impacted ref: what the walk reached, the root excluded.
    fn impacted_refs(&self) -> Vec<EntityRef> {
        self.walk.nodes.iter().filter(|node| node.distance > 0).map(|node| node.entity_ref.clone()).collect()
    }
}

/// The relation types an impact walk follows.
pub(crate) fn impact_types(through_apis: bool, include_part_of: bool) -> Vec<R> {
    let mut types = dependent_types(through_apis);
    if include_part_of {
        types.push(R::PartOf);
    }
    types
}

pub(crate) async fn impact(ctx: &Context<'_>, root: String, types: Vec<R>, max_depth: i32) -> Result<Impact> {
    let root = parse_ref(&root, None, "default")?;
    let traversal = Traversal { from: vec![root.clone()], types, direction: Direction::Outgoing, max_depth };
    let walk = Arc::new(run(ctx, &traversal, true, false).await?);
    Ok(Impact { root, pagerduty: Arc::new(ImpactServices::new(walk.clone())), walk })
}

/// One relation path between two entities.
#[derive(SimpleObject)]
pub struct RelationPath {
    /// The number of edges.
    pub length: u32,
    pub edges: Vec<GraphEdge>,
}

pub(crate) async fn paths(
    ctx: &Context<'_>,
    from: String,
    to: String,
    traversal: (Vec<R>, Direction, i32),
    first: i32,
) -> Result<Vec<RelationPath>> {
    if !(1..=MAX_PATHS).contains(&first) {
        return Err(ApiError::LimitExceeded {
            limit: Limit::Paths,
            message: format!("first must be between 1 and {MAX_PATHS}, got {first}"),
        }
        .into());
    }
    let from = parse_ref(&from, None, "default")?;
    let to = parse_ref(&to, None, "default")?;
    let (types, direction, max_depth) = traversal;
    let request = WalkRequest {
        from: vec![from],
        types,
        direction,
        max_depth: check_depth("maxDepth", max_depth)?,
        max_nodes: MAX_WALK_NODES,
        target: Some(to.clone()),
        ..WalkRequest::default()
    };
    let walk = walk(ctx, &request).await?;
    let Some(target) = walk.position(&to) else { return Ok(Vec::new()) };
    Ok(walk
        .shortest_paths(target, first as usize)
        .into_iter()
        .map(|edges| RelationPath { length: edges.len() as u32, edges: edges.iter().map(GraphEdge::from).collect() })
        .collect())
}

/// A node of a drawable graph.
#[derive(Clone)]
pub struct GraphNode(TraversalNode);

/// A node of a drawable graph.
#[Object]
impl GraphNode {
    async fn entity_ref(&self) -> &str {
        self.0.entity_ref.as_str()
    }

    /// Hops from the nearest root.
    async fn distance(&self) -> u32 {
        self.0.distance
    }

    async fn entity(&self, ctx: &Context<'_>) -> Result<Option<EntityValue>> {
        self.0.entity(ctx).await
    }

    /// Whether the ref is in the catalog.
    async fn resolved(&self, ctx: &Context<'_>) -> Result<bool> {
        self.0.resolved(ctx).await
    }
}

/// Nodes and edges around some roots, for drawing.
#[derive(SimpleObject)]
pub struct EntityGraph {
    /// Roots first, then by distance and ref.
    pub nodes: Vec<GraphNode>,
    /// Every followed edge between two returned nodes.
    pub edges: Vec<GraphEdge>,
    /// True when `maxNodes` (or the walk's node cap) left nodes out.
    pub truncated: bool,
    /// How many reachable nodes were left out by `maxNodes`.
    pub omitted_node_count: u64,
}

pub(crate) async fn graph(ctx: &Context<'_>, traversal: Traversal, max_nodes: i32) -> Result<EntityGraph> {
    if !(1..=MAX_GRAPH_NODES).contains(&max_nodes) {
        return Err(ApiError::LimitExceeded {
            limit: Limit::GraphNodes,
            message: format!("maxNodes must be between 1 and {MAX_GRAPH_NODES}, got {max_nodes}"),
        }
        .into());
    }
    let walk = run(ctx, &traversal, false, true).await?;
    let kept = walk.nodes.len().min(max_nodes as usize);
    let nodes: Vec<GraphNode> = (0..kept)
        .map(|node| {
            let reached = &walk.nodes[node];
            GraphNode(TraversalNode {
                entity_ref: reached.entity_ref.clone(),
                distance: reached.distance,
                path: Vec::new(),
            })
        })
        .collect();
    let edges = walk
        .edges()
        .filter(|edge| {
            walk.position(&edge.source_ref).is_some_and(|node| node < kept)
                && walk.position(&edge.target_ref).is_some_and(|node| node < kept)
        })
        .map(|edge| GraphEdge::from(&edge))
        .collect();
    let omitted = (walk.nodes.len() - kept) as u64;
    let cut_by_cap = walk.nodes.len() >= MAX_WALK_NODES && !walk.complete;
    Ok(EntityGraph { nodes, edges, truncated: omitted > 0 || cut_by_cap, omitted_node_count: omitted })
}
