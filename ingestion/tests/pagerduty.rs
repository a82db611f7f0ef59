//! The PagerDuty provider against a fake PagerDuty that speaks the REST API
//! v2's wire format (`catalog_ingestion::testing::pagerduty`): offset pages,
//! a rate limit waited out, failures that change nothing and recover,
//! on-call at the lowest level without duplicates, the single-flight cache,
//! integration keys, unmapped services as Resources behind the flag, and a
//! webhook's refresh of one service. Every body runs on SQLite and on
//! PostgreSQL.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use catalog_domain::EntityRef;
use catalog_ingestion::testing::pagerduty::{
    Account, FakePagerDuty, incident, on_call, rate_limited, service, team, with_integration, with_team,
};
use catalog_ingestion::{Engine, PagerDutyProviderConfig, PagerDutyView, ProviderConfig, RetryPolicy};
use catalog_store::testing::{TestDatabase, one_location_snapshot};
use catalog_store::{Store, backend_tests};
use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    every_page_of_services_is_read_and_the_requests_carry_the_api_key,
    a_rate_limit_is_waited_out_and_the_run_succeeds,
    a_failing_account_changes_nothing_and_the_next_run_recovers,
    on_call_is_the_lowest_level_once_per_person,
    a_burst_of_on_call_reads_is_one_request_until_the_cache_expires,
    incidents_are_the_open_ones_newest_first_with_their_count,
    an_integration_key_maps_to_its_service_and_a_team_to_its_services,
    unmapped_services_become_resources_only_behind_the_flag,
    a_refreshed_service_replaces_its_directory_entry_and_forgets_its_caches,
);

fn config(fake: &FakePagerDuty) -> PagerDutyProviderConfig {
    PagerDutyProviderConfig {
        api_base_url: fake.uri(),
        token_variable: "CATALOG_TEST_PAGERDUTY_TOKEN_UNSET".into(),
        page_size: 2,
        ..PagerDutyProviderConfig::default()
    }
}

fn engine(store: &Store, config: PagerDutyProviderConfig) -> Engine {
    let policy = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
        max_wait: Duration::from_secs(3),
    };
    Engine::build_with(store.snapshot_writer(), store.catalog(), &[ProviderConfig::PagerDuty(config)], policy).unwrap()
}

/// Five services over three pages of two: payments (team PTEAM1, an
/// integration), ledger (team PTEAM1), search, mail and maps.
fn account() -> Account {
    Account {
        services: vec![
            with_integration(with_team(service("PPAY001", "Payments API", "PPOL001"), "PTEAM1", "Payments"), "key-pay"),
            with_team(service("PLED001", "Ledger", "PPOL002"), "PTEAM1", "Payments"),
            service("PSRC001", "Search", "PPOL003"),
            service("PMAIL01", "Mail", "PPOL003"),
            service("PMAP001", "Maps", "PPOL003"),
        ],
        teams: vec![team("PTEAM1", "Payments"), team("PTEAM2", "Platform")],
        ..Account::default()
    }
}

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
}

fn view(engine: &Engine) -> PagerDutyView {
    engine.pagerduty().expect("a PagerDuty provider is configured")
}

fn service_name(view: &PagerDutyView, id: &str) -> Option<String> {
    view.service_for(&annotations(&[("pagerduty.com/service-id", id)])).unwrap().map(|service| service.name.clone())
}

/// Catalog entities from another provider, as a file would hold them.
async fn catalog(store: &Store, documents: Vec<Value>) {
    let entities = documents.iter().map(|document| catalog_domain::validate(document).unwrap()).collect();
    store.snapshot_writer().apply_snapshot(&one_location_snapshot("file", entities)).await.unwrap();
}

fn component(name: &str, annotation: (&str, &str)) -> Value {
    json!({"apiVersion": "backstage.io/v1alpha1", "kind": "Component",
           "metadata": {"name": name, "annotations": {annotation.0: annotation.1}},
           "spec": {"type": "service", "lifecycle": "production", "owner": "team-payments"}})
}

fn group(name: &str, team_id: &str) -> Value {
    json!({"apiVersion": "backstage.io/v1alpha1", "kind": "Group",
           "metadata": {"name": name, "annotations": {"pagerduty.com/team-id": team_id}},
           "spec": {"type": "team", "children": []}})
}

