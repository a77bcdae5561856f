//! `payonce reconcile`: one channel account's bill of one day against the database, now — beside running
//! servers if there are any (the run is leased like theirs). Progress on a terminal as a
//! spinner with the rows read (plain lines on stderr when it is not a terminal), then a summary
//! table by class, or `--json`; exit 0 when clean, 3 when differences need a person, 1 when the
//! run failed.

use payonce_server::engine::reconcile::{self, Report};
use payonce_server::{AppState, ServerConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ReconcileArgs {
    #[arg(
        long,
        env = "PAYONCE_DATABASE_URL",
        default_value = "sqlite://payonce.db"
    )]
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
    /// The channel account (merchant number) whose bill to read, as `channels.toml` names it;
    /// default: the channel's only account, or the one marked default.
    #[arg(long)]
    account: Option<String>,
    /// The bill's day, `YYYY-MM-DD` in Asia/Shanghai; yesterday there by default.
    #[arg(long)]
    date: Option<String>,
    /// Classify only: repair nothing, record nothing.
    #[arg(long)]
    dry_run: bool,
    /// Download the bill again even though this day's is kept (a re-run otherwise reads the
    /// kept copy); the new one replaces it once it verifies.
    #[arg(long)]
    refetch: bool,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let store = payonce_store::open(&args.database_url, false).await?;
    let clock: std::sync::Arc<dyn payonce_core::Clock> =
        std::sync::Arc::new(payonce_core::SystemClock);
    let timeout = Duration::from_millis(args.channel_timeout_ms);
    let channels =
        payonce_channels::ChannelsConfig::load(&args.channels)?.build(timeout, clock.clone())?;
    let key = crate::serve::master_key(&args.master_key_file)?;
    let config = ServerConfig {
        channel_timeout: timeout,
        workers: false,
        ..ServerConfig::default()
    };
    let state = AppState::new(store, clock.clone(), channels, config, key);
    // An account added through the admin API can be reconciled too.
    payonce_server::engine::accounts::reload(&state, true).await?;
    let date = args
        .date
        .unwrap_or_else(|| reconcile::beijing_yesterday(clock.now()));
    let owner = format!("cli-{}", std::process::id());
    let progress = Progress::new(&format!("{} {date}", args.channel));
    let options = reconcile::RunOptions {
        dry_run: args.dry_run,
        refetch: args.refetch,
    };
    let report = reconcile::reconcile_with(
        &state,
        &owner,
        &args.channel,
        args.account.as_deref(),
        &date,
        options,
        &|phase, rows| progress.show(phase, rows),
    )
    .await?;
    progress.done();
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

/// Where a run has got: an indicatif spinner on a terminal; otherwise a plain line on stderr
/// for each phase and every 100,000 rows, so logs of a scheduled job stay readable.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last: std::sync::Mutex<(String, usize)>,
    what: String,
}

impl Progress {
    fn new(what: &str) -> Self {
        use std::io::IsTerminal as _;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.set_prefix(what.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            bar,
            last: std::sync::Mutex::new((String::new(), 0)),
            what: what.to_owned(),
        }
    }

    fn show(&self, phase: &str, rows: usize) {
        let label = match phase {
            "download" => "downloading the bill".to_owned(),
            "verify" => format!("checking the bill: {rows} rows"),
            "apply" => format!("matching: {rows} rows"),
            "missing" => format!("asking the channel about {rows} payment(s) the bill lacks"),
            other => format!("{other}: {rows}"),
        };
        if let Some(bar) = &self.bar {
            bar.set_message(label);
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.0 != phase || rows >= last.1 + 100_000 {
            eprintln!("reconcile {}: {label}", self.what);
            *last = (phase.to_owned(), rows);
        }
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn print_table(r: &Report) {
    println!(
        "reconciliation {} {} — {}{}",
        r.channel,
        r.bill_date,
        r.status,
        r.id.as_deref()
            .map(|id| format!(" ({id})"))
            .unwrap_or_default()
    );
    match &r.reason {
        Some(reason) if r.status == "failed" => println!(
            "  failed: {reason} (nothing was applied; run it again to download the bill again)"
        ),
        // A completed run's reason says what the channel answered (no bill for the day).
        Some(reason) => println!("  {reason}"),
        None => {}
    }
    if !r.bill_source.is_empty() {
        println!(
            "  bill {}: {} payments ({} fen, {} settled), {} refunds ({} fen), fees {:.3} fen{}",
            r.bill_source,
            r.totals.payments,
            r.totals.paid,
            r.totals.settled,
            r.totals.refunds,
            r.totals.refunded,
            r.totals.fees_millifen as f64 / 1000.0,
            if r.totals.unrecognised > 0 {
                format!(", {} rows not understood", r.totals.unrecognised)
            } else {
                String::new()
            }
        );
    }
    println!("  {:<20} {:>8}", "bill rows", r.rows);
    println!("  {:<20} {:>8}", "matched", r.matched);
    for class in reconcile::CLASSES {
        let n = r.classes.get(class).copied().unwrap_or(0);
        let who = if payonce_store::ReconciliationItem::needs_a_person(class) {
            "a person"
        } else {
            "repaired"
        };
        println!("  {class:<20} {n:>8}   {who}");
    }
}
