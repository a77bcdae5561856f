-- A console session belongs to the admin token it was opened with: a short hash of the token
-- (its "generation"). When the token changes every older session ends, so a cookie taken
-- before a token change opens nothing. Sessions from before this column existed end too.
ALTER TABLE console_sessions ADD COLUMN token_generation TEXT NOT NULL DEFAULT '';

-- An abnormal item names its order by id, decided where the item is written (from the id of
-- the attempt, refund or order it is about; a reconciliation item's own order_id) — never by
-- looking a reference up among numbers a tenant chooses (merchant_order_no).
ALTER TABLE abnormal ADD COLUMN order_id TEXT;
UPDATE abnormal SET order_id = COALESCE(
    (SELECT a.order_id FROM attempts a WHERE a.id = abnormal.reference),
    (SELECT r.order_id FROM refunds r WHERE r.id = abnormal.reference),
    (SELECT o.id FROM orders o WHERE o.id = abnormal.reference),
    (SELECT i.order_id FROM reconciliation_items i
      WHERE abnormal.kind = 'reconciliation_' || i.class AND i.reference = abnormal.reference AND i.created_at = abnormal.created_at
      ORDER BY i.id LIMIT 1));
CREATE INDEX abnormal_by_order ON abnormal (order_id);
