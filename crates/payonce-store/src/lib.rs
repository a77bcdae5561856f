//! Storage for payonce: one `Store` trait, implemented for SQLite (embedded default) and
//! PostgreSQL (several instances). The database is the arbiter of every race: unique keys,
//! a partial unique index for "one active attempt per order", and conditional updates.

mod migrate;
mod model;
mod postgres;
mod sql;
mod sqlite;

pub use model::*;
pub use sql::duplicate_refund_no;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use payonce_core::{AppId, AttemptId, ChannelName, OrderId, Timestamp};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A conditional update found the row changed under it. Callers re-read and decide again.
    #[error("concurrent update of {0}")]
    Contended(&'static str),
    /// The database holds something our own code could not have written.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("unsupported database url (expected sqlite://… or postgres://…)")]
    BadUrl,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// The database cannot be reached or is not serving right now (connection refused or cut,
    /// pool exhausted, server shutting down or starting, too many connections, disk full): the
    /// request changed nothing durable it did not roll back, and retrying later is safe.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Db(e) = self else { return false };
        match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // SQLite primary codes (the low byte of extended ones): BUSY 5, LOCKED 6
                    // (past the busy timeout), IOERR 10, FULL 13.
                    return code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 10 | 13));
                }
                // PostgreSQL: connection exceptions (08…), shutting down / cannot connect now
                // (57P01–57P03), too many connections (53300), disk full (53100), read-only
                // transaction after a fail-over (25006).
                code.starts_with("08") || matches!(code.as_str(), "57P01" | "57P02" | "57P03" | "53300" | "53100" | "25006")
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A short tag that changes whenever any migration's text changes: test harnesses name their
/// migrated template databases with it.
pub fn schema_tag() -> String {
    // FNV-1a: stable across runs and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (v, sql) in migrate::SQLITE.iter().chain(migrate::POSTGRES) {
        for b in v.to_le_bytes().iter().chain(sql.as_bytes()) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Opens the store named by a URL: `sqlite://PATH` or `postgres://…`, and migrates it.
pub async fn open(url: &str, migrate: bool) -> Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
        Arc::new(SqliteStore::connect(url).await?)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Arc::new(PgStore::connect(url, 10).await?)
    } else {
        return Err(StoreError::BadUrl);
    };
    if migrate {
        store.migrate().await?;
    }
    Ok(store)
}

