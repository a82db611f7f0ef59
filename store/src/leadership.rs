//! Which replica ingests, and which evaluates governance rules: with several
//! servers on one PostgreSQL database, only the holder of a session advisory
//! lock runs the providers' schedule (or the rules' evaluation).
//! The lock lives on a connection of its own, so it goes when the process
//! dies or the connection drops, and another replica takes over at its next
//! try. SQLite is one file on one host: its one process always leads.

use sea_orm::DatabaseBackend;
use sea_orm::sqlx::Connection as _;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::connection::Store;
use crate::error::StoreError;

/// The key of the ingestion leader's advisory lock ("ingest" in ASCII).
const LEADER_LOCK: i64 = 0x0000_696e_6765_7374;
/// The key of the governance evaluator's advisory lock ("govern" in ASCII).
const GOVERNANCE_LOCK: i64 = 0x0000_676f_7665_726e;

/// This process's claim to lead ingestion.
pub struct Leadership {
    /// None on SQLite: always the leader.
    postgres: Option<PostgresClaim>,
    /// What is led, for the log.
    role: &'static str,
}

struct PostgresClaim {
    options: PgConnectOptions,
    lock: i64,
    /// The connection holding the lock, when this process holds it.
    holder: Option<PgConnection>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let leading = self.postgres.as_ref().is_none_or(|claim| claim.holder.is_some());
        formatter.debug_struct("Leadership").field("leading", &leading).finish()
    }
}

impl Store {
    /// A claim to lead ingestion; [`Leadership::try_lead`] decides each time.
    pub fn ingestion_leadership(&self) -> Leadership {
        self.leadership(LEADER_LOCK, "ingestion")
    }

    /// A claim to evaluate governance rules, independent of ingestion's.
    pub fn governance_leadership(&self) -> Leadership {
        self.leadership(GOVERNANCE_LOCK, "governance")
    }

    fn leadership(&self, lock: i64, role: &'static str) -> Leadership {
        let postgres = (self.db.get_database_backend() == DatabaseBackend::Postgres).then(|| PostgresClaim {
            options: (*self.db.get_postgres_connection_pool().connect_options()).clone(),
            lock,
            holder: None,
        });
        Leadership { postgres, role }
    }
}

impl Leadership {
    /// Whether this process leads now: it keeps the lock while its
    /// connection answers, and otherwise tries to take it.
    pub async fn try_lead(&mut self) -> Result<bool, StoreError> {
        let Some(claim) = &mut self.postgres else { return Ok(true) };
        let custom = |error: sea_orm::sqlx::Error| StoreError::Database(sea_orm::DbErr::Custom(error.to_string()));
        if let Some(holder) = &mut claim.holder {
            if holder.ping().await.is_ok() {
                return Ok(true);
            }
            // The connection broke, and the lock with it: another replica may lead now.
            tracing::warn!(role = self.role, "the leader's connection broke; claiming again");
            claim.holder = None;
        }
        let mut connection = PgConnection::connect_with(&claim.options).await.map_err(custom)?;
        let acquired: bool = sea_orm::sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(claim.lock)
            .fetch_one(&mut connection)
            .await
            .map_err(custom)?;
        if acquired {
            tracing::info!(role = self.role, "this process now leads");
            claim.holder = Some(connection);
        } else {
            let _ = connection.close().await;
        }
        Ok(acquired)
    }
}
