//! The GitHub org provider against a fake GitHub (wiremock): teams with
//! nesting become Groups, members become Users with their teams and
//! profiles, and a failed page changes nothing. Both backends.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use catalog_domain::EntityRef;
use catalog_ingestion::{Engine, GithubAuthConfig, GithubOrgProviderConfig, ProviderConfig, RetryPolicy};
use catalog_store::{Store, backend_tests};
use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn engine(store: &Store, server: &MockServer) -> Engine {
    let config = GithubOrgProviderConfig {
        organization: "acme".into(),
        auth: GithubAuthConfig {
            api_base_url: server.uri(),
            token_variable: "CATALOG_TEST_GITHUB_TOKEN_UNSET".into(),
            ..GithubAuthConfig::default()
        },
        ..GithubOrgProviderConfig::default()
    };
    let policy = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
        max_wait: Duration::from_secs(1),
    };
    Engine::build_with(store.snapshot_writer(), store.catalog(), &[ProviderConfig::GithubOrg(config)], policy).unwrap()
}

/// A team as `GET /orgs/{org}/teams` lists it.
fn team(slug: &str, name: &str, parent: Option<&str>) -> Value {
    json!({"id": slug.len(), "node_id": format!("T_{slug}"), "slug": slug, "name": name,
           "description": format!("The {name} team."), "privacy": "closed", "permission": "pull",
           "html_url": format!("https://github.example/orgs/acme/teams/{slug}"),
           "parent": parent.map(|parent| json!({"slug": parent, "name": parent}))})
}

/// A member as the members endpoints list them.
fn member(login: &str) -> Value {
    json!({"login": login, "id": login.len(), "type": "User", "site_admin": false,
           "avatar_url": format!("https://avatars.example/{login}")})
}

async fn get(server: &MockServer, at: &str, body: Value) {
    Mock::given(method("GET"))
        .and(path(at))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(server)
        .await;
}

async fn serve_organisation(server: &MockServer) {
    let next = format!(r#"<{}/orgs/acme/teams?per_page=100&page=2>; rel="next""#, server.uri());
    Mock::given(method("GET"))
        .and(path("/orgs/acme/teams"))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([team(
            "platform-dx",
            "Platform DX",
            Some("platform")
        )])))
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/orgs/acme/teams"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([team("platform", "Platform", None)]))
                .insert_header("link", next.as_str()),
        )
        .mount(server)
        .await;
    get(server, "/orgs/acme/teams/platform/members", json!([member("ada")])).await;
    get(server, "/orgs/acme/teams/platform-dx/members", json!([member("ada"), member("grace")])).await;
    get(server, "/orgs/acme/members", json!([member("ada"), member("grace"), member("linus")])).await;
    get(server, "/users/ada", json!({"login": "ada", "name": "Ada Lovelace", "email": "ada@acme.example"})).await;
    get(server, "/users/grace", json!({"login": "grace", "name": "Grace Hopper", "email": null})).await;
    get(server, "/users/linus", json!({"login": "linus", "name": null, "email": null})).await;
}

/// The organisation after grace left platform-dx.
async fn serve_organisation_without_grace_in_dx(server: &MockServer) {
    serve_organisation(server).await;
    Mock::given(method("GET"))
        .and(path("/orgs/acme/teams/platform-dx/members"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([member("ada")])))
        .with_priority(1)
        .mount(server)
        .await;
}

async fn body(store: &Store, entity_ref: &str) -> Option<Value> {
    let stored = store.catalog().entity_by_ref(&EntityRef::parse(entity_ref).unwrap()).await.unwrap()?;
    Some(stored.raw().unwrap())
}

