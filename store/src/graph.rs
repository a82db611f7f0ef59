//! Walks of the catalog graph: breadth-first over the in-memory index
//! (`graph_index.rs`), after one statement that brings the index up to the
//! newest commit, so a walk costs one statement whatever its depth and size.
//! The walk keeps, for every node it reaches, the edges that reach it from
//! the previous hop, which gives one shortest path per node, every shortest
//! path between two nodes, and (when asked) the edges of a drawing.

use std::collections::{HashMap, HashSet};

use catalog_domain::{EntityRef, RelationType};
use sea_orm::{EntityTrait, QueryFilter, QuerySelect};

use crate::bulk;
use crate::error::StoreError;
use crate::filter::{Filter, FilterField, Predicate};
use crate::graph_index::Graph;
use crate::handles::Catalog;
use crate::models::entity_row;
use crate::query::condition;
use crate::record::{StoredRelation, asked_ref, by_text, stored_ref, texts};

/// Which way edges are followed from a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    /// From the edge's source to its target.
    #[default]
    Outgoing,
    /// From the edge's target to its source.
    Incoming,
    Both,
}

/// What to walk.
#[derive(Clone, Debug, Default)]
pub struct WalkRequest {
    /// Refs to start from (distance 0).
    pub from: Vec<EntityRef>,
    /// Relation types to follow; empty follows every type.
    pub types: Vec<RelationType>,
    pub direction: Direction,
    pub max_depth: u32,
    /// The most nodes a walk may reach, start nodes included.
    pub max_nodes: usize,
    /// Stop after the hop that reaches this ref (for shortest paths).
    pub target: Option<EntityRef>,
    /// When the depth limit stops the walk, look one hop further to learn
    /// whether it left nodes out (for `complete`).
    pub probe_past_depth: bool,
    /// Keep every edge followed between kept nodes (for drawings).
    pub keep_edges: bool,
}

/// How a node was reached from one node one hop nearer the start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    /// The index of that node among the walk's nodes.
    pub node: usize,
    pub relation_type: RelationType,
    /// Whether the stated edge runs from that node to this one (false: the
    /// walk followed it against its direction).
    pub forward: bool,
}

/// One node a walk reached.
#[derive(Clone, Debug)]
pub struct Reached {
    pub entity_ref: EntityRef,
    /// Hops from the nearest start node.
    pub distance: u32,
    /// Every way the node is reached from the previous hop; the first lies on
    /// its canonical shortest path. Empty for start nodes.
    pub parents: Vec<Parent>,
}

/// The outcome of a walk: nodes ordered by distance, then by ref (the refs'
/// canonical text).
#[derive(Clone, Debug, Default)]
pub struct Walk {
    pub nodes: Vec<Reached>,
    /// Whether the walk reached everything within its relation types: false when
    /// the node cap cut it short, or (when probed) the depth limit left nodes out.
    pub complete: bool,
    /// (source node, type, target node) of every edge followed, when kept.
    edges: Vec<(usize, RelationType, usize)>,
    /// Node by ref, built only for walks that look nodes up (a target, or
    /// kept edges): a second handle on every ref and its hash-table slot cost
    /// memory a big walk that looks nothing up does not need.
    index: Option<HashMap<EntityRef, usize>>,
}

