//! `payonce serve`: API and workers on one listener until SIGTERM / Ctrl-C.

use anyhow::Context;
use payonce_core::order::LatePaymentPolicy;
use payonce_server::crypto::MasterKey;
use payonce_server::{AppState, ServerConfig};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long, env = "PAYONCE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    #[arg(
        long,
        env = "PAYONCE_DATABASE_URL",
        default_value = "sqlite://payonce.db"
    )]
    database_url: String,
    /// The channels file (`payonce sim` writes one for its endpoints).
    #[arg(long, env = "PAYONCE_CHANNELS", default_value = "channels.toml")]
    channels: PathBuf,
    /// Base URL channels are told to send notifications to; defaults to the listen address.
    #[arg(long, env = "PAYONCE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Speeds up every schedule (tests and demos).
    #[arg(long, env = "PAYONCE_TIME_SCALE", default_value_t = 1.0)]
    time_scale: f64,
    /// Bound on every channel call; past it the outcome is unknown and settled by query.
    #[arg(long, env = "PAYONCE_CHANNEL_TIMEOUT_MS", default_value_t = 5000)]
    channel_timeout_ms: u64,
    /// Connections in this instance's PostgreSQL pool (SQLite keeps one writer and four readers).
    #[arg(long, env = "PAYONCE_DATABASE_CONNECTIONS", default_value_t = 10)]
    database_connections: u32,
    /// Do not apply migrations at start.
    #[arg(long, env = "PAYONCE_NO_MIGRATE")]
    no_migrate: bool,
    /// File with the hex master key that encrypts webhook secrets (created if missing).
    /// `PAYONCE_MASTER_KEY` (hex) takes precedence.
    #[arg(long, env = "PAYONCE_MASTER_KEY_FILE", default_value = "payonce.key")]
    master_key_file: PathBuf,
    /// During a master key rotation: the key before it, so accounts sealed under it still open
    /// on this instance while `payonce keys rotate-master` runs.
    #[arg(long, env = "PAYONCE_PREVIOUS_MASTER_KEY_FILE")]
    previous_master_key_file: Option<PathBuf>,
    /// A payment arriving for an expired order: `refund` (default) or `accept`.
    #[arg(long, env = "PAYONCE_LATE_PAYMENT", default_value = "refund", value_parser = ["refund", "accept"])]
    late_payment: String,
    /// Bearer token of the admin API (`/admin/v1/…`); without it the admin API answers 401.
    #[arg(long, env = "PAYONCE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Active-query schedules replacing the defaults, seconds after prepay:
    /// `wechatpay=10,20,30,60;unionpay=300,600,1800`.
    /// When each channel's bill of yesterday is ready, Beijing time (`wechatpay=10:00,alipay=09:30,unionpay=09:00`):
    /// the reconciliation worker runs it then. Off when not given.
    #[arg(long, env = "PAYONCE_RECONCILE_AT", value_parser = payonce_server::state::parse_reconcile_at)]
    reconcile_at: Option<std::collections::BTreeMap<payonce_core::ChannelName, u32>>,
    #[arg(long, env = "PAYONCE_QUERY_SCHEDULE", value_parser = payonce_server::state::parse_query_schedules)]
    query_schedule: Option<std::collections::BTreeMap<payonce_core::ChannelName, Vec<u64>>>,
    /// Redis, as an optional accelerator (cross-instance coalescing of duplicate prepays). The
    /// database stays the arbiter; if Redis is down, payonce carries on without it.
    #[arg(long, env = "PAYONCE_REDIS_URL")]
    redis_url: Option<String>,
    /// RabbitMQ for apps whose sink is `rabbitmq` (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`).
    #[arg(long, env = "PAYONCE_RABBITMQ_URL", hide_env_values = true)]
    rabbitmq_url: Option<String>,
    #[arg(
        long,
        env = "PAYONCE_RABBITMQ_EXCHANGE",
        default_value = "payonce.events"
    )]
    rabbitmq_exchange: String,
    /// NATS (JetStream) for apps whose sink is `nats` (e.g. `127.0.0.1:4222`).
    #[arg(long, env = "PAYONCE_NATS_URL")]
    nats_url: Option<String>,
    #[arg(long, env = "PAYONCE_NATS_STREAM", default_value = "PAYONCE_EVENTS")]
    nats_stream: String,
    #[arg(
        long,
        env = "PAYONCE_NATS_SUBJECT_PREFIX",
        default_value = "payonce.events"
    )]
    nats_subject_prefix: String,
    /// Let webhooks reach loopback, private, link-local and other internal addresses (a local
    /// setup whose receiver runs on this machine). Off by default: in production payonce refuses
    /// them at connect time, DNS rebinding included.
    #[arg(long, env = "PAYONCE_ALLOW_PRIVATE_WEBHOOKS")]
    allow_private_webhooks: bool,
    /// Per-app limit on the business API, per instance: `RATE/s[,burst=N]` or `off`. Over it:
    /// `429 rate_limited` with `Retry-After`.
    #[arg(long, env = "PAYONCE_RATE_LIMIT", default_value = "1000/s,burst=2000", value_parser = payonce_server::gateway::ratelimit::parse_rate_setting)]
    rate_limit: payonce_server::gateway::ratelimit::RateSetting,
    /// Proxies (addresses or CIDR blocks, comma-separated) whose `X-Forwarded-For` is believed.
    #[arg(long, env = "PAYONCE_TRUSTED_PROXIES", default_value = "", value_parser = payonce_server::gateway::ratelimit::parse_proxy_list)]
    trusted_proxies: payonce_server::gateway::ratelimit::ProxyList,
    /// Wrong admin (console sign-in, `/admin/v1`) or metrics tokens one client address may send
    /// in 10 minutes; past it everything from there on that surface is refused (`429`), the
    /// right token too, until the window passes. Notifications have their own budget.
    #[arg(long, env = "PAYONCE_AUTH_FAILURES", default_value_t = 10)]
    auth_failures: usize,
    /// A connection that has not sent a request's headers within this many seconds is closed
    /// (slow clients, idle keep-alive connections).
    #[arg(long, env = "PAYONCE_HEADER_READ_TIMEOUT_SECS", default_value_t = 30)]
    header_read_timeout_secs: u64,
    /// A request must arrive whole — headers and body — within this many seconds of its first
    /// byte; past it `408 request_timeout` and the connection is closed. No load-shedding permit
    /// is held while a request arrives, so slow senders cannot starve complete requests.
    #[arg(long, env = "PAYONCE_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    request_timeout_secs: u64,
    /// Connections held at once; past it the idlest or slowest-sending one makes room, or, when
    /// all are handling requests, newcomers wait in the kernel's backlog.
    #[arg(long, env = "PAYONCE_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// Business-API requests in flight at once; past it `503 overloaded` with `Retry-After`
    /// (notifications and health checks have their own budget).
    #[arg(long, env = "PAYONCE_MAX_IN_FLIGHT", default_value_t = 512)]
    max_in_flight: usize,
    /// Require `Authorization: Bearer <token>` on `/metrics`. Without it (or
    /// `--metrics-public`) `/metrics` is closed: it names every app and its traffic.
    #[arg(long, env = "PAYONCE_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Serve `/metrics` to anyone, without a token (a scraper on a private network only).
    #[arg(long, env = "PAYONCE_METRICS_PUBLIC", conflicts_with = "metrics_token")]
    metrics_public: bool,
    /// Days the channel messages of the order timeline keep their content (payer identifiers
    /// inside); the verdicts are kept.
    #[arg(long, env = "PAYONCE_MESSAGE_RETENTION_DAYS", default_value_t = 90)]
    message_retention_days: u64,
    /// Seconds between webhook attempts, comma-separated (default: WeChat Pay's own schedule,
    /// 15 retries over 24 h 40 min); past the last, the event is `failed`.
    #[arg(long, env = "PAYONCE_WEBHOOK_SCHEDULE", value_parser = parse_schedule)]
    webhook_schedule: Option<Schedule>,
    /// Export spans over OTLP/HTTP (protobuf) to this collector, e.g. `http://127.0.0.1:4318`
    /// (`/v1/traces` is added). Off when not given.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Hours a console sign-in lasts.
    #[arg(long, env = "PAYONCE_CONSOLE_SESSION_HOURS", default_value_t = 8)]
    console_session_hours: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "PAYONCE_BODY_LIMIT", default_value_t = 64 * 1024)]
    body_limit: usize,
}

