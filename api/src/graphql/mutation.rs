//! The mutation root: the changes a client may ask for. Every field carries a
//! [`PermissionGuard`], which async-graphql runs before the resolver (and
//! before anything the resolver would read); a test walks the schema and
//! fails on a mutation field that a principal without permissions can reach.

use std::sync::Arc;

use async_graphql::{Context, Guard, Object, Result, SimpleObject};
use catalog_domain::EntityRef;
use catalog_ingestion::{Engine, ProviderRun, RunError};
use catalog_store::{AuditDecision, AuditEntry, StoredEntity};

use super::entity::EntityValue;
use super::error::ApiError;
use super::{parse_ref, read_scope, require_permission, store};
use crate::auth::{Permission, Principal, RefusalLog};

/// The request id of the HTTP request or WebSocket operation, for the audit log.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Refuses the field unless the principal holds `0` (or admin). A refusal
/// is written to the audit log with the field's name and its `ref` or
/// `name` argument (never other arguments: they may carry secrets).
pub(crate) struct PermissionGuard(pub Permission);

impl Guard for PermissionGuard {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        let Err(error) = require_permission(ctx, self.0) else {
            return Ok(());
        };
        if let Some(refusals) = ctx.data_opt::<Arc<RefusalLog>>() {
            let field = ctx.field();
            let targets = field
                .arguments()
                .unwrap_or_default()
                .into_iter()
                .filter(|(name, _)| name.as_str() == "ref" || name.as_str() == "name")
                .filter_map(|(_, value)| match value {
                    async_graphql::Value::String(text) => Some(text),
                    _ => None,
                })
                .collect();
            let mut entry = audit_entry(ctx, field.name(), targets, "refused");
            entry.decision = AuditDecision::Denied;
            entry.result = error.message();
            refusals.record(entry);
        }
        Err(error.into())
    }
}

/// An audit entry for this request's principal.
fn audit_entry(ctx: &Context<'_>, operation: &str, targets: Vec<String>, result: &str) -> AuditEntry {
    let principal = ctx.data_opt::<Principal>();
    AuditEntry {
        principal: principal.map_or_else(|| "unknown".to_owned(), Principal::label),
        token_id: principal.and_then(Principal::token_id),
        operation: operation.to_owned(),
        targets,
        decision: AuditDecision::Allowed,
        result: result.to_owned(),
        request_id: ctx.data_opt::<RequestId>().map(|id| id.0.clone()),
    }
}

/// What one provider run changed.
#[derive(SimpleObject)]
pub struct RefreshPayload {
    /// The provider's key, e.g. `file`.
    pub provider: String,
    pub added: u64,
    pub updated: u64,
    pub removed: u64,
    /// Removals not applied: the source could not be read in full, or the
    /// run would have removed more than the provider allows at once (see
    /// `refreshProvider(force:)`).
    pub held_back: u64,
    pub unchanged: u64,
    /// Documents that were invalid (their entities keep the last good version).
    pub invalid: u64,
    /// Refs claimed by two sources.
    pub conflicts: u64,
    /// Locations that could not be read (their entities are kept).
    pub location_errors: u64,
    /// `refreshEntity` only: the entity as it is after the run, or null when
    /// its source no longer offers it.
    pub entity: Option<EntityValue>,
}

impl RefreshPayload {
    fn new(run: ProviderRun, entity: Option<EntityValue>) -> Self {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Self {
            provider: run.provider,
            added: count(run.summary.added),
            updated: count(run.summary.updated),
            removed: count(run.summary.removed),
            held_back: count(run.summary.held_back),
            unchanged: count(run.summary.unchanged),
            invalid: count(run.summary.invalid),
            conflicts: count(run.summary.conflicts),
            location_errors: count(run.n_location_errors),
            entity,
        }
    }
}

/// The entity `deleteEntity` removed.
#[derive(SimpleObject)]
pub struct DeleteEntityPayload {
    pub entity_ref: String,
    /// The provider that held it. It adds the entity back at its next run
    /// if the entity is still in its source: delete what a source no longer
    /// offers (or cannot be read any more), not what it still does.
    pub provider: String,
}

/// Every change a client can ask for.
pub struct MutationRoot;

