//! Persisted scaffolder tasks: the service behind `createTask`, `cancelTask`,
//! `retryTask` and `taskEvents`. A task is checked (template, actions,
//! values) before it is stored, claimed by exactly one runner through the
//! store, run on a bounded pool with a temporary workspace, and every event
//! is appended to the store in order, so any replica can replay it from a
//! cursor. Secrets stay in the memory of the replica that accepted the
//! task: they are never stored, so a retry must bring them again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use catalog_domain::{Entity, EntityRef};
use catalog_store::{NewTask, StoreError, TaskEnd, TaskRecord, TaskStatus, TaskStore};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::action::ActionRegistry;
use crate::runner::{EventSink, RunError, Runner, TaskEvent, TaskRun};
use crate::secret::Secrets;
use crate::template::{Template, TemplateError};
use crate::workspace::Workspace;

/// `scaffolder` in the configuration: how tasks run.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TaskConfig {
    /// Tasks run at once by this replica; more wait for a free worker.
    pub workers: usize,
    /// How often a running task's runner records that it is alive.
    pub heartbeat_seconds: u64,
    /// A task whose runner has not been heard of for this long is failed
    /// (its server stopped); also how long an unclaimed task may wait.
    pub abandoned_after_seconds: u64,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self { workers: 4, heartbeat_seconds: 5, abandoned_after_seconds: 60 }
    }
}

/// Fetches the directory of a template that lives elsewhere than on this
/// machine (a repository), so that `fetch:template` finds its skeletons.
pub trait TemplateFiles: Send + Sync {
    /// Copies the directory of the file at `location` (`url:https://...`)
    /// into `target`; an error (the implementer's own type) names what could
    /// not be fetched.
    fn fetch<'a>(
        &'a self,
        location: &'a str,
        target: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<(), Box<dyn std::error::Error + Send + Sync>>>;
}

/// Why a template's directory is not there for its run.
#[derive(Debug, thiserror::Error)]
enum TemplateDirectoryError {
    #[error("cannot make a directory for the template: {0}")]
    Temporary(std::io::Error),
    #[error("cannot fetch the template's files: {0}")]
    Fetch(Box<dyn std::error::Error + Send + Sync>),
}

/// A task to create.
pub struct CreateTask {
    /// The Template entity, as the catalog holds it.
    pub template: Entity,
    pub values: Map<String, Value>,
    pub secrets: Secrets,
    pub dry_run: bool,
    pub idempotency_key: Option<String>,
    /// Who asks (a user or token ref): tasks are listed by it.
    pub created_by: String,
    /// `user.entity` and `user.ref` in expressions.
    pub user: Value,
}

