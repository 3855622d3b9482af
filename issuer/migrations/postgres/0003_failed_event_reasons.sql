-- Why an event failed, as a machine-readable reason: `invalid_event` (undecodable, or not
-- a winner of the campaign whose stream carried it) or `sequence_conflict` (its sequence
-- is another user's coupon: the admission state it came from had lost admissions).
ALTER TABLE failed_events ADD COLUMN reason TEXT NOT NULL DEFAULT 'invalid_event';
