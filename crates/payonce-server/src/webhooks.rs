//! Telling the business: Standard Webhooks delivery of the outbox.
//!
//! Every event row was written in the same transaction as the fact it announces; the
//! dispatcher (any instance, under a lease) POSTs it with `webhook-id` (the event id, stable
//! across every retry, so receivers de-duplicate), `webhook-timestamp` and `webhook-signature`
//! (`v1,` + base64 HMAC-SHA256 over `id.timestamp.body` with the `whsec_` secret; during a
//! rotation, two signatures). Any 2xx is success; anything else retries on a growing schedule
//! with jitter for over 24 hours, then the event is `failed` and resendable from the console.
//! A 410 Gone disables the endpoint. Delivery is at least once; order between events is not
//! promised (each event carries the order's `version`, so receivers can drop stale ones).

use crate::state::AppState;
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use payonce_store::{App, DeliveryAttempt, DeliveryOutcome, EventRow};
use std::time::{Duration, Instant};

/// The Standard Webhooks signature of one message with one `whsec_` secret.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(secret)).ok()?;
    let k = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let tag = hmac::sign(&k, format!("{msg_id}.{timestamp}.{body}").as_bytes());
    Some(format!("v1,{}", STANDARD.encode(tag.as_ref())))
}

/// The host of an http(s) URL, lower-cased.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    let host = if host.starts_with('[') { host.split(']').next()?.trim_start_matches('[') } else { host.split(':').next()? };
    Some(host.to_ascii_lowercase())
}

/// Whether an order's `notify_url` may be used: its host must be the webhook URL's host or one
/// the app allowed explicitly. Anything else (an internal address, a metadata endpoint) is
/// refused — payonce must not become a proxy into its own network.
pub fn notify_url_allowed(app: &App, url: &str) -> bool {
    let Some(host) = host_of(url) else { return false };
    let webhook_host = app.webhook_url.as_deref().and_then(host_of);
    webhook_host.as_deref() == Some(host.as_str())
        || app.allowed_hosts.as_deref().is_some_and(|list| list.split(',').any(|h| h.trim().eq_ignore_ascii_case(&host)))
}

fn count(outcome: &'static str) {
    metrics::counter!("payonce_webhooks_total", "outcome" => outcome).increment(1);
}