impl Walk {
    /// The index of a ref among the nodes.
    pub fn position(&self, entity_ref: &EntityRef) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(entity_ref).copied(),
            None => self.nodes.iter().position(|node| node.entity_ref == *entity_ref),
        }
    }

    /// The stated edge between a node and one of its parents.
    fn edge(&self, node: usize, parent: &Parent) -> StoredRelation {
        let (source, target) = if parent.forward { (parent.node, node) } else { (node, parent.node) };
        StoredRelation {
            source_ref: self.nodes[source].entity_ref.clone(),
            relation_type: parent.relation_type,
            target_ref: self.nodes[target].entity_ref.clone(),
        }
    }

    /// Keeps the nodes `visible` accepts that are reached through visible
    /// nodes only, as if the others did not exist: a hidden node is dropped
    /// with everything reached only through it, and the parents, edges and
    /// paths left never pass through one. A node whose every shortest path
    /// crosses a hidden node is dropped even when a longer visible path
    /// exists: the walk under-reports rather than reveals.
    pub fn retain_visible(&mut self, visible: impl Fn(&Reached) -> bool) {
        // Nodes come ordered by distance and parents lie one hop closer, so
        // one forward pass sees every parent before its children.
        let mut new_index: Vec<Option<usize>> = vec![None; self.nodes.len()];
        let mut kept = Vec::new();
        for (old, node) in std::mem::take(&mut self.nodes).into_iter().enumerate() {
            if !visible(&node) {
                continue;
            }
            let is_start = node.parents.is_empty();
            let parents: Vec<Parent> = node
                .parents
                .into_iter()
                .filter_map(|parent| new_index[parent.node].map(|node| Parent { node, ..parent }))
                .collect();
            if !is_start && parents.is_empty() {
                continue;
            }
            new_index[old] = Some(kept.len());
            kept.push(Reached { parents, ..node });
        }
        self.nodes = kept;
        self.edges = std::mem::take(&mut self.edges)
            .into_iter()
            .filter_map(|(source, relation_type, target)| Some((new_index[source]?, relation_type, new_index[target]?)))
            .collect();
        if self.index.is_some() {
            self.index = Some(self.nodes.iter().enumerate().map(|(at, node)| (node.entity_ref.clone(), at)).collect());
        }
    }

    /// The edges of the node's canonical shortest path, from the start.
    pub fn path(&self, node: usize) -> Vec<StoredRelation> {
        let mut path = Vec::new();
        let mut current = node;
        while let Some(parent) = self.nodes[current].parents.first() {
            path.push(self.edge(current, parent));
            current = parent.node;
        }
        path.reverse();
        path
    }

    /// Up to `limit` shortest paths to the node, each from a start node, in a
    /// stable order.
    pub fn shortest_paths(&self, node: usize, limit: usize) -> Vec<Vec<StoredRelation>> {
        let mut paths = Vec::new();
        let mut suffix = Vec::new();
        self.collect_paths(node, limit, &mut suffix, &mut paths);
        paths
    }

    // Every parent chain ends at a start node (distances strictly decrease), so
    // each leaf of this search is a path: the cost is bounded by limit × depth.
    fn collect_paths(
        &self,
        node: usize,
        limit: usize,
        suffix: &mut Vec<StoredRelation>,
        paths: &mut Vec<Vec<StoredRelation>>,
    ) {
        if paths.len() >= limit {
            return;
        }
        let parents = &self.nodes[node].parents;
        if parents.is_empty() {
            paths.push(suffix.iter().rev().cloned().collect());
            return;
        }
        for parent in parents {
            suffix.push(self.edge(node, parent));
            self.collect_paths(parent.node, limit, suffix, paths);
            suffix.pop();
            if paths.len() >= limit {
                return;
            }
        }
    }

    /// The edges followed between kept nodes (when the request kept them),
    /// once each.
    pub fn edges(&self) -> impl Iterator<Item = StoredRelation> + '_ {
        self.edges.iter().map(|&(source, relation_type, target)| StoredRelation {
            source_ref: self.nodes[source].entity_ref.clone(),
            relation_type,
            target_ref: self.nodes[target].entity_ref.clone(),
        })
    }

    fn add(&mut self, entity_ref: EntityRef, distance: u32, parent: Option<Parent>) -> usize {
        let position = self.nodes.len();
        if let Some(index) = &mut self.index {
            index.insert(entity_ref.clone(), position);
        }
        self.nodes.push(Reached { entity_ref, distance, parents: parent.into_iter().collect() });
        position
    }
}

