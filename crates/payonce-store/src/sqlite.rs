//! The SQLite store: the embedded default. One writer connection (so concurrent requests queue
//! for it instead of failing with SQLITE_BUSY) whose concurrent transactions share one commit
//! (`group_commit`), a pool of readers, WAL and `synchronous=FULL` (a commit is on disk before
//! anyone is told about it). These are its connections; the SQL that runs on them is
//! `SqlStore`'s, shared with PostgreSQL.

use crate::Result;
use crate::group_commit::{Fence, GroupTx, GroupWriter};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The SQLite connections of a `SqlStore` (`SqlStore::from(SqliteStore::connect(url).await?)`).
pub struct SqliteStore {
    writer: Arc<GroupWriter>,
    readers: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `sqlite://PATH`.
    pub async fn connect(url: &str) -> Result<Self> {
        let base = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Another process (a CLI `apps create`, a second server in a test) may hold the
            // write lock briefly; wait for it rather than fail.
            .busy_timeout(Duration::from_secs(10));
        // The database holds payment records and encrypted webhook secrets: created readable
        // by its owner only (0600), the WAL and shared-memory files beside it too.
        let path = base.get_filename().to_path_buf();
        #[cfg(unix)]
        if !path.as_os_str().is_empty() && path.as_os_str() != ":memory:" && !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path);
        }
        // Requests queue here for the single writer; under a 500-request storm the queue can be
        // long, and waiting is the correct answer, not a 5xx (the request's own deadline ends it).
        let writer = GroupWriter::connect(base.clone()).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            // No ping before each use: on SQLite it is one more hand-off to the connection's
            // thread per read, and a connection to a local file does not die between uses.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(base.read_only(true))
            .await?;
        #[cfg(unix)]
        for suffix in ["", "-wal", "-shm"] {
            use std::os::unix::fs::PermissionsExt;
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
        }
        Ok(SqliteStore { writer, readers })
    }

    /// Closes the writer and the readers.
    pub async fn close(&self) {
        self.writer.close().await;
        self.readers.close().await;
    }

    /// The readers' pool (a cheap clone: pools are shared handles).
    pub(crate) fn reader(&self) -> SqlitePool {
        self.readers.clone()
    }

    /// A write transaction in the writer's current batch (`BEGIN IMMEDIATE` for the first of a
    /// batch takes the write lock at once, so a transaction never upgrades from read to write
    /// halfway: the classic SQLITE_BUSY deadlock between two processes).
    pub(crate) async fn begin_write(&self) -> Result<GroupTx> {
        self.writer.begin().await
    }

    /// Waits for the batch `fence` names to be on disk.
    pub(crate) async fn durable(&self, fence: Fence) -> Result<()> {
        self.writer.durable(fence).await
    }

    pub(crate) async fn run_migrations(&self, migrator: &sqlx::migrate::Migrator) -> Result<()> {
        // Through the one writer connection, like every other write (outside any batch: the
        // migrator runs its own transactions).
        let mut writer = self.writer.exclusive().await?;
        migrator
            .run_direct(None, writer.conn(), false)
            .await
            .map_err(|e| crate::migrate::explain(migrator, e))
    }
}
