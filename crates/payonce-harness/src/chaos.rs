//! Crash and multi-instance chaos: real `payonce serve` processes killed with SIGKILL (or
//! frozen with SIGSTOP) at random moments under a mixed load of prepays, payments and
//! notifications, then left to settle; every invariant is checked against the simulator's
//! ledger. Used by the crash tests and by `payonce chaos` for longer local runs.

use crate::process::ServeProcess;
use payonce_server::crypto::MasterKey;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub exe: PathBuf,
    pub database_url: String,
    /// Servers running at once on the database.
    pub instances: usize,
    /// SIGKILLs to deliver (spread over the instances).
    pub kills: usize,
    /// Freeze one instance with SIGSTOP for longer than its leases, then resume it.
    pub freeze: bool,
    pub time_scale: f64,
    /// How long the system may take to settle after the last kill.
    pub settle: Duration,
}

/// A webhook receiver that counts deliveries per `webhook-id`.
pub struct WebhookCounter {
    pub url: String,
    pub seen: Arc<Mutex<std::collections::HashMap<String, u32>>>,
}

impl WebhookCounter {
    pub async fn start() -> anyhow::Result<Self> {
        let seen: Arc<Mutex<std::collections::HashMap<String, u32>>> = Arc::default();
        let s = seen.clone();
        let router = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: axum::http::HeaderMap| {
                let s = s.clone();
                async move {
                    if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
                        *s.lock().unwrap().entry(id.to_owned()).or_default() += 1;
                    }
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks", l.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(l, router).await;
        });
        Ok(WebhookCounter { url, seen })
    }

    /// (events not yet received, events received more than once).
    pub async fn check(&self, store: &dyn payonce_store::Store) -> anyhow::Result<(usize, usize)> {
        let events = store.list_events(None, 100_000).await?;
        let seen = self.seen.lock().unwrap();
        let missing = events
            .iter()
            .filter(|e| {
                e.delivery_status != payonce_store::DeliveryStatus::Delivered
                    || !seen.contains_key(&e.id)
            })
            .count();
        let dup = seen.values().filter(|n| **n > 1).count();
        Ok((missing, dup))
    }
}

#[derive(Debug, Default)]
pub struct ChaosReport {
    pub kills: usize,
    pub orders: usize,
    pub prepays_ok: u64,
    pub payments: u64,
    pub charges: usize,
    pub refunds: usize,
    pub events: usize,
    /// Events not delivered (at least once) to the business by the end.
    pub undelivered: usize,
    /// Events the business received more than once (allowed under kills; same id each time).
    pub redelivered: usize,
    pub violations: Vec<String>,
}

struct Shared {
    bases: Mutex<Vec<String>>,
    orders: Mutex<Vec<String>>,
    paid: Mutex<Vec<(String, String)>>,
    prepaid: Mutex<Vec<(String, String)>>,
    stop: AtomicBool,
    prepays_ok: AtomicU64,
    payments: AtomicU64,
    seq: AtomicU64,
}

fn rnd(n: u64) -> u64 {
    let mut b = [0u8; 8];
    urandom_fill(&mut b);
    u64::from_le_bytes(b) % n.max(1)
}

fn urandom_fill(b: &mut [u8]) {
    use std::io::Read;
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(b));
}

