//! Review in GraphQL: the queue of entities an admission policy holds
//! until someone approves them (`pendingEntities`), the decisions
//! (`approveEntity`, `rejectEntity`) and the queue's events as they happen
//! (`reviewEvents`). A queued entity is not in the catalog: no list, count,
//! facet, walk or change feed shows it until it is approved. Deciding needs
//! `entity.approve`, or membership of the owning group when the policy
//! allows its members to decide.

use std::time::Duration;

use async_graphql::{
    Context, Enum, Guard, InputValueError, InputValueResult, Json, Object, Result, Scalar, ScalarType, SimpleObject,
    Subscription, Value,
};
use catalog_domain::EntityRef;
use catalog_store::{Decision, DecisionOutcome, FilterField, PendingRecord, ReviewEvent, ReviewReason, ReviewStatus};
use chrono::{DateTime, Utc};
use futures::Stream;

use super::context::{catalog, change_feed, parse_ref, read_scope, require_permission, snapshot_writer};
use super::entity::EntityValue;
use super::error::ApiError;
use super::mutation::{audit_entry, refused};
use crate::auth::identity::{Permission, Principal};

/// Queue entries one `pendingEntities` page may hold.
const MAX_QUEUE_PAGE: i32 = 100;
/// Review events read per statement by `reviewEvents`.
const READ_BATCH: u64 = 500;
/// How often `reviewEvents` looks for events another replica wrote.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// The longest note a decision may carry.
const MAX_NOTE_CHARS: usize = 2_000;

/// A position in the review log (a sequence number as a string), for
/// `reviewEvents(after:)`. Its own sequence, not the change log's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReviewCursor(pub i64);

