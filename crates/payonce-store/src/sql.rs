//! The SQL both stores share. SQLite and PostgreSQL accept the same statements here (`$N`
//! parameters, `ON CONFLICT`, `RETURNING`, partial indexes), so one body of code is expanded
//! for each backend's concrete sqlx types by `impl_store!`; the differences (row locks, how a
//! write transaction begins, pools) are the macro's parameters and each store's own methods.

/// Columns of `orders`, in the order `order_row` reads them.
macro_rules! order_cols {
    () => {
        "id, app_id, merchant_order_no, amount, currency, subject, notify_url, metadata, content_hash, \
         status, closed_by, paid_attempt_id, paid_at, refunded_amount, expires_at, version, created_at, updated_at"
    };
}

/// Columns of `attempts`, in the order `attempt_row` reads them.
macro_rules! attempt_cols {
    () => {
        "id, order_id, channel, method, out_trade_no, amount, currency, status, is_duplicate, credential, \
         credential_expires_at, payable_until, prepay_request, channel_trade_no, channel_data, paid_at, next_query_at, query_count, \
         version, created_at, updated_at"
    };
}

/// Columns of `refunds`, in the order `refund_row` reads them.
macro_rules! refund_cols {
    () => {
        "id, order_id, app_id, attempt_id, channel, out_trade_no, merchant_refund_no, out_refund_no, amount, currency, reason, \
         kind, status, failure_reason, content_hash, requested, channel_data, next_query_at, query_count, version, created_at, updated_at"
    };
}

/// Columns of `events`, in the order `event_row` reads them.
macro_rules! event_cols {
    () => {
        "id, app_id, order_id, type, payload, created_at, delivery_status, delivery_count, next_attempt_at, last_status, last_error, delivered_at"
    };
}

/// Columns of `apps`, in the order `app_row` reads them.
macro_rules! app_cols {
    () => {
        "id, name, secret_hash, webhook_url, webhook_secret_enc, webhook_secret_prev_enc, webhook_disabled, allowed_hosts, sink, created_at"
    };
}

pub(crate) use {app_cols, attempt_cols, event_cols, order_cols, refund_cols};

/// The body of a refund event.
pub(crate) fn refund_event_payload(id: &EventId, kind: &str, now: Timestamp, r: &crate::Refund, order_version: i64) -> String {
    serde_json::json!({"id": id, "type": kind, "created_at": now.to_rfc3339(), "data": {
        "refund_id": r.id, "order_id": r.order_id, "merchant_refund_no": r.merchant_refund_no, "amount": r.amount.minor,
        "currency": r.amount.currency.as_str(), "kind": r.kind.as_str(), "status": r.status.as_str(),
        "failure_reason": r.failure_reason, "version": order_version,
    }})
    .to_string()
}

/// The refund number of the automatic refund of a duplicate attempt: derived from the attempt,
/// so however often the refund is retried, by whichever instance, the channel sees one refund.
pub fn duplicate_refund_no(out_trade_no: &str) -> String {
    format!("D{}", &out_trade_no[1.min(out_trade_no.len())..])
}

use crate::{Attempt, Order, Result, StoreError};
use payonce_core::order::ClosedBy;
use payonce_core::{Timestamp, *};

pub(crate) fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: {value:?}"))
}

pub(crate) fn closed_by_str(c: ClosedBy) -> &'static str {
    match c {
        ClosedBy::Business => "business",
        ClosedBy::Expiry => "expiry",
    }
}

pub(crate) fn parse_closed_by(s: Option<String>) -> Result<Option<ClosedBy>> {
    match s.as_deref() {
        None => Ok(None),
        Some("business") => Ok(Some(ClosedBy::Business)),
        Some("expiry") => Ok(Some(ClosedBy::Expiry)),
        Some(other) => Err(corrupt("closed_by", other)),
    }
}

/// The body of an outbox event, exactly what the business system will receive.
pub(crate) fn event_payload(id: &EventId, kind: &str, now: Timestamp, order: &Order, attempt: Option<&Attempt>) -> String {
    let mut data = serde_json::json!({
        "order_id": order.id,
        "merchant_order_no": order.merchant_order_no,
        "status": order.status.as_str(),
        "amount": order.amount.minor,
        "currency": order.amount.currency.as_str(),
        // Receivers discard anything older than what they have seen for this order.
        "version": order.version,
    });
    if let Some(a) = attempt {
        data["attempt_id"] = serde_json::json!(a.id);
        data["channel"] = serde_json::json!(a.channel.as_str());
        data["out_trade_no"] = serde_json::json!(a.out_trade_no);
        data["paid_amount"] = serde_json::json!(a.amount.minor);
    }
    serde_json::json!({"id": id, "type": kind, "created_at": now.to_rfc3339(), "data": data}).to_string()
}

/// One static query per table (sqlx takes only static SQL without an explicit assertion).
pub(crate) const COUNT_QUERIES: &[(&str, &str)] = &[
    ("apps", "SELECT COUNT(*) FROM apps"),
    ("orders", "SELECT COUNT(*) FROM orders"),
    ("attempts", "SELECT COUNT(*) FROM attempts"),
    ("channel_events", "SELECT COUNT(*) FROM channel_events"),
    ("events", "SELECT COUNT(*) FROM events"),
    ("idempotency_keys", "SELECT COUNT(*) FROM idempotency_keys"),
    ("abnormal", "SELECT COUNT(*) FROM abnormal"),
    ("refunds", "SELECT COUNT(*) FROM refunds"),
    ("delivery_attempts", "SELECT COUNT(*) FROM delivery_attempts"),
];

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.is_unique_violation())
}

