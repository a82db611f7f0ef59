//! HTTP clients for the services the catalog reads and writes. `pull.rs` is
//! the one place that decides retries, backoff, rate limits, ETag
//! revalidation and pagination ([`HttpSource`]); `github.rs` is GitHub's REST
//! API on it: its headers, a token or a GitHub App's installation tokens
//! (`github/app.rs`). The ingestion providers (GitHub, GitHub org,
//! PagerDuty) read through it, and the scaffolder's GitHub actions write
//! through it, so both share one behaviour on every fault.
//!
//! Depends on none of the catalog's crates: it knows HTTP and the services'
//! conventions, never entities or the store.

pub mod github;
mod pull;
pub mod trace;

pub use pull::{Answer, Fetched, HttpSource, RetryPolicy, SourceError, backoff};
