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
use std::time::Duration;

/// The Standard Webhooks signature of one message with one `whsec_` secret.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()?;
    let k = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let tag = hmac::sign(&k, format!("{msg_id}.{timestamp}.{body}").as_bytes());
    Some(format!("v1,{}", STANDARD.encode(tag.as_ref())))
}

/// Where an http(s) URL sends a request — scheme, host, port (the scheme's default when none
/// is written) — as the HTTP client itself will parse it (WHATWG, via the `url` crate), so the
/// allow-list and the request can never disagree. URLs with credentials (`user@host`) are
/// refused outright: they are how a hand-written parser gets fooled.
pub fn origin_of(url: &str) -> Option<(String, String, u16)> {
    let u = reqwest::Url::parse(url).ok()?;
    if !matches!(u.scheme(), "http" | "https") || !u.username().is_empty() || u.password().is_some()
    {
        return None;
    }
    let host = match u.host()? {
        url::Host::Domain(d) => d.to_ascii_lowercase(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    };
    Some((u.scheme().to_owned(), host, u.port_or_known_default()?))
}

/// The host of an http(s) URL, lower-cased (as `origin_of` parses it).
pub fn host_of(url: &str) -> Option<String> {
    origin_of(url).map(|(_, h, _)| h)
}

/// Whether an order's `notify_url` may be used: its scheme, host AND port must be the webhook
/// URL's, or an entry of the app's allowed hosts (`host[:port]`; without a port only the
/// scheme's default port). Anything else (an internal address, a metadata endpoint, another
/// port on an allowed host) is refused — payonce must not become a proxy into its own network.
pub fn notify_url_allowed(app: &App, url: &str) -> bool {
    let Some((scheme, host, port)) = origin_of(url) else {
        return false;
    };
    if app
        .webhook_url
        .as_deref()
        .and_then(origin_of)
        .is_some_and(|w| w == (scheme.clone(), host.clone(), port))
    {
        return true;
    }
    let default_port = if scheme == "https" { 443 } else { 80 };
    app.allowed_hosts.as_deref().is_some_and(|list| {
        list.split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .any(|entry| {
                // An entry is `host` or `host:port` (IPv6 in brackets), parsed by the same parser.
                let Some((_, h, p)) = origin_of(&format!("{scheme}://{entry}/")) else {
                    return false;
                };
                let explicit_port = reqwest::Url::parse(&format!("{scheme}://{entry}/"))
                    .ok()
                    .and_then(|u| u.port());
                h == host
                    && match explicit_port {
                        Some(_) => p == port,
                        None => port == default_port,
                    }
            })
    })
}

/// Whether an address is one a webhook must never reach: loopback, private (RFC 1918, ULA),
/// link-local (cloud metadata lives at 169.254.169.254), CGNAT, multicast, unspecified,
/// broadcast, documentation and benchmarking ranges, and IPv4 addresses mapped into IPv6.
pub fn is_internal(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT 100.64/10
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking 198.18/15
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local
                || (seg[0] & 0xffc0) == 0xfe80 // link-local
                || seg[0] == 0x2001 && seg[1] == 0x0db8 // documentation
                || seg[0] == 0x0064 && seg[1] == 0xff9b // NAT64 (embeds IPv4)
        }
    }
}

