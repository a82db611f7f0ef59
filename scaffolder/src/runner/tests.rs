//! The runner's rules: order, conditions, outputs between steps, checks
//! before anything runs, cancellation, resuming, dry runs, and redaction of
//! everything that leaves it.

use std::sync::Mutex;

use catalog_domain::Entity;
use futures::future::BoxFuture;

use super::*;

/// Returns its input as its output and logs its `log` field.
struct Echo;

impl Action for Echo {
    fn id(&self) -> &str {
        "test:echo"
    }
    fn description(&self) -> &str {
        "Echoes its input."
    }
    fn input_schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn output_schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn supports_dry_run(&self) -> bool {
        true
    }
    fn run<'a>(&'a self, context: &'a ActionContext, input: Value) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move {
            if let Some(line) = input.get("log").and_then(Value::as_str) {
                context.logger().info(line);
            }
            if input.get("cancel") == Some(&json!(true)) {
                context.cancellation().cancel();
            }
            Ok(input)
        })
    }
}

/// Stands for an action with external effects: it counts its runs, and
/// declares an example output when built with one.
struct Publish {
    n_runs: std::sync::atomic::AtomicUsize,
    example: Option<Value>,
}

impl Publish {
    fn new(example: Option<Value>) -> Arc<Self> {
        Arc::new(Self { n_runs: std::sync::atomic::AtomicUsize::new(0), example })
    }
}

impl Action for Publish {
    fn id(&self) -> &str {
        "test:publish"
    }
    fn description(&self) -> &str {
        "Publishes somewhere outside the workspace."
    }
    fn input_schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn output_schema(&self) -> Value {
        match &self.example {
            Some(example) => json!({"type": "object", "examples": [example, {"remoteUrl": "second"}]}),
            None => json!({"type": "object"}),
        }
    }
    fn run<'a>(&'a self, _context: &'a ActionContext, _input: Value) -> BoxFuture<'a, Result<Value, ActionError>> {
        self.n_runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async { Ok(json!({"remoteUrl": "https://github.com/acme/real"})) })
    }
}

#[derive(Default)]
struct Recorded(Mutex<Vec<TaskEvent>>);

