-- Coupons of the standalone issuer. A row is written (and fsynced) before the winner is
-- told "admitted"; on start-up the admission ledger is rebuilt from these rows.
CREATE TABLE coupons (
    campaign    TEXT    NOT NULL,
    user_id     TEXT    NOT NULL,
    ordinal     INTEGER NOT NULL,
    sequence    INTEGER NOT NULL,
    coupon_id   TEXT    NOT NULL UNIQUE,
    admitted_at TEXT    NOT NULL,
    issued_at   TEXT    NOT NULL,
    PRIMARY KEY (campaign, user_id, ordinal),
    UNIQUE (campaign, sequence)
);
