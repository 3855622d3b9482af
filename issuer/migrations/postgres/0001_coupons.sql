-- Coupons persisted from winner events. The primary key makes persistence idempotent: a
-- redelivered event hits the key and is ignored. The unique sequence is a safety net: two
-- users can never hold the same admission.
CREATE TABLE coupons (
    campaign    TEXT        NOT NULL,
    user_id     TEXT        NOT NULL,
    ordinal     INTEGER     NOT NULL CHECK (ordinal >= 1),
    sequence    BIGINT      NOT NULL CHECK (sequence >= 1),
    coupon_id   UUID        NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    admitted_at TIMESTAMPTZ NOT NULL,
    issued_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign, user_id, ordinal),
    UNIQUE (campaign, sequence)
);

-- Messages the consumer could not turn into coupons (undecodable payloads, constraint
-- violations). Stored so the partition can move on without dropping anything.
CREATE TABLE failed_events (
    id          BIGSERIAL   PRIMARY KEY,
    topic       TEXT        NOT NULL,
    partition   INTEGER     NOT NULL,
    "offset"    BIGINT      NOT NULL,
    campaign    TEXT,
    payload     BYTEA,
    error       TEXT        NOT NULL,
    attempts    INTEGER     NOT NULL DEFAULT 1,
    failed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at TIMESTAMPTZ,
    UNIQUE (topic, partition, "offset")
);
