//! What the catalog keeps of a Kubernetes workload: the fields the
//! `kubernetes` GraphQL field shows and the projection reads, taken from
//! Deployments, StatefulSets, DaemonSets and CronJobs. Whatever none of these
//! fields holds (resourceVersion, managedFields, observedGeneration) cannot
//! make two versions of a workload differ.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Serialize};

/// The workload kinds the provider watches.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    CronJob,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 4] =
        [WorkloadKind::Deployment, WorkloadKind::StatefulSet, WorkloadKind::DaemonSet, WorkloadKind::CronJob];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::CronJob => "CronJob",
        }
    }

    /// The API group/version and resource of this kind, as in its REST path.
    pub fn api_path(self) -> (&'static str, &'static str) {
        match self {
            WorkloadKind::Deployment => ("apis/apps/v1", "deployments"),
            WorkloadKind::StatefulSet => ("apis/apps/v1", "statefulsets"),
            WorkloadKind::DaemonSet => ("apis/apps/v1", "daemonsets"),
            WorkloadKind::CronJob => ("apis/batch/v1", "cronjobs"),
        }
    }
}

/// How many pods a workload asks for and how many serve. CronJobs have none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replicas {
    pub desired: i32,
    pub ready: i32,
    pub available: i32,
}

/// One status condition (Available, Progressing, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadCondition {
    pub condition_type: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_transition: Option<DateTime<Utc>>,
}

/// A workload as the watchers hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub cluster: String,
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Its annotations but `kubectl.kubernetes.io/last-applied-configuration`
    /// and values over [`MAX_ANNOTATION_BYTES`]: whole manifests are no
    /// catalog data and would multiply the watchers' memory.
    pub annotations: BTreeMap<String, String>,
    pub replicas: Option<Replicas>,
    /// A CronJob's schedule.
    pub schedule: Option<String>,
    /// The pod template's container images (init containers first).
    pub images: Vec<String>,
    pub conditions: Vec<WorkloadCondition>,
    pub created_at: Option<DateTime<Utc>>,
    /// The latest time its status says something changed: a condition's
    /// transition or update, a CronJob's last schedule, else its creation.
    pub last_change: Option<DateTime<Utc>>,
}

/// The longest annotation value kept.
pub const MAX_ANNOTATION_BYTES: usize = 1024;

impl Workload {
    /// `cluster/Kind/namespace/name`: unique among every provider's workloads.
    pub fn key(&self) -> String {
        format!("{}/{}/{}/{}", self.cluster, self.kind.as_str(), self.namespace, self.name)
    }

