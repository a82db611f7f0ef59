//! The evaluator as a server runs it: scorecard files read from the
//! configured paths (and read again when they change), the change log
//! followed as commits are announced, and time-driven results evaluated
//! again when their time comes. Only the governance leader evaluates (one
//! replica on a shared PostgreSQL); the others read the stored results.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use catalog_store::{Leadership, StoreError};
use chrono::Utc;
use tokio::sync::watch;

use crate::evaluator::{Evaluator, LoadedScorecard};
use crate::sources::{SourceProblem, read_files, source_texts};

/// How the server runs the evaluator.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Scorecard files, or folders whose `*.yaml` and `*.yml` files are read.
    pub sources: Vec<PathBuf>,
    /// How often the files are read again.
    pub reload_every: Duration,
    /// How often scorecards whose rules read `now` are evaluated again.
    pub reevaluate_every: Duration,
    /// Scorecards the server defines itself (staleness), applied beside
    /// the files; a file that uses the same id takes its place.
    pub built_in: Vec<LoadedScorecard>,
}

/// The scorecard files `sources` name, read and parsed. A file that fails
/// keeps the version `previous` held for its path, if any, and is reported;
/// two files with one id keep the first.
pub fn read_sources(
    sources: &[PathBuf],
    previous: &BTreeMap<PathBuf, LoadedScorecard>,
) -> (BTreeMap<PathBuf, LoadedScorecard>, Vec<SourceProblem>) {
    read_files(
        sources,
        previous,
        |text| LoadedScorecard::parse(text).map_err(|error| error.to_string()),
        |loaded| loaded.scorecard.id.as_str(),
        "scorecard",
    )
}

/// Runs the evaluator until `shutdown` turns true.
pub async fn run(
    mut evaluator: Evaluator,
    settings: Settings,
    mut commits: watch::Receiver<u64>,
    mut leadership: Leadership,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut files: BTreeMap<PathBuf, LoadedScorecard> = BTreeMap::new();
    let mut was_leading = false;
    let mut texts: Option<Vec<(PathBuf, Option<String>)>> = None;
    let mut last_timed = Utc::now();
    let mut last_reload = tokio::time::Instant::now();
    let mut next_periodic = tokio::time::Instant::now() + settings.reevaluate_every;
    loop {
        let leading = leadership.try_lead().await.unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot tell whether this process leads governance");
            false
        });
        if leading && !was_leading {
            // Another replica may have led meanwhile: what this one holds in
            // memory (results, cursor) may be behind the stored results.
            evaluator.forget();
            texts = None;
        }
        was_leading = leading;
        if leading {
            let step = async {
                let reload_due = texts.is_none() || last_reload.elapsed() >= settings.reload_every;
                let current = if reload_due {
                    last_reload = tokio::time::Instant::now();
                    Some(source_texts(&settings.sources))
                } else {
                    None
                };
                if let Some(current) = current
                    && texts.as_ref() != Some(&current)
                {
                    let (mut loaded, problems) = read_sources(&settings.sources, &files);
                    for built_in in &settings.built_in {
                        let id = &built_in.scorecard.id;
                        if loaded.values().all(|file| file.scorecard.id != *id) {
                            loaded.insert(PathBuf::from(format!("(built in) {id}")), built_in.clone());
                        }
                    }
                    for problem in &problems {
                        tracing::warn!(
                            path = %problem.path.display(),
                            problem = %problem.message,
                            "a scorecard file is refused; its previous version keeps applying"
                        );
                    }
                    let pass =
                        evaluator.apply(loaded.values().cloned().collect(), problems.is_empty(), Utc::now()).await?;
                    tracing::info!(scorecards = loaded.len(), evaluated = pass.evaluated, "scorecards applied");
                    files = loaded;
                    texts = Some(current);
                }
                evaluator.catch_up(Utc::now()).await?;
                let now = Utc::now();
                if tokio::time::Instant::now() >= next_periodic
                    || evaluator.next_boundary(last_timed).is_some_and(|boundary| boundary <= now)
                {
                    evaluator.reevaluate_timed(last_timed, now).await?;
                    last_timed = now;
                    next_periodic = tokio::time::Instant::now() + settings.reevaluate_every;
                }
                Ok::<(), StoreError>(())
            };
            if let Err(error) = step.await {
                tracing::warn!(%error, "evaluating governance rules failed; retrying");
                texts = None;
            }
        }
        let wait = if leading { settings.reload_every } else { Duration::from_secs(15) };
        let boundary = evaluator
            .next_boundary(Utc::now())
            .and_then(|boundary| (boundary - Utc::now()).to_std().ok())
            .unwrap_or(wait);
        let until = wait.min(boundary).min(next_periodic.saturating_duration_since(tokio::time::Instant::now()));
        tokio::select! {
            changed = commits.changed(), if leading => if changed.is_err() { return },
            () = tokio::time::sleep(until) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
