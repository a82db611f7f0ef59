//! The catalog's API: the GraphQL schema, the HTTP server with its request
//! firewall, configuration, and the application that ties them to the store
//! and the ingestion engine. The only crate that knows GraphQL and HTTP.

mod admission;
pub mod app;
pub mod auth;
pub mod config;
pub mod error_code;
pub mod facts;
pub mod graphql;
mod health;
mod http;
pub mod hub;
mod readiness;
pub mod scaffolder;
pub mod telemetry;
pub mod webhooks;
