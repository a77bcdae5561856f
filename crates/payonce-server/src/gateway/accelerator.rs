//! Redis as an accelerator, never an arbiter: with `PAYONCE_REDIS_URL`, concurrent duplicate
//! prepays of one order across instances queue behind one leader *before* they reach the
//! database, instead of all polling it. Correctness never depends on it: the leader's key
//! expires on its own if its instance dies, every follower re-reads the database afterwards, and
//! the partial unique index still decides who creates the channel order. Any Redis failure
//! simply falls back to the database path.
//!
//! The same connection holds the per-app rate-limit buckets, so that N instances give an app
//! its rate once, not N times (a GCRA bucket in one key, timed by Redis's own clock so that
//! instances' clocks need not agree). Redis unreachable → each instance's own bucket.

use crate::gateway::waiting::{Deadline, Waits};
use payonce_core::{Clock, Timestamp};
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::time::Duration;

pub struct Accelerator {
    conn: ConnectionManager,
    /// Identifies this instance's keys, so it only ever deletes its own.
    token: String,
    /// After a failed call, Redis is left alone for a while (per use: rate limits, prepay
    /// leadership): a request must not wait on a dead Redis, one timeout per request.
    rate_pause: Pause,
    lead_pause: Pause,
    /// `TAKE_TOKEN`, hashed once (sent by EVALSHA, loaded on first use).
    rate_script: redis::Script,
    /// The server's clock: pauses are timed by it, like every wait of the engine and gateway.
    clock: Arc<dyn Clock>,
}

/// How long a Redis call may take before the instance goes on without it (its own rate
/// buckets; the database path for prepays).
const RATE_CALL_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the instance leaves Redis alone after it failed.
const RATE_PAUSE: Duration = Duration::from_secs(2);

/// Deletes the key only if it still holds our token (another leader may own it by now).
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// GCRA: the key holds the bucket's "theoretical arrival time" in µs of Redis's clock. A
/// request may pass while that time is at most `burst` intervals ahead of now; it pushes the
/// time one interval on. Answers 0 (pass) or the µs to wait.
const TAKE_TOKEN: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if now < allow_at then return allow_at - now end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0
"#;

/// "Redis failed just now: leave it alone until then."
#[derive(Default)]
struct Pause(std::sync::Mutex<Option<Timestamp>>);

impl Pause {
    fn active(&self, now: Timestamp) -> bool {
        self.0.lock().unwrap().is_some_and(|until| now < until)
    }

    /// Starts (or extends) the pause; `true` if it was not already running (log once).
    fn start(&self, now: Timestamp) -> bool {
        let mut until = self.0.lock().unwrap();
        let first = !until.is_some_and(|u| now < u);
        *until = Some(now + RATE_PAUSE);
        first
    }
}

/// Why a bounded Redis call gave no answer (logged; the caller falls back to the database or
/// this instance's buckets).
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer in time")]
    Timeout,
}

/// A Redis call bounded by `RATE_CALL_TIMEOUT`; a timeout is an error like any other.
async fn bounded<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(RATE_CALL_TIMEOUT, call).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(CallError::Timeout),
    }
}

fn count(op: &'static str, outcome: &'static str) {
    metrics::counter!("payonce_redis_total", "op" => op, "outcome" => outcome).increment(1);
}

impl Accelerator {
    pub async fn connect(url: &str, clock: Arc<dyn Clock>) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let conn = tokio::time::timeout(Duration::from_secs(3), client.get_connection_manager())
            .await
            .map_err(|_| {
                redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "redis connect timed out",
                ))
            })??;
        Ok(Accelerator {
            conn,
            token: payonce_core::EventId::new().as_str()[4..].to_owned(),
            rate_pause: Pause::default(),
            lead_pause: Pause::default(),
            rate_script: redis::Script::new(TAKE_TOKEN),
            clock,
        })
    }

    fn key(order_id: &str) -> String {
        format!("payonce:prepay:{order_id}")
    }

    /// `Some(true)`: we lead this order's prepay; `Some(false)`: another request (on any
    /// instance) does; `None`: Redis did not answer — go straight to the database.
    pub async fn try_lead(&self, order_id: &str, ttl: Duration) -> Option<bool> {
        // A Redis that failed a moment ago is left alone: the database path needs no leader.
        if self.lead_pause.active(self.clock.now()) {
            return None;
        }
        let mut c = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(Self::key(order_id))
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64);
        match bounded(cmd.query_async::<Option<String>>(&mut c)).await {
            Ok(Some(_)) => {
                count("lead", "leader");
                Some(true)
            }
            Ok(None) => {
                count("lead", "follower");
                Some(false)
            }
            Err(e) => {
                count("lead", "error");
                if self.lead_pause.start(self.clock.now()) {
                    tracing::warn!(error = %e, "redis unavailable; prepays go straight to the database for a while");
                }
                None
            }
        }
    }

    /// Takes one token of `app`'s shared bucket: `Some(Ok)` pass, `Some(Err(wait))` over the
    /// rate, `None` Redis did not answer (the caller uses its own bucket).
    pub async fn take_token(
        &self,
        app: &str,
        spec: crate::gateway::ratelimit::RateSpec,
    ) -> Option<Result<(), Duration>> {
        if self.rate_pause.active(self.clock.now()) {
            return None;
        }
        let mut c = self.conn.clone();
        let interval_us = 1_000_000 / u64::from(spec.per_second.max(1));
        let mut invocation = self.rate_script.prepare_invoke();
        invocation
            .key(format!("payonce:rate:{app}"))
            .arg(interval_us.max(1))
            .arg(spec.burst);
        match bounded(invocation.invoke_async::<u64>(&mut c)).await {
            Ok(0) => Some(Ok(())),
            Ok(wait_us) => Some(Err(Duration::from_micros(wait_us))),
            Err(e) => {
                count("rate", "error");
                if self.rate_pause.start(self.clock.now()) {
                    tracing::warn!(error = %e, "redis unavailable; rate-limiting with this instance's buckets for a while");
                }
                None
            }
        }
    }

    pub async fn release(&self, order_id: &str) {
        let mut c = self.conn.clone();
        let r: redis::RedisResult<i64> = redis::Script::new(RELEASE)
            .key(Self::key(order_id))
            .arg(&self.token)
            .invoke_async(&mut c)
            .await;
        if r.is_err() {
            count("release", "error");
        }
    }

    /// Waits until the leader is done (its key gone) or `deadline`, through the one way to
    /// wait (`waiting`): another instance's leader cannot signal here, so the key is re-read on
    /// the waiter's backoff; a Redis error ends the wait (the database path needs no leader).
    pub async fn wait_for_leader(&self, order_id: &str, waits: &Waits, deadline: &Deadline) {
        let key = Self::key(order_id);
        let _ = waits
            .until(&key, deadline, || {
                let mut c = self.conn.clone();
                let key = key.clone();
                async move {
                    let exists: redis::RedisResult<bool> =
                        redis::cmd("EXISTS").arg(key).query_async(&mut c).await;
                    Ok::<_, std::convert::Infallible>(match exists {
                        Ok(true) => None,
                        _ => Some(()),
                    })
                }
            })
            .await;
    }
}
