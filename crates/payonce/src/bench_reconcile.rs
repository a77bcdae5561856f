//! `payonce bench-reconcile --rows N`: how fast one day's WeChat bill of N rows is downloaded,
//! proven whole, matched against N local payments and classified, and how much memory that
//! takes. The simulator runs as a child process (its bill generation is not ours to measure);
//! the database is seeded in SQL (N paid orders and their attempts, a few with another amount
//! and a few missing, so every row is looked up and some become items); then one run and one
//! re-run (which reads the kept bill) are timed. Prints rows/s and this process's peak RSS.

use anyhow::Context as _;
use payonce_core::Clock as _;
use payonce_server::{AppState, ServerConfig};
use std::io::BufRead as _;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BenchReconcileArgs {
    /// Bill rows (payments), and as many local payments.
    #[arg(long, default_value_t = 100_000)]
    rows: u64,
    /// Database to run on; default: a fresh SQLite file in a temp dir. Give an empty database.
    #[arg(long)]
    database_url: Option<String>,
    #[arg(long)]
    json: bool,
}

/// Every this-many-th local payment has another amount than its bill row (an
/// `amount_mismatch`), and every this-many-th bill row has no local payment (`unknown_trade`).
const ODD_EVERY: u64 = 10_007;

pub async fn run(args: BenchReconcileArgs) -> anyhow::Result<ExitCode> {
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
    let sim = SimProcess::spawn(&tmp.path().join("sim"))?;
    let date =
        payonce_server::engine::reconcile::beijing_yesterday(payonce_core::SystemClock.now());
    let prefix = "PB";

    let seeded = Instant::now();
    let store = payonce_store::open(&db_url, true)
        .await
        .context("open database")?;
    let (key, _) = payonce_server::crypto::MasterKey::random();
    let app = payonce_server::engine::apps::create_app(
        store.as_ref(),
        &key,
        &payonce_core::SystemClock,
        payonce_server::engine::apps::NewApp::named("bench-reconcile"),
    )
    .await?;
    seed(&db_url, app.app_id.as_str(), prefix, args.rows).await?;
    let http = reqwest::Client::new();
    let adjust = serde_json::json!({"kind": "synthetic", "channel": "wechatpay", "date": date, "rows": args.rows, "prefix": prefix, "amount": 100});
    http.post(format!("{}/sim/bill", sim.base))
        .json(&adjust)
        .send()
        .await?
        .error_for_status()?;
    let seed_secs = seeded.elapsed().as_secs_f64();

    let clock: std::sync::Arc<dyn payonce_core::Clock> =
        std::sync::Arc::new(payonce_core::SystemClock);
    let timeout = Duration::from_secs(600);
    let channels = payonce_channels::ChannelsConfig::load(&sim.channels_file)?
        .build(timeout, clock.clone())?;
    let state = AppState::new(
        store,
        clock,
        channels,
        ServerConfig {
            channel_timeout: timeout,
            workers: false,
            ..ServerConfig::default()
        },
        key,
    );
    let rss_before = peak_rss_kib();

    let started = Instant::now();
    let first = payonce_server::engine::reconcile::reconcile(
        &state,
        "bench",
        "wechatpay",
        None,
        &date,
        false,
    )
    .await?;
    let first_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let again = payonce_server::engine::reconcile::reconcile(
        &state,
        "bench",
        "wechatpay",
        None,
        &date,
        false,
    )
    .await?;
    let again_secs = started.elapsed().as_secs_f64();
    let peak = peak_rss_kib();

    // Rows i ≡ 0 (mod ODD_EVERY) mismatch, rows i ≡ 1 are unknown.
    let mismatched = args.rows.div_ceil(ODD_EVERY) as usize;
    let unknown = if args.rows >= 2 {
        ((args.rows - 2) / ODD_EVERY + 1) as usize
    } else {
        0
    };
    let ok = first.status == "completed"
        && first.rows as u64 == args.rows
        && first.classes.get("amount_mismatch") == Some(&mismatched)
        && first.classes.get("unknown_trade") == Some(&unknown)
        && again.classes == first.classes
        && again.bill_source == "stored";
    let rate = |secs: f64| (args.rows as f64 / secs).round();
    let mib = |k: Option<u64>| k.map(|k| (k as f64 / 1024.0 * 10.0).round() / 10.0);
    let out = serde_json::json!({
        "backend": backend, "rows": args.rows, "seed_secs": round(seed_secs),
        "first_run": {"secs": round(first_secs), "rows_per_sec": rate(first_secs), "classes": first.classes, "bill_source": first.bill_source},
        "re_run": {"secs": round(again_secs), "rows_per_sec": rate(again_secs), "classes": again.classes, "bill_source": again.bill_source},
        "peak_rss_mib": mib(peak), "rss_before_runs_mib": mib(rss_before), "correct": ok,
    });
    if args.json {
        println!("{out}");
    } else {
        println!(
            "payonce bench-reconcile — {backend}, a WeChat bill of {} rows (seeded in {seed_secs:.1} s)",
            args.rows
        );
        println!(
            "  first run: {first_secs:.1} s, {:.0} rows/s (download, verify, match, classify; {} items)",
            rate(first_secs),
            first.classes.values().sum::<usize>()
        );
        println!(
            "  re-run:    {again_secs:.1} s, {:.0} rows/s (the kept bill; nothing applied twice)",
            rate(again_secs)
        );
        if let Some(k) = peak {
            println!(
                "  peak RSS {:.1} MiB (this process: the bill, its parser and the look-ups)",
                k as f64 / 1024.0
            );
        }
        println!(
            "  {}",
            if ok {
                "correct: every row classified as seeded, the re-run identical"
            } else {
                "INCORRECT: see the JSON below"
            }
        );
        if !ok {
            println!("{out}");
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// This process's peak resident memory (Linux `VmHWM`), KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `rows` paid orders with one succeeded WeChat attempt each, `{prefix}{i:09}`, in one SQL
/// statement per table (the database generates the rows). Every `ODD_EVERY`-th attempt has
/// amount 101 instead of the bill's 100; every `ODD_EVERY`-th + 1 is left out.
async fn seed(db_url: &str, app_id: &str, prefix: &str, rows: u64) -> anyhow::Result<()> {
    let now = payonce_core::SystemClock.now().0;
    // Paid yesterday (Beijing): inside the bill's day, so none is "missing".
    let paid_at = payonce_server::engine::reconcile::beijing_day(
        &payonce_server::engine::reconcile::beijing_yesterday(payonce_core::Timestamp(now)),
    )
    .map(|(s, _)| s.0 + 3_600_000)
    .unwrap_or(now);
    let keep = format!("(i % {ODD_EVERY}) <> 1");
    let amount = format!("CASE WHEN i % {ODD_EVERY} = 0 THEN 101 ELSE 100 END");
    let orders = |series: &str, hex: &str, no: &str| {
        format!(
            "INSERT INTO orders (id, app_id, merchant_order_no, amount, currency, subject, content_hash, status, paid_attempt_id, paid_at, expires_at, version, created_at, updated_at) \
             SELECT 'ord_' || {hex}, '{app_id}', 'bench-' || {no}, {amount}, 'CNY', 'bench', 'bench', 'paid', 'att_' || {hex}, {paid_at}, {now}, 2, {now}, {now} FROM {series} WHERE {keep}"
        )
    };
    let attempts = |series: &str, hex: &str, no: &str| {
        format!(
            "INSERT INTO attempts (id, order_id, channel, method, out_trade_no, amount, currency, status, channel_trade_no, paid_at, version, created_at, updated_at) \
             SELECT 'att_' || {hex}, 'ord_' || {hex}, 'wechatpay', 'native', '{prefix}' || {no}, {amount}, 'CNY', 'succeeded', '42' || {no}, {paid_at}, 2, {now}, {now} FROM {series} WHERE {keep}"
        )
    };
    use sqlx::ConnectOptions as _;
    // Seeding a million rows is a slow statement by design: not worth a warning.
    if db_url.starts_with("sqlite") {
        let mut c = db_url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()?
            .disable_statement_logging()
            .connect()
            .await?;
        let series = format!(
            "(WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {}) SELECT i FROM s)",
            rows.saturating_sub(1)
        );
        let (hex, no) = ("printf('%032x', i)", "printf('%09d', i)");
        sqlx::query(sqlx::AssertSqlSafe(orders(&series, hex, no)))
            .execute(&mut c)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(attempts(&series, hex, no)))
            .execute(&mut c)
            .await?;
    } else {
        let mut c = db_url
            .parse::<sqlx::postgres::PgConnectOptions>()?
            .disable_statement_logging()
            .connect()
            .await?;
        let series = format!("generate_series(0, {}) AS s(i)", rows.saturating_sub(1));
        let (hex, no) = ("lpad(to_hex(i), 32, '0')", "lpad(i::text, 9, '0')");
        sqlx::query(sqlx::AssertSqlSafe(orders(&series, hex, no)))
            .execute(&mut c)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(attempts(&series, hex, no)))
            .execute(&mut c)
            .await?;
        sqlx::query("ANALYZE attempts").execute(&mut c).await?;
    }
    Ok(())
}

/// `payonce sim` as a child process, killed when dropped.
struct SimProcess {
    child: std::process::Child,
    base: String,
    channels_file: std::path::PathBuf,
}

impl SimProcess {
    fn spawn(state_dir: &std::path::Path) -> anyhow::Result<Self> {
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args([
                "sim",
                "--listen",
                "127.0.0.1:0",
                "--seed",
                "1",
                "--state-dir",
            ])
            .arg(state_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut lines = std::io::BufReader::new(child.stdout.take().context("sim stdout")?).lines();
        let (mut base, mut channels_file) = (None, None);
        while base.is_none() || channels_file.is_none() {
            let line = lines
                .next()
                .context("the simulator ended before it listened")??;
            if let Some(addr) = line.strip_prefix("listening on ") {
                base = Some(format!("http://{addr}"));
            } else if let Some(f) = line.strip_prefix("channels file: ") {
                channels_file = Some(f.into());
            }
        }
        // Keep draining its output: a closed pipe would kill it at its next log line.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(SimProcess {
            child,
            base: base.unwrap_or_default(),
            channels_file: channels_file.unwrap_or_default(),
        })
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
