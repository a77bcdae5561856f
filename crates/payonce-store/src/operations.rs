//! Operations: migrations, health, the abnormal queue, audit counts, the bench baseline: the
//! `Operations` trait of the store and its implementation for `SqlStore`.

use crate::db::{Tx, from_row, q};
use crate::*;
use payonce_core::Timestamp;

#[async_trait::async_trait]
pub trait Operations: Send + Sync {
    fn backend(&self) -> Backend;
    async fn migrate(&self) -> Result<()>;
    async fn ping(&self) -> Result<()>;
    async fn insert_abnormal(
        &self,
        kind: &str,
        reference: &str,
        detail: &str,
        now: Timestamp,
    ) -> Result<()>;
    /// Row count of every payonce table: lets a test prove a rejected request changed nothing.
    async fn row_counts(&self) -> Result<Vec<(&'static str, i64)>>;
    /// Events, attempts, orders and refunds a worker holds under a lease still running at
    /// `now`, by id, with the lease's end. Until then nobody else takes them (a worker that lost
    /// its database mid-delivery keeps its event until the lease lapses), so the liveness
    /// checker's due time for each is the later of its schedule and its lease.
    async fn live_leases(&self, now: Timestamp) -> Result<Vec<(String, i64)>>;
    async fn abnormal_open(&self) -> Result<Vec<AbnormalRow>>;
    /// What the operator's gauges show: per (kind, label) a count and the oldest moment
    /// (`attempt` by status; `event` pending delivery; `abnormal` open by kind).
    async fn gauges(&self) -> Result<Vec<Gauge>>;
}

/// One group of a `gauges()` reading: `what` (`attempt`, `event`, `abnormal`), its label
/// (status or kind), how many, and the oldest one's creation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gauge {
    pub what: String,
    pub label: String,
    pub count: i64,
    pub oldest: Option<i64>,
}
from_row!(Gauge {
    what,
    label,
    count,
    oldest,
});

impl SqlStore {
    pub(crate) async fn tx_insert_abnormal(
        tx: &mut Tx,
        kind: &str,
        reference: &str,
        detail: &str,
        now: Timestamp,
    ) -> Result<()> {
        // The order is found through id columns only (the reference is one of payonce's
        // own ids), never through numbers a tenant chooses; a reconciliation item, whose
        // reference is a channel number, names its order itself (`tx_insert_abnormal_of`).
        Self::tx_insert_abnormal_of(tx, kind, reference, detail, None, now).await
    }

    pub(crate) async fn tx_insert_abnormal_of(
        tx: &mut Tx,
        kind: &str,
        reference: &str,
        detail: &str,
        order_id: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        q(
            "INSERT INTO abnormal (id, kind, reference, detail, created_at, order_id) VALUES ($1, $2, $3, $4, $5, \
             COALESCE($6, (SELECT order_id FROM attempts WHERE id = $3), (SELECT order_id FROM refunds WHERE id = $3), (SELECT id FROM orders WHERE id = $3)))",
        )
            .bind(payonce_core::EventId::new().as_str().replacen("evt_", "abn_", 1))
            .bind(kind)
            .bind(reference)
            .bind(detail)
            .bind(now.0)
            .bind(order_id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Operations for SqlStore {
    fn backend(&self) -> Backend {
        self.dialect()
    }

    async fn migrate(&self) -> Result<()> {
        self.run_migrations().await
    }

    async fn ping(&self) -> Result<()> {
        q("SELECT 1").execute(&self.reader()).await?;
        Ok(())
    }

    async fn live_leases(&self, now: Timestamp) -> Result<Vec<(String, i64)>> {
        Ok(
            q("SELECT id, lease_until FROM events WHERE lease_until > $1 \
                     UNION ALL SELECT id, lease_until FROM attempts WHERE lease_until > $1 \
                     UNION ALL SELECT id, lease_until FROM orders WHERE lease_until > $1 \
                     UNION ALL SELECT id, lease_until FROM refunds WHERE lease_until > $1")
            .bind(now.0)
            .fetch_all::<(String, i64)>(&self.reader())
            .await?,
        )
    }

    async fn row_counts(&self) -> Result<Vec<(&'static str, i64)>> {
        let mut out = Vec::new();
        for (table, sql) in crate::sql::COUNT_QUERIES {
            let n: i64 = q(*sql).scalar(&self.reader()).await?;
            out.push((*table, n));
        }
        Ok(out)
    }

    async fn gauges(&self) -> Result<Vec<Gauge>> {
        Ok(q(
            "SELECT 'attempt' AS what, status AS label, COUNT(*) AS count, MIN(created_at) AS oldest FROM attempts \
             WHERE status IN ('created', 'pending', 'unknown') GROUP BY status \
             UNION ALL SELECT 'event', delivery_status, COUNT(*), MIN(created_at) FROM events WHERE delivery_status = 'pending' GROUP BY delivery_status \
             UNION ALL SELECT 'abnormal', kind, COUNT(*), MIN(created_at) FROM abnormal WHERE resolved_at IS NULL GROUP BY kind",
        )
        .fetch_all::<Gauge>(&self.reader())
        .await?)
    }

    async fn abnormal_open(&self) -> Result<Vec<AbnormalRow>> {
        let rows = q("SELECT id, kind, reference, detail, created_at, order_id FROM abnormal WHERE resolved_at IS NULL ORDER BY id")
            .fetch_all::<(String, String, String, String, i64, Option<String>)>(&self.reader())
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, kind, reference, detail, created_at, order_id)| AbnormalRow {
                    id,
                    kind,
                    reference,
                    detail,
                    created_at: Timestamp(created_at),
                    order_id,
                },
            )
            .collect())
    }

    async fn insert_abnormal(
        &self,
        kind: &str,
        reference: &str,
        detail: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        Self::tx_insert_abnormal(&mut tx, kind, reference, detail, now).await?;
        tx.commit().await?;
        Ok(())
    }
}