/// Expands the `Store` implementation for one backend.
///
/// `$for_update` is appended to the SELECT that reads an order inside a write transaction:
/// PostgreSQL locks the row so every transition of one order is serialized; SQLite has one
/// writer connection, which serializes all writes already.
macro_rules! impl_store {
    ($Store:ty, $Db:ty, backend = $backend:expr, for_update = $for_update:literal, skip_locked = $skip_locked:literal, migrations = $migrations:expr) => {
        impl $Store {
            fn order_row(r: &<$Db as sqlx::Database>::Row) -> $crate::Result<$crate::Order> {
                use sqlx::Row;
                use $crate::sql::corrupt;
                let status: String = r.try_get("status")?;
                let currency: String = r.try_get("currency")?;
                let currency = payonce_core::Currency::parse(&currency).map_err(|_| corrupt("currency", &currency))?;
                Ok($crate::Order {
                    id: payonce_core::OrderId::from_trusted(r.try_get("id")?),
                    app_id: payonce_core::AppId::from_trusted(r.try_get("app_id")?),
                    merchant_order_no: r.try_get("merchant_order_no")?,
                    amount: payonce_core::Money { minor: r.try_get("amount")?, currency },
                    subject: r.try_get("subject")?,
                    notify_url: r.try_get("notify_url")?,
                    metadata: r.try_get("metadata")?,
                    content_hash: r.try_get("content_hash")?,
                    status: payonce_core::OrderStatus::parse(&status).ok_or_else(|| corrupt("order status", &status))?,
                    closed_by: $crate::sql::parse_closed_by(r.try_get("closed_by")?)?,
                    paid_attempt_id: r.try_get::<Option<String>, _>("paid_attempt_id")?.map(payonce_core::AttemptId::from_trusted),
                    paid_at: r.try_get::<Option<i64>, _>("paid_at")?.map(payonce_core::Timestamp),
                    refunded_amount: r.try_get("refunded_amount")?,
                    expires_at: payonce_core::Timestamp(r.try_get("expires_at")?),
                    version: r.try_get("version")?,
                    created_at: payonce_core::Timestamp(r.try_get("created_at")?),
                    updated_at: payonce_core::Timestamp(r.try_get("updated_at")?),
                })
            }

            fn attempt_row(r: &<$Db as sqlx::Database>::Row) -> $crate::Result<$crate::Attempt> {
                use sqlx::Row;
                use $crate::sql::corrupt;
                let status: String = r.try_get("status")?;
                let channel: String = r.try_get("channel")?;
                let method: String = r.try_get("method")?;
                let currency: String = r.try_get("currency")?;
                let currency = payonce_core::Currency::parse(&currency).map_err(|_| corrupt("currency", &currency))?;
                Ok($crate::Attempt {
                    id: payonce_core::AttemptId::from_trusted(r.try_get("id")?),
                    order_id: payonce_core::OrderId::from_trusted(r.try_get("order_id")?),
                    channel: payonce_core::ChannelName::parse(&channel).map_err(|_| corrupt("channel", &channel))?,
                    method: payonce_core::PayMethod::parse(&method).map_err(|_| corrupt("method", &method))?,
                    out_trade_no: r.try_get("out_trade_no")?,
                    amount: payonce_core::Money { minor: r.try_get("amount")?, currency },
                    status: payonce_core::AttemptStatus::parse(&status).ok_or_else(|| corrupt("attempt status", &status))?,
                    is_duplicate: r.try_get("is_duplicate")?,
                    credential: r.try_get("credential")?,
                    credential_expires_at: r.try_get::<Option<i64>, _>("credential_expires_at")?.map(payonce_core::Timestamp),
                    payable_until: r.try_get::<Option<i64>, _>("payable_until")?.map(payonce_core::Timestamp),
                    prepay_request: r.try_get("prepay_request")?,
                    channel_trade_no: r.try_get("channel_trade_no")?,
                    channel_data: r.try_get("channel_data")?,
                    paid_at: r.try_get::<Option<i64>, _>("paid_at")?.map(payonce_core::Timestamp),
                    next_query_at: r.try_get::<Option<i64>, _>("next_query_at")?.map(payonce_core::Timestamp),
                    query_count: r.try_get::<i32, _>("query_count")? as i64,
                    version: r.try_get("version")?,
                    created_at: payonce_core::Timestamp(r.try_get("created_at")?),
                    updated_at: payonce_core::Timestamp(r.try_get("updated_at")?),
                })
            }

            /// Applies every migration newer than what `schema_migrations` records, each in the
            /// given transaction's connection. Callers hold whatever lock keeps two instances
            /// from migrating at once.
            async fn apply_pending(
                tx: &mut sqlx::Transaction<'static, $Db>,
                migrations: &[(i64, &str)],
            ) -> $crate::Result<()> {
                use sqlx::Row;
                sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
                    .execute(&mut **tx)
                    .await?;
                let done: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
                    .fetch_all(&mut **tx)
                    .await?
                    .iter()
                    .map(|r| r.try_get::<i64, _>("version"))
                    .collect::<Result<_, _>>()?;
                for (version, sql) in migrations {
                    if done.contains(version) {
                        continue;
                    }
                    for stmt in $crate::migrate::statements(sql) {
                        sqlx::query(sqlx::AssertSqlSafe(stmt))
                            .execute(&mut **tx)
                            .await
                            .map_err(|e| $crate::StoreError::Migration(format!("version {version}: {e}")))?;
                    }
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
                    sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                        .bind(*version)
                        .bind(now)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }

            fn event_row(r: &<$Db as sqlx::Database>::Row) -> $crate::Result<$crate::EventRow> {
                use sqlx::Row;
                Ok($crate::EventRow {
                    id: r.try_get("id")?,
                    app_id: r.try_get("app_id")?,
                    order_id: r.try_get("order_id")?,
                    event_type: r.try_get("type")?,
                    payload: r.try_get("payload")?,
                    created_at: payonce_core::Timestamp(r.try_get("created_at")?),
                    delivery_status: r.try_get("delivery_status")?,
                    delivery_count: r.try_get::<i32, _>("delivery_count")? as i64,
                    next_attempt_at: r.try_get::<Option<i64>, _>("next_attempt_at")?.map(payonce_core::Timestamp),
                    last_status: r.try_get::<Option<i32>, _>("last_status")?.map(i64::from),
                    last_error: r.try_get("last_error")?,
                    delivered_at: r.try_get::<Option<i64>, _>("delivered_at")?.map(payonce_core::Timestamp),
                })
            }

            fn app_row(r: &<$Db as sqlx::Database>::Row) -> $crate::Result<$crate::App> {
                use sqlx::Row;
                Ok($crate::App {
                    id: payonce_core::AppId::from_trusted(r.try_get("id")?),
                    name: r.try_get("name")?,
                    secret_hash: r.try_get("secret_hash")?,
                    webhook_url: r.try_get("webhook_url")?,
                    webhook_secret_enc: r.try_get("webhook_secret_enc")?,
                    webhook_secret_prev_enc: r.try_get("webhook_secret_prev_enc")?,
                    webhook_disabled: r.try_get::<i32, _>("webhook_disabled")? != 0,
                    allowed_hosts: r.try_get("allowed_hosts")?,
                    sink: r.try_get("sink")?,
                    created_at: payonce_core::Timestamp(r.try_get("created_at")?),
                })
            }

            fn refund_row(r: &<$Db as sqlx::Database>::Row) -> $crate::Result<$crate::Refund> {
                use sqlx::Row;
                use $crate::sql::corrupt;
                let status: String = r.try_get("status")?;
                let channel: String = r.try_get("channel")?;
                let kind: String = r.try_get("kind")?;
                let currency: String = r.try_get("currency")?;
                let currency = payonce_core::Currency::parse(&currency).map_err(|_| corrupt("currency", &currency))?;
                Ok($crate::Refund {
                    id: payonce_core::RefundId::from_trusted(r.try_get("id")?),
                    order_id: payonce_core::OrderId::from_trusted(r.try_get("order_id")?),
                    app_id: payonce_core::AppId::from_trusted(r.try_get("app_id")?),
                    attempt_id: payonce_core::AttemptId::from_trusted(r.try_get("attempt_id")?),
                    channel: payonce_core::ChannelName::parse(&channel).map_err(|_| corrupt("channel", &channel))?,
                    out_trade_no: r.try_get("out_trade_no")?,
                    merchant_refund_no: r.try_get("merchant_refund_no")?,
                    out_refund_no: r.try_get("out_refund_no")?,
                    amount: payonce_core::Money { minor: r.try_get("amount")?, currency },
                    reason: r.try_get("reason")?,
                    kind: match kind.as_str() {
                        "order" => $crate::RefundKind::Order,
                        "duplicate" => $crate::RefundKind::Duplicate,
                        other => return Err(corrupt("refund kind", other)),
                    },
                    status: payonce_core::RefundStatus::parse(&status).ok_or_else(|| corrupt("refund status", &status))?,
                    failure_reason: r.try_get("failure_reason")?,
                    content_hash: r.try_get("content_hash")?,
                    requested: r.try_get::<i32, _>("requested")? != 0,
                    channel_data: r.try_get("channel_data")?,
                    next_query_at: r.try_get::<Option<i64>, _>("next_query_at")?.map(payonce_core::Timestamp),
                    query_count: r.try_get::<i32, _>("query_count")? as i64,
                    version: r.try_get("version")?,
                    created_at: payonce_core::Timestamp(r.try_get("created_at")?),
                    updated_at: payonce_core::Timestamp(r.try_get("updated_at")?),
                })
            }

            async fn tx_insert_refund(tx: &mut sqlx::Transaction<'static, $Db>, r: &$crate::Refund) -> Result<bool, sqlx::Error> {
                let done = sqlx::query(
                    "INSERT INTO refunds (id, order_id, app_id, attempt_id, channel, out_trade_no, merchant_refund_no, out_refund_no, \
                     amount, currency, reason, kind, status, content_hash, next_query_at, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 1, $16, $16) \
                     ON CONFLICT (channel, out_refund_no) DO NOTHING",
                )
                .bind(r.id.as_str())
                .bind(r.order_id.as_str())
                .bind(r.app_id.as_str())
                .bind(r.attempt_id.as_str())
                .bind(r.channel.as_str())
                .bind(&r.out_trade_no)
                .bind(&r.merchant_refund_no)
                .bind(&r.out_refund_no)
                .bind(r.amount.minor)
                .bind(r.amount.currency.as_str())
                .bind(&r.reason)
                .bind(r.kind.as_str())
                .bind(r.status.as_str())
                .bind(&r.content_hash)
                .bind(r.next_query_at.map(|t| t.0))
                .bind(r.created_at.0)
                .execute(&mut **tx)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            /// The body of `record_refund`, inside the caller's transaction.
            async fn tx_record_refund(
                tx: &mut sqlx::Transaction<'static, $Db>,
                id: &payonce_core::RefundId,
                result: &$crate::RefundResult,
                channel_data: Option<&str>,
                now: payonce_core::Timestamp,
            ) -> $crate::Result<Option<$crate::Refund>> {
                use payonce_core::RefundStatus;
                use $crate::{RefundKind, RefundResult};
                let row = sqlx::query("SELECT order_id FROM refunds WHERE id = $1").bind(id.as_str()).fetch_optional(&mut **tx).await?;
                let Some(row) = row else { return Ok(None) };
                let order_id: String = sqlx::Row::try_get(&row, 0)?;
                let mut order = Self::lock_order(tx, &order_id).await?.ok_or($crate::StoreError::Contended("order vanished"))?;
                let r = sqlx::query(concat!("SELECT ", $crate::sql::refund_cols!(), " FROM refunds WHERE id = $1"))
                    .bind(id.as_str())
                    .fetch_one(&mut **tx)
                    .await?;
                let r = Self::refund_row(&r)?;
                if matches!(r.status, RefundStatus::Succeeded | RefundStatus::Failed) {
                    return Ok(Some(r));
                }
                let (status, failure, next, requested) = match result {
                    RefundResult::Succeeded => (RefundStatus::Succeeded, None, None, true),
                    RefundResult::Failed { reason } => (RefundStatus::Failed, Some(reason.clone()), None, true),
                    RefundResult::Processing { next_query_at } | RefundResult::Abnormal { next_query_at } => {
                        (RefundStatus::Pending, None, Some(next_query_at.0), true)
                    }
                    RefundResult::Unknown { next_query_at } => (RefundStatus::Unknown, None, Some(next_query_at.0), true),
                    // Not at the channel: the next round asks again, under the same number.
                    RefundResult::Absent { next_query_at } => (RefundStatus::Pending, None, Some(next_query_at.0), false),
                    // Sent, not on record yet: keep its status, never re-send.
                    RefundResult::NotFoundYet { next_query_at } => (r.status, None, Some(next_query_at.0), true),
                };
                let done = sqlx::query(
                    "UPDATE refunds SET status = $1, failure_reason = $2, next_query_at = $3, requested = $4, \
                     channel_data = COALESCE($5, channel_data), query_count = query_count + 1, lease_until = NULL, lease_owner = NULL, \
                     version = version + 1, updated_at = $6 WHERE id = $7 AND version = $8",
                )
                .bind(status.as_str())
                .bind(&failure)
                .bind(next)
                .bind(i32::from(requested))
                .bind(channel_data)
                .bind(now.0)
                .bind(id.as_str())
                .bind(r.version)
                .execute(&mut **tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Err($crate::StoreError::Contended("refund"));
                }
                let mut updated = r.clone();
                updated.status = status;
                updated.failure_reason = failure;
                if matches!(result, RefundResult::Abnormal { .. }) {
                    Self::tx_insert_abnormal(tx, "refund_abnormal", r.id.as_str(), "the channel reports the refund ABNORMAL", now).await?;
                }
                if status == RefundStatus::Succeeded && r.kind == RefundKind::Order {
                    let total = order.refunded_amount + r.amount.minor;
                    let next_status = order
                        .status
                        .next(payonce_core::OrderEvent::Refunded { refunded_total: total, amount: order.amount.minor })
                        .map_err(|e| $crate::StoreError::Corrupt(e.to_string()))?;
                    let done = sqlx::query("UPDATE orders SET refunded_amount = $1, status = $2, version = version + 1, updated_at = $3 WHERE id = $4 AND version = $5")
                        .bind(total)
                        .bind(next_status.as_str())
                        .bind(now.0)
                        .bind(order.id.as_str())
                        .bind(order.version)
                        .execute(&mut **tx)
                        .await?;
                    if done.rows_affected() != 1 {
                        return Err($crate::StoreError::Contended("order"));
                    }
                    order.refunded_amount = total;
                    order.status = next_status;
                    order.version += 1;
                }
                if status == RefundStatus::Failed && r.kind == RefundKind::Duplicate {
                    Self::tx_insert_abnormal(tx, "duplicate_refund_failed", r.id.as_str(), updated.failure_reason.as_deref().unwrap_or(""), now).await?;
                }
                if matches!(status, RefundStatus::Succeeded | RefundStatus::Failed) {
                    let kind = if status == RefundStatus::Succeeded { "refund.succeeded" } else { "refund.failed" };
                    let eid = payonce_core::EventId::new();
                    sqlx::query("INSERT INTO events (id, app_id, order_id, type, payload, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $6)")
                        .bind(eid.as_str())
                        .bind(order.app_id.as_str())
                        .bind(order.id.as_str())
                        .bind(kind)
                        .bind($crate::sql::refund_event_payload(&eid, kind, now, &updated, order.version))
                        .bind(now.0)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(Some(updated))
            }

            /// Leases up to `limit` due rows to `owner`: `sql` is an `UPDATE … SET lease_until = $1,
            /// lease_owner = $2 WHERE id IN (SELECT … due at $3 … LIMIT $4 [SKIP LOCKED]) RETURNING …`.
            async fn claim<T>(
                &self,
                sql: &'static str,
                now: payonce_core::Timestamp,
                lease_ms: i64,
                owner: &str,
                limit: i64,
                row: fn(&<$Db as sqlx::Database>::Row) -> $crate::Result<T>,
            ) -> $crate::Result<Vec<T>> {
                let mut tx = self.begin_write().await?;
                let rows = sqlx::query(sql).bind(now.0 + lease_ms).bind(owner).bind(now.0).bind(limit).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                rows.iter().map(row).collect()
            }

            /// Reads an order inside a write transaction, locking it where the backend can.
            async fn lock_order(
                tx: &mut sqlx::Transaction<'static, $Db>,
                id: &str,
            ) -> $crate::Result<Option<$crate::Order>> {
                let row = sqlx::query(concat!("SELECT ", $crate::sql::order_cols!(), " FROM orders WHERE id = $1", $for_update))
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?;
                row.as_ref().map(Self::order_row).transpose()
            }

            async fn tx_attempt_by_no(
                tx: &mut sqlx::Transaction<'static, $Db>,
                channel: &str,
                out_trade_no: &str,
            ) -> $crate::Result<Option<$crate::Attempt>> {
                let row = sqlx::query(concat!("SELECT ", $crate::sql::attempt_cols!(), " FROM attempts WHERE channel = $1 AND out_trade_no = $2"))
                    .bind(channel)
                    .bind(out_trade_no)
                    .fetch_optional(&mut **tx)
                    .await?;
                row.as_ref().map(Self::attempt_row).transpose()
            }

            async fn tx_attempt(
                tx: &mut sqlx::Transaction<'static, $Db>,
                id: &str,
            ) -> $crate::Result<Option<$crate::Attempt>> {
                let row = sqlx::query(concat!("SELECT ", $crate::sql::attempt_cols!(), " FROM attempts WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?;
                row.as_ref().map(Self::attempt_row).transpose()
            }

            async fn tx_active_attempt(
                tx: &mut sqlx::Transaction<'static, $Db>,
                order_id: &str,
            ) -> $crate::Result<Option<$crate::Attempt>> {
                let row = sqlx::query(concat!(
                    "SELECT ", $crate::sql::attempt_cols!(),
                    " FROM attempts WHERE order_id = $1 AND status IN ('created','pending','unknown')"
                ))
                .bind(order_id)
                .fetch_optional(&mut **tx)
                .await?;
                row.as_ref().map(Self::attempt_row).transpose()
            }

            /// Conditional update of an order: succeeds only if nobody moved it since we read
            /// `version`. Returns the order as now stored.
            async fn tx_set_order_status(
                tx: &mut sqlx::Transaction<'static, $Db>,
                order: &$crate::Order,
                status: payonce_core::OrderStatus,
                now: payonce_core::Timestamp,
            ) -> $crate::Result<$crate::Order> {
                let done = sqlx::query(
                    "UPDATE orders SET status = $1, version = version + 1, updated_at = $2 WHERE id = $3 AND version = $4",
                )
                .bind(status.as_str())
                .bind(now.0)
                .bind(order.id.as_str())
                .bind(order.version)
                .execute(&mut **tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Err($crate::StoreError::Contended("order"));
                }
                let mut o = order.clone();
                o.status = status;
                o.version += 1;
                o.updated_at = now;
                Ok(o)
            }

            /// When the last active attempt of a paying order ends, the order is unpaid again.
            async fn tx_settle_order_after_attempt_end(
                tx: &mut sqlx::Transaction<'static, $Db>,
                order: $crate::Order,
                now: payonce_core::Timestamp,
            ) -> $crate::Result<$crate::Order> {
                if order.status != payonce_core::OrderStatus::Paying {
                    return Ok(order);
                }
                if Self::tx_active_attempt(tx, order.id.as_str()).await?.is_some() {
                    return Ok(order);
                }
                let next = order.status.next(payonce_core::OrderEvent::AttemptsEnded).expect("paying → unpaid");
                Self::tx_set_order_status(tx, &order, next, now).await
            }

            async fn tx_insert_event(
                tx: &mut sqlx::Transaction<'static, $Db>,
                kind: &str,
                order: &$crate::Order,
                attempt: Option<&$crate::Attempt>,
                now: payonce_core::Timestamp,
            ) -> $crate::Result<()> {
                let id = payonce_core::EventId::new();
                let payload = $crate::sql::event_payload(&id, kind, now, order, attempt);
                sqlx::query(
                    "INSERT INTO events (id, app_id, order_id, type, payload, created_at, next_attempt_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6)",
                )
                .bind(id.as_str())
                .bind(order.app_id.as_str())
                .bind(order.id.as_str())
                .bind(kind)
                .bind(payload)
                .bind(now.0)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            async fn tx_insert_abnormal(
                tx: &mut sqlx::Transaction<'static, $Db>,
                kind: &str,
                reference: &str,
                detail: &str,
                now: payonce_core::Timestamp,
            ) -> $crate::Result<()> {
                sqlx::query("INSERT INTO abnormal (id, kind, reference, detail, created_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(payonce_core::EventId::new().as_str().replacen("evt_", "abn_", 1))
                    .bind(kind)
                    .bind(reference)
                    .bind(detail)
                    .bind(now.0)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::Store for $Store {
            fn backend(&self) -> $crate::Backend {
                $backend
            }

            async fn migrate(&self) -> $crate::Result<()> {
                self.run_migrations($migrations).await
            }

            async fn ping(&self) -> $crate::Result<()> {
                sqlx::query("SELECT 1").execute(self.reader()).await?;
                Ok(())
            }

            async fn insert_app(&self, app: &$crate::App) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO apps (id, name, secret_hash, webhook_url, webhook_secret_enc, created_at, allowed_hosts, sink) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(app.id.as_str())
                .bind(&app.name)
                .bind(&app.secret_hash)
                .bind(&app.webhook_url)
                .bind(&app.webhook_secret_enc)
                .bind(app.created_at.0)
                .bind(&app.allowed_hosts)
                .bind(&app.sink)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn app_by_secret_hash(&self, secret_hash: &str) -> $crate::Result<Option<$crate::App>> {
                let row = sqlx::query(concat!("SELECT ", $crate::sql::app_cols!(), " FROM apps WHERE secret_hash = $1"))
                    .bind(secret_hash)
                    .fetch_optional(self.reader())
                    .await?;
                row.as_ref().map(Self::app_row).transpose()
            }

            async fn app(&self, id: &payonce_core::AppId) -> $crate::Result<Option<$crate::App>> {
                let row = sqlx::query(concat!("SELECT ", $crate::sql::app_cols!(), " FROM apps WHERE id = $1"))
                    .bind(id.as_str())
                    .fetch_optional(self.reader())
                    .await?;
                row.as_ref().map(Self::app_row).transpose()
            }

            async fn claim_due_events(&self, now: payonce_core::Timestamp, lease_ms: i64, owner: &str, limit: i64) -> $crate::Result<Vec<$crate::EventRow>> {
                self.claim(concat!(
                    "UPDATE events SET lease_until = $1, lease_owner = $2 WHERE id IN (SELECT id FROM events \
                     WHERE delivery_status = 'pending' AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
                     ORDER BY next_attempt_at LIMIT $4", $skip_locked, ") RETURNING ", $crate::sql::event_cols!()
                ), now, lease_ms, owner, limit, Self::event_row).await
            }

            async fn record_delivery(&self, owner: &str, a: &$crate::DeliveryAttempt, outcome: &$crate::DeliveryOutcome) -> $crate::Result<bool> {
                use $crate::DeliveryOutcome;
                let mut tx = self.begin_write().await?;
                let (status, next, delivered) = match outcome {
                    DeliveryOutcome::Delivered => ("delivered", None, Some(a.attempted_at.0)),
                    DeliveryOutcome::Retry { next_attempt_at } => ("pending", Some(next_attempt_at.0), None),
                    DeliveryOutcome::Failed => ("failed", None, None),
                    DeliveryOutcome::Skipped => ("skipped", None, None),
                };
                // Fenced by the lease: a dispatcher that slept past its lease records nothing.
                let done = sqlx::query(
                    "UPDATE events SET delivery_status = $1, next_attempt_at = $2, delivered_at = COALESCE($3, delivered_at), \
                     delivery_count = delivery_count + 1, last_status = $4, last_error = $5, lease_until = NULL, lease_owner = NULL \
                     WHERE id = $6 AND lease_owner = $7",
                )
                .bind(status)
                .bind(next)
                .bind(delivered)
                .bind(a.status_code.map(|c| c as i32))
                .bind(&a.error)
                .bind(&a.event_id)
                .bind(owner)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                if !matches!(outcome, DeliveryOutcome::Skipped) {
                    sqlx::query("INSERT INTO delivery_attempts (id, event_id, destination, status_code, error, duration_ms, attempted_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                        .bind(payonce_core::EventId::new().as_str().replacen("evt_", "dlv_", 1))
                        .bind(&a.event_id)
                        .bind(&a.destination)
                        .bind(a.status_code.map(|c| c as i32))
                        .bind(&a.error)
                        .bind(a.duration_ms)
                        .bind(a.attempted_at.0)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn disable_webhook(&self, app: &payonce_core::AppId, _now: payonce_core::Timestamp) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query("UPDATE apps SET webhook_disabled = 1 WHERE id = $1").bind(app.as_str()).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn rotate_webhook_secret(&self, app: &payonce_core::AppId, new_enc: &str) -> $crate::Result<bool> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query("UPDATE apps SET webhook_secret_prev_enc = webhook_secret_enc, webhook_secret_enc = $1, webhook_disabled = 0 WHERE id = $2")
                    .bind(new_enc)
                    .bind(app.as_str())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn list_events(&self, status: Option<&str>, limit: i64) -> $crate::Result<Vec<$crate::EventRow>> {
                let rows = match status {
                    Some(s) => sqlx::query(concat!("SELECT ", $crate::sql::event_cols!(), " FROM events WHERE delivery_status = $1 ORDER BY id DESC LIMIT $2"))
                        .bind(s)
                        .bind(limit)
                        .fetch_all(self.reader())
                        .await?,
                    None => sqlx::query(concat!("SELECT ", $crate::sql::event_cols!(), " FROM events ORDER BY id DESC LIMIT $1"))
                        .bind(limit)
                        .fetch_all(self.reader())
                        .await?,
                };
                rows.iter().map(Self::event_row).collect()
            }

            async fn event(&self, id: &str) -> $crate::Result<Option<$crate::EventRow>> {
                let row = sqlx::query(concat!("SELECT ", $crate::sql::event_cols!(), " FROM events WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?;
                row.as_ref().map(Self::event_row).transpose()
            }

            async fn delivery_attempts(&self, event_id: &str) -> $crate::Result<Vec<$crate::DeliveryAttempt>> {
                use sqlx::Row;
                let rows = sqlx::query("SELECT event_id, destination, status_code, error, duration_ms, attempted_at FROM delivery_attempts WHERE event_id = $1 ORDER BY attempted_at, id")
                    .bind(event_id)
                    .fetch_all(self.reader())
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::DeliveryAttempt {
                            event_id: r.try_get("event_id")?,
                            destination: r.try_get("destination")?,
                            status_code: r.try_get::<Option<i32>, _>("status_code")?.map(i64::from),
                            error: r.try_get("error")?,
                            duration_ms: r.try_get("duration_ms")?,
                            attempted_at: payonce_core::Timestamp(r.try_get("attempted_at")?),
                        })
                    })
                    .collect()
            }

            async fn resend(&self, event_id: Option<&str>, now: payonce_core::Timestamp) -> $crate::Result<u64> {
                let mut tx = self.begin_write().await?;
                let done = match event_id {
                    Some(id) => sqlx::query("UPDATE events SET delivery_status = 'pending', next_attempt_at = $1, delivery_count = 0, lease_until = NULL, lease_owner = NULL WHERE id = $2 AND delivery_status <> 'pending'")
                        .bind(now.0)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?,
                    None => sqlx::query("UPDATE events SET delivery_status = 'pending', next_attempt_at = $1, delivery_count = 0, lease_until = NULL, lease_owner = NULL WHERE delivery_status = 'failed'")
                        .bind(now.0)
                        .execute(&mut *tx)
                        .await?,
                };
                tx.commit().await?;
                Ok(done.rows_affected())
            }

            async fn create_order(&self, o: &$crate::Order) -> $crate::Result<$crate::CreateOrder> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(
                    "INSERT INTO orders (id, app_id, merchant_order_no, amount, currency, subject, notify_url, metadata, \
                     content_hash, status, expires_at, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) \
                     ON CONFLICT (app_id, merchant_order_no) DO NOTHING",
                )
                .bind(o.id.as_str())
                .bind(o.app_id.as_str())
                .bind(&o.merchant_order_no)
                .bind(o.amount.minor)
                .bind(o.amount.currency.as_str())
                .bind(&o.subject)
                .bind(&o.notify_url)
                .bind(&o.metadata)
                .bind(&o.content_hash)
                .bind(o.status.as_str())
                .bind(o.expires_at.0)
                .bind(o.version)
                .bind(o.created_at.0)
                .execute(&mut *tx)
                .await?;
                let inserted = done.rows_affected() == 1;
                let existing = if inserted {
                    None
                } else {
                    let row = sqlx::query(concat!(
                        "SELECT ", $crate::sql::order_cols!(), " FROM orders WHERE app_id = $1 AND merchant_order_no = $2"
                    ))
                    .bind(o.app_id.as_str())
                    .bind(&o.merchant_order_no)
                    .fetch_one(&mut *tx)
                    .await?;
                    Some(Self::order_row(&row)?)
                };
                tx.commit().await?;
                Ok(match existing {
                    None => $crate::CreateOrder::Created(o.clone()),
                    Some(e) if e.content_hash == o.content_hash => $crate::CreateOrder::Existing(e),
                    Some(e) => $crate::CreateOrder::Conflict(e),
                })
            }

            async fn order(&self, app: &payonce_core::AppId, id: &payonce_core::OrderId) -> $crate::Result<Option<$crate::Order>> {
                let row = sqlx::query(concat!("SELECT ", $crate::sql::order_cols!(), " FROM orders WHERE id = $1 AND app_id = $2"))
                    .bind(id.as_str())
                    .bind(app.as_str())
                    .fetch_optional(self.reader())
                    .await?;
                row.as_ref().map(Self::order_row).transpose()
            }

            async fn order_by_merchant_no(&self, app: &payonce_core::AppId, no: &str) -> $crate::Result<Option<$crate::Order>> {
                let row = sqlx::query(concat!(
                    "SELECT ", $crate::sql::order_cols!(), " FROM orders WHERE app_id = $1 AND merchant_order_no = $2"
                ))
                .bind(app.as_str())
                .bind(no)
                .fetch_optional(self.reader())
                .await?;
                row.as_ref().map(Self::order_row).transpose()
            }

            async fn attempts_of(&self, order: &payonce_core::OrderId) -> $crate::Result<Vec<$crate::Attempt>> {
                let rows = sqlx::query(concat!("SELECT ", $crate::sql::attempt_cols!(), " FROM attempts WHERE order_id = $1 ORDER BY id"))
                    .bind(order.as_str())
                    .fetch_all(self.reader())
                    .await?;
                rows.iter().map(Self::attempt_row).collect()
            }

            async fn attempt(&self, id: &payonce_core::AttemptId) -> $crate::Result<Option<$crate::Attempt>> {
                let row = sqlx::query(concat!("SELECT ", $crate::sql::attempt_cols!(), " FROM attempts WHERE id = $1"))
                    .bind(id.as_str())
                    .fetch_optional(self.reader())
                    .await?;
                row.as_ref().map(Self::attempt_row).transpose()
            }

            async fn attempt_by_out_trade_no(&self, channel: payonce_core::ChannelName, no: &str) -> $crate::Result<Option<$crate::Attempt>> {
                let row = sqlx::query(concat!("SELECT ", $crate::sql::attempt_cols!(), " FROM attempts WHERE channel = $1 AND out_trade_no = $2"))
                    .bind(channel.as_str())
                    .bind(no)
                    .fetch_optional(self.reader())
                    .await?;
                row.as_ref().map(Self::attempt_row).transpose()
            }

            async fn attempts_with_channel_trade_no(&self, channel: payonce_core::ChannelName, trade_no: &str) -> $crate::Result<Vec<$crate::Attempt>> {
                let rows = sqlx::query(concat!("SELECT ", $crate::sql::attempt_cols!(), " FROM attempts WHERE channel = $1 AND channel_trade_no = $2"))
                    .bind(channel.as_str())
                    .bind(trade_no)
                    .fetch_all(self.reader())
                    .await?;
                rows.iter().map(Self::attempt_row).collect()
            }

            async fn events_of(&self, order: &payonce_core::OrderId) -> $crate::Result<Vec<$crate::EventRow>> {
                let rows = sqlx::query(concat!("SELECT ", $crate::sql::event_cols!(), " FROM events WHERE order_id = $1 ORDER BY id"))
                    .bind(order.as_str())
                    .fetch_all(self.reader())
                    .await?;
                rows.iter().map(Self::event_row).collect()
            }

            async fn begin_attempt(&self, a: &$crate::Attempt, now: payonce_core::Timestamp) -> $crate::Result<$crate::BeginAttempt> {
                let mut tx = self.begin_write().await?;
                let Some(order) = Self::lock_order(&mut tx, a.order_id.as_str()).await? else {
                    return Ok($crate::BeginAttempt::NoSuchOrder);
                };
                if !order.status.is_open() || order.expires_at <= now {
                    return Ok($crate::BeginAttempt::OrderNotOpen(order));
                }
                if let Some(active) = Self::tx_active_attempt(&mut tx, order.id.as_str()).await? {
                    return Ok($crate::BeginAttempt::ActiveExists(active));
                }
                let inserted = sqlx::query(
                    "INSERT INTO attempts (id, order_id, channel, method, out_trade_no, amount, currency, status, \
                     version, created_at, updated_at, prepay_request, next_query_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'created', 1, $8, $8, $9, $10)",
                )
                .bind(a.id.as_str())
                .bind(a.order_id.as_str())
                .bind(a.channel.as_str())
                .bind(a.method.as_str())
                .bind(&a.out_trade_no)
                .bind(a.amount.minor)
                .bind(a.amount.currency.as_str())
                .bind(now.0)
                .bind(&a.prepay_request)
                // Claimable from the moment it is written: if its caller dies before recording
                // the channel's answer, the active-query worker still finds it.
                .bind(a.next_query_at.map(|t| t.0))
                .execute(&mut *tx)
                .await;
                match inserted {
                    Ok(_) => {}
                    // The partial unique index caught a racing prepay: it won, we did nothing.
                    Err(e) if $crate::sql::is_unique_violation(&e) => {
                        drop(tx);
                        let mut tx = self.begin_write().await?;
                        return match Self::tx_active_attempt(&mut tx, a.order_id.as_str()).await? {
                            Some(active) => Ok($crate::BeginAttempt::ActiveExists(active)),
                            None => Err($crate::StoreError::Contended("attempt")),
                        };
                    }
                    Err(e) => return Err(e.into()),
                }
                let next = order.status.next(payonce_core::OrderEvent::AttemptStarted).expect("open order can start an attempt");
                Self::tx_set_order_status(&mut tx, &order, next, now).await?;
                tx.commit().await?;
                let mut started = a.clone();
                started.status = payonce_core::AttemptStatus::Created;
                started.version = 1;
                started.created_at = now;
                started.updated_at = now;
                Ok($crate::BeginAttempt::Started(started))
            }

            async fn record_prepay(
                &self,
                id: &payonce_core::AttemptId,
                result: &$crate::PrepayResult,
                now: payonce_core::Timestamp,
            ) -> $crate::Result<$crate::Attempt> {
                use payonce_core::{AttemptEvent, AttemptStatus};
                use $crate::PrepayResult;
                let mut tx = self.begin_write().await?;
                let current = Self::tx_attempt(&mut tx, id.as_str()).await?.ok_or($crate::StoreError::Contended("attempt vanished"))?;
                let order = Self::lock_order(&mut tx, current.order_id.as_str()).await?.ok_or($crate::StoreError::Contended("order vanished"))?;
                let a = Self::tx_attempt(&mut tx, id.as_str()).await?.expect("attempt exists under the order lock");
                let event = match (result, a.status) {
                    // The attempt was marked unknown while we waited: the channel's answer settles it.
                    // (Or a query found it unpaid but the credential was lost with the answer.)
                    (PrepayResult::Accepted { .. }, AttemptStatus::Unknown | AttemptStatus::Pending) => AttemptEvent::ReportedUnpaid,
                    (PrepayResult::Accepted { .. }, _) => AttemptEvent::Accepted,
                    (PrepayResult::Refused { .. }, _) => AttemptEvent::Refused,
                    (PrepayResult::Ambiguous { .. }, _) => AttemptEvent::Ambiguous,
                };
                let next = match a.status.next(event) {
                    Ok(next) => next,
                    // A notification or query got there first (e.g. already succeeded): keep it.
                    Err(_) => return Ok(a),
                };
                let (credential, cred_exp, payable_until, next_query, channel_data) = match result {
                    PrepayResult::Accepted { credential, credential_expires_at, payable_until, next_query_at, channel_data } => (
                        Some(credential.clone()),
                        Some(credential_expires_at.0),
                        Some(payable_until.0),
                        Some(next_query_at.0),
                        channel_data.clone(),
                    ),
                    PrepayResult::Refused { .. } => (None, None, None, None, None),
                    PrepayResult::Ambiguous { next_query_at } => (None, None, None, Some(next_query_at.0), None),
                };
                if next == a.status && credential.is_none() {
                    return Ok(a);
                }
                let done = sqlx::query(
                    "UPDATE attempts SET status = $1, credential = COALESCE($2, credential), \
                     credential_expires_at = COALESCE($3, credential_expires_at), next_query_at = $4, \
                     version = version + 1, updated_at = $5, channel_data = COALESCE($8, channel_data), \
                     payable_until = COALESCE($9, payable_until) WHERE id = $6 AND version = $7",
                )
                .bind(next.as_str())
                .bind(&credential)
                .bind(cred_exp)
                .bind(next_query)
                .bind(now.0)
                .bind(a.id.as_str())
                .bind(a.version)
                .bind(&channel_data)
                .bind(payable_until)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Err($crate::StoreError::Contended("attempt"));
                }
                if next == AttemptStatus::Failed {
                    Self::tx_settle_order_after_attempt_end(&mut tx, order, now).await?;
                }
                let stored = Self::tx_attempt(&mut tx, id.as_str()).await?.expect("just updated");
                tx.commit().await?;
                Ok(stored)
            }

            async fn refresh_credential(
                &self,
                id: &payonce_core::AttemptId,
                credential: &str,
                credential_expires_at: payonce_core::Timestamp,
                payable_until: payonce_core::Timestamp,
                now: payonce_core::Timestamp,
            ) -> $crate::Result<Option<$crate::Attempt>> {
                use payonce_core::{AttemptEvent, AttemptStatus};
                let mut tx = self.begin_write().await?;
                let Some(a) = Self::tx_attempt(&mut tx, id.as_str()).await? else { return Ok(None) };
                if a.status != AttemptStatus::Pending || a.status.next(AttemptEvent::CredentialRefreshed).is_err() {
                    return Ok(None);
                }
                let done = sqlx::query(
                    "UPDATE attempts SET credential = $1, credential_expires_at = $2, \
                     payable_until = CASE WHEN payable_until IS NULL OR payable_until < $3 THEN $3 ELSE payable_until END, \
                     version = version + 1, updated_at = $4 WHERE id = $5 AND version = $6 AND status = 'pending'",
                )
                .bind(credential)
                .bind(credential_expires_at.0)
                .bind(payable_until.0)
                .bind(now.0)
                .bind(id.as_str())
                .bind(a.version)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Err($crate::StoreError::Contended("attempt"));
                }
                let stored = Self::tx_attempt(&mut tx, id.as_str()).await?;
                tx.commit().await?;
                Ok(stored)
            }

            async fn prepare_refund_call(
                &self,
                id: &payonce_core::RefundId,
                channel_data: &str,
                now: payonce_core::Timestamp,
            ) -> $crate::Result<Option<$crate::Refund>> {
                let mut tx = self.begin_write().await?;
                sqlx::query("UPDATE refunds SET channel_data = $1, updated_at = $2 WHERE id = $3 AND channel_data IS NULL")
                    .bind(channel_data)
                    .bind(now.0)
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
                let r = sqlx::query(concat!("SELECT ", $crate::sql::refund_cols!(), " FROM refunds WHERE id = $1"))
                    .bind(id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                let r = match r {
                    Some(r) => Some(Self::refund_row(&r)?),
                    None => None,
                };
                tx.commit().await?;
                Ok(r)
            }

            async fn mark_stale_created(
                &self,
                id: &payonce_core::AttemptId,
                created_before: payonce_core::Timestamp,
                now: payonce_core::Timestamp,
            ) -> $crate::Result<Option<$crate::Attempt>> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(
                    "UPDATE attempts SET status = 'unknown', next_query_at = $1, version = version + 1, updated_at = $1 \
                     WHERE id = $2 AND status = 'created' AND created_at < $3",
                )
                .bind(now.0)
                .bind(id.as_str())
                .bind(created_before.0)
                .execute(&mut *tx)
                .await?;
                let changed = done.rows_affected() == 1;
                let a = if changed { Self::tx_attempt(&mut tx, id.as_str()).await? } else { None };
                tx.commit().await?;
                Ok(a)
            }

            async fn apply_outcome(
                &self,
                outcome: &$crate::ChannelOutcome,
                now: payonce_core::Timestamp,
            ) -> $crate::Result<$crate::OutcomeApplied> {
                use $crate::{OutcomeApplied, OutcomeEffect, OutcomeSource};
                let channel = outcome.channel.as_str();
                let mut tx = self.begin_write().await?;
                let Some(found) = Self::tx_attempt_by_no(&mut tx, channel, &outcome.out_trade_no).await? else {
                    return Ok(OutcomeApplied::UnknownTradeNo);
                };
                if let OutcomeSource::Notification { event_id } = &outcome.source {
                    let done = sqlx::query(
                        "INSERT INTO channel_events (channel, event_id, out_trade_no, received_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (channel, event_id) DO NOTHING",
                    )
                    .bind(channel)
                    .bind(event_id)
                    .bind(&outcome.out_trade_no)
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Ok(OutcomeApplied::Replay);
                    }
                }
                let order = Self::lock_order(&mut tx, found.order_id.as_str()).await?.ok_or($crate::StoreError::Contended("order vanished"))?;
                // Re-read under the order lock: this is the state we decide on.
                let a = Self::tx_attempt(&mut tx, found.id.as_str()).await?.expect("attempt exists under the order lock");
                let other_active_attempt = Self::tx_active_attempt(&mut tx, order.id.as_str()).await?.is_some_and(|o| o.id != a.id);
                let plan = payonce_core::decide(
                    payonce_core::decide::OrderState { status: order.status, closed_by: order.closed_by },
                    payonce_core::decide::AttemptState { status: a.status, amount: a.amount.minor, next_query_at: a.next_query_at },
                    &outcome.observed,
                    payonce_core::decide::Circumstances {
                        late_payment: outcome.late_payment,
                        creates_order_at_prepay: outcome.channel.creates_order_at_prepay(),
                        reschedule: outcome.reschedule,
                        other_active_attempt,
                    },
                );
                // From here on the store only writes what was decided.
                let (change, order_change, event, refund_duplicate, effect) = match plan {
                    payonce_core::Plan::Nothing => {
                        tx.commit().await?;
                        return Ok(OutcomeApplied::Applied { order, attempt: a, effect: OutcomeEffect::Nothing });
                    }
                    payonce_core::Plan::AmountMismatch { reported } => {
                        let detail = format!("channel reports {} paid, attempt amount is {}", reported, a.amount.minor);
                        Self::tx_insert_abnormal(&mut tx, "amount_mismatch", a.id.as_str(), &detail, now).await?;
                        tx.commit().await?;
                        return Ok(OutcomeApplied::AmountMismatch { attempt: a, reported });
                    }
                    payonce_core::Plan::Apply { attempt, order, event, refund_duplicate, effect } => (attempt, order, event, refund_duplicate, effect),
                };
                let done = sqlx::query(
                    "UPDATE attempts SET status = $1, is_duplicate = $2, paid_at = COALESCE($3, paid_at), \
                     channel_trade_no = COALESCE($4, channel_trade_no), next_query_at = $5, version = version + 1, \
                     updated_at = $6 WHERE id = $7 AND version = $8",
                )
                .bind(change.status.as_str())
                .bind(change.is_duplicate)
                .bind(change.paid_at.map(|t| t.0))
                .bind(&change.channel_trade_no)
                .bind(change.next_query_at.map(|t| t.0))
                .bind(now.0)
                .bind(a.id.as_str())
                .bind(a.version)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Err($crate::StoreError::Contended("attempt"));
                }
                let attempt = Self::tx_attempt(&mut tx, a.id.as_str()).await?.expect("just updated");
                let mut order = order;
                match order_change {
                    Some(payonce_core::decide::OrderChange::Paid { status, paid_at }) => {
                        let done = sqlx::query(
                            "UPDATE orders SET status = $1, paid_attempt_id = $2, paid_at = $3, version = version + 1, \
                             updated_at = $4 WHERE id = $5 AND version = $6",
                        )
                        .bind(status.as_str())
                        .bind(attempt.id.as_str())
                        .bind(paid_at.0)
                        .bind(now.0)
                        .bind(order.id.as_str())
                        .bind(order.version)
                        .execute(&mut *tx)
                        .await?;
                        if done.rows_affected() != 1 {
                            return Err($crate::StoreError::Contended("order"));
                        }
                        order.status = status;
                        order.paid_attempt_id = Some(attempt.id.clone());
                        order.paid_at = Some(paid_at);
                        order.version += 1;
                        order.updated_at = now;
                    }
                    Some(payonce_core::decide::OrderChange::Status(status)) => order = Self::tx_set_order_status(&mut tx, &order, status, now).await?,
                    None => {}
                }
                if let Some(event) = event {
                    Self::tx_insert_event(&mut tx, event.as_str(), &order, Some(&attempt), now).await?;
                }
                if refund_duplicate {
                    // The money goes back, automatically; the refund worker makes the call.
                    let refund = $crate::Refund {
                        id: payonce_core::RefundId::new(),
                        order_id: order.id.clone(),
                        app_id: order.app_id.clone(),
                        attempt_id: attempt.id.clone(),
                        channel: attempt.channel,
                        out_trade_no: attempt.out_trade_no.clone(),
                        merchant_refund_no: None,
                        out_refund_no: $crate::sql::duplicate_refund_no(&attempt.out_trade_no),
                        amount: attempt.amount,
                        reason: Some("duplicate payment".into()),
                        kind: $crate::RefundKind::Duplicate,
                        status: payonce_core::RefundStatus::Pending,
                        failure_reason: None,
                        content_hash: String::new(),
                        requested: false,
                        channel_data: None,
                        next_query_at: Some(now),
                        query_count: 0,
                        version: 1,
                        created_at: now,
                        updated_at: now,
                    };
                    Self::tx_insert_refund(&mut tx, &refund).await?;
                }
                tx.commit().await?;
                Ok(OutcomeApplied::Applied { order, attempt, effect })
            }

            async fn close_order(
                &self,
                id: &payonce_core::OrderId,
                by: payonce_core::order::ClosedBy,
                now: payonce_core::Timestamp,
            ) -> $crate::Result<$crate::CloseOrder> {
                use $crate::CloseOrder;
                let mut tx = self.begin_write().await?;
                let Some(order) = Self::lock_order(&mut tx, id.as_str()).await? else {
                    return Ok(CloseOrder::NoSuchOrder);
                };
                if order.status.has_been_paid() {
                    return Ok(CloseOrder::Paid(order));
                }
                if order.status == payonce_core::OrderStatus::Closed {
                    return Ok(CloseOrder::AlreadyClosed(order));
                }
                if let Some(active) = Self::tx_active_attempt(&mut tx, id.as_str()).await? {
                    return Ok(CloseOrder::ActiveAttempt(active));
                }
                let next = order.status.next(payonce_core::OrderEvent::Closed).expect("open order can close");
                let done = sqlx::query(
                    "UPDATE orders SET status = $1, closed_by = $2, version = version + 1, updated_at = $3 \
                     WHERE id = $4 AND version = $5",
                )
                .bind(next.as_str())
                .bind($crate::sql::closed_by_str(by))
                .bind(now.0)
                .bind(id.as_str())
                .bind(order.version)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Err($crate::StoreError::Contended("order"));
                }
                let mut closed = order;
                closed.status = next;
                closed.closed_by = Some(by);
                closed.version += 1;
                closed.updated_at = now;
                Self::tx_insert_event(&mut tx, "payment.closed", &closed, None, now).await?;
                tx.commit().await?;
                Ok(CloseOrder::Closed(closed))
            }

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

            async fn all_orders(&self) -> $crate::Result<Vec<$crate::Order>> {
                let rows = sqlx::query(concat!("SELECT ", $crate::sql::order_cols!(), " FROM orders ORDER BY id"))
                    .fetch_all(self.reader())
                    .await?;
                rows.iter().map(Self::order_row).collect()
            }

            async fn all_attempts(&self) -> $crate::Result<Vec<$crate::Attempt>> {
                let rows = sqlx::query(concat!("SELECT ", $crate::sql::attempt_cols!(), " FROM attempts ORDER BY id"))
                    .fetch_all(self.reader())
                    .await?;
                rows.iter().map(Self::attempt_row).collect()
            }

            async fn row_counts(&self) -> $crate::Result<Vec<(&'static str, i64)>> {
                use sqlx::Row;
                let mut out = Vec::new();
                for (table, sql) in $crate::sql::COUNT_QUERIES {
                    let n: i64 = sqlx::query(*sql).fetch_one(self.reader()).await?.try_get(0)?;
                    out.push((*table, n));
                }
                Ok(out)
            }

            async fn abnormal_open(&self) -> $crate::Result<Vec<$crate::AbnormalRow>> {
                use sqlx::Row;
                let rows = sqlx::query("SELECT id, kind, reference, detail, created_at FROM abnormal WHERE resolved_at IS NULL ORDER BY id")
                    .fetch_all(self.reader())
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::AbnormalRow {
                            id: r.try_get("id")?,
                            kind: r.try_get("kind")?,
                            reference: r.try_get("reference")?,
                            detail: r.try_get("detail")?,
                            created_at: payonce_core::Timestamp(r.try_get("created_at")?),
                        })
                    })
                    .collect()
            }

            async fn defer_unknown(&self, id: &payonce_core::AttemptId, until: payonce_core::Timestamp, now: payonce_core::Timestamp) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query("UPDATE attempts SET next_query_at = $1, updated_at = $2 WHERE id = $3 AND status IN ('unknown', 'pending')")
                    .bind(until.0)
                    .bind(now.0)
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn claim_due_attempts(&self, now: payonce_core::Timestamp, lease_ms: i64, owner: &str, limit: i64) -> $crate::Result<Vec<$crate::Attempt>> {
                self.claim(concat!(
                    "UPDATE attempts SET lease_until = $1, lease_owner = $2 WHERE id IN (SELECT id FROM attempts \
                     WHERE next_query_at IS NOT NULL AND next_query_at <= $3 AND status NOT IN ('succeeded', 'failed') \
                     AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_query_at LIMIT $4", $skip_locked, ") RETURNING ",
                    $crate::sql::attempt_cols!()
                ), now, lease_ms, owner, limit, Self::attempt_row).await
            }

            async fn finish_attempt_check(&self, id: &payonce_core::AttemptId, owner: &str, next: Option<payonce_core::Timestamp>, now: payonce_core::Timestamp) -> $crate::Result<bool> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(
                    "UPDATE attempts SET next_query_at = CASE WHEN status IN ('succeeded', 'failed') THEN NULL ELSE $1 END, \
                     query_count = query_count + 1, lease_until = NULL, lease_owner = NULL, updated_at = $2 \
                     WHERE id = $3 AND lease_owner = $4",
                )
                .bind(next.map(|t| t.0))
                .bind(now.0)
                .bind(id.as_str())
                .bind(owner)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn claim_expired_orders(&self, now: payonce_core::Timestamp, lease_ms: i64, owner: &str, limit: i64) -> $crate::Result<Vec<$crate::Order>> {
                self.claim(concat!(
                    "UPDATE orders SET lease_until = $1, lease_owner = $2 WHERE id IN (SELECT id FROM orders \
                     WHERE status IN ('unpaid', 'paying') AND expires_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
                     ORDER BY expires_at LIMIT $4", $skip_locked, ") RETURNING ", $crate::sql::order_cols!()
                ), now, lease_ms, owner, limit, Self::order_row).await
            }

            async fn release_order(&self, id: &payonce_core::OrderId, owner: &str) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query("UPDATE orders SET lease_until = NULL, lease_owner = NULL WHERE id = $1 AND lease_owner = $2")
                    .bind(id.as_str())
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn claim_due_refunds(&self, now: payonce_core::Timestamp, lease_ms: i64, owner: &str, limit: i64) -> $crate::Result<Vec<$crate::Refund>> {
                self.claim(concat!(
                    "UPDATE refunds SET lease_until = $1, lease_owner = $2 WHERE id IN (SELECT id FROM refunds \
                     WHERE status IN ('pending', 'unknown') AND next_query_at IS NOT NULL AND next_query_at <= $3 \
                     AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_query_at LIMIT $4", $skip_locked, ") RETURNING ",
                    $crate::sql::refund_cols!()
                ), now, lease_ms, owner, limit, Self::refund_row).await
            }

            async fn create_refund(&self, r: &$crate::Refund, now: payonce_core::Timestamp) -> $crate::Result<$crate::CreateRefund> {
                use sqlx::Row;
                use $crate::CreateRefund;
                let mut tx = self.begin_write().await?;
                let Some(order) = Self::lock_order(&mut tx, r.order_id.as_str()).await? else {
                    return Ok(CreateRefund::NoSuchOrder);
                };
                if let Some(no) = &r.merchant_refund_no {
                    let row = sqlx::query(concat!("SELECT ", $crate::sql::refund_cols!(), " FROM refunds WHERE order_id = $1 AND merchant_refund_no = $2"))
                        .bind(order.id.as_str())
                        .bind(no)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if let Some(row) = row {
                        let existing = Self::refund_row(&row)?;
                        return Ok(if existing.content_hash == r.content_hash { CreateRefund::Existing(existing) } else { CreateRefund::Conflict(existing) });
                    }
                }
                if !order.status.has_been_paid() {
                    return Ok(CreateRefund::NotPaid(order));
                }
                // Pending, unknown and succeeded refunds all hold their amount: concurrent refunds
                // can never together exceed what was paid.
                let reserved: i64 = sqlx::query("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM refunds WHERE order_id = $1 AND kind = 'order' AND status <> 'failed'")
                    .bind(order.id.as_str())
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
                if reserved + r.amount.minor > order.amount.minor {
                    return Ok(CreateRefund::Exceeds { refundable: order.amount.minor - reserved });
                }
                let mut row = r.clone();
                row.attempt_id = order.paid_attempt_id.clone().ok_or($crate::StoreError::Corrupt("paid order without paying attempt".into()))?;
                let paying = Self::tx_attempt(&mut tx, row.attempt_id.as_str()).await?.ok_or($crate::StoreError::Corrupt("paying attempt missing".into()))?;
                row.channel = paying.channel;
                row.out_trade_no = paying.out_trade_no.clone();
                row.created_at = now;
                row.updated_at = now;
                Self::tx_insert_refund(&mut tx, &row).await?;
                tx.commit().await?;
                Ok(CreateRefund::Created(row))
            }

            async fn refund(&self, app: &payonce_core::AppId, id: &payonce_core::RefundId) -> $crate::Result<Option<$crate::Refund>> {
                let row = sqlx::query(concat!("SELECT ", $crate::sql::refund_cols!(), " FROM refunds WHERE id = $1 AND app_id = $2"))
                    .bind(id.as_str())
                    .bind(app.as_str())
                    .fetch_optional(self.reader())
                    .await?;
                row.as_ref().map(Self::refund_row).transpose()
            }

            async fn refunds_of(&self, order: &payonce_core::OrderId) -> $crate::Result<Vec<$crate::Refund>> {
                let rows = sqlx::query(concat!("SELECT ", $crate::sql::refund_cols!(), " FROM refunds WHERE order_id = $1 ORDER BY id"))
                    .bind(order.as_str())
                    .fetch_all(self.reader())
                    .await?;
                rows.iter().map(Self::refund_row).collect()
            }

            async fn all_refunds(&self) -> $crate::Result<Vec<$crate::Refund>> {
                let rows = sqlx::query(concat!("SELECT ", $crate::sql::refund_cols!(), " FROM refunds ORDER BY id"))
                    .fetch_all(self.reader())
                    .await?;
                rows.iter().map(Self::refund_row).collect()
            }

            async fn insert_abnormal(&self, kind: &str, reference: &str, detail: &str, now: payonce_core::Timestamp) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                Self::tx_insert_abnormal(&mut tx, kind, reference, detail, now).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn record_refund(
                &self,
                id: &payonce_core::RefundId,
                result: &$crate::RefundResult,
                channel_data: Option<&str>,
                now: payonce_core::Timestamp,
            ) -> $crate::Result<Option<$crate::Refund>> {
                let mut tx = self.begin_write().await?;
                let r = Self::tx_record_refund(&mut tx, id, result, channel_data, now).await?;
                tx.commit().await?;
                Ok(r)
            }

            async fn apply_refund_notice(
                &self,
                channel: payonce_core::ChannelName,
                event_id: &str,
                out_refund_no: &str,
                result: &$crate::RefundResult,
                now: payonce_core::Timestamp,
            ) -> $crate::Result<$crate::RefundNoticeApplied> {
                use sqlx::Row;
                let mut tx = self.begin_write().await?;
                let row = sqlx::query("SELECT id, out_trade_no FROM refunds WHERE channel = $1 AND out_refund_no = $2")
                    .bind(channel.as_str())
                    .bind(out_refund_no)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else { return Ok($crate::RefundNoticeApplied::UnknownRefund) };
                let id = payonce_core::RefundId::from_trusted(row.try_get("id")?);
                let out_trade_no: String = row.try_get("out_trade_no")?;
                let done = sqlx::query(
                    "INSERT INTO channel_events (channel, event_id, out_trade_no, received_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (channel, event_id) DO NOTHING",
                )
                .bind(channel.as_str())
                .bind(event_id)
                .bind(&out_trade_no)
                .bind(now.0)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok($crate::RefundNoticeApplied::Replay);
                }
                let r = Self::tx_record_refund(&mut tx, &id, result, None, now).await?;
                tx.commit().await?;
                Ok(match r {
                    Some(r) => $crate::RefundNoticeApplied::Applied(r),
                    None => $crate::RefundNoticeApplied::UnknownRefund,
                })
            }

            async fn bench_commit(&self, id: &str, now: payonce_core::Timestamp) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query("INSERT INTO bench_commits (id, created_at) VALUES ($1, $2)")
                    .bind(id)
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
        }
    };
}

pub(crate) use impl_store;
