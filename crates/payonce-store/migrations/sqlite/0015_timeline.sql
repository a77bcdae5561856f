-- Every query and its answer reaches the order timeline. Asked on a schedule (and by a payer's
-- cashier page), a channel gives the same answer many times over ("still unpaid"): a repeat of
-- the latest message about the same reference is counted on that row (`repeats`, `last_at`),
-- not written again, so the table grows by what changed, not by every poll.
ALTER TABLE channel_messages ADD COLUMN repeats BIGINT NOT NULL DEFAULT 1;
ALTER TABLE channel_messages ADD COLUMN last_at BIGINT;

-- An order's timeline reads the abnormal items about its attempts and refunds: by reference,
-- not by scanning every item ever raised (resolved ones stay, with who resolved them and why).
CREATE INDEX abnormal_by_reference ON abnormal (reference);
