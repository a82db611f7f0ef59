//! `fetch:plain` and `fetch:template`: copy a skeleton directory from the
//! template's own directory into the workspace; `fetch:template` renders
//! file names and contents with `values` on the way.
//!
//! The skeleton is read beneath the template's directory with the same
//! resolver as the workspace: `..`, absolute paths, and links that lead
//! out of the template's directory are refused, so a skeleton cannot pull
//! in `/etc/passwd` or a neighbour's secrets. Links to files inside are
//! copied as the file they point to; links to directories are refused
//! (they could loop). Remote URLs are not supported yet.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use glob::{MatchOptions, Pattern};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::action::{Action, ActionContext, ActionError, read_input};
use crate::expression::ExpressionContext;
use crate::workspace::{LastLink, resolve_beneath};

/// Most files a skeleton may hold: fetch reads them all before writing.
const MAX_SKELETON_FILES: usize = 10_000;

/// Most bytes a skeleton's files may hold together.
const MAX_SKELETON_BYTES: u64 = 64 * 1024 * 1024;

pub(super) struct FetchPlain;
pub(super) struct FetchTemplate;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PlainInput {
    url: String,
    #[serde(default = "default_target")]
    target_path: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TemplateInput {
    url: String,
    #[serde(default = "default_target")]
    target_path: String,
    #[serde(default)]
    values: Map<String, Value>,
    #[serde(default)]
    copy_without_templating: Vec<String>,
}

fn default_target() -> String {
    ".".to_owned()
}

/// One file of a skeleton: its path under the skeleton with `/`, and bytes.
struct SkeletonFile {
    path: String,
    contents: Vec<u8>,
}

fn url_schema() -> Value {
    json!({"type": "string", "description": "The skeleton directory, relative to the template's file (./skeleton)."})
}

fn target_schema() -> Value {
    json!({"type": "string", "description": "Where in the workspace to put the files (default: the workspace root)."})
}

impl Action for FetchPlain {
    fn id(&self) -> &str {
        "fetch:plain"
    }

    /// It only touches the workspace, which a dry run has too.
    fn supports_dry_run(&self) -> bool {
        true
    }

    fn is_local(&self) -> bool {
        true
    }

    fn description(&self) -> &str {
        "Copies a directory next to the template into the workspace, unchanged."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["url"],
            "additionalProperties": false,
            "properties": {"url": url_schema(), "targetPath": target_schema()},
        })
    }

    fn output_schema(&self) -> Value {
        json!({"type": "object"})
    }

    fn run<'a>(&'a self, context: &'a ActionContext, input: Value) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move {
            let input: PlainInput = read_input(input)?;
            for file in read_skeleton(context, &input.url, SkipGit::No)? {
                context.check_cancelled()?;
                context.workspace().write(&join(&input.target_path, &file.path), &file.contents)?;
            }
            Ok(json!({}))
        })
    }
}

impl Action for FetchTemplate {
    fn id(&self) -> &str {
        "fetch:template"
    }

    /// It only touches the workspace, which a dry run has too.
    fn supports_dry_run(&self) -> bool {
        true
    }

    fn is_local(&self) -> bool {
        true
    }

    fn description(&self) -> &str {
        "Copies a skeleton directory next to the template into the workspace, rendering ${{ values.* }} in file \
         names and contents."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["url"],
            "additionalProperties": false,
            "properties": {
                "url": url_schema(),
                "targetPath": target_schema(),
                "values": {"type": "object", "description": "What ${{ values.* }} reads in the skeleton."},
                "copyWithoutTemplating": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Globs of skeleton paths whose contents are copied as they are (names are still rendered).",
                },
            },
        })
    }

    fn output_schema(&self) -> Value {
        json!({"type": "object"})
    }

    fn run<'a>(&'a self, context: &'a ActionContext, input: Value) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move {
            let input: TemplateInput = read_input(input)?;
            let verbatim = input
                .copy_without_templating
                .iter()
                .map(|glob| Pattern::new(glob))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| ActionError::Input(format!("copyWithoutTemplating: {error}")))?;
            let mut data = Map::new();
            data.insert("values".into(), Value::Object(input.values));
            let expressions = ExpressionContext::new(&data, Arc::clone(&context.render_budget));
            let options = MatchOptions { require_literal_separator: true, ..MatchOptions::default() };
            for file in read_skeleton(context, &input.url, SkipGit::Yes)? {
                context.check_cancelled()?;
                let name =
                    context.expressions.render_text(&file.path, &expressions, &file.path).map_err(expression_error)?;
                // A name that renders empty (`${{ 'x' if values.flag }}`) leaves its file out, as in Backstage.
                if name.is_empty() {
                    context.logger().info(&format!("skipping {}: its name renders empty", file.path));
                    continue;
                }
                // Anything else that is not a plain relative path is a mistake to report, not to skip
                // silently: `\` and `:` mean other things on other systems, `a//b` lost a part.
                if name.starts_with('/') || name.contains(['\\', ':']) || name.split('/').any(str::is_empty) {
                    return Err(ActionError::Failed(format!(
                        "skeleton file {}: its name renders to {name}, which is not a relative path (it is \
                         absolute, has an empty part, or holds `\\` or `:`)",
                        file.path
                    )));
                }
                let copy_as_is = verbatim.iter().any(|pattern| pattern.matches_with(&file.path, options));
                let contents = match (copy_as_is, String::from_utf8(file.contents)) {
                    (false, Ok(text)) => context
                        .expressions
                        .render_text(&text, &expressions, &file.path)
                        .map_err(expression_error)?
                        .into_bytes(),
                    (_, Ok(text)) => text.into_bytes(),
                    // Binary files (images, archives) are never templates.
                    (_, Err(not_text)) => not_text.into_bytes(),
                };
                context.workspace().write(&join(&input.target_path, &name), &contents)?;
            }
            Ok(json!({}))
        })
    }
}

