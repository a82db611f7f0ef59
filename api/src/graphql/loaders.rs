//! DataLoaders: every relation field resolves through these, so a query costs
//! a number of statements bounded by its depth, not by the entities returned.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use catalog_domain::{EntityRef, RelationType};
use catalog_store::{Catalog, Related, ScoreStore, StoredEntity, StoredRelation, StoredScore, TargetBodies};

use super::error::ApiError;
use crate::auth::policy::SharedScope;
use crate::error_code::Limit;

/// The most walks one request may run. Complexity prices walks selected on
/// object types, but async-graphql does not price fields selected through an
/// interface (`entities { nodes { dependents } }`), so this budget is what
/// bounds a request's walks whatever the selection path.
pub const MAX_WALKS_PER_REQUEST: u32 = 20;

/// What a request (or a subscription event) may still spend on work whose
/// size its selection does not show: graph walks, and entities and edges
/// loaded through relation fields (`graphql.max_loaded_entities`). Complexity
/// cannot price those lists (their length is the data's, and fields
/// selected through an interface go unpriced), so this is what bounds a
/// selection that fans out over hubs; the benchmarks' fan-out query loads
/// about a hundred. One per request, added with the DataLoaders.
pub struct RequestBudget {
    walks: AtomicU32,
    entities: AtomicUsize,
    max_entities: usize,
    /// Live PagerDuty reads (on-call, incidents): each may cost a request
    /// against the account's rate limit, which ingestion shares.
    pagerduty_lookups: AtomicU32,
}

/// The most live PagerDuty fields (on-call, incidents) one request may resolve.
pub const MAX_PAGERDUTY_LOOKUPS_PER_REQUEST: u32 = 50;

impl RequestBudget {
    pub fn new(max_entities: usize) -> Self {
        Self {
            walks: AtomicU32::new(0),
            entities: AtomicUsize::new(0),
            max_entities,
            pagerduty_lookups: AtomicU32::new(0),
        }
    }

    /// Starts a new allowance: each subscription event is priced like a request.
    pub fn reset(&self) {
        self.walks.store(0, Ordering::Relaxed);
        self.entities.store(0, Ordering::Relaxed);
        self.pagerduty_lookups.store(0, Ordering::Relaxed);
    }

    pub(crate) fn spend_pagerduty_lookup(&self) -> Result<(), ApiError> {
        let spent = self.pagerduty_lookups.fetch_add(1, Ordering::Relaxed);
        if spent >= MAX_PAGERDUTY_LOOKUPS_PER_REQUEST {
            return Err(ApiError::LimitExceeded {
                limit: Limit::PagerDutyLookups,
                message: format!(
                    "one request may read on-call and incidents of at most {MAX_PAGERDUTY_LOOKUPS_PER_REQUEST} \
                     PagerDuty services"
                ),
            });
        }
        Ok(())
    }

    pub(crate) fn spend_walk(&self) -> Result<(), ApiError> {
        let spent = self.walks.fetch_add(1, Ordering::Relaxed);
        if spent >= MAX_WALKS_PER_REQUEST {
            return Err(ApiError::LimitExceeded {
                limit: Limit::Walks,
                message: format!("one request may run at most {MAX_WALKS_PER_REQUEST} graph walks"),
            });
        }
        Ok(())
    }

    pub(crate) fn spend_loaded(&self, n_items: usize) -> Result<(), ApiError> {
        let spent = self.entities.fetch_add(n_items, Ordering::Relaxed);
        if spent + n_items > self.max_entities {
            return Err(ApiError::LimitExceeded {
                limit: Limit::LoadedEntities,
                message: format!(
                    "one request may load at most {} entities and relation edges through relation fields: \
                     select fewer nested lists, or page with traverse",
                    self.max_entities
                ),
            });
        }
        Ok(())
    }
}

/// How a request holds each loader (see [`super::with_loaders`]).
pub type RequestLoader<T> = DataLoader<T, HashMapCache>;

/// Entities by canonical ref; those the request's read scope hides are
/// left out, as if they did not exist.
pub struct EntityLoader {
    pub catalog: Catalog,
    pub scope: SharedScope,
    pub budget: Arc<RequestBudget>,
}

impl Loader<EntityRef> for EntityLoader {
    type Value = Arc<StoredEntity>;
    type Error = ApiError;

    #[tracing::instrument(name = "loader.entities", skip_all, fields(keys = keys.len()))]
    async fn load(&self, keys: &[EntityRef]) -> Result<HashMap<EntityRef, Self::Value>, Self::Error> {
        self.budget.spend_loaded(keys.len())?;
        Ok(self.visible(self.catalog.entities_by_refs(keys).await?))
    }
}

impl EntityLoader {
    /// The entities the request's read scope shows, as the loader returns them.
    pub fn visible(&self, found: HashMap<EntityRef, StoredEntity>) -> HashMap<EntityRef, Arc<StoredEntity>> {
        let scope = self.scope.current();
        found
            .into_iter()
            .filter(|(_, stored)| scope.allows(stored))
            .map(|(key, stored)| (key, Arc::new(stored)))
            .collect()
    }
}

/// An entity's ref and one relation type leaving it.
pub type RelationKey = (EntityRef, RelationType);

