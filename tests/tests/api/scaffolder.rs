//! The scaffolder end to end: the example `rust-service` template run through
//! GraphQL on the real server, publishing to a fake GitHub that keeps what is
//! pushed (wiremock with GitHub's JSON shapes), registered through the GitHub
//! provider reading that same repository back, followed over a real
//! WebSocket; dry runs, refused values, and a secret that comes back in no
//! event, file or output.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use catalog_api::auth::identity::Permission;
use catalog_api::config::{Config, ProviderConfig};
use catalog_ingestion::{GithubAuthConfig, GithubProviderConfig};
use catalog_store::backend_tests;
use catalog_store::testing::TestDatabase;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::{TestApp, editable_examples, error_code, examples_root, spawn_app_with};
use crate::stream::{Protocol, Subscriber};

backend_tests!(
    the_example_template_publishes_registers_and_streams_its_events,
    a_dry_run_renders_the_skeleton_and_publishes_nothing,
    values_are_checked_before_anything_runs,
    a_secret_comes_back_in_no_event_file_or_output_of_a_run_or_dry_run,
    a_failed_task_is_retried_from_its_failed_step_and_a_waiting_one_cancelled,
    a_policy_limits_which_templates_and_actions_a_principal_runs,
    the_docs_site_template_runs_end_to_end,
    a_template_read_from_github_fetches_its_skeleton_from_there,
);

/// The token the server reads: cargo sets CARGO_PKG_NAME for every test
/// process, and tests cannot set variables of their own.
const TOKEN_VARIABLE: &str = "CARGO_PKG_NAME";

/// A fake GitHub that keeps the files pushed to `acme/payments-api` and
/// serves them back through the contents API.
#[derive(Clone, Default)]
struct Pushed {
    blobs: Arc<Mutex<HashMap<String, String>>>,
    files: Arc<Mutex<HashMap<String, String>>>,
}

impl Respond for Pushed {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let route = request.url.path();
        if route.ends_with("/git/blobs") {
            let mut blobs = self.blobs.lock().unwrap();
            let sha = format!("{:0>40}", blobs.len() + 1);
            blobs.insert(sha.clone(), body["content"].as_str().unwrap_or_default().to_owned());
            return ResponseTemplate::new(201)
                .set_body_json(json!({"sha": sha, "url": format!("https://api.github.example/b/{sha}")}));
        }
        if route.ends_with("/git/trees") {
            let blobs = self.blobs.lock().unwrap();
            let mut files = self.files.lock().unwrap();
            for entry in body["tree"].as_array().into_iter().flatten() {
                let sha = entry["sha"].as_str().unwrap_or_default();
                files.insert(
                    entry["path"].as_str().unwrap_or_default().to_owned(),
                    blobs.get(sha).cloned().unwrap_or_default(),
                );
            }
            return ResponseTemplate::new(201).set_body_json(
                json!({"sha": "9fb037999f264ba9a7fc6274d15fa3ae2ab98312", "tree": body["tree"], "truncated": false}),
            );
        }
        // GET /repos/acme/payments-api/contents/{path}
        let file = route.split("/contents/").nth(1).unwrap_or_default();
        match self.files.lock().unwrap().get(file) {
            Some(content) => ResponseTemplate::new(200)
                .set_body_json(json!({"type": "file", "encoding": "base64", "content": content, "path": file})),
            None => ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"})),
        }
    }
}

fn repository() -> Value {
    json!({"id": 1_296_269, "name": "payments-api", "full_name": "acme/payments-api", "private": true,
           "owner": {"login": "acme", "type": "Organization"}, "html_url": "https://github.example/acme/payments-api",
           "clone_url": "https://github.example/acme/payments-api.git", "fork": false, "archived": false,
           "default_branch": "main", "topics": [], "visibility": "private"})
}

