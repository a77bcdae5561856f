-- Channel accounts added through the admin API (source 'api'): their key material sealed under
-- a data key of their own, the data key wrapped by the master key (whose id is kept, so a
-- rotation of the master key re-wraps data keys only), and the last self-check.
ALTER TABLE channel_accounts ADD COLUMN sealed TEXT;
ALTER TABLE channel_accounts ADD COLUMN data_key_enc TEXT;
ALTER TABLE channel_accounts ADD COLUMN master_key_id TEXT;
ALTER TABLE channel_accounts ADD COLUMN last_check_at BIGINT;
ALTER TABLE channel_accounts ADD COLUMN last_check_ok INTEGER;
ALTER TABLE channel_accounts ADD COLUMN last_check TEXT;
