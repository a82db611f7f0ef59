//! Reads: entities by ref or filter, pages with totalCount, facets, relation
//! edges in batches, locations, conflicts and the change log.

use std::collections::HashMap;
use std::sync::Arc;

use catalog_domain::{EntityRef, RelationType};
use sea_orm::sea_query::{Condition, Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, Order, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::Value;

use crate::body_cache::{BodyCache, KeepIn};
use crate::bulk::{self, REF_CHUNK};
use crate::error::StoreError;
use crate::filter::{Filter, FilterField, Predicate, typed_values};
use crate::handles::Catalog;
use crate::models::{conflict_row, entity_row, entity_score_row, facet_row, location_row, relation_row};
use crate::projection::TypedColumn;
use crate::record::{
    Body, ConflictRecord, Facet, LocationRecord, Related, StoredEntity, StoredRelation, TargetBodies, asked_ref,
    by_text, stored_ref, texts,
};

/// Sort keys for entity pages. Every order ends with the row id so that pages
/// are stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OrderField {
    #[default]
    Name,
    Kind,
    Namespace,
    Title,
    CreatedAt,
    UpdatedAt,
}

/// A page request over entities.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub filter: Option<Filter>,
    /// Free text: every word must appear in the name, title, description or tags.
    pub search: Option<String>,
    pub order: OrderField,
    pub descending: bool,
    pub offset: u64,
    pub limit: u64,
}

/// A page of entities with the total number that match.
#[derive(Clone, Debug)]
pub struct EntityPage {
    pub entities: Vec<StoredEntity>,
    pub total_count: u64,
}

/// One annotation of one entity (see [`Catalog::annotated`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Annotated {
    pub entity_ref: EntityRef,
    pub provider: String,
    pub key: String,
    pub value: String,
}

impl Catalog {
    /// One entity by its canonical ref.
    pub async fn entity_by_ref(&self, entity_ref: &EntityRef) -> Result<Option<StoredEntity>, StoreError> {
        let mut found = self.entities_by_refs(std::slice::from_ref(entity_ref)).await?;
        Ok(found.remove(entity_ref))
    }

    /// Entities by canonical ref, keyed by ref; missing refs are absent. One
    /// statement per 5,000 refs, and one more when a body the cache held has
    /// changed since.
    pub async fn entities_by_refs(&self, refs: &[EntityRef]) -> Result<HashMap<EntityRef, StoredEntity>, StoreError> {
        let texts: Vec<String> = refs.iter().map(ToString::to_string).collect();
        let backend = self.db.get_database_backend();
        let mut found = HashMap::with_capacity(texts.len());
        for chunk in texts.chunks(REF_CHUNK) {
            // One that changed since the cache took it comes back without a
            // body and is read below.
            let body = match self.held(chunk) {
                Held::None => body_text(),
                Held::All => Expr::cust("CAST(NULL AS TEXT)"),
                Held::Some(known) => {
                    Expr::case(bulk::one_of(backend, entity_row::Column::EntityRef, known), Expr::cust("NULL"))
                        .finally(body_text())
                        .into()
                }
            };
            let rows = read_columns(entity_row::Entity::find())
                .expr_as(body, "body")
                .filter(bulk::one_of(backend, entity_row::Column::EntityRef, chunk.iter().cloned()))
                .into_model::<EntityRead>()
                .all(&self.db)
                .await?;
            let mut stored = self.stored(rows)?;
            self.read_bodies(&mut stored).await?;
            for entity in stored {
                found.insert(entity.entity_ref.clone(), entity);
            }
        }
        Ok(found)
    }

    /// Which of `refs` the body cache holds some version of: a read by ref
    /// leaves those bodies out of its statement.
    fn held(&self, refs: &[String]) -> Held {
        let known = self.bodies.held(refs);
        if known.is_empty() {
            Held::None
        } else if known.len() == refs.len() {
            Held::All
        } else {
            Held::Some(known)
        }
    }

    /// Rows made entities, with the bodies the cache holds for their versions.
    fn stored(&self, rows: Vec<EntityRead>) -> Result<Vec<StoredEntity>, StoreError> {
        rows.into_iter().map(|row| row.into_stored(&self.bodies)).collect()
    }

