//! Provider configurations: the closed [`ProviderConfig`] enum (the one
//! place a provider type is registered), and how configurations become ready
//! providers, checked up front, each under its own key. What a provider type
//! builds is its own file's (`BuildProvider` on its configuration).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use catalog_http::RetryPolicy;
use catalog_store::Catalog;
use serde::{Deserialize, Serialize};

use crate::file::FileProviderConfig;
use crate::github::GithubProviderConfig;
use crate::github_org::GithubOrgProviderConfig;
use crate::kubernetes::{KubernetesBuildError, KubernetesProviderConfig};
use crate::pagerduty::PagerDutyProviderConfig;
use crate::provider::{BuildContext, BuildError, BuildProvider, Provider};

/// The providers there are. Closed: each variant builds a ready provider.
/// A new provider type is its own file (its configuration implementing
/// [`BuildProvider`], its provider implementing [`Provider`]) plus a
/// variant here and its line in [`ProviderConfig::builder`].
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProviderConfig {
    File(FileProviderConfig),
    Github(GithubProviderConfig),
    #[serde(rename = "github-org")]
    GithubOrg(GithubOrgProviderConfig),
    Kubernetes(KubernetesProviderConfig),
    PagerDuty(PagerDutyProviderConfig),
}

impl ProviderConfig {
    fn builder(&self) -> &dyn BuildProvider {
        match self {
            ProviderConfig::File(config) => config,
            ProviderConfig::Github(config) => config,
            ProviderConfig::GithubOrg(config) => config,
            ProviderConfig::Kubernetes(config) => config,
            ProviderConfig::PagerDuty(config) => config,
        }
    }
}

/// Builds every provider in configuration order. Keys follow that order
/// per type: `file`, then `file-2`, `file-3`...; `github`, `github-2`...
pub(crate) fn build_providers(
    configs: &[ProviderConfig],
    policy: RetryPolicy,
    catalog: &Catalog,
) -> Result<Vec<Arc<dyn Provider>>, BuildError> {
    check_together(configs)?;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut providers = Vec::with_capacity(configs.len());
    for config in configs {
        let builder = config.builder();
        let kind = builder.kind();
        let n = counts.entry(kind).or_default();
        *n += 1;
        let key = if *n == 1 { kind.to_owned() } else { format!("{kind}-{n}") };
        providers.push(builder.build(BuildContext { key, policy, catalog: catalog.clone() })?);
    }
    Ok(providers)
}

/// What no configuration can check alone. Entity names carry the cluster's
/// name, so one cluster in two Kubernetes providers would make each claim
/// the other's workloads' names.
fn check_together(configs: &[ProviderConfig]) -> Result<(), BuildError> {
    let mut clusters = HashSet::new();
    for config in configs {
        if let ProviderConfig::Kubernetes(kubernetes) = config {
            for cluster in &kubernetes.clusters {
                if !clusters.insert(cluster.name.as_str()) {
                    return Err(BuildError::new(KubernetesBuildError::ClusterTwice(cluster.name.clone())));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_providers_kind_is_the_type_its_configuration_is_read_with() {
        let configs = [
            ProviderConfig::File(FileProviderConfig { paths: Vec::new() }),
            ProviderConfig::Github(GithubProviderConfig::default()),
            ProviderConfig::GithubOrg(GithubOrgProviderConfig::default()),
            ProviderConfig::Kubernetes(KubernetesProviderConfig::default()),
            ProviderConfig::PagerDuty(PagerDutyProviderConfig::default()),
        ];
        for config in configs {
            let written = serde_json::to_value(&config).unwrap();
            assert_eq!(written["type"], config.builder().kind(), "{written}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_beside_the_flattened_github_keys() {
        for kind in ["github", "github-org"] {
            let config = serde_json::json!({"type": kind, "organization": "acme", "token_variable": "T", "tokn": "x"});
            let error = serde_json::from_value::<ProviderConfig>(config).unwrap_err().to_string();
            assert!(error.contains("unknown field `tokn`"), "{kind}: {error}");
            let config =
                serde_json::json!({"type": kind, "organization": "acme", "app_id": 7, "api_base_url": "http://x"});
            let (ProviderConfig::Github(GithubProviderConfig { auth, .. })
            | ProviderConfig::GithubOrg(GithubOrgProviderConfig { auth, .. })) =
                serde_json::from_value::<ProviderConfig>(config).unwrap()
            else {
                panic!("{kind} is a GitHub provider");
            };
            assert_eq!(
                (auth.app_id, auth.api_base_url.as_str(), auth.token_variable.as_str()),
                (7, "http://x", "GITHUB_TOKEN")
            );
        }
    }
}
