//! Ingestion: providers read sources into snapshots, and the engine applies
//! them to the store on a schedule. A provider never writes to the store; only
//! the engine does, through [`catalog_store::SnapshotWriter::apply_snapshot`].

mod documents;
mod engine;
mod file;
mod github;
mod github_app;
mod github_org;
mod kubernetes;
mod pagerduty;
mod pull;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;

pub use documents::{MANAGED_BY_LOCATION, MANAGED_BY_ORIGIN_LOCATION};
pub use engine::{
    BuildError, Engine, GithubRefresh, ProviderConfig, ProviderHealth, ProviderRun, RUN_TIMEOUT, RunError, ScopeHealth,
};
pub use file::{FileProvider, FileProviderConfig};
pub use github::{GithubBuildError, GithubFileUrl, GithubProviderConfig, RepositoryHint};
pub use github_org::GithubOrgProviderConfig;
pub use kubernetes::{
    KubernetesBuildError, KubernetesClusterConfig, KubernetesProviderConfig, KubernetesView, Replicas, ScopeStatus,
    Workload, WorkloadCondition, WorkloadKind,
};
pub use pagerduty::{
    INTEGRATION_KEY_ANNOTATION, Incident, LATEST_INCIDENTS, OnCall, OpenIncidents, PagerDutyBuildError, PagerDutyError,
    PagerDutyProviderConfig, PagerDutyReference, PagerDutyService, PagerDutyView, SERVICE_ID_ANNOTATION,
    TEAM_ID_ANNOTATION, UNMAPPED_SERVICE_TYPE,
};
pub use pull::{RetryPolicy, SourceError};
