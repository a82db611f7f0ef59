//! The scaffolder's core: it turns a Template entity into a checked
//! [`Template`], renders `${{ ... }}` expressions in a sandbox, validates a
//! task's values against the template's parameters, and runs the template's
//! steps through registered actions inside a per-task workspace.
//!
//! This crate knows nothing of the store, GraphQL or HTTP: a persisted task
//! runner (store) and the mutations and subscriptions (api) drive it.

mod action;
mod actions;
mod expression;
mod parameters;
mod runner;
mod secret;
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
pub use template::{Step, Template, TemplateError, TemplateProblem, TemplateRule};
pub use workspace::{EntryKind, Workspace, WorkspaceEntry, WorkspaceError};
