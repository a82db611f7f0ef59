//! Walks of the catalog graph: breadth-first over the relations table, one
//! statement per hop whatever the number of nodes, so a walk of depth d costs
//! at most d + 1 statements. The walk keeps, for every node it reaches, the
//! edges that reach it from the previous hop, which gives one shortest path
//! per node, every shortest path between two nodes, and the edges of a drawing.

use std::collections::{HashMap, HashSet};

use catalog_domain::RelationType;
use sea_orm::sea_query::{Condition, Expr, SimpleExpr};
use sea_orm::{DbBackend, EntityTrait, QueryFilter, QuerySelect, Value as SeaValue};

use crate::connection::Store;
use crate::error::StoreError;
use crate::models::{entity_row, relation_row};
use crate::query::{Filter, condition};
use crate::record::StoredRelation;

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
#[derive(Clone, Debug)]
pub struct WalkRequest {
    /// Canonical refs to start from (distance 0).
    pub from: Vec<String>,
    /// Relation types to follow; empty follows every type.
    pub types: Vec<RelationType>,
    pub direction: Direction,
    pub max_depth: u32,
    /// The most nodes a walk may reach, start nodes included.
    pub max_nodes: usize,
    /// Stop after the hop that reaches this ref (for shortest paths).
    pub target: Option<String>,
    /// When the depth limit stops the walk, spend one more statement to learn
    /// whether it left nodes out (for `complete`).
    pub probe_past_depth: bool,
}

/// One node a walk reached.
#[derive(Clone, Debug)]
pub struct Reached {
    pub entity_ref: String,
    /// Hops from the nearest start node.
    pub distance: u32,
    /// The edges from nodes one hop nearer the start that reach this node, as
    /// (index of that node, edge as stored). The first lies on the node's
    /// canonical shortest path. Empty for start nodes.
    pub parents: Vec<(usize, StoredRelation)>,
}

/// The outcome of a walk: nodes ordered by distance, then by ref.
#[derive(Clone, Debug, Default)]
pub struct Walk {
    pub nodes: Vec<Reached>,
    /// Every edge the walk followed, once each, between nodes it kept.
    pub edges: Vec<StoredRelation>,
    /// Whether the walk reached everything within its relation types: false when
    /// the node cap cut it short, or (when probed) the depth limit left nodes out.
    pub complete: bool,
    index: HashMap<String, usize>,
}

impl Walk {
    /// The index of a ref among the nodes.
    pub fn position(&self, entity_ref: &str) -> Option<usize> {
        self.index.get(entity_ref).copied()
    }

    /// The edges of the node's canonical shortest path, from the start.
    pub fn path(&self, node: usize) -> Vec<StoredRelation> {
        let mut path = Vec::new();
        let mut current = node;
        while let Some((parent, edge)) = self.nodes[current].parents.first() {
            path.push(edge.clone());
            current = *parent;
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
        for (parent, edge) in parents {
            suffix.push(edge.clone());
            self.collect_paths(*parent, limit, suffix, paths);
            suffix.pop();
            if paths.len() >= limit {
                return;
            }
        }
    }

    fn add(&mut self, entity_ref: String, distance: u32, parent: Option<(usize, StoredRelation)>) -> usize {
        let position = self.nodes.len();
        self.index.insert(entity_ref.clone(), position);
        self.nodes.push(Reached { entity_ref, distance, parents: parent.into_iter().collect() });
        position
    }
}

/// `column` is one of `values`, with one parameter whatever their number: an
/// array on PostgreSQL, a JSON array read by `json_each` on SQLite. Statements
/// stay one per hop, and neither backend plans thousands of parameters.
pub(crate) fn in_set(backend: DbBackend, column: &str, values: &[String]) -> SimpleExpr {
    let (select, parameter) = set_select(backend, values);
    if backend == DbBackend::Postgres {
        // An index scan per array element, where IN (SELECT UNNEST ...) may hash.
        return Expr::cust_with_values(format!("{column} = ANY($1)"), [parameter]);
    }
    Expr::cust_with_values(format!("{column} IN ({select})"), [parameter])
}

/// A one-column SELECT of `values` (column `value`) and its one parameter.
/// Placeholders differ: sea-query reads `$1` on PostgreSQL and `?` on SQLite.
pub(crate) fn set_select(backend: DbBackend, values: &[String]) -> (&'static str, SeaValue) {
    if backend == DbBackend::Postgres {
        ("SELECT UNNEST($1::text[]) AS value", SeaValue::from(values.to_vec()))
    } else {
        let json = serde_json::to_string(values).unwrap_or_else(|_| "[]".into());
        ("SELECT value FROM json_each(?)", SeaValue::from(json))
    }
}

impl Store {
    /// Walks the graph breadth-first from `request.from`. Cycle-safe: each ref
    /// is reached once, at its shortest distance.
    pub async fn walk(&self, request: &WalkRequest) -> Result<Walk, StoreError> {
        let mut walk = Walk { complete: true, ..Walk::default() };
        let mut start = request.from.clone();
        start.sort();
        start.dedup();
        let mut frontier: Vec<usize> = start.into_iter().map(|entity_ref| walk.add(entity_ref, 0, None)).collect();
        let mut depth = 0;
        while !frontier.is_empty() {
            if request.target.as_deref().is_some_and(|target| walk.index.contains_key(target)) {
                break;
            }
            let at_limit = depth >= request.max_depth;
            if at_limit && !request.probe_past_depth {
                walk.complete = false;
                break;
            }
            let refs: Vec<String> = frontier.iter().map(|node| walk.nodes[*node].entity_ref.clone()).collect();
            let hop = self.hop(&refs, &request.types, request.direction).await?;
            if at_limit {
                walk.complete = hop.iter().all(|(_, _, to)| walk.index.contains_key(to));
                break;
            }
            depth += 1;
            let mut next = Vec::new();
            for (from, edge, to) in hop {
                let from = walk.index[&from];
                match walk.index.get(&to) {
                    None if walk.nodes.len() >= request.max_nodes => {
                        walk.complete = false;
                        continue;
                    }
                    None => next.push(walk.add(to, depth, Some((from, edge.clone())))),
                    Some(&node) if walk.nodes[node].distance == depth => {
                        walk.nodes[node].parents.push((from, edge.clone()));
                    }
                    Some(_) => {}
                }
                walk.edges.push(edge);
            }
            frontier = next;
        }
        Ok(walk)
    }

