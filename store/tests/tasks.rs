//! Scaffolder tasks as stored: idempotent creation, exactly-once claims under
//! concurrent runners, events after a cursor, cancellation, retries and the
//! sweep of abandoned tasks. Each test body runs on SQLite and on PostgreSQL.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use catalog_store::{NewTask, Store, TaskEnd, TaskQuery, TaskStatus, backend_tests};
use chrono::{Duration, Utc};
use serde_json::json;

fn new_task(id: &str, created_by: &str, key: Option<&str>) -> NewTask {
    NewTask {
        id: id.into(),
        template_ref: catalog_domain::EntityRef::parse("template:default/rust-service").unwrap(),
        parameters: json!({"name": id}),
        dry_run: false,
        created_by: created_by.into(),
        idempotency_key: key.map(str::to_owned),
    }
}

fn end(status: TaskStatus, next_step: usize, error: Option<&str>) -> TaskEnd {
    TaskEnd {
        status,
        next_step,
        step_outputs: json!({"fetch": {"ok": true}}),
        output: None,
        error: error.map(str::to_owned),
    }
}

async fn the_same_idempotency_key_returns_the_first_task(store: Store) {
    let (first, created) = store.task_store().create_task(new_task("t1", "user:default/ada", Some("k"))).await.unwrap();
    assert!(created && first.status == TaskStatus::Open);
    let (again, created) = store.task_store().create_task(new_task("t2", "user:default/ada", Some("k"))).await.unwrap();
    assert_eq!((again.id.as_str(), created), ("t1", false));
    let (other, created) = store.task_store().create_task(new_task("t3", "user:default/bob", Some("k"))).await.unwrap();
    assert_eq!((other.id.as_str(), created), ("t3", true), "keys are per creator");
    // Concurrent creates with one key: one task, every caller gets it.
    let racing: Vec<_> = (0..6)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store.task_store().create_task(new_task(&format!("r{n}"), "user:default/cy", Some("race"))).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for race in racing {
        outcomes.push(race.await.unwrap().unwrap());
    }
    assert_eq!(outcomes.iter().filter(|(_, created)| *created).count(), 1);
    assert!(outcomes.iter().all(|(task, _)| task.id == outcomes[0].0.id), "one task for all");
    let (_, created) = store.task_store().create_task(new_task("t4", "user:default/ada", None)).await.unwrap();
    let (_, created_again) = store.task_store().create_task(new_task("t5", "user:default/ada", None)).await.unwrap();
    assert!(created && created_again, "no key, no deduplication");
}

async fn only_one_of_many_concurrent_runners_claims_a_task(store: Store) {
    store.task_store().create_task(new_task("t1", "user:default/ada", None)).await.unwrap();
    let claims: Vec<_> = (0..8)
        .map(|runner| {
            let store = store.clone();
            tokio::spawn(async move { store.task_store().claim_task("t1", &format!("runner-{runner}")).await.unwrap() })
        })
        .collect();
    let mut won = Vec::new();
    for claim in claims {
        won.push(claim.await.unwrap());
    }
    assert_eq!(won.iter().filter(|won| **won).count(), 1, "{won:?}");
    let task = store.task_store().task("t1").await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Processing);
    assert!(task.claimed_by.is_some() && task.heartbeat_at.is_some());
}

async fn events_are_read_after_a_cursor_in_order(store: Store) {
    store.task_store().create_task(new_task("t1", "user:default/ada", None)).await.unwrap();
    store.task_store().create_task(new_task("t2", "user:default/ada", None)).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(store.task_store().append_task_event("t1", json!({"type": "log", "n": n})).await.unwrap());
        store.task_store().append_task_event("t2", json!({"type": "log", "other": n})).await.unwrap();
    }
    let all = store.task_store().task_events("t1", 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|event| event.body["n"].as_i64().unwrap()).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    let rest = store.task_store().task_events("t1", ids[2], 100).await.unwrap();
    assert_eq!(rest.iter().map(|event| event.id).collect::<Vec<_>>(), ids[3..]);
    assert_eq!(store.task_store().task_events("t1", ids[0], 2).await.unwrap().len(), 2, "limited");
}

async fn cancelling_stops_an_open_task_at_once_and_flags_a_running_one(store: Store) {
    store.task_store().create_task(new_task("open", "user:default/ada", None)).await.unwrap();
    let cancelled = store.task_store().request_task_cancel("open").await.unwrap().unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert!(!store.task_store().claim_task("open", "runner").await.unwrap(), "a cancelled task is never claimed");

    store.task_store().create_task(new_task("running", "user:default/ada", None)).await.unwrap();
    assert!(store.task_store().claim_task("running", "runner").await.unwrap());
    assert_eq!(store.task_store().heartbeat_task("running", "runner").await.unwrap(), Some(false));
    assert_eq!(store.task_store().heartbeat_task("running", "another runner").await.unwrap(), None, "not its claim");
    let flagged = store.task_store().request_task_cancel("running").await.unwrap().unwrap();
    assert_eq!((flagged.status, flagged.cancel_requested), (TaskStatus::Processing, true));
    assert_eq!(
        store.task_store().heartbeat_task("running", "runner").await.unwrap(),
        Some(true),
        "learnt at its heartbeat"
    );
    assert!(store.task_store().request_task_cancel("missing").await.unwrap().is_none());
}

