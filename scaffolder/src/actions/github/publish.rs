//! `publish:github`: creates a GitHub repository and pushes the workspace
//! as its first commit, without a git binary, through the git data API.
//!
//! GitHub's git data API answers 409 for an empty repository, so the
//! repository is created with `auto_init` (GitHub writes a README commit),
//! and the workspace's commit, which has no parents, then replaces it: the
//! branch is moved onto it with `force`, or, when the template asks for a
//! branch other than the one GitHub created, the new branch is created, made
//! the default and the old one deleted. The history holds exactly one
//! commit, the workspace's.
//!
//! Files are read only through the [`Workspace`](crate::workspace::Workspace)
//! and pushed with mode 100644; a symbolic link is pushed as a link (mode
//! 120000, its target as the blob), as git would.

use std::sync::Arc;

use base64::Engine as _;
use futures::future::BoxFuture;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{GithubClient, GithubError, RepoLocation, check_account};
use crate::action::{Action, ActionContext, ActionError, read_input};
use crate::workspace::EntryKind;

const ID: &str = "publish:github";

/// What a dry run reports as the commit: no commit exists.
const DRY_RUN_COMMIT: &str = "0000000000000000000000000000000000000000";

pub(super) struct PublishGithub {
    client: Arc<GithubClient>,
}

impl PublishGithub {
    pub(super) fn new(client: Arc<GithubClient>) -> Self {
        Self { client }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Input {
    repo_url: String,
    description: Option<String>,
    #[serde(default)]
    repo_visibility: Visibility,
    #[serde(default = "default_branch")]
    default_branch: String,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    collaborators: Vec<Collaborator>,
    source_path: Option<String>,
    #[serde(default = "default_commit_message")]
    git_commit_message: String,
    git_author_name: Option<String>,
    git_author_email: Option<String>,
}

fn default_branch() -> String {
    "main".to_owned()
}

fn default_commit_message() -> String {
    "initial commit".to_owned()
}

#[derive(Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Visibility {
    #[default]
    Private,
    Internal,
    Public,
}

impl Visibility {
    fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Internal => "internal",
            Self::Public => "public",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Collaborator {
    user: Option<String>,
    team: Option<String>,
    access: Access,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Access {
    Pull,
    Triage,
    Push,
    Maintain,
    Admin,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Triage => "triage",
            Self::Push => "push",
            Self::Maintain => "maintain",
            Self::Admin => "admin",
        }
    }
}

/// A collaborator, checked.
enum Grantee {
    User(String),
    Team(String),
}

/// The input, checked before any request.
struct Plan {
    location: RepoLocation,
    input: Input,
    grants: Vec<(Grantee, Access)>,
    /// The workspace directory whose files are pushed (`""` for the root).
    source_prefix: String,
}

/// One file to push.
struct PushedFile {
    path: String,
    mode: &'static str,
    contents: Vec<u8>,
}

impl Action for PublishGithub {
    fn id(&self) -> &str {
        ID
    }

    fn description(&self) -> &str {
        "Creates a GitHub repository and pushes the workspace (or sourcePath in it) as its first commit."
    }

    /// A dry run calls nothing and returns outputs built from the input.
    fn supports_dry_run(&self) -> bool {
        true
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["repoUrl"],
            "additionalProperties": false,
            "properties": {
                "repoUrl": {"type": "string", "description": "Where to create the repository: github.com?owner=o&repo=r."},
                "description": {"type": "string"},
                "repoVisibility": {"type": "string", "enum": ["private", "internal", "public"], "description": "Default private; internal only for organisations."},
                "defaultBranch": {"type": "string", "description": "The branch the commit is pushed to (default main)."},
                "topics": {"type": "array", "items": {"type": "string"}},
                "collaborators": {"type": "array", "items": {
                    "type": "object",
                    "required": ["access"],
                    "additionalProperties": false,
                    "properties": {
                        "user": {"type": "string"},
                        "team": {"type": "string", "description": "A team's slug in the owning organisation."},
                        "access": {"type": "string", "enum": ["pull", "triage", "push", "maintain", "admin"]},
                    },
                }},
                "sourcePath": {"type": "string", "description": "The workspace directory to push (default: all of it)."},
                "gitCommitMessage": {"type": "string", "description": "Default: initial commit."},
                "gitAuthorName": {"type": "string"},
                "gitAuthorEmail": {"type": "string"},
            },
        })
    }

    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "remoteUrl": {"type": "string", "description": "The clone URL."},
                "repoContentsUrl": {"type": "string", "description": "https://HOST/o/r/blob/BRANCH"},
                "commitHash": {"type": "string"},
            },
        })
    }

    fn run<'a>(&'a self, context: &'a ActionContext, input: Value) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move {
            let plan = self.plan(read_input(input)?)?;
            let files = read_files(context, &plan.source_prefix)?;
            if files.is_empty() {
                return Err(ActionError::Failed(format!(
                    "{ID}: there is no file to publish in {}",
                    if plan.source_prefix.is_empty() { "the workspace" } else { &plan.source_prefix }
                )));
            }
            let slug = plan.location.slug();
            if context.dry_run() {
                context.logger().info(&format!(
                    "dry run: would create the repository {slug} and push {} files to {}",
                    files.len(),
                    plan.input.default_branch
                ));
                let base = format!("https://{}/{slug}", self.client.web_host());
                return Ok(json!({
                    "remoteUrl": format!("{base}.git"),
                    "repoContentsUrl": format!("{base}/blob/{}", plan.input.default_branch),
                    "commitHash": DRY_RUN_COMMIT,
                }));
            }
            self.publish(context, &plan, files).await.map_err(|error| error.into_action_error(ID))
        })
    }
}

