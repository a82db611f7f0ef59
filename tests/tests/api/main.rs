//! End-to-end tests: the real server on a random port, over a fresh SQLite file
//! or PostgreSQL database per test, with the example catalog ingested; and
//! the deployment files (docker-compose.yml, deploy/kubernetes) checked
//! against the server they deploy.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

mod abuse;
mod admission;
mod all_sources;
mod deploy_compose;
mod deploy_kubernetes;
mod governance;
mod graph;
mod health;
mod helpers;
mod jwt;
mod kubernetes;
mod leadership;
mod limits;
mod metrics;
mod mutations;
mod pagerduty;
mod queries;
mod readiness;
mod replicas;
mod review;
mod scaffolder;
mod security;
mod stream;
mod telemetry;
mod webhooks;