async fn a_failed_task_reopens_from_its_next_step_and_only_its_runner_finishes_it(store: Store) {
    store.task_store().create_task(new_task("t1", "user:default/ada", None)).await.unwrap();
    assert!(store.task_store().claim_task("t1", "runner-a").await.unwrap());
    assert!(!store.task_store().finish_task("t1", "runner-b", end(TaskStatus::Completed, 3, None)).await.unwrap());
    assert!(
        store
            .task_store()
            .finish_task("t1", "runner-a", end(TaskStatus::Failed, 1, Some("step publish failed")))
            .await
            .unwrap()
    );
    let failed = store.task_store().task("t1").await.unwrap().unwrap();
    assert_eq!(
        (failed.status, failed.next_step, failed.error.as_deref()),
        (TaskStatus::Failed, 1, Some("step publish failed"))
    );
    assert!(!store.task_store().reopen_task("missing").await.unwrap());
    assert!(store.task_store().reopen_task("t1").await.unwrap());
    let reopened = store.task_store().task("t1").await.unwrap().unwrap();
    assert_eq!((reopened.status, reopened.next_step, reopened.error), (TaskStatus::Open, 1, None));
    assert_eq!(reopened.step_outputs, json!({"fetch": {"ok": true}}), "earlier outputs are kept for the retry");
    assert!(!store.task_store().reopen_task("t1").await.unwrap(), "an open task is not reopened");
}

async fn tasks_whose_runner_stopped_are_failed_with_a_clear_error(store: Store) {
    store.task_store().create_task(new_task("stale", "user:default/ada", None)).await.unwrap();
    store.task_store().create_task(new_task("alive", "user:default/ada", None)).await.unwrap();
    assert!(store.task_store().claim_task("stale", "runner-a").await.unwrap());
    assert!(store.task_store().claim_task("alive", "runner-b").await.unwrap());
    assert!(store.task_store().fail_abandoned_tasks(Utc::now() - Duration::seconds(30)).await.unwrap().is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let cutoff = Utc::now();
    store.task_store().heartbeat_task("alive", "runner-b").await.unwrap();
    let failed = store.task_store().fail_abandoned_tasks(cutoff).await.unwrap();
    assert_eq!(failed, ["stale"]);
    let stale = store.task_store().task("stale").await.unwrap().unwrap();
    assert_eq!(stale.status, TaskStatus::Failed);
    assert!(stale.error.unwrap().contains("stopped before it finished"));
    assert!(!store.task_store().finish_task("stale", "runner-a", end(TaskStatus::Completed, 2, None)).await.unwrap());
}

async fn tasks_are_listed_newest_first_filtered_and_paged(store: Store) {
    for n in 0..5 {
        let creator = if n % 2 == 0 { "user:default/ada" } else { "user:default/bob" };
        store.task_store().create_task(new_task(&format!("t{n}"), creator, None)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let ids = |tasks: &[catalog_store::TaskRecord]| tasks.iter().map(|task| task.id.clone()).collect::<Vec<_>>();
    let first = store.task_store().tasks(&TaskQuery { limit: 2, ..Default::default() }).await.unwrap();
    assert_eq!(ids(&first), ["t4", "t3"]);
    let last = first.last().unwrap();
    let next = store
        .task_store()
        .tasks(&TaskQuery { limit: 2, before: Some((last.created_at, last.id.clone())), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(ids(&next), ["t2", "t1"]);
    let ada = TaskQuery { created_by: Some("user:default/ada".into()), limit: 10, ..Default::default() };
    assert_eq!(ids(&store.task_store().tasks(&ada).await.unwrap()), ["t4", "t2", "t0"]);
    store.task_store().claim_task("t2", "runner").await.unwrap();
    let processing = TaskQuery { status: Some(TaskStatus::Processing), limit: 10, ..Default::default() };
    assert_eq!(ids(&store.task_store().tasks(&processing).await.unwrap()), ["t2"]);
}

backend_tests!(
    the_same_idempotency_key_returns_the_first_task,
    only_one_of_many_concurrent_runners_claims_a_task,
    events_are_read_after_a_cursor_in_order,
    cancelling_stops_an_open_task_at_once_and_flags_a_running_one,
    a_failed_task_reopens_from_its_next_step_and_only_its_runner_finishes_it,
    tasks_whose_runner_stopped_are_failed_with_a_clear_error,
    tasks_are_listed_newest_first_filtered_and_paged,
);
