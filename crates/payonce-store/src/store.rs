//! `SqlStore`: the one implementation of the store's traits, over SQLite or PostgreSQL. Each
//! aggregate's file holds its trait and its `impl … for SqlStore`; this file holds only what
//! they run on — a write transaction, a reader, the dialect — taken from the backend's own
//! connections (`SqliteStore`, `PgStore`).

use crate::db::{Reader, Tx};
use crate::{Backend, PgStore, Result, SqliteStore};

/// The store: every trait of `Store` (and `Inspect`), on the connections of one backend.
pub struct SqlStore {
    conn: Conn,
}

enum Conn {
    Sqlite(SqliteStore),
    Pg(PgStore),
}

impl From<SqliteStore> for SqlStore {
    fn from(s: SqliteStore) -> Self {
        SqlStore {
            conn: Conn::Sqlite(s),
        }
    }
}

impl From<PgStore> for SqlStore {
    fn from(s: PgStore) -> Self {
        SqlStore { conn: Conn::Pg(s) }
    }
}

impl SqlStore {
    /// The SQL dialect of the backend (row locks, migrations).
    pub(crate) fn dialect(&self) -> Backend {
        match &self.conn {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Pg(_) => Backend::Postgres,
        }
    }

    /// A write transaction, begun the backend's way (`BEGIN IMMEDIATE` on the SQLite writer; on
    /// the PostgreSQL server in use).
    pub(crate) async fn begin_write(&self) -> Result<Tx> {
        Ok(match &self.conn {
            Conn::Sqlite(s) => Tx::Sqlite(s.begin_write().await?),
            Conn::Pg(s) => Tx::Pg(s.begin_write().await?),
        })
    }

    /// Waits for a request's fence (SQLite's group commit; nothing to wait for on PostgreSQL,
    /// whose transactions each commit before they return).
    pub(crate) async fn durable(&self, fence: crate::Fence) -> Result<()> {
        match &self.conn {
            Conn::Sqlite(s) => s.durable(fence).await,
            Conn::Pg(_) => Ok(()),
        }
    }

    /// Where reads go (a cheap clone: pools are shared handles).
    pub(crate) fn reader(&self) -> Reader {
        match &self.conn {
            Conn::Sqlite(s) => Reader::Sqlite(s.reader()),
            Conn::Pg(s) => Reader::Pg(s.reader()),
        }
    }

    pub(crate) async fn run_migrations(&self) -> Result<()> {
        let migrator = self.dialect().migrator();
        match &self.conn {
            Conn::Sqlite(s) => s.run_migrations(migrator).await,
            Conn::Pg(s) => s.run_migrations(migrator).await,
        }
    }

    /// Closes every connection (a template database must have none before it is copied).
    pub async fn close(&self) {
        match &self.conn {
            Conn::Sqlite(s) => s.close().await,
            Conn::Pg(s) => s.close().await,
        }
    }
}

#[async_trait::async_trait]
impl crate::Durability for SqlStore {
    async fn durable(&self, fence: crate::Fence) -> Result<()> {
        SqlStore::durable(self, fence).await
    }
}
