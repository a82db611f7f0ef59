//! Multi-row inserts sized to each backend. SQLite takes multi-row VALUES in
//! chunks under its bind-parameter limit. PostgreSQL takes one array per
//! column through UNNEST: four parameters per statement whatever the row count,
//! instead of VALUES lists of thousands of parameters that PostgreSQL must
//! parse and plan (measured on 10,000 entities: entity rows 2.6 s with VALUES;
//! the same rows copied server-side take 0.14 s).

use std::collections::HashMap;

use sea_orm::sea_query::extension::postgres::PgFunc;
use sea_orm::sea_query::{Expr, ExprTrait, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QueryResult, QuerySelect, Statement, Value as SeaValue,
};

use crate::error::StoreError;
use crate::models::{change_row, entity_row, facet_row, relation_row};

/// Rows per multi-row VALUES insert: well under PostgreSQL's 65,535 bind
/// parameters and SQLite's 32,766 for the widest table (19 columns).
pub(crate) const VALUES_CHUNK: usize = 500;

/// Refs per lookup statement. Each statement costs a round trip and, on
/// PostgreSQL here, about 30 ms inside a long transaction whatever its size
/// (measured: 20 lookups of 500 refs 0.67 s, 2 of 5,000 refs 0.06 s), so
/// lookups are few and large, under SQLite's 32,766 parameters.
pub(crate) const REF_CHUNK: usize = 5_000;

/// Rows per UNNEST insert: bounded only by the message size.
const UNNEST_CHUNK: usize = 20_000;

fn is_postgres(txn: &DatabaseTransaction) -> bool {
    txn.get_database_backend() == DbBackend::Postgres
}

// The helpers below move values out of the rows (leaving them unset)
// rather than clone them: the rows are written once, and cloning every
// entity body and index row cost as much as building them.

fn take<T: Clone + Default + Into<SeaValue>>(value: &mut ActiveValue<T>) -> T {
    value.take().unwrap_or_default()
}

/// A copy of a row's value, for a value every row of a chunk shares (passed
/// once) or one needed after the row is written.
fn copied<T: Clone + Default + Into<SeaValue>>(value: &ActiveValue<T>) -> T {
    value.clone().take().unwrap_or_default()
}

/// Optional text as an array element: PostgreSQL arrays of nullable text are
/// passed with `''` for null and turned back with NULLIF in the statement.
fn text_or_empty(value: &mut ActiveValue<Option<String>>) -> String {
    value.take().flatten().unwrap_or_default()
}

/// Optional JSON as an array element: JSON null stands for SQL NULL and is
/// turned back with NULLIF in the statement.
fn json_or_null(value: &mut ActiveValue<Option<serde_json::Value>>) -> SeaValue {
    SeaValue::Json(Some(Box::new(value.take().flatten().unwrap_or_default())))
}

fn column<T>(rows: &mut [T], get: &fn(&mut T) -> SeaValue) -> SeaValue {
    let values: Vec<SeaValue> = rows.iter_mut().map(get).collect();
    let array_type = match values.first() {
        Some(SeaValue::BigInt(_)) => sea_orm::sea_query::ArrayType::BigInt,
        Some(SeaValue::Json(_)) => sea_orm::sea_query::ArrayType::Json,
        _ => sea_orm::sea_query::ArrayType::String,
    };
    SeaValue::Array(array_type, Some(Box::new(values)))
}

/// A parameter of an UNNEST insert, in placeholder order.
enum Parameter<T> {
    /// One array: every row's value, moved out of the row.
    Column(fn(&mut T) -> SeaValue),
    /// A value every row of a statement shares, passed once (read from the
    /// statement's first row).
    Shared(fn(&T) -> SeaValue),
}

/// How PostgreSQL inserts a table's rows: one statement per chunk of
/// [`UNNEST_CHUNK`] rows, one array per column.
struct UnnestInsert<T: 'static> {
    sql: &'static str,
    parameters: &'static [Parameter<T>],
    /// Whether the statement returns rows (read with the query, not executed).
    returning: bool,
}

impl<T> UnnestInsert<T> {
    /// Runs the insert over `rows`; returns the rows the statements return.
    async fn run(&self, txn: &DatabaseTransaction, rows: &mut [T]) -> Result<Vec<QueryResult>, StoreError> {
        let mut returned = Vec::new();
        for chunk in rows.chunks_mut(UNNEST_CHUNK) {
            let values: Vec<SeaValue> = self
                .parameters
                .iter()
                .map(|parameter| match parameter {
                    Parameter::Column(get) => column(chunk, get),
                    Parameter::Shared(get) => get(&chunk[0]),
                })
                .collect();
            let statement = Statement::from_sql_and_values(DbBackend::Postgres, self.sql, values);
            if self.returning {
                returned.extend(txn.query_all_raw(statement).await?);
            } else {
                txn.execute_raw(statement).await?;
            }
        }
        Ok(returned)
    }
}

