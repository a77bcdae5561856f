//! Tracing, judged by OpenTelemetry's own SDK: this test binary records every span with the
//! SDK's in-memory exporter (as `--otlp-endpoint` records them for a collector), on both stores.
//! A business's `traceparent` is continued: its prepay is one trace whose channel call is a
//! child span; the webhook announcing the payment carries a `traceparent` of the same trace,
//! naming the exported delivery span.

use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use payonce_testkit::{AppOptions, Backend, spawn_app_with, store_tests};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

store_tests!(a_business_trace_runs_through_prepay_the_channel_and_the_webhook);

/// The process's exporter (one global subscriber per test binary; tests tell their spans apart
/// by trace id).
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    &EXPORTER
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("payonce")))
                .with(tracing_subscriber::EnvFilter::new("info"))
                .init();
            (exporter, provider)
        })
        .0
}

fn spans_of(trace: TraceId) -> Vec<SpanData> {
    exporter()
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect()
}

/// Waits until the spans of `trace` satisfy `done` (spans are exported when they close).
async fn wait_spans(
    trace: TraceId,
    what: &str,
    done: impl Fn(&[SpanData]) -> bool,
) -> Vec<SpanData> {
    for _ in 0..300 {
        let spans = spans_of(trace);
        if done(&spans) {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{what}: spans of the trace: {:#?}",
        spans_of(trace)
            .iter()
            .map(|s| (
                s.name.to_string(),
                s.span_context.span_id(),
                s.parent_span_id
            ))
            .collect::<Vec<_>>()
    );
}

/// Follows parents from `span` up; true if `ancestor` is among them.
fn descends_from(spans: &[SpanData], span: &SpanData, ancestor: SpanId) -> bool {
    let mut parent = span.parent_span_id;
    for _ in 0..32 {
        if parent == ancestor {
            return true;
        }
        match spans.iter().find(|s| s.span_context.span_id() == parent) {
            Some(p) => parent = p.parent_span_id,
            None => return false,
        }
    }
    false
}

async fn a_business_trace_runs_through_prepay_the_channel_and_the_webhook(b: Backend) {
    exporter();
    // The business's webhook receiver keeps each delivery's headers.
    let got: Arc<Mutex<Vec<axum::http::HeaderMap>>> = Arc::default();
    let g = got.clone();
    let router = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let g = g.clone();
            async move {
                g.lock().unwrap().push(headers);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
    let Some(app) = spawn_app_with(
        b,
        AppOptions {
            webhook_url: Some(url),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };

    // The business's trace: a random trace id, its own span as the parent.
    let trace = TraceId::from_bytes(rand16());
    let business_span = SpanId::from_bytes(rand16()[..8].try_into().unwrap());
    let traceparent = format!("00-{trace}-{business_span}-01");
    let send = |path: &str, body: Value| {
        app.http
            .post(app.url(path))
            .bearer_auth(&app.secret)
            .header("traceparent", traceparent.clone())
            .json(&body)
            .send()
    };
    let r = send("/v1/orders", json!({"merchant_order_no": "TRACE-1", "amount": 321, "currency": "CNY", "subject": "traced"})).await.unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = send(
        &format!("/v1/orders/{id}/prepay"),
        json!({"channel": "sandbox"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let out_trade_no = r.json::<Value>().await.unwrap()["out_trade_no"]
        .as_str()
        .unwrap()
        .to_owned();

    // One trace: both requests are children of the business's span, and the channel's prepay
    // call is a child (through the handler's spans) of the prepay request.
    let spans = wait_spans(trace, "two requests and a channel call", |s| {
        s.iter().filter(|s| s.name == "HTTP POST").count() == 2
            && s.iter().any(|s| s.name == "sandbox prepay")
    })
    .await;
    let requests: Vec<&SpanData> = spans.iter().filter(|s| s.name == "HTTP POST").collect();
    for r in &requests {
        assert_eq!(
            r.parent_span_id, business_span,
            "a request continues the business's span"
        );
        assert!(r.parent_span_is_remote);
    }
    let call = spans.iter().find(|s| s.name == "sandbox prepay").unwrap();
    assert!(
        requests
            .iter()
            .any(|r| descends_from(&spans, call, r.span_context.span_id())),
        "the channel call is inside a request of the trace"
    );
    assert!(
        call.attributes
            .iter()
            .any(|kv| kv.key.as_str() == "outcome" && kv.value.as_str() == "ok"),
        "{:?}",
        call.attributes
    );

    // Paid at the channel: the webhook continues the same trace, from its delivery span.
    assert_eq!(
        app.sim_pay("sandbox", &out_trade_no, false).await,
        reqwest::StatusCode::OK
    );
    let mut sent = None;
    for _ in 0..200 {
        if let Some(h) = got.lock().unwrap().first() {
            sent = Some(h.get("traceparent").map(|v| v.to_str().unwrap().to_owned()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = sent.expect("a webhook").expect("with a traceparent");
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(
        (parts.len(), parts[0], parts[1]),
        (4, "00", trace.to_string().as_str()),
        "{sent}: the business's trace"
    );
    let delivery = wait_spans(trace, "the delivery span", |s| {
        s.iter().any(|s| s.name == "event.deliver")
    })
    .await;
    let delivery = delivery.iter().find(|s| s.name == "event.deliver").unwrap();
    assert_eq!(
        parts[2],
        delivery.span_context.span_id().to_string(),
        "the webhook's parent is the exported delivery span"
    );
    assert_ne!(parts[2], business_span.to_string());
}

fn rand16() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let half = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        h.finish().to_be_bytes()
    };
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&half());
    b[8..].copy_from_slice(&half());
    b
}
