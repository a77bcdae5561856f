-- Reconciliation per channel account (issue 23): one bill per merchant number, so one run per
-- (channel, account, bill date). Runs from before accounts existed read the `default` account's
-- bill.
ALTER TABLE reconciliations ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
ALTER TABLE reconciliations DROP CONSTRAINT reconciliations_channel_bill_date_key;
ALTER TABLE reconciliations ADD CONSTRAINT reconciliations_channel_account_bill_date_key
    UNIQUE (channel, account, bill_date);

-- Reconciliation and the invariant checker read an account's successes of a day.
CREATE INDEX attempts_paid_by_account ON attempts (channel, account, paid_at) WHERE status = 'succeeded';
