//! What the engine needs of a provider, and nothing about any one of them:
//! the [`Provider`] trait a ready provider implements (its key and type, a
//! run's snapshots, and the optional parts: scopes, background watchers,
//! webhook refreshes, targeted repository reads, facts for the API), and the
//! types those speak. The engine holds `Arc<dyn Provider>` and never asks
//! which provider it holds; `config.rs` is where a configuration becomes one.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use catalog_http::{RetryPolicy, SourceError};
use catalog_store::{Catalog, Snapshot, StoreError};
use futures::future::BoxFuture;
use serde_json::Value;

/// A provider type's configuration: what turns it into a ready provider.
pub(crate) trait BuildProvider {
    /// The provider's type, as `type` names it in the configuration; keys
    /// are made from it.
    fn kind(&self) -> &'static str;

    /// Checks everything up front and returns the ready provider.
    fn build(&self, context: BuildContext) -> Result<Arc<dyn Provider>, BuildError>;
}

/// What a provider is built with besides its configuration.
pub(crate) struct BuildContext {
    /// Its key: the type for the first of a type, then `-2`, `-3`...
    pub(crate) key: String,
    /// How its HTTP reads retry (tests shorten it).
    pub(crate) policy: RetryPolicy,
    /// The catalog, which some providers read (never write) to tell what
    /// other providers' entities claim.
    pub(crate) catalog: Catalog,
}

/// Why the providers cannot be built from their configuration: the
/// provider type's own error (`GithubBuildError`, `KubernetesBuildError`...),
/// whose message names the type and the key at fault.
#[derive(Debug)]
pub struct BuildError(Box<dyn std::error::Error + Send + Sync>);

impl BuildError {
    pub(crate) fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(error))
    }
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// A ready provider. Only `key`, `kind` and `read` are required; the rest
/// default to "does not apply".
pub(crate) trait Provider: Send + Sync + std::fmt::Debug {
    /// What its entities are stored under (`file`, `github-2`); a snapshot
    /// removes the other entities of its key.
    fn key(&self) -> &str;

    /// Its type, as the configuration's `type` names it (`github-org`).
    fn kind(&self) -> &'static str;

    /// Reads the source: one snapshot per scope (most providers have one).
    /// A source that cannot be read in full gives an incomplete snapshot,
    /// not an error; an error aborts the run and nothing is applied.
    fn read(&self) -> BoxFuture<'_, Result<Vec<Snapshot>, ReadError>>;

    /// The parts of the source that are read and applied on their own, with
    /// their state (Kubernetes: one per cluster and kind). None: one part,
    /// named by the key, whose state is the last run's.
    fn scopes(&self) -> Option<Vec<ScopeHealth>> {
        None
    }

    /// Adds what the provider serves to the API beside the catalog (the
    /// Kubernetes workloads, a PagerDuty account's on-call), by type.
    fn contribute(self: Arc<Self>, _facts: &mut Facts) {}

    /// Starts what runs in the background (watchers); idempotent.
    fn start(&self) {}

    /// How long the changes it announces through [`Provider::changed`]
    /// settle before it runs; None: it announces none.
    fn debounce(&self) -> Option<Duration> {
        None
    }

    /// Resolves when the source changed in a way a run would see; only
    /// awaited when [`Provider::debounce`] is set.
    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }

    /// Reads what the API serves live in a replica that does not apply
    /// snapshots (the snapshot itself is dropped).
    fn refresh_live(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    /// The directories whose file changes should run it at once, each with
    /// whether to watch it recursively.
    fn watch_roots(&self) -> Vec<(PathBuf, bool)> {
        Vec::new()
    }

    /// What a GitHub webhook event (`X-GitHub-Event`, and its payload) asks
    /// of this provider; None when it changes nothing the provider reads.
    fn github_refresh(&self, _event: &str, _payload: &Value) -> Option<GithubRefresh> {
        None
    }

    /// Its reads of single GitHub repositories, when it reads repositories.
    fn repositories(&self) -> Option<&dyn RepositoryReader> {
        None
    }
}

/// A provider that reads GitHub repositories one by one: what webhooks and
/// the scaffolder ask of it beside its runs.
pub(crate) trait RepositoryReader: Send + Sync {
    /// Whether it reads this organisation's repositories (any case).
    fn reads_organization(&self, organization: &str) -> bool;

    /// Reads the named repositories alone into a partial snapshot covering
    /// only their locations.
    fn read_repositories<'a>(&'a self, hints: &'a [RepositoryHint]) -> BoxFuture<'a, Snapshot>;

    /// Copies the directory `directory` of `owner/name` at `branch` into
    /// `target`, within `(max_files, max_bytes)`; how many files it copied.
    fn download_directory<'a>(
        &'a self,
        full_name: &'a str,
        branch: &'a str,
        directory: &'a str,
        target: &'a Path,
        limits: (usize, usize),
    ) -> BoxFuture<'a, Result<usize, SourceError>>;
}

/// Why a provider's read was aborted (nothing is applied then).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The task reading off the async workers panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// The catalog could not be read (`what`: what the provider needed of it).
    #[error("cannot read the catalog's {what}: {source}")]
    Store { what: &'static str, source: StoreError },
}

/// One scope of a provider: its key in the store and whether it was read in full.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeHealth {
    pub name: String,
    /// Whether its last read was complete (for a watch: listed at least once).
    pub complete: bool,
    pub last_error: Option<String>,
}

/// What a GitHub webhook asks of one provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GithubRefresh {
    /// Read these repositories again alone (a discovery provider).
    Repositories { provider: String, repositories: Vec<RepositoryHint> },
    /// Run the whole provider (an org provider: teams and members).
    Provider(String),
}

impl GithubRefresh {
    pub fn provider(&self) -> &str {
        match self {
            GithubRefresh::Repositories { provider, .. } | GithubRefresh::Provider(provider) => provider,
        }
    }
}

/// A repository a webhook named, to read again alone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RepositoryHint {
    /// `owner/name`.
    pub full_name: String,
    /// Its page (`https://github.com/owner/name`): every location of the
    /// repository starts with it.
    pub html_url: String,
    /// Known to be gone under this name (renamed, or transferred to another
    /// owner): its entities are removed without a read.
    pub gone: bool,
}

/// What providers serve to the API beside the catalog, by type (live views
/// such as `KubernetesView`): the engine collects them once when it builds
/// the providers and hands each type to the API as a list. Typed rather than
/// named, so that this module knows no provider.
#[derive(Default)]
pub(crate) struct Facts {
    /// A `Vec<T>` per type `T`.
    by_type: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl Facts {
    pub(crate) fn add<T: Any + Send + Sync>(&mut self, fact: T) {
        let facts = self.by_type.entry(TypeId::of::<T>()).or_insert_with(|| Box::new(Vec::<T>::new()));
        if let Some(facts) = facts.downcast_mut::<Vec<T>>() {
            facts.push(fact);
        }
    }

    /// Every fact of type `T`, in the order the providers added them.
    pub(crate) fn take<T: Any + Send + Sync>(&mut self) -> Vec<T> {
        self.by_type
            .remove(&TypeId::of::<T>())
            .and_then(|facts| facts.downcast::<Vec<T>>().ok())
            .map(|facts| *facts)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_come_back_by_type_in_the_order_they_were_added() {
        let mut facts = Facts::default();
        facts.add("first");
        facts.add(7_u32);
        facts.add("second");
        assert_eq!(facts.take::<&str>(), ["first", "second"]);
        assert_eq!(facts.take::<u32>(), [7]);
        assert!(facts.take::<String>().is_empty());
    }
}
