//! The change stream: the `catalogChanges` subscription (replay from a
//! cursor, then live), the `changes` feed over HTTP, entity history and the
//! types they share.

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::{
    Context, Enum, InputObject, InputValueError, InputValueResult, Object, OneofObject, Result, Scalar, ScalarType,
    SimpleObject, Subscription, Value,
};
use catalog_domain::{Entity, EntityRef};
use catalog_store::{Catalog, Change, ChangeFeed, FilterField, StoredEntity};
use chrono::{DateTime, Utc};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::entity::EntityValue;
use super::error::ApiError;
use super::loaders::RequestBudget;
use super::{catalog, change_feed, parse_ref};
use crate::hub::ChangeHub;
use crate::policy::{ReadScope, SharedScope};

/// Events one `changes` page or `history` page may hold.
pub const MAX_CHANGES_PAGE: i32 = 1_000;
/// Change-log rows one `changes` call reads looking for matches.
const MAX_SCANNED_ROWS: u64 = 20_000;
/// Rows per statement while replaying or scanning.
const READ_BATCH: u64 = 500;

/// A position in the change log: the sequence number of a change, as a
/// string. Cursors are unique and increase in commit order; pass the last one
/// you received to resume after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeCursor(pub i64);

/// A position in the change log: the sequence number of a change, as a
/// string. Cursors are unique and increase in commit order; pass the last one
/// you received as `after` to resume after it.
#[Scalar]
impl ScalarType for ChangeCursor {
    fn parse(value: Value) -> InputValueResult<Self> {
        let parsed = match &value {
            Value::String(text) => text.parse::<i64>().ok(),
            Value::Number(number) => number.as_i64(),
            _ => None,
        };
        parsed.filter(|sequence| *sequence >= 0).map(ChangeCursor).ok_or_else(|| {
            InputValueError::custom(format!("{value} is not a change cursor (a non-negative integer as a string)"))
        })
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

/// What happened to an entity.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(remote = "catalog_store::ChangeType")]
pub enum ChangeKind {
    Added,
    Updated,
    Removed,
}

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
        let owners = filter.owners.as_deref().map(|owners| canonical(owners, Some("Group"))).transpose()?;
        let tree_owners = match &filter.owned_by_tree {
            Some(roots) => {
                let roots: Vec<EntityRef> = canonical(roots, Some("Group"))?;
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
                .and_then(|owner| EntityRef::parse_with_defaults(owner, Some("Group"), entity_ref.namespace()).ok());
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

/// The entity a change wrote, as the API serves entities; `None` for removals.
pub(crate) fn stored_version(change: &Change) -> Option<Arc<StoredEntity>> {
    let body = change.entity.as_ref()?;
    let entity: Entity = serde_json::from_value(body.clone()).ok()?;
    let location = entity.metadata.annotations.get("backstage.io/managed-by-location").cloned();
    Some(Arc::new(StoredEntity {
        id: 0,
        entity_ref: change.entity_ref.clone(),
        entity: entity.with_derived_relations(),
        provider: change.provider.clone(),
        location,
        errors: Vec::new(),
        created_at: change.time,
        updated_at: change.time,
    }))
}

/// One change of one entity.
#[derive(Clone)]
pub struct ChangeEvent(pub Arc<Change>);

/// One change of one entity, as committed.
#[Object]
impl ChangeEvent {
    /// Resume after this event by passing it as `after`.
    async fn cursor(&self) -> ChangeCursor {
        ChangeCursor(self.0.sequence)
    }

    /// When the change was committed.
    async fn time(&self) -> DateTime<Utc> {
        self.0.time
    }

    #[graphql(name = "type")]
    async fn change_type(&self) -> ChangeKind {
        self.0.change_type.into()
    }

    async fn entity_ref(&self) -> &str {
        self.0.entity_ref.as_str()
    }

    /// The entity as this change left it; null when it was removed. Its
    /// relation fields resolve against the catalog as it is now.
    async fn entity(&self) -> Option<EntityValue> {
        stored_version(&self.0).map(EntityValue::from)
    }

    /// The field paths an update changed (e.g. `spec.owner`,
    /// `metadata.tags`); empty for additions and removals.
    async fn changed_fields(&self) -> &[String] {
        &self.0.changed_fields
    }

    /// The provider whose snapshot made the change.
    async fn source(&self) -> &str {
        &self.0.provider
    }
}

/// A page of change events.
#[derive(SimpleObject)]
pub struct ChangePage {
    pub events: Vec<ChangeEvent>,
    /// Pass as `after` for the next page. Moves past rows the filter skipped,
    /// so a sparse filter never rescans them.
    pub next_cursor: Option<ChangeCursor>,
    /// Whether the log holds rows past `nextCursor` (checked for this page).
    pub has_more: bool,
}

/// A point in the catalog's past: a change cursor or a time. Set exactly one.
#[derive(OneofObject, Clone, Copy, Debug)]
pub enum AsOf {
    /// The state once the change with this cursor had been applied.
    Cursor(ChangeCursor),
    /// The state at this time.
    Time(DateTime<Utc>),
}

impl AsOf {
    /// The sequence number it stands for; CURSOR_EXPIRED when the log no
    /// longer holds every version up to it.
    pub(crate) async fn sequence(self, change_feed: &ChangeFeed) -> Result<i64, ApiError> {
        let sequence = match self {
            AsOf::Cursor(cursor) => cursor.0,
            AsOf::Time(time) => change_feed.sequence_at(time).await?,
        };
        check_retained(change_feed, ChangeCursor(sequence)).await?;
        Ok(sequence)
    }
}

fn check_page(first: i32) -> Result<u64, ApiError> {
    if first < 1 {
        return Err(ApiError::BadUserInput(format!("first must be at least 1, got {first}")));
    }
    if first > MAX_CHANGES_PAGE {
        return Err(ApiError::LimitExceeded {
            limit: "pageSize",
            message: format!("first must be at most {MAX_CHANGES_PAGE}, got {first}"),
        });
    }
    Ok(first as u64)
}

/// Refuses a cursor from before what the purge removed: the client must
/// resynchronise rather than silently miss what was dropped.
pub(crate) async fn check_retained(change_feed: &ChangeFeed, cursor: ChangeCursor) -> Result<(), ApiError> {
    let purged_through = change_feed.purged_through().await?;
    if cursor.0 < purged_through {
        return Err(ApiError::CursorExpired { oldest: purged_through });
    }
    Ok(())
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

/// One entity's history, newest first. Under a read scope, versions the
/// scope would hide are left out (a removal is judged by the version it
/// removed): an entity visible now may have been hidden once, or the reverse.
pub(crate) async fn history_page(
    change_feed: &ChangeFeed,
    scope: &ReadScope,
    entity_ref: &EntityRef,
    first: i32,
    after: Option<ChangeCursor>,
) -> Result<ChangePage, ApiError> {
    let size = check_page(first)?;
    let mut changes = change_feed.history(entity_ref, after.map(|cursor| cursor.0), size + 1).await?;
    let has_more = changes.len() as u64 > size;
    changes.truncate(size as usize);
    let next_cursor = changes.last().map(|change| ChangeCursor(change.sequence));
    let events = changes
        .into_iter()
        .filter(|change| version_allowed(scope, change))
        .map(|change| ChangeEvent(Arc::new(change)))
        .collect();
    Ok(ChangePage { events, next_cursor, has_more })
}

/// Whether the scope lets the change's version (the removed one for a
/// removal) be seen.
fn version_allowed(scope: &ReadScope, change: &Change) -> bool {
    let ReadScope::Only { matcher, .. } = scope else { return true };
    change
        .latest_version()
        .and_then(|body| serde_json::from_value::<Entity>(body.clone()).ok())
        .is_some_and(|entity| matcher.matches_entity(&change.entity_ref, &entity))
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
        let hub = ctx.data_unchecked::<Arc<ChangeHub>>().clone();
        let budget = ctx.data_unchecked::<Arc<RequestBudget>>().clone();
        let matcher = ChangeMatcher::new(catalog(ctx)?, super::shared_scope(ctx)?, filter).await?;
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
