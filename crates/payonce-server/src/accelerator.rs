//! Redis as an accelerator, never an arbiter: with `PAYONCE_REDIS_URL`, concurrent duplicate
//! prepays of one order across instances queue behind one leader *before* they reach the
//! database, instead of all polling it. Correctness never depends on it: the leader's key
//! expires on its own if its instance dies, every follower re-reads the database afterwards, and
//! the partial unique index still decides who creates the channel order. Any Redis failure
//! simply falls back to the database path.

use redis::aio::ConnectionManager;
use std::time::{Duration, Instant};

pub struct Accelerator {
    conn: ConnectionManager,
    /// Identifies this instance's keys, so it only ever deletes its own.
    token: String,
}

/// Deletes the key only if it still holds our token (another leader may own it by now).
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

fn count(op: &'static str, outcome: &'static str) {
    metrics::counter!("payonce_redis_total", "op" => op, "outcome" => outcome).increment(1);
}

impl Accelerator {
    pub async fn connect(url: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let conn = tokio::time::timeout(Duration::from_secs(3), client.get_connection_manager())
            .await
            .map_err(|_| redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "redis connect timed out")))??;
        Ok(Accelerator { conn, token: payonce_core::EventId::new().as_str()[4..].to_owned() })
    }

    fn key(order_id: &str) -> String {
        format!("payonce:prepay:{order_id}")
    }

    /// `Some(true)`: we lead this order's prepay; `Some(false)`: another request (on any
    /// instance) does; `None`: Redis did not answer — go straight to the database.
    pub async fn try_lead(&self, order_id: &str, ttl: Duration) -> Option<bool> {
        let mut c = self.conn.clone();
        let r: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(Self::key(order_id))
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut c)
            .await;
        match r {
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
                tracing::warn!(error = %e, "redis unavailable; falling back to the database");
                None
            }
        }
    }

    pub async fn release(&self, order_id: &str) {
        let mut c = self.conn.clone();
        let r: redis::RedisResult<i64> = redis::Script::new(RELEASE).key(Self::key(order_id)).arg(&self.token).invoke_async(&mut c).await;
        if r.is_err() {
            count("release", "error");
        }
    }

    /// Waits until the leader is done (its key gone) or `deadline`.
    pub async fn wait_for_leader(&self, order_id: &str, deadline: Instant) {
        let mut c = self.conn.clone();
        let mut pause = Duration::from_millis(5);
        while Instant::now() < deadline {
            let exists: redis::RedisResult<bool> = redis::cmd("EXISTS").arg(Self::key(order_id)).query_async(&mut c).await;
            match exists {
                Ok(true) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                _ => return,
            }
        }
    }
}
