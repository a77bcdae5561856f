-- The dispatcher claims due events app by app (one app's backlog to a dead receiver must not
-- fill every claim): each app's due events, oldest first, read from an index, not by walking
-- past every other app's backlog in the due-time index.
CREATE INDEX events_due_by_app ON events (app_id, next_attempt_at) WHERE delivery_status = 'pending';
