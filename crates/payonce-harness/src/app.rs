//! `spawn_app`: a payonce server and a channel simulator on random ports, a fresh database and
//! one registered app, plus the small HTTP helpers scenarios are written with.
//!
//! The HTTP helpers are in `requests`; what the invariant checker says, in `verdicts`.

mod requests;
mod verdicts;

use crate::db::{Backend, TestDb};
use payonce_core::{Clock, SystemClock};
use payonce_server::crypto::MasterKey;
use payonce_server::{AppState, ServerConfig};
use payonce_store::Inspect;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Clone)]
pub struct AppOptions {
    /// The test app's channel accounts (`apps create --account`).
    pub accounts: Vec<(payonce_core::ChannelName, String)>,
    /// How many merchants per channel the simulator plays (`payonce sim --merchants`).
    pub sim_merchants: usize,
    /// How many of them the server's `channels.toml` lists (`None`: all).
    pub sim_listed_merchants: Option<usize>,
    pub channel_timeout: Duration,
    pub time_scale: f64,
    /// The test app's webhook URL (none: events are kept, not sent).
    pub webhook_url: Option<String>,
    /// Replaces the webhook retry schedule (before time scaling).
    pub webhook_schedule: Option<Vec<Duration>>,
    /// Replaces the bound on one webhook POST (not time-scaled).
    pub webhook_timeout: Option<Duration>,
    /// Broker sinks, and which one the test app's events go to.
    pub sinks: payonce_server::sinks::SinkConfig,
    pub sink: Option<String>,
    /// What a payment for an expired order does.
    pub late_payment: payonce_core::order::LatePaymentPolicy,
    /// One clock for payonce, its connectors and the simulated channels (virtual-time tests
    /// hand in a `ManualClock`); the system clock by default.
    pub clock: Option<Arc<dyn payonce_core::Clock>>,
    /// WeChat Pay in certificate mode (platform certificates, downloaded on rotation) instead of
    /// the platform public key.
    pub wechat_certificate_mode: bool,
    pub allow_private_webhooks: bool,
    /// The per-app API limit (`None`: unlimited).
    pub rate_limit: Option<payonce_server::gateway::ratelimit::RateSpec>,
    pub header_read_timeout: Duration,
    /// Headers and body of a request must arrive within this of its first byte.
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_in_flight: usize,
    pub metrics_token: Option<String>,
    /// `/metrics` without a token. On for the harness's own servers (loopback, a test's or the
    /// demo's); `serve` keeps it closed unless told.
    pub metrics_public: bool,
    /// Peers whose `X-Forwarded-For` is believed (tests speak for many addresses through it).
    pub trusted_proxies: Vec<payonce_server::gateway::ratelimit::Cidr>,
    /// Redis (the prepay accelerator and the shared rate-limit buckets).
    pub redis_url: Option<String>,
    /// `PAYONCE_ADMIN_TOKEN` of the app (tests know it; the demo makes a random one).
    pub admin_token: String,
    /// The simulator's seed (its random choices: faults, numbers); `None`: a fresh one.
    pub sim_seed: Option<u64>,
    /// Run the background workers. Virtual-time tests turn them off and call
    /// `TestApp::run_workers` after each clock step instead.
    pub workers: bool,
    /// `--reconcile-at` (e.g. `sandbox=10:00`); none by default.
    pub reconcile_at: Option<String>,
    /// Virtual time: this manual clock is the app's (engine, connectors, simulator), the
    /// workers are off, and the waiting helpers (`wait_order`, `settled_violations`) move the
    /// clock and run a worker round instead of sleeping (`AppOptions::frozen`).
    pub frozen: Option<payonce_core::ManualClock>,
}

impl AppOptions {
    /// A test on virtual time: a manual clock starting now, no background workers, schedules
    /// unscaled (a 10 s query step is 10 s of the clock, moved by the test or its helpers).
    pub fn frozen() -> AppOptions {
        let now = SystemClock.now();
        AppOptions {
            frozen: Some(payonce_core::ManualClock::at(now.0)),
            time_scale: 1.0,
            workers: false,
            ..AppOptions::default()
        }
    }

