//! Reconciliation runs and their items: the `Reconciliations` trait of the store and its
//! implementation for `SqlStore`. A run is leased like the workers' rows (many instances, one runner); an item is
//! recorded once per (run, class, reference), with an abnormal entry when it needs a person.

use crate::db::{from_row, q, q_fmt};
use crate::sql::{ATTEMPT_COLS, ORDER_COLS, REFUND_COLS};
use crate::*;
use payonce_core::{AppId, ChannelName, OrderId, Timestamp};

/// One reconciliation of (channel, bill date).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciliation {
    pub id: String,
    pub channel: String,
    /// The channel account whose bill it read (one bill per merchant number).
    pub account: String,
    /// `YYYY-MM-DD`, Asia/Shanghai (the channels' booking day).
    pub bill_date: String,
    /// `running`, `completed` or `failed`.
    pub status: String,
    /// Counts by class, rows and fees, as JSON.
    pub summary: String,
    /// Why a run failed (a bill that does not add up, a download that broke).
    pub reason: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}
from_row!(Reconciliation {
    id,
    channel,
    account,
    bill_date,
    status,
    summary,
    reason,
    started_at,
    finished_at,
});

/// A difference between the channel's bill and payonce's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconciliationItem {
    pub id: String,
    pub reconciliation_id: String,
    /// `repaired_paid`, `repaired_refund`, `missing_at_channel`, `amount_mismatch`,
    /// `unknown_trade`, `unknown_refund`.
    pub class: String,
    /// The out_trade_no (payments) or out_refund_no (refunds) the item is about.
    pub reference: String,
    pub app_id: Option<String>,
    pub order_id: Option<String>,
    pub local_amount: Option<i64>,
    pub channel_amount: Option<i64>,
    pub detail: String,
    pub created_at: i64,
}
from_row!(ReconciliationItem {
    id,
    reconciliation_id,
    class,
    reference,
    app_id,
    order_id,
    local_amount,
    channel_amount,
    detail,
    created_at,
});

impl ReconciliationItem {
    /// Classes a person must look at (they also go to the abnormal queue); the others were
    /// repaired automatically.
    pub fn needs_a_person(class: &str) -> bool {
        !class.starts_with("repaired_")
    }
}

/// A channel bill as kept: where it came from and how its bytes are packed (the bytes
/// themselves are read and written beside it, in parts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBill {
    pub id: String,
    pub channel: String,
    pub merchant_account: String,
    pub bill_date: String,
    pub bill_type: String,
    /// `wechat-gzip`, `alipay-zip`, `unionpay-zlib-zip`, `sandbox-gzip`.
    pub format: String,
    /// Lowercase hex SHA-256 of the stored bytes, checked whenever they are read back.
    pub sha256: String,
    pub size: i64,
    pub fetched_at: i64,
}

/// What a bill row says of one payment or refund beside its amount, to be kept on it:
/// (attempt or refund id, settled amount in fen, fee in thousandths of a fen).
pub type Billed = (String, i64, i64);

/// The most rows one batched statement names (well under both backends' parameter limits).
pub const BATCH: usize = 500;