/// Why a task cannot be created, cancelled or retried.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// Unknown actions, or values that do not fit the parameter schema.
    #[error(transparent)]
    Invalid(RunError),
    #[error("there is no task {0}")]
    NotFound(String),
    #[error("task {id} is {status} and cannot be retried: only failed or cancelled tasks can")]
    NotRetryable { id: String, status: &'static str },
    #[error("task {id} was made from {expected}, not {given}")]
    WrongTemplate { id: String, expected: EntityRef, given: EntityRef },
    #[error("the steps of task {id}'s template changed since it ran: create a new task")]
    TemplateChanged { id: String },
    #[error("a step output of task {id} held a secret, which is not kept: create a new task")]
    SecretOutputs { id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a task's stored values keep its template's step ids (a name no
/// parameter can have: parameter names are identifiers), so a retry can tell
/// that the steps changed.
const STEP_IDS: &str = "$stepIds";

/// Creates, runs, cancels and retries tasks.
#[derive(Clone)]
pub struct TaskService {
    store: TaskStore,
    runner: Arc<Runner>,
    config: TaskConfig,
    /// This process's name as a runner (claims and heartbeats carry it).
    runner_id: String,
    workers: Arc<Semaphore>,
    /// Tasks running here, to cancel them without waiting for a heartbeat.
    running: Arc<Mutex<HashMap<String, CancellationToken>>>,
    /// The id of a task each time it has new events or ends here; other
    /// replicas' tasks are polled.
    events: broadcast::Sender<String>,
    template_files: Option<Arc<dyn TemplateFiles>>,
}

impl TaskService {
    pub fn new(store: TaskStore, registry: ActionRegistry, config: TaskConfig) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            store,
            runner: Arc::new(Runner::new(registry)),
            workers: Arc::new(Semaphore::new(config.workers.max(1))),
            config,
            runner_id: format!("runner-{}", uuid::Uuid::new_v4()),
            running: Arc::default(),
            events,
            template_files: None,
        }
    }

    /// Where templates read from repositories get their skeletons.
    pub fn with_template_files(mut self, files: Arc<dyn TemplateFiles>) -> Self {
        self.template_files = Some(files);
        self
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// Checks and stores a task, then runs it in the background. With an
    /// idempotency key its creator already used, returns that task and runs
    /// nothing.
    pub async fn create(&self, request: CreateTask) -> Result<TaskRecord, TaskError> {
        let template = Template::from_entity(&request.template)?;
        let values = self.runner.prepare(&template, &request.values).map_err(TaskError::Invalid)?;
        let mut values = values;
        let step_ids: Vec<&str> = template.steps().iter().map(|step| step.id()).collect();
        values.insert(STEP_IDS.into(), json!(step_ids));
        let new = NewTask {
            id: uuid::Uuid::new_v4().to_string(),
            template_ref: request.template.entity_ref(),
            parameters: Value::Object(values),
            dry_run: request.dry_run,
            created_by: request.created_by,
            idempotency_key: request.idempotency_key,
        };
        let (record, created) = self.store.create_task(new).await?;
        if created {
            self.spawn(record.clone(), template, request.secrets, request.user, location(&request.template));
        }
        Ok(record)
    }

    /// Stops a task: an open one at once, a running one at its next
    /// cancellation point (here at once, on another replica within a
    /// heartbeat).
    pub async fn cancel(&self, id: &str) -> Result<TaskRecord, TaskError> {
        let record = self.store.request_task_cancel(id).await?.ok_or_else(|| TaskError::NotFound(id.to_owned()))?;
        if let Some(token) = self.lock_running().get(id) {
            token.cancel();
        }
        let _ = self.events.send(id.to_owned());
        Ok(record)
    }

    /// Runs a failed or cancelled task again from the step that did not
    /// finish, with the earlier steps' outputs. `template` must be the
    /// task's own template; `secrets` are needed again, since none are kept.
    pub async fn retry(
        &self,
        id: &str,
        template: &Entity,
        secrets: Secrets,
        user: Value,
    ) -> Result<TaskRecord, TaskError> {
        let record = self.store.task(id).await?.ok_or_else(|| TaskError::NotFound(id.to_owned()))?;
        let given = template.entity_ref();
        if given != record.template_ref {
            return Err(TaskError::WrongTemplate { id: id.to_owned(), expected: record.template_ref, given });
        }
        let checked = Template::from_entity(template)?;
        // The resume point is a step index: a template whose steps changed
        // since would resume at another step (and perhaps publish twice).
        let step_ids: Vec<&str> = checked.steps().iter().map(|step| step.id()).collect();
        if record.parameters.get(STEP_IDS).is_some_and(|recorded| *recorded != json!(step_ids)) {
            return Err(TaskError::TemplateChanged { id: id.to_owned() });
        }
        // A stored output that held a secret is redacted: later steps would
        // read `***` instead of it.
        if record.step_outputs.to_string().contains(crate::secret::REDACTED) {
            return Err(TaskError::SecretOutputs { id: id.to_owned() });
        }
        if !self.store.reopen_task(id).await? {
            return Err(TaskError::NotRetryable { id: id.to_owned(), status: record.status.as_str() });
        }
        let record = self.store.task(id).await?.ok_or_else(|| TaskError::NotFound(id.to_owned()))?;
        self.spawn(record.clone(), checked, secrets, user, location(template));
        Ok(record)
    }

    /// Ids of tasks with news (new events, an end) in this process.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.events.subscribe()
    }

    /// Fails tasks whose runner stopped, then keeps doing so every
    /// `abandoned_after_seconds` until the returned task is aborted.
    pub fn start_sweeper(&self) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            let period = Duration::from_secs(service.config.abandoned_after_seconds.max(1));
            loop {
                match service.sweep().await {
                    Ok(ids) if !ids.is_empty() => {
                        tracing::warn!(tasks = ?ids, "tasks whose runner stopped were failed")
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(error = %error, "cannot sweep abandoned tasks"),
                }
                tokio::time::sleep(period).await;
            }
        })
    }

    /// Fails the tasks nobody has run or heartbeaten for `abandoned_after_seconds`.
    pub async fn sweep(&self) -> Result<Vec<String>, StoreError> {
        let age = chrono::Duration::seconds(i64::try_from(self.config.abandoned_after_seconds).unwrap_or(i64::MAX));
        let ids = self.store.fail_abandoned_tasks(chrono::Utc::now() - age).await?;
        for id in &ids {
            let _ = self.events.send(id.clone());
        }
        Ok(ids)
    }

    fn lock_running(&self) -> parking_lot::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.running.lock()
    }

    fn spawn(&self, record: TaskRecord, template: Template, secrets: Secrets, user: Value, location: Option<String>) {
        let service = self.clone();
        tokio::spawn(async move {
            let id = record.id.clone();
            if let Err(error) = service.run(record, template, secrets, user, location).await {
                tracing::error!(task = %id, error = %error, "a task could not be recorded");
            }
            let _ = service.events.send(id);
        });
    }

    #[tracing::instrument(name = "scaffolder.task", skip_all, fields(task = %record.id, template = %record.template_ref))]
    async fn run(
        &self,
        record: TaskRecord,
        template: Template,
        secrets: Secrets,
        user: Value,
        location: Option<String>,
    ) -> Result<(), StoreError> {
        let id = record.id.clone();
        // Claimed (and heartbeating) before waiting for a worker: a task
        // queued behind long ones is this replica's, not abandoned.
        if !self.store.claim_task(&id, &self.runner_id).await? {
            return Ok(());
        }
        let cancellation = CancellationToken::new();
        self.lock_running().insert(id.clone(), cancellation.clone());
        // Ends the heartbeat and forgets the task however this run ends (a
        // panicking action included): the sweep then fails it.
        let _running = Running {
            heartbeat: self.heartbeat(&id, cancellation.clone()),
            running: Arc::clone(&self.running),
            id: id.clone(),
        };
        let _worker = self.workers.acquire().await.expect("the semaphore is never closed");
        let (sender, receiver) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_events(self.store.clone(), id.clone(), receiver, self.events.clone()));
        let recorder = Arc::new(Recorder { sender, steps: Mutex::default() });
        let start_at = record.next_step;
        let previous_outputs = match record.step_outputs {
            Value::Object(outputs) => outputs,
            _ => Map::new(),
        };
        let values = match record.parameters {
            Value::Object(mut values) => {
                values.remove(STEP_IDS);
                values
            }
            _ => Map::new(),
        };
        let failed = |error: String| TaskEnd {
            status: TaskStatus::Failed,
            next_step: start_at,
            step_outputs: Value::Object(previous_outputs.clone()),
            output: None,
            error: Some(error),
        };
        // A template read from a repository brings its directory along, in
        // a temporary copy that lives as long as the run.
        let end = match (self.template_directory(location.as_deref()).await, Workspace::temporary()) {
            (Err(error), _) => {
                let message = error.to_string();
                recorder.emit(TaskEvent::StepFailed { step_id: "template".into(), message: message.clone() });
                failed(message)
            }
            (_, Err(error)) => failed(format!("cannot make the task's workspace: {error}")),
            // `_copy` keeps the fetched template directory until the run ends.
            (Ok((template_directory, _copy)), Ok(workspace)) => {
                let task = TaskRun {
                    values,
                    secrets,
                    user,
                    dry_run: record.dry_run,
                    template_directory,
                    workspace: Arc::new(workspace),
                    cancellation,
                    start_at,
                    previous_outputs: previous_outputs.clone(),
                };
                let outcome = self.runner.run(&template, task, Arc::clone(&recorder) as Arc<dyn EventSink>).await;
                recorder.end(&template, start_at, previous_outputs, outcome)
            }
        };
        drop(_running);
        // Every event is stored before the task says it ended.
        drop(recorder);
        let _ = writer.await;
        if !self.store.finish_task(&id, &self.runner_id, end).await? {
            tracing::warn!(task = %id, "the task was failed as abandoned while it ran; its outcome is dropped");
        }
        Ok(())
    }

    /// Records every `heartbeat_seconds` that the task runs, and cancels it
    /// when a cancel was asked for on another replica.
    fn heartbeat(&self, id: &str, cancellation: CancellationToken) -> tokio::task::JoinHandle<()> {
        let (store, id, runner) = (self.store.clone(), id.to_owned(), self.runner_id.clone());
        let period = Duration::from_secs(self.config.heartbeat_seconds.max(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match store.heartbeat_task(&id, &runner).await {
                    Ok(Some(true)) => cancellation.cancel(),
                    Ok(Some(false)) => {}
                    Ok(None) => {
                        tracing::warn!(task = %id, "the task is no longer this runner's (swept as abandoned): stopping it");
                        cancellation.cancel();
                        return;
                    }
                    Err(error) => tracing::warn!(task = %id, error = %error, "cannot record a task's heartbeat"),
                }
            }
        })
    }
}