/// Breadth-first search over the index. Within a hop, edges are taken in the
/// order (from ref, relation type, to ref), so the canonical parent of a node
/// is stable.
fn walk_graph(graph: &Graph, request: &WalkRequest) -> Walk {
    let looks_up = request.target.is_some() || request.keep_edges;
    let mut walk = Walk { complete: true, index: looks_up.then(HashMap::new), ..Walk::default() };
    let allowed = |relation_type: RelationType| request.types.is_empty() || request.types.contains(&relation_type);
    let mut start = request.from.clone();
    start.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    start.dedup();
    // The walk's node for each index node it reached, and the index node of each walk node.
    let mut seen: HashMap<u32, usize> = HashMap::new();
    let mut ids: Vec<Option<u32>> = Vec::new();
    let mut frontier = Vec::new();
    for entity_ref in start {
        let id = graph.id(&entity_ref);
        let node = walk.add(entity_ref, 0, None);
        ids.push(id);
        if let Some(id) = id {
            seen.insert(id, node);
        }
        frontier.push(node);
    }
    let mut depth = 0;
    while !frontier.is_empty() {
        if request.target.as_ref().is_some_and(|target| walk.position(target).is_some()) {
            break;
        }
        let at_limit = depth >= request.max_depth;
        if at_limit && !request.probe_past_depth {
            walk.complete = false;
            break;
        }
        let mut hop: Vec<(usize, RelationType, u32, bool)> = Vec::new();
        for &node in &frontier {
            let Some(id) = ids[node] else { continue };
            if request.direction != Direction::Incoming {
                let edges = graph.outgoing[id as usize].iter().filter(|(kind, _, _)| allowed(*kind));
                hop.extend(edges.map(|&(kind, other, _)| (node, kind, other, true)));
            }
            if request.direction != Direction::Outgoing {
                let edges = graph.incoming[id as usize].iter().filter(|(kind, _, _)| allowed(*kind));
                hop.extend(edges.map(|&(kind, other, _)| (node, kind, other, false)));
            }
        }
        if at_limit {
            // `&=`: a node cap that already cut the walk keeps it incomplete.
            walk.complete &= hop.iter().all(|(_, _, other, _)| seen.contains_key(other));
            break;
        }
        hop.sort_by(|a, b| {
            (walk.nodes[a.0].entity_ref.as_str(), a.1.as_str(), graph.name(a.2).as_str(), !a.3).cmp(&(
                walk.nodes[b.0].entity_ref.as_str(),
                b.1.as_str(),
                graph.name(b.2).as_str(),
                !b.3,
            ))
        });
        depth += 1;
        let mut next = Vec::new();
        for (from, relation_type, other, forward) in hop {
            let parent = Parent { node: from, relation_type, forward };
            let node = match seen.get(&other) {
                None if walk.nodes.len() >= request.max_nodes => {
                    walk.complete = false;
                    continue;
                }
                None => {
                    let node = walk.add(graph.name(other).clone(), depth, Some(parent));
                    ids.push(Some(other));
                    seen.insert(other, node);
                    next.push(node);
                    node
                }
                Some(&node) => {
                    if walk.nodes[node].distance == depth && !walk.nodes[node].parents.contains(&parent) {
                        walk.nodes[node].parents.push(parent);
                    }
                    node
                }
            };
            if request.keep_edges {
                walk.edges.push(if forward { (from, relation_type, node) } else { (node, relation_type, from) });
            }
        }
        frontier = next;
    }
    walk.edges.sort_by_key(|&(source, relation_type, target)| (source, relation_type.as_str(), target));
    walk.edges.dedup();
    walk
}

fn has_closure(filter: &Filter) -> bool {
    match filter {
        Filter::All(filters) | Filter::Any(filters) => filters.iter().any(has_closure),
        Filter::Not(filter) => has_closure(filter),
        Filter::Field { field, .. } => matches!(field, FilterField::OwnedByTree | FilterField::OwnedByMember),
    }
}

fn expand(graph: &Graph, filter: &Filter) -> Filter {
    match filter {
        Filter::All(filters) => Filter::All(filters.iter().map(|filter| expand(graph, filter)).collect()),
        Filter::Any(filters) => Filter::Any(filters.iter().map(|filter| expand(graph, filter)).collect()),
        Filter::Not(filter) => Filter::Not(Box::new(expand(graph, filter))),
        Filter::Field { field: field @ (FilterField::OwnedByTree | FilterField::OwnedByMember), predicate } => {
            let Predicate::In(roots) = predicate else {
                return Filter::Field { field: FilterField::Owner, predicate: predicate.clone() };
            };
            Filter::Field {
                field: FilterField::Owner,
                predicate: Predicate::In(closure_of_values(graph, field, roots)),
            }
        }
        Filter::Field { .. } => filter.clone(),
    }
}