    /// A test on real time, sped up ×100, its workers in the background: for what only real
    /// time shows (processes and instances racing, brokers, restarts, wall-clock guards).
    pub fn real_time() -> AppOptions {
        AppOptions::default()
    }
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            accounts: Vec::new(),
            sim_merchants: 1,
            sim_listed_merchants: None,
            channel_timeout: Duration::from_secs(5),
            time_scale: 100.0,
            webhook_url: None,
            webhook_schedule: None,
            webhook_timeout: None,
            sinks: Default::default(),
            sink: None,
            late_payment: Default::default(),
            clock: None,
            wechat_certificate_mode: false,
            allow_private_webhooks: true,
            rate_limit: ServerConfig::default().rate_limit,
            header_read_timeout: ServerConfig::default().header_read_timeout,
            request_timeout: ServerConfig::default().request_timeout,
            max_connections: ServerConfig::default().max_connections,
            max_in_flight: ServerConfig::default().max_in_flight,
            metrics_token: None,
            metrics_public: true,
            trusted_proxies: Vec::new(),
            redis_url: None,
            admin_token: "test-admin-token".into(),
            sim_seed: None,
            workers: true,
            reconcile_at: None,
            frozen: None,
        }
    }
}

/// PostgreSQL connections per spawned app: the suites run dozens of apps beside `serve`
/// processes against one server of 100 connections (a test's load is a few requests at once).
const TEST_PG_CONNECTIONS: u32 = 4;

/// One HTTP notification: headers and body (`payonce_testkit::forge` makes them).
#[derive(Debug, Clone)]
pub struct Forged {
    pub headers: Vec<(String, String)>,
    pub content_type: &'static str,
    pub body: String,
}

pub struct TestApp {
    pub base: String,
    pub state: AppState,
    pub store: Arc<dyn Inspect>,
    pub sim: payonce_sim::SimHandle,
    pub secret: String,
    pub app_id: String,
    /// The app's `whsec_` webhook signing secret.
    pub webhook_secret: String,
    pub http: reqwest::Client,
    pub db: TestDb,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The manual clock of a test on virtual time (`AppOptions::frozen`).
    pub frozen: Option<payonce_core::ManualClock>,
    _sim_dir: crate::scratch::ScratchDir,
}

/// A server on `backend` on virtual time (`AppOptions::frozen`: a manual clock, the workers run
/// by the waiting helpers), or `None` if that backend is unavailable here (see `TestDb::new`).
/// A test whose subject is real time — a crash, several instances, a broker, a database
/// restart, a slow connection — asks for `AppOptions::real_time()` through `spawn_app_with`.
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, AppOptions::frozen()).await
}

pub async fn spawn_app_with(backend: Backend, opts: AppOptions) -> Option<TestApp> {
    let db = TestDb::new(backend).await?;
    Some(spawn_on(db, opts).await)
}

