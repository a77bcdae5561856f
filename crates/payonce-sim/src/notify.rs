//! Notification delivery, common to every simulated channel: the channel's retry schedule
//! (time-scaled), and the drop / delay / reorder / duplicate faults. Each channel supplies how
//! to build one signed delivery and how to recognise its success answer.

use crate::Sim;
use crate::rng::Draw;
use std::sync::Arc;
use std::time::Duration;

/// One HTTP delivery: headers and body (re-signed per attempt where the protocol is time-bound).
pub struct Delivery {
    pub headers: Vec<(String, String)>,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// WeChat Pay's documented schedule (15 s, 15 s, 30 s, 3 m, 10 m, 20 m, 30 m ×3, 60 m, 3 h ×3,
/// 6 h ×2), used for every channel; `time_scale` compresses it.
const SCHEDULE_MS: [u64; 16] = [
    0, 15_000, 15_000, 30_000, 180_000, 600_000, 1_200_000, 1_800_000, 1_800_000, 1_800_000,
    3_600_000, 10_800_000, 10_800_000, 10_800_000, 21_600_000, 21_600_000,
];

pub fn spawn(
    sim: Arc<Sim>,
    url: String,
    build: impl Fn() -> Delivery + Send + 'static,
    is_ack: fn(u16, &str) -> bool,
) {
    use std::sync::atomic::Ordering;
    sim.notifications_outstanding.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        /// Counts the delivery done however its task ends.
        struct Done(Arc<Sim>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0
                    .notifications_outstanding
                    .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let _done = Done(sim.clone());
        let mut acked = false;
        for (i, wait) in SCHEDULE_MS.iter().enumerate() {
            let f = sim.faults.lock().unwrap().clone();
            let scale = if f.time_scale > 0.0 {
                f.time_scale
            } else {
                1.0
            };
            let mut delay = (*wait as f64 / scale) as u64
                + sim.between(
                    Draw::NotifyDelay,
                    f.notify_delay_ms[0],
                    f.notify_delay_ms[1],
                );
            if f.notify_reorder {
                delay += sim.between(Draw::NotifyDelay, 0, 200);
            }
            tokio::time::sleep(Duration::from_millis(delay)).await;
            if sim.chance(Draw::NotifyDrop, f.notify_drop_rate) {
                tracing::debug!(attempt = i, "notification dropped (fault)");
                continue;
            }
            if send(&sim, &url, &build(), is_ack).await {
                acked = true;
                break;
            }
        }
        if acked {
            let extra = sim.faults.lock().unwrap().notify_duplicates;
            for _ in 0..extra {
                send(&sim, &url, &build(), is_ack).await;
            }
        }
    });
}

async fn send(sim: &Sim, url: &str, d: &Delivery, is_ack: fn(u16, &str) -> bool) -> bool {
    let mut req = sim
        .http
        .post(url)
        .header("content-type", d.content_type)
        .body(d.body.clone());
    for (k, v) in &d.headers {
        req = req.header(k, v);
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            is_ack(status, &text)
        }
        Err(_) => false,
    }
}
