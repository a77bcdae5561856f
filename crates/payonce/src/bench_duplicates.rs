//! `payonce bench`'s duplicate phase beside its yardstick: prepays of one order whose
//! credential is already out (each must be a read, never a write or a lock) against `/healthz`
//! of the same server, at the same number of connections, for the same time — over many
//! connections and over one. The ratio says what exactly-once costs a duplicate; nothing here
//! is asserted.

use hdrhistogram::Histogram;
use payonce_harness::process::ServeProcess;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request kind driven over `connections` for a while: its rate and latencies.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Answers other than the expected one (a duplicate must be a 200 with `reused`).
    pub wrong: u64,
    pub server_cpu_s_per_1000: Option<f64>,
}

pub struct DuplicateFigures {
    pub connections: usize,
    pub healthz: Load,
    pub duplicates: Load,
    pub healthz_one_connection: Load,
    pub duplicates_one_connection: Load,
}

impl DuplicateFigures {
    pub fn json(&self) -> serde_json::Value {
        let load = |l: &Load| {
            json!({"per_s": l.per_s.round(), "p50_ms": l.p50_ms, "p99_ms": l.p99_ms,
                   "wrong_answers": l.wrong, "server_cpu_s_per_1000": l.server_cpu_s_per_1000})
        };
        json!({
            "connections": self.connections,
            "healthz": load(&self.healthz),
            "duplicates": load(&self.duplicates),
            "ratio_duplicates_to_healthz": ratio(self.duplicates.per_s, self.healthz.per_s),
            "healthz_one_connection": load(&self.healthz_one_connection),
            "duplicates_one_connection": load(&self.duplicates_one_connection),
            "p50_duplicate_over_healthz_one_connection":
                ratio(self.duplicates_one_connection.p50_ms, self.healthz_one_connection.p50_ms),
        })
    }

    pub fn print(&self) {
        let line = |what: &str, l: &Load| {
            println!(
                "    {what:<30} {:>8.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   CPU {} s/1,000{}",
                l.per_s,
                l.p50_ms,
                l.p99_ms,
                l.server_cpu_s_per_1000
                    .map(|c| format!("{c:.2}"))
                    .unwrap_or_else(|| "n/a".into()),
                if l.wrong > 0 {
                    format!("   ({} wrong answers)", l.wrong)
                } else {
                    String::new()
                }
            )
        };
        println!("  duplicates of one order (credential out) beside /healthz of the same server:");
        line(
            &format!("/healthz, {} connections", self.connections),
            &self.healthz,
        );
        line(
            &format!("duplicates, {} connections", self.connections),
            &self.duplicates,
        );
        println!(
            "    ratio duplicates ÷ /healthz = {:.3}; p99 ÷ p50 of duplicates = {:.1}",
            ratio(self.duplicates.per_s, self.healthz.per_s),
            ratio(self.duplicates.p99_ms, self.duplicates.p50_ms)
        );
        line("/healthz, 1 connection", &self.healthz_one_connection);
        line("duplicates, 1 connection", &self.duplicates_one_connection);
        println!(
            "    p50 duplicate ÷ p50 /healthz on 1 connection = {:.2}",
            ratio(
                self.duplicates_one_connection.p50_ms,
                self.healthz_one_connection.p50_ms
            )
        );
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// Creates one order, takes its credential, then measures its duplicates and `/healthz` on
/// `connections` connections and on one, `secs` each.
pub async fn measure(
    server: &ServeProcess,
    secret: &str,
    run_id: &str,
    connections: usize,
    secs: f64,
) -> anyhow::Result<DuplicateFigures> {
    let base = server.base_url();
    let many = client(connections)?;
    let order: serde_json::Value = many
        .post(format!("{base}/v1/orders"))
        .bearer_auth(secret)
        .json(
            &json!({"merchant_order_no": format!("B{run_id}-one"), "amount": 100,
                      "currency": "CNY", "subject": "bench"}),
        )
        .send()
        .await?
        .json()
        .await?;
    let id = order["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("order not created: {order}"))?
        .to_owned();
    let prepay_url = format!("{base}/v1/orders/{id}/prepay");
    let first = many
        .post(&prepay_url)
        .bearer_auth(secret)
        .json(&json!({"channel": "sandbox"}))
        .send()
        .await?;
    anyhow::ensure!(first.status() == 200, "first prepay: {}", first.status());
    let duration = Duration::from_secs_f64(secs);
    let healthz = {
        let url = format!("{base}/healthz");
        move |http: reqwest::Client| healthz_ok(http, url.clone())
    };
    let duplicate = {
        let secret = secret.to_owned();
        move |http: reqwest::Client| {
            let (url, secret) = (prepay_url.clone(), secret.clone());
            async move {
                let Ok(r) = http
                    .post(url)
                    .bearer_auth(secret)
                    .json(&json!({"channel": "sandbox"}))
                    .send()
                    .await
                else {
                    return false;
                };
                r.status() == 200
                    && r.json::<serde_json::Value>()
                        .await
                        .is_ok_and(|v| v["reused"] == true)
            }
        }
    };
    let one = client(1)?;
    Ok(DuplicateFigures {
        connections,
        healthz: drive(server, &many, connections, duration, healthz.clone()).await,
        duplicates: drive(server, &many, connections, duration, duplicate.clone()).await,
        healthz_one_connection: drive(server, &one, 1, duration, healthz).await,
        duplicates_one_connection: drive(server, &one, 1, duration, duplicate).await,
    })
}

/// `/healthz` of the same server on `connections` connections for `secs`: the yardstick of a
/// phase at that concurrency (what the HTTP stack alone costs on this machine, now).
pub async fn healthz(server: &ServeProcess, connections: usize, secs: f64) -> anyhow::Result<Load> {
    let url = format!("{}/healthz", server.base_url());
    let request = move |http: reqwest::Client| healthz_ok(http, url.clone());
    let http = client(connections)?;
    Ok(drive(
        server,
        &http,
        connections,
        Duration::from_secs_f64(secs),
        request,
    )
    .await)
}

/// One `GET /healthz`: whether it answered 2xx.
async fn healthz_ok(http: reqwest::Client, url: String) -> bool {
    http.get(url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

fn client(connections: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// `connections` loops, each one request after another, for `duration`.
async fn drive<F, Fut>(
    server: &ServeProcess,
    http: &reqwest::Client,
    connections: usize,
    duration: Duration,
    request: F,
) -> Load
where
    F: Fn(reqwest::Client) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let lat = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
    ));
    let wrong = Arc::new(Mutex::new(0u64));
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let end = started + duration;
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (http, request, lat, wrong) =
            (http.clone(), request.clone(), lat.clone(), wrong.clone());
        loops.spawn(async move {
            while Instant::now() < end {
                let t = Instant::now();
                if request(http.clone()).await {
                    let _ = lat
                        .lock()
                        .expect("not poisoned")
                        .record(t.elapsed().as_micros().max(1) as u64);
                } else {
                    *wrong.lock().expect("not poisoned") += 1;
                }
            }
        });
    }
    while loops.join_next().await.is_some() {}
    let secs = started.elapsed().as_secs_f64();
    let cpu_after = server.cpu_seconds();
    let h = lat.lock().expect("not poisoned");
    let n = h.len();
    Load {
        per_s: n as f64 / secs,
        p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
        wrong: *wrong.lock().expect("not poisoned"),
        server_cpu_s_per_1000: match (cpu_before, cpu_after) {
            (Some(b), Some(a)) if n > 0 => {
                Some(((a - b) / n as f64 * 1000.0 * 100.0).round() / 100.0)
            }
            _ => None,
        },
    }
}