/// A DNS resolver for webhook delivery that refuses internal addresses AT CONNECT TIME: the
/// address checked is the address connected to, so a name that resolves to a public address
/// for the allow-list and to 127.0.0.1 a moment later (DNS rebinding) gets nowhere.
pub struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<std::net::SocketAddr> =
                addrs.into_iter().filter(|a| !is_internal(a.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves only to internal addresses; webhooks never go there"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The webhook client: never follows redirects (a 3xx is a failed attempt, its status shown),
/// never goes through a proxy, and, unless the operator allowed private webhooks, never
/// connects to an internal address.
///
/// No proxy, whatever `HTTP_PROXY` / `HTTPS_PROXY` / `ALL_PROXY` say: through a proxy the
/// proxy resolves and connects, so the address check above never sees where the request goes
/// (a webhook to `http://localhost/internal-admin` was delivered that way). An operator whose
/// egress must pass a proxy puts payonce behind a transparent one.
pub fn webhook_client(timeout: Duration, allow_private: bool) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    let b = if allow_private {
        b
    } else {
        b.dns_resolver(std::sync::Arc::new(PublicOnlyResolver))
    };
    b.build().expect("webhook http client")
}

/// A literal IP in the URL bypasses DNS: it is checked here before any connection.
fn literal_internal(url: &str) -> bool {
    reqwest::Url::parse(url).ok().and_then(|u| match u.host()? {
        url::Host::Ipv4(ip) => Some(is_internal(ip.into())),
        url::Host::Ipv6(ip) => Some(is_internal(ip.into())),
        url::Host::Domain(_) => None,
    }) == Some(true)
}

fn count(outcome: &'static str) {
    metrics::counter!("payonce_webhooks_total", "outcome" => outcome).increment(1);
}

/// Delivers one claimed event once, and records what happened. The delivery is a span in the
/// trace its order was created in, and its `traceparent` goes with the webhook or message.
pub async fn deliver(state: &AppState, http: &reqwest::Client, owner: &str, ev: EventRow) {
    use tracing::Instrument as _;
    let stored = match &ev.order_id {
        Some(order) => state.store.trace_context(order).await.ok().flatten(),
        None => None,
    };
    let span = tracing::info_span!("event.deliver", event_id = %ev.id, event_type = %ev.event_type, otel.kind = "producer");
    if let Some(tp) = &stored {
        crate::telemetry::set_parent(&span, crate::telemetry::parse(tp));
    }
    let traceparent = crate::telemetry::outgoing(&span, stored.as_deref());
    deliver_in_trace(state, http, owner, ev, traceparent)
        .instrument(span)
        .await
}

async fn deliver_in_trace(
    state: &AppState,
    http: &reqwest::Client,
    owner: &str,
    ev: EventRow,
    traceparent: Option<String>,
) {
    let now = state.clock.now();
    let app_id = payonce_core::AppId::from_trusted(ev.app_id.clone());
    let Ok(Some(app)) = state.store.app(&app_id).await else {
        return;
    };
    if app.sink != payonce_store::Sink::Webhook {
        return deliver_to_sink(state, owner, &ev, &app, traceparent.as_deref()).await;
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
        let a = DeliveryAttempt {
            event_id: ev.id.clone(),
            destination: String::new(),
            status_code: None,
            error: Some("no webhook URL".into()),
            duration_ms: 0,
            attempted_at: now,
        };
        let _ = state
            .store
            .record_delivery(owner, &a, &DeliveryOutcome::Skipped)
            .await;
        return count("skipped");
    };
    if app.webhook_disabled {
        let a = DeliveryAttempt {
            event_id: ev.id.clone(),
            destination: dest,
            status_code: None,
            error: Some("endpoint disabled after 410 Gone".into()),
            duration_ms: 0,
            attempted_at: now,
        };
        let _ = state
            .store
            .record_delivery(owner, &a, &DeliveryOutcome::Failed)
            .await;
        return count("disabled");
    }
    let secrets = signing_secrets(state, &app);
    if !state.config.allow_private_webhooks && literal_internal(&dest) {
        let a = DeliveryAttempt {
            event_id: ev.id.clone(),
            destination: dest,
            status_code: None,
            error: Some("internal address refused (see --allow-private-webhooks)".into()),
            duration_ms: 0,
            attempted_at: now,
        };
        let _ = state
            .store
            .record_delivery(owner, &a, &DeliveryOutcome::Failed)
            .await;
        return count("refused");
    }
    let ts = now.0 / 1000;
    let signature = signature(&secrets, &ev.id, ts, &ev.payload);
    let started = state.clock.now();
    let mut request = http.post(&dest);
    if let Some(tp) = &traceparent {
        request = request.header("traceparent", tp);
    }
    let sent = request
        .header("content-type", "application/json")
        .header("webhook-id", &ev.id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .header(
            "user-agent",
            concat!("payonce-webhooks/", env!("CARGO_PKG_VERSION")),
        )
        .body(ev.payload.clone())
        .send()
        .await;
    let duration_ms = state.clock.now().0 - started.0;
    let (status_code, error) = match &sent {
        Ok(r) if r.status().is_redirection() => (
            Some(r.status().as_u16() as i64),
            Some(format!(
                "HTTP {}: redirects are not followed",
                r.status().as_u16()
            )),
        ),
        Ok(r) => (
            Some(r.status().as_u16() as i64),
            (!r.status().is_success()).then(|| format!("HTTP {}", r.status().as_u16())),
        ),
        Err(e) => (
            None,
            Some(if e.is_timeout() {
                "timeout".to_owned()
            } else {
                "connection failed (or an internal address refused)".to_owned()
            }),
        ),
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
                DeliveryOutcome::Retry {
                    next_attempt_at: now + jitter(wait),
                }
            }
            None => {
                count("failed");
                DeliveryOutcome::Failed
            }
        },
    };
    let attempt = DeliveryAttempt {
        event_id: ev.id.clone(),
        destination: dest,
        status_code,
        error,
        duration_ms,
        attempted_at: now,
    };
    if let Ok(false) = state.store.record_delivery(owner, &attempt, &outcome).await {
        tracing::warn!(event_id = %ev.id, "lease lost during delivery; the new holder records it");
    }
}

/// The app's webhook signing secrets: the current one, and during a rotation the previous one.
fn signing_secrets(state: &AppState, app: &App) -> Vec<String> {
    let mut secrets = Vec::new();
    for enc in std::iter::once(&app.webhook_secret_enc).chain(app.webhook_secret_prev_enc.as_ref())
    {
        match state.master_key.decrypt(enc, app.id.as_str()) {
            Ok(s) => secrets.push(s),
            Err(e) => {
                tracing::error!(error = %e, app_id = %app.id, "webhook secret does not decrypt with this master key")
            }
        }
    }
    secrets
}

