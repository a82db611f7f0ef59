//! The scaffolder's GraphQL: templates and actions to build forms from,
//! tasks and their events, `createTask`, `cancelTask`, `retryTask`, and the
//! `taskEvents` subscription (replay from a cursor, then live). Running a
//! template needs `template.execute`; a principal sees its own tasks, an
//! admin everyone's.

use std::time::Duration;

use async_graphql::{
    Context, Enum, ID, InputObject, Json, Object, Result, SimpleObject, Subscription, futures_util::Stream,
};
use catalog_domain::{Entity, EntityRef};
use catalog_scaffolder::{CreateTask, RunError, Secret, Secrets, TaskError};
use catalog_store::{Filter, FilterField, Predicate, TaskEventRecord, TaskQuery, TaskRecord, TaskStatus};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::context::{catalog, read_scope, require_permission, task_store, tasks};
use super::entity::Template;
use super::entity::connection::{EntityConnection, PageArgs};
use super::paging::PageInfo;
use super::{ApiError, EntityFilter};
use crate::auth::Granted;
use crate::auth::identity::{Permission, Principal};
use crate::error_code::{ErrorCode, Limit, set_code};
use crate::graphql::mutation::PermissionGuard;

/// The most events one `events` page or replay batch holds.
const EVENT_BATCH: u64 = 200;
/// How often a subscription looks for events of a task another replica runs.
const EVENT_POLL: Duration = Duration::from_millis(500);
/// The most secrets and the longest secret one task may carry.
const MAX_SECRETS: usize = 50;
const MAX_SECRET_BYTES: usize = 16 * 1024;