/// Delivers one claimed event once, and records what happened.
pub async fn deliver(state: &AppState, http: &reqwest::Client, owner: &str, ev: EventRow) {
    let now = state.clock.now();
    let app_id = payonce_core::AppId::from_trusted(ev.app_id.clone());
    let Ok(Some(app)) = state.store.app(&app_id).await else { return };
    if let Some(sink) = app.sink.as_deref() {
        return deliver_to_sink(state, owner, &ev, sink).await;
    }
    let notify_url = match &ev.order_id {
        Some(o) => state
            .store
            .order(&app_id, &payonce_core::OrderId::from_trusted(o.clone()))
            .await
            .ok()
            .flatten()
            .and_then(|o| o.notify_url)
            .filter(|u| notify_url_allowed(&app, u)),
        None => None,
    };
    let Some(dest) = notify_url.or_else(|| app.webhook_url.clone()) else {
        let a = DeliveryAttempt { event_id: ev.id.clone(), destination: String::new(), status_code: None, error: Some("no webhook URL".into()), duration_ms: 0, attempted_at: now };
        let _ = state.store.record_delivery(owner, &a, &DeliveryOutcome::Skipped).await;
        return count("skipped");
    };
    if app.webhook_disabled {
        let a = DeliveryAttempt { event_id: ev.id.clone(), destination: dest, status_code: None, error: Some("endpoint disabled after 410 Gone".into()), duration_ms: 0, attempted_at: now };
        let _ = state.store.record_delivery(owner, &a, &DeliveryOutcome::Failed).await;
        return count("disabled");
    }
    let mut secrets = Vec::new();
    for enc in std::iter::once(&app.webhook_secret_enc).chain(app.webhook_secret_prev_enc.as_ref()) {
        match state.master_key.decrypt(enc, app.id.as_str()) {
            Ok(s) => secrets.push(s),
            Err(e) => tracing::error!(error = %e, app_id = %app.id, "webhook secret does not decrypt with this master key"),
        }
    }
    let ts = now.0 / 1000;
    let signature = secrets.iter().filter_map(|s| sign(s, &ev.id, ts, &ev.payload)).collect::<Vec<_>>().join(" ");
    let started = Instant::now();
    let sent = http
        .post(&dest)
        .header("content-type", "application/json")
        .header("webhook-id", &ev.id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .header("user-agent", concat!("payonce-webhooks/", env!("CARGO_PKG_VERSION")))
        .body(ev.payload.clone())
        .send()
        .await;
    let duration_ms = started.elapsed().as_millis() as i64;
    let (status_code, error) = match &sent {
        Ok(r) => (Some(r.status().as_u16() as i64), (!r.status().is_success()).then(|| format!("HTTP {}", r.status().as_u16()))),
        Err(e) => (None, Some(if e.is_timeout() { "timeout".to_owned() } else { "connection failed".to_owned() })),
    };
    let outcome = match status_code {
        Some(c) if (200..300).contains(&c) => {
            count("delivered");
            DeliveryOutcome::Delivered
        }
        Some(410) => {
            let _ = state.store.disable_webhook(&app.id, now).await;
            count("gone");
            DeliveryOutcome::Failed
        }
        _ => match state.config.webhook_retry_after(ev.delivery_count as usize) {
            Some(wait) => {
                count("retry");
                DeliveryOutcome::Retry { next_attempt_at: now.plus_ms(jitter(wait).as_millis() as i64) }
            }
            None => {
                count("failed");
                DeliveryOutcome::Failed
            }
        },
    };
    let attempt = DeliveryAttempt { event_id: ev.id.clone(), destination: dest, status_code, error, duration_ms, attempted_at: now };
    if let Ok(false) = state.store.record_delivery(owner, &attempt, &outcome).await {
        tracing::warn!(event_id = %ev.id, "lease lost during delivery; the new holder records it");
    }
}

/// A broker sink: delivered once the broker confirmed, else retried on the same schedule.
async fn deliver_to_sink(state: &AppState, owner: &str, ev: &EventRow, sink: &str) {
    let now = state.clock.now();
    let started = Instant::now();
    let published = state.sinks.publish(sink, ev).await;
    let (destination, error, outcome) = match published {
        Ok(dest) => {
            count("delivered");
            (dest, None, DeliveryOutcome::Delivered)
        }
        Err(e) => {
            tracing::warn!(error = %e, sink, "publishing an event failed");
            let outcome = match state.config.webhook_retry_after(ev.delivery_count as usize) {
                Some(wait) => DeliveryOutcome::Retry { next_attempt_at: now.plus_ms(jitter(wait).as_millis() as i64) },
                None => DeliveryOutcome::Failed,
            };
            (sink.to_owned(), Some(e), outcome)
        }
    };
    let attempt = DeliveryAttempt { event_id: ev.id.clone(), destination, status_code: None, error, duration_ms: started.elapsed().as_millis() as i64, attempted_at: now };
    let _ = state.store.record_delivery(owner, &attempt, &outcome).await;
}

/// ±10 %, so retries of many events after an outage do not arrive in one wave.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    let f = 0.9 + (u16::from_le_bytes(b) as f64 / u16::MAX as f64) * 0.2;
    d.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_reference_signature() {
        // The example of the Standard Webhooks specification.
        let sig = sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, r#"{"test": 2432232314}"#);
        assert_eq!(sig.as_deref(), Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
    }

    #[test]
    fn notify_hosts_are_restricted() {
        let app = App {
            id: payonce_core::AppId::new(),
            name: "a".into(),
            secret_hash: String::new(),
            webhook_url: Some("https://shop.example/hooks".into()),
            webhook_secret_enc: String::new(),
            webhook_secret_prev_enc: None,
            webhook_disabled: false,
            allowed_hosts: Some("orders.example, other.example".into()),
            sink: None,
            created_at: payonce_core::Timestamp(0),
        };
        assert!(notify_url_allowed(&app, "https://shop.example:8443/x"));
        assert!(notify_url_allowed(&app, "http://ORDERS.example/cb"));
        assert!(!notify_url_allowed(&app, "http://169.254.169.254/latest/meta-data"));
        assert!(!notify_url_allowed(&app, "http://shop.example@10.0.0.1/"));
        assert!(!notify_url_allowed(&app, "ftp://shop.example/"));
        assert_eq!(host_of("http://[::1]:80/x").as_deref(), Some("::1"));
    }
}
