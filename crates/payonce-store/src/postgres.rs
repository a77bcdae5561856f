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

    async fn run_migrations(&self, migrator: &sqlx::migrate::Migrator) -> Result<()> {
        // The migrator holds a PostgreSQL advisory lock while it runs: instances starting
        // together migrate one after the other.
        migrator.run(&self.pool).await.map_err(|e| crate::migrate::explain(migrator, e))
    }
}

impl_store!(PgStore, Postgres, backend = Backend::Postgres, for_update = " FOR UPDATE", skip_locked = " FOR UPDATE SKIP LOCKED", migrations = crate::migrate::POSTGRES);
