-- Many merchants (issue 23). Every attempt names the channel account (merchant number) it was
-- made through: its queries, closes, refunds and reconciliation go to that account, even after
-- its app is bound to another. Attempts from before accounts existed were made through the one
-- account of their channel, which an unnamed channels.toml table still names `default`.
ALTER TABLE attempts ADD COLUMN account TEXT NOT NULL DEFAULT 'default';

-- The accounts the deployment knows: those of channels.toml, recorded by `serve` at start
-- (source 'file'). Only public facts: fingerprints of public keys and certificates, never a key.
CREATE TABLE channel_accounts (
    channel      TEXT NOT NULL,
    name         TEXT NOT NULL,
    source       TEXT NOT NULL,
    merchant_id  TEXT NOT NULL,
    is_default   INTEGER NOT NULL DEFAULT 0,
    enabled      INTEGER NOT NULL DEFAULT 0,
    fingerprints TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (channel, name)
);

-- An app's account per channel, as a JSON object {"wechatpay": "shop-a"}; NULL or a missing
-- channel: the channel's only account, or the one marked default.
ALTER TABLE apps ADD COLUMN channel_accounts TEXT;