async fn teams_become_groups_and_members_users(store: Store) {
    let server = MockServer::start().await;
    serve_organisation(&server).await;
    let runs = engine(&store, &server).run_once().await.unwrap();
    assert_eq!((runs[0].provider.as_str(), runs[0].summary.added), ("github-org", 5), "{runs:?}");

    let dx = body(&store, "group:default/platform-dx").await.unwrap();
    assert_eq!(dx["spec"]["parent"], "platform");
    assert_eq!(dx["spec"]["profile"]["displayName"], "Platform DX");
    assert_eq!(dx["metadata"]["annotations"]["github.com/team-slug"], "acme/platform-dx");
    let platform = body(&store, "group:default/platform").await.unwrap();
    assert_eq!(platform["spec"]["children"], json!(["platform-dx"]));

    let ada = body(&store, "user:default/ada").await.unwrap();
    assert_eq!(ada["spec"]["memberOf"], json!(["platform", "platform-dx"]));
    assert_eq!(
        ada["spec"]["profile"],
        json!({"displayName": "Ada Lovelace", "email": "ada@acme.example", "picture": "https://avatars.example/ada"})
    );
    assert_eq!(ada["metadata"]["annotations"]["github.com/user-login"], "ada");
    let linus = body(&store, "user:default/linus").await.unwrap();
    assert_eq!(linus["spec"]["memberOf"], json!([]), "in the org, in no team");
    assert!(linus["spec"]["profile"].get("displayName").is_none());

    let edges =
        store.catalog().relations_from(&[EntityRef::parse("group:default/platform-dx").unwrap()], None).await.unwrap();
    let members: Vec<&str> = edges
        .iter()
        .filter(|edge| edge.relation_type.as_str() == "hasMember")
        .map(|edge| edge.target_ref.as_str())
        .collect();
    assert_eq!(members, vec!["user:default/ada", "user:default/grace"]);
}

async fn a_failed_page_changes_nobody(store: Store) {
    let server = MockServer::start().await;
    serve_organisation(&server).await;
    let engine = engine(&store, &server);
    engine.run_once().await.unwrap();

    // Grace leaves platform-dx, but the profile endpoint fails meanwhile.
    server.reset().await;
    serve_organisation_without_grace_in_dx(&server).await;
    Mock::given(method("GET"))
        .and(path("/users/linus"))
        .respond_with(ResponseTemplate::new(500))
        .with_priority(1)
        .mount(&server)
        .await;
    let run = engine.run_provider("github-org").await.unwrap().unwrap();
    assert!(run.incomplete.as_deref().unwrap().contains("500"), "{run:?}");
    assert_eq!((run.summary.added, run.summary.updated, run.summary.removed), (0, 0, 0), "{run:?}");
    let grace = body(&store, "user:default/grace").await.unwrap();
    assert_eq!(grace["spec"]["memberOf"], json!(["platform-dx"]), "not rewritten from a partial read");

    // Recovered: now grace's membership changes.
    server.reset().await;
    serve_organisation_without_grace_in_dx(&server).await;
    let run = engine.run_provider("github-org").await.unwrap().unwrap();
    assert_eq!(run.summary.updated, 1, "{run:?}");
    let grace = body(&store, "user:default/grace").await.unwrap();
    assert_eq!(grace["spec"]["memberOf"], json!([]));
}

/// A member whose login cannot be an entity name is reported and skipped;
/// it does not freeze the removal of members who left.
async fn a_member_that_cannot_be_an_entity_does_not_freeze_removals(store: Store) {
    let long = "l".repeat(70);
    let server = MockServer::start().await;
    serve_organisation(&server).await;
    let members = |logins: &[&str]| json!(logins.iter().map(|login| member(login)).collect::<Vec<_>>());
    Mock::given(method("GET"))
        .and(path("/orgs/acme/members"))
        .respond_with(ResponseTemplate::new(200).set_body_json(members(&["ada", "grace", "linus", &long])))
        .with_priority(1)
        .mount(&server)
        .await;
    get(&server, &format!("/users/{long}"), json!({"login": long, "name": null, "email": null})).await;
    let engine = engine(&store, &server);
    let run = engine.run_once().await.unwrap().remove(0);
    assert_eq!((run.summary.added, run.summary.invalid), (5, 0), "an unknown ref is not an invalid version: {run:?}");
    let location = store.catalog().locations().await.unwrap().remove(0);
    assert!(location.error.as_deref().unwrap().contains(&long), "{location:?}");

    server.reset().await;
    serve_organisation(&server).await;
    Mock::given(method("GET"))
        .and(path("/orgs/acme/members"))
        .respond_with(ResponseTemplate::new(200).set_body_json(members(&["ada", "grace", &long])))
        .with_priority(1)
        .mount(&server)
        .await;
    get(&server, &format!("/users/{long}"), json!({"login": long, "name": null, "email": null})).await;
    let run = engine.run_provider("github-org").await.unwrap().unwrap();
    assert_eq!(run.summary.removed, 1, "linus left: {run:?}");
    assert!(body(&store, "user:default/linus").await.is_none());
}

backend_tests!(
    teams_become_groups_and_members_users,
    a_failed_page_changes_nobody,
    a_member_that_cannot_be_an_entity_does_not_freeze_removals
);
