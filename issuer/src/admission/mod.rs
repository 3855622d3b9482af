//! Admission: deciding, atomically, who wins a coupon.
//!
//! Two backends share one rule ([`rule::decide`]): Redis (the distributed issuer, many
//! processes, one Lua script) and an embedded ledger (the standalone issuer). Once a
//! campaign is sold out, [`sold_out::SoldOutBoard`] answers from memory.

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

/// What a backend decided for one apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Admitted(Admission),
    /// The user holds as many coupons as allowed; these are their sequences.
    AlreadyApplied(Vec<u64>),
    SoldOut,
}

/// Counts of one campaign as its admission backend sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    pub limit: u64,
    pub admitted: u64,
}

/// Parses the comma separated sequences a holder entry stores.
pub fn parse_sequences(held: &str) -> Vec<u64> {
    held.split(',').filter_map(|s| s.parse().ok()).collect()
}
