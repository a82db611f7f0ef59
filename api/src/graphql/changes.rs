//! The change stream: the `catalogChanges` subscription (replay from a
//! cursor, then live) and the `changes` feed over HTTP, both filtered by a
//! `ChangeFilter` under the request's read scope. The types they serve
//! (events, pages, cursors) are the entity module's (`entity/change.rs`).

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::{Context, InputObject, Result, Subscription};
use catalog_domain::{EntityRef, spec};
use catalog_store::{Catalog, Change, ChangeFeed, FilterField};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::context::{budget, catalog, change_feed, change_hub, parse_ref};
use super::entity::change::{ChangeCursor, ChangeEvent, ChangePage, check_page, check_retained, version_allowed};
use super::error::ApiError;
use crate::auth::policy::SharedScope;

/// The kind a partial owner ref defaults to, as in the entities' specs.
const OWNER_KIND: Option<&str> = spec::default_kind("owner");

/// Change-log rows one `changes` call reads looking for matches.
const MAX_SCANNED_ROWS: u64 = 20_000;
/// Rows per statement while replaying or scanning.
const READ_BATCH: u64 = 500;

/// Selects change events. Every key set must hold; each list matches any of
/// its values. Owner and tag keys look at the entity after the change, or at
/// the removed version for removals.
#[derive(InputObject, Clone, Debug, Default)]
pub struct ChangeFilter {
    pub kinds: Option<Vec<String>>,
    pub namespaces: Option<Vec<String>>,
    /// Entity refs (full, or `kind:name` in the default namespace).
    pub refs: Option<Vec<String>>,
    /// Owner refs; a bare name means a Group in the default namespace.
    pub owners: Option<Vec<String>>,
    /// Group refs: owned by the group or any group under it, as the tree is
    /// when the subscription starts.
    pub owned_by_tree: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    /// An entity ref: events about entities directly related to it (either
    /// direction), as its relations are when the subscription starts.
    pub related_to: Option<String>,
}

/// A filter resolved against the catalog once, then matched per event.
pub(crate) struct ChangeMatcher {
    kinds: Option<HashSet<String>>,
    namespaces: Option<HashSet<String>>,
    refs: Option<HashSet<EntityRef>>,
    owners: Option<HashSet<EntityRef>>,
    tree_owners: Option<HashSet<EntityRef>>,
    tags: Option<HashSet<String>>,
    related: Option<HashSet<EntityRef>>,
    /// The request's read scope, as it is when each change is matched:
    /// events about hidden entities are dropped.
    scope: SharedScope,
}

fn lowered(values: &Option<Vec<String>>) -> Option<HashSet<String>> {
    values.as_ref().map(|values| values.iter().map(|value| value.to_lowercase()).collect())
}

fn canonical<C: FromIterator<EntityRef>>(values: &[String], default_kind: Option<&str>) -> Result<C, ApiError> {
    values.iter().map(|value| parse_ref(value, default_kind, "default")).collect()
}

impl ChangeMatcher {
    pub(crate) async fn new(
        catalog: &Catalog,
        scope: &SharedScope,
        filter: Option<ChangeFilter>,
    ) -> Result<Self, ApiError> {
        let filter = filter.unwrap_or_default();
        let refs = filter.refs.as_deref().map(|refs| canonical(refs, None)).transpose()?;
        let owners = filter.owners.as_deref().map(|owners| canonical(owners, OWNER_KIND)).transpose()?;
        let tree_owners = match &filter.owned_by_tree {
            Some(roots) => {
                let roots: Vec<EntityRef> = canonical(roots, OWNER_KIND)?;
                Some(catalog.owner_closure(&FilterField::OwnedByTree, &roots).await?.into_iter().collect())
            }
            None => None,
        };
        let related = match &filter.related_to {
            Some(text) => {
                let entity_ref = parse_ref(text, None, "default")?;
                let edges = catalog.relations_from(std::slice::from_ref(&entity_ref), None).await?;
                Some(edges.into_iter().map(|edge| edge.target_ref).collect())
            }
            None => None,
        };
        Ok(Self {
            kinds: lowered(&filter.kinds),
            namespaces: lowered(&filter.namespaces),
            refs,
            owners,
            tree_owners,
            tags: filter.tags.map(|tags| tags.into_iter().collect()),
            related,
            scope: scope.clone(),
        })
    }

    pub(crate) fn matches(&self, change: &Change) -> bool {
        let entity_ref = &change.entity_ref;
        let holds = |set: &Option<HashSet<String>>, value: &str| set.as_ref().is_none_or(|set| set.contains(value));
        let holds_ref =
            |set: &Option<HashSet<EntityRef>>, value: &EntityRef| set.as_ref().is_none_or(|set| set.contains(value));
        if !holds(&self.kinds, entity_ref.kind())
            || !holds(&self.namespaces, entity_ref.namespace())
            || !holds_ref(&self.refs, entity_ref)
            || !holds_ref(&self.related, entity_ref)
        {
            return false;
        }
        let version = change.latest_version();
        if self.owners.is_some() || self.tree_owners.is_some() {
            let owner = version
                .and_then(|body| body["spec"]["owner"].as_str())
                .and_then(|owner| EntityRef::parse_with_defaults(owner, OWNER_KIND, entity_ref.namespace()).ok());
            let Some(owner) = owner else { return false };
            if !holds_ref(&self.owners, &owner) || !holds_ref(&self.tree_owners, &owner) {
                return false;
            }
        }
        if let Some(tags) = &self.tags {
            let has_tag = version
                .and_then(|body| body["metadata"]["tags"].as_array())
                .is_some_and(|list| list.iter().filter_map(|tag| tag.as_str()).any(|tag| tags.contains(tag)));
            if !has_tag {
                return false;
            }
        }
        version_allowed(&self.scope.current(), change)
    }
}

