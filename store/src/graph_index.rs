//! The catalog graph in memory: every relation edge as adjacency lists over
//! interned refs, loaded once from the relations table and kept current from
//! the change log. Walks run here, not in SQL: a hop over a frontier of
//! thousands of refs is a scan of the relations table in the database
//! (measured at 100,000 entities: ~100 ms a hop on PostgreSQL, over a second
//! for the dependents of a hub), and microseconds here.
//!
//! Before each walk the index reads the change log after its cursor (one
//! statement, usually empty), so a walk sees every committed change, also
//! those other replicas wrote.

use std::collections::HashMap;
use std::sync::RwLock;

use catalog_domain::{Entity, RelationType, derive_relations};
use sea_orm::{ConnectionTrait, DbBackend, IsolationLevel, Statement, TransactionTrait, Value as SeaValue};

use crate::error::StoreError;
use crate::handles::Catalog;
use crate::record::{Change, ChangeType};

/// Relation rows read per statement while loading.
const LOAD_BATCH: i64 = 50_000;
/// Change-log rows read per statement while catching up.
const CATCH_UP_BATCH: u64 = 1_000;
/// An index that has not caught up for this long reloads instead: the change
/// log it would read may have been purged since (retention is in days).
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3_600);
/// Past this many unapplied changes, reloading from the relations table is
/// cheaper than replaying bodies (a bulk ingestion).
const RELOAD_AFTER_CHANGES: usize = 20_000;

/// One node's edges: relation type, the node at the other end, and how many
/// entities state the edge (a membership is stated by the user and the group).
type Adjacency = Vec<(RelationType, u32, u32)>;

#[derive(Default)]
pub(crate) struct Graph {
    refs: Vec<String>,
    ids: HashMap<String, u32>,
    /// Edges by source node.
    pub(crate) outgoing: Vec<Adjacency>,
    /// Edges by target node.
    pub(crate) incoming: Vec<Adjacency>,
    /// The edges each entity's spec states, by the entity's node, so that a
    /// new version replaces exactly its own edges.
    by_origin: HashMap<u32, Vec<(u32, RelationType, u32)>>,
    /// The last change-log sequence applied.
    cursor: i64,
    loaded: bool,
    caught_up_at: Option<std::time::Instant>,
}

impl Graph {
    pub(crate) fn id(&self, entity_ref: &str) -> Option<u32> {
        self.ids.get(entity_ref).copied()
    }

    pub(crate) fn name(&self, id: u32) -> &str {
        &self.refs[id as usize]
    }

    fn intern(&mut self, entity_ref: &str) -> u32 {
        if let Some(id) = self.ids.get(entity_ref) {
            return *id;
        }
        let id = u32::try_from(self.refs.len()).expect("fewer than 2^32 refs");
        self.refs.push(entity_ref.to_owned());
        self.ids.insert(entity_ref.to_owned(), id);
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

    fn apply(&mut self, change: &Change) {
        let origin = self.intern(&change.entity_ref);
        let entity = match change.change_type {
            ChangeType::Removed => None,
            ChangeType::Added | ChangeType::Updated => {
                change.entity.clone().and_then(|body| serde_json::from_value::<Entity>(body).ok())
            }
        };
        let edges = entity
            .map(|entity| {
                derive_relations(&entity)
                    .into_iter()
                    .map(|edge| {
                        let source = self.intern(&edge.source.to_string());
                        let target = self.intern(&edge.target.to_string());
                        (source, edge.relation_type, target)
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.restate(origin, edges);
        self.cursor = self.cursor.max(change.sequence);
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
pub(crate) struct GraphIndex {
    pub(crate) graph: RwLock<Graph>,
    /// Held while loading or catching up, so concurrent walks do it once.
    updating: tokio::sync::Mutex<()>,
    pub(crate) walks: tokio::sync::Semaphore,
}

impl Default for GraphIndex {
    fn default() -> Self {
        Self {
            graph: RwLock::default(),
            updating: tokio::sync::Mutex::default(),
            walks: tokio::sync::Semaphore::new(CONCURRENT_WALKS),
        }
    }
}

impl std::fmt::Debug for GraphIndex {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("GraphIndex")
    }
}

impl GraphIndex {
    /// Brings the index up to the newest committed change.
    pub(crate) async fn catch_up(&self, store: &Catalog) -> Result<(), StoreError> {
        let _updating = self.updating.lock().await;
        let (loaded, cursor, fresh) = {
            let graph = self.graph.read().expect("the graph lock is never poisoned");
            let fresh = graph.caught_up_at.is_some_and(|at| at.elapsed() < STALE_AFTER);
            (graph.loaded, graph.cursor, fresh)
        };
        if !loaded || !fresh {
            return self.load(store).await;
        }
        let mut pending: Vec<Change> = Vec::new();
        let mut after = cursor;
        loop {
            let batch = crate::changes::changes_after(&store.db, after, CATCH_UP_BATCH).await?;
            let Some(last) = batch.last() else { break };
            after = last.sequence;
            pending.extend(batch);
            if pending.len() > RELOAD_AFTER_CHANGES {
                return self.load(store).await;
            }
        }
        let mut graph = self.graph.write().expect("the graph lock is never poisoned");
        for change in &pending {
            graph.apply(change);
        }
        graph.caught_up_at = Some(std::time::Instant::now());
        Ok(())
    }

    /// Reads every relation with the entity that states it, and the newest
    /// sequence, from one consistent snapshot of the database.
    async fn load(&self, store: &Catalog) -> Result<(), StoreError> {
        let backend = store.db.get_database_backend();
        let isolation = (backend == DbBackend::Postgres).then_some(IsolationLevel::RepeatableRead);
        let txn = store.db.begin_with_config(isolation, None).await?;
        let cursor = crate::changes::newest_sequence(&txn).await?;
        let mut graph =
            Graph { cursor, loaded: true, caught_up_at: Some(std::time::Instant::now()), ..Graph::default() };
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
                let origin = graph.intern(&row.try_get::<String>("", "origin")?);
                let source = graph.intern(&row.try_get::<String>("", "source_ref")?);
                let target = graph.intern(&row.try_get::<String>("", "target_ref")?);
                graph.add(source, relation_type, target);
                origins.entry(origin).or_default().push((source, relation_type, target));
            }
        }
        txn.commit().await?;
        graph.by_origin = origins;
        *self.graph.write().expect("the graph lock is never poisoned") = graph;
        Ok(())
    }
}
