//! The one error type of the store boundary.

/// Why a store call failed. Database errors keep their cause for the log; the
/// API shows clients a generic message for them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database failed: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("the database URL {0:?} is not supported: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("the name {0:?} is already taken")]
    NameTaken(String),
    /// A newer binary migrated the database: running older code against
    /// its schema could corrupt it.
    #[error(
        "the database was migrated by a newer version of the catalog: applied migration(s) {} unknown to this binary (whose newest is {newest_known}); upgrade the catalog binary",
        unknown.join(", ")
    )]
    SchemaNewer { unknown: Vec<String>, newest_known: String },
    #[error("a stored entity is corrupt ({entity_ref}): {message}")]
    Corrupt { entity_ref: String, message: String },
    /// A caller asked a relation target read without its body for it
    /// without filling it in first ([`crate::StoredEntity::fill_body`]).
    #[error("the body of {entity_ref} was not read with it")]
    BodyNotRead { entity_ref: String },
}
