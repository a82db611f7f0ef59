//! The change log as a feed: what updates changed, what removals removed,
//! history, time travel and commit order under concurrent writers. Each test
//! body runs on SQLite and on PostgreSQL.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use catalog_domain::{Entity, EntityRef};
use catalog_store::{
    AsOfQuery, AuditDecision, AuditEntry, ChangeType, Filter, FilterField, Predicate, Snapshot, Store, backend_tests,
};
use serde_json::json;

fn component(name: &str, owner: &str, tags: &[&str]) -> Entity {
    catalog_domain::validate(&json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "tags": tags},
        "spec": {"type": "service", "lifecycle": "production", "owner": owner},
    }))
    .unwrap()
}

fn snapshot(provider: &str, entities: Vec<Entity>) -> Snapshot {
    catalog_store::testing::one_location_snapshot(provider, entities)
}

const A: &str = "component:default/a";

fn a_ref() -> EntityRef {
    EntityRef::parse(A).unwrap()
}

async fn updates_name_their_changed_fields_and_removals_keep_the_last_version(store: Store) {
    store.snapshot_writer().apply_snapshot(&snapshot("file", vec![component("a", "team-a", &["java"])])).await.unwrap();
    store
        .snapshot_writer()
        .apply_snapshot(&snapshot("file", vec![component("a", "team-b", &["java", "grpc"])]))
        .await
        .unwrap();
    store.snapshot_writer().apply_snapshot(&snapshot("file", vec![])).await.unwrap();
    let changes = store.change_feed().changes_after(0, 10).await.unwrap();
    let types: Vec<ChangeType> = changes.iter().map(|change| change.change_type).collect();
    assert_eq!(types, vec![ChangeType::Added, ChangeType::Updated, ChangeType::Removed]);
    assert!(changes[0].changed_fields.is_empty());
    assert_eq!(changes[1].changed_fields, vec!["metadata.tags", "spec.owner"]);
    let removed = &changes[2];
    assert!(removed.entity.is_none());
    assert_eq!(removed.latest_version().unwrap()["spec"]["owner"], "team-b");
}

async fn history_and_time_travel_answer_from_the_log(store: Store) {
    store.snapshot_writer().apply_snapshot(&snapshot("file", vec![component("a", "team-a", &[])])).await.unwrap();
    store.snapshot_writer().apply_snapshot(&snapshot("file", vec![component("a", "team-b", &[])])).await.unwrap();
    store.snapshot_writer().apply_snapshot(&snapshot("file", vec![component("b", "team-b", &[])])).await.unwrap();
    let last = store.change_feed().latest_sequence().await.unwrap();
    assert!(last >= 4, "{last}");

    let history = store.change_feed().history(&a_ref(), None, 10).await.unwrap();
    let types: Vec<ChangeType> = history.iter().map(|change| change.change_type).collect();
    assert_eq!(types, vec![ChangeType::Removed, ChangeType::Updated, ChangeType::Added], "newest first");
    let older = store.change_feed().history(&a_ref(), Some(history[0].sequence), 10).await.unwrap();
    assert_eq!(older.len(), 2);

    let added = history[2].sequence;
    let updated = history[1].sequence;
    let as_added = store.change_feed().entity_as_of(&a_ref(), added).await.unwrap().unwrap();
    assert_eq!(as_added.entity.unwrap()["spec"]["owner"], "team-a");
    let as_updated = store.change_feed().entity_as_of(&a_ref(), updated).await.unwrap().unwrap();
    assert_eq!(as_updated.entity.unwrap()["spec"]["owner"], "team-b");
    assert!(store.change_feed().entity_as_of(&a_ref(), last).await.unwrap().is_none(), "removed by then");
    assert!(store.change_feed().entity_as_of(&a_ref(), added - 1).await.unwrap().is_none(), "not yet added");

    assert_eq!(store.change_feed().sequence_at(history[0].time).await.unwrap(), last);
    assert_eq!(store.change_feed().sequence_at(history[2].time - chrono::Duration::seconds(1)).await.unwrap(), 0);
}

