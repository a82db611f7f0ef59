//! The Backstage entity model: the envelope, identifiers with their rules, entity
//! references, per-kind spec rules, validation and relation derivation.
//!
//! This crate is pure: no I/O, no async, no database and no GraphQL. Everything
//! that reaches the catalog passes through [`document::parse_documents`] and
//! [`validation::validate`], so the rules live in exactly one place.

pub mod derivation;
pub mod diff;
pub mod document;
pub mod entity;
pub mod entity_ref;
pub mod names;
pub mod relation;
pub mod rule;
pub mod spec;
#[cfg(test)]
mod testing;
pub mod typed_spec;
pub mod validation;

pub use derivation::derive_relations;
pub use diff::changed_paths;
pub use document::{DocumentOutcome, ParsedDocument, parse_documents, parse_entities};
pub use entity::{Entity, Link, Metadata};
pub use entity_ref::{EntityRef, RefError};
pub use relation::{Relation, RelationEdge, RelationType};
pub use rule::Rule;
pub use typed_spec::{SpecError, TypedSpec};
pub use validation::{ValidationError, validate};
