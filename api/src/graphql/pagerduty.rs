//! PagerDuty on entities: `pagerDuty` (the service an entity's
//! `pagerduty.com/service-id` or `pagerduty.com/integration-key` maps it
//! to), `pagerDutyServices` on Groups (their `pagerduty.com/team-id` team's
//! services) and `onCall` on impact owners. Services come from the
//! provider's in-memory directory; who is on call and the open incidents
//! are read live through the provider's short single-flight cache. Each
//! live field costs one of the request's PagerDuty lookups, and an upstream
//! failure is an UNAVAILABLE error, never an empty list that would say
//! nobody is on call.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_graphql::{Context, Object, Result, SimpleObject};
use catalog_domain::EntityRef;
use catalog_ingestion::{
    Engine, INTEGRATION_KEY_ANNOTATION, LATEST_INCIDENTS, PagerDutyError, PagerDutyService, PagerDutyView,
    SERVICE_ID_ANNOTATION, SourceError, TEAM_ID_ANNOTATION,
};
use catalog_store::{StoredEntity, Walk};
use chrono::{DateTime, Utc};

use super::error::ApiError;
use crate::error_code::Limit;
use crate::graphql::context::{budget, entity_loader};

/// The PagerDuty providers' view, when any is configured.
fn view(ctx: &Context<'_>) -> Option<PagerDutyView> {
    ctx.data_opt::<Engine>()?.pagerduty()
}

/// What a client is told when PagerDuty data cannot be served (the cause,
/// with the upstream URL, goes to the log).
fn unavailable(error: PagerDutyError) -> ApiError {
    tracing::warn!(error = %error, "PagerDuty data cannot be served");
    let message = match &error {
        PagerDutyError::NotRead { .. } => {
            "PagerDuty has not been read yet: the pagerduty provider has not completed a run (see the providers query)"
        }
        PagerDutyError::Source { error: SourceError::Unauthorized { .. }, .. } => {
            "PagerDuty refused the catalog's API key: the pagerduty provider's token must be fixed"
        }
        PagerDutyError::Source { error: SourceError::Unavailable { .. }, .. } => {
            "PagerDuty is unavailable (a timeout, an error on its side or a rate limit): try again shortly"
        }
        PagerDutyError::Source { error: SourceError::Invalid { .. } | SourceError::Conflict { .. }, .. } => {
            "PagerDuty sent an answer the catalog cannot read"
        }
        PagerDutyError::Source { error: SourceError::NotFound, .. } | PagerDutyError::UnknownService { .. } => {
            "PagerDuty no longer knows this service"
        }
    };
    ApiError::Unavailable(message.into())
}

fn lookup(ctx: &Context<'_>) -> Result<(), ApiError> {
    budget(ctx)?.spend_pagerduty_lookup()
}

/// A PagerDuty service.
pub struct PagerDutyServiceValue(Arc<PagerDutyService>);

/// A PagerDuty service: what the provider's last run read, with who is on
/// call and the open incidents read live (cached for a minute by default).
#[Object(name = "PagerDutyService")]
impl PagerDutyServiceValue {
    async fn id(&self) -> &str {
        &self.0.id
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }

    /// The service's page in PagerDuty's web app.
    async fn html_url(&self) -> Option<&str> {
        self.0.html_url.as_deref()
    }

    /// `active`, `warning`, `critical`, `maintenance` or `disabled`.
    async fn status(&self) -> &str {
        &self.0.status
    }

    async fn escalation_policy(&self) -> Option<PagerDutyEscalationPolicy> {
        self.0.escalation_policy.as_ref().map(|policy| PagerDutyEscalationPolicy {
            id: policy.id.clone(),
            name: policy.name.clone(),
            html_url: policy.html_url.clone(),
        })
    }

    async fn teams(&self) -> Vec<PagerDutyTeam> {
        self.0
            .teams
            .iter()
            .map(|team| PagerDutyTeam { id: team.id.clone(), name: team.name.clone(), html_url: team.html_url.clone() })
            .collect()
    }

    /// Who is on call now: the escalation policy's lowest level (the first
    /// paged), one entry per person. An error (UNAVAILABLE) when PagerDuty
    /// cannot be asked: an empty list means nobody is on call.
    async fn on_call(&self, ctx: &Context<'_>) -> Result<Vec<PagerDutyOnCall>> {
        Ok(on_call(ctx, &self.0).await?)
    }

