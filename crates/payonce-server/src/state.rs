//! `AppState`: everything a handler or worker needs, passed explicitly — no globals but the
//! metrics recorder, which the `metrics` crate makes process-wide.

use crate::crypto::MasterKey;
use crate::gateway::waiting::Waits;
use metrics_exporter_prometheus::PrometheusHandle;
use payonce_channels::ChannelRegistry;
use payonce_core::Clock;
use payonce_core::order::LatePaymentPolicy;
use payonce_store::Store;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[derive(Clone)]
pub struct ServerConfig {
    /// The base URL channels are told to notify (`{public_url}/notify/{channel}`).
    pub public_url: String,
    /// Bound on every channel call; past it the outcome is `unknown`.
    pub channel_timeout: Duration,
    /// Largest request body accepted.
    pub body_limit: usize,
    /// Every schedule runs this many times faster (tests, demo).
    pub time_scale: f64,
    pub late_payment: LatePaymentPolicy,
    /// How long an idempotency key and its stored response are kept.
    pub idempotency_retention: Duration,
    /// Bearer token of the admin API; without one the admin API is closed.
    pub admin_token: Option<String>,
    /// Run the background workers (tests of the API alone may turn them off).
    pub workers: bool,
    /// Waits between webhook attempts (before jitter and time scale); past the last, `failed`.
    pub webhook_schedule: Vec<Duration>,
    /// Bound on one webhook POST.
    pub webhook_timeout: Duration,
    /// Let webhooks reach loopback / private / link-local addresses (local setups, tests).
    /// Off in production: payonce must not be a proxy into its own network.
    pub allow_private_webhooks: bool,
    /// Per-app limit on the business API (`None`: unlimited). Per instance.
    pub rate_limit: Option<crate::gateway::ratelimit::RateSpec>,
    /// A connection that has not sent a request's headers within this is closed (slow clients,
    /// idle keep-alive connections).
    pub header_read_timeout: Duration,
    /// A request must arrive whole — headers and body — within this of its first byte; past it
    /// `408` and the connection is closed. No permit is held meanwhile.
    pub request_timeout: Duration,
    /// Connections held at once. Past it the one slowest to send its request (or idlest) is
    /// closed to make room; when every one is handling a request, newcomers wait in the
    /// kernel's backlog until one ends. Each held connection costs ~30 KiB while its request
    /// waits, so this bounds the memory a burst can take (at 1,024 a bench's burst of 4,000
    /// notifications peaked at 77 MiB instead of 130, but was paid at a fifth of the rate).
    pub max_connections: usize,
    /// Business-API requests in flight at once; past it `503 overloaded` with `Retry-After`.
    /// Notifications and health checks have their own budget, so they stay answerable.
    pub max_in_flight: usize,
    /// When set, `/metrics` requires `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    /// Without a token, `/metrics` is open only when this says so: it names every app and its
    /// traffic, which is nobody else's business.
    pub metrics_public: bool,
    /// Wrong admin or metrics tokens one client address may send in 10 minutes; past it every
    /// attempt from there is refused (`429`), the right token too, until the window passes.
    pub auth_failures: usize,
    /// Peers whose `X-Forwarded-For` is believed (load balancers, reverse proxies).
    pub trusted_proxies: Vec<crate::gateway::ratelimit::Cidr>,
    /// Active-query schedules (seconds after prepay) that replace a channel's default.
    pub query_schedules: std::collections::BTreeMap<payonce_core::ChannelName, Vec<u64>>,
    /// When each channel's bill of yesterday is ready, in minutes after midnight in Beijing:
    /// the reconciliation worker runs it then, and again until it completes. Empty: off.
    pub reconcile_at: std::collections::BTreeMap<payonce_core::ChannelName, u32>,
    /// How long a checkout link lives at most (never past its order's expiry).
    pub checkout_link_ttl: Duration,
    /// How long the channel messages kept for the order timeline keep their content (it holds
    /// payer identifiers: openid, buyer_logon_id, card numbers); the verdicts stay.
    pub message_retention: Duration,
    /// How long a console sign-in lasts.
    pub console_session_ttl: Duration,
}

