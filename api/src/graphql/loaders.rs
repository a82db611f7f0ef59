//! DataLoaders: every relation field resolves through these, so a query costs
//! a number of statements bounded by its depth, not by the entities returned.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use catalog_domain::EntityRef;
use catalog_store::{Store, StoredEntity, StoredRelation};

use super::error::ApiError;
use crate::policy::ReadScope;

/// Entities by canonical ref; those the request's read scope hides are
/// left out, as if they did not exist.
pub struct EntityLoader {
    pub store: Store,
    pub scope: ReadScope,
}

impl Loader<String> for EntityLoader {
    type Value = Arc<StoredEntity>;
    type Error = ApiError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let refs: Vec<EntityRef> = keys.iter().filter_map(|key| EntityRef::parse(key).ok()).collect();
        let found = self.store.entities_by_refs(&refs).await?;
        Ok(found
            .into_iter()
            .filter(|(_, stored)| self.scope.allows(stored))
            .map(|(key, stored)| (key, Arc::new(stored)))
            .collect())
    }
}

/// Every edge leaving an entity, by the entity's canonical ref.
pub struct EdgesLoader(pub Store);

impl Loader<String> for EdgesLoader {
    type Value = Arc<Vec<StoredRelation>>;
    type Error = ApiError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let edges = self.0.relations_from(keys, None).await?;
        let mut by_source: HashMap<String, Vec<StoredRelation>> =
            keys.iter().map(|key| (key.clone(), Vec::new())).collect();
        for edge in edges {
            by_source.entry(edge.source_ref.clone()).or_default().push(edge);
        }
        Ok(by_source.into_iter().map(|(key, edges)| (key, Arc::new(edges))).collect())
    }
}
