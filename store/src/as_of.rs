//! The catalog as it was at a change-log sequence: pages of entities rebuilt
//! from the log, filtered and searched by the same rules as the live tables
//! (the typed columns and facet pairs are computed by the code that fills them).

use catalog_domain::{Entity, EntityRef};
use sea_orm::{DbBackend, EntityTrait, Statement};

use crate::connection::Store;
use crate::error::StoreError;
use crate::models::change_row;
use crate::query::{Filter, FilterField, Predicate, typed_values};
use crate::record::{Change, ChangeType};
use crate::snapshot::{TypedColumns, facet_pairs, typed_columns};

/// Rows read per statement while scanning the log in ref order: bounds the
/// memory of one time-travel page whatever the catalog's size.
const SCAN_CHUNK: u64 = 1_000;

/// A page of the catalog as it was once the change at `sequence` had been
/// applied, ordered by entity ref.
#[derive(Clone, Debug, Default)]
pub struct AsOfQuery {
    pub sequence: i64,
    pub filter: Option<Filter>,
    /// Free text, as in [`crate::ListQuery::search`].
    pub search: Option<String>,
    pub offset: u64,
    pub limit: u64,
}

/// The versions on one time-travel page, with how many match over all pages.
#[derive(Clone, Debug)]
pub struct AsOfPage {
    pub versions: Vec<Change>,
    pub total_count: u64,
}

impl Store {
    /// One page of the entities that existed at `query.sequence`, each as its
    /// latest version at that point. Owner closures (`OwnedByTree`,
    /// `OwnedByMember`) expand over the group tree as it is now. The scan reads
    /// the whole log in chunks to count every match, so its cost grows with the
    /// catalog, not with the page.
    pub async fn list_entities_as_of(&self, query: &AsOfQuery) -> Result<AsOfPage, StoreError> {
        let filter = self.expand_filter(query.filter.as_ref()).await?.map(normalize);
        let words: Vec<&str> = query.search.as_deref().unwrap_or_default().split_whitespace().collect();
        let words: Vec<String> = words.iter().map(|word| word.to_lowercase()).collect();
        let end = query.offset.saturating_add(query.limit);
        let mut versions = Vec::new();
        let mut total_count = 0u64;
        let mut after = String::new();
        loop {
            let rows = self.latest_versions_after(&after, query.sequence).await?;
            let n_rows = rows.len() as u64;
            if let Some(last) = rows.last() {
                after = last.entity_ref.clone();
            }
            for row in rows {
                let Some(change) = crate::changes::to_change(row) else { continue };
                if !version_matches(&change, filter.as_ref(), &words) {
                    continue;
                }
                if (query.offset..end).contains(&total_count) {
                    versions.push(change);
                }
                total_count += 1;
            }
            if n_rows < SCAN_CHUNK {
                break;
            }
        }
        Ok(AsOfPage { versions, total_count })
    }

    /// The next chunk of refs after `after` (in ref order), each with its last
    /// change at or before `sequence`, removals left out.
    async fn latest_versions_after(&self, after: &str, sequence: i64) -> Result<Vec<change_row::Model>, StoreError> {
        let backend = self.db.get_database_backend();
        let [p1, p2, p3, p4] = if backend == DbBackend::Postgres { ["$1", "$2", "$3", "$4"] } else { ["?"; 4] };
        let sql = format!(
            "SELECT c.* FROM change_log c WHERE c.entity_ref > {p1} AND c.seq <= {p2} \
             AND c.change_type <> 'removed' AND NOT EXISTS (SELECT 1 FROM change_log n \
             WHERE n.entity_ref = c.entity_ref AND n.seq > c.seq AND n.seq <= {p3}) \
             ORDER BY c.entity_ref LIMIT {p4}"
        );
        let values = [after.into(), sequence.into(), sequence.into(), (SCAN_CHUNK as i64).into()];
        Ok(change_row::Entity::find()
            .from_raw_sql(Statement::from_sql_and_values(backend, sql, values))
            .all(&self.db)
            .await?)
    }
}

/// The filter with typed values in their column form, so that each version
/// compares without parsing refs again.
fn normalize(filter: Filter) -> Filter {
    match filter {
        Filter::All(filters) => Filter::All(filters.into_iter().map(normalize).collect()),
        Filter::Any(filters) => Filter::Any(filters.into_iter().map(normalize).collect()),
        Filter::Not(filter) => Filter::Not(Box::new(normalize(*filter))),
        Filter::Field { field, predicate: Predicate::In(values) } if typed_field(&field).is_some() => {
            let default_kind = typed_field(&field).flatten();
            Filter::Field { predicate: Predicate::In(typed_values(&values, default_kind)), field }
        }
        field => field,
    }
}

/// `Some(default kind)` for the fields held in typed columns, `None` for the
/// fields read from the facet pairs.
fn typed_field(field: &FilterField) -> Option<Option<&'static str>> {
    match field {
        FilterField::Kind | FilterField::Namespace | FilterField::Name | FilterField::Lifecycle | FilterField::Type => {
            Some(None)
        }
        FilterField::Owner | FilterField::OwnedByTree | FilterField::OwnedByMember => Some(Some("Group")),
        FilterField::System => Some(Some("System")),
        FilterField::Tag | FilterField::Path(_) => None,
    }
}

fn version_matches(change: &Change, filter: Option<&Filter>, words: &[String]) -> bool {
    if change.change_type == ChangeType::Removed {
        return false;
    }
    let Some(body) = &change.entity else { return false };
    let Ok(entity) = serde_json::from_value::<Entity>(body.clone()) else { return false };
    let Ok(entity_ref) = EntityRef::parse(&change.entity_ref) else { return false };
    let columns = typed_columns(&entity);
    if !words.iter().all(|word| columns.search_text.contains(word.as_str())) {
        return false;
    }
    let Some(filter) = filter else { return true };
    let version = Version { entity_ref, facets: facet_pairs(&entity), columns };
    version.matches(filter)
}

/// What a filter reads of one version.
struct Version {
    entity_ref: EntityRef,
    columns: TypedColumns,
    facets: Vec<(String, String)>,
}

impl Version {
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
            FilterField::Tag | FilterField::Path(_) => None,
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
