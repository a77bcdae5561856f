-- Reconciliation (对账): one run per channel and bill date (Asia/Shanghai), re-runnable, and the
-- differences it found. An item is recorded once per (run, class, reference), so a re-run that
-- finds the same difference adds nothing.
CREATE TABLE reconciliations (
    id           TEXT PRIMARY KEY,
    channel      TEXT NOT NULL,
    bill_date    TEXT NOT NULL,
    -- running, completed, failed
    status       TEXT NOT NULL,
    -- counts by class, rows and fees (JSON)
    summary      TEXT NOT NULL,
    reason       TEXT,
    lease_owner  TEXT,
    lease_until  BIGINT,
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    UNIQUE (channel, bill_date)
);

CREATE TABLE reconciliation_items (
    id                TEXT PRIMARY KEY,
    reconciliation_id TEXT NOT NULL REFERENCES reconciliations (id),
    class             TEXT NOT NULL,
    -- out_trade_no or out_refund_no
    reference         TEXT NOT NULL,
    app_id            TEXT,
    order_id          TEXT,
    local_amount      BIGINT,
    channel_amount    BIGINT,
    detail            TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    UNIQUE (reconciliation_id, class, reference)
);
CREATE INDEX reconciliation_items_by_run ON reconciliation_items (reconciliation_id, id);