    /// Reads the bodies `entities` lack (read without them, expecting the
    /// cache to hold them), in one statement.
    async fn read_bodies(&self, entities: &mut [StoredEntity]) -> Result<(), StoreError> {
        let ids: Vec<i64> = entities.iter().filter(|entity| !entity.has_body()).map(|entity| entity.id).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let rows: Vec<(i64, String, String)> = entity_row::Entity::find()
            .select_only()
            .column(entity_row::Column::Id)
            .column(entity_row::Column::Etag)
            .expr_as(body_text(), "body")
            .filter(entity_row::Column::Id.is_in(ids))
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut bodies: HashMap<i64, (String, String)> =
            rows.into_iter().map(|(id, etag, body)| (id, (etag, body))).collect();
        for entity in entities.iter_mut().filter(|entity| !entity.has_body()) {
            // An entity removed in between keeps no body: asking for it
            // is BodyNotRead, as for a relation target read without one.
            if let Some((etag, text)) = bodies.remove(&entity.id) {
                entity.body = Body::text(text, Some(KeepIn::new(&self.bodies, etag)));
            }
        }
        Ok(())
    }

    /// A filtered, searched, sorted page and the total count.
    pub async fn list_entities(&self, query: &ListQuery) -> Result<EntityPage, StoreError> {
        let filter = self.expand_filter(query.filter.as_ref()).await?;
        let condition = condition(self.db.get_database_backend(), filter.as_ref(), query.search.as_deref());
        let count = entity_row::Entity::find().filter(condition.clone()).count(&self.db);
        let direction = if query.descending { Order::Desc } else { Order::Asc };
        let column = match query.order {
            OrderField::Name => entity_row::Column::Name,
            OrderField::Kind => entity_row::Column::Kind,
            OrderField::Namespace => entity_row::Column::Namespace,
            OrderField::Title => entity_row::Column::Title,
            OrderField::CreatedAt => entity_row::Column::CreatedAt,
            OrderField::UpdatedAt => entity_row::Column::UpdatedAt,
        };
        let rows = read_columns(entity_row::Entity::find())
            .expr_as(body_text(), "body")
            .filter(condition)
            .order_by(column, direction.clone())
            .order_by(entity_row::Column::Id, direction)
            .offset(query.offset)
            .limit(query.limit)
            .into_model::<EntityRead>()
            .all(&self.db);
        // The count and the page on two pooled connections at once on
        // PostgreSQL, where the count of a broad filter scans and costs as
        // much as the page; SQLite's small pool gains nothing from it.
        let (total_count, rows) = if self.db.get_database_backend() == DbBackend::Postgres {
            futures::future::try_join(count, rows).await?
        } else {
            (count.await?, rows.await?)
        };
        let entities = self.stored(rows)?;
        Ok(EntityPage { entities, total_count })
    }

    /// Value counts of each field over the entities that match the filter,
    /// most frequent first, then by value (byte order). Answered from the
    /// in-memory facet index (`facet_index.rs`), current to the newest
    /// commit; a call needing more columns than the index holds is answered
    /// in SQL, with the same result.
    pub async fn facets(&self, fields: &[String], filter: Option<&Filter>) -> Result<Vec<Facet>, StoreError> {
        let filter = self.expand_filter(filter).await?;
        if fields.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(facets) = self.facet_index.facets(&self.db, fields, filter.as_ref()).await? {
            return Ok(facets);
        }
        self.facets_in_sql(fields, filter.as_ref()).await
    }

