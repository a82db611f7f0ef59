//! Ingestion: providers read sources into snapshots, and the engine applies
//! them to the store on a schedule. A provider never writes to the store; only
//! the engine does, through [`catalog_store::SnapshotWriter::apply_snapshot`].
//!
//! `provider.rs` is the contract between the engine and the providers (the
//! `Provider` trait); `config.rs` registers the provider types and builds
//! them; each provider is one module (`file`, `github`, `github_org`,
//! `kubernetes`, `pagerduty`); `engine.rs` runs them without knowing which
//! is which. HTTP (retries, rate limits, GitHub's authentication) is
//! `catalog-http`'s.

mod admission;
mod config;
mod documents;
mod engine;
mod file;
mod github;
mod github_org;
mod kubernetes;
mod pagerduty;
mod provider;
#[cfg(feature = "testing")]
pub mod testing;

pub use admission::{Admission, Admitted};
pub use catalog_http::github::GithubAuthConfig;
pub use catalog_http::{RetryPolicy, SourceError};
pub use config::ProviderConfig;
pub use documents::{MANAGED_BY_LOCATION, MANAGED_BY_ORIGIN_LOCATION};
pub use engine::{DownloadError, Engine, ProviderHealth, ProviderRun, RUN_TIMEOUT, RunError};
pub use file::FileProviderConfig;
pub use github::{GithubBuildError, GithubFileUrl, GithubProviderConfig, GithubRepository, GithubView};
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
pub use provider::{BuildError, GithubRefresh, ReadError, RepositoryHint, ScopeHealth};
