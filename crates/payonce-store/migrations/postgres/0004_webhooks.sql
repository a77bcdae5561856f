-- Webhook delivery: each outbox event is delivered by whoever holds its lease; every attempt
-- is kept with its answer.
ALTER TABLE events ADD COLUMN lease_owner TEXT;
ALTER TABLE events ADD COLUMN last_status INTEGER;
ALTER TABLE events ADD COLUMN delivered_at BIGINT;

CREATE TABLE delivery_attempts (
    id          TEXT PRIMARY KEY,
    event_id    TEXT NOT NULL REFERENCES events (id),
    destination TEXT NOT NULL,
    status_code INTEGER,
    error       TEXT,
    duration_ms BIGINT NOT NULL,
    attempted_at BIGINT NOT NULL
);
CREATE INDEX delivery_attempts_by_event ON delivery_attempts (event_id);

-- Rotation: both secrets sign while receivers move to the new one.
ALTER TABLE apps ADD COLUMN webhook_secret_prev_enc TEXT;
-- A 410 Gone from the endpoint disables it until the app is updated.
ALTER TABLE apps ADD COLUMN webhook_disabled INTEGER NOT NULL DEFAULT 0;
-- Hosts an order's notify_url may name (besides the webhook URL's own): no SSRF to internal hosts.
ALTER TABLE apps ADD COLUMN allowed_hosts TEXT;