/// Where a task stands.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "TaskStatus")]
pub enum TaskStatusValue {
    /// Created, waiting for a worker.
    Open,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl From<TaskStatus> for TaskStatusValue {
    fn from(status: TaskStatus) -> Self {
        match status {
            TaskStatus::Open => TaskStatusValue::Open,
            TaskStatus::Processing => TaskStatusValue::Processing,
            TaskStatus::Completed => TaskStatusValue::Completed,
            TaskStatus::Failed => TaskStatusValue::Failed,
            TaskStatus::Cancelled => TaskStatusValue::Cancelled,
        }
    }
}

impl From<TaskStatusValue> for TaskStatus {
    fn from(status: TaskStatusValue) -> Self {
        match status {
            TaskStatusValue::Open => TaskStatus::Open,
            TaskStatusValue::Processing => TaskStatus::Processing,
            TaskStatusValue::Completed => TaskStatus::Completed,
            TaskStatusValue::Failed => TaskStatus::Failed,
            TaskStatusValue::Cancelled => TaskStatus::Cancelled,
        }
    }
}

/// A run of a template.
pub struct Task(TaskRecord);

#[Object]
impl Task {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The template it runs, e.g. `template:default/rust-service`.
    async fn template_ref(&self) -> &str {
        self.0.template_ref.as_str()
    }
    async fn status(&self) -> TaskStatusValue {
        self.0.status.into()
    }
    /// Every step ran in simulation: nothing was published.
    async fn dry_run(&self) -> bool {
        self.0.dry_run
    }
    /// Who created it (`token:NAME`, `sub:SUBJECT` or `anonymous`).
    async fn created_by(&self) -> &str {
        &self.0.created_by
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// The values it was created with, defaults filled in.
    async fn values(&self) -> Json<Value> {
        let mut values = self.0.parameters.clone();
        // The template's step ids, kept for retries, are not a value.
        if let Some(values) = values.as_object_mut() {
            values.retain(|name, _| !name.starts_with('$'));
        }
        Json(values)
    }
    /// The template's rendered `spec.output` once completed (links, text);
    /// for a dry run, `{output, files}` with every rendered file.
    async fn output(&self) -> Option<Json<Value>> {
        self.0.output.clone().map(Json)
    }
    /// Why it failed or was cancelled.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// The index of the first step not done: where `retryTask` starts.
    async fn next_step(&self) -> i32 {
        i32::try_from(self.0.next_step).unwrap_or(i32::MAX)
    }
    async fn cancel_requested(&self) -> bool {
        self.0.cancel_requested
    }
    /// Its events after the cursor `after` (from the first without it),
    /// oldest first, at most 200.
    async fn events(&self, ctx: &Context<'_>, after: Option<String>) -> Result<Vec<TaskEventValue>> {
        let after = event_cursor(after.as_deref())?;
        let events = task_store(ctx)?.task_events(&self.0.id, after, EVENT_BATCH).await.map_err(ApiError::from)?;
        Ok(events.into_iter().map(TaskEventValue).collect())
    }
}

/// One event of a task. `type` is one of stepStarted, log, stepSkipped,
/// stepFinished, stepFailed, cancelled, completed.
pub struct TaskEventValue(TaskEventRecord);

#[Object(name = "TaskEvent")]
impl TaskEventValue {
    /// Resume `taskEvents` or `events` after this event with it.
    async fn cursor(&self) -> String {
        self.0.id.to_string()
    }
    #[graphql(name = "type")]
    async fn event_type(&self) -> &str {
        self.0.body["type"].as_str().unwrap_or_default()
    }
    async fn step_id(&self) -> Option<&str> {
        self.0.body["stepId"].as_str()
    }
    /// A log line, or why a step failed.
    async fn message(&self) -> Option<&str> {
        self.0.body["message"].as_str()
    }
    /// A finished step's output, or a completed task's rendered output.
    async fn output(&self) -> Option<Json<Value>> {
        self.0.body.get("output").cloned().map(Json)
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

#[derive(SimpleObject)]
pub struct TaskEdge {
    pub cursor: String,
    pub node: Task,
}

#[derive(SimpleObject)]
pub struct TaskConnection {
    pub edges: Vec<TaskEdge>,
    pub page_info: PageInfo,
}

/// Which tasks to list.
#[derive(InputObject, Default)]
pub struct TaskFilter {
    /// Only an admin may name someone else.
    pub created_by: Option<String>,
    pub template_ref: Option<String>,
    pub status: Option<TaskStatusValue>,
}

/// A secret for a task: used in expressions as `${{ secrets.NAME }}`,
/// never stored, logged or returned.
#[derive(InputObject)]
pub struct TaskSecretInput {
    pub name: String,
    pub value: String,
}

#[derive(InputObject)]
pub struct CreateTaskInput {
    pub template_ref: String,
    /// The form's values, checked against the template's parameters.
    #[graphql(default_with = "Json(json!({}))")]
    pub values: Json<Value>,
    #[graphql(default)]
    pub secrets: Vec<TaskSecretInput>,
    /// Render every file and run every step in simulation; publish nothing.
    #[graphql(default)]
    pub dry_run: bool,
    /// Creating again with the same key returns the first task.
    pub idempotency_key: Option<String>,
}

/// An action templates may use.
#[derive(SimpleObject)]
pub struct ScaffolderAction {
    pub id: String,
    pub description: String,
    pub input_schema: Json<Value>,
    pub output_schema: Json<Value>,
    pub examples: Vec<ScaffolderActionExample>,
}

#[derive(SimpleObject)]
pub struct ScaffolderActionExample {
    pub description: String,
    /// The step as a template writes it.
    pub step: Json<Value>,
}

/// The scaffolder's queries.
#[derive(Default)]
pub struct ScaffolderQuery;

#[Object]
impl ScaffolderQuery {
    /// Software templates, as a connection (the entities of kind Template the
    /// principal may read), narrowed by `filter` (tags, owner, spec.type...)
    /// and `search` as for `entities`.
    async fn templates(
        &self,
        ctx: &Context<'_>,
        filter: Option<EntityFilter>,
        search: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<EntityConnection> {
        let kind = Filter::Field { field: FilterField::Kind, predicate: Predicate::In(vec!["template".into()]) };
        let wanted = match filter.map(|filter| filter.to_store()).transpose()? {
            Some(filter) => Filter::All(vec![kind, filter]),
            None => kind,
        };
        let filter = read_scope(ctx)?.narrow(Some(wanted));
        let search =
            search.filter(|text| !text.trim().is_empty()).map(|text| super::filter::search_words(&text)).transpose()?;
        let page = PageArgs { first, after, last: None, before: None };
        Ok(super::entity::connection::list_connection(
            catalog(ctx)?,
            filter,
            search,
            super::entity::connection::EntitySource::Now(Default::default()),
            page,
        )
        .await?)
    }

    /// One template by ref (`template:` is the default kind), with its
    /// parameter form as JSON Schema; null when absent or hidden.
    async fn template(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "ref")] entity_ref: String,
    ) -> Result<Option<Template>> {
        let entity_ref = super::context::parse_ref(&entity_ref, Some("template"), "default")?;
        Ok(visible_template(ctx, &entity_ref).await?.map(|(stored, _)| Template(std::sync::Arc::new(stored))))
    }

    /// Every action templates may use, with input and output JSON Schemas.
    async fn actions(&self, ctx: &Context<'_>) -> Result<Vec<ScaffolderAction>> {
        let tasks = tasks(ctx)?;
        Ok(tasks
            .runner()
            .registry()
            .list()
            .into_iter()
            .map(|action| ScaffolderAction {
                id: action.id,
                description: action.description,
                input_schema: Json(action.input_schema),
                output_schema: Json(action.output_schema),
                examples: action
                    .examples
                    .into_iter()
                    .map(|example| ScaffolderActionExample {
                        description: example.description,
                        step: Json(example.step),
                    })
                    .collect(),
            })
            .collect())
    }

    /// One task, if the principal created it (or is an admin).
    async fn task(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Task>> {
        let record = task_store(ctx)?.task(&id).await.map_err(ApiError::from)?;
        Ok(record.filter(|record| may_see(ctx, record)).map(Task))
    }

    /// Tasks, newest first: the principal's own (an admin: everyone's, or
    /// `filter.createdBy`'s).
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        filter: Option<TaskFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<TaskConnection> {
        let filter = filter.unwrap_or_default();
        let created_by = if require_permission(ctx, Permission::Admin).is_ok() {
            filter.created_by
        } else {
            let me = principal_label(ctx);
            if filter.created_by.as_ref().is_some_and(|asked| *asked != me) {
                return Err(ApiError::Forbidden("only an admin may list other principals' tasks".into()).into());
            }
            Some(me)
        };
        let limit = super::paging::page_size("first", first)?.unwrap_or(super::DEFAULT_PAGE_SIZE);
        let before = after.as_deref().map(task_cursor).transpose()?;
        let query = TaskQuery {
            created_by,
            template_ref: filter
                .template_ref
                .as_deref()
                .map(|text| super::context::parse_ref(text, Some("template"), "default"))
                .transpose()?,
            status: filter.status.map(Into::into),
            before,
            limit: limit + 1,
        };
        let mut records = task_store(ctx)?.tasks(&query).await.map_err(ApiError::from)?;
        let has_next_page = records.len() as u64 > limit;
        records.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let edges: Vec<TaskEdge> = records
            .into_iter()
            .map(|record| TaskEdge {
                cursor: format!("{}|{}", record.created_at.to_rfc3339(), record.id),
                node: Task(record),
            })
            .collect();
        let page_info = PageInfo {
            has_next_page,
            has_previous_page: after.is_some(),
            start_cursor: edges.first().map(|edge| edge.cursor.clone()),
            end_cursor: edges.last().map(|edge| edge.cursor.clone()),
        };
        Ok(TaskConnection { edges, page_info })
    }
}

/// The scaffolder's mutations.
#[derive(Default)]
pub struct ScaffolderMutation;

#[Object]
impl ScaffolderMutation {
    /// Checks the values against the template's parameters (every problem is
    /// in the error's `extensions.problems` with its path), then starts the
    /// task and returns it at once; follow it with `taskEvents`. Needs
    /// `template.execute`.
    #[graphql(guard = "PermissionGuard(Permission::TemplateExecute)")]
    async fn create_task(&self, ctx: &Context<'_>, input: CreateTaskInput) -> Result<Task> {
        let template_ref = super::context::parse_ref(&input.template_ref, Some("template"), "default")?;
        let (_, template) = visible_template(ctx, &template_ref)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no template {}", input.template_ref)))?;
        may_run(ctx, &template)?;
        let Value::Object(values) = input.values.0 else {
            return Err(ApiError::BadUserInput("values must be an object".into()).into());
        };
        let request = CreateTask {
            template,
            values,
            secrets: to_secrets(input.secrets)?,
            dry_run: input.dry_run,
            idempotency_key: input.idempotency_key,
            user: user(ctx).await?,
            created_by: principal_label(ctx),
        };
        Ok(Task(tasks(ctx)?.create(request).await.map_err(task_error)?))
    }

    /// Stops a task: an open one at once, a running one at its next
    /// cancellation point. Needs `template.execute` and to be its creator
    /// (or an admin).
    #[graphql(guard = "PermissionGuard(Permission::TemplateExecute)")]
    async fn cancel_task(&self, ctx: &Context<'_>, id: ID) -> Result<Task> {
        own_task(ctx, &id).await?;
        Ok(Task(tasks(ctx)?.cancel(&id).await.map_err(task_error)?))
    }

    /// Runs a failed or cancelled task again from the step that did not
    /// finish. Secrets are never kept, so pass them again.
    #[graphql(guard = "PermissionGuard(Permission::TemplateExecute)")]
    async fn retry_task(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default)] secrets: Vec<TaskSecretInput>,
    ) -> Result<Task> {
        let record = own_task(ctx, &id).await?;
        let (_, template) = visible_template(ctx, &record.template_ref)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("the template {} is gone", record.template_ref)))?;
        may_run(ctx, &template)?;
        let user = user(ctx).await?;
        Ok(Task(tasks(ctx)?.retry(&id, &template, to_secrets(secrets)?, user).await.map_err(task_error)?))
    }
}