/// A position in the review log (a sequence number as a string).
#[Scalar]
impl ScalarType for ReviewCursor {
    fn parse(value: Value) -> InputValueResult<Self> {
        crate::graphql::paging::sequence_cursor(&value).map(ReviewCursor).ok_or_else(|| {
            InputValueError::custom(format!("{value} is not a review cursor (a non-negative integer as a string)"))
        })
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

/// Where a queued entity stands.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(name = "ReviewStatus", remote = "catalog_store::ReviewStatus")]
pub enum ReviewStatusValue {
    /// Waiting for a decision.
    Pending,
    /// Refused: it stays out of the catalog until its source changes it
    /// (then it waits again) or removes it.
    Rejected,
}

/// Why an entity waits.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
pub enum ReviewReasonValue {
    /// The catalog does not hold it yet.
    New,
    /// Its source names a new owner; the catalog keeps the current version
    /// until the change is approved.
    OwnerChange,
}

/// What happened in the review queue.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(name = "ReviewEventKind", remote = "catalog_store::ReviewEventKind")]
pub enum ReviewEventKindValue {
    Queued,
    Approved,
    Rejected,
    /// Its source removed it, or it no longer needs review.
    Withdrawn,
}

/// An entity waiting for review (or rejected), as its source offers it now.
pub struct PendingEntityValue {
    record: PendingRecord,
    may_decide: bool,
}

#[Object(name = "PendingEntity")]
impl PendingEntityValue {
    async fn entity_ref(&self) -> String {
        self.record.entity_ref.to_string()
    }
    async fn kind(&self) -> String {
        self.record.entity["kind"].as_str().unwrap_or_default().to_owned()
    }
    async fn name(&self) -> &str {
        self.record.entity_ref.name()
    }
    async fn namespace(&self) -> &str {
        self.record.entity_ref.namespace()
    }
    async fn title(&self) -> Option<String> {
        self.record.entity["metadata"]["title"].as_str().map(str::to_owned)
    }
    async fn reason(&self) -> ReviewReasonValue {
        match self.record.reason {
            ReviewReason::New => ReviewReasonValue::New,
            ReviewReason::OwnerChange { .. } => ReviewReasonValue::OwnerChange,
        }
    }
    /// The owner the queued version names.
    async fn owner(&self) -> Option<String> {
        self.record.owner.as_ref().map(ToString::to_string)
    }
    /// For an owner change: the owner the catalog holds now.
    async fn previous_owner(&self) -> Option<String> {
        match &self.record.reason {
            ReviewReason::OwnerChange { previous } => previous.as_ref().map(ToString::to_string),
            ReviewReason::New => None,
        }
    }
    /// The admission policy that holds it.
    async fn policy(&self) -> &str {
        &self.record.policy
    }
    async fn provider(&self) -> &str {
        &self.record.provider
    }
    async fn location(&self) -> Option<&str> {
        self.record.location.as_deref()
    }
    async fn status(&self) -> ReviewStatusValue {
        self.record.status.into()
    }
    /// The queued version's content hash: pass it to `approveEntity(etag:)`
    /// so that the decision applies to the version reviewed.
    async fn etag(&self) -> &str {
        &self.record.etag
    }
    /// The whole entity as its source offers it.
    async fn raw(&self) -> Json<serde_json::Value> {
        Json(self.record.entity.clone())
    }
    async fn queued_at(&self) -> DateTime<Utc> {
        self.record.queued_at
    }
    /// When its source last offered a different version.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.record.updated_at
    }
    async fn decided_by(&self) -> Option<&str> {
        self.record.decided_by.as_deref()
    }
    async fn decided_at(&self) -> Option<DateTime<Utc>> {
        self.record.decided_at
    }
    async fn note(&self) -> Option<&str> {
        self.record.note.as_deref()
    }
    /// Whether the caller may approve or reject it.
    async fn may_decide(&self) -> bool {
        self.may_decide
    }
}

/// One page of the review queue, in queueing order.
#[derive(SimpleObject)]
pub struct PendingEntityPage {
    pub entities: Vec<PendingEntityValue>,
    /// Pass to `pendingEntities(after:)` for the next page; null on the last.
    pub end_cursor: Option<String>,
    pub has_next_page: bool,
}

/// What a decision did.
#[derive(SimpleObject)]
pub struct ReviewDecisionPayload {
    pub entity_ref: String,
    pub decision: ReviewEventKindValue,
    pub decided_by: String,
    pub decided_at: DateTime<Utc>,
    pub note: Option<String>,
    /// The entity as the catalog holds it now: the approved version, or
    /// (after a rejection) the version it kept, if any.
    pub entity: Option<EntityValue>,
}

/// One event of the review log.
#[derive(SimpleObject)]
pub struct ReviewEventValue {
    pub cursor: ReviewCursor,
    pub entity_ref: String,
    pub event: ReviewEventKindValue,
    /// Who: a principal as the audit log names it, or `provider:KEY`.
    pub principal: String,
    pub note: Option<String>,
    pub time: DateTime<Utc>,
}

impl From<ReviewEvent> for ReviewEventValue {
    fn from(event: ReviewEvent) -> Self {
        Self {
            cursor: ReviewCursor(event.sequence),
            entity_ref: event.entity_ref.to_string(),
            event: event.event.into(),
            principal: event.principal,
            note: event.note,
            time: event.time,
        }
    }
}

/// Who the request's principal may decide for: everything with
/// `entity.approve`; otherwise, where a policy lets owning groups' members
/// decide, the groups it is in (by the JWT's `groups` claim, or the
/// catalog's memberships of the User its subject names). Worked out once
/// per request.
struct Decider {
    approver: bool,
    groups: std::collections::HashSet<EntityRef>,
    /// What the principal may read: a queued entity it could not read once
    /// stored stays hidden from it here too.
    scope: crate::auth::policy::ReadScope,
}

impl Decider {
    async fn of(ctx: &Context<'_>) -> Result<Self, ApiError> {
        let approver = require_permission(ctx, Permission::EntityApprove).is_ok();
        let mut groups = std::collections::HashSet::new();
        if let (false, Some(Principal::Jwt { subject, groups: claimed, .. })) = (approver, ctx.data_opt::<Principal>())
        {
            groups.extend(
                claimed.iter().filter_map(|group| EntityRef::parse_with_defaults(group, Some("Group"), "default").ok()),
            );
            let user = EntityRef::parse_with_defaults(subject, Some("User"), "default")
                .ok()
                .filter(|user| user.kind() == "user");
            if let Some(user) = user {
                groups.extend(catalog(ctx)?.owner_closure(&FilterField::OwnedByMember, &[user]).await?);
            }
        }
        Ok(Self { approver, groups, scope: read_scope(ctx)? })
    }

