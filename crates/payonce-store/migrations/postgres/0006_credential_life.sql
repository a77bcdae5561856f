-- The prepay request as first sent (a credential refresh re-sends it with identical parameters),
-- and the latest moment the channel could still take a payment on the channel order (a closed
-- attempt is watched until then): WeChat's code_url lives 2 h, an Alipay QR at most 2 h.
ALTER TABLE attempts ADD COLUMN prepay_request TEXT;
ALTER TABLE attempts ADD COLUMN payable_until BIGINT;