    /// How many incidents are open (triggered or acknowledged).
    async fn open_incident_count(&self, ctx: &Context<'_>) -> Result<u64> {
        lookup(ctx)?;
        let view = view(ctx).ok_or(ApiError::Internal)?;
        Ok(view.incidents(&self.0.id).await.map_err(unavailable)?.count)
    }

    /// The newest open incidents, newest first.
    async fn incidents(&self, ctx: &Context<'_>, #[graphql(default = 5)] first: i32) -> Result<Vec<PagerDutyIncident>> {
        if first < 1 {
            return Err(ApiError::BadUserInput(format!("first must be at least 1, got {first}")).into());
        }
        if first as usize > LATEST_INCIDENTS {
            return Err(ApiError::LimitExceeded {
                limit: Limit::PageSize,
                message: format!("first must be at most {LATEST_INCIDENTS}, got {first}"),
            }
            .into());
        }
        lookup(ctx)?;
        let view = view(ctx).ok_or(ApiError::Internal)?;
        let incidents = view.incidents(&self.0.id).await.map_err(unavailable)?;
        Ok(incidents
            .latest
            .iter()
            .take(first as usize)
            .map(|incident| PagerDutyIncident {
                id: incident.id.clone(),
                number: incident.number,
                title: incident.title.clone(),
                status: incident.status.clone(),
                urgency: incident.urgency.clone(),
                created_at: incident.created_at,
                html_url: incident.html_url.clone(),
            })
            .collect())
    }
}

/// A service's escalation policy.
#[derive(SimpleObject)]
pub struct PagerDutyEscalationPolicy {
    pub id: String,
    pub name: String,
    pub html_url: Option<String>,
}

/// A PagerDuty team.
#[derive(SimpleObject)]
pub struct PagerDutyTeam {
    pub id: String,
    pub name: String,
    pub html_url: Option<String>,
}

/// Someone on call for a service.
#[derive(SimpleObject, Clone)]
pub struct PagerDutyOnCall {
    pub user_name: String,
    pub email: Option<String>,
    /// The schedule that puts them on call; null when the escalation policy
    /// names them directly.
    pub schedule: Option<String>,
    /// The escalation level (1 is paged first).
    pub level: u32,
    /// When their shift ends; null: it does not.
    pub until: Option<DateTime<Utc>>,
    /// The service they are on call for.
    pub service_id: String,
    pub service_name: String,
}

/// An open incident.
#[derive(SimpleObject)]
pub struct PagerDutyIncident {
    pub id: String,
    pub number: Option<u64>,
    pub title: String,
    /// `triggered` or `acknowledged`.
    pub status: String,
    /// `high` or `low`.
    pub urgency: String,
    pub created_at: DateTime<Utc>,
    pub html_url: Option<String>,
}

async fn on_call(ctx: &Context<'_>, service: &PagerDutyService) -> Result<Vec<PagerDutyOnCall>, ApiError> {
    lookup(ctx)?;
    let view = view(ctx).ok_or(ApiError::Internal)?;
    let on_call = view.on_call(&service.id).await.map_err(unavailable)?;
    Ok(on_call
        .iter()
        .map(|entry| PagerDutyOnCall {
            user_name: entry.user_name.clone(),
            email: entry.email.clone(),
            schedule: entry.schedule.clone(),
            level: entry.level,
            until: entry.until,
            service_id: service.id.clone(),
            service_name: service.name.clone(),
        })
        .collect())
}

/// The service an entity maps to (`Entity.pagerDuty`).
pub(crate) async fn entity_service(ctx: &Context<'_>, stored: &StoredEntity) -> Result<Option<PagerDutyServiceValue>> {
    let annotations = &crate::graphql::context::body(ctx, stored).await?.metadata.annotations;
    if !PagerDutyView::is_mapped(annotations) {
        return Ok(None);
    }
    let Some(view) = view(ctx) else { return Ok(None) };
    Ok(view.service_for(annotations).map_err(unavailable)?.map(PagerDutyServiceValue))
}

