-- The client's event id (LogInteractions retries are idempotent): unique per user when given.
ALTER TABLE interactions ADD COLUMN event_id text CHECK (length(event_id) BETWEEN 1 AND 128);
CREATE UNIQUE INDEX interactions_user_event ON interactions (user_id, event_id) WHERE event_id IS NOT NULL;
