//! GitHub webhooks end to end: the real server with a GitHub provider on a
//! fake GitHub (wiremock), deliveries signed the way GitHub signs them.

use std::time::Duration;

use base64::Engine as _;
use catalog_api::config::{Config, ProviderConfig};
use catalog_ingestion::{GithubAuthConfig, GithubProviderConfig};
use catalog_store::backend_tests;
use catalog_store::testing::TestDatabase;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{TestApp, examples_root, spawn_app, spawn_app_with};

backend_tests!(
    a_signed_push_to_a_catalog_file_reads_that_repository_again,
    bad_deliveries_are_refused_before_anything_is_parsed,
    the_endpoint_is_off_without_a_secret,
);

const SECRET: &str = "a webhook secret for the tests";

fn component(name: &str) -> String {
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: service\n  lifecycle: production\n  owner: team-billing\n"
    )
}

/// Serves acme's one repository, `payments`, whose catalog file holds
/// `text` (none: the file is missing).
pub(crate) async fn serve_github(server: &MockServer, text: Option<&str>) {
    server.reset().await;
    let repository = json!({"id": 1, "name": "payments", "full_name": "acme/payments", "private": false,
        "owner": {"login": "acme"}, "html_url": "https://github.example/acme/payments", "fork": false,
        "archived": false, "default_branch": "main", "topics": []});
    Mock::given(method("GET"))
        .and(path("/orgs/acme/repos"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([&repository])))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/acme/payments"))
        .respond_with(ResponseTemplate::new(200).set_body_json(repository))
        .mount(server)
        .await;
    let file = match text {
        Some(text) => {
            let content = base64::engine::general_purpose::STANDARD.encode(text);
            ResponseTemplate::new(200).set_body_json(json!({"encoding": "base64", "content": content}))
        }
        None => ResponseTemplate::new(404),
    };
    Mock::given(method("GET"))
        .and(path("/repos/acme/payments/contents/catalog-info.yaml"))
        .respond_with(file)
        .mount(server)
        .await;
}

