//! Governance results: the scorecards applied (their source, a version and
//! a summary), each entity's current score per scorecard, and the history
//! of its transitions. The store keeps a score's rule results as JSON it
//! does not interpret: what a result says is the governance crate's.
//!
//! Scores are written only by [`ScoreStore::write_scores`], one transaction
//! per batch: the current rows and the transition rows together, so the
//! history never misses a change a reader saw. Transitions are numbered in
//! commit order (the writers take one lock), which makes their sequence a
//! cursor a subscriber can resume from.

use catalog_domain::EntityRef;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait};
use tokio::sync::watch;

use crate::handles::{Maintenance, ScoreStore};

use crate::bulk::{self, REF_CHUNK};
use crate::error::StoreError;
use crate::models::{entity_row, entity_score_row, score_change_row, scorecard_row};
use crate::record::{stored_ref, texts};

/// Score rows per insert statement: 6 parameters each, under SQLite's and
/// PostgreSQL's limits.
const WRITE_CHUNK: usize = 1_000;

/// A scorecard as applied: its source, a version that changes with it, and
/// the summary its evaluator last wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ScorecardRecord {
    pub id: String,
    pub version: String,
    pub source: String,
    pub summary: serde_json::Value,
    pub updated_at: DateTime<Utc>,
}

/// An entity's current score under one scorecard.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredScore {
    pub scorecard: String,
    pub entity_ref: EntityRef,
    pub level: Option<String>,
    pub score: f64,
    /// Every rule's result, as the evaluator wrote them.
    pub results: serde_json::Value,
    pub updated_at: DateTime<Utc>,
}

/// A change to one entity's score under one scorecard: its new score, or
/// `None` when the scorecard no longer applies to it (or it is gone), and
/// the transition to record in the history when there is one.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreWrite {
    pub scorecard: String,
    pub entity_ref: EntityRef,
    pub score: Option<NewScore>,
    pub transition: Option<Transition>,
}

/// The score part of a [`ScoreWrite`].
#[derive(Clone, Debug, PartialEq)]
pub struct NewScore {
    pub level: Option<String>,
    pub score: f64,
    /// The ids of the rules it does not pass and no exemption covers (the
    /// `scores.ID.failing` filter).
    pub failing: Vec<String>,
    pub results: serde_json::Value,
}

/// Failing rule ids as their column holds them: `,a,b,`, so that one rule
/// is matched whole with `LIKE '%,a,%'`.
fn failing_text(rules: &[String]) -> String {
    if rules.is_empty() { String::new() } else { format!(",{},", rules.join(",")) }
}

/// What a transition says besides the new score: the level before and the
/// rules that changed status (as the evaluator writes them).
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub level_before: Option<String>,
    pub rules: serde_json::Value,
}

/// One recorded transition.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreChange {
    pub sequence: i64,
    pub time: DateTime<Utc>,
    pub scorecard: String,
    pub entity_ref: EntityRef,
    pub level_before: Option<String>,
    pub level: Option<String>,
    pub score: Option<f64>,
    pub rules: serde_json::Value,
    /// The scorecard stopped applying to the entity, or the entity is gone.
    pub removed: bool,
}

impl ScoreStore {
    /// Every scorecard applied, by id.
    pub async fn scorecards(&self) -> Result<Vec<ScorecardRecord>, StoreError> {
        let rows = scorecard_row::Entity::find().order_by_asc(scorecard_row::Column::Id).all(&self.db).await?;
        Ok(rows.into_iter().map(scorecard_record).collect())
    }

    /// One scorecard by id, if it is applied.
    pub async fn scorecard(&self, id: &str) -> Result<Option<ScorecardRecord>, StoreError> {
        let row = scorecard_row::Entity::find_by_id(id.to_owned()).one(&self.db).await?;
        Ok(row.map(scorecard_record))
    }

