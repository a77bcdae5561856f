-- The submission guard: an order created without a merchant_order_no (the business has none
-- yet: a cart submitted twice by a double click) is recognised by its content for the app's
-- submission window. One row per (app, content hash), written in the order's transaction: the
-- database, not a cache, decides which of two identical submissions makes the order.
CREATE TABLE submission_guards (
    app_id       TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    order_id     TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (app_id, content_hash)
);
ALTER TABLE apps ADD COLUMN submission_window_secs BIGINT NOT NULL DEFAULT 10;
