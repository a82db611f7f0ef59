//! The change hub: one reader of the change log per process, fanning new
//! changes out to every subscriber. It wakes when this process commits and
//! when another process sharing PostgreSQL commits (LISTEN/NOTIFY through the
//! store, which also wakes it after re-connecting, covering notifications
//! sent while it was away). The change log, not the wake-up, is the truth.
//! There is no timed poll: an idle catalog costs no statements.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use catalog_store::{Change, ChangeFeed};
use tokio::sync::broadcast;

/// Changes held for subscribers that are behind, by default. Shared by all
/// subscribers: memory is bounded by this, not by their number. A subscriber
/// more than this many changes behind is ended with a resumable error.
pub const SUBSCRIBER_BUFFER: usize = 1_024;

/// Rows read per statement while catching up.
const READ_BATCH: u64 = 500;

pub struct ChangeHub {
    sender: broadcast::Sender<Arc<Change>>,
    capacity: usize,
    /// The last change-log sequence the reader fanned out.
    sequence: AtomicI64,
    /// Change events sent to subscribers, and changes lost by subscribers
    /// that fell more than the buffer behind (each such subscription ends).
    delivered: AtomicU64,
    dropped: AtomicU64,
}

impl ChangeHub {
    /// Starts the hub's reader, holding up to `buffer` (at least 1) changes
    /// for slow subscribers; it stops when the hub is dropped.
    pub async fn start(store: ChangeFeed, buffer: usize) -> Arc<Self> {
        let (sender, _) = broadcast::channel(buffer.max(1));
        let hub = Arc::new(Self {
            sender,
            capacity: buffer.max(1),
            sequence: AtomicI64::new(0),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        // Watch commits before reading where the log ends: a commit in between
        // still wakes the reader.
        let commits = store.commits();
        let last = match store.latest_sequence().await {
            Ok(last) => last,
            Err(error) => {
                tracing::warn!(%error, "cannot read the change log; delivering from its start");
                0
            }
        };
        hub.sequence.store(last, Ordering::Relaxed);
        tokio::spawn(follow(store, commits, Arc::downgrade(&hub), last));
        hub
    }

    /// A receiver of every change committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.sender.subscribe()
    }

    /// How many changes it holds for subscribers that are behind.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The last change-log sequence fanned out (the log's end when it started).
    pub fn sequence(&self) -> i64 {
        self.sequence.load(Ordering::Relaxed)
    }

    /// Live subscriptions following the hub.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }

    /// Counts one event sent to a subscriber.
    pub fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts changes a subscriber missed by falling behind.
    pub fn dropped(&self, changes: u64) {
        self.dropped.fetch_add(changes, Ordering::Relaxed);
    }

    /// Events delivered and changes dropped since the process started.
    pub fn deliveries(&self) -> (u64, u64) {
        (self.delivered.load(Ordering::Relaxed), self.dropped.load(Ordering::Relaxed))
    }
}

async fn follow(
    store: ChangeFeed,
    mut commits: tokio::sync::watch::Receiver<u64>,
    hub: Weak<ChangeHub>,
    mut last: i64,
) {
    loop {
        if commits.changed().await.is_err() {
            return;
        }
        loop {
            let batch = match store.changes_after(last, READ_BATCH).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "reading the change log failed; retrying in a second");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Some(hub) = hub.upgrade() else { return };
            let full = batch.len() as u64 == READ_BATCH;
            for change in batch {
                last = change.sequence;
                hub.sequence.store(last, Ordering::Relaxed);
                // No receivers is not an error: nobody is listening yet.
                let _ = hub.sender.send(Arc::new(change));
            }
            if !full {
                break;
            }
        }
    }
}
