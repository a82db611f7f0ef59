//! The built-in actions ([`ActionRegistry::with_builtins`]), and the GitHub
//! actions, which need a configuration (API root, token) and so are
//! registered by whoever holds it ([`github::GithubActions::register`]).
//! `catalog:register` needs the catalog and lives with it. Actions with
//! effects outside the workspace honour the context's dry-run flag. This
//! module knows `action.rs` (the trait and the registry); `action.rs` knows
//! no action.

mod catalog_write;
mod debug_log;
mod fetch;
mod fs;
pub(crate) mod github;

use std::sync::Arc;

use crate::action::{Action, ActionRegistry};

impl ActionRegistry {
    /// A registry with the built-in actions (debug:log, fetch:plain,
    /// fetch:template, fs:rename, fs:delete, catalog:write).
    pub fn with_builtins() -> Self {
        let builtins: [Arc<dyn Action>; 6] = [
            Arc::new(debug_log::DebugLog),
            Arc::new(fetch::FetchPlain),
            Arc::new(fetch::FetchTemplate),
            Arc::new(fs::FsRename),
            Arc::new(fs::FsDelete),
            Arc::new(catalog_write::CatalogWrite),
        ];
        let mut registry = Self::empty();
        for action in builtins {
            registry.register(action).expect("the built-in actions have distinct ids");
        }
        registry
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A context over a fresh workspace whose log lines are collected.

    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use tokio_util::sync::CancellationToken;

    use crate::action::{ActionContext, Logger};
    use crate::secret::{Redactor, Secrets};
    use crate::workspace::Workspace;

    pub(crate) struct TestContext {
        pub(crate) context: ActionContext,
        pub(crate) lines: Arc<Mutex<Vec<String>>>,
    }

    pub(crate) fn context(secrets: Secrets, template_directory: Option<PathBuf>) -> TestContext {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = Arc::clone(&lines);
        let logger =
            Logger::new(Arc::new(Redactor::new(&secrets)), Arc::new(move |line| collected.lock().unwrap().push(line)));
        let workspace = Arc::new(Workspace::temporary().unwrap());
        let context = ActionContext::new(
            workspace,
            logger,
            Arc::new(secrets),
            CancellationToken::new(),
            false,
            template_directory,
        );
        TestContext { context, lines }
    }
}
