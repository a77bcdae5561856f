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

/// PostgreSQL restarted under load (a private server, never the shared one): requests in
/// flight get 503 `database_unavailable` (never 500), and afterwards everything converges —
/// every order paid or ended, every charge recorded once (safety and liveness checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_under_load_converges() {
    let pg = match payonce_testkit::pg::PrivatePostgres::start() {
        Ok(pg) => std::sync::Arc::new(pg),
        Err(e) if payonce_testkit::db::on_ci() => {
            panic!("a private PostgreSQL is needed with CI=true: {e}")
        }
        Err(e) => return eprintln!("\n!!! SKIPPING the PostgreSQL restart test: {e}\n"),
    };
    let app = spawn_on(
        TestDb::external(Backend::Postgres, pg.url("postgres")),
        AppOptions::frozen(),
    )
    .await;
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        u16,
        usize,
    >::new()));
    let stop_at = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut load = tokio::task::JoinSet::new();
    for w in 0..6 {
        let (http, base, sim_pay, secret, statuses) = (
            app.http.clone(),
            app.base.clone(),
            app.sim_url("/sim/pay"),
            app.secret.clone(),
            statuses.clone(),
        );
        load.spawn(async move {
            let mut i = 0;
            while tokio::time::Instant::now() < stop_at {
                i += 1;
                let body = json!({"merchant_order_no": format!("R-{w}-{i}"), "amount": 100, "currency": "CNY", "subject": "s", "expire_in_seconds": 5});
                let r = http.post(format!("{base}/v1/orders")).bearer_auth(&secret).json(&body).send().await.unwrap();
                *statuses.lock().unwrap().entry(r.status().as_u16()).or_default() += 1;
                let Ok(order) = r.json::<Value>().await else { continue };
                let Some(id) = order["id"].as_str() else { continue };
                let r = http.post(format!("{base}/v1/orders/{id}/prepay")).bearer_auth(&secret).json(&json!({"channel": "sandbox"})).send().await.unwrap();
                *statuses.lock().unwrap().entry(r.status().as_u16()).or_default() += 1;
                // Every third payer pays.
                if i % 3 == 0
                    && let Ok(p) = r.json::<Value>().await
                    && let Some(no) = p["out_trade_no"].as_str()
                {
                    let _ = http.post(&sim_pay).json(&json!({"channel": "sandbox", "out_trade_no": no})).send().await;
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarting = pg.clone();
    tokio::task::spawn_blocking(move || restarting.restart())
        .await
        .unwrap()
        .expect("pg_ctl restart");
    while let Some(r) = load.join_next().await {
        r.unwrap();
    }
    let statuses = statuses.lock().unwrap().clone();
    eprintln!("answers during the restart: {statuses:?}");
    for status in statuses.keys() {
        assert!(
            matches!(status, 200 | 201 | 409 | 503),
            "an answer other than success, 409 or 503: {statuses:?}"
        );
    }
    assert!(
        statuses.get(&201).is_some_and(|n| *n > 10),
        "the load ran: {statuses:?}"
    );
    // Converged: every payment recorded once, every order paid or closed (liveness waits).
    assert_invariants(app.violations().await);
    drop(app);
    drop(pg);
}

/// SQLite on a full disk (a small tmpfs): writes answer 503 `database_unavailable` (never 500),
/// reads keep working, the file stays intact, and once space returns writes succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_on_a_full_disk_answers_503_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            !payonce_testkit::db::on_ci(),
            "mounting a small tmpfs is needed with CI=true"
        );
        return eprintln!("\n!!! SKIPPING the full-disk test: cannot mount a tmpfs here\n");
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let url = format!("sqlite://{}", mnt.join("payonce.db").display());
    let app = spawn_on(
        TestDb::external(Backend::Sqlite, url.clone()),
        AppOptions::frozen(),
    )
    .await;
    let filler = "x".repeat(3000);
    let mut created = Vec::new();
    let mut refused = None;
    for i in 0..5_000 {
        let r = app.post("/v1/orders", json!({"merchant_order_no": format!("FULL-{i}"), "amount": 100, "currency": "CNY", "subject": "s", "metadata": {"pad": filler}})).await;
        match r.status() {
            StatusCode::CREATED => created.push(
                r.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            status => {
                let body: Value = r.json().await.unwrap_or_default();
                refused = Some((status, body));
                break;
            }
        }
    }
    let (status, body) = refused.expect("the disk filled up");
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a full disk is a 503, not a 500: {body}"
    );
    assert_eq!(body["code"], "database_unavailable");
    // Reads still work, and what was acknowledged is there.
    assert_eq!(app.order(&created[0]).await["merchant_order_no"], "FULL-0");
    assert_eq!(app.order(created.last().unwrap()).await["status"], "unpaid");
    // Space returns: writes succeed again, the file is intact.
    assert!(
        std::process::Command::new("mount")
            .args(["-o", "remount,size=64m"])
            .arg(&mnt)
            .status()
            .unwrap()
            .success()
    );
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = app.post("/v1/orders", json!({"merchant_order_no": "FULL-AFTER", "amount": 100, "currency": "CNY", "subject": "s"})).await;
        if r.status() == StatusCode::CREATED {
            break;
        }
        let status = r.status();
        assert!(
            tokio::time::Instant::now() < end,
            "never recovered: {status} {}",
            r.text().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let check: String = {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(check, "ok");
    eprintln!(
        "{} orders acknowledged before the disk was full; all readable after",
        created.len()
    );
    assert_invariants(app.violations().await);
}

/// A database migrated by a newer payonce (it records a migration this binary lacks) is
/// refused with a message that says so — by the store and by `payonce serve` — and nothing is
/// written to it.
async fn a_database_from_a_newer_payonce_is_refused(b: Backend) {
    let Some(db) = TestDb::new(b).await else {
        return;
    };
    payonce_store::open(&db.url, true)
        .await
        .expect("migrated by this payonce");
    // Record a migration from the future, as a newer payonce would have.
    let future = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'from the future', $1, $2, 0)";
    match b {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            sqlx::query(future)
                .bind(true)
                .bind(vec![0u8; 48])
                .execute(&pool)
                .await
                .unwrap();
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            sqlx::query(future)
                .bind(true)
                .bind(vec![0u8; 48])
                .execute(&pool)
                .await
                .unwrap();
        }
    }
    let err = payonce_store::open(&db.url, true)
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("newer payonce") && msg.contains("9999"),
        "{msg}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payonce"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
            "--channels",
            "/nonexistent/channels.toml",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("newer payonce"),
        "serve says why it refuses: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_connections_cut_give_503_then_converge() {
    let Some(mut db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let proxy = Proxy::start("127.0.0.1:5432", true).await.unwrap();
    db.url = db.url.replace("127.0.0.1:5432", &proxy.addr);
    let app = spawn_on(db, AppOptions::frozen()).await;
    let order = |no: &str| json!({"merchant_order_no": no, "amount": 100, "currency": "CNY", "subject": "s"});
    assert_eq!(
        app.post("/v1/orders", order("F-1")).await.status(),
        StatusCode::CREATED
    );

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
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // The API answers health checks regardless.
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // Back: the same request now succeeds (the retry the 503 invited), and nothing is doubled.
    proxy.set_up(true);
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = app.post("/v1/orders", order("F-2")).await;
        if r.status() == StatusCode::CREATED || r.status() == StatusCode::OK {
            break;
        }
        let status = r.status();
        assert!(
            tokio::time::Instant::now() < end,
            "never recovered: {status} {}",
            r.text().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let again = app.post("/v1/orders", order("F-2")).await;
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "the same order, not a second one"
    );
    assert_invariants(app.violations().await);
}
