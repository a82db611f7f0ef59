//! `fs:rename` and `fs:delete`: move and remove workspace entries, every
//! path resolved inside the workspace. A link is moved or removed itself,
//! never its target.

use futures::future::BoxFuture;
use glob::{MatchOptions, Pattern};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::action::{Action, ActionContext, ActionError, read_input};
use crate::workspace::{LastLink, resolve_beneath};

pub(super) struct FsRename;
pub(super) struct FsDelete;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenameInput {
    files: Vec<Rename>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    from: String,
    to: String,
    #[serde(default)]
    overwrite: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteInput {
    files: Vec<String>,
}

impl Action for FsRename {
    fn id(&self) -> &str {
        "fs:rename"
    }

    /// It only touches the workspace, which a dry run has too.
    fn supports_dry_run(&self) -> bool {
        true
    }

    fn is_local(&self) -> bool {
        true
    }

    fn description(&self) -> &str {
        "Renames files and directories in the workspace."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["files"],
            "additionalProperties": false,
            "properties": {"files": {"type": "array", "items": {
                "type": "object",
                "required": ["from", "to"],
                "additionalProperties": false,
                "properties": {
                    "from": {"type": "string"},
                    "to": {"type": "string"},
                    "overwrite": {"type": "boolean", "description": "Replace what is already at `to`."},
                },
            }}},
        })
    }

    fn output_schema(&self) -> Value {
        json!({"type": "object"})
    }

    fn run<'a>(&'a self, context: &'a ActionContext, input: Value) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move {
            let input: RenameInput = read_input(input)?;
            for rename in &input.files {
                context.check_cancelled()?;
                let workspace = context.workspace();
                if !workspace.exists(&rename.from)? {
                    return Err(ActionError::Failed(format!("fs:rename: {} does not exist", rename.from)));
                }
                // Resolved as the rename will act on them (a link in the middle followed, the last
                // kept), so `a` and `./a`, or `link/x` and the directory the link names, compare equal.
                let source = resolve_beneath(workspace.root(), &rename.from, LastLink::Keep)?;
                let destination = resolve_beneath(workspace.root(), &rename.to, LastLink::Keep)?;
                if source == destination {
                    return Err(ActionError::Failed(format!(
                        "fs:rename: {} and {} are the same entry",
                        rename.from, rename.to
                    )));
                }
                // Replacing an ancestor of the source would delete the source with it, and a
                // directory cannot move inside itself.
                if source.starts_with(&destination) || destination.starts_with(&source) {
                    return Err(ActionError::Failed(format!(
                        "fs:rename: {} and {} are inside one another, so one cannot replace the other",
                        rename.from, rename.to
                    )));
                }
                if workspace.exists(&rename.to)? {
                    if !rename.overwrite {
                        return Err(ActionError::Failed(format!(
                            "fs:rename: {} already exists (set overwrite to replace it)",
                            rename.to
                        )));
                    }
                    workspace.delete(&rename.to)?;
                }
                workspace.rename(&rename.from, &rename.to)?;
            }
            Ok(json!({}))
        })
    }
}

impl Action for FsDelete {
    fn id(&self) -> &str {
        "fs:delete"
    }

    /// It only touches the workspace, which a dry run has too.
    fn supports_dry_run(&self) -> bool {
        true
    }

    fn is_local(&self) -> bool {
        true
    }