async fn body(store: &Store, entity_ref: &str) -> Option<Value> {
    let stored = store.catalog().entity_by_ref(&EntityRef::parse(entity_ref).unwrap()).await.unwrap()?;
    Some(stored.raw().unwrap())
}

fn query(request: &wiremock::Request, name: &str) -> Vec<String> {
    request.url.query_pairs().filter(|(key, _)| key == name).map(|(_, value)| value.into_owned()).collect()
}

async fn every_page_of_services_is_read_and_the_requests_carry_the_api_key(store: Store) {
    let fake = FakePagerDuty::start(account()).await;
    // Cargo sets CARGO_PKG_NAME for the tests it runs: a variable that is
    // surely set, without a test setting one (which Rust 2024 makes unsafe).
    let engine = engine(&store, PagerDutyProviderConfig { token_variable: "CARGO_PKG_NAME".into(), ..config(&fake) });
    let runs = engine.run_once().await.unwrap();
    assert_eq!((runs[0].provider.as_str(), runs[0].incomplete.as_deref()), ("pagerduty", None), "{runs:?}");
    let view = view(&engine);
    for id in ["PPAY001", "PLED001", "PSRC001", "PMAIL01", "PMAP001"] {
        assert!(service_name(&view, id).is_some(), "{id} was read");
    }
    assert_eq!(runs[0].summary.added, 0, "mapped or not, nothing is invented without the flag");

    let listings = fake.requests_to("/services").await;
    let offsets: Vec<Vec<String>> = listings.iter().map(|request| query(request, "offset")).collect();
    assert_eq!(offsets, vec![vec!["0"], vec!["2"], vec!["4"]], "three pages of two, until more was false");
    let includes = query(&listings[0], "include[]");
    assert_eq!(includes, vec!["escalation_policies", "teams", "integrations"]);
    assert_eq!(fake.requests_to("/teams").await.len(), 1);
    let headers = &listings[0].headers;
    assert_eq!(headers["authorization"], "Token token=catalog-ingestion");
    assert_eq!(headers["accept"], "application/vnd.pagerduty+json;version=2");
    let health = engine.health().remove(0);
    assert_eq!((health.kind, health.last_error), ("pagerduty", None));
}

async fn a_rate_limit_is_waited_out_and_the_run_succeeds(store: Store) {
    let fake = FakePagerDuty::start(account()).await;
    Mock::given(method("GET"))
        .and(path("/services"))
        .and(query_param("offset", "2"))
        .respond_with(rate_limited(1))
        .up_to_n_times(1)
        .mount(&fake.server)
        .await;
    let engine = engine(&store, config(&fake));
    let started = std::time::Instant::now();
    let runs = engine.run_once().await.unwrap();
    assert_eq!(runs[0].incomplete, None, "{runs:?}");
    assert!(started.elapsed() >= Duration::from_secs(1), "ratelimit-reset was waited out");
    assert_eq!(fake.requests_to("/services").await.len(), 4, "the limited page was asked twice");
    assert!(service_name(&view(&engine), "PMAP001").is_some());
    assert_eq!(engine.health()[0].last_error, None);
}