/// Inserts rows on SQLite in multi-row VALUES of `chunk_size` rows.
async fn insert_values<A>(txn: &DatabaseTransaction, rows: &mut [A], chunk_size: usize) -> Result<(), StoreError>
where
    A: ActiveModelTrait + Default + Send,
{
    for chunk in rows.chunks_mut(chunk_size) {
        A::Entity::insert_many(chunk.iter_mut().map(std::mem::take)).exec_without_returning(txn).await?;
    }
    Ok(())
}

const ENTITIES: UnnestInsert<entity_row::ActiveModel> = UnnestInsert {
    sql: "INSERT INTO entities (entity_ref, kind, namespace, name, uid, etag, body, owner_ref, lifecycle, \
          spec_type, system_ref, title, search_text, provider, location_key, errors, violations, created_at, updated_at) \
          SELECT r, k, ns, n, u, e, b, NULLIF(o, ''), NULLIF(l, ''), NULLIF(t, ''), NULLIF(s, ''), \
          NULLIF(ti, ''), st, $14, NULLIF(lk, ''), NULL, NULLIF(v, 'null'::jsonb), $15, $15 \
          FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], \
          $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $16::text[], $17::jsonb[]) \
          AS input(r, k, ns, n, u, e, b, o, l, t, s, ti, st, lk, v) \
          RETURNING id, entity_ref",
    parameters: &[
        Parameter::Column(|row| take(&mut row.entity_ref).into()),
        Parameter::Column(|row| take(&mut row.kind).into()),
        Parameter::Column(|row| take(&mut row.namespace).into()),
        Parameter::Column(|row| take(&mut row.name).into()),
        Parameter::Column(|row| take(&mut row.uid).into()),
        Parameter::Column(|row| take(&mut row.etag).into()),
        Parameter::Column(|row| SeaValue::Json(Some(Box::new(take(&mut row.body))))),
        Parameter::Column(|row| text_or_empty(&mut row.owner_ref).into()),
        Parameter::Column(|row| text_or_empty(&mut row.lifecycle).into()),
        Parameter::Column(|row| text_or_empty(&mut row.spec_type).into()),
        Parameter::Column(|row| text_or_empty(&mut row.system_ref).into()),
        Parameter::Column(|row| text_or_empty(&mut row.title).into()),
        Parameter::Column(|row| take(&mut row.search_text).into()),
        Parameter::Shared(|row| copied(&row.provider).into()),
        Parameter::Shared(|row| copied(&row.created_at).into()),
        Parameter::Column(|row| text_or_empty(&mut row.location_key).into()),
        Parameter::Column(|row| json_or_null(&mut row.violations)),
    ],
    returning: true,
};

const RELATIONS: UnnestInsert<relation_row::ActiveModel> = UnnestInsert {
    sql: "INSERT INTO relations (origin_id, source_ref, relation_type, target_ref) \
          SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[])",
    parameters: &[
        Parameter::Column(|row| take(&mut row.origin_id).into()),
        Parameter::Column(|row| take(&mut row.source_ref).into()),
        Parameter::Column(|row| take(&mut row.relation_type).into()),
        Parameter::Column(|row| take(&mut row.target_ref).into()),
    ],
    returning: false,
};

const FACETS: UnnestInsert<facet_row::ActiveModel> = UnnestInsert {
    sql: "INSERT INTO entity_facets (entity_id, key, value) SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[])",
    parameters: &[
        Parameter::Column(|row| take(&mut row.entity_id).into()),
        Parameter::Column(|row| take(&mut row.key).into()),
        Parameter::Column(|row| take(&mut row.value).into()),
    ],
    returning: false,
};