/// The services of a Group's team (`Group.pagerDutyServices`).
pub(crate) async fn team_services(ctx: &Context<'_>, stored: &StoredEntity) -> Result<Vec<PagerDutyServiceValue>> {
    let Some(team_id) = crate::graphql::context::body(ctx, stored).await?.metadata.annotations.get(TEAM_ID_ANNOTATION)
    else {
        return Ok(Vec::new());
    };
    let Some(view) = view(ctx) else { return Ok(Vec::new()) };
    Ok(view.services_of_team(team_id).map_err(unavailable)?.into_iter().map(PagerDutyServiceValue).collect())
}

/// The PagerDuty services of an impact's owners, worked out once per
/// impact (so once per request) the first time an owner's `onCall` is
/// asked for: an owner's services are its Group's team's services and the
/// services its impacted entities map to.
pub(crate) struct ImpactServices {
    walk: Arc<Walk>,
    by_owner: tokio::sync::OnceCell<HashMap<EntityRef, Vec<Arc<PagerDutyService>>>>,
}

impl ImpactServices {
    pub(crate) fn new(walk: Arc<Walk>) -> Self {
        Self { walk, by_owner: tokio::sync::OnceCell::new() }
    }

    async fn by_owner(&self, ctx: &Context<'_>) -> Result<&HashMap<EntityRef, Vec<Arc<PagerDutyService>>>, ApiError> {
        self.by_owner
            .get_or_try_init(|| async {
                let Some(view) = view(ctx) else { return Ok(HashMap::new()) };
                services_by_owner(ctx, &view, &self.walk).await
            })
            .await
    }

    /// Who is on call for the owner's services, by service name then person.
    pub(crate) async fn on_call(
        &self,
        ctx: &Context<'_>,
        owner_ref: &EntityRef,
    ) -> Result<Vec<PagerDutyOnCall>, ApiError> {
        let Some(services) = self.by_owner(ctx).await?.get(owner_ref) else { return Ok(Vec::new()) };
        let answers = futures::future::join_all(services.iter().map(|service| on_call(ctx, service))).await;
        let mut on_call = Vec::new();
        for answer in answers {
            on_call.extend(answer?);
        }
        Ok(on_call)
    }
}

async fn services_by_owner(
    ctx: &Context<'_>,
    view: &PagerDutyView,
    walk: &Walk,
) -> Result<HashMap<EntityRef, Vec<Arc<PagerDutyService>>>, ApiError> {
    let catalog = super::context::catalog(ctx)?;
    let impacted: Vec<EntityRef> =
        walk.nodes.iter().filter(|node| node.distance > 0).map(|node| node.entity_ref.clone()).collect();
    // The walk holds only what the request may see.
    let owners = catalog.owners_in_graph(&impacted).await?;
    let mut by_owner: HashMap<EntityRef, Vec<Arc<PagerDutyService>>> = HashMap::new();
    // One statement for every mapped entity, rather than loading every
    // impacted entity to read its annotations.
    let annotated = catalog.annotated(&[SERVICE_ID_ANNOTATION, INTEGRATION_KEY_ANNOTATION]).await?;
    let mut annotations_of: HashMap<&EntityRef, BTreeMap<String, String>> = HashMap::new();
    for annotation in &annotated {
        if owners.contains_key(&annotation.entity_ref) {
            annotations_of
                .entry(&annotation.entity_ref)
                .or_default()
                .insert(annotation.key.clone(), annotation.value.clone());
        }
    }
    for (entity_ref, annotations) in &annotations_of {
        if let (Some(owner), Some(service)) =
            (owners.get(*entity_ref), view.service_for(annotations).map_err(unavailable)?)
        {
            by_owner.entry(owner.clone()).or_default().push(service);
        }
    }
    let mut groups: Vec<EntityRef> = owners.values().filter(|owner| owner.kind() == "group").cloned().collect();
    groups.sort();
    groups.dedup();
    // Through the loader, so that a Group the request may not see adds nothing.
    let found = entity_loader(ctx)?.load_many(groups).await?;
    for (group_ref, group) in &found {
        if let Some(team_id) =
            crate::graphql::context::body(ctx, group).await?.metadata.annotations.get(TEAM_ID_ANNOTATION)
        {
            let services = view.services_of_team(team_id).map_err(unavailable)?;
            by_owner.entry(group_ref.clone()).or_default().extend(services);
        }
    }
    for services in by_owner.values_mut() {
        services.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        services.dedup_by(|a, b| a.id == b.id);
    }
    Ok(by_owner)
}
