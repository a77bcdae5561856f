-- Notifications are checked against the payment numbers already recorded: a channel trade
-- number belongs to one channel order only.
CREATE INDEX IF NOT EXISTS attempts_channel_trade_no ON attempts (channel, channel_trade_no);
