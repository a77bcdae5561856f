//! The PostgreSQL store: the shared source of truth when several payonce instances run.
//! Transitions lock the order row (`FOR UPDATE`), so every change to one order is serialized
//! by the database, whichever instance makes it.
//!
//! Fail-over: `--database-url` may name several servers (comma-separated: a primary and its
//! streaming replicas). sqlx parses one host per URL, so the choice is made here: payonce uses the
//! first that answers and is writable (`pg_is_in_recovery()` false), checks it every second, and
//! moves to the next writable one when it stops answering or becomes a replica. A write that
//! fails on the old server is a 503 `database_unavailable` (nothing was committed there, or the
//! synchronous replica has it): the client's retry lands on the new primary.
//!
//! These are its connections; the SQL that runs on them is `SqlStore`'s, shared with SQLite.

use crate::{Result, StoreError};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The PostgreSQL connections of a `SqlStore` (`SqlStore::from(PgStore::connect(urls, n).await?)`).
pub struct PgStore {
    servers: Arc<Servers>,
}

/// The candidate servers and the pool of the one in use.
struct Servers {
    urls: Vec<PgConnectOptions>,
    max_connections: u32,
    /// (index into `urls`, its pool). Swapped, never mutated: a request holds its own clone.
    current: RwLock<(usize, PgPool)>,
    /// One search for a new primary at a time.
    searching: tokio::sync::Mutex<()>,
}

/// How often the server in use is checked for still being a writable primary.
const PRIMARY_CHECK: Duration = Duration::from_secs(1);

impl PgStore {
    /// `urls`: one PostgreSQL URL, or several separated by commas (fail-over candidates, in order
    /// of preference).
    pub async fn connect(urls: &str, max_connections: u32) -> Result<Self> {
        let urls = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(PgConnectOptions::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            return Err(StoreError::BadUrl);
        }
        let (index, pool) = if urls.len() == 1 {
            // One server: no search, and the pool's own timeout decides how long to wait for it.
            (
                0,
                pool_for(1, max_connections)
                    .connect_with(urls[0].clone())
                    .await?,
            )
        } else {
            find_primary(&urls, max_connections, None)
                .await
                .ok_or_else(|| {
                    StoreError::Db(sqlx::Error::Configuration(
                        format!(
                            "none of the {} PostgreSQL servers is a writable primary",
                            urls.len()
                        )
                        .into(),
                    ))
                })?
        };
        let servers = Arc::new(Servers {
            urls,
            max_connections,
            current: RwLock::new((index, pool)),
            searching: Default::default(),
        });
        if servers.urls.len() > 1 {
            // The watcher holds a weak reference: it ends when the store is dropped.
            let weak = Arc::downgrade(&servers);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(PRIMARY_CHECK).await;
                    let Some(servers) = weak.upgrade() else {
                        return;
                    };
                    servers.ensure_primary().await;
                }
            });
        }
        Ok(PgStore { servers })
    }

    /// Closes every connection (a template database must have none before it is copied).
    pub async fn close(&self) {
        self.reader().close().await;
    }

    /// The pool of the server in use (a cheap clone: pools are shared handles).
    pub(crate) fn reader(&self) -> PgPool {
        self.servers.current.read().unwrap().1.clone()
    }

    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Postgres>> {
        match self.reader().begin().await {
            Ok(tx) => Ok(tx),
            Err(e) => {
                let e = StoreError::Db(e);
                if e.is_unavailable() && self.servers.urls.len() > 1 {
                    // Do not wait for the next check: look for the new primary now (this request
                    // still fails; its retry finds it).
                    let servers = self.servers.clone();
                    tokio::spawn(async move { servers.ensure_primary().await });
                }
                Err(e)
            }
        }
    }

    pub(crate) async fn run_migrations(&self, migrator: &sqlx::migrate::Migrator) -> Result<()> {
        // The migrator holds a PostgreSQL advisory lock while it runs: instances starting
        // together migrate one after the other.
        migrator
            .run(&self.reader())
            .await
            .map_err(|e| crate::migrate::explain(migrator, e))
    }
}

impl Servers {
    /// Keeps the server in use if it is still a writable primary; otherwise switches to the
    /// first candidate that is (and keeps the current one if none is, for now).
    async fn ensure_primary(&self) {
        let Ok(_one) = self.searching.try_lock() else {
            return;
        };
        let (index, pool) = self.current.read().unwrap().clone();
        if is_writable_primary(&pool).await {
            return;
        }
        tracing::warn!(
            server = index,
            "the PostgreSQL server in use is no longer a writable primary; looking for one"
        );
        if let Some((new_index, new_pool)) =
            find_primary(&self.urls, self.max_connections, Some(index)).await
        {
            tracing::warn!(
                from = index,
                to = new_index,
                host = self.urls[new_index].get_host(),
                port = self.urls[new_index].get_port(),
                "switched to a new PostgreSQL primary"
            );
            metrics::counter!("payonce_database_failovers_total").increment(1);
            *self.current.write().unwrap() = (new_index, new_pool);
            // The old server's connections go: requests still holding one finish or fail.
            tokio::spawn(async move { pool.close().await });
        }
    }
}

/// One server: a request may wait up to 30 s for a connection (a restart is waited out). Several:
/// 3 s — a request caught on a dead primary answers 503 soon and its retry finds the new one (a
/// pool keeps retrying the connect until its timeout; closing it does not stop that).
fn pool_for(candidates: usize, max_connections: u32) -> PgPoolOptions {
    let wait = if candidates > 1 {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(30)
    };
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(wait)
        // No ping before each use: it was a round trip before every read and every
        // transaction. A connection that died (a restarted server) fails its statement instead,
        // which is a 503 `database_unavailable` the client retries; sqlx then drops it.
        .test_before_acquire(false)
}

/// `SELECT NOT pg_is_in_recovery()` within two seconds.
async fn is_writable_primary(pool: &PgPool) -> bool {
    let check = sqlx::query_scalar::<_, bool>("SELECT NOT pg_is_in_recovery()").fetch_one(pool);
    matches!(
        tokio::time::timeout(Duration::from_secs(2), check).await,
        Ok(Ok(true))
    )
}

/// The first candidate (other than `skip`, which just failed) that answers and is writable.
async fn find_primary(
    urls: &[PgConnectOptions],
    max_connections: u32,
    skip: Option<usize>,
) -> Option<(usize, PgPool)> {
    for (i, url) in urls.iter().enumerate() {
        if Some(i) == skip {
            continue;
        }
        let pool = pool_for(urls.len(), max_connections)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy_with(url.clone());
        if is_writable_primary(&pool).await {
            // Writes wait for a connection as long as with one server; only the probe was short.
            pool.close().await;
            return Some((
                i,
                pool_for(urls.len(), max_connections).connect_lazy_with(url.clone()),
            ));
        }
        pool.close().await;
    }
    None
}