async fn app_on(database: TestDatabase, github: &MockServer) -> TestApp {
    let url = database.url.clone();
    let api_base_url = github.uri();
    spawn_app_with(&url, &examples_root(), Some(database), move |config: &mut Config| {
        config.webhooks.github_secret = SECRET.into();
        config.webhooks.max_body_bytes = 8 * 1024;
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

fn sign(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

/// POSTs a delivery: the status and JSON body.
async fn deliver(app: &TestApp, event: &str, delivery: &str, body: &[u8], signature: Option<&str>) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url("/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A push event to `branch` of acme/payments, trimmed to what GitHub always sends and the catalog reads.
fn push_to(branch: &str, paths: &[&str]) -> Vec<u8> {
    json!({"ref": format!("refs/heads/{branch}"), "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
           "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
           "repository": {"id": 1, "name": "payments", "full_name": "acme/payments", "owner": {"login": "acme"},
                          "html_url": "https://github.example/acme/payments", "default_branch": "main"},
           "organization": {"login": "acme"}, "sender": {"login": "octocat"},
           "commits": [{"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "added": [], "modified": paths, "removed": []}]})
    .to_string()
    .into_bytes()
}

fn push(paths: &[&str]) -> Vec<u8> {
    push_to("main", paths)
}

async fn requests_to(server: &MockServer, wanted: &str) -> usize {
    server.received_requests().await.unwrap().iter().filter(|request| request.url.path() == wanted).count()
}

async fn exists(app: &TestApp, name: &str) -> bool {
    let query = format!(r#"{{ entity(ref: "component:default/{name}") {{ name }} }}"#);
    let (_, body) = app.post(&query, json!({})).await;
    !body["data"]["entity"].is_null()
}

/// Whether the component appears within five seconds (refreshes run in the background).
async fn appears(app: &TestApp, name: &str) -> bool {
    for _ in 0..100 {
        if exists(app, name).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn a_signed_push_to_a_catalog_file_reads_that_repository_again(database: TestDatabase) {
    let github = MockServer::start().await;
    serve_github(&github, Some(&component("payments-api"))).await;
    let app = app_on(database, &github).await;
    assert!(exists(&app, "payments-api").await, "the first run read the fake GitHub");

    serve_github(&github, Some(&format!("{}---\n{}", component("payments-api"), component("payments-ledger")))).await;
    let unrelated = push(&["src/main.rs"]);
    let (status, body) = deliver(&app, "push", "delivery-1", &unrelated, Some(&sign(&unrelated))).await;
    assert_eq!((status, body["status"].as_str()), (202, Some("ignored")), "{body}");
    let branch = push_to("feature/x", &["catalog-info.yaml"]);
    let (status, body) = deliver(&app, "push", "delivery-1b", &branch, Some(&sign(&branch))).await;
    assert_eq!((status, body["status"].as_str()), (202, Some("ignored")), "another branch than the one read: {body}");

    let listings_before = requests_to(&github, "/orgs/acme/repos").await;
    let touching = push(&["catalog-info.yaml"]);
    let (status, body) = deliver(&app, "push", "delivery-2", &touching, Some(&sign(&touching))).await;
    let accepted = json!({"status": "accepted", "refresh": ["github"], "repositories": ["acme/payments"]});
    assert_eq!((status, &body), (202, &accepted));
    assert!(appears(&app, "payments-ledger").await, "the push's refresh added the new component");
    assert_eq!(
        requests_to(&github, "/orgs/acme/repos").await,
        listings_before,
        "the organisation was not listed again"
    );

    let (status, body) = deliver(&app, "push", "delivery-2", &touching, Some(&sign(&touching))).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")), "redeliveries are dropped");
    let ping = br#"{"zen": "Keep it logically awesome."}"#;
    let (status, body) = deliver(&app, "ping", "delivery-3", ping, Some(&sign(ping))).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("pong")));
}

async fn bad_deliveries_are_refused_before_anything_is_parsed(database: TestDatabase) {
    let github = MockServer::start().await;
    serve_github(&github, Some(&component("payments-api"))).await;
    let app = app_on(database, &github).await;
    serve_github(&github, Some(&format!("{}---\n{}", component("payments-api"), component("payments-ledger")))).await;
    let touching = push(&["catalog-info.yaml"]);
    let requests_before = github.received_requests().await.unwrap().len();

    let (status, _) = deliver(&app, "push", "bad-1", &touching, None).await;
    assert_eq!(status, 400, "no signature");
    let (status, _) = deliver(&app, "push", "bad-2", &touching, Some("sha1=0123")).await;
    assert_eq!(status, 400, "not sha256");
    let other = push(&["other.yaml"]);
    let (status, body) = deliver(&app, "push", "bad-3", &touching, Some(&sign(&other))).await;
    assert_eq!(status, 401, "another body's signature: {body}");
    let garbage = b"{not json";
    let (status, _) = deliver(&app, "push", "bad-4", garbage, Some(&sign(&touching))).await;
    assert_eq!(status, 401, "the signature is checked before the body is parsed");
    let (status, _) = deliver(&app, "push", "bad-4", garbage, Some(&sign(garbage))).await;
    assert_eq!(status, 400, "signed but not JSON");
    let (status, _) = deliver(&app, "push", &"x".repeat(65), &touching, Some(&sign(&touching))).await;
    assert_eq!(status, 400, "a delivery id longer than a GUID");
    let huge = vec![b' '; 9 * 1024];
    let (status, _) = deliver(&app, "push", "bad-5", &huge, Some(&sign(&huge))).await;
    assert_eq!(status, 413);

    // A good delivery with the id of a refused one still counts: refusals
    // are not remembered as deliveries.
    let (status, _) = deliver(&app, "push", "bad-3", &touching, Some(&sign(&touching))).await;
    assert_eq!(status, 202);
    assert_eq!(deliveries(&app, "refused").await, 7.0, "every refusal above is counted");
    assert_eq!(deliveries(&app, "accepted").await, 1.0);
    assert_eq!(deliveries(&app, "ignored").await, 0.0);
    assert!(appears(&app, "payments-ledger").await);
    // Nothing before the good delivery reached GitHub: the repository and its file after it.
    let requests_after = github.received_requests().await.unwrap().len();
    assert_eq!(requests_after - requests_before, 2, "only the good delivery caused reads");
    assert_eq!(requests_to(&github, "/repos/acme/payments").await, 1);
}

/// `catalog_webhook_deliveries_total` of GitHub's deliveries with this result.
async fn deliveries(app: &TestApp, result: &str) -> f64 {
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let wanted = [r#"source="github""#.to_owned(), format!(r#"result="{result}""#)];
    text.lines()
        .filter(|line| line.starts_with("catalog_webhook_deliveries_total{"))
        .find(|line| wanted.iter().all(|label| line.contains(label.as_str())))
        .map_or(0.0, |line| line.rsplit_once(' ').unwrap().1.parse().unwrap())
}

async fn the_endpoint_is_off_without_a_secret(database: TestDatabase) {
    let app = spawn_app(database).await;
    let body = push(&["catalog-info.yaml"]);
    let (status, _) = deliver(&app, "push", "x", &body, Some(&sign(&body))).await;
    assert_eq!(status, 404);
}