/// A task running here: its heartbeat and its entry in `running`, both
/// ended when the run ends, however it ends.
struct Running {
    heartbeat: tokio::task::JoinHandle<()>,
    running: Arc<Mutex<HashMap<String, CancellationToken>>>,
    id: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.heartbeat.abort();
        self.running.lock().remove(&self.id);
    }
}

/// Where a template was read from (`backstage.io/managed-by-location`).
fn location(template: &Entity) -> Option<String> {
    template.metadata.annotations.get("backstage.io/managed-by-location").cloned()
}

impl TaskService {
    /// The directory of a template's file, where its skeletons are: beside
    /// it for a `file:` location, a fetched copy (kept alive by the
    /// returned guard) for a `url:` one when this service can fetch.
    async fn template_directory(
        &self,
        location: Option<&str>,
    ) -> Result<(Option<PathBuf>, Option<tempfile::TempDir>), TemplateDirectoryError> {
        let Some(location) = location else { return Ok((None, None)) };
        if let Some(path) = location.strip_prefix("file:") {
            return Ok((std::path::Path::new(path).parent().map(PathBuf::from), None));
        }
        let (Some(files), true) = (&self.template_files, location.starts_with("url:")) else {
            return Ok((None, None));
        };
        let copy = tempfile::tempdir().map_err(TemplateDirectoryError::Temporary)?;
        files.fetch(location, copy.path()).await.map_err(TemplateDirectoryError::Fetch)?;
        Ok((Some(copy.path().to_path_buf()), Some(copy)))
    }
}