/// Printable without the admin token.
impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("public_url", &self.public_url)
            .field("channel_timeout", &self.channel_timeout)
            .field("time_scale", &self.time_scale)
            .field("late_payment", &self.late_payment)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            public_url: "http://127.0.0.1:8080".into(),
            channel_timeout: Duration::from_secs(5),
            body_limit: 64 * 1024,
            time_scale: 1.0,
            late_payment: LatePaymentPolicy::Refund,
            idempotency_retention: Duration::from_secs(48 * 3600),
            admin_token: None,
            workers: true,
            query_schedules: Default::default(),
            reconcile_at: Default::default(),
            checkout_link_ttl: Duration::from_secs(30 * 60),
            message_retention: Duration::from_secs(90 * 24 * 3600),
            console_session_ttl: Duration::from_secs(8 * 3600),
            // WeChat Pay's own notification schedule: 15 retries over 24 h 40 min.
            webhook_schedule: [
                15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600,
                21600,
            ]
            .into_iter()
            .map(Duration::from_secs)
            .collect(),
            webhook_timeout: Duration::from_secs(10),
            allow_private_webhooks: false,
            rate_limit: Some(crate::gateway::ratelimit::RateSpec {
                per_second: 1000,
                burst: 2000,
            }),
            trusted_proxies: Vec::new(),
            auth_failures: 10,
            metrics_token: None,
            metrics_public: false,
            header_read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_in_flight: 512,
        }
    }
}

/// A `--query-schedule` or `--reconcile-at` value that does not read; the message is what clap
/// shows after the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// A part without `=` (the message says what was expected).
    #[error("expected {expected}: {part}")]
    Part {
        expected: &'static str,
        part: String,
    },
    #[error(transparent)]
    Channel(#[from] payonce_core::ParseError),
    #[error("not a number of seconds: {0}")]
    Seconds(String),
    #[error("{0}: the schedule must be non-empty and increasing")]
    NotIncreasing(payonce_core::ChannelName),
    #[error("expected HH:MM: {0}")]
    Time(String),
    #[error("not an hour: {0}")]
    Hour(String),
    #[error("not a minute: {0}")]
    Minute(String),
    #[error("not a time of day: {0}")]
    TimeOfDay(String),
}

/// Parses `wechatpay=10,20,30;unionpay=300,600` into per-channel schedules.
pub fn parse_query_schedules(
    s: &str,
) -> Result<std::collections::BTreeMap<payonce_core::ChannelName, Vec<u64>>, ScheduleError> {
    let mut out = std::collections::BTreeMap::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (ch, list) = part.split_once('=').ok_or_else(|| ScheduleError::Part {
            expected: "CHANNEL=SECS,…",
            part: part.to_owned(),
        })?;
        let ch = payonce_core::ChannelName::parse(ch.trim())?;
        let secs: Vec<u64> = list
            .split(',')
            .map(|x| {
                x.trim()
                    .parse::<u64>()
                    .map_err(|_| ScheduleError::Seconds(x.to_owned()))
            })
            .collect::<Result<_, _>>()?;
        if secs.is_empty() || secs.windows(2).any(|w| w[0] > w[1]) {
            return Err(ScheduleError::NotIncreasing(ch));
        }
        out.insert(ch, secs);
    }
    Ok(out)
}

/// `wechatpay=10:00,alipay=09:30`: when each channel's bill of yesterday is ready (Beijing time).
pub fn parse_reconcile_at(
    s: &str,
) -> Result<std::collections::BTreeMap<payonce_core::ChannelName, u32>, ScheduleError> {
    let mut out = std::collections::BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (ch, at) = part.split_once('=').ok_or_else(|| ScheduleError::Part {
            expected: "CHANNEL=HH:MM",
            part: part.to_owned(),
        })?;
        let ch = payonce_core::ChannelName::parse(ch.trim())?;
        let (h, m) = at
            .trim()
            .split_once(':')
            .ok_or_else(|| ScheduleError::Time(at.to_owned()))?;
        let (h, m) = (
            h.parse::<u32>()
                .map_err(|_| ScheduleError::Hour(h.to_owned()))?,
            m.parse::<u32>()
                .map_err(|_| ScheduleError::Minute(m.to_owned()))?,
        );
        if h > 23 || m > 59 {
            return Err(ScheduleError::TimeOfDay(at.to_owned()));
        }
        out.insert(ch, h * 60 + m);
    }
    Ok(out)
}

/// Grace added to the channel timeout before a call is presumed dead.
const CALL_GRACE_MS: i64 = 5_000;

impl ServerConfig {
    /// A schedule delay, shortened by the time scale.
    pub fn scaled(&self, d: Duration) -> Duration {
        if self.time_scale > 0.0 {
            d.div_f64(self.time_scale)
        } else {
            d
        }
    }

    /// When to query an active attempt the `n`-th time, counted from its creation (DESIGN.md:
    /// 10 s, 20 s, 30 s, then growing). UnionPay front-end consumes follow UnionPay's advice
    /// (5, 10, 30, 60, 120 min); its 1-2-4-8-16-32 s schedule is for back-end transactions.
    pub fn query_offset(&self, channel: payonce_core::ChannelName, n: usize) -> Duration {
        const DEFAULT: [u64; 10] = [10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600];
        const UNIONPAY: [u64; 5] = [300, 600, 1800, 3600, 7200];
        let table: &[u64] = match self.query_schedules.get(&channel) {
            Some(custom) if !custom.is_empty() => custom,
            _ if channel == payonce_core::ChannelName::Unionpay => &UNIONPAY,
            _ => &DEFAULT,
        };
        let secs = match table.get(n) {
            Some(s) => *s,
            // Past the table: every 30 minutes more, until the order's expiry settles it.
            None => table[table.len() - 1] + 1800 * (n - table.len() + 1) as u64,
        };
        self.scaled(Duration::from_secs(secs))
    }

