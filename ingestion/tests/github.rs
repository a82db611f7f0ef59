//! GitHub discovery against a fake GitHub that speaks the REST API's wire
//! format (wiremock on a random port): pagination, archived repositories and
//! forks, files that are missing or failing, rate limits, a listing that
//! fails, glob catalog paths over the git trees API, Location entities inside
//! repositories, and re-reads of single repositories that webhooks name.
//! Every body runs on SQLite and on PostgreSQL.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use base64::Engine as _;
use catalog_domain::EntityRef;
use catalog_ingestion::{
    Engine, GithubAuthConfig, GithubProviderConfig, GithubRefresh, MANAGED_BY_LOCATION, ProviderConfig, RepositoryHint,
    RetryPolicy,
};
use catalog_store::{Store, backend_tests};
use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn component(name: &str, owner: &str) -> String {
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: service\n  lifecycle: production\n  owner: {owner}\n"
    )
}

/// One repository as `GET /orgs/{org}/repos` lists it (trimmed to the
/// fields GitHub always sends and those the provider reads).
fn repository(server: &MockServer, name: &str, archived: bool, fork: bool) -> Value {
    json!({
        "id": name.len(), "node_id": format!("R_{name}"), "name": name, "full_name": format!("acme/{name}"),
        "private": false, "owner": {"login": "acme", "type": "Organization"},
        "html_url": format!("https://github.example/acme/{name}"), "description": null, "fork": fork,
        "url": format!("{}/repos/acme/{name}", server.uri()), "archived": archived, "disabled": false,
        "visibility": "public", "default_branch": "main", "topics": ["backstage"],
        "pushed_at": "2026-11-30T10:00:00Z",
    })
}

/// `GET /repos/{owner}/{repo}/contents/{path}` for a file: base64 wrapped at
/// 60 characters, as GitHub sends it.
fn contents(text: &str) -> Value {
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    let wrapped: Vec<String> =
        encoded.as_bytes().chunks(60).map(|chunk| String::from_utf8(chunk.to_vec()).unwrap()).collect();
    json!({"type": "file", "encoding": "base64", "size": text.len(), "name": "catalog-info.yaml",
           "path": "catalog-info.yaml", "content": wrapped.join("\n") + "\n", "sha": "3d21ec53a331a6f037a91c368710b99387d012c1"})
}

fn config(server: &MockServer) -> GithubProviderConfig {
    GithubProviderConfig {
        organization: "acme".into(),
        auth: GithubAuthConfig {
            api_base_url: server.uri(),
            token_variable: "CATALOG_TEST_GITHUB_TOKEN_UNSET".into(),
            ..GithubAuthConfig::default()
        },
        concurrency: 4,
        ..GithubProviderConfig::default()
    }
}

fn engine(store: &Store, config: GithubProviderConfig) -> Engine {
    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_wait: Duration::from_secs(5),
    };
    Engine::build_with(store.snapshot_writer(), store.catalog(), &[ProviderConfig::Github(config)], policy).unwrap()
}

async fn mount_listing(server: &MockServer, first: Vec<Value>, second: Vec<Value>) {
    let next = format!(r#"<{}/orgs/acme/repos?per_page=100&type=all&page=2>; rel="next""#, server.uri());
    Mock::given(method("GET"))
        .and(path("/orgs/acme/repos"))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(second))
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/orgs/acme/repos"))
        .respond_with(ResponseTemplate::new(200).set_body_json(first).insert_header("link", next.as_str()))
        .mount(server)
        .await;
}

/// A fake GitHub listing `shipping` on the first page and `billing` on the second.
async fn shipping_and_billing() -> MockServer {
    let server = MockServer::start().await;
    let (shipping, billing) =
        (repository(&server, "shipping", false, false), repository(&server, "billing", false, false));
    mount_listing(&server, vec![shipping], vec![billing]).await;
    server
}

async fn mount_file(server: &MockServer, repository: &str, response: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path(format!("/repos/acme/{repository}/contents/catalog-info.yaml")))
        .and(query_param("ref", "main"))
        .respond_with(response)
        .mount(server)
        .await;
}

/// Serves `text` as the file at `file_path` of `repository` on main.
async fn mount_path(server: &MockServer, repository: &str, file_path: &str, text: &str) {
    Mock::given(method("GET"))
        .and(path(format!("/repos/acme/{repository}/contents/{file_path}")))
        .and(query_param("ref", "main"))
        .respond_with(ResponseTemplate::new(200).set_body_json(contents(text)))
        .mount(server)
        .await;
}