fn expression_error(error: crate::expression::ExpressionError) -> ActionError {
    ActionError::Failed(format!("skeleton file {error}"))
}

fn join(target: &str, path: &str) -> String {
    if target.is_empty() || target == "." {
        path.to_owned()
    } else {
        format!("{}/{path}", target.trim_end_matches('/'))
    }
}

/// Whether a `.git` directory in the skeleton is left out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SkipGit {
    /// fetch:template: a skeleton kept in its own repository carries its
    /// history, which is not part of the new project (and is not text to render).
    Yes,
    /// fetch:plain copies the directory as it is.
    No,
}

/// Every file under the skeleton directory, sorted by path.
fn read_skeleton(context: &ActionContext, url: &str, skip_git: SkipGit) -> Result<Vec<SkeletonFile>, ActionError> {
    if url.contains("://") {
        return Err(ActionError::Input(
            "url: only a directory next to the template is supported, not a remote URL".into(),
        ));
    }
    let base = context.template_directory().ok_or_else(|| {
        ActionError::Failed("the template was not read from a local directory, so its skeleton cannot be found".into())
    })?;
    let base = base
        .canonicalize()
        .map_err(|error| ActionError::Failed(format!("the template's directory cannot be opened: {error}")))?;
    let skeleton = resolve_beneath(&base, url, LastLink::Follow).map_err(|error| skeleton_error(&error))?;
    let mut files = Vec::new();
    let mut n_bytes: u64 = 0;
    let mut pending = vec![(skeleton.clone(), String::new())];
    while let Some((directory, prefix)) = pending.pop() {
        let listing = std::fs::read_dir(&directory)
            .map_err(|error| ActionError::Failed(format!("the skeleton {url} cannot be read: {error}")))?;
        for entry in listing {
            context.check_cancelled()?;
            let entry =
                entry.map_err(|error| ActionError::Failed(format!("the skeleton {url} cannot be read: {error}")))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let file_type = entry.file_type().map_err(|error| read_failed(&path, &error))?;
            if file_type.is_dir() {
                if skip_git == SkipGit::Yes && entry.file_name() == ".git" {
                    continue;
                }
                pending.push((entry.path(), path));
                continue;
            }
            let real = if file_type.is_symlink() { resolve_link(&base, &entry.path(), &path)? } else { entry.path() };
            if files.len() == MAX_SKELETON_FILES {
                return Err(ActionError::Failed(format!(
                    "the skeleton {url} has more than {MAX_SKELETON_FILES} files, more than fetch copies"
                )));
            }
            // The size is checked before reading, so one huge file is not read whole first.
            let size = std::fs::metadata(&real).map_err(|error| read_failed(&path, &error))?.len();
            n_bytes = n_bytes.saturating_add(size);
            if n_bytes > MAX_SKELETON_BYTES {
                return Err(ActionError::Failed(format!(
                    "the skeleton {url} holds more than {MAX_SKELETON_BYTES} bytes, more than fetch copies"
                )));
            }
            let contents = std::fs::read(&real).map_err(|error| read_failed(&path, &error))?;
            files.push(SkeletonFile { path, contents });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The file a skeleton link points to, if it stays in the template's directory.
fn resolve_link(base: &Path, link: &Path, path: &str) -> Result<PathBuf, ActionError> {
    let relative = link.strip_prefix(base).map_err(|_| read_failed(path, &"outside the template's directory"))?;
    let real =
        resolve_beneath(base, &relative.to_string_lossy(), LastLink::Follow).map_err(|error| skeleton_error(&error))?;
    if real.is_dir() {
        return Err(ActionError::Failed(format!(
            "the skeleton's link {path} points to a directory, which fetch does not follow"
        )));
    }
    Ok(real)
}

fn read_failed(path: &str, error: &dyn std::fmt::Display) -> ActionError {
    ActionError::Failed(format!("the skeleton file {path} cannot be read: {error}"))
}

fn skeleton_error(error: &crate::workspace::WorkspaceError) -> ActionError {
    ActionError::Failed(format!("the skeleton is not inside the template's directory: {error}"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::actions::testing;
    use crate::secret::Secrets;

    /// A template directory with a skeleton, beside a secret file.
    fn template_directory() -> tempfile::TempDir {
        let base = tempfile::tempdir().unwrap();
        let template = base.path().join("template");
        std::fs::create_dir_all(template.join("skeleton/${{ values.name }}/.github")).unwrap();
        std::fs::write(template.join("skeleton/README.md"), "# ${{ values.name | upper }}\n").unwrap();
        std::fs::write(template.join("skeleton/${{ values.name }}/main.rs"), "// ${{ values.name }}\n").unwrap();
        std::fs::write(template.join("skeleton/${{ values.name }}/.github/ci.yml"), "run: ${{ github.sha }}\n")
            .unwrap();
        std::fs::write(template.join("skeleton/${{ 'opt.txt' if values.optional }}"), "optional").unwrap();
        std::fs::write(template.join("skeleton/logo.bin"), [0xff, 0x00, 0x24, 0x7b, 0x7b]).unwrap();
        std::fs::write(template.join("shared.txt"), "shared ${{ values.name }}").unwrap();
        std::fs::write(base.path().join("secret.txt"), "outside").unwrap();
        base
    }

    fn files(test: &testing::TestContext) -> Vec<(String, String)> {
        let workspace = test.context.workspace();
        workspace
            .walk()
            .unwrap()
            .into_iter()
            .filter(|entry| entry.kind == crate::workspace::EntryKind::File)
            .map(|entry| {
                let contents = String::from_utf8_lossy(&workspace.read(&entry.path).unwrap()).into_owned();
                (entry.path, contents)
            })
            .collect()
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
    }

    #[tokio::test]
    async fn fetch_template_renders_names_and_contents_and_copies_listed_files_as_they_are() {
        let base = template_directory();
        let test = testing::context(Secrets::new(), Some(base.path().join("template")));
        let input = json!({
            "url": "./skeleton",
            "targetPath": "out",
            "values": {"name": "checkout"},
            "copyWithoutTemplating": ["*/.github/*"],
        });
        FetchTemplate.run(&test.context, input).await.unwrap();
        let found = files(&test);
        assert_eq!(
            found[..3],
            owned(&[
                ("out/README.md", "# CHECKOUT\n"),
                ("out/checkout/.github/ci.yml", "run: ${{ github.sha }}\n"),
                ("out/checkout/main.rs", "// checkout\n"),
            ])
        );
        assert_eq!(found.len(), 4, "the optional file renders an empty name and is left out: {found:?}");
        assert_eq!(test.context.workspace().read("out/logo.bin").unwrap(), [0xff, 0x00, 0x24, 0x7b, 0x7b]);
    }

    #[tokio::test]
    async fn an_expression_error_in_a_skeleton_file_names_the_file() {
        let base = template_directory();
        let test = testing::context(Secrets::new(), Some(base.path().join("template")));
        let error =
            FetchTemplate.run(&test.context, json!({"url": "./skeleton", "values": {"name": "n"}})).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "skeleton file ${{ values.name }}/.github/ci.yml: `github` is not defined here (the expression can use `values`)"
        );
    }

    #[tokio::test]
    async fn fetch_plain_copies_without_rendering() {
        let base = template_directory();
        let test = testing::context(Secrets::new(), Some(base.path().join("template")));
        FetchPlain.run(&test.context, json!({"url": "./skeleton"})).await.unwrap();
        assert!(files(&test).contains(&("README.md".to_owned(), "# ${{ values.name | upper }}\n".to_owned())));
    }

    #[tokio::test]
    async fn a_skeleton_outside_the_templates_directory_is_refused() {
        let base = template_directory();
        let test = testing::context(Secrets::new(), Some(base.path().join("template")));
        for url in ["../", "/etc", "skeleton/../.."] {
            let error = FetchPlain.run(&test.context, json!({"url": url})).await.unwrap_err();
            assert!(error.to_string().contains("not inside the template's directory"), "{url}: {error}");
        }
    }

    #[tokio::test]
    async fn a_skeleton_link_out_of_the_templates_directory_is_refused_and_one_inside_is_copied() {
        let base = template_directory();
        let template = base.path().join("template");
        symlink("../shared.txt", template.join("skeleton/shared.txt")).unwrap();
        let test = testing::context(Secrets::new(), Some(template.clone()));
        let input = json!({"url": "./skeleton", "values": {"name": "n"}, "copyWithoutTemplating": ["*/.github/*"]});
        FetchTemplate.run(&test.context, input).await.unwrap();
        assert_eq!(test.context.workspace().read("shared.txt").unwrap(), b"shared n");

        symlink("../../secret.txt", template.join("skeleton/stolen.txt")).unwrap();
        let test = testing::context(Secrets::new(), Some(template));
        let error = FetchPlain.run(&test.context, json!({"url": "./skeleton"})).await.unwrap_err();
        assert!(error.to_string().contains("leads outside"), "{error}");
        assert!(!test.context.workspace().exists("stolen.txt").unwrap());
    }

    #[tokio::test]
    async fn a_value_that_renders_a_parent_path_cannot_write_outside_the_workspace() {
        let base = template_directory();
        let test = testing::context(Secrets::new(), Some(base.path().join("template")));
        let error = FetchTemplate
            .run(
                &test.context,
                json!({"url": "./skeleton", "values": {"name": "../../escape"}, "copyWithoutTemplating": ["**/ci.yml"]}),
            )
            .await
            .unwrap_err();
        assert!(error.to_string().contains("`..` is not allowed"), "{error}");
    }

    #[tokio::test]
    async fn a_skeleton_with_too_many_files_is_refused() {
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(base.path().join("skeleton")).unwrap();
        for index in 0..=MAX_SKELETON_FILES {
            std::fs::write(base.path().join(format!("skeleton/{index}")), "").unwrap();
        }
        let test = testing::context(Secrets::new(), Some(base.path().to_path_buf()));
        let error = FetchPlain.run(&test.context, json!({"url": "./skeleton"})).await.unwrap_err();
        assert_eq!(error.to_string(), "the skeleton ./skeleton has more than 10000 files, more than fetch copies");
    }

    #[tokio::test]
    async fn a_skeleton_too_large_in_bytes_is_refused_before_it_is_read() {
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(base.path().join("skeleton")).unwrap();
        // A sparse file: large by its size, without filling the disk.
        let file = std::fs::File::create(base.path().join("skeleton/huge.bin")).unwrap();
        file.set_len(MAX_SKELETON_BYTES + 1).unwrap();
        let test = testing::context(Secrets::new(), Some(base.path().to_path_buf()));
        let error = FetchTemplate.run(&test.context, json!({"url": "./skeleton"})).await.unwrap_err();
        assert_eq!(error.to_string(), "the skeleton ./skeleton holds more than 67108864 bytes, more than fetch copies");
    }

    #[tokio::test]
    async fn a_name_that_renders_to_something_other_than_a_relative_path_is_an_error() {
        // An empty directory name makes the path absolute: a part of it is missing.
        for (dir, rendered) in
            [("/etc", "/etc/file"), ("a\\b", "a\\b/file"), ("c:x", "c:x/file"), ("a//b", "a//b/file"), ("", "/file")]
        {
            let base = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(base.path().join("skeleton/${{ values.dir }}")).unwrap();
            std::fs::write(base.path().join("skeleton/${{ values.dir }}/file"), "x").unwrap();
            let test = testing::context(Secrets::new(), Some(base.path().to_path_buf()));
            let input = json!({"url": "./skeleton", "values": {"dir": dir}});
            let error = FetchTemplate.run(&test.context, input).await.unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "skeleton file ${{{{ values.dir }}}}/file: its name renders to {rendered}, which is not a \
                     relative path (it is absolute, has an empty part, or holds `\\` or `:`)"
                ),
                "{dir}"
            );
            assert!(test.context.workspace().walk().unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn fetch_template_leaves_out_the_skeletons_git_directory() {
        let base = template_directory();
        let skeleton = base.path().join("template/skeleton");
        std::fs::create_dir_all(skeleton.join(".git/objects")).unwrap();
        std::fs::write(skeleton.join(".git/HEAD"), "ref: refs/heads/main ${{ x }}\n").unwrap();
        std::fs::write(skeleton.join(".gitignore"), "target\n").unwrap();
        let test = testing::context(Secrets::new(), Some(base.path().join("template")));
        let input = json!({"url": "./skeleton", "values": {"name": "n"}, "copyWithoutTemplating": ["*/.github/*"]});
        FetchTemplate.run(&test.context, input).await.unwrap();
        assert!(!test.context.workspace().exists(".git").unwrap());
        assert!(test.context.workspace().exists(".gitignore").unwrap());
    }

    #[tokio::test]
    async fn a_cancelled_task_stops_fetching() {
        let base = template_directory();
        let test = testing::context(Secrets::new(), Some(base.path().join("template")));
        test.context.cancellation().cancel();
        let error = FetchPlain.run(&test.context, json!({"url": "./skeleton"})).await.unwrap_err();
        assert!(matches!(error, ActionError::Cancelled));
        assert!(test.context.workspace().walk().unwrap().is_empty());
    }
}