    /// [`Catalog::facets`] in SQL, for an expanded filter: a GROUP BY over the
    /// facet rows per field. On PostgreSQL the fields are counted
    /// concurrently, each on its own pooled connection; SQLite's small pool
    /// and single process gain nothing from it (measured: concurrent facets
    /// under load timed out waiting for a connection).
    pub(crate) async fn facets_in_sql(
        &self,
        fields: &[String],
        filter: Option<&Filter>,
    ) -> Result<Vec<Facet>, StoreError> {
        if self.db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            return futures::future::try_join_all(fields.iter().map(|field| self.facet(field, filter))).await;
        }
        let mut facets = Vec::with_capacity(fields.len());
        for field in fields {
            facets.push(self.facet(field, filter).await?);
        }
        Ok(facets)
    }

    async fn facet(&self, field: &str, filter: Option<&Filter>) -> Result<Facet, StoreError> {
        if let FilterField::ScoreLevel(scorecard) = FilterField::from_key(field) {
            return self.level_facet(field, &scorecard, filter).await;
        }
        let key = FilterField::from_key(field).facet_key();
        let mut query = facet_row::Entity::find()
            .select_only()
            .column(facet_row::Column::Value)
            .column_as(facet_row::Column::Id.count(), "n")
            .filter(facet_row::Column::Key.eq(key))
            .group_by(facet_row::Column::Value)
            .order_by_desc(facet_row::Column::Id.count());
        // Byte order on both databases (SQLite's BINARY), whatever collation
        // a PostgreSQL database was created with: the index sorts the same way.
        query = match self.db.get_database_backend() {
            DbBackend::Postgres => query.order_by_asc(Expr::cust(r#""entity_facets"."value" COLLATE "C""#)),
            _ => query.order_by_asc(facet_row::Column::Value),
        };
        if let Some(filter) = filter {
            query =
                query.filter(facet_row::Column::EntityId.in_subquery(self.matching(entity_row::Column::Id, filter)));
        }
        Ok(Facet { field: field.to_owned(), values: value_counts(&self.db, query).await? })
    }

    /// `column` of the entities `filter` matches, as a subquery.
    fn matching(&self, column: entity_row::Column, filter: &Filter) -> sea_orm::sea_query::SelectStatement {
        Query::select()
            .column(column)
            .from(entity_row::Entity)
            .cond_where(condition(self.db.get_database_backend(), Some(filter), None))
            .to_owned()
    }

    /// Entities per level under a scorecard (the empty string: below its
    /// first level), most first. A facet over the rules entities fail is not
    /// offered: `scorecardRollup` and a scorecard's summary count them.
    async fn level_facet(&self, field: &str, scorecard: &str, filter: Option<&Filter>) -> Result<Facet, StoreError> {
        let mut query = entity_score_row::Entity::find()
            .select_only()
            .column_as(Expr::cust("COALESCE(level, '')"), "value")
            .column_as(entity_score_row::Column::EntityRef.count(), "n")
            .filter(entity_score_row::Column::Scorecard.eq(scorecard))
            .group_by(Expr::cust("COALESCE(level, '')"))
            .order_by_desc(entity_score_row::Column::EntityRef.count())
            .order_by_asc(Expr::cust("COALESCE(level, '')"));
        if let Some(filter) = filter {
            query = query.filter(
                entity_score_row::Column::EntityRef.in_subquery(self.matching(entity_row::Column::EntityRef, filter)),
            );
        }
        Ok(Facet { field: field.to_owned(), values: value_counts(&self.db, query).await? })
    }

    /// The entities that edges of `types` leaving `sources` lead to, as
    /// (source, relation type, target), ordered by source, type and target
    /// ref; edges whose target is not in the catalog are left out. Edges and
    /// targets come in one statement (per 5,000 sources), so a relation field
    /// costs one round trip where [`Catalog::relations_from`] then
    /// [`Catalog::entities_by_refs`] cost two.
    pub async fn related_entities(
        &self,
        sources: &[EntityRef],
        types: &[RelationType],
        bodies: TargetBodies,
    ) -> Result<Related, StoreError> {
        Ok(self.read_related(sources, types, false, bodies).await?.1)
    }

    /// The entities of `refs` (by canonical ref, with their bodies) and, in
    /// the same statement, what [`Catalog::related_entities`] finds from
    /// them: a root field that knows which relation fields its selection
    /// asks for answers in one round trip instead of two.
    pub async fn entities_with_related(
        &self,
        refs: &[EntityRef],
        types: &[RelationType],
        bodies: TargetBodies,
    ) -> Result<(HashMap<EntityRef, StoredEntity>, Related), StoreError> {
        self.read_related(refs, types, true, bodies).await
    }

    async fn read_related(
        &self,
        sources: &[EntityRef],
        types: &[RelationType],
        with_sources: bool,
        bodies: TargetBodies,
    ) -> Result<(HashMap<EntityRef, StoredEntity>, Related), StoreError> {
        let target_body = match bodies {
            TargetBodies::Read => BODY,
            TargetBodies::Skip => NO_BODY,
        };
        let backend = self.db.get_database_backend();
        let mut found = HashMap::new();
        let mut related = Related::default();
        for chunk in sources.chunks(REF_CHUNK) {
            let asked = by_text(chunk);
            let chunk = texts(chunk);
            let mut values: Vec<sea_orm::Value> = Vec::new();
            let bind = |list: &[String], values: &mut Vec<sea_orm::Value>| -> String {
                // PostgreSQL takes a list of refs as one array parameter
                // (planning long IN lists is slow there); SQLite binds each.
                if backend == DbBackend::Postgres {
                    values.push(list.to_vec().into());
                    format!("= ANY(${})", values.len())
                } else {
                    values.extend(list.iter().map(|text| sea_orm::Value::from(text.clone())));
                    format!("IN ({})", vec!["?"; list.len()].join(", "))
                }
            };
            let sources_sql = bind(&chunk, &mut values);
            // The types one by one on both databases: an array parameter
            // here makes PostgreSQL's generic plan filter every edge of the
            // sources instead of looking up only those of these types
            // (measured: 4.0 ms against 1.7 ms for 100 sources' owners and
            // systems at 10,000 entities).
            let types_sql = {
                let marks: Vec<String> = types
                    .iter()
                    .map(|relation_type| {
                        values.push(relation_type.as_str().into());
                        match backend {
                            DbBackend::Postgres => format!("${}", values.len()),
                            _ => "?".to_owned(),
                        }
                    })
                    .collect();
                // No types, no edges (PostgreSQL refuses an empty IN list).
                if marks.is_empty() { "IS NULL AND 1 = 0".to_owned() } else { format!("IN ({})", marks.join(", ")) }
            };
            // No DISTINCT: the body is JSON, which PostgreSQL cannot compare;
            // an edge two entities state comes twice and is skipped below.
            // The sources themselves come with a null related_source.
            let sources_part = if with_sources {
                // In the order of the text: SQLite's `?` bind by position.
                // The sources' bodies the cache holds are left out; one that
                // changed since comes back without a body and is read after.
                let source_body = match self.held(&chunk) {
                    Held::None => BODY.to_owned(),
                    Held::All => NO_BODY.to_owned(),
                    Held::Some(known) => {
                        let known_sql = bind(&known, &mut values);
                        format!("CASE WHEN e.entity_ref {known_sql} THEN NULL ELSE CAST(e.body AS TEXT) END AS body")
                    }
                };
                let entities_sql = match backend {
                    DbBackend::Postgres => "= ANY($1)".to_owned(),
                    _ => bind(&chunk, &mut values),
                };
                format!(
                    " UNION ALL SELECT CAST(NULL AS TEXT), CAST(NULL AS TEXT), {READ_COLUMNS}, {source_body} \
                     FROM entities e WHERE e.entity_ref {entities_sql}"
                )
            } else {
                String::new()
            };
            let sql = format!(
                "SELECT r.source_ref AS related_source, r.relation_type AS related_type, {READ_COLUMNS}, {target_body} \
                 FROM relations r JOIN entities e ON e.entity_ref = r.target_ref \
                 WHERE r.source_ref {sources_sql} AND r.relation_type {types_sql}{sources_part} \
                 ORDER BY related_source, related_type, entity_ref"
            );
            let rows = self.db.query_all_raw(sea_orm::Statement::from_sql_and_values(backend, sql, values)).await?;
            let mut sources_read = Vec::new();
            for row in rows {
                let Some(source) = row.try_get::<Option<String>>("", "related_source")? else {
                    sources_read.push(EntityRead::from_query_result(&row, "")?.into_stored(&self.bodies)?);
                    continue;
                };
                let relation_type: String = row.try_get("", "related_type")?;
                let Ok(relation_type) = relation_type.parse::<RelationType>() else { continue };
                let id: i64 = row.try_get("", "id")?;
                let edge = (asked_ref(&asked, &source)?, relation_type, id);
                if related.edges.last() == Some(&edge) {
                    continue;
                }
                related.edges.push(edge);
                // A target many sources share (an owner) is kept once.
                if let std::collections::hash_map::Entry::Vacant(vacant) = related.targets.entry(id) {
                    vacant.insert(EntityRead::from_query_result(&row, "")?.into_stored(&self.bodies)?);
                }
            }
            self.read_bodies(&mut sources_read).await?;
            found.extend(sources_read.into_iter().map(|stored| (stored.entity_ref.clone(), stored)));
        }
        Ok((found, related))
    }

    /// The edges leaving each of the given refs, optionally of some types only.
    /// Incoming edges are outgoing edges of the reverse type, so this one call
    /// serves both directions. One statement per 5,000 refs.
    pub async fn relations_from(
        &self,
        sources: &[EntityRef],
        types: Option<&[RelationType]>,
    ) -> Result<Vec<StoredRelation>, StoreError> {
        let mut edges = Vec::new();
        for chunk in sources.chunks(REF_CHUNK) {
            let asked = by_text(chunk);
            let mut query = relation_row::Entity::find()
                .select_only()
                .columns([
                    relation_row::Column::SourceRef,
                    relation_row::Column::RelationType,
                    relation_row::Column::TargetRef,
                ])
                .distinct()
                .filter(bulk::one_of(
                    self.db.get_database_backend(),
                    relation_row::Column::SourceRef,
                    chunk.iter().map(ToString::to_string),
                ))
                .order_by_asc(relation_row::Column::SourceRef)
                .order_by_asc(relation_row::Column::RelationType)
                .order_by_asc(relation_row::Column::TargetRef);
            if let Some(types) = types {
                query = query.filter(relation_row::Column::RelationType.is_in(types.iter().map(|t| t.as_str())));
            }
            for (source_ref, relation_type, target_ref) in
                query.into_tuple::<(String, String, String)>().all(&self.db).await?
            {
                let Ok(relation_type) = relation_type.parse::<RelationType>() else { continue };
                let (source_ref, target_ref) = (asked_ref(&asked, &source_ref)?, stored_ref(&target_ref)?);
                edges.push(StoredRelation { source_ref, relation_type, target_ref });
            }
        }
        Ok(edges)
    }

    /// How many entities each provider holds.
    pub async fn entity_counts_by_provider(&self) -> Result<HashMap<String, u64>, StoreError> {
        let rows = entity_row::Entity::find()
            .select_only()
            .column(entity_row::Column::Provider)
            .column_as(entity_row::Column::Id.count(), "n")
            .group_by(entity_row::Column::Provider)
            .into_tuple::<(String, i64)>()
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(|(provider, n)| (provider, u64::try_from(n).unwrap_or_default())).collect())
    }

    /// How many entities there are of each kind (lower case).
    pub async fn entity_counts_by_kind(&self) -> Result<HashMap<String, u64>, StoreError> {
        let rows = entity_row::Entity::find()
            .select_only()
            .column(entity_row::Column::Kind)
            .column_as(entity_row::Column::Id.count(), "n")
            .group_by(entity_row::Column::Kind)
            .into_tuple::<(String, i64)>()
            .all(&self.db)
            .await?;
        let mut counts = HashMap::new();
        for (kind, n) in rows {
            *counts.entry(kind.to_lowercase()).or_default() += u64::try_from(n).unwrap_or_default();
        }
        Ok(counts)
    }

    /// Every entity carrying one of these annotations, with the value. Live
    /// sources (Kubernetes, PagerDuty) link to catalog entities this way;
    /// such entities are few, so two plain statements serve.
    pub async fn annotated(&self, keys: &[&str]) -> Result<Vec<Annotated>, StoreError> {
        let facets = facet_row::Entity::find()
            .select_only()
            .columns([facet_row::Column::EntityId, facet_row::Column::Key, facet_row::Column::Value])
            .filter(facet_row::Column::Key.is_in(keys.iter().map(|key| format!("metadata.annotations.{key}"))))
            .into_tuple::<(i64, String, String)>()
            .all(&self.db)
            .await?;
        let mut ids: Vec<i64> = facets.iter().map(|(id, _, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut entities: HashMap<i64, (EntityRef, String)> = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(REF_CHUNK) {
            let rows = entity_row::Entity::find()
                .select_only()
                .columns([entity_row::Column::Id, entity_row::Column::EntityRef, entity_row::Column::Provider])
                .filter(entity_row::Column::Id.is_in(chunk.iter().copied()))
                .into_tuple::<(i64, String, String)>()
                .all(&self.db)
                .await?;
            for (id, entity_ref, provider) in rows {
                entities.insert(id, (stored_ref(&entity_ref)?, provider));
            }
        }
        let mut annotated: Vec<Annotated> = facets
            .into_iter()
            .filter_map(|(id, key, value)| {
                let (entity_ref, provider) = entities.get(&id)?.clone();
                let key = key.strip_prefix("metadata.annotations.").unwrap_or(&key).to_owned();
                Some(Annotated { entity_ref, provider, key, value })
            })
            .collect();
        annotated.sort_by(|a, b| (a.entity_ref.as_str(), &a.key).cmp(&(b.entity_ref.as_str(), &b.key)));
        Ok(annotated)
    }

    /// Every location every provider read, by provider and target.
    pub async fn locations(&self) -> Result<Vec<LocationRecord>, StoreError> {
        let rows = location_row::Entity::find()
            .order_by_asc(location_row::Column::Provider)
            .order_by_asc(location_row::Column::Target)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| LocationRecord {
                id: row.id,
                provider: row.provider,
                target: row.target,
                error: row.error,
                n_entities: row.n_entities,
                updated_at: row.updated_at,
                read_at: row.read_at,
            })
            .collect())
    }

    /// When each of `locations` (provider, location key) was last read in
    /// full, to the hour; those never read, or unknown, are absent. One
    /// statement per 5,000 keys.
    pub async fn locations_read_at(
        &self,
        locations: &[(String, String)],
    ) -> Result<HashMap<(String, String), chrono::DateTime<chrono::Utc>>, StoreError> {
        // By provider, so that the (provider, target) index answers.
        let mut by_provider: HashMap<&str, Vec<String>> = HashMap::new();
        for (provider, target) in locations {
            by_provider.entry(provider.as_str()).or_default().push(target.clone());
        }
        let backend = self.db.get_database_backend();
        let mut found = HashMap::new();
        for (provider, mut targets) in by_provider {
            targets.sort_unstable();
            targets.dedup();
            for chunk in targets.chunks(bulk::REF_CHUNK) {
                let rows = location_row::Entity::find()
                    .select_only()
                    .columns([location_row::Column::Target, location_row::Column::ReadAt])
                    .filter(location_row::Column::Provider.eq(provider))
                    .filter(bulk::in_set(backend, "target", chunk))
                    .into_tuple::<(String, Option<chrono::DateTime<chrono::Utc>>)>()
                    .all(&self.db)
                    .await?;
                for (target, read_at) in rows {
                    if let Some(read_at) = read_at {
                        found.insert((provider.to_owned(), target), read_at);
                    }
                }
            }
        }
        Ok(found)
    }

    /// Every ref claimed by two sources.
    pub async fn conflicts(&self) -> Result<Vec<ConflictRecord>, StoreError> {
        let rows = conflict_row::Entity::find().order_by_asc(conflict_row::Column::EntityRef).all(&self.db).await?;
        rows.into_iter()
            .map(|row| {
                Ok(ConflictRecord {
                    entity_ref: stored_ref(&row.entity_ref)?,
                    owner_provider: row.owner_provider,
                    owner_location: row.owner_location,
                    claimant_provider: row.claimant_provider,
                    claimant_location: row.claimant_location,
                    detected_at: row.detected_at,
                })
            })
            .collect()
    }
}