/// A simulator state dir with keys already in it. RSA key and certificate generation is the
/// slowest part of starting a simulator, so every test in a process copies one set of keys
/// (tests need fresh ledgers, not fresh keys).
fn sim_state_dir() -> crate::scratch::ScratchDir {
    static TEMPLATE: std::sync::OnceLock<crate::scratch::ScratchDir> = std::sync::OnceLock::new();
    let template = TEMPLATE.get_or_init(|| {
        let dir = crate::scratch::ScratchDir::new().expect("temp dir");
        payonce_sim::Sim::prepare(
            dir.path(),
            "http://127.0.0.1:0",
            payonce_sim::SimOptions::default(),
        )
        .expect("simulator keys");
        dir
    });
    let dir = crate::scratch::ScratchDir::new().expect("temp dir");
    for entry in std::fs::read_dir(template.path()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

pub async fn spawn_on(db: TestDb, opts: AppOptions) -> TestApp {
    let sim_dir = sim_state_dir();
    // One clock for the engine, the connectors and the simulated channels.
    let clock: Arc<dyn payonce_core::Clock> = match (&opts.frozen, &opts.clock) {
        (Some(frozen), _) => Arc::new(frozen.clone()),
        (None, Some(clock)) => clock.clone(),
        (None, None) => Arc::new(SystemClock),
    };
    let sim_options = payonce_sim::SimOptions {
        clock: clock.clone(),
        seed: opts.sim_seed,
        merchants: opts.sim_merchants,
        listed_merchants: opts.sim_listed_merchants,
    };
    let sim = payonce_sim::start_with(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        sim_dir.path(),
        sim_options,
    )
    .await
    .expect("simulator");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    http.post(format!("{}/sim/faults", sim.base_url()))
        // On virtual time the simulator's own real-time waits (a notification's retries) stay
        // short: its clock is the test's, its pauses are scaled.
        .json(&json!({"time_scale": if opts.frozen.is_some() { 100.0 } else { opts.time_scale }}))
        .send()
        .await
        .unwrap();
    if opts.wechat_certificate_mode {
        let toml = std::fs::read_to_string(&sim.channels_file).unwrap();
        let start = toml.find("platform_public_key_file").unwrap();
        let end = start + toml[start..].find("\n\n").unwrap();
        let toml = format!(
            "{}platform_cert_files = [\"wechatpay_platform_cert.pem\"]{}",
            &toml[..start],
            &toml[end..]
        );
        std::fs::write(&sim.channels_file, toml).unwrap();
        http.post(format!("{}/sim/wechatpay/platform", sim.base_url()))
            .json(&json!({"mode": "certificate"}))
            .send()
            .await
            .unwrap();
    }

    let store = payonce_store::open_inspect_pooled(&db.url, true, TEST_PG_CONNECTIONS)
        .await
        .expect("open store");
    let listener = payonce_server::listen(([127, 0, 0, 1], 0).into()).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let channels = payonce_channels::ChannelsConfig::load(&sim.channels_file)
        .and_then(|c| c.build(opts.channel_timeout, clock.clone()))
        .expect("channels");
    let config = ServerConfig {
        public_url: base.clone(),
        channel_timeout: opts.channel_timeout,
        time_scale: opts.time_scale,
        admin_token: Some(opts.admin_token.clone()),
        late_payment: opts.late_payment,
        // Test receivers listen on 127.0.0.1; one test turns this off to see the refusal.
        allow_private_webhooks: opts.allow_private_webhooks,
        rate_limit: opts.rate_limit,
        header_read_timeout: opts.header_read_timeout,
        request_timeout: opts.request_timeout,
        max_connections: opts.max_connections,
        max_in_flight: opts.max_in_flight,
        metrics_token: opts.metrics_token.clone(),
        metrics_public: opts.metrics_public,
        trusted_proxies: opts.trusted_proxies.clone(),
        webhook_schedule: opts
            .webhook_schedule
            .clone()
            .unwrap_or_else(|| ServerConfig::default().webhook_schedule),
        webhook_timeout: opts
            .webhook_timeout
            .unwrap_or_else(|| ServerConfig::default().webhook_timeout),
        workers: opts.workers && opts.frozen.is_none(),
        reconcile_at: opts
            .reconcile_at
            .as_deref()
            .map(|s| payonce_server::state::parse_reconcile_at(s).expect("reconcile_at"))
            .unwrap_or_default(),
        ..ServerConfig::default()
    };
    payonce_server::engine::accounts::record_file_accounts(store.as_ref(), &channels, clock.now())
        .await
        .expect("record channel accounts");
    let (key, _) = MasterKey::random();
    let creds = payonce_server::engine::apps::create_app(
        store.as_ref(),
        &key,
        &SystemClock,
        payonce_server::engine::apps::NewApp {
            name: "test-shop",
            webhook_url: opts.webhook_url.as_deref(),
            sink: opts.sink.as_deref(),
            accounts: &opts.accounts,
            ..Default::default()
        },
    )
    .await
    .expect("app");
    let sinks = payonce_server::sinks::Sinks::from_config(&opts.sinks)
        .await
        .expect("sinks");
    let mut state = AppState::new(store.clone(), clock, channels, config, key).with_sinks(sinks);
    if let Some(url) = &opts.redis_url {
        let redis =
            payonce_server::gateway::accelerator::Accelerator::connect(url, state.clock.clone())
                .await
                .expect("redis");
        state = state.with_redis(redis);
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(payonce_server::run(listener, state.clone(), async move {
        let _ = rx.await;
    }));
    TestApp {
        base,
        state,
        store,
        sim,
        secret: creds.secret,
        webhook_secret: creds.webhook_secret,
        app_id: creds.app_id.to_string(),
        http,
        db,
        server,
        shutdown: Some(tx),
        frozen: opts.frozen.clone(),
        _sim_dir: sim_dir,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.abort();
    }
}

impl TestApp {
    /// An in-process crash and restart: the server task is aborted — its workers stop, and
    /// what it held in memory (order locks, rate buckets, connector caches, its pool) is gone —
    /// then a new instance starts on the same address, database and channels, as a supervisor
    /// would start it. (Requests already inside a handler may still finish against the database,
    /// like another instance's would; a real SIGKILL is `tests/crash.rs`.)
    pub async fn crash_and_restart(&mut self) {
        self.crash_and_restart_with(|_| {}).await
    }

    /// `crash_and_restart`, the new instance started with its configuration changed (a new
    /// admin token, say: what an operator's restart after a token change does).
    pub async fn crash_and_restart_with(&mut self, change: impl FnOnce(&mut ServerConfig)) {
        self.server.abort();
        let _ = (&mut self.server).await;
        let store = payonce_store::open_inspect_pooled(&self.db.url, false, TEST_PG_CONNECTIONS)
            .await
            .expect("reopen the store");
        let channels = payonce_channels::ChannelsConfig::load(&self.sim.channels_file)
            .and_then(|c| c.build(self.state.config.channel_timeout, self.state.clock.clone()))
            .expect("channels");
        let mut state = self.state.restarted(store.clone(), channels);
        let mut config = (*state.config).clone();
        change(&mut config);
        state.config = Arc::new(config);
        let addr = self.base.trim_start_matches("http://").to_owned();
        let listener = payonce_server::listen(addr.parse().expect("an address"))
            .expect("the crashed instance's address");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.server = tokio::spawn(payonce_server::run(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        (self.state, self.store, self.shutdown) = (state, store, Some(tx));
    }

    /// One round of every worker, now, by the app's clock (virtual-time tests: `workers: false`,
    /// move the `ManualClock`, then call this — a schedule step without a sleep).
    pub async fn run_workers(&self) {
        payonce_server::workers::run_round(&self.state, "test-driver").await;
    }

    /// On virtual time: moves the clock by `by`, then runs one round of every worker.
    pub async fn tick(&self, by: Duration) {
        let clock = self
            .frozen
            .as_ref()
            .expect("tick moves the clock of an app on virtual time (AppOptions::frozen)");
        clock.advance_ms(i64::try_from(by.as_millis()).unwrap_or(i64::MAX));
        self.run_workers().await;
    }

    /// How a waiting helper waits up to `limit`: on real time it sleeps between its checks; on
    /// virtual time it moves the clock and runs the workers instead, up to `limit` × 100 of the
    /// clock — what a wait of `limit` meant for the ×100 real-time tests.
    pub fn waiting(&self, limit: Duration) -> Waiting<'_> {
        Waiting {
            app: self,
            end: tokio::time::Instant::now() + limit,
            virtual_left: limit.saturating_mul(100).max(TICK),
            ticks: 0,
        }
    }
}

/// One wait of a helper (`TestApp::waiting`).
pub struct Waiting<'a> {
    app: &'a TestApp,
    end: tokio::time::Instant,
    virtual_left: Duration,
    ticks: u32,
}

/// A virtual-time wait's first step: a second of the clock per worker round. What is awaited
/// usually comes within a few (an answer, a notification, a query due in seconds); a long wait
/// is one for a schedule step minutes away, so the step grows by a second every ten rounds, up
/// to `MAX_TICK` — far inside every grace the checkers allow — instead of hundreds of rounds.
const TICK: Duration = Duration::from_secs(1);
const MAX_TICK: Duration = Duration::from_secs(10);

impl Waiting<'_> {
    /// Lets time pass before the next check (`pause` of real time, or one step of virtual
    /// time); `false` once the wait is over.
    pub async fn pass(&mut self, pause: Duration) -> bool {
        if self.app.frozen.is_some() {
            if self.virtual_left.is_zero() {
                return false;
            }
            let step = (TICK * (1 + self.ticks / 10))
                .min(MAX_TICK)
                .min(self.virtual_left);
            self.ticks += 1;
            self.virtual_left -= step;
            self.app.tick(step).await;
            true
        } else {
            if tokio::time::Instant::now() >= self.end {
                return false;
            }
            tokio::time::sleep(pause).await;
            true
        }
    }
}
