//! Faults of the real parts: PostgreSQL's connections cut mid-traffic (through the testkit
//! proxy, never touching the shared server other tests use). Requests in flight get
//! `503 database_unavailable` with `Retry-After` — retrying is safe — never `500 internal`, and
//! everything converges once the database is back.

use crate::assert_invariants;
use payonce_testkit::app::spawn_on;
use payonce_testkit::proxy::Proxy;
use payonce_testkit::{AppOptions, Backend, TestDb};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

payonce_testkit::store_tests!(a_database_from_a_newer_payonce_is_refused);

/// A database migrated by a newer payonce (it records a migration this binary lacks) is
/// refused with a message that says so — by the store and by `payonce serve` — and nothing is
/// written to it.
async fn a_database_from_a_newer_payonce_is_refused(b: Backend) {
    let Some(db) = TestDb::new(b).await else { return };
    payonce_store::open(&db.url, true).await.expect("migrated by this payonce");
    // Record a migration from the future, as a newer payonce would have.
    let future = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'from the future', $1, $2, 0)";
    match b {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            sqlx::query(future).bind(true).bind(vec![0u8; 48]).execute(&pool).await.unwrap();
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            sqlx::query(future).bind(true).bind(vec![0u8; 48]).execute(&pool).await.unwrap();
        }
    }
    let err = payonce_store::open(&db.url, true).await.err().expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("newer payonce") && msg.contains("9999"), "{msg}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payonce"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db.url, "--channels", "/nonexistent/channels.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("newer payonce"), "serve says why it refuses: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_connections_cut_give_503_then_converge() {
    let Some(mut db) = TestDb::new(Backend::Postgres).await else { return };
    let proxy = Proxy::start("127.0.0.1:5432", true).await.unwrap();
    db.url = db.url.replace("127.0.0.1:5432", &proxy.addr);
    let app = spawn_on(db, AppOptions::default()).await;
    let order = |no: &str| json!({"merchant_order_no": no, "amount": 100, "currency": "CNY", "subject": "s"});
    assert_eq!(app.post("/v1/orders", order("F-1")).await.status(), StatusCode::CREATED);

    // The database drops every connection and refuses new ones.
    proxy.set_up(false);
    proxy.cut_all();
    let started = std::time::Instant::now();
    let r = app.post("/v1/orders", order("F-2")).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "not a 500");
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "database_unavailable", "{body}");
    eprintln!("answered 503 after {:?}", started.elapsed());
    assert_eq!(app.http.get(app.url("/readyz")).send().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    // The API answers health checks regardless.
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);

    // Back: the same request now succeeds (the retry the 503 invited), and nothing is doubled.
    proxy.set_up(true);
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = app.post("/v1/orders", order("F-2")).await;
        if r.status() == StatusCode::CREATED || r.status() == StatusCode::OK {
            break;
        }
        let status = r.status();
        assert!(tokio::time::Instant::now() < end, "never recovered: {status} {}", r.text().await.unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let again = app.post("/v1/orders", order("F-2")).await;
    assert_eq!(again.status(), StatusCode::OK, "the same order, not a second one");
    assert_invariants(app.violations().await);
}