/// Writers commit concurrently while a reader follows the feed by cursor, as a
/// subscriber does: the reader must end up having seen every row. Were
/// sequence numbers not in commit order, a row committed late with a lower
/// number than one already read would be skipped.
async fn a_reader_following_the_cursor_misses_nothing_under_concurrent_writers(store: Store) {
    // On PostgreSQL each writer has its own pool, as separate processes do:
    // only the database can order their commits. SQLite has one writing process.
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(if store.is_postgres() { store.open_again().await } else { store.clone() });
    }
    let writers: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(writer, store)| {
            tokio::spawn(async move {
                for round in 0..6 {
                    let entities = (0..3)
                        .map(|index| component(&format!("w{writer}-{index}"), &format!("team-{round}"), &[]))
                        .collect();
                    store
                        .snapshot_writer()
                        .apply_snapshot(&snapshot(&format!("writer-{writer}"), entities))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let store = store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            let mut cursor = 0;
            loop {
                // Read once more after the writers are done: a row numbered
                // below the cursor is skipped for good, whenever it commits.
                let last_pass = done.load(std::sync::atomic::Ordering::SeqCst);
                for change in store.change_feed().changes_after(cursor, 1_000).await.unwrap() {
                    cursor = change.sequence;
                    seen.insert(change.sequence);
                }
                if last_pass {
                    return seen;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    for writer in writers {
        writer.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let all: BTreeSet<i64> =
        store.change_feed().changes_after(0, 10_000).await.unwrap().iter().map(|change| change.sequence).collect();
    assert_eq!(all.len(), 4 * 6 * 3);
    assert_eq!(seen, all, "the reader skipped rows committed out of sequence order");
}

async fn commits_are_announced_only_when_something_changed(store: Store) {
    let mut commits = store.change_feed().commits();
    store.snapshot_writer().apply_snapshot(&snapshot("file", vec![component("a", "team-a", &[])])).await.unwrap();
    assert!(commits.has_changed().unwrap());
    commits.borrow_and_update();
    store.snapshot_writer().apply_snapshot(&snapshot("file", vec![component("a", "team-a", &[])])).await.unwrap();
    assert!(!commits.has_changed().unwrap(), "an unchanged re-sync announces nothing");
}

async fn purging_keeps_the_latest_version_of_what_exists_and_marks_the_gap(store: Store) {
    store.snapshot_writer().apply_snapshot(&snapshot("file", vec![component("a", "team-a", &[])])).await.unwrap();
    store.snapshot_writer().apply_snapshot(&snapshot("file", vec![component("a", "team-b", &[])])).await.unwrap();
    store
        .snapshot_writer()
        .apply_snapshot(&snapshot("file", vec![component("a", "team-b", &[]), component("b", "team-b", &[])]))
        .await
        .unwrap();
    store.snapshot_writer().apply_snapshot(&snapshot("file", vec![component("a", "team-b", &[])])).await.unwrap();
    let all = store.change_feed().changes_after(0, 10).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(store.change_feed().purged_through().await.unwrap(), 0);

    // Nothing is old enough yet.
    let last_week = chrono::Utc::now() - chrono::Duration::days(7);
    assert_eq!(store.maintenance().purge_changes(last_week).await.unwrap(), 0);
    assert_eq!(store.change_feed().purged_through().await.unwrap(), 0);

    let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
    assert_eq!(store.maintenance().purge_changes(tomorrow).await.unwrap(), 3);
    let kept = store.change_feed().changes_after(0, 10).await.unwrap();
    assert_eq!(kept.len(), 1, "a's latest version; b's history and removal go");
    assert_eq!(kept[0].entity_ref, a_ref());
    assert_eq!(kept[0].entity.as_ref().unwrap()["spec"]["owner"], "team-b");
    assert_eq!(store.change_feed().purged_through().await.unwrap(), all[3].sequence);
    // Purging again removes nothing and keeps the mark.
    assert_eq!(store.maintenance().purge_changes(tomorrow).await.unwrap(), 0);
    assert_eq!(store.change_feed().purged_through().await.unwrap(), all[3].sequence);
}

fn owner_is(owner: &str) -> Filter {
    Filter::Field { field: FilterField::Owner, predicate: Predicate::In(vec![owner.into()]) }
}

/// The names on a time-travel page and the total it reports.
async fn names_as_of(store: &Store, sequence: i64, filter: Option<Filter>, search: Option<&str>) -> (Vec<String>, u64) {
    let query = AsOfQuery { sequence, filter, search: search.map(str::to_owned), offset: 0, limit: 100 };
    let page = store.catalog().list_entities_as_of(&query).await.unwrap();
    let names = page.versions.iter().map(|change| change.entity.as_ref().unwrap()["metadata"]["name"].to_string());
    (names.map(|name| name.trim_matches('"').to_owned()).collect(), page.total_count)
}

async fn a_catalog_page_as_of_a_cursor_holds_the_versions_of_then(store: Store) {
    let first =
        vec![component("a", "team-a", &["java"]), component("b", "team-b", &[]), component("c", "team-a", &["grpc"])];
    store.snapshot_writer().apply_snapshot(&snapshot("file", first)).await.unwrap();
    let then = store.change_feed().latest_sequence().await.unwrap();
    let second =
        vec![component("a", "team-b", &["java"]), component("c", "team-a", &["grpc"]), component("d", "Team-A", &[])];
    store.snapshot_writer().apply_snapshot(&snapshot("file", second)).await.unwrap();
    let now = store.change_feed().latest_sequence().await.unwrap();

    assert_eq!(names_as_of(&store, then, None, None).await, (vec!["a".into(), "b".into(), "c".into()], 3));
    assert_eq!(names_as_of(&store, now, None, None).await, (vec!["a".into(), "c".into(), "d".into()], 3));
    assert_eq!(names_as_of(&store, 0, None, None).await, (vec![], 0), "before the first change");
    // Owners compare as refs, case-insensitively, on the version of then.
    assert_eq!(names_as_of(&store, then, Some(owner_is("team-a")), None).await.0, ["a", "c"]);
    assert_eq!(names_as_of(&store, now, Some(owner_is("group:default/team-a")), None).await.0, ["c", "d"]);
    let not_team_a = Filter::Not(Box::new(owner_is("team-a")));
    assert_eq!(names_as_of(&store, then, Some(not_team_a), None).await.0, ["b"]);
    let java = Filter::Field { field: FilterField::Tag, predicate: Predicate::In(vec!["java".into()]) };
    let typed_service = Filter::Field {
        field: FilterField::Path("spec.type".into()),
        predicate: Predicate::In(vec!["service".into()]),
    };
    let both = Filter::All(vec![java, typed_service]);
    assert_eq!(names_as_of(&store, then, Some(both), None).await.0, ["a"]);
    assert_eq!(names_as_of(&store, then, None, Some("GRPC")).await.0, ["c"], "search is case-insensitive");

    let query = AsOfQuery { sequence: now, offset: 1, limit: 1, ..Default::default() };
    let page = store.catalog().list_entities_as_of(&query).await.unwrap();
    assert_eq!((page.versions.len(), page.total_count), (1, 3));
    assert_eq!(page.versions[0].entity_ref.as_str(), "component:default/c");
}

/// Past the scan's chunk of 1,000 refs, pages and counts still see every ref once.
async fn a_time_travel_scan_crosses_chunks_without_losing_or_repeating_refs(store: Store) {
    let many: Vec<Entity> = (0..1_005).map(|n| component(&format!("svc-{n:04}"), "team-a", &[])).collect();
    store.snapshot_writer().apply_snapshot(&snapshot("file", many)).await.unwrap();
    let now = store.change_feed().latest_sequence().await.unwrap();
    let query = AsOfQuery { sequence: now, offset: 999, limit: 3, ..Default::default() };
    let page = store.catalog().list_entities_as_of(&query).await.unwrap();
    assert_eq!(page.total_count, 1_005);
    let refs: Vec<&str> = page.versions.iter().map(|change| change.entity_ref.as_str()).collect();
    assert_eq!(refs, ["component:default/svc-0999", "component:default/svc-1000", "component:default/svc-1001"]);
}

/// A version superseded only after the cutoff is still the state for
/// cursors between: the purge keeps it, so time travel there stays exact.
async fn purging_keeps_versions_superseded_after_the_cutoff(store: Store) {
    store.snapshot_writer().apply_snapshot(&snapshot("file", vec![component("a", "team-a", &[])])).await.unwrap();
    let first = store.change_feed().latest_sequence().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let cutoff = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    store.snapshot_writer().apply_snapshot(&snapshot("file", vec![component("a", "team-b", &[])])).await.unwrap();
    assert_eq!(
        store.maintenance().purge_changes(cutoff).await.unwrap(),
        0,
        "the first version is the state until the update"
    );
    let then = store.change_feed().entity_as_of(&a_ref(), first).await.unwrap().expect("still answerable");
    assert_eq!(then.entity.unwrap()["spec"]["owner"], "team-a");
}

backend_tests!(
    deleting_an_entity_logs_its_removal_and_the_audit_record_together,
    the_audit_purge_deletes_old_records_and_records_itself,
    purging_keeps_versions_superseded_after_the_cutoff,
    a_catalog_page_as_of_a_cursor_holds_the_versions_of_then,
    a_time_travel_scan_crosses_chunks_without_losing_or_repeating_refs,
    purging_keeps_the_latest_version_of_what_exists_and_marks_the_gap,
    updates_name_their_changed_fields_and_removals_keep_the_last_version,
    history_and_time_travel_answer_from_the_log,
    a_reader_following_the_cursor_misses_nothing_under_concurrent_writers,
    commits_are_announced_only_when_something_changed,
);

fn audit_entry(operation: &str, target: &str) -> AuditEntry {
    AuditEntry {
        principal: "token:janitor".into(),
        token_id: None,
        operation: operation.into(),
        targets: vec![target.into()],
        decision: AuditDecision::Allowed,
        result: "ok".into(),
        request_id: Some("request-1".into()),
    }
}

async fn deleting_an_entity_logs_its_removal_and_the_audit_record_together(store: Store) {
    store
        .snapshot_writer()
        .apply_snapshot(&snapshot("file", vec![component("a", "team-a", &[]), component("b", "team-a", &[])]))
        .await
        .unwrap();
    let commits = store.change_feed().commits();
    let before = *commits.borrow();
    let deleted =
        store.snapshot_writer().delete_entity(&a_ref(), &audit_entry("entity.delete", A)).await.unwrap().unwrap();
    assert_eq!((deleted.entity_ref.to_string().as_str(), deleted.provider.as_str()), (A, "file"));
    assert_eq!(deleted.body["spec"]["owner"], "team-a");
    assert_ne!(*commits.borrow(), before, "readers are woken");

    let a = catalog_domain::EntityRef::parse(A).unwrap();
    assert!(store.catalog().entity_by_ref(&a).await.unwrap().is_none());
    let last = store.change_feed().changes_after(0, 10).await.unwrap().pop().unwrap();
    assert_eq!((last.change_type, last.entity_ref.as_str(), last.provider.as_str()), (ChangeType::Removed, A, "file"));
    assert_eq!(last.latest_version().unwrap()["metadata"]["name"], "a");
    let edges =
        store.catalog().relations_from(&[EntityRef::parse("group:default/team-a").unwrap()], None).await.unwrap();
    let targets: Vec<&str> = edges.iter().map(|edge| edge.target_ref.as_str()).collect();
    assert_eq!(targets, vec!["component:default/b"], "the deleted entity's edges went with it");
    let audit = store.access_store().audit_records(None, None, 10).await.unwrap();
    assert_eq!(audit[0].entry, audit_entry("entity.delete", A));

    let n_changes = store.change_feed().latest_sequence().await.unwrap();
    assert!(store.snapshot_writer().delete_entity(&a_ref(), &audit_entry("entity.delete", A)).await.unwrap().is_none());
    assert_eq!(store.change_feed().latest_sequence().await.unwrap(), n_changes, "deleting nothing writes nothing");
    assert_eq!(store.access_store().audit_records(None, None, 10).await.unwrap().len(), audit.len());

    // Its provider still offers it: the next snapshot adds it back.
    let summary = store
        .snapshot_writer()
        .apply_snapshot(&snapshot("file", vec![component("a", "team-a", &[]), component("b", "team-a", &[])]))
        .await
        .unwrap();
    assert_eq!((summary.added, summary.unchanged), (1, 1));
}

async fn the_audit_purge_deletes_old_records_and_records_itself(store: Store) {
    store.access_store().record_audit(&audit_entry("token.create", "token:a")).await.unwrap();
    store.access_store().record_audit(&audit_entry("token.create", "token:b")).await.unwrap();
    let long_ago = chrono::Utc::now() - chrono::Duration::days(1);
    assert_eq!(store.maintenance().purge_audit(long_ago).await.unwrap(), 0, "nothing is that old");
    assert_eq!(
        store.access_store().audit_records(None, None, 10).await.unwrap().len(),
        2,
        "and no purge record for nothing"
    );

    let cutoff = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(store.maintenance().purge_audit(cutoff).await.unwrap(), 2);
    let records = store.access_store().audit_records(None, None, 10).await.unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].entry.operation, "audit.purge");
    assert_eq!(records[0].entry.principal, "catalog");
    assert!(records[0].entry.result.starts_with("2 records older than"), "{:?}", records[0].entry.result);
}