    /// How long after the `n`-th failed webhook attempt to try again; `None` when the schedule
    /// is exhausted.
    pub fn webhook_retry_after(&self, n: usize) -> Option<Duration> {
        self.webhook_schedule.get(n).map(|d| self.scaled(*d))
    }

    /// Back-end retries (refunds): 1, 2, 4, 8, 16, 32 s, then every 60 s.
    pub fn backoff(&self, n: usize) -> Duration {
        let secs = if n < 6 { 1u64 << n } else { 60 };
        self.scaled(Duration::from_secs(secs))
    }

    /// How long any channel call begun now can last (the client's timeout plus a grace for
    /// scheduling and recording): an attempt still `created` past it lost its caller. The one
    /// "channel timeout + grace" rule.
    pub fn call_deadline(&self) -> Duration {
        self.channel_timeout + Duration::from_millis(CALL_GRACE_MS as u64)
    }

    /// How long a duplicate prepay waits for an in-flight one before answering 409.
    pub fn prepay_wait(&self) -> Duration {
        self.channel_timeout + Duration::from_secs(2)
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// The channel accounts in use now (the file's and the database's).
    pub channels: crate::channels::LiveChannels,
    pub config: Arc<ServerConfig>,
    pub master_key: Arc<MasterKey>,
    /// The master key before a rotation (`--previous-master-key-file`): sealed accounts not yet
    /// re-wrapped still open with it.
    pub previous_master_key: Option<Arc<MasterKey>>,
    /// The one way a request waits for another (turns per order, signals between requests).
    pub waits: Arc<Waits>,
    pub metrics: PrometheusHandle,
    pub sync_limiter: Arc<SyncLimiter>,
    /// Broker sinks for apps whose events do not go to a webhook.
    pub sinks: Arc<crate::sinks::Sinks>,
    /// Optional Redis accelerator (cross-instance coalescing of duplicate prepays).
    pub redis: Option<Arc<crate::gateway::accelerator::Accelerator>>,
    /// Rate-limit buckets (per app; failing notifications per address).
    pub limits: Arc<crate::gateway::ratelimit::Limits>,
    /// Load shedding: permits for business requests, and a separate budget for notifications
    /// and health checks.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    pub priority_in_flight: Arc<tokio::sync::Semaphore>,
    /// The worker loop that stopped unexpectedly (a panic), if any: `/readyz` then fails, so
    /// the orchestrator replaces an instance that no longer does its background work.
    pub failed_worker: Arc<std::sync::Mutex<Option<String>>>,
    /// Abnormal kinds this instance has reported a gauge for (set to 0 once drained).
    pub gauge_labels: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// Apps recently authenticated, by the hash of their secret (`gateway::auth`).
    pub known_apps: Arc<crate::gateway::auth::KnownApps>,
}

impl AppState {
    /// The state of this instance restarted after a crash: the same configuration, key, clock
    /// and sinks, a fresh `store` and `channels`, and nothing else carried over from memory
    /// (turns and waiters, rate buckets, the `?sync` limiter, load-shedding permits, worker health).
    pub fn restarted(&self, store: Arc<dyn Store>, channels: ChannelRegistry) -> Self {
        let config = &self.config;
        AppState {
            store,
            channels: crate::channels::LiveChannels::new(crate::metered::metered(channels)),
            waits: Arc::new(Waits::default()),
            sync_limiter: Arc::new(SyncLimiter::default()),
            limits: Arc::new(crate::gateway::ratelimit::Limits::new(
                config.rate_limit,
                config.trusted_proxies.clone(),
                config.auth_failures,
            )),
            in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(1))),
            priority_in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(64))),
            failed_worker: Arc::new(std::sync::Mutex::new(None)),
            known_apps: Arc::default(),
            ..self.clone()
        }
    }

    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        channels: ChannelRegistry,
        config: ServerConfig,
        master_key: MasterKey,
    ) -> Self {
        let limits = Arc::new(crate::gateway::ratelimit::Limits::new(
            config.rate_limit,
            config.trusted_proxies.clone(),
            config.auth_failures,
        ));
        let metrics = metrics_handle();
        zero_counters(&channels);
        AppState {
            limits,
            in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(1))),
            priority_in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(64))),
            failed_worker: Arc::new(std::sync::Mutex::new(None)),
            gauge_labels: Arc::new(std::sync::Mutex::new(
                ABNORMAL_KINDS.iter().map(|k| k.to_string()).collect(),
            )),
            store,
            clock,
            channels: crate::channels::LiveChannels::new(crate::metered::metered(channels)),
            config: Arc::new(config),
            master_key: Arc::new(master_key),
            previous_master_key: None,
            waits: Arc::new(Waits::default()),
            metrics,
            redis: None,
            sync_limiter: Arc::new(SyncLimiter::default()),
            sinks: Arc::new(crate::sinks::Sinks::default()),
            known_apps: Arc::default(),
        }
    }

    pub fn with_sinks(mut self, sinks: crate::sinks::Sinks) -> Self {
        self.sinks = Arc::new(sinks);
        self
    }

    /// Sealed accounts not yet re-wrapped by `payonce keys rotate-master` open with this one.
    pub fn with_previous_master_key(mut self, key: MasterKey) -> Self {
        self.previous_master_key = Some(Arc::new(key));
        self
    }

    pub fn with_redis(mut self, redis: crate::gateway::accelerator::Accelerator) -> Self {
        self.redis = Some(Arc::new(redis));
        self
    }
}

