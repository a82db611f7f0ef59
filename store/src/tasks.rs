//! Scaffolder tasks as stored: what each was asked to do (its template and
//! values, never its secrets), where it stands, who runs it, and its events
//! in order. A task is claimed by one conditional UPDATE (open -> processing),
//! which only one replica can win on either database; a task whose runner
//! stopped heartbeating is failed by whoever sweeps first.

use catalog_domain::EntityRef;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use serde_json::Value;

use crate::error::StoreError;
use crate::handles::TaskStore;
use crate::models::{task_event_row, task_row};
use crate::record::stored_ref;

/// Where a task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// Created, not yet claimed by a runner.
    Open,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Open => "open",
            TaskStatus::Processing => "processing",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "open" => TaskStatus::Open,
            "processing" => TaskStatus::Processing,
            "completed" => TaskStatus::Completed,
            "failed" => TaskStatus::Failed,
            "cancelled" => TaskStatus::Cancelled,
            other => {
                return Err(StoreError::Corrupt {
                    entity_ref: "scaffolder task".into(),
                    message: format!("unknown status {other:?}"),
                });
            }
        })
    }

    /// Whether the task will not change any more (unless retried).
    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled)
    }
}

/// A task to store.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub id: String,
    pub template_ref: EntityRef,
    /// The validated values (defaults filled in).
    pub parameters: Value,
    pub dry_run: bool,
    pub created_by: String,
    /// With `created_by`, makes creating the same task twice return the first.
    pub idempotency_key: Option<String>,
}

/// One task.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRecord {
    pub id: String,
    pub template_ref: EntityRef,
    pub status: TaskStatus,
    pub parameters: Value,
    pub dry_run: bool,
    pub created_by: String,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The runner that claimed it last.
    pub claimed_by: Option<String>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// The index of the first step not yet done: where a retry starts.
    pub next_step: usize,
    /// Outputs of the steps done, by step id (redacted).
    pub step_outputs: Value,
    /// The rendered `spec.output` of a completed task.
    pub output: Option<Value>,
    pub error: Option<String>,
    pub cancel_requested: bool,
}

/// One event of a task; `id` orders all events and is the resume cursor.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskEventRecord {
    pub id: i64,
    pub task_id: String,
    pub created_at: DateTime<Utc>,
    pub body: Value,
}

/// Which tasks to list, newest first.
#[derive(Clone, Debug, Default)]
pub struct TaskQuery {
    pub created_by: Option<String>,
    pub template_ref: Option<EntityRef>,
    pub status: Option<TaskStatus>,
    /// Only tasks older than this one (the previous page's last), for paging.
    pub before: Option<(DateTime<Utc>, String)>,
    pub limit: u64,
}

/// How a task ended, as its runner records it.
#[derive(Clone, Debug)]
pub struct TaskEnd {
    pub status: TaskStatus,
    pub next_step: usize,
    pub step_outputs: Value,
    pub output: Option<Value>,
    pub error: Option<String>,
}

fn to_record(row: task_row::Model) -> Result<TaskRecord, StoreError> {
    Ok(TaskRecord {
        status: TaskStatus::parse(&row.status)?,
        id: row.id,
        template_ref: stored_ref(&row.template_ref)?,
        parameters: row.parameters,
        dry_run: row.dry_run,
        created_by: row.created_by,
        idempotency_key: row.idempotency_key,
        created_at: row.created_at,
        updated_at: row.updated_at,
        claimed_by: row.claimed_by,
        heartbeat_at: row.heartbeat_at,
        next_step: usize::try_from(row.next_step).unwrap_or_default(),
        step_outputs: row.step_outputs,
        output: row.output,
        error: row.error,
        cancel_requested: row.cancel_requested,
    })
}

impl TaskStore {
    /// Stores a new open task; when `created_by` already made one with the
    /// same idempotency key, returns that one instead (and false).
    pub async fn create_task(&self, task: NewTask) -> Result<(TaskRecord, bool), StoreError> {
        let txn = self.db.begin().await?;
        // It reads the idempotency key before writing.
        crate::commit::write_up_front(&txn).await?;
        if let Some(key) = &task.idempotency_key {
            let existing = task_row::Entity::find()
                .filter(task_row::Column::CreatedBy.eq(&task.created_by))
                .filter(task_row::Column::IdempotencyKey.eq(key))
                .one(&txn)
                .await?;
            if let Some(existing) = existing {
                return Ok((to_record(existing)?, false));
            }
        }
        let now = Utc::now();
        let (created_by, idempotency_key) = (task.created_by.clone(), task.idempotency_key.clone());
        let row = task_row::ActiveModel {
            id: Set(task.id),
            template_ref: Set(task.template_ref.to_string()),
            status: Set(TaskStatus::Open.as_str().to_owned()),
            parameters: Set(task.parameters),
            dry_run: Set(task.dry_run),
            created_by: Set(task.created_by),
            idempotency_key: Set(task.idempotency_key),
            created_at: Set(now),
            updated_at: Set(now),
            claimed_by: Set(None),
            heartbeat_at: Set(None),
            next_step: Set(0),
            step_outputs: Set(Value::Object(serde_json::Map::new())),
            output: Set(None),
            error: Set(None),
            cancel_requested: Set(false),
        };
        let inserted = match row.insert(&txn).await {
            Ok(inserted) => inserted,
            // Another create with the same key committed first: return its task.
            Err(error) if matches!(error.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) => {
                drop(txn);
                let existing = task_row::Entity::find()
                    .filter(task_row::Column::CreatedBy.eq(&created_by))
                    .filter(task_row::Column::IdempotencyKey.eq(idempotency_key.clone()))
                    .one(&self.db)
                    .await?;
                return match existing {
                    Some(existing) => Ok((to_record(existing)?, false)),
                    None => Err(error.into()),
                };
            }
            Err(error) => return Err(error.into()),
        };
        let record = to_record(inserted)?;
        txn.commit().await?;
        Ok((record, true))
    }

