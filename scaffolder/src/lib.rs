//! The scaffolder's core: it turns a Template entity into a checked
//! [`Template`], renders `${{ ... }}` expressions in a sandbox, validates a
//! task's values against the template's parameters, and runs the template's
//! steps through registered actions inside a per-task workspace.
//!
//! `tasks.rs` persists tasks and their events through the store and runs
//! them on a bounded pool; the crate knows nothing of GraphQL or HTTP (the
//! api's mutations and subscriptions drive it).

mod action;
mod actions;
mod expression;
mod parameters;
mod runner;
mod secret;
mod tasks;
mod template;
mod workspace;

pub use action::{
    Action, ActionContext, ActionDescription, ActionError, ActionExample, ActionRegistry, DuplicateAction, Logger,
};
pub use actions::github::{GithubActions, GithubConfigError, GithubConfigProblem, GithubPublishConfig};
pub use expression::{ExpressionError, ExpressionProblem};
pub use parameters::{ParameterError, ParameterProblem, ParameterSchema, SchemaError};
pub use runner::{DryRunFile, EventSink, RunError, RunOutcome, Runner, TaskEvent, TaskRun, UnknownAction};
pub use secret::{REDACTED, Redactor, Secret, Secrets};
pub use tasks::{CreateTask, TaskConfig, TaskError, TaskService, TemplateFiles};
pub use template::{Step, Template, TemplateError, TemplateProblem, TemplateRule};
pub use workspace::{EntryKind, Workspace, WorkspaceEntry, WorkspaceError};