#[async_trait::async_trait]
pub trait Reconciliations: Send + Sync {
    /// Keeps a verified bill, replacing an earlier copy of the same (channel, merchant account,
    /// bill date, bill type).
    async fn save_bill(&self, bill: &StoredBill, content: &[u8]) -> Result<()>;
    /// The newest kept bill of (channel, merchant account, bill date) and its bytes, if one
    /// was kept.
    async fn stored_bill(
        &self,
        channel: ChannelName,
        merchant_account: &str,
        bill_date: &str,
    ) -> Result<Option<(StoredBill, Vec<u8>)>>;
    /// Attempts of `channel` by out_trade_no, at most `BATCH` numbers at a time.
    async fn attempts_by_out_trade_nos(
        &self,
        channel: ChannelName,
        nos: &[String],
    ) -> Result<Vec<Attempt>>;
    /// Refunds of `channel` by out_refund_no, at most `BATCH` numbers at a time.
    async fn refunds_by_out_refund_nos(
        &self,
        channel: ChannelName,
        nos: &[String],
    ) -> Result<Vec<Refund>>;
    /// Records settled amounts and fees from a bill on attempts and refunds (rows whose values
    /// are already those are not rewritten).
    async fn record_billed(&self, attempts: &[Billed], refunds: &[Billed]) -> Result<()>;
    /// Starts — or restarts — the run of (channel, account, bill date) for `owner`, unless
    /// another owner holds a live lease on it (`None`).
    async fn begin_reconciliation(
        &self,
        channel: ChannelName,
        account: &str,
        bill_date: &str,
        owner: &str,
        lease_ms: i64,
        now: Timestamp,
    ) -> Result<Option<Reconciliation>>;
    /// Records an item once: `false` if the run already had it (a re-run adds nothing).
    async fn add_reconciliation_item(&self, item: &ReconciliationItem) -> Result<bool>;
    /// Ends a run (`completed` or `failed`), if `owner` still holds it.
    async fn finish_reconciliation(
        &self,
        id: &str,
        owner: &str,
        status: &str,
        summary: &str,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<bool>;
    async fn reconciliation(&self, id: &str) -> Result<Option<Reconciliation>>;
    /// The run of (channel, account, bill date), if there is one.
    async fn reconciliation_for(
        &self,
        channel: ChannelName,
        account: &str,
        bill_date: &str,
    ) -> Result<Option<Reconciliation>>;
    /// The newest runs first.
    async fn reconciliations(&self, limit: i64) -> Result<Vec<Reconciliation>>;
    /// A run's items in id order, after `after` (keyset pagination), of one class or all.
    async fn reconciliation_items(
        &self,
        id: &str,
        class: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ReconciliationItem>>;
    /// Attempts of `channel` made through `account` that succeeded with `paid_at` in
    /// `[from, to)`: what that account's bill of the day must show; with `unbilled_only`, those
    /// no bill has shown yet.
    async fn attempts_paid_between(
        &self,
        channel: ChannelName,
        account: &str,
        from: Timestamp,
        to: Timestamp,
        unbilled_only: bool,
    ) -> Result<Vec<Attempt>>;
    async fn refund_by_out_refund_no(
        &self,
        channel: ChannelName,
        out_refund_no: &str,
    ) -> Result<Option<Refund>>;
    /// An order by its id alone (the reconciler meets orders of every app).
    async fn order_by_id(&self, id: &OrderId) -> Result<Option<Order>>;
    /// An event about an app rather than one order (`reconciliation.completed`), under `id`:
    /// written once however often it is asked (`false` the second time).
    async fn insert_app_event(
        &self,
        app: &AppId,
        id: &str,
        kind: &str,
        data: serde_json::Value,
        now: Timestamp,
    ) -> Result<bool>;
}

#[async_trait::async_trait]
impl Reconciliations for SqlStore {
    async fn begin_reconciliation(
        &self,
        channel: ChannelName,
        account: &str,
        bill_date: &str,
        owner: &str,
        lease_ms: i64,
        now: Timestamp,
    ) -> Result<Option<Reconciliation>> {
        let mut tx = self.begin_write().await?;
        let id = payonce_core::EventId::new()
            .as_str()
            .replacen("evt_", "rec_", 1);
        q(
            "INSERT INTO reconciliations (id, channel, bill_date, status, summary, started_at, account) VALUES ($1, $2, $3, 'running', '{}', $4, $5) \
             ON CONFLICT (channel, account, bill_date) DO NOTHING",
        )
        .bind(&id)
        .bind(channel.as_str())
        .bind(bill_date)
        .bind(now.0)
        .bind(account)
        .execute(&mut tx)
        .await?;
        let taken = q(
            "UPDATE reconciliations SET status = 'running', reason = NULL, lease_owner = $1, lease_until = $2, started_at = $3, finished_at = NULL \
             WHERE channel = $4 AND bill_date = $5 AND account = $6 AND (lease_until IS NULL OR lease_until < $3 OR lease_owner = $1)",
        )
        .bind(owner)
        .bind(now.0 + lease_ms)
        .bind(now.0)
        .bind(channel.as_str())
        .bind(bill_date)
        .bind(account)
        .execute(&mut tx)
        .await?;
        if taken != 1 {
            return Ok(None);
        }
        let run = q_fmt(format!(
            "SELECT {RUN_COLS} FROM reconciliations WHERE channel = $1 AND bill_date = $2 AND account = $3"
        ))
        .bind(channel.as_str())
        .bind(bill_date)
        .bind(account)
        .fetch_one::<Reconciliation>(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(Some(run))
    }

    async fn add_reconciliation_item(&self, item: &ReconciliationItem) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let added = q(
            "INSERT INTO reconciliation_items (id, reconciliation_id, class, reference, app_id, order_id, local_amount, channel_amount, detail, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (reconciliation_id, class, reference) DO NOTHING",
        )
        .bind(&item.id)
        .bind(&item.reconciliation_id)
        .bind(&item.class)
        .bind(&item.reference)
        .bind(&item.app_id)
        .bind(&item.order_id)
        .bind(item.local_amount)
        .bind(item.channel_amount)
        .bind(&item.detail)
        .bind(item.created_at)
        .execute(&mut tx)
        .await?
            == 1;
        if added && ReconciliationItem::needs_a_person(&item.class) {
            let kind = format!("reconciliation_{}", item.class);
            Self::tx_insert_abnormal_of(
                &mut tx,
                &kind,
                &item.reference,
                &item.detail,
                item.order_id.as_deref(),
                Timestamp(item.created_at),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn finish_reconciliation(
        &self,
        id: &str,
        owner: &str,
        status: &str,
        summary: &str,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = q(
            "UPDATE reconciliations SET status = $1, summary = $2, reason = $3, finished_at = $4, lease_owner = NULL, lease_until = NULL \
             WHERE id = $5 AND lease_owner = $6",
        )
        .bind(status)
        .bind(summary)
        .bind(reason)
        .bind(now.0)
        .bind(id)
        .bind(owner)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(done == 1)
    }

    async fn reconciliation(&self, id: &str) -> Result<Option<Reconciliation>> {
        Ok(q_fmt(format!(
            "SELECT {RUN_COLS} FROM reconciliations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional::<Reconciliation>(&self.reader())
        .await?)
    }

    async fn reconciliation_for(
        &self,
        channel: ChannelName,
        account: &str,
        bill_date: &str,
    ) -> Result<Option<Reconciliation>> {
        Ok(q_fmt(format!(
            "SELECT {RUN_COLS} FROM reconciliations WHERE channel = $1 AND bill_date = $2 AND account = $3"
        ))
        .bind(channel.as_str())
        .bind(bill_date)
        .bind(account)
        .fetch_optional::<Reconciliation>(&self.reader())
        .await?)
    }

    async fn reconciliations(&self, limit: i64) -> Result<Vec<Reconciliation>> {
        Ok(q_fmt(format!(
            "SELECT {RUN_COLS} FROM reconciliations ORDER BY bill_date DESC, channel, account LIMIT $1"
        ))
        .bind(limit)
        .fetch_all::<Reconciliation>(&self.reader())
        .await?)
    }

    async fn reconciliation_items(
        &self,
        id: &str,
        class: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ReconciliationItem>> {
        Ok(q(
            "SELECT id, reconciliation_id, class, reference, app_id, order_id, local_amount, channel_amount, detail, created_at \
             FROM reconciliation_items WHERE reconciliation_id = $1 AND ($2 IS NULL OR class = $2) AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4",
        )
        .bind(id)
        .bind(class)
        .bind(after)
        .bind(limit)
        .fetch_all::<ReconciliationItem>(&self.reader())
        .await?)
    }

    async fn attempts_paid_between(
        &self,
        channel: ChannelName,
        account: &str,
        from: Timestamp,
        to: Timestamp,
        unbilled_only: bool,
    ) -> Result<Vec<Attempt>> {
        q_fmt(format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE channel = $1 AND status = 'succeeded' AND paid_at >= $2 AND paid_at < $3 AND (NOT $4 OR settled_amount IS NULL) AND account = $5 ORDER BY paid_at"))
        .bind(channel.as_str())
        .bind(from.0)
        .bind(to.0)
        .bind(unbilled_only)
        .bind(account)
        .load_all::<Attempt>(&self.reader())
            .await
    }

    async fn refund_by_out_refund_no(
        &self,
        channel: ChannelName,
        out_refund_no: &str,
    ) -> Result<Option<Refund>> {
        q_fmt(format!(
            "SELECT {REFUND_COLS} FROM refunds WHERE channel = $1 AND out_refund_no = $2"
        ))
        .bind(channel.as_str())
        .bind(out_refund_no)
        .load_optional::<Refund>(&self.reader())
        .await
    }

    async fn order_by_id(&self, id: &OrderId) -> Result<Option<Order>> {
        q_fmt(format!("SELECT {ORDER_COLS} FROM orders WHERE id = $1"))
            .bind(id.as_str())
            .load_optional::<Order>(&self.reader())
            .await
    }

    async fn save_bill(&self, bill: &StoredBill, content: &[u8]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        q("DELETE FROM bills WHERE channel = $1 AND merchant_account = $2 AND bill_date = $3 AND bill_type = $4")
            .bind(&bill.channel)
            .bind(&bill.merchant_account)
            .bind(&bill.bill_date)
            .bind(&bill.bill_type)
            .execute(&mut tx)
            .await?;
        q(
            "INSERT INTO bills (id, channel, merchant_account, bill_date, bill_type, format, sha256, size, fetched_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&bill.id)
        .bind(&bill.channel)
        .bind(&bill.merchant_account)
        .bind(&bill.bill_date)
        .bind(&bill.bill_type)
        .bind(&bill.format)
        .bind(&bill.sha256)
        .bind(bill.size)
        .bind(bill.fetched_at)
        .execute(&mut tx)
        .await?;
        for (seq, part) in content.chunks(1 << 20).enumerate() {
            q("INSERT INTO bill_parts (bill_id, seq, bytes) VALUES ($1, $2, $3)")
                .bind(&bill.id)
                .bind(seq as i64)
                .bind(part)
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn stored_bill(
        &self,
        channel: ChannelName,
        merchant: &str,
        bill_date: &str,
    ) -> Result<Option<(StoredBill, Vec<u8>)>> {
        let pool = self.reader();
        let Some((id, channel, merchant_account, bill_date, bill_type, format, sha256, size, fetched_at)) = q(
            "SELECT id, channel, merchant_account, bill_date, bill_type, format, sha256, size, fetched_at FROM bills \
             WHERE channel = $1 AND bill_date = $2 AND merchant_account = $3 ORDER BY fetched_at DESC LIMIT 1",
        )
        .bind(channel.as_str())
        .bind(bill_date)
        .bind(merchant)
        .fetch_optional::<(String, String, String, String, String, String, String, i64, i64)>(&pool)
        .await?
        else {
            return Ok(None);
        };
        let bill = StoredBill {
            id,
            channel,
            merchant_account,
            bill_date,
            bill_type,
            format,
            sha256,
            size,
            fetched_at,
        };
        let mut content = Vec::with_capacity(bill.size.max(0) as usize);
        let mut seq = 0i64;
        // One part at a time: never the whole bill twice in memory.
        while let Some(bytes) = q("SELECT bytes FROM bill_parts WHERE bill_id = $1 AND seq = $2")
            .bind(&bill.id)
            .bind(seq)
            .scalar_optional::<Vec<u8>>(&pool)
            .await?
        {
            content.extend_from_slice(&bytes);
            seq += 1;
        }
        Ok(Some((bill, content)))
    }

    async fn attempts_by_out_trade_nos(
        &self,
        channel: ChannelName,
        nos: &[String],
    ) -> Result<Vec<Attempt>> {
        if nos.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {ATTEMPT_COLS} FROM attempts WHERE channel = $1 AND out_trade_no IN ({})",
            crate::sql::placeholders(2, nos.len())
        );
        // Only numbered placeholders are formatted in; every value is bound.
        let mut query = q_fmt(sql).bind(channel.as_str());
        for no in nos {
            query = query.bind(no);
        }
        query.load_all::<Attempt>(&self.reader()).await
    }

    async fn refunds_by_out_refund_nos(
        &self,
        channel: ChannelName,
        nos: &[String],
    ) -> Result<Vec<Refund>> {
        if nos.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {REFUND_COLS} FROM refunds WHERE channel = $1 AND out_refund_no IN ({})",
            crate::sql::placeholders(2, nos.len())
        );
        // Only numbered placeholders are formatted in; every value is bound.
        let mut query = q_fmt(sql).bind(channel.as_str());
        for no in nos {
            query = query.bind(no);
        }
        query.load_all::<Refund>(&self.reader()).await
    }

    async fn record_billed(&self, attempts: &[Billed], refunds: &[Billed]) -> Result<()> {
        if attempts.is_empty() && refunds.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for (table, rows) in [("attempts", attempts), ("refunds", refunds)] {
            for chunk in rows.chunks(BATCH) {
                // One statement per chunk: a VALUES list joined by id, rewriting only rows
                // whose values differ (a re-run writes nothing).
                let values: Vec<String> = (0..chunk.len())
                    .map(|i| {
                        format!(
                            "(${}, CAST(${} AS BIGINT), CAST(${} AS BIGINT))",
                            3 * i + 1,
                            3 * i + 2,
                            3 * i + 3
                        )
                    })
                    .collect();
                let sql = format!(
                    "WITH v (id, s, f) AS (VALUES {}) UPDATE {table} SET settled_amount = v.s, fee_millifen = v.f FROM v \
                             WHERE {table}.id = v.id AND ({table}.settled_amount IS DISTINCT FROM v.s OR {table}.fee_millifen IS DISTINCT FROM v.f)",
                    values.join(", ")
                );
                // Only numbered placeholders and the table name (one of two literals) are formatted in.
                let mut query = q_fmt(sql);
                for (id, settled, fee) in chunk {
                    query = query.bind(id).bind(*settled).bind(*fee);
                }
                query.execute(&mut tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert_app_event(
        &self,
        app: &AppId,
        id: &str,
        kind: &str,
        data: serde_json::Value,
        now: Timestamp,
    ) -> Result<bool> {
        let payload = serde_json::json!({"id": id, "type": kind, "created_at": now.to_rfc3339(), "data": data}).to_string();
        let mut tx = self.begin_write().await?;
        let added = q(
            "INSERT INTO events (id, app_id, order_id, type, payload, created_at, next_attempt_at) VALUES ($1, $2, NULL, $3, $4, $5, $5) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(app.as_str())
        .bind(kind)
        .bind(payload)
        .bind(now.0)
        .execute(&mut tx)
        .await?
            == 1;
        tx.commit().await?;
        Ok(added)
    }
}

/// The columns of a `Reconciliation`, in its field order.
const RUN_COLS: &str =
    "id, channel, account, bill_date, status, summary, reason, started_at, finished_at";