    pub async fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        task_row::Entity::find_by_id(id.to_owned()).one(&self.db).await?.map(to_record).transpose()
    }

    /// Tasks matching `query`, newest first.
    pub async fn tasks(&self, query: &TaskQuery) -> Result<Vec<TaskRecord>, StoreError> {
        let mut select = task_row::Entity::find();
        if let Some(created_by) = &query.created_by {
            select = select.filter(task_row::Column::CreatedBy.eq(created_by));
        }
        if let Some(template_ref) = &query.template_ref {
            select = select.filter(task_row::Column::TemplateRef.eq(template_ref.as_str()));
        }
        if let Some(status) = query.status {
            select = select.filter(task_row::Column::Status.eq(status.as_str()));
        }
        if let Some((created_at, id)) = &query.before {
            select = select.filter(
                Condition::any().add(task_row::Column::CreatedAt.lt(*created_at)).add(
                    Condition::all()
                        .add(task_row::Column::CreatedAt.eq(*created_at))
                        .add(task_row::Column::Id.lt(id.clone())),
                ),
            );
        }
        let rows = select
            .order_by_desc(task_row::Column::CreatedAt)
            .order_by_desc(task_row::Column::Id)
            .limit(query.limit)
            .all(&self.db)
            .await?;
        rows.into_iter().map(to_record).collect()
    }

    /// How many tasks there are in each status.
    pub async fn task_counts_by_status(&self) -> Result<Vec<(TaskStatus, u64)>, StoreError> {
        let rows = task_row::Entity::find()
            .select_only()
            .column(task_row::Column::Status)
            .column_as(task_row::Column::Id.count(), "n")
            .group_by(task_row::Column::Status)
            .into_tuple::<(String, i64)>()
            .all(&self.db)
            .await?;
        rows.into_iter()
            .map(|(status, n)| Ok((TaskStatus::parse(&status)?, u64::try_from(n).unwrap_or_default())))
            .collect()
    }

    /// Claims an open task for `runner`: true for exactly one caller, however
    /// many replicas try at once.
    pub async fn claim_task(&self, id: &str, runner: &str) -> Result<bool, StoreError> {
        let now = Utc::now();
        let result = task_row::Entity::update_many()
            .col_expr(task_row::Column::Status, Expr::value(TaskStatus::Processing.as_str()))
            .col_expr(task_row::Column::ClaimedBy, Expr::value(runner))
            .col_expr(task_row::Column::HeartbeatAt, Expr::value(now))
            .col_expr(task_row::Column::UpdatedAt, Expr::value(now))
            .filter(task_row::Column::Id.eq(id))
            .filter(task_row::Column::Status.eq(TaskStatus::Open.as_str()))
            .filter(task_row::Column::CancelRequested.eq(false))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Records that `runner` still runs the task; returns whether a cancel
    /// was requested meanwhile, or None when the task is no longer this
    /// runner's (swept as abandoned, and perhaps claimed again): it must stop.
    pub async fn heartbeat_task(&self, id: &str, runner: &str) -> Result<Option<bool>, StoreError> {
        let result = task_row::Entity::update_many()
            .col_expr(task_row::Column::HeartbeatAt, Expr::value(Utc::now()))
            .filter(task_row::Column::Id.eq(id))
            .filter(task_row::Column::ClaimedBy.eq(runner))
            .filter(task_row::Column::Status.eq(TaskStatus::Processing.as_str()))
            .exec(&self.db)
            .await?;
        if result.rows_affected == 0 {
            return Ok(None);
        }
        Ok(Some(self.task(id).await?.is_some_and(|task| task.cancel_requested)))
    }

    /// Appends an event to a task; returns its id (the resume cursor).
    pub async fn append_task_event(&self, task_id: &str, body: Value) -> Result<i64, StoreError> {
        let row = task_event_row::ActiveModel {
            task_id: Set(task_id.to_owned()),
            created_at: Set(Utc::now()),
            body: Set(body),
            ..Default::default()
        };
        Ok(task_event_row::Entity::insert(row).exec(&self.db).await?.last_insert_id)
    }

    /// A task's events after the cursor `after` (0: from the first), oldest first.
    pub async fn task_events(&self, task_id: &str, after: i64, limit: u64) -> Result<Vec<TaskEventRecord>, StoreError> {
        let rows = task_event_row::Entity::find()
            .filter(task_event_row::Column::TaskId.eq(task_id))
            .filter(task_event_row::Column::Id.gt(after))
            .order_by_asc(task_event_row::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| TaskEventRecord { id: row.id, task_id: row.task_id, created_at: row.created_at, body: row.body })
            .collect())
    }

    /// Records how a task `runner` claimed ended; false when it is not that
    /// runner's any more (swept as abandoned meanwhile).
    pub async fn finish_task(&self, id: &str, runner: &str, end: TaskEnd) -> Result<bool, StoreError> {
        let result = task_row::Entity::update_many()
            .col_expr(task_row::Column::Status, Expr::value(end.status.as_str()))
            .col_expr(task_row::Column::NextStep, Expr::value(i32::try_from(end.next_step).unwrap_or(i32::MAX)))
            .col_expr(task_row::Column::StepOutputs, Expr::value(end.step_outputs))
            .col_expr(task_row::Column::Output, Expr::value(end.output))
            .col_expr(task_row::Column::Error, Expr::value(end.error))
            .col_expr(task_row::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(task_row::Column::Id.eq(id))
            .filter(task_row::Column::ClaimedBy.eq(runner))
            .filter(task_row::Column::Status.eq(TaskStatus::Processing.as_str()))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Asks for a task to stop: an open one is cancelled at once, a running
    /// one is flagged for its runner. None when there is no such task.
    pub async fn request_task_cancel(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let now = Utc::now();
        task_row::Entity::update_many()
            .col_expr(task_row::Column::Status, Expr::value(TaskStatus::Cancelled.as_str()))
            .col_expr(task_row::Column::Error, Expr::value("cancelled before it started"))
            .col_expr(task_row::Column::UpdatedAt, Expr::value(now))
            .filter(task_row::Column::Id.eq(id))
            .filter(task_row::Column::Status.eq(TaskStatus::Open.as_str()))
            .exec(&self.db)
            .await?;
        task_row::Entity::update_many()
            .col_expr(task_row::Column::CancelRequested, Expr::value(true))
            .col_expr(task_row::Column::UpdatedAt, Expr::value(now))
            .filter(task_row::Column::Id.eq(id))
            .filter(task_row::Column::Status.eq(TaskStatus::Processing.as_str()))
            .exec(&self.db)
            .await?;
        self.task(id).await
    }

    /// Opens a failed or cancelled task again, to run from its `next_step`;
    /// false when it is in another state.
    pub async fn reopen_task(&self, id: &str) -> Result<bool, StoreError> {
        let result = task_row::Entity::update_many()
            .col_expr(task_row::Column::Status, Expr::value(TaskStatus::Open.as_str()))
            .col_expr(task_row::Column::Error, Expr::value(Option::<String>::None))
            .col_expr(task_row::Column::CancelRequested, Expr::value(false))
            .col_expr(task_row::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(task_row::Column::Id.eq(id))
            .filter(task_row::Column::Status.is_in([TaskStatus::Failed.as_str(), TaskStatus::Cancelled.as_str()]))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Fails the tasks whose runner has not heartbeaten since `stale_before`
    /// (its server stopped or lost the database), and those still open from
    /// before it (their creator, which holds their secrets, is gone). Returns
    /// their ids.
    pub async fn fail_abandoned_tasks(&self, stale_before: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        let abandoned = Condition::any()
            .add(
                Condition::all()
                    .add(task_row::Column::Status.eq(TaskStatus::Processing.as_str()))
                    .add(task_row::Column::HeartbeatAt.lt(stale_before)),
            )
            .add(
                Condition::all()
                    .add(task_row::Column::Status.eq(TaskStatus::Open.as_str()))
                    .add(task_row::Column::UpdatedAt.lt(stale_before)),
            );
        let ids: Vec<String> = task_row::Entity::find()
            .select_only()
            .column(task_row::Column::Id)
            .filter(abandoned.clone())
            .into_tuple()
            .all(&self.db)
            .await?;
        if ids.is_empty() {
            return Ok(ids);
        }
        task_row::Entity::update_many()
            .col_expr(task_row::Column::Status, Expr::value(TaskStatus::Failed.as_str()))
            .col_expr(
                task_row::Column::Error,
                Expr::value(
                    "the server running this task stopped before it finished; retry it to run the remaining steps",
                ),
            )
            .col_expr(task_row::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(task_row::Column::Id.is_in(ids.clone()))
            .filter(abandoned)
            .exec(&self.db)
            .await?;
        Ok(ids)
    }
}
