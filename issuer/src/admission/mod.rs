//! Admission: deciding, atomically, who wins a coupon.
//!
//! Two backends share one rule ([`rule::decide`]): Redis (the distributed issuer, many
//! processes, one Lua script; one primary, Sentinel or Cluster through
//! [`connection::RedisConnection`]) and an embedded ledger (the standalone issuer). Once a
//! campaign is sold out, [`sold_out::SoldOutBoard`] answers from memory.

pub mod batch;
pub mod embedded;
pub mod redis;
pub mod rule;
pub mod sold_out;

use chrono::{DateTime, Utc};

/// One admission: the user won their `ordinal`-th coupon, `sequence`-th of the campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    pub sequence: u64,
    pub ordinal: u32,
    pub admitted_at: DateTime<Utc>,
}

/// How an apply ended. A backend decides the first three; the campaign's time window
/// the last two.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Admitted(Admission),
    /// The user holds as many coupons as allowed; these are their sequences.
    AlreadyApplied(Vec<u64>),
    SoldOut,
    NotOpen {
        opens_at: Option<DateTime<Utc>>,
    },
    Closed {
        closes_at: Option<DateTime<Utc>>,
    },
}

/// Counts of one campaign as its admission backend sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    pub limit: u64,
    pub admitted: u64,
}
