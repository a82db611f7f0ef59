//! `publish:github` and `github:webhook` against a fake GitHub (wiremock)
//! that answers with the JSON shapes of GitHub's REST API, run through the
//! [`Runner`] so that events and outputs pass the task's redactor as they
//! do in production.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use catalog_scaffolder::{
    ActionRegistry, EventSink, GithubPublishConfig, RunError, RunOutcome, Runner, Secrets, TaskEvent, TaskRun,
    Template, Workspace,
};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "ghp_TestToken0123456789abcdefghijklmno";
const TOKEN_VARIABLE: &str = "SCAFFOLDER_TEST_GITHUB_TOKEN";

/// A fake GitHub and a registry whose GitHub actions talk to it.
struct FakeGithub {
    server: MockServer,
    registry: ActionRegistry,
    /// `127.0.0.1:PORT`, the host repoUrl names for this server.
    host: String,
}

async fn fake_github() -> FakeGithub {
    let server = MockServer::start().await;
    let config = GithubPublishConfig {
        api_base_url: server.uri(),
        token_variable: TOKEN_VARIABLE.into(),
        request_timeout_seconds: 5,
    };
    let actions = config.build_with_environment(|name| (name == TOKEN_VARIABLE).then(|| TOKEN.to_owned())).unwrap();
    let mut registry = ActionRegistry::with_builtins();
    actions.register(&mut registry).unwrap();
    let host = actions.host().to_owned();
    FakeGithub { server, registry, host }
}

#[derive(Default)]
struct Events(Mutex<Vec<TaskEvent>>);

impl EventSink for Events {
    fn emit(&self, event: TaskEvent) {
        self.0.lock().unwrap().push(event);
    }
}

struct Ran {
    result: Result<RunOutcome, RunError>,
    events: Vec<TaskEvent>,
}

/// Runs a one-step template over a workspace holding `files`.
async fn run_step(
    registry: &ActionRegistry,
    action: &str,
    input: Value,
    files: &[(&str, &str)],
    secrets: Secrets,
    dry_run: bool,
) -> Ran {
    let entity = catalog_domain::validate(&json!({
        "apiVersion": "scaffolder.backstage.io/v1beta3",
        "kind": "Template",
        "metadata": {"name": "github-test"},
        "spec": {"type": "service", "steps": [{"id": "step", "action": action, "input": input}]},
    }))
    .unwrap();
    let template = Template::from_entity(&entity).unwrap();
    let workspace = Arc::new(Workspace::temporary().unwrap());
    for (file, contents) in files {
        workspace.write(file, contents.as_bytes()).unwrap();
    }
    let events = Arc::new(Events::default());
    let task = TaskRun {
        values: Map::new(),
        secrets,
        user: json!({}),
        dry_run,
        template_directory: None,
        workspace,
        cancellation: CancellationToken::new(),
        start_at: 0,
        previous_outputs: Map::new(),
    };
    let result = Runner::new(registry.clone()).run(&template, task, Arc::clone(&events) as Arc<dyn EventSink>).await;
    let events = events.0.lock().unwrap().clone();
    Ran { result, events }
}

fn base64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Mounts a mock that requires the token and, when given, exactly this body.
async fn expect(server: &MockServer, verb: &str, route: &str, body: Option<Value>, status: u16, answer: Value) {
    let mut mock = Mock::given(method(verb)).and(path(route)).and(header("authorization", format!("Bearer {TOKEN}")));
    if let Some(body) = body {
        mock = mock.and(body_json(body));
    }
    let response = if answer.is_null() {
        ResponseTemplate::new(status)
    } else {
        ResponseTemplate::new(status).set_body_json(answer)
    };
    mock.respond_with(response).expect(1).named(format!("{verb} {route}")).mount(server).await;
}

fn account(login: &str, kind: &str) -> Value {
    json!({
        "login": login,
        "id": 1_234_567,
        "node_id": "MDEyOk9yZ2FuaXphdGlvbjE=",
        "url": format!("https://api.github.com/users/{login}"),
        "html_url": format!("https://github.com/{login}"),
        "type": kind,
        "site_admin": false,
        "name": login,
        "public_repos": 3,
    })
}

