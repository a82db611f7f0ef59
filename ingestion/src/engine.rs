//! The engine: builds providers from their configs, runs them on a schedule,
//! and applies each snapshot to the store.

use std::time::Duration;

use catalog_store::{ApplySummary, Store, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::file::{FileProvider, FileProviderConfig};

/// The providers there are. Closed: each variant builds a ready provider.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProviderConfig {
    File(FileProviderConfig),
}

#[derive(Clone, Debug)]
enum Provider {
    File(FileProvider),
}

/// The outcome of one provider run.
#[derive(Clone, Debug)]
pub struct ProviderRun {
    pub provider: String,
    pub summary: ApplySummary,
    pub n_location_errors: usize,
}

/// Runs providers and applies their snapshots.
#[derive(Clone, Debug)]
pub struct Engine {
    store: Store,
    providers: Vec<Provider>,
}

impl Engine {
    pub fn new(store: Store, configs: &[ProviderConfig]) -> Self {
        // Keys follow the configuration order: `file`, then `file-2`, `file-3`...
        let mut n_file = 0;
        let providers = configs
            .iter()
            .map(|config| match config {
                ProviderConfig::File(config) => {
                    n_file += 1;
                    let key = if n_file == 1 { "file".to_owned() } else { format!("file-{n_file}") };
                    Provider::File(FileProvider::new(key, config))
                }
            })
            .collect();
        Self { store, providers }
    }

    /// Runs every provider once.
    pub async fn run_once(&self) -> Result<Vec<ProviderRun>, StoreError> {
        let mut runs = Vec::with_capacity(self.providers.len());
        for provider in &self.providers {
            let snapshot = match provider {
                Provider::File(file) => {
                    let file = file.clone();
                    match tokio::task::spawn_blocking(move || file.read()).await {
                        Ok(snapshot) => snapshot,
                        Err(error) => {
                            tracing::error!(provider = "file", error = %error, "provider run failed");
                            continue;
                        }
                    }
                }
            };
            let n_location_errors = snapshot.locations.iter().filter(|status| status.error.is_some()).count();
            let summary = self.store.apply_snapshot(&snapshot).await?;
            runs.push(ProviderRun { provider: snapshot.provider, summary, n_location_errors });
        }
        Ok(runs)
    }

    /// Runs every provider now and then every `interval` until `shutdown` turns
    /// true. A failed run is logged and retried at the next tick; it never
    /// removes anything.
    pub async fn run(self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(error) = self.run_once().await {
                        tracing::error!(error = %error, "ingestion run failed");
                    }
                }
                _ = shutdown.changed() => break,
            }
            if *shutdown.borrow() {
                break;
            }
        }
    }
}