/// The runner's event sink: forwards events to the store's writer, and
/// remembers which steps ended for the task's record.
struct Recorder {
    sender: mpsc::UnboundedSender<Value>,
    steps: Mutex<StepsDone>,
}

#[derive(Default)]
struct StepsDone {
    /// The step that failed or was cancelled, by id.
    stopped_at: Option<String>,
    outputs: Map<String, Value>,
    n_log_lines: usize,
}

/// The most log lines one run keeps: events wait in memory for the store,
/// so a chatty action on a slow database must not grow them without end.
const MAX_LOG_LINES: usize = 10_000;

impl EventSink for Recorder {
    fn emit(&self, event: TaskEvent) {
        {
            let mut steps = self.steps.lock();
            match &event {
                TaskEvent::StepFinished { step_id, output } => {
                    steps.outputs.insert(step_id.clone(), output.clone());
                }
                TaskEvent::StepFailed { step_id, .. } | TaskEvent::Cancelled { step_id } => {
                    steps.stopped_at = Some(step_id.clone());
                }
                TaskEvent::Log { step_id, .. } => {
                    steps.n_log_lines += 1;
                    if steps.n_log_lines == MAX_LOG_LINES + 1 {
                        let line = format!("more than {MAX_LOG_LINES} log lines: the rest of this run's are not kept");
                        let _ = self.sender.send(event_json(&TaskEvent::Log { step_id: step_id.clone(), line }));
                    }
                    if steps.n_log_lines > MAX_LOG_LINES {
                        return;
                    }
                }
                _ => {}
            }
        }
        let _ = self.sender.send(event_json(&event));
    }
}

