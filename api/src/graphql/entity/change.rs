//! Changes as the API serves them: the change cursor, one change event (whose
//! `entity` is an entity of this module, which is why it lives here), pages
//! of changes, points in the past (`AsOf`), and an entity's history. The
//! change stream (`catalogChanges`, the `changes` feed) builds on these in
//! `graphql/changes.rs`.

use std::sync::Arc;

use async_graphql::{
    Enum, InputValueError, InputValueResult, Object, OneofObject, Result, Scalar, ScalarType, SimpleObject, Value,
};
use catalog_domain::{Entity, EntityRef};
use catalog_store::{Change, ChangeFeed, StoredEntity};
use chrono::{DateTime, Utc};

use super::EntityValue;
use crate::auth::policy::ReadScope;
use crate::error_code::Limit;
use crate::graphql::error::ApiError;

/// Events one `changes` page or `history` page may hold.
pub const MAX_CHANGES_PAGE: i32 = 1_000;
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
        crate::graphql::paging::sequence_cursor(&value).map(ChangeCursor).ok_or_else(|| {
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

/// The entity a change wrote, as the API serves entities; `None` for removals.
pub(crate) fn stored_version(change: &Change) -> Option<Arc<StoredEntity>> {
    let body = change.entity.as_ref()?;
    let entity: Entity = serde_json::from_value(body.clone()).ok()?;
    let location = entity.metadata.annotations.get("backstage.io/managed-by-location").cloned();
    let mut stored = StoredEntity::decoded(change.entity_ref.clone(), entity, change.provider.clone(), change.time);
    stored.location = location;
    Some(Arc::new(stored))
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

pub(crate) fn check_page(first: i32) -> Result<u64, ApiError> {
    if first < 1 {
        return Err(ApiError::BadUserInput(format!("first must be at least 1, got {first}")));
    }
    if first > MAX_CHANGES_PAGE {
        return Err(ApiError::LimitExceeded {
            limit: Limit::PageSize,
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
pub(crate) fn version_allowed(scope: &ReadScope, change: &Change) -> bool {
    let ReadScope::Only { matcher, .. } = scope else { return true };
    change
        .latest_version()
        .and_then(|body| serde_json::from_value::<Entity>(body.clone()).ok())
        .is_some_and(|entity| matcher.matches_entity(&change.entity_ref, &entity))
}
