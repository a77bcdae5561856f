-- payonce schema v1 (PostgreSQL). Times are Unix milliseconds (BIGINT) in both stores so
-- that every comparison means the same on SQLite and PostgreSQL.

CREATE TABLE apps (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    -- SHA-256 of the bearer secret: secrets are high-entropy, so a fast hash is enough and
    -- keeps authentication off the hot path.
    secret_hash        TEXT NOT NULL UNIQUE,
    webhook_url        TEXT,
    -- The webhook signing secret is needed to sign, so it is encrypted (AES-256-GCM), not hashed.
    webhook_secret_enc TEXT NOT NULL,
    created_at         BIGINT NOT NULL
);

CREATE TABLE orders (
    id                TEXT PRIMARY KEY,
    app_id            TEXT NOT NULL REFERENCES apps (id),
    merchant_order_no TEXT NOT NULL,
    amount            BIGINT NOT NULL CHECK (amount > 0),
    currency          TEXT NOT NULL,
    subject           TEXT NOT NULL,
    notify_url        TEXT,
    metadata          TEXT,
    -- Fingerprint of the creating request's content: same number + same content is a replay,
    -- same number + other content is a conflict.
    content_hash      TEXT NOT NULL,
    status            TEXT NOT NULL,
    closed_by         TEXT,
    paid_attempt_id   TEXT,
    paid_at           BIGINT,
    refunded_amount   BIGINT NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0 AND refunded_amount <= amount),
    expires_at        BIGINT NOT NULL,
    version           BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    UNIQUE (app_id, merchant_order_no)
);
CREATE INDEX orders_open_by_expiry ON orders (expires_at) WHERE status IN ('unpaid', 'paying');

CREATE TABLE attempts (
    id                    TEXT PRIMARY KEY,
    order_id              TEXT NOT NULL REFERENCES orders (id),
    channel               TEXT NOT NULL,
    method                TEXT NOT NULL,
    out_trade_no          TEXT NOT NULL,
    amount                BIGINT NOT NULL,
    currency              TEXT NOT NULL,
    status                TEXT NOT NULL,
    -- A success for an order that was already paid or closed: money to give back.
    is_duplicate          BOOLEAN NOT NULL DEFAULT FALSE,
    credential            TEXT,
    credential_expires_at BIGINT,
    channel_trade_no      TEXT,
    paid_at               BIGINT,
    next_query_at         BIGINT,
    query_count           INTEGER NOT NULL DEFAULT 0,
    lease_until           BIGINT,
    version               BIGINT NOT NULL,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    UNIQUE (channel, out_trade_no)
);
-- The arbiter of "never two channel orders at once": at most one active attempt per order.
CREATE UNIQUE INDEX attempts_one_active_per_order ON attempts (order_id)
    WHERE status IN ('created', 'pending', 'unknown');
CREATE INDEX attempts_by_order ON attempts (order_id);
CREATE INDEX attempts_due_query ON attempts (next_query_at) WHERE next_query_at IS NOT NULL;

-- Every channel notification applied, by the channel's own event id: a replay finds its row.
CREATE TABLE channel_events (
    channel      TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    out_trade_no TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    PRIMARY KEY (channel, event_id)
);

-- The transactional outbox: written in the same transaction as the fact it announces.
CREATE TABLE events (
    id              TEXT PRIMARY KEY,
    app_id          TEXT NOT NULL,
    order_id        TEXT,
    type            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    delivery_status TEXT NOT NULL DEFAULT 'pending',
    next_attempt_at BIGINT,
    delivery_count  INTEGER NOT NULL DEFAULT 0,
    lease_until     BIGINT,
    last_error      TEXT
);
CREATE INDEX events_by_order ON events (order_id);
CREATE INDEX events_due ON events (next_attempt_at) WHERE delivery_status = 'pending';

CREATE TABLE idempotency_keys (
    app_id          TEXT NOT NULL,
    idem_key        TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    state           TEXT NOT NULL,
    locked_until    BIGINT NOT NULL,
    response_status INTEGER,
    response_type   TEXT,
    response_body   TEXT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (app_id, idem_key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- What the machinery cannot settle alone, for a person to resolve.
CREATE TABLE abnormal (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    reference   TEXT NOT NULL,
    detail      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    resolved_at BIGINT
);

-- `payonce bench` measures the raw single-row commit rate of the same database here.
CREATE TABLE bench_commits (
    id         TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