/// The fake GitHub; `publishes`: how many repositories must be created
/// (checked when the server drops).
async fn fake_github(publishes: u64) -> (MockServer, Pushed) {
    let server = MockServer::start().await;
    let pushed = Pushed::default();
    let token = format!("Bearer {}", env!("CARGO_PKG_NAME"));
    Mock::given(method("GET"))
        .and(path("/users/acme"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"login": "acme", "id": 1, "type": "Organization"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/orgs/acme/repos"))
        .and(header("authorization", token.as_str()))
        .respond_with(ResponseTemplate::new(201).set_body_json(repository()))
        .expect(publishes)
        .mount(&server)
        .await;
    for route in ["/repos/acme/payments-api/git/blobs", "/repos/acme/payments-api/git/trees"] {
        Mock::given(method("POST")).and(path(route)).respond_with(pushed.clone()).mount(&server).await;
    }
    Mock::given(method("POST"))
        .and(path("/repos/acme/payments-api/git/commits"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"sha": "7638417db6d59f3c431d3e1f261cc637155684cd", "parents": []})),
        )
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/repos/acme/payments-api/git/refs/heads/main"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ref": "refs/heads/main", "object": {"type": "commit", "sha": "7638417db6d59f3c431d3e1f261cc637155684cd"}})))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/repos/acme/payments-api/topics"))
        .respond_with(|request: &Request| {
            let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            ResponseTemplate::new(200).set_body_json(json!({"names": body["names"]}))
        })
        .mount(&server)
        .await;
    // What the discovery provider reads back.
    Mock::given(method("GET"))
        .and(path("/orgs/acme/repos"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/acme/payments-api"))
        .respond_with(ResponseTemplate::new(200).set_body_json(repository()))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/repos/acme/payments-api/contents/.+"))
        .respond_with(pushed.clone())
        .mount(&server)
        .await;
    (server, pushed)
}

async fn app_on(database: TestDatabase, github: &MockServer, catalog: &std::path::Path) -> TestApp {
    let url = database.url.clone();
    let api_base_url = github.uri();
    spawn_app_with(&url, catalog, Some(database), move |config: &mut Config| {
        config.scaffolder.github.api_base_url = api_base_url.clone();
        config.scaffolder.github.token_variable = TOKEN_VARIABLE.into();
        config.scaffolder.register_timeout_seconds = 10;
        config.ingestion.providers.push(ProviderConfig::Github(GithubProviderConfig {
            organization: "acme".into(),
            auth: GithubAuthConfig {
                api_base_url,
                token_variable: "CATALOG_TEST_GITHUB_TOKEN_UNSET".into(),
                ..GithubAuthConfig::default()
            },
            ..GithubProviderConfig::default()
        }));
    })
    .await
}

async fn issue(app: &TestApp, name: &str, scopes: &[Permission]) -> String {
    catalog_api::auth::issue_token(&app.store.access_store(), name, scopes, None, "test").await.unwrap().token
}

fn host(github: &MockServer) -> String {
    github.uri().trim_start_matches("http://").to_owned()
}

fn values(github: &MockServer) -> Value {
    json!({"name": "payments-api", "owner": "team-payments", "system": "payments",
           "repoUrl": format!("{}?owner=acme&repo=payments-api", host(github))})
}

const CREATE: &str =
    r#"mutation ($input: CreateTaskInput!) { createTask(input: $input) { id status dryRun templateRef } }"#;
const TASK: &str = r#"query ($id: ID!) { task(id: $id) { id status error nextStep output values events { cursor type stepId message output } } }"#;

/// Creates a task as `token` and returns the response body.
async fn create(app: &TestApp, token: &str, input: Value) -> Value {
    let body = json!({"query": CREATE, "variables": {"input": input}});
    let response = app.client.post(app.url("/graphql")).bearer_auth(token).json(&body).send().await.unwrap();
    response.json().await.unwrap()
}

/// The task once it has ended (twenty seconds at most).
async fn ended(app: &TestApp, token: &str, id: &str) -> Value {
    for _ in 0..200 {
        let body = json!({"query": TASK, "variables": {"id": id}});
        let response = app.client.post(app.url("/graphql")).bearer_auth(token).json(&body).send().await.unwrap();
        let task: Value = response.json().await.unwrap();
        let status = task["data"]["task"]["status"].as_str().unwrap_or_default().to_owned();
        if ["COMPLETED", "FAILED", "CANCELLED"].contains(&status.as_str()) {
            return task["data"]["task"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("task {id} did not end");
}

async fn the_example_template_publishes_registers_and_streams_its_events(database: TestDatabase) {
    let (github, pushed) = fake_github(1).await;
    let app = app_on(database, &github, &examples_root()).await;
    let author = issue(&app, "author", &[Permission::EntityRead, Permission::TemplateExecute]).await;

    let input = json!({"templateRef": "rust-service", "values": values(&github)});
    let body = create(&app, &author, input).await;
    let task = &body["data"]["createTask"];
    assert_eq!(task["templateRef"], "template:default/rust-service", "{body}");
    let id = task["id"].as_str().unwrap().to_owned();

    // Follow it over a WebSocket from the start: every event, then the end.
    let mut subscriber =
        Subscriber::connect_with(app.address, "/graphql/ws", Protocol::TransportWs, None, json!({"token": author}))
            .await;
    subscriber
        .subscribe(
            "subscription ($id: ID!) { taskEvents(taskId: $id) { cursor type stepId message } }",
            json!({"id": id}),
        )
        .await;
    let mut streamed = Vec::new();
    loop {
        let message = subscriber.message().await;
        if message["type"] == "complete" {
            break;
        }
        assert_eq!(message["type"], "next", "{message}");
        streamed.push(message["payload"]["data"]["taskEvents"].clone());
    }
    let types: Vec<&str> = streamed.iter().map(|event| event["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"stepStarted"));
    assert_eq!(types.last(), Some(&"completed"), "{streamed:?}");
    for step in ["fetch", "publish", "register"] {
        assert!(
            streamed.iter().any(|event| event["type"] == "stepFinished" && event["stepId"] == step),
            "{step}: {streamed:?}"
        );
    }

    let done = ended(&app, &author, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let links = &done["output"]["links"];
    assert_eq!(links[0]["url"], "https://github.example/acme/payments-api.git", "{done}");
    assert_eq!(links[1]["entityRef"], "component:default/payments-api", "{done}");

    // What was pushed is the rendered skeleton, and the catalog now holds it.
    let files = pushed.files.lock().unwrap().clone();
    let catalog_info = base64::engine::general_purpose::STANDARD.decode(&files["catalog-info.yaml"]).unwrap();
    let catalog_info = String::from_utf8(catalog_info).unwrap();
    assert!(
        catalog_info.contains("name: payments-api") && catalog_info.contains("owner: team-payments"),
        "{catalog_info}"
    );
    assert!(files.contains_key("Cargo.toml") && files.contains_key("src/main.rs"), "{:?}", files.keys());
    let (_, body) = app
        .post_as(
            &author,
            r#"{ entity(ref: "component:default/payments-api") { name ... on Component { owner { entityRef } } } }"#,
        )
        .await;
    assert_eq!(body["data"]["entity"]["name"], "payments-api", "{body}");

    // Subscribing again after a cursor replays what followed it, then ends.
    let middle = streamed[2]["cursor"].as_str().unwrap();
    let mut again =
        Subscriber::connect_with(app.address, "/graphql/ws", Protocol::TransportWs, None, json!({"token": author}))
            .await;
    again
        .subscribe(
            "subscription ($id: ID!, $after: String) { taskEvents(taskId: $id, after: $after) { cursor } }",
            json!({"id": id, "after": middle}),
        )
        .await;
    let mut replayed = Vec::new();
    loop {
        let message = again.message().await;
        if message["type"] == "complete" {
            break;
        }
        replayed.push(message["payload"]["data"]["taskEvents"]["cursor"].clone());
    }
    let expected: Vec<Value> = streamed[3..].iter().map(|event| event["cursor"].clone()).collect();
    assert_eq!(replayed, expected);
    let replay = format!(r#"{{ task(id: "{id}") {{ events(after: "{middle}") {{ cursor }} }} }}"#);
    let (_, body) = app.post_as(&author, &replay).await;
    assert_eq!(body["data"]["task"]["events"].as_array().unwrap().len(), streamed.len() - 3, "{body}");

    // Another principal sees nothing of it.
    let other = issue(&app, "other", &[Permission::EntityRead, Permission::TemplateExecute]).await;
    let (_, body) =
        app.post_as(&other, &format!(r#"{{ task(id: "{id}") {{ id }} tasks {{ edges {{ node {{ id }} }} }} }}"#)).await;
    assert!(body["data"]["task"].is_null() && body["data"]["tasks"]["edges"] == json!([]), "{body}");
    let (_, body) = app.post_as(&author, "{ tasks { edges { node { id status } } } }").await;
    assert_eq!(body["data"]["tasks"]["edges"][0]["node"]["id"], id.as_str());

    // The template filter takes a ref as createTask does: Template is its
    // default kind, case does not matter, and text that is no ref is refused.
    let by_template = |template: &str| {
        format!(r#"{{ tasks(filter: {{templateRef: "{template}"}}) {{ edges {{ node {{ id }} }} }} }}"#)
    };
    for template in ["rust-service", "Template:default/Rust-Service"] {
        let (_, body) = app.post_as(&author, &by_template(template)).await;
        assert_eq!(body["data"]["tasks"]["edges"][0]["node"]["id"], id.as_str(), "{template}: {body}");
    }
    let (_, body) = app.post_as(&author, &by_template("docs-site")).await;
    assert_eq!(body["data"]["tasks"]["edges"], json!([]), "{body}");
    let (_, body) = app.post_as(&author, &by_template("template:not_a_namespace/rust-service")).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
}

async fn a_dry_run_renders_the_skeleton_and_publishes_nothing(database: TestDatabase) {
    let (github, _) = fake_github(0).await;
    let app = app_on(database, &github, &examples_root()).await;
    let author = issue(&app, "author", &[Permission::EntityRead, Permission::TemplateExecute]).await;
    let input = json!({"templateRef": "template:default/rust-service", "values": values(&github), "dryRun": true});
    let body = create(&app, &author, input).await;
    let id = body["data"]["createTask"]["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned();
    let done = ended(&app, &author, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let files = done["output"]["files"].as_array().unwrap();
    let catalog_info = files.iter().find(|file| file["path"] == "catalog-info.yaml").unwrap();
    assert!(catalog_info["contents"].as_str().unwrap().contains("owner: team-payments"));
    let received = github.received_requests().await.unwrap();
    let writes = received.iter().filter(|request| request.method.as_str() != "GET").count();
    assert_eq!(writes, 0, "a dry run publishes nothing");
}

async fn values_are_checked_before_anything_runs(database: TestDatabase) {
    let (github, _) = fake_github(0).await;
    let app = app_on(database, &github, &examples_root()).await;
    let author = issue(&app, "author", &[Permission::EntityRead, Permission::TemplateExecute]).await;
    let reader = issue(&app, "reader", &[Permission::EntityRead]).await;

    let mut bad = values(&github);
    bad["name"] = json!("Not A Name!");
    bad.as_object_mut().unwrap().remove("owner");
    let body = create(&app, &author, json!({"templateRef": "rust-service", "values": bad})).await;
    assert_eq!(error_code(&body), "VALIDATION_FAILED", "{body}");
    let problems = body["errors"][0]["extensions"]["problems"].as_array().unwrap();
    let paths: Vec<&str> = problems.iter().map(|problem| problem["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"/name") && paths.contains(&"/owner"), "{body}");

    let body = create(&app, &reader, json!({"templateRef": "rust-service", "values": values(&github)})).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    let body = create(&app, &author, json!({"templateRef": "no-such-template", "values": {}})).await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
}

/// A template that puts its secret everywhere a careless one could: log
/// lines whole, URL-encoded and split in halves, a file, and its output.
const LEAKY_TEMPLATE: &str = r#"apiVersion: scaffolder.backstage.io/v1beta3
kind: Template
metadata:
  name: leaky
spec:
  type: service
  steps:
    - id: plain
      name: Plain
      action: debug:log
      input:
        message: "token ${{ secrets.token }}"
    - id: encoded
      name: Encoded
      action: debug:log
      input:
        message: "url ${{ secrets.token | urlencode }}"
    - id: split
      name: Split
      action: debug:log
      input:
        message: "halves ${{ secrets.token[:10] }} and ${{ secrets.token[10:] }}"
    - id: write
      name: Write
      action: catalog:write
      input:
        entity:
          apiVersion: backstage.io/v1alpha1
          kind: Component
          metadata:
            name: leaky
            description: "${{ secrets.token }}"
          spec: {type: service, lifecycle: experimental, owner: team-a}
  output:
    text:
      - title: Token
        content: "${{ secrets.token }}"
"#;

async fn a_secret_comes_back_in_no_event_file_or_output_of_a_run_or_dry_run(database: TestDatabase) {
    let (github, _) = fake_github(0).await;
    let catalog = editable_examples();
    std::fs::write(catalog.path().join("templates/leaky.yaml"), LEAKY_TEMPLATE).unwrap();
    let location = "apiVersion: backstage.io/v1alpha1\nkind: Location\nmetadata:\n  name: acme-templates\nspec:\n  targets: [./service-template.yaml, ./leaky.yaml]\n";
    std::fs::write(catalog.path().join("templates/location.yaml"), location).unwrap();
    let app = app_on(database, &github, catalog.path()).await;
    let author = issue(&app, "author", &[Permission::EntityRead, Permission::TemplateExecute]).await;
    let secret = "s3cr3t/t0ken&value 42";
    let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
    for dry_run in [false, true] {
        let input = json!({"templateRef": "leaky", "dryRun": dry_run, "secrets": [{"name": "token", "value": secret}]});
        let body = create(&app, &author, input).await;
        let id = body["data"]["createTask"]["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned();
        let done = ended(&app, &author, &id).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        let logs = done["events"].as_array().unwrap().iter().filter(|event| event["type"] == "log").count();
        assert_eq!(logs, 3, "{done}");
        let everything = done.to_string();
        for form in [secret, "s3cr3t%2Ft0ken", "s3cr3t/t0k", "en&value 42", encoded.as_str()] {
            assert!(!everything.contains(form), "{form} came back (dry run {dry_run}): {everything}");
        }
        assert!(everything.contains("token ***"), "{everything}");
    }
}

async fn a_failed_task_is_retried_from_its_failed_step_and_a_waiting_one_cancelled(database: TestDatabase) {
    let (github, pushed) = fake_github(2).await;
    // GitHub refuses the first creation (the name is taken), then the name is free.
    Mock::given(method("POST"))
        .and(path("/orgs/acme/repos"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({"message": "Repository creation failed.",
            "errors": [{"resource": "Repository", "code": "custom", "field": "name",
                        "message": "name already exists on this account"}]})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&github)
        .await;
    let app = app_on(database, &github, &examples_root()).await;
    let author = issue(&app, "author", &[Permission::EntityRead, Permission::TemplateExecute]).await;
    let body = create(&app, &author, json!({"templateRef": "rust-service", "values": values(&github)})).await;
    let id = body["data"]["createTask"]["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned();
    let failed = ended(&app, &author, &id).await;
    assert_eq!((failed["status"].as_str(), failed["nextStep"].as_i64()), (Some("FAILED"), Some(1)), "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("already exists"), "{failed}");

    let retry = format!(r#"mutation {{ retryTask(id: "{id}") {{ status }} }}"#);
    let (_, body) = app.post_as(&author, &retry).await;
    assert!(body.get("errors").is_none(), "{body}");
    let done = ended(&app, &author, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let started = |step: &str| {
        done["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|event| event["type"] == "stepStarted" && event["stepId"] == step)
            .count()
    };
    assert_eq!(started("fetch"), 2, "the workspace was rebuilt: {done}");
    assert_eq!(started("publish"), 2, "once refused, once done: {done}");
    assert_eq!(started("register"), 1, "{done}");
    assert!(pushed.files.lock().unwrap().contains_key("catalog-info.yaml"));
    let (_, body) = app.post_as(&author, &retry).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "a completed task is not retried: {body}");

    // A task waiting for entities that never come (its catalog file is gone
    // from the fake) is cancelled while it waits.
    Mock::given(method("GET"))
        .and(path_regex("^/repos/acme/payments-api/contents/.+"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"})))
        .with_priority(1)
        .mount(&github)
        .await;
    let body = create(&app, &author, json!({"templateRef": "rust-service", "values": values(&github)})).await;
    let id = body["data"]["createTask"]["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned();
    let task = format!(r#"{{ task(id: "{id}") {{ events {{ type stepId }} }} }}"#);
    for _ in 0..100 {
        let (_, body) = app.post_as(&author, &task).await;
        let events = body["data"]["task"]["events"].as_array().cloned().unwrap_or_default();
        if events.iter().any(|event| event["type"] == "stepStarted" && event["stepId"] == "register") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, body) = app.post_as(&author, &format!(r#"mutation {{ cancelTask(id: "{id}") {{ id }} }}"#)).await;
    assert!(body.get("errors").is_none(), "{body}");
    let cancelled = ended(&app, &author, &id).await;
    assert_eq!(
        (cancelled["status"].as_str(), cancelled["nextStep"].as_i64()),
        (Some("CANCELLED"), Some(2)),
        "{cancelled}"
    );
}

async fn a_policy_limits_which_templates_and_actions_a_principal_runs(database: TestDatabase) {
    let (github, _) = fake_github(0).await;
    let url = database.url.clone();
    let app = spawn_app_with(&url, &examples_root(), Some(database), |config: &mut Config| {
        config.auth.policy = serde_json::from_value(json!([
            {"subjects": ["*"], "permissions": ["entity.read"]},
            {"subjects": ["token:writer"], "permissions": ["template.execute"],
             "templates": {"tags": ["documentation"]}},
            {"subjects": ["token:fetcher"], "permissions": ["template.execute"], "actions": ["fetch:*"]},
        ]))
        .unwrap();
    })
    .await;
    let scopes = [Permission::EntityRead, Permission::TemplateExecute];
    let writer = issue(&app, "writer", &scopes).await;
    let fetcher = issue(&app, "fetcher", &scopes).await;
    let input = |template: &str| json!({"templateRef": template, "values": values(&github), "dryRun": true});

    let body = create(&app, &writer, input("rust-service")).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "not a documentation template: {body}");
    let body = create(&app, &writer, input("docs-site")).await;
    assert!(body["data"]["createTask"]["id"].is_string(), "a documentation template: {body}");
    let body = create(&app, &fetcher, input("rust-service")).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("publish:github") && message.contains("catalog:register"), "{message}");
}

async fn the_docs_site_template_runs_end_to_end(database: TestDatabase) {
    let (github, pushed) = fake_github(1).await;
    let app = app_on(database, &github, &examples_root()).await;
    let author = issue(&app, "author", &[Permission::EntityRead, Permission::TemplateExecute]).await;
    let values = json!({"name": "handbook", "owner": "team-platform-dx",
                        "repoUrl": format!("{}?owner=acme&repo=payments-api", host(&github))});
    let body = create(&app, &author, json!({"templateRef": "docs-site", "values": values})).await;
    let id = body["data"]["createTask"]["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned();
    let done = ended(&app, &author, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert!(pushed.files.lock().unwrap().contains_key("mkdocs.yml"), "the site was pushed");
    let (_, body) = app
        .post_as(&author, r#"{ all: templates { totalCount } docs: templates(filter: {tags: ["documentation"]}) { nodes { name } } actions { id } }"#)
        .await;
    assert_eq!(body["data"]["all"]["totalCount"], 2, "{body}");
    assert_eq!(body["data"]["docs"]["nodes"], json!([{"name": "docs-site"}]), "{body}");
    let actions: Vec<&str> =
        body["data"]["actions"].as_array().unwrap().iter().map(|action| action["id"].as_str().unwrap()).collect();
    for id in ["fetch:template", "publish:github", "github:webhook", "catalog:register", "catalog:write", "fs:delete"] {
        assert!(actions.contains(&id), "{id} in {actions:?}");
    }
    let query = r#"{ entity(ref: "component:default/handbook") { name ... on Component { owner { entityRef } } } }"#;
    let (_, body) = app.post_as(&author, query).await;
    assert_eq!(body["data"]["entity"]["owner"]["entityRef"], "group:default/team-platform-dx", "{body}");
}

/// A template kept in a repository, with its skeleton beside it.
const REPOSITORY_TEMPLATE: &str = r#"apiVersion: scaffolder.backstage.io/v1beta3
kind: Template
metadata:
  name: from-github
spec:
  type: service
  parameters:
    properties:
      name: {type: string}
  steps:
    - id: fetch
      name: Fetch skeleton
      action: fetch:template
      input:
        url: ./skeleton
        values:
          name: ${{ parameters.name }}
"#;

async fn a_template_read_from_github_fetches_its_skeleton_from_there(database: TestDatabase) {
    let github = MockServer::start().await;
    let repository = json!({"id": 7, "name": "templates", "full_name": "acme/templates", "private": false,
        "owner": {"login": "acme"}, "html_url": "https://github.example/acme/templates", "fork": false,
        "archived": false, "default_branch": "main", "topics": []});
    Mock::given(method("GET"))
        .and(path("/orgs/acme/repos"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([repository])))
        .mount(&github)
        .await;
    let files = [
        ("catalog-info.yaml", REPOSITORY_TEMPLATE),
        ("skeleton/README.md", "# ${{ values.name }}\n"),
        ("skeleton/src/hello.txt", "hello ${{ values.name }}\n"),
    ];
    for (file, text) in files {
        let content = base64::engine::general_purpose::STANDARD.encode(text);
        Mock::given(method("GET"))
            .and(path(format!("/repos/acme/templates/contents/{file}")))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"type": "file", "encoding": "base64", "content": content})),
            )
            .mount(&github)
            .await;
    }
    let tree: Vec<Value> =
        files.iter().map(|(file, _)| json!({"path": file, "type": "blob", "mode": "100644", "sha": "b10b"})).collect();
    Mock::given(method("GET"))
        .and(path("/repos/acme/templates/git/trees/main"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"sha": "9fb0", "tree": tree, "truncated": false})),
        )
        .mount(&github)
        .await;
    let app = app_on(database, &github, &examples_root()).await;
    let author = issue(&app, "author", &[Permission::EntityRead, Permission::TemplateExecute]).await;
    let body =
        create(&app, &author, json!({"templateRef": "from-github", "values": {"name": "ledger"}, "dryRun": true}))
            .await;
    let id = body["data"]["createTask"]["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned();
    let done = ended(&app, &author, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let rendered: Vec<(String, String)> = done["output"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| (file["path"].as_str().unwrap().to_owned(), file["contents"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        rendered,
        [("README.md".to_owned(), "# ledger\n".to_owned()), ("src/hello.txt".to_owned(), "hello ledger\n".to_owned())]
    );
}