    /// Whether it may decide about `record`. For an owner change the group
    /// that answers is the current owner's, not the one the change names:
    /// whoever edits the source must not approve their own claim.
    fn may(&self, record: &PendingRecord) -> bool {
        if self.scope.is_restricted() {
            let readable = serde_json::from_value::<catalog_domain::Entity>(record.entity.clone())
                .is_ok_and(|entity| self.scope.allows_entity(&record.entity_ref, &entity));
            if !readable {
                return false;
            }
        }
        if self.approver {
            return true;
        }
        let answering = match &record.reason {
            ReviewReason::OwnerChange { previous } => previous.as_ref(),
            ReviewReason::New => record.owner.as_ref(),
        };
        record.owner_may_approve && answering.is_some_and(|owner| self.groups.contains(owner))
    }
}

/// Lets through principals that hold `entity.approve` and those that may
/// be members of an owning group (a JWT's); the resolver decides for the
/// entity at hand. Others are refused and audited as any mutation is.
struct ReviewGuard;

impl Guard for ReviewGuard {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        if matches!(ctx.data_opt::<Principal>(), Some(Principal::Jwt { .. })) {
            return Ok(());
        }
        require_permission(ctx, Permission::EntityApprove).map_err(|error| refused(ctx, error))
    }
}

async fn decide(
    ctx: &Context<'_>,
    text: &str,
    decision: Decision,
    etag: Option<String>,
    note: Option<String>,
) -> Result<ReviewDecisionPayload> {
    let entity_ref = parse_ref(text, None, "default")?;
    if let Some(note) = &note
        && note.chars().count() > MAX_NOTE_CHARS
    {
        return Err(ApiError::BadUserInput(format!("note: at most {MAX_NOTE_CHARS} characters")).into());
    }
    let decider = Decider::of(ctx).await?;
    let refusal = |owner_may_approve: bool| {
        ApiError::Forbidden(format!(
            "deciding about {entity_ref} needs the entity.approve permission{}",
            if owner_may_approve { ", or membership of its owning group" } else { "" }
        ))
    };
    let not_queued = || ApiError::NotFound(format!("no entity {entity_ref} waits for review"));
    let Some(record) = catalog(ctx)?.queued(&entity_ref).await.map_err(ApiError::from)? else {
        // Only reviewers learn what is queued.
        return Err(if decider.approver { not_queued().into() } else { refused(ctx, refusal(true)) });
    };
    if !decider.may(&record) {
        return Err(refused(ctx, refusal(record.owner_may_approve)));
    }
    // The decision applies to the version the permission was checked on.
    if let Some(etag) = &etag
        && *etag != record.etag
    {
        return Err(changed(&entity_ref, &record.etag).into());
    }
    let etag = Some(record.etag.clone());
    let (operation, result) = match decision {
        Decision::Approve => ("entity.approve", "approved"),
        Decision::Reject => ("entity.reject", "rejected"),
    };
    let entry = audit_entry(ctx, operation, vec![entity_ref.to_string()], result);
    let outcome = snapshot_writer(ctx)?
        .decide(&entity_ref, decision, etag.as_deref(), note, &entry)
        .await
        .map_err(ApiError::from)?;
    let record = match outcome {
        DecisionOutcome::Decided { record, .. } => *record,
        DecisionOutcome::NotQueued => return Err(not_queued().into()),
        DecisionOutcome::Changed { current_etag } => return Err(changed(&entity_ref, &current_etag).into()),
        DecisionOutcome::Taken => {
            return Err(ApiError::BadUserInput(format!(
                "{entity_ref} is held by another source now; approving it would be a conflict"
            ))
            .into());
        }
    };
    let stored = catalog(ctx)?.entity_by_ref(&entity_ref).await.map_err(ApiError::from)?;
    Ok(ReviewDecisionPayload {
        entity_ref: entity_ref.to_string(),
        decision: match decision {
            Decision::Approve => ReviewEventKindValue::Approved,
            Decision::Reject => ReviewEventKindValue::Rejected,
        },
        decided_by: record.decided_by.unwrap_or_default(),
        decided_at: record.decided_at.unwrap_or_else(Utc::now),
        note: record.note,
        entity: stored.map(|stored| EntityValue::from(std::sync::Arc::new(stored))),
    })
}

/// The queued version is not the one the reviewer saw.
fn changed(entity_ref: &EntityRef, current_etag: &str) -> ApiError {
    ApiError::BadUserInput(format!(
        "etag: {entity_ref} changed in its source since it was reviewed (the queued version's etag is now \
         {current_etag}); review it again"
    ))
}

#[derive(Default)]
pub struct ReviewQuery;

