//! The yardstick of `payonce bench`: what the database itself can commit, measured the way its
//! own tools measure it — raw single-row commits on a fresh database with nothing else running.
//! PostgreSQL: `pgbench` (when installed; said in the output) with a one-INSERT script, else the
//! same loop over plain connections. SQLite: payonce's own pragmas (WAL, `synchronous=FULL`),
//! one writer connection, no pool, `BEGIN IMMEDIATE` + INSERT + COMMIT.

use anyhow::Context;
use sqlx::Connection;
use std::time::{Duration, Instant};

pub struct Baseline {
    pub commits_per_s: f64,
    /// How it was measured, for the report.
    pub method: String,
}

pub async fn measure(
    database_url: &str,
    concurrency: usize,
    secs: u64,
) -> anyhow::Result<Baseline> {
    if database_url.starts_with("sqlite") {
        sqlite(secs).await
    } else {
        postgres(database_url, concurrency, secs).await
    }
}

async fn sqlite(secs: u64) -> anyhow::Result<Baseline> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    let dir = payonce_harness::scratch::ScratchDir::new()?;
    let opts = SqliteConnectOptions::new()
        .filename(dir.path().join("baseline.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let mut c = sqlx::SqliteConnection::connect_with(&opts).await?;
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        .execute(&mut c)
        .await?;
    let (started, mut n) = (Instant::now(), 0u64);
    while started.elapsed() < Duration::from_secs(secs) {
        sqlx::query("BEGIN IMMEDIATE").execute(&mut c).await?;
        sqlx::query("INSERT INTO t (v) VALUES (1)")
            .execute(&mut c)
            .await?;
        sqlx::query("COMMIT").execute(&mut c).await?;
        n += 1;
    }
    Ok(Baseline {
        commits_per_s: n as f64 / started.elapsed().as_secs_f64(),
        method: "one writer connection, WAL, synchronous=FULL, fresh file".into(),
    })
}

async fn postgres(url: &str, concurrency: usize, secs: u64) -> anyhow::Result<Baseline> {
    // A fresh database beside the one payonce uses, dropped afterwards.
    let (server, _) = url
        .rsplit_once('/')
        .context("a PostgreSQL URL names its database")?;
    let admin_url = format!("{server}/postgres");
    let name = format!("payonce_baseline_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .context("connect to the postgres database")?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&mut admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let fresh = format!("{server}/{name}");
    let result = async {
        let mut c = sqlx::PgConnection::connect(&fresh).await?;
        sqlx::query("CREATE TABLE t (id BIGSERIAL PRIMARY KEY, v INTEGER NOT NULL)")
            .execute(&mut c)
            .await?;
        drop(c);
        match pgbench(&fresh, concurrency, secs).await {
            Some(b) => Ok(b),
            None => loop_inserts(&fresh, concurrency, secs).await,
        }
    }
    .await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
    result
}

/// `pgbench -n -c C -j 2 -T S -f insert.sql`; `None` when pgbench is not installed or failed.
async fn pgbench(url: &str, concurrency: usize, secs: u64) -> Option<Baseline> {
    let dir = payonce_harness::scratch::ScratchDir::new().ok()?;
    let script = dir.path().join("insert.sql");
    std::fs::write(&script, "INSERT INTO t (v) VALUES (1);\n").ok()?;
    let out = tokio::process::Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &concurrency.to_string(),
            "-j",
            "2",
            "-T",
            &secs.to_string(),
            "-f",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))?
        .trim_start_matches("tps = ")
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Baseline {
        commits_per_s: tps,
        method: format!(
            "pgbench, {concurrency} clients, one INSERT per transaction, fresh database"
        ),
    })
}

async fn loop_inserts(url: &str, concurrency: usize, secs: u64) -> anyhow::Result<Baseline> {
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let url = url.to_owned();
        set.spawn(async move {
            let mut c = sqlx::PgConnection::connect(&url).await?;
            let mut n = 0u64;
            while Instant::now() < stop_at {
                sqlx::query("INSERT INTO t (v) VALUES (1)")
                    .execute(&mut c)
                    .await?;
                n += 1;
            }
            anyhow::Ok(n)
        });
    }
    let started = Instant::now();
    let mut total = 0;
    while let Some(n) = set.join_next().await {
        total += n??;
    }
    Ok(Baseline {
        commits_per_s: total as f64 / started.elapsed().as_secs_f64(),
        method: format!("{concurrency} plain connections (pgbench not installed), fresh database"),
    })
}

/// PostgreSQL's own group commit, read from the server's counters: transactions that wrote
/// (the transaction-id horizon, which only writing transactions advance; reading it assigns no
/// id) and WAL flushes (`pg_stat_wal.wal_sync`, every backend's and the WAL writer's). Both
/// are cluster-wide: taken on a quiet machine, their differences over a run are the run's.
#[derive(Clone, Copy)]
pub struct PgWalCounters {
    pub write_transactions: i64,
    pub wal_flushes: i64,
}

pub async fn pg_wal_counters(database_url: &str) -> anyhow::Result<PgWalCounters> {
    let mut c = sqlx::PgConnection::connect(database_url).await?;
    let (xmax, syncs): (String, i64) = sqlx::query_as(
        "SELECT pg_snapshot_xmax(pg_current_snapshot())::text, (SELECT wal_sync FROM pg_stat_wal)",
    )
    .fetch_one(&mut c)
    .await
    .context("read pg_stat_wal")?;
    c.close().await?;
    Ok(PgWalCounters {
        write_transactions: xmax.parse().context("the transaction-id horizon")?,
        wal_flushes: syncs,
    })
}