    fn description(&self) -> &str {
        "Deletes files and directories in the workspace; paths may be globs (`*` stays within one directory, `**` \
         crosses them)."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["files"],
            "additionalProperties": false,
            "properties": {"files": {"type": "array", "items": {"type": "string"}}},
        })
    }

    fn output_schema(&self) -> Value {
        json!({"type": "object"})
    }

    fn run<'a>(&'a self, context: &'a ActionContext, input: Value) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move {
            let input: DeleteInput = read_input(input)?;
            let options = MatchOptions { require_literal_separator: true, ..MatchOptions::default() };
            for file in &input.files {
                context.check_cancelled()?;
                if !file.contains(['*', '?', '[']) {
                    context.workspace().delete(file)?;
                    continue;
                }
                let pattern =
                    Pattern::new(file).map_err(|error| ActionError::Input(format!("files: {file}: {error}")))?;
                // Matched against the workspace's own listing, which never follows links.
                for entry in context.workspace().walk()? {
                    if pattern.matches_with(&entry.path, options) {
                        context.workspace().delete(&entry.path)?;
                    }
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

    fn paths(test: &testing::TestContext) -> Vec<String> {
        test.context.workspace().walk().unwrap().into_iter().map(|entry| entry.path).collect()
    }

    #[tokio::test]
    async fn rename_moves_and_refuses_to_overwrite_unless_asked() {
        let test = testing::context(Secrets::new(), None);
        test.context.workspace().write("a.txt", b"a").unwrap();
        test.context.workspace().write("b.txt", b"b").unwrap();
        let error =
            FsRename.run(&test.context, json!({"files": [{"from": "a.txt", "to": "b.txt"}]})).await.unwrap_err();
        assert!(error.to_string().contains("b.txt already exists"), "{error}");
        FsRename
            .run(&test.context, json!({"files": [{"from": "a.txt", "to": "b.txt", "overwrite": true}]}))
            .await
            .unwrap();
        assert_eq!(paths(&test), ["b.txt"]);
        assert_eq!(test.context.workspace().read("b.txt").unwrap(), b"a");
    }

    #[tokio::test]
    async fn rename_onto_itself_is_refused_and_keeps_the_file() {
        let test = testing::context(Secrets::new(), None);
        test.context.workspace().write("a.txt", b"a").unwrap();
        for to in ["a.txt", "./a.txt"] {
            let input = json!({"files": [{"from": "a.txt", "to": to, "overwrite": true}]});
            let error = FsRename.run(&test.context, input).await.unwrap_err();
            assert_eq!(error.to_string(), format!("fs:rename: a.txt and {to} are the same entry"));
            assert_eq!(test.context.workspace().read("a.txt").unwrap(), b"a");
        }
    }

    #[tokio::test]
    async fn rename_onto_an_ancestor_or_a_descendant_is_refused_and_deletes_nothing() {
        let test = testing::context(Secrets::new(), None);
        test.context.workspace().write("dir/inner.txt", b"inner").unwrap();
        test.context.workspace().write("dir/sub/deeper.txt", b"deeper").unwrap();
        std::os::unix::fs::symlink("dir", test.context.workspace().root().join("alias")).unwrap();
        for (from, to) in [("dir/inner.txt", "dir"), ("dir", "dir/sub"), ("alias/inner.txt", "dir")] {
            let input = json!({"files": [{"from": from, "to": to, "overwrite": true}]});
            let error = FsRename.run(&test.context, input).await.unwrap_err();
            assert!(error.to_string().contains("inside one another"), "{from} -> {to}: {error}");
            assert_eq!(paths(&test), ["alias", "dir", "dir/inner.txt", "dir/sub", "dir/sub/deeper.txt"]);
        }
    }

    #[tokio::test]
    async fn rename_of_a_missing_file_names_it() {
        let test = testing::context(Secrets::new(), None);
        let error = FsRename.run(&test.context, json!({"files": [{"from": "nope", "to": "x"}]})).await.unwrap_err();
        assert_eq!(error.to_string(), "fs:rename: nope does not exist");
    }

    #[tokio::test]
    async fn delete_removes_paths_and_glob_matches() {
        let test = testing::context(Secrets::new(), None);
        for path in ["keep.md", "docs/a.tmp", "docs/b.tmp", "docs/c.md", "old/x"] {
            test.context.workspace().write(path, b"x").unwrap();
        }
        FsDelete.run(&test.context, json!({"files": ["old", "docs/*.tmp"]})).await.unwrap();
        assert_eq!(paths(&test), ["docs", "docs/c.md", "keep.md"]);
    }

    #[tokio::test]
    async fn delete_refuses_a_path_outside_the_workspace() {
        let test = testing::context(Secrets::new(), None);
        let error = FsDelete.run(&test.context, json!({"files": ["../x"]})).await.unwrap_err();
        assert!(matches!(error, ActionError::Workspace(_)), "{error}");
    }
}
