//! The Kubernetes provider against a fake API server that speaks list and
//! watch (`catalog_ingestion::testing::kubernetes`): projection and linking, status
//! churn that writes nothing, deltas after a debounce, 410 Gone and
//! re-listing, and a failing cluster that removes nothing. Every body runs
//! on SQLite and on PostgreSQL.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use catalog_domain::EntityRef;
use catalog_ingestion::testing::kubernetes::{FakeKubernetes, cron_job, deployment};
use catalog_ingestion::{
    Engine, KubernetesClusterConfig, KubernetesProviderConfig, ProviderConfig, RetryPolicy, WorkloadKind,
};
use catalog_store::{Store, backend_tests, testing::one_location_snapshot};
use serde_json::json;

fn config(fake: &FakeKubernetes) -> KubernetesProviderConfig {
    KubernetesProviderConfig {
        clusters: vec![KubernetesClusterConfig { name: "prod".into(), url: fake.url().into(), ..Default::default() }],
        kinds: vec![WorkloadKind::Deployment, WorkloadKind::CronJob],
        default_owner: "group:default/platform".into(),
        debounce_ms: 50,
        initial_list_timeout_seconds: 10,
        ..Default::default()
    }
}

fn engine(store: &Store, config: KubernetesProviderConfig) -> Engine {
    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_wait: Duration::from_secs(5),
    };
    Engine::build_with(store.snapshot_writer(), store.catalog(), &[ProviderConfig::Kubernetes(config)], policy).unwrap()
}

async fn entity(store: &Store, text: &str) -> Option<catalog_store::StoredEntity> {
    store.catalog().entity_by_ref(&EntityRef::parse(text).unwrap()).await.unwrap()
}

/// Waits up to 10 s for `check` to hold.
async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The shop: `checkout` (labelled for a catalog entity to claim), `cart`
/// (unlabelled), a `report` CronJob, and a DaemonSet-like system workload
/// in kube-system that is ignored.
fn seed(fake: &FakeKubernetes) {
    fake.apply(deployment("shop", "checkout", json!({"backstage.io/kubernetes-id": "checkout"}), 2));
    fake.apply(deployment("shop", "cart", json!({"app": "cart"}), 3));
    fake.apply(deployment("kube-system", "coredns", json!({"k8s-app": "kube-dns"}), 2));
    fake.apply(cron_job("batch", "report", json!({"app": "report"})));
}

