//! The `payonce` binary: one command line for the server, the simulator, the demo and the
//! operator's tools. Every flag has a `PAYONCE_…` environment twin.

mod accounts;
mod baseline;
mod bench;
mod bench_duplicates;
mod bench_reconcile;
mod demo;
mod reconcile;
mod serve;
mod storm;
mod telemetry;
mod verify;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "payonce",
    version,
    about = "A payment center that never charges twice and never loses a payment"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start and matched at once: the size of `serve`'s arguments costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the API and the workers.
    Serve(serve::ServeArgs),
    /// Reconcile one channel's bill of one day now (exit 0 clean, 3 differences for a person, 1 failed).
    Reconcile(reconcile::ReconcileArgs),
    /// Channel accounts: `check` the accounts of a channels.toml (keys, one signed call).
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// The master key: `rotate-master` moves every sealed secret to a new key.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run the channel simulator (WeChat Pay, Alipay, UnionPay and sandbox protocols).
    Sim {
        #[arg(long, env = "PAYONCE_SIM_LISTEN", default_value = "127.0.0.1:7070")]
        listen: String,
        /// Where generated keys and `channels.toml` are written.
        #[arg(long, env = "PAYONCE_SIM_STATE_DIR", default_value = "sim-state")]
        state_dir: PathBuf,
        /// Seed of every random choice (fault draws, ids, nonces, delays): the same seed and
        /// the same requests replay the same run. Printed at start when not given.
        #[arg(long, env = "PAYONCE_SIM_SEED")]
        seed: Option<u64>,
        /// Merchants per channel: 1 writes one table per channel (account `default`); N > 1
        /// writes `[[channel]]` accounts `m1` … `mN` (m1 the default), each with its own
        /// merchant number and keys.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        merchants: u16,
    },
    /// Apply database migrations.
    Migrate {
        #[arg(
            long,
            env = "PAYONCE_DATABASE_URL",
            default_value = "sqlite://payonce.db"
        )]
        database_url: String,
    },
    /// Manage the business systems allowed to use this payonce.
    Apps {
        #[command(subcommand)]
        command: AppsCommand,
    },
    /// Everything embedded (SQLite in a temp dir, simulator in-process): a scripted story.
    Demo,
    /// Load run against a real server process, with its own database baseline.
    Bench(bench::BenchArgs),
    /// One day's WeChat bill of N rows reconciled against N local payments: rows/s, peak RSS.
    BenchReconcile(bench_reconcile::BenchReconcileArgs),
    /// Did this message really come from the channel, and what does it say? Prints one JSON
    /// object `{valid, reason, fields, outcome}`; exit 0 valid, 1 not valid, 2 not a message.
    VerifyMessage(verify::VerifyArgs),
    /// The gateway under slow connections and one greedy app: health, notifications and other
    /// apps timed, server memory after (`scripts/storm`).
    Storm(storm::StormArgs),
    /// Crash run: real servers SIGKILLed (and frozen) under load, then every invariant checked.
    Chaos {
        /// Database to run on; default: a fresh SQLite file in a temp dir.
        #[arg(long, env = "PAYONCE_CHAOS_DATABASE_URL")]
        database_url: Option<String>,
        #[arg(long, default_value_t = 1)]
        instances: usize,
        #[arg(long, default_value_t = 100)]
        kills: usize,
        /// Freeze one instance with SIGSTOP past its leases (needs --instances ≥ 2).
        #[arg(long)]
        freeze: bool,
        /// Instead of the crash run: N seeded scenarios in process, each checked (safety and
        /// liveness); a failure prints its seed, a replay command and a shrunk scenario.
        #[arg(long)]
        seeds: Option<u64>,
        /// The first seed (`--seeds 1 --seed S` replays seed S).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the process's Prometheus scrape here after the seeded run (every metric the
        /// scenarios moved): what `scripts/metrics-check` holds the dashboard and rules to.
        #[arg(long)]
        metrics_out: Option<PathBuf>,
        /// Scenarios run at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// The store the seeded scenarios run on (each its own fresh database; PostgreSQL at
        /// PAYONCE_TEST_PG_URL's server, default 127.0.0.1:5432).
        #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "postgres"])]
        store: String,
    },
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// Checks each account: its keys parse, and a query of an order number that cannot exist
    /// comes back with a verified signature. Exit 1 if any fails (each says what is wrong).
    Check(accounts::CheckArgs),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-wraps every channel account's data key and re-encrypts every webhook secret under a
    /// new master key, in one transaction.
    RotateMaster(accounts::RotateArgs),
}

