//! Storage for payonce: the `Store` traits (one per aggregate, each in its own file with its one
//! implementation, for `SqlStore`), over SQLite (embedded default) or PostgreSQL (several
//! instances). The SQL is written once: `db` runs it on either backend and holds their few
//! differences (`Backend::for_update`, `skip_locked`, the migrations); `sqlite` and `postgres`
//! hold each backend's connections. Whole-table reads for checkers and tests are a separate
//! trait, `Inspect`. The database is the arbiter of every race: unique keys, a partial unique
//! index for "one active attempt per order", and conditional updates.

mod accounts;
mod apps;
mod attempts;
pub mod console;
pub mod coupons;
mod db;
mod group_commit;
mod idempotency;
mod inspect;
mod leases;
mod migrate;
mod model;
mod operations;
mod orders;
mod outbox;
mod postgres;
mod reconciliations;
mod refunds;
mod rows;
mod sql;
mod sqlite;
mod store;

pub use accounts::{ChannelAccountRecord, ChannelAccounts, SaveAccount, SealedSecrets};
pub use apps::Apps;
pub use attempts::Attempts;
pub use console::{AbnormalItem, AuditEntry, ChannelMessage, Console, ConsoleSession};
pub use coupons::{CouponUse, Coupons};
pub use group_commit::{Fence, fenced};
pub use idempotency::IdempotencyKeys;
pub use inspect::Inspect;
pub use leases::Leases;
pub use model::*;
pub use operations::Operations;
pub use orders::Orders;
pub use outbox::Outbox;
pub use postgres::PgStore;
pub use reconciliations::{
    BATCH, Billed, Reconciliation, ReconciliationItem, Reconciliations, StoredBill,
};
pub use refunds::Refunds;
pub use sqlite::SqliteStore;
pub use store::SqlStore;

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
    /// The shared commit of a batch of SQLite transactions failed: nothing in it was written.
    #[error("commit failed: {0}")]
    CommitFailed(String),
    #[error("unsupported database url (expected sqlite://… or postgres://…)")]
    BadUrl,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// The database cannot be reached or is not serving right now (connection refused or cut,
    /// pool exhausted, server shutting down or starting, too many connections, disk full): the
    /// request changed nothing durable it did not roll back, and retrying later is safe.
    pub fn is_unavailable(&self) -> bool {
        if let StoreError::CommitFailed(_) = self {
            return true;
        }
        let StoreError::Db(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // SQLite primary codes (the low byte of extended ones): BUSY 5, LOCKED 6
                    // (past the busy timeout), IOERR 10, FULL 13.
                    return code
                        .parse::<u32>()
                        .is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 10 | 13));
                }
                // PostgreSQL: connection exceptions (08…), shutting down / cannot connect now
                // (57P01–57P03), too many connections (53300), disk full (53100), read-only
                // transaction after a fail-over (25006).
                code.starts_with("08")
                    || matches!(
                        code.as_str(),
                        "57P01" | "57P02" | "57P03" | "53300" | "53100" | "25006"
                    )
            }
            _ => false,
        }
    }
}

/// The database behind a store, and the SQL dialect its statements are written in (the
/// differences are `Backend`'s methods in `db.rs`).
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
    // The runner's name is part of it: databases migrated by an earlier runner are not reused.
    for b in b"sqlx-migrate".iter() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    for m in migrate::SQLITE.iter().chain(migrate::POSTGRES.iter()) {
        for b in m
            .version
            .to_le_bytes()
            .iter()
            .chain(m.sql.as_str().as_bytes())
        {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Opens the store named by a URL: `sqlite://PATH` or `postgres://…`, and migrates it.
pub async fn open(url: &str, migrate: bool) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(connect(url, migrate).await?))
}

/// `open` with at most `pg_connections` connections to PostgreSQL (`serve --database-connections`).
pub async fn open_pooled(url: &str, migrate: bool, pg_connections: u32) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(
        connect_pooled(url, migrate, pg_connections).await?,
    ))
}

/// `open`, for what also reads whole tables (the invariant checker, chaos, the bench, tests).
pub async fn open_inspect(url: &str, migrate: bool) -> Result<Arc<dyn Inspect>> {
    Ok(Arc::new(connect(url, migrate).await?))
}

/// `open_inspect` with at most `pg_connections` PostgreSQL connections: the test harness runs
/// dozens of apps against one server at once, and 10 each would pass its `max_connections`.
pub async fn open_inspect_pooled(
    url: &str,
    migrate: bool,
    pg_connections: u32,
) -> Result<Arc<dyn Inspect>> {
    Ok(Arc::new(
        connect_pooled(url, migrate, pg_connections).await?,
    ))
}

/// Connections per PostgreSQL pool of a `serve` instance.
const PG_CONNECTIONS: u32 = 10;

async fn connect(url: &str, migrate: bool) -> Result<SqlStore> {
    connect_pooled(url, migrate, PG_CONNECTIONS).await
}

async fn connect_pooled(url: &str, migrate: bool, pg_connections: u32) -> Result<SqlStore> {
    let store = if url.starts_with("sqlite:") {
        SqlStore::from(SqliteStore::connect(url).await?)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        SqlStore::from(PgStore::connect(url, pg_connections).await?)
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
/// Every persistent operation payonce performs, by aggregate (each its own trait and file).
/// Each method is one transaction (or one read); none is ever held open across a network call.
/// On a `dyn Store` every method is callable directly; generic code imports `prelude::*`.
pub trait Store:
    Durability
    + Orders
    + Attempts
    + Coupons
    + Console
    + Refunds
    + Outbox
    + Leases
    + Apps
    + ChannelAccounts
    + IdempotencyKeys
    + Operations
    + Reconciliations
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: Durability
        + Orders
        + Attempts
        + Coupons
        + Console
        + Refunds
        + Outbox
        + Leases
        + Apps
        + ChannelAccounts
        + ChannelAccounts
        + IdempotencyKeys
        + Operations
        + Reconciliations
        + Send
        + Sync
        + 'static
{
}

/// The store's traits, to call their methods on a `dyn Store`.
pub mod prelude {
    pub use crate::{
        Apps, Attempts, ChannelAccounts, Console, Coupons, Durability, IdempotencyKeys, Inspect,
        Leases, Operations, Orders, Outbox, Reconciliations, Refunds, Store,
    };
}

/// Answers wait for what they read: see `group_commit`.
#[async_trait::async_trait]
pub trait Durability: Send + Sync {
    /// Returns once the writes a request's [`fenced`] work may have read are on disk; an error
    /// (unavailable, a 503) if they never will be.
    async fn durable(&self, fence: Fence) -> Result<()>;
}
