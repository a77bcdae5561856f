//! Idempotency-Key records: begin, complete, release, purge: the `IdempotencyKeys` part of the store, and its SQL, expanded for each backend by
//! `sql::impl_store!` (SQLite and PostgreSQL accept the same statements).

#[allow(unused_imports)]
use crate::*;
#[allow(unused_imports)]
use payonce_core::{AppId, AttemptId, ChannelName, OrderId, Timestamp};

#[async_trait::async_trait]
pub trait IdempotencyKeys: Send + Sync {
    async fn idempotency_begin(
        &self,
        key: &IdempotencyKey,
        now: Timestamp,
        lock_ms: i64,
    ) -> Result<IdempotencyBegin>;
    async fn idempotency_complete(
        &self,
        key: &IdempotencyKey,
        response: &StoredResponse,
    ) -> Result<()>;
    async fn idempotency_release(&self, key: &IdempotencyKey) -> Result<()>;
    /// Deletes keys created before `before`; returns how many.
    async fn idempotency_purge(&self, before: Timestamp) -> Result<u64>;
}

/// The SQL of `IdempotencyKeys` for one backend (see `sql::impl_store!` for the parameters).
macro_rules! idempotency_sql {
    ($Store:ty, $Db:ty, backend = $backend:expr, for_update = $for_update:literal, skip_locked = $skip_locked:literal, migrations = $migrations:expr) => {
        #[async_trait::async_trait]
        impl $crate::IdempotencyKeys for $Store {
            async fn idempotency_begin(
                &self,
                k: &$crate::IdempotencyKey,
                now: payonce_core::Timestamp,
                lock_ms: i64,
            ) -> $crate::Result<$crate::IdempotencyBegin> {
                use sqlx::Row;
                use $crate::{IdempotencyBegin, StoredResponse};
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(
                    "INSERT INTO idempotency_keys (app_id, idem_key, fingerprint, state, locked_until, created_at) \
                     VALUES ($1, $2, $3, 'in_flight', $4, $5) ON CONFLICT (app_id, idem_key) DO NOTHING",
                )
                .bind(k.app_id.as_str())
                .bind(&k.key)
                .bind(&k.fingerprint)
                .bind(now.0 + lock_ms)
                .bind(now.0)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 1 {
                    tx.commit().await?;
                    return Ok(IdempotencyBegin::Proceed);
                }
                let r = sqlx::query(
                    "SELECT fingerprint, state, locked_until, response_status, response_type, response_body \
                     FROM idempotency_keys WHERE app_id = $1 AND idem_key = $2",
                )
                .bind(k.app_id.as_str())
                .bind(&k.key)
                .fetch_one(&mut *tx)
                .await?;
                let fingerprint: String = r.try_get("fingerprint")?;
                let state: String = r.try_get("state")?;
                let locked_until: i64 = r.try_get("locked_until")?;
                let answer = if fingerprint != k.fingerprint {
                    IdempotencyBegin::Mismatch
                } else if state == "done" {
                    IdempotencyBegin::Replay(StoredResponse {
                        status: r.try_get::<i32, _>("response_status")? as u16,
                        content_type: r.try_get("response_type")?,
                        body: r.try_get("response_body")?,
                    })
                } else if locked_until <= now.0 {
                    // The first holder died mid-request; its lock expired. Take over, fenced by
                    // the old lock value so two takers cannot both win.
                    let taken = sqlx::query(
                        "UPDATE idempotency_keys SET locked_until = $1 WHERE app_id = $2 AND idem_key = $3 \
                         AND state = 'in_flight' AND locked_until = $4",
                    )
                    .bind(now.0 + lock_ms)
                    .bind(k.app_id.as_str())
                    .bind(&k.key)
                    .bind(locked_until)
                    .execute(&mut *tx)
                    .await?;
                    if taken.rows_affected() == 1 { IdempotencyBegin::Proceed } else { IdempotencyBegin::InFlight }
                } else {
                    IdempotencyBegin::InFlight
                };
                tx.commit().await?;
                Ok(answer)
            }

            async fn idempotency_complete(&self, k: &$crate::IdempotencyKey, resp: &$crate::StoredResponse) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "UPDATE idempotency_keys SET state = 'done', response_status = $1, response_type = $2, response_body = $3 \
                     WHERE app_id = $4 AND idem_key = $5 AND fingerprint = $6",
                )
                .bind(resp.status as i32)
                .bind(&resp.content_type)
                .bind(&resp.body)
                .bind(k.app_id.as_str())
                .bind(&k.key)
                .bind(&k.fingerprint)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn idempotency_release(&self, k: &$crate::IdempotencyKey) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query("DELETE FROM idempotency_keys WHERE app_id = $1 AND idem_key = $2 AND state = 'in_flight'")
                    .bind(k.app_id.as_str())
                    .bind(&k.key)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn idempotency_purge(&self, before: payonce_core::Timestamp) -> $crate::Result<u64> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                    .bind(before.0)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(crate) use idempotency_sql;