async fn a_failing_account_changes_nothing_and_the_next_run_recovers(store: Store) {
    let fake = FakePagerDuty::start(account()).await;
    let config = PagerDutyProviderConfig {
        ingest_unmapped_services: true,
        unmapped_owner: "group:default/sre".into(),
        ..config(&fake)
    };
    let engine = engine(&store, config);
    let runs = engine.run_once().await.unwrap();
    assert_eq!(runs[0].summary.added, 5, "{runs:?}");
    let view = view(&engine);

    // A 5xx on the second page, twice: retried once, then the run is
    // incomplete. (Faults are counted, not scoped: wiremock 0.6.5 sorts its
    // mocks by priority in place, so dropping a scoped mock can unmount
    // another.)
    fake.update(|account| account.services[0]["name"] = json!("Payments API v2"));
    Mock::given(method("GET"))
        .and(path("/services"))
        .and(query_param("offset", "2"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&fake.server)
        .await;
    let before = fake.requests_to("/services").await.len();
    let runs = engine.run_once().await.unwrap();
    assert!(runs[0].incomplete.as_deref().is_some_and(|why| why.contains("503")), "{runs:?}");
    assert_eq!((runs[0].summary.removed, runs[0].summary.updated), (0, 0));
    assert_eq!(fake.requests_to("/services").await.len() - before, 3, "page one, then page two twice");
    assert_eq!(service_name(&view, "PPAY001").as_deref(), Some("Payments API"), "the last complete read stays");
    assert_eq!(store.catalog().entity_counts_by_provider().await.unwrap()["pagerduty"], 5, "nothing removed");
    let health = engine.health().remove(0);
    assert!(health.last_error.as_deref().is_some_and(|error| error.contains("503")), "{health:?}");
    assert!(health.last_success_at < health.last_run_at);

    // A revoked key: 401 is not retried, and changes nothing either.
    Mock::given(method("GET"))
        .and(path("/teams"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"error": {"message": "Unauthorized", "code": 2006}})),
        )
        .up_to_n_times(1)
        .mount(&fake.server)
        .await;
    let runs = engine.run_once().await.unwrap();
    assert!(runs[0].incomplete.as_deref().is_some_and(|why| why.contains("unauthorized")), "{runs:?}");
    assert_eq!(fake.requests_to("/teams").await.len(), 2, "one each run: a 401 is final");
    assert_eq!(store.catalog().entity_counts_by_provider().await.unwrap()["pagerduty"], 5);
    assert_eq!(service_name(&view, "PPAY001").as_deref(), Some("Payments API"));

    let runs = engine.run_once().await.unwrap();
    assert_eq!((runs[0].incomplete.as_deref(), runs[0].summary.updated), (None, 1), "{runs:?}");
    assert_eq!(service_name(&view, "PPAY001").as_deref(), Some("Payments API v2"));
    let health = engine.health().remove(0);
    assert_eq!((health.last_error, health.last_success_at), (None, health.last_run_at), "recovered");
}

async fn on_call_is_the_lowest_level_once_per_person(store: Store) {
    let mut account = account();
    account.on_calls = vec![
        on_call("PPOL001", 2, ("PBOB", "Bob", "bob@acme.example"), Some("Secondary"), Some("2026-12-02T09:00:00Z")),
        on_call("PPOL001", 1, ("PADA", "Ada", "ada@acme.example"), Some("Primary"), Some("2026-12-01T09:00:00Z")),
        on_call(
            "PPOL001",
            1,
            ("PADA", "Ada", "ada@acme.example"),
            Some("Follow the sun"),
            Some("2026-12-01T21:00:00Z"),
        ),
        on_call("PPOL001", 1, ("PGRACE", "Grace", "grace@acme.example"), None, None),
        on_call("PPOL001", 3, ("PGRACE", "Grace", "grace@acme.example"), Some("Managers"), None),
        on_call("PPOL002", 1, ("PLIN", "Linus", "linus@acme.example"), Some("Ledger"), None),
    ];
    let fake = FakePagerDuty::start(account).await;
    let engine = engine(&store, config(&fake));
    engine.run_once().await.unwrap();
    let on_call = view(&engine).on_call("PPAY001").await.unwrap();
    let people: Vec<(&str, Option<&str>, Option<&str>, u32)> = on_call
        .iter()
        .map(|entry| (entry.user_name.as_str(), entry.email.as_deref(), entry.schedule.as_deref(), entry.level))
        .collect();
    assert_eq!(
        people,
        vec![
            ("Ada", Some("ada@acme.example"), Some("Follow the sun"), 1),
            ("Grace", Some("grace@acme.example"), None, 1),
        ]
    );
    assert_eq!(on_call[0].until, Some("2026-12-01T21:00:00Z".parse().unwrap()));
    assert_eq!(on_call[1].until, None);
    let requests = fake.requests_to("/oncalls").await;
    assert_eq!(requests.len(), 3, "five entries in pages of two");
    assert_eq!(query(&requests[0], "escalation_policy_ids[]"), vec!["PPOL001"]);
    assert_eq!(query(&requests[0], "include[]"), vec!["users"], "emails come with the embedded users");
}

async fn a_burst_of_on_call_reads_is_one_request_until_the_cache_expires(store: Store) {
    let mut account = account();
    account.on_calls = vec![on_call("PPOL003", 1, ("PADA", "Ada", "ada@acme.example"), Some("Primary"), None)];
    account.live_latency = Duration::from_millis(100);
    let fake = FakePagerDuty::start(account).await;
    let engine = engine(&store, PagerDutyProviderConfig { oncall_cache_seconds: 1, ..config(&fake) });
    engine.run_once().await.unwrap();
    let view = view(&engine);
    // Three services share escalation policy PPOL003: one cache entry.
    let reads = (0..30).map(|index| {
        let view = view.clone();
        let id = ["PSRC001", "PMAIL01", "PMAP001"][index % 3];
        async move { view.on_call(id).await.unwrap() }
    });
    let answers = futures::future::join_all(reads).await;
    assert!(answers.iter().all(|answer| answer[0].user_name == "Ada"));
    assert_eq!(fake.requests_to("/oncalls").await.len(), 1);
    view.on_call("PSRC001").await.unwrap();
    assert_eq!(fake.requests_to("/oncalls").await.len(), 1, "still cached");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    view.on_call("PSRC001").await.unwrap();
    assert_eq!(fake.requests_to("/oncalls").await.len(), 2, "expired after oncall_cache_seconds");
}

