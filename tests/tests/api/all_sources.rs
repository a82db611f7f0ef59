//! The server ingesting from all three third-party sources at once, each a
//! fake speaking its real wire format: GitHub (repositories and the
//! organisation's teams, wiremock), a Kubernetes API server (list and
//! watch) and PagerDuty (REST v2). One query answers what an on-call
//! engineer asks first: who owns this, where does it run, who is on call.

use base64::Engine as _;
use catalog_ingestion::testing::kubernetes::{FakeKubernetes, deployment};
use catalog_ingestion::testing::pagerduty::{Account, FakePagerDuty, on_call, service, team, with_team};
use catalog_store::backend_tests;
use catalog_store::testing::TestDatabase;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{examples_root, spawn_app_with};

const CHECKOUT: &str = "apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: checkout
  annotations:
    backstage.io/kubernetes-id: checkout
    pagerduty.com/service-id: PCHK01
spec:
  type: service
  lifecycle: production
  owner: shop
";

async fn get(server: &MockServer, at: &str, body: Value) {
    Mock::given(method("GET"))
        .and(path(at))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(server)
        .await;
}

/// The acme organisation: one repository with a catalog file, one team
/// (`shop`) with one member.
async fn fake_github() -> MockServer {
    let server = MockServer::start().await;
    let repository = json!({
        "id": 1, "node_id": "R_checkout", "name": "checkout", "full_name": "acme/checkout", "private": true,
        "owner": {"login": "acme", "type": "Organization"}, "html_url": "https://github.example/acme/checkout",
        "description": null, "fork": false, "url": format!("{}/repos/acme/checkout", server.uri()),
        "archived": false, "disabled": false, "visibility": "private", "default_branch": "main", "topics": [],
        "pushed_at": "2020-01-31T09:00:00Z",
    });
    get(&server, "/orgs/acme/repos", json!([repository])).await;
    let content = base64::engine::general_purpose::STANDARD.encode(CHECKOUT);
    let file = json!({"type": "file", "encoding": "base64", "size": CHECKOUT.len(), "name": "catalog-info.yaml",
                      "path": "catalog-info.yaml", "content": content, "sha": "5b0d7c2e"});
    get(&server, "/repos/acme/checkout/contents/catalog-info.yaml", file).await;
    let team = json!({"id": 7, "node_id": "T_shop", "slug": "shop", "name": "Shop", "description": "The shop team.",
                      "privacy": "closed", "permission": "pull", "parent": null,
                      "html_url": "https://github.example/orgs/acme/teams/shop"});
    get(&server, "/orgs/acme/teams", json!([team])).await;
    let ada = json!({"login": "ada", "id": 3, "type": "User", "site_admin": false,
                     "avatar_url": "https://avatars.example/ada"});
    get(&server, "/orgs/acme/teams/shop/members", json!([ada])).await;
    get(&server, "/orgs/acme/members", json!([ada])).await;
    get(&server, "/users/ada", json!({"login": "ada", "name": "Ada Lovelace", "email": "ada@acme.example"})).await;
    server
}

async fn a_component_answers_with_its_github_team_workloads_and_who_is_on_call(database: TestDatabase) {
    let github = fake_github().await;
    let kubernetes = FakeKubernetes::start().await;
    kubernetes.apply(deployment("shop", "checkout", json!({"backstage.io/kubernetes-id": "checkout"}), 2));
    let pagerduty = FakePagerDuty::start(Account {
        services: vec![with_team(service("PCHK01", "Checkout", "PPCHK"), "PTSHOP", "Shop")],
        teams: vec![team("PTSHOP", "Shop")],
        on_calls: vec![
            on_call("PPCHK", 1, ("PGRACE", "Grace Hopper", "grace@acme.example"), Some("Shop primary"), None),
            on_call("PPCHK", 2, ("PLINUS", "Linus Torvalds", "linus@acme.example"), Some("Shop secondary"), None),
        ],
        ..Default::default()
    })
    .await;
    let unset = "CATALOG_TEST_TOKEN_UNSET";
    let url = database.url.clone();
    let app = spawn_app_with(&url, &examples_root(), Some(database), |config| {
        config.governance.enabled = true;
        for provider in [
            json!({"type": "github", "organization": "acme", "api_base_url": github.uri(), "token_variable": unset}),
            json!({"type": "github-org", "organization": "acme", "api_base_url": github.uri(), "token_variable": unset}),
            json!({"type": "kubernetes", "clusters": [{"name": "prod", "url": kubernetes.url()}],
                   "kinds": ["Deployment"], "default_owner": "group:default/team-platform-dx"}),
            json!({"type": "pagerduty", "api_base_url": pagerduty.uri(), "token_variable": unset}),
        ] {
            config.ingestion.providers.push(serde_json::from_value(provider).unwrap());
        }
    })
    .await;

    let body = app
        .query(
            r#"{ entity(ref: "component:default/checkout") {
                ... on Component { owner { name ... on Group { members { name } } } }
                kubernetes { name workloads { namespace name replicas { ready desired } } }
                pagerDuty { name onCall { userName email schedule level } }
              }
              providers { name lastError } }"#,
            json!({}),
        )
        .await;
    let checkout = &body["entity"];
    assert_eq!(checkout["owner"], json!({"name": "shop", "members": [{"name": "ada"}]}), "{body}");
    assert_eq!(
        checkout["kubernetes"],
        json!([{"name": "prod", "workloads": [{"namespace": "shop", "name": "checkout", "replicas": {"ready": 2, "desired": 3}}]}])
    );
    assert_eq!(checkout["pagerDuty"]["name"], "Checkout");
    assert_eq!(
        checkout["pagerDuty"]["onCall"],
        json!([{"userName": "Grace Hopper", "email": "grace@acme.example", "schedule": "Shop primary", "level": 1}]),
        "only the first level is paged first: {body}"
    );
    let providers: Vec<(&str, &Value)> = body["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|provider| (provider["name"].as_str().unwrap(), &provider["lastError"]))
        .collect();
    assert_eq!(
        providers,
        [
            ("file", &Value::Null),
            ("github", &Value::Null),
            ("github-org", &Value::Null),
            ("kubernetes", &Value::Null),
            ("pagerduty", &Value::Null)
        ]
    );

    // Stale detection reads all three providers' facts: its workloads run
    // and its PagerDuty service exists, but nothing was pushed to its
    // repository since January 2020.
    let query = r#"{ entity(ref: "component:default/checkout") { staleness { reasons { reason explanation { path } } } }
                     scorecard(id: "staleness") { rules: levels { rules { id } } } }"#;
    let mut found = Value::Null;
    for _ in 0..100 {
        found = app.query(query, json!({})).await;
        // The scorecard's record may be stored just after its first results.
        if !found["entity"]["staleness"].is_null() && !found["scorecard"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        found["entity"]["staleness"]["reasons"],
        json!([{"reason": "repository-unchanged", "explanation": {"path": "facts.github.repository.pushedAt"}}]),
        "{found}"
    );
    let rules = found["scorecard"]["rules"][0]["rules"].to_string();
    for reason in ["repository-archived", "no-workloads", "no-pagerduty-service"] {
        assert!(rules.contains(reason), "with each provider, its reasons apply: {rules}");
    }
}

backend_tests!(a_component_answers_with_its_github_team_workloads_and_who_is_on_call);
