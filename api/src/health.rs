//! Catalog health: the store's counts, each scorecard rule's coverage (the
//! share of the entities it applies to that pass it) and the providers in
//! error, as `catalogHealth` shows them and as they are recorded for its
//! history. Recorded every `governance.health_record_seconds` by whichever
//! replica finds the last recording older than that.

use std::time::Duration;

use catalog_governance::Summary;
use catalog_ingestion::Engine;
use catalog_store::{Catalog, HealthCounts, ScoreStore, StoreError};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The figures of one look at the catalog.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthFigures {
    #[serde(flatten)]
    pub counts: HealthCounts,
    pub rule_coverage: Vec<RuleCoverage>,
    /// Providers whose last run failed or could not read everything.
    pub providers_in_error: Vec<String>,
}

/// How much of what a rule applies to passes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleCoverage {
    pub scorecard: String,
    pub rule: String,
    /// Entities with a result for it.
    pub applicable: u64,
    /// Of those, passing or exempt.
    pub passing: u64,
}

/// The figures now.
pub(crate) async fn figures(
    catalog: &Catalog,
    scores: &ScoreStore,
    engine: &Engine,
) -> Result<HealthFigures, StoreError> {
    let counts = catalog.health_counts().await?;
    let rule_coverage = rule_coverage(scores).await?;
    let providers_in_error =
        engine.health().into_iter().filter(|health| health.last_error.is_some()).map(|health| health.key).collect();
    Ok(HealthFigures { counts, rule_coverage, providers_in_error })
}

/// Every scorecard rule's coverage, from the stored summaries.
pub(crate) async fn rule_coverage(scores: &ScoreStore) -> Result<Vec<RuleCoverage>, StoreError> {
    let mut coverage = Vec::new();
    for scorecard in scores.scorecards().await? {
        // A summary this release cannot read (written by another) counts nothing.
        let summary: Summary = serde_json::from_value(scorecard.summary).unwrap_or_default();
        coverage.extend(summary.rules.into_iter().map(|rule| RuleCoverage {
            scorecard: scorecard.id.clone(),
            applicable: rule.pass + rule.fail + rule.unknown + rule.error,
            passing: rule.pass + rule.exempt,
            rule: rule.rule,
        }));
    }
    Ok(coverage)
}

/// Records the figures whenever the last recording (by any replica) is
/// older than `every`, until `shutdown` turns true.
pub(crate) async fn record_until(
    catalog: Catalog,
    scores: ScoreStore,
    engine: Engine,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let check = every.min(Duration::from_secs(60));
    loop {
        let record = async {
            let due = match scores.last_health_recording().await? {
                Some(last) => (Utc::now() - last).to_std().unwrap_or_default() >= every,
                None => true,
            };
            if due {
                let figures = figures(&catalog, &scores, &engine).await?;
                scores.record_health(Utc::now(), serde_json::to_value(figures).unwrap_or_default()).await?;
            }
            Ok::<(), StoreError>(())
        };
        if let Err(error) = record.await {
            tracing::warn!(%error, "recording the catalog's health failed; retrying");
        }
        tokio::select! {
            () = tokio::time::sleep(check) => {}
            _ = shutdown.changed() => return,
        }
    }
}