/// One load worker: creates orders, prepays them on random channels (and again, as duplicates),
/// and pays some, tolerating servers that vanish mid-request.
async fn load(shared: Arc<Shared>, secret: String, sim: String) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let channels = ["wechatpay", "alipay", "sandbox"];
    while !shared.stop.load(Ordering::Relaxed) {
        let bases = shared.bases.lock().unwrap().clone();
        if bases.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let base = &bases[rnd(bases.len() as u64) as usize];
        let orders = shared.orders.lock().unwrap().clone();
        match rnd(10) {
            0..=2 => {
                let n = shared.seq.fetch_add(1, Ordering::Relaxed);
                let body = json!({"merchant_order_no": format!("CH-{n}"), "amount": 100 + (n % 50) as i64, "currency": "CNY", "subject": "chaos"});
                if let Ok(r) = http
                    .post(format!("{base}/v1/orders"))
                    .bearer_auth(&secret)
                    .header("idempotency-key", format!("co-{n}"))
                    .json(&body)
                    .send()
                    .await
                    && let Ok(v) = r.json::<Value>().await
                    && let Some(id) = v["id"].as_str()
                {
                    shared.orders.lock().unwrap().push(id.to_owned());
                }
            }
            3..=7 if !orders.is_empty() => {
                let id = &orders[rnd(orders.len() as u64) as usize];
                let ch = channels[rnd(3) as usize];
                let r = http
                    .post(format!("{base}/v1/orders/{id}/prepay"))
                    .bearer_auth(&secret)
                    .json(&json!({"channel": ch}))
                    .send()
                    .await;
                if let Ok(r) = r
                    && r.status().is_success()
                {
                    shared.prepays_ok.fetch_add(1, Ordering::Relaxed);
                    if let Ok(v) = r.json::<Value>().await {
                        shared.prepaid.lock().unwrap().push((
                            ch.to_owned(),
                            v["out_trade_no"].as_str().unwrap_or_default().to_owned(),
                        ));
                        if rnd(2) == 0 {
                            let no = v["out_trade_no"].as_str().unwrap_or_default().to_owned();
                            let paid = http
                                .post(format!("{sim}/sim/pay"))
                                .json(&json!({"channel": ch, "out_trade_no": no}))
                                .send()
                                .await;
                            if paid.is_ok_and(|p| p.status().is_success()) {
                                shared.payments.fetch_add(1, Ordering::Relaxed);
                                shared.paid.lock().unwrap().push((ch.to_owned(), no));
                            }
                        }
                    }
                }
            }
            8 => {
                // A payer who pays a channel order that was closed meanwhile (an in-flight payment,
                // a second QR): a duplicate payonce must find and refund.
                let prepaid = shared.prepaid.lock().unwrap().clone();
                if !prepaid.is_empty() {
                    let (ch, no) = &prepaid[rnd(prepaid.len() as u64) as usize];
                    let paid = http
                        .post(format!("{sim}/sim/pay"))
                        .json(&json!({"channel": ch, "out_trade_no": no, "force": true}))
                        .send()
                        .await;
                    if paid.is_ok_and(|p| p.status().is_success()) {
                        shared.payments.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ if !orders.is_empty() => {
                let id = &orders[rnd(orders.len() as u64) as usize];
                let _ = http
                    .post(format!("{base}/v1/orders/{id}/close"))
                    .bearer_auth(&secret)
                    .send()
                    .await;
            }
            _ => {}
        }
    }
}

pub async fn run(cfg: ChaosConfig) -> anyhow::Result<ChaosReport> {
    let sim_dir = crate::scratch::ScratchDir::new()?;
    // Two merchants per channel; the app pays at m2 on WeChat Pay and Alipay, at the default
    // elsewhere: the ledger then proves every channel order lives at its attempt's merchant (I9)
    // across kills and restarts.
    let sim = payonce_sim::start_with(
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        sim_dir.path(),
        payonce_sim::SimOptions {
            merchants: 2,
            ..Default::default()
        },
    )
    .await?;
    let http = reqwest::Client::new();
    http.post(format!("{}/sim/faults", sim.base_url()))
        .json(&json!({"time_scale": cfg.time_scale, "notify_drop_rate": 0.5, "notify_duplicates": 2, "notify_reorder": true}))
        .send()
        .await?;
    // The checker reads beside the instances on one PostgreSQL: a few connections suffice.
    let store = payonce_store::open_inspect_pooled(&cfg.database_url, true, 4).await?;
    let (key, key_hex) = MasterKey::random();
    let hooks = WebhookCounter::start().await?;
    // The accounts `serve` records at start, recorded first so the app can be bound to one.
    let file_accounts = payonce_channels::ChannelsConfig::load(&sim.channels_file)?.build(
        std::time::Duration::from_secs(5),
        std::sync::Arc::new(payonce_core::SystemClock),
    )?;
    payonce_server::engine::accounts::record_file_accounts(
        store.as_ref(),
        &file_accounts,
        payonce_core::Clock::now(&payonce_core::SystemClock),
    )
    .await?;
    // Through the providers' sub-merchants: WeChat `sub2` (partner APIs, no appid of its
    // own), Alipay `sub1` (the ISV's app with the merchant's token).
    let bindings = [
        (payonce_core::ChannelName::Wechatpay, "sub2".to_owned()),
        (payonce_core::ChannelName::Alipay, "sub1".to_owned()),
    ];
    let app = payonce_server::engine::apps::create_app(
        store.as_ref(),
        &key,
        &payonce_core::SystemClock,
        payonce_server::engine::apps::NewApp {
            name: "chaos",
            webhook_url: Some(&hooks.url),
            accounts: &bindings,
            ..Default::default()
        },
    )
    .await?;

    // Fixed ports, so a restarted instance receives the notifications sent to its predecessor.
    let mut ports = Vec::new();
    for _ in 0..cfg.instances {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        ports.push(l.local_addr()?.port());
    }
    let spawn = |i: usize| {
        let (exe, url, channels, key_hex, port) = (
            cfg.exe.clone(),
            cfg.database_url.clone(),
            sim.channels_file.clone(),
            key_hex.clone(),
            ports[i],
        );
        let scale = cfg.time_scale.to_string();
        async move {
            ServeProcess::spawn_at(
                &exe,
                &url,
                &channels,
                &key_hex,
                &format!("127.0.0.1:{port}"),
                // Several instances and the suites' other apps share one PostgreSQL.
                &[
                    "--time-scale",
                    &scale,
                    "--channel-timeout-ms",
                    "500",
                    "--database-connections",
                    "5",
                ],
            )
            .await
        }
    };
    let mut servers: Vec<Option<ServeProcess>> = Vec::new();
    for i in 0..cfg.instances {
        servers.push(Some(spawn(i).await?));
    }
    let shared = Arc::new(Shared {
        bases: Mutex::new(servers.iter().flatten().map(|s| s.base_url()).collect()),
        orders: Mutex::new(Vec::new()),
        paid: Mutex::new(Vec::new()),
        prepaid: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        prepays_ok: AtomicU64::new(0),
        payments: AtomicU64::new(0),
        seq: AtomicU64::new(0),
    });
    let mut loaders = Vec::new();
    for _ in 0..6 {
        loaders.push(tokio::spawn(load(
            shared.clone(),
            app.secret.clone(),
            sim.base_url(),
        )));
    }

    let mut report = ChaosReport::default();
    if cfg.freeze && cfg.instances > 1 {
        // Freeze instance 0 past every lease it holds; the others take its work over. When it
        // resumes, its fenced writes must change nothing.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let pid = servers[0].as_ref().unwrap().pid.to_string();
        std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()?;
        tokio::time::sleep(Duration::from_millis(7_500)).await;
        std::process::Command::new("kill")
            .args(["-CONT", &pid])
            .status()?;
    }
    while report.kills < cfg.kills {
        tokio::time::sleep(Duration::from_millis(150 + rnd(350))).await;
        let i = rnd(cfg.instances as u64) as usize;
        if let Some(mut s) = servers[i].take() {
            let _ = s.child.start_kill(); // SIGKILL
            let _ = s.child.wait().await;
            report.kills += 1;
        }
        servers[i] = Some(spawn(i).await?);
        *shared.bases.lock().unwrap() = servers.iter().flatten().map(|s| s.base_url()).collect();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    shared.stop.store(true, Ordering::Relaxed);
    for l in loaders {
        let _ = l.await;
    }

    // Settle: the workers must bring every charge home.
    let end = tokio::time::Instant::now() + cfg.settle;
    loop {
        let ledger: Value = http
            .get(format!("{}/sim/ledger", sim.base_url()))
            .send()
            .await?
            .json()
            .await?;
        report.violations = crate::invariants::check(store.as_ref(), &ledger).await;
        // I7: after the storm, nothing stuck (a minute of schedule time as the grace).
        let now = payonce_core::Clock::now(&payonce_core::SystemClock);
        report.violations.extend(
            crate::invariants::liveness(
                store.as_ref(),
                now,
                60_000 / cfg.time_scale.max(1.0) as i64 + 5_000,
            )
            .await,
        );
        let (undelivered, redelivered) = hooks.check(store.as_ref()).await?;
        (report.undelivered, report.redelivered) = (undelivered, redelivered);
        report.events = store.list_events(None, 100_000).await?.len();
        if undelivered > 0 {
            report.violations.push(format!(
                "I3: {undelivered} event(s) not delivered to the business"
            ));
        }
        report.charges = ledger["charges"].as_array().map(Vec::len).unwrap_or(0);
        report.refunds = ledger["refunds"].as_array().map(Vec::len).unwrap_or(0);
        if report.violations.is_empty() || tokio::time::Instant::now() >= end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    report.orders = shared.orders.lock().unwrap().len();
    report.prepays_ok = shared.prepays_ok.load(Ordering::Relaxed);
    report.payments = shared.payments.load(Ordering::Relaxed);
    drop(servers);
    Ok(report)
}