#[Object]
impl ReviewQuery {
    /// The review queue, in queueing order: every entry for holders of
    /// `entity.approve`, otherwise the entries the caller may decide about
    /// (as a member of the owning group, where the policy allows it); under
    /// a read policy, only entries it would let the caller read once stored.
    async fn pending_entities(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(ReviewStatusValue::Pending)")] status: Option<ReviewStatusValue>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<PendingEntityPage> {
        if !(1..=MAX_QUEUE_PAGE).contains(&first) {
            return Err(ApiError::BadUserInput(format!("first: between 1 and {MAX_QUEUE_PAGE}")).into());
        }
        let mut cursor = match after {
            Some(text) => Some(text.parse::<i64>().map_err(|_| {
                ApiError::BadUserInput(format!("after: {text:?} is not a cursor from pendingEntities(endCursor)"))
            })?),
            None => None,
        };
        let status = status.map(ReviewStatus::from);
        let decider = Decider::of(ctx).await?;
        let wanted = usize::try_from(first).unwrap_or_default();
        let mut entities = Vec::new();
        // Read past the entries the caller may not decide about, a page at a time.
        loop {
            let page = catalog(ctx)?
                .review_queue(status, cursor, u64::try_from(MAX_QUEUE_PAGE).unwrap_or(100))
                .await
                .map_err(ApiError::from)?;
            let last_page = page.len() < usize::try_from(MAX_QUEUE_PAGE).unwrap_or_default();
            for record in page {
                if entities.len() == wanted {
                    return Ok(PendingEntityPage {
                        end_cursor: cursor.map(|id| id.to_string()),
                        entities,
                        has_next_page: true,
                    });
                }
                cursor = Some(record.id);
                if decider.may(&record) {
                    entities.push(PendingEntityValue { record, may_decide: true });
                }
            }
            if last_page {
                return Ok(PendingEntityPage { end_cursor: None, entities, has_next_page: false });
            }
        }
    }
}

#[derive(Default)]
pub struct ReviewMutation;

#[Object]
impl ReviewMutation {
    /// Admits a queued entity: the version waiting is written to the
    /// catalog as its source offers it (a new entity, or the new owner),
    /// with a change in the change feed, an audit record and an `APPROVED`
    /// review event. With `etag`, only if that is still the version
    /// waiting.
    #[graphql(guard = "ReviewGuard")]
    async fn approve_entity(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "ref")] entity_ref: String,
        etag: Option<String>,
        note: Option<String>,
    ) -> Result<ReviewDecisionPayload> {
        decide(ctx, &entity_ref, Decision::Approve, etag, note).await
    }

    /// Refuses a queued entity: it stays out of the catalog (a known one
    /// keeps its current owner) until its source changes it, when it waits
    /// again. Audited, with a `REJECTED` review event.
    #[graphql(guard = "ReviewGuard")]
    async fn reject_entity(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "ref")] entity_ref: String,
        etag: Option<String>,
        note: Option<String>,
    ) -> Result<ReviewDecisionPayload> {
        decide(ctx, &entity_ref, Decision::Reject, etag, note).await
    }
}

#[derive(Default)]
pub struct ReviewSubscription;

#[Subscription]
impl ReviewSubscription {
    /// The review queue's events in order (queued, approved, rejected,
    /// withdrawn), on whichever replica they happen. With `after`, the
    /// events after that cursor are replayed first. Needs `entity.approve`.
    async fn review_events(
        &self,
        ctx: &Context<'_>,
        after: Option<ReviewCursor>,
    ) -> Result<impl Stream<Item = Result<ReviewEventValue>> + use<>> {
        require_permission(ctx, Permission::EntityApprove)?;
        let catalog = catalog(ctx)?.clone();
        let mut commits = change_feed(ctx)?.commits();
        let start = match after {
            Some(after) => after.0,
            None => catalog.latest_review_sequence().await.map_err(ApiError::from)?,
        };
        Ok(async_stream::stream! {
            let mut cursor = start;
            loop {
                let batch = match catalog.review_events_after(cursor, READ_BATCH).await {
                    Ok(batch) => batch,
                    Err(error) => {
                        yield Err(ApiError::from(error).into());
                        return;
                    }
                };
                let full = batch.len() as u64 == READ_BATCH;
                for event in batch {
                    cursor = event.sequence;
                    yield Ok(ReviewEventValue::from(event));
                }
                if full {
                    continue;
                }
                tokio::select! {
                    changed = commits.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(POLL_EVERY) => {}
                }
            }
        })
    }
}