    /// The object's path on its API server.
    pub fn api_path(&self) -> String {
        let (group, resource) = self.kind.api_path();
        format!("{group}/namespaces/{}/{resource}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
impl Workload {
    /// A Deployment with these labels and nothing else, for unit tests.
    pub(crate) fn for_tests(cluster: &str, namespace: &str, name: &str, labels: &[(&str, &str)]) -> Workload {
        Workload {
            cluster: cluster.into(),
            kind: WorkloadKind::Deployment,
            namespace: namespace.into(),
            name: name.into(),
            labels: labels.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect(),
            annotations: BTreeMap::new(),
            replicas: None,
            schedule: None,
            images: Vec::new(),
            conditions: Vec::new(),
            created_at: None,
            last_change: None,
        }
    }
}

/// A Kubernetes object the provider can watch.
pub trait WatchedKind:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: WorkloadKind;

    fn workload(&self, cluster: &str) -> Workload;
}

fn base(cluster: &str, kind: WorkloadKind, meta: &ObjectMeta) -> Workload {
    let annotations = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(key, value)| {
            key.as_str() != "kubectl.kubernetes.io/last-applied-configuration" && value.len() <= MAX_ANNOTATION_BYTES
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let created_at = meta.creation_timestamp.as_ref().and_then(time);
    Workload {
        cluster: cluster.to_owned(),
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        labels: meta.labels.clone().unwrap_or_default(),
        annotations,
        replicas: None,
        schedule: None,
        images: Vec::new(),
        conditions: Vec::new(),
        created_at,
        last_change: created_at,
    }
}

fn time(time: &Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.0.as_second(), u32::try_from(time.0.subsec_nanosecond()).unwrap_or_default())
}

fn images(template: Option<&PodTemplateSpec>) -> Vec<String> {
    let Some(spec) = template.and_then(|template| template.spec.as_ref()) else { return Vec::new() };
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter_map(|container| container.image.clone())
        .collect()
}

/// Adds conditions, moving `last_change` to the latest of their times.
fn with_conditions(
    mut workload: Workload,
    conditions: impl Iterator<Item = (WorkloadCondition, Option<DateTime<Utc>>)>,
) -> Workload {
    for (condition, updated) in conditions {
        for at in [condition.last_transition, updated].into_iter().flatten() {
            workload.last_change = Some(workload.last_change.map_or(at, |last| last.max(at)));
        }
        workload.conditions.push(condition);
    }
    workload
}

macro_rules! condition {
    ($condition:expr) => {
        WorkloadCondition {
            condition_type: $condition.type_.clone(),
            status: $condition.status.clone(),
            reason: $condition.reason.clone(),
            message: $condition.message.clone(),
            last_transition: $condition.last_transition_time.as_ref().and_then(time),
        }
    };
}

/// A workload with a replica count and a pod template (Deployment,
/// StatefulSet): both name their fields alike, in different types.
macro_rules! replicated {
    ($object:expr, $cluster:expr, $kind:expr, $updated:expr) => {{
        let mut workload = base($cluster, $kind, &$object.metadata);
        let status = $object.status.clone().unwrap_or_default();
        workload.replicas = Some(Replicas {
            desired: $object.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(1),
            ready: status.ready_replicas.unwrap_or_default(),
            available: status.available_replicas.unwrap_or_default(),
        });
        workload.images = images($object.spec.as_ref().map(|spec| &spec.template));
        with_conditions(workload, status.conditions.iter().flatten().map(|c| (condition!(c), $updated(c))))
    }};
}

impl WatchedKind for Deployment {
    const KIND: WorkloadKind = WorkloadKind::Deployment;

    fn workload(&self, cluster: &str) -> Workload {
        let updated = |c: &k8s_openapi::api::apps::v1::DeploymentCondition| c.last_update_time.as_ref().and_then(time);
        replicated!(self, cluster, Self::KIND, updated)
    }
}

impl WatchedKind for StatefulSet {
    const KIND: WorkloadKind = WorkloadKind::StatefulSet;

    fn workload(&self, cluster: &str) -> Workload {
        let updated = |_: &k8s_openapi::api::apps::v1::StatefulSetCondition| None;
        replicated!(self, cluster, Self::KIND, updated)
    }
}

impl WatchedKind for DaemonSet {
    const KIND: WorkloadKind = WorkloadKind::DaemonSet;

    fn workload(&self, cluster: &str) -> Workload {
        let mut workload = base(cluster, Self::KIND, &self.metadata);
        let status = self.status.clone().unwrap_or_default();
        workload.replicas = Some(Replicas {
            desired: status.desired_number_scheduled,
            ready: status.number_ready,
            available: status.number_available.unwrap_or_default(),
        });
        workload.images = images(self.spec.as_ref().map(|spec| &spec.template));
        with_conditions(workload, status.conditions.iter().flatten().map(|c| (condition!(c), None)))
    }
}

impl WatchedKind for CronJob {
    const KIND: WorkloadKind = WorkloadKind::CronJob;

    fn workload(&self, cluster: &str) -> Workload {
        let mut workload = base(cluster, Self::KIND, &self.metadata);
        workload.schedule = self.spec.as_ref().map(|spec| spec.schedule.clone());
        workload.images =
            images(self.spec.as_ref().and_then(|spec| spec.job_template.spec.as_ref()).map(|job| &job.template));
        if let Some(scheduled) =
            self.status.as_ref().and_then(|status| status.last_schedule_time.as_ref()).and_then(time)
        {
            workload.last_change = Some(workload.last_change.map_or(scheduled, |last| last.max(scheduled)));
        }
        workload
    }
}
