//! Throwaway databases: a temp-dir SQLite file, or a PostgreSQL database copied from a migrated
//! template (fast, and every test gets its own, so tests run in parallel).

use sqlx::{Connection, PgConnection};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    _dir: Option<crate::scratch::ScratchDir>,
    pg_name: Option<String>,
}

/// The maintenance database tests create their databases from.
pub fn pg_admin_url() -> String {
    std::env::var("PAYONCE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn pg_url_for(db: &str) -> String {
    let admin = pg_admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{db}")
}

pub fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

impl TestDb {
    /// A database for `backend`, or `None` when PostgreSQL is unreachable off CI (loudly). On
    /// CI an unreachable PostgreSQL fails the test: a skipped check is not a passed one.
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite()),
            Backend::Postgres => match Self::postgres().await {
                Ok(db) => Some(db),
                Err(e) if !on_ci() => {
                    eprintln!(
                        "\n!!! SKIPPING PostgreSQL test: {e}\n!!! (start PostgreSQL or set PAYONCE_TEST_PG_URL; with CI=true this fails)\n"
                    );
                    None
                }
                Err(e) => panic!("PostgreSQL unreachable with CI=true: {e}"),
            },
        }
    }

    /// A database somebody else made (and cleans up): a private server's, say.
    pub fn external(backend: Backend, url: String) -> TestDb {
        TestDb {
            backend,
            url,
            _dir: None,
            pg_name: None,
        }
    }

    pub fn sqlite() -> TestDb {
        let dir = crate::scratch::ScratchDir::in_memory().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("payonce.db").display());
        TestDb {
            backend: Backend::Sqlite,
            url,
            _dir: Some(dir),
            pg_name: None,
        }
    }

    pub async fn postgres() -> anyhow::Result<TestDb> {
        let mut admin = tokio::time::timeout(
            Duration::from_secs(5),
            PgConnection::connect(&pg_admin_url()),
        )
        .await??;
        // One creator at a time across test processes: the template must be fully migrated and
        // have no connections when it is copied.
        sqlx::query("SELECT pg_advisory_lock(8675309)")
            .execute(&mut admin)
            .await?;
        let result = async {
            let tpl = format!("payonce_tpl_{}", payonce_store::schema_tag());
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&tpl)
                    .fetch_one(&mut admin)
                    .await?;
            if !exists {
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {tpl}")))
                    .execute(&mut admin)
                    .await?;
                let store = payonce_store::SqlStore::from(
                    payonce_store::PgStore::connect(&pg_url_for(&tpl), 1).await?,
                );
                payonce_store::Operations::migrate(&store).await?;
                store.close().await;
            }
            let name = format!("payonce_t_{}", uuid_like());
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE {name} TEMPLATE {tpl}"
            )))
            .execute(&mut admin)
            .await?;
            anyhow::Ok(name)
        }
        .await;
        let _ = sqlx::query("SELECT pg_advisory_unlock(8675309)")
            .execute(&mut admin)
            .await;
        let name = result?;
        Ok(TestDb {
            backend: Backend::Postgres,
            url: pg_url_for(&name),
            _dir: None,
            pg_name: Some(name),
        })
    }
}

fn uuid_like() -> String {
    let mut b = [0u8; 8];
    getrandom(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("/dev/urandom");
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs outside any runtime guarantee: use a private one on a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut admin = PgConnection::connect(&pg_admin_url()).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .ok()
            })
        })
        .join();
    }
}
