//! `payonce bench`: load against a real `payonce serve` process, with the database's own raw
//! commit rate measured in the same run as the yardstick. Prints figures, asserts nothing
//! about speed; it fails only if correctness does (one channel order per order, invariants).

use anyhow::Context;
use hdrhistogram::Histogram;
use payonce_harness::process::ServeProcess;
use payonce_server::crypto::MasterKey;
use serde_json::{Value, json};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Database to run on; default: a fresh SQLite file in a temp dir.
    #[arg(long, env = "PAYONCE_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Orders per phase (2,000 make phases of seconds on a 2-core machine).
    #[arg(long, default_value_t = 2000)]
    orders: usize,
    /// Concurrent prepays per order in the duplicate storm.
    #[arg(long, default_value_t = 10)]
    duplicates: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Orders that all expire within the same minute (each with a sandbox channel order to close):
    /// how fast expiry closes them at the channel. 0 skips the phase.
    #[arg(long, default_value_t = 0)]
    expiring: usize,
    /// The channel of the expiring orders: `sandbox` (the engine alone) or `wechatpay` (every
    /// close a real WeChat Pay APIv3 call to the simulator: two RSA signatures and a verify).
    #[arg(long, default_value = "sandbox")]
    expiry_channel: String,
    /// Connections of the duplicate phase (one order's duplicates beside `/healthz`).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds each part of the duplicate phase runs (0 skips it).
    #[arg(long, default_value_t = 3.0)]
    yardstick_secs: f64,
    /// Seconds the raw commit baseline runs.
    #[arg(long, default_value_t = 3)]
    baseline_secs: u64,
    #[arg(long)]
    json: bool,
}

/// Commits one unique prepay makes: the intent (attempt `created`) and the outcome.
const COMMITS_PER_PREPAY: f64 = 2.0;

struct Lat(Mutex<Histogram<u64>>);

impl Lat {
    fn new() -> Self {
        Lat(Mutex::new(
            Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
        ))
    }
    fn record(&self, d: Duration) {
        let _ = self.0.lock().unwrap().record(d.as_micros().max(1) as u64);
    }
    fn ms(&self, q: f64) -> f64 {
        self.0.lock().unwrap().value_at_quantile(q) as f64 / 1000.0
    }
    fn len(&self) -> u64 {
        self.0.lock().unwrap().len()
    }
}