/// In input order (`WITH ORDINALITY`), so sequence numbers follow it.
const CHANGES: UnnestInsert<change_row::ActiveModel> = UnnestInsert {
    sql: "INSERT INTO change_log (created_at, entity_ref, change_type, etag, body, provider, changed_fields, previous_body) \
          SELECT $1, r, c, NULLIF(e, ''), NULLIF(b, 'null'::jsonb), $2, NULLIF(f, 'null'::jsonb), NULLIF(p, 'null'::jsonb) \
          FROM UNNEST($3::text[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[], $8::jsonb[]) \
          WITH ORDINALITY AS input(r, c, e, b, f, p, position) \
          ORDER BY position",
    parameters: &[
        Parameter::Shared(|row| copied(&row.created_at).into()),
        Parameter::Shared(|row| copied(&row.provider).into()),
        Parameter::Column(|row| take(&mut row.entity_ref).into()),
        Parameter::Column(|row| take(&mut row.change_type).into()),
        Parameter::Column(|row| text_or_empty(&mut row.etag).into()),
        Parameter::Column(|row| json_or_null(&mut row.body)),
        Parameter::Column(|row| json_or_null(&mut row.changed_fields)),
        Parameter::Column(|row| json_or_null(&mut row.previous_body)),
    ],
    returning: false,
};

/// Inserts entity rows and returns their ids by ref.
pub(crate) async fn insert_entities(
    txn: &DatabaseTransaction,
    rows: &mut [entity_row::ActiveModel],
) -> Result<HashMap<String, i64>, StoreError> {
    let mut ids = HashMap::with_capacity(rows.len());
    if is_postgres(txn) {
        for row in ENTITIES.run(txn, rows).await? {
            ids.insert(row.try_get::<String>("", "entity_ref")?, row.try_get::<i64>("", "id")?);
        }
        return Ok(ids);
    }
    for chunk in rows.chunks_mut(VALUES_CHUNK) {
        let refs: Vec<String> = chunk.iter().map(|row| copied(&row.entity_ref)).collect();
        insert_values(txn, chunk, VALUES_CHUNK).await?;
        let found = entity_row::Entity::find()
            .select_only()
            .columns([entity_row::Column::EntityRef, entity_row::Column::Id])
            .filter(entity_row::Column::EntityRef.is_in(refs))
            .into_tuple::<(String, i64)>()
            .all(txn)
            .await?;
        ids.extend(found);
    }
    Ok(ids)
}

pub(crate) async fn insert_relations(
    txn: &DatabaseTransaction,
    rows: &mut [relation_row::ActiveModel],
) -> Result<(), StoreError> {
    if is_postgres(txn) {
        RELATIONS.run(txn, rows).await?;
        return Ok(());
    }
    // Four columns a row: four times the rows of the widest table fit.
    insert_values(txn, rows, VALUES_CHUNK * 4).await
}

pub(crate) async fn insert_facets(
    txn: &DatabaseTransaction,
    rows: &mut [facet_row::ActiveModel],
) -> Result<(), StoreError> {
    if is_postgres(txn) {
        FACETS.run(txn, rows).await?;
        return Ok(());
    }
    insert_values(txn, rows, VALUES_CHUNK * 4).await
}

/// Appends change-log rows in order, so sequence numbers follow the input.
pub(crate) async fn insert_changes(
    txn: &DatabaseTransaction,
    rows: &mut [change_row::ActiveModel],
) -> Result<(), StoreError> {
    if is_postgres(txn) {
        CHANGES.run(txn, rows).await?;
        return Ok(());
    }
    insert_values(txn, rows, VALUES_CHUNK).await
}

/// `column IN (values)` for many values: on PostgreSQL one array parameter
/// (`= ANY($1)`), since planning IN lists of hundreds of parameters costs tens
/// of milliseconds a statement there; on SQLite a plain IN list.
pub(crate) fn one_of<C>(backend: DbBackend, column: C, values: impl IntoIterator<Item = String>) -> SimpleExpr
where
    C: ColumnTrait,
{
    let values: Vec<String> = values.into_iter().collect();
    if backend == DbBackend::Postgres {
        Expr::col(column).eq(PgFunc::any(Expr::val(SeaValue::from(values))))
    } else {
        column.is_in(values)
    }
}

/// `column` is one of `values`, with one parameter whatever their number: an
/// array on PostgreSQL, a JSON array read by `json_each` on SQLite, so that
/// neither backend parses and plans thousands of placeholders. Placeholders
/// differ: sea-query reads `$1` on PostgreSQL and `?` on SQLite.
pub(crate) fn in_set(backend: DbBackend, column: &str, values: &[String]) -> SimpleExpr {
    if backend == DbBackend::Postgres {
        return Expr::cust_with_values(format!("{column} = ANY($1)"), [SeaValue::from(values.to_vec())]);
    }
    let json = serde_json::to_string(values).unwrap_or_else(|_| "[]".into());
    Expr::cust_with_values(format!("{column} IN (SELECT value FROM json_each(?))"), [SeaValue::from(json)])
}
