//! API tokens as stored: a hash of each secret (never the secret), its
//! scopes, expiry, revocation and last use. Making and checking secrets is
//! the API's business; this module only keeps the records.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait};

use crate::audit::{AuditDecision, AuditEntry};

use crate::error::StoreError;
use crate::handles::AccessStore;
use crate::models::token_row;

/// One API token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: i64,
    /// Unique, chosen by whoever created it; how it is revoked.
    pub name: String,
    /// The part of the token that finds its record (not secret).
    pub public_id: String,
    /// A hash of the secret part, as the API computes it.
    pub secret_hash: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A token to store.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub name: String,
    pub public_id: String,
    pub secret_hash: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

fn audit_entry(actor: &str, operation: &str, name: &str, result: String) -> AuditEntry {
    AuditEntry {
        principal: actor.to_owned(),
        token_id: None,
        operation: operation.to_owned(),
        targets: vec![format!("token:{name}")],
        decision: AuditDecision::Allowed,
        result,
        request_id: None,
    }
}

fn to_record(row: token_row::Model) -> TokenRecord {
    let scopes = row.scopes.as_array().into_iter().flatten().filter_map(|scope| scope.as_str().map(str::to_owned));
    TokenRecord {
        id: row.id,
        name: row.name,
        public_id: row.public_id,
        secret_hash: row.secret_hash,
        scopes: scopes.collect(),
        created_at: row.created_at,
        expires_at: row.expires_at,
        revoked_at: row.revoked_at,
        last_used_at: row.last_used_at,
    }
}

impl AccessStore {
    /// Stores a new token, audited as done by `actor`; [`StoreError::NameTaken`]
    /// when its name is in use (revoked tokens keep their names, so a name is
    /// never reused silently).
    pub async fn create_token(&self, token: NewToken, actor: &str) -> Result<TokenRecord, StoreError> {
        let txn = self.db.begin().await?;
        // It reads the name before writing: on SQLite a write committed in
        // between (a snapshot, scores) would fail the insert at once.
        crate::commit::write_up_front(&txn).await?;
        let taken = token_row::Entity::find().filter(token_row::Column::Name.eq(&token.name)).one(&txn).await?;
        if taken.is_some() {
            return Err(StoreError::NameTaken(token.name));
        }
        let audit = audit_entry(actor, "token.create", &token.name, format!("scopes {}", token.scopes.join(",")));
        let row = token_row::ActiveModel {
            name: Set(token.name),
            public_id: Set(token.public_id),
            secret_hash: Set(token.secret_hash),
            scopes: Set(serde_json::json!(token.scopes)),
            created_at: Set(Utc::now()),
            expires_at: Set(token.expires_at),
            revoked_at: Set(None),
            last_used_at: Set(None),
            ..Default::default()
        };
        let record = to_record(row.insert(&txn).await?);
        crate::audit::append(&txn, &AuditEntry { token_id: Some(record.id), ..audit }).await?;
        txn.commit().await?;
        Ok(record)
    }

    /// The token with this public id, revoked or not.
    pub async fn token_by_public_id(&self, public_id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = token_row::Entity::find().filter(token_row::Column::PublicId.eq(public_id)).one(&self.db).await?;
        Ok(row.map(to_record))
    }

    /// Every token, oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = token_row::Entity::find().order_by_asc(token_row::Column::Id).all(&self.db).await?;
        Ok(rows.into_iter().map(to_record).collect())
    }

    /// Revokes the token named `name`, audited as done by `actor`; false when
    /// there is none or it was already revoked.
    pub async fn revoke_token(&self, name: &str, actor: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin().await?;
        let result = token_row::Entity::update_many()
            .col_expr(token_row::Column::RevokedAt, sea_orm::sea_query::Expr::value(Utc::now()))
            .filter(token_row::Column::Name.eq(name))
            .filter(token_row::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        let revoked = result.rows_affected > 0;
        if revoked {
            crate::audit::append(&txn, &audit_entry(actor, "token.revoke", name, "ok".into())).await?;
        }
        txn.commit().await?;
        Ok(revoked)
    }

    /// Records that the token was used at `at`.
    pub async fn touch_token(&self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        token_row::Entity::update_many()
            .col_expr(token_row::Column::LastUsedAt, sea_orm::sea_query::Expr::value(at))
            .filter(token_row::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