impl EventSink for Recorded {
    fn emit(&self, event: TaskEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Recorded {
    fn events(&self) -> Vec<TaskEvent> {
        self.0.lock().unwrap().clone()
    }
}

fn template(spec: Value) -> Template {
    let entity: Entity = catalog_domain::validate(&json!({
        "apiVersion": "scaffolder.backstage.io/v1beta3",
        "kind": "Template",
        "metadata": {"name": "t"},
        "spec": spec,
    }))
    .unwrap();
    Template::from_entity(&entity).unwrap()
}

fn runner() -> Runner {
    let mut registry = ActionRegistry::with_builtins();
    registry.register(Arc::new(Echo)).unwrap();
    Runner::new(registry)
}

fn task(values: Value, secrets: Secrets) -> TaskRun {
    TaskRun {
        values: values.as_object().unwrap().clone(),
        secrets,
        user: json!({"ref": "user:default/ada", "entity": {"metadata": {"name": "ada"}}}),
        dry_run: false,
        template_directory: None,
        workspace: Arc::new(Workspace::temporary().unwrap()),
        cancellation: CancellationToken::new(),
        start_at: 0,
        previous_outputs: Map::new(),
    }
}

fn two_steps() -> Template {
    template(json!({
        "type": "service",
        "parameters": {"required": ["name"], "properties": {"name": {"type": "string"}, "debug": {"type": "boolean", "default": false}}},
        "steps": [
            {"id": "first", "action": "test:echo", "input": {"name": "${{ parameters.name }}", "by": "${{ user.ref }}"}},
            {"id": "maybe", "action": "test:echo", "if": "${{ parameters.debug }}", "input": {"x": 1}},
            {"id": "second", "action": "test:echo", "input": {"from_first": "${{ steps.first.output.name }}-2"}},
        ],
        "output": {"text": [{"title": "Name", "content": "${{ steps.second.output.from_first }}"}]},
    }))
}

#[tokio::test]
async fn steps_run_in_order_and_outputs_flow_to_later_steps() {
    let events = Arc::new(Recorded::default());
    let outcome =
        runner().run(&two_steps(), task(json!({"name": "svc"}), Secrets::new()), events.clone()).await.unwrap();
    assert_eq!(outcome.step_outputs["first"], json!({"name": "svc", "by": "user:default/ada"}));
    assert_eq!(outcome.step_outputs["second"], json!({"from_first": "svc-2"}));
    assert_eq!(outcome.output, json!({"text": [{"title": "Name", "content": "svc-2"}]}));
    let kinds: Vec<String> = events
        .events()
        .iter()
        .map(|event| match event {
            TaskEvent::StepStarted { step_id, .. } => format!("started {step_id}"),
            TaskEvent::StepFinished { step_id, .. } => format!("finished {step_id}"),
            TaskEvent::StepSkipped { step_id } => format!("skipped {step_id}"),
            TaskEvent::Completed { .. } => "completed".into(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        ["started first", "finished first", "skipped maybe", "started second", "finished second", "completed"]
    );
    assert!(outcome.files.is_empty(), "only a dry run lists files");
}

#[tokio::test]
async fn a_truthy_condition_runs_the_step() {
    let outcome = runner()
        .run(&two_steps(), task(json!({"name": "svc", "debug": true}), Secrets::new()), Arc::new(Recorded::default()))
        .await
        .unwrap();
    assert_eq!(outcome.step_outputs["maybe"], json!({"x": 1}));
}

#[test]
fn backstage_truthiness_decides_conditions() {
    for falsy in [None, Some(json!(null)), Some(json!(false)), Some(json!(0)), Some(json!("")), Some(json!([]))] {
        assert!(!is_truthy(falsy.as_ref()), "{falsy:?}");
    }
    for truthy in [json!(true), json!(1), json!("false"), json!([0]), json!({})] {
        assert!(is_truthy(Some(&truthy)), "{truthy}");
    }
}

#[tokio::test]
async fn unknown_actions_are_reported_before_anything_runs() {
    let template = template(json!({
        "type": "service",
        "steps": [
            {"id": "fetch", "action": "test:echo"},
            {"id": "publish", "action": "publish:github"},
            {"id": "register", "action": "catalog:register"},
        ],
    }));
    let events = Arc::new(Recorded::default());
    let error = runner().run(&template, task(json!({}), Secrets::new()), events.clone()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "the template uses actions that are not registered: spec.steps[1] (publish): the action publish:github is not \
         registered; spec.steps[2] (register): the action catalog:register is not registered"
    );
    assert!(events.events().is_empty());
}

#[tokio::test]
async fn invalid_values_return_every_problem_and_nothing_runs() {
    let events = Arc::new(Recorded::default());
    let error =
        runner().run(&two_steps(), task(json!({"debug": "yes"}), Secrets::new()), events.clone()).await.unwrap_err();
    let RunError::Values(values) = error else { panic!("{error:?}") };
    let mut paths: Vec<_> = values.problems.iter().map(|problem| problem.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["/debug", "/name"]);
    assert!(events.events().is_empty());
}

#[tokio::test]
async fn cancellation_stops_the_task_before_the_next_step() {
    let template = template(json!({
        "type": "service",
        "steps": [
            {"id": "first", "action": "test:echo", "input": {"cancel": true}},
            {"id": "second", "action": "test:echo"},
        ],
    }));
    let events = Arc::new(Recorded::default());
    let error = runner().run(&template, task(json!({}), Secrets::new()), events.clone()).await.unwrap_err();
    assert!(matches!(error, RunError::Cancelled));
    let last = events.events().last().cloned();
    assert_eq!(last, Some(TaskEvent::Cancelled { step_id: "second".into() }));
}

#[tokio::test]
async fn a_persisted_task_resumes_at_a_step_with_the_outputs_before_it() {
    let mut resumed = task(json!({"name": "svc"}), Secrets::new());
    resumed.start_at = 2;
    resumed.previous_outputs.insert("first".into(), json!({"name": "earlier"}));
    let events = Arc::new(Recorded::default());
    let outcome = runner().run(&two_steps(), resumed, events.clone()).await.unwrap();
    assert_eq!(outcome.step_outputs["second"], json!({"from_first": "earlier-2"}));
    assert!(matches!(&events.events()[0], TaskEvent::StepStarted { step_id, .. } if step_id == "second"));
}

#[tokio::test]
async fn a_failing_step_emits_its_error_and_stops_the_task() {
    let template = template(json!({
        "type": "service",
        "steps": [{"id": "log", "action": "debug:log", "input": {"mesage": "typo"}}, {"id": "never", "action": "test:echo"}],
    }));
    let events = Arc::new(Recorded::default());
    let error = runner().run(&template, task(json!({}), Secrets::new()), events.clone()).await.unwrap_err();
    assert!(
        error.to_string().starts_with("step log failed: the input is not valid: unknown field `mesage`"),
        "{error}"
    );
    assert!(matches!(events.events().last(), Some(TaskEvent::StepFailed { step_id, .. }) if step_id == "log"));
}

#[tokio::test]
async fn a_task_that_renders_more_than_its_budget_in_all_fails_the_step() {
    // Each string is within one render's fuel; together they pass the task's budget.
    let input: Map<String, Value> = (0..12).map(|index| (format!("s{index}"), json!("${{ 'a' * 6000000 }}"))).collect();
    let template = template(json!({
        "type": "service",
        "steps": [{"id": "big", "action": "test:echo", "input": input}],
    }));
    let events = Arc::new(Recorded::default());
    let error = runner().run(&template, task(json!({}), Secrets::new()), events.clone()).await.unwrap_err();
    assert!(error.to_string().contains("rendered more than 67108864 bytes of templates in all"), "{error}");
    assert!(matches!(events.events().last(), Some(TaskEvent::StepFailed { step_id, .. }) if step_id == "big"));
}

#[tokio::test]
async fn a_secret_turned_into_a_number_is_redacted_in_events_and_outputs() {
    let template = template(json!({
        "type": "service",
        "steps": [{"id": "pin", "action": "test:echo", "input": {"n": "${{ secrets.pin | int }}"}}],
        "output": {"n": "${{ steps.pin.output.n }}"},
    }));
    let events = Arc::new(Recorded::default());
    let run = task(json!({}), Secrets::from([("pin", "12345678")]));
    let outcome = runner().run(&template, run, events.clone()).await.unwrap();
    assert_eq!(outcome.step_outputs["pin"], json!({"n": "***"}));
    assert_eq!(outcome.output, json!({"n": "***"}));
    let everything = format!("{:?}", events.events());
    assert!(!everything.contains("12345678"), "{everything}");
}

fn publishing_template() -> Template {
    template(json!({
        "type": "service",
        "steps": [
            {"id": "publish", "action": "test:publish"},
            {"id": "log", "action": "debug:log", "input": {"message": "at ${{ steps.publish.output.remoteUrl }}"}},
        ],
    }))
}

#[tokio::test]
async fn a_dry_run_skips_an_action_without_dry_run_support_and_gives_it_its_first_example_output() {
    let publish = Publish::new(Some(json!({"remoteUrl": "https://example.com/repo"})));
    let mut registry = ActionRegistry::with_builtins();
    registry.register(publish.clone()).unwrap();
    let mut run = task(json!({}), Secrets::new());
    run.dry_run = true;
    let events = Arc::new(Recorded::default());
    let outcome = Runner::new(registry).run(&publishing_template(), run, events.clone()).await.unwrap();
    assert_eq!(publish.n_runs.load(std::sync::atomic::Ordering::SeqCst), 0, "the action must not run");
    assert_eq!(outcome.step_outputs["publish"], json!({"remoteUrl": "https://example.com/repo"}));
    let events = events.events();
    assert!(
        events.iter().any(|event| matches!(event, TaskEvent::Log { step_id, line }
            if step_id == "publish" && line.contains("test:publish does not support dry runs"))),
        "{events:?}"
    );
    assert!(events.contains(&TaskEvent::Log { step_id: "log".into(), line: "at https://example.com/repo".into() }));
}

#[tokio::test]
async fn a_dry_run_gives_a_skipped_action_without_examples_an_empty_output() {
    let publish = Publish::new(None);
    let mut registry = ActionRegistry::with_builtins();
    registry.register(publish.clone()).unwrap();
    let mut run = task(json!({}), Secrets::new());
    run.dry_run = true;
    let outcome = Runner::new(registry).run(&publishing_template(), run, Arc::new(Recorded::default())).await.unwrap();
    assert_eq!(publish.n_runs.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(outcome.step_outputs["publish"], json!({}));
}

#[tokio::test]
async fn a_real_run_runs_an_action_without_dry_run_support() {
    let publish = Publish::new(None);
    let mut registry = ActionRegistry::with_builtins();
    registry.register(publish.clone()).unwrap();
    let outcome = Runner::new(registry)
        .run(&publishing_template(), task(json!({}), Secrets::new()), Arc::new(Recorded::default()))
        .await
        .unwrap();
    assert_eq!(publish.n_runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(outcome.step_outputs["publish"], json!({"remoteUrl": "https://github.com/acme/real"}));
}

#[test]
fn the_built_in_actions_all_support_dry_runs() {
    for description in ActionRegistry::with_builtins().list() {
        let action = ActionRegistry::with_builtins().get(&description.id).cloned().unwrap();
        assert!(action.supports_dry_run(), "{}", description.id);
    }
}

#[tokio::test]
async fn a_failing_output_ends_the_events_with_a_failure_of_the_output() {
    let template = template(json!({
        "type": "service",
        "steps": [{"id": "first", "action": "test:echo"}],
        "output": {"huge": "${{ [1] * 100000000 }}"},
    }));
    let events = Arc::new(Recorded::default());
    let error = runner().run(&template, task(json!({}), Secrets::new()), events.clone()).await.unwrap_err();
    assert!(error.to_string().starts_with("step output failed: spec.output.huge: "), "{error}");
    let last = events.events().last().cloned();
    assert!(matches!(&last, Some(TaskEvent::StepFailed { step_id, .. }) if step_id == "output"), "{last:?}");
}

#[tokio::test]
async fn a_dry_run_whose_files_cannot_be_listed_ends_with_a_failure_not_completed() {
    use std::os::unix::ffi::OsStrExt;
    let template = template(json!({"type": "service", "steps": [{"id": "first", "action": "test:echo"}]}));
    let mut run = task(json!({}), Secrets::new());
    run.dry_run = true;
    // A name that is not UTF-8 is listed lossily, so reading it back fails.
    let name = std::ffi::OsStr::from_bytes(b"not-utf8-\xff");
    std::fs::write(run.workspace.root().join(name), "x").unwrap();
    let events = Arc::new(Recorded::default());
    let error = runner().run(&template, run, events.clone()).await.unwrap_err();
    assert!(matches!(error, RunError::Workspace(_)), "{error:?}");
    let events = events.events();
    assert!(!events.iter().any(|event| matches!(event, TaskEvent::Completed { .. })), "{events:?}");
    assert!(matches!(events.last(), Some(TaskEvent::StepFailed { step_id, .. }) if step_id == "files"), "{events:?}");
}

/// `&` and the space are characters urlencode changes, so the encoded form
/// differs from the plain one and is checked on its own; `/` is one it keeps.
const SECRET: &str = "s3cr3t/t0ken&value 42";

/// The secret as minijinja's urlencode writes it.
const ENCODED_SECRET: &str = "s3cr3t/t0ken%26value%2042";

/// A template that writes, logs, outputs and fails with the secret in
/// plain, URL-encoded and split forms; the last step fails when asked.
fn leaky_template(with_failing_step: bool) -> Template {
    let mut steps = vec![
        json!({"id": "fetch", "action": "fetch:template", "input": {"url": "./skeleton", "values": {"name": "${{ parameters.name }}", "token": "${{ secrets.token }}"}}}),
        json!({"id": "echo", "action": "test:echo", "input": {
            "plain": "${{ secrets.token }}",
            "encoded": "${{ secrets.token | urlencode }}",
            "log": "token is ${{ secrets.token }}",
            "split": ["${{ secrets.token[:10] }}", "${{ secrets.token[10:] }}"],
        }}),
    ];
    if with_failing_step {
        steps.push(json!({"id": "fail", "action": "fs:rename", "input": {"files": [{"from": "${{ secrets.token }}", "to": "x"}]}}));
    }
    template(json!({
        "type": "service",
        "steps": steps,
        "output": {"text": [{"title": "t", "content": "${{ steps.echo.output.plain }}"}]},
    }))
}

fn leaky_run(skeleton: &tempfile::TempDir) -> TaskRun {
    std::fs::create_dir_all(skeleton.path().join("skeleton")).unwrap();
    std::fs::write(skeleton.path().join("skeleton/README.md"), "# ${{ values.name }}\ntoken ${{ values.token }}\n")
        .unwrap();
    let mut run = task(json!({"name": "svc"}), Secrets::from([("token", SECRET)]));
    run.dry_run = true;
    run.template_directory = Some(skeleton.path().to_path_buf());
    run
}

#[test]
fn the_encoded_secret_checked_for_is_what_urlencode_writes() {
    let data = json!({"secrets": {"token": SECRET}});
    let context = ExpressionContext::new(data.as_object().unwrap(), RenderBudget::for_task());
    let encoded = Expressions::new().render_text("${{ secrets.token | urlencode }}", &context, "x").unwrap();
    assert_eq!(encoded, ENCODED_SECRET);
}

fn assert_no_secret(everything: &str) {
    for form in [SECRET, "s3cr3t/t0k", "en&value 42", ENCODED_SECRET, "%26value%2042"] {
        assert!(!everything.contains(form), "{form} leaked: {everything}");
    }
}

#[tokio::test]
async fn a_dry_run_returns_the_rendered_files_with_secrets_redacted_everywhere() {
    let skeleton = tempfile::tempdir().unwrap();
    let events = Arc::new(Recorded::default());
    let outcome = runner().run(&leaky_template(false), leaky_run(&skeleton), events.clone()).await.unwrap();
    assert!(matches!(events.events().last(), Some(TaskEvent::Completed { .. })), "Completed comes last");
    assert_eq!(
        outcome.files,
        [DryRunFile { path: "README.md".into(), contents: "# svc\ntoken ***\n".into(), base64: false }]
    );
    assert_eq!(outcome.output, json!({"text": [{"title": "t", "content": "***"}]}));
    assert_eq!(outcome.step_outputs["echo"]["encoded"], json!("***"));
    let everything = format!("{:?} {:?}", events.events(), outcome);
    assert_no_secret(&everything);
    assert!(everything.contains("token is ***"), "{everything}");
}

#[tokio::test]
async fn a_failing_step_does_not_leak_a_secret_in_its_error() {
    let skeleton = tempfile::tempdir().unwrap();
    let events = Arc::new(Recorded::default());
    let error = runner().run(&leaky_template(true), leaky_run(&skeleton), events.clone()).await.unwrap_err();
    assert_eq!(error.to_string(), "step fail failed: fs:rename: *** does not exist");
    assert_no_secret(&format!("{:?} {error:?}", events.events()));
}
