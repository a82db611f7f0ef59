//! Persisted tasks end to end through the store: a run's events stored in
//! order and its outcome recorded, values refused before anything is
//! stored, idempotent creation, cancellation of a running task, a retry that
//! resumes at the failed step, and a secret that no stored event shows.
//! Each test body runs on SQLite and on PostgreSQL.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use catalog_domain::Entity;
use catalog_scaffolder::{
    Action, ActionContext, ActionError, ActionRegistry, CreateTask, Secret, Secrets, TaskConfig, TaskError, TaskService,
};
use catalog_store::{Store, TaskRecord, TaskStatus, backend_tests};
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

/// `test:flaky`: fails while its counter is below `failures`, counting runs.
struct Flaky {
    runs: Arc<AtomicUsize>,
    failures: usize,
}

impl Action for Flaky {
    fn id(&self) -> &str {
        "test:flaky"
    }
    fn description(&self) -> &str {
        "Fails its first runs."
    }
    fn input_schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn output_schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn run<'a>(&'a self, _: &'a ActionContext, _: Value) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move {
            let run = self.runs.fetch_add(1, Ordering::SeqCst);
            if run < self.failures {
                Err(ActionError::Failed(format!("run {run} failed")))
            } else {
                Ok(json!({"run": run}))
            }
        })
    }
}

/// `test:count`: an action with effects outside the workspace (it counts its runs).
struct Count(Arc<AtomicUsize>);

impl Action for Count {
    fn id(&self) -> &str {
        "test:count"
    }
    fn description(&self) -> &str {
        "Counts its runs."
    }
    fn input_schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn output_schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn run<'a>(&'a self, _: &'a ActionContext, _: Value) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move { Ok(json!({"count": self.0.fetch_add(1, Ordering::SeqCst) + 1})) })
    }
}

/// `test:chatty`: logs more lines than a run keeps.
struct Chatty;

impl Action for Chatty {
    fn id(&self) -> &str {
        "test:chatty"
    }
    fn description(&self) -> &str {
        "Logs 10,005 lines."
    }
    fn input_schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn output_schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn run<'a>(&'a self, context: &'a ActionContext, _: Value) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move {
            for line in 0..10_005 {
                context.logger().info(&format!("line {line}"));
            }
            Ok(json!({}))
        })
    }
}

/// `test:wait`: waits until the task is cancelled.
struct WaitForCancel;

impl Action for WaitForCancel {
    fn id(&self) -> &str {
        "test:wait"
    }
    fn description(&self) -> &str {
        "Waits for cancellation."
    }
    fn input_schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn output_schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn run<'a>(&'a self, context: &'a ActionContext, _: Value) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move {
            context.cancellation().cancelled().await;
            Err(ActionError::Cancelled)
        })
    }
}

fn template(steps: Value) -> Entity {
    catalog_domain::validate(&json!({
        "apiVersion": "scaffolder.backstage.io/v1beta3",
        "kind": "Template",
        "metadata": {"name": "test-template"},
        "spec": {
            "type": "service",
            "parameters": {"type": "object", "required": ["name"],
                           "properties": {"name": {"type": "string", "pattern": "^[a-z-]+$"}}},
            "steps": steps,
            "output": {"text": [{"title": "Made", "content": "${{ parameters.name }} is ready"}]},
        },
    }))
    .unwrap()
}

fn service(store: &Store, flaky_runs: &Arc<AtomicUsize>, failures: usize, counted: &Arc<AtomicUsize>) -> TaskService {
    let mut registry = ActionRegistry::with_builtins();
    registry.register(Arc::new(Flaky { runs: Arc::clone(flaky_runs), failures })).unwrap();
    registry.register(Arc::new(WaitForCancel)).unwrap();
    registry.register(Arc::new(Chatty)).unwrap();
    registry.register(Arc::new(Count(Arc::clone(counted)))).unwrap();
    TaskService::new(store.task_store(), registry, TaskConfig { heartbeat_seconds: 1, ..TaskConfig::default() })
}

fn request(template: Entity, name: &str) -> CreateTask {
    let mut values = Map::new();
    values.insert("name".into(), json!(name));
    CreateTask {
        template,
        values,
        secrets: Secrets::new(),
        dry_run: false,
        idempotency_key: None,
        created_by: "user:default/ada".into(),
        user: json!({"ref": "user:default/ada"}),
    }
}

