//! Ingestion: providers read sources into snapshots, and the engine applies
//! them to the store on a schedule. A provider never writes to the store; only
//! the engine does, through [`catalog_store::Store::apply_snapshot`].

mod engine;
mod file;

pub use engine::{Engine, ProviderConfig, ProviderRun, RunError};
pub use file::{FileProvider, FileProviderConfig, MANAGED_BY_LOCATION, MANAGED_BY_ORIGIN_LOCATION};
