//! `payonce reconcile`: one channel's bill of one day against the database, now — beside running
//! servers if there are any (the run is leased like theirs). A summary table by class, or
//! `--json`; exit 0 when clean, 3 when differences need a person, 1 when the run failed.

use payonce_server::reconcile::{self, Report};
use payonce_server::{AppState, ServerConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ReconcileArgs {
    #[arg(long, env = "PAYONCE_DATABASE_URL", default_value = "sqlite://payonce.db")]
    database_url: String,
    #[arg(long, env = "PAYONCE_CHANNELS", default_value = "channels.toml")]
    channels: PathBuf,
    /// `PAYONCE_MASTER_KEY` (hex) takes precedence.
    #[arg(long, env = "PAYONCE_MASTER_KEY_FILE", default_value = "payonce.key")]
    master_key_file: PathBuf,
    #[arg(long, env = "PAYONCE_CHANNEL_TIMEOUT_MS", default_value_t = 5000)]
    channel_timeout_ms: u64,
    /// `wechatpay`, `alipay`, `unionpay` or `sandbox`.
    #[arg(long)]
    channel: String,
    /// The bill's day, `YYYY-MM-DD` in Asia/Shanghai; yesterday there by default.
    #[arg(long)]
    date: Option<String>,
    /// Classify only: repair nothing, record nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let store = payonce_store::open(&args.database_url, false).await?;
    let clock: std::sync::Arc<dyn payonce_core::Clock> = std::sync::Arc::new(payonce_core::SystemClock);
    let timeout = Duration::from_millis(args.channel_timeout_ms);
    let channels = payonce_channels::ChannelsConfig::load(&args.channels)?.build(timeout, clock.clone())?;
    let key = crate::serve::master_key(&args.master_key_file)?;
    let config = ServerConfig { channel_timeout: timeout, workers: false, ..ServerConfig::default() };
    let state = AppState::new(store, clock.clone(), channels, config, key);
    let date = args.date.unwrap_or_else(|| reconcile::beijing_yesterday(clock.now()));
    let owner = format!("cli-{}", std::process::id());
    let report = reconcile::reconcile(&state, &owner, &args.channel, &date, args.dry_run).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(if report.status == "failed" {
        ExitCode::FAILURE
    } else if report.needs_a_person() > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_table(r: &Report) {
    println!("reconciliation {} {} — {}{}", r.channel, r.bill_date, r.status, r.id.as_deref().map(|id| format!(" ({id})")).unwrap_or_default());
    if let Some(reason) = &r.reason {
        println!("  failed: {reason} (nothing was applied; run it again to download the bill again)");
    }
    println!("  {:<20} {:>8}", "bill rows", r.rows);
    println!("  {:<20} {:>8}", "matched", r.matched);
    for class in reconcile::CLASSES {
        let n = r.classes.get(class).copied().unwrap_or(0);
        let who = if payonce_store::ReconciliationItem::needs_a_person(class) { "a person" } else { "repaired" };
        println!("  {class:<20} {n:>8}   {who}");
    }
}