/// An entity row as reads take it: the body and the errors as the JSON text
/// the database prints, so that reading a row decodes no JSON (see
/// [`StoredEntity`]). On PostgreSQL `jsonb` goes over the wire as text
/// anyway; the cast only skips decoding it into a `serde_json::Value`.
#[derive(sea_orm::FromQueryResult)]
pub(crate) struct EntityRead {
    id: i64,
    entity_ref: String,
    etag: String,
    /// None for a relation target read without its body, or a body the
    /// cache holds.
    body: Option<String>,
    provider: String,
    location_key: Option<String>,
    errors: Option<String>,
    violations: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

/// [`EntityRead`]'s columns, for statements written as SQL (entities as `e`).
/// Its body comes after them, as `body`.
const READ_COLUMNS: &str = "e.id, e.entity_ref, e.etag, e.provider, e.location_key, \
    CAST(e.errors AS TEXT) AS errors, CAST(e.violations AS TEXT) AS violations, e.created_at, e.updated_at";
/// The `body` of [`READ_COLUMNS`]: the JSON text.
const BODY: &str = "CAST(e.body AS TEXT) AS body";
/// The `body` of [`READ_COLUMNS`] for [`TargetBodies::Skip`].
const NO_BODY: &str = "CAST(NULL AS TEXT) AS body";

/// Which asked bodies the cache holds ([`Catalog::held`]).
enum Held {
    None,
    /// Every one: the statement reads no body at all rather than testing
    /// each row (measured: 0.1-0.15 ms of a 1.7 ms statement for 100 refs
    /// on PostgreSQL).
    All,
    /// These refs only.
    Some(Vec<String>),
}

/// The body as JSON text, for a select of entity rows.
fn body_text() -> Expr {
    Expr::cust(r#"CAST("entities"."body" AS TEXT)"#)
}

/// A select of entity rows narrowed to [`EntityRead`]'s columns but its
/// body, which the caller adds as `body`.
pub(crate) fn read_columns(select: sea_orm::Select<entity_row::Entity>) -> sea_orm::Select<entity_row::Entity> {
    select
        .select_only()
        .columns([
            entity_row::Column::Id,
            entity_row::Column::EntityRef,
            entity_row::Column::Etag,
            entity_row::Column::Provider,
            entity_row::Column::LocationKey,
            entity_row::Column::CreatedAt,
            entity_row::Column::UpdatedAt,
        ])
        .expr_as(Expr::cust(r#"CAST("entities"."errors" AS TEXT)"#), "errors")
        .expr_as(Expr::cust(r#"CAST("entities"."violations" AS TEXT)"#), "violations")
}

impl EntityRead {
    /// The entity of the row; its body from `bodies` when they hold this
    /// version of it, and kept there once decoded when not.
    fn into_stored(self, bodies: &Arc<BodyCache>) -> Result<StoredEntity, StoreError> {
        let entity_ref = stored_ref(&self.entity_ref)?;
        let body = match (bodies.get(&self.entity_ref, self.id, &self.etag), self.body) {
            (Some(entity), _) => Body::Decoded(entity),
            (None, Some(text)) => Body::text(text, Some(KeepIn::new(bodies, self.etag))),
            (None, None) => Body::unread(),
        };
        // A list of texts, as the write path stores it; anything else in
        // the column is no problem report and reads as none.
        let errors = match self.errors.as_deref().map(serde_json::from_str::<Value>) {
            Some(Ok(Value::Array(items))) => {
                items.into_iter().filter_map(|item| item.as_str().map(str::to_owned)).collect()
            }
            _ => Vec::new(),
        };
        // Written by the snapshot path only; a value it cannot read is none.
        let violations =
            self.violations.as_deref().and_then(|text| serde_json::from_str(text).ok()).unwrap_or_default();
        Ok(StoredEntity {
            id: self.id,
            entity_ref,
            body,
            provider: self.provider,
            location: self.location_key,
            errors,
            violations,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A facet query's (value, count) rows.
async fn value_counts<E: EntityTrait>(
    db: &sea_orm::DatabaseConnection,
    query: sea_orm::Select<E>,
) -> Result<Vec<(String, u64)>, StoreError> {
    let rows = query.into_tuple::<(String, i64)>().all(db).await?;
    Ok(rows.into_iter().map(|(value, n)| (value, u64::try_from(n).unwrap_or_default())).collect())
}

/// Entities by their stored governance results under `scorecard`: their
/// level (`failing` false; the empty string is below the first level), or
/// the rules they fail (`failing` true).
fn score_condition(scorecard: &str, failing: bool, predicate: &Predicate) -> Condition {
    let mut scored = Query::select();
    scored
        .column(entity_score_row::Column::EntityRef)
        .from(entity_score_row::Entity)
        .and_where(Expr::col(entity_score_row::Column::Scorecard).eq(scorecard));
    let inside = |subquery: sea_orm::sea_query::SelectStatement| {
        Condition::all().add(Expr::col((entity_row::Entity, entity_row::Column::EntityRef)).in_subquery(subquery))
    };
    match predicate {
        Predicate::Exists(exists) => {
            if failing {
                scored.and_where(Expr::col(entity_score_row::Column::Failing).ne(""));
            }
            let condition = inside(scored);
            if *exists { condition } else { condition.not() }
        }
        Predicate::In(values) if failing => {
            let any = values.iter().fold(Condition::any(), |any, rule| {
                let pattern = format!("%,{},%", escape_like(rule));
                any.add(
                    Expr::col(entity_score_row::Column::Failing)
                        .like(sea_orm::sea_query::LikeExpr::new(pattern).escape('\\')),
                )
            });
            scored.cond_where(any);
            inside(scored)
        }
        Predicate::In(levels) => {
            let named: Vec<String> = levels.iter().filter(|level| !level.is_empty()).cloned().collect();
            let mut any = Condition::any().add(Expr::col(entity_score_row::Column::Level).is_in(named));
            if levels.iter().any(String::is_empty) {
                any = any.add(Expr::col(entity_score_row::Column::Level).is_null());
            }
            scored.cond_where(any);
            inside(scored)
        }
    }
}

/// Builds the WHERE condition of a filter and a search.
/// Past this many values, a typed comparison binds them as one parameter.
const MANY_VALUES: usize = 32;

pub(crate) fn condition(backend: DbBackend, filter: Option<&Filter>, search: Option<&str>) -> Condition {
    let mut condition = Condition::all();
    if let Some(filter) = filter {
        condition = condition.add(filter_condition(backend, filter));
    }
    for word in search.unwrap_or_default().split_whitespace() {
        let pattern = format!("%{}%", escape_like(&word.to_lowercase()));
        condition = condition.add(
            Expr::col(entity_row::Column::SearchText).like(sea_orm::sea_query::LikeExpr::new(pattern).escape('\\')),
        );
    }
    condition
}

fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

fn filter_condition(backend: DbBackend, filter: &Filter) -> Condition {
    match filter {
        Filter::All(filters) => {
            filters.iter().fold(Condition::all(), |condition, filter| condition.add(filter_condition(backend, filter)))
        }
        Filter::Any(filters) => {
            filters.iter().fold(Condition::any(), |condition, filter| condition.add(filter_condition(backend, filter)))
        }
        Filter::Not(filter) => filter_condition(backend, filter).not(),
        Filter::Field { field, predicate } => field_condition(backend, field, predicate),
    }
}

fn field_condition(backend: DbBackend, field: &FilterField, predicate: &Predicate) -> Condition {
    if let Some(scorecard) = field.scorecard() {
        return score_condition(scorecard, matches!(field, FilterField::FailingRule(_)), predicate);
    }
    let column = TypedColumn::of(field).map(|typed| (typed.model_column(), typed.default_kind()));
    if let Some((column, default_kind)) = column {
        return match predicate {
            Predicate::Exists(true) => Condition::all().add(column.is_not_null()),
            Predicate::Exists(false) => Condition::all().add(column.is_null()),
            Predicate::In(values) => {
                // `IS NOT NULL` keeps `NOT (...)` true for entities without the
                // field: `NOT (NULL IN (...))` is NULL, which would drop them.
                let values = typed_values(values, default_kind);
                let matches = if values.len() > MANY_VALUES {
                    // An owner closure can name thousands of groups: one array
                    // parameter, not thousands of placeholders to plan.
                    Condition::all().add(bulk::in_set(backend, sea_orm::IdenStatic::as_str(&column), &values))
                } else {
                    Condition::all().add(column.is_in(values))
                };
                Condition::all().add(column.is_not_null()).add(matches)
            }
        };
    }
    let mut facet = Query::select();
    facet
        .column(facet_row::Column::EntityId)
        .from(facet_row::Entity)
        .and_where(Expr::col(facet_row::Column::Key).eq(field.facet_key()));
    match predicate {
        Predicate::In(values) => {
            facet.and_where(Expr::col(facet_row::Column::Value).is_in(values.iter().cloned()));
            Condition::all().add(Expr::col(entity_row::Column::Id).in_subquery(facet.to_owned()))
        }
        Predicate::Exists(exists) => {
            let subquery = facet.to_owned();
            if *exists {
                Condition::all().add(Expr::col(entity_row::Column::Id).in_subquery(subquery))
            } else {
                Condition::all().add(Expr::col(entity_row::Column::Id).not_in_subquery(subquery))
            }
        }
    }
}