/// [`closure`] over a filter's values, refs that may leave out their kind
/// (the closure's) and namespace. A value that is no ref names no owner: it
/// stays in the list as written, lower-cased, where it matches nothing.
fn closure_of_values(graph: &Graph, field: &FilterField, values: &[String]) -> Vec<String> {
    let default_kind = match field {
        FilterField::OwnedByMember => "User",
        _ => "Group",
    };
    let mut roots = Vec::with_capacity(values.len());
    let mut not_refs = Vec::new();
    for value in values {
        match EntityRef::parse_with_defaults(value, Some(default_kind), catalog_domain::entity_ref::DEFAULT_NAMESPACE) {
            Ok(root) => roots.push(root),
            Err(_) => not_refs.push(value.to_lowercase()),
        }
    }
    closure(graph, field, roots).iter().map(ToString::to_string).chain(not_refs).collect()
}

/// The owners an owner closure stands for: a group and every group under it
/// (OwnedByTree), or a user, its groups and their parents (OwnedByMember).
fn closure(graph: &Graph, field: &FilterField, roots: Vec<EntityRef>) -> Vec<EntityRef> {
    let types = match field {
        FilterField::OwnedByMember => vec![RelationType::MemberOf, RelationType::ChildOf],
        _ => vec![RelationType::ParentOf],
    };
    let request = WalkRequest {
        from: roots,
        types,
        direction: Direction::Outgoing,
        max_depth: u32::MAX,
        max_nodes: usize::MAX,
        ..WalkRequest::default()
    };
    walk_graph(graph, &request).nodes.into_iter().map(|node| node.entity_ref).collect()
}

impl Catalog {
    /// Walks the graph breadth-first from `request.from`. Cycle-safe: each ref
    /// is reached once, at its shortest distance. One statement (the index
    /// catching up with the change log), plus a load of the index on first use.
    #[tracing::instrument(name = "graph.walk", skip_all, fields(from = request.from.len(), max_depth = request.max_depth))]
    pub async fn walk(&self, request: &WalkRequest) -> Result<Walk, StoreError> {
        self.graph.catch_up(&self.db).await?;
        // A walk is CPU and memory in proportion to what it reaches: a few at a
        // time, not one per request in flight (32 concurrent walks of 35,000
        // nodes held 555 MB).
        let _permit = self.graph.walks.acquire().await.expect("the walk semaphore is never closed");
        let graph = self.graph.read();
        Ok(walk_graph(&graph, request))
    }

    /// The filter with every owner closure (OwnedByTree, OwnedByMember)
    /// replaced by the owners it stands for, read from the graph index: the
    /// database then compares `owner_ref` with a list instead of walking the
    /// group tree in a recursive subquery (measured: 110 ms for the root of
    /// 3,000 groups at 100,000 entities, on every count and every page).
    pub(crate) async fn expand_filter(&self, filter: Option<&Filter>) -> Result<Option<Filter>, StoreError> {
        let Some(filter) = filter else { return Ok(None) };
        if !has_closure(filter) {
            return Ok(Some(filter.clone()));
        }
        self.graph.catch_up(&self.db).await?;
        let graph = self.graph.read();
        Ok(Some(expand(&graph, filter)))
    }

    /// The owners an owner closure (`OwnedByTree` or `OwnedByMember`) over
    /// `roots` stands for, from the graph index.
    pub async fn owner_closure(&self, field: &FilterField, roots: &[EntityRef]) -> Result<Vec<EntityRef>, StoreError> {
        self.graph.catch_up(&self.db).await?;
        let graph = self.graph.read();
        Ok(closure(&graph, field, roots.to_vec()))
    }

    /// The owner ref of each of `refs` that states one, from the graph index
    /// (one statement to catch up, whatever the number of refs).
    pub async fn owners_in_graph(&self, refs: &[EntityRef]) -> Result<HashMap<EntityRef, EntityRef>, StoreError> {
        self.graph.catch_up(&self.db).await?;
        let graph = self.graph.read();
        Ok(refs
            .iter()
            .filter_map(|entity_ref| {
                let id = graph.id(entity_ref)?;
                let (_, owner, _) =
                    graph.outgoing[id as usize].iter().find(|(kind, _, _)| *kind == RelationType::OwnedBy)?;
                Some((entity_ref.clone(), graph.name(*owner).clone()))
            })
            .collect())
    }

