//! Actions: what a template's steps run. An action is Rust code behind the
//! [`Action`] trait, registered by id in an [`ActionRegistry`], so an
//! organisation adds its own by implementing the trait and registering it.
//!
//! An action sees the world only through its [`ActionContext`]: the task's
//! workspace (every path resolved inside it), a logger whose lines are
//! redacted before they leave, the task's secrets, a cancellation signal,
//! the dry-run flag and the template's own directory. In a dry run the
//! runner skips every action that does not say [`Action::supports_dry_run`];
//! an action that says it must do nothing outside the workspace when
//! `dry_run` is set and return what it would have returned.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::expression::{Expressions, RenderBudget};
use crate::secret::{Redactor, Secrets};
use crate::workspace::{Workspace, WorkspaceError};

/// A step's action.
pub trait Action: Send + Sync {
    /// The id templates name in `action:`, e.g. `fetch:template`.
    fn id(&self) -> &str;
    fn description(&self) -> &str;
    /// JSON Schema of the input, for clients and documentation.
    fn input_schema(&self) -> Value;
    /// JSON Schema of the output.
    fn output_schema(&self) -> Value;
    fn examples(&self) -> Vec<ActionExample> {
        Vec::new()
    }
    /// Whether the action may run in a dry run. The default is no, so that a
    /// new action with external effects (publishing, registering) cannot
    /// act in a dry run by forgetting to check [`ActionContext::dry_run`]:
    /// the runner skips it and gives it the first of its output schema's
    /// `examples` as output, or `{}` (as Backstage does). Actions that only
    /// touch the workspace, or that simulate their effects, return true.
    fn supports_dry_run(&self) -> bool {
        false
    }
    /// Whether the action only reads and writes the task's workspace (no
    /// effect elsewhere): a retry runs such steps before the failed one
    /// again, since the workspace they built is gone, and keeps the recorded
    /// outputs of the others (which must not publish twice).
    fn is_local(&self) -> bool {
        false
    }
    /// Runs the action with its rendered input; the output becomes
    /// `steps.<id>.output`. Long actions check the context's cancellation.
    fn run<'a>(&'a self, context: &'a ActionContext, input: Value) -> BoxFuture<'a, Result<Value, ActionError>>;
}

/// An example use of an action, as a template would write the step.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionExample {
    pub description: String,
    pub step: Value,
}

/// What clients see of an action.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionDescription {
    pub id: String,
    pub description: String,
    pub input_schema: Value,
    pub output_schema: Value,
    pub examples: Vec<ActionExample>,
}

/// Why an action failed. Messages are sentences for the template's user.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("the input is not valid: {0}")]
    Input(String),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error("the task was cancelled")]
    Cancelled,
    #[error("{0}")]
    Failed(String),
}

/// Reads an action's input into its typed form.
pub(crate) fn read_input<T: DeserializeOwned>(input: Value) -> Result<T, ActionError> {
    serde_json::from_value(input).map_err(|error| ActionError::Input(error.to_string()))
}

/// Writes an action's log lines, each redacted before it reaches the sink.
#[derive(Clone)]
pub struct Logger {
    redactor: Arc<Redactor>,
    sink: Arc<dyn Fn(String) + Send + Sync>,
}

impl Logger {
    pub fn new(redactor: Arc<Redactor>, sink: Arc<dyn Fn(String) + Send + Sync>) -> Self {
        Self { redactor, sink }
    }

    /// Logs a message, one sink line per line of it. The whole message is
    /// redacted before it is split, so a secret cannot hide across lines of
    /// one message.
    pub fn info(&self, message: &str) {
        for line in self.redactor.redact(message).lines() {
            (self.sink)(line.to_owned());
        }
    }
}

/// Everything an action may use.
pub struct ActionContext {
    workspace: Arc<Workspace>,
    logger: Logger,
    secrets: Arc<Secrets>,
    cancellation: CancellationToken,
    dry_run: bool,
    template_directory: Option<PathBuf>,
    pub(crate) expressions: Expressions,
    /// The task's rendered-bytes budget, shared with the runner's renders.
    pub(crate) render_budget: Arc<RenderBudget>,
}

impl ActionContext {
    pub fn new(
        workspace: Arc<Workspace>,
        logger: Logger,
        secrets: Arc<Secrets>,
        cancellation: CancellationToken,
        dry_run: bool,
        template_directory: Option<PathBuf>,
    ) -> Self {
        Self {
            workspace,
            logger,
            secrets,
            cancellation,
            dry_run,
            template_directory,
            expressions: Expressions::new(),
            render_budget: RenderBudget::for_task(),
        }
    }

    /// The context with the task's budget of rendered bytes instead of a
    /// fresh one, so that the actions of a task share one limit.
    pub(crate) fn with_render_budget(mut self, render_budget: Arc<RenderBudget>) -> Self {
        self.render_budget = render_budget;
        self
    }

    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    pub fn logger(&self) -> &Logger {
        &self.logger
    }

    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancellation
    }

    /// Fails with [`ActionError::Cancelled`] once the task is cancelled;
    /// actions call it between units of work.
    pub fn check_cancelled(&self) -> Result<(), ActionError> {
        if self.cancellation.is_cancelled() { Err(ActionError::Cancelled) } else { Ok(()) }
    }

    /// In a dry run, actions with effects outside the workspace simulate them.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// The directory of the template's own file, which `./skeleton` in
    /// fetch actions is relative to; `None` for a template not read from a
    /// local directory.
    pub fn template_directory(&self) -> Option<&Path> {
        self.template_directory.as_deref()
    }
}

/// Actions by id.
#[derive(Clone, Default)]
pub struct ActionRegistry {
    actions: BTreeMap<String, Arc<dyn Action>>,
}

/// An action's id is already taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an action with id {0} is already registered")]
pub struct DuplicateAction(pub String);

impl ActionRegistry {
    /// A registry without any action.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Adds an action; an id that is already registered is refused, so an
    /// organisation's action never silently replaces a built-in.
    pub fn register(&mut self, action: Arc<dyn Action>) -> Result<(), DuplicateAction> {
        let id = action.id().to_owned();
        if self.actions.contains_key(&id) {
            return Err(DuplicateAction(id));
        }
        self.actions.insert(id, action);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&Arc<dyn Action>> {
        self.actions.get(id)
    }

    /// Every action, by id.
    pub fn list(&self) -> Vec<ActionDescription> {
        self.actions
            .values()
            .map(|action| ActionDescription {
                id: action.id().to_owned(),
                description: action.description().to_owned(),
                input_schema: action.input_schema(),
                output_schema: action.output_schema(),
                examples: action.examples(),
            })
            .collect()
    }
}
