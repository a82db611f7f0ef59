//! Runs a checked template's steps for a task: values validated first, then
//! each step's input rendered, its `if` evaluated, its action run, and its
//! output exposed to later steps as `steps.<id>.output`.
//!
//! Everything that leaves the runner (events, step outputs, the rendered
//! `spec.output`, dry-run files, error messages) passes through the task's
//! [`Redactor`] first. Inside the run, outputs flow to later steps
//! unredacted, since a step may need a value a previous one produced.
//!
//! The runner keeps no state between calls: a persisted task runner stores
//! the events and the step outputs that later steps see, and resumes with
//! [`TaskRun::start_at`] and [`TaskRun::previous_outputs`]. The runner only
//! ever hands out redacted outputs (events and [`RunOutcome`]), so a stored
//! output that held a secret-derived value holds `***` instead, and a
//! resumed step reading it gets `***`, not the value. A persisted runner
//! must therefore resume only a task whose stored outputs carry no
//! redaction marker, and run any other task again from its first step.

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::action::{Action, ActionContext, ActionError, ActionRegistry, Logger};
use crate::expression::{ExpressionContext, Expressions, RenderBudget};
use crate::parameters::{ParameterError, ParameterSchema};
use crate::secret::{Redactor, Secrets};
use crate::template::Template;
use crate::workspace::{EntryKind, Workspace, WorkspaceError};

/// What happened in a task, in order. Every text and value is redacted.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskEvent {
    StepStarted {
        step_id: String,
        name: String,
        action: String,
    },
    Log {
        step_id: String,
        line: String,
    },
    StepSkipped {
        step_id: String,
    },
    StepFinished {
        step_id: String,
        output: Value,
    },
    /// A step failed; after the last step, `output` names the rendering of
    /// `spec.output` and `files` a dry run's listing of the workspace.
    StepFailed {
        step_id: String,
        message: String,
    },
    /// The task was cancelled before or during this step.
    Cancelled {
        step_id: String,
    },
    /// Every step ran or was skipped; `output` is the rendered `spec.output`.
    Completed {
        output: Value,
    },
}

/// Where a run's events go (a store, a subscription, a test's list).
pub trait EventSink: Send + Sync {
    fn emit(&self, event: TaskEvent);
}

/// One task to run.
pub struct TaskRun {
    pub values: Map<String, Value>,
    pub secrets: Secrets,
    /// `user.entity` and `user.ref` in expressions.
    pub user: Value,
    /// Run every step in simulation and return the workspace's files.
    /// Actions that do not support dry runs are skipped
    /// ([`Action::supports_dry_run`]).
    pub dry_run: bool,
    /// The template file's directory, which `./skeleton` is relative to.
    pub template_directory: Option<PathBuf>,
    pub workspace: Arc<Workspace>,
    pub cancellation: CancellationToken,
    /// The index of the first step to run (0 for a new task). Earlier steps
    /// whose action is local ([`crate::Action::is_local`]) run again first,
    /// to rebuild the workspace a resumed task starts without.
    pub start_at: usize,
    /// Outputs of the steps before `start_at`, by step id, as later steps
    /// see them. Outputs stored from events or a [`RunOutcome`] are redacted:
    /// see the module's note on resuming.
    pub previous_outputs: Map<String, Value>,
}

/// A file of a dry run's workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DryRunFile {
    pub path: String,
    /// The file's text, or its base64 when it is not UTF-8.
    pub contents: String,
    pub base64: bool,
}

/// What a finished run returns, redacted.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOutcome {
    /// Outputs of every step that ran, by step id.
    pub step_outputs: Map<String, Value>,
    /// The rendered `spec.output`.
    pub output: Value,
    /// Every file of the workspace, for a dry run; empty otherwise.
    pub files: Vec<DryRunFile>,
}

/// A step whose action is not registered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("spec.steps[{index}] ({step_id}): the action {action} is not registered")]
pub struct UnknownAction {
    pub index: usize,
    pub step_id: String,
    pub action: String,
}

/// Why a run stopped. Messages are redacted.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the template uses actions that are not registered: {}", join(.0))]
    UnknownActions(Vec<UnknownAction>),
    #[error(transparent)]
    Values(ParameterError),
    #[error("{0}")]
    Schema(String),
    #[error("step {step_id} failed: {message}")]
    StepFailed { step_id: String, message: String },
    #[error("the task was cancelled")]
    Cancelled,
    #[error("the workspace cannot be listed: {0}")]
    Workspace(String),
}

