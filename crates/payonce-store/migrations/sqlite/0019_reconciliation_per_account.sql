-- Reconciliation per channel account (issue 23): one bill per merchant number, so one run per
-- (channel, account, bill date). Runs from before accounts existed read the `default` account's
-- bill. SQLite cannot change a table's UNIQUE constraint: both tables are rebuilt (renamed
-- away, created anew, copied, the old ones dropped items first, so foreign keys hold
-- throughout).
ALTER TABLE reconciliation_items RENAME TO reconciliation_items_old;
ALTER TABLE reconciliations RENAME TO reconciliations_old;

CREATE TABLE reconciliations (
    id           TEXT PRIMARY KEY,
    channel      TEXT NOT NULL,
    account      TEXT NOT NULL DEFAULT 'default',
    bill_date    TEXT NOT NULL,
    status       TEXT NOT NULL,
    summary      TEXT NOT NULL,
    reason       TEXT,
    lease_owner  TEXT,
    lease_until  BIGINT,
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    UNIQUE (channel, account, bill_date)
);
INSERT INTO reconciliations (id, channel, account, bill_date, status, summary, reason, lease_owner, lease_until, started_at, finished_at)
    SELECT id, channel, 'default', bill_date, status, summary, reason, lease_owner, lease_until, started_at, finished_at
    FROM reconciliations_old;

CREATE TABLE reconciliation_items (
    id                TEXT PRIMARY KEY,
    reconciliation_id TEXT NOT NULL REFERENCES reconciliations (id),
    class             TEXT NOT NULL,
    reference         TEXT NOT NULL,
    app_id            TEXT,
    order_id          TEXT,
    local_amount      BIGINT,
    channel_amount    BIGINT,
    detail            TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    UNIQUE (reconciliation_id, class, reference)
);
INSERT INTO reconciliation_items SELECT id, reconciliation_id, class, reference, app_id, order_id, local_amount, channel_amount, detail, created_at
    FROM reconciliation_items_old;
DROP TABLE reconciliation_items_old;
DROP TABLE reconciliations_old;
CREATE INDEX reconciliation_items_by_run ON reconciliation_items (reconciliation_id, id);
CREATE INDEX reconciliation_items_by_order ON reconciliation_items (order_id);

-- Reconciliation and the invariant checker read an account's successes of a day.
CREATE INDEX attempts_paid_by_account ON attempts (channel, account, paid_at) WHERE status = 'succeeded';
