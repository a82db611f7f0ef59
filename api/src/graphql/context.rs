//! What a resolver reads from the request's context: the store handles of the
//! database it reads, the read scope, the principal's grants, and entity refs
//! parsed where they enter. Every accessor fails closed: a schema run without
//! the data the HTTP and WebSocket layers add answers an internal error, never
//! an unscoped read.

use std::sync::Arc;

use async_graphql::{Context, Result};
use catalog_domain::EntityRef;
use catalog_store::{AccessStore, Catalog, ChangeFeed, SnapshotWriter, StoredEntity, TaskStore};

use super::StoreHandles;
use super::error::ApiError;
use super::loaders::{EdgesLoader, EntityLoader, RelatedLoader, RequestBudget, RequestLoader, ScoresLoader};
use crate::auth::Granted;
use crate::auth::identity::Permission;
use crate::auth::policy::{ReadScope, SharedScope};
use crate::hub::ChangeHub;

/// A value the schema or the request carries. Missing only when the schema
/// runs without the layers that add it: fail closed then.
fn required<'a, T: std::any::Any + Send + Sync>(ctx: &Context<'a>) -> Result<&'a T, ApiError> {
    ctx.data_opt::<T>().ok_or_else(|| {
        tracing::error!(missing = std::any::type_name::<T>(), "a request ran without data its resolvers need");
        ApiError::Internal
    })
}

/// The request's entity loader (`with_loaders`).
pub(crate) fn entity_loader<'a>(ctx: &Context<'a>) -> Result<&'a RequestLoader<EntityLoader>, ApiError> {
    required(ctx)
}

/// The request's loader of related entities.
pub(crate) fn related_loader<'a>(ctx: &Context<'a>) -> Result<&'a RequestLoader<RelatedLoader>, ApiError> {
    required(ctx)
}

/// The request's loader of entities' scores.
pub(crate) fn scores_loader<'a>(ctx: &Context<'a>) -> Result<&'a RequestLoader<ScoresLoader>, ApiError> {
    required(ctx)
}

/// Governance results of the database the request reads.
pub(crate) fn score_store<'a>(ctx: &Context<'a>) -> Result<&'a catalog_store::ScoreStore, ApiError> {
    store_handles(ctx).map(|handles| &handles.scores)
}

/// The request's loader of relation edges.
pub(crate) fn edges_loader<'a>(ctx: &Context<'a>) -> Result<&'a RequestLoader<EdgesLoader>, ApiError> {
    required(ctx)
}

/// What the request may still load and walk.
pub(crate) fn budget<'a>(ctx: &Context<'a>) -> Result<&'a Arc<RequestBudget>, ApiError> {
    required(ctx)
}

/// The ingestion engine: providers' state, refreshes, leadership.
pub(crate) fn engine<'a>(ctx: &Context<'a>) -> Result<&'a catalog_ingestion::Engine, ApiError> {
    required(ctx)
}

/// The scaffolder's task service.
pub(crate) fn tasks<'a>(ctx: &Context<'a>) -> Result<&'a catalog_scaffolder::TaskService, ApiError> {
    required(ctx)
}

/// The process's change hub, which subscriptions follow.
pub(crate) fn change_hub<'a>(ctx: &Context<'a>) -> Result<&'a Arc<ChangeHub>, ApiError> {
    required(ctx)
}

/// The store handles of the database the request reads. Missing only when
/// the schema runs without its services: fail closed then.
pub(crate) fn store_handles<'a>(ctx: &Context<'a>) -> Result<&'a StoreHandles, ApiError> {
    ctx.data_opt::<Arc<StoreHandles>>().map(|handles| &**handles).ok_or_else(|| {
        tracing::error!("a request ran without store handles");
        ApiError::Internal
    })
}

/// The catalog the request reads.
pub(crate) fn catalog<'a>(ctx: &Context<'a>) -> Result<&'a Catalog, ApiError> {
    store_handles(ctx).map(|handles| &handles.catalog)
}

/// The change log the request reads.
pub(crate) fn change_feed<'a>(ctx: &Context<'a>) -> Result<&'a ChangeFeed, ApiError> {
    store_handles(ctx).map(|handles| &handles.change_feed)
}

/// The scaffolder tasks the request reads.
pub(crate) fn task_store<'a>(ctx: &Context<'a>) -> Result<&'a TaskStore, ApiError> {
    store_handles(ctx).map(|handles| &handles.tasks)
}

/// Tokens and the audit log of the database the request reads.
pub(crate) fn access_store<'a>(ctx: &Context<'a>) -> Result<&'a AccessStore, ApiError> {
    store_handles(ctx).map(|handles| &handles.access)
}

/// The primary's snapshot writer, for mutations.
pub(crate) fn snapshot_writer<'a>(ctx: &Context<'a>) -> Result<&'a SnapshotWriter, ApiError> {
    ctx.data_opt::<SnapshotWriter>().ok_or_else(|| {
        tracing::error!("a mutation ran without the snapshot writer");
        ApiError::Internal
    })
}

/// What the request may read. Missing only when the schema runs outside the
/// HTTP and WebSocket layers, which always add it: fail closed then.
pub(crate) fn shared_scope<'a>(ctx: &Context<'a>) -> Result<&'a SharedScope, ApiError> {
    ctx.data_opt::<SharedScope>().ok_or_else(|| {
        tracing::error!("a request ran without a read scope");
        ApiError::Internal
    })
}

/// What the request may read now.
pub(crate) fn read_scope(ctx: &Context<'_>) -> Result<ReadScope, ApiError> {
    shared_scope(ctx).map(SharedScope::current)
}

/// Refuses principals without `permission` (or admin).
pub(crate) fn require_permission(ctx: &Context<'_>, permission: Permission) -> Result<(), ApiError> {
    let granted = ctx.data_opt::<Granted>().map(|granted| granted.0.as_slice()).unwrap_or_default();
    if granted.contains(&permission) || granted.contains(&Permission::Admin) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!("this needs the {} permission", permission.name())))
}

/// Refuses `what` to principals whose reads a policy limits, where the
/// result cannot yet be filtered entity by entity.
pub(crate) fn require_unrestricted(ctx: &Context<'_>, what: &str) -> Result<(), ApiError> {
    if read_scope(ctx)?.is_restricted() {
        return Err(ApiError::Forbidden(format!("{what} is not available to principals whose reads a policy limits")));
    }
    Ok(())
}

pub(crate) fn parse_ref(
    text: &str,
    default_kind: Option<&str>,
    default_namespace: &str,
) -> Result<EntityRef, ApiError> {
    EntityRef::parse_with_defaults(text, default_kind, default_namespace)
        .map_err(|error| ApiError::BadUserInput(format!("{text:?} is not an entity reference: {error}")))
}

/// The stored entity's body, decoded on first use. A relation target read
/// without its body (`TargetBodies::Skip`) gets it through the
/// EntityLoader, batched with the other targets whose fields are asked for.
pub(crate) async fn body<'a>(
    ctx: &Context<'_>,
    stored: &'a StoredEntity,
) -> Result<&'a catalog_domain::Entity, ApiError> {
    if !stored.has_body()
        && let Some(whole) = entity_loader(ctx)?.load_one(stored.entity_ref.clone()).await?
    {
        return Ok(stored.fill_body(&whole)?);
    }
    Ok(stored.entity()?)
}