/// Runs `jobs` with at most `concurrency` in flight.
async fn run_bounded<F, Fut>(concurrency: usize, jobs: Vec<F>)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut set = tokio::task::JoinSet::new();
    for job in jobs {
        let permit = sem.clone().acquire_owned().await.unwrap();
        set.spawn(async move {
            job().await;
            drop(permit);
        });
    }
    while set.join_next().await.is_some() {}
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let tmp = payonce_harness::scratch::ScratchDir::new()?;
    let db_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", tmp.path().join("bench.db").display()));
    let backend = if db_url.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    let sim = payonce_sim::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        &tmp.path().join("sim"),
    )
    .await?;
    let store = payonce_store::open_inspect(&db_url, true)
        .await
        .context("open database")?;
    let (key, key_hex) = MasterKey::random();
    let app = payonce_server::engine::apps::create_app(
        store.as_ref(),
        &key,
        &payonce_core::SystemClock,
        payonce_server::engine::apps::NewApp::named("bench"),
    )
    .await?;
    let exe = std::env::current_exe()?;
    let server = ServeProcess::spawn(&exe, &db_url, &sim.channels_file, &key_hex, &[]).await?;
    // PostgreSQL commits in groups by itself (concurrent commits share a WAL flush): counted
    // over the whole run, from the server's own counters.
    let wal_at_start = if backend == "postgres" {
        Some(crate::baseline::pg_wal_counters(&db_url).await?)
    } else {
        None
    };
    let base = server.base_url();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .timeout(Duration::from_secs(60))
        .build()?;
    let run_id = uuid_suffix();
    if !args.json {
        println!(
            "payonce bench — {backend}, {} orders × {} duplicates, concurrency {}",
            args.orders, args.duplicates, args.concurrency
        );
    }

    let create_orders = |phase: &'static str| {
        let (http, base, secret, run_id) = (
            http.clone(),
            base.clone(),
            app.secret.clone(),
            run_id.clone(),
        );
        let n = args.orders;
        let c = args.concurrency;
        async move {
            let ids = Arc::new(Mutex::new(Vec::with_capacity(n)));
            let jobs: Vec<_> = (0..n)
                .map(|i| {
                    let (http, base, secret, ids) = (http.clone(), base.clone(), secret.clone(), ids.clone());
                    let no = format!("B{run_id}-{phase}-{i}");
                    move || async move {
                        let r = http.post(format!("{base}/v1/orders")).bearer_auth(secret)
                            .json(&json!({"merchant_order_no": no, "amount": 100 + i as i64, "currency": "CNY", "subject": "bench"}))
                            .send().await;
                        if let Ok(r) = r
                            && let Ok(v) = r.json::<Value>().await
                                && let Some(id) = v["id"].as_str() {
                                    ids.lock().unwrap().push(id.to_owned());
                                }
                    }
                })
                .collect();
            run_bounded(c, jobs).await;
            Arc::try_unwrap(ids).unwrap().into_inner().unwrap()
        }
    };

    // Phase 1: unique prepays — every request makes one channel order.
    let unique_ids = create_orders("u").await;
    let cpu_before_unique = server.cpu_seconds();
    let own_cpu_before_unique = own_cpu_seconds();
    let unique_lat = Arc::new(Lat::new());
    let trade_nos = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(0u64));
    let started = Instant::now();
    let jobs: Vec<_> = unique_ids
        .iter()
        .map(|id| {
            let (http, url, secret) = (
                http.clone(),
                format!("{base}/v1/orders/{id}/prepay"),
                app.secret.clone(),
            );
            let (lat, nos, errors) = (unique_lat.clone(), trade_nos.clone(), errors.clone());
            move || async move {
                let t = Instant::now();
                match prepay(&http, &url, &secret).await {
                    Some((200, body)) => {
                        lat.record(t.elapsed());
                        nos.lock()
                            .unwrap()
                            .push(body["out_trade_no"].as_str().unwrap_or_default().to_owned());
                    }
                    _ => *errors.lock().unwrap() += 1,
                }
            }
        })
        .collect();
    run_bounded(args.concurrency, jobs).await;
    let unique_secs = started.elapsed().as_secs_f64();
    let cpu_unique = cpu_per_1000(cpu_before_unique, server.cpu_seconds(), unique_ids.len());
    let own_cpu_unique = cpu_per_1000(own_cpu_before_unique, own_cpu_seconds(), unique_ids.len());
    let unique_rate = unique_lat.len() as f64 / unique_secs;
    // The unique phase's yardstick: /healthz of the same server at the same concurrency.
    let healthz_unique = if args.yardstick_secs > 0.0 {
        Some(
            crate::bench_duplicates::healthz(&server, args.concurrency, args.yardstick_secs)
                .await?,
        )
    } else {
        None
    };

    // Phase 2: duplicate storm — K concurrent prepays per fresh order.
    let storm_ids = create_orders("d").await;
    let cpu_before_storm = server.cpu_seconds();
    let first_lat = Arc::new(Lat::new());
    let dup_lat = Arc::new(Lat::new());
    let conflicts = Arc::new(Mutex::new(0u64));
    let started = Instant::now();
    let mut jobs = Vec::new();
    for id in &storm_ids {
        for _ in 0..args.duplicates {
            let (http, url, secret) = (
                http.clone(),
                format!("{base}/v1/orders/{id}/prepay"),
                app.secret.clone(),
            );
            let (first_lat, dup_lat, conflicts, errors, nos) = (
                first_lat.clone(),
                dup_lat.clone(),
                conflicts.clone(),
                errors.clone(),
                trade_nos.clone(),
            );
            jobs.push(move || async move {
                let t = Instant::now();
                match prepay(&http, &url, &secret).await {
                    Some((200, body)) if body["reused"] == false => {
                        first_lat.record(t.elapsed());
                        nos.lock()
                            .unwrap()
                            .push(body["out_trade_no"].as_str().unwrap_or_default().to_owned());
                    }
                    Some((200, _)) => dup_lat.record(t.elapsed()),
                    Some((409, _)) => {
                        dup_lat.record(t.elapsed());
                        *conflicts.lock().unwrap() += 1;
                    }
                    _ => *errors.lock().unwrap() += 1,
                }
            });
        }
    }
    run_bounded(args.concurrency, jobs).await;
    let storm_secs = started.elapsed().as_secs_f64();
    let cpu_storm = cpu_per_1000(
        cpu_before_storm,
        server.cpu_seconds(),
        storm_ids.len() * args.duplicates,
    );
    let storm_total = (storm_ids.len() * args.duplicates) as f64;

    // Phase 2b: duplicates of one order whose credential is out, beside /healthz.
    let duplicates = if args.yardstick_secs > 0.0 {
        Some(
            crate::bench_duplicates::measure(
                &server,
                &app.secret,
                &run_id,
                args.connections,
                args.yardstick_secs,
            )
            .await?,
        )
    } else {
        None
    };

    // Phase 3: every payer pays; wait for every order to be paid through notifications.
    let nos = trade_nos.lock().unwrap().clone();
    // Peak memory before the notification burst (the simulator announces thousands of payments
    // at once, each a connection the server holds while it queues for a permit).
    let rss_before_burst_kib = server.peak_rss_kib();
    let cpu_before_pay = server.cpu_seconds();
    let own_cpu_before_pay = own_cpu_seconds();
    let started = Instant::now();
    let jobs: Vec<_> = nos
        .iter()
        .map(|no| {
            let (http, url, no) = (
                http.clone(),
                format!("{}/sim/pay", sim.base_url()),
                no.clone(),
            );
            move || async move {
                let _ = http
                    .post(url)
                    .json(&json!({"channel": "sandbox", "out_trade_no": no}))
                    .send()
                    .await;
            }
        })
        .collect();
    run_bounded(args.concurrency, jobs).await;
    let total_orders = unique_ids.len() + storm_ids.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut paid = 0;
    while Instant::now() < deadline {
        paid = store.count_paid_orders(&run_id).await? as usize;
        if paid >= total_orders {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pay_secs = started.elapsed().as_secs_f64();
    // Per notification received (each payment is announced at least once).
    let cpu_pay = cpu_per_1000(cpu_before_pay, server.cpu_seconds(), nos.len());
    let own_cpu_pay = cpu_per_1000(own_cpu_before_pay, own_cpu_seconds(), nos.len());

    // Phase 4: a flash sale's expiries — N orders with a channel order each, expiring within
    // the same minute; how long after its expiry each is closed at the channel.
    let expiry = if args.expiring > 0 {
        Some(expiry_phase(&args, &http, &base, &app.secret, &store, &run_id).await?)
    } else {
        None
    };
    let server_rss_kib = server.peak_rss_kib();
    // How many requests the server shed (a burst of notifications must queue, not be shed).
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await
        .unwrap_or_default();
    let shed = metric_sum(&metrics, "payonce_shed_total").max(0.0) as u64;
    // SQLite's group commit: how many writes shared each durable commit.
    let sqlite_commits = metric_sum(&metrics, "payonce_sqlite_commits_total");
    let sqlite_writes = metric_sum(&metrics, "payonce_sqlite_committed_writes_total");
    let writes_per_commit = (sqlite_commits > 0.0).then(|| sqlite_writes / sqlite_commits);
    // The connection cap at work: connections closed to make room, newcomers that waited for
    // one, and ones refused.
    let connections = [
        "payonce_connections_evicted_total",
        "payonce_connections_waited_total",
        "payonce_connections_refused_total",
    ]
    .map(|m| metric_sum(&metrics, m) as u64);
    drop(server);
    // The server's backends report their WAL counters as they disconnect.
    let pg_group_commit = match wal_at_start {
        Some(start) => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let end = crate::baseline::pg_wal_counters(&db_url).await?;
            Some((
                end.write_transactions - start.write_transactions,
                end.wal_flushes - start.wal_flushes,
            ))
        }
        None => None,
    };

    // Baseline: raw single-row commits, measured with nothing else running (the server is
    // stopped) on a fresh database, as the database's own tools measure it.
    let baseline = crate::baseline::measure(&db_url, args.concurrency, args.baseline_secs)
        .await
        .context("measure the commit baseline")?;
    let commits_per_s = baseline.commits_per_s;
    let ratio = unique_rate / (commits_per_s / COMMITS_PER_PREPAY);
    // A notification applies one fact in one transaction: one commit.
    let pay_rate = paid as f64 / pay_secs;
    let pay_ratio = pay_rate / commits_per_s;

    // Correctness of the run itself.
    let ledger: Value = http
        .get(format!("{}/sim/ledger", sim.base_url()))
        .send()
        .await?
        .json()
        .await?;
    let channel_orders = ledger["orders"].as_array().map(Vec::len).unwrap_or(0);
    let mut violations = payonce_harness::invariants::check(store.as_ref(), &ledger).await;
    // I7 too: nothing the run left behind is stuck (a minute of grace: the server runs unscaled).
    violations.extend(
        payonce_harness::invariants::liveness(
            store.as_ref(),
            payonce_core::Clock::now(&payonce_core::SystemClock),
            60_000,
        )
        .await,
    );
    let errors = *errors.lock().unwrap();

    let report = json!({
        "backend": backend,
        "orders_per_phase": args.orders,
        "duplicates": args.duplicates,
        "concurrency": args.concurrency,
        "unique_prepays_per_s": round(unique_rate),
        "unique_p50_ms": unique_lat.ms(0.5), "unique_p99_ms": unique_lat.ms(0.99),
        "storm_requests_per_s": round(storm_total / storm_secs),
        "storm_duplicates_per_s": round(dup_lat.len() as f64 / storm_secs),
        "storm_first_p50_ms": first_lat.ms(0.5), "storm_first_p99_ms": first_lat.ms(0.99),
        "storm_duplicate_p50_ms": dup_lat.ms(0.5), "storm_duplicate_p99_ms": dup_lat.ms(0.99),
        "storm_conflicts_409": *conflicts.lock().unwrap(),
        "paid_orders": paid, "orders": total_orders,
        "pay_to_paid_per_s": round(pay_rate),
        "ratio_notifications_to_commits": (pay_ratio * 1000.0).round() / 1000.0,
        "channel_orders": channel_orders,
        "raw_commits_per_s": round(commits_per_s),
        "raw_commits_method": baseline.method,
        "server_cpu_s_per_1000": {"unique_prepays": cpu_unique, "storm_requests": cpu_storm, "notifications": cpu_pay},
        "bench_process_cpu_s_per_1000": {"unique_prepays": own_cpu_unique, "notifications": own_cpu_pay},
        "healthz_at_concurrency": healthz_unique.map(|h| json!({"per_s": round(h.per_s), "p50_ms": h.p50_ms, "p99_ms": h.p99_ms})),
        "ratio_unique_prepays_to_healthz": healthz_unique.map(|h| (unique_rate / h.per_s * 1000.0).round() / 1000.0),
        "sqlite_writes_per_commit": writes_per_commit.map(|w| (w * 100.0).round() / 100.0),
        "postgres_write_transactions_per_wal_flush": pg_group_commit.map(|(t, f)| (t as f64 / f.max(1) as f64 * 100.0).round() / 100.0),
        "commits_per_prepay": COMMITS_PER_PREPAY,
        "ratio_prepays_to_commit_bound": (ratio * 1000.0).round() / 1000.0,
        "connections_evicted_waited_refused": connections,
        "server_peak_rss_mib": server_rss_kib.map(|k| (k as f64 / 1024.0 * 10.0).round() / 10.0),
        "server_peak_rss_before_notifications_mib": rss_before_burst_kib.map(|k| (k as f64 / 1024.0 * 10.0).round() / 10.0),
        "errors": errors,
        "invariant_violations": violations.len(),
        "duplicates_of_one_order": duplicates.as_ref().map(|d| d.json()),
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "  unique prepays      {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
            unique_rate,
            unique_lat.ms(0.5),
            unique_lat.ms(0.99)
        );
        if let Some(h) = &healthz_unique {
            println!(
                "    /healthz, {} connections  {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ratio unique ÷ /healthz = {:.3}",
                args.concurrency,
                h.per_s,
                h.p50_ms,
                h.p99_ms,
                unique_rate / h.per_s
            );
        }
        println!(
            "  duplicate storm     {:>9.0} req/s   ({} orders × {} concurrent prepays)",
            storm_total / storm_secs,
            storm_ids.len(),
            args.duplicates
        );
        println!(
            "    first (creates)                   p50 {:>7.2} ms   p99 {:>7.2} ms",
            first_lat.ms(0.5),
            first_lat.ms(0.99)
        );
        println!(
            "    duplicates        {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} × 409)",
            dup_lat.len() as f64 / storm_secs,
            dup_lat.ms(0.5),
            dup_lat.ms(0.99),
            report["storm_conflicts_409"]
        );
        if let Some(d) = &duplicates {
            d.print();
        }
        println!(
            "  paid via notification {:>7.0} orders/s ({paid}/{total_orders} paid; {shed} requests shed)",
            pay_rate
        );
        println!(
            "  channel orders created {channel_orders} for {} orders (must be equal)",
            total_orders
                + expiry.as_ref().map(|e| e.orders).unwrap_or(0)
                + usize::from(duplicates.is_some())
        );
        println!(
            "  raw single-row commits {:>8.0} /s ({})",
            commits_per_s, baseline.method
        );
        println!("  ratio prepays/s ÷ (commits/s ÷ {COMMITS_PER_PREPAY}) = {ratio:.3}");
        println!("  ratio notifications → paid /s ÷ commits/s = {pay_ratio:.3}");
        let cpu = |c: Option<f64>| c.map(|c| format!("{c:.2}")).unwrap_or_else(|| "n/a".into());
        println!(
            "  server CPU s per 1,000: unique prepays {}, storm requests {}, notifications {}",
            cpu(cpu_unique),
            cpu(cpu_storm),
            cpu(cpu_pay)
        );
        println!(
            "  bench process (client and simulator) CPU s per 1,000: unique prepays {}, notifications {}",
            cpu(own_cpu_unique),
            cpu(own_cpu_pay)
        );
        if let Some(w) = writes_per_commit {
            println!(
                "  SQLite group commit: {sqlite_writes:.0} writes in {sqlite_commits:.0} durable commits ({w:.2} per commit)"
            );
        }
        println!(
            "  connection cap: {} closed to make room, {} waited for a place, {} refused",
            connections[0], connections[1], connections[2]
        );
        if let Some((transactions, flushes)) = pg_group_commit {
            println!(
                "  PostgreSQL group commit: {transactions} write transactions in {flushes} WAL flushes ({:.2} per flush; pg_stat_wal)",
                transactions as f64 / flushes.max(1) as f64
            );
        }
        if let Some(k) = server_rss_kib {
            println!(
                "  server peak RSS {:.1} MiB ({:.1} MiB before the notification burst)",
                k as f64 / 1024.0,
                rss_before_burst_kib.unwrap_or_default() as f64 / 1024.0
            );
        }
        println!(
            "  errors {errors}, invariant violations {}",
            violations.len()
        );
        for v in &violations {
            println!("    ✘ {v}");
        }
    }
    if let Some(e) = &expiry {
        println!(
            "  expiry ({})  {} orders expiring within {:.0} s: all closed at the channel {} — lag after expiry p50 {:.1} s, p99 {:.1} s, max {:.1} s",
            args.expiry_channel,
            e.orders,
            e.spread_secs,
            if e.all_closed { "yes" } else { "NO" },
            e.lag_p50_s,
            e.lag_p99_s,
            e.lag_max_s
        );
    }
    let expected_channel_orders = total_orders
        + expiry.as_ref().map(|e| e.orders).unwrap_or(0)
        + usize::from(duplicates.is_some());
    let ok = channel_orders == expected_channel_orders
        && violations.is_empty()
        && errors == 0
        && paid == total_orders
        && expiry.as_ref().is_none_or(|e| e.all_closed);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

struct ExpiryFigures {
    orders: usize,
    spread_secs: f64,
    all_closed: bool,
    lag_p50_s: f64,
    lag_p99_s: f64,
    lag_max_s: f64,
}

async fn expiry_phase(
    args: &BenchArgs,
    http: &reqwest::Client,
    base: &str,
    secret: &str,
    store: &std::sync::Arc<dyn payonce_store::Inspect>,
    run_id: &str,
) -> anyhow::Result<ExpiryFigures> {
    let n = args.expiring;
    let ids = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let jobs: Vec<_> = (0..n)
        .map(|i| {
            let (http, base, secret, ids, channel) = (http.clone(), base.to_owned(), secret.to_owned(), ids.clone(), args.expiry_channel.clone());
            let no = format!("B{run_id}-x-{i}");
            move || async move {
                // 20 s from creation: the whole batch expires within the minute it is created in.
                let r = http.post(format!("{base}/v1/orders")).bearer_auth(&secret)
                    .json(&json!({"merchant_order_no": no, "amount": 100, "currency": "CNY", "subject": "flash", "expire_in_seconds": 20}))
                    .send().await;
                let Some(id) = (match r { Ok(r) => r.json::<Value>().await.ok().and_then(|v| v["id"].as_str().map(str::to_owned)), Err(_) => None }) else { return };
                if prepay_on(&http, &format!("{base}/v1/orders/{id}/prepay"), &secret, &channel).await.is_some_and(|(s, _)| s == 200) {
                    ids.lock().unwrap().push(id);
                }
            }
        })
        .collect();
    run_bounded(args.concurrency, jobs).await;
    let ids: std::collections::HashSet<String> = Arc::try_unwrap(ids)
        .unwrap()
        .into_inner()
        .unwrap()
        .into_iter()
        .collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let orders: Vec<_> = store
            .all_orders()
            .await?
            .into_iter()
            .filter(|o| ids.contains(o.id.as_str()))
            .collect();
        let open = orders.iter().filter(|o| o.status.is_open()).count();
        if open == 0 || Instant::now() >= deadline {
            let first = orders.iter().map(|o| o.expires_at.0).min().unwrap_or(0);
            let last = orders.iter().map(|o| o.expires_at.0).max().unwrap_or(0);
            let mut lags = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)?;
            for o in orders.iter().filter(|o| !o.status.is_open()) {
                let _ = lags.record((o.updated_at.0 - o.expires_at.0).max(1) as u64);
            }
            let attempts = store.all_attempts().await?;
            let all_closed = open == 0
                && attempts
                    .iter()
                    .filter(|a| ids.contains(a.order_id.as_str()))
                    .all(|a| a.status == payonce_core::AttemptStatus::Closed);
            return Ok(ExpiryFigures {
                orders: ids.len(),
                spread_secs: (last - first) as f64 / 1000.0,
                all_closed,
                lag_p50_s: lags.value_at_quantile(0.5) as f64 / 1000.0,
                lag_p99_s: lags.value_at_quantile(0.99) as f64 / 1000.0,
                lag_max_s: lags.max() as f64 / 1000.0,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn prepay(http: &reqwest::Client, url: &str, secret: &str) -> Option<(u16, Value)> {
    prepay_on(http, url, secret, "sandbox").await
}

async fn prepay_on(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    channel: &str,
) -> Option<(u16, Value)> {
    let r = http
        .post(url)
        .bearer_auth(secret)
        .json(&json!({"channel": channel}))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.ok()?))
}

/// The server's CPU seconds per 1,000 requests over a phase (machine-independent-ish).
fn cpu_per_1000(before: Option<f64>, after: Option<f64>, requests: usize) -> Option<f64> {
    let (b, a) = (before?, after?);
    (requests > 0).then(|| ((a - b) / requests as f64 * 1000.0 * 100.0).round() / 100.0)
}

/// This process's CPU seconds so far (the bench client and the simulator it runs).
fn own_cpu_seconds() -> Option<f64> {
    payonce_harness::process::cpu_seconds_of("self")
}

/// The sum of a metric's series in a Prometheus scrape (0 when absent).
fn metric_sum(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn round(x: f64) -> f64 {
    x.round()
}

fn uuid_suffix() -> String {
    payonce_core::EventId::new().as_str()[4..16].to_owned()
}