/// The scaffolder's subscriptions.
#[derive(Default)]
pub struct ScaffolderSubscription;

#[Subscription]
impl ScaffolderSubscription {
    /// A task's events: every event after `after` (from the first without
    /// it) replayed, then new ones as they happen, on whichever replica runs
    /// it; ends once the task has ended and its last event was sent.
    async fn task_events(
        &self,
        ctx: &Context<'_>,
        task_id: ID,
        after: Option<String>,
    ) -> Result<impl Stream<Item = Result<TaskEventValue>> + use<>> {
        own_task(ctx, &task_id).await?;
        let mut cursor = event_cursor(after.as_deref())?;
        let task_store = task_store(ctx)?.clone();
        let mut news = tasks(ctx)?.subscribe();
        let id = task_id.0;
        Ok(async_stream::stream! {
            loop {
                // Read the status before the events: events stored before it
                // ended are all read below, so the stream may end after them.
                let ended = match task_store.task(&id).await {
                    Ok(task) => task.is_none_or(|task| task.status.is_final()),
                    Err(error) => {
                        yield Err(ApiError::from(error).into());
                        return;
                    }
                };
                loop {
                    let batch = match task_store.task_events(&id, cursor, EVENT_BATCH).await {
                        Ok(batch) => batch,
                        Err(error) => {
                            yield Err(ApiError::from(error).into());
                            return;
                        }
                    };
                    let full = batch.len() as u64 == EVENT_BATCH;
                    for event in batch {
                        cursor = event.id;
                        yield Ok(TaskEventValue(event));
                    }
                    if !full {
                        break;
                    }
                }
                if ended {
                    return;
                }
                // News from this replica wakes it at once; another replica's
                // task is polled (one deadline, so other tasks' news cannot
                // keep postponing the poll).
                let poll = tokio::time::sleep(EVENT_POLL);
                tokio::pin!(poll);
                loop {
                    tokio::select! {
                        news_of = news.recv() => match news_of {
                            Ok(task) if task != id => continue,
                            _ => break,
                        },
                        () = &mut poll => break,
                    }
                }
            }
        })
    }
}

