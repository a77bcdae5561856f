//! `payonce storm`: the gateway under an outsider's bad day — thousands of slow connections
//! (slowloris, re-opened as the server cuts them) and one app calling at full speed — while
//! `/healthz`, a genuine channel notification and a second, well-behaved app are timed. Prints
//! figures and the server's memory after the storm; asserts nothing about speed (`scripts/storm`).

use hdrhistogram::Histogram;
use payonce_harness::process::ServeProcess;
use payonce_server::crypto::MasterKey;
use serde_json::{Value, json};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

#[derive(clap::Args)]
pub struct StormArgs {
    /// Slow connections held open (re-opened when the server closes them).
    #[arg(long, default_value_t = 2000)]
    slow: usize,
    /// Seconds the storm lasts.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Requests in flight at once from the greedy app.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The per-app limit the server runs with.
    #[arg(long, default_value = "1000/s,burst=2000")]
    rate_limit: String,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn rss_mib(server: &ServeProcess) -> Option<f64> {
    server.rss_kib().map(|k| k as f64 / 1024.0)
}

pub async fn run(args: StormArgs) -> anyhow::Result<ExitCode> {
    let tmp = payonce_harness::scratch::ScratchDir::new()?;
    let db_url = format!("sqlite://{}", tmp.path().join("storm.db").display());
    let sim = payonce_sim::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        &tmp.path().join("sim"),
    )
    .await?;
    let store = payonce_store::open(&db_url, true).await?;
    let (key, key_hex) = MasterKey::random();
    let greedy = payonce_server::engine::apps::create_app(
        store.as_ref(),
        &key,
        &payonce_core::SystemClock,
        payonce_server::engine::apps::NewApp::named("greedy"),
    )
    .await?;
    let polite = payonce_server::engine::apps::create_app(
        store.as_ref(),
        &key,
        &payonce_core::SystemClock,
        payonce_server::engine::apps::NewApp::named("polite"),
    )
    .await?;
    let exe = std::env::current_exe()?;
    let server = ServeProcess::spawn(
        &exe,
        &db_url,
        &sim.channels_file,
        &key_hex,
        &["--rate-limit", &args.rate_limit],
    )
    .await?;
    let base = server.base_url();
    let addr = server.addr.clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    println!(
        "payonce storm — {} slow connections, one app at full speed ({} in flight, limit {}), {} s",
        args.slow, args.concurrency, args.rate_limit, args.secs
    );
    let rss_before = rss_mib(&server);

