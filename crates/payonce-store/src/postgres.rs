//! The PostgreSQL store: the shared source of truth when several payonce instances run.
//! Transitions lock the order row (`FOR UPDATE`), so every change to one order is serialized
//! by the database, whichever instance makes it.

use crate::sql::impl_store;
use crate::{Backend, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;

pub struct PgStore {
    pool: PgPool,
}

/// Key of the advisory lock that keeps two instances from migrating at the same time.
const MIGRATION_LOCK: i64 = 0x0070_6179_6f6e_6365;

impl PgStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        Ok(PgStore { pool })
    }

    /// Closes every connection (a template database must have none before it is copied).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    async fn run_migrations(&self, migrations: &[(i64, &str)]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        // Transaction-scoped: released at commit, or when a crashed instance's session ends.
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
        Self::apply_pending(&mut tx, migrations).await?;
        tx.commit().await?;
        Ok(())
    }
}

impl_store!(PgStore, Postgres, backend = Backend::Postgres, for_update = " FOR UPDATE", skip_locked = " FOR UPDATE SKIP LOCKED", migrations = crate::migrate::POSTGRES);
