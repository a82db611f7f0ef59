//! Reads of the change log: the feed after a cursor, one entity's history,
//! and an entity as it was at a cursor or a time.

use catalog_domain::EntityRef;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
    TransactionTrait,
};

use crate::change_log::{changes_after, newest_sequence, to_change};
use crate::error::StoreError;
use crate::handles::{ChangeFeed, Maintenance};
use crate::models::change_row;
use crate::record::{Change, ChangeType};

/// The catalog_state row holding the highest sequence number purged.
const PURGED_THROUGH: &str = "purged_through";

impl Maintenance {
    /// Deletes change-log rows committed before `before`, except the latest
    /// version of every entity that still exists (its last row, unless that
    /// row is a removal), and records the highest sequence deleted: a cursor
    /// at or below it may have gaps (`purged_through`). One writer at a time,
    /// like snapshots. Returns how many rows went.
    pub async fn purge_changes(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let _writing = self.writer.lock().await;
        let backend = self.db.get_database_backend();
        let (p1, p2) = if backend == DbBackend::Postgres { ("$1", "$2") } else { ("?", "?") };
        // A version goes when a later one was also committed before the
        // cutoff, or when it is a removal: the state at any cursor after the
        // purged ones stays exact. (A version superseded only after the
        // cutoff is still the answer for cursors in between.)
        let purgeable = format!(
            "FROM change_log WHERE created_at < {p1} AND (change_type = 'removed' \
             OR seq NOT IN (SELECT MAX(seq) FROM change_log WHERE created_at < {p2} GROUP BY entity_ref))"
        );
        let txn = self.db.begin().await?;
        // Other replicas' snapshots wait too, so no commit lands between the
        // mark and the delete (the same lock snapshots take).
        crate::commit::lock_writers(&txn).await?;
        let highest = txn
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                format!("SELECT MAX(seq) AS seq {purgeable}"),
                [before.into(), before.into()],
            ))
            .await?
            .and_then(|row| row.try_get::<Option<i64>>("", "seq").ok().flatten());
        let Some(highest) = highest else {
            txn.commit().await?;
            return Ok(0);
        };
        let deleted = txn
            .execute_raw(Statement::from_sql_and_values(
                backend,
                format!("DELETE {purgeable}"),
                [before.into(), before.into()],
            ))
            .await?
            .rows_affected();
        let upsert = format!(
            "INSERT INTO catalog_state (name, value) VALUES ({p1}, {p2}) \
             ON CONFLICT (name) DO UPDATE SET value = CASE WHEN catalog_state.value > excluded.value \
             THEN catalog_state.value ELSE excluded.value END"
        );
        txn.execute_raw(Statement::from_sql_and_values(backend, upsert, [PURGED_THROUGH.into(), highest.into()]))
            .await?;
        txn.commit().await?;
        tracing::info!(deleted, purged_through = highest, "change log purged");
        Ok(deleted)
    }
}

impl ChangeFeed {
    /// The highest sequence number the purge removed (0 when nothing was):
    /// reading the feed from a cursor below it could miss changes.
    pub async fn purged_through(&self) -> Result<i64, StoreError> {
        let backend = self.db.get_database_backend();
        let placeholder = if backend == DbBackend::Postgres { "$1" } else { "?" };
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                format!("SELECT value FROM catalog_state WHERE name = {placeholder}"),
                [PURGED_THROUGH.into()],
            ))
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<i64>("", "value")?,
            None => 0,
        })
    }

    /// Change-log rows after a sequence number, oldest first.
    pub async fn changes_after(&self, after: i64, limit: u64) -> Result<Vec<Change>, StoreError> {
        changes_after(&self.db, after, limit).await
    }

    /// One entity's changes, newest first, older than `before` when given.
    pub async fn history(
        &self,
        entity_ref: &EntityRef,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<Change>, StoreError> {
        let mut query = change_row::Entity::find().filter(change_row::Column::EntityRef.eq(entity_ref.to_string()));
        if let Some(before) = before {
            query = query.filter(change_row::Column::Seq.lt(before));
        }
        let rows = query.order_by_desc(change_row::Column::Seq).limit(limit).all(&self.db).await?;
        Ok(rows.into_iter().filter_map(to_change).collect())
    }

    /// The entity as it was once the change at `sequence` had been applied:
    /// `None` when it did not exist then (not yet added, or removed).
    pub async fn entity_as_of(&self, entity_ref: &EntityRef, sequence: i64) -> Result<Option<Change>, StoreError> {
        let row = change_row::Entity::find()
            .filter(change_row::Column::EntityRef.eq(entity_ref.to_string()))
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

    /// The newest sequence number in the log (0 when it is empty).
    pub async fn latest_sequence(&self) -> Result<i64, StoreError> {
        newest_sequence(&self.db).await
    }

    /// How many changes the log retains, and its newest sequence number
    /// (0 when empty). One statement.
    pub async fn change_log_size(&self) -> Result<(u64, i64), StoreError> {
        let sql = "SELECT COUNT(*) AS n, COALESCE(MAX(seq), 0) AS seq FROM change_log";
        let row = self.db.query_one_raw(Statement::from_string(self.db.get_database_backend(), sql)).await?;
        Ok(match row {
            Some(row) => {
                (u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or_default(), row.try_get::<i64>("", "seq")?)
            }
            None => (0, 0),
        })
    }
}
