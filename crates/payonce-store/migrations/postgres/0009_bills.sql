-- Every channel bill reconciliation read, as downloaded (still compressed: WeChat's gzip,
-- Alipay's zip, UnionPay's zlib-deflated zip), with the SHA-256 of those bytes; one per
-- (channel, merchant account, bill date, bill type). Only a bill that verified is kept, so a
-- re-run reads the same bill and a failed download is fetched again. The bytes are stored in
-- parts of at most 1 MiB, so neither writing nor reading needs a second copy of a large bill.
CREATE TABLE bills (
    id               TEXT PRIMARY KEY,
    channel          TEXT NOT NULL,
    merchant_account TEXT NOT NULL,
    bill_date        TEXT NOT NULL,
    bill_type        TEXT NOT NULL,
    -- how the bytes are packed: wechat-gzip, alipay-zip, unionpay-zlib-zip, sandbox-gzip
    format           TEXT NOT NULL,
    sha256           TEXT NOT NULL,
    size             BIGINT NOT NULL,
    fetched_at       BIGINT NOT NULL,
    UNIQUE (channel, merchant_account, bill_date, bill_type)
);
CREATE TABLE bill_parts (
    bill_id TEXT NOT NULL REFERENCES bills (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    bytes   BYTEA NOT NULL,
    PRIMARY KEY (bill_id, seq)
);

-- What the bill says of each payment and refund beside its amount: the settled amount after
-- channel-side discounts, and the channel's fee in thousandths of a fen (WeChat writes fees to
-- 0.00001 yuan; negative on refunds). NULL until a bill showed it: a success of the bill's day
-- still NULL after its run is one the bill lacked.
ALTER TABLE attempts ADD COLUMN settled_amount BIGINT;
ALTER TABLE attempts ADD COLUMN fee_millifen BIGINT;
ALTER TABLE refunds ADD COLUMN settled_amount BIGINT;
ALTER TABLE refunds ADD COLUMN fee_millifen BIGINT;
CREATE INDEX attempts_paid_by_channel ON attempts (channel, paid_at) WHERE status = 'succeeded';