/// `GET /repos/{owner}/{repo}/git/trees/main?recursive=1`: directories
/// and files as GitHub lists them.
async fn mount_tree(server: &MockServer, repository: &str, files: &[&str], truncated: bool) {
    let mut entries: Vec<Value> = Vec::new();
    for file in files {
        if let Some((directory, _)) = file.rsplit_once('/') {
            entries.push(json!({"path": directory, "mode": "040000", "type": "tree", "sha": "d0c5"}));
        }
        entries.push(json!({"path": file, "mode": "100644", "type": "blob", "sha": "b10b", "size": 120}));
    }
    let tree = json!({"sha": "9fb037999f264ba9a7fc6274d15fa3ae2ab98312", "tree": entries, "truncated": truncated,
                      "url": format!("{}/repos/acme/{repository}/git/trees/9fb0", server.uri())});
    Mock::given(method("GET"))
        .and(path(format!("/repos/acme/{repository}/git/trees/main")))
        .and(query_param("recursive", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(tree))
        .mount(server)
        .await;
}

fn location(targets: &[&str]) -> String {
    let targets: Vec<String> = targets.iter().map(|target| format!("    - {target}\n")).collect();
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Location\nmetadata:\n  name: root\nspec:\n  targets:\n{}",
        targets.concat()
    )
}

async fn exists(store: &Store, name: &str) -> bool {
    let entity_ref = EntityRef::parse(&format!("component:default/{name}")).unwrap();
    store.catalog().entity_by_ref(&entity_ref).await.unwrap().is_some()
}

async fn requests_to(server: &MockServer, wanted: &str) -> usize {
    server.received_requests().await.unwrap().iter().filter(|request| request.url.path() == wanted).count()
}

async fn discovery_reads_every_page_and_each_selected_repositorys_catalog_file(store: Store) {
    let server = MockServer::start().await;
    mount_listing(
        &server,
        vec![repository(&server, "shipping", false, false), repository(&server, "old", true, false)],
        vec![
            repository(&server, "billing", false, false),
            repository(&server, "someones-fork", false, true),
            repository(&server, "no-catalog", false, false),
        ],
    )
    .await;
    let found = |text: String| ResponseTemplate::new(200).set_body_json(contents(&text));
    // A repository may not declare who belongs to which group.
    let group = "apiVersion: backstage.io/v1alpha1\nkind: Group\nmetadata:\n  name: platform\nspec:\n  type: team\n  children: []\n  members: [mallory]\n";
    mount_file(&server, "shipping", found(format!("{}---\n{group}", component("shipping-api", "team-shipping")))).await;
    mount_file(&server, "billing", found(format!("{}---\n{}", component("invoices", "team-billing"), "kind: [broken")))
        .await;
    mount_file(&server, "old", found(component("old-service", "team-old"))).await;
    mount_file(&server, "someones-fork", found(component("forked", "team-x"))).await;
    mount_file(&server, "no-catalog", ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"}))).await;

    let engine = engine(&store, config(&server));
    let runs = engine.run_once().await.unwrap();
    assert_eq!(runs[0].provider, "github");
    assert_eq!(runs[0].summary.added, 2, "{runs:?}");
    assert!(exists(&store, "shipping-api").await && exists(&store, "invoices").await);
    assert!(!exists(&store, "old-service").await, "archived repositories are skipped");
    assert!(!exists(&store, "forked").await, "forks are skipped");
    assert_eq!(requests_to(&server, "/repos/acme/old/contents/catalog-info.yaml").await, 0);
    assert_eq!(requests_to(&server, "/orgs/acme/repos").await, 2, "two pages, each once");

    let stored =
        store.catalog().entity_by_ref(&EntityRef::parse("component:default/invoices").unwrap()).await.unwrap().unwrap();
    let location = "url:https://github.example/acme/billing/blob/main/catalog-info.yaml";
    assert_eq!(stored.entity().unwrap().metadata.annotations[MANAGED_BY_LOCATION], location);

    // Every listed repository is known for governance facts, selected or
    // not: by the location an entity was read from, or by its slug.
    let view = &engine.github()[0];
    assert!(view.read_at().is_some());
    let annotations = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
    };
    let billing = view.repository_for(&annotations(&[(MANAGED_BY_LOCATION, location)])).unwrap();
    assert_eq!((billing.full_name.as_str(), billing.archived), ("acme/billing", false));
    assert_eq!(billing.pushed_at.map(|time| time.to_rfc3339()).as_deref(), Some("2026-11-30T10:00:00+00:00"));
    let old = view.repository_for(&annotations(&[("github.com/project-slug", "Acme/Old")])).unwrap();
    assert!(old.archived);
    assert_eq!(view.repository_for(&annotations(&[("github.com/project-slug", "acme/elsewhere")])), None);
    let near_miss = "url:https://github.example/acme/billing-archive/blob/main/catalog-info.yaml";
    assert_eq!(view.repository_for(&annotations(&[(MANAGED_BY_LOCATION, near_miss)])), None);
    let locations = store.catalog().locations().await.unwrap();
    let billing = locations.iter().find(|record| record.target == location).unwrap();
    assert!(billing.error.as_deref().unwrap().contains("document 2"), "the broken document is reported: {billing:?}");
    let missing = locations.iter().find(|record| record.target.contains("/no-catalog/")).unwrap();
    assert_eq!(missing.n_entities, 0);
    assert!(
        store.catalog().entity_by_ref(&EntityRef::parse("group:default/platform").unwrap()).await.unwrap().is_none()
    );
    let shipping = locations.iter().find(|record| record.target.contains("/shipping/")).unwrap();
    assert_eq!(shipping.n_entities, 1, "{shipping:?}");
    assert!(shipping.error.as_deref().unwrap().contains("kind Group is not allowed"), "{shipping:?}");
}

