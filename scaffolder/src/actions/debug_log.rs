//! `debug:log`: writes a message, and optionally the workspace's file list,
//! to the step's log (redacted like every log line).

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::action::{Action, ActionContext, ActionError, read_input};

pub(super) struct DebugLog;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Input {
    message: Option<String>,
    #[serde(default)]
    list_workspace: bool,
}

impl Action for DebugLog {
    fn id(&self) -> &str {
        "debug:log"
    }

    /// It only touches the workspace, which a dry run has too.
    fn supports_dry_run(&self) -> bool {
        true
    }

    fn is_local(&self) -> bool {
        true
    }

    fn description(&self) -> &str {
        "Writes a message, and optionally the workspace's file list, to the step's log."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "message": {"type": "string", "description": "The message to log."},
                "listWorkspace": {"type": "boolean", "description": "Also log every path in the workspace."},
            },
        })
    }

    fn output_schema(&self) -> Value {
        json!({"type": "object"})
    }

    fn run<'a>(&'a self, context: &'a ActionContext, input: Value) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move {
            let input: Input = read_input(input)?;
            if let Some(message) = &input.message {
                context.logger().info(message);
            }
            if input.list_workspace {
                for entry in context.workspace().walk()? {
                    context.logger().info(&entry.path);
                }
            }
            Ok(json!({}))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::testing;
    use crate::secret::Secrets;

    #[tokio::test]
    async fn the_message_is_logged_redacted_and_the_workspace_listed() {
        let test = testing::context(Secrets::from([("token", "tok-1234567890")]), None);
        test.context.workspace().write("src/main.rs", b"fn main() {}").unwrap();
        let output = DebugLog
            .run(&test.context, json!({"message": "using tok-1234567890\nsecond line", "listWorkspace": true}))
            .await
            .unwrap();
        assert_eq!(output, json!({}));
        assert_eq!(*test.lines.lock().unwrap(), ["using ***", "second line", "src", "src/main.rs"]);
    }

    #[tokio::test]
    async fn an_unknown_input_field_is_refused() {
        let test = testing::context(Secrets::new(), None);
        let error = DebugLog.run(&test.context, json!({"mesage": "typo"})).await.unwrap_err();
        assert!(error.to_string().starts_with("the input is not valid: unknown field `mesage`"), "{error}");
    }
}
