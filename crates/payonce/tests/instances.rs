//! Duplicate storms against real `payonce serve` processes: three on one PostgreSQL, one on
//! SQLite. However the 500 requests interleave, the channel sees exactly one order.

use payonce_server::crypto::MasterKey;
use payonce_testkit::process::ServeProcess;
use payonce_testkit::{Backend, TestDb};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;

const STORM: usize = 500;

async fn storm(backend: Backend, instances: usize) {
    storm_with(backend, instances, None).await
}

/// `serve` processes on one fresh database, a simulator beside them, and one app.
struct Cluster {
    sim: payonce_sim::SimHandle,
    store: std::sync::Arc<dyn payonce_store::Store>,
    app: payonce_server::apps::NewAppCredentials,
    servers: Vec<ServeProcess>,
    _db: TestDb,
    _sim_dir: tempfile::TempDir,
}

async fn cluster(backend: Backend, instances: usize, webhook_url: Option<&str>, extra: &[&str]) -> Option<Cluster> {
    let db = TestDb::new(backend).await?;
    let sim_dir = tempfile::tempdir().unwrap();
    let sim = payonce_sim::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), sim_dir.path()).await.unwrap();
    let store = payonce_store::open(&db.url, true).await.unwrap();
    let (key, key_hex) = MasterKey::random();
    let app = payonce_server::apps::create_app(store.as_ref(), &key, &payonce_core::SystemClock, payonce_server::apps::NewApp { name: "cluster", webhook_url, ..Default::default() }).await.unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_payonce"));
    let mut servers = Vec::new();
    for _ in 0..instances {
        servers.push(ServeProcess::spawn(exe, &db.url, &sim.channels_file, &key_hex, extra).await.expect("serve"));
    }
    Some(Cluster { sim, store, app, servers, _db: db, _sim_dir: sim_dir })
}

impl Cluster {
    /// Creates an order through instance `on`; its id.
    async fn create_order(&self, http: &reqwest::Client, on: usize, merchant_order_no: &str, amount: i64) -> String {
        let body = json!({"merchant_order_no": merchant_order_no, "amount": amount, "currency": "CNY", "subject": "storm"});
        let r = http.post(format!("{}/v1/orders", self.servers[on].base_url())).bearer_auth(&self.app.secret).json(&body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
    }
}

async fn storm_with(backend: Backend, instances: usize, redis: Option<&str>) {
    let extra: Vec<&str> = redis.map(|u| vec!["--redis-url", u]).unwrap_or_default();
    // The cluster is kept whole: its database and simulator directory live as long as it.
    let Some(c) = cluster(backend, instances, None, &extra).await else { return };
    let (sim, store, app, servers) = (&c.sim, &c.store, &c.app, &c.servers);
    let http = reqwest::Client::builder().pool_max_idle_per_host(STORM).build().unwrap();
    let id = c.create_order(&http, 0, "STORM-1", 1234).await;

    let mut tasks = Vec::new();
    for i in 0..STORM {
        let url = format!("{}/v1/orders/{id}/prepay", servers[i % instances].base_url());
        let (http, secret) = (http.clone(), app.secret.clone());
        tasks.push(tokio::spawn(async move {
            let r = http.post(url).bearer_auth(secret).json(&json!({"channel": "sandbox"})).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }));
    }
    let (mut ok, mut conflicts) = (0, 0);
    let mut creds = BTreeSet::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::OK => {
                ok += 1;
                creds.insert(body["credential"].to_string());
            }
            StatusCode::CONFLICT => {
                assert_eq!(body["code"], "request_in_progress", "{body}");
                conflicts += 1;
            }
            other => panic!("no 5xx or other answers allowed; got {other}: {body}"),
        }
    }
    eprintln!("{backend:?} × {instances}: {ok} × 200 (one credential), {conflicts} × 409");
    assert_eq!(creds.len(), 1, "every 200 carries the same credential");
    let ledger: Value = reqwest::get(format!("{}/sim/ledger", sim.base_url())).await.unwrap().json().await.unwrap();
    assert_eq!(ledger["orders"].as_array().unwrap().len(), 1, "exactly one channel order");
    let violations = payonce_testkit::invariants::check(store.as_ref(), &ledger).await;
    assert!(violations.is_empty(), "{violations:?}");
    if redis.is_some() {
        // The duplicates were coalesced in Redis before they reached the database.
        let mut followers = 0.0;
        for s in servers {
            let m = reqwest::get(format!("{}/metrics", s.base_url())).await.unwrap().text().await.unwrap();
            followers += m.lines().filter(|l| l.starts_with("payonce_redis_total") && l.contains("outcome=\"follower\"")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum::<f64>();
        }
        assert!(followers > 0.0, "no request waited on the Redis leader");
    }
}

const REDIS_URL: &str = "redis://127.0.0.1:6379";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_three_instances_on_postgres_with_redis() {
    // Redis is optional for payonce, not for this test: with CI=true it must be there.
    let reachable = match redis_ping().await {
        Ok(()) => true,
        Err(e) if payonce_testkit::db::on_ci() => panic!("Redis unreachable with CI=true: {e}"),
        Err(e) => {
            eprintln!("\n!!! SKIPPING the Redis variant: {e}\n");
            false
        }
    };
    if reachable {
        storm_with(Backend::Postgres, 3, Some(REDIS_URL)).await
    }
}

