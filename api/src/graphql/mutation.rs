//! The mutation root: the changes a client may ask for. Every field carries a
//! [`PermissionGuard`], which async-graphql runs before the resolver (and
//! before anything the resolver would read); a test walks the schema and
//! fails on a mutation field that a principal without permissions can reach.

use std::sync::Arc;

use async_graphql::{Context, Guard, Object, Result, SimpleObject};
use catalog_domain::EntityRef;
use catalog_ingestion::{ProviderRun, RunError};
use catalog_store::{AuditDecision, AuditEntry, StoredEntity};

use super::context::{
    access_store, catalog, engine, parse_ref, read_scope, require_permission, require_unrestricted, snapshot_writer,
};
use super::entity::EntityValue;
use super::error::ApiError;
use crate::auth::RefusalLog;
use crate::auth::identity::{Permission, Principal};

/// The request id of the HTTP request or WebSocket operation, for the audit log.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Refuses the field unless the principal holds `0` (or admin). A refusal
/// is written to the audit log with the field's name and its `ref` or
/// `name` argument (never other arguments: they may carry secrets).
pub(crate) struct PermissionGuard(pub Permission);

impl Guard for PermissionGuard {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        require_permission(ctx, self.0).map_err(|error| refused(ctx, error))
    }
}

/// Writes a refused mutation to the audit log (with the field's name and
/// its `ref` or `name` argument, never other arguments: they may carry
/// secrets) and returns the error for the client.
pub(crate) fn refused(ctx: &Context<'_>, error: ApiError) -> async_graphql::Error {
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
    error.into()
}

/// An audit entry for this request's principal.
pub(crate) fn audit_entry(ctx: &Context<'_>, operation: &str, targets: Vec<String>, result: &str) -> AuditEntry {
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

/// What one provider run changed. The counts are the whole provider's:
/// null for principals whose reads a policy limits, since they would count
/// entities hidden from them.
#[derive(SimpleObject)]
pub struct RefreshPayload {
    /// The provider's key, e.g. `file`.
    pub provider: String,
    pub added: Option<u64>,
    pub updated: Option<u64>,
    pub removed: Option<u64>,
    /// Removals not applied: the source could not be read in full, or the
    /// run would have removed more than the provider allows at once (see
    /// `refreshProvider(force:)`).
    pub held_back: Option<u64>,
    pub unchanged: Option<u64>,
    /// Documents that were invalid (their entities keep the last good version).
    pub invalid: Option<u64>,
    /// Refs claimed by two sources.
    pub conflicts: Option<u64>,
    /// Locations that could not be read (their entities are kept).
    pub location_errors: Option<u64>,
    /// `refreshEntity` only: the entity as it is after the run, or null when
    /// its source no longer offers it.
    pub entity: Option<EntityValue>,
}

impl RefreshPayload {
    fn new(run: ProviderRun, entity: Option<EntityValue>, counts_visible: bool) -> Self {
        let count = |n: usize| counts_visible.then(|| u64::try_from(n).unwrap_or(u64::MAX));
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

/// The catalog's mutations.
#[derive(Default)]
pub struct CatalogMutation;

#[Object]
impl CatalogMutation {
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
        let entry =
            audit_entry(ctx, "entity.refresh", vec![entity_ref.to_string(), stored.provider.clone()], "requested");
        record(ctx, &entry).await?;
        let run = run_provider(ctx, &stored.provider, false).await?;
        let after = visible_entity(ctx, &entity_ref).await?;
        let counts_visible = !read_scope(ctx)?.is_restricted();
        Ok(RefreshPayload::new(run, after.map(|stored| EntityValue::from(Arc::new(stored))), counts_visible))
    }

    /// Runs one provider now (its key, as in `locations`, e.g. `file`) and
    /// returns what changed. Needs `entity.refresh`; with `force`, which
    /// applies removals the provider's safety valve would hold back,
    /// `entity.delete` as well. Refused to principals whose reads a policy
    /// limits (a provider's run concerns entities hidden from them).
    #[graphql(guard = "PermissionGuard(Permission::EntityRefresh)")]
    async fn refresh_provider(
        &self,
        ctx: &Context<'_>,
        name: String,
        #[graphql(default = false)] force: bool,
    ) -> Result<RefreshPayload> {
        if force {
            require_permission(ctx, Permission::EntityDelete).map_err(|error| refused(ctx, error))?;
        }
        require_unrestricted(ctx, "refreshProvider").map_err(|error| refused(ctx, error))?;
        let keys = engine(ctx)?.provider_keys();
        if !keys.contains(&name) {
            return Err(unknown_provider(&name, &keys).into());
        }
        let operation = if force { "provider.refresh.forced" } else { "provider.refresh" };
        let entry = audit_entry(ctx, operation, vec![name.clone()], "requested");
        record(ctx, &entry).await?;
        let run = run_provider(ctx, &name, force).await?;
        Ok(RefreshPayload::new(run, None, true))
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
        let deleted = snapshot_writer(ctx)?
            .delete_entity(&entity_ref, &entry)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(not_found)?;
        Ok(DeleteEntityPayload { entity_ref: deleted.entity_ref.to_string(), provider: deleted.provider })
    }
}

/// The entity as it is now, unless absent or hidden from the principal
/// (the two look alike). Read past the request's loader, whose cache would
/// answer with the version from before a refresh.
async fn visible_entity(ctx: &Context<'_>, entity_ref: &EntityRef) -> Result<Option<StoredEntity>, ApiError> {
    let stored = catalog(ctx)?.entity_by_ref(entity_ref).await?;
    let scope = read_scope(ctx)?;
    Ok(stored.filter(|stored| scope.allows(stored)))
}

fn unknown_provider(key: &str, keys: &[String]) -> ApiError {
    ApiError::NotFound(format!("no provider {key:?}; the configured providers are {}", keys.join(", ")))
}

async fn run_provider(ctx: &Context<'_>, key: &str, force: bool) -> Result<ProviderRun, ApiError> {
    let engine = engine(ctx)?;
    // A task of its own: the request's timeout may drop this future, but a
    // run cut off between its read and its apply would waste the read (the
    // apply itself is one transaction either way).
    let run = {
        let (engine, key) = (engine.clone(), key.to_owned());
        tokio::spawn(async move { engine.run_provider_with(&key, force).await })
    };
    let outcome = run.await.map_err(|error| {
        tracing::error!(%error, "a provider run panicked");
        ApiError::Internal
    })?;
    match outcome {
        Ok(Some(run)) => Ok(run),
        Ok(None) => Err(unknown_provider(key, &engine.provider_keys())),
        Err(RunError::Aborted) => Err(ApiError::Unavailable(RunError::Aborted.to_string())),
        Err(RunError::Store(error)) => Err(error.into()),
    }
}

async fn record(ctx: &Context<'_>, entry: &AuditEntry) -> Result<(), ApiError> {
    access_store(ctx)?.record_audit(entry).await.map_err(ApiError::from)
}