async fn incidents_are_the_open_ones_newest_first_with_their_count(store: Store) {
    let mut account = account();
    account.incidents = vec![
        incident("Q1", 1, "PPAY001", "triggered", "2026-11-30T08:00:00Z"),
        incident("Q2", 2, "PPAY001", "resolved", "2026-11-30T09:00:00Z"),
        incident("Q3", 3, "PPAY001", "acknowledged", "2026-11-30T10:00:00Z"),
        incident("Q4", 4, "PLED001", "triggered", "2026-11-30T11:00:00Z"),
    ];
    let fake = FakePagerDuty::start(account).await;
    let engine = engine(&store, config(&fake));
    engine.run_once().await.unwrap();
    let incidents = view(&engine).incidents("PPAY001").await.unwrap();
    assert_eq!(incidents.count, 2);
    let ids: Vec<&str> = incidents.latest.iter().map(|incident| incident.id.as_str()).collect();
    assert_eq!(ids, vec!["Q3", "Q1"]);
    assert_eq!((incidents.latest[0].status.as_str(), incidents.latest[0].urgency.as_str()), ("acknowledged", "high"));
    assert_eq!(incidents.latest[0].title, "Incident 3");
    let requests = fake.requests_to("/incidents").await;
    assert_eq!(query(&requests[0], "statuses[]"), vec!["triggered", "acknowledged"]);
    assert_eq!(query(&requests[0], "service_ids[]"), vec!["PPAY001"]);
}

async fn an_integration_key_maps_to_its_service_and_a_team_to_its_services(store: Store) {
    let fake = FakePagerDuty::start(account()).await;
    let engine = engine(&store, config(&fake));
    let view = view(&engine);
    let by_key = annotations(&[("pagerduty.com/integration-key", "key-pay")]);
    let unread = view.service_for(&by_key).unwrap_err();
    assert!(unread.to_string().contains("has not been read yet"), "{unread}");
    engine.run_once().await.unwrap();
    assert_eq!(view.service_for(&by_key).unwrap().unwrap().id, "PPAY001");
    let unknown = annotations(&[("pagerduty.com/integration-key", "key-nobody-has")]);
    assert!(view.service_for(&unknown).unwrap().is_none());
    assert!(view.service_for(&annotations(&[("backstage.io/techdocs-ref", "dir:.")])).unwrap().is_none());
    let team: Vec<String> =
        view.services_of_team("PTEAM1").unwrap().iter().map(|service| service.name.clone()).collect();
    assert_eq!(team, vec!["Ledger", "Payments API"]);
    assert!(view.services_of_team("PTEAM2").unwrap().is_empty(), "a team without services");
}

