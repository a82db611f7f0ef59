//! The check a snapshot passes before the engine applies it: admission
//! policies (the api composes the governance crate's in, so that this
//! crate knows no rule language). A check may refuse entities, moving them
//! to the snapshot's invalid list, and attach violations to the others.

use catalog_store::{Snapshot, StoreError};
use futures::future::BoxFuture;

/// Checks snapshots before they are applied.
pub trait Admission: Send + Sync + std::fmt::Debug {
    /// Refuses and annotates the snapshot's entities in place. An error
    /// (the catalog could not be read) fails the run: nothing unchecked is
    /// applied.
    fn admit<'a>(&'a self, snapshot: &'a mut Snapshot) -> BoxFuture<'a, Result<Admitted, StoreError>>;
}

/// What admission did to a run's snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admitted {
    /// Entities refused by an `enforce` policy.
    pub refused: usize,
    /// Entities admitted with violations.
    pub warned: usize,
    /// Policies held back because they would have refused too much, each
    /// with what it would have refused (`policy: 40 of 50 entities`).
    pub held_back: Vec<String>,
    /// Entities held in the review queue.
    pub queued: usize,
}

impl Admitted {
    pub(crate) fn absorb(&mut self, other: Admitted) {
        self.refused += other.refused;
        self.warned += other.warned;
        self.held_back.extend(other.held_back);
        self.queued += other.queued;
    }
}