    /// The owner ref of each of `refs` that is in the catalog (`None` for an
    /// entity without an owner); refs not in the catalog are absent. One statement.
    pub async fn owners_of(&self, refs: &[EntityRef]) -> Result<HashMap<EntityRef, Option<EntityRef>>, StoreError> {
        let asked = by_text(refs);
        let rows = entity_row::Entity::find()
            .select_only()
            .columns([entity_row::Column::EntityRef, entity_row::Column::OwnerRef])
            .filter(bulk::in_set(self.db.get_database_backend(), "entity_ref", &texts(refs)))
            .into_tuple::<(String, Option<String>)>()
            .all(&self.db)
            .await?;
        rows.into_iter()
            .map(|(entity_ref, owner)| {
                Ok((asked_ref(&asked, &entity_ref)?, owner.as_deref().map(stored_ref).transpose()?))
            })
            .collect()
    }

    /// Those of `refs` whose entity matches the filter. One statement.
    pub async fn refs_matching(&self, refs: &[EntityRef], filter: &Filter) -> Result<HashSet<EntityRef>, StoreError> {
        let filter = self.expand_filter(Some(filter)).await?.unwrap_or_else(|| filter.clone());
        let filter = &filter;
        let asked = by_text(refs);
        let rows = entity_row::Entity::find()
            .select_only()
            .column(entity_row::Column::EntityRef)
            .filter(bulk::in_set(self.db.get_database_backend(), "entity_ref", &texts(refs)))
            .filter(condition(self.db.get_database_backend(), Some(filter), None))
            .into_tuple::<String>()
            .all(&self.db)
            .await?;
        rows.iter().map(|entity_ref| asked_ref(&asked, entity_ref)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(name: &str) -> EntityRef {
        EntityRef::new("component", "default", name)
    }

    fn node(name: &str, distance: u32, parents: &[usize]) -> Reached {
        let parents = parents
            .iter()
            .map(|node| Parent { node: *node, relation_type: RelationType::DependsOn, forward: true })
            .collect();
        Reached { entity_ref: component(name), distance, parents }
    }

    /// a → h → b, and a → h → c with also a → v → c: hiding h drops b (only
    /// reached through h) and keeps c through v, with v as its only parent.
    #[test]
    fn hidden_nodes_take_what_is_reached_only_through_them() {
        let mut walk = Walk {
            nodes: vec![
                node("a", 0, &[]),
                node("h", 1, &[0]),
                node("v", 1, &[0]),
                node("b", 2, &[1]),
                node("c", 2, &[1, 2]),
            ],
            complete: true,
            edges: vec![
                (0, RelationType::DependsOn, 1),
                (0, RelationType::DependsOn, 2),
                (1, RelationType::DependsOn, 4),
                (2, RelationType::DependsOn, 4),
            ],
            index: Some(HashMap::new()),
        };
        walk.retain_visible(|node| node.entity_ref.name() != "h");
        let names: Vec<&str> = walk.nodes.iter().map(|node| node.entity_ref.name()).collect();
        assert_eq!(names, ["a", "v", "c"]);
        assert_eq!(walk.nodes[2].parents.len(), 1);
        assert_eq!(walk.nodes[2].parents[0].node, 1, "c hangs off v, renumbered");
        assert_eq!(walk.edges, vec![(0, RelationType::DependsOn, 1), (1, RelationType::DependsOn, 2)]);
        assert_eq!(walk.position(&component("c")), Some(2));
        let path: Vec<EntityRef> = walk.path(2).into_iter().map(|edge| edge.target_ref).collect();
        assert_eq!(path, [component("v"), component("c")]);
    }

    #[test]
    fn a_hidden_start_hides_the_whole_walk() {
        let mut walk = Walk { nodes: vec![node("h", 0, &[]), node("b", 1, &[0])], complete: true, ..Walk::default() };
        walk.retain_visible(|node| node.entity_ref.name() != "h");
        assert!(walk.nodes.is_empty());
    }
}
