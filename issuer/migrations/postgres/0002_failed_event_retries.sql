-- When a failed event was last retried, so the retry batch can back off per event.
ALTER TABLE failed_events ADD COLUMN last_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now();
CREATE INDEX failed_events_unresolved ON failed_events (campaign) WHERE resolved_at IS NULL;