#[derive(Subcommand)]
enum AppsCommand {
    /// Register an app; prints its id, API secret and webhook signing secret (shown once).
    Create {
        #[arg(
            long,
            env = "PAYONCE_DATABASE_URL",
            default_value = "sqlite://payonce.db"
        )]
        database_url: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        webhook_url: Option<String>,
        /// Another host an order's notify_url may name (repeatable); the webhook URL's host is
        /// always allowed.
        #[arg(long = "allow-host")]
        allow_hosts: Vec<String>,
        /// Where the app's events go.
        #[arg(long, default_value = "webhook", value_parser = ["webhook", "rabbitmq", "nats"])]
        sink: String,
        /// Seconds during which an order created without merchant_order_no (with a payer_ref)
        /// answers the same content again instead of making a new order; 0 turns it off.
        #[arg(long, default_value_t = payonce_server::engine::apps::DEFAULT_SUBMISSION_WINDOW_SECS, value_parser = clap::value_parser!(i64).range(0..=86_400))]
        submission_window: i64,
        #[arg(long, env = "PAYONCE_MASTER_KEY_FILE", default_value = "payonce.key")]
        master_key_file: PathBuf,
        /// The channel account the app's payments go through: CHANNEL=ACCOUNT (repeatable), a
        /// name `serve` recorded from channels.toml. Unbound channels use their only account,
        /// or the one marked default.
        #[arg(long = "account", value_parser = payonce_server::engine::accounts::parse_binding)]
        accounts: Vec<(payonce_core::ChannelName, String)>,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("PAYONCE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            if matches!(
                cli.command,
                Command::Demo | Command::Bench(_) | Command::Chaos { .. } | Command::Storm(_)
            ) {
                "error"
            } else {
                "info"
            },
        )
    });
    // Spans exported over OTLP when `serve` is given a collector (`--otlp-endpoint` /
    // OTEL_EXPORTER_OTLP_ENDPOINT); off otherwise, and then no span is recorded at all.
    let otlp = match &cli.command {
        Command::Serve(args) => args.otlp_endpoint.clone(),
        _ => None,
    };
    let provider = match otlp.as_deref().map(telemetry::otlp_provider).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: the OTLP exporter: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    telemetry::init_logs(filter, provider.as_ref());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match rt.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    // The last spans leave before the process does (outside the runtime: it blocks).
    if let Some(p) = provider
        && let Err(e) = p.shutdown()
    {
        eprintln!("warning: flushing spans to the collector: {e}");
    }
    code
}