fn created_repository(owner: &str, repo: &str, private: bool) -> Value {
    json!({
        "id": 1_296_269,
        "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
        "name": repo,
        "full_name": format!("{owner}/{repo}"),
        "owner": {"login": owner, "id": 1_234_567, "type": "Organization"},
        "private": private,
        "html_url": format!("https://github.com/{owner}/{repo}"),
        "description": "Rust service checkout",
        "fork": false,
        "url": format!("https://api.github.com/repos/{owner}/{repo}"),
        "git_url": format!("git://github.com/{owner}/{repo}.git"),
        "ssh_url": format!("git@github.com:{owner}/{repo}.git"),
        "clone_url": format!("https://github.com/{owner}/{repo}.git"),
        "default_branch": "main",
        "visibility": if private { "private" } else { "public" },
        "created_at": "2026-01-26T19:01:12Z",
    })
}

fn git_object(owner: &str, repo: &str, kind: &str, sha: &str) -> Value {
    json!({"sha": sha, "url": format!("https://api.github.com/repos/{owner}/{repo}/git/{kind}/{sha}")})
}

/// Mocks the upload of `files` as blobs, the tree, and the parentless
/// commit; returns the commit's sha.
async fn expect_first_commit(
    server: &MockServer,
    owner: &str,
    repo: &str,
    files: &[(&str, &str)],
    commit: Value,
) -> String {
    let git = format!("/repos/{owner}/{repo}/git");
    let mut entries = Vec::new();
    for (index, (file, contents)) in files.iter().enumerate() {
        let sha = format!("{index:0>40}");
        let body = json!({"content": base64(contents), "encoding": "base64"});
        expect(server, "POST", &format!("{git}/blobs"), Some(body), 201, git_object(owner, repo, "blobs", &sha)).await;
        entries.push(json!({"path": file, "mode": "100644", "type": "blob", "sha": sha}));
    }
    let tree_sha = "9fb037999f264ba9a7fc6274d15fa3ae2ab98312";
    let mut tree = git_object(owner, repo, "trees", tree_sha);
    tree["tree"] = json!(entries);
    tree["truncated"] = json!(false);
    expect(server, "POST", &format!("{git}/trees"), Some(json!({"tree": entries})), 201, tree).await;
    let commit_sha = "7638417db6d59f3c431d3e1f261cc637155684cd";
    let mut expected_commit = commit;
    expected_commit["tree"] = json!(tree_sha);
    expected_commit["parents"] = json!([]);
    let mut answer = git_object(owner, repo, "commits", commit_sha);
    answer["html_url"] = json!(format!("https://github.com/{owner}/{repo}/commit/{commit_sha}"));
    answer["tree"] = git_object(owner, repo, "trees", tree_sha);
    answer["parents"] = json!([]);
    answer["message"] = expected_commit["message"].clone();
    expect(server, "POST", &format!("{git}/commits"), Some(expected_commit), 201, answer).await;
    commit_sha.to_owned()
}

fn reference(owner: &str, repo: &str, branch: &str, sha: &str) -> Value {
    json!({
        "ref": format!("refs/heads/{branch}"),
        "node_id": "MDM6UmVmcmVmcy9oZWFkcy9mZWF0dXJlQQ==",
        "url": format!("https://api.github.com/repos/{owner}/{repo}/git/refs/heads/{branch}"),
        "object": {"type": "commit", "sha": sha, "url": format!("https://api.github.com/repos/{owner}/{repo}/git/commits/{sha}")},
    })
}

const FILES: &[(&str, &str)] = &[("README.md", "# checkout\n"), ("src/main.rs", "fn main() {}\n")];

