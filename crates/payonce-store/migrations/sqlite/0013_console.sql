-- What each channel told payonce about a channel order or refund (notifications, query and
-- close answers, bill rows), with the verdict it got: the order timeline's channel side.
-- `content` is the message as read (WeChat's decrypted resource, the others' form or JSON);
-- it holds payer identifiers, so it is masked on display and cleared after the retention.
CREATE TABLE channel_messages (
    id          TEXT PRIMARY KEY,
    channel     TEXT NOT NULL,
    -- out_trade_no, or out_refund_no for a refund's
    reference   TEXT NOT NULL,
    source      TEXT NOT NULL,
    observed    TEXT NOT NULL,
    verdict     TEXT NOT NULL,
    content     TEXT,
    received_at BIGINT NOT NULL
);
CREATE INDEX channel_messages_by_reference ON channel_messages (channel, reference, received_at);
CREATE INDEX channel_messages_with_content ON channel_messages (received_at) WHERE content IS NOT NULL;

-- Every operator action: who (the console's operator name), when, what, on what, and why.
CREATE TABLE audit_log (
    id        TEXT PRIMARY KEY,
    operator  TEXT NOT NULL,
    action    TEXT NOT NULL,
    -- an order, attempt, refund, event, abnormal item, reconciliation or app id
    target    TEXT NOT NULL,
    order_id  TEXT,
    note      TEXT NOT NULL,
    at        BIGINT NOT NULL
);
CREATE INDEX audit_log_by_order ON audit_log (order_id, at);
CREATE INDEX audit_log_by_time ON audit_log (at);

-- Console sign-ins: the cookie holds a random id, the table only its SHA-256, so a database
-- read does not hand out sessions. Shared by every instance.
CREATE TABLE console_sessions (
    id_hash    TEXT PRIMARY KEY,
    operator   TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

ALTER TABLE abnormal ADD COLUMN resolved_by TEXT;
ALTER TABLE abnormal ADD COLUMN resolution TEXT;
CREATE INDEX reconciliation_items_by_order ON reconciliation_items (order_id);

-- The console's search takes any number an operator may hold, without knowing its app or channel.
CREATE INDEX orders_by_merchant_order_no ON orders (merchant_order_no);
CREATE INDEX attempts_by_out_trade_no ON attempts (out_trade_no);
CREATE INDEX attempts_by_channel_trade_no ON attempts (channel_trade_no) WHERE channel_trade_no IS NOT NULL;
CREATE INDEX refunds_by_out_refund_no ON refunds (out_refund_no);
