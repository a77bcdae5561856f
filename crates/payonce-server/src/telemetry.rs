//! W3C trace context across the business → payonce → channel → business path. A business's
//! `traceparent` becomes the parent of the request's span; an order remembers the trace it was
//! created in, and the webhook and broker messages announcing it continue that trace: each
//! delivery is a span whose own `traceparent` is sent along. Parsing and writing the header is
//! the OpenTelemetry propagator's, never ours.
//!
//! When spans are exported (the OpenTelemetry layer is installed: `--otlp-endpoint`), the span
//! contexts are the exporter's. Without it the trace still flows: a delivery sends the stored
//! trace id with a fresh span id, as an intermediary that records nothing should.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The trace context a request came with (invalid when it had none, or a malformed one).
pub fn extract(headers: &axum::http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers))
}

/// Makes `cx` the parent of `span` (before the span is entered). Without the OpenTelemetry
/// layer this does nothing, which is right: there is nothing to record.
pub fn set_parent(span: &tracing::Span, cx: opentelemetry::Context) {
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

fn header_of(cx: &opentelemetry::Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The `traceparent` to keep with what `span` creates: the span's own when it is recorded,
/// else the caller's (`incoming`), else none.
pub fn traceparent_to_keep(
    span: &tracing::Span,
    incoming: &opentelemetry::Context,
) -> Option<String> {
    header_of(&span.context()).or_else(|| header_of(incoming))
}

/// The context a stored `traceparent` names.
pub fn parse(traceparent: &str) -> opentelemetry::Context {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// The `traceparent` to send with a delivery made in `span`, continuing `stored`: the span's
/// own context when it is recorded; else the stored trace with a new span id.
pub fn outgoing(span: &tracing::Span, stored: Option<&str>) -> Option<String> {
    if let Some(own) = header_of(&span.context()) {
        return Some(own);
    }
    let parent = parse(stored?);
    let sc = parent.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    let child = SpanContext::new(
        sc.trace_id(),
        RandomIdGenerator::default().new_span_id(),
        sc.trace_flags(),
        false,
        sc.trace_state().clone(),
    );
    header_of(&opentelemetry::Context::new().with_remote_span_context(child))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIVEN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_delivery_continues_the_stored_trace_with_a_span_of_its_own() {
        let out = outgoing(&tracing::Span::none(), Some(GIVEN)).unwrap();
        let parts: Vec<&str> = out.split('-').collect();
        assert_eq!(parts.len(), 4, "{out}");
        assert_eq!(
            (parts[0], parts[1], parts[3]),
            ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01"),
            "same trace, same flags"
        );
        assert_ne!(parts[2], "00f067aa0ba902b7", "a new parent id");
    }

    #[test]
    fn malformed_or_absent_contexts_are_not_sent() {
        assert_eq!(outgoing(&tracing::Span::none(), None), None);
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        ] {
            assert_eq!(outgoing(&tracing::Span::none(), Some(bad)), None, "{bad}");
        }
        let mut h = axum::http::HeaderMap::new();
        h.insert("traceparent", GIVEN.parse().unwrap());
        assert_eq!(
            traceparent_to_keep(&tracing::Span::none(), &extract(&h)).as_deref(),
            Some(GIVEN)
        );
    }
}