async fn a_failing_listing_removes_nothing_and_a_complete_one_does(store: Store) {
    let server = shipping_and_billing().await;
    let found = |text: String| ResponseTemplate::new(200).set_body_json(contents(&text));
    mount_file(&server, "shipping", found(component("shipping-api", "team-shipping"))).await;
    mount_file(&server, "billing", found(component("invoices", "team-billing"))).await;
    let engine = engine(&store, config(&server));
    assert_eq!(engine.run_once().await.unwrap()[0].summary.added, 2);

    // Page 2 fails with 502 on every try, and billing is archived meanwhile.
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/orgs/acme/repos"))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(502))
        .with_priority(1)
        .mount(&server)
        .await;
    let next = format!(r#"<{}/orgs/acme/repos?per_page=100&type=all&page=2>; rel="next""#, server.uri());
    Mock::given(method("GET"))
        .and(path("/orgs/acme/repos"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(vec![repository(&server, "shipping", false, false)])
                .insert_header("link", next.as_str()),
        )
        .mount(&server)
        .await;
    let run = engine.run_provider("github").await.unwrap().unwrap();
    assert!(run.incomplete.as_deref().is_some_and(|reason| reason.contains("502")), "{run:?}");
    assert_eq!(run.summary.removed, 0, "{run:?}");
    assert!(exists(&store, "invoices").await, "an outage deletes nothing");
    let health = engine.health().remove(0);
    assert_eq!((health.key.as_str(), health.kind), ("github", "github"));
    assert!(health.last_error.as_deref().unwrap().contains("502"), "{health:?}");
    assert!(health.last_success_at.unwrap() < health.last_run_at.unwrap(), "the last full read was the first run");
    let page_two = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|request| request.url.query().is_some_and(|query| query.contains("page=2")))
        .count();
    assert_eq!(page_two, 3, "the policy's three attempts");
    let locations = store.catalog().locations().await.unwrap();
    let listing = locations.iter().find(|record| record.target.contains("/orgs/acme/repos")).unwrap();
    assert!(listing.error.as_deref().unwrap().contains("502"), "{listing:?}");
    assert!(locations.iter().any(|record| record.target.contains("/billing/")), "location rows stay too");

    // The listing recovers, without billing: now it goes.
    server.reset().await;
    mount_listing(
        &server,
        vec![repository(&server, "shipping", false, false)],
        vec![repository(&server, "billing", true, false)],
    )
    .await;
    mount_file(&server, "shipping", found(component("shipping-api", "team-shipping"))).await;
    let run = engine.run_provider("github").await.unwrap().unwrap();
    assert_eq!(run.summary.removed, 1, "{run:?}");
    let health = engine.health().remove(0);
    assert_eq!((health.last_error, health.last_success_at), (None, health.last_run_at), "recovered");
    assert!(!exists(&store, "invoices").await && exists(&store, "shipping-api").await);
}

async fn rate_limits_are_waited_out_when_short_and_keep_entities_when_long(store: Store) {
    let server = MockServer::start().await;
    let repositories = |server: &MockServer| {
        ["shipping", "billing", "zeta"].map(|name| repository(server, name, false, false)).to_vec()
    };
    mount_listing(&server, repositories(&server), Vec::new()).await;
    let found = |name: &str| ResponseTemplate::new(200).set_body_json(contents(&component(name, "team-a")));
    for (repository, name) in [("shipping", "shipping-api"), ("billing", "invoices"), ("zeta", "zeta-api")] {
        mount_file(&server, repository, found(name)).await;
    }
    // One file at a time, in listing order.
    let engine = engine(&store, GithubProviderConfig { concurrency: 1, ..config(&server) });
    assert_eq!(engine.run_once().await.unwrap()[0].summary.added, 3);

    server.reset().await;
    mount_listing(&server, repositories(&server), Vec::new()).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // Shipping's first try hits a spent quota that resets at once: waited out.
    Mock::given(method("GET"))
        .and(path("/repos/acme/shipping/contents/catalog-info.yaml"))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", now.to_string().as_str())
                .set_body_json(json!({"message": "API rate limit exceeded"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_file(&server, "shipping", found("shipping-api")).await;
    // Billing's is a bare 403 that names a secondary limit: a minute, longer
    // than the policy waits, so the source is left alone until then.
    let secondary = json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes."});
    mount_file(&server, "billing", ResponseTemplate::new(403).set_body_json(secondary)).await;
    mount_file(&server, "zeta", found("zeta-api")).await;

    let run = engine.run_provider("github").await.unwrap().unwrap();
    assert_eq!((run.summary.removed, run.summary.unchanged), (0, 1), "{run:?}");
    assert_eq!(requests_to(&server, "/repos/acme/shipping/contents/catalog-info.yaml").await, 2);
    assert_eq!(
        requests_to(&server, "/repos/acme/billing/contents/catalog-info.yaml").await,
        1,
        "a minute is not waited"
    );
    assert_eq!(
        requests_to(&server, "/repos/acme/zeta/contents/catalog-info.yaml").await,
        0,
        "nothing sent while limited"
    );
    assert!(
        exists(&store, "invoices").await && exists(&store, "zeta-api").await,
        "rate-limited files keep their entities"
    );
    let locations = store.catalog().locations().await.unwrap();
    let billing = locations.iter().find(|record| record.target.contains("/billing/")).unwrap();
    assert!(billing.error.as_deref().unwrap().contains("rate limited"), "{billing:?}");
    let health = engine.health().remove(0);
    assert!(health.last_error.as_deref().is_some_and(|error| error.contains("rate limited")), "{health:?}");
}

/// A repository that was read before: its file gone (404) removes its
/// entities; its file failing (5xx) keeps them.
async fn a_missing_file_removes_and_a_failing_one_keeps(store: Store) {
    let server = shipping_and_billing().await;
    let found = |name: &str| ResponseTemplate::new(200).set_body_json(contents(&component(name, "team-a")));
    mount_file(&server, "shipping", found("shipping-api")).await;
    mount_file(&server, "billing", found("invoices")).await;
    let engine = engine(&store, config(&server));
    engine.run_once().await.unwrap();

    server.reset().await;
    let (shipping, billing) =
        (repository(&server, "shipping", false, false), repository(&server, "billing", false, false));
    mount_listing(&server, vec![shipping], vec![billing]).await;
    mount_file(&server, "shipping", ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"}))).await;
    mount_file(&server, "billing", ResponseTemplate::new(503)).await;
    let run = engine.run_provider("github").await.unwrap().unwrap();
    assert!(run.incomplete.is_none(), "the listing was complete: {run:?}");
    assert!(!exists(&store, "shipping-api").await, "a deleted catalog file is a removal");
    assert!(exists(&store, "invoices").await, "a failing one is not");
}

/// Archiving a third of the repositories at once looks like a mistake (or a
/// token that lost access): the removals wait for a forced run.
async fn a_run_removing_too_much_is_held_back_until_forced(store: Store) {
    let server = MockServer::start().await;
    let names: Vec<String> = (0..12).map(|index| format!("service-{index}")).collect();
    let all: Vec<Value> = names.iter().map(|name| repository(&server, name, false, false)).collect();
    mount_listing(&server, all[..6].to_vec(), all[6..].to_vec()).await;
    for name in &names {
        mount_file(&server, name, ResponseTemplate::new(200).set_body_json(contents(&component(name, "team-a")))).await;
    }
    let engine = engine(&store, config(&server));
    assert_eq!(engine.run_once().await.unwrap()[0].summary.added, 12);

    server.reset().await;
    mount_listing(&server, all[..6].to_vec(), all[6..8].to_vec()).await;
    for name in &names[..8] {
        mount_file(&server, name, ResponseTemplate::new(200).set_body_json(contents(&component(name, "team-a")))).await;
    }
    let held = engine.run_provider("github").await.unwrap().unwrap();
    assert_eq!((held.summary.removed, held.summary.held_back), (0, 4), "{held:?}");
    assert!(exists(&store, "service-11").await);
    let forced = engine.run_provider_with("github", true).await.unwrap().unwrap();
    assert_eq!((forced.summary.removed, forced.summary.held_back), (4, 0), "{forced:?}");
    assert!(!exists(&store, "service-11").await && exists(&store, "service-7").await);
}

/// A file GitHub answers with an ETag is asked for again with
/// If-None-Match; its 304 (free of rate limit on GitHub) reuses the body.
async fn unchanged_files_are_revalidated_with_their_etag(store: Store) {
    let server = MockServer::start().await;
    mount_listing(&server, vec![repository(&server, "shipping", false, false)], Vec::new()).await;
    let etag = r#""6e9b2f1e""#;
    Mock::given(method("GET"))
        .and(path("/repos/acme/shipping/contents/catalog-info.yaml"))
        .and(wiremock::matchers::header("if-none-match", etag))
        .respond_with(ResponseTemplate::new(304).insert_header("etag", etag))
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    let file = ResponseTemplate::new(200)
        .set_body_json(contents(&component("shipping-api", "team-a")))
        .insert_header("etag", etag);
    Mock::given(method("GET"))
        .and(path("/repos/acme/shipping/contents/catalog-info.yaml"))
        .respond_with(file)
        .expect(1)
        .mount(&server)
        .await;
    let engine = engine(&store, config(&server));
    assert_eq!(engine.run_once().await.unwrap()[0].summary.added, 1);
    let second = engine.run_once().await.unwrap();
    assert_eq!((second[0].summary.unchanged, second[0].summary.removed), (1, 0), "{second:?}");
    server.verify().await;
}

/// A renamed repository takes its entities along: same refs and uids, the
/// new location, no conflict with itself (Backstage pins them to the old one).
async fn a_renamed_repository_keeps_its_entities_at_the_new_location(store: Store) {
    let server = MockServer::start().await;
    mount_listing(&server, vec![repository(&server, "billing", false, false)], Vec::new()).await;
    let file = ResponseTemplate::new(200).set_body_json(contents(&component("invoices", "team-billing")));
    mount_file(&server, "billing", file.clone()).await;
    let engine = engine(&store, config(&server));
    engine.run_once().await.unwrap();
    let invoices = EntityRef::parse("component:default/invoices").unwrap();
    let before = store.catalog().entity_by_ref(&invoices).await.unwrap().unwrap();

    server.reset().await;
    mount_listing(&server, vec![repository(&server, "billing-v2", false, false)], Vec::new()).await;
    mount_file(&server, "billing-v2", file).await;
    let run = engine.run_provider("github").await.unwrap().unwrap();
    assert_eq!((run.summary.added, run.summary.removed, run.summary.conflicts), (0, 0, 0), "{run:?}");
    let after = store.catalog().entity_by_ref(&invoices).await.unwrap().unwrap();
    assert_eq!(after.entity().unwrap().metadata.uid, before.entity().unwrap().metadata.uid, "the same entity");
    let moved = "url:https://github.example/acme/billing-v2/blob/main/catalog-info.yaml";
    assert_eq!(after.location.as_deref(), Some(moved));
    assert_eq!(after.entity().unwrap().metadata.annotations[MANAGED_BY_LOCATION], moved);
    assert!(
        store.catalog().locations().await.unwrap().iter().all(|record| !record.target.contains("/billing/")),
        "the old location is gone"
    );
}

async fn a_glob_catalog_path_reads_every_file_it_matches_in_the_tree(store: Store) {
    let server = MockServer::start().await;
    mount_listing(&server, vec![repository(&server, "platform", false, false)], Vec::new()).await;
    let files = ["catalog-info.yaml", "services/a/catalog-info.yaml", "services/b/catalog-info.yaml", "docs/index.md"];
    mount_tree(&server, "platform", &files, false).await;
    mount_path(&server, "platform", "catalog-info.yaml", &component("platform-root", "team-a")).await;
    mount_path(&server, "platform", "services/a/catalog-info.yaml", &component("service-a", "team-a")).await;
    mount_path(&server, "platform", "services/b/catalog-info.yaml", &component("service-b", "team-a")).await;
    let config = GithubProviderConfig { catalog_path: "**/catalog-info.yaml".into(), ..config(&server) };
    let engine = engine(&store, config);
    let run = engine.run_once().await.unwrap().remove(0);
    assert_eq!(run.summary.added, 3, "{run:?}");
    let service_a =
        store.catalog().entity_by_ref(&EntityRef::parse("component:default/service-a").unwrap()).await.unwrap();
    let expected = "url:https://github.example/acme/platform/blob/main/services/a/catalog-info.yaml";
    assert_eq!(service_a.unwrap().location.as_deref(), Some(expected), "each file is its own location");

    // A file gone from the tree takes its entities along.
    server.reset().await;
    mount_listing(&server, vec![repository(&server, "platform", false, false)], Vec::new()).await;
    mount_tree(&server, "platform", &files[..2], false).await;
    mount_path(&server, "platform", "catalog-info.yaml", &component("platform-root", "team-a")).await;
    mount_path(&server, "platform", "services/a/catalog-info.yaml", &component("service-a", "team-a")).await;
    let run = engine.run_provider("github").await.unwrap().unwrap();
    assert_eq!((run.summary.removed, run.summary.unchanged), (1, 2), "{run:?}");
    assert!(!exists(&store, "service-b").await);

    // A truncated tree hides files: nothing of the repository goes.
    server.reset().await;
    mount_listing(&server, vec![repository(&server, "platform", false, false)], Vec::new()).await;
    mount_tree(&server, "platform", &files[..1], true).await;
    let run = engine.run_provider("github").await.unwrap().unwrap();
    assert_eq!(run.summary.removed, 0, "{run:?}");
    assert!(exists(&store, "service-a").await);
    let error = engine.health()[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("truncated"), "{error}");

    // An empty repository (GitHub answers its tree with 409) has no files.
    server.reset().await;
    mount_listing(&server, vec![repository(&server, "platform", false, false)], Vec::new()).await;
    Mock::given(method("GET"))
        .and(path("/repos/acme/platform/git/trees/main"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({"message": "Git Repository is empty."})))
        .mount(&server)
        .await;
    let run = engine.run_provider("github").await.unwrap().unwrap();
    assert_eq!(run.summary.removed, 2, "{run:?}");
}

async fn location_entities_in_a_repository_are_followed_inside_it_only(store: Store) {
    let server = MockServer::start().await;
    mount_listing(&server, vec![repository(&server, "platform", false, false)], Vec::new()).await;
    let root = location(&[
        "./services/api.yaml",
        "https://github.example/acme/platform/blob/main/services/worker.yaml",
        "./catalog/*.yaml",
        "../outside.yaml",
        "https://elsewhere.example/acme/catalog.yaml",
        "./%2e%2e/%2e%2e/%2e%2e/secret/contents/catalog-info.yaml",
    ]);
    mount_path(&server, "platform", "catalog-info.yaml", &root).await;
    mount_path(&server, "platform", "services/api.yaml", &component("platform-api", "team-a")).await;
    mount_path(&server, "platform", "services/worker.yaml", &component("platform-worker", "team-a")).await;
    mount_tree(
        &server,
        "platform",
        &["catalog-info.yaml", "catalog/one.yaml", "catalog/two.yaml", "catalog/x.md"],
        false,
    )
    .await;
    mount_path(&server, "platform", "catalog/one.yaml", &component("one", "team-a")).await;
    // two.yaml points back at the root: the cycle is read once.
    mount_path(
        &server,
        "platform",
        "catalog/two.yaml",
        &format!(
            "{}---\n{}",
            component("two", "team-a"),
            location(&["../catalog-info.yaml"]).replace("name: root", "name: back")
        ),
    )
    .await;
    let engine = engine(&store, config(&server));
    let run = engine.run_once().await.unwrap().remove(0);
    for name in ["platform-api", "platform-worker", "one", "two"] {
        assert!(exists(&store, name).await, "{name} was followed: {run:?}");
    }
    let root_location =
        store.catalog().entity_by_ref(&EntityRef::parse("location:default/root").unwrap()).await.unwrap();
    assert!(root_location.is_some(), "the Location entity itself is in the catalog");
    let locations = store.catalog().locations().await.unwrap();
    let root_status = locations.iter().find(|record| record.target.ends_with("/blob/main/catalog-info.yaml")).unwrap();
    let error = root_status.error.clone().unwrap_or_default();
    assert!(error.contains("../outside.yaml") && error.contains("elsewhere.example"), "{error}");
    assert!(error.contains("%2e%2e"), "an encoded climb is refused: {error}");
    let received = server.received_requests().await.unwrap();
    assert!(received.iter().all(|request| !request.url.path().contains("secret")), "nothing outside was fetched");
    assert_eq!(requests_to(&server, "/repos/acme/platform/contents/catalog-info.yaml").await, 1, "read once");
    assert_eq!(
        requests_to(&server, "/repos/acme/platform/git/trees/main").await,
        1,
        "listed once, when a glob needed it"
    );
}

async fn a_targeted_read_changes_only_the_repositories_it_names(store: Store) {
    let server = shipping_and_billing().await;
    let found = |name: &str| ResponseTemplate::new(200).set_body_json(contents(&component(name, "team-a")));
    mount_file(&server, "shipping", found("shipping-api")).await;
    mount_file(&server, "billing", found("invoices")).await;
    let engine = engine(&store, config(&server));
    engine.run_once().await.unwrap();
    let hint = |name: &str, gone: bool| RepositoryHint {
        full_name: format!("acme/{name}"),
        html_url: format!("https://github.example/acme/{name}"),
        gone,
    };
    let refresh =
        |hints: Vec<RepositoryHint>| GithubRefresh::Repositories { provider: "github".into(), repositories: hints };

    // Both files change; only shipping is read again.
    server.reset().await;
    let shipping = repository(&server, "shipping", false, false);
    Mock::given(method("GET"))
        .and(path("/repos/acme/shipping"))
        .respond_with(ResponseTemplate::new(200).set_body_json(shipping))
        .mount(&server)
        .await;
    mount_file(&server, "shipping", found("shipping-api-v2")).await;
    mount_file(&server, "billing", found("invoices-v2")).await;
    let run = engine.refresh_github(&refresh(vec![hint("shipping", false)])).await.unwrap().unwrap();
    assert_eq!((run.summary.added, run.summary.removed), (1, 1), "{run:?}");
    assert!(exists(&store, "shipping-api-v2").await && exists(&store, "invoices").await);
    assert!(!exists(&store, "invoices-v2").await, "billing was not read");
    assert_eq!(requests_to(&server, "/orgs/acme/repos").await, 0, "the organisation was not listed");

    // billing renamed to ledger: the old name is gone, the new one read; the
    // entity moves without a conflict.
    let ledger = repository(&server, "ledger", false, false);
    Mock::given(method("GET"))
        .and(path("/repos/acme/ledger"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ledger))
        .mount(&server)
        .await;
    mount_file(&server, "ledger", found("invoices")).await;
    let run =
        engine.refresh_github(&refresh(vec![hint("billing", true), hint("ledger", false)])).await.unwrap().unwrap();
    assert_eq!((run.summary.added, run.summary.removed, run.summary.conflicts), (0, 0, 0), "{run:?}");
    let invoices =
        store.catalog().entity_by_ref(&EntityRef::parse("component:default/invoices").unwrap()).await.unwrap().unwrap();
    assert_eq!(
        invoices.location.as_deref(),
        Some("url:https://github.example/acme/ledger/blob/main/catalog-info.yaml")
    );

    // A deleted repository (404) loses its entities; one that fails keeps them.
    Mock::given(method("GET"))
        .and(path("/repos/acme/shipping"))
        .respond_with(ResponseTemplate::new(503))
        .with_priority(1)
        .mount(&server)
        .await;
    let run = engine.refresh_github(&refresh(vec![hint("shipping", false)])).await.unwrap().unwrap();
    assert!(run.incomplete.is_some() && exists(&store, "shipping-api-v2").await, "{run:?}");
    Mock::given(method("GET"))
        .and(path("/repos/acme/ledger"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"})))
        .with_priority(1)
        .mount(&server)
        .await;
    let run = engine.refresh_github(&refresh(vec![hint("ledger", false)])).await.unwrap().unwrap();
    assert_eq!(run.summary.removed, 1, "{run:?}");
    assert!(!exists(&store, "invoices").await && exists(&store, "shipping-api-v2").await);
}

/// A fresh RSA key as GitHub issues them (PKCS#1 PEM) and its public key
/// (PKCS#1 DER), made with the openssl command so no key lives in the repository.
fn app_key(directory: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let pem = directory.join("app.pem");
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl").args(args).output().expect("the openssl command runs");
        assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    };
    let pkcs8 = openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
    std::fs::write(directory.join("app8.pem"), pkcs8).unwrap();
    let eight = directory.join("app8.pem");
    let pkcs1 = openssl(&["rsa", "-in", eight.to_str().unwrap(), "-traditional"]);
    std::fs::write(&pem, pkcs1).unwrap();
    let public = openssl(&["rsa", "-in", pem.to_str().unwrap(), "-RSAPublicKey_out", "-outform", "DER"]);
    (pem, public)
}

/// Matches a request authenticated as the GitHub App: an RS256 JWT signed
/// with its key, issued by its id, living at most ten minutes.
struct SignedByApp {
    public_key: Vec<u8>,
    app_id: &'static str,
}

impl wiremock::Match for SignedByApp {
    fn matches(&self, request: &wiremock::Request) -> bool {
        let decode = |part: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).ok();
        let Some(jwt) = request.headers.get("authorization").and_then(|value| value.to_str().ok()) else {
            return false;
        };
        let Some(jwt) = jwt.strip_prefix("Bearer ") else { return false };
        let parts: Vec<&str> = jwt.split('.').collect();
        let [header, claims, signature] = parts[..] else { return false };
        let key =
            ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, &self.public_key);
        let signed = format!("{header}.{claims}");
        let Some(signature) = decode(signature) else { return false };
        if key.verify(signed.as_bytes(), &signature).is_err() {
            return false;
        }
        let Some(claims) = decode(claims).and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok()) else {
            return false;
        };
        let lifetime = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
        claims["iss"] == self.app_id && (1..=600).contains(&lifetime)
    }
}

async fn a_github_app_buys_an_installation_token_and_renews_it_when_refused(store: Store) {
    let directory = tempfile::tempdir().unwrap();
    let (pem, public_key) = app_key(directory.path());
    let server = MockServer::start().await;
    let expires_at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let token = |token: &str| {
        ResponseTemplate::new(201).set_body_json(
            json!({"token": token, "expires_at": expires_at, "permissions": {"contents": "read", "metadata": "read"},
                   "repository_selection": "all"}),
        )
    };
    Mock::given(method("POST"))
        .and(path("/app/installations/42/access_tokens"))
        .and(SignedByApp { public_key: public_key.clone(), app_id: "1234" })
        .respond_with(token("ghs_first"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/app/installations/42/access_tokens"))
        .and(SignedByApp { public_key, app_id: "1234" })
        .respond_with(token("ghs_second"))
        .mount(&server)
        .await;
    let listing = json!([repository(&server, "shipping", false, false)]);
    for accepted in ["Bearer ghs_first", "Bearer ghs_second"] {
        Mock::given(method("GET"))
            .and(path("/orgs/acme/repos"))
            .and(wiremock::matchers::header("authorization", accepted))
            .respond_with(ResponseTemplate::new(200).set_body_json(&listing))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/repos/acme/shipping/contents/catalog-info.yaml"))
            .and(wiremock::matchers::header("authorization", accepted))
            .respond_with(ResponseTemplate::new(200).set_body_json(contents(&component("shipping-api", "team-a"))))
            .mount(&server)
            .await;
    }
    let mut app = config(&server);
    app.auth = GithubAuthConfig {
        app_id: 1234,
        app_installation_id: 42,
        app_private_key_file: pem.to_str().unwrap().to_owned(),
        ..app.auth
    };
    let engine = engine(&store, app.clone());
    engine.run_once().await.unwrap();
    engine.run_once().await.unwrap();
    assert!(exists(&store, "shipping-api").await);
    assert_eq!(requests_to(&server, "/app/installations/42/access_tokens").await, 1, "the token is kept between runs");

    // GitHub revokes the first token: the next request is refused, a new
    // token is bought and the run completes with it.
    Mock::given(method("GET"))
        .and(wiremock::matchers::header("authorization", "Bearer ghs_first"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"})))
        .with_priority(1)
        .mount(&server)
        .await;
    let run = engine.run_provider("github").await.unwrap().unwrap();
    assert!(run.incomplete.is_none() && run.n_location_errors == 0, "{run:?}");
    assert_eq!(requests_to(&server, "/app/installations/42/access_tokens").await, 2);

    // A key that is not one is refused at build, naming where it came from.
    std::fs::write(&pem, "not a key").unwrap();
    let error = Engine::build(store.snapshot_writer(), store.catalog(), &[ProviderConfig::Github(app)])
        .unwrap_err()
        .to_string();
    assert!(error.contains("app.pem") && error.contains("not a PEM private key"), "{error}");
}

/// A server that answers every request with a 200 whose body is cut short
/// (Content-Length promises more than is sent), then closes: the read of a
/// truncated body. Returns its base URL and how many requests it took.
async fn truncating_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut request = [0_u8; 4096];
            let _ = socket.read(&mut request).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n";
            let _ = socket
                .write_all(format!("{head}{{\"type\": \"file\", \"encoding\": \"base64\", \"con").as_bytes())
                .await;
            let _ = socket.shutdown().await;
        }
    });
    (format!("http://{address}"), requests)
}

/// A file that answers too slowly, or whose body is cut short, is retried
/// as the policy says and then keeps its entities; the health says why,
/// and the next good run recovers.
async fn slow_and_truncated_files_keep_their_entities_and_recover(store: Store) {
    let server = MockServer::start().await;
    mount_listing(&server, vec![repository(&server, "shipping", false, false)], Vec::new()).await;
    mount_file(
        &server,
        "shipping",
        ResponseTemplate::new(200).set_body_json(contents(&component("shipping-api", "team-a"))),
    )
    .await;
    let config = GithubProviderConfig { request_timeout_seconds: 1, ..config(&server) };
    let engine = engine(&store, config.clone());
    engine.run_once().await.unwrap();

    server.reset().await;
    mount_listing(&server, vec![repository(&server, "shipping", false, false)], Vec::new()).await;
    let slow = ResponseTemplate::new(200)
        .set_body_json(contents(&component("shipping-api-v2", "team-a")))
        .set_delay(Duration::from_millis(1_500));
    mount_file(&server, "shipping", slow).await;
    let run = engine.run_provider("github").await.unwrap().unwrap();
    assert_eq!((run.summary.removed, run.summary.added), (0, 0), "{run:?}");
    assert!(exists(&store, "shipping-api").await);
    assert_eq!(requests_to(&server, "/repos/acme/shipping/contents/catalog-info.yaml").await, 3, "three attempts");
    let error = engine.health()[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("could not be read"), "{error}");

    // A listing whose body is cut short is a transient failure: retried,
    // then the run is incomplete and removes nothing.
    let (truncating, truncated_requests) = truncating_server().await;
    let cut =
        GithubProviderConfig { auth: GithubAuthConfig { api_base_url: truncating, ..config.auth.clone() }, ..config };
    let cut_engine = crate::engine(&store, cut);
    let run = cut_engine.run_provider("github").await.unwrap().unwrap();
    assert!(run.incomplete.is_some(), "a listing cut short lists nothing for sure: {run:?}");
    assert_eq!(truncated_requests.load(std::sync::atomic::Ordering::SeqCst), 3, "retried as a transient failure");
    assert!(exists(&store, "shipping-api").await, "nothing removed");

    server.reset().await;
    mount_listing(&server, vec![repository(&server, "shipping", false, false)], Vec::new()).await;
    mount_file(
        &server,
        "shipping",
        ResponseTemplate::new(200).set_body_json(contents(&component("shipping-api-v2", "team-a"))),
    )
    .await;
    let run = engine.run_provider("github").await.unwrap().unwrap();
    assert_eq!((run.summary.added, run.summary.removed), (1, 1), "recovered: {run:?}");
    assert!(engine.health()[0].last_error.is_none());
}

backend_tests!(
    slow_and_truncated_files_keep_their_entities_and_recover,
    a_github_app_buys_an_installation_token_and_renews_it_when_refused,
    a_glob_catalog_path_reads_every_file_it_matches_in_the_tree,
    location_entities_in_a_repository_are_followed_inside_it_only,
    a_targeted_read_changes_only_the_repositories_it_names,
    a_renamed_repository_keeps_its_entities_at_the_new_location,
    a_missing_file_removes_and_a_failing_one_keeps,
    unchanged_files_are_revalidated_with_their_etag,
    a_run_removing_too_much_is_held_back_until_forced,
    discovery_reads_every_page_and_each_selected_repositorys_catalog_file,
    a_failing_listing_removes_nothing_and_a_complete_one_does,
    rate_limits_are_waited_out_when_short_and_keep_entities_when_long,
);