impl PublishGithub {
    fn plan(&self, input: Input) -> Result<Plan, ActionError> {
        let location = RepoLocation::parse(&input.repo_url, self.client.web_host())?;
        check_branch(&input.default_branch)?;
        let mut grants = Vec::new();
        for (index, collaborator) in input.collaborators.iter().enumerate() {
            let field = format!("collaborators[{index}]");
            let grantee = match (&collaborator.user, &collaborator.team) {
                (Some(user), None) => {
                    check_account(&format!("{field}.user"), user)?;
                    Grantee::User(user.clone())
                }
                (None, Some(team)) => {
                    check_team_slug(&format!("{field}.team"), team)?;
                    Grantee::Team(team.clone())
                }
                _ => return Err(ActionError::Input(format!("{field}: must name exactly one of user and team"))),
            };
            grants.push((grantee, collaborator.access));
        }
        let source_prefix = match input.source_path.as_deref().map(|path| path.trim_matches('/')) {
            None | Some("" | ".") => String::new(),
            Some(path) if path.split('/').any(|part| part == "..") => {
                return Err(ActionError::Input("sourcePath: `..` is not allowed in a workspace path".into()));
            }
            Some(path) => path.trim_start_matches("./").to_owned(),
        };
        Ok(Plan { location, input, grants, source_prefix })
    }

    async fn publish(
        &self,
        context: &ActionContext,
        plan: &Plan,
        files: Vec<PushedFile>,
    ) -> Result<Value, GithubError> {
        let client = &self.client;
        let location = &plan.location;
        let slug = location.slug();
        let input = &plan.input;

        let account = client
            .send(
                context,
                Method::GET,
                &format!("/users/{}", location.owner),
                None,
                &format!("look up the GitHub account {}", location.owner),
            )
            .await?;
        let is_organisation = match account["type"].as_str() {
            Some("Organization") => true,
            Some("User") => false,
            _ => {
                return Err(response_error(
                    format!("look up the GitHub account {}", location.owner),
                    "`type` is neither User nor Organization",
                ));
            }
        };
        if !is_organisation {
            self.check_own_account(context, plan).await?;
        }

        let mut body =
            json!({"name": location.repo, "auto_init": true, "private": input.repo_visibility != Visibility::Public});
        if let Some(description) = &input.description {
            body["description"] = json!(description);
        }
        let create_path = if is_organisation {
            body["visibility"] = json!(input.repo_visibility.as_str());
            format!("/orgs/{}/repos", location.owner)
        } else {
            "/user/repos".to_owned()
        };
        context.logger().info(&format!("creating the repository {slug}"));
        let purpose = format!("create the repository {slug}");
        let created = client.send(context, Method::POST, &create_path, Some(&body), &purpose).await?;
        let clone_url = text_field(&created, "clone_url", &purpose)?;
        let html_url = text_field(&created, "html_url", &purpose)?;
        let initial_branch = text_field(&created, "default_branch", &purpose)?;

        // From here on the repository exists; failures say so, since retrying the task would hit "already exists".
        let created_note = |error: GithubError| match error {
            GithubError::Cancelled => GithubError::Cancelled,
            other => GithubError::AfterCreation { html_url: html_url.clone(), source: Box::new(other) },
        };
        let commit = self.push(context, plan, files, &initial_branch).await.map_err(created_note)?;
        self.configure(context, plan, is_organisation).await.map_err(created_note)?;
        Ok(json!({
            "remoteUrl": clone_url,
            "repoContentsUrl": format!("{html_url}/blob/{}", input.default_branch),
            "commitHash": commit,
        }))
    }

