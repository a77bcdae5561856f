//! Idempotency-Key records: begin, complete, release, purge: the `IdempotencyKeys` trait of the
//! store and its implementation for `SqlStore`.

use crate::db::q;
use crate::*;
use payonce_core::Timestamp;

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

#[async_trait::async_trait]
impl IdempotencyKeys for SqlStore {
    async fn idempotency_begin(
        &self,
        k: &IdempotencyKey,
        now: Timestamp,
        lock_ms: i64,
    ) -> Result<IdempotencyBegin> {
        let mut tx = self.begin_write().await?;
        let done = q(
            "INSERT INTO idempotency_keys (app_id, idem_key, fingerprint, state, locked_until, created_at) \
             VALUES ($1, $2, $3, 'in_flight', $4, $5) ON CONFLICT (app_id, idem_key) DO NOTHING",
        )
        .bind(k.app_id.as_str())
        .bind(&k.key)
        .bind(&k.fingerprint)
        .bind(now.0 + lock_ms)
        .bind(now.0)
        .execute(&mut tx)
        .await?;
        if done == 1 {
            tx.commit().await?;
            return Ok(IdempotencyBegin::Proceed);
        }
        let r = q(
            "SELECT fingerprint, state, locked_until, response_status, response_type, response_body \
             FROM idempotency_keys WHERE app_id = $1 AND idem_key = $2",
        )
        .bind(k.app_id.as_str())
        .bind(&k.key)
        .fetch_one::<(String, String, i64, Option<i32>, Option<String>, Option<String>)>(&mut tx)
        .await?;
        let (fingerprint, state, locked_until, status, content_type, body) = r;
        let answer = if fingerprint != k.fingerprint {
            IdempotencyBegin::Mismatch
        } else if state == "done" {
            // `idempotency_complete` writes the three together.
            let (Some(status), Some(content_type), Some(body)) = (status, content_type, body)
            else {
                return Err(crate::sql::corrupt(
                    "idempotency key done without its response",
                    &k.key,
                ));
            };
            IdempotencyBegin::Replay(StoredResponse {
                status: status as u16,
                content_type,
                body,
            })
        } else if locked_until <= now.0 {
            // The first holder died mid-request; its lock expired. Take over, fenced by
            // the old lock value so two takers cannot both win.
            let taken = q(
                "UPDATE idempotency_keys SET locked_until = $1 WHERE app_id = $2 AND idem_key = $3 \
                         AND state = 'in_flight' AND locked_until = $4",
            )
            .bind(now.0 + lock_ms)
            .bind(k.app_id.as_str())
            .bind(&k.key)
            .bind(locked_until)
            .execute(&mut tx)
            .await?;
            if taken == 1 {
                IdempotencyBegin::Proceed
            } else {
                IdempotencyBegin::InFlight
            }
        } else {
            IdempotencyBegin::InFlight
        };
        tx.commit().await?;
        Ok(answer)
    }

    async fn idempotency_complete(&self, k: &IdempotencyKey, resp: &StoredResponse) -> Result<()> {
        let mut tx = self.begin_write().await?;
        q(
            "UPDATE idempotency_keys SET state = 'done', response_status = $1, response_type = $2, response_body = $3 \
             WHERE app_id = $4 AND idem_key = $5 AND fingerprint = $6",
        )
        .bind(resp.status as i32)
        .bind(&resp.content_type)
        .bind(&resp.body)
        .bind(k.app_id.as_str())
        .bind(&k.key)
        .bind(&k.fingerprint)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn idempotency_release(&self, k: &IdempotencyKey) -> Result<()> {
        let mut tx = self.begin_write().await?;
        q("DELETE FROM idempotency_keys WHERE app_id = $1 AND idem_key = $2 AND state = 'in_flight'")
            .bind(k.app_id.as_str())
            .bind(&k.key)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn idempotency_purge(&self, before: Timestamp) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let done = q("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before.0)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(done)
    }
}