/// The entities one relation type leads to from an entity, by (the entity's
/// ref, relation type), in target-ref order: edges and targets
/// in one statement, where [`EdgesLoader`] then [`EntityLoader`] would take
/// two round trips (and two loader delays) for `owner`, `system` and the
/// other relation fields. Targets the read scope hides are left out;
/// dangling edges have no target to return.
pub struct RelatedLoader {
    pub catalog: Catalog,
    pub scope: SharedScope,
    pub budget: Arc<RequestBudget>,
    /// Whether a relation field of this request selected a field of its
    /// targets' bodies: from then on targets come with their bodies (see
    /// [`RelatedLoader::target_bodies`]).
    pub bodies_wanted: AtomicBool,
}

/// The targets of one relation key, as [`RelatedLoader`] answers them.
pub type RelatedTargets = Arc<Vec<Arc<StoredEntity>>>;

impl Loader<RelationKey> for RelatedLoader {
    type Value = RelatedTargets;
    type Error = ApiError;

    #[tracing::instrument(name = "loader.related", skip_all, fields(keys = keys.len()))]
    async fn load(&self, keys: &[RelationKey]) -> Result<HashMap<RelationKey, Self::Value>, Self::Error> {
        let mut sources: Vec<EntityRef> = keys.iter().map(|(source, _)| source.clone()).collect();
        sources.sort();
        sources.dedup();
        let mut types: Vec<RelationType> = keys.iter().map(|(_, relation_type)| *relation_type).collect();
        types.sort();
        types.dedup();
        let related = self.catalog.related_entities(&sources, &types, self.target_bodies()).await?;
        self.answer(keys, related)
    }
}

impl RelatedLoader {
    /// Whether targets come with their bodies: when a relation field of
    /// the request selected a field of its targets' bodies (the fields of
    /// one batch mark it before the batch loads), and under a restricted
    /// read scope, which matches each target's body to decide whether it
    /// is visible. Otherwise a body is read only if a field of it is asked
    /// for after all (`graphql::context::body`), one statement later.
    pub fn target_bodies(&self) -> TargetBodies {
        if self.bodies_wanted.load(Ordering::Relaxed) || self.scope.current().is_restricted() {
            TargetBodies::Read
        } else {
            TargetBodies::Skip
        }
    }

    /// Marks that targets' bodies are wanted (see [`RelatedLoader::target_bodies`]).
    pub fn want_bodies(&self) {
        self.bodies_wanted.store(true, Ordering::Relaxed);
    }

    /// The loader's answer for `keys` from what the store found for them:
    /// targets the read scope hides left out, the entities loaded spent.
    pub fn answer(
        &self,
        keys: &[RelationKey],
        related: Related,
    ) -> Result<HashMap<RelationKey, RelatedTargets>, ApiError> {
        let mut found: HashMap<RelationKey, Vec<Arc<StoredEntity>>> =
            keys.iter().map(|key| (key.clone(), Vec::new())).collect();
        let scope = self.scope.current();
        let visible: HashMap<i64, Arc<StoredEntity>> = related
            .targets
            .into_iter()
            .filter(|(_, stored)| scope.allows(stored))
            .map(|(id, stored)| (id, Arc::new(stored)))
            .collect();
        // The budget counts entities loaded, as the EntityLoader does: an
        // owner fifty components share is one, not fifty.
        let mut loaded = HashSet::new();
        // Sources times types may pair a source with a type nobody asked
        // for it: those edges are dropped.
        for (source, relation_type, id) in related.edges {
            if let Some(targets) = found.get_mut(&(source, relation_type)) {
                loaded.insert(id);
                if let Some(stored) = visible.get(&id) {
                    targets.push(Arc::clone(stored));
                }
            }
        }
        self.budget.spend_loaded(loaded.len())?;
        Ok(found.into_iter().map(|(key, targets)| (key, Arc::new(targets))).collect())
    }
}

/// Every edge leaving an entity, by the entity's ref.
pub struct EdgesLoader(pub Catalog);

impl Loader<EntityRef> for EdgesLoader {
    type Value = Arc<Vec<StoredRelation>>;
    type Error = ApiError;

    #[tracing::instrument(name = "loader.edges", skip_all, fields(keys = keys.len()))]
    async fn load(&self, keys: &[EntityRef]) -> Result<HashMap<EntityRef, Self::Value>, Self::Error> {
        let edges = self.0.relations_from(keys, None).await?;
        let mut by_source: HashMap<EntityRef, Vec<StoredRelation>> =
            keys.iter().map(|key| (key.clone(), Vec::new())).collect();
        for edge in edges {
            by_source.entry(edge.source_ref.clone()).or_default().push(edge);
        }
        Ok(by_source.into_iter().map(|(key, edges)| (key, Arc::new(edges))).collect())
    }
}

/// An entity's current scores under every scorecard, by the entity's ref.
pub struct ScoresLoader(pub ScoreStore);

impl Loader<EntityRef> for ScoresLoader {
    type Value = Arc<Vec<StoredScore>>;
    type Error = ApiError;

    #[tracing::instrument(name = "loader.scores", skip_all, fields(keys = keys.len()))]
    async fn load(&self, keys: &[EntityRef]) -> Result<HashMap<EntityRef, Self::Value>, Self::Error> {
        let mut by_entity: HashMap<EntityRef, Vec<StoredScore>> =
            keys.iter().map(|key| (key.clone(), Vec::new())).collect();
        for score in self.0.scores_for(keys).await? {
            by_entity.entry(score.entity_ref.clone()).or_default().push(score);
        }
        Ok(by_entity.into_iter().map(|(key, scores)| (key, Arc::new(scores))).collect())
    }
}