/// Rate limit of `?sync=true`: one channel query per order per second.
#[derive(Default)]
pub struct SyncLimiter(std::sync::Mutex<std::collections::HashMap<String, i64>>);

impl SyncLimiter {
    pub fn allow(&self, order_id: &str, now: payonce_core::Timestamp) -> bool {
        let mut m = self.0.lock().unwrap();
        if m.len() > 10_000 {
            m.retain(|_, t| *t > now.0 - 1_000);
        }
        match m.get(order_id) {
            Some(t) if *t > now.0 - 1_000 => false,
            _ => {
                m.insert(order_id.to_owned(), now.0);
                true
            }
        }
    }
}

/// Every kind of abnormal item payonce writes: their gauges exist (at 0) from the start.
pub const ABNORMAL_KINDS: [&str; 12] = [
    "notification_account_mismatch",
    "amount_mismatch",
    "unresolved_unknown",
    "refund_abnormal",
    "refund_not_found",
    "refund_unresolved",
    "duplicate_refund_failed",
    "coupon_over_redeemed",
    "reconciliation_missing_at_channel",
    "reconciliation_amount_mismatch",
    "reconciliation_unknown_trade",
    "reconciliation_unknown_refund",
];

/// Counters an alert or the dashboard reads exist at 0 from the start, so `rate()` and
/// `increase()` see the first event and a quiet deployment shows zeros, not "no data".
fn zero_counters(channels: &ChannelRegistry) {
    metrics::counter!("payonce_idempotent_replays_total").absolute(0);
    metrics::counter!("payonce_submission_guard_hits_total").absolute(0);
    metrics::counter!("payonce_rate_limited_total", "kind" => "api").absolute(0);
    for channel in channels.names() {
        metrics::counter!("payonce_duplicate_payments_total", "channel" => channel.as_str(), "source" => "notification").absolute(0);
        // One bill per merchant number: a provider has none.
        for account in channels
            .accounts(channel)
            .iter()
            .filter(|a| a.takes_payments())
        {
            for class in payonce_core::reconciliation::CLASSES {
                metrics::counter!("payonce_reconciliation_items_total", "channel" => channel.as_str(), "account" => account.name.clone(), "class" => class).absolute(0);
            }
        }
    }
}

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            use metrics_exporter_prometheus::Matcher;
            // Latencies and lags as histograms (not summaries): they add up across instances,
            // so the dashboard's quantiles cover the whole deployment.
            const BUCKETS: &[f64] = &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                1800.0, 3600.0,
            ];
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("payonce_channel_call_seconds".into()),
                    BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("payonce_payment_lag_seconds".into()),
                        BUCKETS,
                    )
                })
                .expect("buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours just stays empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use payonce_core::ChannelName;

    #[test]
    fn schedules_default_scale_and_override() {
        let mut c = ServerConfig::default();
        assert_eq!(
            c.query_offset(ChannelName::Wechatpay, 0),
            Duration::from_secs(10)
        );
        assert_eq!(
            c.query_offset(ChannelName::Wechatpay, 2),
            Duration::from_secs(30)
        );
        assert_eq!(
            c.query_offset(ChannelName::Unionpay, 0),
            Duration::from_secs(300)
        );
        c.query_schedules = parse_query_schedules("unionpay=1,2,4").unwrap();
        assert_eq!(
            c.query_offset(ChannelName::Unionpay, 2),
            Duration::from_secs(4)
        );
        c.time_scale = 100.0;
        assert_eq!(
            c.query_offset(ChannelName::Wechatpay, 0),
            Duration::from_millis(100)
        );
        assert!(parse_query_schedules("wechatpay=30,10").is_err());
        assert!(parse_query_schedules("paypal=1").is_err());
    }
}