async fn unmapped_services_become_resources_only_behind_the_flag(store: Store) {
    catalog(
        &store,
        vec![
            component("payments", ("pagerduty.com/integration-key", "key-pay")),
            component("ledger", ("pagerduty.com/service-id", "PLED001")),
            group("team-search", "PTEAM9"),
        ],
    )
    .await;
    let mut account = account();
    account.services[2] = with_team(account.services[2].clone(), "PTEAM9", "Search");
    let fake = FakePagerDuty::start(account).await;
    let off = engine(&store, config(&fake));
    let runs = off.run_once().await.unwrap();
    assert_eq!(runs[0].summary.added, 0, "{runs:?}");

    let on = engine(
        &store,
        PagerDutyProviderConfig { ingest_unmapped_services: true, unmapped_owner: "sre".into(), ..config(&fake) },
    );
    let runs = on.run_once().await.unwrap();
    assert_eq!(runs[0].summary.added, 3, "search, mail and maps: {runs:?}");
    assert!(body(&store, "resource:default/pagerduty-ppay001").await.is_none(), "mapped by integration key");
    assert!(body(&store, "resource:default/pagerduty-pled001").await.is_none(), "mapped by service id");
    let search = body(&store, "resource:default/pagerduty-psrc001").await.unwrap();
    assert_eq!(search["spec"], json!({"type": "pagerduty-service", "owner": "group:default/team-search"}));
    assert_eq!(search["metadata"]["annotations"]["pagerduty.com/service-id"], "PSRC001");
    assert_eq!(search["metadata"]["title"], "Search");
    assert_eq!(search["metadata"]["links"][0]["url"], "https://acme.pagerduty.com/service-directory/PSRC001");
    let mail = body(&store, "resource:default/pagerduty-pmail01").await.unwrap();
    assert_eq!(mail["spec"]["owner"], "group:default/sre", "no mapped team: the configured owner");

    // Its own Resources do not count as mapping their services.
    let runs = on.run_once().await.unwrap();
    assert_eq!((runs[0].summary.unchanged, runs[0].summary.removed), (3, 0), "{runs:?}");

    // A service that cannot be a Resource keeps its last good one and says why.
    fake.update(|account| {
        account.services[3]["name"] = json!("Mail v2");
        account.services[3]["html_url"] = json!("not a URL");
    });
    let runs = on.run_once().await.unwrap();
    assert_eq!((runs[0].summary.removed, runs[0].summary.invalid, runs[0].n_location_errors), (0, 1, 1), "{runs:?}");
    let mail = body(&store, "resource:default/pagerduty-pmail01").await.unwrap();
    assert_eq!(mail["metadata"]["title"], "Mail", "the last good version");
    let health = on.health().remove(0);
    assert!(health.last_error.is_none(), "the account was read in full: {health:?}");
}

async fn a_refreshed_service_replaces_its_directory_entry_and_forgets_its_caches(store: Store) {
    let mut account = account();
    account.on_calls = vec![on_call("PPOL002", 1, ("PADA", "Ada", "ada@acme.example"), None, None)];
    let fake = FakePagerDuty::start(account).await;
    let engine = engine(&store, config(&fake));
    engine.run_once().await.unwrap();
    let view = view(&engine);
    assert_eq!(view.on_call("PLED001").await.unwrap()[0].user_name, "Ada");

    fake.update(|account| {
        account.services[1]["name"] = json!("General Ledger");
        account.on_calls = vec![on_call("PPOL002", 1, ("PGRACE", "Grace", "grace@acme.example"), None, None)];
    });
    assert_eq!(view.on_call("PLED001").await.unwrap()[0].user_name, "Ada", "cached for a minute");
    assert!(view.refresh_service("PLED001").await.is_empty(), "no Resources to re-run without the flag");
    assert_eq!(service_name(&view, "PLED001").as_deref(), Some("General Ledger"));
    assert_eq!(view.on_call("PLED001").await.unwrap()[0].user_name, "Grace", "the cache was forgotten");
    assert_eq!(fake.requests_to("/services/PLED001").await.len(), 1);

    fake.update(|account| account.services.retain(|service| service["id"] != "PMAP001"));
    view.refresh_service("PMAP001").await;
    assert_eq!(service_name(&view, "PMAP001"), None, "PagerDuty no longer has it");
}

/// With several replicas on PostgreSQL only the leader applies snapshots,
/// but every replica answers `pagerDuty`: one that does not lead still
/// reads the directory on its ticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_does_not_lead_still_reads_the_directory() {
    let Some(database) = TestDatabase::postgres().await else { return };
    let fake = FakePagerDuty::start(account()).await;
    // Another replica holds the lead for the whole test.
    let mut leader = database.store.ingestion_leadership();
    assert!(leader.try_lead().await.unwrap());
    let follower_store = database.store.open_again().await;
    let follower = engine(&follower_store, config(&fake));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(follower.clone().run(
        Duration::from_millis(200),
        false,
        follower_store.ingestion_leadership(),
        stopped,
    ));
    let view = view(&follower);
    for attempt in 0.. {
        if view.service_for(&annotations(&[("pagerduty.com/service-id", "PPAY001")])).is_ok() {
            break;
        }
        assert!(attempt < 100, "the follower never read the directory");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(service_name(&view, "PLED001").as_deref(), Some("Ledger"));
    assert!(!follower.is_leading());
    assert_eq!(follower.health()[0].last_run_at, None, "the follower applied no run");
    stop.send(true).unwrap();
    running.await.unwrap();
}