async fn dispatch(command: Command) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;
    match command {
        Command::Serve(args) => serve::run(args).await.map(|_| ExitCode::SUCCESS),
        Command::Reconcile(args) => reconcile::run(args).await,
        Command::Accounts {
            command: AccountsCommand::Check(args),
        } => accounts::check(args).await,
        Command::Keys {
            command: KeysCommand::RotateMaster(args),
        } => accounts::rotate_master(args).await,
        Command::Sim {
            listen,
            state_dir,
            seed,
            merchants,
        } => {
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            let handle = payonce_sim::start_with(
                listener,
                &state_dir,
                payonce_sim::SimOptions {
                    seed,
                    merchants: usize::from(merchants),
                    ..Default::default()
                },
            )
            .await?;
            println!("listening on {}", handle.addr);
            println!("channels file: {}", handle.channels_file.display());
            println!(
                "seed: {} (replay with --seed {})",
                handle.sim.seed, handle.sim.seed
            );
            serve::shutdown_signal().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::VerifyMessage(args) => Ok(verify::run(&args)),
        Command::Storm(args) => storm::run(args).await,
        Command::Migrate { database_url } => {
            payonce_store::open(&database_url, true).await?;
            println!("migrated {}", redact_url(&database_url));
            Ok(ExitCode::SUCCESS)
        }
        Command::Apps {
            command:
                AppsCommand::Create {
                    database_url,
                    name,
                    webhook_url,
                    allow_hosts,
                    sink,
                    submission_window,
                    master_key_file,
                    accounts,
                    json,
                },
        } => {
            let store = payonce_store::open(&database_url, true).await?;
            let key = serve::master_key(&master_key_file)?;
            let creds = payonce_server::engine::apps::create_app(
                store.as_ref(),
                &key,
                &payonce_core::SystemClock,
                payonce_server::engine::apps::NewApp {
                    name: &name,
                    webhook_url: webhook_url.as_deref(),
                    allowed_hosts: (!allow_hosts.is_empty())
                        .then(|| allow_hosts.join(","))
                        .as_deref(),
                    sink: Some(&sink),
                    submission_window_secs: Some(submission_window),
                    accounts: &accounts,
                },
            )
            .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"app_id": creds.app_id, "secret": creds.secret, "webhook_secret": creds.webhook_secret})
                );
            } else {
                println!("app_id:         {}", creds.app_id);
                println!("secret:         {}", creds.secret);
                println!("webhook_secret: {}", creds.webhook_secret);
                println!(
                    "(the secrets are shown once; payonce keeps only a hash of the API secret)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => demo::run().await,
        Command::Bench(args) => bench::run(args).await,
        Command::BenchReconcile(args) => bench_reconcile::run(args).await,
        Command::Chaos {
            seeds: Some(n),
            seed,
            parallel,
            store,
            metrics_out,
            ..
        } => {
            let started = std::time::Instant::now();
            let backend = if store == "postgres" {
                payonce_harness::Backend::Postgres
            } else {
                payonce_harness::Backend::Sqlite
            };
            println!(
                "payonce chaos — {n} seeded scenarios from seed {seed} on {store}, {parallel} at a time"
            );
            let failed = payonce_harness::scenario::run_seeds(seed, n, parallel, backend).await;
            println!(
                "{n} scenarios, {} violated{}",
                failed.len(),
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(" (seeds {failed:?})")
                }
            );
            // What an operator would have seen of these runs.
            let scrape = payonce_server::state::metrics_handle().render();
            let total = |name: &str| -> f64 {
                scrape
                    .lines()
                    .filter(|l| {
                        l.starts_with(name)
                            && (l.as_bytes().get(name.len()) == Some(&b'{')
                                || l.as_bytes().get(name.len()) == Some(&b' '))
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>()
                    + 0.0
            };
            println!(
                "metrics: {} duplicate charges detected, {} duplicate refunds, {} refunds, {} active queries, {} channel calls, {} notifications, {} reconciliation items",
                total("payonce_duplicate_payments_total"),
                total("payonce_duplicate_refunds_total"),
                total("payonce_refunds_total"),
                total("payonce_active_queries_total"),
                total("payonce_channel_calls_total"),
                total("payonce_notifications_total"),
                total("payonce_reconciliation_items_total")
            );
            if let Some(path) = metrics_out {
                std::fs::write(&path, &scrape)?;
            }
            println!("(took {:.0} s)", started.elapsed().as_secs_f64());
            Ok(if failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Chaos {
            database_url,
            instances,
            kills,
            freeze,
            ..
        } => {
            let tmp = payonce_harness::scratch::ScratchDir::new()?;
            let database_url = database_url
                .unwrap_or_else(|| format!("sqlite://{}", tmp.path().join("chaos.db").display()));
            println!(
                "payonce chaos — {} instance(s), {kills} SIGKILLs{} on {}",
                instances,
                if freeze { ", one SIGSTOP" } else { "" },
                redact_url(&database_url)
            );
            let report = payonce_harness::chaos::run(payonce_harness::chaos::ChaosConfig {
                exe: std::env::current_exe()?,
                database_url,
                instances,
                kills,
                freeze,
                time_scale: 100.0,
                settle: std::time::Duration::from_secs(180),
            })
            .await?;
            println!(
                "  kills {}, orders {}, successful prepays {}, payments {}, charges {}, automatic refunds {}",
                report.kills,
                report.orders,
                report.prepays_ok,
                report.payments,
                report.charges,
                report.refunds
            );
            if report.violations.is_empty() {
                println!("  every invariant holds against the channels' ledger ✔");
                Ok(ExitCode::SUCCESS)
            } else {
                for v in &report.violations {
                    println!("  ✘ {v}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    // Several URLs (fail-over candidates) are redacted one by one.
    url.split(',')
        .map(redact_one_url)
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_one_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_password_of_a_fail_over_list_is_redacted() {
        let shown = super::redact_url(
            "postgres://pay:s3cret@db1:5432/payonce,postgres://pay:0ther@db2:5432/payonce",
        );
        assert_eq!(
            shown,
            "postgres://pay:***@db1:5432/payonce,postgres://pay:***@db2:5432/payonce"
        );
        assert_eq!(
            super::redact_url("sqlite://payonce.db"),
            "sqlite://payonce.db"
        );
    }
}
