//! The change hub: one reader of the change log per process, fanning new
//! changes out to every subscriber. It wakes when this process commits and
//! when another process sharing PostgreSQL commits (LISTEN/NOTIFY through the
//! store, which also wakes it after re-connecting, covering notifications
//! sent while it was away). The change log, not the wake-up, is the truth.
//! There is no timed poll: an idle catalog costs no statements.

use std::sync::{Arc, Weak};

use catalog_store::{Change, Store};
use tokio::sync::broadcast;

/// Changes held for subscribers that are behind, by default. Shared by all
/// subscribers: memory is bounded by this, not by their number. A subscriber
/// more than this many changes behind is ended with a resumable error.
pub const SUBSCRIBER_BUFFER: usize = 1_024;

/// Rows read per statement while catching up.
const READ_BATCH: u64 = 500;

pub struct ChangeHub {
    sender: broadcast::Sender<Arc<Change>>,
}

impl ChangeHub {
    /// Starts the hub's reader, holding up to `buffer` (at least 1) changes
    /// for slow subscribers; it stops when the hub is dropped.
    pub async fn start(store: Store, buffer: usize) -> Arc<Self> {
        let (sender, _) = broadcast::channel(buffer.max(1));
        let hub = Arc::new(Self { sender });
        let last = match store.sequence_bounds().await {
            Ok((_, last)) => last,
            Err(error) => {
                tracing::warn!(%error, "cannot read the change log; delivering from its start");
                0
            }
        };
        tokio::spawn(follow(store, Arc::downgrade(&hub), last));
        hub
    }

    /// A receiver of every change committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.sender.subscribe()
    }

    /// How many subscriptions are open.
    pub fn subscriber_count(&self) -> usize {
        self.sender.receiver_count()
    }
}

async fn follow(store: Store, hub: Weak<ChangeHub>, mut last: i64) {
    let mut commits = store.commits();
    loop {
        if commits.changed().await.is_err() {
            return;
        }
        loop {
            let batch = match store.changes_after(last, READ_BATCH).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "reading the change log failed; retrying");
                    break;
                }
            };
            let Some(hub) = hub.upgrade() else { return };
            let full = batch.len() as u64 == READ_BATCH;
            for change in batch {
                last = change.sequence;
                // No receivers is not an error: nobody is listening yet.
                let _ = hub.sender.send(Arc::new(change));
            }
            if !full {
                break;
            }
        }
    }
}
