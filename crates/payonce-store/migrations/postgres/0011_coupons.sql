-- Coupons, per app. A coupon is reserved for an order in the order's own transaction (the
-- reservation counts against max_redemptions), redeemed in the transaction that makes the order
-- paid, released when the order closes or expires, restored by a full refund. The counters on
-- the coupon row are the arbiter under concurrency (a conditional update); coupon_uses records
-- each order's use once (primary key (coupon, order): never redeemed twice).
CREATE TABLE coupons (
    id               TEXT PRIMARY KEY,
    app_id           TEXT NOT NULL,
    code             TEXT NOT NULL,
    -- fixed (value in fen) or percent (value in whole percent)
    kind             TEXT NOT NULL,
    value            BIGINT NOT NULL,
    min_amount       BIGINT,
    max_redemptions  BIGINT NOT NULL,
    per_payer_limit  BIGINT,
    valid_from       BIGINT,
    valid_until      BIGINT,
    reserved         BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    redeemed         BIGINT NOT NULL DEFAULT 0 CHECK (redeemed >= 0),
    created_at       BIGINT NOT NULL,
    UNIQUE (app_id, code)
);
CREATE TABLE coupon_uses (
    coupon_id   TEXT NOT NULL REFERENCES coupons (id),
    order_id    TEXT NOT NULL,
    payer_ref   TEXT,
    -- reserved, redeemed, released, restored
    status      TEXT NOT NULL,
    -- redeemed past max_redemptions (a late payment accepted for an expired order)
    over_limit  INTEGER NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (coupon_id, order_id)
);
CREATE INDEX coupon_uses_by_order ON coupon_uses (order_id);
CREATE INDEX coupon_uses_by_payer ON coupon_uses (coupon_id, payer_ref);

-- What an order with a coupon was before its discount.
ALTER TABLE orders ADD COLUMN original_amount BIGINT;
ALTER TABLE orders ADD COLUMN discount BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN coupon_code TEXT;
ALTER TABLE orders ADD COLUMN payer_ref TEXT;
