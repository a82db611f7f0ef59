//! The governance crate's admission policies as the ingestion engine's
//! admission step: the policy files (`governance.policies`) read when the
//! service starts and again, before a snapshot, once `reload_seconds` have
//! passed since the last reading. A refused file keeps its previous version.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use catalog_governance::{Admission, Policy, read_policies};
use catalog_ingestion::Admitted;
use catalog_store::{Catalog, Snapshot, StoreError};
use futures::future::BoxFuture;

use crate::config::GovernanceConfig;

#[derive(Debug)]
pub(crate) struct PolicyAdmission {
    admission: Admission,
    sources: Vec<PathBuf>,
    reload_every: Duration,
    /// When the files were last read, and what each gave.
    read: parking_lot::Mutex<(Instant, BTreeMap<PathBuf, Policy>)>,
}

impl PolicyAdmission {
    pub(crate) fn new(catalog: Catalog, config: &GovernanceConfig) -> Self {
        let admission = Self {
            admission: Admission::new(catalog, config.max_refused_share),
            sources: config.policies.clone(),
            reload_every: Duration::from_secs(config.reload_seconds.max(1)),
            read: parking_lot::Mutex::new((Instant::now(), BTreeMap::new())),
        };
        admission.reload();
        admission
    }

    fn reload(&self) {
        let mut read = self.read.lock();
        let (loaded, problems) = read_policies(&self.sources, &read.1);
        for problem in &problems {
            tracing::warn!(
                path = %problem.path.display(),
                problem = %problem.message,
                "an admission policy file is refused; its previous version keeps applying"
            );
        }
        let ids: Vec<&str> = loaded.values().map(|policy| policy.id.as_str()).collect();
        tracing::debug!(policies = ?ids, "admission policies read");
        self.admission.set_policies(loaded.values().cloned().collect());
        *read = (Instant::now(), loaded);
    }
}

impl catalog_ingestion::Admission for PolicyAdmission {
    fn admit<'a>(&'a self, snapshot: &'a mut Snapshot) -> BoxFuture<'a, Result<Admitted, StoreError>> {
        Box::pin(async move {
            if self.read.lock().0.elapsed() >= self.reload_every {
                self.reload();
            }
            let report = self.admission.admit(snapshot, chrono::Utc::now()).await?;
            Ok(Admitted {
                refused: report.refused,
                warned: report.warned,
                held_back: report
                    .held_back
                    .iter()
                    .map(|held| format!("{}: {} of {} entities", held.policy, held.would_refuse, held.of))
                    .collect(),
                queued: report.queued,
            })
        })
    }
}