    /// A user-owned repository is created for the token's own user: refuse
    /// another user, rather than create the repository in the wrong account.
    async fn check_own_account(&self, context: &ActionContext, plan: &Plan) -> Result<(), GithubError> {
        let owner = &plan.location.owner;
        let purpose = format!("create a repository for the user {owner}");
        if plan.input.repo_visibility == Visibility::Internal {
            return Err(GithubError::Refused {
                purpose,
                reason: "repoVisibility internal exists only for organisations' repositories".into(),
            });
        }
        if plan.grants.iter().any(|(grantee, _)| matches!(grantee, Grantee::Team(_))) {
            return Err(GithubError::Refused {
                purpose,
                reason: "teams exist only in organisations, so a team cannot be a collaborator here".into(),
            });
        }
        let me = self.client.send(context, Method::GET, "/user", None, "look up the token's own user").await?;
        let login = text_field(&me, "login", "look up the token's own user")?;
        if !login.eq_ignore_ascii_case(owner) {
            return Err(GithubError::Refused {
                purpose,
                reason: format!("a token creates repositories only for its own user, which is {login}"),
            });
        }
        Ok(())
    }

    /// Pushes the files as one parentless commit on the default branch and
    /// returns the commit's sha.
    async fn push(
        &self,
        context: &ActionContext,
        plan: &Plan,
        files: Vec<PushedFile>,
        initial_branch: &str,
    ) -> Result<String, GithubError> {
        let client = &self.client;
        let slug = plan.location.slug();
        let git = format!("/repos/{slug}/git");
        let branch = &plan.input.default_branch;
        let n_files = files.len();
        let mut entries = Vec::with_capacity(n_files);
        for file in files {
            if context.cancellation().is_cancelled() {
                return Err(GithubError::Cancelled);
            }
            let purpose = format!("upload {} to {slug}", file.path);
            let body = json!({
                "content": base64::engine::general_purpose::STANDARD.encode(&file.contents),
                "encoding": "base64",
            });
            let blob = client.send_when_ready(context, Method::POST, &format!("{git}/blobs"), &body, &purpose).await?;
            let sha = text_field(&blob, "sha", &purpose)?;
            entries.push(json!({"path": file.path, "mode": file.mode, "type": "blob", "sha": sha}));
        }
        let purpose = format!("create the file tree of the first commit in {slug}");
        let tree = client
            .send(context, Method::POST, &format!("{git}/trees"), Some(&json!({"tree": entries})), &purpose)
            .await?;
        let tree_sha = text_field(&tree, "sha", &purpose)?;

        let mut commit = json!({"message": plan.input.git_commit_message, "tree": tree_sha, "parents": []});
        if let (Some(name), Some(email)) = (&plan.input.git_author_name, &plan.input.git_author_email) {
            commit["author"] = json!({"name": name, "email": email});
        }
        let purpose = format!("create the first commit in {slug}");
        let commit = client.send(context, Method::POST, &format!("{git}/commits"), Some(&commit), &purpose).await?;
        let commit_sha = text_field(&commit, "sha", &purpose)?;

        let purpose = format!("point the branch {branch} of {slug} at the first commit");
        if initial_branch == branch {
            let body = json!({"sha": commit_sha, "force": true});
            client.send(context, Method::PATCH, &format!("{git}/refs/heads/{branch}"), Some(&body), &purpose).await?;
        } else {
            let body = json!({"ref": format!("refs/heads/{branch}"), "sha": commit_sha});
            client.send(context, Method::POST, &format!("{git}/refs"), Some(&body), &purpose).await?;
            let purpose = format!("make {branch} the default branch of {slug}");
            let body = json!({"default_branch": branch});
            client.send(context, Method::PATCH, &format!("/repos/{slug}"), Some(&body), &purpose).await?;
            let purpose = format!("delete the branch {initial_branch} GitHub created in {slug}");
            client.send(context, Method::DELETE, &format!("{git}/refs/heads/{initial_branch}"), None, &purpose).await?;
        }
        context.logger().info(&format!("pushed {n_files} files to {slug} as commit {commit_sha} on {branch}"));
        Ok(commit_sha)
    }