#[Object]
impl MutationRoot {
    /// Re-reads the source of one entity now (its whole provider run, as the
    /// next scheduled run would) and returns what changed with the entity as
    /// it is afterwards. Needs `entity.refresh`; an entity the principal may
    /// not read is NOT_FOUND, like one that does not exist.
    #[graphql(guard = "PermissionGuard(Permission::EntityRefresh)")]
    async fn refresh_entity(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "ref")] entity_ref: String,
    ) -> Result<RefreshPayload> {
        let entity_ref = parse_ref(&entity_ref, None, "default")?;
        let not_found = || ApiError::NotFound(format!("no entity {entity_ref}"));
        let stored = visible_entity(ctx, &entity_ref).await?.ok_or_else(not_found)?;
        let run = run_provider(ctx, &stored.provider, false).await?;
        let after = visible_entity(ctx, &entity_ref).await?;
        let entry = audit_entry(ctx, "entity.refresh", vec![entity_ref.to_string(), stored.provider], &summary(&run));
        record(ctx, &entry).await?;
        Ok(RefreshPayload::new(run, after.map(|stored| EntityValue::from(Arc::new(stored)))))
    }

    /// Runs one provider now (its key, as in `locations`, e.g. `file`) and
    /// returns what changed. Needs `entity.refresh`; with `force`, which
    /// applies removals the provider's safety valve would hold back,
    /// `entity.delete` as well.
    #[graphql(guard = "PermissionGuard(Permission::EntityRefresh)")]
    async fn refresh_provider(
        &self,
        ctx: &Context<'_>,
        name: String,
        #[graphql(default = false)] force: bool,
    ) -> Result<RefreshPayload> {
        if force {
            require_permission(ctx, Permission::EntityDelete)?;
        }
        let run = run_provider(ctx, &name, force).await?;
        let operation = if force { "provider.refresh.forced" } else { "provider.refresh" };
        let entry = audit_entry(ctx, operation, vec![name], &summary(&run));
        record(ctx, &entry).await?;
        Ok(RefreshPayload::new(run, None))
    }

    /// Removes one entity from the catalog now, with a REMOVED change and an
    /// audit record in one transaction. Meant for entities whose source no
    /// longer offers them but could not say so (a location that fails to
    /// read keeps its entities). Needs `entity.delete`; an entity the
    /// principal may not read is NOT_FOUND.
    #[graphql(guard = "PermissionGuard(Permission::EntityDelete)")]
    async fn delete_entity(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "ref")] entity_ref: String,
    ) -> Result<DeleteEntityPayload> {
        let entity_ref = parse_ref(&entity_ref, None, "default")?;
        let not_found = || ApiError::NotFound(format!("no entity {entity_ref}"));
        visible_entity(ctx, &entity_ref).await?.ok_or_else(not_found)?;
        let entry = audit_entry(ctx, "entity.delete", vec![entity_ref.to_string()], "deleted");
        // Gone between the read and the write: another request deleted it.
        let deleted = store(ctx)
            .delete_entity(&entity_ref.to_string(), &entry)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(not_found)?;
        Ok(DeleteEntityPayload { entity_ref: deleted.entity_ref, provider: deleted.provider })
    }
}

/// The entity as it is now, unless absent or hidden from the principal
/// (the two look alike). Read past the request's loader, whose cache would
/// answer with the version from before a refresh.
async fn visible_entity(ctx: &Context<'_>, entity_ref: &EntityRef) -> Result<Option<StoredEntity>, ApiError> {
    let stored = store(ctx).entity_by_ref(entity_ref).await?;
    let scope = read_scope(ctx)?;
    Ok(stored.filter(|stored| scope.allows(stored)))
}

async fn run_provider(ctx: &Context<'_>, key: &str, force: bool) -> Result<ProviderRun, ApiError> {
    let engine = ctx.data::<Engine>().map_err(|_| {
        tracing::error!("the schema runs without an ingestion engine");
        ApiError::Internal
    })?;
    match engine.run_provider_with(key, force).await {
        Ok(Some(run)) => Ok(run),
        Ok(None) => Err(ApiError::NotFound(format!(
            "no provider {key:?}; the configured providers are {}",
            engine.provider_keys().join(", ")
        ))),
        Err(RunError::Aborted) => Err(ApiError::Unavailable(RunError::Aborted.to_string())),
        Err(RunError::Store(error)) => Err(error.into()),
    }
}

fn summary(run: &ProviderRun) -> String {
    let summary = &run.summary;
    format!("{} added, {} updated, {} removed", summary.added, summary.updated, summary.removed)
}

async fn record(ctx: &Context<'_>, entry: &AuditEntry) -> Result<(), ApiError> {
    store(ctx).record_audit(entry).await.map_err(ApiError::from)
}
