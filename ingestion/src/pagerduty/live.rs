//! A short cache for what is read live from PagerDuty (who is on call per
//! escalation policy, open incidents per service), with single flight: all
//! callers that ask for a key while its fetch runs wait for that one fetch,
//! so a burst of queries costs one upstream request. A failure is shared by
//! the callers that waited for it and kept for a few seconds only, so an
//! outage does not turn every query into a request against it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use catalog_http::SourceError;
use tokio::sync::OnceCell;

/// The longest a failure is served from the cache.
const ERROR_TTL: Duration = Duration::from_secs(5);

/// Past this many keys, expired entries are dropped when a key is added.
const PRUNE_AT: usize = 10_000;

type Fetched<V> = (Instant, Result<Arc<V>, SourceError>);

pub(crate) struct LiveCache<V> {
    ttl: Duration,
    entries: Mutex<HashMap<String, Arc<OnceCell<Fetched<V>>>>>,
}

impl<V> LiveCache<V> {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::default() }
    }

    fn expired(&self, cell: &OnceCell<Fetched<V>>, now: Instant) -> bool {
        // A fetch still running is never expired: callers join it.
        cell.get().is_some_and(|(at, result)| {
            let ttl = if result.is_ok() { self.ttl } else { self.ttl.min(ERROR_TTL) };
            now.duration_since(*at) >= ttl
        })
    }

    /// The value for `key`: cached, joined from a fetch in flight, or
    /// fetched now with `fetch`.
    pub(crate) async fn get_or_fetch<F, Fut>(&self, key: &str, fetch: F) -> Result<Arc<V>, SourceError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, SourceError>>,
    {
        let cell = {
            let mut entries = self.entries.lock();
            let now = Instant::now();
            match entries.get(key) {
                Some(cell) if !self.expired(cell, now) => cell.clone(),
                _ => {
                    if entries.len() >= PRUNE_AT {
                        entries.retain(|_, cell| !self.expired(cell, now));
                    }
                    let cell = Arc::new(OnceCell::new());
                    entries.insert(key.to_owned(), cell.clone());
                    cell
                }
            }
        };
        // If the caller running the fetch goes away (its request was
        // cancelled), the next waiter runs it instead.
        let (_, result) = cell.get_or_init(|| async { (Instant::now(), fetch().await.map(Arc::new)) }).await;
        result.clone()
    }

    /// Forgets `key`: the next caller fetches again (one already in flight
    /// finishes for those waiting on it).
    pub(crate) fn invalidate(&self, key: &str) {
        self.entries.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    async fn counted(calls: &AtomicUsize, value: u32) -> Result<u32, SourceError> {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(value)
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch_until_it_expires() {
        let cache = LiveCache::new(Duration::from_millis(200));
        let calls = AtomicUsize::new(0);
        let results =
            futures::future::join_all((0..20).map(|_| cache.get_or_fetch("PPOL1", || counted(&calls, 7)))).await;
        assert!(results.iter().all(|result| *result.as_ref().unwrap().as_ref() == 7));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        cache.get_or_fetch("PPOL1", || counted(&calls, 8)).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "still fresh");
        cache.get_or_fetch("PPOL2", || counted(&calls, 9)).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2, "another key is another fetch");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(*cache.get_or_fetch("PPOL1", || counted(&calls, 8)).await.unwrap(), 8, "expired");
        cache.invalidate("PPOL1");
        assert_eq!(*cache.get_or_fetch("PPOL1", || counted(&calls, 10)).await.unwrap(), 10, "invalidated");
    }

    #[tokio::test]
    async fn a_failure_is_shared_but_not_kept_past_its_short_ttl() {
        let cache: LiveCache<u32> = LiveCache::new(Duration::from_secs(60));
        let failure = SourceError::Unavailable { message: "503".into(), retry_after: None };
        let first = cache.get_or_fetch("k", || async { Err(failure.clone()) }).await;
        assert_eq!(first.unwrap_err(), failure);
        let cached = cache.get_or_fetch("k", || async { Ok(1) }).await;
        assert!(cached.is_err(), "within the error TTL the failure is served");
        let short: LiveCache<u32> = LiveCache::new(Duration::from_millis(10));
        assert!(short.get_or_fetch("k", || async { Err(failure.clone()) }).await.is_err());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(*short.get_or_fetch("k", || async { Ok(2) }).await.unwrap(), 2);
    }
}
