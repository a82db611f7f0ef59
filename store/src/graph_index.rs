//! The catalog graph in memory: every relation edge as adjacency lists over
//! interned refs, loaded once from the relations table and kept current from
//! the change log. Walks run here, not in SQL: a hop over a frontier of
//! thousands of refs is a scan of the relations table in the database
//! (measured at 100,000 entities: ~100 ms a hop on PostgreSQL, over a second
//! for the dependents of a hub), and microseconds here.
//!
//! The index follows the change log (`follower.rs`): before each walk it
//! applies what was committed since, also by other replicas, replacing for
//! each changed entity exactly the edges that entity states.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};

use catalog_domain::{EntityRef, RelationType, derive_relations};
use parking_lot::RwLockReadGuard;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, QueryResult, Statement, Value as SeaValue,
};

use crate::error::StoreError;
use crate::follower::{Followed, Follower, changed_entity};
use crate::record::{Change, ChangeType, stored_ref};

/// Relation rows read per statement while loading.
const LOAD_BATCH: i64 = 50_000;

/// One node's edges: relation type, the node at the other end, and how many
/// entities state the edge (a membership is stated by the user and the group).
type Adjacency = Vec<(RelationType, u32, u32)>;

#[derive(Default)]
pub(crate) struct Graph {
    refs: Vec<EntityRef>,
    ids: HashMap<Key, u32>,
    /// Edges by source node.
    pub(crate) outgoing: Vec<Adjacency>,
    /// Edges by target node.
    pub(crate) incoming: Vec<Adjacency>,
    /// The edges each entity's spec states, by the entity's node, so that a
    /// new version replaces exactly its own edges.
    by_origin: HashMap<u32, Vec<(u32, RelationType, u32)>>,
}

