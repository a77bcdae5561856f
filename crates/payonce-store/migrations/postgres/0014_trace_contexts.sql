-- The W3C traceparent an order was created in (when the business sent one, or spans are
-- exported): the webhooks and broker messages announcing the order continue that trace.
-- Telemetry, not a fact: written after the order's transaction, purged with old messages.
CREATE TABLE trace_contexts (
    order_id    TEXT PRIMARY KEY,
    traceparent TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX trace_contexts_by_age ON trace_contexts (created_at);
