//! Parsed GraphQL documents by query text. Portal pages, scripts and
//! dashboards send the same few queries over and over; async-graphql's parser
//! (pest) took a twelfth of the server's CPU on the by-ref benchmark, and
//! copying a parsed document costs a fraction of parsing it again.

use parking_lot::Mutex;
use std::num::NonZeroUsize;

use async_graphql::parser::types::ExecutableDocument;

/// Documents kept: far more than the distinct queries a portal sends.
const CAPACITY: NonZeroUsize = NonZeroUsize::new(256).unwrap();

/// Longer queries are parsed every time: the cache holds at most
/// `CAPACITY` times this much query text (and its documents).
const MAX_CACHED_QUERY_BYTES: usize = 8 * 1024;

/// The least recently used document goes first when the cache is full.
pub(crate) struct DocumentCache {
    documents: Mutex<lru::LruCache<String, ExecutableDocument>>,
}

impl Default for DocumentCache {
    fn default() -> Self {
        DocumentCache { documents: Mutex::new(lru::LruCache::new(CAPACITY)) }
    }
}

impl DocumentCache {
    /// Whether a document parsed from this text would be kept: callers copy
    /// the text for [`DocumentCache::insert`] only then.
    pub(crate) fn keeps(query: &str) -> bool {
        query.len() <= MAX_CACHED_QUERY_BYTES
    }

    /// A copy of the document parsed from exactly this text, if one is kept.
    pub(crate) fn get(&self, query: &str) -> Option<ExecutableDocument> {
        if !Self::keeps(query) {
            return None;
        }
        self.lock().get(query).cloned()
    }

    /// Keeps the document parsed from `query`; call it only for documents
    /// the firewall accepted.
    pub(crate) fn insert(&self, query: String, document: &ExecutableDocument) {
        if Self::keeps(&query) {
            self.lock().put(query, document.clone());
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, lru::LruCache<String, ExecutableDocument>> {
        // A panic while holding the lock cannot leave the cache half-updated
        // in a way that matters: at worst an entry is missing.
        self.documents.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> ExecutableDocument {
        async_graphql::parser::parse_query(query).unwrap()
    }

    #[test]
    fn a_document_is_found_by_its_exact_text() {
        let cache = DocumentCache::default();
        let query = "{ entity(ref: \"component:default/a\") { entityRef } }";
        assert!(cache.get(query).is_none());
        cache.insert(query.to_owned(), &parse(query));
        let found = cache.get(query).expect("cached");
        assert_eq!(format!("{found:?}"), format!("{:?}", parse(query)));
        assert!(cache.get("{ entity(ref: \"component:default/b\") { entityRef } }").is_none());
    }

    #[test]
    fn the_least_recently_used_document_goes_first() {
        let cache = DocumentCache::default();
        let queries: Vec<String> = (0..=CAPACITY.get()).map(|n| format!("{{ a{n}: __typename }}")).collect();
        for query in &queries[..CAPACITY.get()] {
            cache.insert(query.clone(), &parse(query));
        }
        // Reading the oldest makes the second oldest the one to go.
        assert!(cache.get(&queries[0]).is_some());
        let newest = &queries[CAPACITY.get()];
        cache.insert(newest.clone(), &parse(newest));
        assert_eq!(cache.len(), CAPACITY.get());
        assert!(cache.get(&queries[0]).is_some());
        assert!(cache.get(&queries[1]).is_none());
        assert!(cache.get(newest).is_some());
    }

    #[test]
    fn long_queries_are_not_kept() {
        let cache = DocumentCache::default();
        let query = format!("{{ __typename {} }}", "__typename ".repeat(MAX_CACHED_QUERY_BYTES / 10));
        assert!(query.len() > MAX_CACHED_QUERY_BYTES);
        assert!(!DocumentCache::keeps(&query));
        cache.insert(query.clone(), &parse(&query));
        assert_eq!(cache.len(), 0);
        assert!(cache.get(&query).is_none());
    }
}