/// Refuses a template (or one of its actions) the policy does not let the
/// principal run; template.execute itself is checked by the field's guard.
fn may_run(ctx: &Context<'_>, template: &Entity) -> Result<(), ApiError> {
    let grants = ctx.data_opt::<Granted>().map(|granted| granted.1.clone()).unwrap_or_default();
    let steps = template.spec.get("steps").and_then(Value::as_array);
    let actions: Vec<&str> =
        steps.into_iter().flatten().filter_map(|step| step.get("action").and_then(Value::as_str)).collect();
    grants.allows(template, &actions).map_err(|refusal| ApiError::Forbidden(refusal.to_string()))
}

/// `user` in template expressions: `ref` (the User entity's ref for a JWT
/// whose subject names a user, otherwise the principal's label) and
/// `entity` (that User as the catalog holds it, when the principal may read it).
async fn user(ctx: &Context<'_>) -> Result<Value, ApiError> {
    let user_ref = match ctx.data_opt::<Principal>() {
        Some(Principal::Jwt { subject, .. }) => {
            catalog_domain::EntityRef::parse_with_defaults(subject, Some("User"), "default")
                .ok()
                .filter(|user| user.kind() == "user")
        }
        _ => None,
    };
    let Some(user_ref) = user_ref else { return Ok(json!({"ref": principal_label(ctx), "entity": null})) };
    let stored = catalog(ctx)?.entity_by_ref(&user_ref).await?;
    let scope = read_scope(ctx)?;
    let entity = stored.filter(|stored| scope.allows(stored)).map(|stored| stored.raw()).transpose()?;
    Ok(json!({"ref": user_ref.to_string(), "entity": entity}))
}

