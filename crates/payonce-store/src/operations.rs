//! Operations: migrations, health, the abnormal queue, audit counts, the bench baseline: the `Operations` part of the store, and its SQL, expanded for each backend by
//! `sql::impl_store!` (SQLite and PostgreSQL accept the same statements).

#[allow(unused_imports)]
use crate::*;
#[allow(unused_imports)]
use payonce_core::{AppId, AttemptId, ChannelName, OrderId, Timestamp};

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
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Gauge {
    pub what: String,
    pub label: String,
    pub count: i64,
    pub oldest: Option<i64>,
}

/// The SQL of `Operations` for one backend (see `sql::impl_store!` for the parameters).
macro_rules! operations_sql {
    ($Store:ty, $Db:ty, backend = $backend:expr, for_update = $for_update:literal, skip_locked = $skip_locked:literal, migrations = $migrations:expr) => {
        impl $Store {
            async fn tx_insert_abnormal(
                tx: &mut sqlx::Transaction<'static, $Db>,
                kind: &str,
                reference: &str,
                detail: &str,
                now: payonce_core::Timestamp,
            ) -> $crate::Result<()> {
                // The order is found through id columns only (the reference is one of payonce's
                // own ids), never through numbers a tenant chooses; a reconciliation item, whose
                // reference is a channel number, names its order itself (`tx_insert_abnormal_of`).
                Self::tx_insert_abnormal_of(tx, kind, reference, detail, None, now).await
            }

            async fn tx_insert_abnormal_of(
                tx: &mut sqlx::Transaction<'static, $Db>,
                kind: &str,
                reference: &str,
                detail: &str,
                order_id: Option<&str>,
                now: payonce_core::Timestamp,
            ) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO abnormal (id, kind, reference, detail, created_at, order_id) VALUES ($1, $2, $3, $4, $5, \
                     COALESCE($6, (SELECT order_id FROM attempts WHERE id = $3), (SELECT order_id FROM refunds WHERE id = $3), (SELECT id FROM orders WHERE id = $3)))",
                )
                    .bind(payonce_core::EventId::new().as_str().replacen("evt_", "abn_", 1))
                    .bind(kind)
                    .bind(reference)
                    .bind(detail)
                    .bind(now.0)
                    .bind(order_id)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::Operations for $Store {
            fn backend(&self) -> $crate::Backend {
                $backend
            }

            async fn migrate(&self) -> $crate::Result<()> {
                self.run_migrations(&$migrations).await
            }

            async fn ping(&self) -> $crate::Result<()> {
                sqlx::query("SELECT 1").execute(&self.reader()).await?;
                Ok(())
            }

            async fn live_leases(&self, now: payonce_core::Timestamp) -> $crate::Result<Vec<(String, i64)>> {
                Ok(sqlx::query_as::<_, (String, i64)>(
                    "SELECT id, lease_until FROM events WHERE lease_until > $1 \
                     UNION ALL SELECT id, lease_until FROM attempts WHERE lease_until > $1 \
                     UNION ALL SELECT id, lease_until FROM orders WHERE lease_until > $1 \
                     UNION ALL SELECT id, lease_until FROM refunds WHERE lease_until > $1",
                )
                .bind(now.0)
                .fetch_all(&self.reader())
                .await?)
            }

            async fn row_counts(&self) -> $crate::Result<Vec<(&'static str, i64)>> {
                use sqlx::Row;
                let mut out = Vec::new();
                for (table, sql) in $crate::sql::COUNT_QUERIES {
                    let n: i64 = sqlx::query(*sql).fetch_one(&self.reader()).await?.try_get(0)?;
                    out.push((*table, n));
                }
                Ok(out)
            }

            async fn gauges(&self) -> $crate::Result<Vec<$crate::operations::Gauge>> {
                Ok(sqlx::query_as::<_, $crate::operations::Gauge>(
                    "SELECT 'attempt' AS what, status AS label, COUNT(*) AS count, MIN(created_at) AS oldest FROM attempts \
                     WHERE status IN ('created', 'pending', 'unknown') GROUP BY status \
                     UNION ALL SELECT 'event', delivery_status, COUNT(*), MIN(created_at) FROM events WHERE delivery_status = 'pending' GROUP BY delivery_status \
                     UNION ALL SELECT 'abnormal', kind, COUNT(*), MIN(created_at) FROM abnormal WHERE resolved_at IS NULL GROUP BY kind",
                )
                .fetch_all(&self.reader())
                .await?)
            }

            async fn abnormal_open(&self) -> $crate::Result<Vec<$crate::AbnormalRow>> {
                use sqlx::Row;
                let rows = sqlx::query("SELECT id, kind, reference, detail, created_at, order_id FROM abnormal WHERE resolved_at IS NULL ORDER BY id")
                    .fetch_all(&self.reader())
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::AbnormalRow {
                            id: r.try_get("id")?,
                            kind: r.try_get("kind")?,
                            reference: r.try_get("reference")?,
                            detail: r.try_get("detail")?,
                            created_at: payonce_core::Timestamp(r.try_get("created_at")?),
                            order_id: r.try_get("order_id")?,
                        })
                    })
                    .collect()
            }

            async fn insert_abnormal(&self, kind: &str, reference: &str, detail: &str, now: payonce_core::Timestamp) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                Self::tx_insert_abnormal(&mut tx, kind, reference, detail, now).await?;
                tx.commit().await?;
                Ok(())
            }
        }
    };
}

pub(crate) use operations_sql;