    // A prepaid sandbox order whose genuine notification is replayed (answered 200 each time).
    let order: Value = http.post(format!("{base}/v1/orders")).bearer_auth(&polite.secret)
        .json(&json!({"merchant_order_no": "STORM", "amount": 100, "currency": "CNY", "subject": "storm"})).send().await?.json().await?;
    let id = order["id"].as_str().unwrap_or_default().to_owned();
    let p: Value = http
        .post(format!("{base}/v1/orders/{id}/prepay"))
        .bearer_auth(&polite.secret)
        .json(&json!({"channel": "sandbox"}))
        .send()
        .await?
        .json()
        .await?;
    let no = p["out_trade_no"].as_str().unwrap_or_default().to_owned();
    let sandbox_key =
        payonce_channels::config::read_hex_key(&sim.channels_file.with_file_name("sandbox.key"))?;
    let notification = move || {
        let body = json!({"id": "EV-STORM", "event_type": payonce_channels::sandbox::protocol::EVENT_PAID, "out_trade_no": no,
            "trade_no": "4200000000000000009", "amount": 100, "paid_at": 1_700_000_000_000i64}).to_string();
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let sig = payonce_channels::sandbox::protocol::sign(
            &sandbox_key,
            ts,
            "POST",
            "/notify/sandbox",
            body.as_bytes(),
        );
        (ts, sig, body)
    };

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    // Slow connections: half a header, then a byte now and then; re-opened when cut.
    let reopened = Arc::new(AtomicU64::new(0));
    for _ in 0..args.slow {
        let (addr, stop, reopened) = (addr.clone(), stop.clone(), reopened.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: storm\r\nX-Slow: ")
                    .await
                    .is_err()
                {
                    continue;
                }
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    if s.write_all(b"a").await.is_err() {
                        break;
                    }
                }
                reopened.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // The greedy app.
    let (ok, limited, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    for _ in 0..args.concurrency {
        let (http, url, secret, stop) = (
            http.clone(),
            format!("{base}/v1/orders/{id}"),
            greedy.secret.clone(),
            stop.clone(),
        );
        let (ok, limited, other) = (ok.clone(), limited.clone(), other.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match http
                    .get(&url)
                    .bearer_auth(&secret)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                {
                    // Another app's order: 404 is the answer when not limited.
                    Ok(404 | 200) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(429) => limited.fetch_add(1, Ordering::Relaxed),
                    _ => other.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Probes: /healthz, the genuine notification, the polite app.
    let (mut health, mut notify, mut polite_lat) = (hist(), hist(), hist());
    let (mut notify_bad, mut polite_limited, mut health_bad) = (0u64, 0u64, 0u64);
    let end = Instant::now() + Duration::from_secs(args.secs);
    let mut tick = 0u64;
    while Instant::now() < end {
        let t = Instant::now();
        match http.get(format!("{base}/healthz")).send().await {
            Ok(r) if r.status().is_success() => {
                let _ = health.record(t.elapsed().as_micros().max(1) as u64);
            }
            _ => health_bad += 1,
        }
        if tick.is_multiple_of(5) {
            let (ts, sig, body) = notification();
            let t = Instant::now();
            let r = http
                .post(format!("{base}/notify/sandbox"))
                .header(
                    payonce_channels::sandbox::protocol::TS_HEADER,
                    ts.to_string(),
                )
                .header(payonce_channels::sandbox::protocol::SIG_HEADER, sig)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => {
                    let _ = notify.record(t.elapsed().as_micros().max(1) as u64);
                }
                _ => notify_bad += 1,
            }
            let t = Instant::now();
            match http
                .get(format!("{base}/v1/orders/{id}"))
                .bearer_auth(&polite.secret)
                .send()
                .await
                .map(|r| r.status().as_u16())
            {
                Ok(200) => {
                    let _ = polite_lat.record(t.elapsed().as_micros().max(1) as u64);
                }
                Ok(429) => polite_limited += 1,
                _ => {}
            }
        }
        tick += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_peak = rss_mib(&server);
    stop.store(true, Ordering::Relaxed);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_after = rss_mib(&server);
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let secs = args.secs as f64;
    println!(
        "  greedy app      {:>8.0} answered/s, {:>8.0} limited (429)/s, {} other",
        ok.load(Ordering::Relaxed) as f64 / secs,
        limited.load(Ordering::Relaxed) as f64 / secs,
        other.load(Ordering::Relaxed)
    );
    println!(
        "  slow conns      {} held, re-opened {} times after the server cut them",
        args.slow,
        reopened.load(Ordering::Relaxed)
    );
    println!(
        "  /healthz        p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} probes, {} failed)",
        q(&health, 0.5),
        q(&health, 0.99),
        health.max() as f64 / 1000.0,
        health.len(),
        health_bad
    );
    println!(
        "  notification    p50 {:.1} ms  p99 {:.1} ms  ({} sent, {} not acknowledged)",
        q(&notify, 0.5),
        q(&notify, 0.99),
        notify.len() + notify_bad,
        notify_bad
    );
    println!(
        "  polite app      p50 {:.1} ms  p99 {:.1} ms  ({} limited)",
        q(&polite_lat, 0.5),
        q(&polite_lat, 0.99),
        polite_limited
    );
    let mib = |v: Option<f64>| {
        v.map(|m| format!("{m:.0} MiB"))
            .unwrap_or_else(|| "?".into())
    };
    println!(
        "  server RSS      before {}, during {}, 5 s after {}",
        mib(rss_before),
        mib(rss_peak),
        mib(rss_after)
    );
    let healthy = notify_bad == 0 && polite_limited == 0 && health_bad == 0;
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
