//! The change log's rows as records, on any connection or transaction: the
//! newest sequence and the rows after a cursor. `changes.rs` builds the
//! store's change-log reads on them; the in-memory indexes follow the log
//! through them (`follower.rs`) without holding a whole store.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement};
use serde_json::Value;

use crate::error::StoreError;
use crate::models::change_row;
use crate::record::{Change, ChangeType, stored_ref};

/// The row as a change; `None` for a row no reader can use (an unknown
/// change type, or a ref this store could not have written), which readers
/// skip as they always skipped unknown types.
pub(crate) fn to_change(row: change_row::Model) -> Option<Change> {
    let entity_ref = match stored_ref(&row.entity_ref) {
        Ok(entity_ref) => entity_ref,
        Err(error) => {
            tracing::warn!(sequence = row.seq, %error, "change-log row skipped");
            return None;
        }
    };
    let changed_fields = match row.changed_fields {
        Some(Value::Array(items)) => items.into_iter().filter_map(|item| item.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    };
    Some(Change {
        sequence: row.seq,
        time: row.created_at,
        entity_ref,
        change_type: ChangeType::parse(&row.change_type)?,
        entity: row.body,
        previous: row.previous_body,
        changed_fields,
        provider: row.provider,
    })
}

/// Change-log rows after a sequence number, oldest first.
pub(crate) async fn changes_after(
    db: &impl ConnectionTrait,
    after: i64,
    limit: u64,
) -> Result<Vec<Change>, StoreError> {
    let rows = change_row::Entity::find()
        .filter(change_row::Column::Seq.gt(after))
        .order_by_asc(change_row::Column::Seq)
        .limit(limit)
        .all(db)
        .await?;
    Ok(rows.into_iter().filter_map(to_change).collect())
}

/// The newest sequence number, as one column named `seq` (0 when empty).
pub(crate) const NEWEST_SEQUENCE: &str = "SELECT COALESCE(MAX(seq), 0) AS seq FROM change_log";

/// [`NEWEST_SEQUENCE`] on a connection or inside a transaction.
pub(crate) async fn newest_sequence(db: &impl ConnectionTrait) -> Result<i64, StoreError> {
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), NEWEST_SEQUENCE)).await?;
    Ok(match row {
        Some(row) => row.try_get::<i64>("", "seq")?,
        None => 0,
    })
}