/// A node's ref as the key of its id, found by its canonical text: loading
/// reads refs as text, and a ref met again (most are) is found without
/// building one. Its text is shared with `refs`.
struct Key(EntityRef);

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Key {}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl Graph {
    pub(crate) fn id(&self, entity_ref: &EntityRef) -> Option<u32> {
        self.ids.get(entity_ref.as_str()).copied()
    }

    pub(crate) fn name(&self, id: u32) -> &EntityRef {
        &self.refs[id as usize]
    }

    fn intern(&mut self, entity_ref: &EntityRef) -> u32 {
        match self.ids.get(entity_ref.as_str()) {
            Some(id) => *id,
            None => self.insert(entity_ref.clone()),
        }
    }

    /// [`Graph::intern`] for a ref column's text.
    fn intern_stored(&mut self, text: &str) -> Result<u32, StoreError> {
        match self.ids.get(text) {
            Some(id) => Ok(*id),
            None => Ok(self.insert(stored_ref(text)?)),
        }
    }

    /// Interns the origin, source and target of one relation row.
    fn intern_row(&mut self, row: &QueryResult) -> Result<(u32, u32, u32), StoreError> {
        Ok((
            self.intern_stored(&row.try_get::<String>("", "origin")?)?,
            self.intern_stored(&row.try_get::<String>("", "source_ref")?)?,
            self.intern_stored(&row.try_get::<String>("", "target_ref")?)?,
        ))
    }

    fn insert(&mut self, entity_ref: EntityRef) -> u32 {
        let id = u32::try_from(self.refs.len()).expect("fewer than 2^32 refs");
        self.ids.insert(Key(entity_ref.clone()), id);
        self.refs.push(entity_ref);
        self.outgoing.push(Vec::new());
        self.incoming.push(Vec::new());
        id
    }

    fn add(&mut self, source: u32, relation_type: RelationType, target: u32) {
        bump(&mut self.outgoing[source as usize], relation_type, target);
        bump(&mut self.incoming[target as usize], relation_type, source);
    }

    fn remove(&mut self, source: u32, relation_type: RelationType, target: u32) {
        drop_one(&mut self.outgoing[source as usize], relation_type, target);
        drop_one(&mut self.incoming[target as usize], relation_type, source);
    }

    /// Replaces the edges `origin` states with `edges`.
    fn restate(&mut self, origin: u32, edges: Vec<(u32, RelationType, u32)>) {
        for (source, relation_type, target) in self.by_origin.remove(&origin).unwrap_or_default() {
            self.remove(source, relation_type, target);
        }
        for &(source, relation_type, target) in &edges {
            self.add(source, relation_type, target);
        }
        if !edges.is_empty() {
            self.by_origin.insert(origin, edges);
        }
    }

    fn restate_from(&mut self, change: &Change) {
        let origin = self.intern(&change.entity_ref);
        let entity = match change.change_type {
            ChangeType::Removed => None,
            ChangeType::Added | ChangeType::Updated => changed_entity(change),
        };
        let edges = entity
            .map(|entity| {
                derive_relations(&entity)
                    .into_iter()
                    .map(|edge| {
                        let source = self.intern(&edge.source);
                        let target = self.intern(&edge.target);
                        (source, edge.relation_type, target)
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.restate(origin, edges);
    }
}

fn bump(list: &mut Adjacency, relation_type: RelationType, other: u32) {
    match list.iter_mut().find(|(kind, node, _)| *kind == relation_type && *node == other) {
        Some((_, _, count)) => *count += 1,
        None => list.push((relation_type, other, 1)),
    }
}

fn drop_one(list: &mut Adjacency, relation_type: RelationType, other: u32) {
    if let Some(position) = list.iter().position(|(kind, node, _)| *kind == relation_type && *node == other) {
        if list[position].2 > 1 {
            list[position].2 -= 1;
        } else {
            list.swap_remove(position);
        }
    }
}

/// Walks that may run at once per process.
const CONCURRENT_WALKS: usize = 2;

/// The index a store shares between its clones.
#[derive(Debug)]
pub(crate) struct GraphIndex {
    graph: Follower<Graph>,
    pub(crate) walks: tokio::sync::Semaphore,
}

impl Default for GraphIndex {
    fn default() -> Self {
        Self { graph: Follower::default(), walks: tokio::sync::Semaphore::new(CONCURRENT_WALKS) }
    }
}

impl GraphIndex {
    /// Brings the graph up to the newest committed change.
    pub(crate) async fn catch_up(&self, db: &DatabaseConnection) -> Result<(), StoreError> {
        self.graph.catch_up(db, &()).await
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Graph> {
        self.graph.read()
    }
}

impl Followed for Graph {
    /// The graph is always whole.
    type Need = ();
    type Lacking = Infallible;
    type Part = Infallible;

    /// Reads every relation with the entity that states it.
    async fn load(txn: &DatabaseTransaction, _: &()) -> Result<Self, StoreError> {
        let backend = txn.get_database_backend();
        let mut graph = Graph::default();
        let mut origins: HashMap<u32, Vec<(u32, RelationType, u32)>> = HashMap::new();
        let mut after: i64 = 0;
        let placeholder = |n: usize| if backend == DbBackend::Postgres { format!("${n}") } else { "?".to_owned() };
        loop {
            let sql = format!(
                "SELECT r.id, e.entity_ref AS origin, r.source_ref, r.relation_type, r.target_ref \
                 FROM relations r JOIN entities e ON e.id = r.origin_id \
                 WHERE r.id > {} ORDER BY r.id LIMIT {}",
                placeholder(1),
                placeholder(2)
            );
            let rows = txn
                .query_all_raw(Statement::from_sql_and_values(
                    backend,
                    sql,
                    [SeaValue::from(after), SeaValue::from(LOAD_BATCH)],
                ))
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.try_get::<i64>("", "id")?;
            for row in &rows {
                let Ok(relation_type) = row.try_get::<String>("", "relation_type")?.parse::<RelationType>() else {
                    continue;
                };
                // A row this store could not have written is skipped, as a
                // relation type this binary does not know is.
                let (origin, source, target) = match graph.intern_row(row) {
                    Ok(nodes) => nodes,
                    Err(error @ StoreError::Corrupt { .. }) => {
                        tracing::warn!(%error, "relation row skipped");
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                graph.add(source, relation_type, target);
                origins.entry(origin).or_default().push((source, relation_type, target));
            }
        }
        graph.by_origin = origins;
        Ok(graph)
    }

    fn lacking(&self, _: &()) -> Option<Infallible> {
        None
    }

    async fn read_lacking(_: &DatabaseTransaction, lacking: Infallible) -> Result<Infallible, StoreError> {
        match lacking {}
    }

    fn add(&mut self, part: Infallible) {
        match part {}
    }

    /// Replaces the edges the changed entity states: a body that is not an
    /// entity states none.
    fn apply(&mut self, change: &Change) -> bool {
        self.restate_from(change);
        true
    }
}