async fn redis_ping() -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(std::time::Duration::from_secs(2), tokio::net::TcpStream::connect("127.0.0.1:6379"))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| e.to_string())?;
    s.write_all(b"PING\r\n").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    if &buf == b"+PONG\r\n" { Ok(()) } else { Err("no PONG".into()) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_three_instances_on_postgres() {
    storm(Backend::Postgres, 3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_one_instance_on_sqlite() {
    storm(Backend::Sqlite, 1).await
}

/// Two instances dispatching the outbox: in a normal run every event reaches the business
/// exactly once (counted at the receiver), whichever instance sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_deliver_each_event_once() {
    let hooks = payonce_testkit::chaos::WebhookCounter::start().await.unwrap();
    // The cluster is kept whole: its database and simulator directory live as long as it.
    let Some(c) = cluster(Backend::Postgres, 2, Some(&hooks.url), &["--time-scale", "100"]).await else { return };
    let (sim, store, app, servers) = (&c.sim, &c.store, &c.app, &c.servers);
    reqwest::Client::new().post(format!("{}/sim/faults", sim.base_url())).json(&json!({"time_scale": 100.0})).send().await.unwrap();
    let http = reqwest::Client::new();
    for i in 0..40 {
        let base = servers[i % 2].base_url();
        let o: Value = http.post(format!("{base}/v1/orders")).bearer_auth(&app.secret)
            .json(&json!({"merchant_order_no": format!("TWO-{i}"), "amount": 100, "currency": "CNY", "subject": "s"}))
            .send().await.unwrap().json().await.unwrap();
        let p: Value = http.post(format!("{base}/v1/orders/{}/prepay", o["id"].as_str().unwrap())).bearer_auth(&app.secret)
            .json(&json!({"channel": "sandbox"})).send().await.unwrap().json().await.unwrap();
        http.post(format!("{}/sim/pay", sim.base_url())).json(&json!({"channel": "sandbox", "out_trade_no": p["out_trade_no"]})).send().await.unwrap();
    }
    let end = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (missing, _) = hooks.check(store.as_ref()).await.unwrap();
        let events = store.list_events(None, 1000).await.unwrap().len();
        if missing == 0 && events == 40 {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "{missing} of {events} events undelivered");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let seen = hooks.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 40);
    assert!(seen.values().all(|n| *n == 1), "each event delivered exactly once: {seen:?}");
}

/// A private Redis (never the shared one) killed in the middle of a duplicate storm over two
/// instances, then started again: payonce falls back to the database while it is gone — every
/// order still gets exactly one channel order, no request gets a 5xx — and uses it again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_and_restarted_during_a_duplicate_storm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start_redis = || {
        tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
    };
    let mut redis = match start_redis() {
        Ok(c) => c,
        Err(e) if payonce_testkit::db::on_ci() => panic!("redis-server is needed with CI=true: {e}"),
        Err(e) => return eprintln!("\n!!! SKIPPING the Redis restart test: {e}\n"),
    };
    let redis_url = format!("redis://127.0.0.1:{port}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The cluster is kept whole: its database and simulator directory live as long as it.
    let Some(c) = cluster(Backend::Postgres, 2, None, &["--redis-url", &redis_url]).await else { return };
    let (sim, store, app, servers) = (&c.sim, &c.store, &c.app, &c.servers);
    let http = reqwest::Client::new();
    const ORDERS: usize = 30;
    const DUPLICATES: usize = 12;
    let mut ids = Vec::new();
    for i in 0..ORDERS {
        ids.push(c.create_order(&http, 0, &format!("RS-{i}"), 100).await);
    }
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for (round, chunk) in ids.chunks(ORDERS / 3).enumerate() {
        // Round 0 with Redis, round 1 with Redis killed, round 2 with a fresh Redis.
        if round == 1 {
            redis.kill().await.unwrap();
        }
        if round == 2 {
            redis = start_redis().unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        let mut tasks = Vec::new();
        for id in chunk {
            for d in 0..DUPLICATES {
                let url = format!("{}/v1/orders/{id}/prepay", servers[d % 2].base_url());
                let (http, secret) = (http.clone(), app.secret.clone());
                tasks.push(tokio::spawn(async move { http.post(url).bearer_auth(secret).json(&json!({"channel": "sandbox"})).send().await.unwrap().status() }));
            }
        }
        for t in tasks {
            *statuses.entry(t.await.unwrap().as_u16()).or_default() += 1;
        }
    }
    eprintln!("answers: {statuses:?}");
    assert!(statuses.keys().all(|s| *s == 200 || *s == 409), "only 200 or 409 request_in_progress: {statuses:?}");
    let ledger: Value = reqwest::get(format!("{}/sim/ledger", sim.base_url())).await.unwrap().json().await.unwrap();
    assert_eq!(ledger["orders"].as_array().unwrap().len(), ORDERS, "exactly one channel order per order");
    let violations = payonce_testkit::invariants::check(store.as_ref(), &ledger).await;
    assert!(violations.is_empty(), "{violations:?}");
    drop(redis);
}
