-- Leases let any number of instances share the workers: a row is worked on by whoever holds
-- an unexpired lease, and every write of that work is fenced by the lease owner's token.
ALTER TABLE attempts ADD COLUMN lease_owner TEXT;
ALTER TABLE orders ADD COLUMN lease_until BIGINT;
ALTER TABLE orders ADD COLUMN lease_owner TEXT;

CREATE TABLE refunds (
    id                 TEXT PRIMARY KEY,
    order_id           TEXT NOT NULL REFERENCES orders (id),
    app_id             TEXT NOT NULL,
    attempt_id         TEXT NOT NULL REFERENCES attempts (id),
    channel            TEXT NOT NULL,
    out_trade_no       TEXT NOT NULL,
    -- The business's number; NULL for automatic refunds of duplicate payments.
    merchant_refund_no TEXT,
    -- Derived deterministically (from the refund id, or from the duplicate attempt), so a retry
    -- of the channel call can never refund twice.
    out_refund_no      TEXT NOT NULL,
    amount             BIGINT NOT NULL CHECK (amount > 0),
    currency           TEXT NOT NULL,
    reason             TEXT,
    -- 'order': the business refunds its order; 'duplicate': payonce returns a second payment.
    kind               TEXT NOT NULL,
    status             TEXT NOT NULL,
    failure_reason     TEXT,
    content_hash       TEXT NOT NULL,
    -- Whether the channel has been asked at least once (then only the same number is reused).
    requested          INTEGER NOT NULL DEFAULT 0,
    channel_data       TEXT,
    next_query_at      BIGINT,
    query_count        INTEGER NOT NULL DEFAULT 0,
    lease_until        BIGINT,
    lease_owner        TEXT,
    version            BIGINT NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    UNIQUE (channel, out_refund_no),
    UNIQUE (order_id, merchant_refund_no)
);
CREATE INDEX refunds_by_order ON refunds (order_id);
CREATE INDEX refunds_due ON refunds (next_query_at) WHERE next_query_at IS NOT NULL;
CREATE INDEX orders_lease ON orders (expires_at, lease_until) WHERE status IN ('unpaid', 'paying');