fn join(problems: &[UnknownAction]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Runs templates with the actions of a registry.
pub struct Runner {
    registry: ActionRegistry,
    expressions: Expressions,
}

impl Runner {
    pub fn new(registry: ActionRegistry) -> Self {
        Self { registry, expressions: Expressions::new() }
    }

    /// The actions this runner runs (for clients to list).
    pub fn registry(&self) -> &ActionRegistry {
        &self.registry
    }

    /// Checks a task before it is created: every step's action is
    /// registered, and the values satisfy the parameter schema. Returns the
    /// values with defaults filled in.
    pub fn prepare(&self, template: &Template, values: &Map<String, Value>) -> Result<Map<String, Value>, RunError> {
        let unknown: Vec<UnknownAction> = template
            .steps()
            .iter()
            .enumerate()
            .filter(|(_, step)| self.registry.get(step.action()).is_none())
            .map(|(index, step)| UnknownAction {
                index,
                step_id: step.id().to_owned(),
                action: step.action().to_owned(),
            })
            .collect();
        if !unknown.is_empty() {
            return Err(RunError::UnknownActions(unknown));
        }
        let schema = ParameterSchema::compile(template.parameter_schema())
            .map_err(|error| RunError::Schema(error.to_string()))?;
        schema.validate(values).map_err(RunError::Values)
    }

    /// Runs the template's steps from `task.start_at`, emitting events.
    pub async fn run(
        &self,
        template: &Template,
        task: TaskRun,
        events: Arc<dyn EventSink>,
    ) -> Result<RunOutcome, RunError> {
        let redactor = Arc::new(Redactor::new(&task.secrets));
        let values = self.prepare(template, &task.values).map_err(|error| redact_error(&redactor, error))?;
        let secrets = Arc::new(task.secrets);
        // One budget for everything the task renders, here and in its actions.
        let render_budget = RenderBudget::for_task();
        let mut data = Map::new();
        data.insert("parameters".into(), Value::Object(values));
        data.insert("user".into(), task.user);
        data.insert("secrets".into(), secrets.exposed_for_expressions());
        let mut outputs = task.previous_outputs;
        for (index, step) in template.steps().iter().enumerate() {
            // Before the resume point only the steps that rebuild the
            // workspace run again; the others keep their recorded outputs.
            if index < task.start_at && !self.registry.get(step.action()).is_some_and(|action| action.is_local()) {
                continue;
            }
            let step_id = step.id().to_owned();
            if task.cancellation.is_cancelled() {
                events.emit(TaskEvent::Cancelled { step_id });
                return Err(RunError::Cancelled);
            }
            data.insert("steps".into(), steps_object(&outputs));
            let context = ExpressionContext::new(&data, Arc::clone(&render_budget));
            let fail = |message: String| {
                let message = redactor.redact(&message);
                events.emit(TaskEvent::StepFailed { step_id: step_id.clone(), message: message.clone() });
                RunError::StepFailed { step_id: step_id.clone(), message }
            };
            let path = format!("spec.steps[{index}]");
            if let Some(condition) = step.condition() {
                let rendered = self
                    .expressions
                    .render_value(condition, &context, &format!("{path}.if"))
                    .map_err(|e| fail(e.to_string()))?;
                if !is_truthy(rendered.as_ref()) {
                    events.emit(TaskEvent::StepSkipped { step_id });
                    continue;
                }
            }
            let input = self
                .expressions
                .render_value(&Value::Object(step.input().clone()), &context, &format!("{path}.input"))
                .map_err(|error| fail(error.to_string()))?
                .unwrap_or_else(|| json!({}));
            events.emit(TaskEvent::StepStarted {
                step_id: step_id.clone(),
                name: redactor.redact(step.name()),
                action: step.action().to_owned(),
            });
            let action = self.registry.get(step.action()).expect("prepare checked every action");
            if task.dry_run && !action.supports_dry_run() {
                events.emit(TaskEvent::Log {
                    step_id: step_id.clone(),
                    line: format!(
                        "dry run: {} does not support dry runs, so it was skipped and its output is its example output",
                        step.action()
                    ),
                });
                let output = example_output(action.as_ref());
                events
                    .emit(TaskEvent::StepFinished { step_id: step_id.clone(), output: redactor.redact_json(&output) });
                outputs.insert(step_id, output);
                continue;
            }
            let log_step = step_id.clone();
            let logger = Logger::new(Arc::clone(&redactor), {
                let events = Arc::clone(&events);
                Arc::new(move |line| events.emit(TaskEvent::Log { step_id: log_step.clone(), line }))
            });
            let action_context = ActionContext::new(
                Arc::clone(&task.workspace),
                logger,
                Arc::clone(&secrets),
                task.cancellation.clone(),
                task.dry_run,
                task.template_directory.clone(),
            )
            .with_render_budget(Arc::clone(&render_budget));
            let span = tracing::info_span!("scaffolder.step", step = %step_id, action = step.action());
            match action.run(&action_context, input).instrument(span).await {
                Ok(output) => {
                    events.emit(TaskEvent::StepFinished {
                        step_id: step_id.clone(),
                        output: redactor.redact_json(&output),
                    });
                    outputs.insert(step_id, output);
                }
                Err(ActionError::Cancelled) => {
                    events.emit(TaskEvent::Cancelled { step_id });
                    return Err(RunError::Cancelled);
                }
                Err(error) => return Err(fail(error.to_string())),
            }
        }
        data.insert("steps".into(), steps_object(&outputs));
        let context = ExpressionContext::new(&data, Arc::clone(&render_budget));
        // A failure after the last step still ends the event stream, under a step id no template can
        // use (`output` for spec.output, `files` for a dry run's listing).
        let fail_after_steps = |step_id: &str, message: String| {
            let message = redactor.redact(&message);
            events.emit(TaskEvent::StepFailed { step_id: step_id.to_owned(), message: message.clone() });
            message
        };
        let output = self
            .expressions
            .render_value(&Value::Object(template.output().clone()), &context, "spec.output")
            .map_err(|error| RunError::StepFailed {
                step_id: "output".into(),
                message: fail_after_steps("output", error.to_string()),
            })?
            .unwrap_or_else(|| json!({}));
        let output = redactor.redact_json(&output);
        let files = if task.dry_run {
            dry_run_files(&task.workspace, &redactor).inspect_err(|error| {
                fail_after_steps("files", error.to_string());
            })?
        } else {
            Vec::new()
        };
        // Completed is the last event, sent once nothing else can fail.
        events.emit(TaskEvent::Completed { output: output.clone() });
        let step_outputs = match redactor.redact_json(&Value::Object(outputs)) {
            Value::Object(outputs) => outputs,
            _ => Map::new(),
        };
        Ok(RunOutcome { step_outputs, output, files })
    }
}

/// What a step skipped in a dry run outputs: the first of the action's
/// output schema's `examples`, or `{}`, so that later steps still render.
fn example_output(action: &dyn Action) -> Value {
    let schema = action.output_schema();
    let first = schema.get("examples").and_then(Value::as_array).and_then(|examples| examples.first());
    first.cloned().unwrap_or_else(|| json!({}))
}

fn steps_object(outputs: &Map<String, Value>) -> Value {
    let steps: Map<String, Value> =
        outputs.iter().map(|(id, output)| (id.clone(), json!({ "output": output }))).collect();
    Value::Object(steps)
}

/// Backstage's truthiness for `if`: false, null, 0, "" and [] skip the step.
fn is_truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Number(number)) => number.as_f64() != Some(0.0),
        Some(Value::String(text)) => !text.is_empty(),
        Some(Value::Array(items)) => !items.is_empty(),
        Some(_) => true,
    }
}

fn dry_run_files(workspace: &Workspace, redactor: &Redactor) -> Result<Vec<DryRunFile>, RunError> {
    let listing_failed = |error: WorkspaceError| RunError::Workspace(redactor.redact(&error.to_string()));
    let mut files = Vec::new();
    for entry in workspace.walk().map_err(listing_failed)? {
        if entry.kind != EntryKind::File {
            continue;
        }
        let bytes = workspace.read(&entry.path).map_err(listing_failed)?;
        let (contents, base64) = match String::from_utf8(bytes) {
            Ok(text) => (redactor.redact(&text), false),
            // The encoded text is redacted too: the redactor knows secrets' base64 at every offset.
            Err(binary) => {
                (redactor.redact(&base64::engine::general_purpose::STANDARD.encode(binary.into_bytes())), true)
            }
        };
        files.push(DryRunFile { path: redactor.redact(&entry.path), contents, base64 });
    }
    Ok(files)
}

fn redact_error(redactor: &Redactor, error: RunError) -> RunError {
    match error {
        RunError::Values(mut values) => {
            for problem in &mut values.problems {
                problem.message = redactor.redact(&problem.message);
            }
            RunError::Values(values)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests;
