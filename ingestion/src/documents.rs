//! Catalog documents into a snapshot: one location's text becomes its
//! entities, invalid documents and outcome, whichever provider read it.

use catalog_domain::{DocumentOutcome, Entity, parse_documents};
use catalog_store::{InvalidEntity, LocationStatus, Snapshot, SnapshotEntity};

/// The annotation naming the location an entity was read from.
pub const MANAGED_BY_LOCATION: &str = "backstage.io/managed-by-location";
/// The annotation naming the configured location that led to it.
pub const MANAGED_BY_ORIGIN_LOCATION: &str = "backstage.io/managed-by-origin-location";

/// Adds the documents of the location `key` (reached from `origin`) to
/// `snapshot` with the location's outcome, and returns its Location
/// entities for the caller to follow. One bad document never hides the
/// good ones; one whose entity cannot be told keeps all of the location's
/// entities.
pub(crate) fn add_documents(text: &str, key: &str, origin: &str, snapshot: &mut Snapshot) -> Vec<Entity> {
    let mut locations = Vec::new();
    let mut problems = Vec::new();
    let mut keeps_entities = false;
    let mut n_entities = 0;
    for document in parse_documents(text) {
        let position = format!("document {} (line {})", document.index + 1, document.line);
        match document.outcome {
            DocumentOutcome::Entity(entity) => {
                let entity = annotate(*entity, key, origin);
                if entity.kind.eq_ignore_ascii_case("Location") {
                    locations.push(entity.clone());
                }
                n_entities += 1;
                snapshot.entities.push(SnapshotEntity::new(entity, Some(key.to_owned())));
            }
            DocumentOutcome::Invalid { entity_ref, errors } => {
                let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
                problems.push(format!("{position}: {}", messages.join("; ")));
                match entity_ref {
                    Some(entity_ref) => snapshot.invalid.push(InvalidEntity {
                        entity_ref,
                        location: Some(key.to_owned()),
                        errors: messages,
                    }),
                    // Which entity it was is unknown, so nothing of this file may go.
                    None => keeps_entities = true,
                }
            }
            DocumentOutcome::Unparsable { message } => {
                problems.push(format!("{position}: {message}"));
                keeps_entities = true;
            }
        }
    }
    for problem in &problems {
        tracing::warn!(location = key, error = %problem, "invalid catalog document");
    }
    snapshot.locations.push(LocationStatus {
        target: key.to_owned(),
        error: (!problems.is_empty()).then(|| problems.join("\n")),
        n_entities,
        keeps_entities,
    });
    locations
}

fn annotate(mut entity: Entity, location: &str, origin: &str) -> Entity {
    entity.metadata.annotations.insert(MANAGED_BY_LOCATION.to_owned(), location.to_owned());
    entity.metadata.annotations.insert(MANAGED_BY_ORIGIN_LOCATION.to_owned(), origin.to_owned());
    entity
}