#[tokio::test]
async fn publishing_to_an_organisation_creates_the_repository_pushes_one_parentless_commit_and_grants_access() {
    let github = fake_github().await;
    let server = &github.server;
    expect(server, "GET", "/users/acme", None, 200, account("acme", "Organization")).await;
    let creation = json!({
        "name": "checkout",
        "auto_init": true,
        "private": true,
        "visibility": "internal",
        "description": "Rust service checkout",
    });
    expect(server, "POST", "/orgs/acme/repos", Some(creation), 201, created_repository("acme", "checkout", true)).await;
    let commit = json!({
        "message": "Scaffold checkout",
        "author": {"name": "Scaffolder", "email": "scaffolder@acme.example"},
    });
    let commit_sha = expect_first_commit(server, "acme", "checkout", FILES, commit).await;
    let force = json!({"sha": commit_sha, "force": true});
    let moved = reference("acme", "checkout", "main", &commit_sha);
    expect(server, "PATCH", "/repos/acme/checkout/git/refs/heads/main", Some(force), 200, moved).await;
    let topics = json!({"names": ["rust", "service"]});
    expect(server, "PUT", "/repos/acme/checkout/topics", Some(topics.clone()), 200, topics).await;
    let invitation = json!({"id": 1, "permissions": "write", "invitee": {"login": "alice"}});
    let push = json!({"permission": "push"});
    expect(server, "PUT", "/repos/acme/checkout/collaborators/alice", Some(push), 201, invitation).await;
    let admin = json!({"permission": "admin"});
    expect(server, "PUT", "/orgs/acme/teams/platform-dx/repos/acme/checkout", Some(admin), 204, Value::Null).await;

    let input = json!({
        "repoUrl": format!("{}?owner=acme&repo=checkout", github.host),
        "description": "Rust service checkout",
        "repoVisibility": "internal",
        "topics": ["rust", "service"],
        "collaborators": [{"user": "alice", "access": "push"}, {"team": "platform-dx", "access": "admin"}],
        "gitCommitMessage": "Scaffold checkout",
        "gitAuthorName": "Scaffolder",
        "gitAuthorEmail": "scaffolder@acme.example",
    });
    let ran = run_step(&github.registry, "publish:github", input, FILES, Secrets::new(), false).await;
    let outcome = ran.result.unwrap_or_else(|error| panic!("{error}; events: {:?}", ran.events));
    assert_eq!(
        outcome.step_outputs["step"],
        json!({
            "remoteUrl": "https://github.com/acme/checkout.git",
            "repoContentsUrl": "https://github.com/acme/checkout/blob/main",
            "commitHash": commit_sha,
        })
    );
    server.verify().await;
    let n_requests = server.received_requests().await.unwrap().len();
    assert_eq!(n_requests, 10, "account, repository, 2 blobs, tree, commit, ref, topics, user, team");
}

#[tokio::test]
async fn publishing_for_the_tokens_own_user_uses_user_repos_and_moves_the_default_branch() {
    let github = fake_github().await;
    let server = &github.server;
    expect(server, "GET", "/users/alice", None, 200, account("alice", "User")).await;
    expect(server, "GET", "/user", None, 200, account("Alice", "User")).await;
    let creation = json!({"name": "notes", "auto_init": true, "private": false});
    expect(server, "POST", "/user/repos", Some(creation), 201, created_repository("alice", "notes", false)).await;
    let commit_sha =
        expect_first_commit(server, "alice", "notes", &[("notes.md", "hello\n")], json!({"message": "initial commit"}))
            .await;
    let new_ref = json!({"ref": "refs/heads/trunk", "sha": commit_sha});
    let created_ref = reference("alice", "notes", "trunk", &commit_sha);
    expect(server, "POST", "/repos/alice/notes/git/refs", Some(new_ref), 201, created_ref).await;
    let mut renamed = created_repository("alice", "notes", false);
    renamed["default_branch"] = json!("trunk");
    expect(server, "PATCH", "/repos/alice/notes", Some(json!({"default_branch": "trunk"})), 200, renamed).await;
    expect(server, "DELETE", "/repos/alice/notes/git/refs/heads/main", None, 204, Value::Null).await;

    let input = json!({
        "repoUrl": format!("{}?owner=alice&repo=notes", github.host),
        "repoVisibility": "public",
        "defaultBranch": "trunk",
    });
    let ran =
        run_step(&github.registry, "publish:github", input, &[("notes.md", "hello\n")], Secrets::new(), false).await;
    let outcome = ran.result.unwrap_or_else(|error| panic!("{error}; events: {:?}", ran.events));
    assert_eq!(outcome.step_outputs["step"]["repoContentsUrl"], "https://github.com/alice/notes/blob/trunk");
    assert_eq!(outcome.step_outputs["step"]["remoteUrl"], "https://github.com/alice/notes.git");
    server.verify().await;
}