/// The `webhook-signature` header: one `v1,` signature per secret, space-separated, so a
/// receiver still holding the previous secret keeps verifying during a rotation.
fn signature(secrets: &[String], msg_id: &str, timestamp: i64, body: &str) -> String {
    secrets
        .iter()
        .filter_map(|s| sign(s, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The body of a broker message: the event's payload with `app_id` added. Over HTTP the
/// endpoint says whose event it is; on a shared broker only the message can.
fn broker_body(ev: &EventRow) -> Result<String, crate::sinks::SinkError> {
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&ev.payload).map_err(crate::sinks::SinkError::Payload)?;
    v.insert(
        "app_id".into(),
        serde_json::Value::String(ev.app_id.clone()),
    );
    serde_json::to_string(&v).map_err(crate::sinks::SinkError::Payload)
}

/// A broker sink: delivered once the broker confirmed, else retried on the same schedule. The
/// message is signed like a webhook (same secret, same headers), at publish time.
async fn deliver_to_sink(
    state: &AppState,
    owner: &str,
    ev: &EventRow,
    app: &App,
    traceparent: Option<&str>,
) {
    let sink = app.sink;
    let now = state.clock.now();
    let started = state.clock.now();
    let published = match broker_body(ev) {
        Ok(body) => {
            let ts = now.0 / 1000;
            let mut headers = vec![
                ("webhook-id", ev.id.clone()),
                ("webhook-timestamp", ts.to_string()),
                (
                    "webhook-signature",
                    signature(&signing_secrets(state, app), &ev.id, ts, &body),
                ),
            ];
            if let Some(tp) = traceparent {
                headers.push(("traceparent", tp.to_owned()));
            }
            let msg = crate::sinks::Message {
                event: ev,
                app_id: app.id.as_str(),
                body,
                headers,
            };
            state.sinks.publish(sink, &msg).await
        }
        Err(e) => Err(e),
    };
    let (destination, error, outcome) = match published {
        Ok(dest) => {
            count("delivered");
            (dest, None, DeliveryOutcome::Delivered)
        }
        Err(e) => {
            tracing::warn!(error = %e, sink = sink.as_str(), "publishing an event failed");
            let outcome = match state.config.webhook_retry_after(ev.delivery_count as usize) {
                Some(wait) => DeliveryOutcome::Retry {
                    next_attempt_at: now + jitter(wait),
                },
                None => DeliveryOutcome::Failed,
            };
            (sink.as_str().to_owned(), Some(e.to_string()), outcome)
        }
    };
    let attempt = DeliveryAttempt {
        event_id: ev.id.clone(),
        destination,
        status_code: None,
        error,
        duration_ms: state.clock.now().0 - started.0,
        attempted_at: now,
    };
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
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
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
            allowed_hosts: Some("orders.example, other.example:8443".into()),
            sink: payonce_store::Sink::Webhook,
            submission_window_secs: 10,
            channel_accounts: Default::default(),
            created_at: payonce_core::Timestamp(0),
        };
        // The webhook URL's own origin: scheme, host and port.
        assert!(notify_url_allowed(&app, "https://shop.example/x"));
        assert!(notify_url_allowed(&app, "https://SHOP.example:443/x"));
        assert!(
            !notify_url_allowed(&app, "https://shop.example:8443/x"),
            "another port"
        );
        assert!(
            !notify_url_allowed(&app, "http://shop.example/x"),
            "another scheme"
        );
        // Allowed hosts: without a port only the default one; with a port, that port.
        assert!(notify_url_allowed(&app, "http://ORDERS.example/cb"));
        assert!(!notify_url_allowed(&app, "http://orders.example:6379/cb"));
        assert!(notify_url_allowed(&app, "https://other.example:8443/cb"));
        assert!(!notify_url_allowed(&app, "https://other.example/cb"));
        assert!(!notify_url_allowed(
            &app,
            "http://169.254.169.254/latest/meta-data"
        ));
        assert!(!notify_url_allowed(&app, "http://shop.example@10.0.0.1/"));
        assert!(!notify_url_allowed(&app, "ftp://shop.example/"));
        // The parser confusion that let requests go to 127.0.0.1: the WHATWG parser (the one the
        // HTTP client uses) reads `\` as `/`, so the host is 127.0.0.1, not orders.example.
        assert!(!notify_url_allowed(
            &app,
            "http://127.0.0.1:19002\\@orders.example/x"
        ));
        assert_eq!(
            host_of("http://127.0.0.1:19002\\@orders.example/x").as_deref(),
            Some("127.0.0.1"),
            "where the client really goes"
        );
        assert_eq!(
            host_of("http://user@orders.example/x"),
            None,
            "credentials refused outright"
        );
        assert_eq!(host_of("http://[::1]:80/x").as_deref(), Some("::1"));
    }
}

#[cfg(test)]
mod address_tests {
    use super::is_internal;

    #[test]
    fn internal_addresses_are_recognised() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
        ] {
            assert!(is_internal(a.parse().unwrap()), "{a}");
        }
        for a in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal(a.parse().unwrap()), "{a}");
        }
    }
}
