-- The coupon an order reserved, by id, on the order itself: reading an order needs no look-up
-- in coupon_uses (which keeps each use's history).
ALTER TABLE orders ADD COLUMN coupon_id TEXT;
