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
    store: std::sync::Arc<dyn payonce_store::Inspect>,
    app: payonce_server::engine::apps::NewAppCredentials,
    servers: Vec<ServeProcess>,
    _db: TestDb,
    _sim_dir: tempfile::TempDir,
}

async fn cluster(
    backend: Backend,
    instances: usize,
    webhook_url: Option<&str>,
    extra: &[&str],
) -> Option<Cluster> {
    Some(cluster_on(TestDb::new(backend).await?, instances, webhook_url, extra).await)
}

async fn cluster_on(
    db: TestDb,
    instances: usize,
    webhook_url: Option<&str>,
    extra: &[&str],
) -> Cluster {
    let sim_dir = tempfile::tempdir().unwrap();
    let sim = payonce_sim::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        sim_dir.path(),
    )
    .await
    .unwrap();
    let store = payonce_store::open_inspect_pooled(&db.url, true, 4)
        .await
        .unwrap();
    let (key, key_hex) = MasterKey::random();
    let app = payonce_server::engine::apps::create_app(
        store.as_ref(),
        &key,
        &payonce_core::SystemClock,
        payonce_server::engine::apps::NewApp {
            name: "cluster",
            webhook_url,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_payonce"));
    let mut servers = Vec::new();
    // Three instances beside the other suites' apps on one PostgreSQL: five connections each.
    let extra: Vec<&str> = extra
        .iter()
        .copied()
        .chain(["--database-connections", "5"])
        .collect();
    for _ in 0..instances {
        servers.push(
            ServeProcess::spawn(exe, &db.url, &sim.channels_file, &key_hex, &extra)
                .await
                .expect("serve"),
        );
    }
    Cluster {
        sim,
        store,
        app,
        servers,
        _db: db,
        _sim_dir: sim_dir,
    }
}

impl Cluster {
    /// Creates an order through instance `on`; its id.
    async fn create_order(
        &self,
        http: &reqwest::Client,
        on: usize,
        merchant_order_no: &str,
        amount: i64,
    ) -> String {
        let body = json!({"merchant_order_no": merchant_order_no, "amount": amount, "currency": "CNY", "subject": "storm"});
        let r = http
            .post(format!("{}/v1/orders", self.servers[on].base_url()))
            .bearer_auth(&self.app.secret)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

async fn storm_with(backend: Backend, instances: usize, redis: Option<&str>) {
    let extra: Vec<&str> = redis.map(|u| vec!["--redis-url", u]).unwrap_or_default();
    // The cluster is kept whole: its database and simulator directory live as long as it.
    let Some(c) = cluster(backend, instances, None, &extra).await else {
        return;
    };
    let (sim, store, app, servers) = (&c.sim, &c.store, &c.app, &c.servers);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(STORM)
        .build()
        .unwrap();
    let id = c.create_order(&http, 0, "STORM-1", 1234).await;
    // The channel takes its time, as a real one does: the first prepay is still at the channel
    // when the duplicates reach the other instances (on a busy machine a fast sandbox could
    // answer before any of them asked, and "some waited on the leader" would be luck).
    http.post(format!("{}/sim/faults", sim.base_url()))
        .json(&json!({"prepay_delay_ms": 300}))
        .send()
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for i in 0..STORM {
        let url = format!(
            "{}/v1/orders/{id}/prepay",
            servers[i % instances].base_url()
        );
        let (http, secret) = (http.clone(), app.secret.clone());
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(secret)
                .json(&json!({"channel": "sandbox"}))
                .send()
                .await
                .unwrap();
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
    let ledger: Value = reqwest::get(format!("{}/sim/ledger", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ledger["orders"].as_array().unwrap().len(),
        1,
        "exactly one channel order"
    );
    let violations = payonce_testkit::invariants::check(store.as_ref(), &ledger).await;
    assert!(violations.is_empty(), "{violations:?}");
    if redis.is_some() {
        // The duplicates were coalesced in Redis before they reached the database.
        let mut followers = 0.0;
        for s in servers {
            let m = reqwest::get(format!("{}/metrics", s.base_url()))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            followers += m
                .lines()
                .filter(|l| {
                    l.starts_with("payonce_redis_total") && l.contains("outcome=\"follower\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
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
    let mut s = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::net::TcpStream::connect("127.0.0.1:6379"),
    )
    .await
    .map_err(|_| "timeout".to_owned())?
    .map_err(|e| e.to_string())?;
    s.write_all(b"PING\r\n").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    if &buf == b"+PONG\r\n" {
        Ok(())
    } else {
        Err("no PONG".into())
    }
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
    let hooks = payonce_testkit::chaos::WebhookCounter::start()
        .await
        .unwrap();
    // The cluster is kept whole: its database and simulator directory live as long as it.
    let Some(c) = cluster(
        Backend::Postgres,
        2,
        Some(&hooks.url),
        &["--time-scale", "100"],
    )
    .await
    else {
        return;
    };
    let (sim, store, app, servers) = (&c.sim, &c.store, &c.app, &c.servers);
    reqwest::Client::new()
        .post(format!("{}/sim/faults", sim.base_url()))
        .json(&json!({"time_scale": 100.0}))
        .send()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    for i in 0..40 {
        let base = servers[i % 2].base_url();
        let o: Value = http.post(format!("{base}/v1/orders")).bearer_auth(&app.secret)
            .json(&json!({"merchant_order_no": format!("TWO-{i}"), "amount": 100, "currency": "CNY", "subject": "s"}))
            .send().await.unwrap().json().await.unwrap();
        let p: Value = http
            .post(format!(
                "{base}/v1/orders/{}/prepay",
                o["id"].as_str().unwrap()
            ))
            .bearer_auth(&app.secret)
            .json(&json!({"channel": "sandbox"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        http.post(format!("{}/sim/pay", sim.base_url()))
            .json(&json!({"channel": "sandbox", "out_trade_no": p["out_trade_no"]}))
            .send()
            .await
            .unwrap();
    }
    let end = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (missing, _) = hooks.check(store.as_ref()).await.unwrap();
        let events = store.list_events(None, 1000).await.unwrap().len();
        if missing == 0 && events == 40 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{missing} of {events} events undelivered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let seen = hooks.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 40);
    assert!(
        seen.values().all(|n| *n == 1),
        "each event delivered exactly once: {seen:?}"
    );
}

/// A private Redis (never the shared one) killed in the middle of a duplicate storm over two
/// instances, then started again: payonce falls back to the database while it is gone — every
/// order still gets exactly one channel order, no request gets a 5xx — and uses it again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_and_restarted_during_a_duplicate_storm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start_redis = || {
        tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
    };
    let mut redis = match start_redis() {
        Ok(c) => c,
        Err(e) if payonce_testkit::db::on_ci() => {
            panic!("redis-server is needed with CI=true: {e}")
        }
        Err(e) => return eprintln!("\n!!! SKIPPING the Redis restart test: {e}\n"),
    };
    let redis_url = format!("redis://127.0.0.1:{port}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The cluster is kept whole: its database and simulator directory live as long as it.
    let Some(c) = cluster(Backend::Postgres, 2, None, &["--redis-url", &redis_url]).await else {
        return;
    };
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
                tasks.push(tokio::spawn(async move {
                    http.post(url)
                        .bearer_auth(secret)
                        .json(&json!({"channel": "sandbox"}))
                        .send()
                        .await
                        .unwrap()
                        .status()
                }));
            }
        }
        for t in tasks {
            *statuses.entry(t.await.unwrap().as_u16()).or_default() += 1;
        }
    }
    eprintln!("answers: {statuses:?}");
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 409),
        "only 200 or 409 request_in_progress: {statuses:?}"
    );
    let ledger: Value = reqwest::get(format!("{}/sim/ledger", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ledger["orders"].as_array().unwrap().len(),
        ORDERS,
        "exactly one channel order per order"
    );
    let violations = payonce_testkit::invariants::check(store.as_ref(), &ledger).await;
    assert!(violations.is_empty(), "{violations:?}");
    drop(redis);
}

/// PostgreSQL fail-over under three instances. A private primary with a synchronous streaming
/// replica (`pg_basebackup -R`, `synchronous_standby_names = '*'`: a commit is acknowledged only
/// once the replica has it); every instance is given both (`--database-url primary,replica`).
/// Mid-load the primary dies (`pg_ctl stop -m immediate`) and the replica is promoted. The
/// instances find the new primary by themselves; requests in the gap get 503, never 500; every
/// order and prepay acknowledged before, during or after the switch is on the new primary; and
/// after quiescence safety and liveness hold (no double charge, every order ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_failover_to_a_promoted_replica_loses_nothing_acknowledged() {
    let primary = match payonce_testkit::pg::PrivatePostgres::start() {
        Ok(pg) => std::sync::Arc::new(pg),
        Err(e) if payonce_testkit::db::on_ci() => {
            panic!("a private PostgreSQL is needed with CI=true: {e}")
        }
        Err(e) => return eprintln!("\n!!! SKIPPING the fail-over test: {e}\n"),
    };
    let replica = std::sync::Arc::new(
        primary
            .replica()
            .expect("pg_basebackup a streaming replica"),
    );
    primary
        .psql("ALTER SYSTEM SET synchronous_standby_names = '*'")
        .unwrap();
    primary.psql("SELECT pg_reload_conf()").unwrap();
    let end = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while primary
        .psql("SELECT sync_state FROM pg_stat_replication")
        .unwrap()
        != "sync"
    {
        assert!(
            tokio::time::Instant::now() < end,
            "the replica never became synchronous"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let urls = format!("{},{}", primary.url("postgres"), replica.url("postgres"));
    let c = cluster_on(
        TestDb::external(Backend::Postgres, urls),
        3,
        None,
        &["--time-scale", "10"],
    )
    .await;
    reqwest::Client::new()
        .post(format!("{}/sim/faults", c.sim.base_url()))
        .json(&json!({"time_scale": 10.0}))
        .send()
        .await
        .unwrap();

    #[derive(Default)]
    struct Seen {
        statuses: std::collections::BTreeMap<u16, usize>,
        orders: Vec<String>,
        attempts: Vec<String>,
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
    let stop_at = tokio::time::Instant::now() + std::time::Duration::from_secs(9);
    let mut load = tokio::task::JoinSet::new();
    for w in 0..6 {
        let (seen, secret, base, sim_pay) = (
            seen.clone(),
            c.app.secret.clone(),
            c.servers[w % 3].base_url(),
            format!("{}/sim/pay", c.sim.base_url()),
        );
        load.spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0;
            while tokio::time::Instant::now() < stop_at {
                i += 1;
                let body = json!({"merchant_order_no": format!("FO-{w}-{i}"), "amount": 100, "currency": "CNY", "subject": "s", "expire_in_seconds": 10});
                let r = http.post(format!("{base}/v1/orders")).bearer_auth(&secret).json(&body).send().await.unwrap();
                let status = r.status().as_u16();
                let v: Value = r.json().await.unwrap_or_default();
                let created = {
                    let mut s = seen.lock().unwrap();
                    *s.statuses.entry(status).or_default() += 1;
                    let id = v["id"].as_str().filter(|_| status == 201).map(str::to_owned);
                    s.orders.extend(id.clone());
                    id
                };
                let Some(id) = created else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let r = http.post(format!("{base}/v1/orders/{id}/prepay")).bearer_auth(&secret).json(&json!({"channel": "sandbox"})).send().await.unwrap();
                let status = r.status().as_u16();
                let p: Value = r.json().await.unwrap_or_default();
                {
                    let mut s = seen.lock().unwrap();
                    *s.statuses.entry(status).or_default() += 1;
                    if status == 200 {
                        s.attempts.push(p["attempt_id"].as_str().unwrap().to_owned());
                    }
                }
                if status == 200 && i % 2 == 0 {
                    let _ = http.post(&sim_pay).json(&json!({"channel": "sandbox", "out_trade_no": p["out_trade_no"]})).send().await;
                }
            }
        });
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let before = seen.lock().unwrap().orders.len();
    let (dying, promoted) = (primary.clone(), replica.clone());
    tokio::task::spawn_blocking(move || {
        dying.kill().expect("kill the primary");
        promoted.promote().expect("promote the replica");
    })
    .await
    .unwrap();
    while let Some(r) = load.join_next().await {
        r.unwrap();
    }
    let seen = std::sync::Arc::try_unwrap(seen)
        .ok()
        .unwrap()
        .into_inner()
        .unwrap();
    eprintln!(
        "fail-over: {} orders acknowledged ({before} before the switch), answers {:?}",
        seen.orders.len(),
        seen.statuses
    );
    for status in seen.statuses.keys() {
        assert!(
            matches!(status, 200 | 201 | 409 | 503),
            "an answer other than success, 409 or 503: {:?}",
            seen.statuses
        );
    }
    assert!(
        seen.orders.len() > before + 10,
        "the instances went on after the switch: {} then {}",
        before,
        seen.orders.len()
    );
    // Everything acknowledged is on the new primary (the checking store follows the switch too).
    let app_id = &c.app.app_id;
    for id in &seen.orders {
        let o = c
            .store
            .order(app_id, &payonce_core::OrderId::from_trusted(id.clone()))
            .await
            .unwrap();
        assert!(o.is_some(), "acknowledged order {id} lost in the fail-over");
    }
    for id in &seen.attempts {
        assert!(
            c.store
                .attempt(&payonce_core::AttemptId::from_trusted(id.clone()))
                .await
                .unwrap()
                .is_some(),
            "acknowledged prepay {id} lost"
        );
    }
    // Quiescence: every order ended (10 s expiry), every payment recorded once.
    let end = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let ledger: Value = reqwest::get(format!("{}/sim/ledger", c.sim.base_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut violations = payonce_testkit::invariants::check(c.store.as_ref(), &ledger).await;
        violations.extend(
            payonce_testkit::invariants::liveness(
                c.store.as_ref(),
                payonce_core::Clock::now(&payonce_core::SystemClock),
                10_000,
            )
            .await,
        );
        if violations.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "after the fail-over: {violations:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    drop(c);
}

/// The submission guard across processes: fifty identical carts (no merchant number, the same
/// payer_ref and content) sent at once to three instances on one database make one order; the
/// database's guard row decides, not any instance's memory. Both stores (SQLite: three
/// processes on one file).
async fn identical_submissions_over_three_instances(backend: Backend) {
    let Some(c) = cluster(backend, 3, None, &[]).await else {
        return;
    };
    let http = reqwest::Client::new();
    let body =
        json!({"payer_ref": "user-42", "amount": 4_200, "currency": "CNY", "subject": "cart"});
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (http, url, secret, body) = (
            http.clone(),
            format!("{}/v1/orders", c.servers[i % 3].base_url()),
            c.app.secret.clone(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(secret)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                r.status(),
                r.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .map(str::to_owned),
            )
        }));
    }
    let mut ids = BTreeSet::new();
    let mut created = 0;
    for t in tasks {
        let (status, id) = t.await.unwrap();
        assert!(
            status == StatusCode::CREATED || status == StatusCode::OK,
            "{status}"
        );
        created += usize::from(status == StatusCode::CREATED);
        ids.insert(id.expect("an order"));
    }
    assert_eq!(
        (ids.len(), created),
        (1, 1),
        "one order, created once: {ids:?}"
    );
    let orders = c
        .store
        .row_counts()
        .await
        .unwrap()
        .into_iter()
        .find(|(t, _)| *t == "orders")
        .unwrap()
        .1;
    assert_eq!(orders, 1);
    cluster_invariants(&c).await;
}

async fn cluster_invariants(c: &Cluster) {
    let ledger: Value = reqwest::get(format!("{}/sim/ledger", c.sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let violations = payonce_testkit::invariants::check(c.store.as_ref(), &ledger).await;
    assert!(violations.is_empty(), "{violations:?}");
}

/// Coupons across processes: 100 orders for a coupon with one redemption left, sent at once to
/// three instances, reserve it once; its order closed, it is free again; paid, never again.
async fn the_last_coupon_over_three_instances(backend: Backend) {
    let Some(c) = cluster(backend, 3, None, &[]).await else {
        return;
    };
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/coupons", c.servers[0].base_url()))
        .bearer_auth(&c.app.secret)
        .json(&json!({"code": "LAST", "kind": "fixed", "value": 100, "max_redemptions": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (http, url, secret) = (
            http.clone(),
            format!("{}/v1/orders", c.servers[i % 3].base_url()),
            c.app.secret.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let body = json!({"merchant_order_no": format!("LAST-{i}"), "amount": 1_000, "currency": "CNY", "subject": "race", "coupon_code": "LAST"});
            let r = http.post(url).bearer_auth(secret).json(&body).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::CREATED => winners.push(body["id"].as_str().unwrap().to_owned()),
            StatusCode::CONFLICT => assert_eq!(body["reason"], "exhausted", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(winners.len(), 1, "one reservation of the last coupon");
    let r = http
        .post(format!(
            "{}/v1/orders/{}/close",
            c.servers[1].base_url(),
            winners[0]
        ))
        .bearer_auth(&c.app.secret)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let coupon: Value = http
        .get(format!("{}/v1/coupons/LAST", c.servers[2].base_url()))
        .bearer_auth(&c.app.secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (coupon["reserved"].as_i64(), coupon["remaining"].as_i64()),
        (Some(0), Some(1)),
        "{coupon}"
    );
    cluster_invariants(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_coupon_over_three_instances_on_postgres() {
    the_last_coupon_over_three_instances(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_coupon_over_three_instances_on_sqlite() {
    the_last_coupon_over_three_instances(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_submissions_over_three_instances_on_postgres() {
    identical_submissions_over_three_instances(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_submissions_over_three_instances_on_sqlite() {
    identical_submissions_over_three_instances(Backend::Sqlite).await;
}
