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
