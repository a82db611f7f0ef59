//! Filters evaluated in memory against one entity, with the same meaning as
//! the SQL the store builds from them: the typed columns and facet pairs are
//! computed by the functions that fill the live tables. Time travel matches
//! past versions with it; authorization matches every entity a request loads.

use catalog_domain::{Entity, EntityRef};

use crate::error::StoreError;
use crate::filter::{Filter, FilterField, Predicate, typed_values};
use crate::handles::Catalog;
use crate::projection::{TypedColumn, TypedColumns, facet_pairs, typed_columns};
use crate::record::StoredEntity;

/// A filter ready to match entities one at a time.
#[derive(Clone, Debug)]
pub struct EntityMatcher {
    filter: Filter,
}

impl Catalog {
    /// A matcher for `filter`, with owner closures (`OwnedByTree`,
    /// `OwnedByMember`) expanded over the group tree as it is now.
    pub async fn entity_matcher(&self, filter: &Filter) -> Result<EntityMatcher, StoreError> {
        let expanded = self.expand_filter(Some(filter)).await?.unwrap_or_else(|| filter.clone());
        Ok(EntityMatcher { filter: normalize(expanded) })
    }
}

impl EntityMatcher {
    /// Whether the stored entity matches; one whose body does not decode
    /// matches nothing, so a restricted reader never sees it.
    pub fn matches(&self, stored: &StoredEntity) -> bool {
        stored.entity().is_ok_and(|entity| self.matches_entity(&stored.entity_ref, entity))
    }

    pub fn matches_entity(&self, entity_ref: &EntityRef, entity: &Entity) -> bool {
        let candidate = Candidate { entity_ref, columns: typed_columns(entity), facets: facet_pairs(entity) };
        candidate.matches(&self.filter)
    }
}

/// The filter with typed values in their column form, so that each version
/// compares without parsing refs again.
fn normalize(filter: Filter) -> Filter {
    match filter {
        Filter::All(filters) => Filter::All(filters.into_iter().map(normalize).collect()),
        Filter::Any(filters) => Filter::Any(filters.into_iter().map(normalize).collect()),
        Filter::Not(filter) => Filter::Not(Box::new(normalize(*filter))),
        Filter::Field { field, predicate: Predicate::In(values) } if TypedColumn::of(&field).is_some() => {
            let default_kind = TypedColumn::of(&field).and_then(TypedColumn::default_kind);
            Filter::Field { predicate: Predicate::In(typed_values(&values, default_kind)), field }
        }
        field => field,
    }
}

/// What a filter reads of one entity.
struct Candidate<'a> {
    entity_ref: &'a EntityRef,
    columns: TypedColumns,
    facets: Vec<(String, String)>,
}

impl Candidate<'_> {
    fn matches(&self, filter: &Filter) -> bool {
        match filter {
            Filter::All(filters) => filters.iter().all(|filter| self.matches(filter)),
            Filter::Any(filters) => filters.iter().any(|filter| self.matches(filter)),
            Filter::Not(filter) => !self.matches(filter),
            Filter::Field { field, predicate } => self.field_matches(field, predicate),
        }
    }

    fn field_matches(&self, field: &FilterField, predicate: &Predicate) -> bool {
        let typed = match field {
            FilterField::Kind => Some(Some(self.entity_ref.kind())),
            FilterField::Namespace => Some(Some(self.entity_ref.namespace())),
            FilterField::Name => Some(Some(self.entity_ref.name())),
            FilterField::Owner | FilterField::OwnedByTree | FilterField::OwnedByMember => {
                Some(self.columns.owner_ref.as_deref())
            }
            FilterField::Lifecycle => Some(self.columns.lifecycle.as_deref()),
            FilterField::Type => Some(self.columns.spec_type.as_deref()),
            FilterField::System => Some(self.columns.system_ref.as_deref()),
            // Governance results are not an entity's fields: no facet row
            // holds them, so they match nothing here.
            FilterField::Tag | FilterField::Path(_) | FilterField::ScoreLevel(_) | FilterField::FailingRule(_) => None,
        };
        if let Some(value) = typed {
            return match predicate {
                Predicate::Exists(exists) => value.is_some() == *exists,
                Predicate::In(values) => value.is_some_and(|value| values.iter().any(|wanted| wanted == value)),
            };
        }
        let key = field.facet_key();
        let mut values = self.facets.iter().filter(|(facet, _)| *facet == key).map(|(_, value)| value);
        match predicate {
            Predicate::Exists(exists) => values.next().is_some() == *exists,
            Predicate::In(wanted) => values.any(|value| wanted.contains(value)),
        }
    }
}
