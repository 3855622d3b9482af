//! The machine-readable reasons of a campaign's conditions and Events: one variant each,
//! so the status, the Events, the docs and the tests spell them the same way.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    // Ready
    /// Provisioned and serving.
    CampaignReady,

    // The spec (Ready, RedisReady, TopicReady; phase Failed)
    /// The spec is valid (never shown: a valid spec passes its turn to the next check).
    Valid,
    /// The spec cannot run; nothing is provisioned.
    InvalidSpec,

    // The backends Secret (RedisReady, TopicReady)
    /// The backends Secret does not exist.
    BackendsSecretMissing,
    /// The backends Secret lacks a key, or its value is empty or not UTF-8.
    BackendsSecretIncomplete,
    /// The backends Secret could not be read (API server error, permissions).
    BackendsSecretUnreadable,
    /// A value of the backends Secret is not a usable URL or client setting.
    InvalidBackendSettings,

    // RedisReady
    /// The campaign's keys are in Redis.
    Provisioned,
    /// Redis cannot be reached, or the connection failed.
    RedisUnavailable,
    /// Redis answered with an error.
    RedisCommandFailed,
    /// The admission counter vanished from Redis after provisioning (data loss).
    AdmissionStateMissing,

    // TopicReady
    /// The winners topic exists.
    TopicReady,
    /// Kafka cannot be reached, or did not answer.
    KafkaUnavailable,
    /// Kafka answered and refused to create or grow the topic.
    TopicRefused,

    // Only logged: the counts from PostgreSQL have no condition.
    /// PostgreSQL cannot be reached, or the count query failed.
    PostgresUnavailable,

    // IssuersAvailable
    /// At least one issuer pod is ready.
    IssuersReady,
    /// No issuer pod is ready.
    NoReadyIssuer,
    /// The campaign is paused: no issuer is meant to run.
    Paused,

    // LimitAccepted
    /// The spec's limit is in force.
    LimitApplied,
    /// The spec's limit is below what was admitted: the old one stays.
    LimitBelowAdmitted,
    /// Redis was not reached, so whether the limit applies is unknown.
    Unknown,

    // SoldOut (and its Event)
    /// Every coupon is admitted.
    SoldOut,
    /// Coupons remain.
    CouponsRemaining,

    // Events only
    /// Phase Pending.
    Pending,
    /// Phase Provisioning.
    Provisioning,
    /// Phase Scheduled.
    Scheduled,
    /// Phase Open.
    Opened,
    /// Phase Closed.
    Closed,
    /// Phase Failed.
    Failed,
    /// The planned issuer replicas went up (to peak before the opening, a larger
    /// `issuer.replicas`, unpaused) or down (back to base, a smaller one, paused). Two
    /// reasons, not one: Events of one reason are merged into a series under the first
    /// note.
    IssuersScaledUp,
    IssuersScaledDown,
    /// Deleted: the campaign's Redis keys are removed.
    CleanedUp,
    /// The stored object does not match the CouponCampaign type; it is skipped until it
    /// changes.
    InvalidObject,
}

/// A reason reads as its variant's name.
impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl PartialEq<Reason> for String {
    fn eq(&self, reason: &Reason) -> bool {
        *self == format!("{reason}")
    }
}