/// The task once it is final (a minute at most: the 10,000-line run
/// writes its events one by one, slowly on a loaded machine).
async fn ended(store: &Store, id: &str) -> TaskRecord {
    for _ in 0..1200 {
        let task = store.task_store().task(id).await.unwrap().unwrap();
        if task.status.is_final() {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("task {id} did not end");
}

async fn types(store: &Store, id: &str) -> Vec<String> {
    let events = store.task_store().task_events(id, 0, 1000).await.unwrap();
    events.iter().map(|event| event.body["type"].as_str().unwrap().to_owned()).collect()
}

async fn a_task_runs_its_steps_and_stores_every_event_in_order(store: Store) {
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks = service(&store, &runs, 0, &Arc::default());
    let steps = json!([
        {"id": "hello", "name": "Say hello", "action": "debug:log", "input": {"message": "hello ${{ parameters.name }}"}},
        {"id": "never", "name": "Skipped", "action": "debug:log", "if": "${{ parameters.name == 'nobody' }}"},
        {"id": "flaky", "name": "Flaky", "action": "test:flaky"},
    ]);
    let task = tasks.create(request(template(steps), "payments")).await.unwrap();
    assert_eq!(task.template_ref.as_str(), "template:default/test-template");
    let done = ended(&store, &task.id).await;
    assert_eq!((done.status, done.next_step), (TaskStatus::Completed, 3), "{done:?}");
    assert_eq!(done.output.unwrap()["text"][0]["content"], "payments is ready");
    assert_eq!(
        types(&store, &task.id).await,
        ["stepStarted", "log", "stepFinished", "stepSkipped", "stepStarted", "stepFinished", "completed"]
    );
    let events = store.task_store().task_events(&task.id, 0, 10).await.unwrap();
    assert_eq!(events[1].body["message"], "hello payments");
}

async fn values_that_break_the_schema_are_refused_before_anything_is_stored(store: Store) {
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks = service(&store, &runs, 0, &Arc::default());
    let steps = json!([{"id": "flaky", "name": "Flaky", "action": "test:flaky"}]);
    let error = tasks.create(request(template(steps.clone()), "Not Valid!")).await.unwrap_err();
    let TaskError::Invalid(error) = error else { panic!("{error}") };
    assert!(error.to_string().contains("name"), "{error}");
    let unknown = json!([{"id": "x", "name": "X", "action": "no:such"}]);
    let error = tasks.create(request(template(unknown), "ok")).await.unwrap_err().to_string();
    assert!(error.contains("no:such"), "{error}");
    assert!(
        store
            .task_store()
            .tasks(&catalog_store::TaskQuery { limit: 10, ..Default::default() })
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

async fn the_same_idempotency_key_runs_a_task_once(store: Store) {
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks = service(&store, &runs, 0, &Arc::default());
    let steps = json!([{"id": "flaky", "name": "Flaky", "action": "test:flaky"}]);
    let keyed = || CreateTask {
        idempotency_key: Some("create-payments".into()),
        ..request(template(steps.clone()), "payments")
    };
    let first = tasks.create(keyed()).await.unwrap();
    ended(&store, &first.id).await;
    let second = tasks.create(keyed()).await.unwrap();
    assert_eq!(second.id, first.id);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

async fn a_running_task_is_cancelled_inside_its_step(store: Store) {
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks = service(&store, &runs, 0, &Arc::default());
    let steps = json!([
        {"id": "wait", "name": "Wait", "action": "test:wait"},
        {"id": "flaky", "name": "Flaky", "action": "test:flaky"},
    ]);
    let task = tasks.create(request(template(steps), "payments")).await.unwrap();
    for _ in 0..100 {
        if types(&store, &task.id).await.contains(&"stepStarted".to_owned()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tasks.cancel(&task.id).await.unwrap();
    let done = ended(&store, &task.id).await;
    assert_eq!((done.status, done.next_step), (TaskStatus::Cancelled, 0), "{done:?}");
    assert_eq!(types(&store, &task.id).await.last().map(String::as_str), Some("cancelled"));
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the step after it never ran");
    assert!(matches!(tasks.cancel("missing").await, Err(TaskError::NotFound(_))));
}

async fn a_retry_rebuilds_the_workspace_and_resumes_at_the_failed_step_with_the_earlier_outputs(store: Store) {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::new(AtomicUsize::new(0));
    let tasks = service(&store, &runs, 1, &counted);
    let steps = json!([
        {"id": "hello", "name": "Say hello", "action": "debug:log", "input": {"message": "hello"}},
        {"id": "publish", "name": "Publish", "action": "test:count"},
        {"id": "flaky", "name": "Flaky", "action": "test:flaky"},
        {"id": "after", "name": "After", "action": "debug:log", "input": {"message": "flaky said ${{ steps.flaky.output.run }}"}},
    ]);
    let entity = template(steps);
    let task = tasks.create(request(entity.clone(), "payments")).await.unwrap();
    let failed = ended(&store, &task.id).await;
    assert_eq!((failed.status, failed.next_step), (TaskStatus::Failed, 2), "{failed:?}");
    assert!(failed.error.unwrap().contains("run 0 failed"));

    let user = json!({"ref": "user:default/ada"});
    let retried = tasks.retry(&task.id, &entity, Secrets::new(), user.clone()).await.unwrap();
    assert_eq!(retried.id, task.id);
    let done = ended(&store, &task.id).await;
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    let events = store.task_store().task_events(&task.id, 0, 100).await.unwrap();
    let hellos = events.iter().filter(|event| event.body["message"] == "hello").count();
    assert_eq!(hellos, 2, "a step that only touches the workspace runs again to rebuild it");
    assert_eq!(counted.load(Ordering::SeqCst), 1, "a step with effects elsewhere does not run again");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "the failed step ran again");
    assert!(events.iter().any(|event| event.body["message"] == "flaky said 1"));
    let error = tasks.retry(&task.id, &entity, Secrets::new(), user.clone()).await.unwrap_err();
    assert!(matches!(error, TaskError::NotRetryable { .. }), "{error}");
    assert_eq!(done.parameters.get("name"), Some(&json!("payments")));

    // A template whose steps changed since cannot resume by index (the
    // task is marked failed by hand, as a sweep would).
    let failing = tasks.create(request(entity.clone(), "billing")).await.unwrap();
    let finished = ended(&store, &failing.id).await;
    assert_eq!(finished.status, TaskStatus::Completed);
    let reordered = template(json!([
        {"id": "publish", "name": "Publish", "action": "test:count"},
        {"id": "hello", "name": "Say hello", "action": "debug:log", "input": {"message": "hello"}},
    ]));
    store
        .execute_unprepared_for_tests(&format!(
            "UPDATE scaffolder_tasks SET status = 'failed' WHERE id = '{}'",
            failing.id
        ))
        .await
        .unwrap();
    let error = tasks.retry(&failing.id, &reordered, Secrets::new(), user).await.unwrap_err();
    assert!(matches!(error, TaskError::TemplateChanged { .. }), "{error}");
}

async fn a_secret_shows_in_no_stored_event_or_output(store: Store) {
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks = service(&store, &runs, 0, &Arc::default());
    let steps = json!([
        {"id": "leak", "name": "Leak", "action": "debug:log", "input": {"message": "token=${{ secrets.token }}"}},
    ]);
    let mut secrets = Secrets::new();
    secrets.insert("token", Secret::new("ghp-very/secret&token"));
    let task = tasks.create(CreateTask { secrets, ..request(template(steps), "payments") }).await.unwrap();
    let done = ended(&store, &task.id).await;
    assert_eq!(done.status, TaskStatus::Completed);
    let stored = serde_json::to_string(
        &store
            .task_store()
            .task_events(&task.id, 0, 100)
            .await
            .unwrap()
            .iter()
            .map(|event| &event.body)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let record = format!("{:?}", store.task_store().task(&task.id).await.unwrap());
    for text in [&stored, &record] {
        assert!(!text.contains("very/secret"), "{text}");
    }
    assert!(stored.contains("token=***"), "{stored}");
}

async fn a_run_keeps_a_bounded_number_of_log_lines(store: Store) {
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks = service(&store, &runs, 0, &Arc::default());
    let steps = json!([
        {"id": "chatty", "name": "Chatty", "action": "test:chatty"},
        {"id": "after", "name": "After", "action": "test:flaky"},
    ]);
    let task = tasks.create(request(template(steps), "payments")).await.unwrap();
    let done = ended(&store, &task.id).await;
    assert_eq!(done.status, TaskStatus::Completed);
    let events = store.task_store().task_events(&task.id, 0, 20_000).await.unwrap();
    let logs: Vec<&str> = events
        .iter()
        .filter(|event| event.body["type"] == "log")
        .map(|event| event.body["message"].as_str().unwrap())
        .collect();
    assert_eq!(logs.len(), 10_001, "10,000 lines and one saying the rest were dropped");
    assert!(logs[10_000].contains("not kept"), "{}", logs[10_000]);
    assert_eq!(events.last().unwrap().body["type"], "completed", "the events after the cap are kept");
}

backend_tests!(
    a_run_keeps_a_bounded_number_of_log_lines,
    a_task_runs_its_steps_and_stores_every_event_in_order,
    values_that_break_the_schema_are_refused_before_anything_is_stored,
    the_same_idempotency_key_runs_a_task_once,
    a_running_task_is_cancelled_inside_its_step,
    a_retry_rebuilds_the_workspace_and_resumes_at_the_failed_step_with_the_earlier_outputs,
    a_secret_shows_in_no_stored_event_or_output,
);
