//! Where log lines and spans go: log lines to stderr (plain, or JSON with
//! `PAYONCE_LOG_FORMAT=json`), and — when a collector is given — spans to it over OTLP/HTTP.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// A tracer provider exporting in batches to `{endpoint}/v1/traces` (an endpoint already
/// ending in `/v1/traces` is used as it is). The protocol is pinned: an environment's
/// `OTEL_EXPORTER_OTLP_PROTOCOL` asking for gRPC would find no gRPC stack here.
#[cfg(feature = "otlp")]
pub fn otlp_provider(endpoint: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
    use opentelemetry_sdk::Resource;
    let base = endpoint.trim_end_matches('/');
    let url = if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    };
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name("payonce").build())
        .with_batch_exporter(exporter)
        .build())
}

/// Without the `otlp` feature a collector cannot be reached: said at start, not ignored.
#[cfg(not(feature = "otlp"))]
pub fn otlp_provider(_endpoint: &str) -> Result<SdkTracerProvider, String> {
    Err(
        "this payonce was built without the `otlp` feature: build it with \
         `cargo build --release --features otlp` to export spans"
            .into(),
    )
}

/// Installs the process's subscriber: the filter, the log lines, and the span exporter if any.
pub fn init_logs(filter: tracing_subscriber::EnvFilter, provider: Option<&SdkTracerProvider>) {
    // PAYONCE_LOG_FORMAT=json: one JSON object per line, with every enclosing span (the
    // request's carries its id).
    let lines = if std::env::var("PAYONCE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    // `PAYONCE_LOG` decides what is printed, not what is traced: a quiet log (warn) must not
    // leave the collector without the requests' spans.
    let spans = provider.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("payonce"))
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_default(tracing::Level::INFO)
                    .with_target("opentelemetry", tracing::Level::WARN),
            )
    });
    tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(spans)
        .init();
}