impl Recorder {
    /// The task's record after a run.
    fn end(
        &self,
        template: &Template,
        start_at: usize,
        mut outputs: Map<String, Value>,
        outcome: Result<crate::runner::RunOutcome, RunError>,
    ) -> TaskEnd {
        let steps = self.steps.lock();
        outputs.extend(steps.outputs.clone());
        // A retry starts at the step that stopped the run; a failure after
        // the last step (rendering the output) retries only that.
        let n_steps = template.steps().len();
        let stopped_at = steps
            .stopped_at
            .as_ref()
            .map(|id| template.steps().iter().position(|step| step.id() == id).unwrap_or(n_steps));
        // A local step re-run before `start_at` that stops the run leaves
        // the resume point where it was: the steps after it are done.
        let next_step = match (&outcome, stopped_at) {
            (Ok(_), _) => n_steps,
            (Err(_), Some(index)) => index.max(start_at),
            (Err(_), None) => start_at,
        };
        let (status, output, error) = match outcome {
            Ok(outcome) => {
                let files: Vec<Value> = outcome
                    .files
                    .iter()
                    .map(|file| json!({"path": file.path, "contents": file.contents, "base64": file.base64}))
                    .collect();
                let output =
                    if files.is_empty() { outcome.output } else { json!({"output": outcome.output, "files": files}) };
                (TaskStatus::Completed, Some(output), None)
            }
            Err(RunError::Cancelled) => (TaskStatus::Cancelled, None, Some("the task was cancelled".to_owned())),
            Err(error) => (TaskStatus::Failed, None, Some(error.to_string())),
        };
        TaskEnd { status, next_step, step_outputs: Value::Object(outputs), output, error }
    }
}

/// Appends events to the store in the order they came, and tells this
/// process's subscribers.
async fn write_events(
    store: TaskStore,
    task_id: String,
    mut events: mpsc::UnboundedReceiver<Value>,
    news: broadcast::Sender<String>,
) {
    while let Some(body) = events.recv().await {
        if let Err(error) = store.append_task_event(&task_id, body).await {
            tracing::error!(task = %task_id, error = %error, "a task event could not be stored");
        }
        let _ = news.send(task_id.clone());
    }
}

/// An event as stored and served: `type` names it, the rest are its fields.
fn event_json(event: &TaskEvent) -> Value {
    match event {
        TaskEvent::StepStarted { step_id, name, action } => {
            json!({"type": "stepStarted", "stepId": step_id, "name": name, "action": action})
        }
        TaskEvent::Log { step_id, line } => json!({"type": "log", "stepId": step_id, "message": line}),
        TaskEvent::StepSkipped { step_id } => json!({"type": "stepSkipped", "stepId": step_id}),
        TaskEvent::StepFinished { step_id, output } => {
            json!({"type": "stepFinished", "stepId": step_id, "output": output})
        }
        TaskEvent::StepFailed { step_id, message } => {
            json!({"type": "stepFailed", "stepId": step_id, "message": message})
        }
        TaskEvent::Cancelled { step_id } => json!({"type": "cancelled", "stepId": step_id}),
        TaskEvent::Completed { output } => json!({"type": "completed", "output": output}),
    }
}
