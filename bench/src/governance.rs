//! The governance benchmark: scorecards evaluated cold over a stored
//! catalog (every stored result of theirs removed first), then single
//! entity changes committed one at a time, each followed by the evaluator
//! until its results are stored: the time from the commit returning to the
//! stored results, and how many evaluations each change caused.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use catalog_governance::{Evaluator, read_sources};
use catalog_store::{Filter, FilterField, ListQuery, OrderField, Predicate, Snapshot, SnapshotEntity, Store};
use chrono::Utc;
use serde_json::json;

/// One measured change.
struct Measured {
    kind: String,
    millis: f64,
    evaluated: u64,
    written: u64,
}

/// Entities of `kind`, the first `limit` by name.
async fn entities_of(store: &Store, kind: &str, limit: u64) -> anyhow::Result<Vec<catalog_store::StoredEntity>> {
    let query = ListQuery {
        filter: Some(Filter::Field { field: FilterField::Kind, predicate: Predicate::In(vec![kind.to_owned()]) }),
        order: OrderField::Name,
        limit,
        ..Default::default()
    };
    Ok(store.catalog().list_entities(&query).await?.entities)
}

fn percentile(sorted: &[f64], share: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * share).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub async fn run(database_url: &str, scorecards: &Path, changes: usize, out: Option<&Path>) -> anyhow::Result<()> {
    let store = Store::connect(database_url).await.context("cannot open --database-url")?;
    store.migrate().await?;
    let (loaded, problems) = read_sources(&[scorecards.to_owned()], &Default::default());
    anyhow::ensure!(problems.is_empty(), "scorecard files refused: {problems:?}");
    let scores = store.score_store();
    for scorecard in loaded.values() {
        scores.remove_scorecard(&scorecard.scorecard.id).await?;
    }
    let n_rules: usize = loaded.values().map(|loaded| loaded.scorecard.rules().count()).sum();

    let mut evaluator = Evaluator::new(store.catalog(), store.change_feed(), scores.clone());
    let started = Instant::now();
    let cold = evaluator.apply(loaded.values().cloned().collect(), false, Utc::now()).await?;
    let cold_seconds = started.elapsed().as_secs_f64();
    println!(
        "cold: {} scorecards, {n_rules} rules, {} entity evaluations, {} results written in {cold_seconds:.2} s",
        loaded.len(),
        cold.evaluated,
        cold.written
    );

    // The same restart over unchanged files: every result read back, nothing written.
    let mut restarted = Evaluator::new(store.catalog(), store.change_feed(), scores.clone());
    let started = Instant::now();
    let warm = restarted.apply(loaded.values().cloned().collect(), false, Utc::now()).await?;
    let warm_seconds = started.elapsed().as_secs_f64();
    println!("restart: {} evaluations, {} written in {warm_seconds:.2} s", warm.evaluated, warm.written);

    // Components (their own fields) and groups (everything they own reads them).
    let mut targets = entities_of(&store, "component", changes as u64).await?;
    targets.extend(entities_of(&store, "group", (changes / 5).max(1) as u64).await?);
    let mut measured = Vec::new();
    for (round, stored) in targets.iter().enumerate() {
        let mut entity = stored.entity()?.clone();
        entity.metadata.description = Some(format!("governance bench change {round} at {}", Utc::now()));
        let snapshot = Snapshot {
            provider: stored.provider.clone(),
            entities: vec![SnapshotEntity::new(entity, stored.location.clone())],
            incomplete: Some("the governance benchmark changes one entity".into()),
            ..Default::default()
        };
        store.snapshot_writer().apply_snapshot(&snapshot).await?;
        let committed = Instant::now();
        let pass = evaluator.catch_up(Utc::now()).await?;
        measured.push(Measured {
            kind: stored.entity_ref.kind().to_owned(),
            millis: committed.elapsed().as_secs_f64() * 1_000.0,
            evaluated: pass.evaluated,
            written: pass.written,
        });
    }
    let mut report = serde_json::Map::new();
    for kind in ["component", "group"] {
        let of_kind: Vec<&Measured> = measured.iter().filter(|measured| measured.kind == kind).collect();
        let mut millis: Vec<f64> = of_kind.iter().map(|measured| measured.millis).collect();
        millis.sort_by(f64::total_cmp);
        let evaluated: Vec<u64> = of_kind.iter().map(|measured| measured.evaluated).collect();
        let written: u64 = of_kind.iter().map(|measured| measured.written).sum();
        let (p50, p99, max) = (percentile(&millis, 0.5), percentile(&millis, 0.99), percentile(&millis, 1.0));
        println!(
            "one {kind} changed ({} changes): commit to stored results p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; evaluations per change {}..{}, {written} results written",
            of_kind.len(),
            evaluated.iter().min().copied().unwrap_or_default(),
            evaluated.iter().max().copied().unwrap_or_default(),
        );
        report.insert(
            kind.to_owned(),
            json!({"changes": of_kind.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max,
                   "evaluations_min": evaluated.iter().min(), "evaluations_max": evaluated.iter().max(), "written": written}),
        );
    }
    let entities = store.catalog().list_entities(&ListQuery { limit: 1, ..Default::default() }).await?.total_count;
    let figures = json!({
        "entities": entities,
        "backend": if store.is_postgres() { "postgres" } else { "sqlite" },
        "scorecards": loaded.len(),
        "rules": n_rules,
        "cold": {"seconds": cold_seconds, "evaluated": cold.evaluated, "written": cold.written},
        "restart": {"seconds": warm_seconds, "evaluated": warm.evaluated, "written": warm.written},
        "incremental": report,
    });
    if let Some(out) = out {
        std::fs::write(out, serde_json::to_string_pretty(&figures)? + "\n")
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(())
}
