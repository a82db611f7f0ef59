//! The catalog as it was at a change-log sequence: pages of entities rebuilt
//! from the log, filtered and searched by the same rules as the live tables
//! (the typed columns and facet pairs are computed by the code that fills them).

use catalog_domain::Entity;
use sea_orm::{DbBackend, EntityTrait, Statement};

use crate::error::StoreError;
use crate::filter::Filter;
use crate::handles::Catalog;
use crate::matcher::EntityMatcher;
use crate::models::change_row;
use crate::record::{Change, ChangeType};

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

impl Catalog {
    /// One page of the entities that existed at `query.sequence`, each as its
    /// latest version at that point. Owner closures (`OwnedByTree`,
    /// `OwnedByMember`) expand over the group tree as it is now. The scan reads
    /// the whole log in chunks to count every match, so its cost grows with the
    /// catalog, not with the page.
    pub async fn list_entities_as_of(&self, query: &AsOfQuery) -> Result<AsOfPage, StoreError> {
        let matcher = match &query.filter {
            Some(filter) => Some(self.entity_matcher(filter).await?),
            None => None,
        };
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
                let Some(change) = crate::change_log::to_change(row) else { continue };
                if !version_matches(&change, matcher.as_ref(), &words) {
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

fn version_matches(change: &Change, matcher: Option<&EntityMatcher>, words: &[String]) -> bool {
    if change.change_type == ChangeType::Removed {
        return false;
    }
    let Some(body) = &change.entity else { return false };
    let Ok(entity) = serde_json::from_value::<Entity>(body.clone()) else { return false };
    if !words.is_empty() {
        let search_text = crate::projection::typed_columns(&entity).search_text;
        if !words.iter().all(|word| search_text.contains(word.as_str())) {
            return false;
        }
    }
    matcher.is_none_or(|matcher| matcher.matches_entity(&change.entity_ref, &entity))
}
