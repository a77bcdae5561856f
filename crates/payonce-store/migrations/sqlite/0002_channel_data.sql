-- What a connector needs to find its channel order again (UnionPay's original txnTime).
ALTER TABLE attempts ADD COLUMN channel_data TEXT;
