//! End-to-end tests: the real server on a random port, over a fresh SQLite file
//! or PostgreSQL database per test, with the example catalog ingested.

mod abuse;
mod all_sources;
mod graph;
mod helpers;
mod jwt;
mod kubernetes;
mod leadership;
mod limits;
mod metrics;
mod mutations;
mod pagerduty;
mod queries;
mod security;
mod stream;
mod webhooks;