    /// The edges one hop from `refs`, as (the ref it leaves from, the stored
    /// edge, the ref it leads to), in a stable order, each once.
    async fn hop(
        &self,
        refs: &[String],
        types: &[RelationType],
        direction: Direction,
    ) -> Result<Vec<(String, StoredRelation, String)>, StoreError> {
        let backend = self.db.get_database_backend();
        let ends = match direction {
            Direction::Outgoing => Condition::all().add(in_set(backend, "source_ref", refs)),
            Direction::Incoming => Condition::all().add(in_set(backend, "target_ref", refs)),
            Direction::Both => {
                Condition::any().add(in_set(backend, "source_ref", refs)).add(in_set(backend, "target_ref", refs))
            }
        };
        let mut query = relation_row::Entity::find()
            .select_only()
            .columns([
                relation_row::Column::SourceRef,
                relation_row::Column::RelationType,
                relation_row::Column::TargetRef,
            ])
            .distinct()
            .filter(ends);
        if !types.is_empty() {
            let types: Vec<String> = types.iter().map(|relation_type| relation_type.as_str().to_owned()).collect();
            query = query.filter(in_set(backend, "relation_type", &types));
        }
        let rows = query.into_tuple::<(String, String, String)>().all(&self.db).await?;
        let frontier: HashSet<&str> = refs.iter().map(String::as_str).collect();
        let mut hop = Vec::with_capacity(rows.len());
        for (source_ref, relation_type, target_ref) in rows {
            let Ok(relation_type) = relation_type.parse::<RelationType>() else { continue };
            let edge = StoredRelation { source_ref, relation_type, target_ref };
            if direction != Direction::Incoming && frontier.contains(edge.source_ref.as_str()) {
                hop.push((edge.source_ref.clone(), edge.clone(), edge.target_ref.clone()));
            }
            if direction != Direction::Outgoing && frontier.contains(edge.target_ref.as_str()) {
                hop.push((edge.target_ref.clone(), edge.clone(), edge.source_ref.clone()));
            }
        }
        hop.sort_by(|a, b| (&a.0, a.1.relation_type.as_str(), &a.2).cmp(&(&b.0, b.1.relation_type.as_str(), &b.2)));
        Ok(hop)
    }

    /// The owner ref of each of `refs` that is in the catalog (`None` for an
    /// entity without an owner); refs not in the catalog are absent. One statement.
    pub async fn owners_of(&self, refs: &[String]) -> Result<HashMap<String, Option<String>>, StoreError> {
        let rows = entity_row::Entity::find()
            .select_only()
            .columns([entity_row::Column::EntityRef, entity_row::Column::OwnerRef])
            .filter(in_set(self.db.get_database_backend(), "entity_ref", refs))
            .into_tuple::<(String, Option<String>)>()
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// Those of `refs` whose entity matches the filter. One statement.
    pub async fn refs_matching(&self, refs: &[String], filter: &Filter) -> Result<HashSet<String>, StoreError> {
        let rows = entity_row::Entity::find()
            .select_only()
            .column(entity_row::Column::EntityRef)
            .filter(in_set(self.db.get_database_backend(), "entity_ref", refs))
            .filter(condition(self.db.get_database_backend(), Some(filter), None))
            .into_tuple::<String>()
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().collect())
    }
}