pub fn master_key(file: &Path) -> anyhow::Result<MasterKey> {
    match std::env::var("PAYONCE_MASTER_KEY") {
        Ok(hexkey) => Ok(MasterKey::from_hex(&hexkey)?),
        Err(_) => Ok(MasterKey::load_or_create(file)?),
    }
}

/// Gives memory freed after a burst (thousands of connections, a storm of 429s) back to the
/// system. glibc's allocator keeps freed pages in its per-thread arenas indefinitely, so RSS
/// would stay at the storm's peak; `malloc_trim` returns what is free. Cheap when there is
/// little to return.
fn spawn_memory_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            // SAFETY: malloc_trim only releases free memory held by the allocator; it touches
            // no live allocation and is safe to call from any thread at any time.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    });
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    spawn_memory_trimmer();
    let bind_to = tokio::net::lookup_host(&args.listen)
        .await
        .with_context(|| format!("resolve {}", args.listen))?
        .next()
        .with_context(|| format!("{} names no address", args.listen))?;
    let listener =
        payonce_server::listen(bind_to).with_context(|| format!("bind {}", args.listen))?;
    let addr = listener.local_addr()?;
    // The first line, so a supervisor (or a test) can bind port 0 and learn the port.
    println!("listening on {addr}");
    std::io::stdout().flush()?;

    let store = payonce_store::open_pooled(
        &args.database_url,
        !args.no_migrate,
        args.database_connections,
    )
    .await
    .with_context(|| format!("open database {}", crate::redact_url(&args.database_url)))?;
    let timeout = Duration::from_millis(args.channel_timeout_ms);
    let clock: std::sync::Arc<dyn payonce_core::Clock> =
        std::sync::Arc::new(payonce_core::SystemClock);
    let channels =
        payonce_channels::ChannelsConfig::load(&args.channels)?.build(timeout, clock.clone())?;
    let config = ServerConfig {
        public_url: args.public_url.unwrap_or_else(|| format!("http://{addr}")),
        channel_timeout: timeout,
        body_limit: args.body_limit,
        time_scale: args.time_scale,
        late_payment: if args.late_payment == "accept" {
            LatePaymentPolicy::Accept
        } else {
            LatePaymentPolicy::Refund
        },
        admin_token: args.admin_token,
        query_schedules: args.query_schedule.unwrap_or_default(),
        reconcile_at: args.reconcile_at.unwrap_or_default(),
        allow_private_webhooks: args.allow_private_webhooks,
        rate_limit: args.rate_limit.0,
        header_read_timeout: Duration::from_secs(args.header_read_timeout_secs.max(1)),
        request_timeout: Duration::from_secs(args.request_timeout_secs.max(1)),
        max_connections: args.max_connections,
        max_in_flight: args.max_in_flight,
        metrics_token: args.metrics_token,
        metrics_public: args.metrics_public,
        trusted_proxies: args.trusted_proxies.0,
        auth_failures: args.auth_failures.max(1),
        message_retention: Duration::from_secs(args.message_retention_days * 24 * 3600),
        console_session_ttl: Duration::from_secs(args.console_session_hours.max(1) * 3600),
        webhook_schedule: args
            .webhook_schedule
            .map(|s| s.0)
            .unwrap_or_else(|| ServerConfig::default().webhook_schedule),
        ..ServerConfig::default()
    };
    let key = master_key(&args.master_key_file)?;
    let sink_config = payonce_server::sinks::SinkConfig {
        rabbitmq: args
            .rabbitmq_url
            .clone()
            .map(|u| (u, args.rabbitmq_exchange.clone())),
        nats: args.nats_url.clone().map(|u| {
            (
                u,
                args.nats_stream.clone(),
                args.nats_subject_prefix.clone(),
            )
        }),
    };
    let sinks = payonce_server::sinks::Sinks::from_config(&sink_config).await?;
    // The database knows the file's accounts (apps are bound to them by name, the admin API
    // lists them); only public facts are recorded.
    payonce_server::engine::accounts::record_file_accounts(store.as_ref(), &channels, clock.now())
        .await
        .context("record the channel accounts of the channels file")?;
    let mut state = AppState::new(store, clock, channels, config, key).with_sinks(sinks);
    if let Some(file) = &args.previous_master_key_file {
        state = state.with_previous_master_key(MasterKey::from_hex(
            &std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?,
        )?);
    }
    // The accounts added through the admin API, before the first request.
    payonce_server::engine::accounts::reload(&state, true)
        .await
        .context("load the channel accounts of the database")?;
    if let Some(url) = &args.redis_url {
        match payonce_server::gateway::accelerator::Accelerator::connect(url, state.clock.clone())
            .await
        {
            Ok(acc) => {
                tracing::info!("redis accelerator on");
                state = state.with_redis(acc);
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis unreachable: running without the accelerator")
            }
        }
    }
    tracing::info!(%addr, "payonce serving");
    payonce_server::run(listener, state, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// A list of waits (one clap value: a bare `Vec` would be taken as many).
#[derive(Clone, Debug)]
struct Schedule(Vec<Duration>);

/// `15,15,30,180` → those waits in seconds (at least one, each 1 s to 7 days).
fn parse_schedule(s: &str) -> Result<Schedule, String> {
    let waits = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=7 * 24 * 3600).contains(n))
                .map(Duration::from_secs)
                .ok_or_else(|| format!("{p:?} is not a number of seconds (1 to 604800)"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if waits.is_empty() {
        Err("at least one wait".into())
    } else {
        Ok(Schedule(waits))
    }
}