/// The annotations of the entity made from the unlabelled workload `name`
/// in namespace shop: they pin it by name, namespace and cluster.
fn pinned(name: &str) -> BTreeMap<String, String> {
    [
        ("backstage.io/kubernetes-id", name),
        ("backstage.io/kubernetes-namespace", "shop"),
        ("backstage.io/kubernetes-cluster", "prod"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into()
}

fn claiming(name: &str, annotations: serde_json::Value) -> catalog_domain::Entity {
    catalog_domain::validate(&json!({
        "apiVersion": "backstage.io/v1alpha1", "kind": "Component",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"type": "service", "lifecycle": "production", "owner": "team-shop"}
    }))
    .unwrap()
}

async fn unclaimed_workloads_become_entities_and_claimed_ones_attach(store: Store) {
    let fake = FakeKubernetes::start().await;
    seed(&fake);
    let file = one_location_snapshot(
        "file",
        vec![claiming("checkout-service", json!({"backstage.io/kubernetes-id": "checkout"}))],
    );
    store.snapshot_writer().apply_snapshot(&file).await.unwrap();
    let engine = engine(&store, config(&fake));

    let run = engine.run_provider("kubernetes").await.unwrap().unwrap();
    assert_eq!(run.incomplete, None);
    assert_eq!(run.summary.added, 2, "{run:?}");

    let cart = entity(&store, "component:default/cart_shop_prod").await.expect("cart became a component");
    assert_eq!(cart.provider, "kubernetes:prod:deployment");
    assert_eq!(cart.entity().unwrap().spec["owner"], "group:default/platform");
    let annotations = &cart.entity().unwrap().metadata.annotations;
    assert_eq!(annotations["backstage.io/kubernetes-id"], "cart");
    assert_eq!(annotations["backstage.io/kubernetes-namespace"], "shop");
    assert_eq!(annotations["backstage.io/kubernetes-cluster"], "prod");
    assert_eq!(
        annotations["backstage.io/managed-by-location"],
        "kubernetes:prod/apis/apps/v1/namespaces/shop/deployments/cart"
    );
    let report =
        entity(&store, "component:default/report_cronjob_batch_prod").await.expect("the CronJob became a component");
    assert_eq!(report.provider, "kubernetes:prod:cronjob");
    assert!(entity(&store, "component:default/checkout_shop_prod").await.is_none(), "a claimed workload is no entity");
    assert!(entity(&store, "component:default/coredns_kube-system_prod").await.is_none(), "kube-system is excluded");

    let view = &engine.kubernetes()[0];
    let claimed = entity(&store, "component:default/checkout-service").await.unwrap();
    let workloads = view.workloads_for(&claimed.entity().unwrap().metadata.annotations);
    assert_eq!(workloads.len(), 1);
    let checkout = &workloads[0];
    assert_eq!(
        (checkout.cluster.as_str(), checkout.namespace.as_str(), checkout.name.as_str()),
        ("prod", "shop", "checkout")
    );
    let replicas = checkout.replicas.unwrap();
    assert_eq!((replicas.desired, replicas.ready, replicas.available), (3, 2, 2));
    assert_eq!(checkout.images, ["registry.example.com/checkout:1.4.2"]);
    assert_eq!(
        checkout.conditions.iter().map(|c| c.condition_type.as_str()).collect::<Vec<_>>(),
        ["Available", "Progressing"]
    );
    assert_eq!(checkout.last_change.unwrap().to_rfc3339(), "2026-01-05T10:01:00+00:00");
    // The projected entity finds its own workload (pinned by namespace and cluster).
    assert_eq!(view.workloads_for(&cart.entity().unwrap().metadata.annotations).len(), 1);
    assert_eq!(
        view.workloads_for(&report.entity().unwrap().metadata.annotations)[0].schedule.as_deref(),
        Some("*/15 * * * *")
    );

    let health = engine.health();
    let scopes: Vec<(&str, bool)> =
        health[0].scopes.iter().map(|scope| (scope.name.as_str(), scope.complete)).collect();
    assert_eq!(scopes, [("kubernetes:prod:deployment", true), ("kubernetes:prod:cronjob", true)]);
    assert_eq!(health[0].last_error, None);

    // Nothing changed: nothing is written.
    let again = engine.run_provider("kubernetes").await.unwrap().unwrap();
    assert_eq!((again.summary.rows_written, again.summary.unchanged), (0, 2));
}

async fn watch_events_apply_after_a_debounce_and_status_churn_writes_nothing(store: Store) {
    let fake = FakeKubernetes::start().await;
    seed(&fake);
    let engine = engine(&store, config(&fake));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running =
        tokio::spawn(engine.clone().run(Duration::from_secs(3600), false, store.ingestion_leadership(), stopped));
    // Every scope is its own snapshot: wait for the last one too.
    eventually("the first run", || async {
        entity(&store, "component:default/cart_shop_prod").await.is_some()
            && entity(&store, "component:default/report_cronjob_batch_prod").await.is_some()
    })
    .await;
    let view = engine.kubernetes()[0].clone();
    let cart_annotations = entity(&store, "component:default/cart_shop_prod")
        .await
        .unwrap()
        .entity()
        .unwrap()
        .metadata
        .annotations
        .clone();
    let before = store.change_feed().latest_sequence().await.unwrap();

    // A rollout: only status moves. The view follows; the catalog does not change.
    fake.apply(deployment("shop", "cart", json!({"app": "cart"}), 1));
    eventually("the view to see the new status", || async {
        view.workloads_for(&cart_annotations).first().and_then(|w| w.replicas).is_some_and(|r| r.ready == 1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.change_feed().latest_sequence().await.unwrap(), before, "status churn wrote a change");
    // A rollout also bumps annotations (the revision): that wakes a run, which still writes nothing.
    let mut rolled = deployment("shop", "cart", json!({"app": "cart"}), 3);
    rolled["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!("2");
    fake.apply(rolled);
    let forced = engine.run_provider("kubernetes").await.unwrap().unwrap();
    assert_eq!(forced.summary.rows_written, 0, "{forced:?}");
    assert_eq!(store.change_feed().latest_sequence().await.unwrap(), before, "a rollout wrote a change");

    // A new workload and a deleted one arrive as deltas.
    fake.apply(deployment("shop", "search", json!({}), 1));
    assert!(fake.delete("batch/v1", "CronJob", "batch", "report"));
    eventually("the delta to apply", || async {
        entity(&store, "component:default/search_shop_prod").await.is_some()
            && entity(&store, "component:default/report_cronjob_batch_prod").await.is_none()
    })
    .await;

    // Labelling a workload for a catalog entity hands it over.
    store
        .snapshot_writer()
        .apply_snapshot(&one_location_snapshot(
            "file",
            vec![claiming("search-service", json!({"backstage.io/kubernetes-label-selector": "app=search"}))],
        ))
        .await
        .unwrap();
    fake.apply(deployment("shop", "search", json!({"app": "search"}), 1));
    eventually("the claimed workload's entity to go", || async {
        entity(&store, "component:default/search_shop_prod").await.is_none()
    })
    .await;

    stop.send(true).unwrap();
    running.await.unwrap();
}

async fn a_410_gone_lists_again_and_finds_what_the_watch_missed(store: Store) {
    let fake = FakeKubernetes::start().await;
    seed(&fake);
    let engine = engine(&store, config(&fake));
    engine.run_provider("kubernetes").await.unwrap().unwrap();
    let lists_before =
        fake.requests_matching("/apis/apps/v1/deployments?").iter().filter(|r| !r.contains("watch=")).count();

    fake.delete_silently("apps/v1", "Deployment", "shop", "cart");
    fake.apply_silently(deployment("shop", "payments", json!({}), 2));
    fake.expire_watches();
    let view = engine.kubernetes()[0].clone();
    eventually("the re-list", || async { !view.workloads_for(&pinned("payments")).is_empty() }).await;
    assert!(view.workloads_for(&pinned("cart")).is_empty(), "the re-list dropped what is gone");
    let gone = fake.requests_matching("/apis/apps/v1/deployments?");
    assert_eq!(gone.iter().filter(|r| !r.contains("watch=")).count(), lists_before + 1, "one list after 410: {gone:?}");

    let run = engine.run_provider("kubernetes").await.unwrap().unwrap();
    assert_eq!((run.summary.added, run.summary.removed), (1, 1), "{run:?}");
    assert!(entity(&store, "component:default/payments_shop_prod").await.is_some());
    assert!(entity(&store, "component:default/cart_shop_prod").await.is_none());
}

async fn a_broken_watch_stream_resumes_without_listing_again_and_loses_nothing(store: Store) {
    let fake = FakeKubernetes::start().await;
    seed(&fake);
    let engine = engine(&store, config(&fake));
    engine.run_provider("kubernetes").await.unwrap().unwrap();
    let view = engine.kubernetes()[0].clone();
    let deployments = || {
        let requests = fake.requests_matching("/apis/apps/v1/deployments?");
        let lists = requests.iter().filter(|r| !r.contains("watch=")).count();
        (lists, requests.len() - lists)
    };
    let (lists, watches) = deployments();

    // A line that is not JSON: the watcher reports it and reads on.
    fake.corrupt_watches("this is not JSON\n", false);
    eventually("the error to show", || async {
        view.scopes().iter().any(|scope| scope.name == "kubernetes:prod:deployment" && scope.last_error.is_some())
    })
    .await;
    fake.apply(deployment("shop", "search", json!({}), 1));
    eventually("the next event", || async { !view.workloads_for(&pinned("search")).is_empty() }).await;
    let deployment_scope = view.scopes().into_iter().find(|scope| scope.name == "kubernetes:prod:deployment").unwrap();
    assert_eq!(deployment_scope.last_error, None, "an event clears the error");

    // A body cut in the middle of an event: the watch starts again where it was.
    fake.corrupt_watches(r#"{"type":"MODIFIED","object":{"metadata":{"name":"#, true);
    fake.apply(deployment("shop", "payments", json!({}), 1));
    eventually("the event after the cut", || async { !view.workloads_for(&pinned("payments")).is_empty() }).await;
    let (lists_after, watches_after) = deployments();
    assert_eq!(lists_after, lists, "resumed from its resource version: no new list");
    assert!(watches_after > watches, "a new watch after the cut");

    let run = engine.run_provider("kubernetes").await.unwrap().unwrap();
    assert_eq!((run.summary.added, run.summary.removed, run.incomplete.as_deref()), (2, 0, None), "{run:?}");
    assert!(entity(&store, "component:default/cart_shop_prod").await.is_some(), "nothing was lost");
}

async fn a_cluster_that_fails_to_list_removes_nothing_and_recovers(store: Store) {
    let fake = FakeKubernetes::start().await;
    seed(&fake);
    {
        let engine = engine(&store, config(&fake));
        engine.run_provider("kubernetes").await.unwrap().unwrap();
    }
    assert!(entity(&store, "component:default/cart_shop_prod").await.is_some());

    // A restart while the API server fails: the first lists answer 500.
    fake.fail_lists(u32::MAX);
    let restarted = engine(&store, KubernetesProviderConfig { initial_list_timeout_seconds: 1, ..config(&fake) });
    let run = restarted.run_provider("kubernetes").await.unwrap().unwrap();
    let incomplete = run.incomplete.expect("a scope that never listed is incomplete");
    assert!(incomplete.contains("has not listed the workloads yet") && incomplete.contains("500"), "{incomplete}");
    assert_eq!(run.summary.removed, 0);
    assert!(entity(&store, "component:default/cart_shop_prod").await.is_some(), "nothing was removed");
    let health = &restarted.health()[0];
    assert!(health.last_error.as_deref().is_some_and(|error| error.contains("not listed")), "{health:?}");
    assert!(health.scopes.iter().all(|scope| !scope.complete));

    // The server recovers; the watchers' backoff brings them back.
    fake.fail_lists(0);
    let view = restarted.kubernetes()[0].clone();
    eventually("the lists to succeed", || async { view.scopes().iter().all(|scope| scope.listed) }).await;
    let run = restarted.run_provider("kubernetes").await.unwrap().unwrap();
    assert_eq!(run.incomplete, None);
    assert!(!run.summary.changed(), "the same workloads: no entity changes: {run:?}");
    let locations = store.catalog().locations().await.unwrap();
    assert!(locations.iter().all(|location| location.error.is_none()), "the scopes' errors are cleared: {locations:?}");
    assert_eq!(restarted.health()[0].last_error, None);
}

backend_tests!(
    a_broken_watch_stream_resumes_without_listing_again_and_loses_nothing,
    unclaimed_workloads_become_entities_and_claimed_ones_attach,
    watch_events_apply_after_a_debounce_and_status_churn_writes_nothing,
    a_410_gone_lists_again_and_finds_what_the_watch_missed,
    a_cluster_that_fails_to_list_removes_nothing_and_recovers,
);

#[tokio::test]
async fn one_cluster_in_two_providers_is_refused_at_build() {
    let database = catalog_store::testing::TestDatabase::sqlite().await;
    let fake = FakeKubernetes::start().await;
    let configs = [ProviderConfig::Kubernetes(config(&fake)), ProviderConfig::Kubernetes(config(&fake))];
    let error =
        Engine::build(database.store.snapshot_writer(), database.store.catalog(), &configs).unwrap_err().to_string();
    assert!(error.contains("cluster \"prod\" is configured twice"), "{error}");
    let mut other = config(&fake);
    other.clusters[0].name = "staging".into();
    assert!(
        Engine::build(
            database.store.snapshot_writer(),
            database.store.catalog(),
            &[ProviderConfig::Kubernetes(config(&fake)), ProviderConfig::Kubernetes(other)]
        )
        .is_ok()
    );
}