/// A page of the feed after `after`, scanning at most 20,000 rows.
pub(crate) async fn changes_page(
    change_feed: &ChangeFeed,
    catalog: &Catalog,
    scope: &SharedScope,
    after: Option<ChangeCursor>,
    filter: Option<ChangeFilter>,
    first: i32,
) -> Result<ChangePage, ApiError> {
    let size = check_page(first)?;
    let after = after.unwrap_or(ChangeCursor(0));
    check_retained(change_feed, after).await?;
    let matcher = ChangeMatcher::new(catalog, scope, filter).await?;
    let mut cursor = after.0;
    let mut events = Vec::new();
    let mut scanned = 0;
    'scan: while scanned < MAX_SCANNED_ROWS {
        let batch = change_feed.changes_after(cursor, READ_BATCH).await?;
        let full = batch.len() as u64 == READ_BATCH;
        for change in batch {
            if events.len() as u64 == size {
                break 'scan;
            }
            scanned += 1;
            cursor = change.sequence;
            if matcher.matches(&change) {
                events.push(ChangeEvent(Arc::new(change)));
            }
        }
        if !full {
            break;
        }
    }
    // Asked, not inferred: a full last batch says nothing about what follows.
    let has_more = !change_feed.changes_after(cursor, 1).await?.is_empty();
    Ok(ChangePage { events, next_cursor: (cursor > 0).then_some(ChangeCursor(cursor)), has_more })
}

/// The catalog's subscriptions.
#[derive(Default)]
pub struct CatalogSubscription;

#[Subscription]
impl CatalogSubscription {
    /// Changes to the catalog as they are committed, in commit order. With
    /// `after`, every matching change after that cursor is replayed from the
    /// log first, then live changes follow with no gap and no duplicate.
    /// Without it, live changes only. A cursor older than the retained log
    /// fails with CURSOR_EXPIRED. A subscriber that falls further behind than
    /// the server buffers (1,024 changes by default) is ended with
    /// SUBSCRIBER_TOO_SLOW, whose `extensions.lastCursor` resumes it.
    async fn catalog_changes(
        &self,
        ctx: &Context<'_>,
        filter: Option<ChangeFilter>,
        after: Option<ChangeCursor>,
    ) -> Result<impl Stream<Item = Result<ChangeEvent>> + use<>> {
        let change_feed = change_feed(ctx)?.clone();
        let hub = change_hub(ctx)?.clone();
        let budget = budget(ctx)?.clone();
        let matcher = ChangeMatcher::new(catalog(ctx)?, super::context::shared_scope(ctx)?, filter).await?;
        if let Some(after) = after {
            check_retained(&change_feed, after).await?;
        }
        // Subscribe before replaying: whatever commits during the replay is
        // either read by it or received here, and sequence numbers drop the
        // overlap.
        let mut receiver = hub.subscribe();
        let hub_capacity = hub.capacity();
        // Live only: the hub may still be broadcasting changes committed
        // before this subscription began; they are not live, so they are
        // skipped like replayed ones.
        let start = match after {
            Some(after) => after.0,
            None => change_feed.latest_sequence().await.map_err(ApiError::from)?,
        };
        Ok(async_stream::stream! {
            let mut cursor = start;
            // Replay until a pass ends with the receiver whole: changes that
            // overflow it during a long replay are read from the log by the
            // next pass, so only a lag while live ends the subscription.
            let mut replaying = after.is_some();
            while replaying {
                loop {
                    let batch = match change_feed.changes_after(cursor, READ_BATCH).await {
                        Ok(batch) => batch,
                        Err(error) => {
                            yield Err(ApiError::from(error).into());
                            return;
                        }
                    };
                    if batch.is_empty() {
                        break;
                    }
                    for change in batch {
                        cursor = change.sequence;
                        if matcher.matches(&change) {
                            budget.reset();
                            hub.delivered();
                            yield Ok(ChangeEvent(Arc::new(change)));
                        }
                    }
                }
                replaying = receiver.len() >= hub_capacity;
                if replaying {
                    receiver = receiver.resubscribe();
                }
            }
            loop {
                match receiver.recv().await {
                    Ok(change) => {
                        if change.sequence <= cursor {
                            continue;
                        }
                        cursor = change.sequence;
                        if matcher.matches(&change) {
                            budget.reset();
                            hub.delivered();
                            yield Ok(ChangeEvent(change));
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        hub.dropped(missed);
                        yield Err(ApiError::SubscriberTooSlow { last_cursor: cursor }.into());
                        return;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        })
    }
}