    /// Records a scorecard's source and summary, replacing the one with its id.
    pub async fn put_scorecard(&self, record: &ScorecardRecord) -> Result<(), StoreError> {
        let row = scorecard_row::ActiveModel {
            id: Set(record.id.clone()),
            version: Set(record.version.clone()),
            source: Set(record.source.clone()),
            summary: Set(record.summary.clone()),
            updated_at: Set(record.updated_at),
        };
        scorecard_row::Entity::insert(row)
            .on_conflict(
                OnConflict::column(scorecard_row::Column::Id)
                    .update_columns([
                        scorecard_row::Column::Version,
                        scorecard_row::Column::Source,
                        scorecard_row::Column::Summary,
                        scorecard_row::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Forgets a scorecard and its current scores (its history stays until
    /// retention purges it).
    pub async fn remove_scorecard(&self, id: &str) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        let txn = self.db.begin().await?;
        entity_score_row::Entity::delete_many().filter(entity_score_row::Column::Scorecard.eq(id)).exec(&txn).await?;
        scorecard_row::Entity::delete_by_id(id.to_owned()).exec(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Every current score under `scorecard`.
    pub async fn scores_of(&self, scorecard: &str) -> Result<Vec<StoredScore>, StoreError> {
        let rows = entity_score_row::Entity::find()
            .filter(entity_score_row::Column::Scorecard.eq(scorecard))
            .all(&self.db)
            .await?;
        rows.into_iter().map(stored_score).collect()
    }

    /// The current scores of `refs` under every scorecard, one statement per
    /// 5,000 refs.
    pub async fn scores_for(&self, refs: &[EntityRef]) -> Result<Vec<StoredScore>, StoreError> {
        let backend = self.db.get_database_backend();
        let mut found = Vec::new();
        for chunk in texts(refs).chunks(REF_CHUNK) {
            let rows = entity_score_row::Entity::find()
                .filter(bulk::one_of(backend, entity_score_row::Column::EntityRef, chunk.iter().cloned()))
                .order_by_asc(entity_score_row::Column::Scorecard)
                .all(&self.db)
                .await?;
            for row in rows {
                found.push(stored_score(row)?);
            }
        }
        Ok(found)
    }

    /// The current scores under `scorecard` of the entities `owners` own
    /// (their `spec.owner`), one statement whatever the number of owners.
    pub async fn scores_owned_by(&self, scorecard: &str, owners: &[EntityRef]) -> Result<Vec<StoredScore>, StoreError> {
        let backend = self.db.get_database_backend();
        let owned = Query::select()
            .column(entity_row::Column::EntityRef)
            .from(entity_row::Entity)
            .and_where(bulk::in_set(backend, "owner_ref", &texts(owners)))
            .to_owned();
        let rows = entity_score_row::Entity::find()
            .filter(entity_score_row::Column::Scorecard.eq(scorecard))
            .filter(entity_score_row::Column::EntityRef.in_subquery(owned))
            .all(&self.db)
            .await?;
        rows.into_iter().map(stored_score).collect()
    }

    /// Applies `writes` in one transaction: scores replaced or removed, and
    /// a history row for each write that carries a transition. Returns the
    /// newest sequence written, if any.
    pub async fn write_scores(&self, writes: &[ScoreWrite]) -> Result<Option<i64>, StoreError> {
        if writes.is_empty() {
            return Ok(None);
        }
        let now = Utc::now();
        let _writer = self.writer.lock().await;
        let txn = self.db.begin().await?;
        let backend = self.db.get_database_backend();
        let (puts, removals): (Vec<&ScoreWrite>, Vec<&ScoreWrite>) =
            writes.iter().partition(|write| write.score.is_some());
        for chunk in puts.chunks(WRITE_CHUNK) {
            let rows = chunk.iter().filter_map(|write| {
                let score = write.score.as_ref()?;
                Some(entity_score_row::ActiveModel {
                    scorecard: Set(write.scorecard.clone()),
                    entity_ref: Set(write.entity_ref.to_string()),
                    level: Set(score.level.clone()),
                    score: Set(score.score),
                    failing: Set(failing_text(&score.failing)),
                    results: Set(score.results.clone()),
                    updated_at: Set(now),
                })
            });
            entity_score_row::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([entity_score_row::Column::Scorecard, entity_score_row::Column::EntityRef])
                        .update_columns([
                            entity_score_row::Column::Level,
                            entity_score_row::Column::Score,
                            entity_score_row::Column::Failing,
                            entity_score_row::Column::Results,
                            entity_score_row::Column::UpdatedAt,
                        ])
                        .to_owned(),
                )
                .exec(&txn)
                .await?;
        }
        let mut by_scorecard: std::collections::BTreeMap<&str, Vec<String>> = std::collections::BTreeMap::new();
        for write in &removals {
            by_scorecard.entry(write.scorecard.as_str()).or_default().push(write.entity_ref.to_string());
        }
        for (scorecard, refs) in by_scorecard {
            for chunk in refs.chunks(REF_CHUNK) {
                entity_score_row::Entity::delete_many()
                    .filter(entity_score_row::Column::Scorecard.eq(scorecard))
                    .filter(bulk::one_of(backend, entity_score_row::Column::EntityRef, chunk.iter().cloned()))
                    .exec(&txn)
                    .await?;
            }
        }
        let transitions: Vec<_> = writes
            .iter()
            .filter_map(|write| {
                let transition = write.transition.as_ref()?;
                Some(score_change_row::ActiveModel {
                    time: Set(now),
                    scorecard: Set(write.scorecard.clone()),
                    entity_ref: Set(write.entity_ref.to_string()),
                    level_before: Set(transition.level_before.clone()),
                    level: Set(write.score.as_ref().and_then(|score| score.level.clone())),
                    score: Set(write.score.as_ref().map(|score| score.score)),
                    rules: Set(transition.rules.clone()),
                    removed: Set(write.score.is_none()),
                    ..Default::default()
                })
            })
            .collect();
        let recorded = !transitions.is_empty();
        for chunk in transitions.chunks(WRITE_CHUNK) {
            score_change_row::Entity::insert_many(chunk.to_vec()).exec(&txn).await?;
        }
        let newest = if recorded {
            score_change_row::Entity::find()
                .select_only()
                .column_as(score_change_row::Column::Sequence.max(), "newest")
                .into_tuple::<Option<i64>>()
                .one(&txn)
                .await?
                .flatten()
        } else {
            None
        };
        txn.commit().await?;
        if let Some(newest) = newest {
            self.transitions.send_replace(newest);
        }
        Ok(newest)
    }

    /// Transitions after `after`, oldest first.
    pub async fn score_changes_after(&self, after: i64, limit: u64) -> Result<Vec<ScoreChange>, StoreError> {
        let rows = score_change_row::Entity::find()
            .filter(score_change_row::Column::Sequence.gt(after))
            .order_by_asc(score_change_row::Column::Sequence)
            .limit(limit)
            .all(&self.db)
            .await?;
        rows.into_iter().map(score_change).collect()
    }

    /// An entity's transitions newest first, under one scorecard or all,
    /// before the sequence `before` when given.
    pub async fn score_history(
        &self,
        entity_ref: &EntityRef,
        scorecard: Option<&str>,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<ScoreChange>, StoreError> {
        let mut query =
            score_change_row::Entity::find().filter(score_change_row::Column::EntityRef.eq(entity_ref.to_string()));
        if let Some(scorecard) = scorecard {
            query = query.filter(score_change_row::Column::Scorecard.eq(scorecard));
        }
        if let Some(before) = before {
            query = query.filter(score_change_row::Column::Sequence.lt(before));
        }
        let rows = query.order_by_desc(score_change_row::Column::Sequence).limit(limit).all(&self.db).await?;
        rows.into_iter().map(score_change).collect()
    }

    /// The newest transition's sequence (0 when none).
    pub async fn latest_score_sequence(&self) -> Result<i64, StoreError> {
        let newest = score_change_row::Entity::find()
            .select_only()
            .column_as(score_change_row::Column::Sequence.max(), "newest")
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await?
            .flatten();
        Ok(newest.unwrap_or_default())
    }

    /// Announces the newest transition sequence after every batch that
    /// recorded one (in this process).
    pub fn transitions(&self) -> watch::Receiver<i64> {
        self.transitions.subscribe()
    }
}

impl Maintenance {
    /// Deletes score transitions recorded before `before` (the change log's
    /// retention): an entity's current scores stay whatever their age.
    /// Returns how many went.
    pub async fn purge_score_changes(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let deleted = score_change_row::Entity::delete_many()
            .filter(score_change_row::Column::Time.lt(before))
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(deleted)
    }
}

fn scorecard_record(row: scorecard_row::Model) -> ScorecardRecord {
    ScorecardRecord {
        id: row.id,
        version: row.version,
        source: row.source,
        summary: row.summary,
        updated_at: row.updated_at,
    }
}

fn stored_score(row: entity_score_row::Model) -> Result<StoredScore, StoreError> {
    Ok(StoredScore {
        entity_ref: stored_ref(&row.entity_ref)?,
        scorecard: row.scorecard,
        level: row.level,
        score: row.score,
        results: row.results,
        updated_at: row.updated_at,
    })
}

fn score_change(row: score_change_row::Model) -> Result<ScoreChange, StoreError> {
    Ok(ScoreChange {
        sequence: row.sequence,
        time: row.time,
        entity_ref: stored_ref(&row.entity_ref)?,
        scorecard: row.scorecard,
        level_before: row.level_before,
        level: row.level,
        score: row.score,
        rules: row.rules,
        removed: row.removed,
    })
}
