//! The `kubernetes` field of every entity: the workloads the Kubernetes
//! providers' watchers hold for it (linked by its
//! `backstage.io/kubernetes-*` annotations), per cluster. Served from
//! memory: no request reaches a cluster.

use std::collections::BTreeMap;

use async_graphql::{Context, Enum, Result, SimpleObject};
use catalog_ingestion::{Workload, WorkloadKind};
use catalog_store::StoredEntity;
use chrono::{DateTime, Utc};

use super::paging::page_size;

/// The workloads of one cluster.
#[derive(SimpleObject)]
pub struct KubernetesCluster {
    pub name: String,
    pub workloads: Vec<KubernetesWorkload>,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "KubernetesWorkloadKind")]
pub enum WorkloadKindValue {
    Deployment,
    StatefulSet,
    DaemonSet,
    CronJob,
}

impl From<WorkloadKind> for WorkloadKindValue {
    fn from(kind: WorkloadKind) -> Self {
        match kind {
            WorkloadKind::Deployment => WorkloadKindValue::Deployment,
            WorkloadKind::StatefulSet => WorkloadKindValue::StatefulSet,
            WorkloadKind::DaemonSet => WorkloadKindValue::DaemonSet,
            WorkloadKind::CronJob => WorkloadKindValue::CronJob,
        }
    }
}

/// A Deployment, StatefulSet, DaemonSet or CronJob as last seen.
#[derive(SimpleObject)]
pub struct KubernetesWorkload {
    pub kind: WorkloadKindValue,
    pub namespace: String,
    pub name: String,
    /// Pods asked for and serving; null for a CronJob.
    pub replicas: Option<KubernetesReplicas>,
    /// A CronJob's schedule.
    pub schedule: Option<String>,
    /// The pod template's images, init containers first.
    pub images: Vec<String>,
    pub conditions: Vec<KubernetesCondition>,
    pub created_at: Option<DateTime<Utc>>,
    /// The latest change its status records (a condition's transition, a
    /// CronJob's last run), else its creation.
    pub last_change: Option<DateTime<Utc>>,
}

#[derive(SimpleObject)]
pub struct KubernetesReplicas {
    pub desired: i32,
    pub ready: i32,
    pub available: i32,
}

#[derive(SimpleObject)]
pub struct KubernetesCondition {
    #[graphql(name = "type")]
    pub condition_type: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_transition: Option<DateTime<Utc>>,
}

impl From<Workload> for KubernetesWorkload {
    fn from(workload: Workload) -> Self {
        KubernetesWorkload {
            kind: workload.kind.into(),
            namespace: workload.namespace,
            name: workload.name,
            replicas: workload.replicas.map(|replicas| KubernetesReplicas {
                desired: replicas.desired,
                ready: replicas.ready,
                available: replicas.available,
            }),
            schedule: workload.schedule,
            images: workload.images,
            conditions: workload
                .conditions
                .into_iter()
                .map(|condition| KubernetesCondition {
                    condition_type: condition.condition_type,
                    status: condition.status,
                    reason: condition.reason,
                    message: condition.message,
                    last_transition: condition.last_transition,
                })
                .collect(),
            created_at: workload.created_at,
            last_change: workload.last_change,
        }
    }
}

/// The entity's workloads by cluster (clusters and workloads in name
/// order), the first `first` of them.
pub async fn clusters(ctx: &Context<'_>, stored: &StoredEntity, first: i32) -> Result<Vec<KubernetesCluster>> {
    let limit = page_size("first", Some(first))?.unwrap_or_default() as usize;
    let engine = crate::graphql::context::engine(ctx)?;
    let annotations = &crate::graphql::context::body(ctx, stored).await?.metadata.annotations;
    let mut workloads: Vec<Workload> =
        engine.kubernetes().iter().flat_map(|view| view.workloads_for(annotations)).collect();
    workloads.sort_by_key(Workload::key);
    workloads.dedup_by_key(|workload| workload.key());
    let mut by_cluster: BTreeMap<String, Vec<KubernetesWorkload>> = BTreeMap::new();
    for workload in workloads.into_iter().take(limit) {
        by_cluster.entry(workload.cluster.clone()).or_default().push(workload.into());
    }
    Ok(by_cluster.into_iter().map(|(name, workloads)| KubernetesCluster { name, workloads }).collect())
}