fn principal_label(ctx: &Context<'_>) -> String {
    ctx.data_opt::<Principal>().map_or_else(|| "anonymous".to_owned(), Principal::label)
}

fn may_see(ctx: &Context<'_>, record: &TaskRecord) -> bool {
    record.created_by == principal_label(ctx) || require_permission(ctx, Permission::Admin).is_ok()
}

/// The task, when the principal may act on it; NOT_FOUND otherwise (as if absent).
async fn own_task(ctx: &Context<'_>, id: &str) -> Result<TaskRecord, ApiError> {
    let record = task_store(ctx)?.task(id).await?;
    record.filter(|record| may_see(ctx, record)).ok_or_else(|| ApiError::NotFound(format!("no task {id}")))
}

/// A template the principal may read: as stored, and as an entity.
async fn visible_template(
    ctx: &Context<'_>,
    entity_ref: &EntityRef,
) -> Result<Option<(catalog_store::StoredEntity, Entity)>, ApiError> {
    let stored = catalog(ctx)?.entity_by_ref(entity_ref).await?;
    let scope = read_scope(ctx)?;
    let Some(stored) = stored.filter(|stored| scope.allows(stored) && stored.entity_ref.kind() == "template") else {
        return Ok(None);
    };
    let entity = stored.entity()?.clone();
    Ok(Some((stored, entity)))
}

fn to_secrets(inputs: Vec<TaskSecretInput>) -> Result<Secrets, ApiError> {
    if inputs.len() > MAX_SECRETS {
        return Err(ApiError::LimitExceeded {
            limit: Limit::TaskSecrets,
            message: format!("a task may carry at most {MAX_SECRETS} secrets, got {}", inputs.len()),
        });
    }
    let mut secrets = Secrets::new();
    for input in inputs {
        if input.value.len() > MAX_SECRET_BYTES {
            return Err(ApiError::LimitExceeded {
                limit: Limit::TaskSecretBytes,
                message: format!("the secret {} is longer than {MAX_SECRET_BYTES} bytes", input.name),
            });
        }
        secrets.insert(input.name, Secret::new(input.value));
    }
    Ok(secrets)
}

fn event_cursor(after: Option<&str>) -> Result<i64, ApiError> {
    match after {
        None => Ok(0),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|cursor| *cursor >= 0)
            .ok_or_else(|| ApiError::BadUserInput(format!("after: {text:?} is not an event cursor"))),
    }
}

fn task_cursor(text: &str) -> Result<(DateTime<Utc>, String), ApiError> {
    let invalid = || ApiError::BadUserInput(format!("after: {text:?} is not a task cursor"));
    let (time, id) = text.split_once('|').ok_or_else(invalid)?;
    let time = DateTime::parse_from_rfc3339(time).map_err(|_| invalid())?.with_timezone(&Utc);
    Ok((time, id.to_owned()))
}

/// A task error as the client sees it: values and templates with every
/// problem (path, rule, message) in `extensions.problems`.
fn task_error(error: TaskError) -> async_graphql::Error {
    use async_graphql::ErrorExtensions as _;
    let problems: Vec<Value> = match &error {
        TaskError::Invalid(RunError::Values(values)) => values
            .problems
            .iter()
            .map(|problem| json!({"path": problem.path, "rule": problem.rule, "message": problem.message}))
            .collect(),
        TaskError::Invalid(RunError::UnknownActions(unknown)) => unknown
            .iter()
            .map(|step| {
                json!({"path": format!("spec.steps[{}].action", step.index), "rule": "registered", "message": step.to_string()})
            })
            .collect(),
        TaskError::Template(template) => template
            .problems
            .iter()
            .map(|problem| json!({"path": problem.path, "rule": problem.rule.code(), "message": problem.to_string()}))
            .collect(),
        _ => Vec::new(),
    };
    match error {
        TaskError::NotFound(message) => ApiError::NotFound(message).into(),
        TaskError::Store(store) => ApiError::from(store).into(),
        TaskError::NotRetryable { .. }
        | TaskError::WrongTemplate { .. }
        | TaskError::TemplateChanged { .. }
        | TaskError::SecretOutputs { .. } => ApiError::BadUserInput(error.to_string()).into(),
        error => async_graphql::Error::new(error.to_string()).extend_with(|_, extensions| {
            set_code(extensions, ErrorCode::ValidationFailed, None);
            extensions
                .set("problems", async_graphql::Value::from_json(Value::Array(problems.clone())).unwrap_or_default());
        }),
    }
}