#[tokio::test]
async fn a_user_other_than_the_tokens_own_is_refused_before_anything_is_created() {
    let github = fake_github().await;
    let server = &github.server;
    expect(server, "GET", "/users/bob", None, 200, account("bob", "User")).await;
    expect(server, "GET", "/user", None, 200, account("alice", "User")).await;
    let input = json!({"repoUrl": format!("{}?owner=bob&repo=notes", github.host)});
    let ran = run_step(&github.registry, "publish:github", input, FILES, Secrets::new(), false).await;
    let error = ran.result.unwrap_err().to_string();
    assert_eq!(
        error,
        "step step failed: publish:github: the action cannot create a repository for the user bob: a token creates \
         repositories only for its own user, which is alice"
    );
    server.verify().await;
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_repository_that_already_exists_is_a_clear_error_naming_it() {
    let github = fake_github().await;
    let server = &github.server;
    expect(server, "GET", "/users/acme", None, 200, account("acme", "Organization")).await;
    let refusal = json!({
        "message": "Repository creation failed.",
        "errors": [{"resource": "Repository", "code": "custom", "field": "name", "message": "name already exists on this account"}],
        "documentation_url": "https://docs.github.com/rest/repos/repos#create-an-organization-repository",
        "status": "422",
    });
    expect(server, "POST", "/orgs/acme/repos", None, 422, refusal).await;
    let input = json!({"repoUrl": format!("{}?owner=acme&repo=checkout", github.host)});
    let ran = run_step(&github.registry, "publish:github", input, FILES, Secrets::new(), false).await;
    let message = "publish:github: GitHub refused to create the repository acme/checkout (422 Unprocessable \
                   Entity): name already exists on this account";
    assert_eq!(ran.result.unwrap_err().to_string(), format!("step step failed: {message}"));
    assert!(ran.events.contains(&TaskEvent::StepFailed { step_id: "step".into(), message: message.into() }));
    server.verify().await;
}

#[tokio::test]
async fn a_token_github_refuses_is_named_as_the_problem() {
    let github = fake_github().await;
    let server = &github.server;
    let refusal =
        json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"});
    expect(server, "GET", "/users/acme", None, 401, refusal).await;
    let input = json!({"repoUrl": format!("{}?owner=acme&repo=checkout", github.host)});
    let ran = run_step(&github.registry, "publish:github", input, FILES, Secrets::new(), false).await;
    let error = ran.result.unwrap_err().to_string();
    assert!(error.contains("the token cannot look up the GitHub account acme: GitHub does not accept it"), "{error}");
    assert!(!error.contains(TOKEN), "{error}");
}

#[tokio::test]
async fn a_dry_run_sends_no_request_and_returns_outputs_for_the_named_repository() {
    let github = fake_github().await;
    let input = json!({"repoUrl": format!("{}?owner=acme&repo=checkout", github.host), "defaultBranch": "trunk"});
    let ran = run_step(&github.registry, "publish:github", input, FILES, Secrets::new(), true).await;
    let outcome = ran.result.unwrap();
    let base = format!("https://{}/acme/checkout", github.host);
    assert_eq!(
        outcome.step_outputs["step"],
        json!({
            "remoteUrl": format!("{base}.git"),
            "repoContentsUrl": format!("{base}/blob/trunk"),
            "commitHash": "0000000000000000000000000000000000000000",
        })
    );
    let webhook = json!({
        "repoUrl": format!("{}?owner=acme&repo=checkout", github.host),
        "webhookUrl": "https://ci.acme.example/hooks",
    });
    run_step(&github.registry, "github:webhook", webhook, &[], Secrets::new(), true).await.result.unwrap();
    assert!(github.server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_webhooks_secret_reaches_github_but_no_log_line_event_or_output() {
    let github = fake_github().await;
    let server = &github.server;
    let secret = "whsec-Zm9vYmFyYmF6cXV4MTIzNDU2";
    let hook = json!({
        "name": "web",
        "active": true,
        "events": ["push", "pull_request"],
        "config": {"url": "https://ci.acme.example/hooks", "content_type": "json", "insecure_ssl": "0", "secret": secret},
    });
    let created = json!({
        "type": "Repository",
        "id": 12_345_678,
        "name": "web",
        "active": true,
        "events": ["push", "pull_request"],
        "config": {"url": "https://ci.acme.example/hooks", "content_type": "json", "insecure_ssl": "0", "secret": "********"},
        "url": "https://api.github.com/repos/acme/checkout/hooks/12345678",
    });
    expect(server, "POST", "/repos/acme/checkout/hooks", Some(hook), 201, created).await;
    let input = json!({
        "repoUrl": format!("{}?owner=acme&repo=checkout", github.host),
        "webhookUrl": "https://ci.acme.example/hooks",
        "webhookSecret": "${{ secrets.hookSecret }}",
        "events": ["push", "pull_request"],
        "contentType": "json",
    });
    let secrets = Secrets::from([("hookSecret", secret)]);
    let ran = run_step(&github.registry, "github:webhook", input, &[], secrets, false).await;
    let outcome = ran.result.unwrap_or_else(|error| panic!("{error}; events: {:?}", ran.events));
    server.verify().await;
    let requests = server.received_requests().await.unwrap();
    assert!(String::from_utf8_lossy(&requests[0].body).contains(secret));
    let logged: Vec<&TaskEvent> = ran.events.iter().filter(|event| matches!(event, TaskEvent::Log { .. })).collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    let everything = format!("{:?} {outcome:?}", ran.events);
    assert!(!everything.contains(secret), "{everything}");
    assert!(!everything.contains(&secret[..12]), "{everything}");
}
