//! Pages of entities (`EntityConnection`): the `entities` query and every
//! field that lists entities by filter share one way to read a page, now or
//! as of a change-log sequence.

use std::sync::Arc;

use async_graphql::{Result, SimpleObject};
use catalog_store::{AsOfQuery, Catalog, EntityPage, ListQuery};

use super::EntityValue;
use crate::graphql::DEFAULT_PAGE_SIZE;
use crate::graphql::error::ApiError;
use crate::graphql::filter::{self, EntityOrder};
use crate::graphql::paging::{PageInfo, decode_cursor, offset_cursor, page_size};

#[derive(SimpleObject)]
pub struct EntityEdge {
    pub cursor: String,
    pub node: EntityValue,
}

/// A page of entities.
#[derive(SimpleObject)]
pub struct EntityConnection {
    pub edges: Vec<EntityEdge>,
    /// The entities of the page, without cursors.
    pub nodes: Vec<EntityValue>,
    pub page_info: PageInfo,
    /// How many entities match, over all pages.
    pub total_count: u64,
}

/// Relay page arguments as clients send them.
#[derive(Clone, Debug, Default)]
pub(crate) struct PageArgs {
    pub first: Option<i32>,
    pub after: Option<String>,
    pub last: Option<i32>,
    pub before: Option<String>,
}

/// A page of entities for a store filter: the `entities` query and every
/// field that lists entities by filter (ownedEntities) share it.
/// Where a page of entities comes from: the catalog now, in an order, or the
/// catalog as it was at a change-log sequence, in ref order.
pub(crate) enum EntitySource {
    Now(EntityOrder),
    AsOf(i64),
}

impl EntitySource {
    async fn page(&self, catalog: &Catalog, query: &ListQuery) -> Result<EntityPage, ApiError> {
        let EntitySource::AsOf(sequence) = *self else { return Ok(catalog.list_entities(query).await?) };
        let query = AsOfQuery {
            sequence,
            filter: query.filter.clone(),
            search: query.search.clone(),
            offset: query.offset,
            limit: query.limit,
        };
        let page = catalog.list_entities_as_of(&query).await?;
        let entities =
            page.versions.iter().filter_map(super::change::stored_version).map(Arc::unwrap_or_clone).collect();
        Ok(EntityPage { entities, total_count: page.total_count })
    }
}

pub(crate) async fn list_connection(
    catalog: &Catalog,
    filter: Option<catalog_store::Filter>,
    search: Option<String>,
    source: EntitySource,
    page: PageArgs,
) -> Result<EntityConnection, ApiError> {
    let first = page_size("first", page.first)?;
    let last = page_size("last", page.last)?;
    if first.is_some() && last.is_some() {
        return Err(ApiError::BadUserInput("set first or last, not both".into()));
    }
    let start = page.after.as_deref().map(decode_cursor).transpose()?.map_or(0, |offset| offset + 1);
    let end = page.before.as_deref().map(decode_cursor).transpose()?;
    let order = match &source {
        EntitySource::Now(order) => *order,
        EntitySource::AsOf(_) => EntityOrder::default(),
    };
    let mut query = ListQuery {
        filter,
        search,
        order: order.field.into(),
        descending: order.direction == filter::OrderDirection::Desc,
        offset: start,
        limit: 0,
    };
    if let Some(last) = last {
        let end = match end {
            Some(end) => end,
            None => source.page(catalog, &query).await?.total_count,
        };
        query.offset = end.saturating_sub(last).max(start);
        query.limit = end.saturating_sub(query.offset);
    } else {
        let size = first.unwrap_or(DEFAULT_PAGE_SIZE);
        query.limit = match end {
            Some(end) => size.min(end.saturating_sub(start)),
            None => size,
        };
    }
    let found = source.page(catalog, &query).await?;
    let offset = query.offset;
    let edges: Vec<EntityEdge> = found
        .entities
        .into_iter()
        .enumerate()
        .map(|(index, stored)| EntityEdge {
            cursor: offset_cursor(offset + index as u64),
            node: EntityValue::from(Arc::new(stored)),
        })
        .collect();
    let n_edges = edges.len() as u64;
    let page_info = PageInfo {
        has_next_page: offset + n_edges < found.total_count,
        has_previous_page: offset > 0,
        start_cursor: edges.first().map(|edge| edge.cursor.clone()),
        end_cursor: edges.last().map(|edge| edge.cursor.clone()),
    };
    let nodes = edges.iter().map(|edge| edge.node.clone()).collect();
    Ok(EntityConnection { edges, nodes, page_info, total_count: found.total_count })
}
