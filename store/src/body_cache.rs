//! Decoded entity bodies kept in memory, so that an entity read again is
//! neither printed from `jsonb` and sent by the database nor decoded again.
//!
//! An entry is one version of one entity: it holds the row id and etag the
//! body was read with, and a read uses it only when its row has the same
//! two (the etag changes with every change of the body; a removed and
//! re-added entity gets a new row). Nothing follows the change log: a stale
//! entry is never served, only replaced by the next read of its entity, and
//! the least recently used entries go first once the cache is full.

use std::num::NonZeroUsize;
use std::sync::Arc;

use catalog_domain::Entity;
use lru::LruCache;
use parking_lot::Mutex;

/// Entries a store keeps unless configured otherwise: the bodies of a
/// catalog of this size stay decoded (about 60 MB at the synthetic catalog's
/// body size).
pub const DEFAULT_ENTRIES: usize = 20_000;

struct Entry {
    id: i64,
    etag: Box<str>,
    entity: Arc<Entity>,
}

/// The cache a store's handles share; without entries (capacity 0) it
/// holds nothing and every read decodes.
pub(crate) struct BodyCache {
    entries: Option<Mutex<LruCache<Box<str>, Entry>>>,
}

impl std::fmt::Debug for BodyCache {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.entries.as_ref().map_or(0, |entries| entries.lock().len());
        formatter.debug_struct("BodyCache").field("len", &len).finish()
    }
}

impl BodyCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { entries: NonZeroUsize::new(capacity).map(|capacity| Mutex::new(LruCache::new(capacity))) }
    }

    /// The body of the version `id`/`etag` of `entity_ref`, when held.
    pub(crate) fn get(&self, entity_ref: &str, id: i64, etag: &str) -> Option<Arc<Entity>> {
        let mut entries = self.entries.as_ref()?.lock();
        entries.get(entity_ref).filter(|entry| entry.id == id && &*entry.etag == etag).map(|entry| entry.entity.clone())
    }

    /// Those of `refs` of which some version is held, under one lock: a
    /// read that finds one the same version need not read its body.
    pub(crate) fn held(&self, refs: &[String]) -> Vec<String> {
        let Some(entries) = &self.entries else { return Vec::new() };
        let entries = entries.lock();
        refs.iter().filter(|entity_ref| entries.contains(entity_ref.as_str())).cloned().collect()
    }

    /// Keeps a decoded body, replacing the entity's earlier version.
    pub(crate) fn insert(&self, entity_ref: &str, id: i64, etag: &str, entity: Arc<Entity>) {
        if let Some(entries) = &self.entries {
            entries.lock().put(entity_ref.into(), Entry { id, etag: etag.into(), entity });
        }
    }
}

/// Where a body decoded from text is kept once decoded.
#[derive(Clone, Debug)]
pub(crate) struct KeepIn {
    pub(crate) cache: Arc<BodyCache>,
    pub(crate) etag: Box<str>,
}

impl KeepIn {
    /// In `cache`, as the version with `etag`.
    pub(crate) fn new(cache: &Arc<BodyCache>, etag: String) -> Self {
        Self { cache: cache.clone(), etag: etag.into_boxed_str() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(name: &str) -> Arc<Entity> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "backstage.io/v1alpha1", "kind": "Component", "metadata": {"name": name}, "spec": {}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn a_body_is_served_only_for_the_version_it_was_read_with() {
        let cache = BodyCache::new(2);
        cache.insert("component:default/a", 1, "e1", entity("a"));
        assert_eq!(cache.get("component:default/a", 1, "e1").unwrap().metadata.name, "a");
        assert!(cache.get("component:default/a", 1, "e2").is_none(), "another etag is another version");
        assert!(cache.get("component:default/a", 7, "e1").is_none(), "another row is another entity");
        cache.insert("component:default/a", 1, "e2", entity("a2"));
        assert!(cache.get("component:default/a", 1, "e1").is_none(), "the new version replaced the old");
        assert_eq!(cache.get("component:default/a", 1, "e2").unwrap().metadata.name, "a2");
    }

    #[test]
    fn the_least_recently_used_body_goes_first_and_capacity_zero_holds_nothing() {
        let cache = BodyCache::new(2);
        cache.insert("a", 1, "e", entity("a"));
        cache.insert("b", 2, "e", entity("b"));
        assert!(cache.get("a", 1, "e").is_some());
        cache.insert("c", 3, "e", entity("c"));
        assert_eq!(cache.held(&["a".into(), "b".into(), "c".into()]), ["a", "c"], "b was used least recently");

        let none = BodyCache::new(0);
        none.insert("a", 1, "e", entity("a"));
        assert!(none.held(&["a".into()]).is_empty() && none.get("a", 1, "e").is_none());
    }
}
