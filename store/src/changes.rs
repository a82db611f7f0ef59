//! Reads of the change log: the feed after a cursor, one entity's history,
//! and an entity as it was at a cursor or a time.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::Value;

use crate::connection::Store;
use crate::error::StoreError;
use crate::models::change_row;
use crate::record::{Change, ChangeType};

fn to_change(row: change_row::Model) -> Option<Change> {
    let changed_fields = match row.changed_fields {
        Some(Value::Array(items)) => items.into_iter().filter_map(|item| item.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    };
    Some(Change {
        sequence: row.seq,
        time: row.created_at,
        entity_ref: row.entity_ref,
        change_type: ChangeType::parse(&row.change_type)?,
        entity: row.body,
        previous: row.previous_body,
        changed_fields,
        provider: row.provider,
    })
}

impl Store {
    /// Change-log rows after a sequence number, oldest first.
    pub async fn changes_after(&self, after: i64, limit: u64) -> Result<Vec<Change>, StoreError> {
        let rows = change_row::Entity::find()
            .filter(change_row::Column::Seq.gt(after))
            .order_by_asc(change_row::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().filter_map(to_change).collect())
    }

    /// One entity's changes, newest first, older than `before` when given.
    pub async fn history(&self, entity_ref: &str, before: Option<i64>, limit: u64) -> Result<Vec<Change>, StoreError> {
        let mut query = change_row::Entity::find().filter(change_row::Column::EntityRef.eq(entity_ref));
        if let Some(before) = before {
            query = query.filter(change_row::Column::Seq.lt(before));
        }
        let rows = query.order_by_desc(change_row::Column::Seq).limit(limit).all(&self.db).await?;
        Ok(rows.into_iter().filter_map(to_change).collect())
    }

    /// The entity as it was once the change at `sequence` had been applied:
    /// `None` when it did not exist then (not yet added, or removed).
    pub async fn entity_as_of(&self, entity_ref: &str, sequence: i64) -> Result<Option<Change>, StoreError> {
        let row = change_row::Entity::find()
            .filter(change_row::Column::EntityRef.eq(entity_ref))
            .filter(change_row::Column::Seq.lte(sequence))
            .order_by_desc(change_row::Column::Seq)
            .one(&self.db)
            .await?;
        Ok(row.and_then(to_change).filter(|change| change.change_type != ChangeType::Removed))
    }

    /// The last sequence number committed at or before `time` (0 before any).
    pub async fn sequence_at(&self, time: DateTime<Utc>) -> Result<i64, StoreError> {
        let sequence = change_row::Entity::find()
            .select_only()
            .column(change_row::Column::Seq)
            .filter(change_row::Column::CreatedAt.lte(time))
            .order_by_desc(change_row::Column::CreatedAt)
            .order_by_desc(change_row::Column::Seq)
            .into_tuple::<i64>()
            .one(&self.db)
            .await?;
        Ok(sequence.unwrap_or(0))
    }

    /// The oldest and newest sequence numbers in the log (0, 0 when empty).
    pub async fn sequence_bounds(&self) -> Result<(i64, i64), StoreError> {
        let first = change_row::Entity::find()
            .select_only()
            .column(change_row::Column::Seq)
            .order_by_asc(change_row::Column::Seq)
            .into_tuple::<i64>()
            .one(&self.db)
            .await?;
        let last = change_row::Entity::find()
            .select_only()
            .column(change_row::Column::Seq)
            .order_by_desc(change_row::Column::Seq)
            .into_tuple::<i64>()
            .one(&self.db)
            .await?;
        Ok((first.unwrap_or(0), last.unwrap_or(0)))
    }
}