/// Every persistent operation payonce performs. Each method is one transaction (or one read);
/// none is ever held open across a network call.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    async fn migrate(&self) -> Result<()>;
    async fn ping(&self) -> Result<()>;

    // --- apps ---
    async fn insert_app(&self, app: &App) -> Result<()>;
    async fn app_by_secret_hash(&self, secret_hash: &str) -> Result<Option<App>>;

    // --- orders ---
    /// Inserts the order unless `(app, merchant_order_no)` exists; then compares content.
    async fn create_order(&self, order: &Order) -> Result<CreateOrder>;
    async fn order(&self, app: &AppId, id: &OrderId) -> Result<Option<Order>>;
    async fn order_by_merchant_no(&self, app: &AppId, merchant_order_no: &str) -> Result<Option<Order>>;
    async fn attempts_of(&self, order: &OrderId) -> Result<Vec<Attempt>>;
    async fn attempt(&self, id: &AttemptId) -> Result<Option<Attempt>>;
    async fn attempt_by_out_trade_no(&self, channel: ChannelName, out_trade_no: &str) -> Result<Option<Attempt>>;
    /// Attempts whose payment the channel numbered `trade_no` (one, unless something is wrong).
    async fn attempts_with_channel_trade_no(&self, channel: ChannelName, trade_no: &str) -> Result<Vec<Attempt>>;
    async fn events_of(&self, order: &OrderId) -> Result<Vec<EventRow>>;

    // --- the prepay path ---
    /// Writes the intent (attempt `created`) before any channel call, if the order is open and
    /// has no active attempt. The partial unique index makes the race impossible to lose twice.
    async fn begin_attempt(&self, attempt: &Attempt, now: Timestamp) -> Result<BeginAttempt>;
    /// Records what the prepay call returned.
    async fn record_prepay(&self, attempt: &AttemptId, result: &PrepayResult, now: Timestamp) -> Result<Attempt>;
    /// Marks a `created` attempt whose caller never came back (crashed, or stuck past the call
    /// timeout) as `unknown`, so a query settles it.
    /// Stores a re-issued credential of a PENDING attempt (same channel order). `None`: the
    /// attempt is no longer pending (paid, closed…), nothing written.
    async fn refresh_credential(
        &self,
        attempt: &AttemptId,
        credential: &str,
        credential_expires_at: Timestamp,
        payable_until: Timestamp,
        now: Timestamp,
    ) -> Result<Option<Attempt>>;
    /// Stores the data a refund's calls must carry (UnionPay txnTime) before the first call,
    /// unless some is stored already; returns the refund as stored.
    async fn prepare_refund_call(&self, refund: &payonce_core::RefundId, channel_data: &str, now: Timestamp) -> Result<Option<Refund>>;
    async fn mark_stale_created(&self, attempt: &AttemptId, created_before: Timestamp, now: Timestamp) -> Result<Option<Attempt>>;

    /// Before re-asking the channel about an `unknown` attempt: pushes its next check past the
    /// call, and marks it touched, so no query reads "absent" while the re-ask is in flight.
    async fn defer_unknown(&self, attempt: &AttemptId, until: Timestamp, now: Timestamp) -> Result<()>;

    /// The one function that applies a channel outcome — from a notification, a query, a close
    /// answer or reconciliation — to an attempt and its order.
    async fn apply_outcome(&self, outcome: &ChannelOutcome, now: Timestamp) -> Result<OutcomeApplied>;

    /// Closes the order if it is still open and has no active attempt (every channel order
    /// already confirmed closed). Writes `payment.closed` in the same transaction.
    async fn close_order(&self, order: &OrderId, by: payonce_core::order::ClosedBy, now: Timestamp) -> Result<CloseOrder>;

    // --- workers: leases fenced by an owner token ---
    /// Claims attempts whose `next_query_at` is due (active ones, and closed ones still being
    /// watched), leasing them to `owner` for `lease_ms`.
    async fn claim_due_attempts(&self, now: Timestamp, lease_ms: i64, owner: &str, limit: i64) -> Result<Vec<Attempt>>;
    /// Sets the next check of a claimed attempt and releases it — only if `owner` still holds
    /// the lease (a worker that slept past its lease writes nothing).
    async fn finish_attempt_check(&self, id: &AttemptId, owner: &str, next_query_at: Option<Timestamp>, now: Timestamp) -> Result<bool>;
    /// Claims open orders past their expiry.
    async fn claim_expired_orders(&self, now: Timestamp, lease_ms: i64, owner: &str, limit: i64) -> Result<Vec<Order>>;
    async fn release_order(&self, id: &OrderId, owner: &str) -> Result<()>;
    /// Claims refunds due for a channel call or query.
    async fn claim_due_refunds(&self, now: Timestamp, lease_ms: i64, owner: &str, limit: i64) -> Result<Vec<Refund>>;

    // --- refunds ---
    /// Reserves a business refund: the order must be paid, and the amounts of pending, unknown
    /// and succeeded refunds plus this one may not exceed what was paid (checked under the
    /// order's lock).
    async fn create_refund(&self, refund: &Refund, now: Timestamp) -> Result<CreateRefund>;
    async fn refund(&self, app: &AppId, id: &payonce_core::RefundId) -> Result<Option<Refund>>;
    async fn refunds_of(&self, order: &OrderId) -> Result<Vec<Refund>>;
    /// Records a refund call's or query's result; a success updates the order's refunded amount
    /// and status and writes `refund.succeeded`, a failure writes `refund.failed`.
    async fn record_refund(&self, id: &payonce_core::RefundId, result: &RefundResult, channel_data: Option<&str>, now: Timestamp) -> Result<Option<Refund>>;
    /// A refund notification, applied once by its channel event id.
    async fn apply_refund_notice(&self, channel: ChannelName, event_id: &str, out_refund_no: &str, result: &RefundResult, now: Timestamp) -> Result<RefundNoticeApplied>;
    async fn all_refunds(&self) -> Result<Vec<Refund>>;
    async fn insert_abnormal(&self, kind: &str, reference: &str, detail: &str, now: Timestamp) -> Result<()>;

    // --- the outbox: webhook delivery ---
    async fn app(&self, id: &AppId) -> Result<Option<App>>;
    async fn claim_due_events(&self, now: Timestamp, lease_ms: i64, owner: &str, limit: i64) -> Result<Vec<EventRow>>;
    /// Records one delivery attempt and its outcome — only if `owner` still holds the lease.
    async fn record_delivery(&self, owner: &str, attempt: &DeliveryAttempt, outcome: &DeliveryOutcome) -> Result<bool>;
    async fn disable_webhook(&self, app: &AppId, now: Timestamp) -> Result<()>;
    /// Installs a new webhook secret and keeps the current one as the previous.
    async fn rotate_webhook_secret(&self, app: &AppId, new_enc: &str) -> Result<bool>;
    /// Events, newest first, optionally only those in one delivery status.
    async fn list_events(&self, status: Option<&str>, limit: i64) -> Result<Vec<EventRow>>;
    async fn event(&self, id: &str) -> Result<Option<EventRow>>;
    async fn delivery_attempts(&self, event_id: &str) -> Result<Vec<DeliveryAttempt>>;
    /// Puts an event (or, with `None`, every failed one) back in the delivery queue; how many.
    async fn resend(&self, event_id: Option<&str>, now: Timestamp) -> Result<u64>;

    // --- idempotency keys ---
    async fn idempotency_begin(&self, key: &IdempotencyKey, now: Timestamp, lock_ms: i64) -> Result<IdempotencyBegin>;
    async fn idempotency_complete(&self, key: &IdempotencyKey, response: &StoredResponse) -> Result<()>;
    async fn idempotency_release(&self, key: &IdempotencyKey) -> Result<()>;
    /// Deletes keys created before `before`; returns how many.
    async fn idempotency_purge(&self, before: Timestamp) -> Result<u64>;

    // --- audit (invariant checks, reconciliation, tests) ---
    async fn all_orders(&self) -> Result<Vec<Order>>;
    async fn all_attempts(&self) -> Result<Vec<Attempt>>;
    /// Row count of every payonce table: lets a test prove a rejected request changed nothing.
    async fn row_counts(&self) -> Result<Vec<(&'static str, i64)>>;

    // --- operations ---
    async fn abnormal_open(&self) -> Result<Vec<AbnormalRow>>;
    /// One single-row insert in its own transaction, through the same write path as payonce's
    /// own writes: the baseline `payonce bench` compares against.
    async fn bench_commit(&self, id: &str, now: Timestamp) -> Result<()>;
}