    /// Topics and collaborators.
    async fn configure(&self, context: &ActionContext, plan: &Plan, is_organisation: bool) -> Result<(), GithubError> {
        let client = &self.client;
        let location = &plan.location;
        let slug = location.slug();
        if !plan.input.topics.is_empty() {
            let body = json!({"names": plan.input.topics});
            let purpose = format!("set the topics of {slug}");
            client.send(context, Method::PUT, &format!("/repos/{slug}/topics"), Some(&body), &purpose).await?;
        }
        for (grantee, access) in &plan.grants {
            let body = json!({"permission": access.as_str()});
            match grantee {
                Grantee::User(user) => {
                    let purpose = format!("give {user} {} access to {slug}", access.as_str());
                    let path = format!("/repos/{slug}/collaborators/{user}");
                    client.send(context, Method::PUT, &path, Some(&body), &purpose).await?;
                }
                Grantee::Team(team) if is_organisation => {
                    let purpose = format!("give the team {team} {} access to {slug}", access.as_str());
                    let path = format!("/orgs/{}/teams/{team}/repos/{slug}", location.owner);
                    client.send(context, Method::PUT, &path, Some(&body), &purpose).await?;
                }
                Grantee::Team(_) => unreachable!("check_own_account refuses teams for a user's repository"),
            }
        }
        Ok(())
    }
}

/// The files under `prefix`, sorted by path, with paths relative to it.
fn read_files(context: &ActionContext, prefix: &str) -> Result<Vec<PushedFile>, ActionError> {
    let workspace = context.workspace();
    let mut files = Vec::new();
    for entry in workspace.walk()? {
        let relative = if prefix.is_empty() {
            entry.path.as_str()
        } else {
            match entry.path.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('/')) {
                Some(relative) => relative,
                None => continue,
            }
        };
        // A workspace that is itself a clone must not push its git metadata as files.
        if relative == ".git" || relative.starts_with(".git/") {
            continue;
        }
        let (mode, contents) = match &entry.kind {
            EntryKind::Directory => continue,
            EntryKind::File => ("100644", workspace.read(&entry.path)?),
            EntryKind::Symlink { target } => ("120000", target.clone().into_bytes()),
        };
        files.push(PushedFile { path: relative.to_owned(), mode, contents });
    }
    Ok(files)
}

fn text_field(value: &Value, field: &str, purpose: &str) -> Result<String, GithubError> {
    value[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| response_error(purpose.to_owned(), &format!("it has no `{field}`")))
}

fn response_error(purpose: String, message: &str) -> GithubError {
    GithubError::Response { purpose, message: message.to_owned() }
}

/// Git's rules for a branch name, those that matter in an API path: no
/// `..`, no control characters, spaces or `~^:?*[\`, no empty component,
/// no trailing `.lock`.
fn check_branch(branch: &str) -> Result<(), ActionError> {
    let valid = !branch.is_empty()
        && !branch.contains("..")
        && !branch.contains("@{")
        && !branch.chars().any(|c| c.is_control() || " ~^:?*[\\".contains(c))
        && !branch.split('/').any(|part| part.is_empty() || part.starts_with('.') || part.ends_with(".lock"))
        && !branch.ends_with('.');
    if valid {
        Ok(())
    } else {
        Err(ActionError::Input(format!("defaultBranch: {branch:?} is not a valid git branch name")))
    }
}

/// GitHub's team slugs: lower-case letters, digits, `-` and `_`.
fn check_team_slug(field: &str, slug: &str) -> Result<(), ActionError> {
    let valid =
        !slug.is_empty() && slug.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ActionError::Input(format!(
            "{field}: {slug:?} is not a team slug (lower-case letters, digits, `-` and `_`)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_that_git_refuses_are_refused() {
        for branch in ["main", "release/1.0", "feature_x"] {
            assert!(check_branch(branch).is_ok(), "{branch}");
        }
        for branch in ["", "a..b", "a b", "/main", "main/", "x.lock", "heads/.hidden", "a:b"] {
            let error = check_branch(branch).unwrap_err();
            assert!(error.to_string().contains("defaultBranch:"), "{branch}: {error}");
        }
    }

    #[test]
    fn team_slugs_are_lower_case_words() {
        assert!(check_team_slug("team", "platform-dx_2").is_ok());
        assert!(check_team_slug("team", "acme/platform").is_err());
        assert!(check_team_slug("team", "Platform").is_err());
    }
}
